"""End-to-end fixtures: a scratch project (real Makefile, Kconfig, terraform, playbooks) and a
scratch HOME, driven with the real `make` targets against an in-process emulator."""
import os
import subprocess
import time
from pathlib import Path

import pytest

from kcloud.demo import scratch_project
from kcloud.emulator import start

from e2e_helpers import processes_under

REPO = Path(__file__).resolve().parents[2]
CREDS = {"LAMBDALABS_API_KEY": "emulator-key", "DATACRUNCH_CLIENT_ID": "emulator-client",
         "DATACRUNCH_CLIENT_SECRET": "emulator-secret"}

if not (REPO / ".venv" / "bin" / "terraform").exists() or not Path("/usr/sbin/sshd").exists():
    pytest.skip("end-to-end tests need `make test` (the .venv with terraform) and openssh-server",
                allow_module_level=True)


class Project:
    def __init__(self, root: Path, env: dict, emulator):
        self.root, self.env, self.emulator = root, env, emulator

    def run(self, *cmd, check=True, timeout=240, env=None):
        proc = subprocess.run(list(cmd), cwd=self.root, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode:
            raise AssertionError(f"{' '.join(cmd)} exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def make(self, *targets, **kw):
        return self.run("make", "--no-print-directory", *targets, **kw)

    def defconfig(self, name, *sets):
        ssh = [] if os.geteuid() == 0 else ["SSH_CONFIG_PORT=2222", f"SSH_CONFIG_USER={os.environ.get('USER')}"]
        args = [f"--set={s}" for s in [*sets, *ssh]]
        return self.run(str(REPO / "scripts" / "kcloud"), "defconfig", name, *args)

    def journal(self) -> str:
        p = self.root / ".kcloud" / "journal.jsonl"
        return p.read_text() if p.exists() else ""


@pytest.fixture
def cloud(tmp_path_factory):
    """start(scenario) -> a running emulator; stopped (and audited by the test) at the end."""
    started = []

    def _start(scenario="default", **kw):
        # No emulated OS install unless a test asks (it measures the OS-volume reuse).
        emu = start(scenario, boot_delay=kw.pop("boot_delay", 0.5), install_delay=kw.pop("install_delay", 0.0), **kw)
        started.append(emu)
        return emu

    yield _start
    for emu in started:
        emu.stop()


@pytest.fixture
def make_project(tmp_path_factory):
    roots = []

    def _make(emulator, home=None):
        base = tmp_path_factory.mktemp("proj")
        root = scratch_project(base)
        roots.append(root)
        h = home or base / "home"
        h.mkdir(exist_ok=True)
        env = {**os.environ, **CREDS, "HOME": str(h), "LAMBDALABS_API_URL": emulator.lambdalabs_url,
               "DATACRUNCH_API_URL": emulator.datacrunch_url, "KCLOUD_HTTP_BACKOFF": "0.2"}
        env.pop("TF_CLI_CONFIG_FILE", None)
        return Project(root, env, emulator)
    yield _make
    # No test may leave a process behind (terraform, the provider plugin, a bringup).
    deadline = time.monotonic() + 30
    left = []
    for root in roots:
        while (left := processes_under(root)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid, _cmd in left:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        assert not left, f"processes left behind in {root}: {left}"
