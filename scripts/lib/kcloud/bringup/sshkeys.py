"""The project's SSH key: generated locally (ed25519), uploaded once, removed on destroy.

Unique mode (default): `kdevops-<project>-<hash>` from ~/.ssh/kdevops_terraform_<hash>.
Shared mode: an existing public key file and key name, never deleted by kcloud.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kcloud import errors
from kcloud.bringup.project import Project
from kcloud.providers.base import SshKey


def local_key(project: Project, settings) -> tuple[str, Path, Path]:
    """(key name, private key path, public key path); generates the unique key if missing."""
    if not settings.ssh_genkey:
        pub = Path(settings.pubkey_file).expanduser()
        if not pub.exists():
            raise errors.ConfigError(f"shared SSH key mode: public key {pub} not found",
                                     hint="set TERRAFORM_SSH_CONFIG_PUBKEY_FILE or use unique keys")
        name = settings.ssh_key_name or pub.stem
        return name, pub.with_suffix(""), pub
    private = project.private_key
    public = private.with_name(private.name + ".pub")
    if not private.exists():
        if not shutil.which("ssh-keygen"):
            raise errors.ConfigError("ssh-keygen not found", hint="install openssh-client")
        private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", project.key_name,
                        "-f", str(private)], check=True, stdin=subprocess.DEVNULL)
    return project.key_name, private, public


def ensure_uploaded(provider, name: str, public_key: str) -> SshKey:
    """The account's key of this name, uploading it when absent. Idempotent; the caller holds
    the project lock, so one directory never uploads its key twice."""
    mine = [k for k in provider.ssh_keys() if k.name == name]
    for key in mine:
        if _same_key(key.public_key, public_key):
            return key
    if mine:
        raise errors.ConfigError(f"{provider.name}: an SSH key named {name} exists with a different public key",
                                 hint=f"delete it (scripts/{provider.name}_ssh_keys.py delete {name}) or use another name")
    return provider.add_ssh_key(name, public_key)


def remove(provider, name: str) -> int:
    """Delete every key of this name from the account; returns how many were removed."""
    keys = [k for k in provider.ssh_keys() if k.name == name]
    for k in keys:
        provider.delete_ssh_key(k.id)
    return len(keys)


def _same_key(a: str, b: str) -> bool:
    return a.split()[:2] == b.split()[:2]
