"""DataCrunch/Verda public API v1, as in section 2 of reference/api-contracts.md.

Bodies are bare JSON (no envelope); errors are flat {code, message}; creates
answer with a plain-text id; auth is an OAuth2 client-credentials token.
Both SSH-key paths (/sshkeys and /ssh-keys) and every spelling of the
availability parameters (is_spot/isSpot, location_code/locationCode) work.

Every instance has an OS volume; volumes outlive instances unless the delete
names them (contract 2.2.4), and deleted volumes wait in the trash, still
billed, unless deleted permanently.
"""

from __future__ import annotations

import uuid
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import parse_qs

from .server import ApiError, ProviderApi, Request, Response, json_response, text_response
from .machines import mount_name
from .sshd import is_public_key
from .state import LIVE_PHASES, Instance, Volume, iso_time

# kind -> (HTTP status, code, default message). Only 402 is confirmed by the
# contract; the rest follow the SDK's code list. The 429 body is UNCERTAIN.
ERRORS = {
    "invalid": (400, "invalid_request", "Invalid request."),
    "not-found": (404, "not_found", "Resource not found."),
    "unauthorized": (401, "unauthorized_request", "Invalid or expired access token."),
    "forbidden": (403, "forbidden_action", "This action is not allowed."),
    "insufficient-capacity": (503, "service_unavailable", "Not enough resources to deploy the instance."),
    "quota": (402, "insufficient_funds", "Insufficient funds."),
    "internal": (500, "server_error", "Internal server error."),
    "unavailable": (503, "service_unavailable", "Service temporarily unavailable."),
    "rate-limited": (429, "too_many_requests", "Too many requests."),
    "conflict": (409, "conflict", "The resource already exists."),  # the 409 body is UNCERTAIN
}
DEFAULT_LOCATION = "FIN-03"
EUR_PER_USD = Decimal("0.92")  # a fixed, made-up rate for ?currency=eur
TERMINATE_ACTIONS = ("delete", "discontinue", "delete_stuck")
SHUTDOWN_ACTIONS = ("shutdown", "force_shutdown")
START_ACTIONS = ("start", "boot")
OTHER_ACTIONS = ("hibernate", "restore", "configure_spot", "deploy", "transfer")  # accepted, not emulated
CONTRACTS = ("LONG_TERM", "PAY_AS_YOU_GO", "SPOT")
PRICINGS = ("DYNAMIC_PRICE", "FIXED_PRICE")
SPOT_DISCONTINUE = ("keep_detached", "move_to_trash", "delete_permanently")
# volume type -> USD per GB and month (invented stand-ins; the contract has no prices)
VOLUME_TYPES = {
    "HDD": Decimal("0.05"),
    "NVMe": Decimal("0.20"),
    "HDD_Shared": Decimal("0.08"),
    "NVMe_Shared": Decimal("0.25"),
    "NVMe_Local_Storage": Decimal("0.20"),
    "NVMe_Shared_Cluster": Decimal("0.25"),
    "NVMe_OS_Cluster": Decimal("0.20"),
}
SHARED_VOLUME_TYPES = ("HDD_Shared", "NVMe_Shared", "NVMe_Shared_Cluster")
OS_VOLUME_TYPE = "NVMe"
OS_VOLUME_SIZE = 100
HOURS_PER_MONTH = 730
IMAGE_NOT_VALID = "Operating system is not valid for this instance type"  # as dstack saw it (contract 2.2)
VOLUME_ACTIONS = ("attach", "detach", "rename", "resize", "delete", "clone")
MAX_TAGS, MAX_TAG_KEY, MAX_TAG_VALUE = 10, 63, 127


