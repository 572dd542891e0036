"""Launches in flight, so that `make destroy` never reports success while one may still land.

Every process that may launch for a directory (the `make bringup` process, and terraform's
kcloud plugin while it creates) holds `.kcloud/launching.lock` *shared*; destroy takes it
*exclusively*, waiting (bounded) until every launcher is gone. A launcher whose owner died (the
bringup was SIGKILLed; terraform and the plugin run in their own session) notices within a
second through `watch_owner` and stops: it terminates what it was booting and exits.
"""
from __future__ import annotations

import fcntl
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from kcloud.errors import ConfigError, KcloudError

OWNER_ENV = "KCLOUD_OWNER_PID"      # the bringup process a launcher serves
LOCK_ENV = "KCLOUD_LAUNCH_LOCK"     # the directory's launching.lock


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open {path} ({exc.strerror}; a symlink there is refused)",
                          hint=f"remove {path} and try again") from None


@contextmanager
def launching(path: str | os.PathLike | None):
    """Hold the directory's launching lock shared while a launch may happen."""
    if not path:
        yield
        return
    fd = _open(Path(path))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KcloudError("make destroy is running in this directory: not launching anything",
                              hint="wait for it to finish, then run make bringup") from None
        yield
    finally:
        os.close(fd)


@contextmanager
def quiesced(path: str | os.PathLike, timeout: float = 180.0, say: Callable[[str], None] = print):
    """Wait until no launcher of this directory is left, then keep new ones out."""
    fd = _open(Path(path))
    try:
        deadline = time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    say(f"A launch of this directory is still in flight (an interrupted bringup); "
                        f"waiting up to {timeout:.0f} s for it to stop ...")
                    told = True
                if time.monotonic() >= deadline:
                    raise KcloudError(f"a launch of this directory is still in flight after {timeout:.0f} s; "
                                      "nothing was destroyed yet", hint="run make destroy again") from None
                time.sleep(0.5)
        yield
    finally:
        os.close(fd)


def owner_alive(pid: int | None = None) -> bool:
    pid = pid if pid is not None else owner_pid()
    if not pid:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_pid() -> int | None:
    try:
        return int(os.environ.get(OWNER_ENV, "")) or None
    except ValueError:
        return None


def watch_owner(on_gone: Callable[[], None], interval: float = 0.5) -> threading.Thread | None:
    """Call `on_gone` once when the owner process named in the environment has died."""
    pid = owner_pid()
    if not pid:
        return None

    def run():
        while owner_alive(pid):
            time.sleep(interval)
        on_gone()

    thread = threading.Thread(target=run, name="kcloud-owner-watch", daemon=True)
    thread.start()
    return thread


def die_with_parent() -> None:
    """For subprocess preexec_fn: SIGTERM this child when the process that started it dies."""
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)    # PR_SET_PDEATHSIG
    except Exception:     # not Linux: the owner watch in the plugin still applies
        pass
