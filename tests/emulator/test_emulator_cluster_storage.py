"""What multi-node clusters need from the emulator: storage that lives on disk and is shared between
nodes (Lambda file systems, DataCrunch shared volumes), OS volumes that boot faster when reused,
images per type and region, distinct private IPs, capacity counts and a complete leak audit."""

import time
from pathlib import Path

import pytest
from emuhelpers import DataCrunchClient, LambdaClient, wait_for

LAMBDA_TWO = {"extends": "default", "lambdalabs": {"capacity": [{"type": "gpu_1x_a10", "region": "*", "count": 2}]}}
DC_TWO = {"extends": "default", "datacrunch": {"capacity": [{"type": "CPU.4V.16G", "region": "*", "count": 2}]}}


def state_of(emu, iid):
    return next(i for i in emu.state()["instances"] if i["id"] == iid)


def active(emu, iid, timeout=10):
    return wait_for(lambda: (i := state_of(emu, iid))["phase"] == "active" and i, timeout=timeout)


def lambda_client(emu):
    lam = LambdaClient(emu.lambdalabs_url)
    lam("POST", "/ssh-keys", json={"name": "k"})
    return lam


def launch(lam, type_name="gpu_1x_a10", region="us-east-1", **extra):
    body = {"region_name": region, "instance_type_name": type_name, "ssh_key_names": ["k"], **extra}
    return lam("POST", "/instance-operations/launch", json=body)


def launched(lam, **extra):
    r = launch(lam, **extra)
    assert r.status_code == 200, r.text
    return r.json()["data"]["instance_ids"][0]


def error_code(r):
    return r.json()["error"]["code"]


def dc_create(dc, **extra):
    body = {"instance_type": "CPU.4V.16G", "image": "ubuntu-24.04", "hostname": "n", "description": "d",
            "location_code": "FIN-01", **extra}  # fmt: skip
    return dc("POST", "/instances", json=body)


def dc_created(dc, **extra):
    r = dc_create(dc, **extra)
    assert r.status_code == 200, r.text
    return r.text


def dc_delete(emu, dc, iid, **fields):
    assert dc("PUT", "/instances", json={"action": "delete", "id": [iid], **fields}).status_code == 202
    wait_for(lambda: all(i["id"] != iid for i in emu.state()["instances"]))


# --- Lambda file systems --------------------------------------------------------


def test_lambda_file_system_is_one_directory_shared_by_every_node_and_kept_while_it_exists(emulator):
    emu = emulator(LAMBDA_TWO, ssh="off")
    lam = lambda_client(emu)
    fs = lam("POST", "/filesystems", json={"name": "shared", "region": "us-east-1"}).json()["data"]
    fs_dir = emu.workdir / "filesystems" / fs["id"]
    assert fs_dir.is_dir() and emu.state()["file_systems"][0]["path"] == str(fs_dir)
    mounts = [{"mount_point": "/data/other", "file_system_id": fs["id"]}]
    a = active(emu, launched(lam, file_system_names=["shared"]))
    b = active(emu, launched(lam, file_system_mounts=mounts))
    on_a, on_b = Path(a["root"]) / "lambda/nfs/shared", Path(b["root"]) / "data/other"
    assert on_a.is_symlink() and on_a.resolve() == on_b.resolve() == fs_dir.resolve()
    (on_a / "weights.bin").write_bytes(b"\0" * 1_000_000)  # written on one node, seen on the other
    assert (on_b / "weights.bin").stat().st_size == 1_000_000
    (listed,) = lam("GET", "/file-systems").json()["data"]
    assert listed["bytes_used"] == 1_000_000 and listed["is_in_use"] is True
    (audited,) = emu.state()["file_systems"]
    assert (audited["region"], audited["bytes_used"], audited["created"]) == ("us-east-1", 1_000_000, fs["created"])
    assert audited["monthly_price_usd"] == 0.0002  # $0.20 per GB (10^9 bytes) used per month

    lam("POST", "/instance-operations/terminate", json={"instance_ids": [a["id"], b["id"]]})
    # the machine root goes a moment after the listing drops the instance (the ticker removes it)
    wait_for(lambda: emu.state()["instances"] == [] and not Path(a["root"]).exists())
    assert not Path(a["root"]).exists() and (fs_dir / "weights.bin").exists(), "the data outlives the nodes"
    c = active(emu, launched(lam, file_system_names=["shared"]))  # the next bringup finds it
    assert (Path(c["root"]) / "lambda/nfs/shared/weights.bin").stat().st_size == 1_000_000
    lam("POST", "/instance-operations/terminate", json={"instance_ids": [c["id"]]})
    wait_for(lambda: emu.state()["instances"] == [])
    assert lam("DELETE", f"/filesystems/{fs['id']}").status_code == 200
    assert not fs_dir.exists() and emu.state()["billable"]["file_systems"] == 0


