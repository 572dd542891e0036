"""`make bringup`, `make destroy`, `make status` and the SSH key targets.

bringup: preflight -> live plan -> terraform apply (the kcloud provider fails over) ->
SSH config + inventory -> Ansible -> summary. destroy: terraform destroy, then reconcile
with what the API lists, so nothing this directory launched is left running.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from dataclasses import replace

from kcloud import errors, ladder, providers, tiers
from kcloud.bringup import hostfiles, sshkeys, storage
from kcloud.launch import inflight
from kcloud.launch.failover import terminate_verified
from kcloud.launch.journal import Journal
from kcloud.launch.ownership import Owner
from kcloud.launch.wait import WaitTimedOut, parse_duration
from kcloud.bringup.project import Project
from kcloud.providers.base import ACTIVE, PENDING, TERMINATED, TERMINATING

REPO = Path(__file__).resolve().parents[4]


def _settings(project: Project):
    from kcloud.kconfig.config import load_settings
    try:
        return load_settings(project.root / ".config")
    except errors.KcloudError:
        raise
    except (UnicodeDecodeError, ValueError, OSError) as exc:
        raise errors.ConfigError(f".config is damaged ({type(exc).__name__}: {str(exc)[:80]})",
                                 hint="load a defconfig again: make defconfig-<name>") from None


def _say(line: str = "") -> None:
    print(line, flush=True)


# -- ownership --------------------------------------------------------------------------
def owner_of(project: Project, provider, settings=None, events: list[dict] | None = None,
             key_ids: bool = True) -> Owner:
    """What this directory can prove: its id (tags), its journal, and its unique key (name,
    plus the ids the account gives that name: DataCrunch reports keys by id only)."""
    events = Journal(project.journal_path).events() if events is None else events
    unique = settings.ssh_key_unique if settings is not None else True
    refs = set()
    if unique:
        refs |= {e["key_id"] for e in events if e.get("event") == "ssh-key" and e.get("unique") and e.get("key_id")}
        names = {e["name"] for e in events if e.get("event") == "ssh-key" and e.get("unique") and e.get("name")}
        names |= project.known_key_names()
        refs |= names
        if key_ids:
            try:
                refs |= {k.id for k in provider.ssh_keys() if k.name in names}
            except errors.AuthError:
                raise
            except errors.ApiError:
                pass
    return Owner.from_events(events, project.identity(), refs)


def owned_instances(provider, project: Project, settings=None, events=None, owner: Owner | None = None) -> list:
    """Live instances this directory provably launched (two proofs, see launch.ownership)."""
    owner = owner or owner_of(project, provider, settings, events)
    return [i for i in provider.instances() if i.state != TERMINATED and owner.owns(i)]


def _claimed_only(provider, owner: Owner, listing: list) -> list:
    """Instances with one sign of ours but not two: shown, never touched."""
    return [i for i in listing if i.state != TERMINATED and owner.claims(i) and not owner.owns(i)]


# -- bringup ----------------------------------------------------------------------------
def preflight(settings, project: Project):
    """Every check that can fail before anything is launched; one clear line each."""
    provider = providers.get(settings.provider)
    provider.credentials()                       # present, 0600, well formed
    _tools()
    provider.ssh_keys()                          # the key is accepted by the API (AuthError otherwise)
    return provider


def _tools() -> None:
    from kcloud.tfprovider.runner import terraform_binary
    terraform_binary()                           # raises with the fix when missing
    for tool, package in (("ssh-keygen", "openssh-client"), ("ssh", "openssh-client")):
        if not shutil.which(tool):
            raise errors.ConfigError(f"{tool} not found", hint=f"install {package}")
    if not (Path(sys.prefix) / "bin" / "ansible-playbook").exists() and not shutil.which("ansible-playbook"):
        raise errors.ConfigError("ansible-playbook not found", hint="run 'make' to install ansible-core into .venv")


def cmd_bringup(args) -> int:
    project = Project.here()
    settings = _settings(project)
    with project.lock("bringup"), inflight.launching(project.launching_lock):
        clouds, skipped = _clouds(settings, project)
        from kcloud.launch import registry
        registry.record(project.identity(create=True), project.root)    # cost --all, cloud-list-all
        journal = Journal(project.journal_path)
        events = journal.events()
        running = {}
        for name, prov in clouds.items():
            owner = owner_of(project, prov, settings if name == settings.provider else None, events)
            running[name] = [i for i in prov.instances() if i.state in (PENDING, ACTIVE) and owner.owns(i)]
        places = {}
        for name, prov in clouds.items():         # shared storage and kept OS volumes pin the region
            places[name] = storage.locate(project, settings, prov)
            for line in places[name].notes:
                _say(line)
        script_text = storage.startup_text(project, settings)
        catalogs = _catalogs(clouds)             # fresh capacity: decide at launch time
        make_plan = _pinned(_planner(settings, skipped), places, settings)
        plan = make_plan(catalogs)
        for line in (ladder.trace(plan) if settings.any_group else tiers.trace(plan)):
            _say(line)
        for line in getattr(make_plan, "lines", []):
            _say(line)
        if settings.nodes > 1:
            _say(f"  {settings.nodes} nodes of one type in one region, all or nothing: "
                 f"{', '.join(settings.node_names()[:3])}{' ...' if settings.nodes > 3 else ''}")
        stale = _stale(settings, plan, catalogs, clouds, running) + \
            [x for x in _running_elsewhere(project, settings, events) if x[0].name not in clouds]
        asked_on = "any configured provider" if settings.any_group else clouds[settings.provider].title
        if stale and not getattr(args, "replace", False):
            what = "; ".join(f"{i.name} = {i.instance_type} in {i.region} on {p.title}" for p, i in stale)
            raise errors.ConfigError(
                f"already running for this directory: {what}; .config now asks for {_asked(settings, plan)} "
                f"on {asked_on}",
                hint="make destroy first, or make bringup REPLACE=1 to terminate it and launch what .config asks")
        for prov, inst in stale:
            _say(f"Replacing {inst.name} ({inst.instance_type} in {inst.region}, {inst.id}) as asked ...")
            if not terminate_verified(prov, inst.id, journal.record):
                raise errors.TransientError(f"{prov.name}: {inst.id} could not be terminated",
                                            hint="it may still be running: run make destroy")
        gone = {i.id for _p, i in stale}
        adopted = [tiers.Candidate(i.instance_type, i.region, "adopted", i.price_per_hour, name)
                   for name, insts in running.items() for i in insts
                   if i.id not in gone and i.name in settings.node_names()][:1]
        plan = _within_budget(settings, plan)
        wait_s = settings.wait_timeout if getattr(args, "wait", None) is None else args.wait
        if not plan.candidates and not adopted and not wait_s:   # nothing launched, no key uploaded
            if settings.any_group:
                raise errors.CapacityError(f"no capacity for any of the types of {plan.label} on "
                                           f"{', '.join(plan.providers) or 'any provider'}",
                                           hint="wait for capacity (make bringup WAIT=2h) or widen the group")
            raise errors.CapacityError(f"{settings.provider}: {tiers.no_capacity_advice(plan)}",
                                       provider=settings.provider)

        if settings.max_lifetime or settings.max_spend is not None:
            from kcloud.launch import watchdog
            watchdog.write_limits(project.state_dir, max_lifetime=settings.max_lifetime,
                                  max_spend=settings.max_spend, host=settings.host_name,
                                  notify_command=settings.notify_command)
            pid = watchdog.ensure_running(project.root, project.state_dir)
            _say(f"Watchdog (pid {pid}) guards the limits: " + ", ".join(filter(None, [
                f"lifetime {settings.max_lifetime:.0f} s" if settings.max_lifetime else "",
                f"spend ${settings.max_spend:.2f}" if settings.max_spend is not None else ""])))

        launchers: dict[str, _Launcher] = {}

        def attempt(candidates) -> bool:
            """Walk the candidates cloud by cloud (a block of one cloud = one terraform apply);
            False when every candidate lost its race and we may wait on."""
            parts = ladder.blocks([c if c.provider else replace(c, provider=settings.provider) for c in candidates])
            for i, (name, block) in enumerate(parts):
                launcher = launchers.get(name) or launchers.setdefault(
                    name, _Launcher(project, settings, clouds[name], journal, places[name], script_text))
                last = i == len(parts) - 1
                if launcher.apply(block, may_lose=bool(wait_s) or not last):
                    chosen.append(launcher)
                    return True
                if not last:
                    _say(f"{clouds[name].title}: every candidate lost its race; "
                         f"next: {clouds[parts[i + 1][0]].title}")
            return False

        chosen: list[_Launcher] = []
        try:
            launched = bool((plan.candidates or adopted) and attempt(adopted or plan.candidates))
            if not launched:
                _wait(clouds, settings, plan, catalogs, make_plan, attempt, wait_s)
        except BaseException as exc:
            left = "; ".join(x for x in (l.after_failure() for l in launchers.values()) if x) or \
                "the API confirms no instance of this directory is running"
            if isinstance(exc, KeyboardInterrupt):
                raise errors.KcloudError("interrupted: " + left) from None
            if isinstance(exc, errors.KcloudError):
                if isinstance(exc, WaitTimedOut):
                    _notify(settings, "gave-up", message=exc.line())
                else:
                    exc.hint = left          # the API was just asked: this is what is left
            raise
        launcher = chosen[0]
        for other in launchers.values():        # keys uploaded to clouds that lost every race
            if other is not launcher:
                other.after_failure()
        provider = launcher.provider
        out = launcher.tf.output()

        user = settings.ssh_user if settings.ssh_user and provider.name == settings.provider else provider.login_user
        members = out.get("members") or [{"name": settings.host_name, "ip": out["ip"], "private_ip": ""}]
        hosts = [hostfiles.Host(m["name"], m["ip"], user, settings.ssh_port, launcher.private, provider=provider.name,
                                private_ip=m.get("private_ip") or "", rank=rank) for rank, m in enumerate(members)]
        try:
            hostfiles.write(project, hosts, settings.ssh_config_update)
        except errors.KcloudError as exc:
            exc.hint = f"{', '.join(h.name for h in hosts)} running and billed: run make destroy"
            raise
        try:
            storage.remember_boot_volumes(project, settings, provider, members, _say)
        except errors.KcloudError as exc:
            _say(f"could not record the kept OS volumes ({exc.line()})")
        _say(f"SSH config: {project.ssh_config}" +
             (" (included from ~/.ssh/config)" if settings.ssh_config_update else ""))
        try:
            _run_ansible(project, settings, args.ansible_verbosity, nodes=len(hosts),
                         gpus=_gpus_per_node(catalogs.get(provider.name), out["instance_type"]), shared_dir=launcher.place.mount_point)
        except KeyboardInterrupt:
            raise errors.KcloudError(
                f"interrupted while preparing {settings.host_name}: it is running and billed "
                f"({out['instance_type']} in {out['region']}, ${float(out['price_per_hour']):.2f}/h)",
                hint="make bringup to finish preparing it, or make destroy to stop paying") from None

        _say("")
        where = f" on {provider.title}" if settings.any_group else ""
        price = float(out["price_per_hour"])
        if len(hosts) > 1:
            _say(f"Ready: {len(hosts)} nodes of {out['instance_type']} in {out['region']}{where} "
                 f"at ${price:.2f}/h each (${price * len(hosts):.2f}/h)")
            for h in hosts:
                _say(f"  {h.name}  {h.ip}  private {h.private_ip or '-'}  rank {h.rank}")
        else:
            _say(f"Ready: {settings.host_name} = {out['instance_type']} in {out['region']}{where} at ${price:.2f}/h")
        if launcher.place.storage is not None:
            st = launcher.place.storage
            _say(f"  {st.kind} {st.name} ({st.region}) attached on every node"
                 + (f" at {launcher.place.mount_point}" if launcher.place.mount_point else "")
                 + "; make destroy keeps it, make destroy-storage removes it")
        _notify(settings, "ready", provider=provider.name, instance_type=out["instance_type"], region=out["region"],
                price=price, message=f"{', '.join(h.name for h in hosts)} ready")
        _say(f"  ssh {hosts[0].name}" if settings.ssh_config_update else
             f"  ssh -F {project.ssh_config} {hosts[0].name}")
        _say("  make destroy   # when you are done: stops the billing")
    return 0


class _Launcher:
    """One cloud's part of a bringup: its key in the account, its terraform root, its walk."""

    def __init__(self, project: Project, settings, provider, journal: Journal, place=None, script_text: str = ""):
        self.project, self.settings, self.provider, self.journal = project, settings, provider, journal
        self.place = place or storage.Placement()
        self.script_text, self.script_id = script_text, None
        name, self.private, public = sshkeys.local_key(project, settings)
        if settings.ssh_key_unique:
            name = project.unique_key_name(provider.name)
        self.key = sshkeys.ensure_uploaded(provider, name, public.read_text(errors="replace"),
                                           create=settings.ssh_key_auto_create)
        journal.record({"event": "ssh-key", "provider": provider.name, "name": self.key.name, "key_id": self.key.id,
                        "unique": settings.ssh_key_unique})
        from kcloud.tfprovider import runner
        self.runner = runner
        self.tf = runner.Terraform(project.terraform_dir(provider.name), binary=_terraform_binary(settings),
                                   env={inflight.OWNER_ENV: str(os.getpid()),
                                        inflight.LOCK_ENV: str(project.launching_lock)})

    def apply(self, candidates, may_lose: bool) -> bool:
        """terraform apply over these candidates; False when every one lost its race and the
        caller may go on (the walk confirmed nothing of ours is left running)."""
        s, project = self.settings, self.project
        own = self.provider.name == s.provider
        self.place = storage.ensure(self.provider, self.place, candidates[0].region, self.journal,
                                    project.identity(create=True), _say)
        candidates = storage.pin(candidates, self.place, _say) or candidates[:0]
        if not candidates:
            raise errors.CapacityError(f"{self.provider.name}: no candidate in {self.place.region}, where "
                                       f"{self.place.why.split(' is in ')[0]} is",
                                       hint="wait for capacity there (make bringup WAIT=2h)", provider=self.provider.name)
        if self.script_id is None:
            self.script_id = storage.startup_script(project, self.provider, self.script_text, self.journal)
        vars_file = self.runner.render_tfvars(
            self.tf.root, name=s.host_name, candidates=candidates, ssh_key_id=self.key.id,
            ssh_key_name=self.key.name, image=s.image if own else "",
            boot_timeout=s.boot_timeout, journal_path=project.journal_path, progress_file=project.progress_path,
            cloud=self.provider.name, owner=project.identity(create=True), nodes=s.nodes,
            shared_storage=self.place.refs, startup_script_id=self.script_id,
            user_data=self.script_text if not self.script_id else "",
            boot_volumes=self.place.boot_volumes, keep_boot_volumes=s.keep_volumes and own)
        self.journal.record({"event": "offer", "provider": self.provider.name,    # the launch price (make cost)
                             "prices": {f"{c.instance_type}@{c.region}": c.price for c in candidates if c.price}})
        _say("")
        _say(f"Provisioning {s.host_name} on {self.provider.title} with terraform ...")
        try:
            with _tail(project.progress_path):
                self.tf.init()
                self.tf.apply(vars_file, on_line=_terraform_line)
        except self.runner.TerraformError as exc:
            if may_lose and _lost_every_race(exc):
                return False
            raise
        return True

    def after_failure(self) -> str:
        left = _after_failure(self.provider, self.project, self.settings, self.key)
        if "may still be running" not in left and "could not check" not in left:
            storage.abandon(self.provider, self.place, _say)      # empty storage made by this bringup
            if self.script_id:
                try:
                    self.provider.remove_leftover(storage_leftover("script", self.script_id))
                    self.script_id = None
                except errors.KcloudError:
                    left += "; the startup script is still in the account: make destroy removes it"
        return left


