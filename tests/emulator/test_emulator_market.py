"""The market: scheduled capacity changes, random windows and competitors, on the emulator clock."""

import functools
import time

import pytest
import requests
from emuhelpers import TIMEOUT, DataCrunchClient, LambdaClient, wait_for
from kcloud.emulator import main, start
from kcloud.emulator.emulator import overrides
from kcloud.emulator.capacity import Capacity
from kcloud.emulator.market import Market, parse_duration, parse_market
from kcloud.emulator.scenario import ScenarioError, load

LIFECYCLE = {"order_delay": 0.05, "boot_delay": 0.1, "terminate_delay": 0.1}
H100 = "gpu_1x_h100_sxm5"
DC_H100 = "1H100.80S.30V"
ANY_WINDOW = {"type": "*", "region": "*", "mean_gap_s": 1, "open_s": [1, 2], "machines": 1}


@pytest.fixture
def market_emulator():
    """A factory like `emulator`, with sshd off (these tests never log in) and the start time noted."""
    started = []

    def make(lambdalabs=None, datacrunch=None, time_scale=1.0, extends="empty"):
        scenario = {
            "extends": extends,
            "lifecycle": LIFECYCLE,
            "clock": {"time_scale": time_scale},
            "lambdalabs": {"market": lambdalabs or {}},
            "datacrunch": {"market": datacrunch or {}},
        }
        began = time.monotonic()  # the emulator clock starts after this
        emu = start(scenario, ssh="off")
        emu.began = began
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


def admin_state(emu):
    return requests.get(emu.lambdalabs_url.rsplit("/api/v1", 1)[0] + "/_emulator/state", timeout=TIMEOUT).json()


def lambda_regions(lam, type_name=H100):
    data = lam("GET", "/instance-types").json()["data"][type_name]
    return {r["name"] for r in data["regions_with_capacity_available"]}


def dc_answers(dc, type_name=DC_H100, location="FIN-01"):
    """What both DataCrunch availability answers say about one cell: {True}, {False}, or both mid-change."""
    by_location = {a["location_code"]: a["availabilities"] for a in dc("GET", "/instance-availability").json()}
    one = dc("GET", f"/instance-availability/{type_name}", params={"location_code": location}).json()
    return {one, type_name in by_location[location]}


def lambda_launch(lam, type_name=H100, region="us-west-1"):
    body = {"region_name": region, "instance_type_name": type_name, "ssh_key_names": ["k"]}
    return lam("POST", "/instance-operations/launch", json=body)


def with_key(lam):
    assert lam("POST", "/ssh-keys", json={"name": "k"}).status_code == 200  # Lambda makes the key pair
    return lam


def since_start(emu):
    return time.monotonic() - emu.began


# --- durations and validation ------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds", [("30s", 30), ("2m", 120), ("1h", 3600), (45, 45), (0.25, 0.25), ("1.5m", 90)]
)
def test_durations(value, seconds):
    assert parse_duration(value, "at") == seconds


@pytest.mark.parametrize(
    "market, error",
    [
        ({"shedule": []}, "unknown key lambdalabs.market.shedule"),
        ({"schedule": [{"at": "30s", "type": H100, "region": "us-west-1"}]}, "needs machines"),
        ({"schedule": [{"at": "30x", "type": H100, "region": "us-west-1", "machines": 1}]}, "must be a duration"),
        ({"schedule": [{"at": -1, "type": H100, "region": "us-west-1", "machines": 1}]}, "must be a duration"),
        ({"schedule": [{"at": 1, "type": "nope*", "region": "*", "machines": 1}]}, "matches no instance type"),
        ({"schedule": [{"at": 1, "type": H100, "region": "mars-1", "machines": 1}]}, "unknown region"),
        ({"schedule": [{"at": 1, "type": H100, "region": "*", "machines": -1}]}, "integer >= 0"),
        ({"random": {"windows": [dict(ANY_WINDOW, mean_gap_s=0)]}}, "> 0"),
        ({"random": {"windows": [dict(ANY_WINDOW, open_s=[5, 2])]}}, "shortest <= longest"),
        ({"random": {"windows": [dict(ANY_WINDOW, open_s=5)]}}, "open_s must be"),
        ({"random": {"windows": [dict(ANY_WINDOW, size=1)]}}, "unknown key market.random.windows\\[0\\].size"),
        ({"random": {"competitors": {"mean_delay": 3}}}, "unknown key market.random.competitors.mean_delay"),
        ({"random": {"seed": True}}, "seed must be"),
    ],
)
def test_bad_markets_fail_at_load_time(market, error):
    with pytest.raises(ScenarioError, match=error):
        load({"extends": "default", "lambdalabs": {"market": market}})


