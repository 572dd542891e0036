"""One plan over several providers (issue 8): the shared GPU-class ladder (data/shared/
gpu_ladder.yaml) ranks every provider's types in one order; candidates are ordered by class,
then price, then the region closest to the user. A provider is one more column of the ladder
in data -- no code here names one.

    p = ladder.plan("H100_OR_LESS", {"lambdalabs": cat1, "datacrunch": cat2}, max_price=None)
    p.candidates      # [Candidate(type, region, tier=class, price, provider), ...]
    ladder.trace(p)   # both clouds' checks in one ordered list
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from kcloud import datafile, geo, tiers
from kcloud.catalog import Catalog
from kcloud.errors import ConfigError

LADDER_FILE = Path(__file__).resolve().parent / "data" / "shared" / "gpu_ladder.yaml"


def ladder() -> dict:
    return datafile.load(LADDER_FILE)


def group_names() -> list[str]:
    return list(ladder()["groups"])


def check_group(text: str) -> str:
    key = tiers.group_key(text)
    if key.startswith("ANY_"):
        key = key[4:]
    if key not in ladder()["groups"]:
        raise ConfigError(f"unknown cross-provider group '{text}'",
                          hint="groups: " + ", ".join(g.lower().replace("_", "-") for g in group_names()))
    return key


def classes_of(provider: str, type_name: str, gpus: int | None = None) -> int | None:
    """The ladder rank of a provider's type (0 = best), or None when no class names it."""
    for rank, cls in enumerate(ladder()["classes"]):
        for pattern in cls.get(provider, []):
            counts = [gpus] if gpus else range(1, 9)
            if any(fnmatch.fnmatchcase(type_name, pattern.replace("{n}", str(n))) for n in counts):
                return rank
    return None


@dataclass
class Check:
    provider: str
    instance_type: str
    regions: tuple[str, ...]
    price: float
    note: str = ""


@dataclass
class CrossPlan:
    group: str
    label: str
    providers: list[str]
    tiers: list[tuple[str, list[Check]]] = field(default_factory=list)
    candidates: list[tiers.Candidate] = field(default_factory=list)
    location: geo.Location | None = None
    skipped: dict[str, str] = field(default_factory=dict)      # provider -> why it is not in the plan


def plan(group: str, catalogs: dict[str, Catalog], max_price: float | None = None, location=tiers._INFER,
         skipped: dict[str, str] | None = None) -> CrossPlan:
    key = check_group(group)
    spec = ladder()["groups"][key]
    result = CrossPlan(key, "any-" + key.lower().replace("_", "-"), sorted(catalogs), skipped=dict(skipped or {}))
    if location is tiers._INFER:
        location = geo.assumed()
    result.location = location
    km: dict[tuple[str, str], float] = {}
    for prov, cat in catalogs.items():
        p = tiers.plan(prov, tiers.Selection(tiers.CHEAPEST), cat, location)
        for i, (region, dist) in enumerate(p.distances.items()):
            km[(prov, region)] = dist if dist is not None else 1e6 + i
    classes = ladder()["classes"]
    if spec.get("cheapest"):
        rows = []
        for prov, cat in catalogs.items():
            for name, t in cat.types.items():
                if t.gpu_count > 0:
                    rows.append(("cheapest", prov, name))
        order = [("cheapest", rows)]
    else:
        start = [c["name"] for c in classes].index(spec["from"])
        order = []
        for cls in classes[start:]:
            rows = [(cls["name"], prov, name) for prov, cat in catalogs.items() for name in cat.types
                    if any(fnmatch.fnmatchcase(name, pat.replace("{n}", str(spec["gpus"])))
                           for pat in cls.get(prov, []))]
            order.append((cls["name"], rows))
    for tier, rows in order:
        checks = []
        for _tier, prov, name in rows:
            cat = catalogs[prov]
            price = cat.types[name].price_per_hour
            regions = tuple(sorted(cat.available_regions(name), key=lambda r, p=prov: km.get((p, r), 1e9)))
            note = ""
            if regions and max_price is not None and price > max_price:
                note = f"over the ${max_price:.2f}/h price ceiling"
            checks.append(Check(prov, name, regions, price, note))
        checks.sort(key=lambda c: (c.price, c.provider, c.instance_type))
        result.tiers.append((tier, checks))
        cands = [tiers.Candidate(c.instance_type, r, tier, c.price, c.provider)
                 for c in checks if not c.note for r in c.regions]
        cands.sort(key=lambda c: (c.price, km.get((c.provider, c.region), 1e9)))
        result.candidates += cands
    return result


def trace(p: CrossPlan, full: bool = False) -> list[str]:
    lines = [f"Checking tier group across providers: {p.label} ({', '.join(p.providers) or 'none'})"]
    for prov, why in sorted(p.skipped.items()):
        lines.append(f"  {prov}: skipped ({why})")
    if p.tiers and p.tiers[0][0] != "cheapest":
        lines.append(f"Tiers to check (highest to lowest): {', '.join(t for t, _ in p.tiers)}")
    for tier, checks in p.tiers:
        if not checks:
            continue
        lines += ["", f"Checking tier '{tier}':"]
        found = False
        for c in checks:
            status = (f"- skipped, {c.note}" if c.note else
                      f"\u2713 AVAILABLE in {', '.join(c.regions)}" if c.regions else "\u2717 not available")
            found |= bool(c.regions) and not c.note
            lines.append(f"  Checking {c.provider}:{c.instance_type} (${c.price:.2f}/h)... {status}")
        if found and not full:
            break
    lines.append("")
    if p.candidates:
        first = p.candidates[0]
        lines.append(f"Selected: {first.provider}:{first.instance_type} in {first.region} (tier: {first.tier})")
        if len(p.candidates) > 1:
            lines.append(f"Fallback candidates if the launch loses the race: {len(p.candidates) - 1} "
                         f"(on {', '.join(sorted({c.provider for c in p.candidates}))})")
    return lines


def blocks(candidates: list) -> list[tuple[str, list]]:
    """Consecutive candidates of one provider: each block is one launch walk on that cloud; a
    capacity failure of the whole block falls over to the next (possibly another cloud)."""
    out: list[tuple[str, list]] = []
    for c in candidates:
        if out and out[-1][0] == c.provider:
            out[-1][1].append(c)
        else:
            out.append((c.provider, [c]))
    return out
