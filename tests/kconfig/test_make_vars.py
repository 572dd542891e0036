"""Make variables and target names are user text: with the real `make` in a scratch copy of the
project, none of them is ever run by the shell (no file `pwned` appears), a bad one is one
`error:` line and a non-zero exit with .config unchanged, and `make mrproper` checks before
it deletes anything."""
import os
import subprocess
from pathlib import Path

import pytest

from kcloud.demo import scratch_project

USER_VARS = ("KDEVOPS_HOSTS_PREFIX", "KNLP", "SSH_CONFIG_PORT", "SSH_CONFIG_USER", "V", "AV", "TERRAFORM",
             "KCLOUD_DEFCONFIG", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "KCLOUD_PROJECT_DIR", "KCONFIG_CONFIG",
             "KCLOUD_SRCTREE")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = scratch_project(tmp_path_factory.mktemp("make"))
    env = {k: v for k, v in os.environ.items() if k not in USER_VARS}
    env["HOME"] = str(root.parent / "home")

    def make(*args, check=None):
        proc = subprocess.run(["make", "--no-print-directory", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=180, stdin=subprocess.DEVNULL)
        if check is not None:
            assert proc.returncode == check, proc.stdout + proc.stderr
        return proc
    make("defconfig-lambdalabs", check=0)
    return root, make


def kcloud_errors(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if not line.startswith("make: ***")]


PWNED = "touch pwned"


@pytest.mark.parametrize("args, message", [
    (["defconfig-lambdalabs", f"KDEVOPS_HOSTS_PREFIX=kn1;{PWNED}"], "KDEVOPS_HOSTS_PREFIX='kn1;touch pwned' is not"),
    (["defconfig-lambdalabs", f"KDEVOPS_HOSTS_PREFIX=$$({PWNED})"], "is not usable in host names"),
    (["defconfig-lambdalabs", f"KDEVOPS_HOSTS_PREFIX=`{PWNED}`"], "is not usable in host names"),
    (["defconfig-lambdalabs", f"KDEVOPS_HOSTS_PREFIX=$(shell {PWNED})"], "is not usable in host names"),
    (["defconfig-lambdalabs", f"KDEVOPS_HOSTS_PREFIX=kn1\n{PWNED}"], "is not usable in host names"),
    (["defconfig-lambdalabs", f"KNLP=1;{PWNED}"], "KNLP='1;touch pwned': expected 1 or 0"),
    (["defconfig-lambdalabs", f"SSH_CONFIG_USER=u;{PWNED}"], "SSH_CONFIG_USER='u;touch pwned' is not a user"),
    (["defconfig-lambdalabs", f"SSH_CONFIG_PORT=22;{PWNED}"], "SSH_CONFIG_PORT"),
    ([f"defconfig-lambdalabs;{PWNED}"], "'lambdalabs;touch pwned' is not a defconfig name"),
    ([f"defconfig-$(shell {PWNED})"], "is not a defconfig name"),
    ([f"defconfig-x'\"`{PWNED}`"], "is not a defconfig name"),
    (["defconfig-.."], "is not a defconfig name"),
    (["defconfig---help"], "no defconfig named '--help'"),
    (["bringup", f"AV=1;{PWNED}"], "error: AV must be 0..4"),
    (["bringup", f"AV=$(shell {PWNED})"], "error: AV must be 0..4"),
])
def test_hostile_values_are_one_error_line_and_never_run(project, args, message):
    root, make = project
    (root / "pwned").unlink(missing_ok=True)
    before = (root / ".config").read_bytes()
    proc = make(*args)
    assert proc.returncode != 0
    lines = kcloud_errors(proc)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (root / "pwned").exists()
    assert (root / ".config").read_bytes() == before


@pytest.mark.parametrize("var", [f"V=1;{PWNED}", f"V=$(shell {PWNED})", f"TERRAFORM=/x;{PWNED}",
                                 f"TERRAFORM=$(shell {PWNED})"])
def test_harmless_variables_are_passed_as_text(project, var):
    root, make = project
    (root / "pwned").unlink(missing_ok=True)
    make("defconfig-lambdalabs", var, check=0)
    assert not (root / "pwned").exists()


def test_make_variables_still_reach_dot_config(project):
    root, make = project
    make("defconfig-datacrunch-v100", "KDEVOPS_HOSTS_PREFIX=kn1", "KNLP=1", "SSH_CONFIG_PORT=2222",
         "SSH_CONFIG_USER=alice", check=0)
    text = (root / ".config").read_text()
    for line in ('CONFIG_KDEVOPS_HOSTS_PREFIX="kn1"', "CONFIG_WORKFLOW_KNLP=y", "CONFIG_SSH_CONFIG_PORT=2222",
                 'CONFIG_SSH_CONFIG_USER="alice"', "CONFIG_TERRAFORM_DATACRUNCH=y"):
        assert line in text
    make("defconfig-lambdalabs", check=0)                # nothing sticks from the previous run
    assert 'CONFIG_KDEVOPS_HOSTS_PREFIX="kdevops"' in (root / ".config").read_text()


def test_mrproper_checks_before_it_deletes(project):
    """A journal lists launches and the API cannot confirm nothing runs: mrproper refuses, and
    the generated files `clean` would remove are all still there."""
    root, make = project
    make("defconfig-lambdalabs", check=0)
    generated = root / "kconfigs" / "Kconfig.test.generated"
    generated.write_text("# generated\n")
    (root / ".kcloud").mkdir(exist_ok=True)
    journal = root / ".kcloud" / "journal.jsonl"
    journal.write_text('{"event": "launched", "provider": "lambdalabs", "id": "i-1", "time": 1}\n')
    proc = make("mrproper", "LAMBDALABS_API_URL=http://127.0.0.1:9/api/v1", "LAMBDALABS_API_KEY=k-123456789",
                "KCLOUD_HTTP_BACKOFF=0.01")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert generated.exists() and (root / "extra_vars.yaml").exists() and (root / ".config").exists()
    assert Path(root / ".venv").exists()
    journal.unlink()
    generated.unlink()


@pytest.mark.parametrize("target, message", [
    (f"lambdalabs;{PWNED}-ssh-list", "invalid choice: 'lambdalabs;touch pwned'"),
    (f"$(shell {PWNED})-ssh-setup", "is not a provider name"),
    (f"x`{PWNED}`-ssh-clean", "is not a provider name"),
    ("toy-ssh-clean", "unknown provider 'toy'"),
    (f"cloud-config-x;{PWNED}", "invalid choice: 'x;touch pwned'"),
    ("status-ssh-list", "unrecognized arguments: ssh-keys list"),
])
def test_provider_targets_are_patterns_whose_name_is_checked_and_never_run(project, target, message):
    """<provider>-ssh-{list,setup,clean} and cloud-config-<provider> work for any provider kcloud
    has (patterns); the name is one argument that kcloud checks, never shell text."""
    root, make = project
    (root / "pwned").unlink(missing_ok=True)
    proc = make(target)
    assert proc.returncode != 0
    lines = [line for line in kcloud_errors(proc) if "error:" in line]      # (argparse adds its usage)
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not (root / "pwned").exists()


def test_provider_targets_reach_kcloud_for_every_provider(project):
    root, make = project
    help_text = make("help", check=0).stdout
    assert "%-ssh-list" in help_text and "cloud-config-%" in help_text
    for provider in ("lambdalabs", "datacrunch"):
        proc = make(f"{provider}-ssh-list")       # no credentials here: kcloud's own error, per provider
        assert proc.returncode != 0 and f"error: {provider}: no " in proc.stderr, proc.stderr
