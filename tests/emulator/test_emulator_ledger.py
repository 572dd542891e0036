"""The billing ledger in /_emulator/state, prices recorded at launch, and POST /_emulator/price."""

import math
import time
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

import pytest
import requests
from emuhelpers import TIMEOUT, DataCrunchClient, LambdaClient, wait_for

LIFECYCLE = {"order_delay": 0.05, "boot_delay": 0.2, "terminate_delay": 0.1}


def scenario(**sections):
    return {"extends": "default", "lifecycle": LIFECYCLE, **sections}


def admin(emu, path, **kwargs):
    base = emu.lambdalabs_url.rsplit("/api/v1", 1)[0]
    method = "POST" if "json" in kwargs else "GET"
    return requests.request(method, base + "/_emulator" + path, timeout=TIMEOUT, **kwargs)


def ledger(emu, instance_id=None):
    entries = admin(emu, "/state").json()["ledger"]
    return entries if instance_id is None else next(e for e in entries if e["id"] == instance_id)


def epoch_ms(iso):
    return round(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp() * 1000)


def now_ms():
    return int(time.time() * 1000)


def the_rule(entry):
    """The README's billing rule, recomputed from the entry's own start, end, increment and price."""
    duration_ms = epoch_ms(entry["end"]) - epoch_ms(entry["start"])
    billed = max(entry["minimum_s"], math.ceil(duration_ms / (entry["increment_s"] * 1000)) * entry["increment_s"])
    amount = (Decimal(str(entry["price_per_hour"])) * billed / 3600).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return duration_ms, billed, float(amount)


def lambda_client(emu):
    lam = LambdaClient(emu.lambdalabs_url)
    assert lam("POST", "/ssh-keys", json={"name": "k"}).status_code == 200
    return lam


def lambda_launch(lam, type_name="gpu_1x_a10", region="us-east-1"):
    body = {"region_name": region, "instance_type_name": type_name, "ssh_key_names": ["k"]}
    r = lam("POST", "/instance-operations/launch", json=body)
    assert r.status_code == 200, r.text
    return r.json()["data"]["instance_ids"][0]


def lambda_terminate(lam, iid):
    assert lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]}).status_code == 200


def dc_create(dc, type_name="1H100.80S.30V", **extra):
    body = {"instance_type": type_name, "image": "ubuntu-24.04", "hostname": "h", "description": "d",
            "location_code": "FIN-01", **extra}
    r = dc("POST", "/instances", json=body)
    assert r.status_code == 200, r.text
    return r.text


def dc_delete(dc, iid):
    assert dc("PUT", "/instances", json={"action": "delete", "id": iid}).status_code == 202


def test_lambda_bills_started_minutes_from_launch_to_terminate(emulator):
    emu = emulator(scenario(), ssh="off")
    lam = lambda_client(emu)
    before = now_ms()
    iid = lambda_launch(lam)
    after = now_ms()
    running = ledger(emu, iid)
    assert running["end"] is None and running["billed_s"] == 60 and running["amount"] == 0.02
    assert before <= epoch_ms(running["start"]) <= after  # start: the launch was accepted
    time.sleep(0.3)
    before = now_ms()
    lambda_terminate(lam, iid)
    after = now_ms()
    entry = ledger(emu, iid)
    assert before <= epoch_ms(entry["end"]) <= after  # end: the terminate was accepted
    assert {k: entry[k] for k in ("provider", "name", "instance_type", "region", "price_per_hour", "currency")} == {
        "provider": "lambdalabs",
        "name": None,
        "instance_type": "gpu_1x_a10",
        "region": "us-east-1",
        "price_per_hour": 1.29,
        "currency": "usd",
    }
    duration_ms, billed, amount = the_rule(entry)
    assert entry["duration_s"] == duration_ms / 1000 and 0.3 <= entry["duration_s"] < 5
    assert (entry["increment_s"], entry["minimum_s"], entry["billed_s"], entry["amount"]) == (60, 0, billed, amount)
    assert (billed, amount) == (60, 0.02)  # 1.29 $/h x 1 min = 0.0215
    # terminated instances stay in the ledger, with the same bill
    wait_for(lambda: admin(emu, "/state").json()["instances"] == [])
    time.sleep(0.2)
    assert ledger(emu, iid) == entry
    assert admin(emu, "/reset", json={}).json() == {"reset": True}
    assert ledger(emu) == []


def test_amounts_are_exact_to_the_cent_with_the_increment_as_data(emulator):
    # 36 $/h is one cent a second; billed in 1 s increments
    emu = emulator(
        scenario(lambdalabs={"billing": {"increment_s": 1}, "types": {"gpu_1x_a10": {"price_cents_per_hour": 3600}}}),
        ssh="off",
    )
    lam = lambda_client(emu)
    iid = lambda_launch(lam)
    time.sleep(1.2)
    running = ledger(emu, iid)
    assert running["end"] is None and running["billed_s"] >= 2 and running["amount"] == running["billed_s"] / 100
    lambda_terminate(lam, iid)
    entry = ledger(emu, iid)
    duration_ms, billed, amount = the_rule(entry)
    assert billed == math.ceil(duration_ms / 1000) >= 2
    assert entry["billed_s"] == billed and entry["amount"] == amount == billed / 100


def test_half_cents_round_up(emulator):
    # 0.30 $/h for one minute is 0.005 $: half up gives a cent (banker's rounding would give 0)
    emu = emulator(scenario(lambdalabs={"types": {"gpu_1x_a10": {"price_cents_per_hour": 30}}}), ssh="off")
    lam = lambda_client(emu)
    iid = lambda_launch(lam)
    lambda_terminate(lam, iid)
    entry = ledger(emu, iid)
    assert (entry["billed_s"], entry["amount"]) == (60, 0.01) and the_rule(entry)[1:] == (60, 0.01)


