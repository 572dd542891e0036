"""The shipped offline catalog is complete: every type, region and image of the reference
(shared/reference/kdevops-kconfig.md 2.1-2.6 and api-contracts.md 1.4/2.4) is in the snapshot
and therefore a choice of the committed .default fragments, selectable without network."""
import pytest

from kcloud import providers
from kcloud.kconfig import config as kconfig_config
from kcloud.kconfig import generate, kbuild

# kdevops-kconfig.md 2.1: the 20 names Kconfig.compute maps (and the shipped .default members).
LAMBDA_KDEVOPS_TYPES = """cpu_4x_general gpu_1x_a10 gpu_1x_a100 gpu_1x_a100_sxm4 gpu_1x_a6000 gpu_1x_gh200
    gpu_1x_h100_pcie gpu_1x_h100_sxm5 gpu_1x_rtx6000 gpu_2x_a100 gpu_2x_a6000 gpu_2x_h100_sxm5 gpu_4x_a100
    gpu_4x_a6000 gpu_4x_h100_sxm5 gpu_8x_a100 gpu_8x_a100_80gb_sxm4 gpu_8x_b200_sxm6 gpu_8x_h100_sxm5
    gpu_8x_v100""".split()
# api-contracts.md 1.4: the further names of the rate map.
LAMBDA_CONTRACT_TYPES = "gpu_1x_b200_sxm6 gpu_2x_b200_sxm6 gpu_4x_b200_sxm6 gpu_8x_v100_n cpu_4x_generalx".split()
# kdevops-kconfig.md 2.2 (symbol suffix -> region) and api-contracts.md 1.4 region codes.
LAMBDA_KDEVOPS_REGIONS = {
    "US_TX_1": "us-tx-1", "US_MIDWEST_1": "us-midwest-1", "US_WEST_1": "us-west-1", "US_WEST_2": "us-west-2",
    "US_WEST_3": "us-west-3", "US_SOUTH_1": "us-south-1", "US_SOUTH_2": "us-south-2", "US_SOUTH_3": "us-south-3",
    "US_EAST_1": "us-east-1", "US_EAST_3": "us-east-3", "EU_CENTRAL_1": "europe-central-1",
    "ASIA_NORTHEAST_1": "asia-northeast-1", "ASIA_NORTHEAST_2": "asia-northeast-2",
    "ASIA_SOUTH_1": "asia-south-1", "ME_WEST_1": "me-west-1", "AUSTRALIA_EAST_1": "australia-east-1"}
LAMBDA_CONTRACT_REGIONS = """asia-northeast-1 asia-northeast-2 asia-south-1 australia-east-1 europe-central-1
    me-west-1 us-east-1 us-east-2 us-east-3 us-midwest-1 us-midwest-2 us-south-1 us-south-2 us-south-3
    us-west-1 us-west-2 us-west-3""".split()
# kdevops-kconfig.md 2.4: the 20 members of the shipped DataCrunch compute fragment.
DATACRUNCH_KDEVOPS_MEMBERS = {
    "1A100_40S_22V": "1A100.40S.22V", "2A100_40S_44V": "2A100.40S.44V", "4A100_40S_88V": "4A100.40S.88V",
    "8A100_40S_176V": "8A100.40S.176V", "B300_OR_LESS": "B300_OR_LESS", "B200_OR_LESS": "B200_OR_LESS",
    "H100_OR_LESS": "H100_OR_LESS", "A100_80_OR_LESS": "A100_80_OR_LESS", "A100_40_OR_LESS": "A100_40_OR_LESS",
    "ANY_1H100": "ANY_1H100", "1H100_80S_30V": "1H100.80S.30V", "1H100_80S_32V": "1H100.80S.32V",
    "2H100_80S_80V": "2H100.80S.80V", "4H100_80S_176V": "4H100.80S.176V", "8H100_80S_176V": "8H100.80S.176V",
    "1B200_30V": "1B200.30V", "1B300_30V": "1B300.30V", "1V100_6V": "1V100.6V", "4B200_120V": "4B200.120V",
    "4B300_120V": "4B300.120V"}
