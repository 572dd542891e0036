"""Every kcloud directory on this computer: id -> path, so `make cost --all` and
`make cloud-list-all` can name the directory a tagged resource belongs to, and flag ids whose
directory is gone (a deleted checkout still paying).

`$XDG_STATE_HOME/kcloud/directories.json` (default ~/.local/state/kcloud/), written atomically
under a lock. A damaged file is read as empty (and rewritten on the next record).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

_ID = re.compile(r"^[0-9a-f]{12}$")


def path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "kcloud" / "directories.json"


def load() -> dict[str, str]:
    try:
        data = json.loads(path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and _ID.match(k) and isinstance(v, str)}


def record(project_id: str, root: str | os.PathLike) -> None:
    """Remember that `project_id` is the directory `root` (idempotent)."""
    from kcloud.fsutil import atomic_write, locked
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.with_name(".directories.lock")):
        known = load()
        if known.get(project_id) == str(root):
            return
        known[project_id] = str(root)
        atomic_write(target, json.dumps(known, indent=1, sort_keys=True) + "\n", mode=0o600)


def owner_state(project_id: str | None) -> str:
    """'here' (directory exists and still has this id), 'deleted' (recorded, gone or re-created
    with another id), 'unknown' (never recorded on this computer)."""
    if not project_id:
        return "unknown"
    root = load().get(project_id)
    if root is None:
        return "unknown"
    try:
        current = (Path(root) / ".kcloud" / "id").read_text().strip()
    except OSError:
        return "deleted"
    return "here" if current == project_id else "deleted"
