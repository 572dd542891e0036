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

import os
import re

from kcloud.kconfig.files import pathstr

# Every Kconfig target hashes the directory: hashlib loads OpenSSL (~3 ms), CPython's own
# SHA-256 module (the one hashlib falls back to) does not. The same digest either way.
try:
    from _sha256 import sha256 as _sha256          # CPython <= 3.11
except ImportError:
    try:
        from _sha2 import sha256 as _sha256        # CPython >= 3.12
    except ImportError:
        from hashlib import sha256 as _sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

GENERIC_DIRS = {"data", "home", "root", "usr", "var", "tmp"}


def topdir_sha256(project: str | os.PathLike) -> str:
    """sha256 of the top directory followed by a newline, as `echo $TOPDIR | sha256sum`."""
    return _sha256(f"{pathstr(project)}\n".encode()).hexdigest()


_ID = re.compile(r"^[0-9a-f]{12}$")


def _read_nofollow(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        return f.read(4096).decode("ascii", "replace")


def directory_id(project: str | os.PathLike, create: bool = True) -> str | None:
    """This directory's identity: `.kcloud/id`; else recovered from the comment of the default
    public key (`... kdevops-...-<id>`); else a new random one (written once) when `create`."""
    project = pathstr(project)
    id_file = os.path.join(project, ".kcloud", "id")
    try:
        text = _read_nofollow(id_file).strip()
        if _ID.match(text):
            return text
    except OSError:
        pass
    try:
        pub = pathstr(os.path.expanduser(f"~/.ssh/kdevops_terraform_{topdir_sha256(project)[:8]}.pub"))
        words = _read_nofollow(pub).split()
        if len(words) >= 3 and _ID.match(words[2].rsplit("-", 1)[-1]):
            return words[2].rsplit("-", 1)[-1]
    except OSError:
        pass
    if not create:
        return None
    new = os.urandom(6).hex()
    os.makedirs(os.path.dirname(id_file), exist_ok=True)
    tmp = os.path.join(os.path.dirname(id_file), f".id.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(new + "\n")
    try:
        os.link(tmp, id_file)          # first writer wins when two commands race
    except FileExistsError:
        pass
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    return directory_id(project, create=False) or new


def _parts(path: str) -> list[str]:
    """pathlib.PurePosixPath(path).parts"""
    root = "//" if path.startswith("//") and not path.startswith("///") else "/" if path.startswith("/") else ""
    return ([root] if root else []) + [p for p in path.split("/") if p and p != "."]


def kdevops_project_key_name(project: str | os.PathLike, ident: str | None = None) -> str:
    """kdevops-<project>-<id>: <id> = the directory's identity (kdevops: the path's hash);
    <project> = the last two path components without generic names, '_' and '.' as '-', at
    most 20."""
    project = pathstr(project)
    h = ident or directory_id(project)
    parts = [p for p in _parts(project)[-2:] if p not in ("/", "") and p not in GENERIC_DIRS]
    name = "-".join(parts).replace("_", "-").replace(".", "-")[:20]
    key = re.sub(r"[^A-Za-z0-9-]", "-", f"kdevops-{name}-{h}")
    while "--" in key:
        key = key.replace("--", "-")
    return key if len(key) <= 50 else f"kdevops-{h}"


def git_toplevel(project: str | os.PathLike) -> Path | None:
    """What `git rev-parse --show-toplevel` prints, found without running git."""
    from pathlib import Path
    for d in (Path(project), *Path(project).parents):
        if (d / ".git").exists():
            return d
    return None


def kdevops_datacrunch_key_name(project: str | os.PathLike, ident: str | None = None) -> str:
    return f"kdevops-datacrunch-{ident or directory_id(project)}"


UNIQUE_KEY_NAMES = {"lambdalabs": kdevops_project_key_name, "datacrunch": kdevops_datacrunch_key_name}


def unique_key_name(provider: str, project: str | os.PathLike, ident: str | None = None) -> str:
    return UNIQUE_KEY_NAMES.get(provider, kdevops_project_key_name)(project, ident)


def key_name_var(provider: str) -> str:
    return f"KCLOUD_{provider.upper()}_SSH_KEY_NAME"


def environment(project: str | os.PathLike, provider_names) -> dict[str, str]:
    """The variables the Kconfig tree reads for this project directory."""
    project = os.path.realpath(project)
    env = {"KCLOUD_TOPDIR_SHA8": topdir_sha256(project)[:8]}
    ident = directory_id(project)
    for name in provider_names:
        env[key_name_var(name)] = unique_key_name(name, project, ident)
    return env
