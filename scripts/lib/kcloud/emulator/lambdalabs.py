"""Lambda Cloud API v1, as in section 1 of reference/api-contracts.md.

Bodies are wrapped in {"data": ...}; errors in {"error": {code, message,
suggestion}}; a capacity failure is HTTP 400 with its own code; rate limiting
is a Cloudflare 429 whose body is not JSON.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .server import ApiError, ProviderApi, Request, Response, json_response, text_response
from .sshd import generate_keypair, is_public_key
from .state import Instance, iso_time, private_ip

# kind -> (HTTP status, code, message, suggestion); messages are the spec's defaults.
ERRORS = {
    "invalid": (400, "global/invalid-parameters", "Invalid request data.", "Check the request and try again."),
    "not-found": (
        404,
        "global/object-does-not-exist",
        "Specified instance does not exist.",
        "Check the ID and try again.",
    ),
    "unauthorized": (
        401,
        "global/invalid-api-key",
        "API key was invalid, expired, or deleted.",
        "Check your API key or create a new one, then try again.",
    ),
    "forbidden": (
        403,
        "global/account-inactive",
        "Your account is inactive.",
        "Make sure you have verified your email address and have a valid payment method. "
        "Contact Support if problems continue.",
    ),
    "insufficient-capacity": (
        400,
        "instance-operations/launch/insufficient-capacity",
        "Not enough capacity to fulfill launch request.",
        "Choose an instance type with more availability, or try again later.",
    ),
    "quota": (400, "global/quota-exceeded", "Quota exceeded.", "Contact Support to increase your quota."),
    "internal": (
        500,
        "global/internal-error",
        "An internal server error occurred.",
        "Try again later. Contact Support if the problem persists.",
    ),
    "conflict": (
        409,
        "global/conflict",
        "The request conflicts with the current state of the resource.",
        "Check the resource's current state and try again.",
    ),
    "unavailable": (
        503,
        "global/internal-error",
        "The service is temporarily unavailable.",
        "Try again later. Contact Support if the problem persists.",
    ),
}
DEFAULT_IMAGE_FAMILY = "lambda-stack-24-04"
IMAGE_TIME = "2025-01-01T00:00:00Z"
MAX_NAME = 64
MAX_PUBLIC_KEY = 4096
MAX_USER_DATA = 1024 * 1024
TAG_KEY = re.compile(r"^[a-z][a-z0-9-:]+$")
MAX_TAG_KEY, MAX_TAG_VALUE = 55, 128
FS_NAME = re.compile(r"^[a-zA-Z]+[0-9a-zA-Z-]*$")
MAX_FS_NAME = 60
MAX_FILE_SYSTEMS = 24  # per account (last documented; UNCERTAIN)
MOUNT_POINT = re.compile(r"^(/home|/lambda/nfs|/data)[//a-zA-Z0-9-]*$")
MAX_MOUNT_POINT = 256
FS_NOT_FOUND = "Filesystem was not found."
ACCOUNT_USER = {"id": "0" * 31 + "1", "email": "emulator@example.com", "status": "active"}


class LambdaApi(ProviderApi):
    name = "lambdalabs"
    base_path = "/api/v1"
    login_user = "ubuntu"
    launch_route = ("POST", "/instance-operations/launch")
    statuses = {
        "ordered": "booting",
        "booting": "booting",
        "active": "active",
        "unhealthy": "unhealthy",
        "offline": "unhealthy",  # Lambda has no shutdown; never reached
        "terminating": "terminating",
        "terminated": "terminated",
    }

    def routes(self):
        return [
            ("GET", "/instance-types", self.instance_types, True),
            ("GET", "/instances", self.list_instances, True),
            ("GET", "/instances/{instance_id}", self.get_instance, True),
            ("POST", "/instances/{instance_id}", self.rename_instance, True),
            ("POST", "/instance-operations/launch", self.launch, True),
            ("POST", "/instance-operations/terminate", self.terminate, True),
            ("POST", "/instance-operations/restart", self.restart, True),
            ("GET", "/ssh-keys", self.list_keys, True),
            ("POST", "/ssh-keys", self.add_key, True),
            ("DELETE", "/ssh-keys/{key_id}", self.delete_key, True),
            ("GET", "/images", self.images, True),
            ("GET", "/regions", self.regions, True),
            ("GET", "/file-systems", self.file_systems, True),
            ("POST", "/filesystems", self.create_file_system, True),
            ("DELETE", "/filesystems/{fs_id}", self.delete_file_system, True),
        ]

    # --- plumbing hooks --------------------------------------------------

    def authenticate(self, req: Request) -> None:
        """Bearer KEY, Basic base64("KEY:"), or the raw `Basic KEY` the v1.5.3 spec allows."""
        scheme, _, value = req.headers.get("Authorization", "").strip().partition(" ")
        value = value.strip()
        candidates = set()
        if scheme.lower() == "bearer":
            candidates.add(value)
        elif scheme.lower() == "basic":
            candidates.add(value)
            try:
                user, sep, _ = base64.b64decode(value, validate=True).decode().partition(":")
                if sep:
                    candidates.add(user)
            except (binascii.Error, UnicodeDecodeError):
                pass
        if not candidates & set(self.config["credentials"]["api_keys"]):
            raise ApiError("unauthorized")

    def render_error(self, err: ApiError) -> Response:
        if err.kind == "rate-limited":  # Cloudflare answers, not the API: not JSON
            return text_response("error code: 1015", 429, {"Retry-After": "1", **err.headers})
        status, code, message, suggestion = ERRORS[err.kind]
        body = {"error": {"code": err.code or code, "message": err.message or message, "suggestion": suggestion}}
        return json_response(body, err.status or status, err.headers)

    # --- rendering -------------------------------------------------------

    def _region(self, code: str) -> dict:
        return {"name": code, "description": self.catalog["regions"][code]["description"]}

    def _type(self, name: str, cents: int | None = None) -> dict:
        """The InstanceType; `cents`: the price an instance was launched at (else today's)."""
        t = self.priced(name)
        return {
            "name": name,
            "description": t["description"],
            "gpu_description": t["gpu_description"],
            "price_cents_per_hour": t["price_cents_per_hour"] if cents is None else cents,
            "specs": dict(t["specs"]),
        }

    def set_price(self, type_name: str, data: dict) -> dict:
        if type_name not in self.catalog["types"]:
            raise ValueError(f"unknown instance type {type_name!r}")
        if set(data) - {"price_per_hour"} or "price_per_hour" not in data:
            raise ValueError("Lambda takes only price_per_hour (USD, whole cents)")
        try:
            cents = Decimal(str(data["price_per_hour"])) * 100
        except InvalidOperation:
            raise ValueError(f"price_per_hour must be a number: {data['price_per_hour']!r}") from None
        if not cents.is_finite() or cents < 0 or cents != cents.to_integral_value():
            raise ValueError(f"price_per_hour must be >= 0 in whole cents: {data['price_per_hour']!r}")
        self.state.set_price(self.name, type_name, {"price_cents_per_hour": int(cents)})
        return {"price_per_hour": float(cents / 100)}

    def _instance(self, inst: Instance) -> dict:
        status = self.statuses[inst.phase]
        mounts = inst.details["file_system_mounts"]
        out = {
            "id": inst.id,
            "status": status,
            "ssh_key_names": [k["name"] for k in inst.ssh_keys],
            "file_system_names": list(inst.details["file_system_names"]),
            "region": self._region(inst.region),
            "instance_type": self._type(inst.instance_type, int(inst.price_per_hour * 100)),
            "hostname": inst.details["hostname"],
            "tags": [dict(t) for t in inst.details["tags"]],
            "firewall_rulesets": [],
            "actions": _actions(status),
        }
        if mounts:  # v1.10.0 leaves the key out when nothing is mounted
            out["file_system_mounts"] = [dict(m) for m in mounts]
        if inst.name is not None:
            out["name"] = inst.name
        if inst.ip and status != "terminated":  # `ip` is absent until the first boot completes
            out["ip"] = inst.answer_ip or inst.ip
            out["private_ip"] = private_ip(inst.ip)
        return out

    def _image(self, image: dict, region: str) -> dict:
        return {
            "id": uuid.uuid5(uuid.NAMESPACE_URL, f"lambdalabs/{region}/{image['family']}/{image['architecture']}").hex,
            "created_time": IMAGE_TIME,
            "updated_time": IMAGE_TIME,
            "name": image["name"],
            "description": f"{image['name']} ({image['architecture']})",
            "family": image["family"],
            "version": image["version"],
            "architecture": image["architecture"],
            "region": self._region(region),
        }

    # --- endpoints -------------------------------------------------------

    def instance_types(self, req: Request) -> Response:
        with self.state.lock:
            capacity = self.state.capacity_now(self.name)
            data = {
                name: {
                    "instance_type": self._type(name),
                    "regions_with_capacity_available": [self._region(r) for r in capacity.available_regions(name)],
                }
                for name in self.catalog["types"]
            }
        return json_response({"data": data})

    def list_instances(self, req: Request) -> Response:
        with self.state.lock:
            return json_response({"data": [self._instance(i) for i in self.state.list(self.name)]})

    def _find(self, instance_id: str) -> Instance:
        inst = self.state.get(self.name, instance_id)
        if inst is None:
            raise ApiError("not-found")
        return inst

    def get_instance(self, req: Request, instance_id: str) -> Response:
        with self.state.lock:
            return json_response({"data": self._instance(self._find(instance_id))})

    def rename_instance(self, req: Request, instance_id: str) -> Response:
        name = req.json_object().get("name")
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise ApiError("invalid", f"name must be a string of at most {MAX_NAME} characters.")
        with self.state.lock:
            inst = self._find(instance_id)
            inst.name = name
            return json_response({"data": self._instance(inst)})

    def launch(self, req: Request) -> Response:
        body = req.json_object()
        missing = [f for f in ("region_name", "instance_type_name", "ssh_key_names") if f not in body]
        if missing:
            raise ApiError("invalid", f"Missing required field(s): {', '.join(missing)}.")
        key_names = body["ssh_key_names"]
        if not isinstance(key_names, list) or len(key_names) != 1 or not isinstance(key_names[0], str):
            raise ApiError("invalid", "ssh_key_names must name exactly one SSH key.")
        type_name, region, name = body["instance_type_name"], body["region_name"], body.get("name")
        if type_name not in self.catalog["types"]:
            raise ApiError("invalid", f"Unknown instance type: {type_name}.")
        if region not in self.catalog["regions"]:
            raise ApiError("invalid", f"Unknown region: {region}.")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
            raise ApiError("invalid", f"name must be a string of at most {MAX_NAME} characters.")
        user_data = body.get("user_data")
        if user_data is not None and (not isinstance(user_data, str) or len(user_data.encode()) > MAX_USER_DATA):
            raise ApiError("invalid", "user_data must be a string of at most 1 MB.")
        tags = _launch_tags(body.get("tags"))
        key = next((k for k in self.state.keys(self.name) if k["name"] == key_names[0]), None)
        if key is None:
            raise ApiError("not-found", f"SSH key {key_names[0]!r} does not exist.", status=400)
        image = self._launch_image(body.get("image"), type_name, region)
        with self.state.lock:  # filesystems cannot be deleted between the check and the launch
            mounts = self._launch_mounts(body, region)
            inst = Instance(
                provider=self.name,
                id=uuid.uuid4().hex,
                instance_type=type_name,
                region=region,
                name=name,
                ssh_keys=[key],
                details={
                    "image": image,
                    "hostname": body.get("hostname") or f"lambda-{uuid.uuid4().hex[:8]}",
                    "tags": tags,
                    "user_data": user_data,
                    "file_system_mounts": mounts,
                    "file_system_names": [self.state.file_systems[m["file_system_id"]]["name"] for m in mounts],
                },
                price_per_hour=Decimal(self.priced(type_name)["price_cents_per_hour"]) / 100,
                startup=user_data,
                **req.instance_fault,
            )
            if not self.state.launch(inst):
                raise ApiError("insufficient-capacity")
        return json_response({"data": {"instance_ids": [inst.id]}})

    def _launch_mounts(self, body: dict, region: str) -> list[dict]:
        """`file_system_mounts` (by id, own path) then `file_system_names` (by name, default path).

        A filesystem in both lists is mounted once, at the `file_system_mounts` path.
        Caller holds the state lock.
        """
        names = body.get("file_system_names") or []
        mounts = body.get("file_system_mounts") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ApiError("invalid", "file_system_names must be a list of filesystem names.")
        if not isinstance(mounts, list) or not all(
            isinstance(m, dict)
            and set(m) == {"mount_point", "file_system_id"}
            and all(isinstance(v, str) for v in m.values())
            for m in mounts
        ):
            raise ApiError("invalid", "file_system_mounts must be a list of {mount_point, file_system_id}.")
        for m in mounts:
            if len(m["mount_point"]) > MAX_MOUNT_POINT or not MOUNT_POINT.match(m["mount_point"]):
                raise ApiError("invalid", f"Invalid mount_point: {m['mount_point']!r}.")
        by_id = self.state.file_systems
        by_name = {f["name"]: f for f in by_id.values()}
        chosen: dict[str, str] = {}  # filesystem id -> mount point
        for m in mounts:
            if m["file_system_id"] not in by_id:
                raise ApiError("not-found", FS_NOT_FOUND, status=400)
            chosen.setdefault(m["file_system_id"], m["mount_point"])
        for n in names:
            if n not in by_name:
                raise ApiError("not-found", FS_NOT_FOUND, status=400)
            chosen.setdefault(by_name[n]["id"], by_name[n]["mount_point"])
        elsewhere = [by_id[i]["name"] for i in chosen if by_id[i]["region"] != region]
        if elsewhere:
            raise ApiError(
                "invalid",
                f"Filesystem(s) {', '.join(elsewhere)} are not in region {region}.",
                code="instance-operations/launch/file-system-in-wrong-region",
            )
        return [{"mount_point": mp, "file_system_id": i} for i, mp in chosen.items()]

    def _launch_image(self, spec, type_name: str, region: str) -> dict:
        """Resolve `{"id"}` / `{"family"}` (default: latest Lambda Stack) to an image of the region
        and of the type's architecture.

        A family the region lacks, or one without an image of the type's
        architecture there, is 400 `global/invalid-parameters`; an unknown image
        id is 400 `global/object-does-not-exist`.
        """
        arch = self.catalog["types"][type_name].get("architecture", "x86_64")
        spec = spec or {"family": DEFAULT_IMAGE_FAMILY}
        if not isinstance(spec, dict) or len(spec) != 1 or not {"id", "family"} & set(spec):
            raise ApiError("invalid", 'image must be {"id": ...} or {"family": ...}.')
        images = self._region_images(region)
        key = "id" if "id" in spec else "family"
        matches = [i for i in images if i[key] == spec[key]]
        if not matches:
            if key == "id":
                raise ApiError("not-found", f"Image {spec[key]!r} was not found in {region}.", status=400)
            raise ApiError("invalid", f"Image family {spec[key]!r} is not available in region {region}.")
        fitting = [i for i in matches if i["architecture"] == arch]
        if not fitting:
            raise ApiError("invalid", f"Image {spec[key]!r} does not support {type_name} ({arch}).")
        return fitting[0]

    def _region_images(self, region: str) -> list[dict]:
        """The images served in a region: a catalog image without `regions` is served everywhere."""
        return [self._image(i, region) for i in self.catalog["images"] if region in i.get("regions", [region])]

    def machine(self, inst: Instance) -> tuple[Path, dict[str, Path]]:
        """Its own root (machines/<id>), each mounted file system linked at its mount point."""
        disk = self.state.disk
        links = {
            m["mount_point"]: disk.fs_dir(m["file_system_id"])
            for m in inst.details["file_system_mounts"]
            if m["file_system_id"] in self.state.file_systems
        }
        return disk.machine_root(inst.id), links

    def _instances_from(self, req: Request) -> list[Instance]:
        ids = req.json_object().get("instance_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError("invalid", "instance_ids must be a non-empty list of instance IDs.")
        insts = [self._find(i) for i in ids]
        if any(i.phase == "terminated" for i in insts):
            raise ApiError("not-found")
        return insts

    def terminate(self, req: Request) -> Response:
        with self.state.lock:
            insts = self._instances_from(req)
            for inst in insts:
                self.state.terminate(inst)
            return json_response({"data": {"terminated_instances": [self._instance(i) for i in insts]}})

    def restart(self, req: Request) -> Response:
        with self.state.lock:
            insts = self._instances_from(req)
            for inst in insts:
                self.state.reboot(inst)
            return json_response({"data": {"restarted_instances": [self._instance(i) for i in insts]}})

    def list_keys(self, req: Request) -> Response:
        return json_response({"data": self.state.keys(self.name)})

    def add_key(self, req: Request) -> Response:
        body = req.json_object()
        name, public_key = body.get("name"), body.get("public_key")
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            raise ApiError("invalid", f"name must be a non-empty string of at most {MAX_NAME} characters.")
        if public_key is not None and (
            not isinstance(public_key, str) or len(public_key) > MAX_PUBLIC_KEY or not is_public_key(public_key)
        ):
            raise ApiError("invalid", "public_key is not a valid OpenSSH public key.")
        private_key = None
        if public_key is None:  # Lambda makes the pair and hands out the private half once
            private_key, public_key = generate_keypair(name)
        with self.state.lock:
            if any(k["name"] == name for k in self.state.keys(self.name)):
                raise ApiError("invalid", f"An SSH key named {name!r} already exists.")
            key = self.state.add_key(self.name, uuid.uuid4().hex, name, public_key.strip())
        if private_key is not None:
            key["private_key"] = private_key
        return json_response({"data": key})

    def delete_key(self, req: Request, key_id: str) -> Response:
        if not self.state.delete_key(self.name, key_id):
            raise ApiError("invalid", f"SSH key {key_id!r} does not exist.")
        return json_response({"data": {}})

    def images(self, req: Request) -> Response:
        return json_response({"data": [i for r in self.catalog["regions"] for i in self._region_images(r)]})

    def regions(self, req: Request) -> Response:
        return json_response({"data": [self._region(code) for code in self.catalog["regions"]]})

    # --- filesystems -----------------------------------------------------

    def _fs(self, fs: dict) -> dict:
        """The Filesystem object; `bytes_used` is what its directory holds now."""
        return {
            "id": fs["id"],
            "name": fs["name"],
            "mount_point": fs["mount_point"],
            "created": fs["created"],
            "created_by": dict(ACCOUNT_USER),
            "is_in_use": self.state.fs_in_use(fs["id"]),
            "region": self._region(fs["region"]),
            "bytes_used": self.state.fs_bytes_used(fs["id"]),
        }

    def file_systems(self, req: Request) -> Response:
        with self.state.lock:
            return json_response({"data": [self._fs(f) for f in self.state.file_systems.values()]})

    def create_file_system(self, req: Request) -> Response:
        body = req.json_object()
        name, region = body.get("name"), body.get("region")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_FS_NAME or not FS_NAME.match(name):
            raise ApiError("invalid", f"name must be 1 to {MAX_FS_NAME} letters, digits or '-', letter first.")
        if region not in self.catalog["regions"]:
            raise ApiError("invalid", f"Unknown region: {region}.")
        with self.state.lock:
            existing = self.state.file_systems
            if any(f["name"] == name for f in existing.values()):
                raise ApiError("invalid", f"A filesystem named {name!r} already exists.", code="global/duplicate")
            if len(existing) >= MAX_FILE_SYSTEMS:
                raise ApiError("quota")
            fs = {
                "id": uuid.uuid4().hex,
                "name": name,
                "region": region,
                "mount_point": f"/lambda/nfs/{name}",
                "created": iso_time(time.time()),
            }
            self.state.add_file_system(fs)
            return json_response({"data": self._fs(fs)})

    def delete_file_system(self, req: Request, fs_id: str) -> Response:
        with self.state.lock:
            if fs_id not in self.state.file_systems:
                raise ApiError("not-found", FS_NOT_FOUND)
            if self.state.fs_in_use(fs_id):
                raise ApiError(
                    "invalid",
                    "Filesystem is in use by an instance; terminate the instance first.",
                    code="filesystems/filesystem-in-use",
                )
            self.state.delete_file_system(fs_id)
        return json_response({"data": {"deleted_ids": [fs_id]}})


def _launch_tags(raw) -> list[dict]:
    """`tags: [{key, value}]`: keys `^[a-z][a-z0-9-:]+$` up to 55 characters, values up to 128."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ApiError("invalid", "tags must be a list of {key, value}.")
    tags = []
    for tag in raw:
        if not isinstance(tag, dict) or set(tag) != {"key", "value"}:
            raise ApiError("invalid", "Each tag must be {key, value}.")
        key, value = tag["key"], tag["value"]
        if not isinstance(key, str) or len(key) > MAX_TAG_KEY or not TAG_KEY.match(key):
            raise ApiError("invalid", f"Invalid tag key {key!r}: lowercase letter first, then [a-z0-9-:], <= 55.")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE:
            raise ApiError("invalid", f"Invalid value for tag {key!r}: a string of at most {MAX_TAG_VALUE} characters.")
        tags.append({"key": key, "value": value})
    return tags


def _actions(status: str) -> dict:
    """The `actions` block: what the console would let you do in this status."""
    if status in ("terminating", "terminated"):
        blocked = {
            "available": False,
            "reason_code": "vm-is-terminating",
            "reason_description": "The instance is terminating.",
        }
        return {a: dict(blocked) for a in ("migrate", "rebuild", "restart", "cold_reboot", "terminate")}
    launched = status in ("active", "unhealthy")
    not_launched = {
        "available": False,
        "reason_code": "vm-has-not-launched",
        "reason_description": "The instance has not launched yet.",
    }
    ready = {"available": True} if launched else not_launched
    return {
        "migrate": {
            "available": False,
            "reason_code": "vm-is-too-old",
            "reason_description": "Migration is not offered for this instance.",
        },
        "rebuild": dict(ready),
        "restart": dict(ready),
        "cold_reboot": dict(ready),
        "terminate": {"available": True},
    }
