"""Where the user roughly is, without asking anyone: the closest region, offline.

kdevops sends the user's IP address to a geo-IP service to find the "closest" region; kcloud
infers a rough location from this machine alone and ranks regions by great-circle distance:

1. `KCLOUD_LOCATION`: "<lat>,<lon>" in degrees, a region code of any provider (e.g.
   "us-east-1", "FIN-01") or an IANA time zone name (e.g. "Europe/Berlin");
2. the `TZ` environment variable, when it names a zone;
3. the system time zone: the target of the /etc/localtime link (".../zoneinfo/<Zone>"),
   else /etc/timezone.

A zone is looked up in data/geo/zones.yaml (zone -> coordinates of its principal city), else
its area ("Europe/...", "America/...") gives a continent centroid. UTC and other zones that
say nothing about a place give no location; regions are then ranked by each provider's
`region_preference`, which also breaks ties. Region coordinates are data too:
`region_coordinates` in each provider's data file.
"""
from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from kcloud.errors import ConfigError

ZONES_FILE = Path(__file__).resolve().parent / "data" / "geo" / "zones.yaml"
ENV = "KCLOUD_LOCATION"
EARTH_RADIUS_KM = 6371.0
_LATLON = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Location:
    lat: float
    lon: float
    label: str          # what the location stands for, e.g. "Europe/Berlin" or "us-east-1"
    why: str            # how it was found, e.g. "time zone Europe/Berlin (/etc/localtime)"

    def describe(self) -> str:
        ns = "N" if self.lat >= 0 else "S"
        ew = "E" if self.lon >= 0 else "W"
        return f"{self.label} ({abs(self.lat):.1f}{ns}, {abs(self.lon):.1f}{ew}), from {self.why}"


@functools.cache
def _zones() -> dict:
    from kcloud import datafile
    return datafile.load(ZONES_FILE)


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in km."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def zone_location(zone: str, why: str) -> Location | None:
    """The coordinates a time zone name stands for, or None when it names no place (UTC)."""
    zone = zone.strip().lstrip(":")
    if "zoneinfo/" in zone:                      # TZ=/usr/share/zoneinfo/Europe/Berlin
        zone = zone.split("zoneinfo/", 1)[1]
    if zone.startswith("posix/") or zone.startswith("right/"):
        zone = zone.split("/", 1)[1]
    data = _zones()
    if zone in data["zones"]:
        lat, lon = data["zones"][zone]
        return Location(float(lat), float(lon), zone, why)
    area = zone.split("/", 1)[0]
    if "/" in zone and area in data["areas"]:
        lat, lon = data["areas"][area]
        return Location(float(lat), float(lon), f"{zone} (somewhere in {area})", why)
    return None


def system_zone(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> tuple[str, str] | None:
    """(zone name, where it was read) from TZ, /etc/localtime or /etc/timezone; None if unknown."""
    env = os.environ if env is None else env
    tz = (env.get("TZ") or "").strip()
    if tz and ("/" in tz or tz.lstrip(":") in _zones()["zones"]):
        return tz, "the TZ environment variable"
    localtime = root / "etc" / "localtime"
    try:
        target = os.readlink(localtime)
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1], str(localtime)
    except OSError:
        pass
    try:
        text = (root / "etc" / "timezone").read_text(encoding="utf-8").strip()
        if text:
            return text, str(root / "etc" / "timezone")
    except OSError:
        pass
    return None


def region_coordinates() -> dict[str, tuple[float, float]]:
    """Every provider's region code -> (lat, lon), from the providers' data files."""
    from kcloud import providers
    out: dict[str, tuple[float, float]] = {}
    for name in providers.names():
        for code, (lat, lon) in (providers.data(name).get("region_coordinates") or {}).items():
            out.setdefault(code, (float(lat), float(lon)))
    return out


def parse_override(text: str) -> Location:
    """KCLOUD_LOCATION: "lat,lon", a region code or a time zone name; anything else is an error."""
    m = _LATLON.match(text)
    if m:
        lat, lon = float(m.group(1)), float(m.group(2))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ConfigError(f"{ENV}={text}: latitude must be -90..90 and longitude -180..180",
                              hint=f"e.g. {ENV}=52.5,13.4 (Berlin)")
        return Location(lat, lon, f"{lat:g},{lon:g}", ENV)
    coords = {code.lower(): (code, c) for code, c in region_coordinates().items()}
    if text.strip().lower() in coords:
        code, (lat, lon) = coords[text.strip().lower()]
        return Location(lat, lon, code, f"{ENV} (region {code})")
    found = zone_location(text, f"{ENV} (time zone)") if "/" in text or text in _zones()["zones"] else None
    if found:
        return found
    raise ConfigError(f"{ENV}={text} is neither <lat>,<lon> nor a known region or time zone",
                      hint=f"e.g. {ENV}=52.5,13.4 or {ENV}=us-east-1 or {ENV}=Europe/Berlin")


def assumed(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> Location | None:
    """The user's rough location: KCLOUD_LOCATION, else the system time zone; None if unknown."""
    env = os.environ if env is None else env
    override = (env.get(ENV) or "").strip()
    if override:
        return parse_override(override)
    found = system_zone(env, root)
    if found is None:
        return None
    zone, where = found
    return zone_location(zone, f"the time zone {zone.strip().lstrip(':')} ({where})")


def unknown_reason(env: Mapping[str, str] | None = None, root: Path = Path("/")) -> str:
    """Why assumed() found nothing, for the trace."""
    found = system_zone(env, root)
    if found is None:
        return "no system time zone found"
    return f"the time zone {found[0]} ({found[1]}) names no place"


def rank(codes: Iterable[str], location: Location | None, preference: list[str] | tuple[str, ...] = (),
         coordinates: Mapping[str, tuple[float, float]] | None = None) -> list[tuple[str, float | None]]:
    """Regions closest first, each with its distance in km (None: no coordinates or no location).
    Regions without coordinates come after those with; `preference` breaks ties, then the code."""
    coordinates = region_coordinates() if coordinates is None else coordinates
    pref = {r: i for i, r in enumerate(preference)}
    rows = []
    for code in codes:
        km = None
        if location is not None and code in coordinates:
            lat, lon = coordinates[code]
            km = distance_km(location.lat, location.lon, lat, lon)
        rows.append((code, km))
    rows.sort(key=lambda row: (row[1] is None, round(row[1]) if row[1] is not None else 0,
                               pref.get(row[0], len(pref)), row[0]))
    return rows
