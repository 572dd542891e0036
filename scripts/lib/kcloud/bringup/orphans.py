"""`make cloud-list-all` and `kcloud orphans [--terminate] [--yes]`: what in the accounts carries
kcloud's marks, by the directory that owns it, and removal of what deleted directories left.

kcloud's marks: instances (and DataCrunch volumes) carry the tags `kcloud-project=<directory
id>` and `kcloud-run=<launch id>` (kcloud.launch.ownership); SSH keys and startup scripts carry
no tags, so their *name* is the mark: kcloud's unique naming `kdevops-<project>-<id>` /
`kdevops-datacrunch-<id>`, <id> being 12 hex digits (kdevops' own names carry an 8-digit path
hash, and never match). Anything else in the account is never listed here, and never touched.

Each owner id is looked up in this computer's registry (kcloud.launch.registry): `here` (its
directory exists and still has that id), `deleted` (recorded here, the directory is gone or was
re-created with another id) or `unknown` (never recorded on this computer: another computer,
another user, a checkout from before the registry). `orphans --terminate --yes` removes only
what belongs to `deleted` owners: instances first (terminate verified, DataCrunch OS volumes
deleted with them), then their tagged volumes and named scripts, then their keys.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

from kcloud import errors, providers
from kcloud.launch.ownership import TAG_PROJECT, TAG_RUN
from kcloud.providers.base import TERMINATED, Leftover

_ID = re.compile(r"^[0-9a-f]{12}$")
# kdevops-<project>-<id> (Lambda and other providers) and kdevops-datacrunch-<id>
UNIQUE_NAME = re.compile(r"^kdevops-(?:[A-Za-z0-9-]+-)?([0-9a-f]{12})$")
STATES = ("here", "deleted", "unknown")


def owner_from_name(name: str) -> str | None:
    """The directory id in a name made by kcloud's unique naming, else None."""
    m = UNIQUE_NAME.match(name or "")
    return m.group(1) if m else None


def _owner_tag(tags: dict) -> str | None:
    value = (tags or {}).get(TAG_PROJECT)
    return value if isinstance(value, str) and _ID.match(value) else None


@dataclass
class Resource:
    provider: str
    kind: str                    # instance, ssh-key, volume, script
    id: str
    name: str
    owner: str | None            # directory id (None: a run tag without a directory id)
    mark: str                    # how it is known as kcloud's: "tag", "name", "attached to <id>"
    detail: str = ""
    price_per_hour: float | None = None
    cost: Decimal | None = None  # so far (instances)
    cost_note: str = ""
    removable: bool = True       # False: goes with its instance (an untagged attached volume)
    obj: object = field(default=None, repr=False)

    def public(self) -> dict:
        return {"provider": self.provider, "kind": self.kind, "id": self.id, "name": self.name,
                "owner": self.owner, "mark": self.mark, "detail": self.detail,
                "price_per_hour": self.price_per_hour,
                "cost_so_far": None if self.cost is None else float(self.cost),
                "cost_note": self.cost_note, "removable": self.removable}


@dataclass
class Listing:
    resources: list = field(default_factory=list)
    listed: dict = field(default_factory=dict)      # provider -> "listed" / "skipped: ..." / "failed: ..."
    clients: dict = field(default_factory=dict)     # provider -> client

    @property
    def complete(self) -> bool:
        return not any(v.startswith("failed") for v in self.listed.values())


def _started(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).replace(tzinfo=timezone.utc).timestamp() \
            if iso else None
    except ValueError:
        return None


def list_provider(provider) -> list[Resource]:
    """Everything of one provider's account that carries kcloud's marks."""
    found = []
    instances = [i for i in provider.instances() if i.state != TERMINATED]
    tagged = {}
    for inst in instances:
        tags = inst.tags or {}
        if not (tags.get(TAG_PROJECT) or tags.get(TAG_RUN)):
            continue
        tagged[inst.id] = inst
        found.append(Resource(provider.name, "instance", inst.id, inst.name, _owner_tag(tags), "tag",
                              f"{inst.instance_type} {inst.region} {inst.status}", inst.price_per_hour, obj=inst))
    untagged_users = {k: i for i in instances if i.id not in tagged for k in i.keys}
    for key in provider.ssh_keys():
        owner = owner_from_name(key.name)
        if owner:
            user = untagged_users.get(key.id) or untagged_users.get(key.name)
            found.append(Resource(provider.name, "ssh-key", key.id, key.name, owner, "name",
                                  f"used by {user.name} ({user.id}), which carries no kcloud tag: kept" if user else "",
                                  removable=user is None, obj=key))
    volumes = getattr(provider, "volumes", None)
    for vol in volumes() if volumes else []:
        owner = _owner_tag(vol["tags"])
        detail = f"{vol.get('size', '?')} GB" + (", OS volume" if vol.get("os") else "") + \
                 (", in trash" if vol.get("trash") else "")
        if owner:
            found.append(Resource(provider.name, "volume", vol["id"], vol["name"], owner, "tag", detail, obj=vol))
            continue
        host = next((tagged[i] for i in vol.get("instance_ids", []) if i in tagged), None)
        if host is not None:       # shown with its instance's owner; removed with the instance only
            found.append(Resource(provider.name, "volume", vol["id"], vol["name"], _owner_tag(host.tags),
                                  f"attached to {host.id}", detail, removable=False, obj=vol))
    scripts = getattr(provider, "scripts", None)
    for script in scripts() if scripts else []:
        owner = owner_from_name(script["name"])
        if owner:
            found.append(Resource(provider.name, "script", script["id"], script["name"], owner, "name", obj=script))
    return found


