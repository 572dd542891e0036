"""Fixtures for the emulator's own tests: a started emulator, clients, SSH key pairs.

Every test starts its own emulator on free ports and stops it, so tests share
nothing. All waiting goes through `emuhelpers.wait_for`, which is bounded.
"""

import subprocess

import pytest
from emuhelpers import DataCrunchClient, LambdaClient
from kcloud.emulator import start


@pytest.fixture
def emulator():
    """A factory: emulator(scenario="default", **start_kwargs); all are stopped at teardown.

    Named scenarios run with short ordered/terminating phases and no install delay to keep
    the suite fast.
    """
    started = []

    def make(scenario="default", **kwargs):
        kwargs.setdefault("boot_delay", 0.2)
        kwargs.setdefault("install_delay", 0.0)
        if isinstance(scenario, str):
            scenario = {"extends": scenario, "lifecycle": {"order_delay": 0.05, "terminate_delay": 0.1}}
        emu = start(scenario, **kwargs)
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def emu(emulator):
    return emulator()


@pytest.fixture
def lam(emu):
    return LambdaClient(emu.lambdalabs_url)


@pytest.fixture
def dc(emu):
    return DataCrunchClient(emu.datacrunch_url)


@pytest.fixture
def keypair(tmp_path):
    """A factory of fresh ed25519 key pairs: keypair(name) -> (private key path, public key text)."""

    def make(name="id"):
        path = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
        return path, path.with_suffix(".pub").read_text().strip()

    return make
