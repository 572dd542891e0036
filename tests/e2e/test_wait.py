"""Issue 8: waiting for capacity, end to end (real make, terraform, Ansible, sshd), each test
ending with an /_emulator/state audit."""
import os
import signal
import subprocess
import sys
import time

import requests

from e2e_helpers import audit, kill_group, wait_for

CLEAN = {"instances": [], "ssh_keys": []}


def set_capacity(emu, provider, instance_type, region, count):
    base = "/".join((emu.lambdalabs_url if provider == "lambdalabs" else emu.datacrunch_url).split("/", 3)[:3])
    requests.post(f"{base}/_emulator/capacity", json={"instance_type": instance_type, "region": region,
                                                      "count": count}, timeout=10).raise_for_status()


def test_bringup_waits_through_a_sold_out_market_and_takes_the_best_tier(cloud, make_project, tmp_path):
    emu = cloud("empty")
    p = make_project(emu)
    notes = tmp_path / "notify.txt"
    script = tmp_path / "notify.py"
    script.write_text("import os, sys\nopen(sys.argv[1], 'a').write(' '.join(os.environ[k] for k in "
                      "('KCLOUD_EVENT', 'KCLOUD_INSTANCE_TYPE', 'KCLOUD_PRICE_PER_HOUR')) + '\\n')\n")
    p.defconfig("lambdalabs-h100-or-less", f"KCLOUD_NOTIFY_COMMAND={sys.executable} {script} {notes}")
    proc = subprocess.Popen(["make", "--no-print-directory", "bringup", "WAIT=2m"], cwd=p.root, env=p.env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        time.sleep(8)                                                    # sold out for a while
        assert proc.poll() is None
        assert emu.state()["instances"] == []
        set_capacity(emu, "lambdalabs", "gpu_1x_a10", "us-west-1", 1)     # both appear at once:
        set_capacity(emu, "lambdalabs", "gpu_1x_h100_sxm5", "us-east-1", 1)   # the higher tier wins
        out, err = proc.communicate(timeout=240)
    finally:
        kill_group(proc)
    assert proc.returncode == 0, out + err
    assert "waiting up to 2m00s for capacity" in out
    assert "capacity for gpu_1x_h100_sxm5@us-east-1" in out
    assert "Ready: kdevops-gpu = gpu_1x_h100_sxm5" in out
    polls = [r for r in emu.state()["requests"] if r["path"].endswith("/instance-types")]
    assert 2 <= len(polls) <= 12, len(polls)                          # within the limits, not a busy loop
    assert notes.read_text().split() == ["ready", "gpu_1x_h100_sxm5", "4.29"]
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_a_wait_that_times_out_exits_3_and_leaves_nothing(cloud, make_project):
    emu = cloud("empty")
    p = make_project(emu)
    p.make("defconfig-lambdalabs-h100-or-less")
    started = time.monotonic()
    proc = p.make("bringup", "WAIT=6s", check=False)
    assert proc.returncode == 2 or proc.returncode == 3                 # make reports the recipe's failure
    assert time.monotonic() - started < 60
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "no machine within the wait" in errors[0], proc.stderr
    assert "nothing is left running" in errors[0]
    assert audit(emu) == CLEAN                                           # the key went too
    direct = p.run(str(p.root / "scripts" / "kcloud"), "bringup", "--wait", "3s", check=False)
    assert direct.returncode == 3                                        # its own exit status
    assert audit(emu) == CLEAN


def test_ctrl_c_while_waiting_leaves_nothing(cloud, make_project):
    emu = cloud("empty")
    p = make_project(emu)
    p.make("defconfig-datacrunch-h100-pytorch-or-less")
    proc = subprocess.Popen(["make", "--no-print-directory", "bringup", "WAIT=10m"], cwd=p.root, env=p.env,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert wait_for(lambda: len([r for r in emu.state()["requests"]
                                     if r["path"].endswith("/instance-availability")]) >= 3, timeout=60)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode != 0 and "Traceback" not in out + err
    assert "interrupted" in err
    assert audit(emu) == CLEAN


def test_waits_through_20_s_of_a_sold_out_market_until_capacity_is_scheduled(cloud, make_project):
    emu = cloud({"extends": "empty", "lambdalabs": {"market": {"schedule": [
        {"at": "20s", "type": "gpu_1x_a10", "region": "us-west-1", "machines": 1}]}}})
    p = make_project(emu)
    p.make("defconfig-lambdalabs-h100-or-less")
    started = time.monotonic()
    out = p.make("bringup", "WAIT=3m").stdout
    assert time.monotonic() - started >= 20
    assert "capacity for gpu_1x_a10@us-west-1" in out and "Ready: kdevops-gpu = gpu_1x_a10" in out
    launches = [r for r in emu.state()["requests"] if r["path"].endswith("/instance-operations/launch")]
    assert len(launches) == 1                                  # no launch was wasted while sold out
    p.make("destroy")
    assert audit(emu) == CLEAN
