"""What every job command shares: the machines behind the nodes, a job's live status on its
nodes, fetching artifacts and logs, cancelling. The CLI (commands.py) and the watchdog's
`--then destroy` (after.py) both call these; none of them prints.
"""
from __future__ import annotations

import concurrent.futures
import os
import posixpath
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from kcloud.errors import ConfigError, KcloudError
from kcloud.jobs import nodes as nodes_mod
from kcloud.jobs import records, remote


def parallel(items, fn):
    """[(item, result or exception)] in the order of `items`; fn runs on up to 16 threads."""
    items = list(items)
    if len(items) <= 1:
        out = []
        for item in items:
            try:
                out.append((item, fn(item)))
            except Exception as exc:    # noqa: BLE001 -- handed back to the caller, who names the node
                out.append((item, exc))
        return out
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(16, len(items))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        out = []
        for item, fut in zip(items, futures):
            try:
                out.append((item, fut.result()))
            except Exception as exc:    # noqa: BLE001
                out.append((item, exc))
        return out


# -- the machines behind the nodes: instance id and launch price (from the journal) ------------
def machines(project) -> dict[str, dict]:
    """{node name: {id, provider, price_per_hour}} of this directory's running instances, as the
    journal records them (the launch price, as `make cost` reads it: kcloud.bringup.cost)."""
    from kcloud.bringup import cost
    from kcloud.launch.journal import Journal
    out = {}
    for bill in cost.bills(Journal(project.journal_path).events()):
        if bill.running and bill.name:
            out[bill.name] = {"id": bill.id, "provider": bill.provider, "price_per_hour": bill.price_per_hour}
    return out


def current_nodes(project) -> dict[str, nodes_mod.Node]:
    """The nodes that can be asked now ({} when nothing is brought up)."""
    try:
        return {n.name: n for n in nodes_mod.read(project)}
    except ConfigError:
        return {}


def same_machine(node: dict, now: dict[str, dict]) -> bool:
    """Is the node of a record still the machine the job ran on? No when the journal names
    another running instance for that node name than the one recorded at submit; without a
    recorded id, or with a journal that does not know the name (damaged), the name decides."""
    recorded = node.get("instance_id")
    current = now.get(node["name"], {}).get("id")
    return not recorded or not current or current == recorded


# -- status ------------------------------------------------------------------------------------
@dataclass
class NodeStatus:
    name: str
    rank: int
    state: str                  # starting setup running succeeded failed cancelled lost unknown unreachable gone
    exit: int | None = None
    setup_exit: int | None = None
    submitted: float | None = None
    started: float | None = None
    ended: float | None = None
    now: float | None = None
    tail: str = ""
    why: str = ""

    @property
    def in_setup(self) -> bool:
        return self.setup_exit not in (None, 0) and self.state == "failed"

    def runtime(self) -> float:
        """Seconds the command has run (node clock)."""
        if self.started is None:
            return 0.0
        return max(0.0, (self.ended if self.ended is not None else (self.now or self.started)) - self.started)

    def occupied(self) -> float:
        """Seconds since submit until the end or now (node clock): what the job cost."""
        start = self.submitted if self.submitted is not None else self.started
        if start is None:
            return 0.0
        return max(0.0, (self.ended if self.ended is not None else (self.now or start)) - start)

    def public(self) -> dict:
        d = {k: v for k, v in self.__dict__.items()}
        d["runtime_s"] = round(self.runtime(), 1)
        return d


def _num(text: str | None, kind=float):
    try:
        return kind(text) if text not in (None, "") else None
    except ValueError:
        return None


