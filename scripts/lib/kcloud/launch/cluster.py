"""N machines of one type in one region, all or nothing (the launch walk for clusters).

For each candidate (type, region) in plan order:
  1. nodes of ours already running there (two proofs, same names) are adopted;
  2. the missing nodes are launched one at a time (each launch journalled and tagged first,
     within the launch rate limit, a lost answer resolved before anything else is launched);
  3. a node that loses its race is retried in the same region while the region still shows
     capacity for the type (`SAME_REGION_RETRIES`); a node that fails to boot is terminated
     and launched again once;
  4. when the region cannot complete the set, every node launched or adopted there is
     terminated (verified) before the next candidate is tried: never a half cluster billing.
The walk waits for every node to be active before it returns. Ctrl-C, a stop request or an
unexpected error terminates the whole set it holds.

The single-node walk is `failover.launch_first`; both share its launch, boot-wait and
terminate steps.
"""
from __future__ import annotations

import time
from typing import Callable

from kcloud import errors
from kcloud.launch import failover
from kcloud.launch.failover import OUTCOMES, AllCandidatesFailed, Attempt, Result, _BootFailed, _short
from kcloud.launch.journal import Journal
from kcloud.launch.ownership import Owner
from kcloud.providers.base import ACTIVE, PENDING, Instance, SshKey
from kcloud.tiers import Candidate

SAME_REGION_RETRIES = 2       # a lost race in a region that still shows capacity: try that node again
BOOT_RETRIES = 1              # a node that failed to boot: launch it again once in the same region


def node_names(name: str, count: int) -> list[str]:
    """<name> for one node; <name>-01 ... <name>-NN for several."""
    if count <= 1:
        return [name]
    return [f"{name}-{i:02d}" for i in range(1, count + 1)]


class _RegionFailed(Exception):
    def __init__(self, outcome: str, reason: str):
        super().__init__(reason)
        self.outcome = outcome


def launch_set(provider, candidates: list[Candidate], *, names: list[str], ssh_key: SshKey, owner: Owner,
               image: str = "", user_data: str = "", fields_for: Callable[[str], dict] | None = None,
               boot_timeout: float = 600, poll_interval: float = 5.0, journal: Journal | None = None,
               progress: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep,
               resolve_window: float | None = None, terminate_window: float | None = None,
               keep_boot_volumes: bool = False) -> Result:
    """Every node of `names` active in one (type, region), or AllCandidatesFailed with nothing of
    the walk left running (or named in `unterminated`)."""
    say = progress or (lambda _line: None)
    note = journal.record if journal else (lambda _e: None)
    fields_for = fields_for or (lambda _name: {})
    resolve_window = failover._window("KCLOUD_LAUNCH_RESOLVE_S", resolve_window, failover.RESOLVE_WINDOW)
    terminate_window = failover._window("KCLOUD_TERMINATE_WINDOW_S", terminate_window, failover.TERMINATE_WINDOW)
    result = Result(None)
    n = len(names)

    running = {i.name: i for i in provider.instances()
               if i.name in names and i.state in (PENDING, ACTIVE) and owner.owns(i)}
    cells = {(i.instance_type, i.region) for i in running.values()}
    if len(cells) > 1:
        what = ", ".join(f"{i.name} = {i.instance_type} in {i.region}" for i in running.values())
        raise errors.ConfigError(f"{provider.name}: this directory's nodes run in different places ({what})",
                                 hint="make destroy, then make bringup (all nodes must share a type and region)")
    if running:
        itype, region = next(iter(cells))
        say(f"adopting {len(running)} of {n} nodes already running ({itype} in {region}): "
            + ", ".join(sorted(running)))
        for i in running.values():
            note({"event": "adopt", "provider": provider.name, "name": i.name, "id": i.id})
        # The adopted nodes' cell first: completing the set there keeps what runs.
        price = next((c.price for c in candidates if (c.instance_type, c.region) == (itype, region)), 0.0)
        candidates = [Candidate(itype, region, "adopted", price)] + \
            [c for c in candidates if (c.instance_type, c.region) != (itype, region)]

    def release(members: dict[str, str], window: float) -> None:
        for name, iid in members.items():
            keep = keep_boot_volumes or bool(fields_for(name).get("boot_volume_id"))
            if not failover.terminate_verified(provider, iid, note, time.sleep, window, keep_boot_volume=keep):
                result.unterminated.append(iid)
                say(f"{name} ({iid}) could not be terminated within {window:.0f} s; it may still be running")

    for cand in candidates:
        members: dict[str, str] = {}
        if (cand.instance_type, cand.region) in cells:
            members = {name: running[name].id for name in names if name in running}
        cell = f"{cand.instance_type} {cand.region}"
        started = time.monotonic()
        try:
            for name in names:
                if name in members:
                    continue
                attempt = Attempt(cand.instance_type, cand.region, "launched", f"node {name}")
                result.attempts.append(attempt)
                members[name] = _launch_node(provider, cand, name, ssh_key, image, user_data, owner, note, say,
                                             sleep, resolve_window, fields_for(name), attempt)
            say(f"{cell}: all {n} nodes launched; waiting for them to boot")
            instances = _wait_all(provider, cand, names, members, ssh_key, image, user_data, owner, note, say,
                                  sleep, resolve_window, fields_for, boot_timeout, poll_interval, result,
                                  terminate_window)
        except _RegionFailed as exc:
            last = result.attempts[-1] if result.attempts else None
            if last is None or (last.instance_type, last.region, last.outcome) != \
                    (cand.instance_type, cand.region, exc.outcome):
                result.attempts.append(Attempt(cand.instance_type, cand.region, exc.outcome, str(exc),
                                               seconds=round(time.monotonic() - started, 1)))
            for a in result.attempts:        # what was launched here is not kept
                if (a.instance_type, a.region) == (cand.instance_type, cand.region) and a.outcome == "launched":
                    a.outcome, a.reason = "terminated", a.reason + ": the set could not be completed here"
            if members:
                say(f"{cell}: {exc}; terminating the {len(members)} node(s) launched there before the next "
                    "candidate (never a half cluster)")
                release(members, terminate_window)
            else:
                say(f"{cell}: {exc}; trying the next candidate")
            if result.unterminated:
                say("a terminate could not be confirmed: no further launches")
                break
            continue
        except BaseException:
            # Ctrl-C, a stop request, an unexpected error: nobody asked for a half cluster.
            release(members, min(terminate_window, 20))
            raise
        for inst in instances:
            note({"event": "active", "provider": provider.name, "id": inst.id, "name": inst.name,
                  "instance_type": inst.instance_type, "region": inst.region,
                  "price_per_hour": inst.price_per_hour or cand.price})
        result.instances = instances
        result.instance = instances[0]
        return result
    raise AllCandidatesFailed(result, provider.name)


