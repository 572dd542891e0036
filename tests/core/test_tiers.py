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


# -- closest region, offline (kcloud.geo) ---------------------------------------------------
from pathlib import Path  # noqa: E402

from kcloud import geo  # noqa: E402

BERLIN = geo.Location(52.5, 13.4, "Europe/Berlin", "test")
TOKYO = geo.Location(35.7, 139.7, "Asia/Tokyo", "test")


@pytest.fixture(autouse=True)
def _no_machine_location(monkeypatch):
    """Plans must not depend on this machine's time zone: UTC names no place."""
    monkeypatch.delenv(geo.ENV, raising=False)
    monkeypatch.setenv("TZ", "Etc/UTC")


def test_regions_are_ranked_by_distance_from_the_user():
    c = catalog("lambdalabs", {"gpu_1x_a10": ("us-west-1", "asia-northeast-1", "europe-central-1")})
    sel = tiers.parse("lambdalabs", "gpu_1x_a10")
    assert [x.region for x in tiers.plan("lambdalabs", sel, c, TOKYO).candidates] == [
        "asia-northeast-1", "us-west-1", "europe-central-1"]
    assert [x.region for x in tiers.plan("lambdalabs", sel, c, BERLIN).candidates] == [
        "europe-central-1", "asia-northeast-1", "us-west-1"]
    # unknown location: the provider's region preference
    assert [x.region for x in tiers.plan("lambdalabs", sel, c, None).candidates] == [
        "us-west-1", "europe-central-1", "asia-northeast-1"]


def test_tier_order_and_price_still_come_before_distance():
    c = catalog("lambdalabs", {"gpu_1x_a100": ("us-west-1",), "gpu_1x_a10": ("europe-central-1",)})
    p = tiers.plan("lambdalabs", tiers.parse("lambdalabs", "h100-or-less"), c, BERLIN)
    assert [(x.instance_type, x.region) for x in p.candidates] == [
        ("gpu_1x_a100", "us-west-1"), ("gpu_1x_a10", "europe-central-1")]


def test_equal_distances_fall_back_to_region_preference():
    c = catalog("datacrunch", {"1V100.6V": ("FIN-03", "ICE-01", "FIN-01")})
    p = tiers.plan("datacrunch", tiers.parse("datacrunch", "1V100.6V"), c, BERLIN)
    assert [x.region for x in p.candidates] == ["FIN-01", "FIN-03", "ICE-01"]
    reykjavik = geo.Location(64.1, -21.9, "Atlantic/Reykjavik", "test")
    assert tiers.plan("datacrunch", tiers.parse("datacrunch", "1V100.6V"), c, reykjavik).candidates[0].region == "ICE-01"


def test_every_region_of_every_provider_has_coordinates():
    for provider in providers.names():
        coords = providers.data(provider)["region_coordinates"]
        assert set(providers.snapshot(provider).regions) <= set(coords), provider
        for lat, lon in coords.values():
            assert -90 <= lat <= 90 and -180 <= lon <= 180


def test_distance_is_great_circle():
    assert geo.distance_km(52.52, 13.40, 48.86, 2.35) == pytest.approx(878, abs=5)      # Berlin-Paris
    assert geo.distance_km(35.68, 139.69, 37.77, -122.42) == pytest.approx(8270, abs=30)  # across the date line
    assert geo.distance_km(10, 20, 10, 20) == 0


@pytest.mark.parametrize("value, label, lat", [
    ("52.5,13.4", "52.5,13.4", 52.5), (" -33.9 , 151.2 ", "-33.9,151.2", -33.9),
    ("us-east-1", "us-east-1", 39.04), ("FIN-01", "FIN-01", 60.17), ("fin-01", "FIN-01", 60.17),
    ("Asia/Tokyo", "Asia/Tokyo", 35.7)])
def test_kcloud_location_override(value, label, lat):
    loc = geo.assumed({geo.ENV: value, "TZ": "America/Chicago"})
    assert (loc.label, loc.lat) == (label, lat) and geo.ENV in loc.why


@pytest.mark.parametrize("value", ["somewhere", "91,0", "0,181", "us-nowhere-9", "Mars/Olympus"])
def test_a_bad_kcloud_location_is_one_clear_error(value):
    with pytest.raises(ConfigError, match=f"{geo.ENV}=") as e:
        geo.assumed({geo.ENV: value})
    assert "e.g." in e.value.line()