@pytest.mark.parametrize(
    "scenario, error",
    [
        ({"clock": {"time_scale": 0}}, "time_scale must be a number > 0"),
        ({"clock": {"speed": 2}}, "unknown key clock.speed"),
        ({"datacrunch": {"billing": {"increment_s": 0}}}, "increment_s"),
        ({"datacrunch": {"billing": {"minimum_s": 1.5}}}, "minimum_s"),
        ({"lambdalabs": {"billing": {"start": "boot"}}}, "billing.start must be one of launch, active"),
    ],
)
def test_bad_clock_and_billing_fail_at_load_time(scenario, error):
    with pytest.raises(ScenarioError, match=error):
        load(scenario)


def test_extends_appends_schedules_and_windows(tmp_path):
    parent = tmp_path / "parent.yaml"
    window = {"type": "*h100*", "region": "*", "mean_gap_s": "10m", "open_s": [5, "2m"], "machines": 1}
    parent.write_text(
        "extends: default\n"
        "lambdalabs:\n"
        "  market:\n"
        "    schedule: [{at: 30s, type: gpu_1x_h100_sxm5, region: us-west-1, machines: 2}]\n"
        f"    random: {{seed: 1, windows: [{window}]}}\n".replace("'", '"')
    )
    child = load(
        {
            "extends": str(parent),
            "lambdalabs": {
                "market": {
                    "schedule": [{"at": "1m", "type": H100, "region": "us-west-1", "machines": 0}],
                    "random": {"windows": [dict(window, type="*a100*")], "competitors": {"mean_delay_s": 20}},
                }
            },
        }
    ).market("lambdalabs")
    assert [(e["at"], e["machines"]) for e in child["schedule"]] == [(30.0, 2), (60.0, 0)]
    assert [w["type"] for w in child["random"]["windows"]] == ["*h100*", "*a100*"]
    first = child["random"]["windows"][0]
    assert first["open_s"] == [5.0, 120.0] and first["mean_gap_s"] == 600
    assert child["random"]["seed"] == 1 and child["random"]["competitors"] == {"mean_delay_s": 20.0}


# --- the market on a virtual clock -------------------------------------------


@functools.cache
def default_scenario():
    return load("default")


def virtual_market(spec, provider="lambdalabs"):
    scenario = default_scenario()
    capacity = Capacity(scenario.catalogs[provider], scenario.provider(provider)["capacity"])
    return Market(provider, parse_market(spec), capacity), capacity


def test_random_windows_follow_their_spec_on_a_virtual_clock():
    window = {"type": "*h100*", "region": "*", "mean_gap_s": 600, "open_s": [5, 120], "machines": 3}
    market, capacity = virtual_market({"random": {"seed": 42, "windows": [window]}})
    cells = capacity.cells("*h100*", "*")
    assert len(cells) > 3 and all(capacity.count(*c) == 0 for c in cells)  # closed at first, whatever the rules said
    events = market.advance(30 * 24 * 3600)
    assert {e["kind"] for e in events} == {"open", "close"}
    gaps, last_close = [], {}
    for e in events:
        cell = (e["type"], e["region"])
        if e["kind"] == "open":
            assert 5 <= e["until"] - e["t"] <= 120.001 and e["free"] == 3
            gaps.append(e["t"] - last_close.get(cell, 0.0))
            assert e["t"] >= last_close.get(cell, 0.0)  # a cell's windows never overlap
        else:
            last_close[cell] = e["t"]
            assert e["free"] == 0
    assert 450 < sum(gaps) / len(gaps) < 750  # exponential gaps with a mean of 600 s (thousands of samples)
    assert set(last_close) == set(cells)


def test_same_seed_same_market_other_seed_other_market_on_a_virtual_clock():
    def run(seed):
        window = {"type": "*h100*", "region": "*", "mean_gap_s": 60, "open_s": [5, 20], "machines": 2}
        market, _ = virtual_market({"random": {"seed": seed, "windows": [window], "competitors": {"mean_delay_s": 8}}})
        return [e for step in range(1, 101) for e in market.advance(step * 36.0)]  # an hour, in uneven steps

    assert run(42) == run(42)
    assert run(42) != run(43)
    assert any(e["kind"] == "competitor" and e["took"] for e in run(42))
    # the steps do not matter: one big advance gives the same events
    window = {"type": "*h100*", "region": "*", "mean_gap_s": 60, "open_s": [5, 20], "machines": 2}
    market, _ = virtual_market({"random": {"seed": 42, "windows": [window], "competitors": {"mean_delay_s": 8}}})
    assert market.advance(3600.0) == run(42)


