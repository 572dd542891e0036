"""Rendered fragments: no drift from the snapshot, every data entry present, live marks."""
import re
from pathlib import Path

import pytest

from kconfig_helpers import REPO, fake_live
from kcloud import providers
from kcloud.catalog import Catalog, InstanceType
from kcloud.errors import ConfigError
from kcloud.kconfig import generate, kbuild, paths

PROVIDERS = providers.names()


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("kind", paths.KINDS)
def test_committed_defaults_equal_the_snapshot_rendering(provider, kind):
    committed = paths.fragment_path(REPO, provider, kind, paths.DEFAULT).read_text(encoding="utf-8")
    assert committed == generate.render_offline(provider)[kind], (
        f"{provider} Kconfig.{kind}.default drifted from the snapshot: "
        "run scripts/kcloud cloud-config --offline and commit the result")


def test_regenerating_defaults_is_byte_identical(tmp_path):
    generate.regenerate_defaults(tmp_path)
    for p in PROVIDERS:
        for kind in paths.KINDS:
            assert (paths.fragment_path(tmp_path, p, kind, paths.DEFAULT).read_bytes() ==
                    paths.fragment_path(REPO, p, kind, paths.DEFAULT).read_bytes())


def test_symbol_suffix():
    assert generate.symbol_suffix("gpu_1x_h100_sxm5") == "GPU_1X_H100_SXM5"
    assert generate.symbol_suffix("1H100.80S.30V") == "1H100_80S_30V"
    assert generate.symbol_suffix("us-west-1") == "US_WEST_1"


@pytest.fixture(scope="module")
def kconf():
    return kbuild.load_kconfig(REPO if not any(
        paths.flavour(REPO, p) == paths.GENERATED for p in PROVIDERS) else _default_copy())


def _default_copy():
    import tempfile
    from kconfig_helpers import copy_tree
    return copy_tree(Path(tempfile.mkdtemp(prefix="kcloud-kconf-")) / "tree")


def _member(cond, prefix):
    """The choice member in a default's condition (the `if TERRAFORM_<P>` adds an AND)."""
    import kconfiglib
    return next(s.name for s in kconfiglib.expr_items(cond) if s.name.startswith(prefix))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_group_wildcard_and_type_is_a_choice_member(kconf, provider):
    d = providers.data(provider)
    P = f"TERRAFORM_{provider.upper()}"
    choice = kconf.syms[f"{P}_INSTANCE_TYPE_SMART_CHEAPEST"].choice
    members = {s.name for s in choice.syms}
    expected = {"SMART_CHEAPEST", *d["tier_groups"], *d.get("wildcards", {}),
                *(generate.symbol_suffix(n) for n in providers.snapshot(provider).types)}
    assert members == {f"{P}_INSTANCE_TYPE_{s}" for s in expected}
    derived = kconf.syms[f"{P}_INSTANCE_TYPE"]
    values = {_member(cond, f"{P}_INSTANCE_TYPE_"): value.name for value, cond in derived.defaults}
    for group in d["tier_groups"]:
        assert values[f"{P}_INSTANCE_TYPE_{group}"] == group
    for name in providers.snapshot(provider).types:
        assert values[f"{P}_INSTANCE_TYPE_{generate.symbol_suffix(name)}"] == name
    assert values[f"{P}_INSTANCE_TYPE_SMART_CHEAPEST"] == "cheapest"
    loc = generate.location_settings(provider)
    sym = loc["symbol"]
    regions = {f"{P}_{sym}_{generate.symbol_suffix(r)}" for r in providers.snapshot(provider).regions}
    region = kconf.syms[next(iter(regions))].choice
    auto = {f"{P}_{sym}_{loc['auto']}"} if loc.get("auto") else set()
    assert {s.name for s in region.syms} == regions | auto
    image = kconf.syms[f"{P}_IMAGE"]
    assert {_member(cond, f"{P}_IMAGE_") for _, cond in image.defaults} == {s.name for s in kconf.syms[
        _member(image.defaults[0][1], f"{P}_IMAGE_")].choice.syms}


