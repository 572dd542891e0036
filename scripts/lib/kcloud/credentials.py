"""Provider credentials: an INI file per provider (0600), with per-field environment overrides.

Precedence, per field: environment variable, then `[profile]` in the credentials file.
Secrets are registered for redaction as soon as they are read.
"""
from __future__ import annotations

import configparser
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from kcloud import redact
from kcloud.errors import CredentialsError
from kcloud.fsutil import atomic_write


@dataclass(frozen=True)
class CredentialSpec:
    provider: str
    directory: str                      # e.g. "~/.lambdalabs"
    fields: dict[str, tuple[str, ...]]  # our name -> accepted keys in the file (first is written)
    env: dict[str, str]                 # our name -> environment variable
    secrets: tuple[str, ...]            # fields that are secret

    @property
    def path(self) -> Path:
        return Path(os.path.expanduser(self.directory)) / "credentials"


def load(spec: CredentialSpec, profile: str = "default") -> dict[str, str]:
    """Return every field, or raise CredentialsError naming what is missing and how to fix it."""
    values = {name: os.environ[var] for name, var in spec.env.items() if os.environ.get(var)}
    missing = [name for name in spec.fields if name not in values]
    if missing:
        values.update(_read_file(spec, profile, missing))
    missing = [name for name in spec.fields if not values.get(name)]
    if missing:
        raise CredentialsError(
            f"{spec.provider}: no {', '.join(missing)} in {spec.path} [{profile}]",
            hint=f"run: python3 scripts/{spec.provider}_credentials.py set ...", provider=spec.provider)
    for name in spec.secrets:
        redact.register(values[name])
    return values


def _read_file(spec: CredentialSpec, profile: str, wanted: list[str]) -> dict[str, str]:
    path = spec.path
    if not path.exists():
        return {}
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):04o}); refusing to use it",
            hint=f"run: chmod 600 {path}", provider=spec.provider)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(path.read_text())
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise CredentialsError(f"{path} is not a valid credentials file ({first})",
                               hint=f"expected '[{profile}]' then 'key = value' lines; "
                                    f"rewrite it with scripts/{spec.provider}_credentials.py set",
                               provider=spec.provider) from None
    if not parser.has_section(profile):
        return {}
    section = parser[profile]
    found = {}
    for name in wanted:
        for key in spec.fields[name]:
            if section.get(key, "").strip():
                found[name] = section[key].strip().strip("'\"")
                break
    return found


def store(spec: CredentialSpec, values: dict[str, str], profile: str = "default") -> Path:
    """Write (or update) `[profile]` atomically with mode 0600; other profiles are kept."""
    parser = configparser.ConfigParser(interpolation=None)
    if spec.path.exists():
        try:
            parser.read_string(spec.path.read_text())
        except configparser.Error:
            parser = configparser.ConfigParser(interpolation=None)  # replaced wholesale below
    if not parser.has_section(profile):
        parser.add_section(profile)
    for name, value in values.items():
        parser[profile][spec.fields[name][0]] = value
    lines = []
    for section in parser.sections():
        lines.append(f"[{section}]")
        lines.extend(f"{k} = {v}" for k, v in parser[section].items())
        lines.append("")
    spec.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return atomic_write(spec.path, "\n".join(lines), mode=0o600)