# api-contracts.md 2.4: every known DataCrunch type name.
DATACRUNCH_CONTRACT_TYPES = """1B300.30V 2B300.60V 4B300.120V 1B200.30V 2B200.60V 4B200.120V 8B200.240V
    1H200.141S.44V 2H200.141S.88V 1H100.80S.30V 1H100.80S.32V 2H100.80S.80V 4H100.80S.176V 8H100.80S.176V
    1A100.22V 4A100.88V 1A100.80S.22V 1A100.40S.22V 2A100.40S.44V 4A100.40S.88V 8A100.40S.176V
    1RTXPRO6000.30V 2RTXPRO6000.60V 4RTXPRO6000.120V 8RTXPRO6000.240V 1RTX6000ADA.10V 2RTX6000ADA.20V
    1L40S.20V 1A6000.10V 1V100.6V 8V100.48V CPU.4V.16G CPU.8V.32G CPU.16V.64G CPU.32V.128G
    CPU.180V.720G""".split()
# kdevops-kconfig.md 2.5: the shipped DataCrunch images; 2.6 and api-contracts.md 2.4: locations.
DATACRUNCH_KDEVOPS_IMAGES = """ubuntu-24.04-cuda-12.8-open-docker ubuntu-24.04-cuda-12.8-open
    ubuntu-24.04-cuda-12.6-docker ubuntu-24.04-cuda-12.6 ubuntu-24.04 ubuntu-22.04-cuda-12.8-open-docker
    ubuntu-22.04-cuda-12.8-open ubuntu-22.04-cuda-12.4-docker ubuntu-22.04-cuda-12.4
    ubuntu-22.04-cuda-12.0-docker ubuntu-22.04-cuda-12.0 ubuntu-22.04""".split()
DATACRUNCH_LOCATIONS = ["FIN-01", "FIN-02", "FIN-03", "ICE-01"]


def test_lambdalabs_snapshot_has_every_reference_type_and_region():
    snap = providers.snapshot("lambdalabs")
    assert set(LAMBDA_KDEVOPS_TYPES + LAMBDA_CONTRACT_TYPES) <= set(snap.types)
    assert set(LAMBDA_KDEVOPS_REGIONS.values()) | set(LAMBDA_CONTRACT_REGIONS) <= set(snap.regions)


def test_datacrunch_snapshot_has_every_reference_type_location_and_image():
    snap = providers.snapshot("datacrunch")
    d = providers.data("datacrunch")
    assert set(DATACRUNCH_CONTRACT_TYPES) <= set(snap.types)
    keys = set(d["tier_groups"]) | set(d["wildcards"])
    assert {v for v in DATACRUNCH_KDEVOPS_MEMBERS.values() if v not in keys} <= set(snap.types)
    assert {v for v in DATACRUNCH_KDEVOPS_MEMBERS.values() if v.isupper() and "_" in v} <= keys
    assert set(DATACRUNCH_KDEVOPS_IMAGES) <= {i.id for i in snap.images}
    assert set(DATACRUNCH_LOCATIONS) == set(snap.regions)


def test_snapshot_types_are_well_formed():
    for p in providers.names():
        for t in providers.snapshot(p).types.values():
            assert t.price_per_hour > 0 and t.vcpus > 0 and t.memory_gb > 0, t
            assert (t.gpu_count == 0) == (t.gpu_memory_gb == 0) == (t.gpu == ""), t


@pytest.mark.parametrize("suffix, value", sorted(DATACRUNCH_KDEVOPS_MEMBERS.items()))
def test_every_kdevops_datacrunch_member_is_offered_offline(tree, no_network, suffix, value):
    """e.g. CONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE_4B200_120V=y, refused offline before."""
    (tree / "defconfigs" / "one").write_text(
        f"CONFIG_TERRAFORM=y\nCONFIG_TERRAFORM_DATACRUNCH=y\nCONFIG_TERRAFORM_DATACRUNCH_INSTANCE_TYPE_{suffix}=y\n")
    result = kbuild.defconfig("one")
    assert result.warnings == [] and not no_network
    values = kconfig_config.read_config(tree / ".config")
    assert values[f"TERRAFORM_DATACRUNCH_INSTANCE_TYPE_{suffix}"] == "y"
    assert values["TERRAFORM_DATACRUNCH_INSTANCE_TYPE"] == value


def test_every_snapshot_entry_is_a_member_of_the_shipped_fragments():
    for p in providers.names():
        text = generate.render_offline(p)
        P = f"TERRAFORM_{p.upper()}"
        snap = providers.snapshot(p)
        for name in snap.types:
            assert f'default "{name}" if {P}_INSTANCE_TYPE_{generate.symbol_suffix(name)}\n' in text["compute"]
        for code in snap.regions:
            assert f'"{code}" if ' in text["location"], code
        for image in snap.images:
            assert f'"{image.id}" if ' in text["images"], image.id
