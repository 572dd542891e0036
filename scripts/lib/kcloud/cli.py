"""`kcloud`: the one command line. The seed-documented scripts are symlinks to scripts/kcloud,
dispatched here by the name they were called with (see ALIASES).

Start-up cost is paid per command: `main` imports only the module that registers the command
being run (COMMANDS); `--help` lists every command from the table without importing any, and
the Kconfig targets (LOCAL) never import the HTTP stack, Jinja2, PyYAML, terraform or logging.
"""
from __future__ import annotations

import importlib
import os
import sys

from kcloud import errors, providers


def redact(text: str) -> str:
    """kcloud.redact.redact, imported when an error is printed (the Kconfig targets do without it)."""
    from kcloud.redact import redact as _redact
    return _redact(text)


# script name -> the kcloud arguments it stands for
ALIASES = {
    "lambda-cli": ["lambdalabs"],
    "generate_cloud_configs.py": ["cloud-config"],
    "extract_api_key.py": ["lambdalabs", "credentials", "extract"],   # seed 000's table
}
for _p in providers.names():
    ALIASES.update({
        f"{_p}_api.py": [_p, "generate-kconfig"],
        f"{_p}_ssh_key_name.py": [_p, "ssh-key-name"],
        f"{_p}_check_capacity.py": [_p, "check-capacity"],
        f"{_p}_select_tier.py": [_p, "select-tier"],
        f"{_p}_smart_inference.py": [_p, "smart-select"],
        f"{_p}_ssh_keys.py": [_p, "ssh-keys"],
        f"{_p}_list_instances.py": [_p, "list-instances"],
        f"{_p}_credentials.py": [_p, "credentials"],
    })

# Top-level command -> (module whose register(subparsers) adds it, its one-line help).
# The help is what `kcloud --help` lists without importing the module; a test checks that it
# matches what register() says, and that every registered command is here.
COMMANDS = {
    "cloud-config": ("kcloud.kconfig.commands", "refresh Kconfig fragments from the providers' live APIs"),
    "clean-cloud-config": ("kcloud.kconfig.commands", "remove generated fragments (shipped defaults apply again)"),
    "menuconfig": ("kcloud.kconfig.commands", "interactive configuration (kconfiglib)"),
    "olddefconfig": ("kcloud.kconfig.commands", "update .config to the current Kconfig, new symbols at defaults"),
    "savedefconfig": ("kcloud.kconfig.commands", "write the minimal defconfig of .config to ./defconfig"),
    "defconfig": ("kcloud.kconfig.commands", "load defconfigs/NAME into .config"),
    "bringup": ("kcloud.bringup.commands", "provision per .config and prepare the hosts"),
    "destroy": ("kcloud.bringup.commands", "tear down everything this directory launched"),
    "status": ("kcloud.bringup.commands", "this directory's instances and their cost"),
    "destroy-storage": ("kcloud.bringup.commands", "remove the storage destroy keeps, after showing its size and cost"),
    "ssh-key": ("kcloud.bringup.commands", "the project's SSH key: ensure (local), setup (upload), clean"),
    "cost": ("kcloud.bringup.cost", "every instance this directory launched: launch price, billed time, "
                                    "cost (--all: every directory)"),
    "cloud-list-all": ("kcloud.bringup.orphans", "everything in the accounts that carries kcloud's marks, "
                                                 "by owning directory, with cost so far"),
    "orphans": ("kcloud.bringup.orphans", "what deleted kcloud directories left in the accounts "
                                          "(--terminate --yes removes it)"),
    "doctor": ("kcloud.bringup.doctor", "every check bringup makes, changing nothing (make preflight)"),
    "prepare": ("kcloud.bringup.prepare", "what `make` does: the directory's SSH key and what bringup installs"),
    "offers": ("kcloud.offers", "merged live offers of every provider: GPUs, VRAM, $/h, billing, capacity"),
    "job": ("kcloud.jobs.commands", "run work on the machines: job submit|list|status|logs|fetch|cancel"),
    "watchdog": ("kcloud.launch.watchdog", "the dead-man's switch of KCLOUD_MAX_LIFETIME / KCLOUD_MAX_SPEND"),
    "demo": ("kcloud.demo", "the main job end to end on the bundled emulator"),
    "bench": ("kcloud.bench", "benchmarks that print figures"),
}
# Commands that never talk to an API: no logging set-up (importing logging alone costs ~4 ms).
LOCAL = {"clean-cloud-config", "menuconfig", "olddefconfig", "savedefconfig", "defconfig"}
# The Kconfig targets make runs: their plain forms skip argparse (kconfig.commands.quick_args).
QUICK = {"olddefconfig", "savedefconfig", "defconfig", "cloud-config"}
EMULATOR_HELP = "serve both provider APIs on 127.0.0.1 (emulator --help)"


