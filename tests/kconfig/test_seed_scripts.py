"""Seed commands as typed (issue 7, item 7): the script names of seed 000's table, seed 004's
`datacrunch_credentials.py set 'your-api-key-here'`, and `--output json` on every lambda-cli
subcommand."""
import io
import json
import os
import stat
import sys

import pytest

from kconfig_helpers import EMULATOR_CREDENTIALS, REPO
from kcloud import credentials, providers
from kcloud.bringup.project import Project
from kcloud.cli import ALIASES, build_parser
from kcloud.errors import CredentialsError
from kcloud.kconfig import config as kconfig_config
from kcloud.kconfig import kbuild

# Seed 000, "API Reference" > "Scripts" (and its "Authentication Architecture").
SEED_000_SCRIPTS = ["lambdalabs_api.py", "lambdalabs_smart_inference.py", "lambdalabs_check_capacity.py",
                    "lambdalabs_select_tier.py", "lambdalabs_ssh_keys.py", "lambdalabs_list_instances.py",
                    "lambdalabs_credentials.py", "lambdalabs_ssh_key_name.py", "generate_cloud_configs.py",
                    "extract_api_key.py"]


@pytest.fixture
def run(capsys, home):
    """A seed script in process, as `prog`: (exit code, stdout, stderr)."""
    from kcloud.cli import main

    def call(prog, *argv, stdin=""):
        saved = sys.stdin
        sys.stdin = io.StringIO(stdin)          # not a terminal: values are read from it
        try:
            code = main(list(argv), prog=prog)
        finally:
            sys.stdin = saved
        out = capsys.readouterr()
        return code, out.out, out.err
    return call


@pytest.mark.parametrize("script", SEED_000_SCRIPTS)
def test_every_script_of_seed_000_is_a_name_of_the_one_command(script):
    path = REPO / "scripts" / script
    assert path.is_symlink() and os.readlink(path) == "kcloud", script
    assert script in ALIASES


def test_ssh_key_name_script_prints_what_bringup_uses(tree, run, home):
    code, out, _ = run("lambdalabs_ssh_key_name.py")
    assert code == 0
    name = out.strip()
    assert name == Project(tree.resolve()).unique_key_name("lambdalabs", create=False)
    assert name.startswith("kdevops-") and name.endswith("-" + (tree / ".kcloud" / "id").read_text().strip())
    kbuild.defconfig("lambdalabs")                      # what bringup reads: .config
    assert kconfig_config.read_config(tree / ".config")["TERRAFORM_LAMBDALABS_SSH_KEY_NAME"] == name
    code, out, _ = run("datacrunch_ssh_key_name.py")
    assert out.strip() == Project(tree.resolve()).unique_key_name("datacrunch", create=False)
    code, out, _ = run("lambdalabs_ssh_key_name.py", "--output", "json")
    assert json.loads(out)["ssh_key_name"] == name


def test_lambdalabs_api_script_generates_kconfig(tree, run):
    code, out, _ = run("lambdalabs_api.py", "--offline", "--output", "json")
    assert code == 0
    assert "terraform/lambdalabs/kconfigs/Kconfig.compute.default" in json.loads(out)["written"]


def _credentials_file(home, text):
    d = home / ".datacrunch"
    d.mkdir(mode=0o700, exist_ok=True)
    (d / "credentials").write_text(text)
    os.chmod(d / "credentials", 0o600)
    return d / "credentials"


def test_seed_004_single_value_is_the_secret_and_the_client_id_is_asked(run, home):
    code, out, err = run("datacrunch_credentials.py", "set", "your-api-key-here", stdin="my-client-id\n")
    assert code == 0, err
    assert "the value given is the client_secret; the client_id is needed too" in err
    assert "client ID is shown next to the secret" in err
    spec = providers.credential_spec("datacrunch")
    assert credentials.load(spec) == {"client_id": "my-client-id", "client_secret": "your-api-key-here"}
    assert stat.S_IMODE(spec.path.stat().st_mode) == 0o600
    # Again with a new key: the client id already there is kept, nothing is asked.
    code, out, err = run("datacrunch_credentials.py", "set", "second-key", stdin="")
    assert code == 0 and "kept the client_id already there" in out
    assert credentials.load(spec) == {"client_id": "my-client-id", "client_secret": "second-key"}


