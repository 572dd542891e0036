"""`make cost` / `kcloud cost [--all] [--output json]`: what every instance a directory launched
cost, from the directory's own records, never from today's catalog.

Sources: `.kcloud/history.jsonl` (the journals of finished bringup/destroy cycles, moved there by
destroy) and `.kcloud/journal.jsonl` (the cycle in progress). Per instance:

  price   the API's price of the running instance (`active` event), else the plan's price
          journalled with the launch (`launched`); none recorded: shown as unknown, not totalled
  start   the provider bills from the moment it accepted the launch: the `launched` event (written
          when the answer came back); when that answer was lost and the machine found later,
          the `launch` event written before the call; `billing.start: active` in the data file:
          the `active` event
  end     the terminate the provider accepted: the last `terminate` event before `terminated`
          (or terraform's, which waits for the termination itself); none: still running, and
          the cost is the cost so far
  billed  every started `billing.increment_s` counts, at least `billing.minimum_s`
          (data/<provider>.yaml), times the price, rounded to the cent

`--all` covers every directory in the registry of this computer (kcloud.launch.registry); a
directory that is gone took its records with it, and `make cloud-list-all` shows what of it
still runs.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from kcloud import providers
from kcloud.launch.journal import Journal

CENT = Decimal("0.01")
DEFAULT_BILLING = {"increment_s": 3600, "minimum_s": 0, "start": "launch"}


def billing_rule(provider: str) -> dict:
    """The provider's billing rule from its data file (an unknown provider: per started hour)."""
    try:
        rule = providers.data(provider).get("billing") or {}
    except Exception:          # a provider name from a foreign or damaged record
        rule = {}
    return {**DEFAULT_BILLING, **rule}