class DataCrunchApi(ProviderApi):
    name = "datacrunch"
    base_path = "/v1"
    login_user = "root"
    launch_route = ("POST", "/instances")
    statuses = {
        "ordered": "ordered",
        "booting": "provisioning",
        "active": "running",
        "unhealthy": "error",
        "offline": "offline",
        "terminating": "deleting",
        "terminated": "discontinued",
    }

    def routes(self):
        routes = [
            ("POST", "/oauth2/token", self.token, False),
            ("GET", "/instance-types", self.instance_types, True),
            ("GET", "/instance-types/{type_name}", self.instance_type, True),
            ("GET", "/locations", self.locations, True),
            ("GET", "/instance-availability", self.availabilities, True),
            ("GET", "/instance-availability/{type_name}", self.is_available, True),
            ("GET", "/images", self.images, True),
            ("GET", "/instances", self.list_instances, True),
            ("GET", "/instances/{instance_id}", self.get_instance, True),
            ("POST", "/instances", self.create_instance, True),
            ("PUT", "/instances", self.instance_action, True),
            ("POST", "/instances/{instance_id}/tags", self.add_instance_tag, True),
            ("DELETE", "/instances/{instance_id}/tags/{key}", self.delete_instance_tag, True),
            ("GET", "/volumes", self.list_volumes, True),
            ("GET", "/volumes/trash", self.list_trash, True),  # before /volumes/{volume_id}
            ("GET", "/volumes/{volume_id}", self.get_volume, True),
            ("POST", "/volumes", self.create_volume, True),
            ("PUT", "/volumes", self.volume_action, True),
            ("DELETE", "/volumes/{volume_id}", self.delete_volume, True),
            ("POST", "/volumes/{volume_id}/tags", self.add_volume_tag, True),
            ("DELETE", "/volumes/{volume_id}/tags/{key}", self.delete_volume_tag, True),
            ("GET", "/scripts", self.list_scripts, True),
            ("POST", "/scripts", self.create_script, True),
            ("DELETE", "/scripts", self.delete_scripts, True),
            ("GET", "/scripts/{script_id}", self.get_script, True),
            ("DELETE", "/scripts/{script_id}", self.delete_script, True),
            ("GET", "/balance", self.balance, True),
        ]
        for path in ("/sshkeys", "/ssh-keys"):  # the Python SDK uses the first, Go and kdevops the second
            routes += [
                ("GET", path, self.list_keys, True),
                ("POST", path, self.add_key, True),
                ("DELETE", path, self.delete_keys, True),
                ("GET", path + "/{key_id}", self.get_key, True),
                ("DELETE", path + "/{key_id}", self.delete_key, True),
            ]
        return routes

    # --- plumbing hooks --------------------------------------------------

    def authenticate(self, req: Request) -> None:
        scheme, _, token = req.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not self.state.token_valid(token.strip(), "access"):
            raise ApiError("unauthorized")

    def render_error(self, err: ApiError) -> Response:
        status, code, message = ERRORS[err.kind]
        headers = {"Retry-After": "1", **err.headers} if err.kind == "rate-limited" else err.headers
        body = {"code": err.code or code, "message": err.message or message}
        return json_response(body, err.status or status, headers)

    # --- auth ------------------------------------------------------------

    def token(self, req: Request) -> Response:
        """OAuth2 token endpoint: client_credentials or refresh_token, as JSON or a form."""
        if "json" in req.headers.get("Content-Type", "") or req.body.lstrip().startswith(b"{"):
            body = req.json_object()
        else:
            body = {k: v[0] for k, v in parse_qs(req.body.decode(errors="replace")).items()}
        creds = self.config["credentials"]
        grant = body.get("grant_type")
        wrong_client = (body.get("client_id"), body.get("client_secret")) != (
            creds["client_id"],
            creds["client_secret"],
        )
        if grant == "client_credentials":
            if wrong_client:
                raise ApiError("unauthorized", "Invalid client credentials.")
        elif grant == "refresh_token":
            refresh = body.get("refresh_token")
            if not self.state.token_valid(str(refresh), "refresh"):
                raise ApiError("unauthorized", "Invalid or expired refresh token.")
            if "client_secret" in body and wrong_client:  # the Go SDK sends them too
                raise ApiError("unauthorized", "Invalid client credentials.")
            self.state.revoke_token(refresh)
        else:
            raise ApiError("invalid", "grant_type must be client_credentials or refresh_token.")
        access, refresh = self.state.issue_tokens(creds["token_expires_in"], creds["refresh_expires_in"])
        return json_response(
            {
                "access_token": access,
                "refresh_token": refresh,
                "scope": "fullAccess",
                "token_type": "Bearer",
                "expires_in": creds["token_expires_in"],
            }
        )

    # --- catalog ---------------------------------------------------------

    def _type_entry(self, name: str) -> dict:
        """The catalog entry with today's prices."""
        if name not in self.catalog["types"]:
            raise ApiError("not-found", f"Instance type {name} not found.")
        return self.priced(name)

    def set_price(self, type_name: str, data: dict) -> dict:
        if type_name not in self.catalog["types"]:
            raise ValueError(f"unknown instance type {type_name!r}")
        fields = {"price_per_hour": "price", "spot_price_per_hour": "spot_price"}
        if not data or set(data) - set(fields):
            raise ValueError("DataCrunch takes price_per_hour and/or spot_price_per_hour (USD)")
        out = {}
        for key, value in data.items():
            try:
                price = Decimal(str(value))
            except InvalidOperation:
                raise ValueError(f"{key} must be a number: {value!r}") from None
            if not price.is_finite() or price < 0:
                raise ValueError(f"{key} must be >= 0: {value!r}")
            out[fields[key]] = str(price) if -price.as_tuple().exponent >= 2 else f"{price:.2f}"  # as the API spells it
        self.state.set_price(self.name, type_name, out)
        return {key: float(Decimal(out[fields[key]])) for key in data}

    def _hardware(self, t: dict) -> dict:
        """The cpu/gpu/memory/gpu_memory/storage blocks shared by types and instances."""
        gpus = t["gpus"]
        return {
            "cpu": {"description": f"{t['vcpus']} CPU", "number_of_cores": t["vcpus"]},
            "gpu": {"description": f"{gpus}x {t['name']}" if gpus else "", "number_of_gpus": gpus},
            "memory": {"description": f"{t['memory_gb']}GB RAM", "size_in_gigabytes": t["memory_gb"]},
            "gpu_memory": {"description": f"{t['gpu_memory_gb']}GB GPU RAM", "size_in_gigabytes": t["gpu_memory_gb"]},
            "storage": {"description": "dynamic"},
        }

    def _type(self, name: str, currency: str) -> dict:
        """Every key of the contract's InstanceType: the SDK indexes them all directly."""
        t = self._type_entry(name)
        gpus = t["gpus"]
        price, spot = Decimal(t["price"]), Decimal(t["spot_price"])

        def money(value: Decimal, verbatim: str | None = None) -> str:
            if currency == "usd":
                return verbatim or f"{value:.2f}"
            return f"{value * EUR_PER_USD:.2f}"

        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"datacrunch/{name}")),
            "instance_type": name,
            "model": t["model"],
            "name": t["name"],
            "display_name": t["model"],
            "description": "Dedicated Hardware Instance" if gpus else "Dedicated CPU Instance",
            "manufacturer": "NVIDIA" if gpus else "AMD",
            "price_per_hour": money(price, t["price"]),
            "spot_price": money(spot, t["spot_price"]),
            "dynamic_price": money(price * Decimal("0.75")),
            "max_dynamic_price": money(price, t["price"]),
            "serverless_price": None,
            "serverless_spot_price": None,
            "currency": currency,
            **self._hardware(t),
            "best_for": ["Large model training", "Multi-GPU workloads"]
            if gpus > 1
            else ["Fine-tuning", "Inference"]
            if gpus
            else ["CPU workloads"],
            "p2p": "NVLink" if gpus > 1 else "",
            "supported_os": list(self._supported_os(name)),
            "deploy_warning": None,
        }

    def _supported_os(self, name: str) -> list[str]:
        return self.catalog["os_sets"][self._type_entry(name).get("os", "default")]

    def _currency(self, req: Request) -> str:
        currency = (req.arg("currency") or "usd").lower()
        if currency not in ("usd", "eur"):
            raise ApiError("invalid", "currency must be usd or eur.")
        return currency

    def _location(self, code: str | None) -> str | None:
        if code is not None and code not in self.catalog["regions"]:
            raise ApiError("invalid", f"Invalid location code: {code}.")
        return code

    def instance_types(self, req: Request) -> Response:
        currency = self._currency(req)
        return json_response([self._type(n, currency) for n in self.catalog["types"]])

    def instance_type(self, req: Request, type_name: str) -> Response:
        self._location(req.arg("location_code", "locationCode"))
        return json_response(self._type(type_name, self._currency(req)))

    def locations(self, req: Request) -> Response:
        return json_response(
            [
                {"code": code, "name": loc["name"], "country_code": loc["country_code"]}
                for code, loc in self.catalog["regions"].items()
            ]
        )

    def _availability_query(self, req: Request) -> list[str]:
        """Locations asked about. Spot uses the same pool as on-demand here."""
        if (req.arg("is_spot", "isSpot") or "false").lower() not in ("true", "false"):
            raise ApiError("invalid", "is_spot must be true or false.")
        code = self._location(req.arg("location_code", "locationCode"))
        return [code] if code else list(self.catalog["regions"])

    def availabilities(self, req: Request) -> Response:
        codes = self._availability_query(req)
        with self.state.lock:
            capacity = self.state.capacity_now(self.name)
            data = [
                {"location_code": c, "availabilities": [t for t in self.catalog["types"] if capacity.count(t, c) > 0]}
                for c in codes
            ]
        return json_response(data)

    def is_available(self, req: Request, type_name: str) -> Response:
        self._type_entry(type_name)
        codes = self._availability_query(req)
        with self.state.lock:
            capacity = self.state.capacity_now(self.name)
            return json_response(any(capacity.count(type_name, c) > 0 for c in codes))

    def _image(self, image: dict) -> dict:
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"datacrunch/image/{image['image_type']}")),
            "name": image["name"],
            "image_type": image["image_type"],
            "details": list(image["details"]),
            "is_default": bool(image.get("is_default", False)),
            "is_cluster": False,
            "category": "ubuntu",
        }

    def images(self, req: Request) -> Response:
        type_name = req.arg("instance_type")
        wanted = self._supported_os(type_name) if type_name else None
        return json_response(
            [self._image(i) for i in self.catalog["images"] if wanted is None or i["image_type"] in wanted]
        )

    def balance(self, req: Request) -> Response:
        """The scenario's balance less what the ledger has billed so far (running instances included)."""
        spent = sum(Decimal(str(e["amount"])) for e in self.state.ledger(self.name))
        balance = self.config["balance"]
        return json_response({**balance, "amount": float(Decimal(str(balance["amount"])) - spent)})

    # --- ssh keys --------------------------------------------------------

    @staticmethod
    def _key(key: dict) -> dict:
        return {"id": key["id"], "name": key["name"], "key": key["public_key"]}

    def list_keys(self, req: Request) -> Response:
        return json_response([self._key(k) for k in self.state.keys(self.name)])

    def get_key(self, req: Request, key_id: str) -> Response:
        """A one-element list, as the SDK's get_by_id expects."""
        key = next((k for k in self.state.keys(self.name) if k["id"] == key_id), None)
        if key is None:
            raise ApiError("not-found", f"SSH key {key_id} not found.")
        return json_response([self._key(key)])

    def add_key(self, req: Request) -> Response:
        body = req.json_object()
        name, public_key = body.get("name"), body.get("key")
        if not isinstance(name, str) or not name:
            raise ApiError("invalid", "name is required.")
        if not isinstance(public_key, str) or not is_public_key(public_key):
            raise ApiError("invalid", "key is not a valid OpenSSH public key.")
        key = self.state.add_key(self.name, str(uuid.uuid4()), name, public_key.strip())
        return text_response(key["id"], 201)

    def delete_key(self, req: Request, key_id: str) -> Response:
        if not self.state.delete_key(self.name, key_id):
            raise ApiError("not-found", f"SSH key {key_id} not found.")
        return text_response("")

    def delete_keys(self, req: Request) -> Response:
        ids = req.json_object().get("keys")
        if not isinstance(ids, list) or not ids:
            raise ApiError("invalid", "keys must be a non-empty list of SSH key IDs.")
        with self.state.lock:
            known = {k["id"] for k in self.state.keys(self.name)}
            unknown = [i for i in ids if i not in known]
            if unknown:
                raise ApiError("not-found", f"SSH keys not found: {', '.join(map(str, unknown))}.")
            for key_id in ids:
                self.state.delete_key(self.name, key_id)
        return text_response("")

    # --- instances -------------------------------------------------------

    def _instance(self, inst: Instance) -> dict:
        t = self.catalog["types"][inst.instance_type]
        d = inst.details
        status = self.statuses[inst.phase]
        provisioned = inst.phase != "ordered"  # os_volume_id is null until provisioning starts
        attached = [v.id for v in self.state.attached(self.name, inst.id)]
        if not provisioned:
            attached = [v for v in attached if v != d["os_volume_id"]]
        return {
            "id": inst.id,
            "instance_type": inst.instance_type,
            "status": status,
            "price_per_hour": float(inst.price_per_hour),  # recorded at launch
            "hostname": inst.name,
            "description": d["description"],
            "created_at": iso_time(inst.created_at),
            "ip": (inst.answer_ip or inst.ip) if inst.ip and status != "discontinued" else None,  # null until first running
            "location": inst.region,
            "image": d["image"],
            "os_name": d["os_name"],
            "ssh_key_ids": [k["id"] for k in inst.ssh_keys],
            "os_volume_id": d["os_volume_id"] if provisioned else None,
            "startup_script_id": d["startup_script_id"],
            "is_spot": d["is_spot"],
            "contract": d["contract"],
            "pricing": d["pricing"],
            "volume_ids": attached,
            "tags": [dict(tag) for tag in d["tags"]],
            "jupyter_token": None,
            **self._hardware(t),
        }

    def _find(self, instance_id: str) -> Instance:
        inst = self.state.get(self.name, instance_id)
        if inst is None:
            raise ApiError("not-found", f"Instance {instance_id} not found.")
        return inst

    def list_instances(self, req: Request) -> Response:
        """All non-deleted instances, optionally only those in one status."""
        wanted = req.arg("status")
        with self.state.lock:
            rendered = [self._instance(i) for i in self.state.list(self.name)]
        return json_response([i for i in rendered if wanted in (None, "", i["status"])])

    def get_instance(self, req: Request, instance_id: str) -> Response:
        with self.state.lock:
            return json_response(self._instance(self._find(instance_id)))

    def create_instance(self, req: Request) -> Response:
        body = req.json_object()
        for required in ("instance_type", "image", "hostname", "description"):
            if not isinstance(body.get(required), str) or not body[required]:
                raise ApiError("invalid", f"{required} is required.")
        type_name, image, hostname = body["instance_type"], body["image"], body["hostname"]
        if type_name not in self.catalog["types"]:
            raise ApiError("invalid", f"Invalid instance type: {type_name}.")
        location = self._location(body.get("location_code") or DEFAULT_LOCATION)
        for field, allowed in (("contract", CONTRACTS), ("pricing", PRICINGS)):
            if body.get(field) is not None and body[field] not in allowed:
                raise ApiError("invalid", f"{field} must be one of {', '.join(allowed)}.")
        is_spot = bool(body.get("is_spot"))
        os_spec = self._os_volume_spec(body.get("os_volume"), hostname, is_spot)
        tags = _create_tags(body.get("tags"))
        new_volumes = body.get("volumes") or []
        if not isinstance(new_volumes, list):
            raise ApiError("invalid", "volumes must be a list of {type, name, size}.")
        for spec in new_volumes:
            if isinstance(spec, dict) and "tags" in spec:
                raise ApiError("invalid", "Volumes created with an instance cannot have tags; tag them afterwards.")
        new_volumes = [self._volume_spec(v) for v in new_volumes]
        existing = body.get("existing_volumes") or []
        if not isinstance(existing, list) or not all(isinstance(v, str) for v in existing):
            raise ApiError("invalid", "existing_volumes must be a list of volume IDs.")
        with self.state.lock:
            script_id = body.get("startup_script_id")
            if script_id is not None and script_id not in self.state.scripts:
                raise ApiError("invalid", f"Startup script {script_id} not found.")
            key_ids = body.get("ssh_key_ids") or []
            keys = {k["id"]: k for k in self.state.keys(self.name)}
            if not isinstance(key_ids, list) or any(k not in keys for k in key_ids):
                raise ApiError("invalid", "ssh_key_ids must list existing SSH key IDs.")
            os_volume = self._image_volume(image, location)
            known_images = {i["image_type"]: i for i in self.catalog["images"]}
            if os_volume is None:
                if image not in known_images:
                    raise ApiError("invalid", f"Invalid image: {image}.")
                if image not in self._supported_os(type_name):
                    raise ApiError("invalid", IMAGE_NOT_VALID)
            to_attach = [self._attachable_volume(v, location) for v in existing]
            if len(set(existing)) != len(existing) or (os_volume and os_volume.id in existing):
                raise ApiError("invalid", "A volume can be attached only once.")
            os_image = os_volume.image if os_volume else image
            inst = Instance(
                provider=self.name,
                id=str(uuid.uuid4()),
                instance_type=type_name,
                region=location,
                name=hostname,
                ssh_keys=[keys[k] for k in key_ids],
                details={
                    "description": body["description"],
                    "image": image,
                    "os_name": known_images[os_image]["name"] if os_image in known_images else os_image,
                    "os_volume_id": os_volume.id if os_volume else str(uuid.uuid4()),
                    "startup_script_id": script_id,
                    "is_spot": is_spot,
                    "contract": body.get("contract") or ("SPOT" if is_spot else "PAY_AS_YOU_GO"),
                    "pricing": body.get("pricing") or "FIXED_PRICE",
                    "tags": tags,
                },
                price_per_hour=Decimal(self.priced(type_name)["spot_price" if is_spot else "price"]),
                startup=self.state.scripts[script_id]["script"] if script_id is not None else None,
                install=os_volume is None,  # a fresh OS volume: the image is installed first
                **req.instance_fault,
            )
            if not self.state.launch(inst):
                gpus = self.catalog["types"][type_name]["gpus"]
                kind = f"{gpus} GPU" if gpus else "CPU"
                raise ApiError(
                    "insufficient-capacity",
                    f"Not enough resources to deploy a {kind} instance type {type_name} in {location}",
                )
            if os_volume is None:
                os_volume = Volume(
                    self.name,
                    inst.details["os_volume_id"],
                    os_spec["name"],
                    os_spec["size"],
                    OS_VOLUME_TYPE,
                    location,
                    is_os_volume=True,
                    image=image,
                )
                self.state.add_volume(os_volume)
            for vol in [os_volume, *to_attach]:
                vol.instance_ids.append(inst.id)
            for spec in new_volumes:
                vol = Volume(self.name, str(uuid.uuid4()), spec["name"], spec["size"], spec["type"], location)
                vol.instance_ids.append(inst.id)
                self.state.add_volume(vol)
        return text_response(inst.id)

    def _os_volume_spec(self, spec, hostname: str, is_spot: bool) -> dict:
        """`os_volume {name, size, on_spot_discontinue?}`; absent or null: `<hostname>-os`, 100 GB."""
        if spec is None:
            return {"name": f"{hostname}-os", "size": OS_VOLUME_SIZE}
        if not isinstance(spec, dict) or not set(spec) <= {"name", "size", "on_spot_discontinue"}:
            raise ApiError("invalid", "os_volume must be {name, size, on_spot_discontinue?}.")
        name, size = spec.get("name") or f"{hostname}-os", spec.get("size", OS_VOLUME_SIZE)
        if not isinstance(name, str) or not _positive_int(size):
            raise ApiError("invalid", "os_volume needs a name and a size of at least 1 GB.")
        if spec.get("on_spot_discontinue") is not None:
            if spec["on_spot_discontinue"] not in SPOT_DISCONTINUE:
                raise ApiError("invalid", f"on_spot_discontinue must be one of {', '.join(SPOT_DISCONTINUE)}.")
            if not is_spot:
                raise ApiError("invalid", "on_spot_discontinue applies only to spot instances.")
        return {"name": name, "size": size}

    def _image_volume(self, image: str, location: str) -> Volume | None:
        """`image` may name a detached OS volume to boot from. Caller holds the lock."""
        vol = self.state.volume(self.name, image)
        if vol is None:
            return None
        if not vol.is_os_volume:
            raise ApiError("invalid", f"Volume {image} is not an OS volume.")
        return self._detached_volume(image, location)

    def _detached_volume(self, volume_id: str, location: str, shareable: bool = False) -> Volume:
        """A live volume in `location` that is detached (or, `shareable`, of a shared type)."""
        vol = self.state.volume(self.name, volume_id)
        if vol is None:
            raise ApiError("invalid", f"Volume {volume_id} not found.")
        if vol.instance_ids and not (shareable and _shared(vol)):
            raise ApiError("invalid", f"Volume {volume_id} is attached to another instance.")
        if vol.location != location:
            raise ApiError("invalid", f"Volume {volume_id} is in {vol.location}, not {location}.")
        return vol

    def _attachable_volume(self, volume_id: str, location: str) -> Volume:
        """An `existing_volumes` entry: detached, or of a shared type (attached to any number of instances)."""
        vol = self._detached_volume(volume_id, location, shareable=True)
        if vol.is_os_volume:
            raise ApiError("invalid", f"Volume {volume_id} is an OS volume: boot from it with `image`.")
        return vol

    def machine(self, inst: Instance) -> tuple[Path, dict[str, Path]]:
        """The root is the OS volume's (volumes/<os id>/root), so a new instance booted from a kept
        OS volume finds the files the last one left; every attached data volume is at /mnt/<name>."""
        disk = self.state.disk
        links: dict[str, Path] = {}
        for vol in self.state.attached(self.name, inst.id):
            if not vol.is_os_volume:
                name = mount_name(vol.name, vol.id)
                if f"/mnt/{name}" in links:
                    name = f"{name}-{vol.id[:8]}"
                links[f"/mnt/{name}"] = disk.volume_data(vol.id)
        return disk.os_volume_root(inst.details["os_volume_id"]), links

    def instance_action(self, req: Request) -> Response:
        """PUT /instances: 202 with one result per id, or 207 if any of them failed.

        Unknown and already-deleted ids get an error entry with statusCode 404
        (the Go SDK's InstanceActionResult); the others are acted on. For
        delete, `volume_ids` decides each volume's fate (contract 2.2.4).
        """
        body = req.json_object()
        action, ids = body.get("action"), body.get("id")
        ids = [ids] if isinstance(ids, str) else ids
        known = TERMINATE_ACTIONS + SHUTDOWN_ACTIONS + START_ACTIONS + OTHER_ACTIONS
        if action not in known:
            raise ApiError("invalid", f"action must be one of {', '.join(known)}.")
        if not isinstance(ids, list) or not ids:
            raise ApiError("invalid", "id must be an instance ID or a non-empty list of them.")
        volume_ids = body.get("volume_ids")
        if volume_ids is not None and (
            not isinstance(volume_ids, list) or not all(isinstance(v, str) for v in volume_ids)
        ):
            raise ApiError("invalid", "volume_ids must be null or a list of volume IDs.")
        permanent = body.get("delete_permanently", False)
        if not isinstance(permanent, bool):
            raise ApiError("invalid", "delete_permanently must be true or false.")
        with self.state.lock:
            doomed = []
            if action in TERMINATE_ACTIONS and volume_ids:
                doomed = [self._doomed_volume(v, [str(i) for i in ids]) for v in volume_ids]
            results = [self._act(action, str(i), volume_ids) for i in ids]
            for vol in doomed:
                if not vol.instance_ids:  # its instance was deleted above (or it was detached already)
                    self.state.delete_volume(vol, permanent)
        failed = any(r["status"] == "error" for r in results)
        return json_response(results, 207 if failed else 202)

    def _doomed_volume(self, volume_id: str, instance_ids: list[str]) -> Volume:
        """A volume named in a delete's `volume_ids`: it must exist and not serve another instance."""
        vol = self.state.volume(self.name, volume_id, trash=None)
        if vol is None:
            raise ApiError("invalid", f"Volume {volume_id} not found.")
        if any(i not in instance_ids for i in vol.instance_ids):
            raise ApiError("invalid", f"Volume {volume_id} is attached to another instance.")
        return vol

    def _act(self, action: str, instance_id: str, volume_ids: list | None = None) -> dict:
        result = {"action": action, "instanceId": instance_id, "status": "success"}
        inst = self.state.get(self.name, instance_id)
        if inst is None or inst.phase == "terminated":
            return {**result, "status": "error", "error": "Instance not found", "statusCode": 404}
        if action in OTHER_ACTIONS:
            return {**result, "status": "error", "error": f"{action} is not emulated", "statusCode": 400}
        if action in TERMINATE_ACTIONS:
            if inst.phase in LIVE_PHASES:
                self._release_volumes(inst, volume_ids)
            self.state.terminate(inst)
        elif action in SHUTDOWN_ACTIONS:
            self.state.shutdown(inst)
        else:
            self.state.reboot(inst)
        return result

    def _release_volumes(self, inst: Instance, volume_ids: list | None) -> None:
        """Absent/null `volume_ids`: the OS volume goes to the trash, the others are detached.

        Otherwise every volume is detached here; the caller deletes the listed ones.
        """
        for vol in self.state.attached(self.name, inst.id):
            if volume_ids is None and vol.is_os_volume:
                self.state.delete_volume(vol, permanent=False)
            else:
                vol.instance_ids.remove(inst.id)

    # --- tags ------------------------------------------------------------

    def _tagged_instance(self, instance_id: str) -> Instance:
        inst = self._find(instance_id)
        if inst.phase == "terminated":
            raise ApiError("not-found", f"Instance {instance_id} not found.")
        return inst

    def add_instance_tag(self, req: Request, instance_id: str) -> Response:
        with self.state.lock:
            return _add_tag(self._tagged_instance(instance_id).details["tags"], req.json_object())

    def delete_instance_tag(self, req: Request, instance_id: str, key: str) -> Response:
        with self.state.lock:
            return _delete_tag(self._tagged_instance(instance_id).details["tags"], key)

    def add_volume_tag(self, req: Request, volume_id: str) -> Response:
        with self.state.lock:
            return _add_tag(self._find_volume(volume_id).tags, req.json_object())

    def delete_volume_tag(self, req: Request, volume_id: str, key: str) -> Response:
        with self.state.lock:
            return _delete_tag(self._find_volume(volume_id).tags, key)

    # --- volumes ---------------------------------------------------------

    def _volume(self, vol: Volume) -> dict:
        monthly = VOLUME_TYPES[vol.type] * vol.size
        insts = [i for i in (self.state.get(self.name, iid) for iid in vol.instance_ids) if i is not None]
        inst = insts[0] if insts else None
        shared = _shared(vol)
        pseudo = f"/volume-{vol.id[:8]}" if shared else None
        out = {
            "id": vol.id,
            "name": vol.name,
            "size": vol.size,
            "type": vol.type,
            "status": vol.status,
            "is_os_volume": vol.is_os_volume,
            "created_at": iso_time(vol.created_at),
            "location": vol.location,
            "instance_id": vol.instance_id,
            "instances": [self._volume_instance(i) for i in insts],
            "target": ("vda" if vol.is_os_volume else "vdb") if inst else None,
            "ssh_key_ids": [k["id"] for k in inst.ssh_keys] if inst and vol.is_os_volume else [],
            "contract": "PAY_AS_YOU_GO",
            "pseudo_path": pseudo,
            "mount_command": f"mount -t nfs nfs.{vol.location.lower()}.emulator:{pseudo} /mnt/{vol.name}"
            if shared
            else None,
            "create_directory_command": f"mkdir -p /mnt/{vol.name}" if shared else None,
            "filesystem_to_fstab_command": None,
            "base_hourly_cost": float(round(monthly / HOURS_PER_MONTH, 6)),
            "monthly_price": float(monthly),
            "currency": "usd",
            "long_term": None,
            "tags": [dict(t) for t in vol.tags],
        }
        if vol.trash:
            out["deleted_at"] = iso_time(vol.deleted_at)
            out["is_permanently_deleted"] = False
        return out

    def _volume_instance(self, inst: Instance) -> dict:
        return {
            "id": inst.id,
            "auto_rental_extension": None,
            "ip": inst.ip,
            "instance_type": inst.instance_type,
            "status": self.statuses[inst.phase],
            "os_volume_id": inst.details["os_volume_id"],
            "hostname": inst.name,
        }

    def _find_volume(self, volume_id: str, trash: bool | None = False) -> Volume:
        vol = self.state.volume(self.name, volume_id, trash)
        if vol is None:
            raise ApiError("not-found", f"Volume {volume_id} not found.")
        return vol

    def _volume_spec(self, spec) -> dict:
        """{type, name, size} of a new volume."""
        if not isinstance(spec, dict):
            raise ApiError("invalid", "A volume is {type, name, size}.")
        if spec.get("type") not in VOLUME_TYPES:
            raise ApiError("invalid", f"type must be one of {', '.join(VOLUME_TYPES)}.")
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise ApiError("invalid", "name is required.")
        if not _positive_int(spec.get("size")):
            raise ApiError("invalid", "size must be a whole number of GB, at least 1.")
        return {"type": spec["type"], "name": spec["name"], "size": spec["size"]}

    def list_volumes(self, req: Request) -> Response:
        """Volumes not in the trash, optionally only those in one status."""
        wanted = req.arg("status")
        with self.state.lock:
            vols = [self._volume(v) for v in self.state.volume_list(self.name)]
        return json_response([v for v in vols if wanted in (None, "", v["status"])])

    def list_trash(self, req: Request) -> Response:
        with self.state.lock:
            return json_response([self._volume(v) for v in self.state.volume_list(self.name, trash=True)])

    def get_volume(self, req: Request, volume_id: str) -> Response:
        """A live volume, or one in the trash (status `deleted`); permanently deleted ones are 404."""
        with self.state.lock:
            return json_response(self._volume(self._find_volume(volume_id, trash=None)))

    def create_volume(self, req: Request) -> Response:
        body = req.json_object()
        spec = self._volume_spec(body)
        tags = _create_tags(body.get("tags"))
        instance_ids = body.get("instance_ids") or ([body["instance_id"]] if body.get("instance_id") else [])
        if not isinstance(instance_ids, list) or (len(instance_ids) > 1 and spec["type"] not in SHARED_VOLUME_TYPES):
            raise ApiError("invalid", "Only a volume of a shared type can be attached to several instances.")
        with self.state.lock:
            insts = [self._tagged_instance(str(i)) for i in dict.fromkeys(instance_ids)]
            location = self._location(body.get("location_code") or (insts[0].region if insts else DEFAULT_LOCATION))
            for inst in insts:
                if inst.region != location:
                    raise ApiError("invalid", f"Instance {inst.id} is in {inst.region}, not {location}.")
            vol = Volume(self.name, str(uuid.uuid4()), spec["name"], spec["size"], spec["type"], location, tags=tags)
            vol.instance_ids = [i.id for i in insts]
            self.state.add_volume(vol)
        return text_response(vol.id, 201)

    def _check_offline(self, vol: Volume, doing: str, instance_ids: list[str] | None = None) -> None:
        """Attach, detach and delete need the volume's instances (or those named) shut down (or gone)."""
        for iid in vol.instance_ids if instance_ids is None else instance_ids:
            inst = self.state.get(self.name, iid)
            if inst is not None and inst.phase in LIVE_PHASES and inst.phase != "offline":
                raise ApiError("forbidden", f"Can't {doing} volume {vol.id}: shut its instance down first.")

    def volume_action(self, req: Request) -> Response:
        """PUT /volumes {id: id or [ids], action, ...}: every id is checked before any is acted on."""
        body = req.json_object()
        action, ids = body.get("action"), body.get("id")
        ids = [ids] if isinstance(ids, str) else ids
        if action not in VOLUME_ACTIONS:
            raise ApiError("invalid", f"action must be one of {', '.join(VOLUME_ACTIONS)}.")
        if action == "clone":
            raise ApiError("invalid", "clone is not emulated.")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ApiError("invalid", "id must be a volume ID or a non-empty list of them.")
        with self.state.lock:
            vols = [self._find_volume(i, trash=None if action == "delete" else False) for i in ids]
            if action == "attach":
                if not isinstance(body.get("instance_id"), str):
                    raise ApiError("invalid", "instance_id is required.")
                inst = self._tagged_instance(body["instance_id"])
                for vol in vols:
                    if inst.id in vol.instance_ids or (vol.instance_ids and not _shared(vol)):
                        raise ApiError("invalid", f"Volume {vol.id} is already attached.")
                    if vol.location != inst.region:
                        raise ApiError("invalid", f"Volume {vol.id} is in {vol.location}, not {inst.region}.")
                if inst.phase != "offline":
                    raise ApiError("forbidden", f"Can't attach to instance {inst.id}: shut it down first.")
                for vol in vols:
                    vol.instance_ids.append(inst.id)
            elif action == "detach":  # from the `instance_id` given (Go sends it), else from every instance
                only = body.get("instance_id") or None
                for vol in vols:
                    if not vol.instance_ids or (only is not None and only not in vol.instance_ids):
                        raise ApiError("invalid", f"Volume {vol.id} is not attached.")
                    self._check_offline(vol, "detach", None if only is None else [only])
                for vol in vols:
                    vol.instance_ids = [] if only is None else [i for i in vol.instance_ids if i != only]
            elif action == "rename":
                if not isinstance(body.get("name"), str) or not body["name"]:
                    raise ApiError("invalid", "name is required.")
                for vol in vols:
                    vol.name = body["name"]
            elif action == "resize":
                size = body.get("size")
                if not _positive_int(size) or any(size <= v.size for v in vols):
                    raise ApiError("invalid", "size must be larger than the volume's size: volumes only grow.")
                for vol in vols:
                    vol.size = size
            else:
                self._delete_volumes(vols, body.get("is_permanent", False))
        return text_response("", 202)

    def _delete_volumes(self, vols: list[Volume], permanent) -> None:
        if not isinstance(permanent, bool):
            raise ApiError("invalid", "is_permanent must be true or false.")
        for vol in vols:
            self._check_offline(vol, "delete")
        for vol in vols:
            self.state.delete_volume(vol, permanent)

    def delete_volume(self, req: Request, volume_id: str) -> Response:
        """Body `{"is_permanent": bool}` (Python SDK), or no body and `?force=true` (Go SDK) for permanent."""
        permanent = (req.arg("force") or "").lower() == "true"
        if req.body.strip():
            permanent = req.json_object().get("is_permanent", permanent)
        with self.state.lock:
            self._delete_volumes([self._find_volume(volume_id, trash=None)], permanent)
        return text_response("", 202)

    # --- startup scripts -------------------------------------------------

    @staticmethod
    def _script(script: dict) -> dict:
        return {k: script[k] for k in ("id", "name", "script", "created_at")}

    def _find_script(self, script_id: str) -> dict:
        script = self.state.scripts.get(script_id)
        if script is None:
            raise ApiError("not-found", f"Startup script {script_id} not found.")
        return script

    def list_scripts(self, req: Request) -> Response:
        with self.state.lock:
            return json_response([self._script(s) for s in self.state.scripts.values()])

    def get_script(self, req: Request, script_id: str) -> Response:
        """A one-element list, like /sshkeys/{id}."""
        with self.state.lock:
            return json_response([self._script(self._find_script(script_id))])

    def create_script(self, req: Request) -> Response:
        body = req.json_object()
        name, script = body.get("name"), body.get("script")
        if not isinstance(name, str) or not name or not isinstance(script, str) or not script:
            raise ApiError("invalid", "name and script are required.")
        return text_response(self.state.add_script(str(uuid.uuid4()), name, script)["id"], 201)

    def delete_script(self, req: Request, script_id: str) -> Response:
        with self.state.lock:
            self._find_script(script_id)
            del self.state.scripts[script_id]
        return text_response("")

    def delete_scripts(self, req: Request) -> Response:
        ids = req.json_object().get("scripts")
        if not isinstance(ids, list) or not ids:
            raise ApiError("invalid", "scripts must be a non-empty list of startup script IDs.")
        with self.state.lock:
            unknown = [i for i in ids if i not in self.state.scripts]
            if unknown:
                raise ApiError("not-found", f"Startup scripts not found: {', '.join(map(str, unknown))}.")
            for script_id in ids:
                del self.state.scripts[script_id]
        return text_response("")


