"""`make` alone (after the Makefile's .venv install): get this directory ready for bringup.

With a .config: create the directory's SSH key (sshkeys.local_key, as bringup would), install
kcloud's terraform provider and run `terraform init` for the configured cloud (offline, as
bringup would), and report the tools bringup runs; every line says what was done or found.
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


def register(sub) -> None:
    p = sub.add_parser("prepare", help="what `make` does: the directory's SSH key and what bringup installs")
    p.set_defaults(func=cmd_prepare)