def _json(args) -> bool:
    """`--output json` (any provider subcommand: `lambda-cli --output json ...`) or `--json`."""
    return getattr(args, "output", "text") == "json" or getattr(args, "json", False)


def _out(args, obj, text_lines):
    if _json(args):
        import json
        print(json.dumps(obj, indent=2))
    else:
        print("\n".join(text_lines))


def _client(args):
    return providers.get(args.provider)


# -- provider commands ------------------------------------------------------------------
def cmd_instance_types(args) -> int:
    p = _client(args)
    cat = p.catalog()
    rows = []
    for t in sorted(cat.types.values(), key=lambda t: (t.price_per_hour, t.name)):
        regions = cat.available_regions(t.name)
        if args.region:
            regions = tuple(r for r in regions if r == args.region)
        if args.available_only and not regions:
            continue
        rows.append({"name": t.name, "gpu": t.gpu, "gpus": t.gpu_count, "gpu_memory_gb": t.gpu_memory_gb,
                     "vcpus": t.vcpus, "memory_gb": t.memory_gb, "price_per_hour": t.price_per_hour,
                     "regions_with_capacity": list(regions)})
    lines = [f"{'TYPE':26} {'GPU':26} {'$/h':>7}  REGIONS WITH CAPACITY"]
    lines += [f"{r['name']:26} {r['gpu'][:26]:26} {r['price_per_hour']:7.2f}  "
              f"{', '.join(r['regions_with_capacity']) or '-'}" for r in rows]
    _out(args, rows, lines)
    return 0


def cmd_pricing(args) -> int:
    cat = _client(args).catalog()
    rows = [{"name": t.name, "price_per_hour": t.price_per_hour, "gpus": t.gpu_count,
             "price_per_gpu_hour": round(t.price_per_hour / t.gpu_count, 4) if t.gpu_count else None}
            for t in sorted(cat.types.values(), key=lambda t: (t.price_per_hour, t.name))]
    lines = [f"{'TYPE':26} {'$/h':>8} {'$/GPU/h':>8}"]
    lines += [f"{r['name']:26} {r['price_per_hour']:8.2f} "
              f"{r['price_per_gpu_hour'] if r['price_per_gpu_hour'] is not None else '-':>8}" for r in rows]
    _out(args, rows, lines)
    return 0


def cmd_check_capacity(args) -> int:
    cat = _client(args).catalog()
    names = [args.instance_type] if args.instance_type else sorted(cat.types)
    if args.instance_type and args.instance_type not in cat.types:
        raise errors.ConfigError(f"{args.provider}: unknown instance type '{args.instance_type}'",
                                 hint=f"list them with: scripts/kcloud {args.provider} instance-types list")
    rows = [{"instance_type": n, "available": bool(cat.available_regions(n)),
             "regions": list(cat.available_regions(n)), "price_per_hour": cat.types[n].price_per_hour}
            for n in names]
    lines = [f"{r['instance_type']}: " + (f"\u2713 available in {', '.join(r['regions'])}"
                                          if r["available"] else "\u2717 not available") for r in rows]
    _out(args, rows[0] if args.instance_type else rows, lines)
    return 0 if not args.instance_type or rows[0]["available"] else 1


def _select(args, selection) -> int:
    from kcloud import tiers
    plan = tiers.plan(args.provider, selection, _client(args).catalog())
    if args.verbose:    # with JSON on stdout, the trace goes to stderr
        print("\n".join(tiers.trace(plan)), file=sys.stderr if _json(args) else sys.stdout)
    if not plan.candidates:
        if _json(args):
            _out(args, {"instance_type": None, "region": None, "candidates": [],
                        "error": tiers.no_capacity_advice(plan)}, [])
        print(f"error: {tiers.no_capacity_advice(plan)}", file=sys.stderr)
        return 1
    first = plan.candidates[0]
    _out(args, {"instance_type": first.instance_type, "region": first.region, "tier": first.tier,
                "price_per_hour": first.price, "candidates": [c.__dict__ for c in plan.candidates]},
         [f"{first.instance_type} {first.region}"])
    return 0