def test_lambda_file_system_in_another_region_is_refused(emulator):
    emu = emulator(ssh="off")
    lam = lambda_client(emu)
    lam("POST", "/filesystems", json={"name": "west", "region": "us-west-1"})
    r = launch(lam, file_system_names=["west"])
    assert r.status_code == 400 and error_code(r) == "instance-operations/launch/file-system-in-wrong-region"


# --- DataCrunch OS volumes and shared volumes -----------------------------------------


def test_booting_from_a_kept_os_volume_skips_the_install_and_finds_the_files(emulator):
    emu = emulator({"extends": "default", "lifecycle": {"order_delay": 0.05, "terminate_delay": 0.1}},
                   boot_delay=0.3, install_delay=1.5, ssh="off")  # fmt: skip
    dc = DataCrunchClient(emu.datacrunch_url)
    started = time.monotonic()
    first = dc_created(dc)
    inst = active(emu, first)
    fresh = time.monotonic() - started
    assert fresh >= 1.8, "a fresh OS volume: boot_delay + install_delay"
    Path(inst["home"], "cache.txt").write_text("installed\n")
    os_volume = dc("GET", f"/instances/{first}").json()["os_volume_id"]
    dc_delete(emu, dc, first, volume_ids=[])  # keep every volume, detached
    assert dc("GET", f"/volumes/{os_volume}").json()["status"] == "detached"
    started = time.monotonic()
    second = dc_created(dc, image=os_volume)
    again = active(emu, second)
    reused = time.monotonic() - started
    assert reused < fresh - 1.0, f"booting from the kept OS volume skips the install ({reused:.2f}s vs {fresh:.2f}s)"
    assert again["root"] == inst["root"] and Path(again["home"], "cache.txt").read_text() == "installed\n"
    assert dc("GET", f"/instances/{second}").json()["os_volume_id"] == os_volume

    dc_delete(emu, dc, second, volume_ids=[os_volume])  # to the trash: its data is kept (restorable)
    assert [v["id"] for v in dc("GET", "/volumes/trash").json()] == [os_volume]
    assert Path(inst["root"]).is_dir()
    assert dc("DELETE", f"/volumes/{os_volume}", json={"is_permanent": True}).status_code == 202
    assert not (emu.workdir / "volumes" / os_volume).exists()
    assert emu.state()["billable"]["volumes"] == 0


def test_delete_permanently_removes_the_os_volume_and_its_files_at_once(emulator):
    emu = emulator(ssh="off")
    dc = DataCrunchClient(emu.datacrunch_url)
    iid = dc_created(dc)
    active(emu, iid)
    os_volume = dc("GET", f"/instances/{iid}").json()["os_volume_id"]
    assert (emu.workdir / "volumes" / os_volume / "root").is_dir()
    dc_delete(emu, dc, iid, volume_ids=[os_volume], delete_permanently=True)
    assert dc("GET", "/volumes").json() == [] and dc("GET", "/volumes/trash").json() == []
    assert not (emu.workdir / "volumes" / os_volume).exists()


