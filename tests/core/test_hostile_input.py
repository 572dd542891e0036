"""Hostile values never reach a file another program parses: the SSH config and inventory
(hostfiles), terraform.tfvars (HCL escaping, checked by terraform itself) and the public key
`ssh-keys add` uploads (checked before any HTTP request, against the emulator's request log)."""
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import requests

from kcloud import errors
from kcloud.bringup import hostfiles
from kcloud.bringup.project import Project
from kcloud.sshpub import parse_public_key

REPO = Path(__file__).resolve().parents[2]
KCLOUD = REPO / "scripts" / "kcloud"
INJECTION = "127.0.0.9\nHost *\n  ProxyCommand sh -c 'touch /tmp/x'"


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "my project"          # a space: paths must be quoted, not split
    root.mkdir()
    return Project(root)


@pytest.fixture
def user_config(home):
    ssh = home / ".ssh"
    ssh.mkdir(mode=0o700)
    cfg = ssh / "config"
    cfg.write_bytes(b"Host old\n  HostName 10.0.0.1\n")
    return cfg


def host(**kw):
    values = dict(name="kdevops-gpu", ip="192.0.2.10", user="ubuntu", port=22,
                  identity=Path("/home/u/.ssh/kdevops_terraform_1234"), provider="lambdalabs")
    values.update(kw)
    return hostfiles.Host(**values)


def nothing_written(project: Project, user_config: Path, before: bytes) -> None:
    assert not project.ssh_config.exists() and not project.inventory.exists()
    assert user_config.read_bytes() == before
    assert not user_config.with_name("config.kcloud-backup").exists()


def test_injected_ip_raises_one_line_and_writes_nothing(project, user_config):
    before = user_config.read_bytes()
    with pytest.raises(errors.HostileAnswer) as e:
        hostfiles.write(project, [host(ip=INJECTION)])
    line = e.value.line()
    assert line.startswith("lambdalabs answered an invalid ip for kdevops-gpu: ")
    assert "127.0.0.9\\nHost *" in line and "\u2026" in line     # repr, truncated
    assert "(not an IP address) (no SSH config or inventory was written" in line
    assert "\n" not in line and len(line) < 220
    assert isinstance(e.value, errors.ApiError)
    nothing_written(project, user_config, before)


@pytest.mark.parametrize("field, value, message", [
    ("ip", "fe80::1%\nHost *", "not an IP address"),          # ipaddress accepts any scope id
    ("ip", "fe80::1%eth0", "not an IP address"),
    ("ip", " 192.0.2.1", "not an IP address"),
    ("ip", "", "not an IP address"),
    ("ip", None, "not an IP address"),
    ("name", "kdevops-gpu\nHost *", "invalid host name"),
    ("name", "-oProxyCommand=x", "invalid host name"),
    ("user", "ubuntu\n  ProxyCommand touch /tmp/x", "invalid SSH user"),
    ("user", "Ubuntu", "invalid SSH user"),
    ("port", 0, "invalid SSH port"),
    ("port", 65536, "invalid SSH port"),
    ("port", "22\n  ProxyCommand x", "invalid SSH port"),
    ("port", True, "invalid SSH port"),
    ("identity", Path("/tmp/id\n  ProxyCommand x"), "cannot be written into an SSH config"),
    ("identity", Path('/tmp/i"d'), "cannot be written into an SSH config"),
    ("identity", Path("/tmp/%d/id"), "cannot be written into an SSH config"),
    ("identity", None, "cannot be written into an SSH config"),
])
def test_every_field_is_checked_before_anything_is_written(project, user_config, field, value, message):
    before = user_config.read_bytes()
    good = host(name="kn1-gpu", ip="192.0.2.11")
    with pytest.raises(errors.KcloudError, match=message) as e:
        hostfiles.write(project, [good, host(**{field: value})])   # the bad one second: still nothing
    assert "\n" not in e.value.line()
    nothing_written(project, user_config, before)


def test_a_project_path_with_a_newline_is_refused(tmp_path, user_config):
    root = tmp_path / "evil\nHost *"
    root.mkdir()
    before = user_config.read_bytes()
    with pytest.raises(errors.ConfigError, match="cannot be written into an SSH config"):
        hostfiles.write(Project(root), [host()])
    nothing_written(Project(root), user_config, before)


