"""DataCrunch/Verda API v1 as served by the emulator: OAuth, bare bodies, plain-text ids, both spellings."""

import re
import time

import pytest
import requests
from emuhelpers import DC_CLIENT, TIMEOUT, DataCrunchClient, wait_for

INSTANCE_TYPE_KEYS = {
    "id",
    "instance_type",
    "model",
    "name",
    "display_name",
    "description",
    "manufacturer",
    "price_per_hour",
    "spot_price",
    "dynamic_price",
    "max_dynamic_price",
    "serverless_price",
    "serverless_spot_price",
    "currency",
    "cpu",
    "gpu",
    "memory",
    "gpu_memory",
    "storage",
    "best_for",
    "p2p",
    "supported_os",
    "deploy_warning",
}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def token(base, **body):
    return requests.post(base + "/oauth2/token", json=body, timeout=TIMEOUT)


def create(dc, type_name="1V100.6V", location="FIN-01", **extra):
    body = {
        "instance_type": type_name,
        "image": "ubuntu-22.04-cuda-12.0-docker",  # the A6000 refuses the default image
        "hostname": "h1",
        "description": "d",
        "location_code": location,
        **extra,
    }
    return dc("POST", "/instances", json=body)


def test_token_from_json_and_from_form(emu):
    r = token(emu.datacrunch_url, grant_type="client_credentials", **DC_CLIENT)
    assert r.status_code == 200
    auth = r.json()
    assert auth["token_type"] == "Bearer" and auth["scope"] == "fullAccess" and auth["expires_in"] == 3600
    form = requests.post(
        emu.datacrunch_url + "/oauth2/token", data={"grant_type": "client_credentials", **DC_CLIENT}, timeout=TIMEOUT
    )
    assert form.status_code == 200 and form.json()["access_token"] != auth["access_token"]


