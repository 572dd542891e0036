"""YAML files on the fast path without PyYAML (importing it costs ~15 ms, more than the rest
of a Kconfig target's own work).

`load(path)`: a data file parsed once into a marshal copy in `__pycache__/` next to it, keyed
on the file's size and modification time like Python's own bytecode. `make` writes the
copies at install (`python -m kcloud.datafile FILE...`), so a machine with
PYTHONDONTWRITEBYTECODE=1 starts as fast; a stale or missing copy is rebuilt on the spot
(best effort: a read-only checkout just parses every time).

`dump_flat(mapping)`: a flat mapping of str/bool/int/None (and plain decimal floats) as
block YAML that `yaml.safe_load` reads back as the same mapping (strings double-quoted).
"""
from __future__ import annotations

import marshal
import os
import re
import sys

CACHE_DIR = "__pycache__"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Words YAML 1.1 resolves to something other than a string when unquoted.
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
# In a double-quoted scalar: the quote and backslash, and what YAML refuses in a stream or
# folds as a line break, written as escapes.
# (compiled when first needed: ~0.5 ms, and the usual value is plain printable ASCII)
_ESCAPE = "[\\\\\"\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]"
_SHORT = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x00": "\\0"}


def _cache_file(path: str) -> str:
    directory, name = os.path.split(path)
    return os.path.join(directory, CACHE_DIR, f"{name}.{sys.implementation.cache_tag}.marshal")


def cache_path(path: str | os.PathLike):
    """Where load() keeps the parsed copy of `path` (a pathlib.Path)."""
    from pathlib import Path
    return Path(_cache_file(str(Path(path))))


def load(path: str | os.PathLike) -> object:
    path = os.fspath(path)      # plain os calls: pathlib alone costs ~3 ms of a Kconfig target
    st = os.stat(path)
    stamp = (st.st_size, st.st_mtime_ns)
    cached = _cache_file(path)
    try:
        with open(cached, "rb") as f:
            saved_stamp, data = marshal.loads(f.read())
        if saved_stamp == stamp:
            return data
    except (OSError, EOFError, ValueError, TypeError):
        pass
    import yaml
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f.read())
    _store(cached, stamp, data)
    return data


def _store(cached: str, stamp: tuple[int, int], data: object) -> None:
    try:
        blob = marshal.dumps((stamp, data))
    except ValueError:          # e.g. a date: not worth a copy
        return
    directory, name = os.path.split(cached)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    try:
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass
        with open(tmp, "wb") as f:
            f.write(blob)
        os.replace(tmp, cached)
    except OSError:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _quoted(text: str) -> str:
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return '"' + text + '"'           # nothing in _ESCAPE
    return '"' + re.sub(_ESCAPE, lambda m: _SHORT.get(m.group()) or f"\\u{ord(m.group()):04x}", text) + '"'


def _scalar(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and re.fullmatch(r"-?[0-9]+\.[0-9]+", repr(value)):
        return repr(value)
    if isinstance(value, str):
        return _quoted(value)
    raise TypeError(f"dump_flat: {type(value).__name__} value {value!r} is not a plain scalar")


def _key(key: str) -> str:
    return key if _PLAIN_KEY.match(key) and key.lower() not in _RESERVED else _quoted(key)


def dump_flat(mapping: dict[str, object]) -> str:
    return "".join(f"{_key(str(k))}: {_scalar(v)}\n" for k, v in mapping.items()) or "{}\n"


if __name__ == "__main__":      # make's install step: python -m kcloud.datafile FILE...
    for arg in sys.argv[1:]:
        load(arg)
