"""CLI subcommands: cloud-config, clean-cloud-config, menuconfig, olddefconfig, savedefconfig,
defconfig, and `<provider> generate-kconfig`. Each returns an exit code; local mistakes
raise ConfigError (the CLI prints one `error: ...` line and exits 1)."""
from __future__ import annotations

import os
import re
import sys

from kcloud import providers
from kcloud.errors import ConfigError

TYPE_CHECKING = False   # pathlib is imported where used: the Kconfig targets do without it
if TYPE_CHECKING:
    from pathlib import Path


def _tree():
    from kcloud.kconfig import paths
    return paths.srctree()


def _rel(p: Path, tree: Path) -> str:
    from pathlib import Path
    try:
        return str(Path(p).relative_to(tree))
    except ValueError:
        return str(p)


def _print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)


# -- cloud-config ---------------------------------------------------------------------------
def _regenerate_defaults(names: list[str], as_json: bool = False) -> int:
    from kcloud.kconfig import generate
    tree = _tree()
    written = [_rel(p, tree) for p in generate.regenerate_defaults(tree, names)]
    if as_json:
        import json
        print(json.dumps({"providers": names, "ok": True, "written": written}, indent=2))
    for rel in [] if as_json else written:
        print(f"wrote {rel}")
    return 0


def _cloud_config(names: list[str], as_json: bool = False) -> int:
    from kcloud.kconfig import generate
    tree = _tree()
    outcomes = generate.refresh(tree, names)
    if as_json:      # `lambda-cli --output json generate-kconfig`: one document, failures included
        import json
        print(json.dumps([{"provider": o.provider, "ok": o.ok, "message": o.line,
                           "written": [_rel(p, tree) for p in o.written]} for o in outcomes], indent=2))
    for o in [] if as_json else outcomes:
        print(o.line, file=sys.stdout if o.ok else sys.stderr, flush=True)
    return 0 if all(o.ok for o in outcomes) else 1


def cmd_cloud_config(args) -> int:
    names = [args.provider] if args.provider else providers.names()
    return _regenerate_defaults(names) if args.offline else _cloud_config(names)


def cmd_generate_kconfig(args) -> int:
    as_json = getattr(args, "output", "text") == "json"
    return (_regenerate_defaults([args.provider], as_json) if args.offline
            else _cloud_config([args.provider], as_json))


def cmd_clean_cloud_config(args) -> int:
    from kcloud.kconfig import generate
    tree = _tree()
    removed = generate.clean(tree, [args.provider] if args.provider else None)
    for p in removed:
        print(f"removed {_rel(p, tree)}")
    if not removed:
        print("no generated fragments; the shipped defaults are in use")
    return 0


# -- kconfiglib targets ---------------------------------------------------------------------
def defconfig(name: str, sets=(), config_path=None, tree=None):
    """In-process `make defconfig-<name>` (what the benchmark times); returns kbuild.Result."""
    from kcloud.kconfig import kbuild
    return kbuild.defconfig(name, sets, tree=tree, config=config_path)


# `make defconfig-<name> VAR=value` settings: GNU make exports command-line variables to the
# recipe's environment, so the Makefile never pastes them into a shell command; they are read
# here, checked, and applied like --set (which still works, and wins).
ENV_SETS = ("KDEVOPS_HOSTS_PREFIX", "KNLP", "SSH_CONFIG_PORT", "SSH_CONFIG_USER")
# kdevops merges fragments as "<base>+<fragment>" (kbuild._defconfig_paths); "+" is not a shell character.
_DEFCONFIG_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._+-]*")
_SSH_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def _env_sets(environ=os.environ) -> list[str]:
    sets = []
    for var in ENV_SETS:
        value = environ.get(var, "")
        if not value:
            continue
        if var == "KNLP":
            knlp = {"1": "y", "y": "y", "yes": "y", "true": "y", "0": "n", "n": "n", "no": "n",
                    "false": "n"}.get(value.strip().lower())
            if knlp is None:
                raise ConfigError(f"KNLP={value[:40]!r}: expected 1 or 0")
            sets.append(f"WORKFLOW_KNLP={knlp}")
        else:
            sets.append(f"{var}={value}")
    return sets


def _check_sets(sets: list[str]) -> None:
    """One clear line for a bad host prefix or SSH user before anything is written (a port
    is checked by Kconfig's own int range)."""
    from kcloud.kconfig.config import _PREFIX
    from kcloud.kconfig.kbuild import parse_sets
    for name, value in parse_sets(sets):
        if name == "KDEVOPS_HOSTS_PREFIX" and not _PREFIX.fullmatch(value):
            raise ConfigError(f"KDEVOPS_HOSTS_PREFIX={value[:40]!r} is not usable in host names",
                              hint="use lower-case letters, digits and '-', at most 40, e.g. kn1")
        if name == "SSH_CONFIG_USER" and not _SSH_USER.fullmatch(value):
            raise ConfigError(f"SSH_CONFIG_USER={value[:40]!r} is not a user name",
                              hint="e.g. ubuntu: [a-z_][a-z0-9_-]*, at most 32")


