"""DataCrunch/Verda volumes, the trash, tags and startup scripts, and what an instance delete leaves behind."""

import re

import pytest
import requests
from emuhelpers import TIMEOUT, DataCrunchClient, wait_for

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VOLUME_KEYS = {
    "id", "name", "size", "type", "status", "is_os_volume", "created_at", "location", "instance_id", "instances",
    "target", "ssh_key_ids", "contract", "pseudo_path", "mount_command", "create_directory_command",
    "filesystem_to_fstab_command", "base_hourly_cost", "monthly_price", "currency", "long_term", "tags",
}  # fmt: skip


def create(dc, **extra):
    body = {
        "instance_type": "CPU.4V.16G",
        "image": "ubuntu-24.04",
        "hostname": "h1",
        "description": "d",
        "location_code": "FIN-01",
        **extra,
    }
    return dc("POST", "/instances", json=body)


def instance(dc, iid):
    return dc("GET", f"/instances/{iid}").json()


def running(dc, **extra):
    r = create(dc, **extra)
    assert r.status_code == 200, r.text
    wait_for(lambda: instance(dc, r.text)["status"] == "running")
    return instance(dc, r.text)


def volumes(dc, path="/volumes"):
    return {v["id"]: v for v in dc("GET", path).json()}


def new_volume(dc, name="data", size=50, **extra):
    body = {"type": "NVMe", "name": name, "size": size, "location_code": "FIN-01", **extra}
    r = dc("POST", "/volumes", json=body)
    assert r.status_code == 201 and r.headers["Content-Type"].startswith("text/plain"), r.text
    return r.text


# --- tags -------------------------------------------------------------------


def test_instance_tags_at_create_then_added_and_removed(emu, dc):
    iid = create(dc, tags=[{"key": "Run-ID", "value": "r-1"}, {"key": "free"}]).text
    tags = instance(dc, iid)["tags"]
    assert [(t["key"], t["value"]) for t in tags] == [("run-id", "r-1"), ("free", "")]
    assert all(UUID.fullmatch(t["id"]) for t in tags)
    r = dc("POST", f"/instances/{iid}/tags", json={"key": "Owner", "value": "me"})
    assert r.status_code == 201 and set(r.json()) == {"id", "key", "value"} and r.json()["key"] == "owner"
    dup = dc("POST", f"/instances/{iid}/tags", json={"key": "owner", "value": "you"})
    assert dup.status_code == 409
    assert [t["key"] for t in emu.state()["instances"][0]["tags"]] == ["run-id", "free", "owner"]
    r = dc("DELETE", f"/instances/{iid}/tags/OWNER")
    assert r.status_code == 200 and r.text == ""
    assert dc("DELETE", f"/instances/{iid}/tags/owner").status_code == 404
    assert [t["key"] for t in instance(dc, iid)["tags"]] == ["run-id", "free"]
    assert dc("POST", "/instances/nope/tags", json={"key": "k"}).status_code == 404


def test_key_with_a_colon_is_url_escaped_in_the_delete_path(dc):
    iid = create(dc, tags=[{"key": "kcloud:run", "value": "1"}]).text
    assert dc("DELETE", f"/instances/{iid}/tags/kcloud%3Arun").status_code == 200
    assert instance(dc, iid)["tags"] == []


@pytest.mark.parametrize(
    "tags, status",
    [
        ([{"key": f"k{i}"} for i in range(11)], 400),
        ([{"key": "k" * 64}], 400),
        ([{"key": "k", "value": "v" * 128}], 400),
        ([{"value": "v"}], 400),
        ([{"key": "k", "colour": "red"}], 400),
        ([{"key": "k"}, {"key": "K"}], 409),
    ],
)
def test_bad_create_tags(emu, dc, tags, status):
    r = create(dc, tags=tags)
    assert r.status_code == status, r.text
    assert emu.state()["instances"] == [] and emu.state()["volumes"] == []