def _clouds(settings, project: Project) -> tuple[dict, dict[str, str]]:
    """The providers this bringup may use, preflighted: .config's, or with a cross-provider
    group every provider whose credentials are present (the others skipped with one line)."""
    if not settings.any_group:
        return {settings.provider: preflight(settings, project)}, {}
    clouds, missing = providers.with_credentials()
    skipped = {name: f"no credentials: {why}" for name, why in missing.items()}   # one line, in the trace
    if not clouds:
        raise errors.CredentialsError("no provider has credentials",
                                      hint="set them with scripts/<provider>_credentials.py set")
    _tools()
    for prov in clouds.values():
        prov.ssh_keys()                          # the credentials are accepted (AuthError otherwise)
    return clouds, skipped


def _catalogs(clouds: dict) -> dict:
    if len(clouds) == 1:
        cats = {name: prov.catalog() for name, prov in clouds.items()}
    else:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(len(clouds)) as pool:
            futures = {name: pool.submit(prov.catalog) for name, prov in clouds.items()}
            cats = {name: f.result() for name, f in futures.items()}
    return cats


def _planner(settings, skipped: dict[str, str]):
    """catalogs -> plan: one provider's tiers, or the shared ladder over several."""
    if settings.any_group:
        return lambda cats: ladder.plan(settings.any_group, cats, settings.selection.max_price, skipped=skipped)
    return lambda cats: tiers.plan(settings.provider, settings.selection, cats[settings.provider])


