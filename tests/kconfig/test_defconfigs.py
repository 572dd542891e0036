"""Every shipped defconfig loads cleanly and offline; defconfig/olddefconfig/savedefconfig/
menuconfig behave like kbuild's; mistakes leave .config untouched."""
import statistics
import time

import pytest
import yaml

from kconfig_helpers import REPO, fake_live, temp_files
from kcloud import providers, tiers
from kcloud.kconfig import config as kconfig_config
from kcloud.kconfig import generate, kbuild, paths

# name -> (provider, CONFIG_TERRAFORM_<P>_INSTANCE_TYPE, boot timeout, unique key)
EXPECTED = {
    "any-h100-or-less": ("lambdalabs", "cheapest", 600, True),
    "any-a100-or-less": ("lambdalabs", "cheapest", 600, True),
    "any-8x-h100-or-less": ("lambdalabs", "cheapest", 1800, True),
    "any-cheapest": ("lambdalabs", "cheapest", 600, True),
    "lambdalabs": ("lambdalabs", "cheapest", 600, True),
    "lambdalabs-shared-key": ("lambdalabs", "cheapest", 600, False),
    "lambdalabs-smart": ("lambdalabs", "gpu_1x_a10", 600, True),
    "lambdalabs-gh200-or-less": ("lambdalabs", "GH200_OR_LESS", 600, True),
    "lambdalabs-h100-or-less": ("lambdalabs", "H100_OR_LESS", 600, True),
    "lambdalabs-a100-or-less": ("lambdalabs", "A100_OR_LESS", 600, True),
    "lambdalabs-a6000-or-less": ("lambdalabs", "A6000_OR_LESS", 600, True),
    "lambdalabs-8x-b200-or-less": ("lambdalabs", "8X_B200_OR_LESS", 1800, True),
    "lambdalabs-8x-h100-or-less": ("lambdalabs", "8X_H100_OR_LESS", 1800, True),
    "lambdalabs-8x-a100-or-less": ("lambdalabs", "8X_A100_OR_LESS", 1800, True),
    "lambdalabs-gpu-1x-h100-sxm5": ("lambdalabs", "gpu_1x_h100_sxm5", 600, True),
    "lambdalabs-gpu-1x-a10": ("lambdalabs", "gpu_1x_a10", 600, True),
    "lambdalabs-gpu-8x-h100-sxm5": ("lambdalabs", "gpu_8x_h100_sxm5", 1800, True),
    "lambdalabs-gpu-1x-a100": ("lambdalabs", "gpu_1x_a100_sxm4", 600, True),
    "lambdalabs-gpu-1x-h100": ("lambdalabs", "gpu_1x_h100_sxm5", 600, True),
    "lambdalabs-gpu-8x-a100": ("lambdalabs", "gpu_8x_a100", 1800, True),
    "lambdalabs-gpu-8x-h100": ("lambdalabs", "gpu_8x_h100_sxm5", 1800, True),
    "datacrunch-4x-h100-pytorch": ("datacrunch", "4H100.80S.176V", 600, True),
    "datacrunch-4x-b200": ("datacrunch", "4B200.120V", 600, True),
    "datacrunch-4x-b300": ("datacrunch", "4B300.120V", 600, True),
    "datacrunch-b300-or-less": ("datacrunch", "B300_OR_LESS", 600, True),
    "datacrunch-b200-or-less": ("datacrunch", "B200_OR_LESS", 600, True),
    "datacrunch-h100-pytorch-or-less": ("datacrunch", "H100_OR_LESS", 600, True),
    "datacrunch-a100-80-or-less": ("datacrunch", "A100_80_OR_LESS", 600, True),
    "datacrunch-a100-40-or-less": ("datacrunch", "A100_40_OR_LESS", 600, True),
    "datacrunch-h100-pytorch": ("datacrunch", "ANY_1H100", 600, True),
    "datacrunch-a100": ("datacrunch", "1A100.40S.22V", 600, True),
    "datacrunch-b300": ("datacrunch", "1B300.30V", 600, True),
    "datacrunch-v100": ("datacrunch", "1V100.6V", 600, True),
    "lambdalabs-cluster-3x-h100": ("lambdalabs", "gpu_1x_h100_pcie", 600, True),
    "datacrunch-cluster-2x-h100-or-less": ("datacrunch", "H100_OR_LESS", 600, True),
}
# Cluster defconfigs: (nodes, Lambda file system, DataCrunch KEEP_VOLUMES)
CLUSTERS = {"lambdalabs-cluster-3x-h100": (3, "kcloud-shared", False),
            "datacrunch-cluster-2x-h100-or-less": (2, "", True)}