def node_status(name: str, rank: int, facts: dict[str, str]) -> NodeStatus:
    state = facts.get("state", "unknown")
    s = NodeStatus(name, rank, state, exit=_num(facts.get("exit"), int), setup_exit=_num(facts.get("setup_exit"), int),
                   submitted=_num(facts.get("submitted")), started=_num(facts.get("started")),
                   ended=_num(facts.get("ended")), now=_num(facts.get("now")), tail=remote.unb64(facts.get("tail", "")))
    if state == "ended":
        if facts.get("cancelled") == "1":
            s.state = "cancelled"
        elif s.exit == 0:
            s.state = "succeeded"
        else:
            s.state = "failed"
            s.why = (f"setup exited {s.setup_exit}" if s.setup_exit not in (None, 0) else f"exit {s.exit}")
    elif state == "lost":
        s.why = "the runner is gone without an exit code (killed, or the machine restarted)"
    elif state == "unknown":
        s.why = "no such job on this node"
    elif state not in records.RUNNING_STATES:
        s.state, s.why = "unknown", f"the node answered {state[:20]!r}"
    return s


def from_final(record: dict) -> list[NodeStatus]:
    final = record.get("final") or {}
    out = []
    for node in record["nodes"]:
        d = (final.get("nodes") or {}).get(node["name"]) or {}
        fields = {k: d.get(k) for k in ("state", "exit", "setup_exit", "submitted", "started", "ended", "now",
                                         "tail", "why")}
        fields = {k: v for k, v in fields.items() if v is not None}
        fields.setdefault("state", "unknown")
        out.append(NodeStatus(node["name"], node["rank"], **fields))
    return out


def query(project, jobs: list[dict]) -> dict[str, list[NodeStatus]]:
    """Live status of each job on each of its nodes: one SSH connection per node, for every job
    not yet known to have ended. Ended jobs answer from their record. A job's final status is
    saved in its record the first time it is seen."""
    out: dict[str, list[NodeStatus]] = {}
    ask: dict[str, list[str]] = {}
    here = current_nodes(project)
    now = machines(project) if here else {}
    for rec in jobs:
        if rec.get("final"):
            out[rec["id"]] = from_final(rec)
            continue
        if rec.get("state") == "not started":
            out[rec["id"]] = [NodeStatus(n["name"], n["rank"], "not started", why=str(rec.get("error", ""))[:200])
                              for n in rec["nodes"]]
            continue
        for node in rec["nodes"]:
            if node["name"] in here and same_machine(node, now):
                ask.setdefault(node["name"], []).append(rec["id"])
    answers: dict[str, dict[str, dict]] = {}
    failures: dict[str, str] = {}

    def one(name: str) -> dict[str, dict]:
        proc = nodes_mod.run(project, name, remote.status_script(ask[name]), timeout=60)
        got = {}
        for line in proc.stdout.decode(errors="replace").splitlines():
            facts = nodes_mod.parse_fields(line)
            if facts.get("id"):
                got[facts["id"]] = facts
        return got
    for name, result in parallel(sorted(ask), one):
        if isinstance(result, Exception):
            failures[name] = result.line() if isinstance(result, KcloudError) else str(result)
        else:
            answers[name] = result
    for rec in jobs:
        if rec.get("final") or rec.get("state") == "not started":
            continue
        statuses = []
        for node in rec["nodes"]:
            name = node["name"]
            if name not in here or not same_machine(node, now):
                statuses.append(NodeStatus(name, node["rank"], "gone", why="the machine is no longer there "
                                           "(destroyed or replaced)"))
            elif name in failures:
                statuses.append(NodeStatus(name, node["rank"], "unreachable", why=failures[name]))
            else:
                statuses.append(node_status(name, node["rank"], answers.get(name, {}).get(rec["id"], {})))
        if rec.get("state") == "submitting" and all(s.state in ("starting", "unknown") for s in statuses) \
                and not submitter_alive(rec):
            for s in statuses:
                s.state, s.why = "not started", "the submit was interrupted before the job started"

            def change(r):
                if r.get("state") == "submitting":
                    r["state"], r["error"] = "not started", "the submit was interrupted before the job started"
            records.update(project, rec["id"], change)
        out[rec["id"]] = statuses
        if all(s.state in records.ENDED_STATES for s in statuses):
            save_final(project, rec["id"], statuses)
    return out


