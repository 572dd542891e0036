import os
import stat

import pytest

from kcloud import credentials, providers
from kcloud.errors import CredentialsError
from kcloud.redact import redact


def spec(name):
    return providers.credential_spec(name)


def test_store_writes_0600_and_load_reads_back(home):
    path = credentials.store(spec("lambdalabs"), {"api_key": "secret-key-123456"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "[default]\nlambdalabs_api_key = secret-key-123456" in path.read_text()
    assert credentials.load(spec("lambdalabs")) == {"api_key": "secret-key-123456"}
    # Once loaded, the key is redacted from anything kcloud prints.
    assert "secret-key-123456" not in redact("Authorization failed for secret-key-123456")


def test_group_readable_file_is_refused(home):
    path = credentials.store(spec("lambdalabs"), {"api_key": "k" * 20})
    os.chmod(path, 0o644)
    with pytest.raises(CredentialsError, match="readable by other users.*refusing") as e:
        credentials.load(spec("lambdalabs"))
    assert "chmod 600" in e.value.line()


def test_malformed_file_is_one_clear_line(home):
    d = home / ".lambdalabs"
    d.mkdir()
    (d / "credentials").write_text("lambdalabs_api_key = no section header\n")
    os.chmod(d / "credentials", 0o600)
    with pytest.raises(CredentialsError, match="not a valid credentials file") as e:
        credentials.load(spec("lambdalabs"))
    assert "\n" not in e.value.line()


def test_missing_credentials_name_the_fix(home):
    with pytest.raises(CredentialsError, match="no client_id, client_secret") as e:
        credentials.load(spec("datacrunch"))
    assert "datacrunch_credentials.py set" in e.value.line()


def test_kdevops_api_key_spelling_is_the_client_secret(home):
    d = home / ".datacrunch"
    d.mkdir(mode=0o700)
    (d / "credentials").write_text("[default]\nclient_id = cid\ndatacrunch_api_key=the-secret\n")
    os.chmod(d / "credentials", 0o600)
    assert credentials.load(spec("datacrunch")) == {"client_id": "cid", "client_secret": "the-secret"}


def test_environment_overrides_the_file_per_field(home, monkeypatch):
    credentials.store(spec("datacrunch"), {"client_id": "file-id", "client_secret": "file-secret"})
    monkeypatch.setenv("DATACRUNCH_CLIENT_SECRET", "env-secret")
    assert credentials.load(spec("datacrunch")) == {"client_id": "file-id", "client_secret": "env-secret"}


def test_store_keeps_other_profiles(home):
    credentials.store(spec("lambdalabs"), {"api_key": "first-key-aaaa"}, profile="work")
    credentials.store(spec("lambdalabs"), {"api_key": "second-key-bbbb"})
    assert credentials.load(spec("lambdalabs"), "work") == {"api_key": "first-key-aaaa"}
    assert credentials.load(spec("lambdalabs")) == {"api_key": "second-key-bbbb"}
