"""Per-directory journal of remote side effects, written *before* each one is made.

One JSON object per line, fsynced. `make destroy` and `make bringup` read it to know which
provider and names this directory may have launched, even when terraform state is lost.
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

    def record(self, event: dict) -> None:
        line = json.dumps({"time": round(time.time(), 3), **event}, sort_keys=True)
        with _lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())

    def events(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue   # a line torn by a crash: the rest is still good
        return out

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
