"""Read a resolved .config into typed Settings for bringup; write extra_vars.yaml.

Plain text parsing (no kconfiglib, no Kconfig tree needed): every value bringup needs is
written to .config by Kconfig, including the derived strings
CONFIG_TERRAFORM_<P>_INSTANCE_TYPE / _REGION (DataCrunch: _LOCATION) / _IMAGE and the SSH
key name. The symbols are kdevops' (shared/reference/kdevops-kconfig.md), with kdevops'
meanings; each Settings field names the symbol it comes from.
"""
from __future__ import annotations

import _thread
import os
import re

from kcloud import providers
from kcloud.errors import ConfigError
from kcloud.kconfig import files

TYPE_CHECKING = False   # tiers, dataclasses and pathlib are imported where used (see _settings_class)
if TYPE_CHECKING:
    from pathlib import Path

    from kcloud import tiers

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
_PRICE = re.compile(r"^\d+(\.\d{1,4})?$")
_PREFIX = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
SMART_CHEAPEST, SMART_INFER, MANUAL, AUTO = "smart-cheapest", "smart-infer", "manual", "auto"


class _Settings:     # the frozen dataclass `Settings`, made on first use (_settings_class)
    """Everything bringup, destroy and the SSH key targets must honour, from .config.

    <P> is TERRAFORM_<PROVIDER>; paths are kept as written ("~/..."), expand them when used.
    """
    provider: str               # the cloud: CONFIG_TERRAFORM_<PROVIDER>=y
    selection: tiers.Selection  # what to launch where: <P>_INSTANCE_TYPE; region "" (any, closest first) or the pinned <P>_REGION / DataCrunch <P>_LOCATION; TERRAFORM_MAX_PRICE_PER_HOUR
    hosts_prefix: str           # KDEVOPS_HOSTS_PREFIX
    host_name: str              # "<prefix>-gpu", or "<prefix>-knlp" with WORKFLOW_KNLP
    image: str                  # <P>_IMAGE: the OS image id; "" = the provider's default image
    ssh_key_unique: bool        # <P>_SSH_KEY_UNIQUE: a per-directory key name; False (SHARED/MANUAL): a name the user chose
    ssh_key_name: str           # <P>_SSH_KEY_NAME: the key's name in the account, in every mode (kdevops' rule when unique)
    ssh_key_auto_create: bool   # <P>_SSH_KEY_AUTO_CREATE: upload the key when missing at bringup, delete it at destroy; False: it must exist, never deleted
    pubkey_file: str            # TERRAFORM_SSH_CONFIG_PUBKEY_FILE: the public key given to the provider
    private_key_file: str       # the private key: pubkey_file without .pub (DataCrunch's <P>_SSH_KEY_FILE names the same file)
    ssh_key_generate: bool      # TERRAFORM_SSH_CONFIG_GENKEY: generate the local key pair when it is missing; False: it must exist
    ssh_key_regenerate: bool    # TERRAFORM_SSH_CONFIG_GENKEY_OVERWRITE: replace an existing local pair with a fresh one (kdevops: when .config changed)
    ssh_key_empty_passphrase: bool  # TERRAFORM_SSH_CONFIG_GENKEY_EMPTY_PASSPHRASE: generate the key without a passphrase
    ssh_user: str               # the login user: SSH_CONFIG_USER (make line), else TERRAFORM_SSH_CONFIG_USER, else the provider's
    ssh_port: int               # SSH_CONFIG_PORT
    ssh_config_update: bool     # KDEVOPS_SSH_CONFIG_UPDATE: write host entries and include them from ssh_config_file
    ssh_config_file: str        # KDEVOPS_SSH_CONFIG: the SSH configuration that gets the Include line
    ssh_config_prefix: str      # KDEVOPS_SSH_CONFIG_PREFIX: path prefix of this directory's host entry file
    ssh_config_host_file: str   # that file: prefix + sha256 of "<project dir>\n" (64 hex digits), as kdevops
    ssh_config_strict: bool     # KDEVOPS_SSH_CONFIG_UPDATE_STRICT: add the relaxed host-key options to each entry
    ssh_config_backup: bool     # KDEVOPS_SSH_CONFIG_UPDATE_BACKUP: back up ssh_config_file before changing it
    terraform_tool: str         # "terraform" or "opentofu": TERRAFORM_USE_TERRAFORM / TERRAFORM_USE_OPENTOFU
    terraform_binary: str       # TERRAFORM_BINARY_PATH: "" = kcloud's own lookup; a name without "/" = a PATH lookup
    region_mode: str            # how the region is chosen: smart-cheapest, smart-infer, manual (Lambda); auto, manual (DataCrunch)
    keep_volumes: bool          # <P>_KEEP_VOLUMES (DataCrunch): keep OS volumes at destroy, ids cached per host; False elsewhere
    credentials_file: str       # <P>_API_KEY_FILE (DataCrunch): the credentials file; "" = the provider's default
    boot_timeout: int           # TERRAFORM_BOOT_TIMEOUT (seconds)
    ssh_timeout: int            # TERRAFORM_SSH_TIMEOUT (seconds)
    wait_timeout: float = 0.0   # KCLOUD_WAIT_FOR_CAPACITY + KCLOUD_WAIT_TIMEOUT (seconds); 0 = do not wait
    notify_command: str = ""    # KCLOUD_NOTIFY_COMMAND: run (no shell) when ready or when the wait gives up
    max_lifetime: float = 0.0   # KCLOUD_MAX_LIFETIME (seconds); 0 = none. Enforced by the watchdog
    max_spend: float | None = None  # KCLOUD_MAX_SPEND (USD) for this directory's machines; None = none
    any_group: str = ""         # KCLOUD_ANY + KCLOUD_ANY_GROUP: a cross-provider group of the shared ladder; "" = provider only
    destroy_after_job: bool = False  # KCLOUD_DESTROY_AFTER_JOB: every job submit acts as --then destroy
    nodes: int = 1              # KCLOUD_NODES: machines of one type in one region, all or nothing
    startup_script: str = ""    # KCLOUD_STARTUP_SCRIPT: path of a script run on every node at first boot ("" = none)
    filesystem: str = ""        # <P>_FILESYSTEM (Lambda): shared file system name, reused or created, kept by destroy
    shared_volume_gb: int = 0   # <P>_SHARED_VOLUME_SIZE (DataCrunch): shared data volume on every node (0 = none)

    @property
    def ssh_genkey(self) -> bool:
        """Deprecated name of ssh_key_unique (bringup used it before the kdevops symbols)."""
        return self.ssh_key_unique

    def node_names(self) -> list[str]:
        """<prefix>-<host> for one node; <prefix>-<host>-01 ... -NN for several."""
        if self.nodes <= 1:
            return [self.host_name]
        return [f"{self.host_name}-{i:02d}" for i in range(1, self.nodes + 1)]

    def login_user(self) -> str:
        return self.ssh_user or providers.data(self.provider)["login_user"]


