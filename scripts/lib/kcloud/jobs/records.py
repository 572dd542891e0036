"""Local job records: `.kcloud/jobs/<id>.json`, one per job, written atomically.

A record is written before the first remote side effect of a submit (as the journal is before
a launch), so a job that started is never unknown here. Read-modify-write happens under
`.kcloud/jobs/.lock` (submit, status, cancel and the watchdog may update one record at once).
A damaged record (not JSON, foreign fields, a link planted in its place) is named and skipped,
never a traceback; one that does not name itself by its file name is damaged too.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import time
from contextlib import contextmanager
from pathlib import Path

from kcloud.errors import ConfigError

ID_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"     # no 0/o, 1/l/i: read aloud and typed back
ID_LENGTH = 8
ID = re.compile(r"[a-z0-9]{%d}" % ID_LENGTH)
ID_PREFIX = re.compile(r"[a-z0-9]{1,%d}" % ID_LENGTH)
MIN_PREFIX = 3

# Per node; the job's status is derived from its nodes' (see summarize).
RUNNING_STATES = ("starting", "setup", "running")
ENDED_STATES = ("succeeded", "failed", "cancelled", "lost")


def jobs_dir(project) -> Path:
    return project.state_dir / "jobs"


def path_of(project, job_id: str) -> Path:
    if not ID.fullmatch(job_id):
        raise ConfigError(f"invalid job id {job_id[:20]!r}")
    return jobs_dir(project) / f"{job_id}.json"


def new_id(project) -> str:
    for _ in range(100):
        job_id = "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))
        if not os.path.lexists(path_of(project, job_id)):
            return job_id
    raise ConfigError("could not find a free job id")      # 31^8 ids: not reached


@contextmanager
def locked(project):
    """Exclusive lock for read-modify-write of records (never through a planted link)."""
    from kcloud import fsutil
    if project.state_dir.is_symlink():
        raise ConfigError(f"{project.state_dir} is a symbolic link; refusing to keep kcloud state through it",
                          hint=f"remove it (rm {project.state_dir})")
    d = jobs_dir(project)
    if d.is_symlink():
        raise ConfigError(f"{d} is a symbolic link; refusing to keep job records through it", hint=f"remove it (rm {d})")
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    with fsutil.locked(d / ".lock"):
        yield


def save(project, record: dict) -> None:
    from kcloud.fsutil import atomic_write
    record["updated"] = round(time.time(), 3)
    atomic_write(path_of(project, record["id"]), json.dumps(record, indent=1, sort_keys=True) + "\n", 0o600)


class Damaged(Exception):
    pass


_FIELDS = {"id": str, "created": (int, float), "command": str, "nodes": list}


def _read(path: Path) -> dict:
    from kcloud import fsutil
    try:
        fd = fsutil.open_nofollow(path, os.O_RDONLY)
    except ConfigError:
        raise Damaged("a link or not a regular file") from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(4 * 1024 * 1024 + 1)
    if len(raw) > 4 * 1024 * 1024:
        raise Damaged("larger than 4 MB")
    try:
        record = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Damaged(f"not JSON: {str(exc)[:60]}") from None
    if not isinstance(record, dict):
        raise Damaged("not a JSON object")
    for key, kind in _FIELDS.items():
        if not isinstance(record.get(key), kind) or isinstance(record.get(key), bool):
            raise Damaged(f"field {key!r} missing or of the wrong type")
    if record["id"] != path.name[:-len(".json")]:
        raise Damaged(f"it names another job ({record['id'][:20]!r})")
    for node in record["nodes"]:
        if not isinstance(node, dict) or not isinstance(node.get("name"), str) or \
                not isinstance(node.get("rank"), int):
            raise Damaged("a node entry is not {name, rank}")
    return record


def load(project, job_id: str) -> dict:
    path = path_of(project, job_id)
    try:
        return _read(path)
    except FileNotFoundError:
        raise ConfigError(f"no job {job_id} in {project.root}",
                          hint="scripts/kcloud job list shows this directory's jobs") from None
    except Damaged as exc:
        raise ConfigError(f"the record of job {job_id} is damaged ({path}: {exc})",
                          hint="remove it if the job no longer matters") from None


def all_records(project) -> tuple[list[dict], list[str]]:
    """Every readable record, oldest first; second: one note per damaged or foreign file."""
    d = jobs_dir(project)
    out, notes = [], []
    try:
        names = sorted(os.listdir(d))
    except (FileNotFoundError, NotADirectoryError):
        return [], []
    for name in names:
        if name.startswith("."):
            continue                            # the lock; atomic_write's temporary files
        path = d / name
        if not name.endswith(".json"):
            if not path.is_dir():
                notes.append(f"ignored {path} (not a job record)")
            continue
        if not ID.fullmatch(name[:-len(".json")]):
            notes.append(f"ignored {path} (not a job record)")
            continue
        try:
            out.append(_read(path))
        except Damaged as exc:
            notes.append(f"ignored {path} (damaged: {exc})")
        except OSError as exc:
            notes.append(f"ignored {path} ({exc.strerror or exc})")
    out.sort(key=lambda r: r.get("created", 0))
    return out, notes


def resolve(project, text: str | None) -> dict:
    """The record `text` names: a full id, or a unique prefix of at least 3 characters; with
    no text, the latest job of the directory."""
    records, notes = all_records(project)
    if text is None or text == "":
        if not records:
            raise ConfigError(f"no jobs in {project.root}" + (f" ({notes[0]})" if notes else ""),
                              hint="submit one with scripts/kcloud job submit -- COMMAND (make job-submit CMD=...)")
        return records[-1]
    if not ID_PREFIX.fullmatch(text):
        raise ConfigError(f"{text[:40]!r} is not a job id (job ids are {ID_LENGTH} letters and digits)",
                          hint="scripts/kcloud job list shows this directory's jobs")
    if ID.fullmatch(text):
        return load(project, text)
    matches = [r for r in records if r["id"].startswith(text)] if len(text) >= MIN_PREFIX else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"job id prefix {text!r} is ambiguous: {', '.join(r['id'] for r in matches)}")
    raise ConfigError(f"no job {text} in {project.root}", hint="scripts/kcloud job list shows this directory's jobs")


def update(project, job_id: str, change) -> dict:
    """Locked read-modify-write: change(record) edits it in place; returns the saved record."""
    with locked(project):
        record = load(project, job_id)
        change(record)
        save(project, record)
        return record


def summarize(states: list[str]) -> str:
    """The job's status from its nodes': running while any node runs; cancelled, failed or
    succeeded once all ended; unknown when a node cannot say and none runs."""
    if any(s in RUNNING_STATES for s in states):
        return "setting up" if all(s in ("starting", "setup") or s in ENDED_STATES for s in states) and \
            "setup" in states else "running"
    if states and all(s in ENDED_STATES for s in states):
        if "cancelled" in states:
            return "cancelled"
        if any(s in ("failed", "lost") for s in states):
            return "failed"
        return "succeeded"
    return "unknown"
