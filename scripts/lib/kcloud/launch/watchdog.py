"""The dead-man's switch (issue 8): one small detached process per directory that terminates
this directory's machines when KCLOUD_MAX_LIFETIME or KCLOUD_MAX_SPEND is reached -- even when
the terminal, make and the bringup that started it are gone.

One job, one lock, one status line:
  .kcloud/watchdog.json   the limits (written by bringup; removed by destroy = "stop")
  .kcloud/watchdog.lock   held exclusively by the running watchdog (its pid inside)
  .kcloud/watchdog.log    what it did

Design choice: a daemonised kcloud process (own session, stdin closed, output to the log), not
a systemd user timer: it works the same on every machine (CI, containers, macOS later), the
lock makes "is it running" a fact instead of a guess, and it exits by itself once nothing of
the directory runs (it never outlives what it guards). If the computer sleeps, it acts as soon
as it wakes: deadlines are wall-clock times. It enforces with `scripts/kcloud destroy` (the
same verified path as the user's `make destroy`: terminate, wait gone, remove the key).

It also carries out a job's `--then destroy` (issue 10): when the job ends, fetch its artifacts,
then destroy. The job-specific part is kcloud.jobs.after (pending, tick); the watchdog runs
while limits are set *or* such a job is pending.
"""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from kcloud.errors import ConfigError

TICK_S = float(os.environ.get("KCLOUD_WATCHDOG_TICK_S", "5"))
WARN_AT = 0.8


def paths(state_dir: Path) -> tuple[Path, Path, Path]:
    return state_dir / "watchdog.json", state_dir / "watchdog.lock", state_dir / "watchdog.log"


def write_limits(state_dir: Path, *, max_lifetime: float, max_spend: float | None, host: str,
                 notify_command: str = "") -> None:
    from kcloud.fsutil import atomic_write
    limits, _lock, _log = paths(state_dir)
    atomic_write(limits, json.dumps({"max_lifetime": max_lifetime, "max_spend": max_spend, "host": host,
                                     "notify_command": notify_command, "written": time.time()}) + "\n", 0o600)