def test_location_from_the_tz_variable_and_its_forms():
    assert geo.assumed({"TZ": "Europe/Berlin"}).label == "Europe/Berlin"
    assert geo.assumed({"TZ": ":Europe/Berlin"}).lat == 52.5
    assert geo.assumed({"TZ": "/usr/share/zoneinfo/Asia/Tokyo"}).label == "Asia/Tokyo"
    assert "TZ environment variable" in geo.assumed({"TZ": "Europe/Berlin"}).why
    area = geo.assumed({"TZ": "America/Boa_Vista"})         # not in the table: its area
    assert "somewhere in America" in area.label and area.lon < -60


def test_location_from_the_system_time_zone(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "localtime").symlink_to("/usr/share/zoneinfo/Australia/Sydney")
    loc = geo.assumed({}, root)
    assert loc.label == "Australia/Sydney" and str(root / "etc" / "localtime") in loc.why
    (root / "etc" / "localtime").unlink()
    (root / "etc" / "timezone").write_text("Europe/Helsinki\n")
    assert geo.assumed({}, root).label == "Europe/Helsinki"
    (root / "etc" / "timezone").write_text("Etc/UTC\n")
    assert geo.assumed({}, root) is None
    assert "names no place" in geo.unknown_reason({}, root)
    (root / "etc" / "timezone").unlink()
    assert geo.assumed({}, root) is None and geo.unknown_reason({}, root) == "no system time zone found"


def test_the_trace_says_which_location_was_assumed_and_why(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    c = catalog("datacrunch", {"1V100.6V": ("ICE-01", "FIN-01")})
    out = "\n".join(tiers.trace(tiers.plan("datacrunch", tiers.parse("datacrunch", "1V100.6V"), c)))
    assert "Location: assumed near Europe/Berlin (52.5N, 13.4E), from the time zone Europe/Berlin " \
           "(the TZ environment variable); set KCLOUD_LOCATION" in out
    assert "Regions, closest first: FIN-01 (1,1" in out
    assert "Selected: 1V100.6V in FIN-01" in out
    monkeypatch.setenv(geo.ENV, "64,-22")
    out = "\n".join(tiers.trace(tiers.plan("datacrunch", tiers.parse("datacrunch", "1V100.6V"), c)))
    assert "from KCLOUD_LOCATION" in out and "Selected: 1V100.6V in ICE-01" in out
    monkeypatch.delenv(geo.ENV)
    monkeypatch.setenv("TZ", "Etc/UTC")
    out = "\n".join(tiers.trace(tiers.plan("datacrunch", tiers.parse("datacrunch", "1V100.6V"), c)))
    assert "Location: unknown (the time zone Etc/UTC (the TZ environment variable) names no place); " \
           "regions in the provider's preference order" in out


def test_pinned_region_failure_names_the_regions_with_capacity():
    c = catalog("lambdalabs", {"gpu_1x_a10": ("us-west-1", "europe-central-1"), "gpu_1x_a6000": ("us-south-1",)})
    p = tiers.plan("lambdalabs", tiers.parse("lambdalabs", "a6000-or-less", region="us-east-1"), c, BERLIN)
    assert p.candidates == []
    advice = tiers.no_capacity_advice(p)
    assert "no capacity for tier group a6000-or-less in us-east-1 (pinned); capacity now in: " \
           "europe-central-1, us-south-1, us-west-1" in advice
    assert "Region: us-east-1 only" in "\n".join(tiers.trace(p))
    p = tiers.plan("lambdalabs", tiers.parse("lambdalabs", "gpu_1x_h100_sxm5", region="us-east-1"), c, None)
    assert "nor in any other region" in tiers.no_capacity_advice(p)


def test_messages_spell_type_names_as_the_commands_accept_them():
    p = tiers.plan("datacrunch", tiers.parse("datacrunch", "1B300.30V"), catalog("datacrunch", {}), None)
    assert p.label == "1B300.30V"
    assert "no capacity for 1B300.30V in any region" in tiers.no_capacity_advice(p)
    assert "Checking instance type: 1B300.30V" in tiers.trace(p)[0]
    assert tiers.plan("datacrunch", tiers.parse("datacrunch", "H100_OR_LESS"), catalog("datacrunch", {}),
                      None).label == "h100-or-less"


def test_zone_table_is_data():
    data = geo._zones()
    assert Path(geo.ZONES_FILE).is_file() and "Europe/Berlin" in data["zones"] and "Europe" in data["areas"]
    assert not [z for z in data["zones"] if z.startswith("Etc/") or z in ("UTC", "GMT")]
