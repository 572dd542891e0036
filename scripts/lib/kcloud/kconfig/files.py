"""Paths and atomic writes for the Kconfig targets with `os` alone.

defconfig, olddefconfig and savedefconfig must cost little more than kconfiglib parsing the
tree (issue 7): pathlib, tempfile and shutil would add ~10 ms to each, more than their own
work. Paths here are plain strings spelled as `str(pathlib.Path(p))` would spell them, so
messages and file names are the same as before; the writes behave like tempfile.mkstemp +
os.replace (fsutil.atomic_write).
"""
from __future__ import annotations

import os

_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def pathstr(path) -> str:
    """str(pathlib.Path(path)), without importing pathlib for an ordinary path."""
    text = os.fspath(path)
    if isinstance(text, str) and text and os.path.normpath(text) == text:
        return text
    from pathlib import Path
    return str(Path(path))


def absolute(path) -> str:
    """str(pathlib.Path(path).absolute())."""
    text = pathstr(path)
    return text if os.path.isabs(text) else pathstr(os.path.join(os.getcwd(), text))


def parent(path) -> str:
    """str(pathlib.Path(path).parent)."""
    head = os.path.dirname(pathstr(path))
    return pathstr(head) if head else "."


def temp_beside(target: str, suffix: str = "") -> tuple[int, str]:
    """tempfile.mkstemp(prefix=".<name>.", suffix=suffix, dir=<target's directory>): an open
    descriptor of a new file (mode 0600, never through a link) and its path."""
    directory, name = os.path.split(target)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{os.urandom(4).hex()}{suffix}")
        try:
            return os.open(tmp, _CREATE, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name next to {target}")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def replace_with(target: str, writer, mode: int = 0o644, suffix: str = ".tmp") -> None:
    """writer(tmp_path) fills a temporary file next to target (created with `mode`), which
    then replaces it; a symlink at target is replaced, not followed."""
    os.makedirs(parent(target), exist_ok=True)
    fd, tmp = temp_beside(target, suffix)
    os.close(fd)
    try:
        os.chmod(tmp, mode)
        writer(tmp)
        os.replace(tmp, target)
    except BaseException:
        _unlink(tmp)
        raise


def write_text(target: str, text: str, mode: int = 0o644) -> str:
    """fsutil.atomic_write: the whole file or the previous one, flushed to disk before the rename."""
    os.makedirs(parent(target), exist_ok=True)
    fd, tmp = temp_beside(target)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        _unlink(tmp)
        raise
    return target


def copy_bytes(source: str, destination: str) -> None:
    """shutil.copyfile for a small file."""
    with open(source, "rb") as f:
        data = f.read()
    with open(destination, "wb") as f:
        f.write(data)