def running_pid(state_dir: Path) -> int | None:
    """The pid of the live watchdog of this directory, or None (the lock decides, not the pid)."""
    _limits, lock, _log = paths(state_dir)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def ensure_running(project_root: Path, state_dir: Path) -> int:
    """Start the watchdog if it is not running; return its pid."""
    pid = running_pid(state_dir)
    if pid:
        return pid
    _limits, _lock, log = paths(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    kcloud = Path(__file__).resolve().parents[3] / "kcloud"
    env = {k: v for k, v in os.environ.items() if k not in ("KCLOUD_OWNER_PID", "KCLOUD_LAUNCH_LOCK")}
    proc = subprocess.Popen([sys.executable, str(kcloud), "watchdog", "run"], cwd=project_root,
                            env={**env, "KCLOUD_PROJECT_DIR": str(project_root)}, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out, start_new_session=True, close_fds=True)
    os.close(out)
    for _ in range(50):                    # until it holds its lock (at most 5 s)
        if running_pid(state_dir):
            break
        if proc.poll() is not None:
            raise ConfigError(f"the watchdog did not start (exit {proc.returncode}); see {log}")
        time.sleep(0.1)
    return proc.pid


def stop(state_dir: Path) -> None:
    """Called by destroy: no limits, no watchdog (it exits on its next tick; SIGTERM now)."""
    limits, _lock, _log = paths(state_dir)
    limits.unlink(missing_ok=True)
    pid = running_pid(state_dir)
    if pid and pid > 0 and pid != os.getppid() and pid != os.getpid():
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            pass


def status_line(state_dir: Path, spent: float | None = None, started: float | None = None) -> str | None:
    limits_file, _lock, _log = paths(state_dir)
    try:
        limits = json.loads(limits_file.read_text())
    except (OSError, ValueError):
        limits = None
    jobs = _after_words(state_dir)
    if limits is None and not jobs:
        return None
    limits = limits or {}
    from kcloud.launch.wait import format_duration
    pid = running_pid(state_dir)
    parts = [f"watchdog: {'running, pid ' + str(pid) if pid else 'NOT RUNNING (make bringup restarts it)'}"]
    if limits.get("max_lifetime") and started:
        parts.append(f"lifetime left {format_duration(max(0.0, started + limits['max_lifetime'] - time.time()))}")
    if limits.get("max_spend") is not None and spent is not None:
        parts.append(f"budget left ${max(0.0, limits['max_spend'] - spent):.2f} of ${limits['max_spend']:.2f}")
    if jobs:
        parts.append(jobs)
    return ", ".join(parts)


def _after_words(state_dir: Path) -> str:
    """Which jobs' --then destroy the watchdog carries out (kcloud.jobs.after), or ""."""
    try:
        from kcloud.bringup.project import Project
        from kcloud.jobs import after
        return after.status_words(Project(state_dir.parent))
    except Exception:        # noqa: BLE001 -- a damaged job record never breaks make status
        return ""


def idle(launching_lock: Path) -> bool:
    """No bringup or plugin holds the directory's launching lock."""
    try:
        fd = os.open(launching_lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def machines(events: list[dict]) -> list[dict]:
    """Running machines as the journal knows them: id, start (launch time) and price."""
    out: dict[str, dict] = {}
    for e in events:
        iid = e.get("id")
        if not iid:
            continue
        if e.get("event") in ("launched", "found", "adopt"):
            out.setdefault(iid, {"id": iid, "start": e.get("time") or time.time(), "price": 0.0})
        if e.get("event") in ("launched", "active") and e.get("price_per_hour"):
            out.setdefault(iid, {"id": iid, "start": e.get("time") or time.time(), "price": 0.0})
            out[iid]["price"] = float(e["price_per_hour"])
        if e.get("event") == "terminated":
            out.pop(iid, None)
    return list(out.values())


def cmd_watchdog(args) -> int:
    from kcloud.bringup.project import Project
    project = Project.here()
    if args.action == "status":
        print(status_line(project.state_dir) or "watchdog: no limits set for this directory")
        return 0
    return run(project)


def run(project) -> int:
    from kcloud.launch.journal import Journal
    state = project.state_dir
    limits_file, lock, _log = paths(state)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("another watchdog guards this directory", flush=True)
        return 0
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    warned = False
    say = lambda line: print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)  # noqa: E731
    say(f"guarding {project.root}")
    seen_machine = False
    while True:
        try:
            limits = json.loads(limits_file.read_text())
        except (OSError, ValueError):
            limits = None
        jobs = _after_jobs(project, say)
        if limits is None and not jobs:
            say("no limits any more (make destroy): exiting")
            return 0
        if jobs and _after_tick(project, say):
            say("destroyed after the job (--then destroy): exiting")
            return 0
        if limits is None:
            time.sleep(TICK_S)
            continue
        running = machines(Journal(project.journal_path).events())
        if running:
            seen_machine = True
        elif seen_machine or (time.time() - float(limits.get("written", 0)) > 30
                              and idle(project.launching_lock)):
            say("nothing of this directory runs or is being launched: exiting")
            return 0
        now = time.time()
        spent = sum(m["price"] * (now - m["start"]) / 3600 for m in running)
        oldest = min((m["start"] for m in running), default=now)
        life, cap = float(limits.get("max_lifetime") or 0), limits.get("max_spend")
        reason = ""
        if life and running and now - oldest >= life:
            reason = f"maximum lifetime reached ({life:.0f} s)"
        elif cap is not None and running and spent >= float(cap):
            reason = f"spend cap reached (${spent:.2f} of ${float(cap):.2f})"
        elif not warned and running and ((life and now - oldest >= WARN_AT * life) or
                                         (cap is not None and spent >= WARN_AT * float(cap))):
            warned = True
            _notify(limits, "warning", f"{limits.get('host')}: 80 % of a limit used (${spent:.2f} spent, "
                                       f"{now - oldest:.0f} s up)")
            say("80 % of a limit used: warned")
        if reason:
            say(f"{reason}: destroying")
            kcloud = Path(__file__).resolve().parents[3] / "kcloud"
            proc = subprocess.run([sys.executable, str(kcloud), "destroy", "--by-watchdog"], cwd=project.root,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
            say(proc.stdout.strip() + ("\n" + proc.stderr.strip() if proc.stderr.strip() else ""))
            if proc.returncode == 0:
                _notify(limits, "terminated", f"{limits.get('host')}: {reason}; destroyed")
                return 0
            say("destroy did not finish; trying again")
        time.sleep(TICK_S)


def _after_jobs(project, say) -> list:
    """Jobs whose --then destroy is pending (kcloud.jobs.after); a damaged record is skipped there."""
    try:
        from kcloud.jobs import after
        return after.pending(project)
    except Exception as exc:     # noqa: BLE001 -- the limits are enforced whatever happens here
        say(f"could not read the job records: {exc}")
        return []


def _after_tick(project, say) -> bool:
    try:
        from kcloud.jobs import after
        return after.tick(project, say)
    except Exception as exc:     # noqa: BLE001
        say(f"--then destroy: {type(exc).__name__}: {exc}; trying again")
        return False


def _notify(limits: dict, event: str, message: str) -> None:
    cmd = limits.get("notify_command")
    if not cmd:
        return
    import shlex
    try:
        subprocess.run(shlex.split(cmd), env={**os.environ, "KCLOUD_EVENT": event, "KCLOUD_MESSAGE": message,
                                               "KCLOUD_HOST": str(limits.get("host", ""))},
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass


def register(sub) -> None:
    w = sub.add_parser("watchdog", help="the dead-man's switch of KCLOUD_MAX_LIFETIME / KCLOUD_MAX_SPEND")
    w.add_argument("action", choices=["run", "status"])
    w.set_defaults(func=cmd_watchdog)
