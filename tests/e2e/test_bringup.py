"""`make bringup` / `make destroy` for real: terraform with the kcloud provider, Ansible over
real SSH to the emulator's sshd. Every test ends with a leak audit of /_emulator/state."""
import subprocess
import threading

from e2e_helpers import audit, kill_group, launches, wait_for

CLEAN = {"instances": [], "ssh_keys": []}



def test_scarce_cloud_falls_back_and_destroy_leaves_nothing(cloud, make_project):
    emu = cloud("scarce")
    p = make_project(emu)
    p.make("cloud-config")
    p.make("defconfig-lambdalabs-h100-or-less")
    out = p.make("bringup").stdout
    assert "Checking gpu_1x_h100_sxm5... \u2717 not available" in out
    assert "Selected: gpu_1x_a100_sxm4" in out and "Ready: kdevops-gpu = gpu_1x_a100_sxm4" in out
    ssh = p.run("ssh", "-F", str(p.root / ".kcloud" / "ssh_config"), "kdevops-gpu", "cat ~/.kcloud-host")
    assert "host: kdevops-gpu" in ssh.stdout            # Ansible ran on the machine
    assert "kdevops-gpu" in p.make("status").stdout
    p.make("destroy")
    assert audit(emu) == CLEAN
    assert p.make("destroy").returncode == 0             # destroy twice: still success
    assert not (p.root / "hosts").exists() and not (p.root / ".kcloud" / "ssh_config").exists()
    assert audit(emu) == CLEAN


def test_capacity_lost_at_launch_fails_over_to_next_candidate(cloud, make_project):
    emu = cloud({"extends": "scarce", "lambdalabs": {"faults": [
        {"method": "POST", "path": "/instance-operations/launch", "nth": 1, "error": "insufficient-capacity"}]}})
    p = make_project(emu)
    p.make("defconfig-lambdalabs-h100-or-less")
    out = p.make("bringup").stdout
    assert "no capacity, trying the next candidate" in out
    assert [r["status"] for r in launches(emu)] == [400, 200]
    assert len(emu.state()["instances"]) == 1
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_everything_sold_out_fails_cleanly(cloud, make_project):
    emu = cloud("empty")
    p = make_project(emu)
    p.make("defconfig-datacrunch-h100-pytorch-or-less")
    proc = p.make("bringup", check=False)
    assert proc.returncode != 0
    assert "no capacity for any of" in proc.stderr and "wider tier group" in proc.stderr
    assert launches(emu, "datacrunch") == []
    assert audit(emu) == CLEAN                            # no instance and no key left


def test_race_lost_on_every_candidate_prints_the_table_and_leaves_nothing(cloud, make_project):
    emu = cloud({"extends": "scarce", "datacrunch": {"faults": [
        {"method": "POST", "path": "/instances", "times": 0, "error": "unavailable",
         "message": "Not enough resources to deploy a 1 GPU instance type in FIN-01"}]}})
    p = make_project(emu)
    p.make("defconfig-datacrunch-a100-40-or-less")
    proc = p.make("bringup", check=False)
    assert proc.returncode != 0
    both = proc.stdout + proc.stderr
    assert "INSTANCE TYPE" in both and "no capacity" in both   # the table of what was tried
    assert len(launches(emu, "datacrunch")) > 3
    assert audit(emu) == CLEAN


