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
    from kcloud.kconfig import identity
    s = kc.load_settings(write(tmp_path, *BASE))
    sha = identity.topdir_sha256(tmp_path.resolve())
    assert s == kc.Settings(
        provider="lambdalabs", selection=tiers.Selection(tiers.GROUP, "H100_OR_LESS", "", None),
        hosts_prefix="kdevops", host_name="kdevops-gpu", image="",
        ssh_key_unique=True, ssh_key_name=identity.kdevops_project_key_name(tmp_path.resolve()),
        ssh_key_auto_create=True, pubkey_file=f"~/.ssh/kdevops_terraform_{sha[:8]}.pub",
        private_key_file=f"~/.ssh/kdevops_terraform_{sha[:8]}", ssh_key_generate=True, ssh_key_regenerate=True,
        ssh_key_empty_passphrase=True, ssh_user="", ssh_port=22, ssh_config_update=True,
        ssh_config_file="~/.ssh/config", ssh_config_prefix="~/.ssh/config_kdevops_",
        ssh_config_host_file=f"~/.ssh/config_kdevops_{sha}", ssh_config_strict=True, ssh_config_backup=True,
        terraform_tool="terraform", terraform_binary="", region_mode="auto", keep_volumes=False,
        credentials_file="", boot_timeout=600, ssh_timeout=300)
    assert s.login_user() == "ubuntu" and s.ssh_genkey is True


def test_every_field(tmp_path):
    p = write(tmp_path, "CONFIG_TERRAFORM=y", "CONFIG_TERRAFORM_DATACRUNCH=y",
              'CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE="cheapest"', 'CONFIG_TERRAFORM_DATACRUNCH_LOCATION="FIN-02"',
              'CONFIG_TERRAFORM_DATACRUNCH_IMAGE="ubuntu-22.04-cuda-12.4-docker"',
              'CONFIG_KDEVOPS_HOSTS_PREFIX="kn2"', "CONFIG_WORKFLOW_KNLP=y",
              "# CONFIG_TERRAFORM_DATACRUNCH_SSH_KEY_UNIQUE is not set", "CONFIG_TERRAFORM_DATACRUNCH_SSH_KEY_MANUAL=y",
              'CONFIG_TERRAFORM_DATACRUNCH_SSH_KEY_NAME="team-key"',
              "# CONFIG_TERRAFORM_DATACRUNCH_SSH_KEY_AUTO_CREATE is not set",
              "# CONFIG_TERRAFORM_SSH_CONFIG_GENKEY is not set",
              'CONFIG_TERRAFORM_SSH_CONFIG_PUBKEY_FILE="~/.ssh/shared.pub"',
              'CONFIG_TERRAFORM_DATACRUNCH_SSH_KEY_FILE="~/.ssh/shared"',
              'CONFIG_TERRAFORM_SSH_CONFIG_USER="root"', 'CONFIG_SSH_CONFIG_USER="alice"',
              "CONFIG_SSH_CONFIG_PORT=2222", "CONFIG_KDEVOPS_SSH_CONFIG_UPDATE=y",
              'CONFIG_KDEVOPS_SSH_CONFIG="~/.ssh/main"', 'CONFIG_KDEVOPS_SSH_CONFIG_PREFIX="~/.ssh/kc_"',
              "# CONFIG_KDEVOPS_SSH_CONFIG_UPDATE_STRICT is not set", "CONFIG_KDEVOPS_SSH_CONFIG_UPDATE_BACKUP=y",
              "CONFIG_TERRAFORM_USE_OPENTOFU=y", 'CONFIG_TERRAFORM_BINARY_PATH="/opt/tofu"',
              "CONFIG_TERRAFORM_DATACRUNCH_KEEP_VOLUMES=y",
              'CONFIG_TERRAFORM_DATACRUNCH_API_KEY_FILE="~/.dc/creds"',
              "CONFIG_TERRAFORM_BOOT_TIMEOUT=1800", "CONFIG_TERRAFORM_SSH_TIMEOUT=120",
              'CONFIG_TERRAFORM_MAX_PRICE_PER_HOUR="1.5"')
    s = kc.load_settings(p)
    assert s.selection == tiers.Selection(tiers.CHEAPEST, "", "FIN-02", 1.5)
    assert (s.host_name, s.image, s.ssh_key_unique, s.ssh_key_name, s.ssh_key_auto_create) == (
        "kn2-knlp", "ubuntu-22.04-cuda-12.4-docker", False, "team-key", False)
    assert (s.pubkey_file, s.private_key_file, s.ssh_key_generate, s.ssh_key_regenerate) == (
        "~/.ssh/shared.pub", "~/.ssh/shared", False, False)
    assert (s.ssh_user, s.ssh_port, s.ssh_config_update, s.ssh_config_file, s.ssh_config_strict,
            s.ssh_config_backup) == ("alice", 2222, True, "~/.ssh/main", False, True)
    assert s.ssh_config_host_file.startswith("~/.ssh/kc_") and len(s.ssh_config_host_file) == len("~/.ssh/kc_") + 64
    assert (s.terraform_tool, s.terraform_binary, s.keep_volumes, s.credentials_file, s.region_mode) == (
        "opentofu", "/opt/tofu", True, "~/.dc/creds", "manual")
    assert (s.boot_timeout, s.ssh_timeout) == (1800, 120)
    assert s.login_user() == "alice" and s.ssh_genkey is False
    with pytest.raises(AttributeError):
        s.provider = "x"           # frozen


@pytest.mark.parametrize("lines, mode, region", [
    (["CONFIG_TERRAFORM_LAMBDALABS_REGION_SMART_CHEAPEST=y", 'CONFIG_TERRAFORM_LAMBDALABS_REGION=""'],
     "smart-cheapest", ""),
    (["CONFIG_TERRAFORM_LAMBDALABS_REGION_SMART_INFER=y", 'CONFIG_TERRAFORM_LAMBDALABS_REGION=""'], "smart-infer", ""),
    (["CONFIG_TERRAFORM_LAMBDALABS_REGION_MANUAL=y", 'CONFIG_TERRAFORM_LAMBDALABS_REGION="us-east-1"'],
     "manual", "us-east-1"),
])
def test_lambda_region_modes_resolve_into_the_selection(tmp_path, lines, mode, region):
    s = kc.load_settings(write(tmp_path, *BASE[:3], *lines))
    assert (s.region_mode, s.selection.region) == (mode, region)


def test_datacrunch_auto_location_is_any_region(tmp_path):
    s = kc.load_settings(write(tmp_path, "CONFIG_TERRAFORM=y", "CONFIG_TERRAFORM_DATACRUNCH=y",
                               'CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE="H100_OR_LESS"',
                               'CONFIG_TERRAFORM_DATACRUNCH_LOCATION="AUTO"'))
    assert (s.region_mode, s.selection.region) == ("auto", "")


def test_two_different_key_pairs_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="name different key pairs"):
        kc.load_settings(write(tmp_path, "CONFIG_TERRAFORM=y", "CONFIG_TERRAFORM_DATACRUNCH=y",
                               'CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE="H100_OR_LESS"',
                               'CONFIG_TERRAFORM_SSH_CONFIG_PUBKEY_FILE="~/.ssh/a.pub"',
                               'CONFIG_TERRAFORM_DATACRUNCH_SSH_KEY_FILE="~/.ssh/b"'))


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
