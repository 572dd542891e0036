"""The shared GPU-class ladder: consistent with every provider's own tier order, and one plan
over several providers ordered by class, then price, then region."""
import pytest

from kcloud import ladder, providers, tiers
from kcloud.catalog import Catalog


def test_every_provider_hierarchy_agrees_with_the_ladder():
    for name in providers.names():
        for hierarchy in providers.data(name)["hierarchies"].values():
            ranks = []
            for tier, patterns in hierarchy.items():
                cat = providers.snapshot(name)
                types = [t for t in cat.types if any(__import__("fnmatch").fnmatchcase(t, p) for p in patterns)]
                got = {ladder.classes_of(name, t) for t in types} - {None}
                assert got, f"{name} tier {tier} ({types}) has no ladder class"
                ranks.append(min(got))
            assert ranks == sorted(ranks), f"{name}: {list(hierarchy)} -> ladder ranks {ranks}"


def _cat(name, capacity):
    snap = providers.snapshot(name)
    return Catalog(name, snap.types, snap.regions, capacity, snap.images)


def test_one_list_across_providers_class_then_price():
    cats = {"lambdalabs": _cat("lambdalabs", {"gpu_1x_h100_sxm5": ("us-east-1",), "gpu_1x_a10": ("us-west-1",)}),
            "datacrunch": _cat("datacrunch", {"1H100.80S.30V": ("FIN-01",), "1A100.40S.22V": ("FIN-01",)})}
    p = ladder.plan("h100-or-less", cats, location=None)
    order = [(c.provider, c.instance_type) for c in p.candidates]
    # Both H100 SXM first (DataCrunch's is cheaper), then A100 40 GB SXM, then A10.
    assert order == [("datacrunch", "1H100.80S.30V"), ("lambdalabs", "gpu_1x_h100_sxm5"),
                     ("datacrunch", "1A100.40S.22V"), ("lambdalabs", "gpu_1x_a10")]
    assert [b[0] for b in ladder.blocks(p.candidates)] == ["datacrunch", "lambdalabs", "datacrunch", "lambdalabs"]
    text = "\n".join(ladder.trace(p))
    assert "datacrunch:1H100.80S.30V" in text and "lambdalabs:gpu_1x_h100_sxm5" in text


def test_a_higher_tier_on_one_cloud_beats_a_cheaper_lower_one_elsewhere():
    cats = {"lambdalabs": _cat("lambdalabs", {"gpu_1x_gh200": ("us-east-1",)}),
            "datacrunch": _cat("datacrunch", {"1H100.80S.30V": ("FIN-01",)})}
    p = ladder.plan("any-b200-or-less", cats, location=None)
    assert p.candidates[0].provider == "lambdalabs" and p.candidates[0].instance_type == "gpu_1x_gh200"


def test_price_ceiling_and_unknown_group():
    cats = {"lambdalabs": _cat("lambdalabs", {"gpu_1x_h100_sxm5": ("us-east-1",)})}
    assert ladder.plan("h100-or-less", cats, max_price=1.0, location=None).candidates == []
    with pytest.raises(Exception, match="unknown cross-provider group"):
        ladder.plan("h900-or-less", cats, location=None)
    assert tiers.Candidate("a", "b", "c", 1.0).provider == ""
