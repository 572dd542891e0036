"""Every emulated instance is its own machine to what runs on it: its own root, HOME and startup log.

SSH sessions (commands, scp, sftp, rsync, Ansible) land in HOME inside the
instance's root under the emulator's work dir; startup scripts run at the
first boot; nothing is written to the real home directories of this computer.
"""

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from emuhelpers import DataCrunchClient, LambdaClient, wait_for
from kcloud.emulator import sshd

needs_sshd = pytest.mark.skipif(not os.access(sshd.SSHD, os.X_OK), reason="openssh-server is not installed")
ANSIBLE = Path(sys.executable).parent / "ansible"
REAL_HOMES = sorted({Path("/root"), Path("/home/ubuntu"), Path.home()})


def launch_lambda(lam, **extra):
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["k"], **extra}
    r = lam("POST", "/instance-operations/launch", json=body)
    assert r.status_code == 200, r.text
    return r.json()["data"]["instance_ids"][0]


def state_of(emu, iid):
    return next(i for i in emu.state()["instances"] if i["id"] == iid)


def active(emu, iid, timeout=10):
    return wait_for(lambda: (i := state_of(emu, iid))["phase"] == "active" and i, timeout=timeout)


def ssh_config(path, key, nodes):
    """An ssh_config naming each node (name -> admin-state instance), as a client would write one."""
    lines = []
    for name, inst in nodes.items():
        ssh = inst["ssh"]
        lines += [
            f"Host {name}",
            f"  HostName {ssh['host']}",
            f"  Port {ssh['port']}",
            f"  User {ssh['user']}",
            f"  IdentityFile {key}",
            "  IdentitiesOnly yes",
            "  BatchMode yes",
            "  StrictHostKeyChecking no",
            "  UserKnownHostsFile /dev/null",
            "  LogLevel ERROR",
            "  ConnectTimeout 5",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*argv, **kwargs):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, **kwargs)
    assert proc.returncode == 0, f"{argv}: {proc.stdout}{proc.stderr}"
    return proc.stdout


@needs_sshd
def test_each_instance_is_its_own_machine_for_ssh_scp_sftp_rsync_and_ansible(emulator, keypair, tmp_path):
    emu = emulator()
    lam = LambdaClient(emu.lambdalabs_url)
    key, public = keypair()
    lam("POST", "/ssh-keys", json={"name": "k", "public_key": public})
    ids = [launch_lambda(lam), launch_lambda(lam)]
    nodes = {f"node{n}": active(emu, iid) for n, iid in enumerate(ids)}
    cfg = ssh_config(tmp_path / "ssh_config", key, nodes)
    mark = f".kcloud-emulator-test-{uuid.uuid4().hex[:8]}"
    x_before = {home: (home / "x").exists() for home in REAL_HOMES}

    for name, inst in nodes.items():
        root, home = Path(inst["root"]), Path(inst["home"])
        assert root.parent == emu.workdir / "machines" and root.name == inst["id"]
        assert home == root / ("root" if inst["ssh"]["user"] == "root" else f"home/{inst['ssh']['user']}")
        out = run("ssh", "-F", cfg, name, "echo ~; pwd; echo $HOME; echo $KCLOUD_EMULATOR_ROOT; echo $KCLOUD_INSTANCE_ID")
        assert out.splitlines() == [str(home), str(home), str(home), str(root), inst["id"]]
        run("ssh", "-F", cfg, name, f"echo {name} > ~/{mark}")  # the same path on both: two files
    for name, inst in nodes.items():
        assert (Path(inst["home"]) / mark).read_text() == f"{name}\n"
        if os.geteuid() == 0:  # the real homes are covered by the instance's own in a mount namespace
            assert inst["ssh"]["isolated"] is True
            user = inst["ssh"]["user"]
            run("ssh", "-F", cfg, name, f"echo tilde > ~{user}/{mark}.tilde")
            assert (Path(inst["home"]) / f"{mark}.tilde").read_text() == "tilde\n"
            assert run("findmnt", "-rn", "-o", "TARGET").count(inst["home"]) == 0, "the bind is not seen outside"
        assert run("ssh", "-F", cfg, name, f"cat {mark}") == f"{name}\n"  # a relative path is in HOME

    (tmp_path / "up.txt").write_text("scp\n")
    run("scp", "-F", cfg, tmp_path / "up.txt", "node0:scp.txt")
    run("scp", "-O", "-F", cfg, tmp_path / "up.txt", "node0:legacy-scp.txt")  # the old scp protocol too
    sftp = subprocess.run(["sftp", "-F", cfg, "-b", "-", "node0"], input=f"pwd\nput {tmp_path / 'up.txt'} sftp.txt\n",
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert sftp.returncode == 0, sftp.stderr
    assert f"Remote working directory: {nodes['node0']['home']}" in sftp.stdout
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a.txt").write_text("rsync\n")
    run("rsync", "-a", "-e", f"ssh -F {cfg}", f"{tmp_path / 'tree'}/", "node1:synced/")
    home0, home1 = Path(nodes["node0"]["home"]), Path(nodes["node1"]["home"])
    assert (home0 / "scp.txt").read_text() == (home0 / "legacy-scp.txt").read_text() == "scp\n"
    assert (home0 / "sftp.txt").read_text() == "scp\n"
    assert (home1 / "synced" / "a.txt").read_text() == "rsync\n" and not (home0 / "synced").exists()

    inventory = tmp_path / "hosts"
    inventory.write_text(
        "".join(
            f"{name} ansible_host={i['ssh']['host']} ansible_port={i['ssh']['port']} ansible_user={i['ssh']['user']}\n"
            for name, i in nodes.items()
        )
    )
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_PRIVATE_KEY_FILE": str(key),
        "ANSIBLE_SSH_ARGS": "-o UserKnownHostsFile=/dev/null -o ControlMaster=no",
        "ANSIBLE_NOCOLOR": "1",
    }
    ansible = [str(ANSIBLE), "all", "-i", str(inventory)]
    assert run(*ansible, "-m", "ping", env=env, cwd=tmp_path).count("SUCCESS") == 2
    run(*ansible, "-m", "copy", "-a", "dest=~/x content={{ inventory_hostname }}", env=env, cwd=tmp_path)
    assert (home0 / "x").read_text() == "node0" and (home1 / "x").read_text() == "node1"
    assert (home0 / ".ansible").is_dir(), "Ansible's remote temp dir is in the instance's HOME"

    for home in REAL_HOMES:  # nothing landed in this computer's real home directories
        assert not list(home.glob(f"{mark}*")) and (home / "x").exists() == x_before[home]
    for iid in ids:
        assert (emu.workdir / "sshd" / iid / "sshd.log").exists()


