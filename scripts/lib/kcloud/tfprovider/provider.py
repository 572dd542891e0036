"""The kcloud terraform provider (protocol 6, `tf` framework).

Resources are thin: every remote call goes through kcloud.providers (the same clients the CLI
uses) and kcloud.launch.failover (the same launch walk the CLI uses). What this module adds
is the terraform shape: schemas, state dictionaries, diagnostics with one clear summary line,
and cooperation with terraform's Ctrl-C (StopProvider).

Credentials are never part of the configuration: the plugin process inherits terraform's
environment and reads ~/.lambdalabs/credentials, ~/.datacrunch/credentials or the
documented environment variables, exactly like the CLI.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import threading
import time
import traceback
from typing import Any, Optional

from tf import iface
from tf.iface import (Config, CreateContext, DeleteContext, ImportContext, PlanContext, ReadContext, State,
                      UpdateContext, UpgradeContext)
from tf.schema import Attribute, Schema
from tf.types import Bool, List, Map, Number, String, TfType, Unknown
from tf.utils import Diagnostics

from kcloud import errors
from kcloud.redact import redact
from kcloud.tfprovider import SOURCE

# Set when terraform sends StopProvider (the user pressed Ctrl-C): long waits end early.
STOP = threading.Event()
DELETE_TIMEOUT = float(os.environ.get("KCLOUD_TF_DELETE_TIMEOUT", "300"))


class _Counter:
    """Creates in flight (the owner watch waits for them before the plugin exits)."""

    def __init__(self):
        self.n, self.lock = 0, threading.Lock()

    def __enter__(self):
        with self.lock:
            self.n += 1

    def __exit__(self, *exc):
        with self.lock:
            self.n -= 1

    def busy(self) -> bool:
        return self.n > 0


CREATES = _Counter()


class Stopped(errors.KcloudError):
    """Terraform asked the provider to stop (Ctrl-C) while it was waiting."""


def interruptible_sleep(seconds: float) -> None:
    if STOP.wait(max(0.0, seconds)):
        raise Stopped("interrupted (Ctrl-C): terraform asked the provider to stop")


class Object(TfType):
    """cty object type with fixed attributes (the `tf` framework has lists and maps, not objects)."""

    def __init__(self, attrs: dict[str, TfType]):
        self.attrs = attrs

    def encode(self, value: Any) -> Any:
        if value is None or value is Unknown:
            return value
        return {k: t.encode(value.get(k)) for k, t in self.attrs.items()}

    def decode(self, value: Any) -> Any:
        if value is None or value is Unknown:
            return value
        return {k: t.decode(value.get(k)) for k, t in self.attrs.items()}

    def tf_type(self) -> bytes:
        spec = {k: json.loads(t.tf_type()) for k, t in self.attrs.items()}
        return json.dumps(["object", spec], separators=(",", ":")).encode()


CANDIDATE = Object({"instance_type": String(), "region": String()})
MEMBER = Object({"name": String(), "id": String(), "ip": String(), "private_ip": String(),
                 "instance_type": String(), "region": String(), "boot_volume": String()})


def _known(value: Any) -> bool:
    return value is not None and value is not Unknown


def _log(line: str) -> None:
    """stderr of a plugin ends up in terraform's log (TF_LOG=...), never on the user's screen.
    Never raises: with terraform gone the pipe is broken, and a log line must not end the
    owner watch (it once left an orphan plugin running)."""
    try:
        print(redact(line), file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _add_error(diags: Diagnostics, exc: BaseException, what: str) -> None:
    """One clear summary line; the hint (if any) as detail. Never a traceback, never a secret."""
    if isinstance(exc, errors.KcloudError):
        diags.add_error(str(exc), detail=exc.hint or "")
    else:
        _log(f"{what}: unexpected error\n{traceback.format_exc()}")
        diags.add_error(f"{what}: unexpected error: {type(exc).__name__}: {redact(str(exc))}",
                        detail="This is a bug in kcloud; the traceback is in terraform's log (TF_LOG=ERROR).")


class KcloudProvider(iface.Provider):
    def __init__(self):
        self.cloud = ""
        self.journal = None
        self.progress_file = ""
        self._client = None
        self._lock = threading.Lock()

    # -- tf.iface.Provider ----------------------------------------------------------
    def get_model_prefix(self) -> str:
        return "kcloud_"

    def full_name(self) -> str:
        return SOURCE

    def get_provider_schema(self, diags: Diagnostics) -> Schema:
        return Schema(attributes=[
            Attribute("cloud", String(), required=True,
                      description='Which cloud: "lambdalabs" or "datacrunch".'),
            Attribute("journal_path", String(), optional=True,
                      description="Append-only journal of remote side effects (written before each one)."),
            Attribute("progress_file", String(), optional=True,
                      description="Progress lines (one per event) are appended here for `make bringup` to tail."),
        ])

    def validate_config(self, diags: Diagnostics, config: Config):
        cloud = config.get("cloud")
        if isinstance(cloud, str):
            from kcloud.providers import names
            if cloud not in names():
                diags.add_error(f'unknown cloud "{cloud}"', detail=f"known clouds: {', '.join(names())}",
                                path=["cloud"])

    def configure_provider(self, diags: Diagnostics, config: Config):
        self.cloud = config.get("cloud") or ""
        journal_path = config.get("journal_path") or ""
        self.progress_file = config.get("progress_file") or ""
        if journal_path:
            from kcloud.launch.journal import Journal
            self.journal = Journal(journal_path)

    def get_data_sources(self) -> list:
        return []

    def get_resources(self) -> list:
        return [SshKeyResource, InstanceResource]

    # -- helpers for the resources ----------------------------------------------------
    def client(self):
        with self._lock:
            if self._client is None:
                from kcloud import providers
                self._client = providers.get(self.cloud)
            return self._client

    def record(self, event: dict) -> None:
        if self.journal is not None:
            self.journal.record({"source": "terraform", "provider": self.cloud, **event})

    def progress(self, line: str) -> None:
        line = redact(line.rstrip("\n"))
        _log(line)
        if not self.progress_file:
            return
        try:
            from kcloud.fsutil import append_line
            append_line(self.progress_file, line)     # never through a link planted there
        except OSError as exc:   # progress is a courtesy: never fail a launch over it
            _log(f"cannot write progress file {self.progress_file}: {exc}")


class _Base(iface.Resource):
    def __init__(self, provider: KcloudProvider):
        self.p = provider

    def upgrade(self, ctx: UpgradeContext, version: int, old: Optional[State]) -> Optional[State]:
        return old    # schema version 0 only, so far: nothing to migrate (and no warning noise)


# ---------------------------------------------------------------------------------------
class SshKeyResource(_Base):
    """An SSH public key registered with the cloud. Any change replaces it."""

    @classmethod
    def get_name(cls) -> str:
        return "ssh_key"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(attributes=[
            Attribute("id", String(), computed=True, description="The cloud's id for the key."),
            Attribute("name", String(), required=True, requires_replace=True),
            Attribute("public_key", String(), required=True, requires_replace=True,
                      description="OpenSSH public key text (never the private key)."),
        ])

    def validate(self, diags: Diagnostics, type_name: str, config: Config):
        super().validate(diags, type_name, config)
        pub = config.get("public_key")
        if isinstance(pub, str):
            if not pub.strip():
                diags.add_error("kcloud_ssh_key: public_key is empty", path=["public_key"])
            elif "PRIVATE KEY" in pub:
                diags.add_error("kcloud_ssh_key: public_key holds a private key", path=["public_key"],
                                detail="Pass the .pub file's content.")

    def create(self, ctx: CreateContext, planned: State) -> Optional[State]:
        name, pub = planned["name"], planned["public_key"].strip()
        try:
            client = self.p.client()
            same = [k for k in client.ssh_keys() if k.name == name]
            if same:
                if _key_body(same[0].public_key) != _key_body(pub):
                    raise errors.ConfigError(
                        f"{self.p.cloud}: an SSH key named '{name}' already exists with a different public key",
                        hint="delete it in the cloud console or choose another key name")
                self.p.progress(f"ssh key {name}: already registered ({same[0].id}), adopting it")
                return {**planned, "id": same[0].id}
            self.p.record({"event": "add_ssh_key", "name": name})
            key = client.add_ssh_key(name, pub)
            self.p.record({"event": "added_ssh_key", "name": name, "id": key.id})
            self.p.progress(f"ssh key {name}: registered ({key.id})")
            return {**planned, "id": key.id}
        except BaseException as exc:
            _add_error(ctx.diagnostics, exc, f"kcloud_ssh_key {name}")
            return None

    def read(self, ctx: ReadContext, current: State) -> Optional[State]:
        try:
            keys = self.p.client().ssh_keys()
        except BaseException as exc:
            _add_error(ctx.diagnostics, exc, f"kcloud_ssh_key {current.get('name')}")
            return current
        return current if any(k.id == current["id"] for k in keys) else None

    def update(self, ctx: UpdateContext, current: State, planned: State) -> Optional[State]:
        return planned    # every attribute forces replacement: nothing to do in place

    def delete(self, ctx: DeleteContext, current: State):
        try:
            self.p.record({"event": "delete_ssh_key", "name": current.get("name"), "id": current["id"]})
            self.p.client().delete_ssh_key(current["id"])
            return None
        except BaseException as exc:
            _add_error(ctx.diagnostics, exc, f"kcloud_ssh_key {current.get('name')}")
            return current


def _key_body(public_key: str) -> str:
    """'ssh-ed25519 AAAA... comment' -> 'ssh-ed25519 AAAA...' (clouds may drop the comment)."""
    return " ".join((public_key or "").split()[:2])


# ---------------------------------------------------------------------------------------
class InstanceResource(_Base):
    """One machine. Create walks `candidates` in order and fails over on capacity, quota and
    image errors (kcloud.launch.failover); the candidates only matter at launch, so changing
    them later updates state in place and never replaces a running machine."""

    IN_PLACE_ONLY = ("candidates", "image", "user_data", "ssh_key_id", "ssh_key_name", "boot_timeout",
                     "poll_interval", "owner", "shared_storage", "startup_script_id", "boot_volumes",
                     "keep_boot_volumes", "nodes")

    @classmethod
    def get_name(cls) -> str:
        return "instance"

    @classmethod
    def get_schema(cls) -> Schema:
        return Schema(attributes=[
            Attribute("id", String(), computed=True),
            Attribute("name", String(), required=True, requires_replace=True,
                      description="Unique per project; an existing instance with this name is adopted."),
            Attribute("candidates", List(CANDIDATE), required=True,
                      description="Ordered (instance_type, region) pairs to try; used at launch only."),
            Attribute("ssh_key_id", String(), required=True),
            Attribute("ssh_key_name", String(), required=True),
            Attribute("image", String(), optional=True, description='"" = the cloud\'s default image.'),
            Attribute("owner", String(), optional=True,
                      description="The directory's kcloud id: launches are tagged kcloud-project=<owner>."),
            Attribute("user_data", String(), optional=True, sensitive=True),
            Attribute("boot_timeout", Number(), optional=True, computed=True, default=600,
                      description="Seconds to wait for a launched instance to become active."),
            Attribute("poll_interval", Number(), optional=True, computed=True, default=5),
            Attribute("instance_type", String(), computed=True),
            Attribute("region", String(), computed=True),
            Attribute("ip", String(), computed=True),
            Attribute("price_per_hour", Number(), computed=True),
            Attribute("launched_at", String(), computed=True),
            Attribute("login_user", String(), computed=True),
            Attribute("attempts", List(String()), computed=True,
                      description='What create tried, in order: "type region: outcome: reason".'),
            Attribute("nodes", Number(), optional=True, computed=True, default=1,
                      description="Machines of one type in one region, all or nothing; names <name>-01 ... "
                                  "when more than one. A change launches or terminates the difference."),
            Attribute("shared_storage", List(String()), optional=True,
                      description="Shared file systems (Lambda: names) or volumes (DataCrunch: ids) attached "
                                  "at launch on every node; never deleted with the instances."),
            Attribute("startup_script_id", String(), optional=True,
                      description="A startup script the cloud keeps (DataCrunch /scripts); Lambda takes user_data."),
            Attribute("boot_volumes", Map(String()), optional=True,
                      description="Node name -> kept OS volume id to boot from (DataCrunch KEEP_VOLUMES)."),
            Attribute("keep_boot_volumes", Bool(), optional=True,
                      description="Keep each node's OS volume when it is destroyed (DataCrunch KEEP_VOLUMES)."),
            Attribute("members", List(MEMBER), computed=True,
                      description="Every node: name, id, ip, private_ip, instance_type, region, boot_volume."),
        ])

    def validate(self, diags: Diagnostics, type_name: str, config: Config):
        super().validate(diags, type_name, config)
        if diags.has_errors():
            return
        cands = config.get("candidates")
        if isinstance(cands, list):
            if not cands:
                diags.add_error("kcloud_instance: candidates is empty", path=["candidates"],
                                detail="Nothing to launch: the plan found no (instance type, region) with capacity.")
            for i, c in enumerate(cands):
                if isinstance(c, dict) and any(c.get(k) == "" for k in ("instance_type", "region")):
                    diags.add_error(f"kcloud_instance: candidates[{i}] has an empty instance_type or region",
                                    path=["candidates"])
        name = config.get("name")
        if isinstance(name, str) and not (0 < len(name) <= 64):
            diags.add_error("kcloud_instance: name must be 1 to 64 characters", path=["name"])
        for k in ("boot_timeout", "poll_interval"):
            v = config.get(k)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0:
                diags.add_error(f"kcloud_instance: {k} must be positive", path=[k])

    def plan(self, ctx: PlanContext, current: Optional[State], planned: State) -> Optional[State]:
        if current is not None and int(current.get("nodes") or 1) != int(planned.get("nodes") or 1):
            # The set grows or shrinks in place (update): what it will be is known after apply.
            planned = {**planned, **{k: Unknown for k in self._COMPUTED}}
        if current is not None:
            changed = sorted({"image", "user_data"} & ctx.changed_fields)
            if changed:
                ctx.diagnostics.add_warning(
                    f"kcloud_instance {planned.get('name')}: {' and '.join(changed)} only apply at launch",
                    detail="The running instance keeps what it was launched with; "
                           "destroy and bring it up again to use the new value.")
        return planned

    def create(self, ctx: CreateContext, planned: State) -> Optional[State]:
        from kcloud.launch import failover, inflight
        from kcloud.launch.ownership import Owner
        from kcloud.providers.base import SshKey
        from kcloud.tiers import Candidate

        name = planned["name"]
        what = f"kcloud_instance {name}"
        try:
            if STOP.is_set():
                raise Stopped("interrupted (Ctrl-C) before the launch started")
            if not inflight.owner_alive():
                raise Stopped("the make bringup that started this apply is gone: not launching anything")
            client = self.p.client()
            candidates = [Candidate(c["instance_type"], c["region"], "", 0.0) for c in planned["candidates"]]
            key = SshKey(planned["ssh_key_id"], planned["ssh_key_name"], "")
            events = self.p.journal.events() if self.p.journal is not None else []
            owner = Owner.from_events(events, planned.get("owner") or None, {key.id, key.name})
            with CREATES, inflight.launching(os.environ.get(inflight.LOCK_ENV)):
                result = self._walk(client, candidates, planned, key, owner)
        except failover.AllCandidatesFailed as exc:
            # Indented lines are preformatted for terraform: it word-wraps everything else.
            detail = "\n".join("  " + row for row in exc.result.table().splitlines())
            if exc.hint:
                detail += f"\n\n{exc.hint}"
            ctx.diagnostics.add_error(str(exc), detail=detail)
            return None
        except BaseException as exc:
            _add_error(ctx.diagnostics, exc, what)
            return None
        return self._state(planned, client, result.instances, [_attempt_line(a) for a in result.attempts])

    def _walk(self, client, candidates, planned: State, key, owner):
        """launch_first for one node, cluster.launch_set for several."""
        from kcloud.launch import cluster, failover
        nodes = int(planned.get("nodes") or 1)
        boot = planned.get("boot_volumes") or {}
        storage = tuple(planned.get("shared_storage") or ())
        script = planned.get("startup_script_id") or ""

        def fields_for(node: str) -> dict:
            return {"shared_storage": storage, "startup_script_id": script, "boot_volume_id": boot.get(node, "")}
        common = dict(ssh_key=key, owner=owner, image=planned.get("image") or "",
                      user_data=planned.get("user_data") or "", boot_timeout=float(planned["boot_timeout"]),
                      poll_interval=float(planned["poll_interval"]), journal=self.p.journal,
                      progress=self.p.progress, sleep=interruptible_sleep)
        if nodes <= 1:
            return failover.launch_first(client, candidates, name=planned["name"],
                                         launch_fields=fields_for(planned["name"]), **common)
        return cluster.launch_set(client, candidates, names=cluster.node_names(planned["name"], nodes),
                                  fields_for=fields_for, keep_boot_volumes=bool(planned.get("keep_boot_volumes")),
                                  **common)

    @staticmethod
    def _state(planned: State, client, instances: list, attempts: list[str]) -> State:
        inst = instances[0]
        return {
            **planned,
            "id": inst.id,
            "instance_type": inst.instance_type,
            "region": inst.region,
            "ip": inst.ip or "",
            "price_per_hour": inst.price_per_hour,
            "launched_at": inst.created_at or _now(),
            "login_user": getattr(client, "login_user", "") or "",
            "attempts": attempts,
            "members": [_member(i) for i in instances],
        }

    def read(self, ctx: ReadContext, current: State) -> Optional[State]:
        from kcloud.providers.base import TERMINATED

        members = current.get("members") or [{"id": current["id"]}]
        fresh = []
        try:
            for m in members:
                inst = self.p.client().instance(m["id"])
                if inst.state == TERMINATED:
                    return None
                fresh.append(inst)
        except errors.NotFound:
            # A node is gone: the set is incomplete, so terraform plans a create, which adopts
            # the nodes that still run and launches the missing ones (never a half cluster).
            return None
        except BaseException as exc:
            _add_error(ctx.diagnostics, exc, f"kcloud_instance {current.get('name')}")
            return current
        inst = fresh[0]
        out = {**current,
               "ip": inst.ip or "",
               "instance_type": inst.instance_type or current.get("instance_type"),
               "region": inst.region or current.get("region")}
        if current.get("members"):
            out["members"] = [_member(i, m) for i, m in zip(fresh, current["members"])]
        return out

    def update(self, ctx: UpdateContext, current: State, planned: State) -> Optional[State]:
        """Launch-time inputs change without touching anything; a new node count completes or
        shrinks the set in its type and region."""
        now, want = int(current.get("nodes") or 1), int(planned.get("nodes") or 1)
        if now == want:
            return {**planned, **{k: current.get(k) for k in self._COMPUTED}}
        from kcloud.launch import cluster, failover
        from kcloud.launch.ownership import Owner
        from kcloud.providers.base import SshKey
        from kcloud.tiers import Candidate
        name = planned["name"]
        try:
            client = self.p.client()
            members = current.get("members") or [{"name": name, "id": current["id"]}]
            if want == 1 and len(members) > 1:
                # One node keeps its own name only as a fresh launch: refuse before terminating anything.
                raise errors.ConfigError("shrinking a cluster to one node renames it",
                                         hint="make destroy, then make bringup")
            keep = cluster.node_names(name, want)
            for m in [m for m in members if m["name"] not in keep]:
                self.p.progress(f"{m['name']} ({m['id']}): terminating (the set now has {want} nodes)")
                if not failover.terminate_verified(client, m["id"], self.p.record,
                                                   keep_boot_volume=bool(planned.get("keep_boot_volumes"))):
                    raise errors.TransientError(f"{m['name']} ({m['id']}) could not be terminated",
                                                hint="run make destroy")
            key = SshKey(planned["ssh_key_id"], planned["ssh_key_name"], "")
            events = self.p.journal.events() if self.p.journal is not None else []
            owner = Owner.from_events(events, planned.get("owner") or None, {key.id, key.name})
            cell = [Candidate(current["instance_type"], current["region"], "", float(current["price_per_hour"] or 0))]
            with CREATES, inflight_launching():
                result = self._walk(client, cell, planned, key, owner)
        except BaseException as exc:
            _add_error(ctx.diagnostics, exc, f"kcloud_instance {name}")
            return None
        return self._state(planned, client, result.instances, list(current.get("attempts") or []))

    _COMPUTED = ("id", "instance_type", "region", "ip", "price_per_hour", "launched_at", "login_user", "attempts",
                 "members")

    def delete(self, ctx: DeleteContext, current: State):
        members = current.get("members") or [{"name": current.get("name"), "id": current["id"]}]
        keep = bool(current.get("keep_boot_volumes"))
        if len(members) == 1:
            m = members[0]
            return None if self._delete_one(ctx, current, m["id"], m.get("name") or current.get("name"), keep) \
                is None else current
        # Every node at once (the client's token buckets keep the polls within the rate limits).
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(min(8, len(members))) as pool:
            left = list(pool.map(lambda m: self._delete_one(ctx, current, m["id"], m.get("name") or "", keep),
                                 members))
        return current if any(x is not None for x in left) else None

    def _delete_one(self, ctx: DeleteContext, current: State, iid: str, name: str, keep: bool):
        from kcloud.providers.base import ACTIVE, PENDING, TERMINATED, TERMINATING

        what = f"kcloud_instance {name}"
        poll = max(0.1, float(current.get("poll_interval") or 5))
        try:
            client = self.p.client()
            self.p.record({"event": "terminate", "name": name, "id": iid})
            if keep and getattr(client, "keeps_boot_volumes", False):
                client.terminate([iid], keep_boot_volumes=True)
            else:
                client.terminate([iid])
            self.p.progress(f"{name} ({iid}): terminating")
            deadline, sent = time.monotonic() + DELETE_TIMEOUT, time.monotonic()
            while True:
                try:
                    inst = client.instance(iid)
                except errors.NotFound:
                    inst = None
                except errors.TransientError:
                    inst = "unknown"
                if inst is None or (inst != "unknown" and inst.state == TERMINATED):
                    self.p.progress(f"{name} ({iid}): terminated")
                    return None
                if time.monotonic() >= deadline:
                    status = getattr(inst, "status", "unknown")
                    if getattr(inst, "state", "") == TERMINATING:
                        ctx.diagnostics.add_warning(f"{what}: still {status} after {DELETE_TIMEOUT:.0f} s",
                                                    detail="Termination was accepted; the cloud is finishing it.")
                        return None
                    raise errors.TransientError(
                        f"{self.p.cloud}: {name} ({iid}) still {status} {DELETE_TIMEOUT:.0f} s after terminate",
                        hint="run the destroy again; the instance stays in terraform state until it is gone")
                if getattr(inst, "state", "") in (PENDING, ACTIVE) and time.monotonic() - sent > 30:
                    if keep and getattr(client, "keeps_boot_volumes", False):
                        client.terminate([iid], keep_boot_volumes=True)
                    else:
                        client.terminate([iid])    # a terminate the cloud may have lost: ask again
                    sent = time.monotonic()
                interruptible_sleep(poll)
        except BaseException as exc:
            _add_error(ctx.diagnostics, exc, what)
            return current

    def import_(self, ctx: ImportContext, id: str) -> Optional[State]:
        try:
            client = self.p.client()
            inst = client.instance(id)
        except BaseException as exc:
            _add_error(ctx.diagnostics, exc, f"kcloud_instance {id}")
            return None
        return {"id": inst.id, "name": inst.name,
                "candidates": [{"instance_type": inst.instance_type, "region": inst.region}],
                "ssh_key_id": "", "ssh_key_name": "", "image": None, "user_data": None,
                "boot_timeout": 600, "poll_interval": 5, "instance_type": inst.instance_type,
                "region": inst.region, "ip": inst.ip or "", "price_per_hour": inst.price_per_hour,
                "launched_at": inst.created_at or "", "login_user": client.login_user,
                "attempts": ["imported"], "nodes": 1, "members": [_member(inst)]}


def inflight_launching():
    from kcloud.launch import inflight
    return inflight.launching(os.environ.get(inflight.LOCK_ENV))


def _member(inst, previous: dict | None = None) -> dict:
    extra = inst.extra or {}
    return {"name": inst.name or (previous or {}).get("name", ""), "id": inst.id, "ip": inst.ip or "",
            "private_ip": extra.get("private_ip") or "", "instance_type": inst.instance_type,
            "region": inst.region, "boot_volume": extra.get("os_volume_id") or ""}


def _attempt_line(a) -> str:
    line = f"{a.instance_type} {a.region}: {a.outcome}"
    return f"{line}: {a.reason}" if a.reason else line


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------
def serve(argv: list[str] | None = None) -> None:
    """Run the plugin server (terraform starts this through the installed plugin script)."""
    import signal

    import tf.runner

    # Ctrl-C in a terminal reaches every process of the foreground group, plugins included.
    # Like Go plugins, ignore it: terraform sends StopProvider, and we finish cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    base = tf.runner._ShutdownInterceptor

    class Interceptor(base):
        # tf's interceptor stops the gRPC server on StopProvider, which cancels the in-flight
        # create and loses the instance id terraform should save. We only raise a flag.
        def intercept_service(self, continuation, details):
            if details.method == "/tfplugin6.Provider/StopProvider":
                _log("StopProvider: finishing the in-flight call")
                STOP.set()
                return continuation(details)
            return base.intercept_service(self, continuation, details)

    tf.runner._ShutdownInterceptor = Interceptor

    # Terraform and this plugin run in their own session: if the make bringup they serve dies
    # (SIGKILL, a closed terminal), stop as after Ctrl-C -- finish the in-flight call, terminate
    # what was booting -- and leave. Never launch for a bringup that is gone.
    from kcloud.launch import inflight

    def _owner_gone():
        try:
            STOP.set()
            _log("the make bringup process is gone: stopping")
            deadline = time.monotonic() + DELETE_TIMEOUT
            while CREATES.busy() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(2)        # let terraform (if it is still there) receive the last answer
        finally:
            os._exit(3)

    inflight.watch_owner(_owner_gone)
    tf.runner.run_provider(KcloudProvider(), argv or sys.argv)
