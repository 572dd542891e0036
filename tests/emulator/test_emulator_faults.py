"""Fault schedules, the admin endpoints and scenario loading."""

import time

import pytest
import requests
from emuhelpers import TIMEOUT, DataCrunchClient, LambdaClient, wait_for
from kcloud.emulator.scenario import ScenarioError, load


def with_faults(lambdalabs=(), datacrunch=()):
    return {
        "extends": "default",
        "lambdalabs": {"faults": list(lambdalabs)},
        "datacrunch": {"faults": list(datacrunch)},
    }


def lambda_with_key(emu, keypair):
    lam = LambdaClient(emu.lambdalabs_url)
    lam("POST", "/ssh-keys", json={"name": "k", "public_key": keypair()[1]})
    return lam


def launch(lam, type_name="gpu_1x_a10", region="us-east-1"):
    body = {"region_name": region, "instance_type_name": type_name, "ssh_key_names": ["k"]}
    return lam("POST", "/instance-operations/launch", json=body)


def test_second_launch_answers_insufficient_capacity(emulator, keypair):
    fault = {"method": "POST", "path": "/instance-operations/launch", "nth": 2, "error": "insufficient-capacity"}
    lam = lambda_with_key(emulator(with_faults([fault])), keypair)
    codes = [launch(lam).status_code for _ in range(3)]
    assert codes == [200, 400, 200]


def test_capacity_vanishes_right_after_the_first_availability_check(emulator, keypair):
    fault = {
        "method": "GET",
        "path": "/instance-types",
        "set_capacity": [{"type": "gpu_8x_h100_sxm5", "region": "*", "count": 0}],
    }
    lam = lambda_with_key(emulator(with_faults([fault])), keypair)
    seen = lam("GET", "/instance-types").json()["data"]["gpu_8x_h100_sxm5"]["regions_with_capacity_available"]
    assert {r["name"] for r in seen} >= {"us-east-1"}
    r = launch(lam, "gpu_8x_h100_sxm5", "us-east-1")
    assert r.json()["error"]["code"] == "instance-operations/launch/insufficient-capacity"


def test_first_three_requests_are_rate_limited_then_normal(emulator):
    emu = emulator(with_faults([{"times": 3, "error": "rate-limited"}], [{"times": 3, "error": "rate-limited"}]))
    lam = LambdaClient(emu.lambdalabs_url)
    answers = [lam("GET", "/instances") for _ in range(4)]
    assert [a.status_code for a in answers] == [429, 429, 429, 200]
    assert answers[0].text == "error code: 1015" and answers[0].headers["Retry-After"] == "1"
    token = [requests.post(emu.datacrunch_url + "/oauth2/token", timeout=TIMEOUT) for _ in range(3)]
    assert [t.status_code for t in token] == [429, 429, 429]
    assert token[0].json()["code"] == "too_many_requests" and token[0].headers["Retry-After"] == "1"


def test_one_500_one_slow_answer_and_a_raw_answer(emulator):
    faults = [
        {"method": "GET", "path": "/instances", "error": "internal"},
        {"method": "GET", "path": "/images", "delay_ms": 400},
        {"method": "GET", "path": "/file-systems", "status": 502, "body": "Bad Gateway", "headers": {"X-Why": "test"}},
    ]
    lam = LambdaClient(emulator(with_faults(faults)).lambdalabs_url)
    r = lam("GET", "/instances")
    assert r.status_code == 500 and r.json()["error"]["code"] == "global/internal-error"
    assert lam("GET", "/instances").status_code == 200
    began = time.monotonic()
    assert lam("GET", "/images").status_code == 200
    assert time.monotonic() - began >= 0.4
    r = lam("GET", "/file-systems")
    assert (r.status_code, r.text, r.headers["X-Why"]) == (502, "Bad Gateway", "test")


@pytest.mark.parametrize("how", ["truncated", "html", "empty"])
def test_malformed_body_on_instance_types_once(emulator, how):
    dc = DataCrunchClient(
        emulator(with_faults(datacrunch=[{"path": "/instance-types", "malformed": how}])).datacrunch_url
    )
    bad = dc("GET", "/instance-types")
    assert bad.status_code == 200
    with pytest.raises(ValueError):
        bad.json()
    assert len(dc("GET", "/instance-types").json()) == 36


def test_disconnect_drops_the_connection(emulator):
    lam = LambdaClient(emulator(with_faults([{"path": "/instances", "disconnect": True}])).lambdalabs_url)
    with pytest.raises(requests.ConnectionError):
        lam("GET", "/instances")
    assert lam("GET", "/instances").status_code == 200


