"""Loading a defconfig or .config so that no line is lost without a word.

kconfiglib (like kconfig) quietly ignores an assignment it cannot apply: a symbol it does not
know, a symbol without a prompt, a choice member whose choice is hidden. kdevops users bring
defconfigs that depend on kdevops' quirks, so after kconfiglib has loaded the files, `settle()`
applies kdevops' documented meaning where kconfiglib alone would not, and reports every line
that still did not take effect, one warning each, naming the symbol:

- aliases: kdevops spellings of a kcloud symbol (data: kconfig.aliases), e.g. Lambda's
  TERRAFORM_LAMBDALABS_REGION_EU_CENTRAL_1 for europe-central-1;
- an instance-type choice given more than one member (a kdevops .config always has a tier bool
  *and* a concrete type, which kdevops keeps apart): a tier group beats a type, the first tier
  group in the data's order beats the others (kdevops' order), else the last line wins;
- strings kdevops gives a prompt (data: kconfig.user_strings, DataCrunch's INSTANCE_TYPE,
  IMAGE and LOCATION): a value written for them selects the matching choice member;
- a member of a hidden choice of the same provider, e.g. a Lambda region line without
  REGION_MANUAL: the choice's provider switch is selected too, unless the file chose another;
- undefined symbols: one warning each ("not a kcloud symbol; ignored"); an undefined
  instance-type member is an error (falling back to the choice default would launch
  something else);
- everything else that did not take effect: one warning with the reason (depends on ...,
  computed by kcloud, another member chosen) and the value .config now has.
"""
from __future__ import annotations

import os
import re

from kcloud import providers
from kcloud.errors import ConfigError
from kcloud.kconfig.files import pathstr

_SET = re.compile(r"^CONFIG_([A-Za-z0-9_]+)=(.*)$")
_UNSET = re.compile(r"^# CONFIG_([A-Za-z0-9_]+) is not set$")
_INSTANCE_TYPE_MEMBER = re.compile(r"^TERRAFORM_[A-Z0-9]+_INSTANCE_TYPE_[A-Z0-9_]+$")


class Assignment:
    """One line of a defconfig or .config. (A plain class: importing dataclasses alone costs
    ~8 ms of every Kconfig target.)"""

    __slots__ = ("where", "name", "value", "raw", "unset")

    def __init__(self, where: str, name: str, value: str, raw: str, unset: bool = False):
        self.where = where      # "<file name>:<line>"
        self.name = name        # symbol without CONFIG_
        self.value = value      # y/n/m for bools, the unescaped text for strings, as written for numbers
        self.raw = raw          # what follows '=' ('n' for "is not set")
        self.unset = unset

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__)

    def __hash__(self):
        return hash(tuple(getattr(self, k) for k in self.__slots__))

    def __repr__(self):
        return "Assignment(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


def read_assignments(path: str | os.PathLike) -> list[Assignment]:
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    name = os.path.basename(pathstr(path))
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        m = _SET.match(line)
        if m:
            raw = m.group(2)
            value = raw
            if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                value = re.sub(r'\\(.)', r"\1", raw[1:-1])
            out.append(Assignment(f"{name}:{n}", m.group(1), value, raw))
            continue
        m = _UNSET.match(line)
        if m:
            out.append(Assignment(f"{name}:{n}", m.group(1), "n", "n", unset=True))
    return out


def _kconfig_data(provider: str) -> dict:
    return providers.data(provider).get("kconfig") or {}


def aliases() -> dict[str, str]:
    out: dict[str, str] = {}
    for p in providers.names():
        out.update(_kconfig_data(p).get("aliases") or {})
    return out


def _show(sym, value: str) -> str:
    import kconfiglib
    if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
        return value
    if sym.orig_type == kconfiglib.STRING:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def derived_member(kconf, string_name: str, value: str):
    """The choice member whose `default "<value>" if <member>` gives the string that value."""
    import kconfiglib
    sym = kconf.syms.get(string_name)
    if sym is None:
        return None
    for default, cond in sym.defaults:
        if default.is_constant and default.name == value:
            for item in kconfiglib.expr_items(cond):
                if item.choice is not None and item.name.startswith(string_name + "_"):
                    return item
    return None