def test_at_most_ten_tags_and_limits_at_the_edge(dc):
    iid = create(dc, tags=[{"key": "k" * 63, "value": "v" * 127}] + [{"key": f"k{i}"} for i in range(9)]).text
    r = dc("POST", f"/instances/{iid}/tags", json={"key": "eleventh"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"


def test_volume_tags(dc):
    vid = new_volume(dc, tags=[{"key": "Purpose", "value": "scratch"}])
    assert [(t["key"], t["value"]) for t in volumes(dc)[vid]["tags"]] == [("purpose", "scratch")]
    assert dc("POST", f"/volumes/{vid}/tags", json={"key": "owner"}).json()["value"] == ""
    assert dc("POST", f"/volumes/{vid}/tags", json={"key": "owner"}).status_code == 409
    assert dc("DELETE", f"/volumes/{vid}/tags/purpose").status_code == 200
    assert [t["key"] for t in dc("GET", f"/volumes/{vid}").json()["tags"]] == ["owner"]
    assert dc("POST", "/volumes/nope/tags", json={"key": "k"}).status_code == 404


# --- OS volumes and startup scripts -----------------------------------------


def test_every_instance_gets_an_os_volume(emulator):
    emu = emulator({"extends": "default", "lifecycle": {"order_delay": 0.3}}, boot_delay=0.4)
    dc = DataCrunchClient(emu.datacrunch_url)
    iid = create(dc).text
    ordered = instance(dc, iid)
    assert ordered["status"] == "ordered" and ordered["os_volume_id"] is None  # null until provisioning
    (vol,) = volumes(dc).values()
    assert set(vol) == VOLUME_KEYS
    assert (vol["name"], vol["size"], vol["is_os_volume"], vol["status"], vol["instance_id"]) == (
        "h1-os", 100, True, "attached", iid,
    )  # fmt: skip
    assert vol["location"] == "FIN-01" and vol["instances"][0]["id"] == iid and vol["target"] == "vda"
    wait_for(lambda: instance(dc, iid)["status"] == "running")
    inst = instance(dc, iid)
    assert inst["os_volume_id"] == vol["id"] and inst["volume_ids"] == [vol["id"]]
    (state_vol,) = emu.state()["volumes"]
    assert state_vol["trash"] is False and state_vol["instance_id"] == iid and state_vol["provider"] == "datacrunch"
    assert emu.state()["instances"][0]["os_volume_id"] == vol["id"]


def test_os_volume_name_and_size_and_new_data_volumes(dc):
    scratch = {"type": "HDD", "name": "scratch", "size": 500}
    inst = running(dc, os_volume={"name": "boot", "size": 200}, volumes=[scratch])
    vols = volumes(dc)
    os_vol = vols[inst["os_volume_id"]]
    assert (os_vol["name"], os_vol["size"], os_vol["type"]) == ("boot", 200, "NVMe")
    (data,) = [v for v in vols.values() if not v["is_os_volume"]]
    assert (data["name"], data["type"], data["status"]) == ("scratch", "HDD", "attached")
    assert data["instance_id"] == inst["id"]
    assert sorted(inst["volume_ids"]) == sorted(vols)


@pytest.mark.parametrize(
    "extra",
    [
        {"os_volume": {"name": "boot", "size": 0}},
        {"os_volume": {"name": "boot", "size": 100, "on_spot_discontinue": "keep_detached"}},  # not a spot instance
        {"volumes": [{"type": "NVMe", "name": "x", "size": 1, "tags": [{"key": "k"}]}]},
        {"volumes": [{"type": "Floppy", "name": "x", "size": 1}]},
        {"existing_volumes": ["no-such-volume"]},
        {"startup_script_id": "no-such-script"},
    ],
)
def test_create_rejects_bad_volume_and_script_fields(emu, dc, extra):
    r = create(dc, **extra)
    assert r.status_code == 400 and r.json()["code"] == "invalid_request", r.text
    assert emu.state()["billable"]["volumes"] == 0


def test_startup_scripts(emu, dc):
    r = dc("POST", "/scripts", json={"name": "boot", "script": "#!/bin/bash\necho hi\n"})
    assert r.status_code == 201 and UUID.fullmatch(r.text)
    sid = r.text
    (listed,) = dc("GET", "/scripts").json()
    assert (listed["id"], listed["name"], listed["script"]) == (sid, "boot", "#!/bin/bash\necho hi\n")
    assert dc("GET", f"/scripts/{sid}").json() == [listed]
    assert dc("GET", "/scripts/nope").status_code == 404
    assert dc("POST", "/scripts", json={"name": "no-script"}).json()["code"] == "invalid_request"
    iid = create(dc, startup_script_id=sid).text
    assert instance(dc, iid)["startup_script_id"] == sid
    assert emu.state()["scripts"] == [{"provider": "datacrunch", "id": sid, "name": "boot", "length": 20}]
    other = dc("POST", "/scripts", json={"name": "b", "script": "true"}).text
    third = dc("POST", "/scripts", json={"name": "c", "script": "true"}).text
    assert emu.state()["billable"]["scripts"] == 3
    r = dc("DELETE", f"/scripts/{sid}")
    assert r.status_code == 200 and r.text == ""
    assert dc("DELETE", f"/scripts/{sid}").status_code == 404
    assert dc("DELETE", "/scripts", json={"scripts": [other, "nope"]}).status_code == 404
    assert dc("DELETE", "/scripts", json={"scripts": [other, third]}).text == ""
    assert dc("GET", "/scripts").json() == [] and emu.state()["billable"]["scripts"] == 0


# --- what an instance delete leaves (contract 2.2.4) -------------------------


def with_data_volume(dc):
    inst = running(dc, volumes=[{"type": "NVMe", "name": "data", "size": 50}])
    data = next(v for v in inst["volume_ids"] if v != inst["os_volume_id"])
    return inst["id"], inst["os_volume_id"], data


def delete(dc, iid, **fields):
    r = dc("PUT", "/instances", json={"action": "delete", "id": [iid], **fields})
    assert r.status_code == 202, r.text
    wait_for(lambda: instance(dc, iid)["status"] == "discontinued")


@pytest.mark.parametrize("fields", [{}, {"volume_ids": None}, {"volume_ids": None, "delete_permanently": True}])
def test_delete_without_volume_ids_trashes_the_os_volume_and_detaches_the_rest(emu, dc, fields):
    iid, os_vol, data = with_data_volume(dc)
    delete(dc, iid, **fields)
    trash = volumes(dc, "/volumes/trash")
    assert list(trash) == [os_vol]
    assert trash[os_vol]["status"] == "deleted" and trash[os_vol]["is_permanently_deleted"] is False
    assert trash[os_vol]["deleted_at"] and trash[os_vol]["instance_id"] is None
    live = volumes(dc)
    assert list(live) == [data] and live[data]["status"] == "detached" and live[data]["instance_id"] is None
    state = emu.state()
    assert sorted((v["id"], v["trash"]) for v in state["volumes"]) == sorted([(os_vol, True), (data, False)])
    assert state["billable"] == {"instances": 0, "volumes": 2, "file_systems": 0, "ssh_keys": 0, "scripts": 0}


def test_delete_with_empty_volume_ids_deletes_no_volume(emu, dc):
    iid, os_vol, data = with_data_volume(dc)
    delete(dc, iid, volume_ids=[])
    assert dc("GET", "/volumes/trash").json() == []
    live = volumes(dc)
    assert set(live) == {os_vol, data} and {v["status"] for v in live.values()} == {"detached"}
    assert emu.state()["billable"]["volumes"] == 2


def test_delete_with_listed_volume_ids_trashes_exactly_those(dc):
    iid, os_vol, data = with_data_volume(dc)
    delete(dc, iid, volume_ids=[data])
    assert list(volumes(dc, "/volumes/trash")) == [data]
    assert list(volumes(dc)) == [os_vol] and volumes(dc)[os_vol]["status"] == "detached"


def test_delete_permanently_with_volume_ids_leaves_nothing(emu, dc, keypair):
    key_id = dc("POST", "/sshkeys", json={"name": "k", "key": keypair()[1]}).text
    sid = dc("POST", "/scripts", json={"name": "boot", "script": "true"}).text
    iid, os_vol, data = with_data_volume(dc)
    delete(dc, iid, volume_ids=[os_vol, data], delete_permanently=True)
    assert dc("GET", "/volumes").json() == [] and dc("GET", "/volumes/trash").json() == []
    assert dc("GET", f"/volumes/{os_vol}").status_code == 404
    dc("DELETE", f"/sshkeys/{key_id}")
    dc("DELETE", f"/scripts/{sid}")
    assert emu.state()["billable"] == {"instances": 0, "volumes": 0, "file_systems": 0, "ssh_keys": 0, "scripts": 0}


def test_delete_naming_an_unknown_volume_is_400_and_deletes_nothing(dc):
    iid, os_vol, _ = with_data_volume(dc)
    r = dc("PUT", "/instances", json={"action": "delete", "id": [iid], "volume_ids": [os_vol, "nope"]})
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    assert instance(dc, iid)["status"] == "running" and dc("GET", "/volumes/trash").json() == []


# --- volumes -----------------------------------------------------------------


def test_volume_create_get_rename_resize(emu, dc):
    vid = new_volume(dc, size=50)
    vol = dc("GET", f"/volumes/{vid}").json()
    assert set(vol) == VOLUME_KEYS and UUID.fullmatch(vid)
    assert (vol["status"], vol["instance_id"], vol["is_os_volume"]) == ("detached", None, False)
    assert vol["location"] == "FIN-01"
    assert vol["monthly_price"] > 0 and vol["currency"] == "usd"
    assert dc("PUT", "/volumes", json={"action": "rename", "id": vid, "name": "renamed"}).status_code == 202
    assert dc("PUT", "/volumes", json={"action": "resize", "id": [vid], "size": 80}).status_code == 202
    vol = dc("GET", f"/volumes/{vid}").json()
    assert (vol["name"], vol["size"]) == ("renamed", 80)
    shrink = dc("PUT", "/volumes", json={"action": "resize", "id": vid, "size": 40})
    assert shrink.status_code == 400 and shrink.json()["code"] == "invalid_request"
    assert dc("GET", "/volumes", params={"status": "detached"}).json()[0]["id"] == vid
    assert dc("GET", "/volumes", params={"status": "attached"}).json() == []
    default = dc("POST", "/volumes", json={"type": "HDD", "name": "x", "size": 1}).text
    assert dc("GET", f"/volumes/{default}").json()["location"] == "FIN-03"
    for bad in ({"type": "HDD", "name": "x", "size": 0}, {"type": "Tape", "name": "x", "size": 1}, {"type": "HDD"}):
        assert dc("POST", "/volumes", json=bad).json()["code"] == "invalid_request"
    assert dc("GET", "/volumes/nope").status_code == 404
    assert emu.state()["billable"]["volumes"] == 2


def test_attach_and_detach_need_the_instance_offline(dc):
    inst = running(dc)
    vid = new_volume(dc)
    r = dc("PUT", "/volumes", json={"action": "attach", "id": vid, "instance_id": inst["id"]})
    assert r.status_code == 403 and r.json()["code"] == "forbidden_action"
    dc("PUT", "/instances", json={"action": "shutdown", "id": [inst["id"]]})
    assert dc("PUT", "/volumes", json={"action": "attach", "id": vid, "instance_id": inst["id"]}).status_code == 202
    vol = dc("GET", f"/volumes/{vid}").json()
    assert (vol["status"], vol["instance_id"]) == ("attached", inst["id"])
    assert vid in instance(dc, inst["id"])["volume_ids"]
    again = dc("PUT", "/volumes", json={"action": "attach", "id": vid, "instance_id": inst["id"]})
    assert again.status_code == 400
    dc("PUT", "/instances", json={"action": "start", "id": [inst["id"]]})
    wait_for(lambda: instance(dc, inst["id"])["status"] == "running")
    r = dc("PUT", "/volumes", json={"action": "detach", "id": vid, "instance_id": inst["id"]})
    assert r.status_code == 403
    r = dc("DELETE", f"/volumes/{vid}", json={"is_permanent": True})
    assert r.status_code == 403, "an attached volume of a running instance cannot be deleted"
    dc("PUT", "/instances", json={"action": "shutdown", "id": [inst["id"]]})
    assert dc("PUT", "/volumes", json={"action": "detach", "id": vid, "instance_id": inst["id"]}).status_code == 202
    assert dc("GET", f"/volumes/{vid}").json()["status"] == "detached"
    elsewhere = new_volume(dc, location_code="FIN-02")
    r = dc("PUT", "/volumes", json={"action": "attach", "id": elsewhere, "instance_id": inst["id"]})
    assert r.status_code == 400


def test_new_volume_can_be_created_attached(dc):
    inst = running(dc)
    vid = new_volume(dc, instance_id=inst["id"])
    assert dc("GET", f"/volumes/{vid}").json()["instance_id"] == inst["id"]
    assert vid in instance(dc, inst["id"])["volume_ids"]


def test_delete_volume_to_trash_then_for_good(emu, dc):
    first, second, third = new_volume(dc, "a"), new_volume(dc, "b"), new_volume(dc, "c")
    r = dc("DELETE", f"/volumes/{first}", json={"is_permanent": False})
    assert r.status_code == 202 and r.text == ""
    assert dc("DELETE", f"/volumes/{second}").status_code == 202  # no body: to the trash
    assert set(volumes(dc, "/volumes/trash")) == {first, second} and list(volumes(dc)) == [third]
    assert dc("GET", f"/volumes/{first}").json()["status"] == "deleted"
    assert emu.state()["billable"]["volumes"] == 3, "the trash is still billed"
    assert dc("DELETE", f"/volumes/{first}", json={"is_permanent": True}).status_code == 202  # purge from trash
    assert dc("DELETE", f"/volumes/{third}", params={"force": "true"}).status_code == 202  # Go SDK: permanent
    assert list(volumes(dc, "/volumes/trash")) == [second] and volumes(dc) == {}
    r = dc("PUT", "/volumes", json={"action": "delete", "id": [second], "is_permanent": True})
    assert r.status_code == 202
    assert dc("GET", "/volumes/trash").json() == [] and emu.state()["billable"]["volumes"] == 0
    assert dc("DELETE", f"/volumes/{first}").status_code == 404
    assert dc("PUT", "/volumes", json={"action": "delete", "id": ["nope"]}).status_code == 404


def test_put_volumes_delete_moves_to_trash_by_default(dc):
    vids = [new_volume(dc, "a"), new_volume(dc, "b")]
    assert dc("PUT", "/volumes", json={"action": "delete", "id": vids}).status_code == 202
    assert set(volumes(dc, "/volumes/trash")) == set(vids)


def test_reset_forgets_volumes_scripts_and_tags(emu, dc):
    create(dc, tags=[{"key": "k"}])
    new_volume(dc)
    dc("POST", "/scripts", json={"name": "s", "script": "true"})
    state = emu.state()
    assert state["billable"] == {"instances": 1, "volumes": 2, "file_systems": 0, "ssh_keys": 0, "scripts": 1}
    admin = emu.datacrunch_url.rsplit("/v1", 1)[0] + "/_emulator"
    assert requests.post(admin + "/reset", timeout=TIMEOUT).json() == {"reset": True}
    state = emu.state()
    assert state["volumes"] == state["scripts"] == state["file_systems"] == state["instances"] == []
    assert set(state["billable"].values()) == {0}
