"""Issue 8: one list across both clouds, end to end (real make, terraform, Ansible, sshd),
each test ending with the /_emulator/state audit."""
from e2e_helpers import audit

CLEAN = {"instances": [], "ssh_keys": []}
NONE = [{"type": "*", "region": "*", "count": 0}]


def test_lands_on_datacrunch_when_lambda_is_sold_out(cloud, make_project):
    emu = cloud({"extends": "default", "lambdalabs": {"capacity": NONE}})
    p = make_project(emu)
    p.make("defconfig-any-h100-or-less")
    out = p.make("bringup").stdout
    assert "Checking tier group across providers: any-h100-or-less (datacrunch, lambdalabs)" in out
    assert "lambdalabs:gpu_1x_h100_sxm5" in out and "datacrunch:1H100.80S.30V" in out   # one list
    assert "on DataCrunch" in out.split("Ready:")[1].splitlines()[0]
    [inst] = emu.state()["instances"]
    assert inst["provider"] == "datacrunch" and inst["instance_type"].startswith("1H100")
    assert "kdevops-gpu" in p.make("status").stdout
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_lands_on_lambda_when_its_tier_is_higher(cloud, make_project):
    emu = cloud({"extends": "default",
                 "lambdalabs": {"capacity": NONE + [{"type": "gpu_1x_h100_sxm5", "region": "*", "count": 1}]},
                 "datacrunch": {"capacity": NONE + [{"type": "1A100*", "region": "*", "count": 1}]}})
    p = make_project(emu)
    p.make("defconfig-any-h100-or-less")
    out = p.make("bringup").stdout
    assert "Selected: lambdalabs:gpu_1x_h100_sxm5" in out
    [inst] = emu.state()["instances"]
    assert inst["provider"] == "lambdalabs"
    p.make("destroy")
    assert audit(emu) == CLEAN


def test_a_capacity_error_on_one_cloud_falls_over_to_the_other(cloud, make_project):
    emu = cloud({"extends": "default",
                 "lambdalabs": {"capacity": NONE + [{"type": "gpu_1x_h100_sxm5", "region": "us-east-1", "count": 1}]},
                 "datacrunch": {"capacity": NONE + [{"type": "1H100.80S.30V", "region": "FIN-01", "count": 1}],
                                "faults": [{"method": "POST", "path": "/instances", "times": 0,
                                            "error": "unavailable", "message": "Not enough resources"}]}})
    p = make_project(emu)
    p.make("defconfig-any-h100-or-less")
    out = p.make("bringup").stdout
    assert "Selected: datacrunch:1H100.80S.30V" in out                       # cheaper: tried first
    assert "DataCrunch (Verda): every candidate lost its race; next: Lambda Cloud" in out
    [inst] = emu.state()["instances"]
    assert inst["provider"] == "lambdalabs"
    p.make("destroy")
    assert audit(emu) == CLEAN                                              # DataCrunch's key too


def test_a_provider_without_credentials_is_skipped_with_one_line(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-any-cheapest")
    env = {"DATACRUNCH_CLIENT_ID": "", "DATACRUNCH_CLIENT_SECRET": ""}
    p.env.pop("DATACRUNCH_CLIENT_ID")
    p.env.pop("DATACRUNCH_CLIENT_SECRET")
    out = p.make("bringup").stdout
    assert len([line for line in out.splitlines() if "datacrunch: skipped (no credentials" in line]) == 1, out
    assert emu.state()["instances"][0]["provider"] == "lambdalabs"
    p.make("destroy", env=env)
    assert audit(emu) == CLEAN


def test_offers_merge_both_clouds_live(cloud, make_project):
    import json
    emu = cloud({"extends": "default",
                 "lambdalabs": {"capacity": NONE + [{"type": "gpu_1x_h100_sxm5", "region": "us-east-1", "count": 1}]}})
    p = make_project(emu)
    kcloud = str(p.root / "scripts" / "kcloud")
    data = json.loads(p.run(kcloud, "offers", "--gpu", "H100", "--output", "json").stdout)
    offers = data["offers"]
    assert {o["provider"] for o in offers} == {"lambdalabs", "datacrunch"}
    assert all("h100" in (o["gpu"] + o["instance_type"]).lower() for o in offers)
    lam = [o for o in offers if o["provider"] == "lambdalabs" and o["available"]]
    assert [(o["instance_type"], o["region"]) for o in lam] == [("gpu_1x_h100_sxm5", "us-east-1")]
    first = offers[0]                                   # available first, then class, GPUs, price
    assert first["available"] and first["gpus"] == 1 and first["vram_gb_per_gpu"] == 80
    cheap = json.loads(p.run(kcloud, "offers", "--max-price", "2.00", "--available-only", "--output", "json").stdout)
    assert cheap["offers"] and all(o["price_per_hour"] <= 2.0 and o["available"] for o in cheap["offers"])
    table = p.run(kcloud, "offers", "--gpu", "h100").stdout
    assert "PROVIDER" in table and "offers have capacity now" in table
    bad = p.run(kcloud, "offers", "--max-price", "cheap", check=False)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert emu.state()["instances"] == [] and emu.state()["ssh_keys"] == []
