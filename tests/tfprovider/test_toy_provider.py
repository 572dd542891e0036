"""A third provider really is one module and one data file (issue 7, item 8).

A contributor's view, in a scratch copy of the project: add providers/toy.py and data/toy.yaml,
nothing else (no Kconfig, no terraform file, no Makefile or test edit), then

    scripts/kcloud cloud-config --provider toy     (make cloud-config-toy)
    scripts/kcloud defconfig toy                   (make defconfig-toy: no defconfigs/toy needed)
    make                                           (SSH key, plugin, terraform/toy/, tfvars)
    cd terraform/toy; terraform init; terraform validate; terraform plan

The toy speaks Lambda's API (its module is a subclass of Lambda's client), so the emulator's
Lambda API on 127.0.0.1 serves it under the toy's own URL variable and key."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kcloud.emulator import start

REPO = Path(__file__).resolve().parents[2]
TOY_MODULE = '''"""Toy Cloud: a provider for kcloud's tests that speaks Lambda Cloud's API."""
from kcloud.providers.lambdalabs import Client as LambdaClient


class Client(LambdaClient):
    """Everything as Lambda; the name, URL, credentials and data come from data/toy.yaml."""
'''


def toy_data() -> str:
    """data/toy.yaml: Lambda's data with the toy's own name, URL variable and credentials, and
    none of Lambda's kdevops extras (the generic Kconfig applies)."""
    d = yaml.safe_load((REPO / "scripts/lib/kcloud/data/lambdalabs.yaml").read_text())
    d.update(name="toy", title="Toy Cloud", api_url="https://api.toy.invalid/v1", api_url_env="TOY_API_URL")
    d["credentials"] = {"directory": "~/.toy", "fields": {"api_key": ["toy_api_key"]},
                        "env": {"TOY_API_KEY": "api_key"}, "secrets": ["api_key"]}
    d["kconfig"] = {"location": d["kconfig"]["location"]}      # REGION symbols; no SHARED key, no extras
    d["kconfig"]["location"].pop("depends_on", None)           # no region selection methods: pick or any
    d["snapshot"]["provider"] = "toy"
    return "# Toy Cloud (a test provider)\n" + yaml.safe_dump(d, sort_keys=False)


@pytest.fixture(scope="module")
def toy_project(tmp_path_factory):
    base = tmp_path_factory.mktemp("toy")
    root = base / "kcloud"
    root.mkdir()
    ignore = shutil.ignore_patterns("*.generated", ".terraform*", "terraform.tfstate*", "terraform.tfvars",
                                    ".plugins", "terraformrc", "terraform.d", ".config*", ".kcloud", "hosts")
    for name in ("Makefile", "Kconfig", "kconfigs", "defconfigs", "terraform", "playbooks", "scripts",
                 "requirements.txt", "requirements-test.txt"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(src, root / name)
    (root / ".venv").symlink_to(REPO / ".venv")
    # The contribution: one module and one data file.
    (root / "scripts/lib/kcloud/providers/toy.py").write_text(TOY_MODULE)
    (root / "scripts/lib/kcloud/data/toy.yaml").write_text(toy_data())
    home = base / "home"
    home.mkdir()
    emu = start("scarce", ssh="off")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TF_", "KCLOUD_", "KCONFIG", "LAMBDALABS_", "DATACRUNCH_"))
           and k not in ("TERRAFORM", "MAKEFLAGS", "MAKELEVEL")}
    env.update(HOME=str(home), TOY_API_URL=emu.lambdalabs_url, TOY_API_KEY="emulator-key",
               KCLOUD_HTTP_BACKOFF="0.05", KCLOUD_CLIENT_RATE_LIMITS="off", CHECKPOINT_DISABLE="1",
               HTTPS_PROXY="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    yield root, env
    emu.stop()


def sh(root, env, command, cwd=None):
    proc = subprocess.run(["sh", "-c", command], cwd=cwd or root, env=env, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    return proc.returncode, re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout), proc.stderr


def test_toy_provider_cloud_config_defconfig_plan(toy_project):
    root, env = toy_project
    code, out, err = sh(root, env, "scripts/kcloud cloud-config --provider toy")
    assert code == 0, err
    assert "toy: wrote Kconfig.compute.generated, Kconfig.location.generated, Kconfig.images.generated" in out
    compute = (root / "terraform/toy/kconfigs/Kconfig.compute.generated").read_text()
    assert "TERRAFORM_TOY_INSTANCE_TYPE_GPU_1X_A10" in compute and "\u2713" in compute   # live capacity marks

    code, out, err = sh(root, env, "scripts/kcloud defconfig toy")
    assert code == 0 and "warning" not in err, err
    config = (root / ".config").read_text()
    assert "CONFIG_TERRAFORM_TOY=y" in config and 'CONFIG_TERRAFORM_SSH_CONFIG_USER="ubuntu"' in config
    key_name = re.search(r'^CONFIG_TERRAFORM_TOY_SSH_KEY_NAME="(.+)"$', config, re.M).group(1)
    assert key_name.startswith("kdevops-")

    code, out, err = sh(root, env, "make --no-print-directory")              # seed 004's `make`
    assert code == 0, out + err
    assert "Preparing" in out and "for toy" in out and "terraform/toy/terraform.tfvars: written" in out

    # What the contributor never wrote, derived from data/toy.yaml, and git-ignored.
    for derived in ("terraform/toy/kconfigs/Kconfig", "terraform/toy/kconfigs/Kconfig.provider",
                    "terraform/toy/kconfigs/Kconfig.compute.default", "terraform/toy/provider.tf",
                    "terraform/toy/main.tf", "terraform/toy/terraform.d/plugins"):
        assert (root / derived).exists(), derived
    assert 'cloud         = "toy"' in (root / "terraform/toy/provider.tf").read_text()

    code, out, err = sh(root, env, "cd terraform/toy; terraform init; terraform validate; terraform plan")
    assert code == 0, out + err
    assert "kcloud/kcloud v0.1.0" in out and "Terraform has been successfully initialized" in out
    assert "Success! The configuration is valid." in out
    assert "Plan: 2 to add, 0 to change, 0 to destroy." in out
    assert f'name       = "{key_name}"' in out and 'instance_type = "gpu_1x_' in out


def test_toy_provider_in_the_cli_and_make_patterns(toy_project):
    root, env = toy_project
    code, out, err = sh(root, env, "scripts/kcloud toy --output json check-capacity --instance-type gpu_1x_a10")
    assert code in (0, 1) and '"instance_type": "gpu_1x_a10"' in out, err
    code, out, err = sh(root, env, "make --no-print-directory toy-ssh-list")
    assert code == 0 and ("(no SSH keys)" in out or "kdevops-" in out), err
    code, out, err = sh(root, env, "make --no-print-directory cloud-config-toy")
    assert code == 0 and "toy: wrote" in out, err
