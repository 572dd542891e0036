"""kdevops defconfigs load into kcloud with every provider, terraform and SSH line kept and
their documented meaning honoured (shared/reference/kdevops-kconfig.md); workflow lines kcloud
does not run are kept or reported by name; nothing is dropped silently; no network.

tests/kconfig/kdevops/ holds every kdevops defconfig the reference lists (section 3), line for
line, and the configs/ fragment merged as `make defconfig-<base>+lambdalabs-gpu-1x-a10`.
"""
import hashlib
import re
import shutil
from pathlib import Path

import pytest

from kcloud import providers, tiers
from kcloud.errors import ConfigError
from kcloud.kconfig import compat, identity, kbuild
from kcloud.kconfig import config as kconfig_config

KDEVOPS = Path(__file__).resolve().parent / "kdevops"
DEFCONFIGS = sorted(p.name for p in (KDEVOPS / "defconfigs").iterdir())

# name -> (instance type string, region mode) with the reference's documented intent; kdevops
# itself resolves three Lambda ones to gpu_1x_a10 (their symbols are not in its shipped
# fragment) and every smart region to us-west-1 (its $(shell) gets no argument).
EXPECTED = {
    "lambdalabs": ("cheapest", "smart-cheapest"),
    "lambdalabs-shared-key": ("cheapest", "smart-cheapest"),
    "lambdalabs-smart": ("gpu_1x_a10", "smart-infer"),
    "lambdalabs-gpu-1x-a10": ("gpu_1x_a10", "smart-infer"),
    "lambdalabs-gpu-1x-a100": ("gpu_1x_a100_sxm4", "smart-infer"),
    "lambdalabs-gpu-1x-h100": ("gpu_1x_h100_sxm5", "smart-infer"),
    "lambdalabs-gpu-8x-a100": ("gpu_8x_a100", "smart-infer"),
    "lambdalabs-gpu-8x-h100": ("gpu_8x_h100_sxm5", "smart-infer"),
    "lambdalabs-gh200-or-less": ("GH200_OR_LESS", "smart-infer"),
    "lambdalabs-h100-or-less": ("H100_OR_LESS", "smart-infer"),
    "lambdalabs-a100-or-less": ("A100_OR_LESS", "smart-infer"),
    "lambdalabs-8x-b200-or-less": ("8X_B200_OR_LESS", "smart-infer"),
    "lambdalabs-8x-h100-or-less": ("8X_H100_OR_LESS", "smart-infer"),
    "lambdalabs-vllm-gpu-1x-a10": ("gpu_1x_a10", "smart-infer"),
    "datacrunch-a100": ("1A100.40S.22V", "auto"),
    "datacrunch-a100-40-or-less": ("A100_40_OR_LESS", "auto"),
    "datacrunch-a100-80-or-less": ("A100_80_OR_LESS", "auto"),
    "datacrunch-h100-pytorch": ("ANY_1H100", "auto"),
    "datacrunch-h100-pytorch-or-less": ("H100_OR_LESS", "auto"),
    "datacrunch-4x-h100-pytorch": ("4H100.80S.176V", "auto"),
    "datacrunch-b200-or-less": ("B200_OR_LESS", "auto"),
    "datacrunch-b300": ("1B300.30V", "auto"),
    "datacrunch-b300-or-less": ("B300_OR_LESS", "auto"),
    "datacrunch-4x-b200": ("4B200.120V", "auto"),
    "datacrunch-4x-b300": ("4B300.120V", "auto"),
    "datacrunch-v100": ("1V100.6V", "auto"),
}

