"""What outlives the machines: shared storage, kept OS volumes, startup scripts.

- Shared storage (`CONFIG_TERRAFORM_LAMBDALABS_FILESYSTEM`, a Lambda file system reused or
  created by name; `CONFIG_TERRAFORM_DATACRUNCH_SHARED_VOLUME_SIZE`, a shared volume named
  `kcloud-<directory id>-shared` and tagged with the directory id) is attached at launch on
  every node and pins the region: candidates elsewhere are dropped with a trace line. When it
  does not exist yet it is created in the region of the first candidate, right before the
  launch; a bringup that launched nothing removes what it created. `make destroy` keeps it;
  `make destroy-storage` removes it after showing its size and monthly cost.
- Kept OS volumes (`CONFIG_TERRAFORM_DATACRUNCH_KEEP_VOLUMES`): kdevops' cache file
  `~/.cache/kdevops/<provider>/<KDEVOPS_HOSTS_PREFIX>.yml` maps host name -> OS volume id. A
  cached volume is booted from again only when it also carries this directory's tag (two
  proofs), is detached and not in the trash; it pins the location too.
- The startup script (`CONFIG_KCLOUD_STARTUP_SCRIPT`): Lambda takes it inline (`user_data`),
  DataCrunch keeps it as a `/scripts` resource named `kcloud-<directory id>-startup`, journalled
  and deleted by destroy.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from kcloud import errors
from kcloud.launch.ownership import TAG_PROJECT

MAX_SCRIPT = 1_000_000           # Lambda's user_data limit (contract 1.2); DataCrunch's is not stated
_VOLUME_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass
class Placement:
    """Where the nodes must go and what they get at launch."""
    region: str = ""                  # pinned region ("" = any)
    why: str = ""                     # "file system shared-fs is in us-east-1"
    storage: object | None = None     # providers.base.Storage, existing or created
    create_name: str = ""             # shared storage to create in the launch region
    create_size: int = 0
    boot_volumes: dict = field(default_factory=dict)   # node name -> OS volume id
    created: list = field(default_factory=list)        # storage this bringup created
    notes: list = field(default_factory=list)

    @property
    def refs(self) -> tuple[str, ...]:
        return (self.storage.ref,) if self.storage is not None else ()

    @property
    def mount_point(self) -> str:
        return (self.storage.tags or {}).get("mount_point", "") if self.storage is not None else ""


def shared_name(project, settings, provider) -> str:
    """The shared storage this directory asks for on `provider`: "" = none."""
    if provider.storage_kind == "file system":
        return settings.filesystem
    if provider.storage_kind == "volume" and settings.shared_volume_gb:
        return f"kcloud-{project.identity(create=True)}-shared"
    return ""


def locate(project, settings, provider) -> Placement:
    """Existing shared storage and kept boot volumes: what pins the region before planning."""
    place = Placement()
    name = shared_name(project, settings, provider) if settings.provider == provider.name else ""
    if name:
        ours = project.identity(create=True)
        found = [s for s in provider.shared_storage() if s.name == name and
                 (provider.storage_kind == "file system" or s.tags.get(TAG_PROJECT) == ours)]
        if found:
            place.storage = found[0]
            place.region = found[0].region
            place.why = f"{provider.storage_kind} {name} is in {found[0].region}"
        else:
            place.create_name, place.create_size = name, settings.shared_volume_gb
    if settings.keep_volumes and provider.keeps_boot_volumes and settings.provider == provider.name:
        place.boot_volumes, where = _cached_boot_volumes(project, settings, provider, place.notes)
        if place.boot_volumes:
            if place.region and where != place.region:
                place.notes.append(f"kept OS volumes are in {where}, the {provider.storage_kind} in "
                                   f"{place.region}: installing afresh")
                place.boot_volumes = {}
            else:
                place.region = where
                place.why = place.why or f"kept OS volumes of {', '.join(sorted(place.boot_volumes))} are in {where}"
    return place


def pin(candidates: list, place: Placement, say) -> list:
    """Candidates in the pinned region only (one trace line for what is dropped)."""
    if not place.region:
        return candidates
    kept = [c for c in candidates if c.region == place.region]
    dropped = sorted({c.region for c in candidates if c.region != place.region})
    if dropped:
        say(f"  dropped candidates in {', '.join(dropped)}: {place.why}, and the nodes must be where it is")
    return kept


def ensure(provider, place: Placement, region: str, journal, owner_id: str, say) -> Placement:
    """Create the shared storage in `region` when it does not exist yet."""
    if place.storage is not None or not place.create_name:
        return place
    tags = {TAG_PROJECT: owner_id} if provider.storage_kind == "volume" else {}
    say(f"Creating {provider.storage_kind} {place.create_name} in {region} (it holds data: make destroy keeps it)")
    journal.record({"event": "storage-create", "provider": provider.name, "name": place.create_name,
                    "region": region})
    st = provider.create_shared_storage(place.create_name, region, place.create_size, {k: v for k, v in tags.items() if v})
    journal.record({"event": "storage-created", "provider": provider.name, "name": st.name, "id": st.id,
                    "region": region, "kind": st.kind})
    place.storage, place.region, place.created = st, region, [st]
    place.why = f"{provider.storage_kind} {st.name} is in {region}"
    return place


def abandon(provider, place: Placement, say) -> None:
    """A bringup that launched nothing: remove the storage it created (empty, ours)."""
    for st in place.created:
        try:
            provider.delete_storage(st)
            say(f"removed {st.kind} {st.name}, created by this bringup (nothing was launched)")
        except errors.KcloudError as exc:
            say(f"{st.kind} {st.name} ({st.id}) created by this bringup could not be removed ({exc.line()}): "
                "make destroy-storage removes it")
    place.created = []


# -- startup script -------------------------------------------------------------------------
def startup_text(project, settings) -> str:
    """The script's text, checked: one clear error instead of a launch that cannot work."""
    if not settings.startup_script:
        return ""
    path = Path(os.path.expanduser(settings.startup_script))
    if not path.is_absolute():
        path = project.root / path
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise errors.ConfigError(f"CONFIG_KCLOUD_STARTUP_SCRIPT: cannot read {path}: {exc.strerror}",
                                 hint="set the path of a script, or \"\" for none") from None
    if len(data) > MAX_SCRIPT:
        raise errors.ConfigError(f"CONFIG_KCLOUD_STARTUP_SCRIPT: {path} is {len(data)} bytes (at most {MAX_SCRIPT})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.ConfigError(f"CONFIG_KCLOUD_STARTUP_SCRIPT: {path} is not UTF-8 text") from None
    if not text.startswith(("#!", "#cloud-config")):
        raise errors.ConfigError(f"CONFIG_KCLOUD_STARTUP_SCRIPT: {path} starts with neither #! nor #cloud-config",
                                 hint="a startup script is a script (#!/bin/bash ...) or cloud-init user data")
    return text


def startup_script(project, provider, text: str, journal) -> str:
    """The provider's script id for `text` ("" when the provider takes it inline)."""
    if not text:
        return ""
    name = f"kcloud-{project.identity(create=True)}-startup"
    journal.record({"event": "script-create", "provider": provider.name, "name": name})
    sid = provider.create_startup_script(name, text)
    if sid:
        journal.record({"event": "script", "provider": provider.name, "name": name, "id": sid})
    return sid or ""


def scripts_of(events: list[dict], provider) -> dict[str, str]:
    """{script id: name} this directory created on `provider`: journalled ids, and -- when a
    create's answer was lost -- scripts bearing the name a journalled create used (its name
    carries our directory id: two proofs)."""
    found = {e["id"]: e.get("name", "") for e in events
             if e.get("event") == "script" and e.get("provider") == provider.name and isinstance(e.get("id"), str)}
    asked = {e["name"] for e in events if e.get("event") == "script-create" and e.get("provider") == provider.name
             and isinstance(e.get("name"), str)}
    listing = getattr(provider, "scripts", None)
    if asked - set(found.values()) and listing is not None:
        try:
            found.update({x["id"]: x["name"] for x in listing() if x["name"] in asked})
        except errors.ApiError:
            pass
    return found


# -- kept OS volumes: kdevops' cache file ----------------------------------------------------
def cache_path(provider_name: str, prefix: str) -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "kdevops" / provider_name / f"{prefix}.yml"


def read_cache(provider_name: str, prefix: str, notes: list | None = None) -> dict[str, str]:
    """{host: volume id}; a damaged file or entry is named in `notes` and ignored."""
    path = cache_path(provider_name, prefix)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        if notes is not None:
            notes.append(f"ignored the volume cache {path} ({type(exc).__name__})")
        return {}
    out = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        host, sep, vol = line.partition(":")
        host, vol = host.strip().strip("'\""), vol.strip().strip("'\"")
        if sep and _HOST.match(host) and _VOLUME_ID.match(vol):
            out[host] = vol
        elif notes is not None:
            notes.append(f"ignored a damaged line of {path}")
    return out


def write_cache(provider_name: str, prefix: str, entries: dict[str, str]) -> None:
    from kcloud.fsutil import atomic_write
    path = cache_path(provider_name, prefix)
    if not entries:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "".join(f"{h}: {v}\n" for h, v in sorted(entries.items())), 0o644)