def cmd_select_tier(args) -> int:
    from kcloud import tiers
    if args.list_tiers:
        groups = tiers.list_groups(args.provider)
        _out(args, [{"group": name, "help": help_text, "tiers": list(tier_names)}
                    for name, help_text, tier_names in groups],
             [f"{name:20} {help_text}\n{'':20} {' > '.join(tier_names)}" for name, help_text, tier_names in groups])
        return 0
    if not args.group:
        raise errors.ConfigError("select-tier needs a tier group", hint="see --list-tiers")
    selection = tiers.parse(args.provider, args.group, args.region or "")
    if selection.kind == tiers.EXPLICIT:
        groups = ", ".join(g[0] for g in tiers.list_groups(args.provider))
        raise errors.ConfigError(f"{args.provider}: unknown tier group '{args.group}'", hint=f"tier groups: {groups}")
    return _select(args, selection)


def cmd_smart_select(args) -> int:
    from kcloud import tiers
    return _select(args, tiers.Selection(tiers.CHEAPEST, region=args.region or ""))


def _public_key_file(path: str) -> str:
    """The one OpenSSH public key in `path` (kcloud.sshpub), read before any request is made."""
    from kcloud.sshpub import MAX_LINE, parse_public_key
    path = os.path.expanduser(path)
    try:
        with open(path, "rb") as f:
            data = f.read(4 * MAX_LINE + 1)
    except OSError as exc:
        raise errors.ConfigError(f"cannot read public key file {path}: {exc.strerror or exc}") from None
    if len(data) > 4 * MAX_LINE:
        raise errors.ConfigError(f"{path}: not an OpenSSH public key (larger than {4 * MAX_LINE} bytes)")
    return parse_public_key(data, source=path)


def cmd_ssh_keys(args) -> int:
    if args.action == "add":        # everything checked before the first HTTP request
        if not args.name or not args.file:
            raise errors.ConfigError("usage: ssh-keys add NAME PUBLIC_KEY_FILE")
        if len(args.name) > 64 or not args.name.isprintable():
            raise errors.ConfigError(f"SSH key name {args.name[:64]!r} must be at most 64 printable characters")
        public_key = _public_key_file(args.file)
    p = _client(args)
    if args.action == "list":
        keys = p.ssh_keys()
        _out(args, [k.__dict__ for k in keys], [f"{k.id:36} {k.name}" for k in keys] or ["(no SSH keys)"])
    elif args.action == "add":
        key = p.add_ssh_key(args.name, public_key)
        _out(args, {"added": key.__dict__}, [f"added SSH key {key.name} ({key.id})"])
    else:
        if not args.name:
            raise errors.ConfigError("usage: ssh-keys delete NAME_OR_ID")
        match = [k for k in p.ssh_keys() if args.name in (k.id, k.name)]
        if not match:
            raise errors.NotFound(f"{args.provider}: no SSH key named or with id '{args.name}'")
        for k in match:
            p.delete_ssh_key(k.id)
        _out(args, {"deleted": [k.__dict__ for k in match]}, [f"deleted SSH key {k.name} ({k.id})" for k in match])
    return 0


def cmd_ssh_key_name(args) -> int:
    """`<provider>_ssh_key_name.py`: the unique key name bringup uses in this directory."""
    from kcloud.bringup.project import Project
    project = Project.here()
    name = project.unique_key_name(args.provider)
    _out(args, {"provider": args.provider, "ssh_key_name": name, "project": str(project.root)}, [name])
    return 0


def cmd_list_instances(args) -> int:
    found = _client(args).instances(args.prefix)
    rows = [{k: v for k, v in i.__dict__.items() if k != "extra"} for i in found]
    lines = [f"{'ID':34} {'NAME':24} {'TYPE':22} {'REGION':16} {'STATUS':12} IP"]
    lines += [f"{i.id:34} {i.name[:24]:24} {i.instance_type:22} {i.region:16} {i.status:12} {i.ip or '-'}"
              for i in found]
    _out(args, rows, lines if found else ["(no instances)"])
    return 0


