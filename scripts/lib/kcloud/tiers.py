"""Turn what the user asked for (type, tier group, wildcard, cheapest) into ordered candidates.

Order: tier order first, then price, then region preference. Only (type, region) pairs
with capacity become candidates; the trace records every check for the verbose output.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from kcloud.catalog import Catalog
from kcloud.errors import ConfigError
from kcloud.providers import data as provider_data

EXPLICIT, GROUP, WILDCARD, CHEAPEST = "type", "group", "wildcard", "cheapest"


@dataclass(frozen=True)
class Selection:
    kind: str                      # EXPLICIT, GROUP, WILDCARD or CHEAPEST
    value: str = ""                # type name, group or wildcard name
    region: str = ""               # "" = any region, in preference order
    max_price: float | None = None  # USD/h ceiling, None = no ceiling


@dataclass(frozen=True)
class Candidate:
    instance_type: str
    region: str
    tier: str
    price: float


@dataclass
class TypeCheck:
    instance_type: str
    regions: tuple[str, ...]       # regions with capacity (after the region policy)
    note: str = ""                 # why it was skipped although available, e.g. price ceiling


@dataclass
class Plan:
    provider: str
    selection: Selection
    label: str                                  # e.g. "h100-or-less"
    tiers: list[tuple[str, list[TypeCheck]]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)


def group_key(text: str) -> str:
    """'h100-or-less', 'H100_OR_LESS' and '8x-h100-or-less' all name a group the same way."""
    return text.strip().upper().replace("-", "_")


def parse(provider: str, text: str, region: str = "", max_price: float | None = None) -> Selection:
    """A selection from a word: a tier group, a wildcard, 'cheapest' or an instance type name."""
    d = provider_data(provider)
    key = group_key(text)
    if key in d["tier_groups"]:
        return Selection(GROUP, key, region, max_price)
    if key in d.get("wildcards", {}):
        return Selection(WILDCARD, key, region, max_price)
    if key == "CHEAPEST":
        return Selection(CHEAPEST, "", region, max_price)
    return Selection(EXPLICIT, text.strip(), region, max_price)


def list_groups(provider: str) -> list[tuple[str, str, list[str]]]:
    """(cli name, help, tier names) for every tier group and wildcard."""
    d = provider_data(provider)
    rows = [(name.lower().replace("_", "-"), g.get("help", ""), _group_tiers(d, name))
            for name, g in d["tier_groups"].items()]
    rows += [(name.lower().replace("_", "-"), w.get("help", ""), w["patterns"])
             for name, w in d.get("wildcards", {}).items()]
    return rows


def _group_tiers(d: dict, group: str) -> list[str]:
    g = d["tier_groups"][group]
    tiers = list(d["hierarchies"][g["hierarchy"]])
    return tiers[tiers.index(g["from"]):]


def _matching(catalog: Catalog, patterns: list[str]) -> list[str]:
    return [n for n in catalog.types if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def tiers_of(provider: str, selection: Selection, catalog: Catalog) -> list[tuple[str, list[str]]]:
    """The tiers to check, highest first, each with its instance types (cheapest first)."""
    d = provider_data(provider)
    by_price = lambda names: sorted(names, key=lambda n: (catalog.types[n].price_per_hour, n))  # noqa: E731
    if selection.kind == GROUP:
        hierarchy = d["hierarchies"][d["tier_groups"][selection.value]["hierarchy"]]
        return [(tier, by_price(_matching(catalog, hierarchy[tier])))
                for tier in _group_tiers(d, selection.value)]
    if selection.kind == WILDCARD:
        return [(selection.value.lower(), by_price(_matching(catalog, d["wildcards"][selection.value]["patterns"])))]
    if selection.kind == CHEAPEST:
        return [("cheapest", by_price([n for n, t in catalog.types.items() if t.gpu_count > 0]))]
    if selection.value not in catalog.types:
        known = ", ".join(sorted(catalog.types)[:6])
        groups = ", ".join(r[0] for r in list_groups(provider))
        raise ConfigError(f"{provider}: unknown instance type or tier group '{selection.value}'",
                          hint=f"tier groups: {groups}; types look like {known}, ...")
    return [(selection.value, [selection.value])]


def plan(provider: str, selection: Selection, catalog: Catalog) -> Plan:
    """Ordered candidates from the catalog's capacity (call with a fresh catalog at launch)."""
    preference = provider_data(provider).get("region_preference", [])
    rank = {r: i for i, r in enumerate(preference)}
    label = selection.value.lower().replace("_", "-") if selection.kind != CHEAPEST else "cheapest"
    result = Plan(provider, selection, label)
    if selection.region and selection.region not in catalog.regions:
        raise ConfigError(f"{provider}: unknown region '{selection.region}'",
                          hint=f"regions: {', '.join(sorted(catalog.regions))}")
    for tier, names in tiers_of(provider, selection, catalog):
        checks = []
        for name in names:
            regions = catalog.available_regions(name)
            if selection.region:
                regions = tuple(r for r in regions if r == selection.region)
            regions = tuple(sorted(regions, key=lambda r: (rank.get(r, len(rank)), r)))
            price = catalog.types[name].price_per_hour
            note = ""
            if regions and selection.max_price is not None and price > selection.max_price:
                note = f"over the ${selection.max_price:.2f}/h price ceiling"
            checks.append(TypeCheck(name, regions, note))
            if not note:
                result.candidates += [Candidate(name, r, tier, price) for r in regions]
        result.tiers.append((tier, checks))
    return result


def trace(p: Plan, full: bool = False) -> list[str]:
    """The verbose selection output of the seeds. Stops after the first tier with a candidate
    unless `full`; the remaining candidates are still the failover list."""
    sel = p.selection
    what = {GROUP: "tier group", WILDCARD: "wildcard", CHEAPEST: "mode", EXPLICIT: "instance type"}[sel.kind]
    lines = [f"Checking {what}: {p.label}"]
    if sel.kind == GROUP:
        lines.append(f"Tiers to check (highest to lowest): {', '.join(t for t, _ in p.tiers)}")
    if sel.region:
        lines.append(f"Region: {sel.region} only")
    for tier, checks in p.tiers:
        lines += ["", f"Checking tier '{tier}': {', '.join(c.instance_type for c in checks) or '(no such types)'}"]
        found = False
        for c in checks:
            if c.note:
                status = f"- skipped, {c.note}"
            elif c.regions:
                found = True
                status = f"\u2713 AVAILABLE in {', '.join(c.regions)}"
            else:
                status = "\u2717 not available"
            lines.append(f"  Checking {c.instance_type}... {status}")
        if found and not full:
            break
    lines.append("")
    if p.candidates:
        first = p.candidates[0]
        lines.append(f"Selected: {first.instance_type} in {first.region} (tier: {first.tier})")
        if len(p.candidates) > 1:
            lines.append(f"Fallback candidates if the launch loses the race: {len(p.candidates) - 1}")
    return lines


def no_capacity_advice(p: Plan) -> str:
    checked = sum(len(c) for _, c in p.tiers)
    if p.selection.kind == GROUP:
        return (f"no capacity for any of {checked} instance types in tier group {p.label}: "
                "try a wider tier group, wait and retry (capacity changes by the minute), "
                "or run 'make cloud-config' to see what is available")
    return (f"no capacity for {p.label}"
            f"{' in ' + p.selection.region if p.selection.region else ' in any region'}: "
            "try a tier group (e.g. h100-or-less) or a wildcard, or wait and retry")
