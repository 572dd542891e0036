"""The kcloud terraform provider through real terraform against the loopback emulator."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO, SECRETS, SYSTEM_TERRAFORM, VENV_TERRAFORM, keys, live, scenario
from kcloud import providers
from kcloud.tfprovider.runner import TerraformError

A10, A100, H100 = "gpu_1x_a10", "gpu_1x_a100", "gpu_1x_h100_sxm5"


def test_apply_creates_key_and_first_candidate_then_destroy_twice(emulator, workspace, tfenv):
    emu = emulator()
    ws = workspace()
    ws.vars([(A10, "us-west-1"), (A100, "us-east-1")])
    rc_before = (tfenv / ".terraformrc").read_text()

    out = ws.apply()

    assert out["instance_type"] == A10 and out["region"] == "us-west-1" and out["name"] == "kc-test-1"
    assert out["login_user"] == "ubuntu" and out["ip"] and out["price"] > 0
    assert out["attempts"] == [f"{A10} us-west-1: launched"]
    [inst] = live(emu)
    assert (inst["id"], inst["name"], inst["phase"], inst["ip"]) == (out["id"], "kc-test-1", "active", out["ip"])
    assert [k["name"] for k in keys(emu)] == ["kc-test-key"] and inst["ssh_keys"] == ["kc-test-key"]
    assert ws.tf.state_list() == ["module.kcloud.kcloud_instance.this", "module.kcloud.kcloud_ssh_key.this[0]"]
    progress = ws.progress.read_text()
    assert "ssh key kc-test-key: registered" in progress and f"{A10} us-west-1: active at {out['ip']}" in progress
    events = [json.loads(line)["event"] for line in ws.journal.read_text().splitlines()]
    assert events.index("add_ssh_key") < events.index("launch") < events.index("launched")

    assert ws.tf.plan() is False                       # a second bringup with the same plan is a no-op

    # Changing the candidates later updates state in place: the running machine stays.
    ws.vars([(A100, "us-east-1")])
    assert ws.tf.plan(on_line=ws.lines.append) is True
    assert any("1 to change, 0 to destroy" in line for line in ws.lines)
    ws.apply()
    assert [i["id"] for i in live(emu)] == [out["id"]]

    ws.destroy()
    assert live(emu) == [] and keys(emu) == [] and ws.tf.state_list() == []
    ws.destroy()                                        # idempotent
    assert "terminating" in ws.progress.read_text()

    # Secrets never reach tfvars, state, progress, journal or terraform's output.
    text = ws.files_text()
    assert "candidates" in text and "kc-test-key" in text
    for secret in SECRETS.values():
        assert secret not in text
    # The user's CLI configuration was neither read (it is broken) nor written.
    assert (tfenv / ".terraformrc").read_text() == rc_before
    assert "direct" not in (ws.terraform_dir / "terraformrc").read_text()


def test_failover_to_second_candidate(emulator, workspace):
    emu = emulator(scenario("scarce"))               # no H100 anywhere
    ws = workspace()
    ws.vars([(H100, "us-west-1"), (A10, "us-east-1")])

    out = ws.apply()

    assert (out["instance_type"], out["region"]) == (A10, "us-east-1")
    assert out["attempts"][0].startswith(f"{H100} us-west-1: no capacity")
    assert out["attempts"][1] == f"{A10} us-east-1: launched"
    assert [i["instance_type"] for i in live(emu)] == [A10]
    assert f"{H100} us-west-1: no capacity" in ws.progress.read_text()
    (ws.root / "terraform.tfvars").unlink()            # destroy must not need the tfvars
    ws.destroy()
    assert live(emu) == [] and keys(emu) == []


def test_all_candidates_fail_reports_table_and_leaves_nothing(emulator, workspace):
    emu = emulator(scenario("scarce"))
    ws = workspace()
    ws.vars([(H100, "us-west-1"), ("gpu_1x_gh200", "us-east-1")])

    with pytest.raises(TerraformError) as caught:
        ws.apply()

    err = caught.value
    assert str(err) == "terraform apply failed: lambdalabs: no candidate could be launched (2 tried)"
    [diag] = err.diagnostics
    rows = diag.detail.splitlines()
    assert "INSTANCE TYPE" in rows[0] and "OUTCOME" in rows[0]
    assert H100 in rows[1] and "us-west-1" in rows[1] and "no capacity" in rows[1]
    assert "gpu_1x_gh200" in rows[2] and "no capacity" in rows[2]
    assert "nothing is left running" in diag.detail
    assert not any("Traceback" in line for line in ws.lines)
    assert live(emu) == []
    assert ws.tf.state_list() == ["module.kcloud.kcloud_ssh_key.this[0]"]   # the key, not a phantom instance
    ws.destroy()
    assert keys(emu) == [] and ws.tf.state_list() == []


def test_instance_deleted_behind_terraforms_back(emulator, workspace):
    emu = emulator()
    ws = workspace()
    ws.vars([(A10, "us-west-1")])
    first = ws.apply()["id"]
    client = providers.get("lambdalabs")

    def kill_behind_back(iid):
        client.terminate([iid])
        deadline = time.monotonic() + 10
        while live(emu) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert live(emu) == []

    kill_behind_back(first)
    assert ws.tf.plan(on_line=ws.lines.append) is True  # refresh notices, plans a new one
    second = ws.apply()["id"]
    assert second != first and [i["id"] for i in live(emu)] == [second]

    kill_behind_back(second)
    ws.destroy()                                      # a gone instance is not an error
    assert live(emu) == [] and keys(emu) == [] and ws.tf.state_list() == []


def test_datacrunch_root_apply_destroy_without_secrets(emulator, workspace):
    emu = emulator()
    ws = workspace("datacrunch")
    ws.vars([("1V100.6V", "FIN-01")], name="kc-dc-1")
    out = ws.apply()
    assert out["instance_type"] == "1V100.6V" and out["login_user"] == "root" and out["ip"]
    assert [i["name"] for i in live(emu, "datacrunch")] == ["kc-dc-1"]
    ws.destroy()
    assert live(emu, "datacrunch") == [] and keys(emu, "datacrunch") == []
    text = ws.files_text()
    for secret in SECRETS.values():
        assert secret not in text


@pytest.mark.skipif(not os.access(SYSTEM_TERRAFORM, os.X_OK), reason=f"{SYSTEM_TERRAFORM} not installed")
def test_system_terraform_binary_works_too(emulator, workspace, monkeypatch):
    emu = emulator(scenario("scarce"))
    monkeypatch.setenv("TERRAFORM", SYSTEM_TERRAFORM)
    from kcloud.tfprovider.install import terraform_binary
    assert terraform_binary() == SYSTEM_TERRAFORM
    ws = workspace(binary=SYSTEM_TERRAFORM)
    ws.vars([(H100, "us-west-1"), (A10, "us-west-1")])
    out = ws.apply()
    assert out["instance_type"] == A10 and len(out["attempts"]) == 2
    ws.destroy()
    ws.destroy()
    assert live(emu) == [] and keys(emu) == []


CTRL_C_SCRIPT = """
import signal
import sys
# A shell without job control starts background jobs with SIGINT ignored, and Python keeps an
# inherited SIG_IGN: be the foreground program a user presses Ctrl-C in, wherever the test runs.
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {lib!r})
from kcloud.tfprovider.runner import Terraform
tf = Terraform({root!r}, binary={binary!r}, stop_timeout=30)
try:
    tf.apply(on_line=lambda line: print(line, flush=True))
