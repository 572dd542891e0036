"""Turn what the user asked for (type, tier group, wildcard, cheapest) into ordered candidates.

Order: tier order first, then price, then the region closest to the user (kcloud.geo: the
location comes from KCLOUD_LOCATION or the system time zone, never from a third party; the
provider's `region_preference` breaks ties and orders regions when the location is unknown).
Only (type, region) pairs with capacity become candidates; the trace records every check and
which location was assumed, and why, for the verbose output.

Every Kconfig region mode lands here as `Selection.region`: a pinned region (Lambda's
REGION_MANUAL, a DataCrunch location) is the only region; "" (Lambda's REGION_SMART_CHEAPEST
and REGION_SMART_INFER, DataCrunch's LOCATION_AUTO) means the closest region with capacity.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from kcloud import geo
from kcloud.catalog import Catalog
from kcloud.errors import ConfigError
from kcloud.providers import data as provider_data

EXPLICIT, GROUP, WILDCARD, CHEAPEST = "type", "group", "wildcard", "cheapest"
MAX_REGIONS_IN_TRACE = 6


@dataclass(frozen=True)
class Selection:
    kind: str                      # EXPLICIT, GROUP, WILDCARD or CHEAPEST
    value: str = ""                # type name, group or wildcard name
    region: str = ""               # "" = any region, closest to the user first
    max_price: float | None = None  # USD/h ceiling, None = no ceiling


@dataclass(frozen=True)
class Candidate:
    instance_type: str
    region: str
    tier: str
    price: float
    provider: str = ""             # set by cross-provider plans (kcloud.ladder); "" = the plan's own


@dataclass
class TypeCheck:
    instance_type: str
    regions: tuple[str, ...]       # regions with capacity (after the region policy), closest first
    note: str = ""                 # why it was skipped although available, e.g. price ceiling
    elsewhere: tuple[str, ...] = ()  # with a pinned region: regions that have capacity instead


@dataclass
class Plan:
    provider: str
    selection: Selection
    label: str                                  # e.g. "h100-or-less", "1B300.30V"
    tiers: list[tuple[str, list[TypeCheck]]] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    location: geo.Location | None = None        # where the user was assumed to be
    location_note: str = ""                     # why no location was assumed (when None)
    distances: dict[str, float | None] = field(default_factory=dict)   # region -> km from location


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


def label_of(selection: Selection) -> str:
    """How messages name a selection: groups and wildcards as the CLI takes them
    ("h100-or-less"), an instance type exactly as the API and every command spell it."""
    if selection.kind == CHEAPEST:
        return "cheapest"
    if selection.kind == EXPLICIT:
        return selection.value
    return selection.value.lower().replace("_", "-")


_INFER = object()


def plan(provider: str, selection: Selection, catalog: Catalog, location=_INFER) -> Plan:
    """Ordered candidates from the catalog's capacity (call with a fresh catalog at launch).

    `location`: a geo.Location, None (unknown: region preference only), or left out to
    assume one now (KCLOUD_LOCATION, else the system time zone; geo.assumed)."""
    d = provider_data(provider)
    preference = d.get("region_preference", [])
    result = Plan(provider, selection, label_of(selection))
    if selection.region and selection.region not in catalog.regions:
        raise ConfigError(f"{provider}: unknown region '{selection.region}'",
                          hint=f"regions: {', '.join(sorted(catalog.regions))}")
    if location is _INFER:
        location = geo.assumed()
        if location is None:
            result.location_note = geo.unknown_reason()
    elif location is None:
        result.location_note = "no location given"
    result.location = location
    coordinates = {code: (float(lat), float(lon))
                   for code, (lat, lon) in (d.get("region_coordinates") or {}).items()}
    known = set(catalog.regions) | {r for n in catalog.types for r in catalog.available_regions(n)}
    ranked = geo.rank(known, location, preference, coordinates)
    result.distances = dict(ranked)
    order = {code: i for i, (code, _km) in enumerate(ranked)}
    closest_first = lambda regions: tuple(sorted(regions, key=lambda r: order.get(r, len(order))))  # noqa: E731
    for tier, names in tiers_of(provider, selection, catalog):
        checks = []
        for name in names:
            available = closest_first(catalog.available_regions(name))
            regions, elsewhere = available, ()
            if selection.region:
                regions = tuple(r for r in available if r == selection.region)
                elsewhere = tuple(r for r in available if r != selection.region)
            price = catalog.types[name].price_per_hour
            note = ""
            if regions and selection.max_price is not None and price > selection.max_price:
                note = f"over the ${selection.max_price:.2f}/h price ceiling"
            checks.append(TypeCheck(name, regions, note, elsewhere))
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
    lines += location_lines(p)
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


def _km(km: float | None) -> str:
    return f"{km:,.0f} km" if km is not None else "distance unknown"


def location_lines(p: Plan) -> list[str]:
    """Which region policy applied: the pinned region, or the assumed location and why."""
    if p.selection.region:
        return [f"Region: {p.selection.region} only (pinned in .config)"]
    if p.location is None:
        return [f"Location: unknown ({p.location_note}); regions in the provider's preference order "
                f"(set {geo.ENV}=<lat,lon or region> to rank them by distance)"]
    shown = list(p.distances.items())[:MAX_REGIONS_IN_TRACE]
    more = len(p.distances) - len(shown)
    return [f"Location: assumed near {p.location.describe()}; set {geo.ENV}=<lat,lon or region> to change it",
            "Regions, closest first: " + ", ".join(f"{code} ({_km(km)})" for code, km in shown) +
            (f", +{more} more" if more > 0 else "")]


def capacity_elsewhere(p: Plan) -> list[str]:
    """With a pinned region: the regions where the selection's types have capacity, closest first."""
    found = {r for _, checks in p.tiers for c in checks if not c.note for r in c.elsewhere}
    return [r for r in p.distances if r in found] + sorted(found - set(p.distances))


def no_capacity_advice(p: Plan) -> str:
    checked = sum(len(c) for _, c in p.tiers)
    if p.selection.region:
        elsewhere = capacity_elsewhere(p)
        what = f"tier group {p.label}" if p.selection.kind == GROUP else p.label
        if elsewhere:
            return (f"no capacity for {what} in {p.selection.region} (pinned); capacity now in: "
                    f"{', '.join(elsewhere)}: pick one of them or a smart region mode with make menuconfig")
        return (f"no capacity for {what} in {p.selection.region} (pinned), nor in any other region: "
                "try a wider tier group, or wait and retry (capacity changes by the minute)")
    if p.selection.kind == GROUP:
        return (f"no capacity for any of {checked} instance types in tier group {p.label}: "
                "try a wider tier group, wait and retry (capacity changes by the minute), "
                "or run 'make cloud-config' to see what is available")
    return (f"no capacity for {p.label} in any region: "
            "try a tier group (e.g. h100-or-less) or a wildcard, or wait and retry")
