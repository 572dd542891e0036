"""Files kcloud edits or keeps: ~/.ssh/config (in place, as bytes, under a lock, symlink and
mode kept), the project's .kcloud/ state (never written through a planted link) and the
credentials file (`set` keeps what it does not own, atomically, 0600, with a backup)."""
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kcloud import credentials, fsutil, providers
from kcloud.bringup import hostfiles
from kcloud.bringup.project import Project
from kcloud.errors import ConfigError, CredentialsError

REPO = Path(__file__).resolve().parents[2]
KCLOUD = REPO / "scripts" / "kcloud"
LIB = REPO / "scripts" / "lib"


def host(name="kdevops-gpu"):
    return hostfiles.Host(name, "192.0.2.10", "ubuntu", 22, Path("/home/u/.ssh/kdevops_terraform_1"), "lambdalabs")


def make_project(base: Path, name: str = "proj") -> Project:
    root = base / name
    root.mkdir(parents=True)
    return Project(root)


def include_line(project: Project) -> bytes:
    return os.fsencode(f"Include {project.ssh_config}  {hostfiles.MARK} {project.root}")


# -- ~/.ssh/config ----------------------------------------------------------------------------
def test_symlinked_user_config_stays_a_symlink_and_its_target_is_edited(home, tmp_path):
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    target = dotfiles / "ssh_config"
    original = b"Host old\n  HostName 10.0.0.1\n"
    target.write_bytes(original)
    (home / ".ssh").mkdir(mode=0o700)
    link = home / ".ssh" / "config"
    link.symlink_to(target)
    p = make_project(tmp_path)
    hostfiles.write(p, [host()])
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == include_line(p) + b"\n" + original
    assert (home / ".ssh" / "config.kcloud-backup").read_bytes() == original
    hostfiles.remove(p)
    assert link.is_symlink() and target.read_bytes() == original
    assert not [f for f in dotfiles.iterdir() if f != target]          # no temporary left behind


def test_read_only_user_config_keeps_its_mode(home, tmp_path):
    (home / ".ssh").mkdir(mode=0o700)
    cfg = home / ".ssh" / "config"
    cfg.write_bytes(b"Host a\n")
    cfg.chmod(0o444)
    p = make_project(tmp_path)
    hostfiles.write(p, [host()])
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o444 and cfg.read_bytes().startswith(include_line(p))
    hostfiles.remove(p)
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o444 and cfg.read_bytes() == b"Host a\n"


def test_non_utf8_user_config_is_kept_byte_for_byte(home, tmp_path):
    (home / ".ssh").mkdir(mode=0o700)
    cfg = home / ".ssh" / "config"
    original = b"# caf\xe9 \xff\xfe latin-1 comment\r\nHost x\n  HostName 10.0.0.2\nno final newline \x80"
    cfg.write_bytes(original)
    p = make_project(tmp_path)
    hostfiles.write(p, [host()])
    assert cfg.read_bytes() == include_line(p) + b"\n" + original
    hostfiles.write(p, [host()])                                     # idempotent
    assert cfg.read_bytes().count(include_line(p)) == 1
    hostfiles.remove(p)
    assert cfg.read_bytes() == original
    assert (home / ".ssh" / "config.kcloud-backup").read_bytes() == original


def test_backup_is_taken_once_on_the_first_change(home, tmp_path):
    (home / ".ssh").mkdir(mode=0o700)
    cfg = home / ".ssh" / "config"
    cfg.write_bytes(b"Host first\n")
    a, b = make_project(tmp_path, "a"), make_project(tmp_path, "b")
    hostfiles.write(a, [host()])
    hostfiles.write(b, [host()])
    backup = home / ".ssh" / "config.kcloud-backup"
    assert backup.read_bytes() == b"Host first\n" and stat.S_IMODE(backup.stat().st_mode) == 0o600


CONCURRENT = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from kcloud.bringup import hostfiles
from kcloud.bringup.project import Project
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
for root in sys.argv[3:]:
    hostfiles.write(Project(Path(root)), [hostfiles.Host("kdevops-gpu", "192.0.2.1", "ubuntu", 22, Path("/k"))])
