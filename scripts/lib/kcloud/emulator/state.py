"""Everything the emulated clouds remember, behind one lock.

Instances move through provider-neutral phases; each provider module maps a
phase to its own status word (Lambda `booting`, DataCrunch `provisioning`, ...):

    ordered -> booting -> active [-> unhealthy]
                  ^         |  \\-> offline (DataCrunch shutdown) -> booting
                  +-restart-+
    any non-terminal phase -> terminating -> terminated

Timed transitions happen in `advance()`, called by the emulator's ticker;
`booting -> active` is finished by `activate()` once the instance's sshd runs,
so an instance never reports active before it answers SSH.

Besides instances and SSH keys it keeps what a teardown must not forget:
DataCrunch volumes (live and in the trash) and startup scripts, and Lambda
filesystems. `snapshot()["billable"]` counts what is left of each.

It also keeps the emulator clock (market seconds since start or reset, times
`clock.time_scale`) and each provider's `Market`, which is brought up to date
before capacity is read or changed (`capacity_now()`) and on every tick; and
the billing ledger: every instance launched since the reset stays in
`instances` with the price and the billing start/end recorded when they
happened (`ledger()`).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from .capacity import Capacity
from .faults import Fault, RateLimiter, parse_faults
from .machines import Disk
from .market import Market
from .scenario import PROVIDERS, Scenario

LIVE_PHASES = ("ordered", "booting", "active", "unhealthy", "offline")
REQUEST_LOG_LIMIT = 10000
MARKET_LOG_LIMIT = 10000
CENT = Decimal("0.01")
FS_USD_PER_GB_MONTH = Decimal("0.20")


@dataclass
class Instance:
    """One emulated machine. Only name, phase, due, ip and ssh change after launch."""

    provider: str
    id: str
    instance_type: str
    region: str
    name: str
    ssh_keys: list  # copies of the keys it was launched with: {"id", "name", "public_key"}
    details: dict  # provider-specific launch fields echoed back by the API
    fault: str | None = None  # "stuck" (never boots) or "unhealthy"
    fault_after: float = 0.0
    created_at: float = field(default_factory=time.time)
    phase: str = "ordered"
    due: float | None = None  # monotonic time at which the phase ends by itself
    boot_at: float = 0.0  # monotonic time at which the first boot completes
    ip: str | None = None  # assigned when it first becomes active
    answer_ip: str | None = None  # an `answer_ip` fault: what the API says instead of `ip`
    ssh: dict = field(default_factory=dict)
    startup: str | None = None  # user_data / startup script text, run at the first boot
    install: bool = False  # boots from a fresh OS volume: the first boot adds lifecycle.install_delay
    booted: bool = False  # the first boot (startup script) has happened
    root: str | None = None  # its machine root directory and HOME, once it first boots
    home: str | None = None
    price_per_hour: Decimal = Decimal(0)  # USD, the price when the launch was accepted
    billing_start_ms: int | None = None  # epoch ms: launch accepted (or first active, per `billing.start`)
    billing_end_ms: int | None = None  # epoch ms: terminate/delete accepted


@dataclass
class Volume:
    """A DataCrunch block volume. `deleted_at` set: it is in the trash (still billed)."""

    provider: str
    id: str
    name: str
    size: int  # GB
    type: str
    location: str
    is_os_volume: bool = False
    instance_ids: list = field(default_factory=list)  # attached to these (several only for shared types)
    tags: list = field(default_factory=list)  # [{"id", "key", "value"}]
    image: str | None = None  # OS volumes: the image they were made from
    created_at: float = field(default_factory=time.time)
    deleted_at: float | None = None

    @property
    def instance_id(self) -> str | None:
        """The (first) instance it is attached to."""
        return self.instance_ids[0] if self.instance_ids else None

    @property
    def trash(self) -> bool:
        return self.deleted_at is not None

    @property
    def status(self) -> str:
        if self.trash:
            return "deleted"
        return "attached" if self.instance_ids else "detached"


class State:
    """The emulator's memory. Public methods lock; callers rendering several fields lock too."""

    def __init__(self, scenario: Scenario, disk: Disk | None = None) -> None:
        self.lock = threading.RLock()
        self.scenario = scenario
        self.disk = disk  # the directories behind volumes and file systems (None: nothing on disk)
        self.reset()

    def reset(self) -> None:
        """Back to the scenario's initial state (the caller stops the sshds and wipes the disk)."""
        with self.lock:
            sc = self.scenario
            self.capacity = {p: Capacity(sc.catalogs[p], sc.provider(p)["capacity"]) for p in PROVIDERS}
            self.faults: dict[str, list[Fault]] = {p: parse_faults(sc.provider(p)["faults"]) for p in PROVIDERS}
            self.limits = {p: RateLimiter(sc.provider(p)["rate_limits"]) for p in PROVIDERS}
            self.instances: dict[str, Instance] = {}
            self.ssh_keys: dict[str, dict[str, dict]] = {p: {} for p in PROVIDERS}
            self.tokens: dict[str, tuple[str, float]] = {}
            self.requests: deque = deque(maxlen=REQUEST_LOG_LIMIT)
            self.volumes: dict[str, Volume] = {}  # DataCrunch, live and trash
            self.scripts: dict[str, dict] = {}  # DataCrunch startup scripts: {"id", "name", "script", "created_at"}
            self.file_systems: dict[str, dict] = {}  # Lambda: {"id", "name", "region", "mount_point", "created"}
            self.price_overrides: dict[str, dict[str, dict]] = {p: {} for p in PROVIDERS}  # type -> catalog fields
            self.clock_origin = time.monotonic()
            self.markets = {p: Market(p, sc.market(p), self.capacity[p]) for p in PROVIDERS}
            self.market_log: dict[str, deque] = {p: deque(maxlen=MARKET_LOG_LIMIT) for p in PROVIDERS}
            self._sync_markets()

    # --- emulator clock and market ---------------------------------------

    def clock(self) -> float:
        """Emulator seconds: real seconds since the start or the last reset, times `clock.time_scale`."""
        return (time.monotonic() - self.clock_origin) * self.scenario.time_scale

    def _sync_markets(self) -> None:
        """Apply every market event due by now (the caller holds the lock)."""
        now = self.clock()
        for p in PROVIDERS:
            self.market_log[p].extend(self.markets[p].advance(now))

    def capacity_now(self, provider: str) -> Capacity:
        """The provider's capacity with the market brought up to date; hold the lock while using it."""
        with self.lock:
            self._sync_markets()
            return self.capacity[provider]

    # --- traffic ---------------------------------------------------------

    def log_request(self, provider: str, method: str, path: str, status: int) -> None:
        with self.lock:
            self.requests.append({"provider": provider, "method": method, "path": path, "status": status})

    def retry_after(self, provider: str, is_launch: bool) -> int:
        with self.lock:
            return self.limits[provider].retry_after(is_launch, time.monotonic())

    def due_faults(self, provider: str, method: str, path: str) -> list[Fault]:
        """The faults that apply to a request, in schedule order.

        A fault that answers in the API's place ends the list: that request
        never reached the API, so the faults after it do not see it.
        """
        due = []
        with self.lock:
            for fault in self.faults[provider]:
                if fault.fires(method, path):
                    due.append(fault)
                    if fault.responds:
                        break
        return due

    def add_faults(self, provider: str, specs) -> list[Fault]:
        faults = parse_faults(specs)
        with self.lock:
            self.faults[provider].extend(faults)
        return faults

    def clear_faults(self, provider: str) -> int:
        """Drop a provider's whole fault schedule (scenario faults included); returns how many."""
        with self.lock:
            count = len(self.faults[provider])
            self.faults[provider] = []
        return count

    def set_capacity(self, provider: str, rule: dict) -> int:
        with self.lock:
            return self.capacity_now(provider).apply(rule)

    # --- ssh keys --------------------------------------------------------

    def add_key(self, provider: str, key_id: str, name: str, public_key: str) -> dict:
        key = {"id": key_id, "name": name, "public_key": public_key}
        with self.lock:
            self.ssh_keys[provider][key_id] = key
        return dict(key)

    def keys(self, provider: str) -> list[dict]:
        with self.lock:
            return [dict(k) for k in self.ssh_keys[provider].values()]

    def delete_key(self, provider: str, key_id: str) -> bool:
        with self.lock:
            return self.ssh_keys[provider].pop(key_id, None) is not None

    # --- OAuth tokens (DataCrunch) ---------------------------------------

    def issue_tokens(self, access_ttl: float, refresh_ttl: float) -> tuple[str, str]:
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.lock:
            now = time.monotonic()
            self.tokens = {t: e for t, e in self.tokens.items() if e[1] > now}  # forget expired ones
            self.tokens[access] = ("access", now + access_ttl)
            self.tokens[refresh] = ("refresh", now + refresh_ttl)
        return access, refresh

    def token_valid(self, token: str, kind: str) -> bool:
        with self.lock:
            entry = self.tokens.get(token)
            return entry is not None and entry[0] == kind and entry[1] > time.monotonic()

    def revoke_token(self, token: str) -> None:
        with self.lock:
            self.tokens.pop(token, None)

    # --- instances -------------------------------------------------------

    def launch(self, instance: Instance) -> bool:
        """Take one unit of capacity and record the instance; False if none is free."""
        life = self.scenario.lifecycle
        with self.lock:
            if not self.capacity_now(instance.provider).take(instance.instance_type, instance.region):
                return False
            now = time.monotonic()
            if self.scenario.billing(instance.provider)["start"] == "launch":
                instance.billing_start_ms = epoch_ms()
            boot = life["boot_delay"] + (life["install_delay"] if instance.install else 0)
            instance.phase = "ordered"
            instance.due = now + min(life["order_delay"], boot)
            instance.boot_at = now + boot
            self.instances[instance.id] = instance
            return True

    def get(self, provider: str, instance_id: str) -> Instance | None:
        with self.lock:
            inst = self.instances.get(instance_id)
            return inst if inst is not None and inst.provider == provider else None

    def list(self, provider: str | None = None) -> list[Instance]:
        """Instances not yet terminated, oldest first."""
        with self.lock:
            return [
                i
                for i in self.instances.values()
                if i.phase != "terminated" and (provider is None or i.provider == provider)
            ]

    def terminate(self, inst: Instance) -> None:
        with self.lock:
            if inst.phase in LIVE_PHASES:
                inst.phase = "terminating"
                inst.due = time.monotonic() + self.scenario.lifecycle["terminate_delay"]
                inst.billing_end_ms = epoch_ms()

    def reboot(self, inst: Instance) -> None:
        """Restart (Lambda) or start (DataCrunch): back through booting."""
        with self.lock:
            if inst.phase in ("active", "unhealthy", "offline"):
                self._boot(inst, time.monotonic() + self.scenario.lifecycle["boot_delay"])

    def shutdown(self, inst: Instance) -> None:
        with self.lock:
            if inst.phase in ("active", "unhealthy", "booting"):
                inst.phase, inst.due = "offline", None

    def _boot(self, inst: Instance, due: float) -> None:
        inst.phase, inst.due = "booting", due

    def advance(self) -> tuple[list[Instance], list[Instance]]:
        """Apply timed transitions; returns the instances whose boot is complete (to activate)
        and those that have just become terminated."""
        ready, ended = [], []
        with self.lock:
            self._sync_markets()
            now = time.monotonic()
            for inst in self.instances.values():
                if inst.due is None or inst.due > now:
                    continue
                if inst.phase == "ordered":
                    self._boot(inst, inst.boot_at)
                elif inst.phase == "booting" and inst.fault != "stuck":
                    ready.append(inst)
                elif inst.phase == "active":  # only an unhealthy fault sets a due time here
                    inst.phase, inst.due = "unhealthy", None
                elif inst.phase == "terminating":
                    inst.phase, inst.due = "terminated", None
                    ended.append(inst)
                    self.capacity[inst.provider].give(inst.instance_type, inst.region)
                    self.markets[inst.provider].returned(inst.instance_type, inst.region)
        return ready, ended

    def activate(self, inst: Instance, ip: str, ssh: dict) -> bool:
        """Finish a boot once its sshd runs; False if the instance moved on meanwhile."""
        with self.lock:
            if inst.phase != "booting":
                return False
            inst.phase, inst.ip, inst.ssh = "active", ip, ssh
            if inst.billing_start_ms is None and self.scenario.billing(inst.provider)["start"] == "active":
                inst.billing_start_ms = epoch_ms()
            inst.due = time.monotonic() + inst.fault_after if inst.fault == "unhealthy" else None
            return True

    def active_ids(self) -> set[str]:
        with self.lock:
            return {i.id for i in self.instances.values() if i.phase == "active"}

    def machine_ids(self) -> set[str]:
        """Every instance that has booted since the reset (whose processes may still run)."""
        with self.lock:
            return {i.id for i in self.instances.values() if i.booted}

    def booting_ids(self) -> set[str]:
        with self.lock:
            return {i.id for i in self.instances.values() if i.phase == "booting"}

    def live(self, inst: Instance) -> bool:
        """True until the instance is terminated (a terminating one still holds its mounts)."""
        return inst.phase != "terminated"

    # --- volumes (DataCrunch) --------------------------------------------

    def add_volume(self, volume: Volume) -> Volume:
        with self.lock:
            self.volumes[volume.id] = volume
        return volume

    def volume(self, provider: str, volume_id: str, trash: bool | None = False) -> Volume | None:
        """A volume by id; `trash` False: live only, True: trash only, None: either."""
        with self.lock:
            vol = self.volumes.get(volume_id)
            if vol is None or vol.provider != provider or (trash is not None and vol.trash != trash):
                return None
            return vol

    def volume_list(self, provider: str, trash: bool = False) -> list[Volume]:
        with self.lock:
            return [v for v in self.volumes.values() if v.provider == provider and v.trash == trash]

    def delete_volume(self, vol: Volume, permanent: bool) -> None:
        """Detach, then move to the trash (its data kept), or forget it and its data altogether."""
        with self.lock:
            vol.instance_ids = []
            if permanent:
                self.volumes.pop(vol.id, None)
                if self.disk:
                    self.disk.remove_volume(vol.id)
            elif not vol.trash:
                vol.deleted_at = time.time()

    def attached(self, provider: str, instance_id: str) -> list[Volume]:
        """The live volumes attached to an instance, in creation order."""
        with self.lock:
            return [v for v in self.volume_list(provider) if instance_id in v.instance_ids]

    # --- startup scripts (DataCrunch) ------------------------------------

    def add_script(self, script_id: str, name: str, script: str) -> dict:
        entry = {"id": script_id, "name": name, "script": script, "created_at": iso_time(time.time())}
        with self.lock:
            self.scripts[script_id] = entry
        return dict(entry)

    # --- filesystems (Lambda) --------------------------------------------

    def add_file_system(self, fs: dict) -> dict:
        with self.lock:
            self.file_systems[fs["id"]] = fs
            if self.disk:
                self.disk.make_fs(fs["id"])
        return fs

    def delete_file_system(self, fs_id: str) -> None:
        with self.lock:
            del self.file_systems[fs_id]
            if self.disk:
                self.disk.remove_fs(fs_id)

    def fs_bytes_used(self, fs_id: str) -> int:
        """What the file system's directory holds now (0 without a disk)."""
        return self.disk.bytes_used(self.disk.fs_dir(fs_id)) if self.disk else 0

    def fs_in_use(self, fs_id: str) -> bool:
        with self.lock:
            return any(
                fs_id in (m["file_system_id"] for m in i.details.get("file_system_mounts", []))
                for i in self.instances.values()
                if self.live(i)
            )

    def _fs_entry(self, fs: dict) -> dict:
        """A file system in the admin view, with what it holds and costs a month now."""
        used = self.fs_bytes_used(fs["id"])
        return {
            "provider": "lambdalabs",
            "id": fs["id"],
            "name": fs["name"],
            "region": fs["region"],
            "mount_point": fs["mount_point"],
            "created": fs["created"],
            "is_in_use": self.fs_in_use(fs["id"]),
            "bytes_used": used,
            "monthly_price_usd": fs_monthly_price(used),
            "path": str(self.disk.fs_dir(fs["id"])) if self.disk else None,
        }

    # --- prices and billing ----------------------------------------------

    def set_price(self, provider: str, type_name: str, fields: dict) -> None:
        """Change catalog price fields of a type from now on (instances keep their launch price)."""
        with self.lock:
            self.price_overrides[provider].setdefault(type_name, {}).update(fields)

    def ledger(self, provider: str | None = None) -> list[dict]:
        """One entry per instance launched since the reset, terminated ones included, oldest first."""
        with self.lock:
            now = epoch_ms()
            return [
                ledger_entry(i, self.scenario.billing(i.provider), now)
                for i in self.instances.values()
                if provider is None or i.provider == provider
            ]

    # --- admin view ------------------------------------------------------

    def snapshot(self, statuses: dict[str, dict[str, str]]) -> dict:
        """The admin view; `statuses` maps provider -> phase -> provider status word."""
        with self.lock:
            self._sync_markets()
            return {
                "instances": [
                    {
                        "provider": i.provider,
                        "id": i.id,
                        "name": i.name,
                        "instance_type": i.instance_type,
                        "region": i.region,
                        "status": statuses[i.provider][i.phase],
                        "phase": i.phase,
                        "ip": i.ip,
                        "ssh_keys": [k["name"] for k in i.ssh_keys],
                        "ssh": dict(i.ssh),
                        "fault": i.fault,
                        "created_at": iso_time(i.created_at),
                        "price_per_hour": float(i.price_per_hour),
                        "root": i.root,
                        "home": i.home,
                        **_instance_extras(i),
                    }
                    for i in self.list()
                ],
                "ssh_keys": [dict(k, provider=p) for p in PROVIDERS for k in self.ssh_keys[p].values()],
                "volumes": [
                    {
                        "provider": v.provider,
                        "id": v.id,
                        "name": v.name,
                        "size": v.size,
                        "type": v.type,
                        "location": v.location,
                        "status": v.status,
                        "is_os_volume": v.is_os_volume,
                        "instance_id": v.instance_id,
                        "instance_ids": list(v.instance_ids),
                        "trash": v.trash,
                        "tags": [dict(t) for t in v.tags],
                    }
                    for v in self.volumes.values()
                ],
                "scripts": [
                    {"provider": "datacrunch", "id": sc["id"], "name": sc["name"], "length": len(sc["script"])}
                    for sc in self.scripts.values()
                ],
                "file_systems": [self._fs_entry(f) for f in self.file_systems.values()],
                "billable": {
                    "instances": len(self.list()),
                    "volumes": len(self.volumes),
                    "file_systems": len(self.file_systems),
                    "ssh_keys": sum(len(k) for k in self.ssh_keys.values()),
                    "scripts": len(self.scripts),
                },
                "requests": list(self.requests),
                "capacity": {p: self.capacity[p].snapshot() for p in PROVIDERS},
                "faults": {p: [f.public() for f in self.faults[p]] for p in PROVIDERS},
                "clock": {"time_s": round(self.clock(), 3), "time_scale": self.scenario.time_scale},
                "market": {p: {"events": list(self.market_log[p])} for p in PROVIDERS},
                "ledger": self.ledger(),
            }