def _pinned(make_plan, places: dict, settings):
    """The planner, with candidates outside a pinned region (shared storage, kept OS volumes)
    dropped; the first plan's trace lines say why (`.lines`)."""
    state = {"said": False}

    def plan_(cats):
        plan = make_plan(cats)
        lines: list[str] = []
        kept = []
        for c in plan.candidates:
            place = places.get(c.provider or settings.provider)
            if place is None or not place.region or c.region == place.region:
                kept.append(c)
        for name, place in places.items():
            dropped = sorted({c.region for c in plan.candidates if (c.provider or settings.provider) == name
                              and place.region and c.region != place.region})
            if dropped:
                lines.append(f"  dropped candidates in {', '.join(dropped)}: {place.why}")
        if not state["said"]:
            plan_.lines = lines
            state["said"] = True
        return replace(plan, candidates=kept)
    plan_.lines = []
    return plan_


def storage_leftover(kind: str, item_id: str, name: str = ""):
    from kcloud.providers.base import Leftover
    return Leftover(kind, item_id, name)


def _gpus_per_node(catalog, instance_type: str) -> int:
    t = catalog.types.get(instance_type) if catalog is not None else None
    return max(1, int(t.gpu_count)) if t else 1


def _stale(settings, plan, catalogs: dict, clouds: dict, running: dict) -> list:
    """Our running machines that .config no longer describes."""
    if not settings.any_group:
        name = settings.provider
        return _not_what_config_asks(settings, catalogs[name], running[name])
    accepted = {(c.provider, c.instance_type) for _t, checks in plan.tiers for c in checks}
    return [(clouds[name], i) for name, insts in running.items() for i in insts
            if i.name not in settings.node_names() or (name, i.instance_type) not in accepted]