def test_seed_004_kdevops_file_keeps_its_spelling(run, home):
    path = _credentials_file(home, "# mine\n[default]\ndatacrunch_api_key=old-key\n")
    code, _, err = run("datacrunch_credentials.py", "set", "your-api-key-here", stdin="the-id\n")
    assert code == 0, err
    text = path.read_text()
    assert "# mine" in text and "datacrunch_api_key = your-api-key-here" in text and "client_id = the-id" in text


def test_single_value_without_a_client_id_writes_nothing_and_says_why(run, home):
    code, out, err = run("datacrunch_credentials.py", "set", "your-api-key-here", stdin="")
    assert code == 1
    assert "error: datacrunch: no client_id given; nothing written" in err
    assert not (home / ".datacrunch" / "credentials").exists()


def test_file_with_only_the_kdevops_api_key_explains_the_pair(home):
    path = _credentials_file(home, "[default]\ndatacrunch_api_key=your-api-key-here\n")
    with pytest.raises(CredentialsError) as e:
        credentials.load(providers.credential_spec("datacrunch"))
    line = e.value.line()
    assert f"{path} [default] has the client_secret (datacrunch_api_key) but no client_id" in line
    assert "OAuth2" in line and "client ID is shown next to the secret" in line
    assert "add 'client_id = ...' under [default]" in line
    assert "your-api-key-here" not in line


def test_lambdalabs_credentials_set_still_takes_the_one_key(run, home):
    code, _, err = run("lambdalabs_credentials.py", "set", "secret-key-123456")
    assert code == 0, err
    assert credentials.load(providers.credential_spec("lambdalabs")) == {"api_key": "secret-key-123456"}
    code, _, err = run("lambdalabs_credentials.py", "set", "a", "b")
    assert code == 1 and "set takes at most 1 values" in err


def test_extract_api_key_validates_and_never_prints_the_key(run, home):
    code, _, err = run("extract_api_key.py")
    assert code == 1 and "credentials not found" in err
    run("lambdalabs_credentials.py", "set", "secret-key-123456")
    code, out, err = run("extract_api_key.py")
    assert code == 0 and "api_key (lambdalabs_api_key) found in" in out
    code, out, err = run("extract_api_key.py", "--output", "json")
    assert json.loads(out)["valid"] is True
    other = home / "elsewhere"
    other.write_text("[default]\nlambdalabs_api_key = two words\n")
    os.chmod(other, 0o600)
    code, out, err = run("extract_api_key.py", str(other))
    assert code == 1 and "not one word" in err
    for text in (out, err):
        assert "secret-key-123456" not in text and "two words" not in text
    os.chmod(other, 0o644)
    code, _, err = run("extract_api_key.py", str(other))
    assert code == 1 and "readable by other users" in err


# -- --output json, every lambda-cli subcommand -------------------------------------------
# subcommand -> arguments after it (the parser's list is checked against this table).
SUBCOMMANDS = {
    "instance-types": ["list", "--available-only"],
    "pricing": ["list"],
    "check-capacity": [],
    "select-tier": ["h100-or-less", "--verbose"],
    "smart-select": ["--mode", "cheapest", "--verbose"],
    "ssh-keys": ["list"],
    "ssh-key-name": [],
    "list-instances": [],
    "credentials": ["check"],
    "generate-kconfig": [],
}


@pytest.fixture(scope="module")
def emulator():
    emu_mod = pytest.importorskip("kcloud.emulator")
    emu = emu_mod.start("scarce", ssh="off")
    yield emu
    emu.stop()


def test_every_lambda_cli_subcommand_honours_output_json(tree, run, emulator, monkeypatch):
    for k, v in EMULATOR_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("LAMBDALABS_API_URL", emulator.lambdalabs_url)
    parser = build_parser("lambdalabs")
    provider_sub = next(a for a in parser._subparsers._group_actions[0].choices["lambdalabs"]._actions
                        if a.dest == "command")
    assert set(provider_sub.choices) == set(SUBCOMMANDS), "a new subcommand needs a line in SUBCOMMANDS"
    for sub, args in SUBCOMMANDS.items():
        code, out, err = run("lambda-cli", "--output", "json", sub, *args)
        assert code == 0, (sub, err)
        json.loads(out)                                 # the whole of stdout is one JSON document
        code, out2, err = run("lambda-cli", sub, *args, "--output", "json")   # after the subcommand too
        assert code == 0 and json.loads(out2) is not None, (sub, err)
