"""The HTTP policy through real loopback HTTP: a tiny scripted server answers each request
with the next scripted response, so retries, Retry-After and error mapping are observable."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kcloud import errors, providers
from kcloud.providers.base import LaunchRequest


class Script:
    def __init__(self, responses):
        self.responses = list(responses)
        self.seen = []     # (method, path, time)

    def __enter__(self):
        script = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                script.seen.append((self.command, self.path, time.monotonic()))
                status, body, headers = script.responses.pop(0) if script.responses else (500, "{}", {})
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v1"
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


EDGE_429 = (429, "error code: 1015", {"Retry-After": "1", "Content-Type": "text/plain"})
TYPES = {"data": {"gpu_1x_a10": {"instance_type": {"name": "gpu_1x_a10", "description": "1x A10",
                                                    "gpu_description": "A10 (24 GB PCIe)", "price_cents_per_hour": 129,
                                                    "specs": {"vcpus": 30, "memory_gib": 200, "storage_gib": 1, "gpus": 1}},
                                  "regions_with_capacity_available": [{"name": "us-west-1", "description": "California"}]}}}


@pytest.fixture
def lambda_env(home, monkeypatch):
    monkeypatch.setenv("LAMBDALABS_API_KEY", "test-key-0123456789")


def test_non_json_429_is_retried_after_retry_after(lambda_env):
    with Script([EDGE_429, EDGE_429, (200, TYPES, {})]) as s:
        cap = providers.get("lambdalabs", base_url=s.url).capacity()
    assert cap == {"gpu_1x_a10": ("us-west-1",)}
    gaps = [b[2] - a[2] for a, b in zip(s.seen, s.seen[1:])]
    assert len(s.seen) == 3 and all(g >= 0.9 for g in gaps), gaps   # Retry-After: 1 honoured


def test_429_storm_ends_in_one_clear_rate_limited_error(lambda_env, monkeypatch):
    monkeypatch.setenv("KCLOUD_HTTP_BACKOFF", "0.01")
    storm = [(429, "error code: 1015", {"Content-Type": "text/plain"})] * 10
    with Script(storm) as s:
        with pytest.raises(errors.RateLimited) as e:
            providers.get("lambdalabs", base_url=s.url).capacity()
    assert len(s.seen) == 7            # 1 + 6 retries from the data file, then stop
    assert "\n" not in e.value.line() and "wait a minute" in e.value.line()


def test_launch_post_is_not_retried_on_5xx(lambda_env):
    """A POST that may have been carried out must not be sent twice."""
    with Script([(500, {"error": {"code": "global/internal-error", "message": "boom"}}, {})]) as s:
        with pytest.raises(errors.TransientError):
            providers.get("lambdalabs", base_url=s.url).launch(LaunchRequest("gpu_1x_a10", "us-west-1", "n", "k", "k"))
    assert len(s.seen) == 1


def test_insufficient_capacity_is_a_capacity_error(lambda_env):
    body = {"error": {"code": "instance-operations/launch/insufficient-capacity",
                      "message": "Not enough capacity to fulfill launch request."}}
    with Script([(400, body, {})]) as s:
        with pytest.raises(errors.CapacityError, match="insufficient-capacity"):
            providers.get("lambdalabs", base_url=s.url).launch(LaunchRequest("gpu_1x_a10", "us-west-1", "n", "k", "k"))


def test_malformed_json_is_one_clear_line(lambda_env):
    with Script([(200, '{"data": {"gpu_1x_a10": ', {"Content-Type": "application/json"})]) as s:
        with pytest.raises(errors.TransientError, match="malformed answer to GET /instance-types"):
            providers.get("lambdalabs", base_url=s.url).capacity()


def test_wrong_envelope_is_malformed_not_a_crash(lambda_env):
    with Script([(200, {"instance_types": []}, {})]) as s:
        with pytest.raises(errors.TransientError, match="no 'data' envelope"):
            providers.get("lambdalabs", base_url=s.url).capacity()


def test_wrong_key_is_an_auth_error_without_the_key(lambda_env):
    body = {"error": {"code": "global/invalid-api-key", "message": "API key was invalid, expired, or deleted."}}
    with Script([(401, body, {})]) as s:
        with pytest.raises(errors.AuthError) as e:
            providers.get("lambdalabs", base_url=s.url).ssh_keys()
    assert "test-key-0123456789" not in e.value.line()
    assert "invalid-api-key" in e.value.line() and "credentials" in e.value.line()


def test_api_down_is_a_clear_transient_error(lambda_env, monkeypatch):
    monkeypatch.setenv("KCLOUD_HTTP_BACKOFF", "0.01")
    with Script([]) as s:
        url = s.url
    with pytest.raises(errors.TransientError, match="unreachable") as e:
        providers.get("lambdalabs", base_url=url).capacity()
    assert "\n" not in e.value.line()


def test_datacrunch_503_not_enough_resources_is_capacity(home, monkeypatch):
    monkeypatch.setenv("DATACRUNCH_CLIENT_ID", "cid")
    monkeypatch.setenv("DATACRUNCH_CLIENT_SECRET", "csecret-0123456789")
    token = (200, {"access_token": "tok-abcdefgh123", "refresh_token": "ref-abcdefgh123", "expires_in": 3600,
                   "token_type": "Bearer", "scope": "fullAccess"}, {})
    nores = (503, {"code": "service_unavailable",
                   "message": "Not enough resources to deploy a 1 GPU instance type 1V100.6V in FIN-03"}, {})
    with Script([token, nores]) as s:
        with pytest.raises(errors.CapacityError, match="Not enough resources"):
            providers.get("datacrunch", base_url=s.url.replace("/api/v1", "/v1")).launch(
                LaunchRequest("1V100.6V", "FIN-03", "n", "k", "kid"))
    assert [m for m, _, _ in s.seen] == ["POST", "POST"]      # token, then one launch: not retried
