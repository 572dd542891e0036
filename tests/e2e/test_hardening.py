"""Issue 6: the holes an adversarial review found in bringup/destroy, each as the user would hit
it -- real make targets, terraform, Ansible and sshd against the emulator -- and each ending in
an /_emulator/state audit: nothing billable of ours left."""
import os
import shutil
import signal
import socket
import subprocess
import time

from e2e_helpers import audit, billable, clear_faults, kill_group, launches, processes_under, wait_for

CLEAN = {"instances": [], "ssh_keys": []}



def no_traceback(*outputs):
    for out in outputs:
        assert "Traceback" not in out, out[-2000:]


# -- 3: a terminate that does not succeed is retried, verified, and reported ------------------
def test_failed_terminates_are_reported_not_hidden(cloud, make_project):
    emu = cloud({"extends": "default", "lambdalabs": {"faults": [
        {"method": "POST", "path": "/instance-operations/launch", "times": 0, "instance": "stuck"},
        {"method": "POST", "path": "/instance-operations/terminate", "times": 0, "error": "internal"}]}})
    p = make_project(emu)
    p.defconfig("lambdalabs-a100-or-less", "TERRAFORM_BOOT_TIMEOUT=5")
    proc = p.make("bringup", check=False, env={"KCLOUD_TERMINATE_WINDOW_S": "3"})
    both = proc.stdout + proc.stderr
    assert proc.returncode != 0
    no_traceback(both)
    stuck = emu.state()["instances"]
    assert len(stuck) == 1, "one stuck machine, and no further launch while it may still run"
    assert "TERMINATE FAILED" in both                                   # in the table
    assert "no further launches" in both
    assert "1 instance may still be running" in proc.stderr
    assert "nothing is left running" not in both and "confirmed" not in proc.stderr
    clear_faults(emu, "lambdalabs")
    out = p.make("destroy").stdout
    assert "the API confirms nothing of this directory is left running" in out
    assert audit(emu) == CLEAN


# -- 4: a launch answered after the client's read timeout is found, not launched twice -----
def test_late_launch_answer_is_found_not_duplicated(cloud, make_project):
    emu = cloud({"extends": "default", "lambdalabs": {"faults": [
        {"method": "POST", "path": "/instance-operations/launch", "nth": 1, "late_ms": 4000}]}})
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    out = p.make("bringup", env={"KCLOUD_HTTP_READ_TIMEOUT": "1.5"}).stdout
    assert "the launch answer was lost" in out and "found it" in out
    assert len(launches(emu)) == 1                                      # never sent twice
    assert len(emu.state()["instances"]) == 1 and "Ready: kdevops-gpu" in out
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_launch_answer_lost_by_a_dropped_connection_is_found(cloud, make_project):
    emu = cloud({"extends": "default", "datacrunch": {"faults": [
        {"method": "POST", "path": "/instances", "nth": 1, "disconnect_after": True}]}})
    p = make_project(emu)
    p.make("defconfig-datacrunch-v100")
    out = p.make("bringup").stdout
    assert "found it" in out
    assert len(launches(emu, "datacrunch")) == 1 and len(emu.state()["instances"]) == 1
    p.make("destroy")
    assert audit(emu) == CLEAN