def test_refresh_token_rotates_and_old_refresh_is_rejected(emu):
    first = token(emu.datacrunch_url, grant_type="client_credentials", **DC_CLIENT).json()
    second = token(emu.datacrunch_url, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert second.status_code == 200 and second.json()["refresh_token"] != first["refresh_token"]
    again = token(emu.datacrunch_url, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert again.status_code == 401 and again.json()["code"] == "unauthorized_request"


def test_bad_secret_and_bad_bearer_are_401_unauthorized_request(emu):
    r = token(emu.datacrunch_url, grant_type="client_credentials", client_id="emulator-client", client_secret="nope")
    assert r.status_code == 401 and r.json()["code"] == "unauthorized_request"
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = requests.get(emu.datacrunch_url + "/instances", headers=headers, timeout=TIMEOUT)
        assert r.status_code == 401 and set(r.json()) == {"code", "message"}


def test_access_tokens_expire(emulator):
    emu = emulator({"datacrunch": {"credentials": {"token_expires_in": 0.3}}})
    dc = DataCrunchClient(emu.datacrunch_url)
    assert dc("GET", "/balance").status_code == 200
    time.sleep(0.4)
    assert dc("GET", "/balance").status_code == 401


def test_instance_types_are_bare_lists_with_every_sdk_key(dc):
    types = dc("GET", "/instance-types").json()
    assert isinstance(types, list) and len(types) == 36
    assert all(set(t) == INSTANCE_TYPE_KEYS for t in types)
    b300 = next(t for t in types if t["instance_type"] == "1B300.30V")
    assert (b300["price_per_hour"], b300["spot_price"], b300["currency"]) == ("6.99", "2.447", "usd")
    eur = dc("GET", "/instance-types", params={"currency": "eur"}).json()
    assert eur[0]["currency"] == "eur" and isinstance(eur[0]["price_per_hour"], str)
    one = dc("GET", "/instance-types/1H100.80S.30V").json()
    assert one["instance_type"] == "1H100.80S.30V" and one["price_per_hour"] == "1.99"
    assert dc("GET", "/instance-types/9X9.1V").json()["code"] == "not_found"


def test_locations(dc):
    codes = [loc["code"] for loc in dc("GET", "/locations").json()]
    assert codes == ["FIN-01", "FIN-02", "FIN-03", "ICE-01"]


@pytest.mark.parametrize(
    "spot, loc",
    [
        ("is_spot", "location_code"),
        ("isSpot", "location_code"),
        ("is_spot", "locationCode"),
        ("isSpot", "locationCode"),
    ],
)
def test_availability_accepts_every_parameter_spelling(dc, spot, loc):
    r = dc("GET", "/instance-availability", params={spot: "false", loc: "ICE-01"})
    assert r.status_code == 200
    (only,) = r.json()
    assert only["location_code"] == "ICE-01" and "1B300.30V" in only["availabilities"]
    assert "1V100.6V" not in only["availabilities"]  # not sold in ICE-01
    assert dc("GET", "/instance-availability/1B300.30V", params={spot: "true", loc: "ICE-01"}).json() is True
    assert dc("GET", "/instance-availability/1V100.6V", params={loc: "ICE-01"}).json() is False


def test_availability_without_filters_covers_every_location(dc):
    data = dc("GET", "/instance-availability").json()
    assert [d["location_code"] for d in data] == ["FIN-01", "FIN-02", "FIN-03", "ICE-01"]
    assert dc("GET", "/instance-availability/1V100.6V").text == "true"
    assert dc("GET", "/instance-availability", params={"location_code": "MARS-1"}).json()["code"] == "invalid_request"


def test_scarce_has_no_b300_b200_h100_and_empty_has_nothing(emulator):
    scarce = DataCrunchClient(emulator("scarce").datacrunch_url)("GET", "/instance-availability").json()
    listed = {t for loc in scarce for t in loc["availabilities"]}
    assert listed and not any(m in t for t in listed for m in ("B300", "B200", "H100"))
    assert "1H200.141S.44V" in listed
    empty = DataCrunchClient(emulator("empty").datacrunch_url)("GET", "/instance-availability").json()
    assert all(loc["availabilities"] == [] for loc in empty)


def test_images_filter_by_instance_type(dc):
    all_images = dc("GET", "/images").json()
    assert {"id", "name", "image_type", "details"} <= set(all_images[0])
    b300 = {i["image_type"] for i in dc("GET", "/images", params={"instance_type": "1B300.30V"}).json()}
    assert b300 and b300 < {i["image_type"] for i in all_images}
    default = next(i["image_type"] for i in all_images if i["is_default"])
    for legacy in ("1A6000.10V",):  # refuses the newest default image (dstack saw it)
        valid = {i["image_type"] for i in dc("GET", "/images", params={"instance_type": legacy}).json()}
        assert valid and default not in valid
        assert valid == set(dc("GET", f"/instance-types/{legacy}").json()["supported_os"])
    assert default in {i["image_type"] for i in dc("GET", "/images", params={"instance_type": "1H100.80S.30V"}).json()}


@pytest.mark.parametrize("path", ["/sshkeys", "/ssh-keys"])
def test_ssh_keys_on_both_paths(dc, keypair, path):
    public = keypair()[1]
    r = dc("POST", path, json={"name": "k", "key": public})
    assert r.status_code == 201 and UUID.fullmatch(r.text)
    key_id = r.text
    assert dc("GET", f"{path}/{key_id}").json() == [{"id": key_id, "name": "k", "key": public}]
    assert (
        [k["id"] for k in dc("GET", "/ssh-keys").json()] == [key_id] == [k["id"] for k in dc("GET", "/sshkeys").json()]
    )
    assert dc("DELETE", f"{path}/{key_id}").status_code == 200
    assert dc("GET", f"{path}/{key_id}").status_code == 404


def test_ssh_keys_bulk_delete(dc, keypair):
    ids = [dc("POST", "/sshkeys", json={"name": n, "key": keypair(n)[1]}).text for n in ("a", "b")]
    assert dc("DELETE", "/sshkeys", json={"keys": ids + ["missing"]}).status_code == 404
    assert dc("DELETE", "/ssh-keys", json={"keys": ids}).status_code == 200
    assert dc("GET", "/sshkeys").json() == []
    assert dc("POST", "/sshkeys", json={"name": "bad", "key": "not a key"}).json()["code"] == "invalid_request"


def test_create_lifecycle_ordered_provisioning_running_deleting(emulator, keypair):
    emu = emulator({"extends": "default", "lifecycle": {"order_delay": 0.2, "terminate_delay": 0.2}}, boot_delay=0.5)
    dc = DataCrunchClient(emu.datacrunch_url)
    key_id = dc("POST", "/sshkeys", json={"name": "k", "key": keypair()[1]}).text
    r = create(dc, ssh_key_ids=[key_id])
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain") and UUID.fullmatch(r.text)
    iid = r.text
    first = dc("GET", f"/instances/{iid}").json()
    assert first["status"] == "ordered" and first["ip"] is None and first["ssh_key_ids"] == [key_id]
    wait_for(lambda: dc("GET", f"/instances/{iid}").json()["status"] == "provisioning")
    running = wait_for(lambda: (i := dc("GET", f"/instances/{iid}").json())["status"] == "running" and i)
    assert running["ip"].startswith("127.") and running["location"] == "FIN-01" and running["price_per_hour"] == 0.39
    assert [i["id"] for i in dc("GET", "/instances", params={"status": "running"}).json()] == [iid]
    assert dc("GET", "/instances", params={"status": "offline"}).json() == []
    r = dc("PUT", "/instances", json={"action": "delete", "id": [iid], "volume_ids": None})
    assert r.status_code == 202 and r.json() == [{"action": "delete", "instanceId": iid, "status": "success"}]
    assert dc("GET", f"/instances/{iid}").json()["status"] == "deleting"
    wait_for(lambda: dc("GET", "/instances").json() == [])
    assert dc("GET", f"/instances/{iid}").json()["status"] == "discontinued"


def test_deleting_unknown_or_deleted_ids_is_207_with_404_entries(emulator):
    dc = DataCrunchClient(emulator().datacrunch_url)
    iid = create(dc).text
    r = dc("PUT", "/instances", json={"action": "delete", "id": [iid, "nope"]})
    assert r.status_code == 207
    ok, missing = r.json()
    assert ok["status"] == "success" and (missing["status"], missing["statusCode"]) == ("error", 404)
    wait_for(lambda: dc("GET", f"/instances/{iid}").json()["status"] == "discontinued")
    assert dc("PUT", "/instances", json={"action": "delete", "id": iid}).json()[0]["statusCode"] == 404


def test_no_capacity_is_503_with_the_real_message(emulator):
    emu = emulator("empty")
    r = create(DataCrunchClient(emu.datacrunch_url), "1V100.6V", "FIN-03")
    assert r.status_code == 503
    assert r.json() == {
        "code": "service_unavailable",
        "message": "Not enough resources to deploy a 1 GPU instance type 1V100.6V in FIN-03",
    }


def test_capacity_is_consumed_by_create_and_returned_by_delete(emu, dc):
    def available():
        return dc("GET", "/instance-availability/1A6000.10V", params={"location_code": "FIN-01"}).json()

    assert available() is True
    iid = create(dc, "1A6000.10V").text
    assert available() is False and emu.state()["capacity"]["datacrunch"]["1A6000.10V"] == {"FIN-01": 0}
    dc("PUT", "/instances", json={"action": "delete", "id": [iid]})
    wait_for(available)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"hostname": ""}, "hostname is required."),
        ({"instance_type": "9Z9.1V"}, "Invalid instance type: 9Z9.1V."),
        ({"location_code": "MARS-1"}, "Invalid location code: MARS-1."),
        ({"image": "ubuntu-22.04", "instance_type": "1B300.30V"}, "Operating system is not valid for this instance type"),
        (
            {"image": "ubuntu-24.04-cuda-12.8-open-docker", "instance_type": "1A6000.10V"},
            "Operating system is not valid for this instance type",
        ),
        ({"image": "no-such-image"}, "Invalid image: no-such-image."),
        ({"ssh_key_ids": ["missing"]}, "ssh_key_ids must list existing SSH key IDs."),
    ],
)
def test_create_validation_answers_400_invalid_request(dc, change, message):
    r = create(dc, **change)
    assert r.status_code == 400 and r.json() == {"code": "invalid_request", "message": message}


def test_location_defaults_to_fin_03_and_shutdown_start(emulator):
    dc = DataCrunchClient(emulator(boot_delay=0.1).datacrunch_url)
    body = {"instance_type": "1V100.6V", "image": "ubuntu-24.04", "hostname": "h", "description": "d"}
    iid = dc("POST", "/instances", json=body).text
    assert dc("GET", f"/instances/{iid}").json()["location"] == "FIN-03"
    wait_for(lambda: dc("GET", f"/instances/{iid}").json()["status"] == "running")
    assert dc("PUT", "/instances", json={"action": "shutdown", "id": [iid]}).status_code == 202
    assert dc("GET", f"/instances/{iid}").json()["status"] == "offline"
    dc("PUT", "/instances", json={"action": "start", "id": [iid]})
    wait_for(lambda: dc("GET", f"/instances/{iid}").json()["status"] == "running")


def test_balance(dc):
    assert dc("GET", "/balance").json() == {"amount": 1000.0, "currency": "usd"}