def test_no_shell_and_only_the_fragment_variable_in_the_tree():
    files = [REPO / "Kconfig", *(REPO / "kconfigs").glob("Kconfig*")]
    for p in PROVIDERS:
        files += list(paths.fragment_dir(REPO, p).glob("Kconfig*"))
    for f in files:
        text = "\n".join(l for l in f.read_text(encoding="utf-8").splitlines()
                          if not l.lstrip().startswith("#"))
        assert "$(shell" not in text, f
        for var in re.findall(r"\$\(([^)]*)\)", text):     # variables kcloud's loader sets, or KEEP/USER
            assert re.fullmatch(r"KCLOUD_[A-Z0-9]+_FRAGMENTS|KCLOUD_TOPDIR_SHA8|KCLOUD_[A-Z0-9]+_SSH_KEY_NAME"
                                r"|KEEP|USER", var), (f, var)


def test_offline_render_has_no_marks_live_render_has_them():
    offline = generate.render_offline("lambdalabs")["compute"]
    assert "\u2713" not in offline and "\u2717" not in offline
    live = fake_live("lambdalabs", sold_out=("gpu_1x_a10",))
    text = generate.render("lambdalabs", live)["compute"]
    line = next(l for l in text.splitlines() if '"gpu_1x_h100_sxm5:' in l)
    assert "H100" in line and "80 GB VRAM" in line and "$4.29/h" in line
    assert line.endswith('\u2713 us-west-1, us-west-2"')
    assert next(l for l in text.splitlines() if '"gpu_1x_a10:' in l).endswith('\u2717 sold out"')


def test_live_render_keeps_types_the_api_no_longer_lists():
    live = fake_live("datacrunch", drop=("1V100.6V",))
    text = generate.render("datacrunch", live)["compute"]
    assert "config TERRAFORM_DATACRUNCH_INSTANCE_TYPE_1V100_6V" in text
    assert "\u2717 not offered" in next(l for l in text.splitlines() if '"1V100.6V:' in l)


def test_live_region_and_image_members_are_added():
    live = fake_live("lambdalabs")
    live.regions["us-new-9"] = "Somewhere new"
    live.capacity["gpu_1x_a10"] = ("us-new-9",)
    from kcloud.catalog import Image
    live.images = [Image("lambda-stack-24-04", "Lambda Stack 24.04")]
    out = generate.render("lambdalabs", live)
    assert "config TERRAFORM_LAMBDALABS_REGION_US_NEW_9" in out["location"]
    assert 'default "us-new-9" if TERRAFORM_LAMBDALABS_REGION_US_NEW_9' in out["location"]
    assert 'default "lambda-stack-24-04" if TERRAFORM_LAMBDALABS_IMAGE_LAMBDA_STACK_24_04' in out["images"]


def test_colliding_type_names_are_refused():
    live = fake_live("lambdalabs")
    t = live.types["gpu_1x_a10"]
    live.types["gpu.1x.a10"] = InstanceType("gpu.1x.a10", t.gpu, 1, 24, 30, 200, 1.0)
    with pytest.raises(ConfigError, match="same Kconfig symbol"):
        generate.render("lambdalabs", live)


def test_hostile_api_strings_cannot_inject_kconfig(tree, no_network):
    """Quotes, backslashes, newlines and $(shell ...) from an API end up as inert text."""
    live = fake_live("lambdalabs")
    evil = InstanceType("gpu_1x_evil", 'X" \n config FOO\n $(shell,touch pwned) \\', 1, 8, 1, 1, 0.1,
                        description="line\nbreak $(shell,id)")
    live.types[evil.name] = evil
    generate.write_set(generate.fragment_files(tree, "lambdalabs", paths.GENERATED,
                                               generate.render("lambdalabs", live)))
    k = kbuild.load_kconfig(tree)
    assert "FOO" not in k.syms or not k.syms["FOO"].nodes
    prompt = k.syms["TERRAFORM_LAMBDALABS_INSTANCE_TYPE_GPU_1X_EVIL"].nodes[0].prompt[0]
    assert "$ (shell,touch pwned)" in prompt and not (tree / "pwned").exists()


