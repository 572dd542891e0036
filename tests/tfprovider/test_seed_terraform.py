"""Seed 000, "Testing Your Setup" step 3, as typed: after `make defconfig-lambdalabs` and `make`,

    cd terraform/lambdalabs
    terraform init
    terraform validate
    terraform plan

works offline, with the user's own terraform and no TF_CLI_CONFIG_FILE: terraform finds kcloud's
provider in the root's implied local mirror (terraform.d/plugins, made by `make`), and `make`
wrote terraform.tfvars from .config, so plan shows what would be launched. A dead proxy makes
any registry access fail, so the test also proves nothing is fetched."""
import os
import re
import shutil
import subprocess

import pytest

from kcloud.demo import scratch_project
from kcloud.tfprovider import install

SYSTEM_TERRAFORM = "/usr/local/bin/terraform"      # (as in this directory's conftest; present or skipped)
TYPED = "cd terraform/lambdalabs; terraform init; terraform validate; terraform plan"


def binaries():
    out = [pytest.param("venv", id="terraform-1.0.3")]
    if os.access(SYSTEM_TERRAFORM, os.X_OK):
        out.append(pytest.param(SYSTEM_TERRAFORM, id="system-terraform"))
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project after `make defconfig-lambdalabs` and `make` (seed 000's set-up), own HOME."""
    root = scratch_project(tmp_path_factory.mktemp("seed"))
    home = root.parent / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_", "KCLOUD_", "KCONFIG")) and k not in ("TERRAFORM", "MAKEFLAGS", "MAKELEVEL")}
    env.update(HOME=str(home), HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9", CHECKPOINT_DISABLE="1")
    for target in ("defconfig-lambdalabs", "all"):
        proc = subprocess.run(["make", "--no-print-directory", target], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "terraform/lambdalabs/terraform.tfvars: written from .config, offline" in proc.stdout
    return root, env


def typed(root, env, binary):
    """The seed's commands in a shell, with `binary` as the `terraform` on PATH."""
    binary = install.terraform_binary() if binary == "venv" else binary
    bindir = root.parent / f"bin-{abs(hash(binary))}"
    bindir.mkdir(exist_ok=True)
    (bindir / "terraform").unlink(missing_ok=True)
    (bindir / "terraform").symlink_to(binary)
    tf_root = root / "terraform" / "lambdalabs"
    for stale in (tf_root / ".terraform", tf_root / ".terraform.lock.hcl"):   # init as on a fresh checkout
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return subprocess.run(["sh", "-c", TYPED], cwd=root, env={**env, "PATH": f"{bindir}:{env['PATH']}"},
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("binary", binaries())
def test_seed_terraform_commands_work_as_typed(project, binary):
    root, env = project
    proc = typed(root, env, binary)
    out = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)       # typed in a terminal: colours
    assert proc.returncode == 0, out
    assert "Installed kcloud/kcloud v0.1.0" in out and "Terraform has been successfully initialized" in out
    assert "Success! The configuration is valid." in out
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in out          # the SSH key and the machine
    assert 'instance_type = "gpu_1x_' in out and '+ name           = "kdevops-gpu"' in out
    assert "Error" not in out


def test_without_the_implied_mirror_init_would_ask_the_registry(project):
    """The mirror is what makes it work (and the dead proxy is what would catch a fetch)."""
    root, env = project
    mirror = root / "terraform" / "lambdalabs" / "terraform.d"
    mirror.rename(root / "terraform.d.away")
    try:
        proc = typed(root, env, "venv")
    finally:
        (root / "terraform.d.away").rename(mirror)
    assert proc.returncode != 0
    assert "registry.terraform.io" in proc.stdout + proc.stderr


def test_make_keeps_the_tfvars_bringup_wrote(project):
    root, env = project
    tfvars = root / "terraform" / "lambdalabs" / "terraform.tfvars"
    before = tfvars.read_text()
    bringup = before.replace("(make, offline", "(make bringup, from .config and the launch-time plan", 1)
    tfvars.write_text(bringup)
    try:
        proc = subprocess.run(["make", "--no-print-directory"], cwd=root, env=env, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "terraform.tfvars: kept (make bringup wrote it" in proc.stdout
        assert tfvars.read_text() == bringup
    finally:
        tfvars.write_text(before)


def test_a_user_provider_installation_block_is_reported(project):
    root, env = project
    rc = root.parent / "home" / ".terraformrc"
    rc.write_text('provider_installation {\n  dev_overrides { "x/datacrunch" = "/nowhere" }\n  direct {}\n}\n')
    try:
        proc = subprocess.run(["make", "--no-print-directory"], cwd=root, env=env, capture_output=True, text=True,
                              timeout=300, stdin=subprocess.DEVNULL)
    finally:
        rc.unlink()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "has its own provider_installation block" in proc.stdout
