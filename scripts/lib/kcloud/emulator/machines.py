"""Each emulated instance's own disk: a machine root directory under the emulator's work dir.

What runs on an instance (its SSH sessions, its startup script) sees its own
root, HOME and mounted storage, never the real home directories of this
computer. Layout, all under the emulator's work dir:

    machines/<instance-id>/      a Lambda instance's root (removed when it is terminated)
    volumes/<volume-id>/root/    a DataCrunch OS volume's contents: the root of the
                                 instance that boots from it (kept with the volume)
    volumes/<volume-id>/data/    a DataCrunch data volume's contents
    filesystems/<fs-id>/         a Lambda file system's contents
    sshd/<instance-id>/          the instance's sshd files (see sshd.py)

Inside a root: HOME is `home/<login user>` (`root` for root), mounts are
symbolic links (`lambda/nfs/<name>` -> a file system, `mnt/<name>` -> a
volume's data), the startup script is `var/lib/cloud/startup-script` and its
output `var/log/kcloud-startup.log`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

STARTUP_SCRIPT = "var/lib/cloud/startup-script"
STARTUP_LOG = "var/log/kcloud-startup.log"
MOUNT_PARENTS = ("mnt", "lambda/nfs")  # where stale mount links are swept at each boot
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


CLONE_NEWNS, MS_BIND, MS_REC, MS_PRIVATE = 0x00020000, 4096, 16384, 1 << 18

try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-glibc platforms
    _LIBC = None


def die_with_parent() -> None:
    """In the child: get SIGTERM if the emulator dies without stopping us (Linux only).

    The signal is tied to the *thread* that forked the child: fork from a thread
    that outlives the child (or waits for it).
    """
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def home_binds(root: Path, users, workdir: Path) -> list[tuple[str, str]]:
    """(the instance's home, this computer's home) for each user, to cover the latter in a private
    mount namespace, so that `~user`, `/root` and `/home/ubuntu` are the instance's own.

    Only as root; a home that is `/`, missing, or holds the work dir is left alone.
    """
    if os.geteuid() != 0 or _LIBC is None:
        return []
    binds = []
    for user in dict.fromkeys(users):
        try:
            real = Path(pwd.getpwnam(user).pw_dir)
        except KeyError:
            continue
        mine = home_of(root, user)
        if real == Path("/") or not real.is_dir() or not mine.is_dir() or workdir.is_relative_to(real):
            continue
        binds.append((str(mine), str(real)))
    return binds


def child_setup(binds: list[tuple[str, str]]):
    """A preexec_fn: die with the parent thread, then (if `binds`) enter a private mount namespace
    where each real home is covered by the instance's (bind mounts, invisible outside)."""

    def setup() -> None:
        die_with_parent()
        if not binds:
            return
        if _LIBC.unshare(CLONE_NEWNS) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNS)")
        if _LIBC.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:  # nothing leaks to the host
            raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
        for mine, real in binds:
            if _LIBC.mount(mine.encode(), real.encode(), None, MS_BIND | MS_REC, None) != 0:
                raise OSError(ctypes.get_errno(), f"mount --bind {mine} {real}")

    return setup


def home_of(root: Path, user: str) -> Path:
    return root / "root" if user == "root" else root / "home" / user


def mount_name(name: str, fallback: str) -> str:
    """A volume name usable as one path component under /mnt."""
    safe = SAFE_NAME.sub("_", name)
    return fallback if safe in ("", ".", "..") else safe