def test_stuck_instance_never_boots_but_terminates(emulator, keypair):
    fault = {"method": "POST", "path": "/instance-operations/launch", "instance": "stuck"}
    emu = emulator(with_faults([fault]), boot_delay=0.05)
    lam = lambda_with_key(emu, keypair)
    stuck = launch(lam).json()["data"]["instance_ids"][0]
    fine = launch(lam).json()["data"]["instance_ids"][0]
    wait_for(lambda: lam("GET", f"/instances/{fine}").json()["data"]["status"] == "active")
    time.sleep(0.2)
    assert lam("GET", f"/instances/{stuck}").json()["data"]["status"] == "booting"
    lam("POST", "/instance-operations/terminate", json={"instance_ids": [stuck]})
    wait_for(lambda: lam("GET", f"/instances/{stuck}").json()["data"]["status"] == "terminated")


def test_instance_goes_unhealthy_after_becoming_running(emulator):
    fault = {"method": "POST", "path": "/instances", "instance": "unhealthy", "after_s": 0.2}
    emu = emulator(with_faults(datacrunch=[fault]), boot_delay=0.05)
    dc = DataCrunchClient(emu.datacrunch_url)
    body = {"instance_type": "1V100.6V", "image": "ubuntu-24.04", "hostname": "h", "description": "d"}
    iid = dc("POST", "/instances", json=body).text
    wait_for(lambda: dc("GET", f"/instances/{iid}").json()["status"] == "running")
    wait_for(lambda: dc("GET", f"/instances/{iid}").json()["status"] == "error")
    assert emu.state()["instances"][0]["fault"] == "unhealthy"


def test_terminate_fails_once_with_500(emulator, keypair):
    fault = {"method": "POST", "path": "/instance-operations/terminate", "error": "internal"}
    lam = lambda_with_key(emulator(with_faults([fault])), keypair)
    iid = launch(lam).json()["data"]["instance_ids"][0]
    assert lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]}).status_code == 500
    assert lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]}).status_code == 200


def test_flaky_scenario_misbehaves_a_bounded_number_of_times(emulator):
    lam = LambdaClient(emulator("flaky").lambdalabs_url)
    assert [lam("GET", "/instance-types").status_code for _ in range(4)] == [429, 429, 429, 200]
    with pytest.raises(ValueError):
        lam("GET", "/instance-types").json()  # the 2nd real answer is truncated
    began = time.monotonic()
    assert len(lam("GET", "/instance-types").json()["data"]) == 25  # the 3rd is slow
    assert time.monotonic() - began >= 1.0
    assert [lam("GET", "/instances").status_code for _ in range(3)] == [200, 500, 200]


def test_admin_capacity_faults_state_and_reset(emu, keypair):
    lam = lambda_with_key(emu, keypair)
    admin = emu.lambdalabs_url.rsplit("/api/v1", 1)[0] + "/_emulator"
    r = requests.post(
        admin + "/capacity", json={"instance_type": "gpu_1x_a10", "region": "*", "count": 0}, timeout=TIMEOUT
    )
    assert r.json() == {"updated": 4}
    assert launch(lam).status_code == 400
    requests.post(
        admin + "/capacity", json={"instance_type": "gpu_1x_a10", "region": "us-east-1", "count": 1}, timeout=TIMEOUT
    )
    r = requests.post(
        admin + "/faults", json=[{"method": "GET", "path": "/instances", "error": "unavailable"}], timeout=TIMEOUT
    )
    assert r.status_code == 200 and r.json()["added"][0]["error"] == "unavailable"
    assert lam("GET", "/instances").status_code == 503
    assert launch(lam).status_code == 200
    state = requests.get(emu.datacrunch_url.rsplit("/v1", 1)[0] + "/_emulator/state", timeout=TIMEOUT).json()
    timeless = lambda s: {k: v for k, v in s.items() if k not in ("clock", "ledger")}  # these move with time
    assert timeless(state) == timeless(emu.state())
    assert [i["instance_type"] for i in state["instances"]] == ["gpu_1x_a10"]
    assert [k["name"] for k in state["ssh_keys"]] == ["k"]
    assert {"provider": "lambdalabs", "method": "GET", "path": "/api/v1/instances", "status": 503} in state["requests"]
    assert state["capacity"]["lambdalabs"]["gpu_1x_a10"]["us-east-1"] == 0
    bad = requests.post(admin + "/capacity", json={"instance_type": "nope", "region": "*", "count": 1}, timeout=TIMEOUT)
    assert bad.status_code == 400
    assert requests.post(admin + "/reset", timeout=TIMEOUT).json() == {"reset": True}
    state = emu.state()
    assert state["instances"] == state["ssh_keys"] == state["requests"] == []
    assert state["capacity"]["lambdalabs"]["gpu_1x_a10"]["us-east-1"] == 4


