"""`make` alone (after the Makefile's .venv install): get this directory ready for bringup.

With a .config: create the directory's SSH key (sshkeys.local_key, as bringup would), install
kcloud's terraform provider and run `terraform init` for the configured cloud (offline, as
bringup would), write terraform/<provider>/terraform.tfvars from .config (offline: see
offline_tfvars) so that seed 000's `cd terraform/lambdalabs; terraform init; terraform
validate; terraform plan` works as typed, and report the tools bringup runs; every line says
what was done or found.
Without one: say which `make defconfig-...` to run, and exit 0.
Nothing here talks to a cloud API: `make preflight` checks credentials, API and capacity.
"""
from __future__ import annotations

import os
from pathlib import Path

from kcloud.bringup.doctor import CHECK, Check, _home, tool_checks

# Good first choices, shown when there is no .config (those present in defconfigs/).
SUGGESTED = ("lambdalabs-h100-or-less", "lambdalabs", "lambdalabs-8x-h100-or-less",
             "datacrunch-h100-pytorch-or-less", "datacrunch-b300-or-less")


def _description(path: Path) -> str:
    """A defconfig's first comment line, e.g. 'Lambda Cloud: best single GPU up to H100 (...)'."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline().strip()
    except OSError:
        return ""
    return first.lstrip("#").strip() if first.startswith("#") else ""


def suggestions(root: Path) -> list[tuple[str, str]]:
    return [(name, _description(root / "defconfigs" / name)) for name in SUGGESTED
            if (root / "defconfigs" / name).is_file()]


def no_config(root: Path) -> int:
    print(f"No .config in {root} yet: choose what to launch first, for example")
    for name, text in suggestions(root):
        target = f"make defconfig-{name}"
        print(f"  {target:48} {text}")
    print("make help lists every defconfig; make cloud-config first puts live prices and capacity in the menus.")
    return 0


def cmd_prepare(args) -> int:
    from kcloud.bringup import sshkeys
    from kcloud.bringup.commands import _settings
    from kcloud.bringup.project import Project
    project = Project.here()
    if not (project.root / ".config").is_file():
        return no_config(project.root)
    settings = _settings(project)
    print(f"Preparing {project.root} for {settings.provider} (host {settings.host_name}):")

    existed = Path(settings.private_key_file).expanduser().is_file()
    name, private, public = sshkeys.local_key(project, settings)      # generates it if missing
    print(f"{CHECK} SSH key: {'found' if existed else 'created'} {_home(private)} ({name})")

    from kcloud.tfprovider import runner
    tf = runner.Terraform(project.terraform_dir(settings.provider))
    ran = tf.init()
    where = os.path.relpath(tf.root, project.root)
    print(f"{CHECK} terraform provider: kcloud's installed in terraform/.plugins, " +
          (f"terraform init done in {where}" if ran else f"{where} already initialised"))
    print(offline_tfvars(project, settings, tf.root, public))
    from kcloud.tfprovider import install
    blocked = install.implied_mirror_blocked(tf.terraform_dir)
    if blocked:
        print(f"! terraform typed by hand in {where}: {blocked}")

    missing: list[Check] = []
    for check in tool_checks():
        print(check.line())
        missing += [check] if check.ok is False else []
    if missing:
        print(f"Install {'it' if len(missing) == 1 else 'them'} as shown; then make preflight (credentials, API, "
              "capacity) and make bringup.")
    else:
        print("Next: make preflight (credentials, API, capacity), then make bringup.")
    return 0


# The first line of a terraform.tfvars `make` wrote (bringup's says "make bringup").
PREPARE_ORIGIN = ("make, offline: capacity is unknown here, so each instance type .config admits is listed "
                  "once, in its closest region; make bringup rewrites this file from live capacity")


def offline_tfvars(project, settings, root: Path, public: Path) -> str:
    """Write root/terraform.tfvars from .config without asking any API, unless make bringup
    wrote the one there (it describes what runs). Returns the line to print."""
    from kcloud import errors, providers, tiers
    from kcloud.catalog import Catalog
    from kcloud.tfprovider import tfvars
    path = root / "terraform.tfvars"
    try:
        first = path.read_text(errors="replace").split("\n", 1)[0] if path.exists() else ""
    except OSError:
        first = ""
    rel = os.path.relpath(path, project.root)
    if first and "(make, offline" not in first:
        return f"{CHECK} {rel}: kept (make bringup wrote it from live capacity)"
    snap = providers.snapshot(settings.provider)
    assumed = Catalog(settings.provider, snap.types, snap.regions, {n: tuple(snap.regions) for n in snap.types},
                      snap.images, source="offline snapshot, capacity assumed")
    try:
        plan = tiers.plan(settings.provider, settings.selection, assumed)
    except errors.KcloudError as exc:
        return f"! {rel}: not written ({exc.line()})"
    seen, candidates = set(), []
    for c in plan.candidates:                 # each type once, in its closest region
        if c.instance_type not in seen:
            seen.add(c.instance_type)
            candidates.append(c)
    if not candidates:
        return f"! {rel}: not written (nothing in the offline catalog matches .config; make bringup plans live)"
    tfvars.write(path, cloud=settings.provider, name=settings.host_name, candidates=candidates,
                 ssh_key_name=settings.ssh_key_name, ssh_public_key_file=public, image=settings.image,
                 boot_timeout=settings.boot_timeout, journal_path=project.journal_path,
                 progress_file=project.progress_path, owner=project.identity(create=True) or "",
                 origin=PREPARE_ORIGIN)
    return (f"{CHECK} {rel}: written from .config, offline ({len(candidates)} candidate types; "
            "make bringup rewrites it from live capacity)")


def register(sub) -> None:
    p = sub.add_parser("prepare", help="what `make` does: the directory's SSH key and what bringup installs")
    p.set_defaults(func=cmd_prepare)
