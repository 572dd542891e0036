"""Launch-time failover (design principle 4): walk the ordered candidates, fail over on the
launch error itself, never leave a paid instance running that nobody asked for.

Used by the terraform provider's create and by the launch-race benchmark alike.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from kcloud import errors
from kcloud.bringup.journal import Journal
from kcloud.providers.base import ACTIVE, FAILED, PENDING, TERMINATED, Instance, LaunchRequest, SshKey
from kcloud.tiers import Candidate

OUTCOMES = {errors.CapacityError: "no capacity", errors.QuotaError: "quota",
            errors.ImageNotSupported: "image not supported"}
RATE_LIMIT_RETRIES = 3        # after the HTTP layer's own retries: the same candidate, later
TRANSIENT_LAUNCH_RETRIES = 2


@dataclass
class Attempt:
    instance_type: str
    region: str
    outcome: str              # "launched", "no capacity", "quota", "boot timeout", "failed", ...
    reason: str = ""
    instance_id: str | None = None
    seconds: float = 0.0


@dataclass
class Result:
    instance: Instance | None
    attempts: list[Attempt] = field(default_factory=list)

    def table(self) -> str:
        rows = [("#", "INSTANCE TYPE", "REGION", "OUTCOME", "WHY")]
        rows += [(str(i), a.instance_type, a.region, a.outcome, a.reason or "-")
                 for i, a in enumerate(self.attempts, 1)]
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        return "\n".join("  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in rows)


class AllCandidatesFailed(errors.KcloudError):
    def __init__(self, result: Result, provider: str):
        super().__init__(f"{provider}: no candidate could be launched ({len(result.attempts)} tried)",
                         hint="nothing is left running; try a wider tier group or wait and retry",
                         provider=provider)
        self.result = result


def launch_first(provider, candidates: list[Candidate], *, name: str, ssh_key: SshKey, image: str = "",
                 user_data: str = "", boot_timeout: float = 600, poll_interval: float = 5.0,
                 journal: Journal | None = None, progress: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> Result:
    """Return the first candidate that reaches ACTIVE. Adopts an instance already named `name`."""
    say = progress or (lambda _line: None)
    note = journal.record if journal else (lambda _e: None)
    result = Result(None)

    existing = _mine(provider, name, ssh_key)
    if existing:
        inst = existing[0]
        say(f"adopting {inst.instance_type} in {inst.region} ({inst.id}), already launched as {name}")
        note({"event": "adopt", "provider": provider.name, "name": name, "id": inst.id})
        inst = _wait_active(provider, inst.id, boot_timeout, poll_interval, say, sleep)
        result.instance = inst
        result.attempts.append(Attempt(inst.instance_type, inst.region, "adopted", "", inst.id))
        return result

    for cand in candidates:
        started = time.monotonic()
        attempt = Attempt(cand.instance_type, cand.region, "launched")
        result.attempts.append(attempt)
        request = LaunchRequest(cand.instance_type, cand.region, name, ssh_key.name, ssh_key.id, image, user_data)
        try:
            instance_id = _launch(provider, request, note, say, sleep)
        except tuple(OUTCOMES) as exc:
            attempt.outcome, attempt.reason = OUTCOMES[type(exc)], _short(exc)
            say(f"{cand.instance_type} {cand.region}: {attempt.outcome}, trying the next candidate")
            continue
        except (errors.RateLimited, errors.TransientError) as exc:
            attempt.outcome, attempt.reason = "error", _short(exc)
            say(f"{cand.instance_type} {cand.region}: {attempt.reason}, trying the next candidate")
            continue
        finally:
            attempt.seconds = round(time.monotonic() - started, 1)
        attempt.instance_id = instance_id
        say(f"launched {cand.instance_type} in {cand.region} ({instance_id}); waiting for it to boot")
        try:
            result.instance = _wait_active(provider, instance_id, boot_timeout, poll_interval, say, sleep)
            attempt.seconds = round(time.monotonic() - started, 1)
            return result
        except _BootFailed as exc:
            attempt.outcome, attempt.reason = exc.outcome, str(exc)
            say(f"{cand.instance_type} {cand.region}: {exc}; terminating it")
            _terminate(provider, instance_id, note)
        except BaseException:
            # Ctrl-C or an unexpected error mid-boot: the machine was not asked for yet.
            _terminate(provider, instance_id, note)
            raise
        attempt.seconds = round(time.monotonic() - started, 1)
    raise AllCandidatesFailed(result, provider.name)


def _launch(provider, request: LaunchRequest, note, say, sleep) -> str:
    """One launch, journalled first. Rate limits wait and retry the same candidate; an ambiguous
    transient error (the request may have been carried out) is resolved by looking for the name."""
    for attempt in range(RATE_LIMIT_RETRIES + TRANSIENT_LAUNCH_RETRIES + 1):
        note({"event": "launch", "provider": provider.name, "name": request.name,
              "instance_type": request.instance_type, "region": request.region})
        try:
            instance_id = provider.launch(request)
        except errors.RateLimited:
            if attempt >= RATE_LIMIT_RETRIES:
                raise
            say(f"{request.instance_type} {request.region}: rate limited, waiting before retrying")
            sleep(10 * (attempt + 1))
            continue
        except errors.TransientError:
            found = _mine(provider, request.name, SshKey(request.ssh_key_id, request.ssh_key_name, ""))
            if found:
                instance_id = found[0].id
            elif attempt >= TRANSIENT_LAUNCH_RETRIES:
                raise
            else:
                sleep(2 * (attempt + 1))
                continue
        note({"event": "launched", "provider": provider.name, "name": request.name, "id": instance_id})
        return instance_id
    raise errors.RateLimited(f"{provider.name}: launch kept being rate limited", provider=provider.name)


def _mine(provider, name: str, key: SshKey) -> list[Instance]:
    """Live instances with this exact name that carry our key: another directory using the
    same host name (and its own key) is never adopted."""
    return [i for i in provider.instances(name) if i.name == name and i.state in (PENDING, ACTIVE)
            and {key.name, key.id} & set(i.keys)]


class _BootFailed(Exception):
    def __init__(self, outcome: str, message: str):
        super().__init__(message)
        self.outcome = outcome


def _wait_active(provider, instance_id: str, timeout: float, interval: float, say, sleep) -> Instance:
    start = time.monotonic()
    last = ""
    polls = 0
    while True:
        polls += 1
        elapsed = time.monotonic() - start
        try:
            inst = provider.instance(instance_id)
        except errors.NotFound:
            raise _BootFailed("failed", "the instance disappeared while booting") from None
        except errors.TransientError:
            inst = None    # a failed poll is not a failed boot
        if inst is not None:
            if inst.state == ACTIVE and inst.ip:
                say(f"{inst.instance_type} {inst.region}: {inst.status} at {inst.ip} after {elapsed:.0f} s")
                return inst
            if inst.state in (FAILED, TERMINATED):
                raise _BootFailed("failed", f"instance went {inst.status} while booting")
            if inst.status != last or int(elapsed) % 30 < interval:
                say(f"{inst.instance_type} {inst.region}: {inst.status} ({elapsed:.0f} s)")
                last = inst.status
        if elapsed >= timeout:
            raise _BootFailed("boot timeout", f"not active after {timeout:.0f} s")
        # Quick first polls (a fast boot is seen at once), then the configured interval.
        sleep(min(interval, 0.5 * polls, max(0.05, timeout - elapsed)))


def _terminate(provider, instance_id: str, note) -> None:
    note({"event": "terminate", "provider": provider.name, "id": instance_id})
    for attempt in range(3):
        try:
            provider.terminate([instance_id])
            return
        except errors.TransientError:
            time.sleep(1 + attempt)
    # Journalled above: `make destroy` reconciles it if the API kept failing.


def _short(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 2)[-1] if text.count(": ") >= 2 else text
