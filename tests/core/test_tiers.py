import pytest

from kcloud import providers, tiers
from kcloud.errors import ConfigError


def catalog(provider, capacity):
    c = providers.snapshot(provider)
    c.capacity = capacity
    return c


def test_group_falls_back_in_tier_order_then_price_then_region_preference():
    c = catalog("lambdalabs", {"gpu_1x_a10": ("us-west-1",), "gpu_1x_a100": ("us-east-1", "us-west-1"),
                               "gpu_1x_gh200": ("us-west-1",)})   # gh200 is above h100-or-less
    p = tiers.plan("lambdalabs", tiers.parse("lambdalabs", "h100-or-less"), c)
    assert [(x.instance_type, x.region) for x in p.candidates] == [
        ("gpu_1x_a100", "us-west-1"), ("gpu_1x_a100", "us-east-1"), ("gpu_1x_a10", "us-west-1")]
    out = "\n".join(tiers.trace(p))
    assert "Tiers to check (highest to lowest): h100-sxm, h100-pcie, a100-sxm, a100, a6000, rtx6000, a10" in out
    assert "Checking gpu_1x_h100_sxm5... \u2717 not available" in out
    assert "Selected: gpu_1x_a100 in us-west-1 (tier: a100)" in out


def test_datacrunch_wildcard_takes_any_1x_h100_variant_cheapest_first():
    c = catalog("datacrunch", {"1H100.80S.32V": ("FIN-01",), "1H100.80S.30V": ("FIN-03",), "2H100.80S.80V": ("FIN-01",)})
    sel = tiers.parse("datacrunch", "ANY_1H100")
    assert sel.kind == tiers.WILDCARD
    assert [x.instance_type for x in tiers.plan("datacrunch", sel, c).candidates] == ["1H100.80S.30V", "1H100.80S.32V"]


def test_price_ceiling_skips_expensive_tiers_and_says_so():
    c = catalog("datacrunch", {"1B300.30V": ("FIN-01",), "1V100.6V": ("FIN-01",)})
    p = tiers.plan("datacrunch", tiers.parse("datacrunch", "b300-or-less", max_price=2.0), c)
    assert [x.instance_type for x in p.candidates] == ["1V100.6V"]
    assert "skipped, over the $2.00/h price ceiling" in "\n".join(tiers.trace(p, full=True))


def test_pinned_region_is_the_only_region():
    c = catalog("lambdalabs", {"gpu_1x_a10": ("us-west-1", "us-east-1")})
    p = tiers.plan("lambdalabs", tiers.parse("lambdalabs", "a6000-or-less", region="us-east-1"), c)
    assert [x.region for x in p.candidates] == ["us-east-1"]


def test_unknown_group_or_type_is_a_clear_error():
    c = catalog("lambdalabs", {})
    with pytest.raises(ConfigError, match="unknown instance type or tier group 'h200-or-more'") as e:
        tiers.plan("lambdalabs", tiers.parse("lambdalabs", "h200-or-more"), c)
    assert "h100-or-less" in e.value.line()


def test_nothing_available_gives_advice():
    p = tiers.plan("datacrunch", tiers.parse("datacrunch", "h100-or-less"), catalog("datacrunch", {}))
    assert p.candidates == []
    assert "wider tier group" in tiers.no_capacity_advice(p)


@pytest.mark.parametrize("provider", providers.names())
def test_every_tier_names_types_that_exist(provider):
    """Data cannot drift from the catalog: every tier pattern matches at least one known type."""
    d = providers.data(provider)
    snap = providers.snapshot(provider)
    for hierarchy in d["hierarchies"].values():
        for tier, patterns in hierarchy.items():
            assert tiers._matching(snap, patterns), f"{provider} tier {tier} matches no instance type"
    for group in d["tier_groups"].values():
        assert group["from"] in d["hierarchies"][group["hierarchy"]]


def test_seed_tier_orders():
    assert tiers._group_tiers(providers.data("lambdalabs"), "8X_B200_OR_LESS") == \
        ["8x-b200", "8x-h100", "8x-a100-80", "8x-a100", "8x-v100"]
    assert tiers._group_tiers(providers.data("datacrunch"), "H100_OR_LESS") == \
        ["h100", "a100-80", "a100-40", "rtx-pro-6000", "rtx-6000-ada", "l40s", "a6000", "v100"]