def collect(say=print, names: list[str] | None = None) -> Listing:
    """Every provider whose credentials are present; a provider without them is one line."""
    listing = Listing()
    for name in names or providers.names():
        provider = providers.get(name)
        try:
            provider.credentials()
        except errors.CredentialsError as exc:
            listing.listed[name] = f"skipped: {exc.line()}"
            say(f"{provider.title}: skipped ({exc.line()})")
            continue
        try:
            listing.resources += list_provider(provider)
        except errors.KcloudError as exc:
            listing.listed[name] = f"failed: {exc.line()}"
            say(f"{provider.title}: could not be listed ({exc.line()})")
            continue
        listing.listed[name] = "listed"
        listing.clients[name] = provider
    return listing


def _price_costs(listing: Listing, known: dict[str, str], states: dict, now: float) -> None:
    """Cost so far of each instance: from its directory's records when that directory is here
    (launch price, launch time: kcloud.bringup.cost), else from the API's price and launch time
    when the API reports one (DataCrunch; Lambda reports no launch time)."""
    from kcloud.bringup import cost
    recorded: dict[str, dict] = {}
    for owner in {r.owner for r in listing.resources if r.kind == "instance" and states.get(r.owner) == "here"}:
        events, _notes = cost.records(Path(known[owner]))
        recorded.update({b.id: b for b in cost.bills(events, int(now * 1000))})
    for r in listing.resources:
        if r.kind != "instance":
            continue
        bill = recorded.get(r.id)
        if bill is not None and bill.amount is not None:
            r.price_per_hour, r.cost = bill.price_per_hour, bill.amount
            continue
        started = _started(getattr(r.obj, "created_at", ""))
        if started is None or not r.price_per_hour:
            r.cost_note = "the API reports no launch time" if started is None else "no price"
            continue
        rule = cost.billing_rule(r.provider)
        billed = cost.billed_seconds(int((now - started) * 1000), rule["increment_s"], rule["minimum_s"])
        r.cost = cost.amount(r.price_per_hour, billed)


def owners_report(listing: Listing, now: float | None = None) -> dict:
    from kcloud.launch import registry
    now = time.time() if now is None else now
    known = registry.load()
    states = {o: registry.owner_state(o) for o in {r.owner for r in listing.resources}}
    _price_costs(listing, known, states, now)
    groups: dict = {}
    for r in listing.resources:
        groups.setdefault(r.owner, []).append(r)
    owners = []
    for owner, items in sorted(groups.items(), key=lambda kv: (STATES.index(states.get(kv[0], "unknown")),
                                                                known.get(kv[0] or "", ""), kv[0] or "")):
        running = [r for r in items if r.kind == "instance"]
        owners.append({"id": owner, "path": known.get(owner or ""), "state": states.get(owner, "unknown"),
                       "price_per_hour": round(sum(r.price_per_hour or 0 for r in running), 4),
                       "cost_so_far": float(sum((r.cost for r in running if r.cost is not None), Decimal(0))),
                       "resources": [r.public() for r in items], "_items": items})
    return {"providers": listing.listed, "owners": owners,
            "price_per_hour": round(sum(o["price_per_hour"] for o in owners), 4),
            "cost_so_far": float(sum((Decimal(str(o["cost_so_far"])) for o in owners), Decimal(0)))}


def _public(report: dict) -> dict:
    return {**report, "owners": [{k: v for k, v in o.items() if k != "_items"} for o in report["owners"]]}


LABELS = {"here": "", "deleted": "DELETED: the directory is gone from this computer",
          "unknown": "UNKNOWN: never recorded on this computer (another computer, user or checkout)"}