def test_a_shared_volume_is_attached_to_several_nodes_and_seen_by_each_at_mnt(emulator):
    emu = emulator(DC_TWO, ssh="off")
    dc = DataCrunchClient(emu.datacrunch_url)
    shared = dc("POST", "/volumes", json={"type": "NVMe_Shared", "name": "team", "size": 100,
                                          "location_code": "FIN-01"}).text  # fmt: skip
    nodes = [dc_created(dc, hostname=f"n{i}", existing_volumes=[shared]) for i in range(2)]
    roots = [Path(active(emu, iid)["root"]) for iid in nodes]
    data = emu.workdir / "volumes" / shared / "data"
    for root in roots:
        assert (root / "mnt/team").is_symlink() and (root / "mnt/team").resolve() == data.resolve()
    (roots[0] / "mnt/team/out.txt").write_text("from n0\n")
    assert (roots[1] / "mnt/team/out.txt").read_text() == "from n0\n"
    vol = dc("GET", f"/volumes/{shared}").json()
    assert vol["status"] == "attached" and sorted(i["id"] for i in vol["instances"]) == sorted(nodes)
    for iid in nodes:
        assert shared in dc("GET", f"/instances/{iid}").json()["volume_ids"]
    (audited,) = [v for v in emu.state()["volumes"] if v["id"] == shared]
    assert sorted(audited["instance_ids"]) == sorted(nodes) and audited["type"] == "NVMe_Shared"
    assert (audited["location"], audited["size"], audited["trash"]) == ("FIN-01", 100, False)
    for iid in nodes:
        dc_delete(emu, dc, iid)  # volume_ids null: the OS volume to the trash, the shared one detached
    vol = dc("GET", f"/volumes/{shared}").json()
    assert (vol["status"], vol["instances"]) == ("detached", []) and (data / "out.txt").exists()


def test_only_shared_volumes_attach_twice_and_never_across_locations(emulator):
    emu = emulator(DC_TWO, ssh="off")
    dc = DataCrunchClient(emu.datacrunch_url)
    plain = dc("POST", "/volumes", json={"type": "NVMe", "name": "own", "size": 10, "location_code": "FIN-01"}).text
    dc_created(dc, existing_volumes=[plain])
    r = dc_create(dc, existing_volumes=[plain])
    assert r.status_code == 400 and r.json()["code"] == "invalid_request"
    far = dc("POST", "/volumes", json={"type": "NVMe_Shared", "name": "far", "size": 10,
                                       "location_code": "FIN-03"}).text  # fmt: skip
    r = dc_create(dc, existing_volumes=[far])
    assert r.status_code == 400 and r.json()["code"] == "invalid_request" and "FIN-03" in r.json()["message"]
    assert len(emu.state()["instances"]) == 1


def test_a_plain_data_volume_is_mounted_too(emulator):
    emu = emulator(ssh="off")
    dc = DataCrunchClient(emu.datacrunch_url)
    iid = dc_created(dc, volumes=[{"type": "NVMe", "name": "scratch/../x", "size": 10}])
    root = Path(active(emu, iid)["root"])
    (vol,) = [v for v in dc("GET", "/volumes").json() if not v["is_os_volume"]]
    assert (root / "mnt/scratch_.._x").resolve() == (emu.workdir / "volumes" / vol["id"] / "data").resolve()


# --- images ---------------------------------------------------------------------------


def test_lambda_images_per_region_and_architecture(emulator):
    emu = emulator(ssh="off")
    lam = lambda_client(emu)
    images = lam("GET", "/images").json()["data"]
    assert {i["region"]["name"] for i in images if i["family"] == "gpu-base-24-04"} == {
        "us-east-1", "us-west-1", "us-south-1",
    }  # fmt: skip
    r = launch(lam, "gpu_1x_a10", "us-east-2", image={"family": "gpu-base-24-04"})
    assert r.status_code == 400 and error_code(r) == "global/invalid-parameters" and "image" in r.text.lower()
    r = launch(lam, "gpu_1x_gh200", "us-east-3", image={"family": "ubuntu-24-04"})  # x86_64 only; GH200 is arm64
    assert r.status_code == 400 and error_code(r) == "global/invalid-parameters" and "arm64" in r.text
    assert emu.state()["instances"] == []
    assert launched(lam, type_name="gpu_1x_gh200", region="us-east-3")  # no image: the default that fits
    assert launched(lam, region="us-east-1", image={"family": "gpu-base-24-04"})


# --- private IPs, capacity, the leak audit ---------------------------------------------


