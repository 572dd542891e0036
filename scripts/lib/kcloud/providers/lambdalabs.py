"""Lambda Cloud API v1 (shared/reference/api-contracts.md section 1).

Envelope `{"data": ...}`; errors `{"error": {"code", "message", "suggestion"}}`; capacity
is `regions_with_capacity_available` in /instance-types; region names come from /regions;
a capacity failure is HTTP 400 with a code, and the edge's 429 is not JSON.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import requests

from kcloud import errors
from kcloud.catalog import Catalog, Image, InstanceType
from kcloud.http import ApiClient, error_body, typed_error
from kcloud.providers import ProviderBase, check_id, snapshot
from kcloud.providers.base import (ACTIVE, FAILED, PENDING, TERMINATED, TERMINATING, Instance,
                                   LaunchRequest, SshKey, Storage)

STATES = {"booting": PENDING, "active": ACTIVE, "unhealthy": FAILED, "terminating": TERMINATING,
          "terminated": TERMINATED, "preempted": TERMINATED}

ERRORS = {
    "global/invalid-api-key": errors.AuthError,
    "global/account-inactive": errors.AuthError,
    "global/invalid-address": errors.AuthError,
    "instance-operations/launch/insufficient-capacity": errors.CapacityError,
    "global/quota-exceeded": errors.QuotaError,
    "global/object-does-not-exist": errors.NotFound,
    "global/invalid-parameters": errors.InvalidRequest,
    "instance-operations/launch/file-system-in-wrong-region": errors.InvalidRequest,
    "global/internal-error": errors.TransientError,
}


class _BearerKey(requests.auth.AuthBase):
    """Reads the key on first use, so building a client never touches the credentials file."""

    def __init__(self, provider: "Client"):
        self.provider, self.key = provider, None

    def __call__(self, r):
        if self.key is None:
            self.key = self.provider.credentials()["api_key"]
        r.headers["Authorization"] = f"Bearer {self.key}"
        return r


def map_error(resp: requests.Response, what: str) -> errors.ApiError:
    body = error_body(resp)
    err = body.get("error", {}) if isinstance(body, dict) else {}
    if not isinstance(err, dict):
        err = {}
    code, message = str(err.get("code", "")), str(err.get("message", ""))
    # An image family missing in the region or not fitting the type's architecture: the next
    # candidate may have it (failover), it is not the user's mistake.
    image = errors.ImageNotSupported if code == "global/invalid-parameters" and "image" in message.lower() else None
    return typed_error("lambdalabs", resp, what, code, message, ERRORS, cls=image)


def _data(answer, what: str):
    if not isinstance(answer, dict) or "data" not in answer:
        raise errors.TransientError(f"lambdalabs: malformed answer to {what} (no 'data' envelope)",
                                    provider="lambdalabs")
    return answer["data"]


class Client(ProviderBase):
    def make_client(self) -> ApiClient:
        return ApiClient(self.name, self.base_url, self.policy, map_error, auth=_BearerKey(self))

    def _get(self, path: str):
        return _data(self.api.call("GET", path), f"GET {path}")

    def _post(self, path: str, body: dict, kind: str = "general"):
        return _data(self.api.call("POST", path, json_body=body, kind=kind), f"POST {path}")

    # -- catalog --------------------------------------------------------------------
    def _instance_types(self) -> tuple[dict, dict, dict]:
        types, capacity, regions = {}, {}, {}
        try:
            for name, entry in self._get("/instance-types").items():
                t = entry["instance_type"]
                specs = t.get("specs", {})
                gpu = t.get("gpu_description", "")
                types[name] = InstanceType(
                    name=name, gpu=gpu, gpu_count=int(specs.get("gpus", 0)),
                    gpu_memory_gb=_gb(gpu), vcpus=int(specs.get("vcpus", 0)),
                    memory_gb=int(specs.get("memory_gib", 0)),
                    price_per_hour=int(t["price_cents_per_hour"]) / 100.0,
                    description=t.get("description", name))
                up = entry.get("regions_with_capacity_available", [])
                capacity[name] = tuple(r["name"] for r in up)
                regions.update({r["name"]: r.get("description", r["name"]) for r in up})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise errors.TransientError(f"lambdalabs: malformed instance type in GET /instance-types ({exc!r})",
                                        provider=self.name) from None
        return types, capacity, regions

    def catalog(self) -> Catalog:
        with ThreadPoolExecutor(3) as pool:
            types_f = pool.submit(self._instance_types)
            images_f = pool.submit(self.images)
            regions_f = pool.submit(self._regions)
            (types, capacity, live_regions), images = types_f.result(), images_f.result()
            listed = regions_f.result()
        # GET /regions (API v1.10+); older deployments: known regions plus what answers mention.
        regions = dict(listed or snapshot(self.name).regions)
        regions.update({k: v for k, v in live_regions.items() if k not in regions})
        for image in images:
            for r in image.regions:
                regions.setdefault(r, r)
        return Catalog(self.name, types, regions, capacity, images, source="live")

    def capacity(self) -> dict[str, tuple[str, ...]]:
        return self._instance_types()[1]

    def _regions(self) -> dict[str, str]:
        try:
            answer = self._get("/regions")
        except errors.NotFound:
            return {}
        return {r["name"]: r.get("description") or r["name"] for r in answer
                if isinstance(r, dict) and isinstance(r.get("name"), str)} if isinstance(answer, list) else {}

    def images(self) -> list[Image]:
        merged: dict[str, Image] = {}
        for i in self._get("/images"):
            key = i.get("family") or i["id"]
            region = (i.get("region") or {}).get("name", "")
            prev = merged.get(key)
            regions = (prev.regions if prev else ()) + ((region,) if region else ())
            merged[key] = Image(id=key, name=i.get("name") or key, family=i.get("family", ""),
                                regions=tuple(sorted(set(regions))))
        return sorted(merged.values(), key=lambda i: i.id)

    # -- ssh keys ---------------------------------------------------------------------
    def ssh_keys(self) -> list[SshKey]:
        return [SshKey(k["id"], k["name"], k.get("public_key", "")) for k in self._get("/ssh-keys")]

    def add_ssh_key(self, name: str, public_key: str) -> SshKey:
        k = self._post("/ssh-keys", {"name": name, "public_key": public_key})
        return SshKey(k["id"], k["name"], k.get("public_key", public_key))

    def delete_ssh_key(self, key_id: str) -> None:
        try:
            self.api.call("DELETE", f"/ssh-keys/{key_id}")
        except errors.NotFound:
            pass

    # -- instances --------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> str:
        body = {"region_name": request.region, "instance_type_name": request.instance_type,
                "ssh_key_names": [request.ssh_key_name], "name": request.name}
        if request.image:
            body["image"] = {"family": request.image}
        if request.user_data:
            body["user_data"] = request.user_data
        if request.tags:
            body["tags"] = [{"key": k, "value": v} for k, v in request.tags]
        if request.shared_storage:
            body["file_system_names"] = list(request.shared_storage)
        ids = self._post("/instance-operations/launch", body, kind="launch").get("instance_ids") or []
        if len(ids) != 1:
            raise errors.TransientError(f"lambdalabs: launch answered {len(ids)} instance ids, expected 1",
                                        provider=self.name)
        return ids[0]

    def _instance(self, i: dict) -> Instance:
        itype = i.get("instance_type") or {}
        return Instance(id=i["id"], name=i.get("name") or "", instance_type=itype.get("name", ""),
                        region=(i.get("region") or {}).get("name", ""),
                        state=STATES.get(i.get("status", ""), FAILED), status=i.get("status", ""),
                        ip=i.get("ip"), price_per_hour=itype.get("price_cents_per_hour", 0) / 100.0,
                        keys=tuple(i.get("ssh_key_names") or ()),
                        extra={"hostname": i.get("hostname"), "private_ip": i.get("private_ip") or ""},
                        tags=_tags(i.get("tags")))

    def terminate(self, instance_ids: list[str]) -> None:
        if not instance_ids:
            return
        try:
            self._post("/instance-operations/terminate", {"instance_ids": list(instance_ids)})
        except errors.NotFound:
            if len(instance_ids) > 1:   # one id is gone: terminate the others one by one
                for iid in instance_ids:
                    self.terminate([iid])


    # -- file systems (shared storage) ----------------------------------------------------
    storage_kind = "file system"

    def shared_storage(self) -> list[Storage]:
        price = float(self.data.get("storage", {}).get("price_gb_month", 0.20))
        out = []
        for f in self._get("/file-systems"):
            if not isinstance(f, dict):
                continue
            used = f.get("bytes_used")
            gb = used / 1e9 if isinstance(used, (int, float)) and not isinstance(used, bool) else None
            out.append(Storage("file system", check_id(self.name, f.get("id"), "file system id"),
                               str(f.get("name", "")), str((f.get("region") or {}).get("name", "")), gb,
                               None if gb is None else round(gb * price, 2), bool(f.get("is_in_use")),
                               ref=str(f.get("name", "")), tags={"mount_point": _mount_point(f.get("mount_point"))}))
        return out

    def create_shared_storage(self, name: str, region: str, size_gb: int, tags: dict) -> Storage:
        f = self._post("/filesystems", {"name": name, "region": region})
        if not isinstance(f, dict):
            raise errors.TransientError("lambdalabs: malformed answer to POST /filesystems", provider=self.name)
        return Storage("file system", check_id(self.name, f.get("id"), "file system id"), name, region, 0.0, 0.0,
                       False, ref=name, tags={"mount_point": _mount_point(f.get("mount_point"))})

    def delete_storage(self, storage: Storage) -> None:
        try:
            self.api.call("DELETE", f"/filesystems/{check_id(self.name, storage.id, 'file system id')}")
        except errors.NotFound:
            pass


# Lambda's own rule for mount points (contract 1.2). The value reaches Ansible as a variable,
# which Ansible templates: anything else (a "{{ lookup(...) }}") is dropped, never used.
_MOUNT_POINT = re.compile(r"^(/home|/lambda/nfs|/data)[/a-zA-Z0-9-]{0,240}$")


def _mount_point(raw) -> str:
    return raw if isinstance(raw, str) and _MOUNT_POINT.match(raw) else ""


def _tags(raw) -> dict:
    """[{key, value}] -> {key: value}; anything else is no tags (never a crash)."""
    if not isinstance(raw, list):
        return {}
    return {t["key"]: str(t.get("value") or "") for t in raw if isinstance(t, dict) and isinstance(t.get("key"), str)}


def _gb(description: str) -> int:
    """'H100 (80 GB SXM5)' -> 80."""
    m = re.search(r"(\d+)\s*GB", description or "")
    return int(m.group(1)) if m else 0
