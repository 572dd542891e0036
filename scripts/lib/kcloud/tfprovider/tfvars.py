"""Render terraform/<provider>/terraform.tfvars (Jinja2): what to launch, never a secret."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable

import jinja2

from kcloud.errors import ConfigError
from kcloud.fsutil import atomic_write

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The first line says who wrote the file (`make` writes an offline one, bringup replaces it).
BRINGUP_ORIGIN = "make bringup, from .config and the launch-time plan"


def hcl(value) -> str:
    """An HCL string literal. JSON escaping covers quotes, backslashes, newlines and every
    control character; ensure_ascii=False keeps other characters literal (HCL has no UTF-16
    surrogate pairs, so JSON's \\ud83d\\ude00 for one emoji would not load); `${` and `%{`
    become HCL's literal `$${` and `%%{`, so no value can start an interpolation."""
    text = str(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"cannot write {text[:40]!r} into terraform.tfvars (not valid Unicode)") from None
    return json.dumps(text, ensure_ascii=False).replace("${", "$${").replace("%{", "%%{")


def hcl_number(value) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"cannot write {str(value)[:40]!r} into terraform.tfvars (not a finite number)")
    return str(int(number)) if number.is_integer() else repr(number)


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                             keep_trailing_newline=True, autoescape=False)
    env.filters["hcl"] = hcl
    env.filters["hcl_number"] = hcl_number
    return env


def render(*, cloud: str, name: str, candidates: Iterable, ssh_key_name: str, ssh_public_key: str = "",
           ssh_public_key_file: str | os.PathLike = "", ssh_key_id: str = "", image: str = "",
           user_data: str = "", boot_timeout: float = 600, poll_interval: float = 5,
           journal_path: str | os.PathLike = "", progress_file: str | os.PathLike = "", owner: str = "",
           origin: str = BRINGUP_ORIGIN, nodes: int = 1, shared_storage: Iterable[str] = (),
           startup_script_id: str = "", boot_volumes: dict | None = None, keep_boot_volumes: bool = False) -> str:
    """`candidates`: kcloud.tiers.Candidate objects, dicts or (type, region) pairs, in order.
    The SSH key is either an existing key (`ssh_key_id`, shared mode) or a public key to
    register (`ssh_public_key` text or `ssh_public_key_file`)."""
    rows = []
    for c in candidates:
        if isinstance(c, dict):
            rows.append({"instance_type": c["instance_type"], "region": c["region"]})
        elif isinstance(c, (tuple, list)):
            rows.append({"instance_type": c[0], "region": c[1]})
        else:
            rows.append({"instance_type": c.instance_type, "region": c.region})
    if not rows:
        raise ConfigError(f"{cloud}: nothing to launch (no candidates)")
    if not ssh_key_id:
        if not ssh_public_key and ssh_public_key_file:
            path = Path(ssh_public_key_file).expanduser()
            if not path.name.endswith(".pub"):
                raise ConfigError(f"{path}: not a public key file (expected a .pub file)")
            try:
                ssh_public_key = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read SSH public key {path}: {exc.strerror}") from None
        if not ssh_public_key.strip():
            raise ConfigError("no SSH public key to register and no existing key id",
                              hint="set CONFIG_TERRAFORM_SSH_CONFIG_PUBKEY_FILE or use a shared key")
        from kcloud.sshpub import parse_public_key      # one OpenSSH public key line, or refused
        ssh_public_key = parse_public_key(ssh_public_key, source=str(ssh_public_key_file or "SSH public key"))
    return _env().get_template("terraform.tfvars.j2").render(
        cloud=cloud, name=name, candidates=rows, ssh_key_name=ssh_key_name,
        ssh_public_key=ssh_public_key.strip(), ssh_key_id=ssh_key_id, image=image or "",
        user_data=user_data or "", boot_timeout=boot_timeout, poll_interval=poll_interval,
        journal_path=str(journal_path or ""), progress_file=str(progress_file or ""), owner=owner or "",
        origin=origin, nodes=int(nodes), shared_storage=list(shared_storage), startup_script_id=startup_script_id,
        boot_volumes=dict(boot_volumes or {}), keep_boot_volumes=bool(keep_boot_volumes))


def write(path: str | os.PathLike, **values) -> Path:
    """Render and write atomically (0644: nothing in it is secret)."""
    return atomic_write(path, render(**values), 0o644)
