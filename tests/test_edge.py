"""The HTTP edge against a real server on loopback: body limits on every method, oversized bodies that
curl, urllib, requests and httpx all read as 413, JSON the parser cannot take (400 invalid_json on every
route, before and after auth), and the per-key in-flight limit (429 too_many_inflight)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import urllib.error
import urllib.request

import httpx
import pytest
import requests

from model_server.api.ratelimit import InFlight
from model_server.errors import ServiceError
from model_server.services import Services
from tests.conftest import serve_services, tiny_settings
from tests.fakes import GatedBackend
from tests.ops_helpers import ARABIC, ops_server, wait_until

MAX_BODY = 1_000_000
# Five times the limit: far more than loopback socket buffers absorb, so a server that answers and closes
# without reading the body makes the kernel reset the connection (what urllib reported before draining).
OVERSIZED = b'{"text": "' + b"a" * (5 * MAX_BODY) + b'"}'
JSON = {"content-type": "application/json"}
KEY = "edge-key-1"


def _chunks(body: bytes, size: int = 65_536):
    for start in range(0, len(body), size):
        yield body[start:start + size]


# --- one function per client: (url, method, body, chunked, headers) -> status the client reports ----------

def _curl(url, method, body, chunked, headers, tmp_path):
    path = tmp_path / "body.json"
    path.write_bytes(body)
    command = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method, "--data-binary", f"@{path}",
               *[arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]]
    if chunked:
        command += ["-H", "Transfer-Encoding: chunked"]
    done = subprocess.run([*command, url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout)


def _urllib(url, method, body, chunked, headers, tmp_path):
    request = urllib.request.Request(url, data=_chunks(body) if chunked else body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as error:
        json.loads(error.read())  # the answer itself was read, not just the status line
        return error.code


def _requests(url, method, body, chunked, headers, tmp_path):
    response = requests.request(method, url, data=_chunks(body) if chunked else body, headers=headers, timeout=60)
    response.json()
    return response.status_code


def _httpx(url, method, body, chunked, headers, tmp_path):
    response = httpx.request(method, url, content=_chunks(body) if chunked else body, headers=headers, timeout=60)
    response.json()
    return response.status_code


CLIENTS = [pytest.param(_curl, id="curl", marks=pytest.mark.skipif(shutil.which("curl") is None,
                                                                   reason="curl is not installed")),
           pytest.param(_urllib, id="urllib"), pytest.param(_requests, id="requests"), pytest.param(_httpx, id="httpx")]


@pytest.fixture(scope="module")
def edge_server(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend, max_body_bytes=MAX_BODY) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_server(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend, max_body_bytes=MAX_BODY, api_keys=f"cms:{KEY}") as server:
        yield server


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("client", CLIENTS)
def test_every_client_reads_the_413_of_an_oversized_body(edge_server, client, chunked, tmp_path):
    for method, path in (("POST", "/translate"), ("GET", "/v2/languages")):  # any method, any route
        assert client(edge_server.base_url + path, method, OVERSIZED, chunked, JSON, tmp_path) == 413
    with edge_server.client() as check:  # and the server goes on serving
        assert check.post("/translate", json={"text": ARABIC}).status_code == 200


@pytest.mark.parametrize("client", CLIENTS)
def test_every_client_reads_the_401_of_an_anonymous_oversized_body(keyed_server, client, tmp_path):
    """Auth refuses before the body guard; the refused body is drained there too."""
    assert client(keyed_server.base_url + "/translate", "POST", OVERSIZED, False, JSON, tmp_path) == 401


def _raw_exchange(server, request: bytes) -> bytes:
    """Send `request` as is on a fresh connection; everything the server sends back."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65_536):
            received += chunk
    return received


def test_a_body_declared_beyond_the_drain_bound_is_answered_at_once_and_closed(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend, max_body_bytes=MAX_BODY, max_drain_bytes=2 * MAX_BODY) as server:
        # 100 MB declared, none of it sent: the answer comes without waiting for the body.
        answer = _raw_exchange(server, b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                       b"Content-Length: 100000000\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("method,path", [("GET", "/v1/models"), ("DELETE", "/v1/models"), ("OPTIONS", "/translate"),
                                         ("GET", "/v2/languages"), ("GET", "/libretranslate/languages")])
def test_body_limits_apply_to_every_method(edge_server, method, path):
    with edge_server.client() as client:
        streamed = client.request(method, path, content=_chunks(b"x" * (MAX_BODY + 1)))
        declared = _raw_exchange(edge_server, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                              f"Content-Length: {MAX_BODY + 1}\r\n\r\n".encode()
                                 + b"x" * (MAX_BODY + 1))
        assert client.request(method, path, content=b"x" * 100).status_code != 413   # small bodies pass
    expected = 400 if path.startswith("/libretranslate") else 413   # LibreTranslate answers size limits 400
    assert streamed.status_code == expected and declared.startswith(f"HTTP/1.1 {expected}".encode())
    if path.startswith(("/v1", "/translate")):
        assert streamed.json()["error"]["code"] == "body_too_large"