def billed_seconds(duration_ms: int, increment_s: int, minimum_s: int) -> int:
    """Every started increment counts, and at least `minimum_s` once billing has started."""
    increments = -(-max(0, duration_ms) // (int(increment_s) * 1000))
    return max(int(minimum_s), increments * int(increment_s))


def amount(price_per_hour, billed_s: int) -> Decimal:
    """price x billed hours, rounded to the cent, half up."""
    return (Decimal(str(price_per_hour)) * billed_s / 3600).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass
class Bill:
    provider: str
    id: str
    name: str = ""
    instance_type: str = ""
    region: str = ""
    price_per_hour: float | None = None
    price_from: str = ""            # "active" (the API's price) or "launched" (the plan's)
    start_ms: int | None = None
    start_from: str = ""            # the event the start is read from
    end_ms: int | None = None       # None: running (no terminate journalled)
    increment_s: int = 3600
    minimum_s: int = 0
    duration_ms: int = 0
    billed_s: int = 0
    amount: Decimal | None = None   # None: no price recorded
    notes: list = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.end_ms is None

    def public(self) -> dict:
        d = asdict(self)
        d.update(start=iso_ms(self.start_ms), end=iso_ms(self.end_ms), running=self.running,
                 duration_s=self.duration_ms / 1000,
                 amount=None if self.amount is None else float(self.amount))
        for k in ("start_ms", "end_ms", "duration_ms"):
            d.pop(k)
        return d


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def _ms(event: dict) -> int | None:
    t = event.get("time")
    return round(t * 1000) if isinstance(t, (int, float)) and not isinstance(t, bool) else None


def records(root: Path) -> tuple[list[dict], list[str]]:
    """Every journalled event of the directory at `root`, oldest first: history, then the current
    journal (a line copied twice by an interrupted archive counts once). Second: notes about
    damaged lines that were skipped."""
    events, notes, seen = [], [], set()
    for path in (root / ".kcloud" / "history.jsonl", root / ".kcloud" / "journal.jsonl"):
        journal = Journal(path)
        for event in journal.events():
            line = json.dumps(event, sort_keys=True)
            if line not in seen:
                seen.add(line)
                events.append(event)
        if journal.damaged:
            notes.append(f"ignored {journal.damaged} damaged line(s) of {path}")
    events.sort(key=lambda e: _ms(e) or 0)          # stable: equal times keep their order
    return events, notes


def _offered(events: list[dict], bill, launched: dict | None) -> list[dict]:
    """The plan's price for this (type, region), journalled by bringup just before the walk that
    launched it (`offer` events): a machine that never became active still has its launch price."""
    if not launched:
        return []
    key = f"{bill.instance_type}@{bill.region}"
    t = _ms(launched) or 0
    offers = [e for e in events if e.get("event") == "offer" and e.get("provider") == bill.provider
              and (_ms(e) or 0) <= t and isinstance(e.get("prices"), dict)]
    return [{"price_per_hour": offers[-1]["prices"].get(key)}] if offers else []


def bills(events: list[dict], now_ms: int | None = None) -> list[Bill]:
    """One Bill per instance the events show launched (or adopted), in launch order."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    by_run: dict[str, dict[str, dict]] = {}
    by_id: dict[str, list[dict]] = {}
    for e in events:
        if e.get("run") and e.get("event") in ("launch", "launched", "found"):
            by_run.setdefault(e["run"], {}).setdefault(e["event"], e)
        if e.get("id") and e.get("event") in ("launched", "found", "adopt", "active", "terminate", "terminated"):
            by_id.setdefault(e["id"], []).append(e)
    out = []
    for iid, evs in by_id.items():
        kinds: dict[str, list[dict]] = {}
        for e in evs:
            kinds.setdefault(e["event"], []).append(e)
        if not ({"launched", "found", "adopt", "active"} & set(kinds)):
            continue                      # a terminate of something launched elsewhere
        launched = (kinds.get("launched") or [None])[0]
        found = (kinds.get("found") or [None])[0]
        run = (launched or found or {}).get("run")
        launch = by_run.get(run, {}).get("launch") if run else None
        active = kinds.get("active", [])
        provider = next((e["provider"] for e in evs if e.get("provider")), "")
        rule = billing_rule(provider)
        first = lambda key: next((e[key] for e in [*active, launched or {}, launch or {}, *evs]  # noqa: E731
                                  if isinstance(e.get(key), str) and e.get(key)), "")
        bill = Bill(provider, iid, name=first("name"), instance_type=first("instance_type"), region=first("region"),
                    increment_s=int(rule["increment_s"]), minimum_s=int(rule["minimum_s"]))
        # Price recorded at launch: the API's price of the running instance, else the plan's.
        for source, candidates in (("active", active), ("launched", [launched] if launched else []),
                                   ("offer", _offered(events, bill, launched or found))):
            prices = [e.get("price_per_hour") for e in candidates]
            prices = [p for p in prices if isinstance(p, (int, float)) and not isinstance(p, bool) and p > 0]
            if prices:
                bill.price_per_hour, bill.price_from = float(prices[-1]), source
                break
        # Start: when the provider accepted the launch (or the instance became active).
        if rule.get("start") == "active":
            bill.start_ms, bill.start_from = (_ms(active[0]), "active") if active else (None, "")
        elif found and launch:
            bill.start_ms, bill.start_from = _ms(launch), "launch"    # the answer was lost: sent then
        elif launched:
            bill.start_ms, bill.start_from = _ms(launched), "launched"
        elif launch:
            bill.start_ms, bill.start_from = _ms(launch), "launch"
        elif kinds.get("adopt"):
            bill.start_ms, bill.start_from = _ms(kinds["adopt"][0]), "adopt"
            bill.notes.append("adopted: its launch is not in this directory's records (start = adoption)")
        elif active:
            bill.start_ms, bill.start_from = _ms(active[0]), "active"
        # End: the terminate the provider accepted.
        terminates, terminated = kinds.get("terminate", []), kinds.get("terminated", [])
        if terminated:
            confirmed = _ms(terminated[0])
            before = [_ms(e) for e in terminates if (_ms(e) or 0) <= (confirmed or 0)]
            bill.end_ms = max(before) if before else confirmed
        else:
            by_terraform = [_ms(e) for e in terminates if e.get("source") == "terraform"]
            if by_terraform:
                bill.end_ms = max(by_terraform)
            elif terminates:
                bill.notes.append("a terminate was sent but never confirmed: counted as running; "
                                  "make status asks the API")
        if bill.start_ms is not None:
            bill.duration_ms = max(0, (now_ms if bill.end_ms is None else bill.end_ms) - bill.start_ms)
            bill.billed_s = billed_seconds(bill.duration_ms, bill.increment_s, bill.minimum_s)
        if bill.price_per_hour is not None:
            bill.amount = amount(bill.price_per_hour, bill.billed_s)
        else:
            bill.notes.append("no launch price recorded: not in the total")
        out.append(bill)
    out.sort(key=lambda b: (b.start_ms is None, b.start_ms or 0))
    return out


def directory_cost(root: Path, project_id: str | None, state: str = "here", now_ms: int | None = None) -> dict:
    """The cost report of one directory (what --output json prints per directory)."""
    if state != "here":
        return {"id": project_id, "path": str(root), "state": state, "instances": [], "total": 0.0, "running": 0,
                "notes": ["the directory is gone and its records with it: make cloud-list-all shows what of it "
                          "still runs"]}
    events, notes = records(root)
    found = bills(events, now_ms)
    total = sum((b.amount for b in found if b.amount is not None), Decimal(0))
    return {"id": project_id, "path": str(root), "state": state, "instances": [b.public() for b in found],
            "total": float(total), "running": sum(1 for b in found if b.running), "notes": notes}


def _when(iso: str | None) -> str:
    return iso[:19].replace("T", " ") if iso else "-"


def _billed(seconds: int) -> str:
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m" + (f"{s:02d}s" if s else "")
    return f"{m}m" + (f"{s:02d}s" if s else "") if m else f"{s}s"


def text_lines(report: dict) -> list[str]:
    lines = []
    for d in report["directories"]:
        label = {"here": "", "deleted": "  DELETED", "unknown": "  NOT A KCLOUD DIRECTORY"}.get(d["state"], "")
        lines.append(f"{d['path']} (directory id {d['id'] or 'none yet'}){label}")
        lines += [f"  {n}" for n in d["notes"]]
        if d["state"] != "here":
            lines.append("")
            continue
        if not d["instances"]:
            lines.append("  no instance launched from this directory (nothing in .kcloud/history.jsonl or journal)")
            lines.append("")
            continue
        lines.append(f"  {'PROVIDER':11} {'TYPE':22} {'REGION':14} {'$/H':>7}  {'START (UTC)':19}  "
                     f"{'END (UTC)':19}  {'BILLED':>8} {'COST':>9}  ID")
        for b in d["instances"]:
            price = f"{b['price_per_hour']:7.2f}" if b["price_per_hour"] is not None else f"{'?':>7}"
            cost = f"${b['amount']:.2f}" if b["amount"] is not None else "?"
            lines.append(f"  {b['provider']:11} {b['instance_type'][:22]:22} {b['region'][:14]:14} {price}  "
                         f"{_when(b['start']):19}  {'running' if b['running'] else _when(b['end']):19}  "
                         f"{_billed(b['billed_s']):>8} {cost:>9}  {b['id']}")
            lines += [f"    ({n})" for n in b["notes"]]
        rules = sorted({(b["provider"], b["increment_s"], b["minimum_s"]) for b in d["instances"]})
        lines.append(f"  Total: ${d['total']:.2f} for {len(d['instances'])} instance(s)"
                     + (f", {d['running']} running (cost so far)" if d["running"] else "")
                     + "; billed per " + ", ".join(f"{p} {_billed(inc)}" + (f" (minimum {_billed(mn)})" if mn else "")
                                                   for p, inc, mn in rules))
        lines.append("")
    if len(report["directories"]) > 1:
        lines.append(f"All directories: ${report['total']:.2f}")
    elif lines and not lines[-1]:
        lines.pop()
    return lines


def report(all_dirs: bool, now_ms: int | None = None) -> dict:
    from kcloud.bringup.project import Project
    from kcloud.launch import registry
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    here = Project.here()
    here_id = here.identity()
    dirs: list[tuple[Path, str | None, str]] = []
    if all_dirs:
        known = registry.load()
        for pid, root in sorted(known.items(), key=lambda kv: kv[1]):
            dirs.append((Path(root), pid, registry.owner_state(pid)))
        if here_id not in known and ((here.state_dir / "history.jsonl").exists() or here.journal_path.exists()):
            dirs.insert(0, (here.root, here_id, "here"))      # launched before the registry existed
    else:
        dirs.append((here.root, here_id, "here"))
    directories = [directory_cost(root, pid, state, now_ms) for root, pid, state in dirs]
    total = sum((Decimal(str(d["total"])) for d in directories), Decimal(0))
    return {"directories": directories, "total": float(total), "time": iso_ms(now_ms)}


def cmd_cost(args) -> int:
    result = report(args.all)
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(text_lines(result)) or "No kcloud directory recorded on this computer.")
    return 0


def register(sub) -> None:
    c = sub.add_parser("cost", help="every instance this directory launched: launch price, billed time, "
                                    "cost (--all: every directory)")
    c.add_argument("--all", action="store_true", help="every kcloud directory recorded on this computer")
    c.add_argument("--output", choices=["text", "json"], default="text")
    c.set_defaults(func=cmd_cost)
