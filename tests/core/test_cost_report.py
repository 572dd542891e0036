"""`make cost` from a directory's own records (kcloud.bringup.cost): launch price, start, end,
billed by the provider's increment, never today's catalog. The end-to-end check against the
emulator's ledger is tests/e2e/test_cost.py."""
import json
import os
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from kcloud import providers
from kcloud.bringup import cost

REPO = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0


def ev(event, t, **kw):
    return {"event": event, "time": round(T0 + t, 3), **kw}


def lambda_launch(run, iid, t_launch, t_launched, price=None, typ="gpu_1x_a10", region="us-west-1"):
    extra = {"price_per_hour": price} if price else {}
    return [ev("launch", t_launch, provider="lambdalabs", run=run, name="kdevops-gpu", instance_type=typ, region=region),
            ev("launched", t_launched, provider="lambdalabs", run=run, id=iid, name="kdevops-gpu",
               instance_type=typ, region=region, **extra)]


def test_billed_seconds_match_the_emulators_rule():
    from kcloud.emulator import state as emu_state
    for ms in (0, 1, 999, 1000, 59_999, 60_000, 60_001, 125_000, 3_600_000, 3_600_001):
        for inc, minimum in ((60, 0), (600, 0), (3600, 0), (60, 600)):
            assert cost.billed_seconds(ms, inc, minimum) == emu_state.billed_seconds(ms, inc, minimum)
    assert cost.amount(1.29, 180) == Decimal("0.06")            # 0.0645
    assert cost.amount(0.75, 60 * 30) == Decimal("0.38")        # 0.375 -> 0.38 (half up, not banker's)


def test_data_files_carry_the_billing_rule_the_emulator_bills_by():
    from kcloud.emulator.scenario import DEFAULTS
    for name in providers.names():
        rule = providers.data(name)["billing"]
        assert set(rule) == {"increment_s", "minimum_s", "start"}
        assert {k: rule[k] for k in ("increment_s", "minimum_s", "start")} == DEFAULTS[name]["billing"]
    assert providers.data("lambdalabs")["billing"]["increment_s"] == 60        # contract 1.5: per minute


def test_each_instance_launch_price_start_end_and_billed_increments():
    events = [
        ev("ssh-key", 0, provider="lambdalabs", name="kdevops-x-0123456789ab", key_id="k", unique=True),
        # A: active, price from the API (the plan said 1.10: the API's price wins), destroyed by terraform
        *lambda_launch("r1", "A", 1.0, 1.05, price=1.10),
        ev("active", 3.0, provider="lambdalabs", id="A", instance_type="gpu_1x_a10", region="us-west-1",
           price_per_hour=1.29),
        ev("terminate", 126.0, provider="lambdalabs", id="A", name="kdevops-gpu", source="terraform"),
        # B: never booted, terminated by the walk (price from the launched event)
        *lambda_launch("r2", "B", 130.0, 130.1, price=0.80, region="us-east-1"),
        ev("terminate", 140.0, provider="lambdalabs", id="B"),
        ev("terminated", 140.2, provider="lambdalabs", id="B"),
        # a launch refused for capacity: nothing billed
        ev("launch", 141.0, provider="lambdalabs", run="r3", name="kdevops-gpu", instance_type="gpu_1x_a10",
           region="us-west-2"),
        ev("launch-failed", 141.1, provider="lambdalabs", run="r3", why="no capacity"),
        # C: the launch answer was lost, found 30 s later: billed from the request
        ev("launch", 150.0, provider="lambdalabs", run="r4", name="kdevops-gpu", instance_type="gpu_1x_a10",
           region="us-west-1"),
        ev("found", 180.0, provider="lambdalabs", run="r4", id="C", name="kdevops-gpu"),
        ev("launched", 180.0, provider="lambdalabs", run="r4", id="C", name="kdevops-gpu",
           instance_type="gpu_1x_a10", region="us-west-1"),
        ev("active", 181.0, provider="lambdalabs", id="C", price_per_hour=0.75),
        ev("terminate", 215.0, provider="lambdalabs", id="C"),
        ev("terminated", 216.0, provider="lambdalabs", id="C"),
        # D: DataCrunch, still running: cost so far, by 10-minute increments
        ev("launch", 300.0, provider="datacrunch", run="r5", name="kdevops-gpu", instance_type="1V100.6V",
           region="FIN-01"),
        ev("launched", 300.5, provider="datacrunch", run="r5", id="D", name="kdevops-gpu",
           instance_type="1V100.6V", region="FIN-01"),
        ev("active", 310.0, provider="datacrunch", id="D", price_per_hour=0.39),
    ]
    now_ms = int((T0 + 300.5 + 601) * 1000)
    got = {b.id: b for b in cost.bills(events, now_ms)}
    assert list(got) == ["A", "B", "C", "D"]
    a, b, c, d = got["A"], got["B"], got["C"], got["D"]
    assert (a.price_per_hour, a.price_from, a.start_from) == (1.29, "active", "launched")
    assert a.duration_ms == 124_950 and a.billed_s == 180 and a.amount == Decimal("0.06") and not a.running
    assert (b.price_per_hour, b.price_from, b.region) == (0.80, "launched", "us-east-1")
    assert b.end_ms == int((T0 + 140.0) * 1000) and b.billed_s == 60 and b.amount == Decimal("0.01")
    assert c.start_from == "launch" and c.duration_ms == 65_000 and c.billed_s == 120 and c.amount == Decimal("0.03")
    assert d.running and d.increment_s == 600 and d.billed_s == 1200 and d.amount == Decimal("0.13")


