"""Helpers for the Kconfig tests (a unique module name: conftest.py files share one name)."""
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "lib"))

from kcloud import providers  # noqa: E402
from kcloud.catalog import Catalog  # noqa: E402

EMULATOR_CREDENTIALS = {"LAMBDALABS_API_KEY": "emulator-key", "DATACRUNCH_CLIENT_ID": "emulator-client",
                        "DATACRUNCH_CLIENT_SECRET": "emulator-secret"}


def copy_tree(dest: Path) -> Path:
    """The Kconfig tree (Kconfig, kconfigs/, defconfigs/, terraform/*/kconfigs) without .generated."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Kconfig", dest / "Kconfig")
    ignore = shutil.ignore_patterns("*.generated", ".*")
    shutil.copytree(REPO / "kconfigs", dest / "kconfigs", ignore=ignore)
    shutil.copytree(REPO / "defconfigs", dest / "defconfigs", ignore=ignore)
    for p in providers.names():
        shutil.copytree(REPO / "terraform" / p / "kconfigs", dest / "terraform" / p / "kconfigs", ignore=ignore)
    return dest


def fake_live(provider: str, drop: tuple[str, ...] = (), sold_out: tuple[str, ...] = ()) -> Catalog:
    """A 'live' catalog: the snapshot with capacity in the first two preferred regions."""
    snap = providers.snapshot(provider)
    regions = providers.data(provider)["region_preference"][:2]
    types = {n: t for n, t in snap.types.items() if n not in drop}
    capacity = {n: tuple(regions) for n in types if n not in sold_out}
    return Catalog(provider, types, dict(snap.regions), capacity, list(snap.images), source="live")


def temp_files(root: Path) -> list[Path]:
    return [p for p in Path(root).rglob(".*") if p.is_file() and p.name.endswith(".tmp")]
