"""Launch-time failover (design principle 4): walk the ordered candidates, fail over on the
launch error itself, never leave a paid instance running that nobody asked for.

Used by the terraform provider's create and by the launch-race benchmark alike.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

from kcloud import errors
from kcloud.launch.journal import Journal
from kcloud.launch.ownership import TAG_RUN, Owner, launch_tags, new_run_id
from kcloud.providers import check_id
from kcloud.providers.base import ACTIVE, FAILED, PENDING, TERMINATED, TERMINATING, Instance, LaunchRequest, SshKey
from kcloud.tiers import Candidate

OUTCOMES = {errors.CapacityError: "no capacity", errors.QuotaError: "quota",
            errors.ImageNotSupported: "image not supported"}
RATE_LIMIT_RETRIES = 3        # after the HTTP layer's own retries: the same candidate, later
RESOLVE_WINDOW = 90.0         # seconds to look for a machine whose launch answer was lost
TERMINATE_WINDOW = 60.0       # seconds of retried terminates before one is reported as standing


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
    instances: list[Instance] = field(default_factory=list)   # every node, in name order (clusters)
    unterminated: list[str] = field(default_factory=list)   # ids whose terminate was not confirmed

    def table(self) -> str:
        rows = [("#", "INSTANCE TYPE", "REGION", "OUTCOME", "WHY")]
        rows += [(str(i), a.instance_type, a.region, a.outcome, a.reason or "-")
                 for i, a in enumerate(self.attempts, 1)]
        widths = [max(len(r[c]) for r in rows) for c in range(4)]
        return "\n".join("  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in rows)


class AllCandidatesFailed(errors.KcloudError):
    def __init__(self, result: Result, provider: str):
        left = len(result.unterminated)
        if left:
            hint = (f"{left} instance{'s' if left > 1 else ''} may still be running "
                    f"({', '.join(result.unterminated)}): run make destroy")
        else:
            hint = ("nothing is left running (the API confirmed every launched machine terminated); "
                    "try a wider tier group, or wait for capacity (make bringup WAIT=2h)")
        super().__init__(f"{provider}: no candidate could be launched ({len(result.attempts)} tried)",
                         hint=hint, provider=provider)
        self.result = result


def launch_first(provider, candidates: list[Candidate], *, name: str, ssh_key: SshKey, image: str = "",
                 user_data: str = "", boot_timeout: float = 600, poll_interval: float = 5.0,
                 journal: Journal | None = None, progress: Callable[[str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, owner: Owner | None = None,
                 resolve_window: float | None = None, terminate_window: float | None = None,
                 launch_fields: dict | None = None) -> Result:
    """Return the first candidate that reaches ACTIVE; adopt a machine of ours already named
    `name`. Every launch is journalled (with its run id) before the call and tagged; a launch
    whose answer is lost is resolved by looking for that run's tag before anything else is
    launched; a machine that fails to boot is terminated and the terminate is verified."""
    say = progress or (lambda _line: None)
    note = journal.record if journal else (lambda _e: None)
    owner = owner or Owner(key_refs=frozenset({ssh_key.name, ssh_key.id} - {""}))
    resolve_window = _window("KCLOUD_LAUNCH_RESOLVE_S", resolve_window, RESOLVE_WINDOW)
    terminate_window = _window("KCLOUD_TERMINATE_WINDOW_S", terminate_window, TERMINATE_WINDOW)
    result = Result(None)

    existing = _mine(provider, name, owner)
    if existing:
        inst = existing[0]
        say(f"adopting {inst.instance_type} in {inst.region} ({inst.id}), already launched as {name}")
        note({"event": "adopt", "provider": provider.name, "name": name, "id": inst.id})
        attempt = Attempt(inst.instance_type, inst.region, "adopted", "", inst.id)
        result.attempts.append(attempt)
        try:
            result.instance = _wait_active(provider, inst.id, boot_timeout, poll_interval, say, sleep)
            result.instances = [result.instance]
            return result
        except _BootFailed as exc:
            attempt.outcome, attempt.reason = exc.outcome, str(exc)
            say(f"{inst.instance_type} {inst.region}: {exc}; terminating it")
            _finish_off(provider, inst.id, attempt, result, note, say, sleep, terminate_window)
        except BaseException:
            _finish_off(provider, inst.id, attempt, result, note, say, sleep, min(terminate_window, 20))
            raise

    available: dict | None = None       # a fresher capacity view after a capacity error
    for cand in candidates:
        started = time.monotonic()
        attempt = Attempt(cand.instance_type, cand.region, "launched")
        result.attempts.append(attempt)
        if available is not None and cand.region not in available.get(cand.instance_type, ()):
            attempt.outcome, attempt.reason = "no capacity", "gone when capacity was read again"
            continue                    # a launch spent on it would only wait out the rate limit
        try:
            instance_id = _launch(provider, cand, name, ssh_key, image, user_data, owner, note, say, sleep,
                                  resolve_window, launch_fields)
        except tuple(OUTCOMES) as exc:
            attempt.outcome, attempt.reason = OUTCOMES[type(exc)], _short(exc)
            say(f"{cand.instance_type} {cand.region}: {attempt.outcome}, trying the next candidate")
            if isinstance(exc, errors.CapacityError):
                available = _fresh_capacity(provider, available)
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
            note({"event": "active", "provider": provider.name, "id": instance_id,
                  "instance_type": result.instance.instance_type, "region": result.instance.region,
                  "price_per_hour": result.instance.price_per_hour or cand.price})
            result.instances = [result.instance]
            return result
        except _BootFailed as exc:
            attempt.outcome, attempt.reason = exc.outcome, str(exc)
            say(f"{cand.instance_type} {cand.region}: {exc}; terminating it")
            _finish_off(provider, instance_id, attempt, result, note, say, sleep, terminate_window)
        except BaseException:
            # Ctrl-C, a stop request or an unexpected error mid-boot: nobody asked for it yet.
            _finish_off(provider, instance_id, attempt, result, note, say, sleep, min(terminate_window, 20))
            raise
        attempt.seconds = round(time.monotonic() - started, 1)
        if result.unterminated:
            # A machine of ours may still be running: launching more would only pile them up.
            say("a terminate could not be confirmed: no further launches")
            break
    raise AllCandidatesFailed(result, provider.name)


def _fresh_capacity(provider, previous: dict | None) -> dict | None:
    """Capacity read again (one cheap request instead of a rate-limited launch per candidate
    that is already gone); the previous view when the read fails."""
    read = getattr(provider, "capacity", None)
    if read is None:
        return previous
    try:
        return read()
    except errors.ApiError:
        return previous


def _window(env: str, given: float | None, default: float) -> float:
    if given is not None:
        return given
    try:
        return float(os.environ.get(env, default))
    except ValueError:
        return default


def _launch(provider, cand: Candidate, name: str, ssh_key: SshKey, image: str, user_data: str, owner: Owner,
            note, say, sleep, resolve_window: float, fields: dict | None = None) -> str:
    """One launch. Each call gets a fresh run id, journalled *before* the request and sent as a
    tag. A rate limit (refused before anything was done) waits and retries; an answer that did
    not come back (timeout, reset, 5xx, garbage) is ambiguous: the machine may exist, so we look
    for the run's tag for `resolve_window` seconds and never launch again while it may exist."""
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        run = new_run_id()
        request = LaunchRequest(cand.instance_type, cand.region, name, ssh_key.name, ssh_key.id, image, user_data,
                                tags=launch_tags(owner.project_id, run), **(fields or {}))
        note({"event": "launch", "provider": provider.name, "name": name, "run": run,
              "instance_type": cand.instance_type, "region": cand.region})
        try:
            instance_id = check_id(provider.name, provider.launch(request), "instance id")
        except errors.RateLimited:
            note({"event": "launch-failed", "provider": provider.name, "run": run, "why": "rate limited"})
            if attempt >= RATE_LIMIT_RETRIES:
                raise
            say(f"{cand.instance_type} {cand.region}: rate limited, waiting before retrying")
            sleep(12 * (attempt + 1))
            continue
        except tuple(OUTCOMES) as exc:
            note({"event": "launch-failed", "provider": provider.name, "run": run, "why": OUTCOMES[type(exc)]})
            raise
        except (errors.TransientError, errors.HostileAnswer) as exc:
            say(f"{cand.instance_type} {cand.region}: the launch answer was lost ({_short(exc)}); "
                f"looking for the machine before anything else is launched")
            found = _resolve(provider, run, name, owner.with_launch(run), resolve_window, sleep)
            if not found:
                note({"event": "launch-unresolved", "provider": provider.name, "run": run})
                raise errors.TransientError(
                    f"{provider.name}: launch answer lost ({_short(exc)}) and no machine of this run appeared "
                    f"within {resolve_window:.0f} s", provider=provider.name) from None
            instance_id = found.id
            say(f"{cand.instance_type} {cand.region}: found it ({instance_id}): the launch was carried out")
            note({"event": "found", "provider": provider.name, "name": name, "run": run, "id": instance_id})
        note({"event": "launched", "provider": provider.name, "name": name, "run": run, "id": instance_id,
              "instance_type": cand.instance_type, "region": cand.region,
              **({"price_per_hour": cand.price} if cand.price else {})})
        return instance_id
    raise errors.RateLimited(f"{provider.name}: launch kept being rate limited", provider=provider.name)


