"""Render a provider's Kconfig fragments from its data file and a Catalog (Jinja2 templates).

Every choice member comes from data, so Kconfig cannot drift from what tiers.py plans with:
tier groups and wildcards from data/<provider>.yaml, one member per instance type, region
and image of the catalog. A live catalog is merged with the offline snapshot (types the
API no longer lists stay selectable, marked as such) so a defconfig that names a type
never breaks after `make cloud-config`.

`refresh()` is `make cloud-config`: providers are fetched concurrently (threads) and each
provider's fragments are written all together or not at all; on any error the previous
fragments stay byte-for-byte and the error is reported as one line. Nothing rendering needs
comes before the first request: Jinja2 is imported and the templates compiled while the
requests are in flight (prepare_render), so a provider's answers are rendered in ~3 ms.
"""
from __future__ import annotations

import fnmatch
import importlib
import os
import re
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from kcloud import providers
from kcloud.catalog import Catalog, InstanceType
from kcloud.errors import ConfigError
from kcloud.kconfig import paths
from kcloud.redact import redact

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHECK, CROSS = "\u2713", "\u2717"
MAX_REGIONS_IN_PROMPT = 4


# -- naming and quoting ----------------------------------------------------------------
def symbol_suffix(text: str) -> str:
    """gpu_1x_h100_sxm5 -> GPU_1X_H100_SXM5, 1H100.80S.30V -> 1H100_80S_30V."""
    return re.sub(r"[^A-Za-z0-9]", "_", text.strip()).upper()


def kstr(text: str) -> str:
    """Contents of a Kconfig "..." string: escaped, one line, and never a $(...) call."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", str(text))
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("$(", "$ (")


def help_line(text: str) -> str:
    return re.sub(r"[\x00-\x1f\x7f]+", " ", str(text)).replace("$(", "$ (").rstrip()


def wrap_help(lines: list[str], width: int = 70) -> list[str]:
    """Help lines wrapped for menuconfig; a line's leading spaces indent its continuation."""
    import textwrap
    out = []
    for line in lines:
        line = help_line(line)
        indent = line[:len(line) - len(line.lstrip())]
        out += textwrap.wrap(line, width, initial_indent="", subsequent_indent=indent + "  ",
                             break_on_hyphens=False) or [""]
    return [l.rstrip() for l in out]


def prefix(provider: str) -> str:
    return f"TERRAFORM_{provider.upper()}"


# -- view model ---------------------------------------------------------------------------
@dataclass
class Member:
    suffix: str
    prompt: str
    value: str
    help: list[str] = field(default_factory=list)
    eight_x: bool = False


def _price(p: float) -> str:
    return f"${p:.2f}/h"


def _region_order(provider: str, codes) -> list[str]:
    rank = {r: i for i, r in enumerate(providers.data(provider).get("region_preference", []))}
    return sorted(codes, key=lambda r: (rank.get(r, len(rank)), r))


def merged_catalog(provider: str, live: Catalog | None) -> tuple[Catalog, set[str]]:
    """The catalog to render, and the type names the live API did not list."""
    snap = providers.snapshot(provider)
    if live is None:
        return snap, set()
    types = dict(live.types)
    gone = {n for n in snap.types if n not in types}
    for n in gone:
        types[n] = snap.types[n]
    regions = dict(snap.regions)
    regions.update(live.regions)
    live_ids = {i.id for i in live.images}
    images = list(live.images) + [i for i in snap.images if i.id not in live_ids]
    merged = Catalog(provider, types, regions, dict(live.capacity), images, source=live.source)
    return merged, gone


def _type_prompt(t: InstanceType, mark: str) -> str:
    if t.gpu_count:
        vram = f"{t.gpu_memory_gb} GB" if t.gpu_count == 1 else f"{t.gpu_count}x{t.gpu_memory_gb} GB"
        text = f"{t.name}: {t.gpu_count}x {t.gpu}, {vram} VRAM, {_price(t.price_per_hour)}"
    else:
        text = f"{t.name}: CPU only, {t.vcpus} vCPUs, {_price(t.price_per_hour)}"
    return f"{text}  {mark}" if mark else text


def _mark(regions: list[str], listed: bool) -> str:
    if not listed:
        return f"{CROSS} not offered"
    if not regions:
        return f"{CROSS} sold out"
    shown = ", ".join(regions[:MAX_REGIONS_IN_PROMPT])
    more = len(regions) - MAX_REGIONS_IN_PROMPT
    return f"{CHECK} {shown}" + (f" +{more} more" if more > 0 else "")


