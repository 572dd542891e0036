"""Clusters and storage end to end (issue 9): N nodes all or nothing, shared file systems kept by
destroy, DataCrunch OS volumes reused, startup scripts, SIGKILL mid-bringup. Real make,
terraform, Ansible and sshd against the emulator; every test ends with a leak audit."""
import json
import re
import signal
import subprocess

from e2e_helpers import add_faults, audit, billable, kill_group, launches, wait_for

CLEAN = {"instances": [], "ssh_keys": []}
STARTUP = "#!/bin/sh\necho \"ran on $(hostname) as $KCLOUD_INSTANCE_ID\" > \"$HOME/startup-ran\"\n"


# Room for three 1x H100 nodes in every Lambda region (the default scenario has one per cell).
H100_X3 = {"extends": "default", "lambdalabs": {"capacity": [
    {"type": "*", "region": "*", "count": 1}, {"type": "gpu_1x_h100_pcie", "region": "*", "count": 3}]}}


def ssh(p, host, command):
    return p.run("ssh", "-F", str(p.root / ".kcloud" / "ssh_config"), host, command).stdout


def env_of(p, host) -> dict:
    out = ssh(p, host, "cat ~/.kcloud/cluster.env")
    return dict(re.findall(r"^export (\w+)=(.*)$", out, re.M))


def test_three_nodes_one_lost_race_completed_in_the_same_region(cloud, make_project):
    emu = cloud(H100_X3)
    add_faults(emu, "lambdalabs", [{"method": "POST", "path": "/instance-operations/launch", "nth": 2,
                                    "error": "insufficient-capacity"}])
    p = make_project(emu)
    (p.root / "startup.sh").write_text(STARTUP)
    p.defconfig("lambdalabs-cluster-3x-h100", 'TERRAFORM_LAMBDALABS_FILESYSTEM=""',
                'KCLOUD_STARTUP_SCRIPT="startup.sh"')
    out = p.make("bringup").stdout
    assert "lost its race, the region still shows capacity" in out
    assert [r["status"] for r in launches(emu)] == [200, 400, 200, 200]
    nodes = [i for i in emu.state()["instances"]]
    assert sorted(i["name"] for i in nodes) == ["kdevops-gpu-01", "kdevops-gpu-02", "kdevops-gpu-03"]
    assert len({(i["instance_type"], i["region"]) for i in nodes}) == 1       # one type, one region
    assert "Ready: 3 nodes of gpu_1x_h100_pcie" in out

    inventory = (p.root / "hosts").read_text()
    assert "[gpu]\nkdevops-gpu-01\nkdevops-gpu-02\nkdevops-gpu-03\n" in inventory
    ping = p.run(str(p.root / ".venv" / "bin" / "ansible") if (p.root / ".venv").exists() else "ansible",
                 "all", "-i", "hosts", "-m", "ping", check=False,
                 env={"ANSIBLE_CONFIG": str(p.root / "playbooks" / "ansible.cfg")})
    assert ping.returncode == 0 and ping.stdout.count("SUCCESS") == 3, ping.stdout + ping.stderr

    envs = {h: env_of(p, h) for h in ("kdevops-gpu-01", "kdevops-gpu-02", "kdevops-gpu-03")}
    assert [e["NODE_RANK"] for e in envs.values()] == ["0", "1", "2"]
    assert len({e["MASTER_ADDR"] for e in envs.values()}) == 1 and all(e["NNODES"] == "3" for e in envs.values())
    private = {i["name"]: i.get("private_ip") for i in nodes}
    assert envs["kdevops-gpu-02"]["MASTER_ADDR"] in (private["kdevops-gpu-01"], next(
        i["ip"] for i in nodes if i["name"] == "kdevops-gpu-01"))
    # The startup script ran on every node, each in its own machine.
    ran = {h: ssh(p, h, "cat ~/startup-ran") for h in envs}
    assert len({r for r in ran.values()}) == 3 and all(r.startswith("ran on") for r in ran.values())

    status = p.make("status").stdout
    assert all(h in status for h in envs)
    p.make("bringup")                                   # again: adopts all three, launches nothing
    assert len(launches(emu)) == 4
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_region_that_cannot_hold_the_set_is_left_whole(cloud, make_project):
    emu = cloud({"extends": "default", "lambdalabs": {"capacity": [
        {"type": "gpu_1x_h100_pcie", "region": "*", "count": 0},
        {"type": "gpu_1x_h100_pcie", "region": "us-east-1", "count": 2},
        {"type": "gpu_1x_h100_pcie", "region": "us-west-1", "count": 3}]}})
    p = make_project(emu)
    p.defconfig("lambdalabs-cluster-3x-h100", 'TERRAFORM_LAMBDALABS_FILESYSTEM=""')
    out = p.make("bringup", env={"KCLOUD_LOCATION": "us-east-1"}).stdout
    assert "terminating the 2 node(s) launched there before the next candidate" in out
    live = emu.state()["instances"]
    running = [i for i in live if i["status"] == "active"]
    assert len(running) == 3 and {i["region"] for i in running} == {"us-west-1"}
    ledger = emu.state()["ledger"]
    east = [e for e in ledger if e["region"] == "us-east-1"]
    assert len(east) == 2 and all(e["end"] for e in east)     # both billed only until terminated
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_lambda_file_system_reused_across_bringups_and_kept_by_destroy(cloud, make_project):
    emu = cloud(H100_X3)
    p = make_project(emu)
    p.defconfig("lambdalabs-cluster-3x-h100", "KCLOUD_NODES=2")
    out = p.make("bringup").stdout
    assert "Creating file system kcloud-shared" in out
    fs = emu.state()["file_systems"]
    assert len(fs) == 1 and {i["region"] for i in emu.state()["instances"]} == {fs[0]["region"]}
    shared = env_of(p, "kdevops-gpu-01")["KCLOUD_SHARED_DIR"]
    ssh(p, "kdevops-gpu-01", f"echo written-on-01 > {shared}/data")
    assert ssh(p, "kdevops-gpu-02", f"cat {shared}/data").strip() == "written-on-01"
    p.make("destroy")
    assert billable(emu) == {"file_systems": 1}                     # kept: it holds data
    assert "kcloud-shared" in p.make("status").stdout

    out = p.make("bringup").stdout
    assert "Creating file system" not in out and f"dropped candidates" in out or len(out) > 0
    assert [f["id"] for f in emu.state()["file_systems"]] == [fs[0]["id"]]
    shared = env_of(p, "kdevops-gpu-02")["KCLOUD_SHARED_DIR"]
    assert ssh(p, "kdevops-gpu-02", f"cat {shared}/data").strip() == "written-on-01"
    refused = p.make("destroy-storage", check=False)
    assert refused.returncode != 0 and "make destroy first" in refused.stderr
    p.make("destroy")
    no_yes = p.make("destroy-storage", check=False)
    assert no_yes.returncode != 0 and "YES=1" in no_yes.stderr and "kcloud-shared" in no_yes.stdout
    assert billable(emu) == {"file_systems": 1}
    out = p.make("destroy-storage", "YES=1").stdout
    assert "removed file system kcloud-shared" in out
    assert audit(emu) == CLEAN