def test_datacrunch_bills_started_10_minute_increments_and_the_balance_follows(emulator):
    emu = emulator(scenario(), ssh="off")
    dc = DataCrunchClient(emu.datacrunch_url)
    on_demand = dc_create(dc)
    spot = dc_create(dc, is_spot=True)
    time.sleep(0.2)
    dc_delete(dc, on_demand)
    dc_delete(dc, spot)
    entries = {e["id"]: e for e in ledger(emu)}
    assert entries[on_demand]["price_per_hour"] == 1.99 and entries[on_demand]["spot"] is False
    assert entries[spot]["price_per_hour"] == 0.77 and entries[spot]["spot"] is True
    for entry in entries.values():
        assert entry["provider"] == "datacrunch" and entry["name"] == "h" and entry["region"] == "FIN-01"
        assert entry["increment_s"] == 600 and entry["billed_s"] == 600
        assert the_rule(entry)[1:] == (entry["billed_s"], entry["amount"])
    assert (entries[on_demand]["amount"], entries[spot]["amount"]) == (0.33, 0.13)  # 0.3317, 0.1283
    assert dc("GET", "/balance").json() == {"amount": 999.54, "currency": "usd"}


def test_a_minimum_is_billed_as_data(emulator):
    emu = emulator(scenario(datacrunch={"billing": {"increment_s": 60, "minimum_s": 3600}}), ssh="off")
    dc = DataCrunchClient(emu.datacrunch_url)
    iid = dc_create(dc)
    dc_delete(dc, iid)
    entry = ledger(emu, iid)
    assert (entry["increment_s"], entry["minimum_s"], entry["billed_s"], entry["amount"]) == (60, 3600, 3600, 1.99)


def test_billing_can_start_when_the_instance_is_active(emulator):
    emu = emulator(scenario(lambdalabs={"billing": {"start": "active"}}), ssh="off")
    lam = lambda_client(emu)
    iid = lambda_launch(lam)
    launched = now_ms()
    booting = ledger(emu, iid)
    assert booting["start"] is None and booting["billed_s"] == 0 and booting["amount"] == 0
    wait_for(lambda: lam("GET", f"/instances/{iid}").json()["data"]["status"] == "active")
    started = ledger(emu, iid)
    assert epoch_ms(started["start"]) >= launched + 100 and started["billed_s"] == 60
    never = lambda_launch(lam)  # terminated before it was ever active: nothing to pay
    lambda_terminate(lam, never)
    entry = ledger(emu, never)
    assert entry["start"] is None and entry["end"] is not None and (entry["billed_s"], entry["amount"]) == (0, 0)


def test_the_price_is_recorded_at_launch(emulator):
    emu = emulator(scenario(), ssh="off")
    lam, dc = lambda_client(emu), DataCrunchClient(emu.datacrunch_url)
    old_lambda, old_dc = lambda_launch(lam), dc_create(dc, "1V100.6V")
    r = admin(emu, "/price", json={"instance_type": "gpu_1x_a10", "price_per_hour": "2.50"})
    assert r.json() == {"instance_type": "gpu_1x_a10", "price_per_hour": 2.5}
    r = admin(emu, "/price", json={"provider": "datacrunch", "instance_type": "1V100.6V", "price_per_hour": 3})
    assert r.json() == {"instance_type": "1V100.6V", "price_per_hour": 3.0}

    # the catalog shows today's price ...
    assert lam("GET", "/instance-types").json()["data"]["gpu_1x_a10"]["instance_type"]["price_cents_per_hour"] == 250
    assert dc("GET", "/instance-types/1V100.6V").json()["price_per_hour"] == "3.00"
    # ... instances, their answers and the ledger keep the price they were launched at
    assert lam("GET", f"/instances/{old_lambda}").json()["data"]["instance_type"]["price_cents_per_hour"] == 129
    assert dc("GET", f"/instances/{old_dc}").json()["price_per_hour"] == 0.39
    assert ledger(emu, old_lambda)["price_per_hour"] == 1.29 and ledger(emu, old_dc)["price_per_hour"] == 0.39
    new_lambda, new_dc = lambda_launch(lam), dc_create(dc, "1V100.6V")
    assert ledger(emu, new_lambda)["price_per_hour"] == 2.5 and ledger(emu, new_dc)["price_per_hour"] == 3.0
    assert dc("GET", f"/instances/{new_dc}").json()["price_per_hour"] == 3.0

    admin(emu, "/reset", json={})
    assert lam("GET", "/instance-types").json()["data"]["gpu_1x_a10"]["instance_type"]["price_cents_per_hour"] == 129


@pytest.mark.parametrize(
    "body",
    [
        {"instance_type": "gpu_1x_a10", "price_per_hour": "1.234"},  # Lambda prices are whole cents
        {"instance_type": "gpu_1x_a10", "price_per_hour": -1},
        {"instance_type": "gpu_1x_a10", "price_per_hour": "cheap"},
        {"instance_type": "gpu_1x_a10", "spot_price_per_hour": 1},
        {"instance_type": "nope", "price_per_hour": 1},
        {"price_per_hour": 1},
        {"provider": "datacrunch", "instance_type": "1V100.6V", "price": 1},
    ],
)
def test_bad_price_changes_are_refused(emulator, body):
    emu = emulator(scenario(), ssh="off")
    assert admin(emu, "/price", json=body).status_code == 400
