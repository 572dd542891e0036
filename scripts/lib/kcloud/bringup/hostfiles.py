"""Files that let a person and Ansible reach the machines: a per-directory SSH config (included
from ~/.ssh/config, which is backed up once and otherwise left alone) and the `hosts` inventory.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kcloud.bringup.project import Project
from kcloud.fsutil import atomic_write

MARK = "# kcloud: machines of"


@dataclass(frozen=True)
class Host:
    name: str
    ip: str
    user: str
    port: int
    identity: Path


def write(project: Project, hosts: list[Host], update_user_config: bool = True) -> None:
    blocks = [f"# Written by kcloud for {project.root}; removed by 'make destroy'. Do not edit.\n"]
    for h in hosts:
        blocks.append(
            f"Host {h.name}\n  HostName {h.ip}\n  User {h.user}\n  Port {h.port}\n"
            f"  IdentityFile {h.identity}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {project.known_hosts}\n  StrictHostKeyChecking accept-new\n"
            f"  LogLevel ERROR\n")
    atomic_write(project.ssh_config, "\n".join(blocks), mode=0o600)
    inventory = ["[all]"] + [f"{h.name}" for h in hosts] + [
        "", "[all:vars]", "ansible_python_interpreter=/usr/bin/python3",
        f"ansible_ssh_common_args='-F {project.ssh_config}'", ""]
    atomic_write(project.inventory, "\n".join(inventory))
    if update_user_config:
        _include(project)


def _user_config() -> Path:
    return Path(os.path.expanduser("~/.ssh/config"))


def _include_line(project: Project) -> str:
    return f"Include {project.ssh_config}  {MARK} {project.root}"


def _include(project: Project) -> None:
    """Put our Include line first in ~/.ssh/config (Include applies globally only before any
    Host block). The user's lines are kept as they are; the first change keeps a backup."""
    cfg = _user_config()
    text = cfg.read_text() if cfg.exists() else ""
    line = _include_line(project)
    if line in text.splitlines():
        return
    backup = cfg.with_name("config.kcloud-backup")
    if cfg.exists() and not backup.exists():
        shutil.copy2(cfg, backup)
    cfg.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(cfg, line + "\n" + text, mode=0o600)


def remove(project: Project) -> None:
    cfg = _user_config()
    if cfg.exists():
        line = _include_line(project)
        lines = cfg.read_text().splitlines(keepends=True)
        kept = [l for l in lines if l.rstrip("\n") != line]
        if len(kept) != len(lines):
            atomic_write(cfg, "".join(kept), mode=0o600)
    for path in (project.ssh_config, project.known_hosts, project.inventory):
        path.unlink(missing_ok=True)