class Disk:
    """Creates, links and removes the directories of machines, volumes and file systems. Thread-safe."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.is_root = os.geteuid() == 0
        self._startups: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()

    # --- where things live -------------------------------------------------

    def machine_root(self, instance_id: str) -> Path:
        return self.workdir / "machines" / instance_id

    def os_volume_root(self, volume_id: str) -> Path:
        return self.workdir / "volumes" / volume_id / "root"

    def volume_data(self, volume_id: str) -> Path:
        return self.workdir / "volumes" / volume_id / "data"

    def fs_dir(self, fs_id: str) -> Path:
        return self.workdir / "filesystems" / fs_id

    # --- storage lifetimes ---------------------------------------------------

    def make_fs(self, fs_id: str) -> Path:
        path = self.fs_dir(fs_id)
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o755)
        return path

    def remove_fs(self, fs_id: str) -> None:
        shutil.rmtree(self.fs_dir(fs_id), ignore_errors=True)

    def remove_volume(self, volume_id: str) -> None:
        shutil.rmtree(self.workdir / "volumes" / volume_id, ignore_errors=True)

    def remove_machine(self, instance_id: str) -> None:
        shutil.rmtree(self.machine_root(instance_id), ignore_errors=True)

    def wipe(self) -> None:
        """Forget every machine, volume and file system (emulator reset)."""
        for sub in ("machines", "volumes", "filesystems"):
            shutil.rmtree(self.workdir / sub, ignore_errors=True)

    @staticmethod
    def bytes_used(path: Path) -> int:
        """Apparent size of the regular files below `path` (symbolic links not followed)."""
        total = 0
        for dirpath, _dirs, files in os.walk(path):
            for name in files:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(dirpath, name))
                    if not os.path.islink(os.path.join(dirpath, name)):
                        total += st.st_size
        return total

    # --- booting a machine ---------------------------------------------------

    def prepare(self, root: Path, user: str, links: dict[str, Path]) -> Path:
        """Make the root and HOME, then link the mounts (`/path/in/root` -> directory); returns HOME.

        Links left by an earlier instance on the same OS volume (under /mnt and
        /lambda/nfs, pointing into the work dir) are removed first. As root, HOME
        and the mounted directories belong to the login user, as on the real machine.
        """
        for sub in ("", "var/lib/cloud", "var/log", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        self._sweep_links(root, set(links))
        owner = self._owner(user)
        for mount_point, target in links.items():
            target.mkdir(parents=True, exist_ok=True)
            if owner:
                os.chown(target, *owner)
            self._link(root / mount_point.lstrip("/"), target)
        home = home_of(root, user)
        home.mkdir(parents=True, exist_ok=True)
        if owner:
            os.chown(home, *owner)
        home_of(root, "root").mkdir(mode=0o700, exist_ok=True)  # root's, covering /root in its namespace
        return home

    def _sweep_links(self, root: Path, keep: set[str]) -> None:
        for parent in MOUNT_PARENTS:
            d = root / parent
            if d.is_symlink() or not d.is_dir():
                continue
            for entry in d.iterdir():
                inside = "/" + str(entry.relative_to(root))
                if entry.is_symlink() and inside not in keep and self._ours(entry):
                    entry.unlink()

    def _ours(self, link: Path) -> bool:
        return Path(os.readlink(link)).is_relative_to(self.workdir)

    @staticmethod
    def _link(path: Path, target: Path) -> None:
        """Point `path` at `target`: replaces a link or an empty directory; never a non-empty one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        elif path.is_dir():
            try:
                path.rmdir()
            except OSError:
                return  # something real lives there: keep it, as a mount would hide it
        elif path.exists():
            return
        path.symlink_to(target)

    def _owner(self, user: str) -> tuple[int, int] | None:
        """(uid, gid) to give the login user's directories, when running as root as another user."""
        if not self.is_root or user == "root":
            return None
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            return None
        return pw.pw_uid, pw.pw_gid

    # --- startup scripts -----------------------------------------------------

    def run_startup(
        self, instance_id: str, root: Path, home: Path, user: str, text: str | None, timeout: float
    ) -> None:
        """Run a first-boot script as cloud-init would, bounded by `timeout`; everything is logged.

        Only text starting with `#!` runs (argv = [path], never a shell string),
        as the emulator's user, with cwd HOME, a minimal environment and stdin
        from /dev/null; as root, in a mount namespace where the real homes of
        root and the login user are the instance's (see `home_binds`). Its
        output, a timeout or a failure goes to var/log/kcloud-startup.log; none
        of them stops the boot.
        """
        if text is None:
            return
        log_path = root / STARTUP_LOG
        with open(log_path, "ab") as log:
            log.write(f"kcloud-emulator: {_now()} instance {instance_id}: first boot\n".encode())
            log.flush()
            if text.startswith("#cloud-config"):
                log.write(b"kcloud-emulator: #cloud-config user data is not executed by the emulator\n")
                return
            if not text.startswith("#!"):
                log.write(b"kcloud-emulator: startup text does not start with #!: not executed\n")
                return
            script = root / STARTUP_SCRIPT
            script.write_text(text)
            script.chmod(0o700)
            env = {
                "HOME": str(home),
                "KCLOUD_EMULATOR_ROOT": str(root),
                "KCLOUD_INSTANCE_ID": instance_id,
                "PATH": os.environ.get("PATH") or DEFAULT_PATH,
            }
            log.write(f"kcloud-emulator: running {script} (timeout {timeout:g} s)\n".encode())
            log.flush()
            started = time.monotonic()
            binds = home_binds(root, (user, "root"), self.workdir)
            try:
                try:
                    proc = self._popen_startup(script, home, env, log, binds)
                except subprocess.SubprocessError:  # no mount namespace here: run it without one
                    proc = self._popen_startup(script, home, env, log, [])
            except OSError as exc:
                log.write(f"kcloud-emulator: startup script could not run: {exc}\n".encode())
                return
            with self._lock:
                self._startups[instance_id] = proc
            try:
                status = proc.wait(timeout)
                outcome = "killed" if status < 0 else f"exited with status {status}"
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                outcome = f"timed out after {timeout:g} s: killed"
            finally:
                with self._lock:
                    self._startups.pop(instance_id, None)
            log.write(f"kcloud-emulator: startup script {outcome} ({time.monotonic() - started:.1f} s)\n".encode())

    @staticmethod
    def _popen_startup(script: Path, home: Path, env: dict, log, binds) -> subprocess.Popen:
        return subprocess.Popen(
            [str(script)],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=child_setup(binds),  # the calling thread waits for it: the death signal is tied to it
        )

    def startups(self) -> set[str]:
        """Instances whose startup script is running now."""
        with self._lock:
            return set(self._startups)

    def stop_startup(self, instance_id: str) -> None:
        with self._lock:
            proc = self._startups.get(instance_id)
        if proc is not None:
            _kill_group(proc)

    def stop_all_startups(self) -> None:
        for instance_id in self.startups():
            self.stop_startup(instance_id)

    @staticmethod
    def kill_processes(instance_ids: set[str]) -> None:
        """SIGKILL whatever still runs for these machines (e.g. a daemon a startup script left):
        every process whose environment carries KCLOUD_INSTANCE_ID=<one of them>."""
        if not instance_ids:
            return
        marks = {f"KCLOUD_INSTANCE_ID={i}".encode() for i in instance_ids}
        me = os.getpid()
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                pid = int(environ.parent.name)
                if pid != me and marks & set(environ.read_bytes().split(b"\0")):
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                continue  # gone meanwhile, or not ours to read


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL a startup script and what it started (its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
