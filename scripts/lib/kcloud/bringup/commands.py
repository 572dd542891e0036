"""`make bringup`, `make destroy`, `make status` and the SSH key targets.

bringup: preflight -> live plan -> terraform apply (the kcloud provider fails over) ->
SSH config + inventory -> Ansible -> summary. destroy: terraform destroy, then reconcile
with what the API lists, so nothing this directory launched is left running.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from kcloud import errors, providers, tiers
from kcloud.bringup import hostfiles, sshkeys
from kcloud.bringup.journal import Journal
from kcloud.bringup.project import Project
from kcloud.providers.base import PENDING, ACTIVE, TERMINATED

REPO = Path(__file__).resolve().parents[4]


def _settings(project: Project):
    from kcloud.kconfig.config import load_settings
    return load_settings(project.root / ".config")


def _say(line: str = "") -> None:
    print(line, flush=True)


# -- ownership --------------------------------------------------------------------------
def owned_instances(provider, project: Project, settings=None) -> list:
    """Instances this directory launched: journalled ids, or our host name carrying our own key.
    A shared-prefix neighbour with another key is never touched."""
    events = Journal(project.journal_path).events()
    journal_ids = {e["id"] for e in events if e.get("id")}
    names = {e["name"] for e in events if e.get("name")}
    if settings is not None:
        names.add(settings.host_name)
    key_refs = {project.key_name} | {e["key_id"] for e in events if e.get("key_id")}
    found = []
    for inst in provider.instances():
        if inst.state == TERMINATED:
            continue
        if inst.id in journal_ids or (inst.name in names and key_refs & set(inst.keys)):
            found.append(inst)
    return found


# -- bringup ----------------------------------------------------------------------------
def preflight(settings, project: Project):
    """Every check that can fail before anything is launched; one clear line each."""
    from kcloud.tfprovider.runner import terraform_binary
    provider = providers.get(settings.provider)
    provider.credentials()                       # present, 0600, well formed
    terraform_binary()                           # raises with the fix when missing
    for tool, package in (("ssh-keygen", "openssh-client"), ("ssh", "openssh-client")):
        if not shutil.which(tool):
            raise errors.ConfigError(f"{tool} not found", hint=f"install {package}")
    if not (Path(sys.prefix) / "bin" / "ansible-playbook").exists() and not shutil.which("ansible-playbook"):
        raise errors.ConfigError("ansible-playbook not found", hint="run 'make' to install ansible-core into .venv")
    provider.ssh_keys()                          # the key is accepted by the API (AuthError otherwise)
    return provider


def cmd_bringup(args) -> int:
    project = Project.here()
    settings = _settings(project)
    with project.lock("bringup"):
        provider = preflight(settings, project)
        catalog = provider.catalog()             # fresh capacity: decide at launch time
        plan = tiers.plan(settings.provider, settings.selection, catalog)
        for line in tiers.trace(plan):
            _say(line)
        adopted = [i for i in owned_instances(provider, project, settings) if i.state in (PENDING, ACTIVE)]
        if not plan.candidates and not adopted:  # nothing launched, no key uploaded
            raise errors.CapacityError(f"{provider.name}: {tiers.no_capacity_advice(plan)}", provider=provider.name)

        name, private, public = sshkeys.local_key(project, settings)
        key = sshkeys.ensure_uploaded(provider, name, public.read_text().strip())
        journal = Journal(project.journal_path)
        journal.record({"event": "ssh-key", "provider": provider.name, "name": key.name, "key_id": key.id,
                        "unique": settings.ssh_genkey})

        from kcloud.tfprovider import runner
        tf = runner.Terraform(project.terraform_dir(settings.provider))
        vars_file = runner.render_tfvars(tf.root, name=settings.host_name, candidates=plan.candidates or [
                                             tiers.Candidate(i.instance_type, i.region, "adopted", i.price_per_hour)
                                             for i in adopted],
                                         ssh_key_id=key.id, ssh_key_name=key.name, image=settings.image,
                                         boot_timeout=settings.boot_timeout, journal_path=project.journal_path,
                                         progress_file=project.progress_path, cloud=settings.provider)
        _say("")
        _say(f"Provisioning {settings.host_name} on {provider.title} with terraform ...")
        try:
            with _tail(project.progress_path):
                tf.init()
                tf.apply(vars_file, on_line=_terraform_line)
        except BaseException:
            _forget_key_if_idle(provider, project, settings, key)
            raise
        out = tf.output()

        user = settings.ssh_user or provider.login_user
        host = hostfiles.Host(settings.host_name, out["ip"], user, settings.ssh_port, private)
        hostfiles.write(project, [host], settings.ssh_config_update)
        _say(f"SSH config: {project.ssh_config}" +
             (" (included from ~/.ssh/config)" if settings.ssh_config_update else ""))
        _run_ansible(project, settings, args.ansible_verbosity)

        _say("")
        _say(f"Ready: {settings.host_name} = {out['instance_type']} in {out['region']} "
             f"at ${float(out['price_per_hour']):.2f}/h")
        _say(f"  ssh {settings.host_name}" if settings.ssh_config_update else
             f"  ssh -F {project.ssh_config} {settings.host_name}")
        _say("  make destroy   # when you are done: stops the billing")
    return 0


def _forget_key_if_idle(provider, project: Project, settings, key) -> None:
    """A failed bringup leaves nothing behind: our unique key goes when no machine of ours runs."""
    if not settings.ssh_genkey:
        return
    try:
        if not owned_instances(provider, project, settings):
            sshkeys.remove(provider, key.name)
    except errors.KcloudError:
        pass   # journalled: `make destroy` removes it


class _tail:
    """Print the terraform provider's progress lines (status, elapsed) while apply runs."""

    def __init__(self, path: Path):
        self.path, self.stop = path, threading.Event()

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")
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


