"""`kcloud cloud-list-all` and `kcloud orphans` against the emulator's API (no terraform): what
carries kcloud's marks is grouped by owner, deleted owners are flagged, and only their things
are removed; nothing without kcloud's tags (or, for keys and scripts, its unique naming) is
ever touched. The end-to-end version (a real bringup in a deleted checkout) is
tests/e2e/test_cost.py."""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from kcloud import providers
from kcloud.launch import registry
from kcloud.launch.ownership import launch_tags
from kcloud.providers.base import ACTIVE, LaunchRequest

REPO = Path(__file__).resolve().parents[2]
HERE, GONE, ELSEWHERE = "aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHd2dXh5ent8fX5/gIGCg4SFhoeIiYqLjI2Oj5CRkpOU {}"


@pytest.fixture
def cloud(home, tmp_path, monkeypatch):
    from kcloud.emulator import start
    emu = start({"extends": "default", "lifecycle": {"order_delay": 0.05, "terminate_delay": 0.1}},
                boot_delay=0.2, ssh="off")
    env = {"LAMBDALABS_API_URL": emu.lambdalabs_url, "DATACRUNCH_API_URL": emu.datacrunch_url,
           "LAMBDALABS_API_KEY": "emulator-key", "DATACRUNCH_CLIENT_ID": "emulator-client",
           "DATACRUNCH_CLIENT_SECRET": "emulator-secret", "XDG_STATE_HOME": str(tmp_path / "state")}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    here = tmp_path / "here"
    (here / ".kcloud").mkdir(parents=True)
    (here / ".kcloud" / "id").write_text(HERE + "\n")
    registry.record(HERE, here)
    registry.record(GONE, tmp_path / "gone")          # recorded, then rm -rf'd
    yield emu, here, {**os.environ, **env}
    emu.stop()


def _launch(p, name, key, owner=None, run="0123456789ab", untagged=False, typ=None, region=None):
    typ = typ or ("gpu_1x_a10" if p.name == "lambdalabs" else "1V100.6V")
    region = region or ("us-west-1" if p.name == "lambdalabs" else "FIN-01")
    tags = () if untagged else launch_tags(owner, run)
    iid = p.launch(LaunchRequest(typ, region, name, key.name, key.id, tags=tags))
    deadline = time.monotonic() + 20
    while p.instance(iid).state != ACTIVE:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return iid


def _seed(emu):
    lam, dc = providers.get("lambdalabs"), providers.get("datacrunch")
    keys = {n: lam.add_ssh_key(n, PUB.format(n)) for n in
            (f"kdevops-here-{HERE}", f"kdevops-gone-proj-{GONE}", f"kdevops-{ELSEWHERE}", "kdevops-foo-1234abcd",
             "my-laptop")}
    ids = {
        "here": _launch(lam, "kdevops-gpu", keys[f"kdevops-here-{HERE}"], HERE),
        "gone": _launch(lam, "kdevops-gpu", keys[f"kdevops-gone-proj-{GONE}"], GONE),
        "elsewhere": _launch(lam, "kdevops-gpu", keys[f"kdevops-{ELSEWHERE}"], ELSEWHERE),
        # the gone directory's name and key, but no tag: not kcloud's mark, never touched
        "untagged": _launch(lam, "kdevops-gpu", keys[f"kdevops-gone-proj-{GONE}"], untagged=True),
    }
    dkey = dc.add_ssh_key(f"kdevops-datacrunch-{GONE}", PUB.format("dc"))
    ids["dc-gone"] = _launch(dc, "kdevops-gpu", dkey, GONE)
    dc.api.call("POST", "/volumes", expect="text", json_body={
        "type": "NVMe", "name": "gone-data", "size": 50, "location_code": "FIN-01",
        "tags": [{"key": "kcloud-project", "value": GONE}]})
    dc.api.call("POST", "/volumes", expect="text", json_body={
        "type": "NVMe", "name": "somebody-elses", "size": 50, "location_code": "FIN-01"})
    dc.api.call("POST", "/scripts", expect="text", json_body={"name": f"kdevops-datacrunch-{GONE}", "script": "#!/bin/sh\n"})
    dc.api.call("POST", "/scripts", expect="text", json_body={"name": "my-script", "script": "#!/bin/sh\n"})
    return ids


