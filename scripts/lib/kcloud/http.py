"""One HTTP client for every provider: timeouts, retries, client-side rate limits, typed errors.

The retry policy is data (a urllib3 Retry built from the provider's data file), not loops.
Idempotent requests retry on 429, 5xx and connection errors; a POST retries only on 429,
which the server answers before doing anything, so a launch is never sent twice.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from kcloud import errors
from kcloud.redact import redact

log = logging.getLogger("kcloud.http")
USER_AGENT = "kcloud/0.1"


class RetryPolicy(Retry):
    """urllib3 Retry that also retries 429 on non-idempotent methods (nothing was done)."""

    def is_retry(self, method, status_code, has_retry_after=False):
        if status_code == 429:
            return bool(self.total)
        return super().is_retry(method, status_code, has_retry_after)


class RateLimiter:
    """Token bucket: `rate` requests per second with bursts up to `burst`. Thread-safe."""

    def __init__(self, rate: float, burst: float = 1.0, clock=time.monotonic, sleep=time.sleep):
        self.rate, self.burst, self.clock, self.sleep = rate, burst, clock, sleep
        self._tokens, self._stamp = burst, clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for a token; return how long we waited."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait:
            self.sleep(wait)
        return wait


@dataclass
class HttpPolicy:
    """A provider's HTTP behaviour, read from its data file (`http:` section)."""

    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    retries: int = 5
    backoff_factor: float = 1.0
    backoff_max: float = 30.0
    backoff_jitter: float = 0.5
    rate_limits: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "HttpPolicy":
        policy = cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        # Knobs for tests and benchmarks against the emulator; documented in README.
        if os.environ.get("KCLOUD_HTTP_BACKOFF"):
            policy.backoff_factor = float(os.environ["KCLOUD_HTTP_BACKOFF"])
            policy.backoff_jitter = min(policy.backoff_jitter, policy.backoff_factor)
        if os.environ.get("KCLOUD_HTTP_READ_TIMEOUT"):
            policy.read_timeout = float(os.environ["KCLOUD_HTTP_READ_TIMEOUT"])
        if os.environ.get("KCLOUD_CLIENT_RATE_LIMITS", "on") == "off":
            policy.rate_limits = {}
        return policy

    def retry(self) -> Retry:
        # A refused or unroutable connection means the API (or the network) is down: one quick
        # second try, then one clear error within seconds -- not minutes of backoff. Resets and
        # read timeouts of idempotent requests get two more tries; 429 and 5xx the full count.
        return RetryPolicy(
            total=self.retries,
            connect=1,
            read=min(self.retries, 2),
            status=self.retries,
            backoff_factor=self.backoff_factor,
            backoff_max=self.backoff_max,
            backoff_jitter=self.backoff_jitter,
            status_forcelist=(429, 500, 502, 503, 504),
            respect_retry_after_header=True,
            raise_on_status=False,
        )


class SharedInterval:
    """At most one request per `interval` seconds across every process of this user for this
    provider: the time of the last one in $XDG_STATE_HOME/kcloud/limits/<provider>-<kind>, read
    and written under an flock (held while waiting, so concurrent launchers queue)."""

    def __init__(self, provider: str, kind: str, interval: float):
        base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        self.path = os.path.join(base, "kcloud", "limits", f"{provider}-{kind}")
        self.interval = float(interval)

    def acquire(self) -> float:
        import fcntl
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return 0.0                       # no state directory: the in-process bucket still applies
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                last = float(os.pread(fd, 64, 0).decode() or 0)
            except ValueError:
                last = 0.0
            wait = min(self.interval, max(0.0, last + self.interval - time.time()))
            if wait:
                time.sleep(wait)
            stamp = f"{time.time():.3f}".encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, stamp, 0)
            return wait
        finally:
            os.close(fd)


def make_limiters(rate_limits: dict, **clock) -> dict[str, RateLimiter]:
    """{"general": {per_second, burst}, "launch": {interval_s, burst}} -> limiters."""
    return {name: RateLimiter(lim.get("per_second") or 1.0 / lim["interval_s"], lim.get("burst", 1), **clock)
            for name, lim in rate_limits.items()}


ErrorMapper = Callable[[requests.Response, str], errors.ApiError]