def _resource_line(r: dict) -> str:
    if r["kind"] == "instance":
        money = (f"${r['price_per_hour']:.2f}/h " if r["price_per_hour"] is not None else "") + \
                (f"${r['cost_so_far']:.2f} so far" if r["cost_so_far"] is not None else f"cost so far ? ({r['cost_note']})")
        return f"    {r['provider']:11} instance  {r['name'][:24]:24} {r['detail'][:40]:40} {money}  {r['id']}"
    extra = f" ({r['detail']})" if r["detail"] else ""
    how = f", {r['mark']}" if r["mark"].startswith("attached") else ""
    return f"    {r['provider']:11} {r['kind']:9} {r['name'][:64]}{extra}{how}  {r['id']}"


def text_lines(report: dict, only_state: str | None = None) -> list[str]:
    lines = []
    for owner in report["owners"]:
        if only_state and owner["state"] != only_state:
            continue
        where = owner["path"] or "(no directory recorded)"
        label = LABELS[owner["state"]]
        lines.append(f"{owner['id'] or '(no directory id)'}  {where}" + (f"  {label}" if label else ""))
        lines += [_resource_line(r) for r in owner["resources"]]
    return lines


def cmd_cloud_list_all(args) -> int:
    say = (lambda _l: None) if args.output == "json" else print
    listing = collect(say)
    report = owners_report(listing)
    if args.output == "json":
        print(json.dumps(_public(report), indent=2))
        return 0 if listing.complete else 1
    if not report["owners"]:
        print("Nothing in the account(s) carries kcloud's marks." if listing.clients else
              "No provider could be listed.")
        return 0 if listing.complete else 1
    print("\n".join(text_lines(report)))
    instances = [r for o in report["owners"] for r in o["resources"] if r["kind"] == "instance"]
    unknown = sum(1 for r in instances if r["cost_so_far"] is None)
    print(f"Total: {len(instances)} instance(s), ${report['price_per_hour']:.2f}/h, "
          + (f"${report['cost_so_far']:.2f} so far" if unknown < len(instances) else "cost so far unknown")
          + (f" ({unknown} without a known start not counted)" if unknown and unknown < len(instances) else ""))
    deleted = [r for o in report["owners"] if o["state"] == "deleted" for r in o["resources"] if r["removable"]]
    if deleted:
        owners = {r["owner"] for r in deleted}
        print(f"{len(owners)} deleted directory(ies) left {len(deleted)} thing(s) behind: "
              "scripts/kcloud orphans --terminate --yes removes them")
    return 0 if listing.complete else 1


def _orphans(report: dict) -> list:
    return [r for o in report["owners"] if o["state"] == "deleted" for r in o["_items"]]


def cmd_orphans(args) -> int:
    say = (lambda _l: None) if args.output == "json" else print
    listing = collect(say)
    report = owners_report(listing)
    shown = _orphans(report)
    found = [r for r in shown if r.removable]      # attached untagged volumes go with their instance
    kept = [r for r in shown if not r.removable and r.kind != "volume"]
    partial = "" if listing.complete else " (some providers could not be listed)"
    if args.output == "json" and not (args.terminate and args.yes and found):
        print(json.dumps({**_public({**report, "owners": [o for o in report["owners"] if o["state"] == "deleted"]}),
                          "removed": []}, indent=2))
        return 0 if listing.complete and (args.yes or not args.terminate or not found) else 1
    if not shown:
        say("No resource of a deleted kcloud directory is in the account(s)." + partial)
        return 0 if listing.complete else 1
    say("Left behind by kcloud directories that no longer exist on this computer:")
    for line in text_lines(report, only_state="deleted"):
        say(line)
    if not found:
        say(f"Nothing to remove: the {len(kept)} thing(s) shown are kept (see why above)." + partial)
        return 0 if listing.complete else 1
    if not args.terminate:
        say("Remove them with: scripts/kcloud orphans --terminate --yes")
        return 0
    if not args.yes:
        say("Nothing removed: add --yes to remove exactly these.")
        return 1
    removed, standing = remove(listing, found, say)
    if args.output == "json":
        print(json.dumps({"removed": removed, "standing": standing, "providers": listing.listed}, indent=2))
    if standing:
        raise errors.KcloudError(f"{len(standing)} thing(s) of deleted directories may still be running or billed: "
                                 + ", ".join(standing), hint="run scripts/kcloud orphans --terminate --yes again")
    say("Removed: the API confirms nothing of the deleted directories is left running"
        + (f" ({len(kept)} thing(s) kept as shown)." if kept else ".") + partial)
    return 0 if listing.complete else 1


def _log():
    """Removals are recorded next to the registry (no directory is left to journal them)."""
    from kcloud.launch import registry
    from kcloud.launch.journal import Journal
    return Journal(registry.path().parent / "orphans.jsonl")


