"""Per-directory names kdevops computes with $(shell ...) at Kconfig time, computed here in
Python (no subprocess, no network) and handed to kconfiglib as environment variables.

kdevops puts them in .config, so `grep TERRAFORM_LAMBDALABS_SSH_KEY_NAME .config` prints the
key name, and kcloud does the same, with kdevops' own rules (shared/reference/
kdevops-kconfig.md 1.3, 1.7, 1.10, 6):

KCLOUD_TOPDIR_SHA8           first 8 hex digits of sha256("<topdir>\\n") (`echo $(TOPDIR_PATH) |
                             sha256sum`): ~/.ssh/kdevops_terraform_<h8>[.pub] (a local file)
KCLOUD_LAMBDALABS_SSH_KEY_NAME
                             kdevops-<project>-<id> (lambdalabs_ssh_key_name.py's shape)
KCLOUD_DATACRUNCH_SSH_KEY_NAME
                             kdevops-datacrunch-<id> (datacrunch_ssh_key_name.py's shape)

**Changed from kdevops**: where kdevops hashes the directory's *path* into the key name, kcloud
uses the directory's identity <id>: 12 random hex digits created once and kept in `.kcloud/id`
(and in the key's comment). kdevops' path hash makes the same checkout path on two computers
share one key name, so one computer's `make destroy` deleted the other's key and machine.

Any other provider gets the Lambda rule. `topdir` is the project directory: where .config
lives, normally where make runs.
"""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

GENERIC_DIRS = {"data", "home", "root", "usr", "var", "tmp"}


def topdir_sha256(project: Path) -> str:
    """sha256 of the top directory followed by a newline, as `echo $TOPDIR | sha256sum`."""
    return hashlib.sha256(f"{Path(project)}\n".encode()).hexdigest()


_ID = re.compile(r"^[0-9a-f]{12}$")


def _read_nofollow(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read(4096).decode("ascii", "replace")


def directory_id(project: Path, create: bool = True) -> str | None:
    """This directory's identity: `.kcloud/id`; else recovered from the comment of the default
    public key (`... kdevops-...-<id>`); else a new random one (written once) when `create`."""
    project = Path(project)
    id_file = project / ".kcloud" / "id"
    try:
        text = _read_nofollow(id_file).strip()
        if _ID.match(text):
            return text
    except OSError:
        pass
    try:
        pub = Path(os.path.expanduser(f"~/.ssh/kdevops_terraform_{topdir_sha256(project)[:8]}.pub"))
        words = _read_nofollow(pub).split()
        if len(words) >= 3 and _ID.match(words[2].rsplit("-", 1)[-1]):
            return words[2].rsplit("-", 1)[-1]
    except OSError:
        pass
    if not create:
        return None
    new = os.urandom(6).hex()
    id_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = id_file.with_name(f".id.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(new + "\n")
    try:
        os.link(tmp, id_file)          # first writer wins when two commands race
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return directory_id(project, create=False) or new


def kdevops_project_key_name(project: Path, ident: str | None = None) -> str:
    """kdevops-<project>-<id>: <id> = the directory's identity (kdevops: the path's hash);
    <project> = the last two path components without generic names, '_' and '.' as '-', at
    most 20."""
    project = Path(project)
    h = ident or directory_id(project)
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


def kdevops_datacrunch_key_name(project: Path, ident: str | None = None) -> str:
    return f"kdevops-datacrunch-{ident or directory_id(Path(project))}"


UNIQUE_KEY_NAMES = {"lambdalabs": kdevops_project_key_name, "datacrunch": kdevops_datacrunch_key_name}


def unique_key_name(provider: str, project: Path, ident: str | None = None) -> str:
    return UNIQUE_KEY_NAMES.get(provider, kdevops_project_key_name)(Path(project), ident)


def key_name_var(provider: str) -> str:
    return f"KCLOUD_{provider.upper()}_SSH_KEY_NAME"


def environment(project: Path, provider_names) -> dict[str, str]:
    """The variables the Kconfig tree reads for this project directory."""
    project = Path(project).resolve()
    env = {"KCLOUD_TOPDIR_SHA8": topdir_sha256(project)[:8]}
    for name in provider_names:
        env[key_name_var(name)] = unique_key_name(name, project)
    return env
