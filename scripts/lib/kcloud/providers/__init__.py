"""Provider registry: a provider is `providers/<name>.py` plus `data/<name>.yaml`, nothing else.

Core code asks for providers by name here; it never imports a provider module directly.
"""
from __future__ import annotations

import functools
import importlib
import os
import re

from kcloud import datafile
from kcloud.errors import ConfigError, HostileAnswer, TransientError

TYPE_CHECKING = False   # (typing.TYPE_CHECKING: importing typing costs ~2 ms)
if TYPE_CHECKING:  # imported where used: the Kconfig targets and --help need names() and data() only
    from typing import Any

    from kcloud.catalog import Catalog
    from kcloud.credentials import CredentialSpec
    from kcloud.http import ApiClient

# A string: pathlib costs ~3 ms of every Kconfig target, which need names() and data() only.
_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.realpath(__file__))), "data")


def __getattr__(name: str):
    if name == "DATA_DIR":          # the data directory as a pathlib.Path
        from pathlib import Path
        return Path(_DATA)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def check_id(provider: str, value, what: str) -> str:
    """An id the API gave us, before it goes into a URL path or a file: a strict pattern, or
    one clear error (an id like '../ssh-keys' must never address another endpoint)."""
    if not isinstance(value, str) or not _ID.match(value):
        raise HostileAnswer(f"{provider} answered an invalid {what}: {str(value)[:60]!r}", provider=provider)
    return value


# A provider name becomes a module name, a directory, symbols (TERRAFORM_<NAME>_...) and
# environment variables: lower-case letters and digits only, so none of them can clash or escape.
_NAME = re.compile(r"^[a-z][a-z0-9]{1,31}$")


def check_name(name) -> str:
    """`name` if it can be a provider name at all (its shape, not whether it exists)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{str(name)[:40]!r} is not a provider name",
                          hint="provider names are 2-32 lower-case letters and digits, starting with a letter "
                               f"(data/<name>.yaml with providers/<name>.py); known: {', '.join(names())}")
    return name


def names() -> list[str]:
    """Every provider: a data file named by a valid provider name (check_name)."""
    return sorted(n[:-len(".yaml")] for n in os.listdir(_DATA) if n.endswith(".yaml") and _NAME.match(n[:-5]))


@functools.cache
def data(name: str) -> dict[str, Any]:
    check_name(name)
    path = os.path.join(_DATA, f"{name}.yaml")
    if not os.path.exists(path):
        raise ConfigError(f"unknown provider '{name}'", hint=f"known providers: {', '.join(names())}")
    return datafile.load(path)


def credential_spec(name: str) -> CredentialSpec:
    from kcloud.credentials import CredentialSpec
    c = data(name)["credentials"]
    return CredentialSpec(provider=name, directory=c["directory"],
                          fields={k: tuple(v) for k, v in c["fields"].items()},
                          env={field: var for var, field in c["env"].items()},
                          secrets=tuple(c["secrets"]))


def snapshot(name: str) -> Catalog:
    """The shipped offline catalog: no capacity information, used when the API is not asked."""
    from kcloud.catalog import Catalog
    return Catalog.from_dict(data(name)["snapshot"])


def get(name: str, **kwargs):
    """A ready provider client (credentials are read on first use, not here)."""
    data(name)                       # a valid, known name (one clear error otherwise)
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
        from kcloud.http import HttpPolicy
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
        answer = self._get("/instances")
        if not isinstance(answer, list):
            raise TransientError(f"{self.name}: malformed answer to GET /instances (not a list)", provider=self.name)
        found = [self._checked(i, "GET /instances") for i in answer]
        return [i for i in found if not name_prefix or i.name.startswith(name_prefix)]

    def instance(self, instance_id: str):
        check_id(self.name, instance_id, "instance id")
        return self._checked(self._get(f"/instances/{instance_id}"), f"GET /instances/{instance_id}")

    def _checked(self, raw, what: str):
        """An API instance object -> Instance; ids and names the rest of kcloud puts into URLs,
        files and commands are checked here, once (an unexpected shape is a malformed answer)."""
        try:
            inst = self._instance(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise TransientError(f"{self.name}: malformed instance in the answer to {what} ({exc!r})",
                                 provider=self.name) from None
        check_id(self.name, inst.id, "instance id")
        return inst

    # Providers without volumes, scripts or file systems have nothing else to clean up.
    def leftovers(self, owner) -> list:
        return []

    # Shared storage, startup scripts and kept boot volumes (providers/base.py, Provider).
    storage_kind = ""           # "file system", "volume"; "" = no shared storage on this cloud
    keeps_boot_volumes = False  # True: terminate(keep_boot_volumes=True) keeps each OS volume for reuse

    def shared_storage(self) -> list:
        return []

    def create_shared_storage(self, name: str, region: str, size_gb: int, tags: dict):
        from kcloud.errors import ConfigError
        raise ConfigError(f"{self.title} has no shared storage kcloud can create")

    def delete_storage(self, storage) -> None:
        from kcloud.errors import ConfigError
        raise ConfigError(f"{self.title} has no shared storage kcloud can delete")

    def create_startup_script(self, name: str, text: str) -> str | None:
        return None

    def remove_leftover(self, item) -> None:
        return None

    @property
    def requests_sent(self) -> int:
        return self._api.requests_sent if self._api else 0


def with_credentials() -> tuple[dict, dict[str, str]]:
    """({name: client} for every provider whose credentials are present, {name: why not} for
    the others): cross-provider commands skip a provider without credentials in one line."""
    from kcloud.errors import CredentialsError
    clients, skipped = {}, {}
    for name in names():
        client = get(name)
        try:
            client.credentials()
        except CredentialsError as exc:
            skipped[name] = exc.line()
            continue
        clients[name] = client
    return clients, skipped
