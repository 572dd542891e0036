"""Read a resolved .config into typed Settings for bringup; write extra_vars.yaml.

Plain text parsing (no kconfiglib, no Kconfig tree needed): every value bringup needs is
written to .config by Kconfig, including the derived strings
CONFIG_TERRAFORM_<P>_INSTANCE_TYPE / _REGION / _IMAGE.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from kcloud import providers, tiers
from kcloud.errors import ConfigError
from kcloud.fsutil import atomic_write

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
_PRICE = re.compile(r"^\d+(\.\d{1,4})?$")
_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
DEFAULT_PUBKEY = "~/.ssh/kdevops_terraform.pub"


@dataclass(frozen=True)
class Settings:
    provider: str
    selection: tiers.Selection
    hosts_prefix: str
    host_name: str
    image: str                  # "" = the provider's default image
    ssh_genkey: bool            # True: per-directory key kdevops-<project>-<hash>
    pubkey_file: str            # shared key mode only ("" with ssh_genkey)
    ssh_key_name: str           # shared key mode only ("" with ssh_genkey)
    ssh_user: str               # "" = the provider's login user
    ssh_port: int
    ssh_config_update: bool
    boot_timeout: int
    ssh_timeout: int

    def login_user(self) -> str:
        return self.ssh_user or providers.data(self.provider)["login_user"]


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r'\\(.)', r"\1", raw[1:-1])
    return raw


def read_config_raw(path: str | os.PathLike) -> dict[str, str]:
    """{SYMBOL: value as written} in file order; '# CONFIG_X is not set' as 'n'."""
    values: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.rstrip()
        m = _SET.match(line)
        if m:
            values[m.group(1)] = m.group(2)
            continue
        m = _UNSET.match(line)
        if m:
            values[m.group(1)] = "n"
    return values


def read_config(path: str | os.PathLike) -> dict[str, str]:
    """{SYMBOL: value} in file order; strings unquoted, '# CONFIG_X is not set' as 'n'."""
    return {k: _unquote(v) for k, v in read_config_raw(path).items()}


def parse_price(text: str) -> float | None:
    text = (text or "").strip()
    if not text:
        return None
    if text.startswith("$"):
        text = text[1:]
    if not _PRICE.match(text) or float(text) <= 0:
        raise ConfigError(f"CONFIG_TERRAFORM_MAX_PRICE_PER_HOUR=\"{text}\" is not a price in USD per hour",
                          hint='use a positive number such as "2.50", or "" for no ceiling')
    return float(text)


def _int(values: dict, name: str, default: int, low: int, high: int) -> int:
    raw = values.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"CONFIG_{name}={raw} is not a number") from None
    if not low <= value <= high:
        raise ConfigError(f"CONFIG_{name}={value} is out of range ({low}..{high})")
    return value


def _bool(values: dict, name: str, default: bool) -> bool:
    raw = values.get(name)
    return default if raw is None else raw == "y"


def load_settings(path: str | os.PathLike = ".config") -> Settings:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found", hint="run make defconfig-<name> first (make help lists them)")
    values = read_config(path)
    chosen = [p for p in providers.names() if values.get(f"TERRAFORM_{p.upper()}") == "y"]
    if not chosen:
        raise ConfigError(f"{path} names no cloud provider (no CONFIG_TERRAFORM_<PROVIDER>=y)",
                          hint="run make defconfig-<name> first, e.g. make defconfig-lambdalabs")
    provider = chosen[0]
    P = f"TERRAFORM_{provider.upper()}"
    instance_type = values.get(f"{P}_INSTANCE_TYPE", "")
    if not instance_type:
        raise ConfigError(f"{path} has no CONFIG_{P}_INSTANCE_TYPE",
                          hint="run make olddefconfig, or make defconfig-<name> again")
    region = values.get(f"{P}_REGION", "")
    max_price = parse_price(values.get("TERRAFORM_MAX_PRICE_PER_HOUR", ""))
    selection = tiers.parse(provider, instance_type, region, max_price)

    prefix = values.get("KDEVOPS_HOSTS_PREFIX", "") or "kdevops"
    if not _PREFIX.match(prefix):
        raise ConfigError(f"CONFIG_KDEVOPS_HOSTS_PREFIX=\"{prefix}\" is not usable in host names",
                          hint="use lower-case letters, digits and '-', e.g. kn1")
    knlp = _bool(values, "WORKFLOW_KNLP", False)
    genkey = _bool(values, "TERRAFORM_SSH_CONFIG_GENKEY", True)
    return Settings(
        provider=provider,
        selection=selection,
        hosts_prefix=prefix,
        host_name=f"{prefix}-knlp" if knlp else f"{prefix}-gpu",
        image=values.get(f"{P}_IMAGE", ""),
        ssh_genkey=genkey,
        pubkey_file="" if genkey else (values.get("TERRAFORM_SSH_CONFIG_PUBKEY_FILE") or DEFAULT_PUBKEY),
        ssh_key_name="" if genkey else values.get(f"{P}_SSH_KEY_NAME", ""),
        ssh_user=values.get("SSH_CONFIG_USER", ""),
        ssh_port=_int(values, "SSH_CONFIG_PORT", 22, 1, 65535),
        ssh_config_update=_bool(values, "KCLOUD_SSH_CONFIG_UPDATE", True),
        boot_timeout=_int(values, "TERRAFORM_BOOT_TIMEOUT", 600, 1, 86400),
        ssh_timeout=_int(values, "TERRAFORM_SSH_TIMEOUT", 300, 1, 86400),
    )


def extra_vars(raw_values: dict[str, str]) -> dict[str, object]:
    """kdevops style: every CONFIG_ symbol, lower-cased without the prefix; bools as
    true/false, int symbols as integers, strings (quoted in .config) as strings."""
    out: dict[str, object] = {}
    for name, raw in raw_values.items():
        if raw.startswith('"'):
            value: object = _unquote(raw)
        elif raw in ("y", "n", "m"):
            value = raw != "n"
        elif re.fullmatch(r"-?[0-9]+", raw):
            value = int(raw)
        else:
            value = raw
        out[name.lower()] = value
    return out


def write_extra_vars(config: str | os.PathLike = ".config", output: str | os.PathLike | None = None) -> Path:
    from kcloud import datafile     # not PyYAML: its import alone costs more than the rest of defconfig
    config = Path(config)
    output = Path(output) if output else config.with_name("extra_vars.yaml")
    text = "# Generated from .config by kcloud; do not edit (make olddefconfig rewrites it).\n"
    text += datafile.dump_flat(extra_vars(read_config_raw(config)))
    return atomic_write(output, text)
