"""config.py: .config -> Settings, clear errors, extra_vars.yaml typing."""
import pytest
import yaml

from kcloud import tiers
from kcloud.errors import ConfigError
from kcloud.kconfig import config as kc


def write(tmp_path, *lines):
    p = tmp_path / ".config"
    p.write_text("\n".join(lines) + "\n")
    return p


BASE = ["CONFIG_TERRAFORM=y", "CONFIG_TERRAFORM_LAMBDALABS=y",
        'CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE="H100_OR_LESS"', 'CONFIG_TERRAFORM_LAMBDALABS_REGION=""']


def test_missing_config_says_what_to_run(tmp_path):
    with pytest.raises(ConfigError) as e:
        kc.load_settings(tmp_path / ".config")
    assert "not found" in e.value.line() and "run make defconfig-<name> first" in e.value.line()


def test_config_without_provider(tmp_path):
    p = write(tmp_path, "CONFIG_TERRAFORM=y", "# CONFIG_TERRAFORM_LAMBDALABS is not set")
    with pytest.raises(ConfigError, match="names no cloud provider"):
        kc.load_settings(p)


def test_defaults_when_symbols_are_absent(tmp_path):
    s = kc.load_settings(write(tmp_path, *BASE))
    assert s == kc.Settings(
        provider="lambdalabs", selection=tiers.Selection(tiers.GROUP, "H100_OR_LESS", "", None),
        hosts_prefix="kdevops", host_name="kdevops-gpu", image="", ssh_genkey=True, pubkey_file="",
        ssh_key_name="", ssh_user="", ssh_port=22, ssh_config_update=True, boot_timeout=600, ssh_timeout=300)
    assert s.login_user() == "ubuntu"


def test_every_field(tmp_path):
    p = write(tmp_path, "CONFIG_TERRAFORM=y", "CONFIG_TERRAFORM_DATACRUNCH=y",
              'CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE="cheapest"', 'CONFIG_TERRAFORM_DATACRUNCH_REGION="FIN-02"',
              'CONFIG_TERRAFORM_DATACRUNCH_IMAGE="ubuntu-22.04-cuda-12.4-docker"',
              'CONFIG_KDEVOPS_HOSTS_PREFIX="kn2"', "CONFIG_WORKFLOW_KNLP=y",
              "# CONFIG_TERRAFORM_SSH_CONFIG_GENKEY is not set",
              'CONFIG_TERRAFORM_SSH_CONFIG_PUBKEY_FILE="~/.ssh/shared.pub"',
              'CONFIG_TERRAFORM_DATACRUNCH_SSH_KEY_NAME="team-key"', 'CONFIG_SSH_CONFIG_USER="alice"',
              "CONFIG_SSH_CONFIG_PORT=2222", "# CONFIG_KCLOUD_SSH_CONFIG_UPDATE is not set",
              "CONFIG_TERRAFORM_BOOT_TIMEOUT=1800", "CONFIG_TERRAFORM_SSH_TIMEOUT=120",
              'CONFIG_TERRAFORM_MAX_PRICE_PER_HOUR="1.5"')
    s = kc.load_settings(p)
    assert s.selection == tiers.Selection(tiers.CHEAPEST, "", "FIN-02", 1.5)
    assert (s.host_name, s.image, s.ssh_genkey, s.pubkey_file, s.ssh_key_name) == (
        "kn2-knlp", "ubuntu-22.04-cuda-12.4-docker", False, "~/.ssh/shared.pub", "team-key")
    assert (s.ssh_user, s.ssh_port, s.ssh_config_update, s.boot_timeout, s.ssh_timeout) == (
        "alice", 2222, False, 1800, 120)
    assert s.login_user() == "alice"
    with pytest.raises(AttributeError):
        s.provider = "x"           # frozen


@pytest.mark.parametrize("text, value", [("", None), ("2.50", 2.5), ("$3", 3.0), ("10", 10.0)])
def test_price_ok(text, value):
    assert kc.parse_price(text) == value


@pytest.mark.parametrize("text", ["abc", "-1", "0", "1,50", "2.5.1", "1e3"])
def test_price_rejected(tmp_path, text):
    with pytest.raises(ConfigError, match="not a price"):
        kc.load_settings(write(tmp_path, *BASE, f'CONFIG_TERRAFORM_MAX_PRICE_PER_HOUR="{text}"'))


def test_bad_numbers_and_prefix(tmp_path):
    with pytest.raises(ConfigError, match="SSH_CONFIG_PORT"):
        kc.load_settings(write(tmp_path, *BASE, "CONFIG_SSH_CONFIG_PORT=http"))
    with pytest.raises(ConfigError, match="KDEVOPS_HOSTS_PREFIX"):
        kc.load_settings(write(tmp_path, *BASE, 'CONFIG_KDEVOPS_HOSTS_PREFIX="a b"'))


def test_extra_vars_types_and_quoting(tmp_path):
    p = write(tmp_path, *BASE, 'CONFIG_KDEVOPS_HOSTS_PREFIX="123"', "CONFIG_SSH_CONFIG_PORT=22",
              "# CONFIG_WORKFLOW_KNLP is not set", 'CONFIG_SSH_CONFIG_USER="a \\"quoted\\" \\\\ name"')
    out = kc.write_extra_vars(p)
    data = yaml.safe_load(out.read_text())
    assert data["kdevops_hosts_prefix"] == "123" and data["ssh_config_port"] == 22
    assert data["workflow_knlp"] is False and data["terraform_lambdalabs"] is True
    assert data["ssh_config_user"] == 'a "quoted" \\ name'
    assert list(data)[:2] == ["terraform", "terraform_lambdalabs"]     # .config order
