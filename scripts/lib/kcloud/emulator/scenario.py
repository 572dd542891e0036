"""Scenario files: what the emulated clouds sell, how much of it is free, and what goes wrong.

A scenario is YAML (see README.md), named by a bare name (a file in
scenarios/) or a path. It may `extends:` another scenario; the
merge is deep for mappings, appends the `capacity`, `faults`, `market.schedule`
and `market.random.windows` lists (so a derived scenario adds entries after its
parent's), and replaces everything else.
Unknown keys are errors, so a typo cannot silently leave a fault out of a test.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .capacity import Capacity
from .faults import parse_faults
from .market import Market, parse_market

HERE = Path(__file__).resolve().parent
SCENARIO_DIR = HERE / "scenarios"
CATALOG_DIR = HERE / "catalog"
PROVIDERS = ("lambdalabs", "datacrunch")
APPENDED_LISTS = ("capacity", "faults")
MERGE_APPENDED = (*APPENDED_LISTS, "schedule", "windows")  # `extends` appends these lists
BILLING_STARTS = ("launch", "active")


class ScenarioError(ValueError):
    """A scenario or catalog file is missing or malformed."""


def _provider_defaults(catalog: str, credentials: dict, increment_s: int, **extra: Any) -> dict:
    return {
        "catalog": catalog,
        "types": {},  # free-form: per-type overrides merged onto catalog entries
        "capacity": [],
        "market": {"schedule": [], "random": None},  # validated by market.parse_market
        "billing": {"increment_s": increment_s, "minimum_s": 0, "start": "launch"},
        "latency_ms": 0,
        "rate_limits": {
            "enabled": False,
            "general": {"requests": 1, "per_seconds": 1.0},
            "launch": {"requests": 1, "per_seconds": 12.0},
        },
        "credentials": credentials,
        "faults": [],
        **extra,
    }


# Every scenario is merged over these; they double as the schema of known keys.
DEFAULTS: dict = {
    "description": "",
    "lifecycle": {
        "order_delay": 0.5,
        "boot_delay": 3.0,
        "install_delay": 2.0,  # DataCrunch: added to the first boot from a fresh OS volume
        "terminate_delay": 1.0,
        "startup_timeout": 60.0,  # bound on a startup script (user_data / startup_script_id)
    },
    "clock": {"time_scale": 1.0},  # emulator (market) seconds per real second
    "ssh": {"port": None, "address_base": "random"},
    # Lambda bills per minute (contract 1.5); DataCrunch's increment is not in the contract (README).
    "lambdalabs": _provider_defaults("lambdalabs", {"api_keys": ["emulator-key"]}, 60),
    "datacrunch": _provider_defaults(
        "datacrunch",
        {
            "client_id": "emulator-client",
            "client_secret": "emulator-secret",
            "token_expires_in": 3600,
            "refresh_expires_in": 86400,
        },
        600,
        balance={"amount": 1000.0, "currency": "usd"},
    ),
}
FREE_FORM = ("types",)


@dataclass(frozen=True)
class Scenario:
    """A fully merged, validated scenario with its catalogs loaded."""

    name: str
    data: dict  # merged scenario, DEFAULTS included
    catalogs: dict  # provider -> {"regions": {...}, "types": {...}, ...}

    def provider(self, name: str) -> dict:
        return self.data[name]

    @property
    def lifecycle(self) -> dict:
        return self.data["lifecycle"]

    @property
    def ssh(self) -> dict:
        return self.data["ssh"]

    @property
    def time_scale(self) -> float:
        return self.data["clock"]["time_scale"]

    def market(self, provider: str) -> dict:
        """The provider's `market` section, normalized (durations in seconds)."""
        return parse_market(self.data[provider]["market"])

    def billing(self, provider: str) -> dict:
        return self.data[provider]["billing"]


