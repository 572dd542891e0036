"""make cloud-config: concurrent fetch, all-or-nothing per provider, previous fragments kept."""
import threading

import pytest

from kconfig_helpers import EMULATOR_CREDENTIALS, fake_live, temp_files
from kcloud import errors, providers
from kcloud.kconfig import generate, kbuild, paths
from kcloud.kconfig import config as kconfig_config

CHECK, CROSS = "\u2713", "\u2717"


def snapshot_of(tree):
    return {p: p.read_bytes() for p in (tree / "terraform").rglob("Kconfig*")}


def test_api_error_keeps_previous_fragments_byte_for_byte(tree):
    generate.refresh(tree, fetch=fake_live)
    before = snapshot_of(tree)

    def fetch(provider):
        if provider == "lambdalabs":
            raise errors.AuthError("lambdalabs: GET /instance-types: global/invalid-api-key: bad key")
        live = fake_live(provider)
        live.capacity = {}
        return live

    outcomes = {o.provider: o for o in generate.refresh(tree, fetch=fetch)}
    assert outcomes["lambdalabs"].line.startswith("lambdalabs: kept previous fragments: ")
    assert "invalid-api-key" in outcomes["lambdalabs"].line and not outcomes["lambdalabs"].ok
    assert outcomes["datacrunch"].ok
    after = snapshot_of(tree)
    for path, data in before.items():
        if "/lambdalabs/" in str(path):
            assert after[path] == data, path
    assert after != before                                   # datacrunch did refresh
    assert temp_files(tree) == []


def test_a_failed_write_leaves_every_previous_file(tree, monkeypatch):
    generate.refresh(tree, ["lambdalabs"], fetch=fake_live)
    before = snapshot_of(tree)
    import tempfile
    real, calls = tempfile.mkstemp, []

    def failing_mkstemp(*a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*a, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", failing_mkstemp)
    live = fake_live("lambdalabs", sold_out=("gpu_1x_a10",))
    [o] = generate.refresh(tree, ["lambdalabs"], fetch=lambda p: live)
    assert not o.ok and "No space left on device" in o.line
    assert snapshot_of(tree) == before and temp_files(tree) == []


def test_providers_are_fetched_concurrently(tree):
    barrier = threading.Barrier(len(providers.names()), timeout=5)

    def fetch(provider):
        barrier.wait()          # only passes if every provider's fetch is running at once
        return fake_live(provider)

    outcomes = generate.refresh(tree, fetch=fetch)
    assert all(o.ok for o in outcomes), [o.line for o in outcomes]
    assert all(paths.flavour(tree, p) == paths.GENERATED for p in providers.names())


@pytest.fixture(scope="module")
def emulator():
    emu_mod = pytest.importorskip("kcloud.emulator")
    emu = emu_mod.start("scarce")
    yield emu
    emu.stop()


@pytest.fixture
def live_env(emulator, monkeypatch, tmp_path):
    home = tmp_path / "home"                     # no real credentials file is ever read
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KCLOUD_HTTP_BACKOFF", "0.05")
    monkeypatch.setenv("KCLOUD_CLIENT_RATE_LIMITS", "off")
    for provider, url in emulator.urls.items():  # the providers the emulator serves, not every one kcloud has
        monkeypatch.setenv(providers.data(provider)["api_url_env"], url)
    for k, v in EMULATOR_CREDENTIALS.items():
        monkeypatch.setenv(k, v)
    return emulator


def cloud_config(run_cli, emulator):
    """`make cloud-config-<p>` for each provider the emulator serves: (exit code, stdout, stderr)."""
    results = [run_cli("cloud-config", "--provider", p) for p in emulator.urls]
    return max(r[0] for r in results), "".join(r[1] for r in results), "".join(r[2] for r in results)


def test_cloud_config_against_the_emulator(tree, live_env, run_cli):
    code, out, err = cloud_config(run_cli, live_env)
    assert code == 0, err
    assert set(live_env.urls) >= {"lambdalabs", "datacrunch"}
    for p in live_env.urls:
        assert f"{p}: wrote Kconfig.compute.generated, Kconfig.location.generated, Kconfig.images.generated" in out
        assert paths.flavour(tree, p) == paths.GENERATED
    compute = (tree / "terraform/lambdalabs/kconfigs/Kconfig.compute.generated").read_text()
    assert CHECK in compute and CROSS in compute                 # scarce: some sold out, some not
    assert "Rendered from the live Lambda Cloud API" in compute
    for name in kbuild.defconfig_names(tree):
        assert kbuild.defconfig(name).warnings == [], name
    code, out, err = run_cli("clean-cloud-config")
    assert code == 0 and "removed terraform/lambdalabs/kconfigs/Kconfig.compute.generated" in out
    assert all(paths.flavour(tree, p) == paths.DEFAULT for p in providers.names())


def test_cli_rejected_key_keeps_fragments_and_exits_nonzero(tree, live_env, run_cli, monkeypatch):
    assert cloud_config(run_cli, live_env)[0] == 0
    before = snapshot_of(tree)
    monkeypatch.setenv("LAMBDALABS_API_KEY", "wrong-key")
    code, out, err = cloud_config(run_cli, live_env)
    assert code == 1
    [line] = [l for l in err.splitlines() if l.startswith("lambdalabs:")]
    assert line.startswith("lambdalabs: kept previous fragments: ") and "wrong-key" not in err
    assert "datacrunch: wrote" in out
    after = snapshot_of(tree)
    assert {k: v for k, v in after.items() if "lambdalabs" in str(k)} == \
           {k: v for k, v in before.items() if "lambdalabs" in str(k)}
    assert temp_files(tree) == []


def test_provider_generate_kconfig_and_offline(tree, live_env, run_cli):
    code, out, err = run_cli("datacrunch", "generate-kconfig")
    assert code == 0, err
    assert paths.flavour(tree, "datacrunch") == paths.GENERATED
    assert paths.flavour(tree, "lambdalabs") == paths.DEFAULT
    kbuild.defconfig("datacrunch-h100-pytorch")
    assert kconfig_config.load_settings(tree / ".config").selection.value == "ANY_1H100"
    default = paths.fragment_path(tree, "lambdalabs", "compute", paths.DEFAULT)
    default.write_text("# hand edited\n")
    code, out, err = run_cli("cloud-config", "--offline", "--provider", "lambdalabs")
    assert code == 0 and default.read_text() == generate.render_offline("lambdalabs")["compute"]
