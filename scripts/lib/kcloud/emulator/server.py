"""HTTP plumbing shared by both emulated APIs.

Each provider module subclasses `ProviderApi` with its routes, its auth check
and its error envelope; `ApiServer` puts one on a loopback port and runs every
request through the same pipeline:

    admin (/_emulator/*) | latency -> rate limit -> faults -> auth + route -> log

A fault's `delay_ms` sleeps before the API acts; `late_ms` sleeps after it
acted, and `disconnect_after` drops the answer of a request the API carried
out; `disconnect` and `reset` drop the connection instead of acting.

Handlers raise `ApiError(kind)` with a provider-neutral kind (see
faults.ERROR_KINDS); the provider renders it, so a scheduled fault
`error: insufficient-capacity` looks exactly like the real thing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .faults import Fault
from .state import State

HOST = "127.0.0.1"
ADMIN_PREFIX = "/_emulator/"


class ApiError(Exception):
    """A provider-neutral error; `ProviderApi.render_error` turns it into the provider's answer."""

    def __init__(
        self,
        kind: str,
        message: str | None = None,
        headers: dict | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message or kind)
        self.kind = kind
        self.message = message  # None: the provider's default message for the kind
        self.headers = headers or {}
        self.status = status  # None: the provider's usual status for the kind
        self.code = code  # None: the provider's usual error code for the kind


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    disconnect: bool = False  # close the connection without answering
    reset: bool = False  # abort the connection (TCP RST) without answering


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, json.dumps(obj).encode(), "application/json", headers or {})


def text_response(text: str, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, text.encode(), "text/plain; charset=utf-8", headers or {})


@dataclass
class Request:
    method: str
    path: str  # below the API base path, e.g. "/instances/abc"
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    instance_fault: dict = field(default_factory=dict)  # Instance fields set by an `instance:` fault

    def arg(self, *spellings: str) -> str | None:
        """The first query parameter present among alternative spellings (isSpot / is_spot)."""
        for name in spellings:
            if name in self.query:
                return self.query[name][0]
        return None

    def json_object(self) -> dict:
        try:
            data = json.loads(self.body or b"null")
        except ValueError:
            raise ApiError("invalid", "Request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise ApiError("invalid", "Request body must be a JSON object.")
        return data


@dataclass
class Route:
    method: str
    pattern: re.Pattern
    handler: Callable[..., Response]
    auth: bool


class ProviderApi:
    """One provider's API: subclasses set the class attributes and implement the hooks."""

    name: str
    base_path: str
    login_user: str  # SSH user of the provider's images
    launch_route: tuple[str, str]  # (method, path) that the launch rate limit applies to
    statuses: dict[str, str]  # lifecycle phase -> the provider's status word

    def __init__(self, state: State) -> None:
        self.state = state
        self.config = state.scenario.provider(self.name)
        self.catalog = state.scenario.catalogs[self.name]
        self._routes = [
            Route(method, re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "/?$"), handler, auth)
            for method, path, handler, auth in self.routes()
        ]

    def routes(self) -> list[tuple[str, str, Callable[..., Response], bool]]:
        """(method, path with {params}, handler(req, **params), needs auth)."""
        raise NotImplementedError

    def authenticate(self, req: Request) -> None:
        """Raise ApiError("unauthorized") unless the request carries valid credentials."""
        raise NotImplementedError

    def render_error(self, err: ApiError) -> Response:
        raise NotImplementedError

    def priced(self, type_name: str) -> dict:
        """A catalog type entry with today's prices (`POST /_emulator/price` overrides applied)."""
        with self.state.lock:
            return {**self.catalog["types"][type_name], **self.state.price_overrides[self.name].get(type_name, {})}

    def set_price(self, type_name: str, data: dict) -> dict:
        """Validate and apply `POST /_emulator/price`; returns the fields now in effect."""
        raise NotImplementedError

    def machine(self, inst) -> tuple[Path, dict[str, Path]]:
        """An instance's machine root and its mounts (`/path/in/root` -> directory); caller holds the lock."""
        raise NotImplementedError

    def handle(self, req: Request) -> Response:
        for route in self._routes:
            match = route.pattern.match(req.path)
            if match and route.method == req.method:
                if route.auth:
                    self.authenticate(req)
                params = {k: unquote(v) for k, v in match.groupdict().items()}
                return route.handler(req, **params)
        raise ApiError("not-found", f"No such endpoint: {req.method} {self.base_path}{req.path}")


