"""Per-directory journal of remote side effects, written *before* each one is made.

One JSON object per line, fsynced. `make destroy` and `make bringup` read it to know which
provider, names, runs and ids this directory may have launched, even when terraform state is
lost. A damaged journal (torn, non-UTF-8 or foreign lines) never blocks anything: such lines
are skipped and counted in `damaged`, so the caller can say which file it partly ignored.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

_lock = threading.Lock()


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.damaged = 0

    def record(self, event: dict) -> None:
        line = json.dumps({"time": round(time.time(), 3), **event}, sort_keys=True)
        with _lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: a symlink planted at the journal's place is never written through.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
                os.fsync(fd)
            finally:
                os.close(fd)

    def events(self) -> list[dict]:
        self.damaged = 0
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        except OSError:          # a symlink or something unreadable in its place
            self.damaged = 1
            return []
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        out = []
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                event = json.loads(line.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                event = None
            if isinstance(event, dict) and all(isinstance(event.get(k, ""), str)
                                               for k in ("event", "provider", "id", "name", "run", "key_id")):
                out.append(event)
            else:
                self.damaged += 1   # torn by a crash, or not ours: the rest is still good
        return out

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
