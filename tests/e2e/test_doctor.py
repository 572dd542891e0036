"""`make` alone and `make preflight` / `kcloud doctor` in a scratch project against the emulator.

preflight changes nothing: every test ends with the emulator holding no key and no instance,
and no SSH key or project identity written unless `make` was asked to create them.
"""
import json
import os
import stat

import pytest
from e2e_helpers import audit

CHECKS = [".config", "terraform", "Ansible", "ssh", "ssh-keygen", "rsync", "lambdalabs credentials",
          "lambdalabs API", "SSH key", "SSH key in the lambdalabs account", "capacity now"]


@pytest.fixture
def tools(tmp_path):
    """PATH with an rsync (the check wants one; this machine need not have it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    rsync = bin_dir / "rsync"
    rsync.write_text("#!/bin/sh\necho 'rsync  version 3.2.7  protocol version 31'\n")
    rsync.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def files(*roots) -> dict[str, tuple[int, int]]:
    """Every file under the roots (outside the venv) with its size and modification time."""
    found = {}
    for root in roots:
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in (".venv", "scripts", "__pycache__")]
            for n in names:
                st = os.stat(os.path.join(d, n))
                found[os.path.join(d, n)] = (st.st_size, st.st_mtime_ns)
    return found


def lines(out: str) -> dict[str, str]:
    """check name -> its line, from doctor's text output."""
    found = {}
    for line in out.splitlines():
        if line[:2] in ("\u2713 ", "\u2717 ", "\u2013 "):
            found[line[2:].split(": ", 1)[0]] = line
    return found


def test_make_without_config_says_which_defconfig(cloud, make_project):
    p = make_project(cloud())
    out = p.make().stdout
    assert "No .config" in out and "make defconfig-lambdalabs-h100-or-less" in out
    assert "make defconfig-datacrunch-h100-pytorch-or-less" in out
    assert not (p.root / ".config").exists()


def test_make_with_config_creates_key_and_initialises_terraform(cloud, make_project):
    emu = cloud()
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less")
    out = p.make().stdout
    home = p.env["HOME"]
    keys = [f for f in os.listdir(f"{home}/.ssh") if f.startswith("kdevops_terraform_")]
    assert len(keys) == 2, keys                                  # private and .pub
    assert "\u2713 SSH key: created ~/.ssh/kdevops_terraform_" in out
    assert "terraform init done in terraform/lambdalabs" in out
    assert (p.root / "terraform" / "lambdalabs" / ".terraform").is_dir()
    again = p.make().stdout
    assert "\u2713 SSH key: found" in again and "already initialised" in again
    assert audit(emu) == {"instances": [], "ssh_keys": []}      # make talks to no API


def test_preflight_all_pass_and_changes_nothing(cloud, make_project, tools):
    emu = cloud()
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less")
    before = files(p.root, p.env["HOME"])
    proc = p.make("preflight", env=tools)
    found = lines(proc.stdout)
    assert list(found) == CHECKS, proc.stdout
    assert all(line.startswith("\u2713") for line in found.values()), proc.stdout
    assert "would launch gpu_1x_" in found["capacity now"]
    assert "Ready: make bringup" in proc.stdout
    assert files(p.root, p.env["HOME"]) == before               # no key, identity or state written
    assert not os.path.exists(f"{p.env['HOME']}/.ssh")
    assert audit(emu) == {"instances": [], "ssh_keys": []}

    doc = json.loads(p.run(str(p.root / "scripts" / "kcloud"), "doctor", "--output", "json", env=tools).stdout)
    assert doc["ok"] is True and [c["name"] for c in doc["checks"]] == CHECKS


def test_preflight_after_make_finds_the_key_in_the_account_after_bringup_uploads_it(cloud, make_project, tools):
    emu = cloud()
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less")
    p.make()
    found = lines(p.make("preflight", env=tools).stdout)
    assert "not there yet (bringup uploads it)" in found["SSH key in the lambdalabs account"]
    p.make("lambdalabs-ssh-setup")                               # uploads the same key
    found = lines(p.make("preflight", env=tools).stdout)
    assert found["SSH key in the lambdalabs account"].startswith("\u2713 SSH key in the lambdalabs account: kdevops-")
    p.make("lambdalabs-ssh-clean")
    assert audit(emu) == {"instances": [], "ssh_keys": []}


