"""Provider registry: a provider is `providers/<name>.py` plus `data/<name>.yaml`, nothing else.

Core code asks for providers by name here; it never imports a provider module directly.
"""
from __future__ import annotations

import functools
import importlib
import os
from pathlib import Path
from typing import Any

import yaml

from kcloud.catalog import Catalog
from kcloud.credentials import CredentialSpec
from kcloud.errors import ConfigError
from kcloud.http import ApiClient, HttpPolicy

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def names() -> list[str]:
    return sorted(p.stem for p in DATA_DIR.glob("*.yaml"))


@functools.cache
def data(name: str) -> dict[str, Any]:
    path = DATA_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown provider '{name}'", hint=f"known providers: {', '.join(names())}")
    return yaml.safe_load(path.read_text())


def credential_spec(name: str) -> CredentialSpec:
    c = data(name)["credentials"]
    return CredentialSpec(provider=name, directory=c["directory"],
                          fields={k: tuple(v) for k, v in c["fields"].items()},
                          env={field: var for var, field in c["env"].items()},
                          secrets=tuple(c["secrets"]))


def snapshot(name: str) -> Catalog:
    """The shipped offline catalog: no capacity information, used when the API is not asked."""
    return Catalog.from_dict(data(name)["snapshot"])


def get(name: str, **kwargs):
    """A ready provider client (credentials are read on first use, not here)."""
    module = importlib.import_module(f"kcloud.providers.{name}")
    return module.Client(name, **kwargs)


class ProviderBase:
    """What every provider module shares: its data, base URL, credentials and HTTP client."""

    def __init__(self, name: str, base_url: str | None = None, profile: str = "default"):
        self.name = name
        self.data = data(name)
        self.title = self.data["title"]
        self.login_user = self.data["login_user"]
        self.base_url = base_url or os.environ.get(self.data["api_url_env"]) or self.data["api_url"]
        self.profile = profile
        self.policy = HttpPolicy.from_data(self.data.get("http", {}))
        self._api: ApiClient | None = None

    @property
    def api(self) -> ApiClient:
        if self._api is None:
            self._api = self.make_client()
        return self._api

    def make_client(self) -> ApiClient:  # pragma: no cover - every provider overrides
        raise NotImplementedError

    def credentials(self) -> dict[str, str]:
        from kcloud import credentials
        return credentials.load(credential_spec(self.name), self.profile)

    # Both APIs list at /instances and get at /instances/{id}; `_get` unwraps the envelope
    # and `_instance` maps the provider's object to a normalized Instance.
    def instances(self, name_prefix: str | None = None):
        found = [self._instance(i) for i in self._get("/instances")]
        return [i for i in found if not name_prefix or i.name.startswith(name_prefix)]

    def instance(self, instance_id: str):
        return self._instance(self._get(f"/instances/{instance_id}"))

    @property
    def requests_sent(self) -> int:
        return self._api.requests_sent if self._api else 0
