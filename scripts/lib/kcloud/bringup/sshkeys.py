"""The project's SSH key: generated locally (ed25519), uploaded once, removed on destroy.

Unique mode (default): the account key `kdevops-<project>-<id>` (the directory identity) from
~/.ssh/kdevops_terraform_<sha8> (kdevops' file name). Shared mode: the key name the user chose
(<P>_SSH_KEY_NAME_CUSTOM) with TERRAFORM_SSH_CONFIG_PUBKEY_FILE, never deleted by kcloud.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from kcloud import errors
from kcloud.bringup.project import Project
from kcloud.providers.base import SshKey


def local_key(project: Project, settings) -> tuple[str, Path, Path]:
    """(key name in the account, private key path, public key path), as .config says
    (TERRAFORM_SSH_CONFIG_PUBKEY_FILE, GENKEY). Unique mode names the key after this
    directory's identity -- recomputed here, so a .config copied from another checkout or
    computer never makes two directories share one key name."""
    public = Path(settings.pubkey_file).expanduser()
    private = Path(settings.private_key_file).expanduser()
    if settings.ssh_key_unique:
        name = project.unique_key_name(settings.provider)
        if settings.ssh_key_name and settings.ssh_key_name != name:
            print(f"note: .config names the key {settings.ssh_key_name}, but this directory's key is {name}; "
                  "using it (make olddefconfig updates .config)", flush=True)
    else:
        name = settings.ssh_key_name
    if not private.exists() or not public.exists():
        if not settings.ssh_key_generate:
            raise errors.ConfigError(f"SSH key {public} not found and key generation is off",
                                     hint="create it, or set CONFIG_TERRAFORM_SSH_CONFIG_GENKEY=y")
        if private.exists() != public.exists():
            raise errors.ConfigError(f"SSH key pair incomplete: {private if private.exists() else public} "
                                     "exists without its other half", hint="remove it or restore the pair")
        if not shutil.which("ssh-keygen"):
            raise errors.ConfigError("ssh-keygen not found", hint="install openssh-client")
        private.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The comment carries the directory identity (recoverable if .kcloud/ is lost).
        comment = name if settings.ssh_key_unique else f"kdevops-{project.identity(create=True)}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return name, private, public


def ensure_uploaded(provider, name: str, public_key: str, create: bool = True) -> SshKey:
    """The account's key of this name, uploading it when absent (unless `create` is off:
    <P>_SSH_KEY_AUTO_CREATE=n). Idempotent; the caller holds the project lock, so one
    directory never uploads its key twice. Only a parsed public key is ever sent."""
    from kcloud.sshpub import parse_public_key
    public_key = parse_public_key(public_key)
    mine = [k for k in provider.ssh_keys() if k.name == name]
    for key in mine:
        if _same_key(key.public_key, public_key):
            return key
    if mine:
        raise errors.ConfigError(f"{provider.name}: an SSH key named {name} exists with a different public key",
                                 hint=f"delete it (scripts/{provider.name}_ssh_keys.py delete {name}) or use another name")
    if not create:
        raise errors.ConfigError(f"{provider.name}: no SSH key named {name} in the account, and uploading it is off",
                                 hint=f"upload it (make {provider.name}-ssh-setup) or set "
                                      f"CONFIG_TERRAFORM_{provider.name.upper()}_SSH_KEY_AUTO_CREATE=y")
    return provider.add_ssh_key(name, public_key)


def remove(provider, name: str) -> int:
    """Delete every key of this name from the account; returns how many were removed."""
    keys = [k for k in provider.ssh_keys() if k.name == name]
    for k in keys:
        provider.delete_ssh_key(k.id)
    return len(keys)


def _same_key(a: str, b: str) -> bool:
    return a.split()[:2] == b.split()[:2]