def user_strings(kconf) -> dict[str, str]:
    """{string symbol: provider} for the strings whose written value selects a member."""
    out = {}
    for p in providers.names():
        for suffix in _kconfig_data(p).get("user_strings") or ():
            name = f"TERRAFORM_{p.upper()}_{suffix}"
            if name in kconf.syms and kconf.syms[name].nodes:
                out[name] = p
    return out


def implied_switch(sym):
    """For a member of a hidden choice: the one choice member of the same provider that shows
    the choice (Lambda's REGION_MANUAL for a region), or None."""
    import kconfiglib
    if sym.choice is None or sym.choice.visibility:
        return None
    provider = next((f"TERRAFORM_{p.upper()}_" for p in providers.names()
                     if sym.name.startswith(f"TERRAFORM_{p.upper()}_")), None)
    if provider is None:
        return None
    switches = [s for s in kconfiglib.expr_items(sym.choice.direct_dep)
                if s.choice is not None and s.orig_type == kconfiglib.BOOL and s.tri_value != 2
                and s.name.startswith(provider)]
    return switches[0] if len(switches) == 1 else None


def _rank(provider: str, suffix: str, order: int) -> tuple[int, int]:
    d = providers.data(provider)
    groups, wildcards = list(d.get("tier_groups") or ()), list(d.get("wildcards") or ())
    if suffix in groups:
        return (0, groups.index(suffix))
    if suffix in wildcards:
        return (1, wildcards.index(suffix))
    if suffix == "SMART_CHEAPEST":
        return (2, 0)
    return (3, -order)