def cmd_defconfig(args) -> int:
    from kcloud.kconfig import kbuild
    if not _DEFCONFIG_NAME.fullmatch(args.name):
        raise ConfigError(f"{args.name[:60]!r} is not a defconfig name", hint="make help lists them")
    sets = _env_sets() + list(args.set or ())
    _check_sets(sets)
    result = kbuild.defconfig(args.name, sets)
    _print_warnings(result.warnings)
    print(f"wrote {os.path.basename(result.config)} from defconfigs/{args.name} "
          f"(and {os.path.basename(result.extra_vars)})")
    return 0


def cmd_olddefconfig(args) -> int:
    from kcloud.kconfig import kbuild
    result = kbuild.olddefconfig()
    _print_warnings(result.warnings)
    print(f"updated {os.path.basename(result.config)} (and {os.path.basename(result.extra_vars)})")
    return 0


def cmd_savedefconfig(args) -> int:
    from kcloud.kconfig import kbuild
    result = kbuild.savedefconfig(output=args.output)
    _print_warnings(result.warnings)
    print(f"wrote minimal configuration to {result.config}")
    return 0


def cmd_menuconfig(args) -> int:
    from kcloud.kconfig import kbuild
    kbuild.menuconfig()
    return 0


class _Args:
    """What argparse would hand the command (see quick_args)."""

    def __init__(self, top: str, func, **values):
        self.debug, self.top, self.func = False, top, func
        self.__dict__.update(values)


def quick_args(argv: list[str]):
    """The parsed arguments of `defconfig NAME [--set SYM=VAL]...`, `olddefconfig`,
    `savedefconfig [--output FILE]` or `cloud-config [--provider NAME] [--offline]` when argv is
    exactly one of these plain forms (what make runs), else None: then the full argparse parser
    (register) handles it, help and errors included. Building that parser costs more than half
    of what the Kconfig targets do themselves, and delays cloud-config's first request."""
    if not argv:
        return None
    top, rest = argv[0], argv[1:]
    if top == "cloud-config":
        values = {"provider": None, "offline": False}
        while rest:
            if rest[0] == "--offline" and not values["offline"]:
                values["offline"], rest = True, rest[1:]
            elif rest[0] == "--provider" and values["provider"] is None and len(rest) > 1 \
                    and rest[1] in providers.names():
                values["provider"], rest = rest[1], rest[2:]
            else:
                return None
        return _Args(top, cmd_cloud_config, **values)
    if top == "olddefconfig":
        return _Args(top, cmd_olddefconfig) if not rest else None
    if top == "savedefconfig":
        if not rest:
            return _Args(top, cmd_savedefconfig, output=None)
        if len(rest) == 2 and rest[0] == "--output" and rest[1] and not rest[1].startswith("-"):
            return _Args(top, cmd_savedefconfig, output=rest[1])
        return None
    if top != "defconfig":
        return None
    names, sets, i = [], [], 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--":
            names += rest[i + 1:]
            break
        if arg == "--set" and i + 1 < len(rest) and rest[i + 1] and not rest[i + 1].startswith("-"):
            sets.append(rest[i + 1])
            i += 2
            continue
        if not arg or arg.startswith("-"):
            return None
        names.append(arg)
        i += 1
    if len(names) != 1:
        return None
    return _Args(top, cmd_defconfig, name=names[0], set=sets or None)


def register(sub) -> None:
    names = providers.names()
    cc = sub.add_parser("cloud-config", help="refresh Kconfig fragments from the providers' live APIs")
    cc.add_argument("--provider", choices=names, help="only this provider (default: all, concurrently)")
    cc.add_argument("--offline", action="store_true",
                    help="re-render the shipped .default fragments from the offline snapshot (no network)")
    cc.set_defaults(func=cmd_cloud_config)

    cl = sub.add_parser("clean-cloud-config", help="remove generated fragments (shipped defaults apply again)")
    cl.add_argument("--provider", choices=names)
    cl.set_defaults(func=cmd_clean_cloud_config)

    sub.add_parser("menuconfig", help="interactive configuration (kconfiglib)").set_defaults(func=cmd_menuconfig)
    sub.add_parser("olddefconfig", help="update .config to the current Kconfig, new symbols at defaults"
                   ).set_defaults(func=cmd_olddefconfig)
    sd = sub.add_parser("savedefconfig", help="write the minimal defconfig of .config to ./defconfig")
    sd.add_argument("--output", help="where to write it (default: ./defconfig)")
    sd.set_defaults(func=cmd_savedefconfig)

    dc = sub.add_parser("defconfig", help="load defconfigs/NAME into .config")
    dc.add_argument("name")
    dc.add_argument("--set", action="append", metavar="SYM=VAL",
                    help="override a symbol after loading, e.g. --set WORKFLOW_KNLP=y (repeatable)")
    dc.set_defaults(func=cmd_defconfig)


def register_provider(provider_subparsers, provider: str) -> None:
    g = provider_subparsers.add_parser("generate-kconfig",
                                       help="refresh this provider's Kconfig fragments from its live API")
    g.add_argument("--offline", action="store_true",
                   help="re-render the shipped .default fragments from the offline snapshot")
    g.set_defaults(func=cmd_generate_kconfig, provider=provider)
