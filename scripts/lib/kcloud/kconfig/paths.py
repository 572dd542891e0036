"""Where the rendered Kconfig fragments live and which set the Kconfig tree sources.

Each provider has three fragments, each in two flavours:
terraform/<provider>/kconfigs/Kconfig.{compute,location,images}.{default,generated}.
`.default` is rendered from the shipped offline snapshot and committed; `.generated` is
rendered from the live API by `make cloud-config` and git-ignored. The provider's static
Kconfig sources `Kconfig.<kind>.$(KCLOUD_<PROVIDER>_FRAGMENTS)`; `kconfig_env()` sets that
variable to "generated" only when all three generated files exist, so a half-written set
can never be mixed with defaults.
"""
from __future__ import annotations

import os
from pathlib import Path

from kcloud import providers

KINDS = ("compute", "location", "images")
DEFAULT, GENERATED = "default", "generated"
FLAVOURS = (DEFAULT, GENERATED)

# scripts/lib/kcloud/kconfig/paths.py -> the project root
PACKAGE_ROOT = Path(__file__).resolve().parents[4]


def srctree(explicit: str | os.PathLike | None = None) -> Path:
    """The Kconfig tree: explicit, else $KCLOUD_SRCTREE, else the working directory when it
    is a kcloud tree (make runs there, and scripted copies of the project work), else the
    project this package belongs to."""
    if explicit:
        return Path(explicit).resolve()
    if os.environ.get("KCLOUD_SRCTREE"):
        return Path(os.environ["KCLOUD_SRCTREE"]).resolve()
    cwd = Path.cwd()
    if is_tree(cwd):
        return cwd
    return PACKAGE_ROOT


def is_tree(path: Path) -> bool:
    """A kcloud Kconfig tree (not, say, the kernel tree the user happens to be in)."""
    return (path / "Kconfig").is_file() and (path / "kconfigs" / "Kconfig.bringup").is_file()


def fragment_dir(tree: Path, provider: str) -> Path:
    return Path(tree) / "terraform" / provider / "kconfigs"


def fragment_path(tree: Path, provider: str, kind: str, flavour: str) -> Path:
    return fragment_dir(tree, provider) / f"Kconfig.{kind}.{flavour}"


def env_var(provider: str) -> str:
    return f"KCLOUD_{provider.upper()}_FRAGMENTS"


def flavour(tree: Path, provider: str) -> str:
    """'generated' when every generated fragment of the provider exists, else 'default'."""
    if all(fragment_path(tree, provider, k, GENERATED).is_file() for k in KINDS):
        return GENERATED
    return DEFAULT


def project_dir(config: str | os.PathLike | None = None) -> Path:
    """The project directory whose names .config carries (kconfig.identity): the directory of
    `config` when given, else $KCLOUD_PROJECT_DIR, else the working directory."""
    if config is not None:
        return Path(config).absolute().parent.resolve()
    return Path(os.environ.get("KCLOUD_PROJECT_DIR") or os.getcwd()).resolve()


def kconfig_env(tree: Path, project: str | os.PathLike | None = None) -> dict[str, str]:
    """The environment kconfiglib needs to evaluate this tree (no network, ever): srctree,
    which fragment set each provider uses, and the per-directory names of kconfig.identity
    for `project` (default: project_dir())."""
    from kcloud.kconfig import identity
    names = providers.names()
    env = {"srctree": str(tree)}
    for name in names:
        env[env_var(name)] = flavour(tree, name)
    env.update(identity.environment(Path(project) if project is not None else project_dir(), names))
    return env