def _within_budget(settings, plan, quiet: bool = False):
    """KCLOUD_MAX_SPEND with KCLOUD_MAX_LIFETIME: drop candidates whose price x lifetime exceeds
    the cap (a trace line each); refuse when that leaves none of those that had capacity."""
    if settings.max_spend is None or not settings.max_lifetime:
        return plan
    from dataclasses import replace
    hours = settings.max_lifetime / 3600
    kept = [c for c in plan.candidates if c.price * hours <= settings.max_spend]
    for c in plan.candidates:
        if c not in kept and not quiet:
            _say(f"  {c.instance_type} {c.region}: ${c.price:.2f}/h x {hours:g} h = ${c.price * hours:.2f} "
                 f"> spend cap ${settings.max_spend:.2f}: skipped")
    if plan.candidates and not kept:
        cheapest = min(plan.candidates, key=lambda c: c.price)
        raise errors.ConfigError(
            f"over budget: the cheapest candidate with capacity, {cheapest.instance_type} at ${cheapest.price:.2f}/h, "
            f"costs ${cheapest.price * hours:.2f} over the maximum lifetime; the spend cap is ${settings.max_spend:.2f}",
            hint="raise CONFIG_KCLOUD_MAX_SPEND, shorten CONFIG_KCLOUD_MAX_LIFETIME or choose a cheaper tier")
    return replace(plan, candidates=kept)


def _terraform_binary(settings) -> str | None:
    """TERRAFORM_BINARY_PATH / OpenTofu from .config; None = kcloud's own lookup."""
    wanted = settings.terraform_binary
    if not wanted:
        return None
    found = shutil.which(os.path.expanduser(wanted))
    if not found:
        raise errors.ConfigError(f"CONFIG_TERRAFORM_BINARY_PATH=\"{wanted}\" not found",
                                 hint="install it, or set the path to terraform/tofu (empty: kcloud's own)")
    return found


def _lost_every_race(exc) -> bool:
    """A walk that failed only on capacity-like outcomes, with every launched machine confirmed
    terminated: safe to wait on."""
    text = str(exc) + "\n" + "\n".join(getattr(exc, "summaries", [])) + "\n" + exc.details()
    return "no candidate could be launched" in text and "may still be running" not in text


