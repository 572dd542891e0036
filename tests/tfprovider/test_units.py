"""Fast checks of the pieces around terraform: tfvars, install, CLI config, diagnostics parsing."""
import json
import os
import stat
import subprocess

import pytest

from kcloud.errors import ConfigError
from kcloud.tfprovider import install, provider, runner, tfvars
from kcloud.tiers import Candidate

PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHGHz9byxs/C/VsbckxuFILGvgp//aywj1E0cLjeDygd me@host"


def render(**kw):
    values = dict(cloud="lambdalabs", name="kc-1", candidates=[Candidate("gpu_1x_a10", "us-west-1", "a10", 1.29)],
                  ssh_key_name="k", ssh_public_key=PUB)
    values.update(kw)
    return tfvars.render(**values)


def test_tfvars_render_candidates_in_order_and_escaping():
    text = render(candidates=[{"instance_type": "a", "region": "r1"}, ("b", "r2")], image='x"${y}',
                  journal_path="/p/j", progress_file="/p/p", boot_timeout=300, poll_interval=0.5)
    assert text.index('instance_type = "a"') < text.index('instance_type = "b"')
    assert 'image         = "x\\"$${y}"' in text
    assert "boot_timeout  = 300" in text and "poll_interval = 0.5" in text
    assert f'ssh_public_key = "{PUB}"' in text and "ssh_key_id" not in text
    assert 'journal_path  = "/p/j"' in text and "user_data" not in text


def test_tfvars_shared_key_mode_has_no_public_key():
    text = render(ssh_public_key="", ssh_key_id="abc123")
    assert 'ssh_key_id   = "abc123"' in text and "ssh_public_key" not in text


def test_tfvars_refuses_private_keys_and_missing_keys(tmp_path):
    with pytest.raises(ConfigError, match="private key"):
        render(ssh_public_key="-----BEGIN OPENSSH PRIVATE KEY-----\nabc")
    with pytest.raises(ConfigError, match="not a public key file"):
        render(ssh_public_key="", ssh_public_key_file=tmp_path / "id_ed25519")
    with pytest.raises(ConfigError, match="no SSH public key"):
        render(ssh_public_key="")
    with pytest.raises(ConfigError, match="no candidates"):
        render(candidates=[])
    pub = tmp_path / "id.pub"
    pub.write_text(PUB + "\n")
    assert PUB in render(ssh_public_key="", ssh_public_key_file=pub)


