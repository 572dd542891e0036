"""A market: free capacity that changes with emulator time (a provider's `market` scenario key).

Emulator time is the number of seconds since the emulator started (or was
reset), times the scenario's `clock.time_scale`. Two things change a
provider's capacity counts on that clock, as events applied in time order:

- `schedule`: at time `at`, every (type, region) cell the entry names gets
  exactly `machines` free.
- `random`: per window spec and per cell it names, windows of capacity open
  after exponential gaps (mean `mean_gap_s`, measured from the previous
  window's close; the first from time 0) and stay open for a uniform random
  time in `open_s`. Opening sets the cell to `machines` free, closing sets it
  to 0; between windows it has 0 (whatever the capacity rules said). With
  `competitors`, every machine a window brings, and every machine given back
  to such a cell by a terminated instance, is taken by a competitor after an
  exponential delay (mean `mean_delay_s`) unless it is gone by then.

`Market` itself knows no real time: `advance(now)` applies every event due by
`now`, so it runs as well on a virtual clock. All random draws come from
streams seeded by (seed, provider, window spec, type, region) and are made in
a fixed order, so a seed gives the same windows and competitor delays whatever
the clients do; only whether a competitor still finds a free machine depends
on them.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import re
from typing import Any, Callable

from .capacity import Capacity

MARKET_KEYS = {"schedule", "random"}
SCHEDULE_KEYS = {"at", "type", "region", "machines"}
RANDOM_KEYS = {"seed", "windows", "competitors"}
WINDOW_KEYS = {"type", "region", "mean_gap_s", "open_s", "machines"}
COMPETITOR_KEYS = {"mean_delay_s"}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any, where: str) -> float:
    """`30s`, `2m`, `1h`, `1.5m`, or a number of seconds (>= 0) -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and value >= 0:
            return float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match[1]) * _UNIT[match[2]]
    raise ValueError(f"{where} must be a duration such as 30s, 2m, 1h or a number of seconds >= 0, not {value!r}")


def _positive(value: Any, where: str) -> float:
    seconds = parse_duration(value, where)
    if seconds <= 0:
        raise ValueError(f"{where} must be > 0, not {value!r}")
    return seconds