def remove(listing: Listing, found: list, say=print) -> tuple[list[dict], list[str]]:
    """Instances (verified), then tagged volumes and named scripts, then keys: only `found`,
    each re-read from a fresh listing right before it is touched."""
    from kcloud.launch.failover import terminate_verified
    from kcloud.launch import registry
    log = _log()
    removed, standing = [], []
    for name, provider in listing.clients.items():
        mine = [r for r in found if r.provider == name and r.removable]
        if not mine:
            continue
        # Fresh look: the same id must still carry the same owner's mark, and that owner must
        # still be a deleted directory (a checkout recorded again since is never touched).
        fresh = {(r.kind, r.id): r for r in list_provider(provider)}
        mine = [r for r in mine if (f := fresh.get((r.kind, r.id))) is not None and f.owner == r.owner
                and registry.owner_state(r.owner) == "deleted"]
        instances = [r for r in mine if r.kind == "instance"]
        blocked = set()          # owners with something still standing: their keys are kept
        for r in instances:
            say(f"{provider.title}: terminating {r.name} ({r.id}) of deleted directory {r.owner}")
            if terminate_verified(provider, r.id, lambda e, o=r.owner: log.record({**e, "owner": o})):
                removed.append({"provider": name, "kind": "instance", "id": r.id, "owner": r.owner})
            else:
                standing.append(f"{name} instance {r.id}")
                blocked.add(r.owner)
        confirmed = [x["id"] for x in removed if x["provider"] == name and x["kind"] == "instance"]
        left = dict(_wait_gone(provider, confirmed))
        standing += [f"{name} instance {i} (still {s})" for i, s in left.items()]
        removed = [x for x in removed if not (x["provider"] == name and x["kind"] == "instance" and x["id"] in left)]
        blocked |= {r.owner for r in instances if r.id in left}
        for r in [r for r in mine if r.kind in ("volume", "script")]:
            try:
                provider.remove_leftover(Leftover(r.kind, r.id, r.name))
                log.record({"event": f"remove-{r.kind}", "provider": name, "id": r.id, "owner": r.owner})
                say(f"{provider.title}: removed {r.kind} {r.name or r.id} of deleted directory {r.owner}")
                removed.append({"provider": name, "kind": r.kind, "id": r.id, "owner": r.owner})
            except errors.KcloudError as exc:
                standing.append(f"{name} {r.kind} {r.id} ({exc.line()})")
                blocked.add(r.owner)
        keys = [r for r in mine if r.kind == "ssh-key" and r.owner not in blocked]   # kept while anything
        try:                                                                          # of its owner stands
            users = {} if not keys else {k: i for i in provider.instances() if i.state != TERMINATED for k in i.keys}
        except errors.KcloudError as exc:
            standing += [f"{name} ssh-key {r.name} (not removed: {exc.line()})" for r in keys]
            keys = []
        for r in keys:
            user = users.get(r.id) or users.get(r.name)
            if user is not None:         # e.g. a machine launched without tags: never touched, nor its key
                say(f"{provider.title}: kept SSH key {r.name}: {user.name} ({user.id}) still uses it and carries "
                    "no kcloud tag, so it is not touched; check it in the console")
                continue
            try:
                provider.delete_ssh_key(r.id)
                log.record({"event": "remove-ssh-key", "provider": name, "id": r.id, "name": r.name, "owner": r.owner})
                say(f"{provider.title}: removed SSH key {r.name} of deleted directory {r.owner}")
                removed.append({"provider": name, "kind": "ssh-key", "id": r.id, "owner": r.owner})
            except errors.KcloudError as exc:
                standing.append(f"{name} ssh-key {r.name} ({exc.line()})")
    return removed, standing


def _wait_gone(provider, ids: list[str], timeout: float = 120) -> list[tuple[str, str]]:
    """Until the listing shows them terminated or gone; what still stands at the deadline
    (terminating counts as gone: the cloud accepted the terminate)."""
    from kcloud.providers.base import TERMINATING
    if not ids:
        return []
    deadline = time.monotonic() + timeout
    while True:
        try:
            alive = [i for i in provider.instances() if i.id in ids and i.state != TERMINATED]
        except (errors.TransientError, errors.RateLimited):
            alive = None
        if alive == []:
            return []
        if time.monotonic() >= deadline:
            return [(i.id, i.status) for i in alive or [] if i.state != TERMINATING]
        time.sleep(1)


def register(sub) -> None:
    c = sub.add_parser("cloud-list-all", help="everything in the accounts that carries kcloud's marks, "
                                              "by owning directory, with cost so far")
    c.add_argument("--output", choices=["text", "json"], default="text")
    c.set_defaults(func=cmd_cloud_list_all)
    o = sub.add_parser("orphans", help="what deleted kcloud directories left in the accounts "
                                       "(--terminate --yes removes it)")
    o.add_argument("--terminate", action="store_true", help="remove them (with --yes)")
    o.add_argument("--yes", action="store_true", help="really remove what is shown")
    o.add_argument("--output", choices=["text", "json"], default="text")
    o.set_defaults(func=cmd_orphans)