def test_tfvars_is_valid_hcl_for_terraform(tmp_path):
    """terraform itself loads what we render against the roots' variables (no provider, no network)."""
    from conftest import REPO
    variables = (REPO / "terraform" / "modules" / "kcloud" / "variables.tf").read_text()
    (tmp_path / "vars.tf").write_text(variables + 'variable "journal_path" {}\nvariable "progress_file" {}\n')
    (tmp_path / "terraform.tfvars").write_text(render(
        candidates=[("a", "r1"), ("b", "r2")], image='x"${y}', user_data="#cloud-config\n", journal_path="/j",
        progress_file="/p"))
    out = subprocess.run([install.terraform_binary(), "console"], cwd=tmp_path, capture_output=True, text=True,
                         input="jsonencode([var.image, length(var.candidates), var.candidates[1].region, var.boot_timeout])\n",
                         env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(json.loads(out.stdout)) == ['x"${y}', 2, "r2", 600]


def test_install_writes_plugin_and_cli_config_idempotently(tmp_path):
    first = install.install(tmp_path / "terraform", python="/opt/venv/bin/python")
    assert first.changed
    assert first.plugin.name == "terraform-provider-kcloud_v0.1.0"
    assert first.plugin.parent.name == install.target_platform()
    assert "registry.terraform.io/kcloud/kcloud/0.1.0" in str(first.plugin)
    assert stat.S_IMODE(first.plugin.stat().st_mode) == 0o755
    script = first.plugin.read_text()
    assert "exec /opt/venv/bin/python -m kcloud.tfprovider" in script and str(install.LIB_DIR) in script
    rc = first.cli_config.read_text()
    assert "filesystem_mirror" in rc and "direct" not in rc and "disable_checkpoint = true" in rc
    assert str((tmp_path / "terraform" / ".plugins").resolve()) in rc
    assert not install.install(tmp_path / "terraform", python="/opt/venv/bin/python").changed
    assert install.install(tmp_path / "terraform", python="/other/python").changed


def test_plugin_script_starts_and_handshakes(tmp_path):
    import sys
    inst = install.install(tmp_path / "terraform", python=sys.executable)
    proc = subprocess.Popen([str(inst.plugin)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
    finally:
        proc.kill()
        proc.wait()
    assert line.startswith("1|6|unix|"), line        # go-plugin handshake, protocol 6


def test_terraform_binary_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("TERRAFORM", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no such executable"):
        install.terraform_binary()
    monkeypatch.delenv("TERRAFORM")
    path = install.terraform_binary()
    assert os.access(path, os.X_OK)
    assert "1.0.3" in subprocess.run([path, "version"], capture_output=True, text=True,
                                     env={**os.environ, "TF_CLI_CONFIG_FILE": "/dev/null"}).stdout


def test_runner_environment_overrides_user_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", "/home/user/.terraformrc")
    monkeypatch.setenv("TF_CLI_ARGS_apply", "-parallelism=1")
    monkeypatch.setenv("TF_PLUGIN_CACHE_DIR", "/somewhere")
    tf = runner.Terraform(tmp_path / "terraform" / "lambdalabs", binary="/bin/true")
    env = tf.environment()
    assert env["TF_CLI_CONFIG_FILE"] == str(tmp_path / "terraform" / "terraformrc")
    assert env["TF_IN_AUTOMATION"] == "1" and env["TF_INPUT"] == "0" and env["CHECKPOINT_DISABLE"] == "1"
    assert "TF_CLI_ARGS_apply" not in env and "TF_PLUGIN_CACHE_DIR" not in env


PLAIN = """module.kcloud.kcloud_instance.this: Creating...

Error: lambdalabs: no candidate could be launched (2 tried)

  with module.kcloud.kcloud_instance.this,
  on ../modules/kcloud/main.tf line 13, in resource "kcloud_instance" "this":
  13: resource "kcloud_instance" "this" {

  #  INSTANCE TYPE  REGION  OUTCOME
  1  a              r       no capacity

nothing is left running

Error: second problem

detail two
"""

BOXED = """╷
│ Warning: something minor
│
│ not an error
╵
╷
│ Error: Invalid value for variable
│
│   on terraform.tfvars line 1:
│    1: name = 3
│
│ The name must be a string.
╵
"""


def test_parse_diagnostics_plain_and_boxed():
    first, second = runner.parse_diagnostics(PLAIN.splitlines())
    assert first.summary == "lambdalabs: no candidate could be launched (2 tried)"
    assert first.detail.splitlines()[0] == "  #  INSTANCE TYPE  REGION  OUTCOME"
    assert first.detail.endswith("nothing is left running")
    assert (second.summary, second.detail) == ("second problem", "detail two")
    [boxed] = runner.parse_diagnostics(BOXED.splitlines())
    assert (boxed.summary, boxed.detail) == ("Invalid value for variable", "The name must be a string.")
    err = runner.TerraformError("apply", 1, [first, second], [])
    assert str(err) == ("terraform apply failed: lambdalabs: no candidate could be launched (2 tried) "
                        "(and 1 more errors)")
    assert "INSTANCE TYPE" in err.report()


def test_object_type_is_a_cty_object():
    assert provider.CANDIDATE.tf_type() == b'["object",{"instance_type":"string","region":"string"}]'
    assert provider.CANDIDATE.decode({"instance_type": "a", "region": "r"}) == {"instance_type": "a", "region": "r"}


def test_schemas_mark_only_name_and_key_fields_as_replacing():
    inst = {a.name: a for a in provider.InstanceResource.get_schema().attributes}
    assert [n for n, a in inst.items() if a.requires_replace] == ["name"]
    assert inst["user_data"].sensitive and inst["candidates"].required
    key = {a.name: a for a in provider.SshKeyResource.get_schema().attributes}
    assert {n for n, a in key.items() if a.requires_replace} == {"name", "public_key"}
