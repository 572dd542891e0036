"""Starting and stopping: `python -m kcloud.emulator` prints two export lines first and stops cleanly."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import kcloud.emulator
import pytest
import requests
from emuhelpers import DataCrunchClient, LambdaClient, wait_for

LIB = Path(kcloud.emulator.__file__).resolve().parents[2]


def first_lines(proc, count, timeout=15):
    """The first `count` stdout lines, read in a thread so a silent process cannot hang the test."""
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout.readline() for _ in range(count)), daemon=True)
    reader.start()
    reader.join(timeout)
    assert len(lines) == count, f"emulator printed {lines!r} within {timeout}s"
    return [line.rstrip("\n") for line in lines]


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_prints_exports_first_and_stops_cleanly(tmp_path, stop_signal):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kcloud.emulator",
            "--scenario",
            "default",
            "--boot-delay",
            "0.1",
            "--state-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": str(LIB)},
    )
    try:
        lam_line, dc_line = first_lines(proc, 2)
        assert re.fullmatch(r"export LAMBDALABS_API_URL=http://127\.0\.0\.1:\d+/api/v1", lam_line)
        assert re.fullmatch(r"export DATACRUNCH_API_URL=http://127\.0\.0\.1:\d+/v1", dc_line)
        dc_url = dc_line.split("=", 1)[1]
        dc = DataCrunchClient(dc_url)
        body = {"instance_type": "CPU.4V.16G", "image": "ubuntu-24.04", "hostname": "h", "description": "d"}
        iid = dc("POST", "/instances", json=body).text
        wait_for(lambda: dc("GET", f"/instances/{iid}").json()["status"] == "running")
        with urllib.request.urlopen(dc_url.rsplit("/v1", 1)[0] + "/_emulator/state", timeout=10) as r:
            ssh = json.load(r)["instances"][0]["ssh"]
        [workdir] = list(tmp_path.iterdir())  # the emulator's work dir is made under --state-dir
        proc.send_signal(stop_signal)
        assert proc.wait(timeout=15) == 0, proc.stderr.read()
        if ssh["available"]:
            assert not Path(f"/proc/{ssh['pid']}").exists(), "sshd outlived the emulator"
        assert list(tmp_path.iterdir()) == [workdir], "and kept after stop, for inspection"
        assert {p.name for p in workdir.iterdir()} <= {"machines", "volumes", "filesystems", "sshd"}
        assert (workdir / "volumes").is_dir()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_rejects_an_unknown_scenario():
    proc = subprocess.run(
        [sys.executable, "-m", "kcloud.emulator", "--scenario", "no-such-thing"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(LIB)},
    )
    assert proc.returncode == 2 and proc.stdout == "" and "no such file" in proc.stderr


def test_stop_drops_open_keep_alive_connections(tmp_path):
    emu = kcloud.emulator.start()
    lam = LambdaClient(emu.lambdalabs_url)
    assert lam("GET", "/instances").status_code == 200  # leaves a pooled keep-alive connection
    assert emu.workdir.is_dir()
    emu.stop()
    emu.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        lam("GET", "/instances")
    assert not emu.workdir.exists(), "without state_dir the work dir is removed on stop"


def test_cli_rejects_an_unknown_ssh_mode():
    proc = subprocess.run(
        [sys.executable, "-m", "kcloud.emulator", "--ssh", "sometimes"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(LIB)},
    )
    assert proc.returncode == 2 and proc.stdout == "" and "--ssh" in proc.stderr


def test_the_demo_runs_the_providers_the_emulator_serves(tmp_path):
    """make demo iterates over what the emulator announces (KCLOUD_EMULATOR_PROVIDERS), never over
    every provider kcloud has: a provider without an emulated API would be asked for real."""
    from kcloud import demo

    env = {**os.environ, "HOME": str(tmp_path)}
    emu = demo.Emulator("default", 0.1, None, env)
    try:
        assert emu.providers == ["lambdalabs", "datacrunch"]
        assert set(emu.urls) == {"LAMBDALABS_API_URL", "DATACRUNCH_API_URL"}
    finally:
        emu.stop()
    urls = {"LAMBDALABS_API_URL": "http://127.0.0.1:1/api/v1"}
    assert demo.served_providers(urls, ["lambdalabs", "datacrunch", "toy"]) == ["lambdalabs"]