def private_ip(ip: str) -> str:
    """The private address of an instance with loopback address 127.R.S.x: 10.0.S.x (distinct per instance)."""
    return "10.0." + ".".join(ip.split(".")[2:])


def fs_monthly_price(bytes_used: int) -> float:
    """Lambda file systems: $0.20 per GB used per month (contract 1.2; GB = 10^9 bytes), USD to 1e-6."""
    return float((FS_USD_PER_GB_MONTH * bytes_used / 10**9).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP))


def _instance_extras(inst: Instance) -> dict:
    """Provider-specific launch fields worth auditing: tags, mounts, volumes, user data (as a hash)."""
    d = inst.details
    out = {"tags": [dict(t) for t in d.get("tags", [])]}
    if inst.provider == "lambdalabs":
        user_data = d.get("user_data")
        out["file_system_names"] = list(d.get("file_system_names", []))
        out["private_ip"] = private_ip(inst.ip) if inst.ip else None
        out["user_data"] = (
            {"length": len(user_data), "sha256": hashlib.sha256(user_data.encode()).hexdigest()}
            if isinstance(user_data, str)
            else None
        )
    else:
        out["os_volume_id"] = d.get("os_volume_id")
        out["startup_script_id"] = d.get("startup_script_id")
    return out


def iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def epoch_ms() -> int:
    return int(time.time() * 1000)