# Every kdevops symbol of the reference's tables for these two providers (1.2-1.11), which
# kcloud defines with the same meaning. Not here: other clouds' symbols, Azure's private net,
# and Kconfig.smart's $(shell) strings TERRAFORM_LAMBDALABS_SMART_INSTANCE/_SMART_REGION,
# which no kdevops config contains (decided at bringup in kcloud; reported by name if set).
KDEVOPS_SYMBOLS = """TERRAFORM TERRAFORM_LAMBDALABS TERRAFORM_DATACRUNCH TERRAFORM_USE_TERRAFORM
    TERRAFORM_USE_OPENTOFU TERRAFORM_BINARY_PATH TERRAFORM_SSH_USER_INFER TERRAFORM_SSH_CONFIG_USER
    TERRAFORM_SSH_CONFIG_PUBKEY_FILE TERRAFORM_SSH_CONFIG_GENKEY TERRAFORM_SSH_CONFIG_GENKEY_OVERWRITE
    TERRAFORM_SSH_CONFIG_GENKEY_EMPTY_PASSPHRASE KDEVOPS_SSH_CONFIG_UPDATE KDEVOPS_SSH_CONFIG
    KDEVOPS_SSH_CONFIG_PREFIX KDEVOPS_SSH_CONFIG_UPDATE_STRICT KDEVOPS_SSH_CONFIG_UPDATE_BACKUP
    TERRAFORM_LAMBDALABS_REGION_SMART_CHEAPEST TERRAFORM_LAMBDALABS_REGION_SMART_INFER
    TERRAFORM_LAMBDALABS_REGION_MANUAL TERRAFORM_LAMBDALABS_REGION
    TERRAFORM_LAMBDALABS_INSTANCE_TYPE_GH200_OR_LESS TERRAFORM_LAMBDALABS_INSTANCE_TYPE_H100_OR_LESS
    TERRAFORM_LAMBDALABS_INSTANCE_TYPE_A100_OR_LESS TERRAFORM_LAMBDALABS_INSTANCE_TYPE_A6000_OR_LESS
    TERRAFORM_LAMBDALABS_INSTANCE_TYPE_8X_B200_OR_LESS TERRAFORM_LAMBDALABS_INSTANCE_TYPE_8X_H100_OR_LESS
    TERRAFORM_LAMBDALABS_INSTANCE_TYPE_8X_A100_OR_LESS TERRAFORM_LAMBDALABS_INSTANCE_TYPE
    TERRAFORM_LAMBDALABS_IMAGE TERRAFORM_LAMBDALABS_SSH_KEY_UNIQUE TERRAFORM_LAMBDALABS_SSH_KEY_SHARED
    TERRAFORM_LAMBDALABS_SSH_KEY_NAME_CUSTOM TERRAFORM_LAMBDALABS_SSH_KEY_NAME
    TERRAFORM_LAMBDALABS_SSH_KEY_AUTO_CREATE TERRAFORM_LAMBDALABS_SMART_CHEAPEST
    TERRAFORM_DATACRUNCH_KEEP_VOLUMES TERRAFORM_DATACRUNCH_API_KEY_FILE TERRAFORM_DATACRUNCH_SSH_KEY_UNIQUE
    TERRAFORM_DATACRUNCH_SSH_KEY_MANUAL TERRAFORM_DATACRUNCH_SSH_KEY_NAME_CUSTOM
    TERRAFORM_DATACRUNCH_SSH_KEY_NAME TERRAFORM_DATACRUNCH_SSH_KEY_AUTO_CREATE TERRAFORM_DATACRUNCH_SSH_KEY_FILE
    TERRAFORM_DATACRUNCH_INSTANCE_TYPE TERRAFORM_DATACRUNCH_IMAGE TERRAFORM_DATACRUNCH_LOCATION
    TERRAFORM_DATACRUNCH_LOCATION_AUTO TERRAFORM_DATACRUNCH_LOCATION_FIN_01 TERRAFORM_DATACRUNCH_LOCATION_FIN_02
    TERRAFORM_DATACRUNCH_LOCATION_FIN_03 TERRAFORM_DATACRUNCH_LOCATION_ICE_01
    TERRAFORM_DATACRUNCH_IMAGE_UBUNTU_24_04_CUDA_12_8_OPEN_DOCKER WORKFLOWS WORKFLOWS_TESTS
    WORKFLOWS_LINUX_TESTS WORKFLOWS_DEDICATED_WORKFLOW KDEVOPS_HOSTS_PREFIX""".split()
# kdevops' 16 Lambda region members (2.2) and the 20 instance types Kconfig.compute maps (2.1).
LAMBDA_REGION_MEMBERS = """US_TX_1 US_MIDWEST_1 US_WEST_1 US_WEST_2 US_WEST_3 US_SOUTH_1 US_SOUTH_2 US_SOUTH_3
    US_EAST_1 US_EAST_3 EU_CENTRAL_1 ASIA_NORTHEAST_1 ASIA_NORTHEAST_2 ASIA_SOUTH_1 ME_WEST_1
    AUSTRALIA_EAST_1""".split()

WORKFLOW_NOT_RUN = re.compile(r"^(KDEVOPS_WORKFLOW_DEDICATE_VLLM|VLLM_.*)$")