def submitter_alive(rec: dict) -> bool:
    """Is the `job submit` that wrote this record still running (on this computer)? Unknown
    (another computer, no record of it): taken as alive."""
    import socket
    who = rec.get("submitter")
    if not isinstance(who, dict) or who.get("host") != socket.gethostname() or not isinstance(who.get("pid"), int):
        return True
    try:
        with open(f"/proc/{who['pid']}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19] == who.get("start")
    except (OSError, IndexError):
        return False


def save_final(project, job_id: str, statuses: list[NodeStatus]) -> dict:
    status = records.summarize([s.state for s in statuses])

    def change(rec):
        if rec.get("final"):
            return
        rec["final"] = {"status": status, "at": round(time.time(), 3),
                        "nodes": {s.name: {k: v for k, v in s.__dict__.items() if k not in ("name", "rank")}
                                  for s in statuses}}
    return records.update(project, job_id, change)


def set_final_status(project, job_id: str, status: str) -> None:
    def change(rec):
        if rec.get("final"):
            rec["final"]["status"] = status
    records.update(project, job_id, change)


def job_status(statuses: list[NodeStatus]) -> str:
    states = [s.state for s in statuses]
    if any(s in ("unreachable", "gone", "unknown") for s in states) and not any(
            s in records.RUNNING_STATES for s in states):
        return "unknown"
    return records.summarize(states)


def cost(record: dict, statuses: list[NodeStatus]) -> tuple[float | None, float]:
    """(USD the job has cost so far at the launch price, or None when no price is recorded;
    the price per hour of its nodes together)."""
    total, rate, known = 0.0, 0.0, False
    by_name = {s.name: s for s in statuses}
    for node in record["nodes"]:
        price = node.get("price_per_hour")
        s = by_name.get(node["name"])
        if not isinstance(price, (int, float)) or isinstance(price, bool) or price <= 0:
            continue
        known = True
        rate += price
        if s is not None:
            total += price * s.occupied() / 3600
    return (round(total, 4) if known else None), rate


# -- fetch -------------------------------------------------------------------------------------
def default_destination(project, job_id: str) -> Path:
    return project.root / "artifacts" / job_id


def logs_dir(project, job_id: str) -> Path:
    """Where fetched logs are kept: what `job logs` shows once the machine is gone."""
    return records.jobs_dir(project) / job_id


@dataclass
class Fetched:
    node: str
    dest: Path
    paths: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    error: str = ""
    bytes: int = 0


def check_relative(path: str) -> str:
    """An artifact path: relative to the job's work directory on the node, inside it."""
    if not path or "\n" in path or "\0" in path or not path.isprintable():
        raise ConfigError(f"artifact path {path[:60]!r} is empty or has control characters")
    if path.startswith(("/", "~")):
        raise ConfigError(f"artifact path {path!r} must be relative to the job's directory on the node "
                          "(where COMMAND runs), e.g. out/model.bin")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise ConfigError(f"artifact path {path!r} leaves the job's directory")
    return "." if norm == "." else norm


def fetch(project, record: dict, paths: list[str], dest: Path, nodes: list[str] | None = None) -> list[Fetched]:
    """rsync the paths (relative to the job's work directory) from each node into `dest` (one
    node) or `dest/<node>` (several), resumable: a partial file is kept in .kcloud-partial and
    the next fetch continues it; rsync checks every file it moves. The job's logs are copied
    along to the local record's directory. Paths a node lacks are reported, not fatal."""
    here = current_nodes(project)
    if not here:
        raise ConfigError(f"nothing is brought up in {project.root}: job {record['id']}'s machines are gone",
                          hint=f"what was fetched before is in {default_destination(project, record['id'])}")
    now = machines(project)
    targets = [n for n in record["nodes"] if nodes is None or n["name"] in nodes]
    several = len(record["nodes"]) > 1

    def one(node: dict) -> Fetched:
        name = node["name"]
        out = Fetched(name, dest / name if several else dest)
        if name not in here or not same_machine(node, now):
            out.error = f"{name} is no longer there (destroyed or replaced)"
            return out
        proc = nodes_mod.run(project, name, remote.check_paths_script(record["id"], paths), timeout=60)
        for line in proc.stdout.decode(errors="replace").splitlines():
            facts = nodes_mod.parse_fields(line)
            if facts.get("state") == "unknown":
                out.error = f"job {record['id']} is unknown on {name}"
                return out
            if "present" in facts:
                out.paths.append(remote.unb64(facts["present"]))
            elif "missing" in facts:
                out.missing.append(remote.unb64(facts["missing"]))
        _fetch_logs(project, record["id"], name)
        if not out.paths:
            return out
        out.dest.mkdir(parents=True, exist_ok=True)
        base = f"{remote.BASE}/{record['id']}/work/./"
        sources = [f"{name}:{base}{p}" for p in out.paths]
        argv = nodes_mod.rsync_argv(project, "-a", "--no-owner", "--no-group", "--relative", "--partial",
                                    "--partial-dir=.kcloud-partial",
                                    "--stats", "--", *sources, str(out.dest) + "/")
        proc = subprocess.run(argv, capture_output=True, timeout=None, stdin=subprocess.DEVNULL)
        if proc.returncode:
            out.error = _rsync_error(name, proc)
        out.bytes = _stat(proc.stdout, "Literal data")          # what crossed the wire (a resume: the rest)
        return out
    results = []
    for node, result in parallel(targets, one):
        if isinstance(result, Exception):
            results.append(Fetched(node["name"], dest, error=result.line() if isinstance(result, KcloudError)
                                   else str(result)))
        else:
            results.append(result)
    return results


def _fetch_logs(project, job_id: str, node: str) -> None:
    """Copy output.log and setup.log of the job on `node` next to its local record (best effort)."""
    local = logs_dir(project, job_id) / node
    local.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = f"{remote.BASE}/{job_id}/"
    argv = nodes_mod.rsync_argv(project, "-a", "--no-owner", "--no-group", "--ignore-missing-args", "--partial", "--",
                                f"{node}:{base}output.log", f"{node}:{base}setup.log", str(local) + "/")
    subprocess.run(argv, capture_output=True, timeout=600, stdin=subprocess.DEVNULL)


def _rsync_error(node: str, proc) -> str:
    if proc.returncode in (255, 12) or proc.returncode < 0 or b"connection unexpectedly closed" in proc.stderr:
        return f"lost the connection to {node} during the transfer (run the same fetch again: it resumes)"
    return f"rsync from {node} failed (exit {proc.returncode}): {nodes_mod.last_line(proc.stderr)}"


def _stat(out: bytes, label: str) -> int:
    for line in out.decode(errors="replace").splitlines():
        if line.startswith(label + ":"):
            digits = "".join(ch for ch in line.split(":", 1)[1].split("bytes")[0] if ch.isdigit())
            return int(digits) if digits else 0
    return 0


# -- cancel ------------------------------------------------------------------------------------
def cancel(project, record: dict, grace: float) -> list[tuple[str, dict | Exception]]:
    here = current_nodes(project)
    now = machines(project) if here else {}
    todo = [n for n in record["nodes"] if n["name"] in here and same_machine(n, now)]

    def one(node: dict) -> dict:
        proc = nodes_mod.run(project, node["name"], remote.cancel_script(record["id"], grace),
                             timeout=grace + 60)
        lines = [nodes_mod.parse_fields(l) for l in proc.stdout.decode(errors="replace").splitlines()]
        facts = next((f for f in reversed(lines) if "state" in f), {})
        if not facts:
            raise KcloudError(f"{node['name']}: cancel did not answer ({nodes_mod.last_line(proc.stderr)})")
        return facts
    gone = [(n["name"], ConfigError(f"{n['name']} is no longer there")) for n in record["nodes"] if n not in todo]
    return [(node["name"], result) for node, result in parallel(todo, one)] + gone


def remove_remote(project, job_id: str, names: list[str]) -> None:
    """Best effort: remove a job that never started from these nodes."""
    script = remote.PROLOGUE.format(base=remote.BASE, id=job_id) + 'rm -rf -- "$J"\n'
    parallel(names, lambda n: nodes_mod.run(project, n, script, timeout=30))


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def local_log(project, job_id: str, node: str, which: str = "output") -> Path:
    return logs_dir(project, job_id) / node / f"{which}.log"


def env_name_ok(name: str) -> bool:
    import re
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", name))


def getenv(name: str) -> str | None:
    return os.environ.get(name)