def cmd_credentials(args) -> int:
    from kcloud import credentials
    spec = providers.credential_spec(args.provider)
    if args.action == "path":
        _out(args, {"provider": args.provider, "path": str(spec.path)}, [str(spec.path)])
        return 0
    if args.action == "extract":
        return _extract_credentials(args, spec)
    if args.action == "set":
        return _set_credentials(args, spec)
    creds = credentials.load(spec, args.profile)   # check: file readable, fields present...
    p = providers.get(args.provider, profile=args.profile)
    p.ssh_keys()                                   # ...and accepted by the API
    _out(args, {"provider": args.provider, "ok": True, "fields": list(creds), "api_url": p.base_url},
         [f"{args.provider}: credentials OK ({', '.join(creds)}) at {p.base_url}"])
    return 0


def _set_credentials(args, spec) -> int:
    """`set` with no value asks for every field (prompt, or stdin when it is not a terminal);
    `set V1 V2 ...` gives them in the data file's order. One value for a provider with several
    fields is the field `credentials.set_argument` names (DataCrunch: the client secret, which
    is kdevops' datacrunch_api_key, seed 004); the others are then asked for, unless the file
    already has them. Nothing is written unless every field has a value."""
    from kcloud import credentials
    if args.values:
        print(f"warning: a key on the command line is visible to other users in `ps` and stays in your "
              f"shell history; prefer '{spec.provider}_credentials.py set' with no argument "
              f"(it prompts, or reads stdin when that is not a terminal)", file=sys.stderr)
    fields = list(spec.fields)
    if len(args.values) > len(fields):
        raise errors.CredentialsError(f"{spec.provider}: set takes at most {len(fields)} values "
                                      f"({', '.join(fields)}); got {len(args.values)}", provider=spec.provider)
    notes = credentials.notes(spec)
    kept = {}
    if len(args.values) == 1 and len(fields) > 1:
        lone = providers.data(spec.provider)["credentials"].get("set_argument") or fields[0]
        values = {lone: args.values[0]}
        kept = {f: key for f, (key, _v) in credentials.stored(spec, args.profile).items() if f != lone}
        asked = [f for f in fields if f not in values and f not in kept]
        if asked:
            print(f"{spec.provider}: the value given is the {lone}; the {', '.join(asked)} is needed too"
                  + (f": {notes[asked[0]]}" if notes.get(asked[0]) else ""), file=sys.stderr)
    else:
        values = dict(zip(fields, args.values))
        asked = [f for f in fields if f not in values]
    told = len(args.values) == 1 and len(fields) > 1      # the note was just printed
    for field in asked:       # prompt (or read stdin) so secrets need not be on the command line
        values[field] = _ask(spec, field, "" if told else notes.get(field, ""))
    path = credentials.store(spec, values, args.profile)
    lines = [f"wrote {path} (mode 0600): {', '.join(values)}"]
    lines += [f"kept the {f} already there ({key})" for f, key in kept.items()]
    _out(args, {"provider": spec.provider, "path": str(path), "written": list(values), "kept": list(kept)}, lines)
    return 0


def _ask(spec, field: str, note: str = "") -> str:
    import getpass
    secret = field in spec.secrets
    try:
        if sys.stdin.isatty():
            value = getpass.getpass(f"{field}: ") if secret else input(f"{field}: ")
        else:
            value = sys.stdin.readline()
    except EOFError:
        value = ""
    if not value.strip():
        raise errors.CredentialsError(f"{spec.provider}: no {field} given; nothing written" +
                                      (f" ({note})" if note else ""), provider=spec.provider,
                                      hint=f"type it when asked, or pipe it in: printf '%s\\n' VALUE | "
                                           f"scripts/{spec.provider}_credentials.py set ...")
    return value.strip()


