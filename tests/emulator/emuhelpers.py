"""Helpers shared by the emulator tests (fixtures live in conftest.py)."""

import time

import pytest
import requests

LAMBDA_KEY = "emulator-key"
DC_CLIENT = {"client_id": "emulator-client", "client_secret": "emulator-secret"}
TIMEOUT = 10


def wait_for(predicate, timeout=5.0, interval=0.05):
    """Poll until predicate() is truthy; returns its value or fails the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout}s")


class LambdaClient:
    """Thin requests wrapper: relative paths, the emulator key, a timeout."""

    def __init__(self, base, key=LAMBDA_KEY):
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def __call__(self, method, path, **kwargs):
        return self.session.request(method, self.base + path, timeout=TIMEOUT, **kwargs)


class DataCrunchClient(LambdaClient):
    """Fetches a token first, like the SDKs do."""

    def __init__(self, base):
        token = requests.post(
            base + "/oauth2/token", json={"grant_type": "client_credentials", **DC_CLIENT}, timeout=TIMEOUT
        ).json()["access_token"]
        super().__init__(base, token)
