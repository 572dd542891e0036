"""The directory's nodes, as bringup left them, and how to reach them.

Nodes come from `.kcloud/ssh_config` (one `Host` block per node) and the Ansible inventory
`hosts` (`[all]`/`[gpu]` with `node_rank=` and `private_ip=` host vars); a single-node
inventory without groups or vars is one node of rank 0. Every name is checked against the
host-name pattern bringup writes with, every rank and address parsed, before anything reaches
a command line. ssh and rsync get argv lists; what runs remotely is a script on stdin whose
values were quoted with shlex.quote (remote.py).
"""
from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kcloud.bringup.hostfiles import HOST_NAME, shown, ssh_path
from kcloud.errors import ConfigError, KcloudError

SSH_OPTIONS = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=5",
               "-o", "ServerAliveCountMax=3"]
SSH_LOST = 255          # ssh's own failure (connection refused, reset, timed out)


class Unreachable(KcloudError):
    """A node did not answer SSH."""


@dataclass(frozen=True)
class Node:
    name: str
    rank: int
    private_ip: str = ""


def ssh_config_hosts(path: Path) -> list[str]:
    """The Host names of an SSH config kcloud wrote, in order (each checked)."""
    names = []
    for line in path.read_text(errors="replace").splitlines():
        words = line.split()
        if len(words) >= 2 and words[0].lower() == "host":
            for name in words[1:]:
                if not HOST_NAME.fullmatch(name):
                    raise ConfigError(f"{path}: host name {shown(name)} is not one kcloud writes",
                                      hint="run make bringup again to rewrite it")
                names.append(name)
    return names


def inventory(path: Path) -> tuple[dict[str, dict[str, str]], dict[str, list[str]]]:
    """({host: vars}, {group: [hosts]}) of an INI inventory as bringup writes it."""
    hosts: dict[str, dict[str, str]] = {}
    groups: dict[str, list[str]] = {}
    group = "all"
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1]
            continue
        if ":" in group:                       # [all:vars] and the like
            continue
        words = line.split()
        name = words[0]
        if not HOST_NAME.fullmatch(name):
            raise ConfigError(f"{path}: host name {shown(name)} is not one kcloud writes",
                              hint="run make bringup again to rewrite it")
        host_vars = hosts.setdefault(name, {})
        for word in words[1:]:
            key, sep, value = word.partition("=")
            if sep:
                host_vars[key] = value
        groups.setdefault(group, []).append(name)
    return hosts, groups


def read(project) -> list[Node]:
    """Every node of the directory, by rank. One clear line when nothing is brought up."""
    cfg = project.ssh_config
    if not cfg.is_file():
        raise ConfigError(f"nothing is brought up in {project.root} (no {cfg})",
                          hint="run make bringup first")
    ssh_path(cfg)
    reachable = ssh_config_hosts(cfg)
    if not reachable:
        raise ConfigError(f"nothing is brought up in {project.root} ({cfg} names no host)",
                          hint="run make bringup first")
    host_vars: dict[str, dict[str, str]] = {}
    members = list(reachable)
    if project.inventory.is_file():
        host_vars, groups = inventory(project.inventory)
        members = groups.get("gpu") or groups.get("all") or list(host_vars) or members
        unknown = [n for n in members if n not in reachable]
        if unknown:
            raise ConfigError(f"{project.inventory} names {', '.join(unknown)}, which {cfg} does not",
                              hint="run make bringup again to rewrite both")
    nodes = []
    for i, name in enumerate(members):
        v = host_vars.get(name, {})
        rank_text = v.get("node_rank", str(i) if len(members) > 1 else "0")
        if not rank_text.isdigit() or int(rank_text) >= 4096:
            raise ConfigError(f"{project.inventory}: node_rank of {name} is {shown(rank_text)}, not a rank")
        ip = v.get("private_ip", "").strip("'\"")
        if ip:
            try:
                ip = str(ipaddress.ip_address(ip))
            except ValueError:
                raise ConfigError(f"{project.inventory}: private_ip of {name} is {shown(ip)}, "
                                  "not an IP address") from None
        nodes.append(Node(name, int(rank_text), ip))
    nodes.sort(key=lambda n: n.rank)
    if len({n.rank for n in nodes}) != len(nodes):
        raise ConfigError(f"{project.inventory}: two nodes share a node_rank", hint="run make bringup again")
    return nodes


def ssh_argv(project, node: str, remote: str = "bash -s") -> list[str]:
    if not HOST_NAME.fullmatch(node):
        raise ConfigError(f"invalid node name {shown(node)}")
    return ["ssh", "-F", str(project.ssh_config), *SSH_OPTIONS, "--", node, remote]


def rsync_shell(project) -> str:
    """rsync's -e: rsync splits it on spaces and honours quotes; the config path is one that
    ssh_path accepts (no quotes, backslashes or control characters)."""
    return " ".join(["ssh", "-F", shlex.quote(ssh_path(project.ssh_config).strip('"')), *SSH_OPTIONS])


# The remote rsync starts in the node's HOME: paths are relative to it, as the job's are.
RSYNC_PATH = "cd && rsync"


def rsync_argv(project, *args: str) -> list[str]:
    """--protect-args: remote paths travel inside rsync's protocol, never through the remote
    shell (an rsync older than 3.2.4 would otherwise hand it an artifact path to parse)."""
    return ["rsync", "-e", rsync_shell(project), f"--rsync-path={RSYNC_PATH}", "--protect-args", *args]


def run(project, node: str, script: str, timeout: float | None = 120) -> subprocess.CompletedProcess:
    """Run `script` with bash on `node` (on stdin); Unreachable when ssh itself failed."""
    try:
        proc = subprocess.run(ssh_argv(project, node), input=script.encode(), capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Unreachable(f"{node} did not answer within {timeout:.0f} s") from None
    if proc.returncode == SSH_LOST:
        raise Unreachable(f"{node} is unreachable: {last_line(proc.stderr) or 'ssh failed'}",
                          hint="make status shows whether it runs; make bringup rewrites the SSH config")
    return proc


def last_line(data: bytes) -> str:
    lines = [l.strip() for l in data.decode(errors="replace").splitlines() if l.strip()]
    return lines[-1][:200] if lines else ""


def parse_fields(line: str) -> dict[str, str]:
    """`k=v k=v` (a remote script's answer line) -> dict; values never contain spaces."""
    out = {}
    for word in line.split():
        key, sep, value = word.partition("=")
        if sep and re.fullmatch(r"[a-z_]+", key):
            out[key] = value
    return out