def _wait(clouds: dict, settings, plan, catalogs: dict, make_plan, attempt, wait_s: float) -> None:
    """Nothing launched yet: poll capacity (one request per poll and provider) and launch when
    it appears, still in plan order (a higher tier seen in the same poll wins)."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace as _replace

    from kcloud.launch.wait import Schedule, format_duration, wait_for_capacity
    floors = [float(providers.data(n).get("wait", {}).get("poll_floor_s", 2.0)) for n in clouds]
    ceilings = [float(providers.data(n).get("wait", {}).get("poll_ceiling_s", 6.0)) for n in clouds]
    where = ", ".join(p.title for p in clouds.values())
    _say("")
    _say(f"Nothing of {_asked(settings, plan)} can be had on {where} now; waiting up to "
         f"{format_duration(wait_s)} for capacity (Ctrl-C leaves nothing running) ...")

    def check():
        with ThreadPoolExecutor(len(clouds)) as pool:
            fresh = {n: pool.submit(p.capacity) for n, p in clouds.items()}
            cats = {n: _replace(catalogs[n], capacity=f.result()) for n, f in fresh.items()}
        return _within_budget(settings, make_plan(cats), quiet=True).candidates

    outcome = wait_for_capacity(check, attempt, timeout=wait_s, say=_say,
                                schedule=Schedule(max(floors), max(ceilings)))
    _say(f"  capacity after {format_duration(outcome.elapsed)} ({outcome.polls} polls)")


def _notify(settings, event: str, *, provider: str = "", instance_type: str = "", region: str = "",
            price: float = 0.0, message: str = "") -> None:
    """CONFIG_KCLOUD_NOTIFY_COMMAND, as a list of words (never a shell), outcome in the env."""
    if not settings.notify_command:
        return
    import shlex
    try:
        argv = shlex.split(settings.notify_command)
    except ValueError as exc:
        _say(f"notify command not run: {exc}")
        return
    env = {**os.environ, "KCLOUD_EVENT": event, "KCLOUD_HOST": settings.host_name,
           "KCLOUD_PROVIDER": provider or settings.provider, "KCLOUD_INSTANCE_TYPE": instance_type,
           "KCLOUD_REGION": region, "KCLOUD_PRICE_PER_HOUR": f"{price:.2f}", "KCLOUD_MESSAGE": message}
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        if proc.returncode:
            _say(f"notify command exited {proc.returncode}")
    except (OSError, subprocess.TimeoutExpired) as exc:
        _say(f"notify command failed: {exc}")


def _asked(settings, plan) -> str:
    sel = settings.selection
    what = sel.value or plan.label or sel.kind.lower()
    return what + (f" in {sel.region}" if sel.region else "")


def _not_what_config_asks(settings, catalog, running: list) -> list:
    """Our running machines that .config no longer describes (name, type or pinned region)."""
    accepted = {t for _tier, types in tiers.tiers_of(settings.provider, settings.selection, catalog) for t in types}
    provider = providers.get(settings.provider)
    stale = []
    for inst in running:
        if inst.name not in settings.node_names() or (accepted and inst.instance_type not in accepted) or \
                (settings.selection.region and inst.region != settings.selection.region):
            stale.append((provider, inst))
    return stale


def _running_elsewhere(project: Project, settings, events: list[dict]) -> list:
    """Machines of this directory on *another* provider (the journal says where it launched)."""
    out = []
    for name in sorted({e["provider"] for e in events if e.get("provider") in providers.names()} - {settings.provider}):
        other = providers.get(name)
        try:
            out += [(other, i) for i in owned_instances(other, project, None, events)
                    if i.state in (PENDING, ACTIVE)]
        except errors.CredentialsError:
            continue
    return out


def _after_failure(provider, project: Project, settings, key) -> str:
    """After a failed or interrupted apply: what is left, said plainly. Our unique key goes
    when the API confirms that no machine of ours runs."""
    try:
        owned = owned_instances(provider, project, settings)
    except errors.KcloudError:
        return "could not check what is left: run make destroy"
    left = [i for i in owned if i.state in (PENDING, ACTIVE)]   # terminating ones were confirmed
    if left:
        return (f"{len(left)} instance{'s' if len(left) > 1 else ''} may still be running "
                f"({', '.join(i.id for i in left)}): run make destroy")
    if settings.ssh_key_unique and settings.ssh_key_auto_create:
        try:
            sshkeys.remove(provider, key.name)
        except errors.KcloudError:
            return f"no instance is running; the SSH key {key.name} is still in the account: make destroy removes it"
    return "the API confirms no instance of this directory is running"


class _tail:
    """Print the terraform provider's progress lines (status, elapsed) while apply runs."""

    def __init__(self, path: Path):
        self.path, self.stop = path, threading.Event()

    def __enter__(self):
        from kcloud.fsutil import atomic_write
        atomic_write(self.path, "")        # replaces (never writes through) a link planted there
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        with open(self.path) as f:
            while not self.stop.is_set():
                line = f.readline()
                if line:
                    _say(f"  {line.rstrip()}")
                else:
                    time.sleep(0.2)
            for line in f:
                _say(f"  {line.rstrip()}")

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=2)


def _terraform_line(line: str) -> None:
    if os.environ.get("V") == "1" or "Error" in line or "Apply complete" in line or "Destroy complete" in line:
        _say(f"  terraform: {line}")


def _run_ansible(project: Project, settings, verbosity: int | None, nodes: int = 1, gpus: int = 1,
                 shared_dir: str = "") -> None:
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.prefix) / "bin")) or "ansible-playbook"
    extra = {"kcloud_ssh_timeout": settings.ssh_timeout, "kcloud_gpus_per_node": gpus, "kcloud_master_port": 29500,
             "kcloud_shared_dir": shared_dir}
    cmd = [playbook, "-i", str(project.inventory), str(REPO / "playbooks" / "bringup.yml"),
           "-e", json.dumps(extra)]
    if verbosity:
        cmd.append("-" + "v" * max(1, min(int(verbosity), 4)))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "playbooks" / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(project.state_dir / "ansible-tmp"),
           "ANSIBLE_FORKS": str(max(5, min(nodes, 64)))}       # every node in parallel
    _say("Preparing the host with Ansible ..." if nodes == 1 else f"Preparing the {nodes} nodes with Ansible ...")
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=not verbosity, text=True)
    if not verbosity and proc.stdout:
        lines = proc.stdout.splitlines()
        for i, line in enumerate(lines):   # the report, the recap and any failure
            if '"msg"' in line or line.startswith(("fatal", "PLAY RECAP")) or "UNREACHABLE" in line or \
                    (i and lines[i - 1].startswith("PLAY RECAP") and line.strip()):
                _say(f"  {line.strip()}")
    if proc.returncode:
        raise errors.KcloudError(f"Ansible host preparation failed (exit {proc.returncode})",
                                 hint="the machine is up and billed; fix and rerun 'make bringup', or 'make destroy'")


# -- destroy ----------------------------------------------------------------------------
def _read_local(project: Project) -> tuple:
    """(settings or None, journal events, notes about files ignored). Damaged local files never
    block destroy: each one is named and the API listing (tags, keys) decides instead."""
    notes = []
    try:
        settings = _settings(project) if (project.root / ".config").exists() else None
    except errors.KcloudError as exc:
        settings = None
        notes.append(f"ignored .config ({exc})")
    journal = Journal(project.journal_path)
    events = journal.events()
    if journal.damaged:
        notes.append(f"ignored {journal.damaged} damaged line(s) of {project.journal_path}")
    return settings, events, notes


