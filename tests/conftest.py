"""Shared fixtures: the package on sys.path, a scratch HOME, and a running emulator."""
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts" / "lib"))

EMULATOR_CREDENTIALS = {"LAMBDALABS_API_KEY": "emulator-key", "DATACRUNCH_CLIENT_ID": "emulator-client",
                        "DATACRUNCH_CLIENT_SECRET": "emulator-secret"}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A scratch HOME with no credentials and no provider env vars."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    for var in list(EMULATOR_CREDENTIALS) + ["LAMBDALABS_API_URL", "DATACRUNCH_API_URL"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KCLOUD_HTTP_BACKOFF", "0.05")
    monkeypatch.setenv("KCLOUD_CLIENT_RATE_LIMITS", "off")
    return h
