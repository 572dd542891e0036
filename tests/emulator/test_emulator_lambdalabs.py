"""Lambda API v1 as served by the emulator: envelopes, auth, launch rules, lifecycle, rate limits."""

import base64
import hashlib
import re

import pytest
from emuhelpers import LAMBDA_KEY, LambdaClient, wait_for
from kcloud.emulator.scenario import load


def add_key(lam, public_key, name="k"):
    r = lam("POST", "/ssh-keys", json={"name": name, "public_key": public_key})
    assert r.status_code == 200, r.text
    return r.json()["data"]


def launch(lam, type_name="gpu_1x_a10", region="us-east-1", key="k", **extra):
    body = {"region_name": region, "instance_type_name": type_name, "ssh_key_names": [key], **extra}
    return lam("POST", "/instance-operations/launch", json=body)


def error_code(resp):
    return resp.json()["error"]["code"]


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {LAMBDA_KEY}",
        "Basic " + base64.b64encode(f"{LAMBDA_KEY}:".encode()).decode(),
        f"Basic {LAMBDA_KEY}",
    ],
)
def test_every_documented_auth_scheme_is_accepted(emu, header):
    lam = LambdaClient(emu.lambdalabs_url)
    lam.session.headers["Authorization"] = header
    assert lam("GET", "/instances").json() == {"data": []}


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic " + base64.b64encode(b"wrong:").decode(), "Token x"])
def test_bad_or_missing_key_is_401_invalid_api_key(emu, header):
    lam = LambdaClient(emu.lambdalabs_url)
    lam.session.headers.pop("Authorization")
    r = lam("GET", "/instance-types", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "global/invalid-api-key" and err["message"] and err["suggestion"]


def test_instance_types_envelope_lists_every_type_with_capacity_regions(lam):
    data = lam("GET", "/instance-types").json()["data"]
    assert len(data) == 25 and "gpu_8x_b200_sxm6" in data and "cpu_4x_generalx" in data
    gh200 = data["gpu_1x_gh200"]
    assert gh200["instance_type"]["price_cents_per_hour"] == 229
    assert set(gh200["instance_type"]["specs"]) == {"vcpus", "memory_gib", "storage_gib", "gpus"}
    assert {r["name"] for r in gh200["regions_with_capacity_available"]} == {"us-east-3", "us-west-3"}
    assert all(set(r) == {"name", "description"} for t in data.values() for r in t["regions_with_capacity_available"])


def test_scarce_has_no_h100_or_gh200_anywhere_and_empty_has_nothing(emulator):
    scarce = LambdaClient(emulator("scarce").lambdalabs_url)("GET", "/instance-types").json()["data"]
    gone = [n for n, t in scarce.items() if not t["regions_with_capacity_available"]]
    assert sorted(gone) == sorted(n for n in scarce if "h100" in n or "gh200" in n)
    empty = LambdaClient(emulator("empty").lambdalabs_url)("GET", "/instance-types").json()["data"]
    assert len(empty) == 25 and all(t["regions_with_capacity_available"] == [] for t in empty.values())


def test_launch_lifecycle_booting_active_terminating_terminated(emulator, keypair):
    emu = emulator(boot_delay=0.3)
    lam = LambdaClient(emu.lambdalabs_url)
    add_key(lam, keypair()[1])
    r = launch(lam, name="train-1", quantity=1)
    assert r.status_code == 200, r.text
    (iid,) = r.json()["data"]["instance_ids"]
    assert re.fullmatch(r"[0-9a-f]{32}", iid)
    booting = lam("GET", f"/instances/{iid}").json()["data"]
    assert booting["status"] == "booting" and "ip" not in booting
    assert booting["ssh_key_names"] == ["k"] and booting["region"]["name"] == "us-east-1"
    assert booting["actions"]["restart"]["reason_code"] == "vm-has-not-launched"
    active = wait_for(lambda: (d := lam("GET", f"/instances/{iid}").json()["data"])["status"] == "active" and d)
    assert active["ip"].startswith("127.") and active["name"] == "train-1"
    r = lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]})
    assert r.json()["data"]["terminated_instances"][0]["status"] == "terminating"
    wait_for(lambda: lam("GET", "/instances").json()["data"] == [])
    assert lam("GET", f"/instances/{iid}").json()["data"]["status"] == "terminated"
    r = lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]})
    assert r.status_code == 404 and error_code(r) == "global/object-does-not-exist"