def _launch_node(provider, cand: Candidate, name: str, ssh_key, image, user_data, owner, note, say, sleep,
                 resolve_window, fields: dict, attempt: Attempt) -> str:
    """One node in this cell; _RegionFailed when the cell cannot take it."""
    started = time.monotonic()
    for retry in range(SAME_REGION_RETRIES + 1):
        try:
            iid = failover._launch(provider, cand, name, ssh_key, image, user_data, owner, note, say, sleep,
                                   resolve_window, fields)
        except errors.CapacityError as exc:
            still = cand.region in (failover._fresh_capacity(provider, None) or {}).get(cand.instance_type, ())
            if still and retry < SAME_REGION_RETRIES:
                say(f"{cand.instance_type} {cand.region}: {name} lost its race, the region still shows capacity: "
                    "trying that node again")
                continue
            attempt.outcome, attempt.reason = "no capacity", f"node {name}: {_short(exc)}"
            raise _RegionFailed("no capacity", f"cannot complete the set here ({name}: {_short(exc)})") from None
        except (errors.QuotaError, errors.ImageNotSupported) as exc:
            attempt.outcome, attempt.reason = OUTCOMES[type(exc)], f"node {name}: {_short(exc)}"
            raise _RegionFailed(attempt.outcome, f"{name}: {_short(exc)}") from None
        except (errors.RateLimited, errors.TransientError) as exc:
            attempt.outcome, attempt.reason = "error", f"node {name}: {_short(exc)}"
            raise _RegionFailed("error", f"{name}: {_short(exc)}") from None
        finally:
            attempt.seconds = round(time.monotonic() - started, 1)
        attempt.instance_id = iid
        say(f"launched {name}: {cand.instance_type} in {cand.region} ({iid})")
        return iid
    raise _RegionFailed("no capacity", f"{name} kept losing its race")   # pragma: no cover (loop returns)


def _wait_all(provider, cand, names, members: dict[str, str], ssh_key, image, user_data, owner, note, say, sleep,
              resolve_window, fields_for, boot_timeout, poll_interval, result: Result,
              terminate_window) -> list[Instance]:
    """Every node active (they boot in parallel; waiting on each in turn costs the slowest boot).
    A node that fails to boot is terminated and launched again once."""
    out = []
    for name in names:
        for retry in range(BOOT_RETRIES + 1):
            try:
                out.append(failover._wait_active(provider, members[name], boot_timeout, poll_interval, say, sleep))
                break
            except _BootFailed as exc:
                iid = members.pop(name)
                keep = bool(fields_for(name).get("boot_volume_id"))
                if not failover.terminate_verified(provider, iid, note, time.sleep, terminate_window,
                                                   keep_boot_volume=keep):
                    result.unterminated.append(iid)
                    raise _RegionFailed("failed", f"{name} ({iid}) {exc} and could not be terminated") from None
                if retry >= BOOT_RETRIES:
                    raise _RegionFailed(exc.outcome, f"{name}: {exc}") from None
                say(f"{name}: {exc}; terminated, launching it again in {cand.region}")
                attempt = Attempt(cand.instance_type, cand.region, "launched", f"node {name} (again)")
                result.attempts.append(attempt)
                members[name] = _launch_node(provider, cand, name, ssh_key, image, user_data, owner, note, say,
                                             sleep, resolve_window, fields_for(name), attempt)
    return out
