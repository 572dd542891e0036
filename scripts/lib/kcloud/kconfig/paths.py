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

from kcloud import providers

TYPE_CHECKING = False   # pathlib is imported where a Path is returned: the Kconfig targets use strings
if TYPE_CHECKING:
    from pathlib import Path

KINDS = ("compute", "location", "images")
DEFAULT, GENERATED = "default", "generated"
FLAVOURS = (DEFAULT, GENERATED)

# scripts/lib/kcloud/kconfig/paths.py -> the project root (PACKAGE_ROOT: the same as a Path)
_PACKAGE_ROOT = os.path.realpath(__file__)
for _ in range(5):
    _PACKAGE_ROOT = os.path.dirname(_PACKAGE_ROOT)


def __getattr__(name: str):
    if name == "PACKAGE_ROOT":
        from pathlib import Path
        return Path(_PACKAGE_ROOT)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tree_dir(explicit: str | os.PathLike | None = None) -> str:
    """srctree() as a string."""
    if explicit:
        return os.path.realpath(explicit)
    if os.environ.get("KCLOUD_SRCTREE"):
        return os.path.realpath(os.environ["KCLOUD_SRCTREE"])
    cwd = os.getcwd()
    if is_tree(cwd):
        return cwd
    return _PACKAGE_ROOT


def srctree(explicit: str | os.PathLike | None = None) -> Path:
    """The Kconfig tree: explicit, else $KCLOUD_SRCTREE, else the working directory when it
    is a kcloud tree (make runs there, and scripted copies of the project work), else the
    project this package belongs to."""
    from pathlib import Path
    return Path(tree_dir(explicit))


def is_tree(path: str | os.PathLike) -> bool:
    """A kcloud Kconfig tree (not, say, the kernel tree the user happens to be in)."""
    return (os.path.isfile(os.path.join(path, "Kconfig"))
            and os.path.isfile(os.path.join(path, "kconfigs", "Kconfig.bringup")))


def fragment_dir(tree: str | os.PathLike, provider: str) -> Path:
    from pathlib import Path
    return Path(tree) / "terraform" / provider / "kconfigs"


def fragment_path(tree: str | os.PathLike, provider: str, kind: str, flavour: str) -> Path:
    return fragment_dir(tree, provider) / f"Kconfig.{kind}.{flavour}"


def _fragment_file(tree: str | os.PathLike, provider: str, kind: str, flavour: str) -> str:
    return os.path.join(tree, "terraform", provider, "kconfigs", f"Kconfig.{kind}.{flavour}")


def env_var(provider: str) -> str:
    return f"KCLOUD_{provider.upper()}_FRAGMENTS"


def flavour(tree: str | os.PathLike, provider: str) -> str:
    """'generated' when every generated fragment of the provider exists, else 'default'."""
    if all(os.path.isfile(_fragment_file(tree, provider, k, GENERATED)) for k in KINDS):
        return GENERATED
    return DEFAULT


def project_dir(config: str | os.PathLike | None = None) -> Path:
    """The project directory whose names .config carries (kconfig.identity): the directory of
    `config` when given, else $KCLOUD_PROJECT_DIR, else the working directory."""
    from pathlib import Path
    return Path(_project_dir(config))


def _project_dir(config: str | os.PathLike | None = None) -> str:
    from kcloud.kconfig import files
    if config is not None:
        return os.path.realpath(files.parent(files.absolute(config)))
    return os.path.realpath(os.environ.get("KCLOUD_PROJECT_DIR") or os.getcwd())


def kconfig_env(tree: str | os.PathLike, project: str | os.PathLike | None = None) -> dict[str, str]:
    """The environment kconfiglib needs to evaluate this tree (no network, ever): srctree,
    which fragment set each provider uses, and the per-directory names of kconfig.identity
    for `project` (default: project_dir())."""
    from kcloud.kconfig import identity
    names = providers.names()
    env = {"srctree": os.fspath(tree)}
    for name in names:
        env[env_var(name)] = flavour(tree, name)
    env.update(identity.environment(project if project is not None else _project_dir(), names))
    return env