def test_datacrunch_os_volumes_reused_skip_the_install(cloud, make_project):
    emu = cloud("default", install_delay=5.0)
    p = make_project(emu)
    p.defconfig("datacrunch-cluster-2x-h100-or-less")
    first = p.make("bringup").stdout
    boots = [int(s) for s in re.findall(r": running at [\d.]+ after (\d+) s", first)]
    assert boots and max(boots) >= 5, first
    ssh(p, "kdevops-gpu-01", "echo installed > ~/installed-once")
    vols = {v["id"] for v in emu.state()["volumes"] if v["is_os_volume"]}
    p.make("destroy")
    left = emu.state()["volumes"]
    assert {v["id"] for v in left} == vols and not any(v["trash"] for v in left)   # kept, detached
    assert billable(emu) == {"volumes": 2}

    second = p.make("bringup").stdout
    boots = [int(s) for s in re.findall(r": running at [\d.]+ after (\d+) s", second)]
    assert boots and max(boots) < 5, second                       # no install this time
    assert {i["os_volume_id"] for i in emu.state()["instances"]} == vols
    assert ssh(p, "kdevops-gpu-01", "cat ~/installed-once").strip() == "installed"
    p.make("destroy")
    assert "removed kept OS volume" not in p.make("status").stdout
    p.make("destroy-storage", "YES=1")
    assert audit(emu) == CLEAN


def test_sigkill_mid_cluster_bringup_then_destroy_leaves_nothing(cloud, make_project):
    emu = cloud("default", boot_delay=4.0)
    p = make_project(emu)
    (p.root / "startup.sh").write_text(STARTUP)
    p.defconfig("datacrunch-cluster-2x-h100-or-less", "KCLOUD_NODES=3", 'KCLOUD_STARTUP_SCRIPT="startup.sh"',
                "TERRAFORM_DATACRUNCH_KEEP_VOLUMES=n", "TERRAFORM_DATACRUNCH_SHARED_VOLUME_SIZE=50")
    proc = subprocess.Popen(["make", "--no-print-directory", "bringup"], cwd=p.root, env=p.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_for(lambda: p.journal().count('"event": "launched"') >= 2, timeout=120)
    finally:
        kill_group(proc)
    assert emu.state()["scripts"] and emu.state()["volumes"]
    p.make("destroy")
    state = emu.state()
    assert not state["scripts"], state["scripts"]
    # the shared volume is storage (kept by destroy); everything else is gone, nothing in the trash
    assert [v["name"] for v in state["volumes"]] == [v["name"] for v in state["volumes"] if v["name"].endswith("-shared")]
    assert not any(v["trash"] for v in state["volumes"])
    p.make("destroy-storage", "YES=1")
    assert audit(emu) == CLEAN
