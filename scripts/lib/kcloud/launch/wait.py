"""Waiting for capacity (issue 8): poll the plan within the provider's limits and launch the
moment any candidate has capacity, still in tier order.

The loop is provider-neutral and clock-neutral: `check()` returns the candidates that have
capacity now (already in plan order), `attempt(candidates)` launches through the normal walk
and returns True, or False when every candidate lost its race (then waiting goes on). The
benchmark drives the same loop on a virtual clock.

Interval policy (`Schedule`): quick while the market moves (a candidate appeared or vanished
since the last poll), slower while nothing moves, never below the provider's floor, and
jittered so that two waiting directories do not poll in lockstep.
"""
from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Callable

from kcloud import errors

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, what: str = "duration") -> float:
    """'30s', '90m', '6h', '2d' or plain seconds -> seconds; '' or '0' -> 0."""
    text = (text or "").strip().lower()
    if not text:
        return 0.0
    m = _DURATION.match(text)
    if not m:
        raise errors.ConfigError(f"{what} '{text}' is not a duration", hint="use e.g. 30s, 90m, 6h or 0")
    return float(m.group(1)) * _UNIT[m.group(2)]


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@dataclass
class Schedule:
    """Adaptive, jittered poll interval. `floor_s` comes from the provider's rate limits (the
    poll shares them with everything else), `ceiling_s` bounds how stale a view can get."""

    floor_s: float = 2.0
    ceiling_s: float = 6.0
    growth: float = 1.25
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    current: float = 0.0

    def next(self, moved: bool) -> float:
        if moved or not self.current:
            self.current = self.floor_s
        else:
            self.current = min(self.ceiling_s, self.current * self.growth)
        return max(self.floor_s * (1 - self.jitter), self.current * (1 + self.rng.uniform(-self.jitter, self.jitter)))


@dataclass
class Seen:
    """What the wait saw of one candidate: how often it appeared and when last."""

    label: str
    appeared: int = 0
    first_at: float | None = None
    last_at: float | None = None


@dataclass
class Outcome:
    launched: bool
    polls: int
    elapsed: float
    seen: dict[str, Seen] = field(default_factory=dict)

    def summary(self) -> str:
        if not self.seen:
            return f"nothing had capacity in {format_duration(self.elapsed)} ({self.polls} polls)"
        parts = [f"{s.label} {s.appeared}x (last at {format_duration(s.last_at or 0)})"
                 for s in sorted(self.seen.values(), key=lambda s: -(s.last_at or 0))]
        return f"in {format_duration(self.elapsed)} ({self.polls} polls) capacity flickered: " + ", ".join(parts[:6])


class WaitTimedOut(errors.KcloudError):
    exit_code = 3

    def __init__(self, outcome: Outcome):
        super().__init__(f"no machine within the wait: {outcome.summary()}",
                         hint="nothing was launched and nothing is left running; wait longer (WAIT=6h) or widen the tier group")
        self.outcome = outcome


def label(c) -> str:
    prov = getattr(c, "provider", "")
    return f"{prov + ':' if prov else ''}{c.instance_type}@{c.region}"


def wait_for_capacity(check: Callable[[], list], attempt: Callable[[list], bool], *, timeout: float,
                      schedule: Schedule | None = None, clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep, say: Callable[[str], None] = print,
                      heartbeat_s: float = 60.0) -> Outcome:
    """Poll until `attempt` launches something or `timeout` seconds pass (then WaitTimedOut).
    A failed poll (5xx, 429, timeout) is one more poll, not the end of the wait."""
    schedule = schedule or Schedule()
    start = clock()
    out = Outcome(False, 0, 0.0)
    previous: set[str] | None = None
    last_beat = start
    while True:
        now = clock()
        out.elapsed = now - start
        try:
            candidates = check()
            failed_poll = False
        except (errors.TransientError, errors.RateLimited) as exc:
            candidates, failed_poll = [], True
            say(f"  poll failed ({exc.line()}); still waiting")
        out.polls += 1
        labels = [label(c) for c in candidates]
        current = set(labels)
        moved = previous is not None and not failed_poll and current != previous
        if not failed_poll:
            for lab in labels:
                if previous is None or lab not in previous:
                    seen = out.seen.setdefault(lab, Seen(lab))
                    seen.appeared += 1
                    seen.first_at = seen.first_at if seen.first_at is not None else out.elapsed
                    seen.last_at = out.elapsed
                    say(f"  {format_duration(out.elapsed)}: capacity for {lab}")
            for lab in sorted((previous or set()) - current):
                say(f"  {format_duration(out.elapsed)}: {lab} sold out again")
            previous = current
        if candidates:
            if attempt(candidates):
                out.launched = True
                out.elapsed = clock() - start
                return out
            say(f"  {format_duration(clock() - start)}: lost the race for every candidate; waiting on")
            moved = True
        left = timeout - (clock() - start)
        if left <= 0:
            raise WaitTimedOut(out)
        if clock() - last_beat >= heartbeat_s:
            last_beat = clock()
            closest = max(out.seen.values(), key=lambda s: s.last_at or 0).label if out.seen else "nothing yet"
            say(f"  still waiting: {format_duration(clock() - start)} of {format_duration(timeout)}, "
                f"{out.polls} polls, last seen: {closest}")
        sleep(min(schedule.next(moved), left))