# -- 5: state and journal both lost: tags (plus our key) still find a DataCrunch machine ----
def test_datacrunch_machine_found_by_tag_and_key_after_state_and_journal_are_lost(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-datacrunch-v100")
    p.make("bringup")
    [inst] = emu.state()["instances"]
    assert {"key": "kcloud-project", "value": (p.root / ".kcloud" / "id").read_text().strip()} in \
        [{"key": t["key"], "value": t.get("value")} for t in inst.get("tags", [])]
    for f in (p.root / "terraform" / "datacrunch").glob("terraform.tfstate*"):
        f.unlink()
    (p.root / ".kcloud" / "journal.jsonl").unlink()
    assert "kdevops-gpu" in p.make("status").stdout
    out = p.make("destroy").stdout
    assert "terminating 1 instance" in out and "removed SSH key" in out
    assert audit(emu) == CLEAN


# -- 6a: the same path on two computers: separate identities, nothing crosses ---------------
def test_same_path_on_two_computers_never_crosses(cloud, make_project, tmp_path):
    emu = cloud("default")
    a = make_project(emu)
    a.make("defconfig-lambdalabs-gpu-1x-a10")
    a.make("bringup")
    # Computer B: the same checkout path, its own HOME and its own .kcloud (A's is elsewhere).
    a_state = tmp_path / "a-kcloud"
    shutil.move(str(a.root / ".kcloud"), a_state)
    a_tf = tmp_path / "a-tfstate"
    a_tf.mkdir()
    for f in (a.root / "terraform" / "lambdalabs").glob("terraform.tfstate*"):
        shutil.move(str(f), a_tf / f.name)
    home_b = tmp_path / "home-b"
    home_b.mkdir()
    b_env = {"HOME": str(home_b)}
    assert "No instances of this directory" in a.make("status", env=b_env).stdout
    a.make("destroy", env=b_env)
    assert len(emu.state()["instances"]) == 1                         # A's machine lives on
    assert len(emu.state()["ssh_keys"]) == 1                          # and A's key
    # Back on computer A.
    shutil.rmtree(a.root / ".kcloud", ignore_errors=True)
    shutil.move(str(a_state), a.root / ".kcloud")
    for f in a_tf.iterdir():
        shutil.move(str(f), a.root / "terraform" / "lambdalabs" / f.name)
    a.make("destroy")
    assert audit(emu) == CLEAN


# -- 6b: shared-key mode with the same prefix: no adoption, no cross-destroy ---------------
def test_shared_key_same_prefix_never_crosses(cloud, make_project):
    emu = cloud("default")
    a, b = make_project(emu), make_project(emu)
    b.env["HOME"] = a.env["HOME"]
    home = a.env["HOME"]
    os.makedirs(f"{home}/.ssh", exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{home}/.ssh/shared"], check=True)
    for p in (a, b):
        p.defconfig("lambdalabs-gpu-1x-a10", "TERRAFORM_LAMBDALABS_SSH_KEY_SHARED=y",
                    "TERRAFORM_LAMBDALABS_SSH_KEY_NAME_CUSTOM=team-shared", "TERRAFORM_SSH_CONFIG_GENKEY=n",
                    "TERRAFORM_LAMBDALABS_SSH_KEY_AUTO_CREATE=y",
                    f"TERRAFORM_SSH_CONFIG_PUBKEY_FILE={home}/.ssh/shared.pub")
    a.make("bringup")
    b.make("bringup")
    assert len(emu.state()["instances"]) == 2                          # b did not adopt a's
    a.make("destroy")
    left = emu.state()["instances"]
    assert len(left) == 1 and left[0]["id"] not in a.journal()        # b's machine lives on
    b.make("destroy")
    assert emu.state()["instances"] == []
    assert [k["name"] for k in emu.state()["ssh_keys"]] == ["team-shared"]   # a shared key is never deleted
    assert billable(emu) == {"ssh_keys": 1}


# -- 7: damaged local files never block destroy ---------------------------------------------
def test_damaged_local_files_do_not_block_destroy(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    p.make("bringup")
    (p.root / ".config").write_bytes(b"\xff\xfe garbage \x00 CONFIG_\n")
    with open(p.root / ".kcloud" / "journal.jsonl", "ab") as f:
        f.write(b"\xff\xfe\n[1, 2]\n{\"event\": 7}\n")
    ssh_config = os.path.join(p.env["HOME"], ".ssh", "config")
    with open(ssh_config, "ab") as f:
        f.write(b"# caf\xe9 in latin-1\n")
    for target in ("status", "destroy"):
        proc = p.make(target, check=False)
        no_traceback(proc.stdout, proc.stderr)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "ignored .config" in proc.stdout and "damaged line" in proc.stdout
    assert audit(emu) == CLEAN
    assert b"caf\xe9" in open(ssh_config, "rb").read()                  # the user's bytes are kept


# -- 8: a killed bringup leaves no process, and destroy waits for the launch in flight -------
def test_sigkill_during_boot_leaves_no_process_and_destroy_waits(cloud, make_project):
    emu = cloud("default", boot_delay=20)
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    proc = subprocess.Popen(["make", "--no-print-directory", "bringup"], cwd=p.root, env=p.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: '"event": "launched"' in p.journal(), timeout=120)
    finally:
        kill_group(proc)
    out = p.make("destroy").stdout
    assert "the API confirms nothing of this directory is left running" in out
    assert audit(emu) == CLEAN
    assert wait_for(lambda: not processes_under(p.root), timeout=30), processes_under(p.root)
    time.sleep(2)
    assert audit(emu) == CLEAN                                          # nothing launched afterwards


# -- 11: a changed .config while a machine runs --------------------------------------------
def test_changed_config_while_running_refuses_then_replaces(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    p.make("bringup")
    first = [i["id"] for i in emu.state()["instances"]]
    p.make("defconfig-lambdalabs-8x-h100-or-less")
    proc = p.make("bringup", check=False)
    assert proc.returncode != 0
    assert "already running for this directory: kdevops-gpu = gpu_1x_a10" in proc.stderr
    assert "make bringup REPLACE=1" in proc.stderr
    assert [i["id"] for i in emu.state()["instances"]] == first          # untouched
    p.make("defconfig-datacrunch-v100")                                 # another provider
    proc = p.make("bringup", check=False)
    assert proc.returncode != 0 and "on Lambda Cloud" in proc.stderr
    assert [i["id"] for i in emu.state()["instances"]] == first
    p.make("defconfig-lambdalabs-8x-h100-or-less")
    out = p.make("bringup", "REPLACE=1").stdout
    assert "Replacing kdevops-gpu" in out and "Ready: kdevops-gpu = gpu_8x" in out
    assert [i["instance_type"] for i in emu.state()["instances"]][0].startswith("gpu_8x")
    p.make("destroy")
    assert audit(emu) == CLEAN


# -- 12: the API down is one line within seconds ---------------------------------------------
def test_api_down_is_one_line_within_seconds(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                  # closed again: connections are refused
    started = time.monotonic()
    proc = p.make("status", check=False, env={"LAMBDALABS_API_URL": f"http://127.0.0.1:{port}/api/v1"})
    took = time.monotonic() - started
    assert proc.returncode != 0 and took < 15, took
    errors = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("make")]
    assert len(errors) == 1 and "unreachable" in errors[0], proc.stderr
    assert "Retrying" not in proc.stderr
    assert audit(emu) == CLEAN


# -- 13: Ctrl-C during Ansible says that the machine runs and how to go on --------------------
def test_ctrl_c_during_ansible_says_what_runs(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    proc = subprocess.Popen(["make", "--no-print-directory", "bringup"], cwd=p.root, env=p.env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert wait_for(lambda: (p.root / "hosts").exists(), timeout=120)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        kill_group(proc)
    no_traceback(out, err)
    if proc.returncode != 0:         # (Ansible may have finished first: then it is simply Ready)
        assert "running and billed" in err and "make destroy" in err, err
    p.make("destroy")
    assert audit(emu) == CLEAN


# -- 1: a hostile API answer never reaches ssh_config, the inventory or a shell --------------
def test_hostile_ip_is_refused_before_any_file_is_written(cloud, make_project, tmp_path):
    pwned = tmp_path / "pwned"
    hostile = f"127.0.0.9\nHost *\n  ProxyCommand sh -c 'touch {pwned}'"
    emu = cloud({"extends": "default", "lambdalabs": {"faults": [
        {"method": "POST", "path": "/instance-operations/launch", "answer_ip": hostile}]}})
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    user_config = os.path.join(p.env["HOME"], ".ssh", "config")
    proc = p.make("bringup", check=False)
    no_traceback(proc.stdout, proc.stderr)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "invalid ip" in errors[0] and "make destroy" in errors[0], proc.stderr
    assert "ProxyCommand" not in open(p.root / ".kcloud" / "ssh_config").read() \
        if (p.root / ".kcloud" / "ssh_config").exists() else True
    assert not (p.root / "hosts").exists() and not os.path.exists(user_config)
    p.run("ssh", "-G", "unrelated-host")                              # the user's ssh still works
    assert not pwned.exists()
    p.make("destroy")
    assert audit(emu) == CLEAN and not pwned.exists()