def _run_ansible(project: Project, settings, verbosity: int | None) -> None:
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.prefix) / "bin")) or "ansible-playbook"
    cmd = [playbook, "-i", str(project.inventory), str(REPO / "playbooks" / "bringup.yml"),
           "-e", f"kcloud_ssh_timeout={settings.ssh_timeout}"]
    if verbosity:
        cmd.append("-" + "v" * max(1, min(int(verbosity), 4)))
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "playbooks" / "ansible.cfg"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(project.state_dir / "ansible-tmp")}
    _say("Preparing the host with Ansible ...")
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
def cmd_destroy(args) -> int:
    project = Project.here()
    journal = Journal(project.journal_path)
    events = journal.events()
    try:
        settings = _settings(project)
        provider_names = {settings.provider}
    except errors.ConfigError:
        settings = None
        provider_names = set()
    provider_names |= {e["provider"] for e in events if e.get("provider")}
    if getattr(args, "check_clean", False):
        return _check_clean(project, provider_names, settings)
    with project.lock("destroy"):
        for name in sorted(provider_names):
            _destroy_provider(project, name, settings if settings and settings.provider == name else None, events)
        hostfiles.remove(project)
        journal.clear()
        project.progress_path.unlink(missing_ok=True)
    _say("Destroyed: nothing of this directory is left running.")
    return 0


def _destroy_provider(project: Project, name: str, settings, events: list[dict]) -> None:
    provider = providers.get(name)
    tf_dir = project.terraform_dir(name)
    if (tf_dir / "terraform.tfstate").exists():
        from kcloud.tfprovider import runner
        _say(f"{provider.title}: terraform destroy ...")
        try:
            runner.Terraform(tf_dir).destroy()
        except errors.KcloudError as exc:
            _say(f"  terraform destroy failed ({exc.line()}); reconciling through the API")
    leftovers = owned_instances(provider, project, settings)
    if leftovers:
        _say(f"{provider.title}: terminating {len(leftovers)} instance(s) terraform did not know about: "
             + ", ".join(f"{i.name} ({i.id})" for i in leftovers))
        Journal(project.journal_path).record({"event": "terminate", "provider": name, "ids": [i.id for i in leftovers]})
        provider.terminate([i.id for i in leftovers])
        _wait_gone(provider, [i.id for i in leftovers])
    unique_keys = {e["name"] for e in events if e.get("event") == "ssh-key" and e.get("unique")}
    if settings is not None and settings.ssh_genkey:
        unique_keys.add(project.key_name)
    for key_name in sorted(unique_keys):
        if sshkeys.remove(provider, key_name):
            _say(f"{provider.title}: removed SSH key {key_name}")