def _extract_credentials(args, spec) -> int:
    """`extract_api_key.py [FILE]` (seed 000: "reads and validates the key"): the file is read
    and checked as bringup reads it (0600, [profile], every field, one word each); the key is
    never printed -- kcloud's terraform provider reads the file itself, where kdevops handed the
    key to terraform (and so to its state file) through an external data source."""
    from pathlib import Path

    from kcloud import credentials, redact as redaction
    if len(args.values) > 1:
        raise errors.ConfigError("usage: extract_api_key.py [CREDENTIALS_FILE]")
    path = Path(os.path.expanduser(args.values[0])) if args.values else spec.path
    if not path.is_file():
        raise errors.CredentialsError(f"{spec.provider}: {path} not found", provider=spec.provider,
                                      hint=f"run: python3 scripts/{spec.provider}_credentials.py set")
    found = credentials.stored(spec, args.profile, path)
    for field in spec.secrets:
        if field in found:
            redaction.register(found[field][1])
    missing = [f for f in spec.fields if f not in found]
    if missing:
        note = credentials.notes(spec).get(missing[0], "")
        raise errors.CredentialsError(f"{spec.provider}: no {', '.join(missing)} in {path} [{args.profile}]"
                                      + (f": {note}" if note else ""), provider=spec.provider,
                                      hint=f"run: python3 scripts/{spec.provider}_credentials.py set")
    bad = [f"{f} ({key})" for f, (key, value) in found.items() if not value.isprintable() or len(value.split()) != 1]
    if bad:
        raise errors.CredentialsError(f"{spec.provider}: {', '.join(bad)} in {path} is not one word of printable "
                                      "characters", provider=spec.provider,
                                      hint=f"rewrite it with: python3 scripts/{spec.provider}_credentials.py set")
    _out(args, {"provider": spec.provider, "file": str(path), "profile": args.profile, "valid": True,
                "fields": {f: key for f, (key, _value) in found.items()}},
         [f"{spec.provider}: {', '.join(f'{f} ({key})' for f, (key, _v) in found.items())} found in {path} "
          f"[{args.profile}], mode 0600; not printed: kcloud's terraform provider reads this file itself"])
    return 0


def _provider_parser(sub, name: str):
    pp = sub.add_parser(name, help=f"{providers.data(name)['title']} commands")
    pp.add_argument("--output", choices=["text", "json"], default="text")
    pp.set_defaults(provider=name)
    ps = pp.add_subparsers(dest="command", required=True)

    it = ps.add_parser("instance-types", help="instance types with price and capacity")
    it.add_argument("verb", choices=["list"])
    it.add_argument("--available-only", action="store_true")
    it.add_argument("--region")
    it.set_defaults(func=cmd_instance_types)

    pr = ps.add_parser("pricing", help="prices per hour and per GPU hour")
    pr.add_argument("verb", choices=["list"])
    pr.set_defaults(func=cmd_pricing)

    cc = ps.add_parser("check-capacity", help="which types have capacity, where")
    cc.add_argument("--instance-type")
    cc.add_argument("--json", action="store_true")
    cc.set_defaults(func=cmd_check_capacity)

    for cmd, func, help_text in (("select-tier", cmd_select_tier, "best available type of a tier group"),
                                 ("smart-select", cmd_smart_select, "cheapest available GPU type")):
        st = ps.add_parser(cmd, help=help_text)
        if cmd == "select-tier":
            st.add_argument("group", nargs="?")
            st.add_argument("--list-tiers", action="store_true")
        else:
            st.add_argument("--mode", choices=["cheapest"], default="cheapest")
        st.add_argument("--region")
        st.add_argument("--verbose", "-v", action="store_true")
        st.add_argument("--json", action="store_true")
        st.set_defaults(func=func)

    sk = ps.add_parser("ssh-keys", help="list, add or delete SSH keys in the account")
    sk.add_argument("action", choices=["list", "add", "delete"])
    sk.add_argument("name", nargs="?")
    sk.add_argument("file", nargs="?")
    sk.set_defaults(func=cmd_ssh_keys)

    kn = ps.add_parser("ssh-key-name", help="the unique SSH key name bringup uses in this directory")
    kn.set_defaults(func=cmd_ssh_key_name)

    li = ps.add_parser("list-instances", help="instances in the account")
    li.add_argument("--prefix", help="only names starting with this")
    li.set_defaults(func=cmd_list_instances)

    cr = ps.add_parser("credentials", help="set, check or locate the credentials file")
    cr.add_argument("action", choices=["set", "check", "path", "extract"],
                    help="extract: read and validate the file (the key is never printed)")
    cr.add_argument("values", nargs="*", help="set: field values in order (one value: "
                    "the API key / secret); prompted (or read from stdin) if missing. extract: the file")
    cr.add_argument("--profile", default="default")
    cr.set_defaults(func=cmd_credentials)
    return ps