def _matching(cat: Catalog, patterns: list[str]) -> list[str]:
    return [n for n in cat.types if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _is_8x(cat: Catalog, names: list[str]) -> bool:
    return bool(names) and all(cat.types[n].gpu_count >= 8 for n in names)


def compute_view(provider: str, live: Catalog | None, when: str = "") -> dict:
    d = providers.data(provider)
    cat, gone = merged_catalog(provider, live)
    members: list[Member] = []

    members.append(Member(
        "SMART_CHEAPEST", "Cheapest available GPU (smart selection)", "cheapest",
        ["At bringup, read capacity again and launch the cheapest GPU",
         "instance type that has capacity, in the closest region that has it."]))

    for key, g in d["tier_groups"].items():
        hierarchy = d["hierarchies"][g["hierarchy"]]
        tiers = list(hierarchy)[list(hierarchy).index(g["from"]):]
        first = _matching(cat, hierarchy[g["from"]])
        members.append(Member(
            symbol_suffix(key), f"{key} - {g.get('help', '')}", key,
            ["Tier-based selection: at bringup, launch the highest tier that",
             "has capacity. Tiers, highest first:",
             "  " + " > ".join(tiers)],
            eight_x=_is_8x(cat, first)))

    for key, w in d.get("wildcards", {}).items():
        names = sorted(_matching(cat, w["patterns"]), key=lambda n: (cat.types[n].price_per_hour, n))
        members.append(Member(
            symbol_suffix(key), f"{key} - {w.get('help', '')}", key,
            ["Launch whichever matching variant has capacity, cheapest first:",
             "  " + (", ".join(names) or "(none in the catalog)")],
            eight_x=_is_8x(cat, names)))

    order = sorted(cat.types.values(), key=lambda t: (t.gpu_count == 0, t.gpu_count, t.price_per_hour, t.name))
    for t in order:
        regions = _region_order(provider, cat.available_regions(t.name))
        mark = _mark(regions, t.name not in gone) if live is not None else ""
        lines = [t.description or t.name,
                 f"{t.vcpus} vCPUs, {t.memory_gb} GB RAM, {_price(t.price_per_hour)} on demand"]
        if live is not None:
            lines.append(f"Capacity at {when}: " + (", ".join(regions) if regions else
                                                     "none" if t.name not in gone else "not listed by the API"))
        lines.append("Exact type: no fallback to other types.")
        members.append(Member(symbol_suffix(t.name), _type_prompt(t, mark), t.name, lines,
                              eight_x=t.gpu_count >= 8))

    _check_unique(provider, "instance type", members)
    default = symbol_suffix(d.get("kconfig_default_instance_type", "SMART_CHEAPEST"))
    if default not in {m.suffix for m in members}:
        raise ConfigError(f"{provider}: kconfig_default_instance_type '{default}' is not an instance type choice")
    return {"members": members, "default": default,
            "eight_x": [m.suffix for m in members if m.eight_x]}


def location_settings(provider: str) -> dict:
    """How a provider's location choice is spelled (data: kconfig.location): `symbol` (REGION
    or LOCATION), `auto` (the member meaning "any location", e.g. AUTO), `depends_on` (a
    provider symbol that shows the choice, e.g. REGION_MANUAL) and `default` (a region code)."""
    loc = dict((providers.data(provider).get("kconfig") or {}).get("location") or {})
    loc.setdefault("symbol", "REGION")
    return loc


CLOSEST_HELP = ["At bringup, read capacity again and use the location closest to you",
                "that has capacity for the chosen instance type. Your location is",
                "inferred offline: KCLOUD_LOCATION=<lat,lon or region>, else the",
                "system time zone; no geo-IP service is asked."]


def location_view(provider: str, live: Catalog | None, when: str = "") -> dict:
    cat, _ = merged_catalog(provider, live)
    loc = location_settings(provider)
    symbol = loc["symbol"]
    members = []
    if loc.get("auto"):
        members.append(Member(f"{symbol}_{loc['auto']}", "Closest location with capacity (automatic)",
                              loc["auto"], list(CLOSEST_HELP)))
    up: dict[str, int] = {}
    for name in cat.types:
        for r in cat.available_regions(name):
            up[r] = up.get(r, 0) + 1
    for code in _region_order(provider, set(cat.regions) | set(up)):
        desc = cat.regions.get(code, code)
        prompt = f"{code} - {desc}" if desc and desc != code else code
        lines = []
        if live is not None:
            prompt += f"  {CHECK} {up[code]} types with capacity" if up.get(code) else f"  {CROSS} no capacity"
            lines = [f"Capacity at {when}: " + (f"{up[code]} instance types" if up.get(code) else "none")]
        members.append(Member(f"{symbol}_" + symbol_suffix(code), prompt, code, lines))
    _check_unique(provider, "region", members)
    if loc.get("auto"):
        default = f"{symbol}_{loc['auto']}"
    else:
        wanted = f"{symbol}_" + symbol_suffix(loc.get("default") or "")
        default = wanted if wanted in {m.suffix for m in members} else members[0].suffix
    depends = f"{prefix(provider)}_{loc['depends_on']}" if loc.get("depends_on") else ""
    return {"members": members, "default": default, "symbol": symbol, "depends_on": depends,
            "auto": loc.get("auto", "")}


def images_view(provider: str, live: Catalog | None, when: str = "") -> dict:
    cat, _ = merged_catalog(provider, live)
    default_image = providers.data(provider).get("default_image") or ""
    ids = {i.id for i in cat.images}
    members = []
    if default_image not in ids:
        members.append(Member("IMAGE_DEFAULT",
                              f"Provider default ({default_image})" if default_image else "Provider default image",
                              default_image, ["Let kcloud pick the provider's default image."]))
    live_ids = {i.id for i in live.images} if live is not None else ids
    for image in sorted(cat.images, key=lambda i: i.id):
        prompt = f"{image.name} ({image.id})" if image.name and image.name != image.id else image.id
        lines = []
        if image.id == default_image:
            lines.append("The provider's default image.")
        if image.id not in live_ids:
            prompt += f"  {CROSS} not offered"
            lines.append(f"Not listed by the API at {when}.")
        if image.regions:
            lines.append("Regions: " + ", ".join(_region_order(provider, image.regions)))
        members.append(Member("IMAGE_" + symbol_suffix(image.id), prompt, image.id, lines))
    _check_unique(provider, "image", members)
    default = "IMAGE_" + symbol_suffix(default_image) if default_image in ids else "IMAGE_DEFAULT"
    return {"members": members, "default": default}


def _check_unique(provider: str, what: str, members: list[Member]) -> None:
    seen: dict[str, str] = {}
    for m in members:
        if m.suffix in seen:
            raise ConfigError(f"{provider}: {what} '{m.value}' and '{seen[m.suffix]}' map to the same "
                              f"Kconfig symbol {prefix(provider)}_..._{m.suffix}")
        seen[m.suffix] = m.value or m.suffix


# -- rendering ----------------------------------------------------------------------------
_env_lock = threading.Lock()
_env = None


def _jinja():
    global _env
    with _env_lock:
        if _env is None:
            import jinja2
            _env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                                      undefined=jinja2.StrictUndefined, autoescape=False,
                                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
            _env.filters["kstr"] = kstr
            _env.filters["help_line"] = help_line
            _env.filters["wrap_help"] = wrap_help
        return _env


VIEWS = {"compute": compute_view, "location": location_view, "images": images_view}


def prepare_render() -> None:
    """Import and compile what render() uses (Jinja2, every template and the macros they
    import, textwrap, datetime): ~35 ms, after which a provider's render takes ~3 ms."""
    import datetime  # noqa: F401  (render's timestamp)
    import textwrap  # noqa: F401  (wrap_help)
    env = _jinja()
    for name in env.list_templates(extensions=["j2"]):
        env.get_template(name)


def render(provider: str, live: Catalog | None = None, fetched_at: str | None = None) -> dict[str, str]:
    """Text of every fragment: from the offline snapshot when `live` is None (the .default
    set, deterministic), else from the live catalog merged with the snapshot."""
    d = providers.data(provider)
    when = ""
    if live is None:
        origin = [f"Rendered from the offline snapshot in scripts/lib/kcloud/data/{provider}.yaml.",
                  "Do not edit: regenerate with `scripts/kcloud cloud-config --offline`."]
    else:
        from datetime import datetime, timezone
        when = fetched_at or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        origin = [f"Rendered from the live {d['title']} API at {when} by `make cloud-config`.",
                  "Do not edit: refresh with `make cloud-config`; `make clean-cloud-config` removes it."]
    out = {}
    for kind in paths.KINDS:
        view = VIEWS[kind](provider, live, when)
        text = _jinja().get_template(f"{kind}.j2").render(
            provider=provider, title=d["title"], P=prefix(provider), origin=origin, live=live is not None,
            when=when, **view)
        out[kind] = re.sub(r"\n{3,}", "\n\n", text).strip("\n") + "\n"
    return out


def render_offline(provider: str) -> dict[str, str]:
    return render(provider, None)


# -- writing ------------------------------------------------------------------------------
def write_set(files: dict[Path, str]) -> list[Path]:
    """Write several files so that either all of them are replaced or none is.

    Every new text goes to a temporary file next to its target first; only when all are
    written and synced are they renamed into place (rename cannot half-fail). On any error
    the temporaries are removed and the previous files are untouched."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in temps:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)
        raise
    return [p for _, p in temps]


def fragment_files(tree: Path, provider: str, flavour: str, texts: dict[str, str]) -> dict[Path, str]:
    return {paths.fragment_path(tree, provider, kind, flavour): texts[kind] for kind in paths.KINDS}


def regenerate_defaults(tree: Path, names: list[str] | None = None) -> list[Path]:
    """Re-render the committed .default fragments from the snapshot (never hand-edit them)."""
    written = []
    for name in names or providers.names():
        written += write_set(fragment_files(tree, name, paths.DEFAULT, render_offline(name)))
    return written


def clean(tree: Path, names: list[str] | None = None) -> list[Path]:
    removed = []
    for name in names or providers.names():
        for kind in paths.KINDS:
            p = paths.fragment_path(tree, name, kind, paths.GENERATED)
            if p.exists():
                p.unlink()
                removed.append(p)
    return removed


@dataclass
class Outcome:
    provider: str
    ok: bool
    line: str
    written: list[Path] = field(default_factory=list)


def _fetch_live(provider: str) -> Catalog:
    return providers.get(provider).catalog()


def _refresh_one(tree: Path, provider: str, fetch: Callable[[str], Catalog]) -> Outcome:
    try:
        live = fetch(provider)
        texts = render(provider, live)
        written = write_set(fragment_files(tree, provider, paths.GENERATED, texts))
    except Exception as exc:   # any failure: keep what was there, report one line
        reason = exc.line() if hasattr(exc, "line") else f"{type(exc).__name__}: {exc}"
        reason = redact(" ".join(str(reason).split()))
        if reason.startswith(f"{provider}: "):        # errors already name their provider
            reason = reason[len(provider) + 2:]
        return Outcome(provider, False, f"{provider}: kept previous fragments: {reason}")
    with_capacity = sum(1 for n in live.types if live.available_regions(n))
    return Outcome(provider, True,
                   f"{provider}: wrote {', '.join(p.name for p in written)} "
                   f"({len(live.types)} types, {with_capacity} with capacity, "
                   f"{len(live.regions)} regions, {len(live.images)} images)", written)


# How long prepare_render waits, once the provider modules are imported, for the providers'
# first requests to leave (credentials, sessions: a few ms) before it takes the CPU for ~30 ms.
SENDING_S = 0.03


def _prepare_while_fetching(names: list[str], live: bool, fetched: threading.Event) -> None:
    """prepare_render() during the providers' first network wait, not before their first
    request: a live fetch first imports its provider module (requests: most of the start-up),
    so wait for those imports and then briefly for the requests to be sent (or any fetch to end)."""
    try:
        if live:
            for name in names:
                importlib.import_module(f"kcloud.providers.{name}")
            fetched.wait(SENDING_S)
        prepare_render()
    except Exception:       # render() meets the same error again and reports it per provider
        pass


def refresh(tree: Path, names: list[str] | None = None,
            fetch: Callable[[str], Catalog] | None = None) -> list[Outcome]:
    """`make cloud-config`: fetch every provider at once, write each provider's set or keep it."""
    names = list(names or providers.names())
    fetch = fetch or _fetch_live
    live = fetch is _fetch_live
    fetched = threading.Event()

    def one(name: str) -> Outcome:
        try:
            return _refresh_one(Path(tree), name, fetch)
        finally:
            fetched.set()

    with ThreadPoolExecutor(max_workers=max(1, len(names)), thread_name_prefix="cloud-config") as pool:
        futures = [pool.submit(one, n) for n in names]
        _prepare_while_fetching(names, live, fetched)
        return [f.result() for f in futures]


def cloud_config(names: list[str] | None = None, root=None,
                 fetch: Callable[[str], Catalog] | None = None) -> list[Outcome]:
    """In-process `make cloud-config` (what the benchmark times): refresh() on `root`
    (default: the Kconfig tree, see paths.srctree)."""
    return refresh(paths.srctree(root), names, fetch)
