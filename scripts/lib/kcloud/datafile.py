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
from pathlib import Path

CACHE_DIR = "__pycache__"
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Words YAML 1.1 resolves to something other than a string when unquoted.
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
# In a double-quoted scalar: the quote and backslash, and what YAML refuses in a stream or
# folds as a line break, written as escapes.
_ESCAPE = re.compile("[\\\\\"\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
_SHORT = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r", "\x00": "\\0"}


def cache_path(path: Path) -> Path:
    return path.parent / CACHE_DIR / f"{path.name}.{sys.implementation.cache_tag}.marshal"


def load(path: str | os.PathLike) -> object:
    path = Path(path)
    st = path.stat()
    stamp = (st.st_size, st.st_mtime_ns)
    cached = cache_path(path)
    try:
        saved_stamp, data = marshal.loads(cached.read_bytes())
        if saved_stamp == stamp:
            return data
    except (OSError, EOFError, ValueError, TypeError):
        pass
    import yaml
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    _store(cached, stamp, data)
    return data


def _store(cached: Path, stamp: tuple[int, int], data: object) -> None:
    try:
        blob = marshal.dumps((stamp, data))
    except ValueError:          # e.g. a date: not worth a copy
        return
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    try:
        cached.parent.mkdir(exist_ok=True)
        tmp.write_bytes(blob)
        os.replace(tmp, cached)
    except OSError:
        tmp.unlink(missing_ok=True)


def _quoted(text: str) -> str:
    return '"' + _ESCAPE.sub(lambda m: _SHORT.get(m.group()) or f"\\u{ord(m.group()):04x}", text) + '"'


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