def _provider_names(settings, events: list[dict]) -> tuple[list[str], bool]:
    """Providers to reconcile: .config's and the journal's; every provider with credentials
    when neither says (the tags still find what is ours). Second: whether we had to guess."""
    known = set(providers.names())
    names = ({settings.provider} if settings else set()) | {e["provider"] for e in events if e.get("provider") in known}
    return (sorted(names), False) if names else (sorted(known), True)


def cmd_destroy(args) -> int:
    project = Project.here()
    settings, events, notes = _read_local(project)
    names, guessed = _provider_names(settings, events)
    if getattr(args, "check_clean", False):
        return _check_clean(project, names, settings, events)
    for line in notes:
        _say(line)
    standing: list[str] = []
    with project.lock("destroy"), inflight.quiesced(project.launching_lock, say=_say):
        settings, events, _notes = _read_local(project)     # what a finished launcher just wrote
        for name in names:
            provider = providers.get(name)
            try:
                standing += _destroy_provider(project, provider, settings if settings and settings.provider == name
                                              else None, events)
            except errors.CredentialsError as exc:
                if not guessed:
                    raise
                _say(f"{provider.title}: skipped ({exc.line()})")
        if standing:
            raise errors.KcloudError(f"{len(standing)} thing(s) of this directory may still be running or billed: "
                                     + ", ".join(standing), hint="run make destroy again")
        from kcloud.launch import watchdog
        watchdog.stop(project.state_dir)
        try:
            hostfiles.remove(project)
        except Exception as exc:       # a damaged ~/.ssh/config must not undo a finished destroy
            _say(f"could not remove this directory's Include line from ~/.ssh/config ({exc}); remove it by hand")
        _archive_journal(project)
        project.progress_path.unlink(missing_ok=True)
    _say("Destroyed: the API confirms nothing of this directory is left running.")
    return 0


def _destroy_provider(project: Project, provider, settings, events: list[dict]) -> list[str]:
    """Terminate what is ours, verify, then remove keys and leftovers. Returns what still stands."""
    tf_dir = project.terraform_dir(provider.name)
    if (tf_dir / "terraform.tfstate").exists():
        from kcloud.tfprovider import runner
        _say(f"{provider.title}: terraform destroy ...")
        try:
            runner.Terraform(tf_dir).destroy()
        except errors.KcloudError as exc:
            _say(f"  terraform destroy failed ({exc.line()}); reconciling through the API")
    journal = Journal(project.journal_path)
    owner = owner_of(project, provider, settings, events)
    listing = provider.instances()
    mine = [i for i in listing if i.state != TERMINATED and owner.owns(i)]
    for inst in _claimed_only(provider, owner, listing):
        _say(f"{provider.title}: {inst.name} ({inst.id}) carries a sign of this directory "
             f"({', '.join(sorted(owner.proofs(inst)))}) but not two: not touched; check it in the console")
    standing = []
    keep = bool(settings and settings.keep_volumes and provider.keeps_boot_volumes)
    if mine:
        _say(f"{provider.title}: terminating {len(mine)} instance(s): "
             + ", ".join(f"{i.name} ({i.id})" for i in mine) + (" (keeping their OS volumes)" if keep else ""))
        for inst in mine:
            if not terminate_verified(provider, inst.id, journal.record, keep_boot_volume=keep):
                standing.append(f"{provider.name} instance {inst.id}")
        if not standing:
            _wait_gone(provider, [i.id for i in mine])
    # The instances just proven ours vouch for their volumes (journal proof) from here on.
    owner = Owner(owner.project_id, owner.key_refs, owner.journal_ids | {i.id for i in mine}, owner.journal_runs,
                  owner.names)
    kept_ids = set(storage.read_cache(provider.name, settings.hosts_prefix).values()) if keep else set()
    shared = storage.shared_name(project, settings, provider) if settings and settings.provider == provider.name else ""
    shared_ids = {st.id for st in _safe_storage(provider) if shared and st.name == shared}
    for item in provider.leftovers(owner):
        if item.id in kept_ids or item.id in shared_ids:
            continue                     # kept on purpose: make destroy-storage removes them
        try:
            provider.remove_leftover(item)
            _say(f"{provider.title}: removed {item.kind} {item.name or item.id} ({item.detail})")
        except errors.KcloudError as exc:
            standing.append(f"{provider.name} {item.kind} {item.id} ({exc})")
    for sid, name in storage.scripts_of(events, provider).items():
        try:
            provider.remove_leftover(storage_leftover("script", sid, name))
            _say(f"{provider.title}: removed startup script {name} ({sid})")
        except errors.KcloudError as exc:
            standing.append(f"{provider.name} script {sid} ({exc.line()})")
    if settings and not keep and provider.keeps_boot_volumes:
        standing += _drop_kept_volumes(project, settings, provider)
    if standing:
        return standing          # keep the key: it is one of the proofs for the next destroy
    unique_keys = {e["name"] for e in events if e.get("event") == "ssh-key" and e.get("unique") and e.get("name")}
    if settings is None or (settings.ssh_key_unique and settings.ssh_key_auto_create):
        unique_keys |= project.known_key_names()
    for key_name in sorted(unique_keys):
        if sshkeys.remove(provider, key_name):
            _say(f"{provider.title}: removed SSH key {key_name}")
    return standing


def _safe_storage(provider) -> list:
    try:
        return provider.shared_storage()
    except errors.ApiError:
        return []


