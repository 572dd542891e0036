"""Provider credentials: an INI file per provider (0600), with per-field environment overrides.

Precedence, per field: environment variable, then `[profile]` in the credentials file.
Secrets are registered for redaction as soon as they are read.
"""
from __future__ import annotations

import configparser
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from kcloud import redact
from kcloud.errors import CredentialsError
from kcloud.fsutil import edit_in_place


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
    spelled = {}
    if missing:
        found = _read_keys(spec, profile, missing)
        values.update({name: value for name, (_key, value) in found.items()})
        spelled = {name: key for name, (key, _value) in found.items()}
    missing = [name for name in spec.fields if not values.get(name)]
    if missing and len(missing) < len(spec.fields):
        # Half a pair, e.g. a kdevops file with only `datacrunch_api_key=` (the secret): say
        # what the other half is and where it is found, not just that it is missing.
        def source(name: str) -> str:       # "client_secret (datacrunch_api_key)"
            where = spelled.get(name) or (f"${spec.env[name]}" if name not in spelled and name in spec.env else name)
            return name if where == name else f"{name} ({where})"
        have = ", ".join(source(n) for n in spec.fields if values.get(n))
        why = " ".join(notes(spec).get(n, "") for n in missing).strip()
        raise CredentialsError(
            f"{spec.provider}: {spec.path} [{profile}] has the {have} but no {', '.join(missing)}"
            + (f": {why}" if why else ""),
            hint=f"add '{spec.fields[missing[0]][0]} = ...' under [{profile}] in {spec.path}, or run: "
                 f"python3 scripts/{spec.provider}_credentials.py set (it asks for each value)",
            provider=spec.provider)
    if missing:
        raise CredentialsError(
            f"{spec.provider}: no {', '.join(missing)} in {spec.path} [{profile}]",
            hint=f"run: python3 scripts/{spec.provider}_credentials.py set ...", provider=spec.provider)
    for name in spec.secrets:
        redact.register(values[name])
    return values


def notes(spec: CredentialSpec) -> dict[str, str]:
    """What the provider's data file says about each field (where it is found, why it is
    needed): `credentials.notes` in data/<provider>.yaml."""
    from kcloud import providers
    from kcloud.errors import KcloudError
    try:
        return dict(providers.data(spec.provider)["credentials"].get("notes") or {})
    except (KcloudError, KeyError):
        return {}


def stored(spec: CredentialSpec, profile: str = "default", path: Path | None = None) -> dict[str, tuple[str, str]]:
    """The fields present in the file's `[profile]` (the environment is not read), each as
    (the key it is spelled with, its value). Refuses a file other users can read, as load()."""
    return _read_keys(spec, profile, list(spec.fields), path)


def _read_file(spec: CredentialSpec, profile: str, wanted: list[str]) -> dict[str, str]:
    return {name: value for name, (_key, value) in _read_keys(spec, profile, wanted).items()}


def _read_keys(spec: CredentialSpec, profile: str, wanted: list[str],
               path: Path | None = None) -> dict[str, tuple[str, str]]:
    path = Path(path) if path is not None else spec.path
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
                found[name] = (key, section[key].strip().strip("'\""))
                break
    return found


