"""`make preflight` / `kcloud doctor [--output json]`: every check bringup makes, changing nothing.

One line per check, ✓ or ✗ (– when a check cannot run because an earlier one failed), each ✗
with its fix; exit 1 when any check fails. The checks call the same pieces bringup's
preflight calls (kcloud.bringup.commands), one at a time, so every problem is listed at once
instead of bringup stopping at the first:

  .config        valid (kconfig.config.load_settings, as bringup reads it)
  tools          terraform, Ansible, ssh, ssh-keygen, rsync: present, with versions
  credentials    per configured provider: present, 0600 (credentials.load), accepted by the API
  SSH key        the directory's key on disk, and in the account (same public key, or absent:
                 bringup uploads it)
  capacity       a live plan: what bringup would launch now, or that nothing would

Nothing is written: no key is generated, no identity created, nothing uploaded or launched.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from kcloud import errors, providers

CHECK, CROSS, SKIP = "\u2713", "\u2717", "\u2013"
SSH_PACKAGE = "openssh-client"


@dataclass
class Check:
    name: str
    ok: bool | None          # None: not run (an earlier check it needs failed)
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = CHECK if self.ok else SKIP if self.ok is None else CROSS
        return f"{mark} {self.name}: {self.detail}" + (f"; fix: {self.fix}" if self.fix and not self.ok else "")


def _failed(name: str, exc: errors.KcloudError, provider: str = "") -> Check:
    text = str(exc)
    if provider and text.startswith(f"{provider}: "):       # the check's name says it already
        text = text[len(provider) + 2:]
    return Check(name, False, text, exc.hint)


def _home(path: Path | str) -> str:
    text, home = str(path), os.path.expanduser("~")
    return "~" + text[len(home):] if home not in ("", "/") and text.startswith(home + "/") else text


def _run(cmd: list[str], timeout: float = 20) -> str:
    """stdout + stderr of a version command ('' when it cannot run)."""
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "LC_ALL": "C"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (proc.stdout + proc.stderr).strip()


# -- tools --------------------------------------------------------------------------------
def _install_hint(package: str) -> str:
    return f"sudo apt-get install {package}" if shutil.which("apt-get") else f"install {package}"


def check_terraform() -> Check:
    from kcloud.tfprovider.install import terraform_binary
    try:
        binary = terraform_binary()
    except errors.KcloudError as exc:
        return _failed("terraform", exc)
    out = _run([binary, "version"])
    m = re.search(r"(Terraform|OpenTofu) v(\d+\.\d+\.\d+\S*)", out)
    if not m:
        return Check("terraform", False, f"{binary} does not run ('{binary} version' said: {out[:80]!r})",
                     "run 'make' to reinstall .venv, or set TERRAFORM=/path/to/terraform or tofu")
    return Check("terraform", True, f"{m.group(1)} {m.group(2)} ({_home(binary)})")


def check_ansible() -> Check:
    venv_playbook = Path(sys.prefix) / "bin" / "ansible-playbook"
    playbook = str(venv_playbook) if venv_playbook.exists() else shutil.which("ansible-playbook")
    if not playbook:
        return Check("Ansible", False, "ansible-playbook not found", "run 'make' to install ansible-core into .venv")
    version = ""
    if venv_playbook.exists():
        from importlib import metadata
        try:
            version = metadata.version("ansible-core")
        except metadata.PackageNotFoundError:
            pass
    if not version:
        m = re.search(r"core (\d+\.\d+\.\d+\S*)", _run([playbook, "--version"], timeout=60))
        version = m.group(1).rstrip("]") if m else "version unknown"
    return Check("Ansible", True, f"ansible-core {version} ({_home(playbook)})")


def _openssh_version(ssh: str) -> str:
    m = re.search(r"OpenSSH_[^\s,]+", _run([ssh, "-V"]))
    return m.group(0) if m else "version unknown"


def check_ssh_tools() -> list[Check]:
    checks = []
    ssh = shutil.which("ssh")
    version = _openssh_version(ssh) if ssh else ""
    for tool in ("ssh", "ssh-keygen"):
        path = shutil.which(tool)
        if not path:
            checks.append(Check(tool, False, "not found", _install_hint(SSH_PACKAGE)))
            continue
        same = ssh and Path(path).parent == Path(ssh).parent
        # ssh-keygen has no version option: it comes with ssh, from the same OpenSSH
        checks.append(Check(tool, True, f"{version if tool == 'ssh' or same else 'OpenSSH'} ({path})"))
    return checks


def check_rsync() -> Check:
    path = shutil.which("rsync")
    if not path:
        return Check("rsync", False, "not found", _install_hint("rsync"))
    m = re.search(r"version\s+(\S+)", _run([path, "--version"]))
    return Check("rsync", True, f"{m.group(1) if m else 'version unknown'} ({path})")


def tool_checks() -> list[Check]:
    return [check_terraform(), check_ansible(), *check_ssh_tools(), check_rsync()]


# -- configuration, provider, key, capacity -----------------------------------------------
def check_config(project) -> tuple[Check, object | None]:
    from kcloud.bringup.commands import _settings
    path = project.root / ".config"
    if not path.is_file():
        return Check(".config", False, f"no .config in {project.root}",
                     "load one with make defconfig-<name> (make help lists them)"), None
    try:
        settings = _settings(project)
    except errors.KcloudError as exc:
        return _failed(".config", exc), None
    sel = settings.selection
    what = {"group": "tier group", "wildcard": "wildcard", "cheapest": "cheapest GPU", "type": "instance type"}
    value = sel.value.lower().replace("_", "-") if sel.kind in ("group", "wildcard") else sel.value
    asked = f"{what.get(sel.kind, sel.kind)} {value}".strip()
    detail = (f"{settings.provider}, {asked}, {('region ' + sel.region) if sel.region else 'any region'}"
              + (f", at most ${sel.max_price:.2f}/h" if sel.max_price is not None else "")
              + f", host {settings.host_name}")
    return Check(".config", True, detail), settings


def check_credentials(provider) -> Check:
    from kcloud import credentials
    name = f"{provider.name} credentials"
    spec = providers.credential_spec(provider.name)
    try:
        values = credentials.load(spec)
    except errors.KcloudError as exc:
        return _failed(name, exc, provider.name)
    from_env = [spec.env[f] for f in values if f in spec.env and os.environ.get(spec.env[f])]
    from_file = [f for f in values if not (f in spec.env and os.environ.get(spec.env[f]))]
    where = []
    if from_file:
        mode = spec.path.stat().st_mode & 0o777
        where.append(f"{', '.join(from_file)} from {_home(spec.path)} (mode {mode:04o})")
    if from_env:
        where.append(f"from {', '.join(from_env)}")
    return Check(name, True, "; ".join(where))


def check_api(provider) -> tuple[Check, list | None]:
    name = f"{provider.name} API"
    try:
        keys = provider.ssh_keys()
    except errors.KcloudError as exc:
        return _failed(name, exc, provider.name), None
    return Check(name, True, f"accepts the credentials ({provider.base_url}, {len(keys)} SSH keys in the "
                             "account)"), keys


def _local_key(project, settings) -> tuple[str | None, Path, Path]:
    """(key name in the account, private, public) as sshkeys.local_key names them, creating
    nothing: no key pair, no directory identity (the name is None until there is one)."""
    public = Path(settings.pubkey_file).expanduser()
    private = Path(settings.private_key_file).expanduser()
    name = project.known_key_name(settings.provider) if settings.ssh_key_unique else settings.ssh_key_name
    return name, private, public


def check_local_key(project, settings) -> Check:
    """What sshkeys.local_key would find: the pair, or that it may (or may not) generate one."""
    name, private, public = _local_key(project, settings)
    if private.is_file() and public.is_file():
        return Check("SSH key", True, f"{_home(private)}" + (f" ({name})" if name else ""))
    if private.exists() != public.exists():
        return Check("SSH key", False, f"key pair incomplete: {_home(private if private.exists() else public)} "
                                       "exists without its other half", "remove it or restore the pair")
    if not settings.ssh_key_generate:
        return Check("SSH key", False, f"{_home(public)} not found and key generation is off",
                     "create it, or set CONFIG_TERRAFORM_SSH_CONFIG_GENKEY=y (make menuconfig)")
    return Check("SSH key", True, f"{_home(private)} not created yet: make (or bringup) creates it")


def check_account_key(provider, project, settings, keys: list) -> Check:
    """What sshkeys.ensure_uploaded would do with the listed keys: use ours, upload it, or stop."""
    from kcloud.bringup.sshkeys import _same_key
    check_name = f"SSH key in the {provider.name} account"
    name, _private, public = _local_key(project, settings)
    if not name or not public.is_file():
        return Check(check_name, True, "bringup uploads the key it creates")
    mine = [k for k in keys if k.name == name]
    same = [k for k in mine if _same_key(k.public_key, public.read_text(errors="replace"))]
    if same:
        return Check(check_name, True, f"{name} ({same[0].id})")
    if mine:
        return Check(check_name, False, f"a key named {name} holds a different public key",
                     f"delete it (scripts/{provider.name}_ssh_keys.py delete {name}) or use another key name")
    if not settings.ssh_key_auto_create:
        return Check(check_name, False, f"no key named {name}, and uploading it is off",
                     f"upload it (make {provider.name}-ssh-setup) or set "
                     f"CONFIG_TERRAFORM_{provider.name.upper()}_SSH_KEY_AUTO_CREATE=y")
    return Check(check_name, True, f"{name} not there yet (bringup uploads it)")


def check_capacity(provider, project, settings) -> Check:
    """bringup's decision now: adopt our machine, refuse one .config no longer describes, launch
    the first candidate of a live plan, or nothing (kcloud.bringup.commands' own helpers)."""
    from kcloud import tiers
    from kcloud.bringup.commands import _not_what_config_asks, owner_of
    from kcloud.providers.base import ACTIVE, PENDING
    name = "capacity now"
    try:
        owner = owner_of(project, provider, settings)
        running = [i for i in provider.instances() if i.state in (PENDING, ACTIVE) and owner.owns(i)]
        catalog = provider.catalog()
        plan = tiers.plan(settings.provider, settings.selection, catalog)
        stale = _not_what_config_asks(settings, catalog, running)
    except errors.KcloudError as exc:
        return _failed(name, exc, provider.name)
    if stale:
        what = "; ".join(f"{i.name} = {i.instance_type} in {i.region}" for _p, i in stale)
        return Check(name, False, f"already running for this directory and not what .config asks: {what}",
                     "make destroy first, or make bringup REPLACE=1 to replace it")
    adopted = [i for i in running if i.name == settings.host_name]
    if adopted:
        i = adopted[0]
        return Check(name, True, f"{i.name} already runs ({i.instance_type} in {i.region}, {i.id}): "
                                 "bringup adopts it, nothing new is launched")
    if not plan.candidates:
        return Check(name, False, f"nothing would be launched: {tiers.no_capacity_advice(plan)}",
                     "wait and rerun make preflight, or choose a wider tier group (make menuconfig)")
    first = plan.candidates[0]
    more = len(plan.candidates) - 1
    return Check(name, True, f"would launch {first.instance_type} in {first.region} at ${first.price:.2f}/h "
                             f"(tier {first.tier})" + (f"; {more} fallback candidates" if more else ""))


def run_checks(project) -> list[Check]:
    config, settings = check_config(project)
    checks = [config, *tool_checks()]
    if settings is None:
        checks.append(Check("provider", None, "credentials, API, SSH key and capacity need a valid .config"))
        return checks
    provider = providers.get(settings.provider)
    creds = check_credentials(provider)
    checks.append(creds)
    api, keys = check_api(provider) if creds.ok else (Check(f"{provider.name} API", None, "needs the credentials"),
                                                       None)
    checks += [api, check_local_key(project, settings)]
    if keys is None:
        checks += [Check(f"SSH key in the {provider.name} account", None, "needs the API"),
                   Check("capacity now", None, "needs the API")]
        return checks
    checks += [check_account_key(provider, project, settings, keys), check_capacity(provider, project, settings)]
    return checks


def cmd_doctor(args) -> int:
    from kcloud.bringup.project import Project
    project = Project.here()
    checks = run_checks(project)
    failed = [c for c in checks if c.ok is False]
    if args.output == "json":
        import json
        print(json.dumps({"project": str(project.root), "ok": not failed, "checks": [asdict(c) for c in checks]},
                         indent=2))
    else:
        print(f"Preflight for {project.root} (nothing is changed):")
        for c in checks:
            print(c.line())
        print(f"{len(failed)} problem{'s' * (len(failed) != 1)}: make bringup would stop at the first"
              if failed else "Ready: make bringup")
    return 1 if failed else 0


def register(sub) -> None:
    d = sub.add_parser("doctor", help="every check bringup makes, changing nothing (make preflight)")
    d.add_argument("--output", choices=["text", "json"], default="text")
    d.set_defaults(func=cmd_doctor)