@needs_sshd
def test_interactive_login_shell_starts_in_home(emulator, keypair, tmp_path):
    emu = emulator()
    dc = DataCrunchClient(emu.datacrunch_url)
    key, public = keypair()
    key_id = dc("POST", "/sshkeys", json={"name": "k", "key": public}).text
    body = {"instance_type": "CPU.4V.16G", "image": "ubuntu-24.04", "hostname": "h", "description": "d",
            "ssh_key_ids": [key_id]}  # fmt: skip
    iid = dc("POST", "/instances", json=body).text
    inst = active(emu, iid)
    os_volume = dc("GET", f"/instances/{iid}").json()["os_volume_id"]
    assert inst["root"] == str(emu.workdir / "volumes" / os_volume / "root")
    cfg = ssh_config(tmp_path / "cfg", key, {"n": inst})
    mark = f"kcloud-emulator-test-{uuid.uuid4().hex[:8]}"
    touch = f"touch /root/{mark}\n" if inst["ssh"]["user"] == "root" else ""
    shell = subprocess.run(["ssh", "-F", cfg, "-T", "n"], input=f"pwd\necho $KCLOUD_INSTANCE_ID\n{touch}",
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.split() == [inst["home"], iid]
    if inst["ssh"]["user"] == "root":  # as root: /root in its sessions is the instance's own
        assert inst["home"] == inst["root"] + "/root" and (Path(inst["home"]) / mark).exists()
        assert not (Path("/root") / mark).exists()


def startup_log(inst):
    return (Path(inst["root"]) / "var/log/kcloud-startup.log").read_text()


@needs_sshd
def test_lambda_user_data_script_runs_at_first_boot_before_active(emulator, keypair, tmp_path):
    emu = emulator()
    lam = LambdaClient(emu.lambdalabs_url)
    key, public = keypair()
    lam("POST", "/ssh-keys", json={"name": "k", "public_key": public})
    script = (
        "#!/bin/sh\n"
        'echo "cwd=$(pwd)" > ran.txt\n'
        'echo "env=$HOME|$KCLOUD_EMULATOR_ROOT|$KCLOUD_INSTANCE_ID" >> ran.txt\n'
        'read line; echo "stdin=$?" >> ran.txt\n'
        "echo to the log; sleep 0.3; exit 3\n"
    )
    iid = launch_lambda(lam, user_data=script)
    inst = active(emu, iid)
    root, home = Path(inst["root"]), Path(inst["home"])
    assert (home / "ran.txt").read_text().splitlines() == [
        f"cwd={home}",
        f"env={home}|{root}|{iid}",
        "stdin=1",  # /dev/null: EOF at once
    ], "the script ran to its end before the instance became active"
    assert (root / "var/lib/cloud/startup-script").read_text() == script
    assert (root / "var/lib/cloud/startup-script").stat().st_mode & 0o777 == 0o700
    log = startup_log(inst)
    assert "to the log\n" in log and "exited with status 3" in log
    cfg = ssh_config(tmp_path / "cfg", key, {"n": inst})
    assert run("ssh", "-F", cfg, "n", "cat ran.txt").startswith(f"cwd={home}")
    lam("POST", "/instance-operations/restart", json={"instance_ids": [iid]})
    wait_for(lambda: state_of(emu, iid)["phase"] == "booting")
    active(emu, iid)
    assert startup_log(inst).count("first boot") == 1, "a restart does not run it again"


def test_cloud_config_is_not_executed_and_a_slow_script_is_cut_off(emulator):
    emu = emulator({"extends": "default", "lifecycle": {"startup_timeout": 0.5}}, ssh="off")
    lam = LambdaClient(emu.lambdalabs_url)
    lam("POST", "/ssh-keys", json={"name": "k"})
    config = launch_lambda(lam, user_data="#cloud-config\nruncmd: [touch, /tmp/never]\n")
    started = time.monotonic()
    slow = launch_lambda(lam, user_data="#!/bin/sh\necho slow; exec sleep 30\n")
    plain = launch_lambda(lam, user_data="just text")
    inst = active(emu, slow)
    assert time.monotonic() - started < 5, "the timeout bounds the boot"
    assert "slow\n" in startup_log(inst) and "timed out after 0.5 s: killed" in startup_log(inst)
    assert "#cloud-config user data is not executed" in startup_log(active(emu, config))
    assert not (Path(state_of(emu, config)["root"]) / "var/lib/cloud/startup-script").exists()
    assert "does not start with #!: not executed" in startup_log(active(emu, plain))


def test_a_startup_script_is_killed_when_its_instance_is_terminated(emulator):
    emu = emulator(ssh="off")
    lam = LambdaClient(emu.lambdalabs_url)
    lam("POST", "/ssh-keys", json={"name": "k"})
    iid = launch_lambda(lam, user_data="#!/bin/sh\necho $$ > pid; exec sleep 60\n")
    pid_file = wait_for(lambda: (p := emu.workdir / "machines" / iid / "home").exists() and next(p.glob("*/pid"), None))
    pid = int(wait_for(lambda: pid_file.read_text().strip()))
    assert state_of(emu, iid)["phase"] == "booting", "it is not active while its script runs"
    lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]})
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z")
    wait_for(lambda: not (emu.workdir / "machines" / iid).exists())  # a Lambda machine's disk goes with it