def lines_of(path: Path) -> list[tuple[str, str]]:
    """(symbol, the line) for every assignment of a defconfig."""
    return [(a.name, line) for a, line in zip(compat.read_assignments(path),
            [l.rstrip() for l in path.read_text().splitlines() if l.startswith(("CONFIG_", "# CONFIG_"))])]


def install(tree: Path, name: str) -> None:
    shutil.copy(KDEVOPS / "defconfigs" / name, tree / "defconfigs" / name)


def test_every_reference_defconfig_is_here():
    assert set(DEFCONFIGS) == set(EXPECTED) and len(DEFCONFIGS) == 26


@pytest.mark.parametrize("name", DEFCONFIGS)
def test_kdevops_defconfig_keeps_every_line(tree, no_network, name):
    install(tree, name)
    result = kbuild.defconfig(name)
    assert not no_network
    config = (tree / ".config").read_text()
    config_lines = set(config.splitlines())
    reported = {}
    for w in result.warnings:
        m = re.search(r"CONFIG_([A-Za-z0-9_]+)", w)
        reported.setdefault(m.group(1), []).append(w)
    for symbol, line in lines_of(tree / "defconfigs" / name):
        if WORKFLOW_NOT_RUN.match(symbol):          # kdevops workflows kcloud does not run: named once
            assert len(reported.pop(symbol, [])) == 1 and f"CONFIG_{symbol}" not in config, line
            continue
        assert line in config_lines, f"{name}: {line!r} not kept in .config"
    assert reported == {}, f"{name}: unexpected warnings {reported}"

    value, mode = EXPECTED[name]
    s = kconfig_config.load_settings(tree / ".config")
    provider = "datacrunch" if name.startswith("datacrunch") else "lambdalabs"
    P = f"TERRAFORM_{provider.upper()}"
    values = kconfig_config.read_config(tree / ".config")
    assert (s.provider, values[f"{P}_INSTANCE_TYPE"], s.region_mode, s.selection.region) == (provider, value, mode, "")
    tiers.plan(provider, s.selection, providers.snapshot(provider), None)      # resolvable offline
    # the SSH facts the reference lists for every result
    sha = hashlib.sha256(f"{tree.resolve()}\n".encode()).hexdigest()
    assert values["TERRAFORM_SSH_CONFIG_PUBKEY_FILE"] == f"~/.ssh/kdevops_terraform_{sha[:8]}.pub"
    assert s.ssh_key_generate and s.ssh_key_regenerate and s.ssh_key_empty_passphrase
    assert s.ssh_config_update and s.ssh_config_strict and s.ssh_config_backup
    if provider == "lambdalabs":
        assert values["TERRAFORM_SSH_CONFIG_USER"] == s.ssh_user == "ubuntu"
        assert values["TERRAFORM_SSH_USER_INFER"] == "n"
        shared = name == "lambdalabs-shared-key"
        assert (s.ssh_key_unique, s.ssh_key_auto_create) == (not shared, not shared)
        assert values[f"{P}_SSH_KEY_NAME"] == ("kdevops-lambdalabs" if shared else
                                               identity.kdevops_project_key_name(tree.resolve()))
    else:
        assert values["TERRAFORM_SSH_CONFIG_USER"] == s.ssh_user == "root"
        assert values[f"{P}_IMAGE"] == s.image == "ubuntu-24.04-cuda-12.8-open-docker"
        assert s.ssh_key_unique and s.ssh_key_auto_create and not s.keep_volumes
        assert values[f"{P}_SSH_KEY_NAME"] == identity.kdevops_datacrunch_key_name(tree.resolve())
        assert values[f"{P}_API_KEY_FILE"] == "~/.datacrunch/credentials"
        assert values[f"{P}_LOCATION"] == "AUTO"
        assert values[f"{P}_SSH_KEY_FILE"] == f"~/.ssh/kdevops_terraform_{sha[:8]}" == s.private_key_file


def test_kdevops_symbols_all_exist():
    kconf = kbuild.load_kconfig(_default_tree())
    missing = [s for s in KDEVOPS_SYMBOLS if s not in kconf.syms or not kconf.syms[s].nodes]
    assert missing == []
    types = providers.snapshot("lambdalabs").types
    from kcloud.kconfig import generate
    for name in types:
        assert f"TERRAFORM_LAMBDALABS_INSTANCE_TYPE_{generate.symbol_suffix(name)}" in kconf.syms


