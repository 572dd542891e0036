"""Issue 8 items 3 and 5 end to end: `make cost` equals the emulator's billing ledger to the cent
(launch price kept when the catalog price changes, history across bringup/destroy cycles and
providers), and `make cloud-list-all` / `kcloud orphans` find and remove what a deleted checkout
left running. Every test ends with the leak audit."""
import json

import requests
from e2e_helpers import audit

CLEAN = {"instances": [], "ssh_keys": []}


def _admin(emu, provider: str) -> str:
    base = emu.lambdalabs_url if provider == "lambdalabs" else emu.datacrunch_url
    return "/".join(base.split("/", 3)[:3]) + "/_emulator"


def _cost(p) -> dict:
    return json.loads(p.run(str(p.root / "scripts" / "kcloud"), "cost", "--output", "json").stdout)


def _near_boundary(entry: dict, slack_s: float) -> bool:
    """The ledger's duration is within `slack_s` of an increment boundary: kcloud's journal times
    (ms from the provider's) may then fall on the other side; an exact comparison would be luck."""
    rest = entry["duration_s"] % entry["increment_s"]
    return entry["duration_s"] > slack_s and (rest < slack_s or entry["increment_s"] - rest < slack_s)


def _check_against_ledger(p, emu, slack_s=0.25) -> dict:
    """`make cost` (its JSON form, and the text total) against /_emulator/state's ledger: the same
    instances, launch prices, billed seconds and amounts to the cent."""
    ledger = {e["id"]: e for e in emu.state()["ledger"]}
    report = _cost(p)
    (directory,) = report["directories"]
    mine = {i["id"]: i for i in directory["instances"]}
    assert set(mine) == set(ledger), (mine, ledger)
    total = 0.0
    for iid, entry in ledger.items():
        got = mine[iid]
        assert (got["provider"], got["instance_type"], got["region"]) == \
               (entry["provider"], entry["instance_type"], entry["region"])
        assert got["price_per_hour"] == entry["price_per_hour"]
        assert got["increment_s"] == entry["increment_s"] and got["minimum_s"] == entry["minimum_s"]
        assert got["running"] == (entry["end"] is None)
        if _near_boundary(entry, slack_s if entry["end"] else 3.0):
            assert abs(got["billed_s"] - entry["billed_s"]) <= entry["increment_s"]
        else:
            assert got["billed_s"] == entry["billed_s"], (got, entry)
            assert round(got["amount"], 2) == round(entry["amount"], 2), (got, entry)
        total += entry["amount"]
    assert round(directory["total"], 2) == round(total, 2)
    text = p.make("cost").stdout
    assert f"Total: ${round(total, 2):.2f} for {len(ledger)} instance(s)" in text, text
    return ledger


def test_make_cost_equals_the_emulators_ledger_to_the_cent(cloud, make_project):
    emu = cloud("default")
    p = make_project(emu)
    p.make("defconfig-lambdalabs-gpu-1x-a10")
    p.make("bringup")
    (launched,) = emu.state()["ledger"]
    # Today's catalog price changes: the bill (and make cost) keep the launch price.
    requests.post(_admin(emu, "lambdalabs") + "/price", json={"instance_type": "gpu_1x_a10", "price_per_hour": 9.99},
                  timeout=10).raise_for_status()
    running = _check_against_ledger(p, emu)
    assert running[launched["id"]]["end"] is None and running[launched["id"]]["price_per_hour"] != 9.99
    assert "running" in p.make("cost").stdout
    p.make("destroy")
    _check_against_ledger(p, emu)
    # A second cycle, on the other provider: history (the first cycle) and journal together.
    p.make("defconfig-datacrunch-v100")
    p.make("bringup")
    _check_against_ledger(p, emu)
    p.make("destroy")
    ledger = _check_against_ledger(p, emu)
    assert sorted(e["provider"] for e in ledger.values()) == ["datacrunch", "lambdalabs"]
    assert {e["increment_s"] for e in ledger.values()} == {60, 600}
    assert not (p.root / ".kcloud" / "journal.jsonl").exists()       # all of it from history.jsonl
    assert audit(emu) == CLEAN


def test_cloud_list_all_flags_a_deleted_checkout_and_orphans_removes_it(cloud, make_project):
    import shutil
    emu = cloud("default")
    gone = make_project(emu)
    home = gone.env["HOME"]
    state = f"{home}/.local/state"                          # one registry for both directories
    gone.env["XDG_STATE_HOME"] = state
    gone.make("defconfig-lambdalabs-gpu-1x-a10")
    gone.make("bringup")
    gone_id = (gone.root / ".kcloud" / "id").read_text().strip()
    (machine,) = emu.state()["instances"]
    shutil.rmtree(gone.root)                                # the checkout is deleted, the machine runs on

    other = make_project(emu, home=gone.root.parent / "home")
    other.env["XDG_STATE_HOME"] = state
    listed = other.make("cloud-list-all").stdout
    owner_line = next(line for line in listed.splitlines() if line.startswith(gone_id))
    assert f"{gone.root}" in owner_line and "DELETED" in owner_line, listed
    assert machine["id"] in listed and f"-{gone_id}" in listed        # the instance and the unique key
    assert "orphans --terminate --yes" in listed
    assert "DELETED" in other.run(str(other.root / "scripts" / "kcloud"), "cost", "--all").stdout

    refused = other.run(str(other.root / "scripts" / "kcloud"), "orphans", "--terminate", check=False)
    assert refused.returncode == 1 and "add --yes" in refused.stdout
    assert [i["id"] for i in emu.state()["instances"]] == [machine["id"]]
    done = other.run(str(other.root / "scripts" / "kcloud"), "orphans", "--terminate", "--yes")
    assert "the API confirms nothing of the deleted directories is left running" in done.stdout, done.stdout
    assert audit(emu) == CLEAN                                   # instance and key gone
    assert gone_id not in other.make("cloud-list-all").stdout


def test_a_machine_that_never_booted_is_billed_at_its_launch_price(cloud, make_project):
    emu = cloud({"extends": "scarce", "lambdalabs": {"faults": [
        {"method": "POST", "path": "/instance-operations/launch", "nth": 1, "instance": "stuck"}]}})
    p = make_project(emu)
    p.defconfig("lambdalabs-h100-or-less", "TERRAFORM_BOOT_TIMEOUT=5")
    p.make("bringup")
    p.make("destroy")
    try:
        ledger = _check_against_ledger(p, emu)
        assert len(ledger) == 2
    finally:
        assert audit(emu) == CLEAN