# --- over HTTP, on the emulator clock ----------------------------------------


def test_a_scheduled_window_opens_and_closes_on_time_for_both_providers(market_emulator):
    lam_schedule = [
        {"at": 1.2, "type": H100, "region": "us-west-1", "machines": 2},
        {"at": "2.5s", "type": H100, "region": "us-west-1", "machines": 0},
    ]
    dc_schedule = [
        {"at": "1.2s", "type": DC_H100, "region": "FIN-01", "machines": 1},
        {"at": 2.5, "type": DC_H100, "region": "*", "machines": 0},
    ]
    emu = market_emulator({"schedule": lam_schedule}, {"schedule": dc_schedule})
    lam, dc = with_key(LambdaClient(emu.lambdalabs_url)), DataCrunchClient(emu.datacrunch_url)
    assert lambda_regions(lam) == set() and dc_answers(dc) == {False}
    refused = lambda_launch(lam)
    assert refused.json()["error"]["code"] == "instance-operations/launch/insufficient-capacity"
    assert since_start(emu) < 1.2, "the machine is too slow for this test's timing"

    wait_for(lambda: lambda_regions(lam) == {"us-west-1"}, timeout=5)
    assert since_start(emu) >= 1.2
    wait_for(lambda: dc_answers(dc) == {True}, timeout=5)
    assert lambda_launch(lam).status_code == 200
    assert lambda_regions(lam) == {"us-west-1"}  # one of two left
    assert lambda_launch(lam).status_code == 200
    assert lambda_regions(lam) == set() and lambda_launch(lam).status_code == 400

    wait_for(lambda: dc_answers(dc) == {False}, timeout=5)
    assert since_start(emu) >= 2.5
    events = admin_state(emu)["market"]
    assert [(e["t"], e["kind"], e["region"]) for e in events["lambdalabs"]["events"]] == [
        (1.2, "schedule", "us-west-1"),
        (2.5, "schedule", "us-west-1"),
    ]
    dc_events = [(e["t"], e["free"]) for e in events["datacrunch"]["events"] if e["region"] == "FIN-01"]
    assert dc_events == [(1.2, 1), (2.5, 0)]
    create = {"instance_type": DC_H100, "image": "ubuntu-24.04", "hostname": "h", "description": "d"}
    create["location_code"] = "FIN-01"
    assert dc("POST", "/instances", json=create).status_code == 503


def test_time_scale_runs_the_market_clock_faster(market_emulator):
    schedule = [{"at": "1m", "type": H100, "region": "us-west-1", "machines": 1}]
    emu = market_emulator({"schedule": schedule}, time_scale=60)
    lam = LambdaClient(emu.lambdalabs_url)
    wait_for(lambda: lambda_regions(lam) == {"us-west-1"}, timeout=5)
    assert since_start(emu) >= 1.0  # 60 emulator seconds = 1 real second
    clock = admin_state(emu)["clock"]
    assert clock["time_scale"] == 60 and clock["time_s"] >= 60


def test_a_random_window_shows_in_both_providers_answers(market_emulator):
    window = {"mean_gap_s": 0.3, "open_s": [600, 600], "machines": 1}
    emu = market_emulator(
        {"random": {"seed": 5, "windows": [dict(window, type=H100, region="us-west-1")]}},
        {"random": {"seed": 5, "windows": [dict(window, type=DC_H100, region="FIN-01")]}},
    )
    lam, dc = with_key(LambdaClient(emu.lambdalabs_url)), DataCrunchClient(emu.datacrunch_url)
    wait_for(lambda: lambda_regions(lam) == {"us-west-1"}, timeout=10)
    wait_for(lambda: dc_answers(dc) == {True}, timeout=10)
    assert lambda_launch(lam).status_code == 200
    assert lambda_regions(lam) == set()
    opened = [e for e in admin_state(emu)["market"]["lambdalabs"]["events"] if e["kind"] == "open"]
    assert len(opened) == 1 and opened[0]["until"] - opened[0]["t"] == pytest.approx(600, abs=0.002)