def test_no_price_recorded_is_shown_and_left_out_of_the_total(tmp_path):
    root = tmp_path / "proj"
    (root / ".kcloud").mkdir(parents=True)
    lines = [*lambda_launch("r1", "A", 1, 1.1), ev("terminate", 20, provider="lambdalabs", id="A"),
             ev("terminated", 21, provider="lambdalabs", id="A"),
             *lambda_launch("r2", "B", 30, 30.1, price=2.0), ev("terminate", 40, provider="lambdalabs", id="B",
                                                                source="terraform")]
    (root / ".kcloud" / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    report = cost.directory_cost(root, "0123456789ab")
    first, second = report["instances"]
    assert first["price_per_hour"] is None and first["amount"] is None and "no launch price" in first["notes"][0]
    assert second["amount"] == 0.03 and report["total"] == 0.03


def test_history_and_journal_together_each_line_once_damaged_lines_named(tmp_path):
    root = tmp_path / "proj"
    (root / ".kcloud").mkdir(parents=True)
    old = [*lambda_launch("r1", "A", 1, 1.1, price=1.0), ev("terminate", 50, provider="lambdalabs", id="A",
                                                           source="terraform")]
    new = [*lambda_launch("r2", "B", 100, 100.1, price=1.0)]
    history = "".join(json.dumps(e) + "\n" for e in old)
    # an archive interrupted after copying: the same lines in both files
    (root / ".kcloud" / "history.jsonl").write_text(history + "{torn\n")
    (root / ".kcloud" / "journal.jsonl").write_text(history + "".join(json.dumps(e) + "\n" for e in new))
    report = cost.directory_cost(root, "0123456789ab", now_ms=int((T0 + 130) * 1000))
    assert [i["id"] for i in report["instances"]] == ["A", "B"]
    assert [i["running"] for i in report["instances"]] == [False, True]
    assert report["notes"] == [f"ignored 1 damaged line(s) of {root / '.kcloud' / 'history.jsonl'}"]
    assert report["total"] == 0.04 and report["running"] == 1


def _kcloud(cwd, env, *args):
    return subprocess.run([str(REPO / "scripts" / "kcloud"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_cost_all_covers_every_recorded_directory_and_flags_deleted_ones(tmp_path, home, monkeypatch):
    from kcloud.launch import registry
    state = tmp_path / "state"
    env = {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(state)}
    a, gone = tmp_path / "a", tmp_path / "gone"
    (a / ".kcloud").mkdir(parents=True)
    (a / ".kcloud" / "id").write_text("aaaaaaaaaaaa\n")
    events = [*lambda_launch("r1", "A", 1, 1.1, price=3.0), ev("terminate", 100, provider="lambdalabs", id="A"),
              ev("terminated", 100.1, provider="lambdalabs", id="A")]
    (a / ".kcloud" / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    registry.record("aaaaaaaaaaaa", a)
    registry.record("bbbbbbbbbbbb", gone)
    here = _kcloud(a, env, "cost", "--output", "json")
    assert here.returncode == 0, here.stderr
    assert json.loads(here.stdout)["total"] == 0.1               # 2 minutes at $3/h
    text = _kcloud(a, env, "cost").stdout
    assert "gpu_1x_a10" in text and "$0.10" in text and "Total: $0.10 for 1 instance(s)" in text
    every = json.loads(_kcloud(tmp_path, env, "cost", "--all", "--output", "json").stdout)
    assert [(d["id"], d["state"]) for d in every["directories"]] == [("aaaaaaaaaaaa", "here"),
                                                                     ("bbbbbbbbbbbb", "deleted")]
    assert every["total"] == 0.1
    assert "DELETED" in _kcloud(tmp_path, env, "cost", "--all").stdout


def test_a_directory_without_records_says_so(tmp_path, home):
    out = _kcloud(tmp_path, {**os.environ, "HOME": str(home), "XDG_STATE_HOME": str(tmp_path / "s")}, "cost")
    assert out.returncode == 0 and "no instance launched from this directory" in out.stdout