def test_capacity_is_consumed_by_launch_and_returned_by_terminate(emu, lam, keypair):
    add_key(lam, keypair()[1])

    def regions():
        info = lam("GET", "/instance-types").json()["data"]["gpu_1x_rtx6000"]
        return [r["name"] for r in info["regions_with_capacity_available"]]

    assert regions() == ["us-south-1"] and emu.state()["capacity"]["lambdalabs"]["gpu_1x_rtx6000"] == {"us-south-1": 1}
    iid = launch(lam, "gpu_1x_rtx6000", "us-south-1").json()["data"]["instance_ids"][0]
    assert regions() == []
    r = launch(lam, "gpu_1x_rtx6000", "us-south-1")
    assert r.status_code == 400 and error_code(r) == "instance-operations/launch/insufficient-capacity"
    lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]})
    wait_for(lambda: regions() == ["us-south-1"])


@pytest.mark.parametrize(
    "body, code",
    [
        ({"instance_type_name": "gpu_1x_a10", "ssh_key_names": ["k"]}, "global/invalid-parameters"),
        (
            {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": []},
            "global/invalid-parameters",
        ),
        (
            {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["k", "k"]},
            "global/invalid-parameters",
        ),
        (
            {"region_name": "us-east-1", "instance_type_name": "gpu_9x_nope", "ssh_key_names": ["k"]},
            "global/invalid-parameters",
        ),
        (
            {"region_name": "mars-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["k"]},
            "global/invalid-parameters",
        ),
        (
            {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["k"], "name": "x" * 65},
            "global/invalid-parameters",
        ),
        (
            {"region_name": "us-east-1", "instance_type_name": "gpu_1x_a10", "ssh_key_names": ["missing"]},
            "global/object-does-not-exist",
        ),
        (
            {
                "region_name": "us-east-1",
                "instance_type_name": "gpu_1x_a10",
                "ssh_key_names": ["k"],
                "image": {"family": "windows-95"},
            },
            "global/invalid-parameters",
        ),
        (
            {
                "region_name": "us-east-1",
                "instance_type_name": "gpu_1x_a10",
                "ssh_key_names": ["k"],
                "image": {"id": "0" * 32},
            },
            "global/object-does-not-exist",
        ),
    ],
)
def test_launch_validation_answers_400(lam, keypair, body, code):
    add_key(lam, keypair()[1])
    r = lam("POST", "/instance-operations/launch", json=body)
    assert r.status_code == 400 and error_code(r) == code, r.text


def test_unknown_instance_is_404_object_does_not_exist(lam):
    r = lam("GET", "/instances/" + "0" * 32)
    assert r.status_code == 404 and error_code(r) == "global/object-does-not-exist"


def test_ssh_keys_create_list_delete_and_generated_pair(lam, keypair):
    _, public = keypair()
    key = add_key(lam, public, "mine")
    assert set(key) == {"id", "name", "public_key"} and key["public_key"] == public
    generated = add_key(lam, None, "made-for-me")
    assert generated["private_key"].startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert {k["name"] for k in lam("GET", "/ssh-keys").json()["data"]} == {"mine", "made-for-me"}
    assert (
        error_code(lam("POST", "/ssh-keys", json={"name": "mine", "public_key": public})) == "global/invalid-parameters"
    )
    assert lam("DELETE", f"/ssh-keys/{key['id']}").json() == {"data": {}}
    r = lam("DELETE", f"/ssh-keys/{key['id']}")
    assert r.status_code == 400 and error_code(r) == "global/invalid-parameters"


def test_images_are_per_region_and_file_systems_empty(lam):
    images = lam("GET", "/images").json()["data"]
    families = {i["family"] for i in images if i["region"]["name"] == "us-west-1"}
    assert {"lambda-stack-24-04", "ubuntu-22-04"} <= families
    assert {i["architecture"] for i in images} == {"x86_64", "arm64"}
    assert lam("GET", "/file-systems").json() == {"data": []}


def test_rate_limits_answer_429_non_json_with_retry_after(emulator, keypair):
    limits = {
        "enabled": True,
        "general": {"requests": 2, "per_seconds": 60},
        "launch": {"requests": 1, "per_seconds": 60},
    }
    emu = emulator({"extends": "default", "lambdalabs": {"rate_limits": limits}})
    lam = LambdaClient(emu.lambdalabs_url)
    add_key(lam, keypair()[1])
    assert launch(lam).status_code == 200  # the second request: general 2/2, launch 1/1
    r = lam("GET", "/instances")
    assert r.status_code == 429 and r.text == "error code: 1015"
    assert not r.headers["Content-Type"].startswith("application/json")
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    with pytest.raises(ValueError):
        r.json()


def test_launch_has_its_own_stricter_limit(emulator, keypair):
    limits = {
        "enabled": True,
        "general": {"requests": 100, "per_seconds": 60},
        "launch": {"requests": 1, "per_seconds": 60},
    }
    lam = LambdaClient(emulator({"extends": "default", "lambdalabs": {"rate_limits": limits}}).lambdalabs_url)
    add_key(lam, keypair()[1])
    assert launch(lam).status_code == 200
    assert launch(lam).status_code == 429
    assert lam("GET", "/instances").status_code == 200


def test_restart_and_rename(emulator, keypair):
    lam = LambdaClient(emulator(boot_delay=0.1).lambdalabs_url)
    add_key(lam, keypair()[1])
    iid = launch(lam).json()["data"]["instance_ids"][0]
    wait_for(lambda: lam("GET", f"/instances/{iid}").json()["data"]["status"] == "active")
    assert lam("POST", f"/instances/{iid}", json={"name": "renamed"}).json()["data"]["name"] == "renamed"
    r = lam("POST", "/instance-operations/restart", json={"instance_ids": [iid]})
    assert r.json()["data"]["restarted_instances"][0]["status"] == "booting"
    wait_for(lambda: lam("GET", f"/instances/{iid}").json()["data"]["status"] == "active")


def test_unknown_endpoint_is_404_in_the_error_envelope(lam):
    r = lam("GET", "/no-such-endpoint")
    assert r.status_code == 404 and error_code(r) == "global/object-does-not-exist"


def test_regions_lists_every_region_with_its_description(lam):
    regions = lam("GET", "/regions").json()["data"]
    assert len(regions) == 17 and all(set(r) == {"name", "description"} for r in regions)
    assert {"name": "us-east-1", "description": "Virginia, USA"} in regions


def test_default_launch_limit_is_one_per_12_seconds_when_enabled(emulator, keypair):
    limits = load("default").provider("lambdalabs")["rate_limits"]
    assert limits["enabled"] is False and limits["launch"] == {"requests": 1, "per_seconds": 12.0}
    general = {"requests": 100, "per_seconds": 60}
    emu = emulator({"extends": "default", "lambdalabs": {"rate_limits": {"enabled": True, "general": general}}})
    lam = LambdaClient(emu.lambdalabs_url)
    add_key(lam, keypair()[1])
    assert launch(lam).status_code == 200
    r = launch(lam)
    assert r.status_code == 429 and r.text == "error code: 1015" and 11 <= int(r.headers["Retry-After"]) <= 12


def test_launch_tags_are_echoed_in_the_instance_and_the_state(emu, lam, keypair):
    add_key(lam, keypair()[1])
    tags = [{"key": "run-id", "value": "r-123"}, {"key": "kcloud:owner", "value": ""}]
    iid = launch(lam, tags=tags).json()["data"]["instance_ids"][0]
    assert lam("GET", f"/instances/{iid}").json()["data"]["tags"] == tags
    assert lam("GET", "/instances").json()["data"][0]["tags"] == tags
    assert emu.state()["instances"][0]["tags"] == tags


@pytest.mark.parametrize(
    "tags",
    [
        [{"key": "Run-id", "value": "x"}],  # uppercase
        [{"key": "r", "value": "x"}],  # one character: the regex wants two or more
        [{"key": "1run", "value": "x"}],  # must start with a letter
        [{"key": "run_id", "value": "x"}],  # underscore
        [{"key": "a" * 56, "value": "x"}],
        [{"key": "run-id", "value": "x" * 129}],
        [{"key": "run-id"}],
        {"run-id": "x"},
    ],
)
def test_bad_launch_tags_are_400_invalid_parameters(emu, lam, keypair, tags):
    add_key(lam, keypair()[1])
    r = launch(lam, tags=tags)
    assert r.status_code == 400 and error_code(r) == "global/invalid-parameters", r.text
    assert emu.state()["instances"] == []


def test_longest_valid_tag_is_accepted(lam, keypair):
    add_key(lam, keypair()[1])
    tags = [{"key": "a" + "-" * 54, "value": "v" * 128}]
    assert launch(lam, tags=tags).status_code == 200


def test_user_data_is_kept_but_only_its_hash_is_shown(emu, lam, keypair):
    add_key(lam, keypair()[1])
    user_data = "#cloud-config\nruncmd: [touch /tmp/x]\n"
    iid = launch(lam, user_data=user_data).json()["data"]["instance_ids"][0]
    assert "user_data" not in lam("GET", f"/instances/{iid}").json()["data"]
    (inst,) = emu.state()["instances"]
    assert inst["user_data"] == {"length": len(user_data), "sha256": hashlib.sha256(user_data.encode()).hexdigest()}
    r = launch(lam, user_data="x" * (1024 * 1024 + 1))
    assert r.status_code == 400 and error_code(r) == "global/invalid-parameters"


def fs_create(lam, name, region="us-east-1"):
    return lam("POST", "/filesystems", json={"name": name, "region": region})


def test_file_system_create_list_and_its_errors(emu, lam):
    r = fs_create(lam, "shared-fs")
    assert r.status_code == 200, r.text
    fs = r.json()["data"]
    assert set(fs) == {"id", "name", "mount_point", "created", "created_by", "is_in_use", "region", "bytes_used"}
    assert re.fullmatch(r"[0-9a-f]{32}", fs["id"]) and fs["mount_point"] == "/lambda/nfs/shared-fs"
    assert fs["region"] == {"name": "us-east-1", "description": "Virginia, USA"} and fs["is_in_use"] is False
    assert fs["created_by"]["status"] == "active"
    assert lam("GET", "/file-systems").json()["data"] == [fs]
    dup = fs_create(lam, "shared-fs", "us-west-1")
    assert dup.status_code == 400 and error_code(dup) == "global/duplicate"
    for bad in ("1fs", "has space", "x" * 61, ""):
        r = fs_create(lam, bad)
        assert r.status_code == 400 and error_code(r) == "global/invalid-parameters", bad
    assert error_code(fs_create(lam, "elsewhere", "mars-1")) == "global/invalid-parameters"
    state = emu.state()
    assert state["file_systems"] == [
        {
            "provider": "lambdalabs",
            "id": fs["id"],
            "name": "shared-fs",
            "region": "us-east-1",
            "mount_point": "/lambda/nfs/shared-fs",
            "created": fs["created"],
            "is_in_use": False,
            "bytes_used": 0,
            "monthly_price_usd": 0.0,
            "path": str(emu.workdir / "filesystems" / fs["id"]),
        }
    ]
    assert state["billable"]["file_systems"] == 1


def test_mounted_file_system_is_in_use_until_its_instance_terminates(emu, lam, keypair):
    add_key(lam, keypair()[1])
    fs = fs_create(lam, "shared-fs").json()["data"]
    plain = launch(lam).json()["data"]["instance_ids"][0]
    iid = launch(lam, file_system_names=["shared-fs"]).json()["data"]["instance_ids"][0]
    inst = lam("GET", f"/instances/{iid}").json()["data"]
    assert inst["file_system_names"] == ["shared-fs"]
    assert inst["file_system_mounts"] == [{"mount_point": "/lambda/nfs/shared-fs", "file_system_id": fs["id"]}]
    bare = lam("GET", f"/instances/{plain}").json()["data"]
    assert bare["file_system_names"] == [] and "file_system_mounts" not in bare
    assert lam("GET", "/file-systems").json()["data"][0]["is_in_use"] is True
    assert emu.state()["instances"][1]["file_system_names"] == ["shared-fs"]
    r = lam("DELETE", f"/filesystems/{fs['id']}")
    assert r.status_code == 400 and error_code(r) == "filesystems/filesystem-in-use"
    lam("POST", "/instance-operations/terminate", json={"instance_ids": [iid]})
    wait_for(lambda: lam("GET", f"/instances/{iid}").json()["data"]["status"] == "terminated")
    assert lam("GET", "/file-systems").json()["data"][0]["is_in_use"] is False
    assert lam("DELETE", f"/filesystems/{fs['id']}").json() == {"data": {"deleted_ids": [fs["id"]]}}
    r = lam("DELETE", f"/filesystems/{fs['id']}")
    assert r.status_code == 404 and error_code(r) == "global/object-does-not-exist"
    assert lam("GET", "/file-systems").json()["data"] == [] and emu.state()["billable"]["file_systems"] == 0


def test_file_system_mounts_by_id_win_over_names(lam, keypair):
    add_key(lam, keypair()[1])
    a = fs_create(lam, "fs-a").json()["data"]
    b = fs_create(lam, "fs-b").json()["data"]
    mounts = [{"mount_point": "/data/a", "file_system_id": a["id"]}]
    iid = launch(lam, file_system_names=["fs-b", "fs-a"], file_system_mounts=mounts).json()["data"]["instance_ids"][0]
    inst = lam("GET", f"/instances/{iid}").json()["data"]
    assert inst["file_system_names"] == ["fs-a", "fs-b"]
    assert inst["file_system_mounts"] == [
        {"mount_point": "/data/a", "file_system_id": a["id"]},
        {"mount_point": "/lambda/nfs/fs-b", "file_system_id": b["id"]},
    ]


@pytest.mark.parametrize(
    "extra, code",
    [
        ({"file_system_names": ["west-fs"]}, "instance-operations/launch/file-system-in-wrong-region"),
        ({"file_system_names": ["no-such-fs"]}, "global/object-does-not-exist"),
        (
            {"file_system_mounts": [{"mount_point": "/data/x", "file_system_id": "0" * 32}]},
            "global/object-does-not-exist",
        ),
        ({"file_system_mounts": [{"mount_point": "/etc/x", "file_system_id": "ID"}]}, "global/invalid-parameters"),
        ({"file_system_mounts": [{"mount_point": "/data/x"}]}, "global/invalid-parameters"),
        ({"file_system_names": "west-fs"}, "global/invalid-parameters"),
    ],
)
def test_launch_file_system_errors(emu, lam, keypair, extra, code):
    add_key(lam, keypair()[1])
    west = fs_create(lam, "west-fs", "us-west-1").json()["data"]
    for mount in extra.get("file_system_mounts", []):
        if mount.get("file_system_id") == "ID":
            mount["file_system_id"] = west["id"]
    r = launch(lam, **extra)
    assert r.status_code == 400 and error_code(r) == code, r.text
    assert emu.state()["instances"] == []
