"""The emulator as one object: both API servers, the lifecycle ticker, the machines and their sshds,
the admin endpoints.

Everything it writes lives in its work dir (`workdir`): machine roots, volumes,
file systems, sshd files and logs (machines.py, sshd.py). The work dir is a new
temp dir, removed on stop; under a given `state_dir` it is kept after stop for
inspection (its sshds and startup scripts are stopped all the same).
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from .datacrunch import DataCrunchApi
from .lambdalabs import LambdaApi
from .machines import Disk
from .scenario import Scenario, load
from .server import ApiServer, Response, json_response
from .sshd import SshdManager
from .state import State

TICK_SECONDS = 0.05
SSH_MODES = ("auto", "required", "off")


class EmulatorError(RuntimeError):
    """The emulator cannot start as asked (e.g. ssh="required" without sshd)."""


class Emulator:
    """Serves both provider APIs on loopback until `stop()`; also a context manager."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        lambdalabs_port: int = 0,
        datacrunch_port: int = 0,
        state_dir: str | Path | None = None,
        ssh: str = "auto",
    ) -> None:
        """`ssh`: "auto" runs sshds if it can (else warns), "required" raises EmulatorError
        without sshd, "off" never runs any (instances report SSH unavailable)."""
        if ssh not in SSH_MODES:
            raise ValueError(f"ssh must be one of {SSH_MODES}, not {ssh!r}")
        self.scenario = scenario
        self.ssh_mode = ssh
        self.workdir = Path(tempfile.mkdtemp(prefix="kcloud-emulator-", dir=state_dir))
        self.workdir.chmod(0o755)  # login users other than root read their authorized_keys below it
        self.keep_workdir = state_dir is not None
        try:
            self.disk = Disk(self.workdir)
            self._state = State(scenario, self.disk)
            self.sshd = SshdManager(
                self.workdir, scenario.ssh["port"], scenario.ssh["address_base"], enabled=ssh != "off"
            )
            if ssh == "required" and self.sshd.unavailable_reason:
                raise EmulatorError(f"ssh='required' but {self.sshd.unavailable_reason}")
            self.apis = {api.name: api for api in (LambdaApi(self._state), DataCrunchApi(self._state))}
            ports = {"lambdalabs": lambdalabs_port, "datacrunch": datacrunch_port}
            self.servers = {}
            for name, api in self.apis.items():
                self.servers[name] = ApiServer(api, functools.partial(self._admin, name), ports[name])
        except BaseException:
            for server in getattr(self, "servers", {}).values():
                server.httpd.server_close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        self.lambdalabs_url = self.servers["lambdalabs"].url
        self.datacrunch_url = self.servers["datacrunch"].url
        self._stopping = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="emulator-ticker", daemon=True)
        self._boots: dict[str, threading.Thread] = {}  # instance id -> its boot in progress
        self._boot_retry: dict[str, float] = {}  # instance id -> when a failed boot may be tried again
        self._boot_lock = threading.Lock()
        self._stopped = False

    def start(self) -> Emulator:
        if self.sshd.unavailable_reason and self.ssh_mode == "auto":
            print(f"emulator: warning: {self.sshd.unavailable_reason}", file=sys.stderr, flush=True)
        for server in self.servers.values():
            server.start()
        self._ticker.start()
        return self

    def stop(self) -> None:
        """Stop serving, kill every startup script and sshd, remove the work dir (kept under a given
        `state_dir`). Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        for server in self.servers.values():
            server.stop()
        if self._ticker.is_alive():
            self._ticker.join(timeout=10)
        self.disk.stop_all_startups()
        for thread in self._boot_threads():
            thread.join(timeout=10)
        self.sshd.close()
        self.disk.kill_processes(self._state.machine_ids())
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def urls(self) -> dict[str, str]:
        """{provider: API base URL} of every provider API this emulator serves (kcloud's
        provider names): demos and tests iterate over these, not over every provider kcloud has."""
        return {name: server.url for name, server in self.servers.items()}

    def state(self) -> dict:
        """What GET /_emulator/state answers."""
        return self._state.snapshot({name: api.statuses for name, api in self.apis.items()})

    def health(self) -> dict:
        """What GET /_emulator/health answers: can instances be reached by SSH at all?"""
        reason = self.sshd.unavailable_reason
        return {"ssh": {"available": reason is None, "reason": reason or "", "mode": self.ssh_mode}}

    def reset(self) -> None:
        """Back to the scenario's initial state: no instances, keys, volumes, scripts, filesystems,
        tokens or request log; machine roots, volumes and file systems are wiped from disk."""
        machines = self._state.machine_ids()
        self._state.reset()
        self.disk.stop_all_startups()
        for thread in self._boot_threads():
            thread.join(timeout=10)
        self.sshd.stop_all()
        self.disk.kill_processes(machines)
        self.disk.wipe()

    # --- lifecycle -------------------------------------------------------

    def _tick_loop(self) -> None:
        while not self._stopping.wait(TICK_SECONDS):
            try:
                self._tick()
            except Exception:  # keep ticking: one bad instance must not freeze the others
                traceback.print_exc()

    def _tick(self) -> None:
        """Market events and timed transitions; sshd runs exactly for the instances that are active,
        startup scripts only for those still booting.

        A boot (machine root, startup script, sshd) runs in a thread of its own,
        so a slow startup script holds up no other instance. The market also
        catches up whenever capacity is read or taken, so no answer lags behind a
        due market event (the tick alone would allow ~50 ms).
        """
        ready, ended = self._state.advance()
        for instance_id in self.sshd.running() - self._state.active_ids():
            self.sshd.stop(instance_id)
        for instance_id in self.disk.startups() - self._state.booting_ids():
            self.disk.stop_startup(instance_id)
        self.disk.kill_processes({inst.id for inst in ended})
        for inst in ended:
            if inst.provider == "lambdalabs":  # its disk goes with it; DataCrunch's is the OS volume
                self.disk.remove_machine(inst.id)
        for inst in ready:
            with self._boot_lock:
                if self._stopping.is_set() or inst.id in self._boots:
                    continue
                if self._boot_retry.get(inst.id, 0) > time.monotonic():
                    continue
                thread = threading.Thread(target=self._boot, args=(inst,), name=f"boot-{inst.id}", daemon=True)
                self._boots[inst.id] = thread
            thread.start()

    def _boot_threads(self) -> list[threading.Thread]:
        with self._boot_lock:
            return list(self._boots.values())

    def _boot(self, inst) -> None:
        """Boot one instance: its machine root and mounts, the startup script on its first boot,
        then its sshd; it becomes active only after all of that."""
        try:
            api = self.apis[inst.provider]
            user = self.sshd.ensure_user(api.login_user)
            with self._state.lock:
                root, links = api.machine(inst)
                first = not inst.booted
                inst.booted = True
            home = self.disk.prepare(root, user, links)
            with self._state.lock:
                inst.root, inst.home = str(root), str(home)
            if first:
                timeout = self._state.scenario.lifecycle["startup_timeout"]
                self.disk.run_startup(inst.id, root, home, user, inst.startup, timeout)
            if self._stopping.is_set() or inst.phase != "booting":
                return
            ip = inst.ip or self.sshd.address()
            keys = [k["public_key"] for k in inst.ssh_keys]
            ssh = self.sshd.start(inst.id, ip, api.login_user, keys, root, home)
            if not self._state.activate(inst, ip, ssh):
                self.sshd.stop(inst.id)
        except Exception:  # one broken boot must not stop the others; it is tried again a second later
            traceback.print_exc()
            with self._boot_lock:
                self._boot_retry[inst.id] = time.monotonic() + 1.0
        finally:
            with self._boot_lock:
                self._boots.pop(inst.id, None)

    # --- admin endpoints (/_emulator/*, no auth, on both ports) ----------

    def _admin(self, provider: str, method: str, path: str, body: bytes) -> Response:
        try:
            if (method, path) == ("GET", "/_emulator/state"):
                return json_response(self.state())
            if (method, path) == ("GET", "/_emulator/health"):
                return json_response(self.health())
            if (method, path) == ("POST", "/_emulator/capacity"):
                data = json.loads(body)
                rule = {"type": data["instance_type"], "region": data["region"], "count": data["count"]}
                cells = self._state.set_capacity(data.get("provider", provider), rule)
                return json_response({"updated": cells})
            if (method, path) == ("POST", "/_emulator/price"):
                data = json.loads(body)
                if not isinstance(data, dict):
                    raise ValueError("body must be a JSON object")
                api = self.apis[data.pop("provider", provider)]
                type_name = data.pop("instance_type")
                return json_response({"instance_type": type_name, **api.set_price(type_name, data)})
            if (method, path) == ("POST", "/_emulator/faults"):
                faults = self._state.add_faults(provider, json.loads(body))
                return json_response({"added": [f.public() for f in faults]})
            if (method, path) == ("DELETE", "/_emulator/faults"):
                return json_response({"cleared": self._state.clear_faults(provider)})
            if (method, path) == ("POST", "/_emulator/reset"):
                self.reset()
                return json_response({"reset": True})
        except (ValueError, KeyError, TypeError) as exc:
            return json_response({"error": f"{type(exc).__name__}: {exc}"}, 400)
        return json_response({"error": f"no such admin endpoint: {method} {path}"}, 404)


def start(
    scenario: str | Path | dict = "default",
    *,
    lambdalabs_port: int = 0,
    datacrunch_port: int = 0,
    latency_ms: int | None = None,
    boot_delay: float | None = None,
    ssh_port: int | None = None,
    state_dir: str | Path | None = None,
    ssh: str = "auto",
    time_scale: float | None = None,
    install_delay: float | None = None,
) -> Emulator:
    """Start an emulator in this process (for tests). `scenario` is a name, a file or a dict.

    `ssh`: "auto" (sshd if installed, else a warning), "required" (EmulatorError
    without sshd), "off" (never start sshd). `time_scale`: emulator (market)
    seconds per real second, overriding the scenario's `clock.time_scale`. `install_delay`
    overrides `lifecycle.install_delay`. `state_dir`: make the work dir there and keep it after stop.
    """
    emulator = Emulator(
        load(scenario, overrides(latency_ms, boot_delay, ssh_port, time_scale, install_delay)),
        lambdalabs_port=lambdalabs_port,
        datacrunch_port=datacrunch_port,
        state_dir=state_dir,
        ssh=ssh,
    )
    return emulator.start()


def overrides(
    latency_ms: int | None,
    boot_delay: float | None,
    ssh_port: int | None,
    time_scale: float | None = None,
    install_delay: float | None = None,
) -> dict:
    """The command-line knobs, as a partial scenario merged over the chosen one."""
    out: dict = {}
    lifecycle = {k: v for k, v in (("boot_delay", boot_delay), ("install_delay", install_delay)) if v is not None}
    if lifecycle:
        out["lifecycle"] = lifecycle
    if time_scale is not None:
        out["clock"] = {"time_scale": time_scale}
    if latency_ms is not None:
        out["lambdalabs"] = {"latency_ms": latency_ms}
        out["datacrunch"] = {"latency_ms": latency_ms}
    if ssh_port is not None:
        out["ssh"] = {"port": ssh_port}
    return out