_settings_lock = _thread.allocate_lock()


def _settings_class() -> type:
    """Settings, a frozen dataclass made from _Settings when first needed: importing
    dataclasses costs ~8 ms, more than a Kconfig target's own work, and the Kconfig targets only
    check .config (check_settings)."""
    with _settings_lock:
        cls = globals().get("Settings")
        if cls is None:
            from dataclasses import dataclass
            _Settings.__name__ = _Settings.__qualname__ = "Settings"
            cls = globals()["Settings"] = dataclass(frozen=True)(_Settings)
    return cls


def __getattr__(name: str):
    if name == "Settings":
        return _settings_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _unquote(raw: str) -> str:
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return re.sub(r'\\(.)', r"\1", raw[1:-1])
    return raw


def read_config_raw(path: str | os.PathLike) -> dict[str, str]:
    """{SYMBOL: value as written} in file order; '# CONFIG_X is not set' as 'n'."""
    values: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for line in text.splitlines():
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


def _location(provider: str) -> tuple[str, str]:
    """(symbol suffix of the provider's location string, its "any location" value)."""
    loc = (providers.data(provider).get("kconfig") or {}).get("location") or {}
    return loc.get("symbol", "REGION"), loc.get("auto", "")


def _region_mode(values: dict, P: str, location: str, auto: str) -> str:
    for suffix, mode in (("REGION_MANUAL", MANUAL), ("REGION_SMART_INFER", SMART_INFER),
                         ("REGION_SMART_CHEAPEST", SMART_CHEAPEST)):
        if values.get(f"{P}_{suffix}") == "y":
            return mode
    return AUTO if location in ("", auto) else MANUAL


