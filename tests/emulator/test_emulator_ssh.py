"""Active instances answer real SSH on their own loopback address, only to their launch key."""

import getpass
import os
import subprocess
from pathlib import Path

import pytest
from emuhelpers import DataCrunchClient, LambdaClient, wait_for
from kcloud.emulator import sshd

pytestmark = pytest.mark.skipif(not os.access(sshd.SSHD, os.X_OK), reason="openssh-server is not installed")


def ssh_command(info, key, command="true"):
    return [
        "ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
        "-i", str(key), "-p", str(info["port"]), f"{info['user']}@{info['host']}", command,
    ]  # fmt: skip


def ssh(info, key, command="true"):
    """Run a command on an emulated instance with a real ssh client."""
    return subprocess.run(
        ssh_command(info, key, command), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )


def alive(pid):
    return Path(f"/proc/{pid}").exists()


def active_instance_ssh(emu, instance_id):
    def find():
        inst = next((i for i in emu.state()["instances"] if i["id"] == instance_id), None)
        return inst and inst["phase"] == "active" and inst["ssh"]

    return wait_for(find)


def test_lambda_instance_takes_its_launch_key_and_refuses_another(emulator, keypair):
    emu = emulator()
    lam = LambdaClient(emu.lambdalabs_url)
    good, public = keypair("good")
    other, _ = keypair("other")
    lam("POST", "/ssh-keys", json={"name": "good", "public_key": public})
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["good"]}
    iid = lam("POST", "/instance-operations/launch", json=body).json()["data"]["instance_ids"][0]
    info = active_instance_ssh(emu, iid)
    assert info["available"] and info["host"] == lam("GET", f"/instances/{iid}").json()["data"]["ip"]
    assert info["user"] == ("ubuntu" if os.geteuid() == 0 else getpass.getuser())
    ok = ssh(info, good, "id -un")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == info["user"]
    refused = ssh(info, other)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    session = subprocess.Popen(ssh_command(info, good, "echo ready; exec sleep 60"), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        assert session.stdout.readline() == "ready\n"  # bounded: ssh gives up after ConnectTimeout
        lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]})
        wait_for(lambda: not alive(info["pid"]))
        assert session.wait(timeout=10) != 0, "terminating the instance drops its SSH sessions"
    finally:
        if session.poll() is None:
            session.kill()
            session.wait()
        session.stdout.close()


def test_datacrunch_instances_get_distinct_addresses_and_root(emulator, keypair):
    emu = emulator()
    dc = DataCrunchClient(emu.datacrunch_url)
    key, public = keypair()
    key_id = dc("POST", "/sshkeys", json={"name": "k", "key": public}).text
    body = {
        "instance_type": "CPU.4V.16G",
        "image": "ubuntu-24.04",
        "hostname": "h",
        "description": "d",
        "ssh_key_ids": [key_id],
    }
    infos = [active_instance_ssh(emu, dc("POST", "/instances", json=body).text) for _ in range(2)]
    assert infos[0]["host"] != infos[1]["host"]
    if os.geteuid() == 0:
        assert infos[0]["user"] == "root" and infos[0]["port"] == 22
    assert ssh(infos[1], key).returncode == 0
    emu.stop()
    assert not any(alive(i["pid"]) for i in infos)


def test_without_sshd_instances_still_boot_and_report_ssh_unavailable(emulator, monkeypatch, capfd):
    monkeypatch.setattr(sshd, "SSHD", "/nonexistent/sshd")
    emu = emulator()
    assert "not reachable by SSH" in capfd.readouterr().err
    dc = DataCrunchClient(emu.datacrunch_url)
    body = {"instance_type": "CPU.4V.16G", "image": "ubuntu-24.04", "hostname": "h", "description": "d"}
    iid = dc("POST", "/instances", json=body).text
    wait_for(lambda: dc("GET", f"/instances/{iid}").json()["status"] == "running")
    (inst,) = emu.state()["instances"]
    assert inst["ssh"]["available"] is False and "openssh-server" in inst["ssh"]["reason"]