def settle(kconf, files: list[str | os.PathLike]) -> list[str]:
    """Apply kdevops' meaning to what kconfiglib loaded from `files` (in order) and return one
    warning per line that still did not take effect. Raises ConfigError for a line that
    names an instance type (or, for a user string, an image or location) Kconfig lacks."""
    import kconfiglib

    def defined(name):
        sym = kconf.syms.get(name)
        return sym if sym is not None and sym.nodes else None

    # 1. kdevops spellings of kcloud symbols: read as the kcloud symbol from here on
    alias = aliases()
    assignments = []
    for a in (a for f in files for a in read_assignments(f)):
        target = alias.get(a.name)
        if target and not defined(a.name) and defined(target):
            kconf.syms[target].set_value(a.value if not a.unset else "n")
            a = Assignment(a.where, target, a.value, a.raw, a.unset)
        assignments.append(a)
    last: dict[str, Assignment] = {}
    position: dict[str, int] = {}
    for i, a in enumerate(assignments):
        last[a.name] = a
        position[a.name] = i
    notes: list[str] = []
    handled: set[str] = set()

    # 2. symbols kcloud does not know
    for name, a in last.items():
        if defined(name) or name in handled:
            continue
        if a.value.startswith("y") and _INSTANCE_TYPE_MEMBER.match(name):
            raise ConfigError(f"{a.where}: CONFIG_{name}=y names an instance type the current Kconfig "
                              "does not offer",
                              hint="run make cloud-config if the type is new, or pick another with make menuconfig")
        notes.append(f"{a.where}: CONFIG_{name} is not a kcloud symbol; ignored")
        handled.add(name)

    # 3. one instance type out of several members (kdevops: a tier bool beats the type)
    for p in providers.names():
        head = f"TERRAFORM_{p.upper()}_INSTANCE_TYPE_"
        chosen = [n for n, a in last.items() if n.startswith(head) and defined(n) and defined(n).choice is not None
                  and a.value == "y" and n not in handled]
        if len(chosen) < 2:
            continue
        ranked = sorted(chosen, key=lambda n: _rank(p, n[len(head):], position[n]))
        winner = ranked[0]
        kconf.syms[winner].set_value("y")
        handled.update(chosen)
        special = [n for n in chosen if _rank(p, n[len(head):], 0)[0] < 3]
        if len(special) > 1 or not special:
            why = ("the first tier group in kdevops' order" if special else "the last line, as in kconfig")
            others = ", ".join(f"CONFIG_{n}=y ({last[n].where})" for n in chosen if n != winner)
            notes.append(f"{last[winner].where}: CONFIG_{winner}=y chosen over {others}: "
                         f"one instance type is launched, {why}")

    # 4. strings kdevops lets a defconfig set: the written value selects its member
    for name, p in user_strings(kconf).items():
        a = last.get(name)
        if a is None or a.unset or a.value == "":     # "" chooses nothing: reported below if it differs
            continue
        sym = kconf.syms[name]
        handled.add(name)
        if a.value == sym.str_value:
            continue
        member = derived_member(kconf, name, a.value)
        if member is None:
            what = name[len(f"TERRAFORM_{p.upper()}_"):]
            what = {"INSTANCE_TYPE": "an instance type", "IMAGE": "an image"}.get(what, "a " + what.lower())
            raise ConfigError(f"{a.where}: CONFIG_{name}=\"{a.value}\" names {what} the current Kconfig "
                              "does not offer",
                              hint="run make cloud-config if it is new, or pick another with make menuconfig")
        overridden = [n for n in member.choice.syms if n is not member and n.name in last
                      and last[n.name].value == "y"]
        member.set_value("y")
        handled.update(s.name for s in overridden)
        handled.add(member.name)
        for s in overridden:
            notes.append(f"{a.where}: CONFIG_{name}=\"{a.value}\" overrides CONFIG_{s.name}=y "
                         f"({last[s.name].where}): a value written for the string wins, as in kdevops")

    # 5. a member of a hidden choice of the same provider selects what shows the choice
    for name, a in last.items():
        sym = defined(name)
        if sym is None or name in handled or a.value != "y" or sym.choice is None or sym.tri_value == 2:
            continue
        switch = implied_switch(sym)
        if switch is None:
            continue
        if any(last.get(s.name) and last[s.name].value == "y" for s in switch.choice.syms):
            continue                       # the file chose another method: reported below
        switch.set_value("y")
        sym.set_value("y")

    # 6. whatever still did not take effect
    for name, a in last.items():
        sym = defined(name)
        if sym is None or name in handled:
            continue
        got = sym.str_value
        if sym.orig_type in (kconfiglib.BOOL, kconfiglib.TRISTATE):
            want = a.value[:1]
            if got == want or (sym.choice is not None and want == "n"):
                continue
            if sym.choice is not None:
                if not sym.choice.visibility:
                    reason = f"not shown with this configuration: depends on {kconfiglib.expr_str(sym.choice.direct_dep)}"
                else:
                    sel = sym.choice.selection
                    reason = f"CONFIG_{sel.name}=y is chosen instead" if sel is not None else "the choice is off"
            elif want != "n" and not sym.visibility:
                reason = (f"depends on {kconfiglib.expr_str(sym.direct_dep)}" if any(n.prompt for n in sym.nodes)
                          else "kcloud computes it from the other settings")
            elif want == "n" and sym.rev_dep is not kconf.n and kconfiglib.expr_value(sym.rev_dep):
                reason = f"selected by {kconfiglib.expr_str(sym.rev_dep)}"
            else:
                reason = "kcloud computes it from the other settings"
        else:
            if a.unset or got == a.value:
                continue
            if not any(n.prompt for n in sym.nodes):
                reason = "kcloud computes it from the other settings"
            elif not sym.visibility:
                reason = f"not shown with this configuration: depends on {kconfiglib.expr_str(sym.direct_dep)}"
            else:
                reason = "not a valid value"
        shown = f"CONFIG_{name}={_show(sym, got)}" if got not in ("n", "") or sym.orig_type not in (
            kconfiglib.BOOL, kconfiglib.TRISTATE) else f"CONFIG_{name} not set"
        notes.append(f"{a.where}: CONFIG_{name}={a.raw} not applied ({reason}); .config has {shown}")
    return notes