except KeyboardInterrupt:
    print("KCLOUD-INTERRUPTED", flush=True)
    sys.exit(3)
"""


BINARIES = [VENV_TERRAFORM, pytest.param(SYSTEM_TERRAFORM, marks=pytest.mark.skipif(
    not os.access(SYSTEM_TERRAFORM, os.X_OK), reason=f"{SYSTEM_TERRAFORM} not installed"))]


@pytest.mark.parametrize("binary", BINARIES)
def test_ctrl_c_stops_cleanly_and_leaves_nothing_running(emulator, workspace, binary):
    """terraform 1.0 (panicwrap: the parent ignores SIGINT) and newer ones both stop within seconds:
    the provider ends its boot wait, failover terminates the booting machine, state stays true."""
    emu = emulator({"extends": "default", "lifecycle": {"boot_delay": 60, "terminate_delay": 0.2}})
    ws = workspace(binary=binary)
    ws.vars([(A10, "us-west-1")], boot_timeout=120, poll_interval=0.2)
    ws.tf.init()
    script = CTRL_C_SCRIPT.format(lib=str(REPO / "scripts" / "lib"), root=str(ws.root), binary=ws.tf.binary)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 30
        while "booting" not in (ws.progress.read_text() if ws.progress.exists() else ""):
            assert time.monotonic() < deadline and proc.poll() is None, "the launch never started booting"
            time.sleep(0.1)
        assert len(live(emu)) == 1
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=40)
        stopped_after = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, output
    assert "KCLOUD-INTERRUPTED" in output and "Error: interrupted (Ctrl-C)" in output
    assert stopped_after < 15, output
    assert live(emu) == []                             # the booting machine was terminated
    assert ws.tf.state_list() == ["module.kcloud.kcloud_ssh_key.this[0]"]
    ws.destroy()
    assert keys(emu) == []


def test_wrong_api_key_is_one_clear_error_without_the_key(emulator, workspace, monkeypatch):
    emulator()
    monkeypatch.setenv("LAMBDALABS_API_KEY", "wrong-key-0123456789")
    ws = workspace()
    ws.vars([(A10, "us-west-1")])
    with pytest.raises(TerraformError) as caught:
        ws.apply()
    [diag] = caught.value.diagnostics
    assert diag.summary.startswith("lambdalabs: ") and "invalid-api-key" in diag.summary
    assert "check the API key" in diag.detail
    assert "wrong-key-0123456789" not in "\n".join(ws.lines) + ws.files_text()
    assert ws.tf.state_list() == []
