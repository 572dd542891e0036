"""Free machines per (instance type, region): launch takes one, termination gives it back.

Capacity is set by ordered rules `{type, region, count}`; later rules override
earlier ones. `type` is a case-insensitive glob over the catalog's type names.
A `region` glob ranges over the regions where the catalog sells that type; a
literal region may be any region of the provider.
"""

from __future__ import annotations

import fnmatch
from typing import Any

RULE_KEYS = {"type", "region", "count"}


def check_rule(rule: Any) -> dict:
    """Validate one capacity rule; returns it normalized."""
    if not isinstance(rule, dict) or set(rule) != RULE_KEYS:
        raise ValueError(f"capacity rule must have exactly type, region, count: {rule!r}")
    count = rule["count"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ValueError(f"capacity count must be an integer >= 0: {rule!r}")
    return {"type": str(rule["type"]), "region": str(rule["region"]), "count": count}


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


class Capacity:
    """One provider's counts. Not locked itself: the emulator state's lock guards it."""

    def __init__(self, catalog: dict, rules: list[dict]) -> None:
        self.regions = list(catalog["regions"])
        self.sold = {name: list(t.get("regions", [])) for name, t in catalog["types"].items()}
        self.counts: dict[str, dict[str, int]] = {name: {} for name in self.sold}
        for rule in rules:
            self.apply(rule)

    def cells(self, type_glob: str, region: str, what: str = "capacity rule") -> list[tuple[str, str]]:
        """The (type, region) cells a type glob and a region (glob or literal) name, in catalog order."""
        types = [t for t in self.sold if fnmatch.fnmatch(t.lower(), str(type_glob).lower())]
        if not types:
            raise ValueError(f"{what} matches no instance type: {type_glob!r}")
        region = str(region)
        if not _is_glob(region) and region not in self.regions:
            raise ValueError(f"{what} names an unknown region: {region!r}")
        out = []
        for name in types:
            targets = [r for r in self.sold[name] if fnmatch.fnmatchcase(r, region)] if _is_glob(region) else [region]
            out.extend((name, r) for r in targets)
        return out

    def apply(self, rule: dict) -> int:
        """Apply one rule; returns how many (type, region) cells it set."""
        rule = check_rule(rule)
        try:
            cells = self.cells(rule["type"], rule["region"])
        except ValueError as exc:
            raise ValueError(f"{exc}: {rule}") from None
        for cell in cells:
            self.set(cell, rule["count"])
        return len(cells)

    def set(self, cell: tuple[str, str], count: int) -> None:
        self.counts[cell[0]][cell[1]] = count

    def count(self, type_name: str, region: str) -> int:
        return self.counts.get(type_name, {}).get(region, 0)

    def available_regions(self, type_name: str) -> list[str]:
        """Regions with a free machine of this type, in catalog order."""
        return [r for r in self.regions if self.count(type_name, r) > 0]

    def take(self, type_name: str, region: str) -> bool:
        if self.count(type_name, region) <= 0:
            return False
        self.counts[type_name][region] -= 1
        return True

    def give(self, type_name: str, region: str) -> None:
        self.counts[type_name][region] = self.count(type_name, region) + 1

    def snapshot(self) -> dict:
        return {t: dict(sorted(c.items())) for t, c in self.counts.items() if c}
