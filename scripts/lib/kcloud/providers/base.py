"""The provider contract (after SkyPilot's sky/provision): the same few calls for every cloud.

A provider is one module in this package plus one data file in kcloud/data/. Nothing
outside those two files knows a provider's URLs, envelopes, status names or error codes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from kcloud.catalog import Catalog, Image


@dataclass(frozen=True)
class SshKey:
    id: str
    name: str
    public_key: str


@dataclass(frozen=True)
class LaunchRequest:
    instance_type: str
    region: str
    name: str                 # unique per project: <prefix>-<host>, <= 64 chars
    ssh_key_name: str
    ssh_key_id: str
    image: str = ""           # provider image id/family; "" = the provider's default
    user_data: str = ""
    tags: tuple[tuple[str, str], ...] = ()   # ownership marks (kcloud.launch.ownership), set at launch
    shared_storage: tuple[str, ...] = ()     # Storage.ref of each shared file system / volume to attach at launch
    startup_script_id: str = ""  # a script the provider keeps (create_startup_script); "" = user_data inline
    boot_volume_id: str = ""     # boot from this kept OS volume instead of a fresh install ("" = image)


# Normalized instance states; providers map their own names onto these.
PENDING, ACTIVE, FAILED, TERMINATING, TERMINATED = "pending", "active", "failed", "terminating", "terminated"


@dataclass(frozen=True)
class Instance:
    id: str
    name: str
    instance_type: str
    region: str
    state: str                # one of the normalized states above
    status: str               # the provider's own word, for display
    ip: str | None
    price_per_hour: float
    created_at: str = ""      # ISO 8601, "" when the API does not say
    keys: tuple[str, ...] = ()  # SSH key names or ids as the API reports them (ownership check)
    tags: dict = field(default_factory=dict, compare=False)   # key -> value, as the API reports them
    extra: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Storage:
    """Shared storage that outlives instances: a Lambda file system, a DataCrunch shared volume.
    Kept by `make destroy`, removed by `make destroy-storage`."""
    kind: str                 # "file system", "volume"
    id: str
    name: str
    region: str
    size_gb: float | None     # used (file systems) or provisioned (volumes); None = unknown
    monthly_usd: float | None  # what keeping it costs per month now; None = unknown
    in_use: bool = False
    ref: str = ""             # what a launch names it by (LaunchRequest.shared_storage)
    tags: dict = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Leftover:
    kind: str                 # "volume", "script", ...
    id: str
    name: str
    detail: str = ""          # e.g. "in trash, 100 GB"


class Provider(Protocol):
    name: str                 # "lambdalabs"
    title: str                # "Lambda Cloud"
    login_user: str           # user the images log in as

    def catalog(self) -> Catalog:
        """Types, prices, regions, capacity and images, in as few requests as the API allows."""

    def capacity(self) -> dict[str, tuple[str, ...]]:
        """Fresh capacity only (type -> regions), for launch-time decisions."""

    def images(self) -> list[Image]: ...

    def ssh_keys(self) -> list[SshKey]: ...

    def add_ssh_key(self, name: str, public_key: str) -> SshKey: ...

    def delete_ssh_key(self, key_id: str) -> None:
        """Idempotent: a key that is already gone is not an error."""

    def launch(self, request: LaunchRequest) -> str:
        """Launch one instance; return its id. Raises CapacityError etc. (kcloud.errors)."""

    def instances(self, name_prefix: str | None = None) -> list[Instance]: ...

    def instance(self, instance_id: str) -> Instance:
        """Raises NotFound when the instance no longer exists."""

    def terminate(self, instance_ids: list[str]) -> None:
        """Idempotent: ids that are already gone are not an error. Removes everything the
        instance's launch created (e.g. DataCrunch's OS volume, permanently)."""

    def leftovers(self, owner) -> list["Leftover"]:
        """Billable things other than instances that `owner` (kcloud.launch.ownership.Owner)
        provably created and that outlive an instance (volumes in a trash, scripts)."""

    def remove_leftover(self, item: "Leftover") -> None: ...

    # Optional (ProviderBase has defaults): shared storage, startup scripts, kept boot volumes.
    def shared_storage(self) -> list[Storage]:
        """Every shared file system / shared volume of the account."""

    def create_shared_storage(self, name: str, region: str, size_gb: int, tags: dict) -> Storage: ...

    def delete_storage(self, storage: Storage) -> None:
        """For good (never to a trash)."""

    def create_startup_script(self, name: str, text: str) -> str | None:
        """A script the provider keeps and runs at first boot: its id; None = the provider takes
        the text inline at launch (LaunchRequest.user_data)."""

    @property
    def requests_sent(self) -> int: ...
