"""Per-directory names kdevops computes with $(shell ...) at Kconfig time, computed here in
Python (no subprocess, no network) and handed to kconfiglib as environment variables.

kdevops puts them in .config, so `grep TERRAFORM_LAMBDALABS_SSH_KEY_NAME .config` prints the
key name, and kcloud does the same, with kdevops' own rules (shared/reference/
kdevops-kconfig.md 1.3, 1.7, 1.10, 6):

KCLOUD_TOPDIR_SHA8           first 8 hex digits of sha256("<topdir>\\n") (`echo $(TOPDIR_PATH) |
                             sha256sum`): ~/.ssh/kdevops_terraform_<h8>[.pub]
KCLOUD_LAMBDALABS_SSH_KEY_NAME
                             kdevops-<project>-<sha256(cwd)[:8]> (lambdalabs_ssh_key_name.py)
KCLOUD_DATACRUNCH_SSH_KEY_NAME
                             kdevops-datacrunch-<md5(git top level or cwd)[:8]>
                             (datacrunch_ssh_key_name.py)

Any other provider gets the Lambda rule. `topdir` is the project directory: where .config
lives, normally where make runs.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

GENERIC_DIRS = {"data", "home", "root", "usr", "var", "tmp"}


def topdir_sha256(project: Path) -> str:
    """sha256 of the top directory followed by a newline, as `echo $TOPDIR | sha256sum`."""
    return hashlib.sha256(f"{Path(project)}\n".encode()).hexdigest()


def kdevops_project_key_name(project: Path) -> str:
    """kdevops-<project>-<h>: <h> = sha256 of the path (no newline), 8 hex digits; <project>
    = the last two path components without generic names, '_' and '.' as '-', at most 20."""
    project = Path(project)
    h = hashlib.sha256(str(project).encode()).hexdigest()[:8]
    parts = [p for p in project.parts[-2:] if p not in ("/", "") and p not in GENERIC_DIRS]
    name = "-".join(parts).replace("_", "-").replace(".", "-")[:20]
    key = re.sub(r"[^A-Za-z0-9-]", "-", f"kdevops-{name}-{h}")
    while "--" in key:
        key = key.replace("--", "-")
    return key if len(key) <= 50 else f"kdevops-{h}"


def git_toplevel(project: Path) -> Path | None:
    """What `git rev-parse --show-toplevel` prints, found without running git."""
    for d in (Path(project), *Path(project).parents):
        if (d / ".git").exists():
            return d
    return None


def kdevops_datacrunch_key_name(project: Path) -> str:
    top = git_toplevel(project) or Path(project)
    return f"kdevops-datacrunch-{hashlib.md5(str(top).encode()).hexdigest()[:8]}"


UNIQUE_KEY_NAMES = {"lambdalabs": kdevops_project_key_name, "datacrunch": kdevops_datacrunch_key_name}


def unique_key_name(provider: str, project: Path) -> str:
    return UNIQUE_KEY_NAMES.get(provider, kdevops_project_key_name)(Path(project))


def key_name_var(provider: str) -> str:
    return f"KCLOUD_{provider.upper()}_SSH_KEY_NAME"


def environment(project: Path, provider_names) -> dict[str, str]:
    """The variables the Kconfig tree reads for this project directory."""
    project = Path(project).resolve()
    env = {"KCLOUD_TOPDIR_SHA8": topdir_sha256(project)[:8]}
    for name in provider_names:
        env[key_name_var(name)] = unique_key_name(name, project)
    return env
