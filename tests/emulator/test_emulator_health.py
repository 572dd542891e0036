"""ssh="auto" | "required" | "off" and GET /_emulator/health: can kcloud expect SSH before it waits for it?"""

import os

import pytest
import requests
from emuhelpers import TIMEOUT, DataCrunchClient, wait_for
from kcloud.emulator import EmulatorError, start, sshd


def health(emu):
    r = requests.get(emu.lambdalabs_url.rsplit("/api/v1", 1)[0] + "/_emulator/health", timeout=TIMEOUT)
    assert r.status_code == 200
    return r.json()


def running_instance_ssh(emu):
    dc = DataCrunchClient(emu.datacrunch_url)
    body = {"instance_type": "CPU.4V.16G", "image": "ubuntu-24.04", "hostname": "h", "description": "d"}
    iid = dc("POST", "/instances", json=body).text
    wait_for(lambda: dc("GET", f"/instances/{iid}").json()["status"] == "running")
    (inst,) = emu.state()["instances"]
    return inst["ssh"]


@pytest.mark.skipif(not os.access(sshd.SSHD, os.X_OK), reason="openssh-server is not installed")
def test_health_says_ssh_available_when_sshd_is_installed(emulator):
    assert health(emulator()) == {"ssh": {"available": True, "reason": "", "mode": "auto"}}


def test_auto_without_sshd_warns_and_health_names_the_fix(emulator, monkeypatch, capfd):
    monkeypatch.setattr(sshd, "SSHD", "/nonexistent/sshd")
    emu = emulator()
    assert "apt-get install -y openssh-server" in capfd.readouterr().err
    ssh = health(emu)["ssh"]
    assert ssh["available"] is False and ssh["mode"] == "auto"
    assert "apt-get install -y openssh-server" in ssh["reason"]
    inst_ssh = running_instance_ssh(emu)
    assert inst_ssh["available"] is False and inst_ssh["reason"] == ssh["reason"]


def test_required_without_sshd_fails_at_start_and_leaves_nothing(monkeypatch, tmp_path):
    monkeypatch.setattr(sshd, "SSHD", "/nonexistent/sshd")
    with pytest.raises(EmulatorError, match="sshd not found.*apt-get install -y openssh-server"):
        start("default", ssh="required", state_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not os.access(sshd.SSHD, os.X_OK), reason="openssh-server is not installed")
def test_required_with_sshd_starts(emulator):
    assert health(emulator(ssh="required"))["ssh"] == {"available": True, "reason": "", "mode": "required"}


def test_off_never_starts_sshd(emulator, capfd):
    emu = emulator(ssh="off")
    assert "warning" not in capfd.readouterr().err
    ssh = health(emu)["ssh"]
    assert ssh["available"] is False and ssh["mode"] == "off" and "off" in ssh["reason"]
    inst_ssh = running_instance_ssh(emu)
    assert inst_ssh["available"] is False and "pid" not in inst_ssh
    assert emu.sshd.running() == set()


def test_unknown_ssh_mode_is_an_error():
    with pytest.raises(ValueError, match="ssh must be one of"):
        start("default", ssh="sometimes")
