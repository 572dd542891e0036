"""A provider's Kconfig wrappers (Kconfig, Kconfig.provider, the fallback defconfig) are derived
from its data file (kcloud.kconfig.wrappers): never committed, rendered by every Kconfig target
when missing or stale, so a new provider needs no Kconfig file of its own (issue 7, item 8)."""
import shutil
import subprocess

import pytest

from kconfig_helpers import REPO
from kcloud import providers
from kcloud.errors import ConfigError
from kcloud.kconfig import config as kconfig_config
from kcloud.kconfig import kbuild, paths, wrappers


@pytest.mark.parametrize("provider", providers.names())
def test_wrappers_are_rendered_and_git_ignored(tree, provider):
    kconfig_dir = tree / "terraform" / provider / "kconfigs"
    for name in wrappers.WRAPPERS:
        (kconfig_dir / name).unlink(missing_ok=True)
    kbuild.load_kconfig(tree)
    for name, text in wrappers.render(provider).items():
        assert (kconfig_dir / name).read_text() == text
        ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", f"terraform/{provider}/kconfigs/{name}"], cwd=REPO)
        assert ignored.returncode == 0, f"{name} must be git-ignored (it is derived)"
    (kconfig_dir / "Kconfig").write_text("# stale\n")
    assert wrappers.ensure(tree) == [str(kconfig_dir / "Kconfig")]
    assert wrappers.ensure(tree) == []                     # nothing to do when current


def test_kdevops_symbols_of_each_provider_come_from_data(tree):
    kconf = kbuild.load_kconfig(tree)
    for sym in ("TERRAFORM_LAMBDALABS_REGION_SMART_CHEAPEST", "TERRAFORM_LAMBDALABS_SMART_CHEAPEST",
                "TERRAFORM_LAMBDALABS_SSH_KEY_SHARED", "TERRAFORM_DATACRUNCH_SSH_KEY_MANUAL",
                "TERRAFORM_DATACRUNCH_KEEP_VOLUMES", "TERRAFORM_DATACRUNCH_API_KEY_FILE",
                "TERRAFORM_DATACRUNCH_SSH_KEY_FILE"):
        assert kconf.syms[sym].nodes, sym
    for sym in ("TERRAFORM_LAMBDALABS_KEEP_VOLUMES", "TERRAFORM_DATACRUNCH_SSH_KEY_SHARED",
                "TERRAFORM_DATACRUNCH_REGION_SMART_CHEAPEST"):
        assert not kconf.syms.get(sym) or not kconf.syms[sym].nodes, sym


def test_a_provider_without_any_kconfig_file_still_loads(tree):
    """Wrappers and .default fragments missing (a provider just added): a defconfig renders them
    instead of failing with a hint to run cloud-config."""
    shutil.rmtree(tree / "terraform" / "datacrunch" / "kconfigs")
    result = kbuild.defconfig("datacrunch-h100-pytorch-or-less")
    assert result.warnings == []
    assert kconfig_config.load_settings(tree / ".config").provider == "datacrunch"
    assert paths.flavour(tree, "datacrunch") == paths.DEFAULT
    assert (tree / "terraform/datacrunch/kconfigs/Kconfig.compute.default").is_file()


def test_defconfig_named_after_a_provider_needs_no_file(tree):
    for p in tree.glob("defconfigs/datacrunch*"):
        p.unlink()
    kbuild.defconfig("datacrunch")
    settings = kconfig_config.load_settings(tree / ".config")
    assert settings.provider == "datacrunch" and settings.selection.value == "H100_OR_LESS"
    with pytest.raises(ConfigError, match="no defconfig named 'datacrunchx'"):
        kbuild.defconfig("datacrunchx")


@pytest.mark.parametrize("name", ["../etc", "Lambda", "lambda-labs", "x", "lambdalabs;rm", "", None, "a" * 40])
def test_provider_names_are_validated(name):
    with pytest.raises(ConfigError, match="is not a provider name"):
        providers.check_name(name)
    with pytest.raises(ConfigError):
        providers.data(name)


def test_unknown_extras_in_a_data_file_are_named(monkeypatch):
    real = providers.data("lambdalabs")
    fake = {**real, "kconfig": {**real["kconfig"], "extras": ["region_methods", "warp_drive"]}}
    monkeypatch.setattr(providers, "data", lambda name: fake)
    with pytest.raises(ConfigError, match="unknown extras or menus: warp_drive"):
        wrappers.render("lambdalabs")