def _wait_gone(provider, ids: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [i for i in provider.instances() if i.id in ids and i.state != TERMINATED]
        if not alive:
            return
        time.sleep(1)
    raise errors.TransientError(f"{provider.name}: still terminating after {timeout:.0f} s: "
                                + ", ".join(i.id for i in alive), hint="run 'make destroy' again")


def _check_clean(project: Project, provider_names: set[str], settings) -> int:
    left = [i for n in provider_names for i in owned_instances(providers.get(n), project, settings)]
    if left:
        raise errors.KcloudError(f"{len(left)} instance(s) of this directory are still running",
                                 hint="run 'make destroy' first")
    return 0


# -- status -----------------------------------------------------------------------------
def cmd_status(args) -> int:
    project = Project.here()
    try:
        settings = _settings(project)
        names = {settings.provider}
    except errors.ConfigError:
        settings, names = None, set()
    names |= {e["provider"] for e in Journal(project.journal_path).events() if e.get("provider")}
    launched = {e.get("id"): e["time"] for e in Journal(project.journal_path).events() if e.get("event") == "launched"}
    rows = []
    for name in sorted(names):
        for inst in owned_instances(providers.get(name), project, settings):
            started = _started(inst.created_at) or launched.get(inst.id)
            uptime = time.time() - started if started else 0
            rows.append((name, inst, uptime, inst.price_per_hour * uptime / 3600))
    if not rows:
        _say("No instances of this directory are running.")
        return 0
    _say(f"{'PROVIDER':11} {'NAME':20} {'TYPE':22} {'REGION':16} {'STATUS':12} {'UPTIME':>8} {'$/H':>7} {'COST':>8}")
    for name, i, up, cost in rows:
        _say(f"{name:11} {i.name[:20]:20} {i.instance_type:22} {i.region:16} {i.status:12} "
             f"{_duration(up):>8} {i.price_per_hour:7.2f} {cost:8.2f}")
    _say(f"Total: ${sum(r[1].price_per_hour for r in rows):.2f}/h, ${sum(r[3] for r in rows):.2f} so far")
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
    if args.action == "ensure":
        _say(f"SSH key {name}: {public}")
        return 0
    provider = providers.get(provider_name)
    with project.lock(f"ssh-key {args.action}"):
        if args.action == "setup":
            key = sshkeys.ensure_uploaded(provider, name, public.read_text().strip())
            _say(f"{provider.title}: SSH key {key.name} ({key.id}) is in the account")
        else:
            if not settings.ssh_genkey:
                raise errors.ConfigError("shared-key mode: kcloud does not delete the shared key",
                                         hint=f"delete it with scripts/{provider_name}_ssh_keys.py delete {name}")
            _say(f"{provider.title}: removed {sshkeys.remove(provider, name)} key(s) named {name}")
    return 0


def register(sub) -> None:
    b = sub.add_parser("bringup", help="provision per .config and prepare the hosts")
    b.add_argument("--ansible-verbosity", type=int, default=None)
    b.set_defaults(func=cmd_bringup)
    d = sub.add_parser("destroy", help="tear down everything this directory launched")
    d.add_argument("--check-clean", action="store_true", help="only check that nothing is running")
    d.set_defaults(func=cmd_destroy)
    sub.add_parser("status", help="this directory's instances and their cost").set_defaults(func=cmd_status)
    k = sub.add_parser("ssh-key", help="the project's SSH key: ensure (local), setup (upload), clean")
    k.add_argument("action", choices=["ensure", "setup", "clean"])
    k.add_argument("--provider")
    k.set_defaults(func=cmd_ssh_key)