def test_valid_hosts_with_spaces_in_paths_parse_as_written(project, user_config):
    """ssh itself and Ansible read back exactly the values (a path with a space is quoted)."""
    hostfiles.write(project, [host(ip="2001:db8::7", identity=project.root / "id key")])
    out = subprocess.run(["ssh", "-F", str(project.ssh_config), "-G", "kdevops-gpu"], capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    options = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    assert options["hostname"] == "2001:db8::7" and options["user"] == "ubuntu" and options["port"] == "22"
    assert options["identityfile"] == str(project.root / "id key")
    assert options["userknownhostsfile"] == str(project.known_hosts)
    inventory = subprocess.run([str(REPO / ".venv" / "bin" / "ansible-inventory"), "-i", str(project.inventory),
                                "--list"], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
    assert inventory.returncode == 0, inventory.stderr
    hostvars = json.loads(inventory.stdout)["_meta"]["hostvars"]["kdevops-gpu"]
    assert shlex.split(hostvars["ansible_ssh_common_args"]) == ["-F", str(project.ssh_config)]
    include = user_config.read_bytes().split(b"\n", 1)[0]
    assert include.startswith(b'Include "' + os.fsencode(project.ssh_config) + b'"  # kcloud')
    out = subprocess.run(["ssh", "-F", str(user_config), "-G", "kdevops-gpu"], capture_output=True, text=True,
                         timeout=30, stdin=subprocess.DEVNULL)
    assert "hostname 2001:db8::7" in out.stdout.splitlines()


# -- terraform.tfvars -----------------------------------------------------------------------
HOSTILE_STRINGS = ['a"b\\c\n${x}%{if 1}y%{endif}$${z}\t\x01\x7f', "emoji \U0001F600 \u00e9 \u2028",
                   "end\\", "$", "%", "x$", "a%%{b", 'r"\n}\nimage = "evil']


def test_tfvars_strings_round_trip_through_terraform(tmp_path):
    from kcloud.tfprovider import install, tfvars
    try:
        terraform = install.terraform_binary()
    except errors.KcloudError:
        pytest.skip("no terraform binary")
    variables = (REPO / "terraform" / "modules" / "kcloud" / "variables.tf").read_text()
    (tmp_path / "vars.tf").write_text(variables + 'variable "journal_path" {}\nvariable "progress_file" {}\n')
    candidates = [(s, s[::-1]) for s in HOSTILE_STRINGS]
    tfvars.write(tmp_path / "terraform.tfvars", cloud="lambdalabs", name=HOSTILE_STRINGS[0], candidates=candidates,
                 ssh_key_name=HOSTILE_STRINGS[1], ssh_key_id=HOSTILE_STRINGS[-1], image=HOSTILE_STRINGS[1],
                 journal_path="/j", progress_file="/p")
    out = subprocess.run([terraform, "console"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         input="jsonencode([var.name, var.image, var.ssh_key_name, var.candidates])\n",
                         env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"})
    assert out.returncode == 0, out.stderr
    name, image, key_name, rows = json.loads(json.loads(out.stdout))
    assert (name, image, key_name) == (HOSTILE_STRINGS[0], HOSTILE_STRINGS[1], HOSTILE_STRINGS[1])
    assert [(r["instance_type"], r["region"]) for r in rows] == candidates


def test_tfvars_refuses_what_it_cannot_write(tmp_path):
    from kcloud.tfprovider import tfvars
    common = dict(cloud="lambdalabs", name="n", candidates=[("a", "r")], ssh_key_name="k", ssh_key_id="id")
    with pytest.raises(errors.ConfigError, match="not a finite number"):
        tfvars.render(**common, poll_interval=float("nan"))
    with pytest.raises(errors.ConfigError, match="not valid Unicode"):
        tfvars.render(**common, image="bad\udcff")
    without_id = {k: v for k, v in common.items() if k != "ssh_key_id"}
    with pytest.raises(errors.ConfigError, match="not an OpenSSH public key"):
        tfvars.render(**without_id, ssh_public_key='ssh-ed25519 AAAA"\nuser_data = "x')


# -- ssh-keys add -----------------------------------------------------------------------------
@pytest.fixture
def emulator(home, monkeypatch):
    from kcloud.emulator import start
    emu = start("default")
    monkeypatch.setenv("LAMBDALABS_API_URL", emu.lambdalabs_url)
    monkeypatch.setenv("DATACRUNCH_API_URL", emu.datacrunch_url)
    monkeypatch.setenv("LAMBDALABS_API_KEY", "emulator-key")
    monkeypatch.setenv("DATACRUNCH_CLIENT_ID", "emulator-client")
    monkeypatch.setenv("DATACRUNCH_CLIENT_SECRET", "emulator-secret")
    yield emu
    emu.stop()


def requests_made(emu) -> list[dict]:
    state = requests.get(emu.lambdalabs_url.rsplit("/api/v1", 1)[0] + "/_emulator/state", timeout=10).json()
    return state["requests"]


@pytest.fixture
def keys(tmp_path):
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "me@host", "-f", str(path)], check=True,
                   timeout=30)
    public = path.with_suffix(".pub").read_text().strip()
    kind, blob, _ = public.split(" ", 2)
    rsa_path = tmp_path / "id_rsa"
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-b", "2048", "-N", "", "-f", str(rsa_path)], check=True,
                   timeout=60)
    files = {
        "private": path.read_text(),
        "pem": "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n",
        "garbage": "hello world\n",
        "empty": "\n",
        "two keys": public + "\n" + rsa_path.with_suffix(".pub").read_text(),
        "type mismatch": f"ssh-rsa {blob} me@host\n",
        "bad base64": f"{kind} {blob[:-3]}!!! me@host\n",
        "no data": f"{kind}\n",
        "options": f'command="touch /tmp/x" {public}\n',
        "control char": f"{public}\x1b[2J\n",
        "truncated blob": f"{kind} AAAAC3NzaC1lZDI1NTE5 me@host\n",
    }
    out = {}
    for name, text in files.items():
        p = tmp_path / (name.replace(" ", "_") + ".pub")
        p.write_text(text)
        out[name] = p
    return public, out, rsa_path.with_suffix(".pub")


def test_parse_public_key_accepts_real_keys(keys):
    public, _, rsa = keys
    assert parse_public_key(public + "\n") == public
    assert parse_public_key(rsa.read_bytes()).startswith("ssh-rsa AAAA")


@pytest.mark.parametrize("provider", ["lambdalabs", "datacrunch"])
def test_ssh_keys_add_refuses_anything_but_one_public_key_before_any_request(emulator, keys, capsys, provider):
    from kcloud.cli import main
    public, bad, _ = keys
    for name, path in bad.items():
        code = main([provider, "ssh-keys", "add", "mykey", str(path)])
        err = capsys.readouterr().err
        assert code == 1, name
        assert err.startswith(f"error: {path}: not an OpenSSH public key (") and err.count("\n") == 1, (name, err)
    assert requests_made(emulator) == []
    assert main([provider, "ssh-keys", "add", "mykey", str(bad["private"].with_name("missing.pub"))]) == 1
    assert "cannot read public key file" in capsys.readouterr().err
    assert requests_made(emulator) == []
    good = bad["private"].with_name("good.pub")
    good.write_text(public + "\n")
    assert main([provider, "ssh-keys", "add", "mykey", str(good)]) == 0
    assert "added SSH key mykey" in capsys.readouterr().out
    assert any(r["method"] == "POST" and r["path"].endswith("/sshkeys" if provider == "datacrunch" else "/ssh-keys")
               for r in requests_made(emulator))          # the log does record our requests
    state = requests.get(emulator.lambdalabs_url.rsplit("/api/v1", 1)[0] + "/_emulator/state", timeout=10).json()
    assert [k["name"] for k in state["ssh_keys"]] == ["mykey"]


def test_ssh_keys_add_private_key_is_one_line_from_the_real_command(emulator, keys):
    """The seed script name, a real process: one line on stderr, exit 1, no traceback, no request."""
    _, bad, _ = keys
    proc = subprocess.run([str(REPO / "scripts" / "lambdalabs_ssh_keys.py"), "add", "k", str(bad["private"])],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ),
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "private key" in proc.stderr and "Traceback" not in proc.stderr
    assert requests_made(emulator) == []


@pytest.mark.parametrize("raw, kept", [
    ("/lambda/nfs/shared", True), ("/home/ubuntu/shared-fs", True), ("/data/x", True),
    ("/lambda/nfs/{{ lookup('pipe', 'touch /tmp/pwned') }}", False), ("/etc/passwd", False),
    ("/home/u\nx", False), (None, False), (["/data"], False)])
def test_a_file_system_mount_point_reaches_ansible_only_in_lambdas_own_shape(raw, kept):
    # The mount point becomes an Ansible variable (KCLOUD_SHARED_DIR), and Ansible templates
    # variables: a "{{ ... }}" answered by the API would run on this computer.
    from kcloud.providers.lambdalabs import _mount_point
    assert _mount_point(raw) == (raw if kept else "")