def _resolve(provider, run: str, name: str, owner: Owner, window: float, sleep) -> Instance | None:
    """Poll the listing for the instance of this run (its run tag, or our name and key when the
    API drops tags) until it appears or `window` seconds pass."""
    deadline = time.monotonic() + window
    pause = 1.0
    while True:
        try:
            for inst in provider.instances():
                if inst.state in (PENDING, ACTIVE) and (
                        (inst.tags or {}).get(TAG_RUN) == run or (inst.name == name and owner.owns(inst))):
                    return inst
        except (errors.TransientError, errors.RateLimited):
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sleep(min(pause, left))
        pause = min(pause * 2, 8.0)


def _mine(provider, name: str, owner: Owner) -> list[Instance]:
    """Live instances with this exact name that are provably ours (two proofs): another
    directory using the same host name, key or a copied id is never adopted."""
    return [i for i in provider.instances() if i.name == name and i.state in (PENDING, ACTIVE) and owner.owns(i)]


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
        except (errors.TransientError, errors.RateLimited):
            inst = None    # a failed poll is not a failed boot
        if inst is not None:
            if inst.state == ACTIVE and inst.ip:
                say(f"{inst.instance_type} {inst.region}: {inst.status} at {inst.ip} after {elapsed:.0f} s")
                return inst
            if inst.state in (FAILED, TERMINATED, TERMINATING):
                raise _BootFailed("failed", f"instance went {inst.status} while booting")
            if inst.status != last or int(elapsed) % 30 < interval:
                say(f"{inst.instance_type} {inst.region}: {inst.status} ({elapsed:.0f} s)")
                last = inst.status
        if elapsed >= timeout:
            raise _BootFailed("boot timeout", f"not active after {timeout:.0f} s")
        # Quick first polls (a fast boot is seen at once), then the configured interval.
        sleep(min(interval, 0.5 * polls, max(0.05, timeout - elapsed)))