def _shared(vol: Volume) -> bool:
    """Shared file system volumes (`*_Shared*` types) can be attached to several instances at once."""
    return vol.type in SHARED_VOLUME_TYPES and not vol.is_os_volume


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _new_tag(raw) -> dict:
    """{key, value?} -> a Tag {id, key (lowercased), value ("" when left out)}."""
    if not isinstance(raw, dict) or not set(raw) <= {"key", "value"}:
        raise ApiError("invalid", "A tag is {key, value?}.")
    key, value = raw.get("key"), raw.get("value")
    value = "" if value is None else value
    if not isinstance(key, str) or not key or len(key) > MAX_TAG_KEY:
        raise ApiError("invalid", f"Tag key is required and at most {MAX_TAG_KEY} characters.")
    if not isinstance(value, str) or len(value) > MAX_TAG_VALUE:
        raise ApiError("invalid", f"Tag value must be a string of at most {MAX_TAG_VALUE} characters.")
    return {"id": str(uuid.uuid4()), "key": key.lower(), "value": value}


def _create_tags(raw) -> list[dict]:
    """`tags` of a create request: at most 10, keys unique after lowercasing."""
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_TAGS:
        raise ApiError("invalid", f"tags must be a list of at most {MAX_TAGS} {{key, value?}}.")
    tags = [_new_tag(t) for t in raw]
    if len({t["key"] for t in tags}) != len(tags):
        raise ApiError("conflict", "Duplicate tag keys.")
    return tags


def _add_tag(tags: list[dict], raw) -> Response:
    tag = _new_tag(raw)
    if any(t["key"] == tag["key"] for t in tags):
        raise ApiError("conflict", f"Tag {tag['key']!r} already exists; delete it first to change its value.")
    if len(tags) >= MAX_TAGS:
        raise ApiError("invalid", f"A resource can have at most {MAX_TAGS} tags.")
    tags.append(tag)
    return json_response(dict(tag), 201)


def _delete_tag(tags: list[dict], key: str) -> Response:
    found = next((t for t in tags if t["key"] == key.lower()), None)
    if found is None:
        raise ApiError("not-found", f"Tag {key!r} not found.")
    tags.remove(found)
    return text_response("")