"""


def test_concurrent_runs_never_lose_each_others_include_lines(home, tmp_path):
    (home / ".ssh").mkdir(mode=0o700)
    cfg = home / ".ssh" / "config"
    cfg.write_bytes(b"Host mine\n  User me\n")
    go = tmp_path / "go"
    procs, projects = [], []
    for i in range(6):
        mine = [make_project(tmp_path, f"p{i}-{j}") for j in range(8)]
        projects += mine
        procs.append(subprocess.Popen([sys.executable, "-c", CONCURRENT, str(LIB), str(go), *[str(p.root) for p in mine]],
                                      env={**os.environ, "HOME": str(home)}))
    time.sleep(0.5)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * 6
    lines = cfg.read_bytes().splitlines()
    assert sorted(lines[:-2]) == sorted(include_line(p) for p in projects)
    assert lines[-2:] == [b"Host mine", b"  User me"]


# -- .kcloud/ never followed through a link ----------------------------------------------------
@pytest.fixture
def victim(tmp_path):
    v = tmp_path / "victim"
    v.write_bytes(b"precious\n")
    return v


def test_planted_lock_and_progress_links_never_write_the_victim(tmp_path, victim):
    p = make_project(tmp_path)
    p.state_dir.mkdir()
    (p.state_dir / "lock").symlink_to(victim)
    p.progress_path.symlink_to(victim)
    with pytest.raises(ConfigError, match=r"lock is a symbolic link; refusing to write through it") as e:
        with p.lock("bringup"):
            pass
    assert "\n" not in e.value.line() and victim.read_bytes() == b"precious\n"
    (p.state_dir / "lock").unlink()
    with p.lock("bringup"):                       # a regenerated file's link is removed...
        assert not p.progress_path.is_symlink()
        fsutil.append_line(p.progress_path, "launching ...")   # ...and progress lands in a file of ours
    assert p.progress_path.read_text() == "launching ...\n" and victim.read_bytes() == b"precious\n"
    assert not (p.state_dir / "lock").is_symlink()


def test_planted_journal_link_or_state_dir_link_is_refused(tmp_path, victim):
    p = make_project(tmp_path)
    p.state_dir.mkdir()
    p.journal_path.symlink_to(victim)
    with pytest.raises(ConfigError, match="journal.jsonl is a symbolic link"):
        with p.lock("destroy"):
            pass
    other = make_project(tmp_path, "other")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    other.state_dir.symlink_to(elsewhere)
    with pytest.raises(ConfigError, match=r"\.kcloud is a symbolic link"):
        with other.lock("bringup"):
            pass
    assert list(elsewhere.iterdir()) == [] and victim.read_bytes() == b"precious\n"


def test_planted_links_at_regenerated_files_are_replaced(home, tmp_path, victim):
    p = make_project(tmp_path)
    p.state_dir.mkdir()
    for path in (p.ssh_config, p.known_hosts, p.inventory):
        path.symlink_to(victim)
    with p.lock("bringup"):
        assert not p.known_hosts.is_symlink()
        hostfiles.write(p, [host()], update_user_config=False)
    assert not p.ssh_config.is_symlink() and not p.inventory.is_symlink()
    assert "HostName 192.0.2.10" in p.ssh_config.read_text() and victim.read_bytes() == b"precious\n"


def test_a_hard_link_or_a_fifo_is_not_a_state_file(tmp_path, victim):
    p = make_project(tmp_path)
    p.state_dir.mkdir()
    os.link(victim, p.state_dir / "lock")
    with pytest.raises(ConfigError, match="hard link"):
        with p.lock("bringup"):
            pass
    (p.state_dir / "lock").unlink()
    os.mkfifo(p.progress_path)
    with pytest.raises(ConfigError, match="not a regular file"):        # refused, and no hang
        fsutil.open_nofollow(p.progress_path, os.O_WRONLY | os.O_APPEND, on_link=fsutil.REFUSE)
    fsutil.append_line(p.progress_path, "x")                           # replace policy
    assert p.progress_path.read_text() == "x\n" and victim.read_bytes() == b"precious\n"


def test_destroy_with_a_planted_lock_link_is_one_line_and_the_victim_survives(home, tmp_path, victim):
    p = make_project(tmp_path)
    p.state_dir.mkdir()
    (p.state_dir / "lock").symlink_to(victim)
    env = {k: v for k, v in os.environ.items() if k != "KCLOUD_PROJECT_DIR"}
    proc = subprocess.run([str(KCLOUD), "destroy"], cwd=p.root, env={**env, "HOME": str(home)},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "symbolic link" in proc.stderr
    assert victim.read_bytes() == b"precious\n"


# -- credentials set ---------------------------------------------------------------------------
CREDS = (b"# my keys -- do not lose this comment\n"
         b"[work]\n"
         b"lambdalabs_api_key = work-key-aaaa\n"
         b"\n"
         b"[default]\n"
         b"; the old key, twice by mistake\n"
         b"lambdalabs_api_key = old-key-1111\n"
         b"region_hint = us-west-1\n"
         b"lambdalabs_api_key = old-key-2222\n"
         b"\n"
         b"[other]\n"
         b"unknown = keep me\n")


def set_cmd(home, *args, stdin="", provider="lambdalabs"):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LAMBDALABS_", "DATACRUNCH_"))}
    return subprocess.run([str(REPO / "scripts" / f"{provider}_credentials.py"), "set", *args], input=stdin,
                          env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=60)


@pytest.fixture
def creds_file(home):
    d = home / ".lambdalabs"
    d.mkdir(mode=0o700)
    path = d / "credentials"
    path.write_bytes(CREDS)
    path.chmod(0o600)
    return path


def test_set_from_stdin_keeps_profiles_comments_unknown_keys_and_duplicates(home, creds_file):
    proc = set_cmd(home, stdin="new-key-3333\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""                                   # no warning: the key was not in argv
    text = creds_file.read_bytes()
    assert text == CREDS.replace(b"lambdalabs_api_key = old-key-1111", b"lambdalabs_api_key = new-key-3333") \
        .replace(b"lambdalabs_api_key = old-key-2222", b"# kcloud: superseded duplicate: lambdalabs_api_key = old-key-2222")
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    backup = creds_file.with_name("credentials.kcloud-backup")
    assert backup.read_bytes() == CREDS and stat.S_IMODE(backup.stat().st_mode) == 0o600
    spec = providers.credential_spec("lambdalabs")
    assert credentials.load(spec) == {"api_key": "new-key-3333"}
    assert credentials.load(spec, "work") == {"api_key": "work-key-aaaa"}


def test_set_with_the_key_in_argv_works_and_warns_once(home, creds_file):
    proc = set_cmd(home, "argv-key-4444")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("warning: ") and "`ps`" in proc.stderr
    assert "argv-key-4444" not in proc.stderr
    assert credentials.load(providers.credential_spec("lambdalabs")) == {"api_key": "argv-key-4444"}
    assert creds_file.with_name("credentials.kcloud-backup").read_bytes() == CREDS


def test_set_refuses_a_value_with_a_line_break_and_changes_nothing(home, creds_file):
    proc = set_cmd(home, "key\n[default]\nlambdalabs_api_key = injected")
    assert proc.returncode == 1 and "line break" in proc.stderr and "Traceback" not in proc.stderr
    assert creds_file.read_bytes() == CREDS and not creds_file.with_name("credentials.kcloud-backup").exists()
    proc = set_cmd(home, stdin="")
    assert proc.returncode == 1 and "no api_key given" in proc.stderr and creds_file.read_bytes() == CREDS


def test_set_creates_a_new_file_0600_and_fixes_a_loose_mode(home):
    proc = set_cmd(home, stdin="client-id\nclient-secret-5555\n", provider="datacrunch")
    assert proc.returncode == 0, proc.stderr
    path = home / ".datacrunch" / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert credentials.load(providers.credential_spec("datacrunch")) == {"client_id": "client-id",
                                                                         "client_secret": "client-secret-5555"}
    path.chmod(0o644)
    assert set_cmd(home, stdin="id2\nsecret2-6666\n", provider="datacrunch").returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_set_updates_the_spelling_load_reads_and_keeps_a_symlink(home, tmp_path):
    store = tmp_path / "vault"
    store.mkdir()
    target = store / "dc"
    target.write_bytes(b"[default]\nclient_id = cid\ndatacrunch_api_key = old-secret\n")
    target.chmod(0o600)
    (home / ".datacrunch").mkdir(mode=0o700)
    (home / ".datacrunch" / "credentials").symlink_to(target)
    spec = providers.credential_spec("datacrunch")
    credentials.store(spec, {"client_secret": "new-secret-7777"})
    assert (home / ".datacrunch" / "credentials").is_symlink()
    assert target.read_bytes() == b"[default]\nclient_id = cid\ndatacrunch_api_key = new-secret-7777\n"
    assert credentials.load(spec) == {"client_id": "cid", "client_secret": "new-secret-7777"}


def test_set_refuses_to_write_a_file_load_cannot_read(home):
    d = home / ".lambdalabs"
    d.mkdir(mode=0o700)
    (d / "credentials").write_bytes(b"lambdalabs_api_key = no section header\n")
    with pytest.raises(CredentialsError, match="not a valid INI file even with the new key.*nothing written"):
        credentials.store(providers.credential_spec("lambdalabs"), {"api_key": "k-8888"})
    assert (d / "credentials").read_bytes() == b"lambdalabs_api_key = no section header\n"


CONCURRENT_SET = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from kcloud import credentials, providers
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.001)
for profile in sys.argv[3:]:
    credentials.store(providers.credential_spec("lambdalabs"), {"api_key": "key-" + profile}, profile)
"""


def test_concurrent_sets_keep_every_profile(home, creds_file, tmp_path):
    creds_file.write_bytes(CREDS.replace(b"lambdalabs_api_key = old-key-2222\n", b""))
    go = tmp_path / "go"
    env = {**os.environ, "HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_SET, str(LIB), str(go),
                               *[f"p{i}-{j}" for j in range(6)]], env=env) for i in range(5)]
    time.sleep(0.5)
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * 5
    spec = providers.credential_spec("lambdalabs")
    for i in range(5):
        for j in range(6):
            assert credentials.load(spec, f"p{i}-{j}") == {"api_key": f"key-p{i}-{j}"}
    assert b"# my keys -- do not lose this comment\n" in creds_file.read_bytes()
