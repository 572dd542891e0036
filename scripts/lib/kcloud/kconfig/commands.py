"""CLI subcommands: cloud-config, clean-cloud-config, menuconfig, olddefconfig, savedefconfig,
defconfig, and `<provider> generate-kconfig`. Each returns an exit code; local mistakes
raise ConfigError (the CLI prints one `error: ...` line and exits 1)."""
from __future__ import annotations

import sys
from pathlib import Path

from kcloud import providers


def _tree():
    from kcloud.kconfig import paths
    return paths.srctree()


def _rel(p: Path, tree: Path) -> str:
    try:
        return str(Path(p).relative_to(tree))
    except ValueError:
        return str(p)


def _print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)


# -- cloud-config ---------------------------------------------------------------------------
def _regenerate_defaults(names: list[str]) -> int:
    from kcloud.kconfig import generate
    tree = _tree()
    for p in generate.regenerate_defaults(tree, names):
        print(f"wrote {_rel(p, tree)}")
    return 0


def _cloud_config(names: list[str]) -> int:
    from kcloud.kconfig import generate
    outcomes = generate.refresh(_tree(), names)
    for o in outcomes:
        print(o.line, file=sys.stdout if o.ok else sys.stderr, flush=True)
    return 0 if all(o.ok for o in outcomes) else 1


def cmd_cloud_config(args) -> int:
    names = [args.provider] if args.provider else providers.names()
    return _regenerate_defaults(names) if args.offline else _cloud_config(names)


def cmd_generate_kconfig(args) -> int:
    return _regenerate_defaults([args.provider]) if args.offline else _cloud_config([args.provider])


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


def cmd_defconfig(args) -> int:
    from kcloud.kconfig import kbuild
    result = kbuild.defconfig(args.name, args.set or ())
    _print_warnings(result.warnings)
    print(f"wrote {result.config.name} from defconfigs/{args.name} (and {result.extra_vars.name})")
    return 0


def cmd_olddefconfig(args) -> int:
    from kcloud.kconfig import kbuild
    result = kbuild.olddefconfig()
    _print_warnings(result.warnings)
    print(f"updated {result.config.name} (and {result.extra_vars.name})")
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
