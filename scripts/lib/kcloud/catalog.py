"""The normalized catalog: one shape for every provider (after gpuhunt's CatalogItem).

A Catalog is what `make cloud-config` renders into Kconfig and what the planner ranks.
It round-trips through YAML so the shipped offline snapshot is the same object.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: str                # GPU model as the provider describes it, e.g. "H100 (80 GB SXM5)"
    gpu_count: int
    gpu_memory_gb: int      # per GPU; 0 for CPU-only types
    vcpus: int
    memory_gb: int
    price_per_hour: float   # USD, on demand
    description: str = ""


@dataclass(frozen=True)
class Image:
    id: str                 # what the launch call takes
    name: str
    family: str = ""
    regions: tuple[str, ...] = ()   # empty: every region


@dataclass(frozen=True)
class Offer:
    """One (type, region) pair with its capacity as last seen."""

    type: InstanceType
    region: str
    available: bool

    @property
    def price(self) -> float:
        return self.type.price_per_hour


@dataclass
class Catalog:
    provider: str
    types: dict[str, InstanceType]
    regions: dict[str, str]                      # code -> description
    capacity: dict[str, tuple[str, ...]]         # type -> regions with capacity now
    images: list[Image] = field(default_factory=list)
    source: str = "live"                         # "live" or "offline snapshot"

    def available_regions(self, type_name: str) -> tuple[str, ...]:
        return self.capacity.get(type_name, ())

    def offers(self, type_name: str) -> list[Offer]:
        """Every region for this type, available ones first (region order kept otherwise)."""
        itype = self.types[type_name]
        up = self.available_regions(type_name)
        return ([Offer(itype, r, True) for r in up] +
                [Offer(itype, r, False) for r in self.regions if r not in up])

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "types": [asdict(t) for t in self.types.values()],
            "regions": dict(self.regions),
            "capacity": {k: list(v) for k, v in self.capacity.items() if v},
            "images": [{**asdict(i), "regions": list(i.regions)} for i in self.images],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "offline snapshot") -> "Catalog":
        return cls(
            provider=data["provider"],
            types={t["name"]: InstanceType(**t) for t in data.get("types", [])},
            regions=dict(data.get("regions", {})),
            capacity={k: tuple(v) for k, v in (data.get("capacity") or {}).items()},
            images=[Image(**{**i, "regions": tuple(i.get("regions", ()))}) for i in data.get("images", [])],
            source=source,
        )