@pytest.mark.parametrize(
    "scenario, error",
    [
        ({"lambdalabs": {"capcity": []}}, "unknown key lambdalabs.capcity"),
        ({"lambdalabs": {"capacity": [{"type": "nope", "region": "*", "count": 1}]}}, "matches no instance type"),
        ({"datacrunch": {"faults": [{"error": "kaput"}]}}, "fault error must be one of"),
        ({"datacrunch": {"faults": [{"error": "internal", "status": 500}]}}, "only one of"),
        ({"extends": "no-such-scenario"}, "no such file"),
    ],
)
def test_bad_scenarios_fail_at_load_time(scenario, error):
    with pytest.raises(ScenarioError, match=error):
        load(scenario)


def test_extends_appends_capacity_rules_and_faults():
    flaky = load("flaky")
    default = load("default")
    assert flaky.provider("lambdalabs")["capacity"] == default.provider("lambdalabs")["capacity"]
    assert len(flaky.provider("lambdalabs")["faults"]) >= 5
    scarce = load("scarce").provider("datacrunch")["capacity"]
    assert scarce[: len(default.provider("datacrunch")["capacity"])] == default.provider("datacrunch")["capacity"]


def test_latency_is_added_to_every_answer_but_not_to_admin(emulator):
    emu = emulator(latency_ms=150)
    lam = LambdaClient(emu.lambdalabs_url)
    began = time.monotonic()
    lam("GET", "/instances")
    assert time.monotonic() - began >= 0.15
    began = time.monotonic()
    requests.get(emu.lambdalabs_url.rsplit("/api/v1", 1)[0] + "/_emulator/state", timeout=TIMEOUT)
    assert time.monotonic() - began < 0.15


# --- faults that separate "the API acted" from "the client heard about it" -------


def lambda_instances(emu):
    return [i for i in emu.state()["instances"] if i["provider"] == "lambdalabs"]


def test_late_ms_acts_first_then_holds_the_answer(emulator, keypair):
    fault = {"method": "POST", "path": "/instance-operations/launch", "late_ms": 1500}
    emu = emulator(with_faults([fault]))
    lam = lambda_with_key(emu, keypair)
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["k"]}
    with pytest.raises(requests.ReadTimeout):
        lam.session.post(lam.base + "/instance-operations/launch", json=body, timeout=0.5)
    assert len(lambda_instances(emu)) == 1, "the machine exists although the client timed out"
    assert launch(lam).status_code == 200  # fired once
    assert len(lambda_instances(emu)) == 2


def test_delay_ms_waits_before_acting(emulator, keypair):
    fault = {"method": "POST", "path": "/instance-operations/launch", "delay_ms": 1000}
    emu = emulator(with_faults([fault]))
    lam = lambda_with_key(emu, keypair)
    body = {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["k"]}
    with pytest.raises(requests.ReadTimeout):
        lam.session.post(lam.base + "/instance-operations/launch", json=body, timeout=0.3)
    assert lambda_instances(emu) == [], "nothing has happened yet when the client gives up"
    wait_for(lambda: len(lambda_instances(emu)) == 1)  # ... but the API still acts, late


def test_late_ms_on_datacrunch_create(emulator):
    emu = emulator(with_faults(datacrunch=[{"method": "POST", "path": "/instances", "late_ms": 1000}]))
    dc = DataCrunchClient(emu.datacrunch_url)
    body = {"instance_type": "1V100.6V", "image": "ubuntu-24.04", "hostname": "h", "description": "d"}
    with pytest.raises(requests.ReadTimeout):
        dc.session.post(dc.base + "/instances", json=body, timeout=0.3)
    assert [i["name"] for i in emu.state()["instances"]] == ["h"]
    assert emu.state()["billable"]["volumes"] == 1


def test_disconnect_after_acts_then_drops_the_answer(emulator, keypair):
    fault = {"method": "POST", "path": "/instance-operations/launch", "disconnect_after": True}
    emu = emulator(with_faults([fault]))
    lam = lambda_with_key(emu, keypair)
    with pytest.raises(requests.ConnectionError):
        launch(lam)
    (inst,) = lambda_instances(emu)
    assert lam("GET", "/instances").json()["data"][0]["id"] == inst["id"]
    assert {"provider": "lambdalabs", "method": "POST", "path": "/api/v1/instance-operations/launch",
            "status": 200} in emu.state()["requests"]  # fmt: skip