class ApiClient:
    """A provider's base URL + Session + policy. Providers call `.call()` and get JSON or text."""

    def __init__(self, provider: str, base_url: str, policy: HttpPolicy, map_error: ErrorMapper,
                 auth: requests.auth.AuthBase | None = None):
        self.provider, self.base_url = provider, base_url.rstrip("/")
        self.policy, self.map_error, self.auth = policy, map_error, auth
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = HTTPAdapter(max_retries=policy.retry(), pool_maxsize=8)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.limiters = make_limiters(policy.rate_limits)
        # Interval limits (a launch per 12 s) hold per account, not per process: every terraform
        # apply starts a fresh plugin, so the last launch time is shared through a file.
        self.shared = {name: SharedInterval(provider, name, lim["interval_s"])
                       for name, lim in policy.rate_limits.items() if name != "general" and lim.get("interval_s")}
        self.requests_sent = 0
        self._count_lock = threading.Lock()

    def call(self, method: str, path: str, *, json_body: Any = None, params: dict | None = None,
             data: dict | None = None, kind: str = "general", auth: Any = "default",
             expect: str = "json") -> Any:
        """Send one request (after the rate limiters allow it) and decode the answer.

        `kind` names the extra limiter this request also needs (e.g. "launch").
        `expect` is "json", "text" (plain-text ids) or "none".
        """
        # The scarce token first (a launch may wait 12 s), then the general one: taken the other
        # way round, the request after a long launch wait would follow it at once.
        for name in dict.fromkeys((kind, "general")):
            if name in self.limiters:
                self.limiters[name].acquire()
        if kind in self.shared:
            self.shared[kind].acquire()
        url = self.base_url + path
        with self._count_lock:
            self.requests_sent += 1
        try:
            resp = self.session.request(
                method, url, json=json_body, params=params, data=data,
                auth=self.auth if auth == "default" else auth,
                timeout=(self.policy.connect_timeout, self.policy.read_timeout))
        except requests.exceptions.ConnectionError as exc:
            raise errors.TransientError(f"{self.provider} API unreachable at {self.base_url} ({_reason(exc)})",
                                        provider=self.provider,
                                        hint="check the network or the API URL override") from None
        except requests.exceptions.Timeout:
            raise errors.TransientError(f"{self.provider}: {method} {path} timed out",
                                        provider=self.provider) from None
        log.debug("%s %s -> %s", method, redact(url), resp.status_code)
        if resp.status_code >= 400:
            raise self.map_error(resp, f"{method} {path}")
        if expect == "none":
            return None
        if expect == "text":
            return resp.text.strip().strip('"')
        try:
            return resp.json()
        except ValueError:
            raise errors.TransientError(
                f"{self.provider}: malformed answer to {method} {path} (not JSON: {resp.text[:60]!r})",
                provider=self.provider) from None


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "Max retries exceeded"):
        if marker in text:
            return marker.lower()
    return text[:80]


STATUS_ERRORS = {401: errors.AuthError, 403: errors.AuthError, 402: errors.QuotaError, 404: errors.NotFound}


def typed_error(provider: str, resp: requests.Response, what: str, code: str, message: str,
                codes: dict[str, type], cls: type | None = None) -> errors.ApiError:
    """The typed error for an answer, once for every provider: the provider's own code table
    first, then the HTTP status. Providers only unwrap their envelope into (code, message)."""
    message = message or resp.reason or ""
    if cls is None:
        if resp.status_code == 429:
            cls = errors.RateLimited
        elif code in codes:
            cls = codes[code]
        elif resp.status_code in STATUS_ERRORS:
            cls = STATUS_ERRORS[resp.status_code]
        elif resp.status_code >= 500 or error_body(resp) is None:
            cls = errors.TransientError
        elif "image" in message.lower():
            cls = errors.ImageNotSupported
        else:
            cls = errors.InvalidRequest
    detail = f"{code}: {message}" if code else f"HTTP {resp.status_code} {message}"
    return cls(f"{provider}: {what}: {detail}", provider=provider)


def error_body(resp: requests.Response) -> Any:
    """The decoded error body, or None when it is not JSON (Lambda's edge 429, proxies)."""
    try:
        return resp.json()
    except ValueError:
        return None