def _drop_kept_volumes(project: Project, settings, provider, names: list[str] | None = None) -> list[str]:
    """OS volumes cached for this directory's nodes (KEEP_VOLUMES was on, now off, or
    destroy-storage): deleted for good when they carry our tag too; cache entries dropped."""
    from kcloud.launch.ownership import TAG_PROJECT
    cache = storage.read_cache(provider.name, settings.hosts_prefix)
    names = settings.node_names() if names is None else names
    ours = project.identity()
    volumes = {v["id"]: v for v in provider.volumes()}
    standing = []
    for host in [n for n in names if n in cache]:
        v = volumes.get(cache[host])
        if v is not None and (v["tags"].get(TAG_PROJECT) != ours or v["instance_ids"]):
            _say(f"{provider.title}: kept OS volume {v['id']} of {host} is not provably this directory's "
                 "or is attached: not touched")
            continue
        if v is not None:
            try:
                provider.remove_leftover(storage_leftover("volume", v["id"], v["name"]))
                _say(f"{provider.title}: removed kept OS volume {v['name']} ({v['id']}, {v['size']} GB) for good")
            except errors.KcloudError as exc:
                standing.append(f"{provider.name} volume {v['id']} ({exc.line()})")
                continue
        del cache[host]
    storage.write_cache(provider.name, settings.hosts_prefix, cache)
    return standing


def _archive_journal(project: Project) -> None:
    """The journal's work is done; its launches and prices move to .kcloud/history.jsonl (what
    `make cost` reads), so the next bringup starts with a clean journal."""
    from kcloud.fsutil import append_line
    journal = Journal(project.journal_path)
    for event in journal.events():
        append_line(project.state_dir / "history.jsonl", json.dumps(event, sort_keys=True), on_link="refuse")
    journal.clear()


def _wait_gone(provider, ids: list[str], timeout: float = 120) -> None:
    """Until the listing shows them terminated or gone; `terminating` at the deadline is
    accepted with a note (the cloud took the order), anything else is an error."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [i for i in provider.instances() if i.id in ids and i.state != TERMINATED]
        if not alive:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(1)
    if all(i.state == TERMINATING for i in alive):
        _say(f"{provider.title}: still {alive[0].status} after {timeout:.0f} s: "
             + ", ".join(i.id for i in alive) + " (the cloud accepted the terminate)")
        return
    raise errors.TransientError(f"{provider.name}: still running {timeout:.0f} s after terminate: "
                                + ", ".join(i.id for i in alive), hint="run 'make destroy' again")


def _check_clean(project: Project, names: list[str], settings, events) -> int:
    left = []
    for n in names:
        try:
            left += owned_instances(providers.get(n), project, settings, events)
        except errors.CredentialsError:
            continue
    if left:
        raise errors.KcloudError(f"{len(left)} instance(s) of this directory are still running",
                                 hint="run 'make destroy' first")
    return 0


# -- storage ----------------------------------------------------------------------------
def _storage_items(project: Project, settings, provider) -> list[tuple]:
    """(kind, object, line) for what destroy keeps: the shared storage .config names and the
    OS volumes kept for this directory's nodes (cache file *and* our tag)."""
    from kcloud.launch.ownership import TAG_PROJECT
    items = []
    name = storage.shared_name(project, settings, provider)
    ours = project.identity()
    if name:
        for st in provider.shared_storage():
            if st.name != name or (provider.storage_kind == "volume" and st.tags.get(TAG_PROJECT) != ours):
                continue
            size = "?" if st.size_gb is None else f"{st.size_gb:.1f} GB"
            cost = "?" if st.monthly_usd is None else f"${st.monthly_usd:.2f}/month"
            items.append(("storage", st, f"{st.kind} {st.name} ({st.id}) in {st.region}: {size}, {cost}"
                                         f"{', in use' if st.in_use else ''}"))
    if provider.keeps_boot_volumes:
        cache = storage.read_cache(provider.name, settings.hosts_prefix)
        volumes = {v["id"]: v for v in provider.volumes()} if cache else {}
        for host in settings.node_names():
            v = volumes.get(cache.get(host, ""))
            if v is not None and not v["trash"] and v["tags"].get(TAG_PROJECT) == ours:
                items.append(("boot", v, f"kept OS volume of {host}: {v['name']} ({v['id']}) in {v['location']}: "
                                         f"{v['size']} GB{', attached' if v['instance_ids'] else ''}"))
    return items


def cmd_destroy_storage(args) -> int:
    project = Project.here()
    settings = _settings(project)
    provider = providers.get(settings.provider)
    with project.lock("destroy-storage"):
        running = [i for i in owned_instances(provider, project, settings) if i.state in (PENDING, ACTIVE)]
        if running:
            raise errors.ConfigError(f"{len(running)} machine(s) of this directory still run and use the storage: "
                                     + ", ".join(i.name for i in running), hint="make destroy first")
        items = _storage_items(project, settings, provider)
        if not items:
            _say(f"{provider.title}: no storage of this directory is kept (the API was just asked).")
            return 0
        _say(f"{provider.title}: this deletes for good (not to a trash):")
        for _kind, _obj, line in items:
            _say(f"  {line}")
        monthly = sum(o.monthly_usd or 0 for k, o, _l in items if k == "storage")
        if monthly:
            _say(f"  keeping the shared storage costs ${monthly:.2f}/month")
        if not args.yes:
            if not sys.stdin.isatty():
                raise errors.ConfigError("not deleting without confirmation",
                                         hint="make destroy-storage YES=1 (scripts/kcloud destroy-storage --yes)")
            if input("Type 'delete' to delete them: ").strip() != "delete":
                _say("Nothing deleted.")
                return 1
        standing = []
        for kind, obj, _line in items:
            try:
                if kind == "storage":
                    provider.delete_storage(obj)
                    _say(f"removed {obj.kind} {obj.name} ({obj.id})")
            except errors.KcloudError as exc:
                standing.append(f"{obj.name} ({exc.line()})")
        if any(k == "boot" for k, _o, _l in items):
            standing += _drop_kept_volumes(project, settings, provider)
        if standing:
            raise errors.KcloudError("could not remove: " + "; ".join(standing), hint="run make destroy-storage again")
    _say("Storage removed: the API confirms nothing of it is left.")
    return 0


