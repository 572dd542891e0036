"""File helpers: atomic writes, locked in-place edits of a user's file, and opening a file
without following a symbolic link planted in its place.

Policy for the project's state files (`.kcloud/`), see `open_nofollow`:
- files that are the record of something (`lock`, `journal.jsonl`): a symlink or a hard link
  there is *refused* (ConfigError naming the file), never written through;
- files kcloud regenerates (`progress.log`, `ssh_config`, `known_hosts`, `hosts`): a planted
  link is *replaced* by a regular file (`atomic_write` renames over it; `open_nofollow(...,
  on_link="replace")` unlinks it and creates the file afresh).
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

REFUSE, REPLACE = "refuse", "replace"


def atomic_write(path: str | os.PathLike, text: str | bytes, mode: int = 0o644) -> Path:
    """Write via a temporary file in the same directory renamed over `path`: a reader sees the
    old file or the new one, never half of one. A symlink at `path` is replaced, not followed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _link_error(path: Path, what: str):
    from kcloud.errors import ConfigError
    return ConfigError(f"{path} is {what}; refusing to write through it",
                       hint=f"remove it (rm {path}); kcloud keeps only regular files there")


def open_nofollow(path: str | os.PathLike, flags: int = os.O_RDONLY, mode: int = 0o600, *,
                  on_link: str = REFUSE) -> int:
    """os.open with O_NOFOLLOW: returns a file descriptor of a regular file with one link.

    A symlink (or a hard link, a FIFO, a device...) at `path` is never opened: with
    on_link="refuse" (the default, for lock and journal files) it raises ConfigError naming the
    file; with on_link="replace" (for files kcloud regenerates) it is removed and, when `flags`
    has O_CREAT, a regular file is created in its place (O_EXCL, so a link planted again in
    between is refused, not followed)."""
    path = Path(path)
    open_flags = flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    for attempt in (1, 2):
        try:
            fd = os.open(path, open_flags, mode)
        except OSError as exc:
            # ELOOP: a symlink; ENXIO: a FIFO without reader (O_NONBLOCK); EISDIR: a directory
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise
            what = "a symbolic link" if os.path.islink(path) else "not a regular file"
            if on_link != REPLACE or attempt == 2 or exc.errno == errno.EISDIR:
                raise _link_error(path, what) from None
        else:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink <= 1:
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
                return fd
            os.close(fd)
            what = "a hard link to another file" if stat.S_ISREG(st.st_mode) else "not a regular file"
            if on_link != REPLACE or attempt == 2 or stat.S_ISDIR(st.st_mode):
                raise _link_error(path, what)
        os.unlink(path)          # replace: drop the planted entry (never touches what it points at)
        if flags & os.O_CREAT:
            open_flags |= os.O_EXCL
    raise AssertionError("not reached")


def append_line(path: str | os.PathLike, line: str, *, on_link: str = REPLACE, sync: bool = False) -> None:
    """Append one line to a log-like file without following a link planted at `path`."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644, on_link=on_link)
    with os.fdopen(fd, "ab") as f:
        f.write(line.rstrip("\n").encode("utf-8", "replace") + b"\n")
        f.flush()
        if sync:
            os.fsync(f.fileno())


@contextmanager
def locked(lock_path: str | os.PathLike) -> Iterator[int]:
    """Hold an exclusive fcntl lock on `lock_path` (created 0600, never through a symlink)."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_nofollow(lock_path, os.O_RDWR | os.O_CREAT, 0o600, on_link=REFUSE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def edit_in_place(path: str | os.PathLike, transform: Callable[[bytes], bytes | None], *,
                  lock_path: str | os.PathLike, backup_path: str | os.PathLike | None = None,
                  backup: str = "first", new_mode: int = 0o600, force_mode: int | None = None) -> bool:
    """Read-modify-write a user's file as bytes under an exclusive lock.

    A symlinked `path` stays a symlink: its target is edited (the temporary file is made in the
    target's directory and renamed over it). The file keeps its permission bits (a 0444 file
    stays 0444) unless `force_mode` is given; a new file gets `new_mode`. `transform(old_bytes)`
    returns the new bytes, or None / the same bytes for "no change" (then nothing is written).
    Before a change the old bytes are copied (0600) to `backup_path`: backup="first" only when
    no backup exists yet, "always" every time. Returns whether the file changed."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    with locked(lock_path):
        try:
            with open(target, "rb") as f:
                old: bytes | None = f.read()
                file_mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        except FileNotFoundError:
            old, file_mode = None, new_mode
        new = transform(old if old is not None else b"")
        if new is None or (old is not None and new == old) or (old is None and not new):
            return False
        if backup_path is not None and old is not None and (backup == "always" or not os.path.lexists(backup_path)):
            atomic_write(backup_path, old, mode=0o600)
        atomic_write(target, new, mode=file_mode if force_mode is None else force_mode)
        return True
