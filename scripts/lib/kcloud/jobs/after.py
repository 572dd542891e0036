"""`--then destroy` (and CONFIG_KCLOUD_DESTROY_AFTER_JOB): when the job ends, fetch its
artifacts, then destroy -- carried out by the directory's watchdog (kcloud.launch.watchdog),
one detached process with its lock and log in .kcloud/, so it happens with the submitting
process, the terminal and the laptop's lid gone.

Rules, in the order the watchdog applies them on each tick:
- a job is pending while its record says then=destroy, its after-state is pending, and the
  machines it ran on are still this directory's running machines (the instance ids recorded
  at submit against the journal): a `make destroy` or a new bringup makes it moot;
- the machines are destroyed once *every* pending job has ended (a second --then destroy job
  is never cut short by the first); jobs without --then destroy do not hold it back (submit
  warns about that);
- an ended job's artifacts and logs are fetched first (into artifacts/<id>/, logs beside its
  record); a path the job did not write is noted, not waited for; a node that does not answer
  is retried for KCLOUD_JOB_UNREACHABLE_S (default 600 s), then the destroy goes ahead;
- a job whose setup failed before its command ever ran keeps the machines (nothing was done
  on them yet: fix the setup, submit again); so does a node that is unknown or replaced
  (never destroy on a doubt about which machine is which).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kcloud.jobs import core, records

DONE = ("done", "dropped")


def _running_ids(project) -> set[str]:
    from kcloud.launch.journal import Journal
    from kcloud.launch.watchdog import machines
    return {m["id"] for m in machines(Journal(project.journal_path).events())}


def pending(project) -> list[dict]:
    """Jobs whose --then destroy has still to be carried out (local files only: cheap)."""
    recs, _notes = records.all_records(project)
    out = []
    running = None
    for rec in recs:
        if rec.get("then") != "destroy" or rec.get("state") == "not started":
            continue
        if (rec.get("after") or {}).get("state", "pending") in DONE:
            continue
        ids = [n.get("instance_id") for n in rec["nodes"]]
        if all(ids):
            running = _running_ids(project) if running is None else running
            if not all(i in running for i in ids):
                continue                    # destroyed (or replaced) meanwhile: nothing left to do
        elif not project.ssh_config.is_file():
            continue
        out.append(rec)
    return out


def _set_after(project, job_id: str, **fields) -> None:
    def change(rec):
        rec["after"] = {**(rec.get("after") or {}), **fields}
    records.update(project, job_id, change)


def _unreachable_limit() -> float:
    try:
        return float(os.environ.get("KCLOUD_JOB_UNREACHABLE_S", "600"))
    except ValueError:
        return 600.0


def tick(project, say) -> bool:
    """One look at the pending jobs: fetch what ended, destroy when none is left running.
    True once the machines are destroyed (the watchdog then exits)."""
    jobs = pending(project)
    if not jobs:
        return False
    live = core.query(project, jobs)
    waiting, ready = [], []
    for rec in jobs:
        statuses = live[rec["id"]]
        states = [s.state for s in statuses]
        after = rec.get("after") or {}
        if any(s in records.RUNNING_STATES for s in states):
            waiting.append(rec)
            continue
        if any(s in ("gone", "unknown") for s in states):
            _set_after(project, rec["id"], state="dropped",
                       note="a node is gone, replaced or does not know the job: the machines are not destroyed")
            say(f"job {rec['id']}: a node is gone or does not know the job; --then destroy dropped")
            continue
        if "unreachable" in states:
            since = after.get("unreachable_since") or time.time()
            if not after.get("unreachable_since"):
                _set_after(project, rec["id"], unreachable_since=since)
                say(f"job {rec['id']}: a node does not answer; retrying for {_unreachable_limit():.0f} s")
            if time.time() - since < _unreachable_limit():
                waiting.append(rec)
                continue
        if any(s.in_setup for s in statuses) and not any(s.started for s in statuses):
            _set_after(project, rec["id"], state="dropped", note="the setup failed before the command ran: "
                       "the machines are kept (fix the setup and submit again)")
            say(f"job {rec['id']}: the setup failed; the machines are kept")
            continue
        ready.append(rec)
    for rec in ready:
        if (rec.get("after") or {}).get("state") in ("fetched", "destroying"):
            continue
        dest = core.default_destination(project, rec["id"])
        status = core.job_status(live[rec["id"]])
        say(f"job {rec['id']} ended ({status}): fetching " + (", ".join(rec.get("artifacts") or []) or "its logs")
            + f" to {dest}")
        notes = []
        if rec.get("artifacts"):
            try:
                for r in core.fetch(project, rec, rec["artifacts"], dest):
                    if r.paths:
                        say(f"  {r.node}: {', '.join(r.paths)} ({core.human_bytes(r.bytes)})")
                    notes += [f"{r.node}: {m} was not written" for m in r.missing]
                    if r.error:
                        notes.append(r.error)
            except Exception as exc:        # noqa: BLE001 -- a failed fetch must not keep paying machines
                notes.append(f"fetch failed: {exc}")
        else:
            for node in rec["nodes"]:
                try:
                    core._fetch_logs(project, rec["id"], node["name"])
                except Exception as exc:    # noqa: BLE001
                    notes.append(f"{node['name']}: logs not fetched: {exc}")
        for line in notes:
            say(f"  {line}")
        _set_after(project, rec["id"], state="fetched", fetched_to=str(dest), notes=notes)
    if waiting:
        return False
    ready = [r for r in ready if r["id"] in {j["id"] for j in pending(project)}]
    if not ready:
        return False
    ids = ", ".join(r["id"] for r in ready)
    for rec in ready:
        _set_after(project, rec["id"], state="destroying")
    say(f"job {ids} ended and fetched: destroying the machines (--then destroy)")
    kcloud = Path(__file__).resolve().parents[3] / "kcloud"
    proc = subprocess.run([sys.executable, str(kcloud), "destroy", "--by-watchdog"], cwd=project.root,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    say(proc.stdout.strip() + ("\n" + proc.stderr.strip() if proc.stderr.strip() else ""))
    if proc.returncode:
        say("destroy did not finish; trying again")
        for rec in ready:
            _set_after(project, rec["id"], state="fetched")
        return False
    for rec in ready:
        _set_after(project, rec["id"], state="done", note="the machines were destroyed after the job",
                   at=round(time.time(), 3))
    return True


def status_words(project) -> str:
    """For `make status` / `watchdog status`: which jobs the watchdog destroys after."""
    jobs = pending(project)
    return f"destroys the machines after job {', '.join(r['id'] for r in jobs)}" if jobs else ""
