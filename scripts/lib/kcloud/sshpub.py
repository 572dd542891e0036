"""OpenSSH public keys: what may be uploaded to a provider or written into terraform.tfvars.

`parse_public_key` accepts exactly one `<type> <base64> [comment]` line whose base64 decodes
to a key blob that starts with the same type string; anything else (a private key, a PEM
block, two keys, authorized_keys options, garbage) is refused with one line.
"""
from __future__ import annotations

import base64
import binascii
import re
import struct

from kcloud.errors import ConfigError

KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
             "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")
MAX_LINE = 16 * 1024            # a 16384-bit RSA key is about 2.8 KB of base64
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def parse_public_key(text: str | bytes, source: str = "public key") -> str:
    """Return the key as one normalized line `<type> <base64>[ <comment>]`, or raise
    ConfigError: `<source>: not an OpenSSH public key (<why>)`."""
    def refuse(why: str):
        return ConfigError(f"{source}: not an OpenSSH public key ({why})",
                           hint="give the .pub file, e.g. ~/.ssh/id_ed25519.pub")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise refuse("not UTF-8 text") from None
    if "PRIVATE KEY" in text or "-----BEGIN" in text:
        raise refuse("it is a private key or a PEM block; upload the .pub file")
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise refuse("empty")
    if len(lines) > 1:
        raise refuse(f"{len(lines)} lines; expected exactly one key")
    line = lines[0].strip()
    if len(line) > MAX_LINE:
        raise refuse(f"{len(line)} characters")
    if _CONTROL.search(line):
        raise refuse("control characters")
    parts = line.split(None, 2)
    kind = parts[0]
    if kind not in KEY_TYPES:
        raise refuse(f"unknown key type {kind[:40]!r}; expected one of {', '.join(KEY_TYPES)}")
    if len(parts) < 2:
        raise refuse("no key data after the type")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise refuse("the key data is not base64") from None
    if len(blob) < 4:
        raise refuse("the key data is too short")
    (length,) = struct.unpack(">I", blob[:4])
    embedded = blob[4:4 + length]
    if length > 64 or len(embedded) != length or embedded != kind.encode():
        raise refuse(f"the key data is not a {kind} key")
    if len(blob) <= 4 + length:
        raise refuse("the key data holds no key")
    return " ".join(parts)