def _default_tree():
    import tempfile
    from kconfig_helpers import copy_tree
    return copy_tree(Path(tempfile.mkdtemp(prefix="kcloud-kdevops-")) / "tree")


@pytest.mark.parametrize("member", LAMBDA_REGION_MEMBERS)
def test_every_kdevops_lambda_region_member_pins_its_region(tree, member):
    """kdevops' spelling EU_CENTRAL_1 too; and a region line alone implies REGION_MANUAL."""
    (tree / "defconfigs" / "r").write_text("CONFIG_TERRAFORM=y\nCONFIG_TERRAFORM_LAMBDALABS=y\n"
                                           f"CONFIG_TERRAFORM_LAMBDALABS_REGION_{member}=y\n")
    assert kbuild.defconfig("r").warnings == []
    s = kconfig_config.load_settings(tree / ".config")
    expected = "europe-central-1" if member == "EU_CENTRAL_1" else member.lower().replace("_", "-")
    assert (s.region_mode, s.selection.region) == ("manual", expected)


def test_grep_key_name_prints_it_in_unique_mode(tmp_path, monkeypatch):
    """Seed 000: `grep TERRAFORM_LAMBDALABS_SSH_KEY_NAME .config`; a directory kdv under a generic
    one gives kdevops-kdv-<hash>, the hash being the directory's identity (.kcloud/id), not its
    path: the same path on another computer gets another name (issue 6)."""
    from kconfig_helpers import copy_tree
    kdv = copy_tree(tmp_path / "tmp" / "kdv")
    monkeypatch.chdir(kdv)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    kbuild.defconfig("lambdalabs-h100-or-less")
    line = next(l for l in (kdv / ".config").read_text().splitlines() if "TERRAFORM_LAMBDALABS_SSH_KEY_NAME" in l)
    h = (kdv / ".kcloud" / "id").read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{12}", h)
    assert line == f'CONFIG_TERRAFORM_LAMBDALABS_SSH_KEY_NAME="kdevops-kdv-{h}"'
    assert kconfig_config.load_settings(kdv / ".config").ssh_key_name == f"kdevops-kdv-{h}"
    kbuild.defconfig("lambdalabs-h100-or-less")                      # stable across runs
    assert (kdv / ".kcloud" / "id").read_text().strip() == h
    (kdv / ".kcloud" / "id").unlink()                                 # "another computer"
    kbuild.defconfig("lambdalabs-h100-or-less")
    assert (kdv / ".kcloud" / "id").read_text().strip() != h


def test_key_name_rules():
    ident = "0123456789ab"
    assert identity.kdevops_project_key_name(Path("/home/me/lambda/kdevops"), ident) == \
        "kdevops-lambda-kdevops-0123456789ab"
    assert identity.kdevops_project_key_name(Path("/tmp/kdv"), ident) == "kdevops-kdv-0123456789ab"
    assert identity.kdevops_project_key_name(Path("/a/b.c_d/e"), ident) == "kdevops-b-c-d-e-0123456789ab"
    long = identity.kdevops_project_key_name(Path("/x/" + "a" * 30 + "/" + "b" * 30), ident)
    assert long == "kdevops-" + "a" * 20 + "-" + ident
    assert identity.kdevops_datacrunch_key_name(Path("/nowhere/x"), ident) == "kdevops-datacrunch-" + ident


