"""The kconfiglib targets: defconfig, olddefconfig, savedefconfig, menuconfig.

Evaluating Kconfig never touches the network: the tree has no $(shell ...), and the only
input besides the Kconfig files is the environment from paths.kconfig_env() (srctree and
which fragment set each provider uses). Every file written here is written atomically,
and .config is validated (config.load_settings) before it replaces the previous one.

`defconfig()` is the in-process entry point the benchmark times.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from kcloud.errors import ConfigError
from kcloud.kconfig import config as kconfig_config
from kcloud.kconfig import paths

HEADER = "# kcloud configuration: make menuconfig, make defconfig-<name>; do not edit by hand\n"
_env_lock = threading.Lock()


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
    tree = paths.srctree(tree)
    if not (tree / "Kconfig").is_file():
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


@dataclass
class Result:
    config: Path
    extra_vars: Path | None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


# -- helpers ------------------------------------------------------------------------------
def defconfig_names(tree: Path) -> list[str]:
    d = Path(tree) / "defconfigs"
    return sorted(p.name for p in d.iterdir() if p.is_file() and not p.name.startswith(".")) if d.is_dir() else []


def _similar(name: str, names: list[str]) -> list[str]:
    import difflib
    close = difflib.get_close_matches(name, names, n=6, cutoff=0.5)
    if not close:
        head = re.split(r"[-_]", name)[0]
        close = [n for n in names if n.startswith(head)][:6]
    return close


def _defconfig_paths(tree: Path, name: str) -> list[Path]:
    """defconfigs/<name>, or for kdevops' "<base>+<fragment>[+...]" the base followed by each
    fragment (configs/<fragment>.config, else defconfigs/<fragment>), merged in that order."""
    base, *fragments = name.split("+")
    out = [_defconfig_path(tree, base)]
    for frag in fragments:
        found = [p for p in (Path(tree) / "configs" / f"{frag}.config", Path(tree) / "configs" / frag)
                 if "/" not in frag and frag not in ("", ".", "..") and p.is_file()]
        out.append(found[0] if found else _defconfig_path(tree, frag))
    return out


def _defconfig_path(tree: Path, name: str) -> Path:
    names = defconfig_names(tree)
    if name in names and "/" not in name:
        return Path(tree) / "defconfigs" / name
    from kcloud import providers
    if name in providers.names():   # defconfig-<provider> with no file of its own: its defaults
        from kcloud.kconfig import wrappers
        wrappers.ensure(tree, [name])
        return Path(wrappers.defconfig_file(tree, name))
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


def _write_atomic(target: Path, writer) -> None:
    """writer(tmp_path) fills a temporary file next to target, which then replaces it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)
        writer(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(kconf, config: Path) -> Path:
    """Validate, then write .config atomically (previous one kept as .config.old) and
    extra_vars.yaml. Nothing is written when validation fails."""
    config.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{config.name}.", suffix=".tmp", dir=config.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o644)
        kconf.write_config(tmp, header=HEADER, save_old=False)
        kconfig_config.load_settings(tmp)          # raises ConfigError: nothing replaced
        if config.exists():
            _write_atomic(config.with_name(config.name + ".old"), lambda t: shutil.copyfile(config, t))
        os.replace(tmp, config)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return kconfig_config.write_extra_vars(config)


def _load(kconf, files: list[Path]) -> list[str]:
    """Load `files` in order (the first replaces everything, the rest merge), then settle them
    (kconfig.compat: kdevops' meaning, and one warning per line that did not take effect)."""
    from kcloud.kconfig import compat
    for i, path in enumerate(files):
        kconf.load_config(str(path), replace=(i == 0))
    return compat.settle(kconf, files)


def _warnings(kconf, notes: list[str] = ()) -> list[str]:
    return [" ".join(w.split()) for w in kconf.warnings] + list(notes)


def _config_path(config) -> Path:
    return Path(config or os.environ.get("KCONFIG_CONFIG") or ".config").absolute()


# -- targets ------------------------------------------------------------------------------
def defconfig(name: str, sets: Iterable[str] = (), tree=None, config=None) -> Result:
    """Load defconfigs/<name> (+ --set overrides) into .config; write extra_vars.yaml.

    On any error (unknown name, unknown or invalid --set, invalid value) .config is left
    untouched."""
    start = time.perf_counter()
    tree = paths.srctree(tree)
    config = _config_path(config)
    files = _defconfig_paths(tree, name)
    overrides = parse_sets(sets)
    kconf = load_kconfig(tree, project=config.parent)
    notes = _load(kconf, files)
    _apply_sets(kconf, overrides)
    extra = _save(kconf, config)
    return Result(config, extra, _warnings(kconf, notes), time.perf_counter() - start)


def _load_existing(kconf, config: Path) -> list[str]:
    if not config.is_file():
        raise ConfigError(f"{config} not found", hint="run make defconfig-<name> first (make help lists them)")
    return _load(kconf, [config])


def olddefconfig(tree=None, config=None) -> Result:
    start = time.perf_counter()
    config = _config_path(config)
    kconf = load_kconfig(tree, project=config.parent)
    notes = _load_existing(kconf, config)
    extra = _save(kconf, config)
    return Result(config, extra, _warnings(kconf, notes), time.perf_counter() - start)


def savedefconfig(tree=None, config=None, output=None) -> Result:
    """Write the minimal configuration of .config to ./defconfig (atomically)."""
    start = time.perf_counter()
    config = _config_path(config)
    output = Path(output or config.parent / "defconfig").absolute()
    kconf = load_kconfig(tree, project=config.parent)
    notes = _load_existing(kconf, config)
    _write_atomic(output, lambda tmp: kconf.write_min_config(tmp))
    return Result(output, None, _warnings(kconf, notes), time.perf_counter() - start)


def _atomic_kconfig_class():
    """A Kconfig whose saves (menuconfig calls write_config/write_min_config) go through a
    temporary file + rename, keeping .config.old like kconfig does."""
    import kconfiglib

    class AtomicKconfig(kconfiglib.Kconfig):
        def write_config(self, filename=None, header=None, save_old=True, verbose=None):
            target = Path(filename or _config_path(None)).absolute()
            if save_old and target.is_file():
                _write_atomic(target.with_name(target.name + ".old"), lambda t: shutil.copyfile(target, t))
            _write_atomic(target, lambda tmp: super(AtomicKconfig, self).write_config(
                tmp, header=HEADER if header is None else header, save_old=False))
            return f"Configuration saved to '{target}'"

        def write_min_config(self, filename, header=None):
            target = Path(filename).absolute()
            _write_atomic(target, lambda tmp: super(AtomicKconfig, self).write_min_config(tmp, header=header))
            return f"Minimal configuration saved to '{target}'"

    return AtomicKconfig


def menuconfig(tree=None, config=None) -> Result:
    """kconfiglib's curses menuconfig on .config; extra_vars.yaml follows what was saved."""
    import menuconfig as kconfiglib_menuconfig
    config = _config_path(config)
    kconf = load_kconfig(tree, cls=_atomic_kconfig_class(), project=config.parent)
    with _environment({"KCONFIG_CONFIG": str(config)}):
        kconfiglib_menuconfig.menuconfig(kconf)
    extra = None
    if config.is_file():
        try:
            kconfig_config.load_settings(config)
        except ConfigError as exc:
            print(f"warning: {exc.line()}")
        extra = kconfig_config.write_extra_vars(config)
    return Result(config, extra, [])
