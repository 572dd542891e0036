"""DataCrunch/Verda public API v1, as in section 2 of reference/api-contracts.md.

Bodies are bare JSON (no envelope); errors are flat {code, message}; creates
answer with a plain-text id; auth is an OAuth2 client-credentials token.
Both SSH-key paths (/sshkeys and /ssh-keys) and every spelling of the
availability parameters (is_spot/isSpot, location_code/locationCode) work.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from urllib.parse import parse_qs

from .server import ApiError, ProviderApi, Request, Response, json_response, text_response
from .sshd import is_public_key
from .state import Instance, iso_time

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
}
DEFAULT_LOCATION = "FIN-03"
EUR_PER_USD = Decimal("0.92")  # a fixed, made-up rate for ?currency=eur
TERMINATE_ACTIONS = ("delete", "discontinue", "delete_stuck")
SHUTDOWN_ACTIONS = ("shutdown", "force_shutdown")
START_ACTIONS = ("start", "boot")
OTHER_ACTIONS = ("hibernate", "restore", "configure_spot", "deploy", "transfer")  # accepted, not emulated
CONTRACTS = ("LONG_TERM", "PAY_AS_YOU_GO", "SPOT")
PRICINGS = ("DYNAMIC_PRICE", "FIXED_PRICE")


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
        return json_response({"code": code, "message": err.message or message}, err.status or status, headers)

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
        if name not in self.catalog["types"]:
            raise ApiError("not-found", f"Instance type {name} not found.")
        return self.catalog["types"][name]

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
            capacity = self.state.capacity[self.name]
            data = [
                {"location_code": c, "availabilities": [t for t in self.catalog["types"] if capacity.count(t, c) > 0]}
                for c in codes
            ]
        return json_response(data)

    def is_available(self, req: Request, type_name: str) -> Response:
        self._type_entry(type_name)
        codes = self._availability_query(req)
        with self.state.lock:
            capacity = self.state.capacity[self.name]
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
        return json_response(dict(self.config["balance"]))

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
        return {
            "id": inst.id,
            "instance_type": inst.instance_type,
            "status": status,
            "price_per_hour": float(t["spot_price"] if d["is_spot"] else t["price"]),
            "hostname": inst.name,
            "description": d["description"],
            "created_at": iso_time(inst.created_at),
            "ip": inst.ip if status != "discontinued" else None,  # null until first running
            "location": inst.region,
            "image": d["image"],
            "os_name": d["os_name"],
            "ssh_key_ids": [k["id"] for k in inst.ssh_keys],
            "os_volume_id": d["os_volume_id"] if inst.ip else None,
            "startup_script_id": d["startup_script_id"],
            "is_spot": d["is_spot"],
            "contract": d["contract"],
            "pricing": d["pricing"],
            "volume_ids": [d["os_volume_id"]] if inst.ip else [],
            "tags": [],
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
        type_name, image = body["instance_type"], body["image"]
        if type_name not in self.catalog["types"]:
            raise ApiError("invalid", f"Invalid instance type: {type_name}.")
        location = self._location(body.get("location_code") or DEFAULT_LOCATION)
        known_images = {i["image_type"]: i for i in self.catalog["images"]}
        if image not in known_images:  # an OS-volume id would be valid too; volumes are not emulated
            raise ApiError("invalid", f"Invalid image: {image}.")
        if image not in self._supported_os(type_name):
            raise ApiError("invalid", f"Image {image} is not supported for instance type {type_name}.")
        for field, allowed in (("contract", CONTRACTS), ("pricing", PRICINGS)):
            if body.get(field) is not None and body[field] not in allowed:
                raise ApiError("invalid", f"{field} must be one of {', '.join(allowed)}.")
        key_ids = body.get("ssh_key_ids") or []
        keys = {k["id"]: k for k in self.state.keys(self.name)}
        if not isinstance(key_ids, list) or any(k not in keys for k in key_ids):
            raise ApiError("invalid", "ssh_key_ids must list existing SSH key IDs.")
        inst = Instance(
            provider=self.name,
            id=str(uuid.uuid4()),
            instance_type=type_name,
            region=location,
            name=body["hostname"],
            ssh_keys=[keys[k] for k in key_ids],
            details={
                "description": body["description"],
                "image": image,
                "os_name": known_images[image]["name"],
                "os_volume_id": str(uuid.uuid4()),
                "startup_script_id": body.get("startup_script_id"),
                "is_spot": bool(body.get("is_spot")),
                "contract": body.get("contract") or ("SPOT" if body.get("is_spot") else "PAY_AS_YOU_GO"),
                "pricing": body.get("pricing") or "FIXED_PRICE",
            },
            **req.instance_fault,
        )
        if not self.state.launch(inst):
            gpus = self.catalog["types"][type_name]["gpus"]
            kind = f"{gpus} GPU" if gpus else "CPU"
            raise ApiError(
                "insufficient-capacity",
                f"Not enough resources to deploy a {kind} instance type {type_name} in {location}",
            )
        return text_response(inst.id)

    def instance_action(self, req: Request) -> Response:
        """PUT /instances: 202 with one result per id, or 207 if any of them failed.

        Unknown and already-deleted ids get an error entry with statusCode 404
        (the Go SDK's InstanceActionResult); the others are acted on.
        """
        body = req.json_object()
        action, ids = body.get("action"), body.get("id")
        ids = [ids] if isinstance(ids, str) else ids
        known = TERMINATE_ACTIONS + SHUTDOWN_ACTIONS + START_ACTIONS + OTHER_ACTIONS
        if action not in known:
            raise ApiError("invalid", f"action must be one of {', '.join(known)}.")
        if not isinstance(ids, list) or not ids:
            raise ApiError("invalid", "id must be an instance ID or a non-empty list of them.")
        with self.state.lock:
            results = [self._act(action, str(i)) for i in ids]
        failed = any(r["status"] == "error" for r in results)
        return json_response(results, 207 if failed else 202)

    def _act(self, action: str, instance_id: str) -> dict:
        result = {"action": action, "instanceId": instance_id, "status": "success"}
        inst = self.state.get(self.name, instance_id)
        if inst is None or inst.phase == "terminated":
            return {**result, "status": "error", "error": "Instance not found", "statusCode": 404}
        if action in OTHER_ACTIONS:
            return {**result, "status": "error", "error": f"{action} is not emulated", "statusCode": 400}
        if action in TERMINATE_ACTIONS:
            self.state.terminate(inst)
        elif action in SHUTDOWN_ACTIONS:
            self.state.shutdown(inst)
        else:
            self.state.reboot(inst)
        return result
