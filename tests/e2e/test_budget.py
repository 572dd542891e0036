"""Issue 8: spend cap and the dead-man's switch, end to end, with leak audits."""
import subprocess
import time

from e2e_helpers import audit, kill_group, launches, wait_for

CLEAN = {"instances": [], "ssh_keys": []}



def test_max_lifetime_is_enforced_after_the_bringup_process_group_is_killed(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.env["KCLOUD_WATCHDOG_TICK_S"] = "1"
    p.defconfig("lambdalabs-gpu-1x-a10", "KCLOUD_MAX_LIFETIME=20s")
    proc = subprocess.Popen(["make", "--no-print-directory", "bringup"], cwd=p.root, env=p.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: '"event": "active"' in p.journal(), timeout=120)
    finally:
        kill_group(proc)                  # terminal, make and bringup: all gone
    launched_at = time.monotonic()
    assert len(emu.state()["instances"]) == 1
    status = p.make("status").stdout
    assert "watchdog: running" in status and "lifetime left" in status, status
    assert wait_for(lambda: emu.state()["instances"] == [], timeout=90)
    assert time.monotonic() - launched_at > 5                          # not before its time
    assert wait_for(lambda: audit(emu) == CLEAN, timeout=30)           # the key went too
    log = (p.root / ".kcloud" / "watchdog.log").read_text()
    assert "maximum lifetime reached" in log and "destroying" in log
    assert wait_for(lambda: "exiting" in (p.root / ".kcloud" / "watchdog.log").read_text() or
                    "Destroyed" in (p.root / ".kcloud" / "watchdog.log").read_text(), timeout=30)
    assert "No instances of this directory are running" in p.make("status").stdout


def test_spend_cap_refuses_an_over_budget_plan(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less", "KCLOUD_MAX_SPEND=1", "KCLOUD_MAX_LIFETIME=8h")
    proc = p.make("bringup", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "over budget" in errors[0] and "spend cap is $1.00" in errors[0], proc.stderr
    assert "> spend cap $1.00: skipped" in proc.stdout
    assert launches(emu) == []
    assert audit(emu) == CLEAN
    assert not (p.root / ".kcloud" / "watchdog.lock").exists() or "watchdog" not in p.make("status").stdout