def test_the_random_market_repeats_with_the_same_seed_and_differs_with_another(market_emulator):
    def market(seed, type_glob):
        window = {"type": type_glob, "region": "*", "mean_gap_s": 30, "open_s": [5, 20], "machines": 1}
        return {"random": {"seed": seed, "windows": [window], "competitors": {"mean_delay_s": 10}}}

    emus = [
        market_emulator(market(seed, "gpu_1x_h100*"), market(seed, "1H100*"), time_scale=400) for seed in (42, 42, 7)
    ]
    for emu in emus:  # 400 emulator seconds per real second
        wait_for(lambda emu=emu: admin_state(emu)["clock"]["time_s"] > 500, timeout=10)
    runs = [
        {p: [e for e in admin_state(emu)["market"][p]["events"] if e["t"] <= 450] for p in ("lambdalabs", "datacrunch")}
        for emu in emus
    ]
    assert len(runs[0]["lambdalabs"]) > 10 and len(runs[0]["datacrunch"]) > 10
    assert runs[0] == runs[1]
    assert runs[0]["lambdalabs"] != runs[2]["lambdalabs"] and runs[0]["datacrunch"] != runs[2]["datacrunch"]
    assert runs[0]["lambdalabs"] != runs[0]["datacrunch"]  # providers draw from their own streams


def test_competitors_take_free_machines(market_emulator):
    window = {"type": H100, "region": "us-west-1", "mean_gap_s": 0.1, "open_s": [600, 600], "machines": 2}
    emu = market_emulator({"random": {"seed": 3, "windows": [window], "competitors": {"mean_delay_s": 0.3}}})
    lam = LambdaClient(emu.lambdalabs_url)

    def taken():
        events = admin_state(emu)["market"]["lambdalabs"]["events"]
        return [e for e in events if e["kind"] == "competitor" and e["took"]]

    took = wait_for(lambda: len(taken()) == 2 and taken(), timeout=10)
    assert [e["free"] for e in took] == [1, 0]
    assert lambda_regions(lam) == set()  # the window is still open, but the machines are gone
    assert admin_state(emu)["capacity"]["lambdalabs"][H100]["us-west-1"] == 0


def first_competitor_delay(seed, mean):
    """Emulator seconds between the first window's opening and its competitor (virtual clock)."""
    window = {"type": H100, "region": "us-west-1", "mean_gap_s": 0.05, "open_s": [600, 600], "machines": 1}
    market, _ = virtual_market({"random": {"seed": seed, "windows": [window], "competitors": {"mean_delay_s": mean}}})
    events = market.advance(600.0)
    return next(e["t"] for e in events if e["kind"] == "competitor") - events[0]["t"]


def test_a_machine_launched_first_is_not_taken_and_one_given_back_is(market_emulator):
    # a seed whose first competitor comes late enough for the client to launch before it
    seed = next(s for s in range(10000) if first_competitor_delay(s, 0.3) > 1.2)
    window = {"type": H100, "region": "us-west-1", "mean_gap_s": 0.05, "open_s": [600, 600], "machines": 1}
    emu = market_emulator({"random": {"seed": seed, "windows": [window], "competitors": {"mean_delay_s": 0.3}}})
    lam = with_key(LambdaClient(emu.lambdalabs_url))
    wait_for(lambda: lambda_regions(lam) == {"us-west-1"}, timeout=5)
    iid = lambda_launch(lam).json()["data"]["instance_ids"][0]

    def competitors():
        return [e for e in admin_state(emu)["market"]["lambdalabs"]["events"] if e["kind"] == "competitor"]

    wait_for(lambda: competitors(), timeout=10)
    assert [e["took"] for e in competitors()] == [False]  # we got there first
    assert lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]}).status_code == 200
    wait_for(lambda: len(competitors()) == 2, timeout=10)  # the machine came back; a competitor went for it
    assert competitors()[1]["took"] is True and competitors()[1]["free"] == 0
    assert lambda_regions(lam) == set()


def test_reset_restarts_the_market_clock(market_emulator):
    emu = market_emulator({"schedule": [{"at": 0.5, "type": H100, "region": "us-west-1", "machines": 1}]})
    lam = LambdaClient(emu.lambdalabs_url)
    wait_for(lambda: lambda_regions(lam) == {"us-west-1"}, timeout=5)
    base = emu.lambdalabs_url.rsplit("/api/v1", 1)[0]
    assert requests.post(base + "/_emulator/reset", timeout=TIMEOUT).json() == {"reset": True}
    state = admin_state(emu)
    assert state["clock"]["time_s"] < 0.5 and state["market"]["lambdalabs"]["events"] == []
    assert lambda_regions(lam) == set()
    wait_for(lambda: lambda_regions(lam) == {"us-west-1"}, timeout=5)


def test_the_shipped_market_scenario_and_the_time_scale_override():
    market = load("market")
    assert market.market("lambdalabs")["random"]["windows"][0]["mean_gap_s"] == 600
    assert market.provider("lambdalabs")["capacity"] == load("scarce").provider("lambdalabs")["capacity"]
    assert load("market", overrides(None, None, None, 30)).time_scale == 30
    assert main(["--scenario", "market", "--time-scale", "0"]) == 2  # refused before anything starts
