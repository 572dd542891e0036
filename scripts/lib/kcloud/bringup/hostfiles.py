"""Files that let a person and Ansible reach the machines: a per-directory SSH config (included
from ~/.ssh/config, which is backed up once and otherwise left alone) and the `hosts` inventory.

Every value is checked before anything is written (`check_host`, `ssh_path`): an IP that the
API answered must parse as an IP, names and users must match strict patterns, and a path must
not be able to start a new line or option. One bad value and nothing at all is written.
~/.ssh/config is edited as bytes, in place (a symlink stays a symlink, the mode is kept),
under a lock, so concurrent kcloud runs never lose each other's Include line.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from kcloud.bringup.project import Project
from kcloud.errors import ConfigError, HostileAnswer
from kcloud.fsutil import atomic_write, edit_in_place

MARK = "# kcloud: machines of"
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# In an ssh_config path these would end the line, end or nest a quote, or be expanded by ssh
# (%tokens, ${ENV}, globs in Include); also unsafe inside the inventory's quoted ssh args.
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f\"'\\%$*?\[`]")


@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    user: str
    port: int
    identity: Path
    provider: str = ""      # who answered the IP, for the error message
    private_ip: str = ""    # the address the nodes reach each other at ("" = the cloud reports none)
    rank: int = 0           # NODE_RANK: its place in the cluster


def shown(value, limit: int = 48) -> str:
    """repr() of a value for a one-line error message, truncated."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 2] + "\u2026" + text[-1]


def check_host(host: Host) -> Host:
    """Validate every field of `host`; return it normalized (canonical IP, int port) or raise
    HostileAnswer (a value the API answered) / ConfigError (a local value), one line each."""
    name = host.name
    if not isinstance(name, str) or not HOST_NAME.fullmatch(name):
        raise ConfigError(f"invalid host name {shown(name)} (letters, digits, '.', '_' and '-', "
                          "at most 63, starting with a letter or digit)")
    who = host.provider or "the provider"
    try:
        if not isinstance(host.ip, str):
            raise ValueError("not a string")
        ip = ipaddress.ip_address(host.ip)
        if getattr(ip, "scope_id", None):
            raise ValueError("scoped address")
    except ValueError:
        raise HostileAnswer(f"{who} answered an invalid ip for {name}: {shown(host.ip)} (not an IP address)",
                            hint="no SSH config or inventory was written; 'make destroy' stops the machine",
                            provider=host.provider) from None
    private = host.private_ip or ""
    if private:
        try:
            if not isinstance(private, str):
                raise ValueError("not a string")
            private = str(ipaddress.ip_address(private))
        except ValueError:
            raise HostileAnswer(f"{who} answered an invalid private ip for {name}: {shown(host.private_ip)}",
                                hint="no SSH config or inventory was written; 'make destroy' stops the machines",
                                provider=host.provider) from None
    if isinstance(host.rank, bool) or not isinstance(host.rank, int) or not 0 <= host.rank < 1000:
        raise ConfigError(f"invalid node rank for {name}: {shown(host.rank)}")
    user = host.user
    if not isinstance(user, str) or not USER_NAME.fullmatch(user):
        raise ConfigError(f"invalid SSH user for {name}: {shown(user)} (expected a Unix user name "
                          "like 'ubuntu': [a-z_][a-z0-9_-]*, at most 32)")
    port = host.port
    if isinstance(port, str) and port.isascii() and port.isdigit():
        port = int(port)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"invalid SSH port for {name}: {shown(host.port)} (expected 1..65535)")
    ssh_path(host.identity)
    return replace(host, ip=str(ip), port=port, private_ip=private)


def ssh_path(path: str | os.PathLike) -> str:
    """A path as an ssh_config argument: refused (ConfigError) if it holds a control character,
    a quote, a backslash or something ssh would expand; double-quoted if it has a space or '#'."""
    text = os.fspath(path) if isinstance(path, (str, os.PathLike)) else path
    if not isinstance(text, str) or not text or _UNSAFE_PATH.search(text):
        raise ConfigError(f"path {shown(text)} cannot be written into an SSH config (it must not contain "
                          "control characters, quotes, backslashes or any of % $ * ? [ `)",
                          hint="use a directory whose path has none of these")
    return f'"{text}"' if (" " in text or "#" in text) else text


def write(project: Project, hosts: list[Host], update_user_config: bool = True) -> None:
    """Write .kcloud/ssh_config and `hosts` (and include the first from ~/.ssh/config).
    Every host and path is checked first: on any bad value nothing is written."""
    hosts = [check_host(h) for h in hosts]
    ssh_config, known_hosts = ssh_path(project.ssh_config), ssh_path(project.known_hosts)
    ssh_path(project.root)
    blocks = [f"# Written by kcloud for {project.root}; removed by 'make destroy'. Do not edit.\n"]
    for h in hosts:
        blocks.append(
            f"Host {h.name}\n  HostName {h.ip}\n  User {h.user}\n  Port {h.port}\n"
            f"  IdentityFile {ssh_path(h.identity)}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known_hosts}\n  StrictHostKeyChecking accept-new\n"
            f"  LogLevel ERROR\n")
    # Every node in [all] with its rank and the address the others reach it at, and in [gpu]
    # (the nodes the host preparation and multi-node programs run on).
    inventory = ["[all]"] + [f"{h.name} node_rank={h.rank} private_ip={h.private_ip or h.ip}" for h in hosts] + [
        "", "[gpu]"] + [h.name for h in hosts] + [
        "", "[all:vars]", "ansible_python_interpreter=/usr/bin/python3",
        f"ansible_ssh_common_args='-F {ssh_config}'", ""]
    atomic_write(project.ssh_config, "\n".join(blocks), mode=0o600)   # replaces a planted link
    atomic_write(project.inventory, "\n".join(inventory))
    if update_user_config:
        _include(project)


def _user_config() -> Path:
    return Path(os.path.expanduser("~/.ssh/config"))


def _include_line(project: Project) -> bytes:
    ssh_path(project.root)
    return os.fsencode(f"Include {ssh_path(project.ssh_config)}  {MARK} {project.root}")


def _edit_user_config(transform) -> bool:
    cfg = _user_config()
    cfg.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return edit_in_place(cfg, transform, lock_path=cfg.parent / ".kcloud-config.lock",
                         backup_path=cfg.with_name("config.kcloud-backup"), backup="first", new_mode=0o600)


def _include(project: Project) -> None:
    """Put our Include line first in ~/.ssh/config (Include applies globally only before any
    Host block). The user's bytes are kept as they are; the first change keeps a backup."""
    line = _include_line(project)

    def add(old: bytes) -> bytes | None:
        if any(l.rstrip(b"\r\n") == line for l in old.splitlines(keepends=True)):
            return None
        return line + b"\n" + old
    _edit_user_config(add)


def remove(project: Project) -> None:
    """Drop our Include line from ~/.ssh/config (also the unquoted form older versions wrote)
    and delete this directory's SSH config, known_hosts and inventory."""
    ours = {os.fsencode(f"Include {project.ssh_config}  {MARK} {project.root}")}
    try:
        ours.add(_include_line(project))
    except ConfigError:
        pass        # a path write() refuses: no such line was ever written

    def drop(old: bytes) -> bytes | None:
        lines = old.splitlines(keepends=True)
        kept = [l for l in lines if l.rstrip(b"\r\n") not in ours]
        return b"".join(kept) if len(kept) != len(lines) else None
    if os.path.lexists(_user_config()):
        _edit_user_config(drop)
    for path in (project.ssh_config, project.known_hosts, project.inventory):
        path.unlink(missing_ok=True)
