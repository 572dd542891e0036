"""terminate_verified against the emulator's DataCrunch API: a second terminate of a machine that
is already going must count as done, even when the API refuses it (its OS volume was deleted
for good by the first terminate). This once made `make destroy` after a SIGKILLed cluster
bringup report two machines "may still be running" for two minutes."""
import time

import pytest

from kcloud import providers
from kcloud.launch.failover import terminate_verified
from kcloud.providers.base import ACTIVE, LaunchRequest


@pytest.fixture
def datacrunch(home, monkeypatch):
    from kcloud.emulator import start
    emu = start({"extends": "default", "lifecycle": {"order_delay": 0.05, "terminate_delay": 30}},
                boot_delay=0.2, ssh="off", install_delay=0)
    monkeypatch.setenv("DATACRUNCH_API_URL", emu.datacrunch_url)
    monkeypatch.setenv("DATACRUNCH_CLIENT_ID", "emulator-client")
    monkeypatch.setenv("DATACRUNCH_CLIENT_SECRET", "emulator-secret")
    yield emu, providers.get("datacrunch")
    emu.stop()


def _running(client) -> str:
    key = client.add_ssh_key("k", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHd2dXh5ent8fX5/gIGCg4SFhoeIiYqLjI2Oj5CRkpOU k")
    iid = client.launch(LaunchRequest("1V100.6V", "FIN-01", "node-01", key.name, key.id))
    deadline = time.monotonic() + 20
    while client.instance(iid).state != ACTIVE:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return iid


def test_a_second_terminate_of_a_machine_already_going_is_confirmed(datacrunch):
    emu, client = datacrunch
    iid = _running(client)
    events = []
    assert terminate_verified(client, iid, events.append, window=5)          # volume deleted for good
    assert not any(v["id"] for v in emu.state()["volumes"] if v["is_os_volume"])
    started = time.monotonic()
    assert terminate_verified(client, iid, events.append, window=5)          # refused by the API, yet going
    assert time.monotonic() - started < 3


def test_a_refused_terminate_of_a_running_machine_is_not_confirmed(datacrunch):
    emu, client = datacrunch
    iid = _running(client)
    import requests
    base = emu.datacrunch_url.rsplit("/v1", 1)[0]
    requests.post(f"{base}/_emulator/faults", json=[{"method": "PUT", "path": "/instances", "times": 0,
                                                      "error": "invalid"}], timeout=5).raise_for_status()
    assert not terminate_verified(client, iid, lambda e: None, window=2)
    requests.delete(f"{base}/_emulator/faults", timeout=5).raise_for_status()
    assert terminate_verified(client, iid, lambda e: None, window=10)