SHIPPED = kbuild.defconfig_names(REPO)


def test_every_documented_defconfig_is_shipped():
    assert not set(EXPECTED) - set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_defconfig_loads_cleanly_offline(tree, no_network, name):
    result = kbuild.defconfig(name)
    assert result.warnings == []
    assert not no_network
    s = kconfig_config.load_settings(tree / ".config")
    provider, value, boot, unique = EXPECTED[name]
    P = f"TERRAFORM_{provider.upper()}"
    values = kconfig_config.read_config(tree / ".config")
    assert (s.provider, values[f"{P}_INSTANCE_TYPE"], s.boot_timeout, s.ssh_key_unique) == (provider, value, boot, unique)
    assert s.selection.region == "" and s.region_mode in ("smart-cheapest", "smart-infer", "auto")
    assert s.host_name == "kdevops-gpu" and s.ssh_port == 22 and s.ssh_timeout == 300
    assert values[f"{P}_SSH_KEY_NAME"] == s.ssh_key_name != ""
    # the selection plans against the offline catalog (an explicit type must exist there)
    tiers.plan(provider, s.selection, providers.snapshot(provider), None)
    if not unique:
        assert s.pubkey_file == "~/.ssh/kdevops_terraform.pub" and s.ssh_key_name == f"kdevops-{provider}"
        assert not s.ssh_key_auto_create and not s.ssh_key_generate
    extra = yaml.safe_load((tree / "extra_vars.yaml").read_text())
    assert extra[f"terraform_{provider}"] is True and extra["terraform_boot_timeout"] == boot
    assert temp_files(tree) == []


@pytest.mark.parametrize("name", SHIPPED)
def test_savedefconfig_round_trips(tree, name):
    kbuild.defconfig(name)
    full = (tree / ".config").read_bytes()
    kbuild.savedefconfig()
    minimal = (tree / "defconfig").read_text()
    assert "is not set" not in minimal or "GENKEY" in minimal
    (tree / "defconfigs" / "roundtrip").write_text(minimal)
    (tree / ".config").unlink()
    kbuild.defconfig("roundtrip")
    assert (tree / ".config").read_bytes() == full


def test_defconfigs_still_load_cleanly_with_live_fragments(tree, no_network):
    for p in providers.names():
        live = fake_live(p, drop=tuple(list(providers.snapshot(p).types)[:3]))
        generate.write_set(generate.fragment_files(tree, p, paths.GENERATED, generate.render(p, live)))
        assert paths.flavour(tree, p) == paths.GENERATED
    for name in SHIPPED:
        assert kbuild.defconfig(name).warnings == [], name


def test_defconfig_time(tree):
    kbuild.defconfig("lambdalabs-h100-or-less")        # warm imports
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        kbuild.defconfig("lambdalabs-h100-or-less")
        times.append(time.perf_counter() - t0)
    assert statistics.median(times) < 0.25, times


def test_knlp_prefix_and_sets(tree, run_cli):
    code, out, err = run_cli("defconfig", "datacrunch-h100-pytorch-or-less", "--set", "KDEVOPS_HOSTS_PREFIX=kn1",
                             "--set", "WORKFLOW_KNLP=y", "--set", "CONFIG_SSH_CONFIG_PORT=2222",
                             "--set", 'TERRAFORM_MAX_PRICE_PER_HOUR="2.50"')
    assert code == 0, err
    s = kconfig_config.load_settings(tree / ".config")
    assert (s.host_name, s.hosts_prefix, s.ssh_port, s.selection.max_price) == ("kn1-knlp", "kn1", 2222, 2.5)
    extra = yaml.safe_load((tree / "extra_vars.yaml").read_text())
    assert extra["workflow_knlp"] is True and extra["kdevops_hosts_prefix"] == "kn1"
    assert extra["ssh_config_port"] == 2222 and extra["terraform_max_price_per_hour"] == "2.50"
    assert extra["terraform_datacrunch_instance_type"] == "H100_OR_LESS"


def _before(tree):
    kbuild.defconfig("lambdalabs-gpu-1x-a10")
    return (tree / ".config").read_bytes(), (tree / "extra_vars.yaml").read_bytes()


