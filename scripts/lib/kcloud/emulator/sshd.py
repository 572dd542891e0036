"""Real OpenSSH servers for active instances, so that ssh and Ansible really connect.

Each active instance gets its own `sshd` bound to its own loopback address
(127.R.S.x, with R.S random per emulator process so two emulators do not
collide), its own host key, and an AuthorizedKeysFile holding only the public
keys it was launched with. As root, sshd listens on port 22 (or --ssh-port)
for the provider's login user (Lambda `ubuntu`, DataCrunch `root`); as any
other user it can only log that user in, on an unprivileged port (2222).

Every session is the instance's own machine (machines.py): sshd sets HOME to
the home directory inside the instance's root (`SetEnv`, which wins over the
passwd entry), plus KCLOUD_EMULATOR_ROOT and KCLOUD_INSTANCE_ID, and a
ForceCommand wrapper starts every session in HOME: the client's command
through the user's shell, a login shell when there is none, and the
sftp-server binary for the sftp subsystem (internal-sftp cannot be exec'd).
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import contextlib
import getpass
import ipaddress
import os
import pwd
import random
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .machines import child_setup, home_binds

SSHD = "/usr/sbin/sshd"
SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/lib/sftp-server")
OFF_REASON = "SSH is off (the emulator was started with ssh='off'): instances are not reachable by SSH"
START_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0
PUBLIC_KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
SSHD_CONFIG = """\
ListenAddress {ip}:{port}
HostKey {dir}/ssh_host_ed25519_key
AuthorizedKeysFile {dir}/authorized_keys
PidFile {dir}/sshd.pid
AllowUsers {user}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PermitUserRC no
PermitUserEnvironment no
X11Forwarding no
SetEnv {env}
ForceCommand {session}
{subsystem}LogLevel INFO
"""
# The ForceCommand: sshd runs it with the user's shell (`$SHELL -c`), the client's command in
# SSH_ORIGINAL_COMMAND (unset when there is none; the sftp subsystem's command line for sftp).
SESSION = """\
#!/bin/sh
# kcloud emulator: every session of instance {instance_id} starts in its own HOME.
cd "$HOME" || exit 1
if [ -z "${{SSH_ORIGINAL_COMMAND+set}}" ]; then
    exec "${{SHELL:-/bin/sh}}" -l
fi
case "$SSH_ORIGINAL_COMMAND" in
    {sftp_case}