def test_preflight_refuses_group_readable_credentials(cloud, make_project, tools):
    emu = cloud()
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less")
    creds = os.path.join(p.env["HOME"], ".lambdalabs", "credentials")
    os.makedirs(os.path.dirname(creds))
    with open(creds, "w") as f:
        f.write("[default]\nlambdalabs_api_key = emulator-key\n")
    os.chmod(creds, 0o640)
    env = {**tools, "LAMBDALABS_API_KEY": ""}
    proc = p.make("preflight", env=env, check=False)
    assert proc.returncode != 0
    found = lines(proc.stdout)
    assert found["lambdalabs credentials"].startswith("\u2717 ")
    assert "mode 0640" in found["lambdalabs credentials"] and f"fix: run: chmod 600 {creds}" in proc.stdout
    assert found["lambdalabs API"].startswith("\u2013 ")        # not run without credentials
    assert found["terraform"].startswith("\u2713 ")             # the other checks still ran
    os.chmod(creds, stat.S_IRUSR | stat.S_IWUSR)
    assert p.make("preflight", env=env).returncode == 0          # the fix it named works


def test_preflight_names_a_wrong_api_key_without_printing_it(cloud, make_project, tools):
    emu = cloud()
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less")
    proc = p.make("preflight", env={**tools, "LAMBDALABS_API_KEY": "not-the-emulator-key"}, check=False)
    assert proc.returncode != 0
    found = lines(proc.stdout)
    assert found["lambdalabs credentials"].startswith("\u2713 ")
    assert found["lambdalabs API"].startswith("\u2717 ") and "fix: " in found["lambdalabs API"]
    assert found["capacity now"].startswith("\u2013 ")
    assert "not-the-emulator-key" not in proc.stdout + proc.stderr
    doc = json.loads(p.run(str(p.root / "scripts" / "kcloud"), "doctor", "--output", "json",
                           env={**tools, "LAMBDALABS_API_KEY": "not-the-emulator-key"}, check=False).stdout)
    assert doc["ok"] is False
    assert [c["ok"] for c in doc["checks"] if c["name"] == "lambdalabs API"] == [False]


def test_preflight_says_when_nothing_would_launch(cloud, make_project, tools):
    emu = cloud("empty")
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less")
    proc = p.make("preflight", env=tools, check=False)
    assert proc.returncode != 0
    assert lines(proc.stdout)["capacity now"].startswith("\u2717 capacity now: nothing would be launched")
    assert audit(emu) == {"instances": [], "ssh_keys": []}


def test_preflight_names_a_missing_tool_with_its_fix(cloud, make_project, tmp_path):
    p = make_project(cloud())
    p.defconfig("lambdalabs-h100-or-less")
    only = tmp_path / "only-ssh"
    only.mkdir()
    for tool in ("ssh", "ssh-keygen"):
        (only / tool).symlink_to(f"/usr/bin/{tool}")
    proc = p.run(str(p.root / "scripts" / "kcloud"), "doctor", env={"PATH": str(only)}, check=False)
    assert proc.returncode != 0
    found = lines(proc.stdout)
    assert found["rsync"] == "\u2717 rsync: not found; fix: install rsync"
    assert found["ssh"].startswith("\u2713 ssh: OpenSSH_")


def test_preflight_without_config(cloud, make_project, tools):
    p = make_project(cloud())
    proc = p.make("preflight", env=tools, check=False)
    assert proc.returncode != 0
    found = lines(proc.stdout)
    assert found[".config"].startswith("\u2717 .config: no .config") and "make defconfig-" in found[".config"]
    assert found["provider"].startswith("\u2013 ")


def test_preflight_names_a_missing_key_when_generation_is_off(cloud, make_project, tools):
    emu = cloud()
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less", "TERRAFORM_SSH_CONFIG_GENKEY=n")
    proc = p.make("preflight", env=tools, check=False)
    assert proc.returncode != 0
    line = lines(proc.stdout)["SSH key"]
    assert line.startswith("\u2717 SSH key: ~/.ssh/kdevops_terraform_") and "key generation is off" in line
    assert "fix: create it, or set CONFIG_TERRAFORM_SSH_CONFIG_GENKEY=y" in line
    assert audit(emu) == {"instances": [], "ssh_keys": []}