def test_unknown_defconfig_is_one_clear_line_and_changes_nothing(tree, run_cli):
    before = _before(tree)
    code, out, err = run_cli("defconfig", "lambdalabs-h100-or-les")
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no defconfig named 'lambdalabs-h100-or-les'")
    assert "lambdalabs-h100-or-less" in lines[0]
    assert ((tree / ".config").read_bytes(), (tree / "extra_vars.yaml").read_bytes()) == before
    assert temp_files(tree) == []


@pytest.mark.parametrize("setting, message", [
    ("NO_SUCH_SYMBOL=y", "--set NO_SUCH_SYMBOL: no such Kconfig symbol"),
    ("WORKFLOW_KNLPP=y", "did you mean WORKFLOW_KNLP"),
    ("SSH_CONFIG_PORT=99999", "SSH_CONFIG_PORT is int in 1..65535"),
    ("TERRAFORM_LAMBDALABS_SSH_KEY_NAME_CUSTOM=x", "depends on TERRAFORM_LAMBDALABS_SSH_KEY_SHARED"),
    ("TERRAFORM_MAX_PRICE_PER_HOUR=cheap", "is not a price in USD per hour"),
    ("KDEVOPS_HOSTS_PREFIX=Bad_Prefix", "is not usable in host names"),
    ("WORKFLOW_KNLP", "is not SYMBOL=VALUE"),
])
def test_bad_set_is_a_clear_error_and_changes_nothing(tree, run_cli, setting, message):
    before = _before(tree)
    code, out, err = run_cli("defconfig", "lambdalabs", "--set", setting)
    assert code == 1
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert ((tree / ".config").read_bytes(), (tree / "extra_vars.yaml").read_bytes()) == before
    assert temp_files(tree) == []


def test_set_can_switch_a_choice(tree):
    """A region implies the manual region method (kdevops would drop the region silently)."""
    kbuild.defconfig("lambdalabs", ["TERRAFORM_LAMBDALABS_INSTANCE_TYPE_8X_H100_OR_LESS=y",
                                    "TERRAFORM_LAMBDALABS_REGION_US_EAST_1=y"])
    s = kconfig_config.load_settings(tree / ".config")
    assert s.selection == tiers.Selection(tiers.GROUP, "8X_H100_OR_LESS", "us-east-1", None)
    assert s.boot_timeout == 1800 and s.region_mode == "manual"
    kbuild.defconfig("datacrunch-v100", ["TERRAFORM_DATACRUNCH_INSTANCE_TYPE=1B300.30V",
                                         "TERRAFORM_DATACRUNCH_LOCATION_ICE_01=y"])
    s = kconfig_config.load_settings(tree / ".config")
    assert s.selection == tiers.Selection(tiers.EXPLICIT, "1B300.30V", "ICE-01", None)


def test_olddefconfig_keeps_choices_and_writes_extra_vars(tree, run_cli, no_network):
    code, _, err = run_cli("olddefconfig")
    assert code == 1 and "run make defconfig-<name> first" in err
    kbuild.defconfig("datacrunch-v100", ["SSH_CONFIG_USER=alice"])
    (tree / "extra_vars.yaml").unlink()
    code, out, err = run_cli("olddefconfig")
    assert code == 0, err
    s = kconfig_config.load_settings(tree / ".config")
    assert s.selection.value == "1V100.6V" and s.ssh_user == "alice"
    assert (tree / "extra_vars.yaml").exists() and (tree / ".config.old").exists()


def test_savedefconfig_cli_writes_dot_defconfig(tree, run_cli):
    kbuild.defconfig("lambdalabs-8x-h100-or-less", ["KDEVOPS_HOSTS_PREFIX=kn2"])
    code, out, err = run_cli("savedefconfig")
    assert code == 0, err
    text = (tree / "defconfig").read_text()
    assert "CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_8X_H100_OR_LESS=y" in text
    assert 'CONFIG_KDEVOPS_HOSTS_PREFIX="kn2"' in text
    assert "CONFIG_TERRAFORM_BOOT_TIMEOUT" not in text      # a default, not saved


