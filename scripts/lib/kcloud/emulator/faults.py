"""Scheduled misbehaviour (faults) and provider rate limits.

A fault matches requests by method and a glob on the path below the API base
(`/instance-operations/launch`, `/instances/*`); it fires on the `nth` matching
request that reaches it and the `times - 1` after it (`times: 0` = every one
from `nth` on). Faults are checked in schedule order, and one that answers in
the API's place (error, status, disconnect, reset) hides that request from
the faults after it: "three 429s, then a malformed body on the 1st
/instance-types" means the first answer that is not a 429.

Timing and connection faults differ in whether the request is carried out:
`delay_ms` waits *before* the API acts, `late_ms` and `disconnect_after` act
first and then hold or drop the answer (a launch that created the machine but
whose answer the client never saw), `disconnect` and `reset` drop the
connection instead of acting.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Any

from .capacity import check_rule

# Provider-neutral error names; each provider module renders them in its own
# envelope, status code and error code.
ERROR_KINDS = (
    "invalid",
    "not-found",
    "unauthorized",
    "forbidden",
    "insufficient-capacity",
    "quota",
    "internal",
    "unavailable",
    "rate-limited",
    "conflict",
)
MALFORMED = ("truncated", "html", "empty")
INSTANCE_FAULTS = ("stuck", "unhealthy")
RESPONDERS = ("error", "status", "disconnect", "reset")  # answer in the API's place
EXCLUSIVE = RESPONDERS + ("malformed", "disconnect_after")  # at most one per fault


class FaultError(ValueError):
    """A fault specification is malformed."""


@dataclass
class Fault:
    """One entry of a fault schedule; `seen`/`fired` count its matches."""

    path: str = "*"
    method: str | None = None
    nth: int = 1
    times: int = 1
    delay_ms: int = 0  # wait this long, then let the API act and answer
    late_ms: int = 0  # let the API act, then hold its answer this long
    error: str | None = None  # answer with the provider's own error of this kind
    message: str | None = None  # overrides the error's default message
    status: int | None = None  # answer with exactly this status/body/headers
    body: str = ""
    headers: dict = field(default_factory=dict)
    malformed: str | None = None  # answer normally, then corrupt the body
    disconnect: bool = False  # close the connection without answering (the API never acts)
    disconnect_after: bool = False  # let the API act, then close the connection without answering
    reset: bool = False  # abort the connection with a TCP RST (the API never acts)
    set_capacity: list = field(default_factory=list)  # rules applied after answering
    instance: str | None = None  # tag the instance this launch creates
    after_s: float = 0.0  # for instance: unhealthy, seconds after becoming active
    answer_ip: str | None = None  # the instance this launch creates is reported with this `ip` (a hostile API)
    seen: int = 0
    fired: int = 0

    def fires(self, method: str, path: str) -> bool:
        """Count a request; true if this fault applies to it. Caller holds the state lock."""
        if self.method and self.method.upper() != method.upper():
            return False
        if not fnmatch.fnmatchcase(path, self.path):
            return False
        self.seen += 1
        if self.seen < self.nth or (self.times and self.fired >= self.times):
            return False
        self.fired += 1
        return True

    @property
    def responds(self) -> bool:
        """True if the fault answers in the API's place, so the API never sees the request."""
        return any(getattr(self, k) for k in RESPONDERS)

    def public(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, "", [], {}, False)}


def parse_fault(spec: Any) -> Fault:
    if not isinstance(spec, dict):
        raise FaultError(f"a fault must be a mapping: {spec!r}")
    known = set(Fault.__dataclass_fields__) - {"seen", "fired"}
    unknown = set(spec) - known
    if unknown:
        raise FaultError(f"unknown fault keys {sorted(unknown)} in {spec!r}")
    fault = Fault(**spec)
    if fault.error and fault.error not in ERROR_KINDS:
        raise FaultError(f"fault error must be one of {ERROR_KINDS}: {spec!r}")
    if fault.malformed and fault.malformed not in MALFORMED:
        raise FaultError(f"fault malformed must be one of {MALFORMED}: {spec!r}")
    if fault.instance and fault.instance not in INSTANCE_FAULTS:
        raise FaultError(f"fault instance must be one of {INSTANCE_FAULTS}: {spec!r}")
    if sum(bool(getattr(fault, k)) for k in EXCLUSIVE) > 1:
        raise FaultError(f"a fault can use only one of {EXCLUSIVE}: {spec!r}")
    for flag in ("disconnect", "disconnect_after", "reset"):
        if not isinstance(getattr(fault, flag), bool):
            raise FaultError(f"fault {flag} must be true or false: {spec!r}")
    counts = (fault.nth, fault.times, fault.delay_ms, fault.late_ms)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts) or fault.nth < 1 or min(counts) < 0:
        raise FaultError(f"fault needs integers nth >= 1, times >= 0, delay_ms >= 0, late_ms >= 0: {spec!r}")
    if fault.answer_ip is not None and not isinstance(fault.answer_ip, str):
        raise FaultError(f"fault answer_ip must be a string: {spec!r}")
    if not isinstance(fault.after_s, (int, float)) or isinstance(fault.after_s, bool) or fault.after_s < 0:
        raise FaultError(f"fault after_s must be a number >= 0: {spec!r}")
    rules = fault.set_capacity if isinstance(fault.set_capacity, list) else [fault.set_capacity]
    try:
        fault.set_capacity = [check_rule(r) for r in rules]
    except ValueError as exc:
        raise FaultError(f"{exc} in fault {spec!r}") from exc
    return fault


def parse_faults(specs: Any) -> list[Fault]:
    if isinstance(specs, dict):
        specs = [specs]
    if not isinstance(specs, list):
        raise FaultError(f"faults must be a list: {specs!r}")
    return [parse_fault(s) for s in specs]


class RateLimiter:
    """Fixed-window request counters: a general one and a stricter one for launches."""

    def __init__(self, config: dict) -> None:
        self.enabled = bool(config["enabled"])
        self.windows = {name: _Window(**config[name]) for name in ("general", "launch")}

    def retry_after(self, is_launch: bool, now: float) -> int:
        """0 if the request may pass (and count it), else whole seconds to wait."""
        if not self.enabled:
            return 0
        names = ("general", "launch") if is_launch else ("general",)
        waits = [self.windows[n].wait(now) for n in names]
        if any(waits):
            return max(waits)
        for n in names:
            self.windows[n].count += 1
        return 0


@dataclass
class _Window:
    requests: int
    per_seconds: float
    start: float = -math.inf
    count: int = 0

    def wait(self, now: float) -> int:
        if now - self.start >= self.per_seconds:
            self.start, self.count = now, 0
        if self.count < self.requests:
            return 0
        return max(1, math.ceil(self.start + self.per_seconds - now))