def _machines(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{where} must be an integer >= 0, not {value!r}")
    return value


def _mapping(value: Any, keys: set, required: set, where: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, not {value!r}")
    unknown = set(value) - keys
    if unknown:
        raise ValueError(f"unknown key {where}.{sorted(unknown)[0]}")
    missing = required - set(value)
    if missing:
        raise ValueError(f"{where} needs {', '.join(sorted(missing))}: {value!r}")
    return value


def parse_market(spec: Any) -> dict:
    """Validate one provider's `market` section; returns it normalized (durations in seconds)."""
    spec = _mapping({} if spec is None else spec, MARKET_KEYS, set(), "market")
    schedule = spec.get("schedule") or []
    if not isinstance(schedule, list):
        raise ValueError("market.schedule must be a list")
    out: dict = {"schedule": [], "random": None}
    for i, entry in enumerate(schedule):
        where = f"market.schedule[{i}]"
        entry = _mapping(entry, SCHEDULE_KEYS, SCHEDULE_KEYS, where)
        out["schedule"].append(
            {
                "at": parse_duration(entry["at"], f"{where}.at"),
                "type": str(entry["type"]),
                "region": str(entry["region"]),
                "machines": _machines(entry["machines"], f"{where}.machines"),
            }
        )
    rnd = spec.get("random")
    if rnd is None:
        return out
    rnd = _mapping(rnd, RANDOM_KEYS, set(), "market.random")
    seed = rnd.get("seed", 0)
    if not isinstance(seed, (int, str)) or isinstance(seed, bool):
        raise ValueError(f"market.random.seed must be an integer or a string, not {seed!r}")
    windows = rnd.get("windows") or []
    if not isinstance(windows, list):
        raise ValueError("market.random.windows must be a list")
    parsed = []
    for i, window in enumerate(windows):
        where = f"market.random.windows[{i}]"
        window = _mapping(window, WINDOW_KEYS, WINDOW_KEYS, where)
        open_s = window["open_s"]
        if not isinstance(open_s, list) or len(open_s) != 2:
            raise ValueError(f"{where}.open_s must be [shortest, longest], not {open_s!r}")
        low, high = (parse_duration(v, f"{where}.open_s") for v in open_s)
        if low > high or high <= 0:
            raise ValueError(f"{where}.open_s must be [shortest, longest] with shortest <= longest, longest > 0")
        parsed.append(
            {
                "type": str(window["type"]),
                "region": str(window["region"]),
                "mean_gap_s": _positive(window["mean_gap_s"], f"{where}.mean_gap_s"),
                "open_s": [low, high],
                "machines": _machines(window["machines"], f"{where}.machines"),
            }
        )
    competitors = rnd.get("competitors")
    if competitors is not None:
        competitors = _mapping(competitors, COMPETITOR_KEYS, COMPETITOR_KEYS, "market.random.competitors")
        competitors = {"mean_delay_s": _positive(competitors["mean_delay_s"], "market.random.competitors.mean_delay_s")}
    out["random"] = {"seed": seed, "windows": parsed, "competitors": competitors}
    return out


class Market:
    """One provider's market events, applied to its Capacity by `advance(now)` (emulator seconds).

    Not locked itself: the emulator state's lock guards it with the capacity.
    """

    def __init__(self, provider: str, spec: dict, capacity: Capacity) -> None:
        """`spec` as returned by `parse_market`; raises ValueError for a glob that names nothing."""
        self.capacity = capacity
        self.now = 0.0
        self._queue: list = []  # (time, seq, handler, args)
        self._seq = itertools.count()
        for i, entry in enumerate(spec["schedule"]):
            cells = capacity.cells(entry["type"], entry["region"], f"market.schedule[{i}]")
            self._push(entry["at"], self._scheduled, entry["machines"], cells)
        rnd = spec["random"]
        self.competitors = rnd["competitors"] if rnd else None
        self._returns: dict[tuple[str, str], random.Random] = {}  # competitor delays for given-back machines
        for i, window in enumerate(rnd["windows"] if rnd else []):
            for cell in capacity.cells(window["type"], window["region"], f"market.random.windows[{i}]"):
                key = f"{rnd['seed']}/{provider}/{i}/{cell[0]}/{cell[1]}"
                gaps, rivals = random.Random(key + "/windows"), random.Random(key + "/competitors")
                capacity.set(cell, 0)
                self._returns.setdefault(cell, random.Random(f"{rnd['seed']}/{provider}/returns/{cell[0]}/{cell[1]}"))
                self._push(gaps.expovariate(1 / window["mean_gap_s"]), self._open, cell, window, gaps, rivals)

    def _push(self, at: float, handler: Callable, *args: Any) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), handler, args))

    def advance(self, now: float) -> list[dict]:
        """Apply every event due by `now`, in time order; returns what happened (see `_event`)."""
        events: list[dict] = []
        while self._queue and self._queue[0][0] <= now:
            at, _, handler, args = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            events.extend(handler(at, *args))
        self.now = max(self.now, now)
        return events

    def returned(self, type_name: str, region: str) -> None:
        """A terminated instance gave a machine back: in a random-market cell a competitor goes for it."""
        rng = self._returns.get((type_name, region))
        if rng is not None and self.competitors:
            delay = rng.expovariate(1 / self.competitors["mean_delay_s"])
            self._push(self.now + delay, self._compete, (type_name, region))

    def _event(self, at: float, kind: str, cell: tuple[str, str], **extra: Any) -> dict:
        free = self.capacity.count(*cell)
        return {"t": round(at, 3), "kind": kind, "type": cell[0], "region": cell[1], "free": free, **extra}

    def _scheduled(self, at: float, machines: int, cells: list) -> list[dict]:
        for cell in cells:
            self.capacity.set(cell, machines)
        return [self._event(at, "schedule", cell) for cell in cells]

    def _open(self, at: float, cell, window: dict, gaps: random.Random, rivals: random.Random) -> list[dict]:
        low, high = window["open_s"]
        close = at + gaps.uniform(low, high)
        self.capacity.set(cell, window["machines"])
        self._push(close, self._close, cell)
        self._push(close + gaps.expovariate(1 / window["mean_gap_s"]), self._open, cell, window, gaps, rivals)
        if self.competitors:
            for _ in range(window["machines"]):
                self._push(at + rivals.expovariate(1 / self.competitors["mean_delay_s"]), self._compete, cell)
        return [self._event(at, "open", cell, until=round(close, 3))]

    def _close(self, at: float, cell) -> list[dict]:
        self.capacity.set(cell, 0)
        return [self._event(at, "close", cell)]

    def _compete(self, at: float, cell) -> list[dict]:
        took = self.capacity.take(*cell)
        return [self._event(at, "competitor", cell, took=took)]