def iso_ms(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds, e.g. 2025-06-01T12:00:00.250Z."""
    if ms is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def billed_seconds(duration_ms: int, increment_s: int, minimum_s: int) -> int:
    """Every started increment counts, and at least `minimum_s` once billing has started."""
    increments = -(-duration_ms // (increment_s * 1000))
    return max(minimum_s, increments * increment_s)


def amount(price_per_hour: Decimal, billed_s: int) -> Decimal:
    """price x billed hours, rounded to the cent, half up."""
    return (price_per_hour * billed_s / 3600).quantize(CENT, rounding=ROUND_HALF_UP)


def ledger_entry(inst: Instance, billing: dict, now_ms: int) -> dict:
    """An instance's bill: so far while running (`end` null), final once terminate was accepted."""
    start, end = inst.billing_start_ms, inst.billing_end_ms
    if start is None:  # `billing.start: active` and it never became active (yet)
        duration_ms, billed = 0, 0
    else:
        duration_ms = max(0, (now_ms if end is None else end) - start)
        billed = billed_seconds(duration_ms, billing["increment_s"], billing["minimum_s"])
    return {
        "provider": inst.provider,
        "id": inst.id,
        "name": inst.name,
        "instance_type": inst.instance_type,
        "region": inst.region,
        "spot": bool(inst.details.get("is_spot", False)),
        "price_per_hour": float(inst.price_per_hour),
        "currency": "usd",
        "start": iso_ms(start),
        "end": iso_ms(end),
        "duration_s": duration_ms / 1000,
        "increment_s": billing["increment_s"],
        "minimum_s": billing["minimum_s"],
        "billed_s": billed,
        "amount": float(amount(inst.price_per_hour, billed)),
    }
