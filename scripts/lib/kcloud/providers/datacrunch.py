"""DataCrunch / Verda public API v1 (shared/reference/api-contracts.md section 2).

OAuth2 client credentials (refresh before expiry, fall back to a new grant); bare JSON
answers, plain-text ids from creates, flat errors `{"code", "message"}`; no capacity is
a 503 whose message says "Not enough resources".
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from kcloud import errors, redact
from kcloud.catalog import Catalog, Image, InstanceType
from kcloud.http import ApiClient, error_body, typed_error
from kcloud.providers import ProviderBase, check_id, snapshot
from kcloud.providers.base import (ACTIVE, FAILED, PENDING, TERMINATED, TERMINATING, Instance,
                                   LaunchRequest, Leftover, SshKey, Storage)

STATES = {"new": PENDING, "ordered": PENDING, "provisioning": PENDING, "validating": PENDING,
          "pending": PENDING, "starting": PENDING, "running": ACTIVE, "deleting": TERMINATING,
          "deleted": TERMINATED, "discontinued": TERMINATED, "notfound": TERMINATED,
          "not_found": TERMINATED}           # offline, error, no_capacity, unknown -> FAILED

ERRORS = {"unauthorized_request": errors.AuthError, "forbidden_action": errors.AuthError,
          "insufficient_funds": errors.QuotaError, "not_found": errors.NotFound,
          "server_error": errors.TransientError}

REFRESH_MARGIN_S = 30   # like the Go SDK: refresh 30 s before the token expires


def map_error(resp: requests.Response, what: str) -> errors.ApiError:
    body = error_body(resp)
    code = body.get("code", "") if isinstance(body, dict) else ""
    message = (body.get("message") if isinstance(body, dict) else None) or ""
    lowered = message.lower()
    cls = errors.CapacityError if "not enough resources" in lowered else None
    if cls is None and resp.status_code == 400 and ("not valid for this instance type" in lowered or
                                                    "not supported for instance type" in lowered):
        cls = errors.ImageNotSupported      # "Operating system is not valid ...": the next candidate
    return typed_error("datacrunch", resp, what, code, message, ERRORS, cls=cls)


class _OAuth(requests.auth.AuthBase):
    """Client-credentials token, refreshed before expiry; one retry after a 401."""

    def __init__(self, provider: "Client"):
        self.provider = provider
        self.lock = threading.Lock()
        self.access = self.refresh = None
        self.expires = 0.0

    def _grant(self, body: dict) -> None:
        answer = self.provider.api.call("POST", "/oauth2/token", json_body=body, auth=None)
        try:
            self.access, self.refresh = answer["access_token"], answer.get("refresh_token")
            self.expires = time.monotonic() + float(answer.get("expires_in", 3600))
        except (KeyError, TypeError, ValueError):
            raise errors.TransientError("datacrunch: malformed answer to POST /oauth2/token",
                                        provider="datacrunch") from None
        redact.register(self.access)
        redact.register(self.refresh)

    def token(self, force: bool = False) -> str:
        with self.lock:
            if not force and self.access and time.monotonic() < self.expires - REFRESH_MARGIN_S:
                return self.access
            creds = self.provider.credentials()
            if self.refresh:
                try:
                    self._grant({"grant_type": "refresh_token", "refresh_token": self.refresh})
                    return self.access
                except (errors.AuthError, errors.InvalidRequest):
                    self.refresh = None     # expired refresh token: start over
            try:
                self._grant({"grant_type": "client_credentials", "client_id": creds["client_id"],
                             "client_secret": creds["client_secret"]})
            except errors.AuthError:
                raise errors.AuthError("datacrunch: client id or client secret rejected by POST /oauth2/token",
                                       hint="check ~/.datacrunch/credentials or create new API credentials",
                                       provider="datacrunch") from None
            return self.access

    def __call__(self, r):
        r.headers["Authorization"] = f"Bearer {self.token()}"
        r.register_hook("response", self._retry_401)
        return r

    def _retry_401(self, resp, **kwargs):
        if resp.status_code != 401 or getattr(resp.request, "_kcloud_retried", False):
            return resp
        again = resp.request.copy()
        again._kcloud_retried = True
        again.headers["Authorization"] = f"Bearer {self.token(force=True)}"
        resp.content  # release the connection before reusing it
        return resp.connection.send(again, **kwargs)


class Client(ProviderBase):
    def make_client(self) -> ApiClient:
        self.oauth = _OAuth(self)
        return ApiClient(self.name, self.base_url, self.policy, map_error, auth=self.oauth)

    def _get(self, path: str, params: dict | None = None):
        return self.api.call("GET", path, params=params)

    # -- catalog --------------------------------------------------------------------
    def catalog(self) -> Catalog:
        self.api.auth.token()   # one token first, then the independent reads in parallel
        with ThreadPoolExecutor(4) as pool:
            types_f = pool.submit(self._get, "/instance-types", {"currency": "usd"})
            cap_f = pool.submit(self.capacity)
            loc_f = pool.submit(self._get, "/locations")
            img_f = pool.submit(self.images)
            raw_types, capacity, locations, images = (f.result() for f in (types_f, cap_f, loc_f, img_f))
        try:
            types = {t["instance_type"]: _instance_type(t) for t in raw_types}
            regions = {loc["code"]: loc.get("name", loc["code"]) for loc in locations}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise errors.TransientError(f"datacrunch: malformed catalog answer ({exc!r})",
                                        provider=self.name) from None
        return Catalog(self.name, types, regions or dict(snapshot(self.name).regions), capacity, images)

    def capacity(self) -> dict[str, tuple[str, ...]]:
        answer = self._get("/instance-availability", {"is_spot": "false"})
        by_type: dict[str, list[str]] = {}
        try:
            for loc in answer:
                for t in loc["availabilities"]:
                    by_type.setdefault(t, []).append(loc["location_code"])
        except (KeyError, TypeError) as exc:
            raise errors.TransientError(f"datacrunch: malformed answer to GET /instance-availability ({exc!r})",
                                        provider=self.name) from None
        return {t: tuple(r) for t, r in by_type.items()}

    def images(self) -> list[Image]:
        return [Image(id=i["image_type"], name=i.get("name", i["image_type"]),
                      family=" ".join(i.get("details", [])[:1])) for i in self._get("/images")]

    # -- ssh keys ---------------------------------------------------------------------
    def ssh_keys(self) -> list[SshKey]:
        return [SshKey(k["id"], k["name"], k.get("key", "")) for k in self._get("/sshkeys")]

    def add_ssh_key(self, name: str, public_key: str) -> SshKey:
        key_id = self.api.call("POST", "/sshkeys", json_body={"name": name, "key": public_key}, expect="text")
        return SshKey(key_id, name, public_key)

    def delete_ssh_key(self, key_id: str) -> None:
        try:
            self.api.call("DELETE", f"/sshkeys/{key_id}", expect="none")
        except errors.NotFound:
            pass

    # -- instances --------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> str:
        body = {"instance_type": request.instance_type,
                "image": request.image or self.data["default_image"],
                "ssh_key_ids": [request.ssh_key_id], "hostname": request.name,
                "description": request.name, "location_code": request.region,
                "is_spot": False, "contract": "PAY_AS_YOU_GO", "pricing": "FIXED_PRICE"}
        if request.tags:
            body["tags"] = [{"key": k, "value": v} for k, v in request.tags]
        if request.boot_volume_id:          # "image is an image_type or an existing OS volume id"
            body["image"] = check_id(self.name, request.boot_volume_id, "volume id")
        if request.shared_storage:
            body["existing_volumes"] = [check_id(self.name, v, "volume id") for v in request.shared_storage]
        if request.startup_script_id:
            body["startup_script_id"] = check_id(self.name, request.startup_script_id, "script id")
        return self.api.call("POST", "/instances", json_body=body, kind="launch", expect="text")

    def _instance(self, i: dict) -> Instance:
        status = i.get("status", "")
        return Instance(id=i["id"], name=i.get("hostname", ""), instance_type=i.get("instance_type", ""),
                        region=i.get("location", ""), state=STATES.get(status, FAILED), status=status,
                        ip=i.get("ip"), price_per_hour=float(i.get("price_per_hour") or 0),
                        created_at=i.get("created_at", ""), keys=tuple(i.get("ssh_key_ids") or ()),
                        tags=_tags(i.get("tags")), extra={"os_volume_id": i.get("os_volume_id") or ""})

    keeps_boot_volumes = True

    def terminate(self, instance_ids: list[str], keep_boot_volumes: bool = False) -> None:
        """Delete the instances *and* their OS volumes for good: with `volume_ids` null the API
        would move each OS volume to the trash, where it keeps counting (contract 2.2.4).
        `keep_boot_volumes` (KEEP_VOLUMES): `volume_ids: []`, every volume is kept (detached)."""
        if not instance_ids:
            return
        if keep_boot_volumes:
            try:
                answer = self.api.call("PUT", "/instances", expect="text",
                                       json_body={"action": "delete", "id": list(instance_ids), "volume_ids": []})
            except errors.NotFound:
                return
            _check_action_results(answer)
            return
        volumes = []
        for iid in instance_ids:
            try:
                vol = self._os_volume_of(iid)
            except errors.NotFound:
                continue
            if vol:
                volumes.append(check_id(self.name, vol, "volume id"))
        body = {"action": "delete", "id": list(instance_ids), "volume_ids": volumes or None}
        if volumes:
            body["delete_permanently"] = True
        try:
            answer = self.api.call("PUT", "/instances", expect="text", json_body=body)
        except errors.NotFound:
            return
        _check_action_results(answer)

    def _os_volume_of(self, instance_id: str, wait_s: float = 10.0) -> str:
        """The instance's OS volume id. It is null while the instance is `ordered`: wait a few
        seconds for it, or a terminate now would leave the volume in the trash (billed)."""
        deadline = time.monotonic() + wait_s
        while True:
            inst = self.instance(instance_id)
            vol = inst.extra.get("os_volume_id") or ""
            if vol or inst.status not in ("new", "ordered") or time.monotonic() >= deadline:
                return vol
            time.sleep(0.5)

    # -- what outlives an instance: volumes (also in the trash) and startup scripts --------
    def leftovers(self, owner) -> list[Leftover]:
        """Volumes that provably belong to this directory: tagged with its id *and* attached to
        (or named after) one of its journalled instances or runs; also in the trash, which
        still counts against the quota until it is emptied."""
        found = []
        for v in self.volumes():
            proofs = owner.proofs_of(v["tags"], set(v["instance_ids"]))
            if len(proofs) >= 2 or (v["os"] and "journal" in proofs):
                found.append(Leftover("volume", v["id"], v["name"],
                                      f"{v['size'] if v['size'] is not None else '?'} GB{', in trash' if v['trash'] else ''}"))
        return found

    def volumes(self) -> list[dict]:
        """Every volume of the account, live and in the trash (cloud-list-all groups them by
        owner): {id, name, size, trash, os, instance_ids, tags}. Removed with remove_leftover."""
        out = []
        for where, trash in (("/volumes", False), ("/volumes/trash", True)):
            try:
                listing = self._get(where)
            except errors.NotFound:
                continue
            for v in listing if isinstance(listing, list) else []:
                if not isinstance(v, dict) or (trash and v.get("is_permanently_deleted")):
                    continue
                attached = {v.get("instance_id")}
                if isinstance(v.get("instances"), list):
                    attached |= {x.get("id") if isinstance(x, dict) else x for x in v["instances"]}
                out.append({"id": check_id(self.name, v.get("id"), "volume id"), "name": str(v.get("name", "")),
                            "location": str(v.get("location", "")), "type": str(v.get("type", "")),
                            "size": v.get("size"), "trash": trash, "os": bool(v.get("is_os_volume")),
                            "instance_ids": sorted(a for a in attached if isinstance(a, str) and a),
                            "tags": _tags(v.get("tags"))})
        return out

    def scripts(self) -> list[dict]:
        """Startup scripts of the account: {id, name} (they carry no tags)."""
        listing = self._get("/scripts")
        return [{"id": check_id(self.name, s.get("id"), "script id"), "name": str(s.get("name", ""))}
                for s in (listing if isinstance(listing, list) else []) if isinstance(s, dict)]

    # -- shared data volumes, startup scripts ---------------------------------------------
    storage_kind = "volume"

    def shared_storage(self) -> list[Storage]:
        price = float(self.data.get("storage", {}).get("price_gb_month", 0.20))
        out = []
        for v in self._get("/volumes"):
            if not isinstance(v, dict) or not str(v.get("type", "")).endswith("_Shared"):
                continue
            size = v.get("size") if isinstance(v.get("size"), (int, float)) else None
            monthly = v.get("monthly_price")
            try:
                monthly = float(monthly) if monthly is not None else (size * price if size is not None else None)
            except (TypeError, ValueError):
                monthly = None
            attached = [x.get("id") if isinstance(x, dict) else x for x in v.get("instances") or []]
            out.append(Storage("volume", check_id(self.name, v.get("id"), "volume id"), str(v.get("name", "")),
                               str(v.get("location", "")), size, None if monthly is None else round(monthly, 2),
                               bool(v.get("instance_id") or any(attached)), ref=str(v.get("id")),
                               tags=_tags(v.get("tags"))))
        return out

    def create_shared_storage(self, name: str, region: str, size_gb: int, tags: dict) -> Storage:
        vtype = self.data.get("storage", {}).get("volume_type", "NVMe_Shared")
        vid = check_id(self.name, self.api.call("POST", "/volumes", expect="text", json_body={
            "type": vtype, "name": name, "size": int(size_gb), "location_code": region,
            "tags": [{"key": k, "value": v} for k, v in tags.items()]}).strip().strip('"'), "volume id")
        price = float(self.data.get("storage", {}).get("price_gb_month", 0.20))
        return Storage("volume", vid, name, region, float(size_gb), round(size_gb * price, 2), False, ref=vid,
                       tags=dict(tags))

    def delete_storage(self, storage: Storage) -> None:
        try:
            self.api.call("DELETE", f"/volumes/{check_id(self.name, storage.id, 'volume id')}",
                          json_body={"is_permanent": True}, expect="none")
        except errors.NotFound:
            pass

    def create_startup_script(self, name: str, text: str) -> str | None:
        answer = self.api.call("POST", "/scripts", json_body={"name": name, "script": text}, expect="text")
        return check_id(self.name, answer.strip().strip('"'), "script id")

    def boot_volume(self, volume_id: str) -> dict | None:
        """A kept OS volume: {id, location, trash, attached} or None when it is gone."""
        for v in self.volumes():
            if v["id"] == volume_id:
                return v
        return None

    def tag_volume(self, volume_id: str, key: str, value: str) -> None:
        try:
            self.api.call("POST", f"/volumes/{check_id(self.name, volume_id, 'volume id')}/tags",
                          json_body={"key": key, "value": value})
        except errors.ApiError:
            pass     # a tag is a courtesy proof here (the cache file is the other)

    def remove_leftover(self, item: Leftover) -> None:
        if item.kind == "volume":
            try:
                self.api.call("DELETE", f"/volumes/{item.id}", json_body={"is_permanent": True}, expect="none")
            except errors.NotFound:
                pass
        elif item.kind == "script":
            try:
                self.api.call("DELETE", f"/scripts/{item.id}", expect="none")
            except errors.NotFound:
                pass


def _tags(raw) -> dict:
    """[{id, key, value}] -> {key: value}; anything else is no tags (never a crash)."""
    if not isinstance(raw, list):
        return {}
    return {t["key"]: str(t.get("value") or "") for t in raw if isinstance(t, dict) and isinstance(t.get("key"), str)}


def _check_action_results(text: str) -> None:
    """A 202/207 body lists per-instance results; 'not found' counts as already deleted."""
    try:
        results = json.loads(text) if text else []
    except ValueError:
        return
    failed = [r for r in results if isinstance(r, dict) and r.get("status") == "error"
              and r.get("statusCode") != 404]
    if failed:
        raise errors.TransientError(
            "datacrunch: delete failed for " + ", ".join(f"{r.get('instanceId')} ({r.get('error')})" for r in failed),
            provider="datacrunch")


def _instance_type(t: dict) -> InstanceType:
    gpu, gpu_mem = t.get("gpu") or {}, t.get("gpu_memory") or {}
    gpus = int(gpu.get("number_of_gpus", 0))
    return InstanceType(name=t["instance_type"], gpu=t.get("name") or t.get("model", ""), gpu_count=gpus,
                        # the API reports the type's total GPU memory; the catalog keeps it per GPU
                        gpu_memory_gb=int(gpu_mem.get("size_in_gigabytes", 0)) // max(gpus, 1),
                        vcpus=int((t.get("cpu") or {}).get("number_of_cores", 0)),
                        memory_gb=int((t.get("memory") or {}).get("size_in_gigabytes", 0)),
                        price_per_hour=float(t["price_per_hour"]), description=t.get("description", ""))