def test_429_on_launch_is_retried_after_retry_after(cloud, make_project):
    emu = cloud({"extends": "default", "lambdalabs": {"faults": [
        {"method": "POST", "path": "/instance-operations/launch", "times": 2, "error": "rate-limited",
         "headers": {"Retry-After": "1"}}]}})
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    p.make("bringup")
    assert [r["status"] for r in launches(emu)] == [429, 429, 200]
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_stuck_booting_times_out_terminates_and_takes_the_next(cloud, make_project):
    emu = cloud({"extends": "scarce", "lambdalabs": {"faults": [
        {"method": "POST", "path": "/instance-operations/launch", "nth": 1, "instance": "stuck"}]}})
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less", "TERRAFORM_BOOT_TIMEOUT=5")
    out = p.make("bringup").stdout
    assert "not active after 5 s; terminating it" in out
    assert len(launches(emu)) == 2
    live = [i for i in emu.state()["instances"] if i["status"] == "active"]
    assert len(live) == 1
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_bringup_twice_is_still_one_machine(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-datacrunch-v100")
    p.make("bringup")
    first = [i["id"] for i in emu.state()["instances"]]
    p.make("bringup")
    assert [i["id"] for i in emu.state()["instances"]] == first and len(first) == 1
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_lost_state_is_adopted_then_destroyed(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    p.make("bringup")
    first = [i["id"] for i in emu.state()["instances"]]
    for f in (p.root / "terraform" / "lambdalabs").glob("terraform.tfstate*"):
        f.unlink()                                        # the state file is lost
    p.make("bringup")                                     # adopts instead of launching a second
    assert [i["id"] for i in emu.state()["instances"]] == first
    (p.root / "terraform" / "lambdalabs" / "terraform.tfstate").unlink()
    p.make("destroy")                                     # reconciles through the API
    assert audit(emu) == CLEAN


def test_sigkill_right_after_launch_then_destroy_leaves_nothing(cloud, make_project):
    emu = cloud("default", boot_delay=30)
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    proc = subprocess.Popen(["make", "--no-print-directory", "bringup"], cwd=p.root, env=p.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: '"event": "launched"' in p.journal(), timeout=120)
    finally:
        kill_group(proc)
    assert len(emu.state()["instances"]) == 1
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_two_directories_are_isolated(cloud, make_project):
    emu = cloud("default")
    a, b = make_project(emu), make_project(emu)
    b.env["HOME"] = a.env["HOME"]                         # one user, two checkouts
    a.make("defconfig-datacrunch-v100", "KDEVOPS_HOSTS_PREFIX=kn1")
    b.make("defconfig-datacrunch-v100", "KDEVOPS_HOSTS_PREFIX=kn2")
    errors = []

    def up(p):
        try:
            p.make("bringup")
        except AssertionError as exc:
            errors.append(exc)
    threads = [threading.Thread(target=up, args=(p,)) for p in (a, b)]
    [t.start() for t in threads]
    [t.join(timeout=300) for t in threads]
    assert not errors, errors
    names = sorted(i["name"] for i in emu.state()["instances"])
    assert names == ["kn1-gpu", "kn2-gpu"]
    assert len({k["name"] for k in emu.state()["ssh_keys"]}) == 2     # a key per directory
    a.make("destroy")
    assert [i["name"] for i in emu.state()["instances"]] == ["kn2-gpu"]   # b untouched
    assert "kn2-gpu" in b.make("status").stdout
    b.make("destroy")
    assert audit(emu) == CLEAN


def test_same_prefix_in_two_directories_never_crosses(cloud, make_project):
    emu = cloud("default")
    a, b = make_project(emu), make_project(emu)
    b.env["HOME"] = a.env["HOME"]
    for p in (a, b):
        p.make("defconfig-lambdalabs-gpu-1x-a10")
        p.make("bringup")
    assert len(emu.state()["instances"]) == 2            # b did not adopt a's machine
    a.make("destroy")
    assert len(emu.state()["instances"]) == 1
    b.make("destroy")
    assert audit(emu) == CLEAN


def test_wrong_key_is_one_clear_line_before_anything_launches(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-lambdalabs-h100-or-less")
    proc = p.make("bringup", check=False, env={"LAMBDALABS_API_KEY": "wrong-key-0123456789"})
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "invalid-api-key" in errors[0]
    assert "wrong-key-0123456789" not in proc.stdout + proc.stderr
    assert launches(emu) == []
    assert audit(emu) == CLEAN