def _cached_boot_volumes(project, settings, provider, notes: list) -> tuple[dict, str]:
    cache = read_cache(provider.name, settings.hosts_prefix, notes)
    wanted = {n: cache[n] for n in settings.node_names() if n in cache}
    if not wanted:
        return {}, ""
    ours = project.identity(create=True)
    volumes = {v["id"]: v for v in provider.volumes()}
    usable, where = {}, set()
    for host, vid in wanted.items():
        v = volumes.get(vid)
        if v is None or v["trash"]:
            notes.append(f"kept OS volume of {host} ({vid}) is {'in the trash' if v else 'gone'}: installing afresh")
            continue
        if v["tags"].get(TAG_PROJECT) != ours:
            notes.append(f"kept OS volume of {host} ({vid}) is not tagged as this directory's: not used")
            continue
        if v["instance_ids"]:
            notes.append(f"kept OS volume of {host} ({vid}) is attached to another instance: not used")
            continue
        usable[host] = vid
        where.add(v["location"])
    if len(where) > 1:
        notes.append(f"kept OS volumes are in several locations ({', '.join(sorted(where))}): installing afresh")
        return {}, ""
    return usable, next(iter(where), "")


def remember_boot_volumes(project, settings, provider, members: list[dict], say) -> None:
    """After bringup with KEEP_VOLUMES: cache each node's OS volume and tag it as ours."""
    if not (settings.keep_volumes and provider.keeps_boot_volumes):
        return
    cache = read_cache(provider.name, settings.hosts_prefix)
    ours = project.identity(create=True)
    for m in members:
        vid = m.get("boot_volume") or ""
        if vid and _VOLUME_ID.match(vid) and _HOST.match(m.get("name", "")):
            if cache.get(m["name"]) != vid:
                provider.tag_volume(vid, TAG_PROJECT, ours)
            cache[m["name"]] = vid
    write_cache(provider.name, settings.hosts_prefix, cache)
    say(f"OS volumes kept for the next bringup: {cache_path(provider.name, settings.hosts_prefix)}")