def test_identity_is_recovered_from_the_key_comment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    project = tmp_path / "proj"
    project.mkdir()
    ident = identity.directory_id(project)
    sha = identity.topdir_sha256(project)[:8]
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / f"kdevops_terraform_{sha}.pub").write_text(
        f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA kdevops-proj-{ident}\n")
    (project / ".kcloud" / "id").unlink()
    assert identity.directory_id(project, create=False) == ident
    (project / ".kcloud").rmdir()
    (project / ".kcloud").symlink_to(tmp_path)                        # a planted link is never read
    assert identity.directory_id(project, create=False) == ident     # (the key comment still is)


def test_keep_1_keeps_volumes(tree, monkeypatch):
    install(tree, "datacrunch-a100")
    monkeypatch.setenv("KEEP", "1")
    kbuild.defconfig("datacrunch-a100")
    assert kconfig_config.load_settings(tree / ".config").keep_volumes
    monkeypatch.delenv("KEEP")
    kbuild.defconfig("datacrunch-a100")
    assert not kconfig_config.load_settings(tree / ".config").keep_volumes


def test_fragment_merge_base_plus_config(tree, no_network):
    (tree / "configs").mkdir()
    shutil.copy(KDEVOPS / "configs" / "lambdalabs-gpu-1x-a10.config", tree / "configs")
    result = kbuild.defconfig("lambdalabs+lambdalabs-gpu-1x-a10")
    assert result.warnings == []
    s = kconfig_config.load_settings(tree / ".config")
    assert (s.provider, s.selection.value, s.region_mode) == ("lambdalabs", "gpu_1x_a10", "smart-infer")
    # a later file wins, and what it overrides is named
    warnings = kbuild.defconfig("datacrunch-v100+lambdalabs-gpu-1x-a10").warnings
    assert kconfig_config.load_settings(tree / ".config").provider == "lambdalabs"
    assert any("datacrunch-v100:4: CONFIG_TERRAFORM_DATACRUNCH=y not applied (CONFIG_TERRAFORM_LAMBDALABS=y is "
               "chosen instead)" in w for w in warnings)
    with pytest.raises(ConfigError, match="no defconfig named 'nope'"):
        kbuild.defconfig("lambdalabs+nope")


KDEVOPS_DOT_CONFIG = """# a kdevops .config (excerpt) after make defconfig-lambdalabs-h100-or-less
CONFIG_TERRAFORM=y
CONFIG_TERRAFORM_LAMBDALABS=y
# CONFIG_TERRAFORM_LAMBDALABS_REGION_SMART_CHEAPEST is not set
CONFIG_TERRAFORM_LAMBDALABS_REGION_SMART_INFER=y
# CONFIG_TERRAFORM_LAMBDALABS_REGION_MANUAL is not set
CONFIG_TERRAFORM_LAMBDALABS_REGION="us-west-1"
CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_GPU_1X_A10=y
# CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_GH200_OR_LESS is not set
CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_H100_OR_LESS=y
# CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_A100_OR_LESS is not set
CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE="H100_OR_LESS"
CONFIG_TERRAFORM_LAMBDALABS_IMAGE="ubuntu-22.04"
CONFIG_TERRAFORM_LAMBDALABS_SSH_KEY_UNIQUE=y
CONFIG_TERRAFORM_LAMBDALABS_SSH_KEY_AUTO_CREATE=y
CONFIG_TERRAFORM_SSH_CONFIG_USER="ubuntu"
# CONFIG_TERRAFORM_SSH_USER_INFER is not set
CONFIG_TERRAFORM_USE_TERRAFORM=y
CONFIG_TERRAFORM_BINARY_PATH="/usr/bin/terraform"
CONFIG_KDEVOPS_SSH_CONFIG_UPDATE=y
CONFIG_KDEVOPS_SSH_CONFIG="~/.ssh/config"
CONFIG_KDEVOPS_SSH_CONFIG_PREFIX="~/.ssh/config_kdevops_"
CONFIG_KDEVOPS_SSH_CONFIG_UPDATE_STRICT=y
CONFIG_KDEVOPS_SSH_CONFIG_UPDATE_BACKUP=y
CONFIG_ANSIBLE_CFG_SSH_PORT=22
CONFIG_BOOTLINUX=y
"""


def test_a_kdevops_dot_config_tier_beats_type_and_every_dropped_line_is_named(tree, run_cli):
    (tree / ".config").write_text(KDEVOPS_DOT_CONFIG)
    code, out, err = run_cli("olddefconfig")
    assert code == 0, err
    s = kconfig_config.load_settings(tree / ".config")
    assert (s.selection.kind, s.selection.value, s.region_mode, s.terraform_binary) == (
        tiers.GROUP, "H100_OR_LESS", "smart-infer", "/usr/bin/terraform")
    warnings = err.strip().splitlines()
    assert len(warnings) == 4, warnings
    assert any("CONFIG_TERRAFORM_LAMBDALABS_REGION=\"us-west-1\" not applied (kcloud computes it" in w for w in warnings)
    assert any("CONFIG_TERRAFORM_LAMBDALABS_IMAGE=\"ubuntu-22.04\" not applied" in w for w in warnings)
    assert any(".config:25: CONFIG_ANSIBLE_CFG_SSH_PORT is not a kcloud symbol; ignored" in w for w in warnings)
    assert any("CONFIG_BOOTLINUX is not a kcloud symbol" in w for w in warnings)
    assert not any("GPU_1X_A10" in w for w in warnings)      # kdevops: the tier bool beats the choice


def test_two_tier_groups_first_in_kdevops_order_wins_with_a_warning(tree):
    (tree / "defconfigs" / "two").write_text(
        "CONFIG_TERRAFORM=y\nCONFIG_TERRAFORM_LAMBDALABS=y\nCONFIG_TERRAFORM_LAMBDALABS_REGION_SMART_INFER=y\n"
        "CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_A6000_OR_LESS=y\n"
        "CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_8X_A100_OR_LESS=y\n")
    result = kbuild.defconfig("two")
    assert kconfig_config.load_settings(tree / ".config").selection.value == "A6000_OR_LESS"   # verified in kdevops
    assert len(result.warnings) == 1 and "CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_A6000_OR_LESS=y chosen over " \
        "CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_8X_A100_OR_LESS=y (two:5)" in result.warnings[0]


def test_smart_cheapest_mode_with_a_type_launches_that_type(tree):
    """kdevops hides the type under REGION_SMART_CHEAPEST and drops the line; its intent wins here."""
    (tree / "defconfigs" / "x").write_text("CONFIG_TERRAFORM=y\nCONFIG_TERRAFORM_LAMBDALABS=y\n"
                                           "CONFIG_TERRAFORM_LAMBDALABS_INSTANCE_TYPE_H100_OR_LESS=y\n")
    assert kbuild.defconfig("x").warnings == []
    s = kconfig_config.load_settings(tree / ".config")
    assert (s.selection.value, s.region_mode) == ("H100_OR_LESS", "smart-cheapest")


@pytest.mark.parametrize("lines, value, region", [
    (['CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE="1H100.80S.30V"'], "1H100.80S.30V", ""),
    (['CONFIG_TERRAFORM_DATACRUNCH_LOCATION="FIN-03"'], "H100_OR_LESS", "FIN-03"),        # kdevops drops it
    (["CONFIG_TERRAFORM_DATACRUNCH_LOCATION_ICE_01=y"], "H100_OR_LESS", "ICE-01"),
    (['CONFIG_TERRAFORM_DATACRUNCH_IMAGE="ubuntu-22.04"'], "H100_OR_LESS", ""),
])
def test_datacrunch_strings_set_in_a_defconfig_win_as_in_kdevops(tree, lines, value, region):
    (tree / "defconfigs" / "x").write_text("CONFIG_TERRAFORM=y\nCONFIG_TERRAFORM_DATACRUNCH=y\n" + "\n".join(lines) + "\n")
    assert kbuild.defconfig("x").warnings == []
    s = kconfig_config.load_settings(tree / ".config")
    assert (s.selection.value, s.selection.region) == (value, region)
    if "IMAGE" in lines[0]:
        assert s.image == "ubuntu-22.04"


def test_a_datacrunch_string_over_a_member_line_is_reported(tree):
    (tree / "defconfigs" / "x").write_text(
        "CONFIG_TERRAFORM=y\nCONFIG_TERRAFORM_DATACRUNCH=y\nCONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE_1V100_6V=y\n"
        'CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE="1B300.30V"\n')
    [warning] = kbuild.defconfig("x").warnings
    assert "x:4: CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE=\"1B300.30V\" overrides " \
           "CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE_1V100_6V=y (x:3)" in warning
    assert kconfig_config.load_settings(tree / ".config").selection.value == "1B300.30V"


def test_an_unknown_datacrunch_type_string_is_refused(tree):
    (tree / "defconfigs" / "x").write_text('CONFIG_TERRAFORM=y\nCONFIG_TERRAFORM_DATACRUNCH=y\n'
                                           'CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE="1X.H100.PCIE"\n')
    with pytest.raises(ConfigError, match="names an instance type the current Kconfig does not offer"):
        kbuild.defconfig("x")


def test_lines_kconfig_cannot_apply_are_named(tree):
    (tree / "defconfigs" / "x").write_text(
        "CONFIG_TERRAFORM=y\nCONFIG_TERRAFORM_LAMBDALABS=y\n"
        'CONFIG_TERRAFORM_LAMBDALABS_SSH_KEY_NAME_CUSTOM="mine"\n'          # needs SSH_KEY_SHARED
        "CONFIG_TERRAFORM_LAMBDALABS_REGION_SMART_INFER=y\nCONFIG_TERRAFORM_LAMBDALABS_REGION_US_EAST_1=y\n"
        "CONFIG_TERRAFORM_LAMBDALABS_SMART_INSTANCE=\"gpu_1x_a10\"\n")
    warnings = kbuild.defconfig("x").warnings
    assert len(warnings) == 3, warnings
    assert "x:3: CONFIG_TERRAFORM_LAMBDALABS_SSH_KEY_NAME_CUSTOM=\"mine\" not applied (not shown with this " \
           "configuration: depends on " in warnings[1] + warnings[0] + warnings[2]
    assert any("x:5: CONFIG_TERRAFORM_LAMBDALABS_REGION_US_EAST_1=y not applied (not shown with this configuration"
               in w for w in warnings)
    assert any("x:6: CONFIG_TERRAFORM_LAMBDALABS_SMART_INSTANCE is not a kcloud symbol; ignored" in w for w in warnings)


def test_unknown_symbols_in_dot_config_are_named_by_olddefconfig(tree, run_cli):
    kbuild.defconfig("lambdalabs")
    with open(tree / ".config", "a") as f:
        f.write("CONFIG_OLD_ONE=y\n# CONFIG_OLD_TWO is not set\n")
    code, out, err = run_cli("olddefconfig")
    assert code == 0
    assert [l for l in err.splitlines() if "OLD_" in l] == [
        f"warning: .config:{n}: CONFIG_OLD_{w} is not a kcloud symbol; ignored"
        for n, w in ((len((tree / ".config.old").read_text().splitlines()) - 1, "ONE"),
                     (len((tree / ".config.old").read_text().splitlines()), "TWO"))]
    code, out, err = run_cli("olddefconfig")
    assert code == 0 and err == ""                   # said once; the rewritten .config is clean


def test_an_empty_datacrunch_string_chooses_nothing_and_is_named(tree):
    """An older kcloud .config wrote IMAGE="" for the provider default: not an error."""
    (tree / ".config").write_text('CONFIG_TERRAFORM=y\nCONFIG_TERRAFORM_DATACRUNCH=y\n'
                                  'CONFIG_TERRAFORM_DATACRUNCH_IMAGE=""\nCONFIG_TERRAFORM_DATACRUNCH_IMAGE_DEFAULT=y\n')
    warnings = kbuild.olddefconfig().warnings
    assert kconfig_config.load_settings(tree / ".config").image == "ubuntu-24.04-cuda-12.8-open-docker"
    assert len(warnings) == 2 and "CONFIG_TERRAFORM_DATACRUNCH_IMAGE=\"\" not applied" in warnings[1]
    assert ".config:4: CONFIG_TERRAFORM_DATACRUNCH_IMAGE_DEFAULT is not a kcloud symbol" in warnings[0]


@pytest.mark.parametrize("name", DEFCONFIGS)
def test_kdevops_defconfigs_load_the_same_with_live_fragments(tree, no_network, name):
    """After make cloud-config the same lines are kept (a live catalog never drops a member)."""
    from kconfig_helpers import fake_live
    from kcloud.kconfig import generate, paths
    for p in providers.names():
        live = fake_live(p, drop=tuple(list(providers.snapshot(p).types)[:5]))
        live.images = []
        generate.write_set(generate.fragment_files(tree, p, paths.GENERATED, generate.render(p, live)))
    install(tree, name)
    result = kbuild.defconfig(name)
    assert [w for w in result.warnings if not re.search(r"CONFIG_(KDEVOPS_WORKFLOW_DEDICATE_VLLM|VLLM_)", w)] == []
    values = kconfig_config.read_config(tree / ".config")
    provider = "datacrunch" if name.startswith("datacrunch") else "lambdalabs"
    assert values[f"TERRAFORM_{provider.upper()}_INSTANCE_TYPE"] == EXPECTED[name][0]


def test_cli_takes_a_base_plus_fragment_name(tree, run_cli):
    (tree / "configs").mkdir()
    shutil.copy(KDEVOPS / "configs" / "lambdalabs-gpu-1x-a10.config", tree / "configs")
    code, out, err = run_cli("defconfig", "lambdalabs-h100-or-less+lambdalabs-gpu-1x-a10")
    assert code == 0, err
    s = kconfig_config.load_settings(tree / ".config")
    assert s.selection.value == "H100_OR_LESS"          # kdevops: the tier bool beats the fragment's type
