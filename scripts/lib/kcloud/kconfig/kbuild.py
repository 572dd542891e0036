"""The kconfiglib targets: defconfig, olddefconfig, savedefconfig, menuconfig.

Evaluating Kconfig never touches the network: the tree has no $(shell ...), and the only
input besides the Kconfig files is the environment from paths.kconfig_env() (srctree and
which fragment set each provider uses). Every file written here is written atomically,
and .config is validated (config.check_settings: what load_settings checks) before it replaces
the previous one.

`defconfig()` is the in-process entry point the benchmark times. These targets should cost
little more than kconfiglib parsing the tree (issue 7): paths are strings (kconfig.files),
and nothing here imports pathlib, tempfile, shutil, dataclasses, typing or the planner.
"""
from __future__ import annotations

import _thread
import os
import re
import time
from contextlib import contextmanager

from kcloud.errors import ConfigError
from kcloud.kconfig import files, paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable

HEADER = "# kcloud configuration: make menuconfig, make defconfig-<name>; do not edit by hand\n"
_env_lock = _thread.allocate_lock()


@contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for kconfiglib's parse, then restore them."""
    with _env_lock:
        saved = {k: os.environ.get(k) for k in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def load_kconfig(tree: str | os.PathLike | None = None, cls=None, project: str | os.PathLike | None = None):
    """Parse the Kconfig tree (no network) for the project directory `project` (whose
    per-directory names, kconfig.identity, .config carries; default paths.project_dir()).
    Raises ConfigError on a broken tree."""
    import kconfiglib
    cls = cls or kconfiglib.Kconfig
    tree = paths.tree_dir(tree)
    if not os.path.isfile(os.path.join(tree, "Kconfig")):
        raise ConfigError(f"no Kconfig in {tree}", hint="run kcloud from the project directory")
    from kcloud.kconfig import wrappers
    wrappers.ensure(tree)          # each provider's Kconfig, rendered from its data file if stale
    try:
        with _environment(paths.kconfig_env(tree, project)):
            kconf = cls("Kconfig", warn_to_stderr=False)
    except kconfiglib.KconfigError as exc:
        first = " ".join(str(exc).split())
        raise ConfigError(f"Kconfig: {first}",
                          hint="regenerate the shipped fragments with: scripts/kcloud cloud-config --offline") from None
    except OSError as exc:
        raise ConfigError(f"Kconfig: {exc.filename or ''}: {exc.strerror}",
                          hint="regenerate the shipped fragments with: scripts/kcloud cloud-config --offline") from None
    kconf.warn_assign_undef = False     # compat.settle() reports undefined symbols itself, with their line
    kconf.warn_assign_redun = False
    return kconf


class Result:
    """What a target wrote: `config` (.config, or the defconfig savedefconfig wrote) and
    `extra_vars` (extra_vars.yaml or None) as path strings, its warnings, its duration."""

    def __init__(self, config: str, extra_vars: str | None, warnings: list[str] | None = None,
                 seconds: float = 0.0):
        self.config, self.extra_vars = config, extra_vars
        self.warnings = [] if warnings is None else warnings
        self.seconds = seconds

    def __repr__(self):
        return (f"Result(config={self.config!r}, extra_vars={self.extra_vars!r}, warnings={self.warnings!r}, "
                f"seconds={self.seconds!r})")


# -- helpers ------------------------------------------------------------------------------
def defconfig_names(tree: str | os.PathLike) -> list[str]:
    d = os.path.join(tree, "defconfigs")
    if not os.path.isdir(d):
        return []
    return sorted(n for n in os.listdir(d) if not n.startswith(".") and os.path.isfile(os.path.join(d, n)))


def _similar(name: str, names: list[str]) -> list[str]:
    import difflib
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
    if not close:
        head = re.split(r"[-_]", name)[0]
        close = [n for n in names if n.startswith(head)][:6]
    return close


def _defconfig_paths(tree: str, name: str) -> list[str]:
    """defconfigs/<name>, or for kdevops' "<base>+<fragment>[+...]" the base followed by each
    fragment (configs/<fragment>.config, else defconfigs/<fragment>), merged in that order."""
    base, *fragments = name.split("+")
    out = [_defconfig_path(tree, base)]
    for frag in fragments:
        found = [p for p in (os.path.join(tree, "configs", f"{frag}.config"), os.path.join(tree, "configs", frag))
                 if "/" not in frag and frag not in ("", ".", "..") and os.path.isfile(p)]
        out.append(found[0] if found else _defconfig_path(tree, frag))
    return out


def _defconfig_path(tree: str, name: str) -> str:
    path = os.path.join(tree, "defconfigs", name)
    if "/" not in name and not name.startswith(".") and os.path.isfile(path):    # in defconfig_names()
        return path
    from kcloud import providers
    if name in providers.names():   # defconfig-<provider> with no file of its own: its defaults
        from kcloud.kconfig import wrappers
        wrappers.ensure(tree, [name])
        return wrappers.defconfig_file(tree, name)
    names = defconfig_names(tree)
    similar = _similar(name, names)
    hint = (f"similar: {', '.join(similar)}" if similar else
            f"available: {', '.join(names)}" if names else "the defconfigs/ directory is empty")
    raise ConfigError(f"no defconfig named '{name}'", hint=hint)


def parse_sets(sets: Iterable[str]) -> list[tuple[str, str]]:
    out = []
    for item in sets or ():
        name, sep, value = item.partition("=")
        name = name.strip()
        if name.startswith("CONFIG_"):
            name = name[len("CONFIG_"):]
        if not sep or not name:
            raise ConfigError(f"--set '{item}' is not SYMBOL=VALUE")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out.append((name, value))
    return out


def _apply_sets(kconf, sets: list[tuple[str, str]]) -> None:
    if not sets:
        return
    import kconfiglib
    from kcloud.kconfig import compat
    aliases, strings = compat.aliases(), compat.user_strings(kconf)
    for name, value in sets:
        name = aliases.get(name, name)
        if name in strings and value:          # kdevops: a value for the string selects its member
            member = compat.derived_member(kconf, name, value)
            if member is None:
                raise ConfigError(f"--set {name}={value}: not a value the current Kconfig offers",
                                  hint="see make menuconfig, or run make cloud-config if it is new")
            name, value = member.name, "y"
        sym = kconf.syms.get(name)
        if sym is None or not sym.nodes:
            import difflib
            known = [s.name for s in kconf.unique_defined_syms]
            close = difflib.get_close_matches(name, known, n=4, cutoff=0.6)
            raise ConfigError(f"--set {name}: no such Kconfig symbol",
                              hint=f"did you mean {', '.join(close)}?" if close else "see make menuconfig")
        if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            value = {"1": "y", "yes": "y", "true": "y", "0": "n", "no": "n", "false": "n"}.get(value.lower(), value)
            switch = compat.implied_switch(sym) if value == "y" else None
            if switch is not None:             # e.g. a Lambda region selects REGION_MANUAL
                switch.set_value("y")
        if not sym.set_value(value) or sym.str_value != value:
            why = "not visible with this configuration" if not sym.visibility else "not a valid value"
            deps = kconfiglib.expr_str(sym.direct_dep)
            kind = kconfiglib.TYPE_TO_STR[sym.orig_type]
            ranges = [f"{lo.str_value}..{hi.str_value}" for lo, hi, _ in sym.ranges]
            raise ConfigError(f"--set {name}={value}: {why}",
                              hint=f"{name} depends on {deps}" if not sym.visibility and deps != "y" else
                              f"{name} is {kind}" + (f" in {', '.join(ranges)}" if ranges else ""))


def _write_atomic(target: str, writer) -> None:
    """writer(tmp_path) fills a temporary file next to target, which then replaces it."""
    files.replace_with(files.pathstr(target), writer)


def _save(kconf, config: str) -> str:
    """Validate, then write .config atomically (previous one kept as .config.old) and
    extra_vars.yaml. Nothing is written when validation fails."""
    from kcloud.kconfig import config as kconfig_config

    def write(tmp):
        kconf.write_config(tmp, header=HEADER, save_old=False)
        kconfig_config.check_settings(tmp)         # raises ConfigError: nothing replaced
        if os.path.exists(config):
            _write_atomic(config + ".old", lambda t: files.copy_bytes(config, t))

    files.replace_with(config, write)
    return kconfig_config._write_extra_vars(config)


def _load(kconf, paths_: list[str]) -> list[str]:
    """Load `paths_` in order (the first replaces everything, the rest merge), then settle them
    (kconfig.compat: kdevops' meaning, and one warning per line that did not take effect)."""
    from kcloud.kconfig import compat
    for i, path in enumerate(paths_):
        kconf.load_config(os.fspath(path), replace=(i == 0))
    return compat.settle(kconf, paths_)


def _warnings(kconf, notes: list[str] = ()) -> list[str]:
    return [" ".join(w.split()) for w in kconf.warnings] + list(notes)


def _config_path(config) -> str:
    return files.absolute(config or os.environ.get("KCONFIG_CONFIG") or ".config")


# -- targets ------------------------------------------------------------------------------
def defconfig(name: str, sets: Iterable[str] = (), tree=None, config=None) -> Result:
    """Load defconfigs/<name> (+ --set overrides) into .config; write extra_vars.yaml.

    On any error (unknown name, unknown or invalid --set, invalid value) .config is left
    untouched."""
    start = time.perf_counter()
    tree = paths.tree_dir(tree)
    config = _config_path(config)
    defconfigs = _defconfig_paths(tree, name)
    overrides = parse_sets(sets)
    kconf = load_kconfig(tree, project=files.parent(config))
    notes = _load(kconf, defconfigs)
    _apply_sets(kconf, overrides)
    extra = _save(kconf, config)
    return Result(config, extra, _warnings(kconf, notes), time.perf_counter() - start)


def _load_existing(kconf, config: str) -> list[str]:
    if not os.path.isfile(config):
        raise ConfigError(f"{config} not found", hint="run make defconfig-<name> first (make help lists them)")
    return _load(kconf, [config])


def olddefconfig(tree=None, config=None) -> Result:
    start = time.perf_counter()
    config = _config_path(config)
    kconf = load_kconfig(tree, project=files.parent(config))
    notes = _load_existing(kconf, config)
    extra = _save(kconf, config)
    return Result(config, extra, _warnings(kconf, notes), time.perf_counter() - start)


def savedefconfig(tree=None, config=None, output=None) -> Result:
    """Write the minimal configuration of .config to ./defconfig (atomically)."""
    start = time.perf_counter()
    config = _config_path(config)
    output = files.absolute(output or os.path.join(files.parent(config), "defconfig"))
    kconf = load_kconfig(tree, project=files.parent(config))
    notes = _load_existing(kconf, config)
    _write_atomic(output, lambda tmp: kconf.write_min_config(tmp))
    return Result(output, None, _warnings(kconf, notes), time.perf_counter() - start)


def _atomic_kconfig_class():
    """A Kconfig whose saves (menuconfig calls write_config/write_min_config) go through a
    temporary file + rename, keeping .config.old like kconfig does."""
    import kconfiglib

    class AtomicKconfig(kconfiglib.Kconfig):
        def write_config(self, filename=None, header=None, save_old=True, verbose=None):
            target = files.absolute(filename or _config_path(None))
            if save_old and os.path.isfile(target):
                _write_atomic(target + ".old", lambda t: files.copy_bytes(target, t))
            _write_atomic(target, lambda tmp: super(AtomicKconfig, self).write_config(
                tmp, header=HEADER if header is None else header, save_old=False))
            return f"Configuration saved to '{target}'"

        def write_min_config(self, filename, header=None):
            target = files.absolute(filename)
            _write_atomic(target, lambda tmp: super(AtomicKconfig, self).write_min_config(tmp, header=header))
            return f"Minimal configuration saved to '{target}'"

    return AtomicKconfig


def menuconfig(tree=None, config=None) -> Result:
    """kconfiglib's curses menuconfig on .config; extra_vars.yaml follows what was saved."""
    import menuconfig as kconfiglib_menuconfig
    config = _config_path(config)
    from kcloud.kconfig import config as kconfig_config
    kconf = load_kconfig(tree, cls=_atomic_kconfig_class(), project=files.parent(config))
    with _environment({"KCONFIG_CONFIG": config}):
        kconfiglib_menuconfig.menuconfig(kconf)
    extra = None
    if os.path.isfile(config):
        try:
            kconfig_config.load_settings(config)
        except ConfigError as exc:
            print(f"warning: {exc.line()}")
        extra = kconfig_config._write_extra_vars(config)
    return Result(config, extra, [])