def test_menuconfig_runs_kconfiglib_menuconfig_then_writes_extra_vars(tree, run_cli, monkeypatch, no_network):
    import os
    import menuconfig
    seen = {}

    def fake_menuconfig(kconf):             # what a user does in the curses UI: change, save
        seen["config"] = os.environ["KCONFIG_CONFIG"]
        kconf.load_config(seen["config"])
        kconf.syms["TERRAFORM_LAMBDALABS_INSTANCE_TYPE_A100_OR_LESS"].set_value("y")
        kconf.write_config(seen["config"])

    monkeypatch.setattr(menuconfig, "menuconfig", fake_menuconfig)
    kbuild.defconfig("lambdalabs")
    code, out, err = run_cli("menuconfig")
    assert code == 0, err
    assert seen["config"] == str(tree / ".config")
    extra = yaml.safe_load((tree / "extra_vars.yaml").read_text())
    assert extra["terraform_lambdalabs_instance_type"] == "A100_OR_LESS"
    assert "SMART_CHEAPEST=y" in (tree / ".config.old").read_text()     # kept, like kconfig
    assert temp_files(tree) == []


def test_an_instance_type_the_fragments_lack_is_refused_not_swapped(tree, run_cli):
    """After make cloud-config offered a new type and make clean-cloud-config removed it,
    olddefconfig must not quietly fall back to the cheapest GPU."""
    live = fake_live("lambdalabs")
    from kcloud.catalog import InstanceType
    live.types["gpu_1x_new"] = InstanceType("gpu_1x_new", "New (99 GB)", 1, 99, 8, 64, 9.99)
    generate.write_set(generate.fragment_files(tree, "lambdalabs", paths.GENERATED, generate.render("lambdalabs", live)))
    kbuild.defconfig("lambdalabs", ["TERRAFORM_LAMBDALABS_INSTANCE_TYPE_GPU_1X_NEW=y"])
    assert kconfig_config.load_settings(tree / ".config").selection.value == "gpu_1x_new"
    before = (tree / ".config").read_bytes()
    assert run_cli("clean-cloud-config")[0] == 0
    code, out, err = run_cli("olddefconfig")
    assert code == 1 and "CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_GPU_1X_NEW=y names an instance type" in err
    assert "make cloud-config" in err and (tree / ".config").read_bytes() == before


def test_unknown_symbol_in_a_defconfig_is_reported_as_warning(tree, run_cli):
    (tree / "defconfigs" / "stale").write_text("CONFIG_TERRAFORM_LAMBDALABS=y\nCONFIG_GONE_SYMBOL=y\n")
    code, out, err = run_cli("defconfig", "stale")
    assert code == 0 and "warning: stale:2: CONFIG_GONE_SYMBOL is not a kcloud symbol; ignored" in err


def test_the_tripwire_itself_catches_network_and_shell(tmp_path, no_network):
    import socket

    import kconfiglib
    with pytest.raises(AssertionError):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(AssertionError):
        socket.socket().connect(("127.0.0.1", 9))
    (tmp_path / "Kconfig").write_text('config X\n\tstring\n\tdefault "$(shell,echo hi)"\n')
    with pytest.raises(AssertionError):
        kconfiglib.Kconfig(str(tmp_path / "Kconfig"), warn_to_stderr=False)


@pytest.mark.parametrize("name,group", [("any-h100-or-less", "H100_OR_LESS"), ("any-a100-or-less", "A100_OR_LESS"),
                                        ("any-8x-h100-or-less", "8X_H100_OR_LESS"), ("any-cheapest", "CHEAPEST")])
def test_cross_provider_defconfigs_name_a_ladder_group(tree, no_network, name, group):
    from kcloud import ladder
    kbuild.defconfig(name)
    s = kconfig_config.load_settings(tree / ".config")
    assert s.any_group == group and ladder.check_group(group) == group
    kbuild.defconfig("lambdalabs-h100-or-less")
    assert kconfig_config.load_settings(tree / ".config").any_group == ""


@pytest.mark.parametrize("name", sorted(CLUSTERS))
def test_cluster_defconfigs_set_nodes_and_storage(tree, no_network, name):
    from kcloud.kconfig.config import load_settings
    kbuild.defconfig(name)
    s = load_settings(tree / ".config")
    nodes, fs, keep = CLUSTERS[name]
    assert (s.nodes, s.filesystem, s.keep_volumes) == (nodes, fs, keep)
    assert s.node_names() == [f"kdevops-gpu-{i:02d}" for i in range(1, nodes + 1)]