# --- JSON the parser cannot take ---------------------------------------------------------------------

NESTED = [pytest.param(b"[" * 100_000, id="100k-brackets"),
          pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="50k-objects"),
          pytest.param(b'{"text": ' + b"1" * 5_000 + b"}", id="5000-digit-number")]
MAIN_ROUTES = ["/translate", "/v1/jobs", "/v1/glossaries", "/summarize", "/v1/articles"]
COMPAT_ROUTES = ["/v2/translate", "/v2/languages", "/libretranslate/translate", "/libretranslate/detect"]


def assert_invalid_json(response, path: str) -> None:
    assert response.status_code == 400, response.text
    payload = response.json()
    if path.startswith("/v2"):
        assert set(payload) == {"message"} and "not valid JSON" in payload["message"]
    elif path.startswith("/libretranslate"):
        assert set(payload) == {"error"} and "not valid JSON" in payload["error"]
    else:
        assert payload["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("body", NESTED)
def test_unparseable_json_is_400_invalid_json_on_every_route(edge_server, body):
    with edge_server.client() as client:
        for path in MAIN_ROUTES + COMPAT_ROUTES:
            method = "GET" if path.endswith("/languages") else "POST"
            assert_invalid_json(client.request(method, path, content=body, headers=JSON), path)


@pytest.mark.parametrize("body", NESTED)
def test_unparseable_json_is_400_before_and_after_auth(keyed_server, body):
    with keyed_server.client() as client:
        for path in MAIN_ROUTES + COMPAT_ROUTES:
            method = "GET" if path.endswith("/languages") else "POST"
            keyed = client.request(method, path, content=body, headers={**JSON, "X-API-Key": KEY})
            assert_invalid_json(keyed, path)
        # LibreTranslate's key (and DeepL's legacy auth_key) may travel in the body: a body that cannot be
        # parsed holds no key, and is answered as the route would answer it, before auth (never a 500).
        for path in ("/libretranslate/translate", "/v2/translate"):
            anonymous = client.post(path, content=body, headers=JSON)
            assert_invalid_json(anonymous, path)
            assert anonymous.headers["X-Request-ID"]   # logged and counted like any refusal
        # Elsewhere the key is a header: no key, no parsing.
        assert client.post("/translate", content=body, headers=JSON).status_code == 401


LONE_SURROGATE = {"/translate": b'{"text": "\\ud800 \\u0645\\u0631\\u062d\\u0628\\u0627"}',
                  "/v2/translate": b'{"text": ["\\u0645\\u0631\\u062d\\u0628\\u0627 \\udc00"], "target_lang": "EN"}',
                  "/libretranslate/translate": b'{"q": "\\u0645\\u0631\\u062d\\u0628\\u0627 \\ud800", "source": "ar", '
                                              b'"target": "en"}'}


@pytest.mark.parametrize("padding", [0, 100_000], ids=["small", "large-body-checked-on-the-pool"])
def test_a_lone_surrogate_escape_is_400_invalid_encoding_not_a_tokenizer_crash(edge_server, padding):
    with edge_server.client() as client:
        for path, body in LONE_SURROGATE.items():
            body = body[:-1] + b', "padding": "' + b"p" * padding + b'"}'
            response = client.post(path, content=body, headers=JSON)
            assert response.status_code == 400, (path, response.text)
            payload = response.json()
            message = payload.get("message") or payload["error"]
            assert "lone UTF-16 surrogate (\\u" in (message if isinstance(message, str) else message["message"])
        # A surrogate *pair* (what ensure_ascii encoders send for emoji) and an escaped backslash are text.
        for text in ("مرحبا بالعالم 😀", "مرحبا \\ud800"):
            response = client.post("/translate", content=json.dumps({"text": text}).encode(), headers=JSON)
            assert response.status_code == 200, response.text


@pytest.mark.parametrize("body,lone", [
    (rb'"\ud800"', True), (rb'"\udc00"', True), (rb'"\ud83d\ude00"', False), (rb'"\uD83D\uDE00"', False),
    (rb'"\\ud800"', False),            # an escaped backslash, then the letters "ud800"
    (rb'"\\\ud800"', True),           # an escaped backslash, then a real escape
    (rb'"\ud800\ud800\udc00"', True), (rb'"\ud83d\ude00\udc00"', True), (rb'"\u0645\n\\"', False),
])
def test_lone_surrogate_escapes_are_found_exactly(body, lone):
    from model_server.api.middleware import _json_text_problem

    assert (_json_text_problem(body) is not None) is lone
    try:  # the oracle: Python's parser joins pairs; a lone surrogate is left and cannot be encoded
        json.loads(body).encode("utf-8")
        encodable = True
    except UnicodeEncodeError:
        encodable = False
    assert encodable is not lone


@pytest.mark.parametrize("unit", [b"\\ud83d\\ude00", b"\\\\", b"\\ud800x"], ids=["pairs", "backslashes", "lone"])
def test_the_json_text_check_is_linear(unit):
    from model_server.api.middleware import _json_text_problem
    from tests.timing import assert_linear

    assert_linear(_json_text_problem, lambda n: b'"' + unit * n + b'"', 20_000)


def test_compat_parameters_are_decoded_on_the_cpu_pool(edge_server, monkeypatch):
    from model_server.api import compat

    threads: list[str] = []
    decode = compat.decode_params

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return decode(*args, **kwargs)

    monkeypatch.setattr(compat, "decode_params", recording)
    with edge_server.client() as client:
        assert client.post("/v2/translate", json={"text": [ARABIC], "target_lang": "EN"}).status_code == 200
        assert client.post("/libretranslate/detect", data={"q": ARABIC}).status_code == 200
    assert len(threads) == 2 and all(name.startswith("prepare") for name in threads), threads


# --- in-flight requests per key ----------------------------------------------------------------------

def test_in_flight_slots_per_key():
    inflight = InFlight(2)
    inflight.acquire("a")
    inflight.acquire("a")
    with pytest.raises(ServiceError) as raised:
        inflight.acquire("a")
    assert raised.value.code == "too_many_inflight" and raised.value.status == 429
    assert raised.value.headers["Retry-After"] == "1"
    inflight.acquire("b")  # other keys are independent
    inflight.release("a")
    inflight.acquire("a")
    for key in ("a", "a", "b"):
        inflight.release(key)
    assert len(inflight) == 0  # keys at zero are forgotten: memory stays bounded by active keys
    with pytest.raises(ValueError):
        InFlight(0)


def _post_in_thread(server, path, payload, headers, results):
    def run():
        with server.client() as client:
            results.append(client.post(path, json=payload, headers=headers))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.parametrize("auth", [False, True], ids=["per-address", "per-key"])
def test_requests_beyond_the_in_flight_limit_get_429(tiny_marian_dir, tiny_backend, auth):
    backend = GatedBackend(tiny_backend)
    keys = {"api_keys": f"cms:{KEY},wire:other-key"} if auth else {}
    # A budget of exactly the requests that get through: refusals for being busy must spend none of it.
    services = Services.from_backend(tiny_settings(tiny_marian_dir, max_inflight_per_key=2,
                                                   rate_limit_requests_per_minute=3, **keys), backend)
    headers = {"X-API-Key": KEY} if auth else {}
    principal = "key:cms" if auth else "ip:127.0.0.1"
    with serve_services(services) as server, server.client() as client:
        inflight: InFlight = server.config.app.state.inflight
        results: list = []
        threads = [_post_in_thread(server, "/translate", {"text": ARABIC}, headers, results) for _ in range(2)]
        wait_until(lambda: inflight.count(principal) == 2 and backend.entered.is_set())
        refused = client.post("/translate", json={"text": ARABIC}, headers=headers)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_inflight"
        assert refused.headers["Retry-After"] == "1" and refused.headers["X-Request-ID"]
        deepl = client.post("/v2/translate", json={"text": [ARABIC], "target_lang": "EN"}, headers=headers)
        assert deepl.status_code == 429 and set(deepl.json()) == {"message"}
        libre = client.post("/libretranslate/translate", json={"q": ARABIC, "source": "ar", "target": "en"},
                            headers=headers)
        assert libre.status_code == 429 and libre.json()["error"].startswith("Slowdown: ")
        assert client.get("/healthz").status_code == 200   # probes are never limited
        if auth:   # another key of the same address has its own slots
            assert client.get("/v1/models", headers={"X-API-Key": "other-key"}).status_code == 200
        backend.gate.set()
        for thread in threads:
            thread.join(timeout=60)
        assert [r.status_code for r in results] == [200, 200]
        wait_until(lambda: inflight.count(principal) == 0)   # slots come back once the responses are sent
        assert client.post("/translate", json={"text": ARABIC}, headers=headers).status_code == 200


def test_in_flight_limit_zero_is_off(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend, max_inflight_per_key=0) as server:
        assert server.config.app.state.inflight is None
        with server.client() as client:
            assert client.post("/translate", json={"text": ARABIC}).status_code == 200