def test_reset_aborts_the_connection_without_acting(emulator, keypair):
    fault = {"method": "POST", "path": "/instance-operations/launch", "reset": True}
    emu = emulator(with_faults([fault]))
    lam = lambda_with_key(emu, keypair)
    with pytest.raises(requests.ConnectionError) as exc:
        launch(lam)
    assert "reset" in str(exc.value).lower(), exc.value  # a TCP RST, not a clean close
    assert lambda_instances(emu) == []
    assert launch(lam).status_code == 200


def test_reset_on_datacrunch_token(emulator):
    emu = emulator(with_faults(datacrunch=[{"path": "/oauth2/token", "reset": True}]))
    with pytest.raises(requests.ConnectionError):
        DataCrunchClient(emu.datacrunch_url)
    assert DataCrunchClient(emu.datacrunch_url)("GET", "/balance").status_code == 200


def test_lambda_terminate_fails_three_times_then_succeeds(emulator, keypair):
    fault = {"method": "POST", "path": "/instance-operations/terminate", "error": "internal", "times": 3}
    emu = emulator(with_faults([fault]))
    lam = lambda_with_key(emu, keypair)
    iid = launch(lam).json()["data"]["instance_ids"][0]
    codes = [lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]}).status_code for _ in range(4)]
    assert codes == [500, 500, 500, 200]
    wait_for(lambda: lambda_instances(emu) == [])


def test_datacrunch_delete_fails_three_times_then_succeeds(emulator):
    emu = emulator(with_faults(datacrunch=[{"method": "PUT", "path": "/instances", "error": "internal", "times": 3}]))
    dc = DataCrunchClient(emu.datacrunch_url)
    body = {"instance_type": "1V100.6V", "image": "ubuntu-24.04", "hostname": "h", "description": "d"}
    iid = dc("POST", "/instances", json=body).text
    answers = [dc("PUT", "/instances", json={"action": "delete", "id": [iid], "volume_ids": []}) for _ in range(4)]
    assert [a.status_code for a in answers] == [500, 500, 500, 202]
    assert answers[0].json()["code"] == "server_error"
    wait_for(lambda: emu.state()["instances"] == [])


def test_unhealthy_right_after_becoming_active(emulator, keypair):
    fault = {"method": "POST", "path": "/instance-operations/launch", "instance": "unhealthy", "after_s": 0}
    emu = emulator(with_faults([fault]), boot_delay=0.05)
    lam = lambda_with_key(emu, keypair)
    iid = launch(lam).json()["data"]["instance_ids"][0]
    wait_for(lambda: lam("GET", f"/instances/{iid}").json()["data"]["status"] == "unhealthy")
    (inst,) = emu.state()["instances"]
    assert inst["fault"] == "unhealthy" and inst["phase"] == "unhealthy" and inst["ip"]
    dc_fault = {"method": "POST", "path": "/instances", "instance": "unhealthy", "after_s": 0.0}
    dc = DataCrunchClient(emulator(with_faults(datacrunch=[dc_fault]), boot_delay=0.05).datacrunch_url)
    body = {"instance_type": "1V100.6V", "image": "ubuntu-24.04", "hostname": "h", "description": "d"}
    dc_iid = dc("POST", "/instances", json=body).text
    wait_for(lambda: dc("GET", f"/instances/{dc_iid}").json()["status"] == "error")


@pytest.mark.parametrize(
    "fault, error",
    [
        ({"reset": True, "error": "internal"}, "only one of"),
        ({"disconnect_after": True, "malformed": "html"}, "only one of"),
        ({"late_ms": -1}, "late_ms >= 0"),
        ({"late_ms": 1.5}, "late_ms >= 0"),
        ({"disconnect_after": "yes"}, "must be true or false"),
        ({"instance": "unhealthy", "after_s": -1}, "after_s must be a number"),
    ],
)
def test_bad_new_fault_keys_fail_at_load_time(fault, error):
    with pytest.raises(ScenarioError, match=error):
        load({"lambdalabs": {"faults": [fault]}})


def test_admin_delete_faults_clears_that_providers_schedule(emulator):
    emu = emulator(with_faults([{"path": "/instances", "error": "internal", "times": 0}], [{"error": "internal"}]))
    lam = LambdaClient(emu.lambdalabs_url)
    assert lam("GET", "/instances").status_code == 500
    admin = emu.lambdalabs_url.rsplit("/api/v1", 1)[0] + "/_emulator/faults"
    r = requests.delete(admin, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json() == {"cleared": 1}
    assert lam("GET", "/instances").status_code == 200
    faults = emu.state()["faults"]
    assert faults["lambdalabs"] == [] and len(faults["datacrunch"]) == 1  # only this port's provider