def command_of(argv: list[str]) -> str | None:
    """The top-level command in argv: the first word that is not an option (the global
    options take no value); None when a help option comes first."""
    for arg in argv:
        if arg in ("-h", "--help"):
            return None
        if not arg.startswith("-"):
            return arg
    return None


def build_parser(command: str | None = None, full: bool = False) -> argparse.ArgumentParser:
    """The parser for running `command`: only its module is imported and registered. Without
    a known command (--help, a typo) every command is listed from COMMANDS, importing none;
    `full` registers every module (tests)."""
    import argparse
    parser = argparse.ArgumentParser(prog="kcloud", description="GPU machines from clouds that are usually sold out")
    parser.add_argument("-v", "--debug", action="store_true", help="log every HTTP request (redacted)")
    sub = parser.add_subparsers(dest="top", required=True)
    provider_names = providers.names()
    known = full or command in COMMANDS or command in provider_names
    modules = {m for m, _ in COMMANDS.values()} if full else {COMMANDS[command][0]} if command in COMMANDS else set()
    for name in provider_names:
        if full or name == command:
            from kcloud.kconfig import commands as kconfig_commands
            provider_sub = _provider_parser(sub, name)
            kconfig_commands.register_provider(provider_sub, name)   # generate-kconfig
            for subcommand in provider_sub.choices.values():         # `... list --output json` too
                subcommand.add_argument("--output", choices=["text", "json"], default=argparse.SUPPRESS)
        elif not known:
            sub.add_parser(name, help=f"{providers.data(name)['title']} commands", add_help=False)
    if full or not known:
        # Listed for --help only: main() hands the emulator its arguments untouched (own parser).
        sub.add_parser("emulator", help=EMULATOR_HELP, add_help=False)
    for module in sorted(modules):
        importlib.import_module(module).register(sub)
    if not known:
        for name, (_module, help_text) in COMMANDS.items():
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _configure_logging(debug: bool) -> None:
    import logging
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(name)s: %(message)s")
    if not debug:   # urllib3's "Retrying (...)" lines: the one error line says what happened
        logging.getLogger("urllib3").setLevel(logging.ERROR)


def leave(code: int):
    """Exit the process with `code`, without tearing down every imported module one by one
    (tens of ms after cloud-config; the system frees it all at once): the exit handlers run and
    the output is flushed first, and only when no other non-daemon thread is still running
    (else the normal exit, which waits for them)."""
    import atexit
    threading = sys.modules.get("threading")       # never imported: no thread was started with it
    if hasattr(atexit, "_run_exitfuncs") and (threading is None or all(
            t.daemon or t is threading.main_thread() for t in threading.enumerate())):
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                code = code or 120          # what Python's own exit reports when a flush fails
        os._exit(code if isinstance(code, int) else 1)
    sys.exit(code)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = ALIASES.get(os.path.basename(prog or sys.argv[0]), []) + argv
    command = command_of(argv)
    if command == "emulator":
        return importlib.import_module("kcloud.emulator").main(argv[argv.index(command) + 1:])
    args = None
    if command in QUICK:        # what make runs: parsed without building the argparse parser
        from kcloud.kconfig import commands as kconfig_commands
        args = kconfig_commands.quick_args(argv)
    if args is None:
        args = build_parser(command).parse_args(argv)
    debug = args.debug or os.environ.get("V") == "1"
    if debug or args.top not in LOCAL:
        _configure_logging(debug)
    try:
        return args.func(args) or 0
    except errors.KcloudError as exc:
        print(f"error: {exc.line()}", file=sys.stderr)
        if exc.details():
            print(redact(exc.details()), file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:     # a bug: one line for the user, the traceback for the report
        import tempfile
        import traceback
        fd, path = tempfile.mkstemp(prefix="kcloud-error-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            f.write(redact(traceback.format_exc()))
        print(f"error: unexpected {type(exc).__name__}: {redact(str(exc))[:200]} "
              f"(a bug in kcloud; details in {path})", file=sys.stderr)
        return 1