def merge(base: Any, over: Any, key: str = "") -> Any:
    """Deep-merge `over` onto `base` (neither is modified)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    if key in MERGE_APPENDED and isinstance(base, list) and isinstance(over, list):
        return copy.deepcopy(base) + copy.deepcopy(over)
    return copy.deepcopy(over)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{path} must hold a mapping")
    return data


def _resolve(ref: str | Path, directory: Path) -> Path:
    """A bare name means the shipped `<directory>/<name>.yaml`; anything else is a file path."""
    ref = str(ref)
    if "/" not in ref and not ref.endswith((".yaml", ".yml")):
        path = directory / f"{ref}.yaml"
    else:
        path = Path(ref).expanduser().resolve()
    if not path.is_file():
        raise ScenarioError(f"no such file: {path}")
    return path


def _raw(source: str | Path | dict, seen: tuple = ()) -> dict:
    """Load a scenario and its `extends` chain, merged (without DEFAULTS)."""
    if isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        path = _resolve(source, SCENARIO_DIR)
        if path in seen:
            raise ScenarioError(f"scenario extends itself: {path}")
        seen += (path,)
        data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return merge(_raw(parent, seen), data)


def _check_keys(data: Any, schema: Any, where: str) -> None:
    if not isinstance(schema, dict) or not schema:
        return
    if not isinstance(data, dict):
        raise ScenarioError(f"{where or 'scenario'} must be a mapping")
    for key, value in data.items():
        if key not in schema:
            raise ScenarioError(f"unknown key {where + '.' if where else ''}{key}")
        if key not in FREE_FORM:
            _check_keys(value, schema[key], f"{where}.{key}" if where else key)


def _load_catalog(ref: str, overrides: dict) -> dict:
    catalog = _read_yaml(_resolve(ref, CATALOG_DIR))
    for key in ("regions", "types"):
        if not isinstance(catalog.get(key), dict):
            raise ScenarioError(f"catalog {ref} needs a `{key}` mapping")
    catalog["types"] = merge(catalog["types"], overrides)
    for name, entry in catalog["types"].items():
        unknown = set(entry.get("regions", [])) - set(catalog["regions"])
        if unknown:
            raise ScenarioError(f"catalog {ref}: type {name} sold in unknown regions {sorted(unknown)}")
    for image in catalog.get("images", []):
        unknown = set(image.get("regions", [])) - set(catalog["regions"])
        if unknown:
            raise ScenarioError(f"catalog {ref}: an image is served in unknown regions {sorted(unknown)}")
    return catalog


def _check_billing(billing: dict) -> None:
    for key in ("increment_s", "minimum_s"):
        value = billing[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "increment_s" else 0):
            raise ValueError(
                f"billing.{key} must be an integer number of seconds (increment >= 1, minimum >= 0): {value!r}"
            )
    if billing["start"] not in BILLING_STARTS:
        raise ValueError(f"billing.start must be one of {', '.join(BILLING_STARTS)}: {billing['start']!r}")


def load(source: str | Path | dict = "default", overrides: dict | None = None) -> Scenario:
    """Load a scenario by name, file path or dict, then apply `overrides` (a partial scenario)."""
    data = merge(DEFAULTS, _raw(source))
    if overrides:
        data = merge(data, overrides)
    _check_keys(data, DEFAULTS, "")
    life = data["lifecycle"]
    if any(not isinstance(v, (int, float)) or v < 0 for v in life.values()):
        raise ScenarioError(f"lifecycle delays must be numbers >= 0: {life}")
    scale = data["clock"]["time_scale"]
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not scale > 0:
        raise ScenarioError(f"clock.time_scale must be a number > 0: {scale!r}")
    catalogs = {}
    for provider in PROVIDERS:
        section = data[provider]
        for key in APPENDED_LISTS:
            if not isinstance(section[key], list):
                raise ScenarioError(f"{provider}.{key} must be a list")
        catalogs[provider] = _load_catalog(section["catalog"], section["types"])
        try:  # fail at load time, not at the first request
            capacity = Capacity(catalogs[provider], section["capacity"])
            parse_faults(section["faults"])
            Market(provider, parse_market(section["market"]), capacity)
            _check_billing(section["billing"])
        except ValueError as exc:
            raise ScenarioError(f"{provider}: {exc}") from exc
    name = "inline" if isinstance(source, dict) else Path(str(source)).stem
    return Scenario(name=name, data=data, catalogs=catalogs)