def _finish_off(provider, instance_id: str, attempt: Attempt, result: Result, note, say, _sleep,
                window: float) -> None:
    # Plain sleep: an interruptible one would end the terminate at once after a stop request.
    if terminate_verified(provider, instance_id, note, time.sleep, window):
        return
    result.unterminated.append(instance_id)
    attempt.reason = (attempt.reason + "; " if attempt.reason else "") + "TERMINATE FAILED: may still be running"
    say(f"{attempt.instance_type} {attempt.region}: {instance_id} could not be terminated within "
        f"{window:.0f} s; it may still be running")


def terminate_verified(provider, instance_id: str, note, sleep=time.sleep, window: float = TERMINATE_WINDOW,
                       keep_boot_volume: bool = False) -> bool:
    """Terminate and re-read until the API shows it terminating or gone. Failures (5xx, 429,
    resets) are retried with backoff for at most `window` seconds. True when confirmed.
    `keep_boot_volume`: keep its OS volume for the next bringup (providers that keep them)."""
    note({"event": "terminate", "provider": provider.name, "id": instance_id})
    keep = keep_boot_volume and getattr(provider, "keeps_boot_volumes", False)
    deadline = time.monotonic() + window
    pause, accepted = 1.0, False
    while True:
        if not accepted:
            try:
                if keep:
                    provider.terminate([instance_id], keep_boot_volumes=True)
                else:
                    provider.terminate([instance_id])
                accepted = True
            except errors.NotFound:
                accepted = True
            except (errors.TransientError, errors.RateLimited, errors.InvalidRequest):
                pass
        # Read it even when the terminate was refused (e.g. DataCrunch: its OS volume is already
        # gone because another terminate came first): what counts is whether it is going.
        try:
            inst = provider.instance(instance_id)
            if inst.state in (TERMINATING, TERMINATED):
                note({"event": "terminated", "provider": provider.name, "id": instance_id})
                return True
            accepted = False      # still standing: ask again after the pause
        except errors.NotFound:
            note({"event": "terminated", "provider": provider.name, "id": instance_id})
            return True
        except (errors.TransientError, errors.RateLimited):
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sleep(min(pause, left))
        pause = min(pause * 2, 8.0)


def _short(exc: Exception) -> str:
    text = str(exc)
    return text.split(": ", 2)[-1] if text.count(": ") >= 2 else text