def test_eight_gpu_selections_get_the_long_boot_timeout(tree):
    k = kbuild.load_kconfig(tree)
    for sym, expected in (("TERRAFORM_LAMBDALABS_INSTANCE_TYPE_8X_H100_OR_LESS", "1800"),
                          ("TERRAFORM_LAMBDALABS_INSTANCE_TYPE_ANY_8H100", "1800"),
                          ("TERRAFORM_LAMBDALABS_INSTANCE_TYPE_GPU_8X_A100", "1800"),
                          ("TERRAFORM_LAMBDALABS_INSTANCE_TYPE_H100_OR_LESS", "600"),
                          ("TERRAFORM_LAMBDALABS_INSTANCE_TYPE_SMART_CHEAPEST", "600")):
        k.syms["TERRAFORM_LAMBDALABS"].set_value("y")
        k.syms[sym].set_value("y")
        assert k.syms["TERRAFORM_BOOT_TIMEOUT"].str_value == expected, sym


def test_flavour_is_generated_only_when_every_generated_fragment_exists(tree):
    assert paths.kconfig_env(tree)["KCLOUD_LAMBDALABS_FRAGMENTS"] == "default"
    texts = generate.render("lambdalabs", fake_live("lambdalabs"))
    files = generate.fragment_files(tree, "lambdalabs", paths.GENERATED, texts)
    generate.write_set(files)
    assert paths.kconfig_env(tree)["KCLOUD_LAMBDALABS_FRAGMENTS"] == "generated"
    assert paths.kconfig_env(tree)["KCLOUD_DATACRUNCH_FRAGMENTS"] == "default"
    next(iter(files)).unlink()
    assert paths.kconfig_env(tree)["KCLOUD_LAMBDALABS_FRAGMENTS"] == "default"


def test_live_help_says_when_capacity_was_read_not_now():
    """menuconfig shows what `make cloud-config` saw, dated: the help never claims "now"."""
    live = fake_live("lambdalabs", sold_out=("gpu_1x_a10",))
    when = "2026-01-02 03:04 UTC"
    out = generate.render("lambdalabs", live, fetched_at=when)
    for kind, text in out.items():
        help_text = "\n".join(l for l in text.splitlines() if l.startswith("\t  "))
        assert not re.search(r"\bnow\b", help_text), (kind, [l for l in help_text.splitlines() if "now" in l])
    assert f"Capacity at {when}: us-west-1, us-west-2" in out["compute"]
    assert f"Capacity at {when}: none" in out["compute"]
    assert f"regions with capacity at {when}" in out["compute"]
    assert f"instance types with capacity at {when}" in out["location"]
    assert f"at {when} by `make cloud-config`" in out["compute"]


def test_live_images_keep_the_snapshot_images_and_the_default():
    from kcloud.catalog import Image
    live = fake_live("datacrunch")
    live.images = [Image("ubuntu-24.04-cuda-13.0-open-docker", "Ubuntu 24.04 + CUDA 13.0 Open + Docker")]
    text = generate.render("datacrunch", live)["images"]
    assert "default TERRAFORM_DATACRUNCH_IMAGE_UBUNTU_24_04_CUDA_12_8_OPEN_DOCKER" in text
    line = next(l for l in text.splitlines() if '"Ubuntu 22.04 (ubuntu-22.04)' in l)
    assert "\u2717 not offered" in line
    assert "not offered" not in next(l for l in text.splitlines() if "(ubuntu-24.04-cuda-13.0-open-docker)" in l)