def test_every_lambda_node_gets_its_own_private_ip(emulator):
    emu = emulator(ssh="off")
    lam = lambda_client(emu)
    ids = [launched(lam, type_name="cpu_4x_general", region="us-south-1") for _ in range(3)]
    for iid in ids:
        active(emu, iid)
    answers = [lam("GET", f"/instances/{iid}").json()["data"] for iid in ids]
    private = [a["private_ip"] for a in answers]
    assert len(set(private)) == 3 and all(p.startswith("10.") for p in private)
    assert sorted(private) == sorted(state_of(emu, iid)["private_ip"] for iid in ids)


@pytest.mark.parametrize("provider", ["lambdalabs", "datacrunch"])
def test_a_cell_of_two_takes_exactly_two_launches_and_gets_each_back(emulator, provider):
    emu = emulator(LAMBDA_TWO if provider == "lambdalabs" else DC_TWO, ssh="off")
    if provider == "lambdalabs":
        lam = lambda_client(emu)
        go = lambda: launch(lam)  # noqa: E731
        ids = [go().json()["data"]["instance_ids"][0] for _ in range(2)]
        third = go()
        assert third.status_code == 400 and error_code(third) == "instance-operations/launch/insufficient-capacity"
        lam("POST", "/instance-operations/terminate", json={"instance_ids": [ids[0]]})
        cell = lambda: emu.state()["capacity"]["lambdalabs"]["gpu_1x_a10"]["us-east-1"]  # noqa: E731
    else:
        dc = DataCrunchClient(emu.datacrunch_url)
        go = lambda: dc_create(dc)  # noqa: E731
        ids = [go().text for _ in range(2)]
        third = go()
        assert third.status_code == 503 and third.json()["code"] == "service_unavailable"
        dc("PUT", "/instances", json={"action": "delete", "id": [ids[0]]})
        cell = lambda: emu.state()["capacity"]["datacrunch"]["CPU.4V.16G"]["FIN-01"]  # noqa: E731
    assert cell() == 0
    wait_for(lambda: cell() == 1)  # the unit comes back once the instance is gone
    assert go().status_code == 200
    assert cell() == 0 and go().status_code in (400, 503)


def test_the_leak_audit_lists_every_billable_kind_with_its_detail(emulator):
    emu = emulator(ssh="off")
    lam = lambda_client(emu)
    lam("POST", "/filesystems", json={"name": "fs", "region": "us-east-1"})
    dc = DataCrunchClient(emu.datacrunch_url)
    dc("POST", "/scripts", json={"name": "boot", "script": "#!/bin/sh\ntrue\n"})
    iid = dc_created(dc, volumes=[{"type": "HDD", "name": "d", "size": 20}])
    active(emu, iid)
    dc_delete(emu, dc, iid)  # OS volume to the trash, the data volume detached
    state = emu.state()
    assert state["billable"] == {"instances": 0, "volumes": 2, "file_systems": 1, "ssh_keys": 1, "scripts": 1}
    by_trash = {v["trash"]: v for v in state["volumes"]}
    assert {k: by_trash[True][k] for k in ("location", "type", "size", "is_os_volume", "instance_ids")} == {
        "location": "FIN-01", "type": "NVMe", "size": 100, "is_os_volume": True, "instance_ids": [],
    }  # fmt: skip
    assert (by_trash[False]["type"], by_trash[False]["size"], by_trash[False]["status"]) == ("HDD", 20, "detached")
    (fs,) = state["file_systems"]
    assert (fs["region"], fs["bytes_used"], fs["monthly_price_usd"]) == ("us-east-1", 0, 0.0)
    assert [s["name"] for s in state["scripts"]] == ["boot"]


def test_reset_wipes_machines_volumes_and_file_systems_from_disk(emulator):
    emu = emulator(ssh="off")
    lam = lambda_client(emu)
    lam("POST", "/filesystems", json={"name": "fs", "region": "us-east-1"})
    active(emu, launched(lam, file_system_names=["fs"]))
    dc = DataCrunchClient(emu.datacrunch_url)
    active(emu, dc_created(dc))
    assert {p.name for p in emu.workdir.iterdir()} >= {"machines", "volumes", "filesystems"}
    emu.reset()
    assert not {p.name for p in emu.workdir.iterdir()} & {"machines", "volumes", "filesystems"}
    assert emu.state()["billable"] == {"instances": 0, "volumes": 0, "file_systems": 0, "ssh_keys": 0, "scripts": 0}
