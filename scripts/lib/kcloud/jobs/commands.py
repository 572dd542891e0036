"""`kcloud job submit|list|status|logs|fetch|cancel` (and the make job-* targets).

COMMAND is run by bash on each node in the job's copy of the directory, as ssh runs its
command: the words are joined with spaces, so `$NNODES` in single quotes reaches the node's
shell, where ~/.kcloud/cluster.env (bringup's) and --env have set it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from kcloud.errors import ConfigError, KcloudError
from kcloud.jobs import core, records, remote
from kcloud.jobs import nodes as nodes_mod

HELP = "run work on the machines: job submit|list|status|logs|fetch|cancel"
ALWAYS_EXCLUDED = ("/.git/", "/.kcloud/")
RESERVED_ENV = ("KCLOUD_JOB_ID", "KCLOUD_JOB_DIR", "KCLOUD_NODE")


def say(line: str = "") -> None:
    print(line, flush=True)


def note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _project():
    from kcloud.bringup.project import Project
    return Project.here()


# -- submit ------------------------------------------------------------------------------------
def _env_pairs(specs: list[str]) -> list[tuple[str, str]]:
    out = []
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not core.env_name_ok(key):
            raise ConfigError(f"--env {spec[:40]!r}: {key[:40]!r} is not an environment variable name",
                              hint="use --env NAME=VALUE, or --env NAME to pass this computer's value")
        if key in RESERVED_ENV:
            raise ConfigError(f"--env {key}: kcloud sets {key} itself")
        if not sep:
            value = core.getenv(key)
            if value is None:
                raise ConfigError(f"--env {key}: {key} is not set here (give a value: --env {key}=VALUE)")
        out.append((key, value))
    return out


def _then(project, asked: str | None) -> tuple[str, str]:
    """('destroy' or '', why): --then wins; else CONFIG_KCLOUD_DESTROY_AFTER_JOB."""
    if asked:
        return ("destroy" if asked == "destroy" else ""), "--then " + asked
    from kcloud.kconfig.config import load_settings
    try:
        settings = load_settings(project.root / ".config")
    except (KcloudError, OSError, ValueError, UnicodeDecodeError) as exc:
        note(f"note: .config not read ({str(exc)[:100]}): CONFIG_KCLOUD_DESTROY_AFTER_JOB taken as n")
        return "", ""
    if getattr(settings, "destroy_after_job", False):
        return "destroy", "CONFIG_KCLOUD_DESTROY_AFTER_JOB=y"
    return "", ""


def _sync_filters(project, directory: Path) -> list[str]:
    args = [f"--exclude={p}" for p in ALWAYS_EXCLUDED]
    fetched = project.root / "artifacts"               # fetched artifacts never travel back up
    try:
        rel = fetched.relative_to(directory)
        args.append(f"--exclude=/{rel.as_posix()}/")
    except ValueError:
        pass
    return args + ["--filter=:- .gitignore", "--filter=:- .kcloudignore"]


def cmd_submit(args) -> int:
    project = _project()
    words = list(args.command)
    if words and words[0] == "--":
        words = words[1:]
    command = " ".join(words).strip()
    if not command:
        raise ConfigError("job submit needs a command: scripts/kcloud job submit [options] -- COMMAND",
                          hint="make job-submit CMD='python train.py'")
    directory = Path(os.path.expanduser(args.dir)).resolve()
    if not directory.is_dir():
        raise ConfigError(f"--dir {args.dir}: not a directory")
    env = _env_pairs(args.env)
    artifacts = [core.check_relative(p.rstrip("/") or p) for p in args.artifacts]
    every = nodes_mod.read(project)                       # nothing brought up: one line
    targets = every if args.nodes == "all" else every[:1]
    then, then_why = _then(project, args.then)
    machines = core.machines(project)
    master = targets[0].private_ip if len(targets) > 1 and targets[0].private_ip else "127.0.0.1"
    single = args.nodes == "1" and len(every) > 1

    with records.locked(project):
        job_id = records.new_id(project)
        record = {"id": job_id, "created": round(time.time(), 3), "dir": str(directory), "command": command,
                  "setup": args.setup or "", "env": [k for k, _v in env], "artifacts": artifacts,
                  "target": args.nodes, "then": then, "state": "submitting", "submitter": _me(),
                  "nodes": [{"name": n.name, "rank": i,
                             "private_ip": n.private_ip, **({"instance_id": machines[n.name]["id"],
                                                            "provider": machines[n.name]["provider"],
                                                            "price_per_hour": machines[n.name]["price_per_hour"]}
                                                           if n.name in machines else {})}
                            for i, n in enumerate(targets)]}
        if then:
            record["after"] = {"state": "pending"}
        records.save(project, record)           # before anything happens on a node
    say(f"Job {job_id}: {command}")
    others = _pending_destroys(project, job_id)
    if others:
        note(f"note: job {', '.join(others)} will destroy the machines when it ends (--then destroy); "
             f"this job is stopped then if it is still running")

    def fail(message: str, hint: str = "") -> KcloudError:
        def change(rec):
            rec["state"] = "not started"
            rec["error"] = message
            if rec.get("after"):
                rec["after"] = {"state": "dropped", "note": "the job did not start"}
        records.update(project, job_id, change)
        say(job_id)
        return KcloudError(f"job {job_id}: {message}", hint=hint)

    # 1. Every node: its directory and files, then the sync. Nothing starts unless all succeed.
    files_of = {}
    for i, n in enumerate(targets):
        rank = record["nodes"][i]["rank"]
        files = {"env.sh": remote.env_file(job_id=job_id, node=n.name, rank=rank, nnodes=len(targets),
                                           master_addr=master, single=single, env=env),
                 "run.sh": remote.RUNNER.format(base=remote.BASE, id=job_id),
                 "command.sh": command + "\n"}
        if args.setup:
            files["setup.sh"] = args.setup + "\n"
        files_of[n.name] = files
    say(f"Syncing {directory} to {_nodes_text(targets)} (rsync; .gitignore and .kcloudignore honoured) ...")

    def prepare(n: nodes_mod.Node) -> str:
        proc = nodes_mod.run(project, n.name, remote.prepare_script(job_id, files_of[n.name]), timeout=120)
        facts = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            facts.update(nodes_mod.parse_fields(line))
        if facts.get("missing"):
            raise KcloudError(f"{n.name} lacks {facts['missing'].replace(',', ', ')}",
                              hint=f"install it there (ssh -F {project.ssh_config} {n.name} sudo apt-get install ...)")
        if facts.get("exists"):
            raise KcloudError(f"{n.name} already has a job {job_id}")
        if proc.returncode or not facts.get("ok"):
            raise KcloudError(f"{n.name}: preparing the job failed (exit {proc.returncode}): "
                              f"{nodes_mod.last_line(proc.stderr) or nodes_mod.last_line(proc.stdout)}")
        # Unchanged files are copied on the node from the last job of this directory there
        # (--copy-dest: a copy, never a hard link another job could write through).
        previous = _previous_job(project, job_id, str(directory), record["nodes"], n.name)
        basis = [f"--copy-dest=../../{previous}/work"] if previous else []
        argv = nodes_mod.rsync_argv(project, "-a", "--no-owner", "--no-group", "--stats", *basis,
                                    *_sync_filters(project, directory), "--",
                                    str(directory) + "/", f"{n.name}:{remote.BASE}/{job_id}/work/")
        sync = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL)
        if sync.returncode:
            raise KcloudError(core._rsync_error(n.name, sync))
        text = sync.stdout.decode(errors="replace")
        reg = re.search(r"^Number of files: [\d,]+ \(reg: ([\d,]+)", text, re.M)
        files = int(reg.group(1).replace(",", "")) if reg else core._stat(sync.stdout, "Number of files")
        size = core._stat(sync.stdout, "Total file size")
        sent = core._stat(sync.stdout, "Literal data")
        return f"{files} file{'s' if files != 1 else ''}, {core.human_bytes(size)}" + (
            f" ({core.human_bytes(sent)} sent, the rest copied from job {previous} on the node)"
            if previous and sent < size else "")
    results = core.parallel(targets, prepare)
    bad = [(n, r) for n, r in results if isinstance(r, Exception)]
    if bad:
        core.remove_remote(project, job_id, [n.name for n, r in results if not isinstance(r, nodes_mod.Unreachable)])
        n, exc = bad[0]
        line = exc.line() if isinstance(exc, KcloudError) else f"{n.name}: {exc}"
        more = f" (and {len(bad) - 1} more node(s))" if len(bad) > 1 else ""
        raise fail(f"not started: {line}{more}",
                   hint="" if isinstance(exc, KcloudError) and exc.hint else "nothing runs on any node")
    for n, summary in results:
        say(f"  {n.name}: {summary}")

    # 2. Start everywhere; with a setup, wait for it (the job does not depend on this session).
    say(f"Starting on {_nodes_text(targets)}" + (" (setup first: " + _short(args.setup) + ")" if args.setup else "")
        + " ...")
    progress_lock = threading.Lock()

    def start(n: nodes_mod.Node) -> dict:
        argv = nodes_mod.ssh_argv(project, n.name)
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        proc.stdin.write(remote.start_script(job_id, bool(args.setup), heartbeat_s=_heartbeat()).encode())
        proc.stdin.close()
        facts: dict = {}
        began = time.monotonic()
        for raw in proc.stdout:
            line = nodes_mod.parse_fields(raw.decode(errors="replace"))
            if "pid" in line:
                facts["pid"] = line["pid"]
                _set_node(project, job_id, n.name, pid=line["pid"])
            if "progress" in line:
                with progress_lock:
                    say(f"  {n.name}: setup running ({core.duration(time.monotonic() - began)}): "
                        f"{remote.unb64(line['progress']).strip()[:120]}")
            facts.update({k: v for k, v in line.items() if k != "progress"})
        err = proc.stderr.read()
        code = proc.wait()
        if code == nodes_mod.SSH_LOST or code < 0:
            facts["lost"] = nodes_mod.last_line(err) or "ssh failed"
        elif "pid" not in facts:
            facts["error"] = facts.get("error") or nodes_mod.last_line(err) or f"exit {code}"
        return facts
    try:
        started = core.parallel(targets, start)
    except KeyboardInterrupt:
        _mark(project, job_id, "started")
        say(f"Stopped waiting; job {job_id} goes on: scripts/kcloud job status {job_id}")
        say(job_id)
        return 130
    for n, f in started:        # a connection lost before the pid came back: ask whether it started
        if isinstance(f, dict) and "pid" not in f and f.get("lost"):
            try:
                facts = core.query(project, [records.load(project, job_id)])[job_id]
                mine = next(s for s in facts if s.name == n.name)
                if mine.state in records.RUNNING_STATES or mine.state in records.ENDED_STATES:
                    f["pid"] = "?"
            except (KcloudError, StopIteration):
                pass
    not_started = [(n, f) for n, f in started if isinstance(f, Exception) or "pid" not in f]
    if not_started:
        ran = [n.name for n, f in started if not isinstance(f, Exception) and "pid" in f]
        if ran:
            core.cancel(project, records.load(project, job_id), grace=5)
        n, f = not_started[0]
        why = f.line() if isinstance(f, KcloudError) else str(f) if isinstance(f, Exception) else \
            f.get("lost") or f.get("error")
        raise fail(f"could not start on {n.name}: {why}" + (f"; stopped it on {', '.join(ran)}" if ran else ""))
    _mark(project, job_id, "started")

    lost = [(n, f["lost"]) for n, f in started if f.get("lost")]
    failed = [(n, f) for n, f in started if f.get("setup_exit") not in (None, "0") and not f.get("cancelled")]
    if failed:
        others = [n.name for n, f in started if (n, f) not in failed]
        if others:
            core.cancel(project, records.load(project, job_id), grace=5)
        core.query(project, [records.load(project, job_id)])          # records the final status
        core.set_final_status(project, job_id, "failed")              # not "cancelled": the setup failed
        for n, f in failed:
            say(f"--- {n.name}: setup exited {f['setup_exit']}; the end of its output:")
            for line in remote.unb64(f.get("tail", "")).rstrip("\n").splitlines()[-20:]:
                say(f"  {line}")

        def dropped(rec):
            if rec.get("after"):
                rec["after"] = {"state": "dropped", "note": "the setup failed: the machines are kept"}
        records.update(project, job_id, dropped)
        say(job_id)
        n, f = failed[0]
        raise KcloudError(f"job {job_id} failed: setup exited {f['setup_exit']} on {n.name}"
                          + (f" (stopped on {', '.join(others)})" if others else "")
                          + "; the machines are untouched" + (" (no destroy: the job never ran)" if then else ""),
                          hint="fix the setup and submit again; scripts/kcloud job status " + job_id)
    rec = records.load(project, job_id)
    for n, f in started:
        done = ", cancelled during its setup" if f.get("cancelled") else ", setup done" if args.setup else ""
        say(f"  {n.name}: rank {_rank(rec, n.name)}, pid {f['pid']}" + ("" if f.get("lost") else done))
    for n, why in lost:
        say(f"  {n.name}: lost the connection while waiting for the setup ({why}); the job goes on there")
    if then:
        from kcloud.launch import watchdog
        pid = watchdog.ensure_running(project.root, project.state_dir)
        dest = core.default_destination(project, job_id)
        say(f"Then destroy ({then_why}): when the job ends, the watchdog (pid {pid}) fetches "
            f"{', '.join(artifacts) if artifacts else 'its logs'} to {dest}, then destroys the machines "
            "-- this terminal may close")
    if any(isinstance(f, dict) and f.get("cancelled") for _n, f in started):
        say(f"Job {job_id} was cancelled during its setup: scripts/kcloud job status {job_id}")
    else:
        say(f"Job {job_id} is running: scripts/kcloud job logs {job_id} -f  |  job status {job_id}  |  "
            f"job cancel {job_id}")
    say(job_id)
    return 0


def _me() -> dict:
    """Who submits: enough to tell later whether that process is still at it."""
    import socket
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _proc_start(os.getpid())}


def _proc_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _previous_job(project, job_id: str, directory: str, nodes: list[dict], name: str) -> str | None:
    """The latest other job of the same directory that ran on this very machine (instance id)."""
    mine = next((n for n in nodes if n["name"] == name), {})
    recs, _notes = records.all_records(project)
    for rec in reversed(recs):
        if rec["id"] == job_id or rec.get("dir") != directory or rec.get("state") == "not started":
            continue
        node = next((n for n in rec["nodes"] if n["name"] == name), None)
        if node and node.get("instance_id") and node.get("instance_id") == mine.get("instance_id"):
            return rec["id"]
    return None


def _heartbeat() -> float:
    try:
        return max(0.2, float(os.environ.get("KCLOUD_JOB_HEARTBEAT_S", "30")))
    except ValueError:
        return 30.0


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "\u2026"


def _nodes_text(targets) -> str:
    if len(targets) == 1:
        return targets[0].name
    return f"{len(targets)} nodes ({targets[0].name} .. {targets[-1].name})"


def _rank(record: dict, name: str) -> int:
    return next((n["rank"] for n in record["nodes"] if n["name"] == name), 0)


def _set_node(project, job_id: str, name: str, **fields) -> None:
    def change(rec):
        for node in rec["nodes"]:
            if node["name"] == name:
                node.update(fields)
    records.update(project, job_id, change)


def _mark(project, job_id: str, state: str) -> None:
    def change(rec):
        rec["state"] = state
    records.update(project, job_id, change)


def _pending_destroys(project, except_id: str) -> list[str]:
    from kcloud.jobs import after
    return [r["id"] for r in after.pending(project) if r["id"] != except_id]


# -- list / status -----------------------------------------------------------------------------
def _json_out(args) -> bool:
    return getattr(args, "output", "text") == "json"


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def cmd_list(args) -> int:
    project = _project()
    jobs, notes = records.all_records(project)
    for line in notes:
        note(line)
    _rearm(project)
    if not jobs:
        if _json_out(args):
            say("[]")
        else:
            say(f"No jobs in {project.root} (scripts/kcloud job submit -- COMMAND starts one).")
        return 0
    live = core.query(project, jobs)
    rows = []
    for rec in jobs:
        statuses = live.get(rec["id"], [])
        status = _status_text(rec, statuses)
        runtime = max((s.runtime() for s in statuses), default=0.0)
        rows.append({"id": rec["id"], "status": status, "nodes": len(rec["nodes"]), "submitted": rec["created"],
                     "runtime_s": round(runtime, 1), "command": rec["command"], "then": rec.get("then", "")})
    if _json_out(args):
        import json
        say(json.dumps(rows, indent=2))
        return 0
    say(f"{'ID':9} {'STATUS':22} {'NODES':>5} {'SUBMITTED':16} {'RUNTIME':>8}  COMMAND")
    for r in rows:
        say(f"{r['id']:9} {r['status'][:22]:22} {r['nodes']:>5} {_when(r['submitted']):16} "
            f"{core.duration(r['runtime_s']):>8}  {_short(r['command'], 50)}"
            + ("  [then destroy]" if r["then"] == "destroy" else ""))
    return 0


def _status_text(rec: dict, statuses: list) -> str:
    if rec.get("state") == "not started":
        return "not started"
    if rec.get("state") == "submitting" and not rec.get("final"):
        if any(s.state in records.RUNNING_STATES for s in statuses):
            return "running"
        return "submitting"
    status = (rec.get("final") or {}).get("status") or core.job_status(statuses)
    failed = [s for s in statuses if s.state == "failed"]
    if status == "failed" and failed:
        s = failed[0]
        status += f" ({'setup exit ' + str(s.setup_exit) if s.in_setup else 'exit ' + str(s.exit)})"
    elif status == "succeeded":
        status += " (exit 0)"
    return status


def cmd_status(args) -> int:
    project = _project()
    rec = records.resolve(project, args.id)
    _rearm(project)
    statuses = core.query(project, [rec])[rec["id"]]
    rec = records.load(project, rec["id"])
    status = _status_text(rec, statuses)
    spent, rate = core.cost(rec, statuses)
    runtime = max((s.runtime() for s in statuses), default=0.0)
    unreachable = [s for s in statuses if s.state == "unreachable"]
    if _json_out(args):
        import json
        say(json.dumps({"id": rec["id"], "status": status, "command": rec["command"], "dir": rec.get("dir"),
                        "artifacts": rec.get("artifacts", []), "then": rec.get("then", ""),
                        "after": rec.get("after"), "runtime_s": round(runtime, 1),
                        "cost_so_far": spent, "price_per_hour": rate,
                        "nodes": [s.public() for s in statuses]}, indent=2))
        return 1 if unreachable else 0
    money = f", cost {'so far ' if status in ('running', 'setting up') else ''}{_usd(spent)} " \
            f"(${rate:.2f}/h, the launch price)" if spent is not None else ", cost unknown (no launch price recorded)"
    say(f"Job {rec['id']}: {status}, runtime {core.duration(runtime)}{money}")
    say(f"  command:   {rec['command']}")
    if rec.get("setup"):
        say(f"  setup:     {rec['setup']}")
    say(f"  directory: {rec.get('dir', '?')} -> ~/{remote.BASE}/{rec['id']}/work on "
        f"{len(rec['nodes'])} node{'s' if len(rec['nodes']) > 1 else ''}")
    say(f"  submitted: {_when(rec['created'])}")
    if rec.get("artifacts"):
        say(f"  artifacts: {' '.join(rec['artifacts'])}")
    after = rec.get("after") or {}
    if rec.get("then") == "destroy":
        say(f"  then:      destroy: {_after_text(project, rec)}")
        for line in after.get("notes") or []:
            say(f"             {line}")
    if rec.get("error"):
        say(f"  error:     {rec['error']}")
    say(f"  {'NODE':24} {'RANK':>4}  {'STATUS':12} {'EXIT':>5} {'RUNTIME':>8}  NOTE")
    for s in statuses:
        exit_text = "-" if s.exit is None else str(s.exit)
        say(f"  {s.name[:24]:24} {s.rank:>4}  {s.state:12} {exit_text:>5} {core.duration(s.runtime()):>8}  {s.why}")
    for s in statuses:
        if s.tail.strip() and s.state == "failed":
            which = "setup" if s.in_setup else "command"
            say(f"--- {s.name}: the end of the {which}'s output:")
            for line in s.tail.rstrip("\n").splitlines()[-15:]:
                say(f"  {line}")
    if unreachable:
        raise KcloudError(f"{len(unreachable)} node(s) did not answer: {unreachable[0].why}")
    return 0


def _usd(amount: float) -> str:
    return "< $0.01" if 0 < amount < 0.005 else f"${amount:.2f}"


def _after_text(project, rec: dict) -> str:
    after = rec.get("after") or {}
    state = after.get("state", "pending")
    from kcloud.jobs import after as after_mod
    if state not in after_mod.DONE and rec["id"] not in {r["id"] for r in after_mod.pending(project)}:
        return "nothing left to do: the machines were destroyed (or replaced) before the job ended"
    if state == "pending":
        from kcloud.launch import watchdog
        pid = watchdog.running_pid(project.state_dir)
        return "when the job ends, the watchdog fetches the artifacts, then destroys " + \
            (f"(watchdog running, pid {pid})" if pid else "(watchdog NOT running: any job command restarts it)")
    where = after.get("fetched_to")
    if state == "done":
        return (f"done: fetched to {where}, then " if where else "done: ") + "the machines were destroyed"
    if state == "fetched":
        return f"fetched to {where}; the machines go once every --then destroy job has ended"
    if state == "destroying":
        return f"fetched to {where}; the watchdog is destroying the machines"
    text = state + (f": {after['note']}" if after.get("note") else "")
    return text


def _rearm(project) -> None:
    """A --then destroy still pending needs the watchdog: restart it if it died (a reboot)."""
    from kcloud.jobs import after
    if after.pending(project):
        from kcloud.launch import watchdog
        if not watchdog.running_pid(project.state_dir):
            pid = watchdog.ensure_running(project.root, project.state_dir)
            note(f"note: restarted the watchdog (pid {pid}) for a pending --then destroy")


# -- logs --------------------------------------------------------------------------------------
def _pick_nodes(rec: dict, which: str | None) -> list[dict]:
    if which is None or which == "all":
        return rec["nodes"]
    for node in rec["nodes"]:
        if which == node["name"] or (which.isdigit() and int(which) == node["rank"]):
            return [node]
    raise ConfigError(f"job {rec['id']} has no node {which!r}",
                      hint="nodes: " + ", ".join(f"{n['name']} (rank {n['rank']})" for n in rec["nodes"]))


def cmd_logs(args) -> int:
    project = _project()
    rec = records.resolve(project, args.id)
    chosen = _pick_nodes(rec, args.node)
    which = "setup" if args.setup else "output"
    here = core.current_nodes(project)
    now = core.machines(project) if here else {}
    prefix = len(chosen) > 1
    out = sys.stdout.buffer
    lock = threading.Lock()

    def emit(name: str, data: bytes, partial: dict) -> None:
        with lock:
            if not prefix:
                out.write(data)
                out.flush()
                return
            buf = partial.get(name, b"") + data
            *lines, rest = buf.split(b"\n")
            for line in lines:
                out.write(f"[{name}] ".encode() + line + b"\n")
            partial[name] = rest
            out.flush()

    partial: dict[str, bytes] = {}
    errors_seen: list[str] = []
    got_any = {n["name"]: False for n in chosen}

    def one(node: dict) -> None:
        name = node["name"]
        if name not in here or not core.same_machine(node, now):
            local = core.local_log(project, rec["id"], name, which)
            if local.is_file():
                with open(local, "rb") as f:
                    while chunk := f.read(65536):
                        emit(name, chunk, partial)
                return
            errors_seen.append(f"{name} is no longer there and its log was not fetched before")
            return
        proc = subprocess.Popen(nodes_mod.ssh_argv(project, name), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        proc.stdin.write(remote.logs_script(rec["id"], which, args.follow).encode())
        proc.stdin.close()
        while chunk := proc.stdout.read1(65536):
            got_any[name] = True
            emit(name, chunk, partial)
        err = proc.stderr.read()
        code = proc.wait()
        local = core.local_log(project, rec["id"], name, which)
        if (code == nodes_mod.SSH_LOST or code < 0) and not got_any[name] and local.is_file():
            # The node does not answer (being destroyed, say): the copy fetched with the artifacts.
            note(f"note: {name} does not answer ({nodes_mod.last_line(err) or 'ssh failed'}): its log as "
                 f"fetched {_when(local.stat().st_mtime)}")
            with open(local, "rb") as f:
                while chunk := f.read(65536):
                    emit(name, chunk, partial)
        elif code == nodes_mod.SSH_LOST or code < 0:
            errors_seen.append(f"lost the connection to {name} ({nodes_mod.last_line(err) or 'ssh failed'}); "
                               f"job {rec['id']} goes on there: scripts/kcloud job logs {rec['id']} -f resumes")
        elif code == 44:
            errors_seen.append(f"job {rec['id']} is unknown on {name}")
        elif code:
            errors_seen.append(f"{name}: reading the log failed (exit {code}): {nodes_mod.last_line(err)}")
    try:
        results = core.parallel(chosen, one)
    except KeyboardInterrupt:
        return 130
    for name, rest in partial.items():
        if rest:
            out.write(f"[{name}] ".encode() + rest + b"\n")
    out.flush()
    for _node, result in results:
        if isinstance(result, Exception):
            errors_seen.append(str(result))
    if errors_seen:
        raise KcloudError(errors_seen[0] + (f" (and {len(errors_seen) - 1} more)" if len(errors_seen) > 1 else ""))
    return 0


# -- fetch -------------------------------------------------------------------------------------
def cmd_fetch(args) -> int:
    project = _project()
    rec = records.resolve(project, args.id)
    paths = [core.check_relative(p.rstrip("/") or p) for p in args.paths] or rec.get("artifacts") or []
    if not paths:
        raise ConfigError(f"job {rec['id']} declared no artifacts",
                          hint=f"name them: scripts/kcloud job fetch {rec['id']} PATH... (relative to the job's "
                               "directory), or submit with --artifacts PATH")
    dest = Path(os.path.expanduser(args.to)).resolve() if args.to else core.default_destination(project, rec["id"])
    statuses = core.query(project, [rec])[rec["id"]]
    if any(s.state in records.RUNNING_STATES for s in statuses):
        say(f"Job {rec['id']} is still running: fetching what exists now (fetch again when it ends)")
    results = core.fetch(project, rec, paths, dest, nodes=[n["name"] for n in _pick_nodes(rec, args.node)])
    problems = []
    for r in results:
        if r.paths:
            say(f"{r.node}: {', '.join(r.paths)} -> {r.dest} ({core.human_bytes(r.bytes)} transferred)")
        for m in r.missing:
            problems.append(f"{m!r} does not exist on {r.node} (in ~/{remote.BASE}/{rec['id']}/work)")
        if r.error:
            problems.append(r.error)

    def change(record):
        record["fetched_to"] = str(dest)
    records.update(project, rec["id"], change)
    if problems:
        raise KcloudError(f"job {rec['id']}: " + problems[0] + (f" (and {len(problems) - 1} more)"
                                                                if len(problems) > 1 else ""))
    return 0


# -- cancel ------------------------------------------------------------------------------------
def cmd_cancel(args) -> int:
    project = _project()
    if not args.id:
        raise ConfigError("job cancel needs a job id", hint="scripts/kcloud job list shows them (make job-cancel ID=...)")
    rec = records.resolve(project, args.id)
    if rec.get("final"):
        say(f"Job {rec['id']} already ended ({rec['final'].get('status')}): nothing to cancel")
        return 0
    results = core.cancel(project, rec, args.grace)
    problems = []
    for name, facts in results:
        if isinstance(facts, Exception):
            problems.append(f"{name}: {facts.line() if isinstance(facts, KcloudError) else facts}")
            continue
        state = facts.get("state")
        if state == "cancelled":
            forced = " (killed after the grace period)" if facts.get("forced") == "1" else ""
            say(f"{name}: cancelled, {facts.get('killed', '0')} process(es) stopped{forced}")
            if facts.get("left", "0") != "0":
                problems.append(f"{name}: {facts['left']} process(es) of the job still run")
        elif state == "ended" or "exit" in facts:
            say(f"{name}: had already ended")
        else:
            say(f"{name}: job unknown there")
    statuses = core.query(project, [records.load(project, rec["id"])])[rec["id"]]
    rec = records.load(project, rec["id"])
    say(f"Job {rec['id']}: {_status_text(rec, statuses)}")
    if rec.get("then") == "destroy" and (rec.get("after") or {}).get("state", "pending") == "pending":
        say("  --then destroy applies: the watchdog fetches the artifacts, then destroys the machines")
    if problems:
        raise KcloudError(problems[0])
    return 0


def register(sub) -> None:
    import argparse
    j = sub.add_parser("job", help=HELP, description=HELP)
    js = j.add_subparsers(dest="job_command", required=True, metavar="ACTION")

    s = js.add_parser("submit", help="sync a directory to the nodes, run the setup, start COMMAND detached",
                      description="Sync DIR to every node (rsync, .gitignore and .kcloudignore honoured), run "
                                  "SETUP once per node, start COMMAND detached from the SSH session; the job id "
                                  "is the last line. COMMAND runs in bash on the node, the words joined as ssh "
                                  "joins them: quote $VARIABLES for the node, e.g. -- 'torchrun --nnodes $NNODES "
                                  "--node_rank $NODE_RANK train.py'.")
    s.add_argument("--dir", default=".", help="directory to sync and run in (default: the current one)")
    s.add_argument("--setup", default="", metavar="CMD", help="run once per node before COMMAND "
                   "(e.g. 'python3 -m venv .venv && .venv/bin/pip install -r requirements.txt')")
    s.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="environment of the job (repeatable); --env K passes this computer's value")
    s.add_argument("--artifacts", action="append", default=[], metavar="PATH",
                   help="what `job fetch` and --then destroy bring back, relative to the job's directory (repeatable)")
    s.add_argument("--nodes", choices=["all", "1"], default="all",
                   help="every node (default) or only the first (rank 0, as a single-node job)")
    s.add_argument("--then", choices=["destroy", "keep"], default=None,
                   help="destroy: when the job ends the watchdog fetches the artifacts, then destroys the machines "
                        "(default from CONFIG_KCLOUD_DESTROY_AFTER_JOB); keep: not this time")
    s.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND...")
    s.set_defaults(func=cmd_submit)

    ls = js.add_parser("list", help="this directory's jobs with their status")
    ls.add_argument("--output", choices=["text", "json"], default="text")
    ls.set_defaults(func=cmd_list)

    st = js.add_parser("status", help="a job's status per node, exit codes, runtime and cost so far")
    st.add_argument("id", nargs="?", help="job id or a unique prefix (default: the latest job)")
    st.add_argument("--output", choices=["text", "json"], default="text")
    st.set_defaults(func=cmd_status)

    lg = js.add_parser("logs", help="a job's output; -f follows it until the job ends")
    lg.add_argument("id", nargs="?", help="job id or a unique prefix (default: the latest job)")
    lg.add_argument("-f", "--follow", action="store_true", help="stream while the job runs; ends when it ends")
    lg.add_argument("--node", help="one node: its name or rank (default: every node, lines prefixed)")
    lg.add_argument("--setup", action="store_true", help="the setup's output instead of the command's")
    lg.set_defaults(func=cmd_logs)

    fe = js.add_parser("fetch", help="bring a job's artifacts back with rsync (resumable)")
    fe.add_argument("id", nargs="?", help="job id or a unique prefix (default: the latest job)")
    fe.add_argument("paths", nargs="*", metavar="PATH", help="paths relative to the job's directory "
                    "(default: the job's --artifacts)")
    fe.add_argument("--to", help="destination directory (default: artifacts/<id>; several nodes: one "
                    "subdirectory each)")
    fe.add_argument("--node", help="one node: its name or rank (default: every node)")
    fe.set_defaults(func=cmd_fetch)

    ca = js.add_parser("cancel", help="stop a job's whole process tree on every node")
    ca.add_argument("id", nargs="?", help="job id or a unique prefix")
    ca.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                    help="time between TERM and KILL (default 10)")
    ca.set_defaults(func=cmd_cancel)