def _strip_pub(path: str) -> str:
    return path[:-len(".pub")] if path.endswith(".pub") else path


def load_settings(path: str | os.PathLike = ".config") -> Settings:
    from kcloud import tiers
    return _resolve(path, tiers.parse, _settings_class())


def check_settings(path: str | os.PathLike = ".config") -> None:
    """Every check load_settings makes, without building Settings (no tiers, no dataclasses):
    how the Kconfig targets validate .config before it replaces the previous one."""
    _resolve(path, None, dict)


def _resolve(path: str | os.PathLike, parse, make):
    """.config -> make(**fields); the selection is parse(provider, type, region, max_price)."""
    from kcloud.kconfig import identity
    path = files.pathstr(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{path} not found", hint="run make defconfig-<name> first (make help lists them)")
    values = read_config(path)
    project = os.path.realpath(files.parent(files.absolute(path)))
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
    symbol, auto = _location(provider)
    location = values.get(f"{P}_{symbol}", "")
    region = "" if location == auto else location
    max_price = parse_price(values.get("TERRAFORM_MAX_PRICE_PER_HOUR", ""))
    selection = parse(provider, instance_type, region, max_price) if parse else None

    prefix = values.get("KDEVOPS_HOSTS_PREFIX", "") or "kdevops"
    if not _PREFIX.match(prefix):
        raise ConfigError(f"CONFIG_KDEVOPS_HOSTS_PREFIX=\"{prefix}\" is not usable in host names",
                          hint="use lower-case letters, digits and '-', e.g. kn1")
    knlp = _bool(values, "WORKFLOW_KNLP", False)

    sha = identity.topdir_sha256(project)
    unique = _bool(values, f"{P}_SSH_KEY_UNIQUE", True)
    key_name = values.get(f"{P}_SSH_KEY_NAME", "") or (
        identity.unique_key_name(provider, project) if unique else values.get(f"{P}_SSH_KEY_NAME_CUSTOM", ""))
    if not key_name:
        raise ConfigError(f"{path}: CONFIG_{P}_SSH_KEY_NAME is empty",
                          hint=f"set CONFIG_{P}_SSH_KEY_NAME_CUSTOM, or choose the unique key with make menuconfig")
    pubkey = values.get("TERRAFORM_SSH_CONFIG_PUBKEY_FILE") or f"~/.ssh/kdevops_terraform_{sha[:8]}.pub"
    private = _strip_pub(pubkey)
    key_file = values.get(f"{P}_SSH_KEY_FILE", "")
    if key_file and key_file != private and key_file != f"~/.ssh/kdevops_terraform_{sha[:8]}":
        raise ConfigError(f"CONFIG_{P}_SSH_KEY_FILE=\"{key_file}\" and CONFIG_TERRAFORM_SSH_CONFIG_PUBKEY_FILE="
                          f"\"{pubkey}\" name different key pairs",
                          hint=f"make them one pair, e.g. CONFIG_TERRAFORM_SSH_CONFIG_PUBKEY_FILE=\"{key_file}.pub\"")
    genkey = _bool(values, "TERRAFORM_SSH_CONFIG_GENKEY", True)
    ssh_update = _bool(values, "KDEVOPS_SSH_CONFIG_UPDATE", True)
    ssh_prefix = values.get("KDEVOPS_SSH_CONFIG_PREFIX") or "~/.ssh/config_kdevops_"
    return make(
        provider=provider,
        selection=selection,
        hosts_prefix=prefix,
        host_name=f"{prefix}-knlp" if knlp else f"{prefix}-gpu",
        image=values.get(f"{P}_IMAGE", ""),
        ssh_key_unique=unique,
        ssh_key_name=key_name,
        ssh_key_auto_create=_bool(values, f"{P}_SSH_KEY_AUTO_CREATE", unique),
        pubkey_file=pubkey,
        private_key_file=private,
        ssh_key_generate=genkey,
        ssh_key_regenerate=genkey and _bool(values, "TERRAFORM_SSH_CONFIG_GENKEY_OVERWRITE", True),
        ssh_key_empty_passphrase=_bool(values, "TERRAFORM_SSH_CONFIG_GENKEY_EMPTY_PASSPHRASE", True),
        ssh_user=values.get("SSH_CONFIG_USER", "") or values.get("TERRAFORM_SSH_CONFIG_USER", ""),
        ssh_port=_int(values, "SSH_CONFIG_PORT", 22, 1, 65535),
        ssh_config_update=ssh_update,
        ssh_config_file=values.get("KDEVOPS_SSH_CONFIG") or "~/.ssh/config",
        ssh_config_prefix=ssh_prefix,
        ssh_config_host_file=ssh_prefix + sha,
        ssh_config_strict=ssh_update and _bool(values, "KDEVOPS_SSH_CONFIG_UPDATE_STRICT", True),
        ssh_config_backup=ssh_update and _bool(values, "KDEVOPS_SSH_CONFIG_UPDATE_BACKUP", True),
        terraform_tool="opentofu" if values.get("TERRAFORM_USE_OPENTOFU") == "y" else "terraform",
        terraform_binary=values.get("TERRAFORM_BINARY_PATH", ""),
        region_mode=_region_mode(values, P, location, auto),
        keep_volumes=_bool(values, f"{P}_KEEP_VOLUMES", False),
        credentials_file=values.get(f"{P}_API_KEY_FILE", ""),
        boot_timeout=_int(values, "TERRAFORM_BOOT_TIMEOUT", 600, 1, 86400),
        ssh_timeout=_int(values, "TERRAFORM_SSH_TIMEOUT", 300, 1, 86400),
        wait_timeout=_wait_timeout(values),
        notify_command=values.get("KCLOUD_NOTIFY_COMMAND", ""),
        max_lifetime=_duration(values, "KCLOUD_MAX_LIFETIME"),
        max_spend=_spend(values.get("KCLOUD_MAX_SPEND", "")),
        any_group=values.get("KCLOUD_ANY_GROUP", "") if _bool(values, "KCLOUD_ANY", False) else "",
        destroy_after_job=_bool(values, "KCLOUD_DESTROY_AFTER_JOB", False),
        nodes=_int(values, "KCLOUD_NODES", 1, 1, 64),
        startup_script=values.get("KCLOUD_STARTUP_SCRIPT", ""),
        filesystem=_filesystem(values.get(f"{P}_FILESYSTEM", "")),
        shared_volume_gb=_int(values, f"{P}_SHARED_VOLUME_SIZE", 0, 0, 1000000),
    )


_FS_NAME = re.compile(r"^[a-zA-Z][0-9a-zA-Z-]{0,59}$")


def _filesystem(name: str) -> str:
    """A Lambda file system name as the API allows it (1-60, a letter first), or ""."""
    if name and not _FS_NAME.match(name):
        raise ConfigError(f'file system name "{name[:64]}" is not valid',
                          hint="1 to 60 letters, digits and '-', starting with a letter")
    return name


def _duration(values: dict[str, str], symbol: str) -> float:
    if not values.get(symbol):
        return 0.0
    from kcloud.launch.wait import parse_duration
    return parse_duration(values[symbol], f"CONFIG_{symbol}")


def _spend(text: str) -> float | None:
    text = (text or "").strip().lstrip("$")
    if not text:
        return None
    if not _PRICE.match(text) or float(text) <= 0:
        raise ConfigError(f'CONFIG_KCLOUD_MAX_SPEND="{text}" is not an amount in USD', hint='use e.g. "25" or ""')
    return float(text)


def _wait_timeout(values: dict[str, str]) -> float:
    if not _bool(values, "KCLOUD_WAIT_FOR_CAPACITY", False):
        return 0.0
    from kcloud.launch.wait import parse_duration
    return parse_duration(values.get("KCLOUD_WAIT_TIMEOUT", "2h") or "2h", "CONFIG_KCLOUD_WAIT_TIMEOUT")


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
    from pathlib import Path
    return Path(_write_extra_vars(config, output))


def _write_extra_vars(config: str | os.PathLike, output: str | os.PathLike | None = None) -> str:
    """write_extra_vars, returning the path as a string (the Kconfig targets do without pathlib)."""
    from kcloud import datafile     # not PyYAML: its import alone costs more than the rest of defconfig
    config = files.pathstr(config)
    output = files.pathstr(output if output else os.path.join(files.parent(config), "extra_vars.yaml"))
    text = "# Generated from .config by kcloud; do not edit (make olddefconfig rewrites it).\n"
    text += datafile.dump_flat(extra_vars(read_config_raw(config)))
    return files.write_text(output, text)