def _kcloud(cwd, env, *args):
    return subprocess.run([str(REPO / "scripts" / "kcloud"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cloud_list_all_groups_by_owner_and_orphans_removes_only_the_deleted_ones(cloud, tmp_path):
    emu, here, env = cloud
    ids = _seed(emu)
    listed = _kcloud(tmp_path, env, "cloud-list-all", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    owners = {o["id"]: o for o in report["owners"]}
    assert {k: owners[k]["state"] for k in owners} == {HERE: "here", GONE: "deleted", ELSEWHERE: "unknown"}
    assert owners[HERE]["path"] == str(here) and owners[ELSEWHERE]["path"] is None
    gone = {(r["provider"], r["kind"], r["name"]) for r in owners[GONE]["resources"]}
    assert gone == {("lambdalabs", "instance", "kdevops-gpu"), ("lambdalabs", "ssh-key", f"kdevops-gone-proj-{GONE}"),
                    ("datacrunch", "instance", "kdevops-gpu"), ("datacrunch", "ssh-key", f"kdevops-datacrunch-{GONE}"),
                    ("datacrunch", "volume", "kdevops-gpu-os"), ("datacrunch", "volume", "gone-data"),
                    ("datacrunch", "script", f"kdevops-datacrunch-{GONE}")}
    every = {r["id"] for o in report["owners"] for r in o["resources"]}
    assert ids["untagged"] not in every                                   # no tag: not listed
    names = {r["name"] for o in report["owners"] for r in o["resources"]}
    assert not names & {"my-laptop", "kdevops-foo-1234abcd", "somebody-elses", "my-script"}
    dc_instance = next(r for r in owners[GONE]["resources"] if r["id"] == ids["dc-gone"])
    assert dc_instance["cost_so_far"] is not None                          # DataCrunch reports created_at
    lam_instance = next(r for r in owners[GONE]["resources"] if r["id"] == ids["gone"])
    assert lam_instance["cost_so_far"] is None and "no launch time" in lam_instance["cost_note"]

    text = _kcloud(tmp_path, env, "cloud-list-all").stdout
    assert f"{GONE}  {tmp_path / 'gone'}  DELETED" in text and f"{ELSEWHERE}  (no directory recorded)  UNKNOWN" in text
    assert "orphans --terminate --yes" in text

    shown = _kcloud(tmp_path, env, "orphans", "--terminate")             # no --yes: shown, nothing removed
    assert shown.returncode == 1 and "add --yes" in shown.stdout and ids["gone"] in shown.stdout
    assert ids["here"] not in shown.stdout and ids["elsewhere"] not in shown.stdout
    assert len(emu.state()["instances"]) == 5

    done = _kcloud(tmp_path, env, "orphans", "--terminate", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the API confirms nothing of the deleted directories is left running" in done.stdout
    state = emu.state()
    assert sorted(i["id"] for i in state["instances"]) == sorted([ids["here"], ids["elsewhere"], ids["untagged"]])
    # the gone directory's Lambda key stays: a machine without tags still uses it
    assert sorted(k["name"] for k in state["ssh_keys"]) == sorted(
        [f"kdevops-here-{HERE}", f"kdevops-{ELSEWHERE}", "kdevops-foo-1234abcd", "my-laptop",
         f"kdevops-gone-proj-{GONE}"])
    assert "(1 thing(s) kept as shown)" in done.stdout
    assert [v["name"] for v in state["volumes"]] == ["somebody-elses"]
    assert [s["name"] for s in state["scripts"]] == ["my-script"]
    log = (tmp_path / "state" / "kcloud" / "orphans.jsonl").read_text()
    assert ids["gone"] in log and ids["dc-gone"] in log
    again = _kcloud(tmp_path, env, "orphans", "--terminate", "--yes")   # only the key in use is left
    assert again.returncode == 0 and f"kdevops-gone-proj-{GONE} (used by kdevops-gpu ({ids['untagged']})" in again.stdout
    assert len([line for line in again.stdout.splitlines() if line.startswith("    ")]) == 1
    assert "Nothing to remove: the 1 thing(s) shown are kept" in again.stdout


def test_a_provider_without_credentials_is_one_line(cloud, tmp_path):
    _emu, _here, env = cloud
    env = {k: v for k, v in env.items() if not k.startswith("DATACRUNCH_CLIENT")}
    out = _kcloud(tmp_path, env, "cloud-list-all")
    assert out.returncode == 0, out.stderr
    skipped = [line for line in out.stdout.splitlines() if "DataCrunch" in line]
    assert len(skipped) == 1 and "skipped" in skipped[0]
    assert "Nothing in the account(s) carries kcloud's marks." in out.stdout