def test_datacrunch_startup_script_runs_in_the_os_volume_root(emulator):
    emu = emulator(ssh="off")
    dc = DataCrunchClient(emu.datacrunch_url)
    sid = dc("POST", "/scripts", json={"name": "boot", "script": "#!/bin/sh\necho booted > marker\n"}).text
    body = {"instance_type": "CPU.4V.16G", "image": "ubuntu-24.04", "hostname": "h", "description": "d",
            "startup_script_id": sid}  # fmt: skip
    iid = dc("POST", "/instances", json=body).text
    dc("DELETE", f"/scripts/{sid}")  # the text was taken at create
    inst = active(emu, iid)
    os_volume = dc("GET", f"/instances/{iid}").json()["os_volume_id"]
    home = emu.workdir / "volumes" / os_volume / "root" / "root"
    assert inst["home"] == str(home) and (home / "marker").read_text() == "booted\n"


@needs_sshd
def test_state_dir_holds_everything_and_stop_removes_a_temp_work_dir(emulator, keypair, tmp_path):
    emu = emulator()
    lam = LambdaClient(emu.lambdalabs_url)
    key, public = keypair()
    lam("POST", "/ssh-keys", json={"name": "k", "public_key": public})
    iid = launch_lambda(lam, user_data="#!/bin/sh\ntrue\n")
    inst = active(emu, iid)
    files = {p.relative_to(emu.workdir).parts[0] for p in emu.workdir.rglob("*")}
    assert files <= {"machines", "sshd", "volumes", "filesystems"}
    for name in ("sshd_config", "ssh_host_ed25519_key", "authorized_keys", "sshd.log", "session"):
        assert (emu.workdir / "sshd" / iid / name).exists()
    assert Path(inst["root"]).is_relative_to(emu.workdir) and startup_log(inst)
    workdir = emu.workdir
    emu.stop()
    assert not workdir.exists()
    assert shutil.which("sshd") is None or not Path(f"/proc/{inst['ssh']['pid']}").exists()