def _storage_lines(project: Project, settings) -> list[str]:
    if settings is None:
        return []
    try:
        provider = providers.get(settings.provider)
        items = _storage_items(project, settings, provider)
    except errors.KcloudError as exc:
        return [f"storage: could not be listed ({exc.line()})"]
    return [f"Kept: {line} (make destroy-storage removes it)" for _k, _o, line in items]


# -- status -----------------------------------------------------------------------------
def cmd_status(args) -> int:
    project = Project.here()
    settings, events, notes = _read_local(project)
    for line in notes:
        _say(line)
    names, guessed = _provider_names(settings, events)
    launched = {e.get("id"): e.get("time") for e in events if e.get("event") == "launched"}
    rows, unproven = [], []
    for name in names:
        provider = providers.get(name)
        try:
            owner = owner_of(project, provider, settings if settings and settings.provider == name else None, events)
            listing = provider.instances()
        except errors.CredentialsError:
            if guessed:
                continue
            raise
        for inst in listing:
            if inst.state == TERMINATED:
                continue
            if owner.owns(inst):
                started = _started(inst.created_at) or launched.get(inst.id)
                uptime = time.time() - started if isinstance(started, (int, float)) else 0
                rows.append((name, inst, uptime, inst.price_per_hour * uptime / 3600))
            elif owner.claims(inst):
                unproven.append((name, inst, owner.proofs(inst)))
    for name, inst, proofs in unproven:
        _say(f"{name}: {inst.name} ({inst.id}) has only one sign of this directory ({', '.join(sorted(proofs))}); "
             "not counted as ours")
    if not rows:
        _say("No instances of this directory are running (the API was just asked).")
        for line in _storage_lines(project, settings):
            _say(line)
        return 0
    _say(f"{'PROVIDER':11} {'NAME':20} {'TYPE':22} {'REGION':16} {'STATUS':12} {'UPTIME':>8} {'$/H':>7} {'COST':>8}")
    for name, i, up, cost in rows:
        _say(f"{name:11} {i.name[:20]:20} {i.instance_type:22} {i.region:16} {i.status:12} "
             f"{_duration(up):>8} {i.price_per_hour:7.2f} {cost:8.2f}")
    _say(f"Total: ${sum(r[1].price_per_hour for r in rows):.2f}/h, ${sum(r[3] for r in rows):.2f} so far")
    for line in _storage_lines(project, settings):
        _say(line)
    from kcloud.launch import watchdog
    started = min((time.time() - r[2] for r in rows), default=None)
    line = watchdog.status_line(project.state_dir, spent=sum(r[3] for r in rows), started=started)
    if line:
        _say(line)
    return 0


def _started(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).replace(tzinfo=timezone.utc).timestamp() if iso else None
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


# -- ssh keys ---------------------------------------------------------------------------
def cmd_ssh_key(args) -> int:
    project = Project.here()
    settings = _settings(project)
    provider_name = args.provider or settings.provider
    name, _private, public = sshkeys.local_key(project, settings)
    if settings.ssh_key_unique and provider_name != settings.provider:
        name = project.unique_key_name(providers.data(provider_name)["name"])
    if args.action == "ensure":
        _say(f"SSH key {name}: {public}")
        return 0
    provider = providers.get(provider_name)
    with project.lock(f"ssh-key {args.action}"):
        if args.action == "setup":
            key = sshkeys.ensure_uploaded(provider, name, public.read_text(errors="replace"))
            _say(f"{provider.title}: SSH key {key.name} ({key.id}) is in the account")
        else:
            if not settings.ssh_key_unique:
                raise errors.ConfigError("shared-key mode: kcloud does not delete the shared key",
                                         hint=f"delete it with scripts/{provider_name}_ssh_keys.py delete {name}")
            _say(f"{provider.title}: removed {sshkeys.remove(provider, name)} key(s) named {name}")
    return 0


def _wait_arg(text: str) -> float:
    import argparse
    try:
        return parse_duration(text, "WAIT")
    except errors.ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.line()) from None


argparse_SUPPRESS = "==SUPPRESS=="


def register(sub) -> None:
    b = sub.add_parser("bringup", help="provision per .config and prepare the hosts")
    b.add_argument("--ansible-verbosity", type=int, default=None)
    b.add_argument("--wait", type=_wait_arg, default=None, metavar="DURATION",
                   help="wait this long for capacity (30s, 90m, 6h; 0 = do not wait); default from .config")
    b.add_argument("--replace", action="store_true",
                   help="terminate this directory's running machine if .config now asks for another")
    b.set_defaults(func=cmd_bringup)
    d = sub.add_parser("destroy", help="tear down everything this directory launched")
    d.add_argument("--check-clean", action="store_true", help="only check that nothing is running")
    d.add_argument("--by-watchdog", action="store_true", help=argparse_SUPPRESS)
    d.set_defaults(func=cmd_destroy)
    sub.add_parser("status", help="this directory's instances and their cost").set_defaults(func=cmd_status)
    ds = sub.add_parser("destroy-storage", help="remove the storage destroy keeps, after showing its size and cost")
    ds.add_argument("--yes", action="store_true", help="do not ask (needed without a terminal)")
    ds.set_defaults(func=cmd_destroy_storage)
    k = sub.add_parser("ssh-key", help="the project's SSH key: ensure (local), setup (upload), clean")
    k.add_argument("action", choices=["ensure", "setup", "clean"])
    k.add_argument("--provider")
    k.set_defaults(func=cmd_ssh_key)