def store(spec: CredentialSpec, values: dict[str, str], profile: str = "default") -> Path:
    """Set fields of `[profile]` in the credentials file, editing it line by line: other
    profiles, comments, unknown keys and the file's own spelling of a key are kept (a
    duplicate of a key being set is commented out, not dropped). Written atomically with mode
    0600 under a lock; the previous file is kept as `credentials.kcloud-backup` (0600)."""
    if not _PROFILE.fullmatch(profile):
        raise CredentialsError(f"{spec.provider}: profile name {profile[:40]!r} is not usable in an INI header",
                               provider=spec.provider)
    clean = {}
    for name, value in values.items():
        value = str(value).strip()
        if not value or _CONTROL.search(value):
            raise CredentialsError(f"{spec.provider}: the {name} given is empty or holds a line break or "
                                   "control character; nothing written", provider=spec.provider)
        clean[name] = value
    path = spec.path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def edit(old: bytes) -> bytes:
        text = old.decode("utf-8", "surrogateescape")
        for name, value in clean.items():
            text = _ini_set(text, profile, spec.fields[name], value)
        try:                     # what load() will read: refuse to write a file it cannot
            text.encode("utf-8")
            configparser.ConfigParser(interpolation=None).read_string(text)
        except (configparser.Error, UnicodeEncodeError) as exc:
            exc = "not UTF-8 text" if isinstance(exc, UnicodeEncodeError) else exc
            first = str(exc).splitlines()[0][:160]     # the first line never holds a value
            raise CredentialsError(f"{path} is not a valid INI file even with the new key ({first}); "
                                   "nothing written", hint=f"fix or remove {path} by hand, then run set again",
                                   provider=spec.provider) from None
        return text.encode("utf-8", "surrogateescape")
    edit_in_place(path, edit, lock_path=path.parent / ".credentials.kcloud-lock",
                  backup_path=path.with_name("credentials.kcloud-backup"), backup="always",
                  new_mode=0o600, force_mode=0o600)
    return path


_PROFILE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER = re.compile(r"\[(?P<name>.+)\]")          # configparser's SECTCRE, on the stripped line
_OPTION = re.compile(r"(?P<key>[^=:\s][^=:]*?)\s*[=:]")


def _ini_set(text: str, section: str, keys: tuple[str, ...], value: str) -> str:
    """Set one field in the first `[section]` of INI text. `keys` are the accepted spellings:
    the first one present (the one `load` reads) is updated in place, else keys[0] is added."""
    lines = text.splitlines(keepends=True)
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    start = end = None
    options: list[tuple[int, list[int], str]] = []    # (line, its continuation lines, key) in ours
    in_value = False                                 # the last option's value may continue
    for i, line in enumerate(lines):
        stripped = line.strip()
        ours = start is not None and end is None
        if not stripped or stripped[0] in "#;":
            continue
        if in_value and line[:1] in (" ", "\t"):     # configparser: an indented line continues
            if ours and options and options[-1][0] >= start:
                options[-1][1].append(i)
            continue
        header = _HEADER.match(stripped)
        in_value = False
        if header:
            if ours:
                end = i
            if header.group("name") == section and start is None:
                start = i
            continue
        option = _OPTION.match(stripped)
        if option:
            in_value = True
            if ours:
                options.append((i, [], option.group("key").strip().lower()))
    if start is None:                                # a new section at the end
        if lines and not lines[-1].endswith(("\n", "\r")):
            lines[-1] += eol
        if lines and lines[-1].strip():
            lines.append(eol)
        return "".join(lines + [f"[{section}]{eol}", f"{keys[0]} = {value}{eol}"])
    present = [k for k in keys if any(o[2] == k for o in options)]
    if not present:                                  # a new key after the section's last option
        after = max([options[-1][0], *options[-1][1]]) if options else start
        if not lines[after].endswith(("\n", "\r")):
            lines[after] += eol
        lines.insert(after + 1, f"{keys[0]} = {value}{eol}")
        return "".join(lines)
    matches = [o for o in options if o[2] == present[0]]
    first, continuation, _ = matches[0]
    original = lines[first]
    indent = original[:len(original) - len(original.lstrip())]
    spelled = _OPTION.match(original.strip()).group("key").strip()
    replaced: dict[int, str | None] = {first: f"{indent}{spelled} = {value}{original[len(original.rstrip(chr(13) + chr(10))):]}"}
    replaced.update({i: None for i in continuation})           # the old value's continuation lines
    for dup, dup_continuation, _ in matches[1:]:               # later duplicates: kept, as comments
        for i in (dup, *dup_continuation):
            replaced[i] = f"# kcloud: superseded duplicate: {lines[i].lstrip()}"
    return "".join(new for i, line in enumerate(lines) if (new := replaced.get(i, line)) is not None)