class ApiServer:
    """One provider API served on one loopback port, in its own threads."""

    def __init__(self, api: ProviderApi, admin: Callable[[str, str, bytes], Response], port: int = 0) -> None:
        self.api = api
        self.state = api.state
        self.admin = admin  # (method, path, body) -> Response, for /_emulator/*
        self.httpd = ThreadingHTTPServer((HOST, port), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://{HOST}:{self.port}{api.base_path}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name=f"emulator-{api.name}", daemon=True
        )
        self.connections: set[socket.socket] = set()  # open keep-alive connections, closed by stop()
        self.connections_lock = threading.Lock()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop listening and drop open connections, so no client keeps talking to a stopped emulator."""
        if self._thread.is_alive():  # shutdown() would wait forever for a loop that never ran
            self.httpd.shutdown()
            self._thread.join(timeout=5)
        self.httpd.server_close()
        with self.connections_lock:
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def respond(self, method: str, raw_path: str, headers: Message, body: bytes) -> Response:
        url = urlsplit(raw_path)
        if url.path.startswith(ADMIN_PREFIX):
            return self.admin(method, url.path, body)
        resp = self._api_response(method, url, headers, body)
        self.state.log_request(self.api.name, method, url.path, resp.status)
        return resp

    def _api_response(self, method, url, headers, body) -> Response:
        api, base = self.api, self.api.base_path
        if url.path != base and not url.path.startswith(base + "/"):
            return api.render_error(ApiError("not-found", f"No such endpoint: {method} {url.path}"))
        req = Request(method, url.path[len(base) :] or "/", parse_qs(url.query), headers, body)
        if api.config["latency_ms"]:
            time.sleep(api.config["latency_ms"] / 1000)
        wait = self.state.retry_after(api.name, (method, req.path) == api.launch_route)
        if wait:
            return api.render_error(ApiError("rate-limited", headers={"Retry-After": str(wait)}))
        faults = self.state.due_faults(api.name, method, req.path)
        delay = sum(f.delay_ms for f in faults)
        if delay:
            time.sleep(delay / 1000)
        tag = next((f for f in faults if f.instance), None)
        if tag:
            req.instance_fault = {"fault": tag.instance, "fault_after": tag.after_s}
        lie = next((f for f in faults if f.answer_ip is not None), None)
        if lie:
            req.instance_fault = {**req.instance_fault, "answer_ip": lie.answer_ip}
        responder = next((f for f in faults if f.responds), None)
        resp = self._fault_response(responder) if responder else self._call(req)
        for rule in (r for f in faults for r in f.set_capacity):
            try:
                self.state.set_capacity(api.name, rule)
            except ValueError as exc:
                print(f"emulator: fault set_capacity ignored: {exc}", file=sys.stderr)
        malformed = next((f.malformed for f in faults if f.malformed), None)
        if malformed:
            resp = _corrupt(resp, malformed)
        late = sum(f.late_ms for f in faults)
        if late:  # the API has acted; the answer is held back
            time.sleep(late / 1000)
        if any(f.disconnect_after for f in faults):
            resp = Response(resp.status, disconnect=True)  # acted, but the answer is lost
        return resp

    def _call(self, req: Request) -> Response:
        try:
            return self.api.handle(req)
        except ApiError as err:
            return self.api.render_error(err)
        except Exception:  # an emulator bug must look like a 500, not a hung client
            traceback.print_exc()
            return self.api.render_error(ApiError("internal"))

    def _fault_response(self, fault: Fault) -> Response:
        if fault.disconnect:
            return Response(disconnect=True)
        if fault.reset:
            return Response(reset=True)
        if fault.error:
            return self.api.render_error(ApiError(fault.error, fault.message, dict(fault.headers)))
        try:
            json.loads(fault.body)
            content_type = "application/json"
        except ValueError:
            content_type = "text/plain; charset=utf-8"
        return Response(fault.status, fault.body.encode(), content_type, dict(fault.headers))


def _corrupt(resp: Response, how: str) -> Response:
    """A well-formed HTTP answer whose body the client cannot parse."""
    if how == "truncated":
        return Response(resp.status, resp.body[: max(1, len(resp.body) // 2)], resp.content_type, resp.headers)
    if how == "html":
        page = b"<html><head><title>502 Bad Gateway</title></head><body>upstream hiccup</body></html>"
        return Response(resp.status, page, "text/html", resp.headers)
    return Response(resp.status, b"", resp.content_type, resp.headers)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real clients expect
    server_version = "kcloud-emulator"
    timeout = 30  # idle keep-alive connections end by themselves
    disable_nagle_algorithm = True  # headers and body are written apart: no 40 ms delayed-ACK stall

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        resp = self.server.owner.respond(self.command, self.path, self.headers, body)
        if resp.reset:
            self._abort()
            return
        if resp.disconnect:
            self.close_connection = True
            return
        self.send_response(resp.status)
        self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(resp.body)))
        for key, value in resp.headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        self.wfile.write(resp.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def _abort(self) -> None:
        """Close with SO_LINGER 0, so the kernel sends RST instead of FIN: the client sees a reset."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            # detach() lets the fd close now although rfile/wfile still refer to the socket
            os.close(self.connection.detach())

    def setup(self) -> None:
        super().setup()
        with self.server.owner.connections_lock:
            self.server.owner.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.owner.connections_lock:
            self.server.owner.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log lives in /_emulator/state."""

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