esac
exec "${{SHELL:-/bin/sh}}" -c "$SSH_ORIGINAL_COMMAND"
"""


def is_public_key(text: str) -> bool:
    """An OpenSSH one-line public key: `<type> <base64> [comment]`."""
    parts = text.split()
    if len(parts) < 2 or parts[0] not in PUBLIC_KEY_TYPES:
        return False
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        return False
    return blob[4 : 4 + len(parts[0])] == parts[0].encode()


def generate_keypair(comment: str) -> tuple[str, str]:
    """A fresh ed25519 pair (private, public), as Lambda makes when no public key is given."""
    with tempfile.TemporaryDirectory(prefix="kcloud-emulator-key-") as tmp:
        path = Path(tmp) / "key"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
        )
        return path.read_text(), path.with_suffix(".pub").read_text().strip()


class SshdManager:
    """Starts and stops one sshd per instance. Thread-safe."""

    def __init__(
        self, workdir: Path, port: int | None = None, address_base: str = "random", enabled: bool = True
    ) -> None:
        self.workdir = workdir
        self.is_root = os.geteuid() == 0
        self.port = port or (22 if self.is_root else 2222)
        self.base = _address_base(address_base)
        self.enabled = enabled
        self.unavailable_reason = _missing_tools() if enabled else OFF_REASON
        self._next = 2
        self._procs: dict[str, subprocess.Popen] = {}
        self._lock = threading.Lock()
        # sshds are forked by one long-lived thread: PR_SET_PDEATHSIG fires when the forking
        # *thread* exits, and instances boot in short-lived threads of their own.
        self._spawner = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sshd-spawner")

    def login_user(self, provider_user: str) -> str:
        return provider_user if self.is_root else getpass.getuser()

    def ensure_user(self, provider_user: str) -> str:
        """The login user, created first as root when this computer lacks it (and sshd will run)."""
        user = self.login_user(provider_user)
        if self.is_root and not self.unavailable_reason:
            _ensure_user(user)
        return user

    def address(self) -> str:
        """The next loopback address whose SSH port nobody else is using."""
        with self._lock:
            for _ in range(4096):
                ip = self.base + self._next
                self._next += 1
                if ip.packed[3] not in (0, 1, 255) and _port_free(str(ip), self.port):
                    return str(ip)
        raise RuntimeError(f"no free loopback address near {self.base}")

    def start(
        self, instance_id: str, ip: str, provider_user: str, public_keys: list[str], root: Path, home: Path
    ) -> dict:
        """Run sshd for an instance whose machine root and HOME exist; returns the `ssh` block of the admin state."""
        user = self.login_user(provider_user)
        info = {"host": ip, "port": self.port, "user": user}
        if self.unavailable_reason:
            return {**info, "available": False, "reason": self.unavailable_reason}
        try:
            self.ensure_user(provider_user)
            proc = self._spawn(instance_id, ip, user, public_keys, root, home)
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            return {**info, "available": False, "reason": str(exc)}
        with self._lock:
            self._procs[instance_id] = proc
        return {**info, "available": True, "pid": proc.pid, "isolated": proc.isolated}

    def _spawn(
        self, instance_id: str, ip: str, user: str, public_keys: list[str], root: Path, home: Path
    ) -> subprocess.Popen:
        d = self.workdir / "sshd" / instance_id
        d.mkdir(parents=True, exist_ok=True)
        d.parent.chmod(0o755)
        d.chmod(0o755)  # sshd reads authorized_keys as the login user
        host_key = d / "ssh_host_ed25519_key"
        if not host_key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", instance_id, "-f", str(host_key)],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=30,
            )
        keys = d / "authorized_keys"
        keys.write_text("".join(k.strip() + "\n" for k in public_keys))
        keys.chmod(0o644)
        sftp = sftp_server()
        session = d / "session"
        sftp_case = f"{shlex.quote(sftp)}) exec {shlex.quote(sftp)} ;;" if sftp else 'internal-sftp) echo "sftp-server is not installed" >&2; exit 1 ;;'
        session.write_text(SESSION.format(instance_id=instance_id, sftp_case=sftp_case))
        session.chmod(0o755)
        env = {"HOME": home, "KCLOUD_EMULATOR_ROOT": root, "KCLOUD_INSTANCE_ID": instance_id}
        config = d / "sshd_config"
        config.write_text(
            SSHD_CONFIG.format(
                ip=ip,
                port=self.port,
                dir=d,
                user=user,
                env=" ".join(_config_word(f"{k}={v}") for k, v in env.items()),
                session=shlex.quote(str(session)),
                subsystem=f"Subsystem sftp {sftp}\n" if sftp else "",
            )
        )
        if self.is_root:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        binds = home_binds(root, (user, "root"), self.workdir)
        with open(d / "sshd.log", "ab") as log:
            try:
                proc = self._spawner.submit(self._popen, config, log, binds).result()
            except subprocess.SubprocessError:  # no mount namespace here: HOME alone, without one
                binds = []
                proc = self._spawner.submit(self._popen, config, log, binds).result()
        proc.isolated = bool(binds)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (d / "sshd.log").read_text(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"sshd exited with {proc.returncode}: {' | '.join(tail)}")
            if not _port_free(ip, self.port, connect=True):
                return proc
            time.sleep(0.02)
        _terminate(proc)
        raise RuntimeError(f"sshd did not listen on {ip}:{self.port} within {START_TIMEOUT}s")

    @staticmethod
    def _popen(config: Path, log, binds: list[tuple[str, str]]) -> subprocess.Popen:
        return subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=child_setup(binds),
        )

    def running(self) -> set[str]:
        with self._lock:
            return set(self._procs)

    def stop(self, instance_id: str) -> None:
        with self._lock:
            proc = self._procs.pop(instance_id, None)
        if proc is not None:
            _terminate(proc)

    def stop_all(self) -> None:
        for instance_id in self.running():
            self.stop(instance_id)

    def close(self) -> None:
        """Stop every sshd and the spawner thread (the emulator is stopping)."""
        self.stop_all()
        self._spawner.shutdown(wait=True)


def _terminate(proc: subprocess.Popen) -> None:
    """Stop an instance's sshd and its live sessions, as a machine going away drops its connections.

    Sessions are forked children that call setsid(), so they are found by parentage
    before the listener exits (after that they would belong to init).
    """
    for pid in _descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


def _descendants(pid: int) -> list[int]:
    """Every live descendant of a process, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def sftp_server() -> str | None:
    """The external sftp server binary sessions exec for the sftp subsystem, or None."""
    return next((p for p in SFTP_SERVERS if os.access(p, os.X_OK)), None)


def _config_word(text: str) -> str:
    """One double-quoted sshd_config argument; characters sshd could misread are refused."""
    if any(c in text for c in '"\\\n\r'):
        raise RuntimeError(f"cannot put {text!r} in an sshd_config (quote, backslash or newline)")
    return f'"{text}"'


def _missing_tools() -> str | None:
    """Why no instance can get an sshd here (naming the fix), or None."""
    if not os.access(SSHD, os.X_OK):
        return f"sshd not found at {SSHD}: apt-get install -y openssh-server (instances are not reachable by SSH)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not found: apt-get install -y openssh-client (instances are not reachable by SSH)"
    return None


def _address_base(spec: str) -> ipaddress.IPv4Address:
    """127.R.S.0 with random R.S (R >= 16 keeps clear of the commonly used 127.0.x.x)."""
    if spec == "random":
        return ipaddress.IPv4Address(f"127.{random.randint(16, 254)}.{random.randint(0, 255)}.0")
    base = ipaddress.IPv4Address(spec)
    if not base.is_loopback:
        raise ValueError(f"ssh address_base must be a loopback address: {spec}")
    return base


def _port_free(ip: str, port: int, connect: bool = False) -> bool:
    """True if nothing listens on ip:port (probed by connecting, or else by binding)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        if connect:
            sock.settimeout(0.5)
            return sock.connect_ex((ip, port)) != 0
        try:
            sock.bind((ip, port))
        except OSError:
            return False
        return True


def _ensure_user(user: str) -> None:
    """As root, create the provider's login user (e.g. `ubuntu`) if this machine lacks it.

    This (once per computer, like installing openssh-server) is the only thing the
    emulator writes outside its work dir. Its home directory is made too, so that
    sessions and startup scripts can cover it with the instance's (`home_binds`).
    """
    try:
        pwd.getpwnam(user)
    except KeyError:
        # '*' (not the default '!') so that sshd, without PAM, does not treat it as locked
        subprocess.run(
            ["useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", user],
            check=True,
            capture_output=True,
            timeout=30,
        )
