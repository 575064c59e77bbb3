"""Webhooks (model_server/webhooks.py): SSRF refusals at submission (real server, tiny model), signed deliveries
verified with the docs' own snippet, and the sender's behaviour against real HTTP receivers on loopback: no
redirects, the receiver's body never read, one total timeout per attempt, the checked address connected to."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import shutil
import sqlite3
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from model_server.errors import ServiceError
from model_server.services import Services
from model_server.webhooks import AllowList, WebhookSender, refusal
from tests.conftest import assert_error, serve_services, tiny_settings

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cret"


class Receiver:
    """A tiny webhook receiver on loopback. Each POST is recorded (headers, body), then answered by
    `respond(handler, n)` (n = index of the post); by default 500 for the first `failures` posts, then 200."""

    def __init__(self, failures: int = 0, respond=None, tls: ssl.SSLContext | None = None) -> None:
        self.failures = failures
        self.posts: list[tuple[object, bytes]] = []
        self.respond = respond or self._status_after_failures
        self.release = threading.Event()  # lets handlers that hold their connection go at shutdown
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.posts.append((self.headers, body))
                receiver.respond(self, len(receiver.posts) - 1)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _status_after_failures(self, handler, n: int) -> None:
        answer(handler, 500 if n < self.failures else 200)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def answer(handler, status: int, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in {"content-length": "0", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.end_headers()


def wait_for(predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def sender(**overrides) -> WebhookSender:
    values = dict(secret=SECRET, allowed=AllowList.parse("127.0.0.1"), timeout_s=5.0, resolve_timeout_s=1.0,
                  max_attempts=1, backoff_s=0.01)
    values.update(overrides)
    return WebhookSender(**values)


def attempt(webhooks: WebhookSender, url: str, body: bytes = b"{}") -> str | None:
    async def go():
        try:
            return await webhooks.attempt(url, body, {})
        finally:
            await webhooks.close()

    return asyncio.run(go())


# ----- which addresses are refused (pure) -----
@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd12:3456::1", "private"),
    ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"), ("169.254.170.2", "metadata"),
    ("100.100.100.200", "metadata"), ("168.63.129.16", "metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff0e::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("100.64.0.1", "not a public"), ("192.0.2.1", "private"),  # shared (CGNAT), documentation
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "metadata"),  # IPv4-mapped
    ("::7f00:1", "loopback"),  # IPv4-compatible
    ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 of 169.254.169.254
    ("64:ff9b::a9fe:a9fe", "metadata"), ("64:ff9b::a00:1", "private"),  # NAT64
])
def test_non_public_addresses_are_refused(address, reason):
    found = refusal(ipaddress.ip_address(address))
    assert found is not None and reason in found


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert refusal(ipaddress.ip_address(address)) is None


def test_allow_list_parses_names_addresses_and_networks():
    allowed = AllowList.parse(" cms.internal , 10.20.0.0/16,[::1], 127.0.0.1 ,")
    assert allowed.allows("CMS.internal.", ipaddress.ip_address("10.99.0.1"))  # by name, whatever it resolves to
    assert allowed.allows("x.example", ipaddress.ip_address("10.20.3.4"))
    assert allowed.allows("x.example", ipaddress.ip_address("::1"))
    assert not allowed.allows("x.example", ipaddress.ip_address("10.21.0.1"))
    with pytest.raises(ValueError, match="'http://cms'"):
        AllowList.parse("http://cms")


# ----- refusals at submission, on the real server -----
REFUSED_ALWAYS = ["http://10.0.0.5/hook", "http://169.254.169.254/latest/meta-data/", "https://172.16.0.1/x",
                  "http://[fd00:ec2::254]/", "http://[::ffff:169.254.169.254]/", "http://0.0.0.0:8080/",
                  "ftp://example.com/x", "http://no-such-host.invalid/hook"]
LOOPBACK = ["http://127.0.0.1:9/hook", "http://[::1]:9/hook", "http://localhost:9/hook",
            "http://[::ffff:127.0.0.1]:9/hook", "http://127.1.2.3:9/hook"]


def _stored_jobs(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]


def test_callback_urls_to_internal_addresses_are_refused_before_anything_is_stored(tiny_marian_dir, tmp_path):
    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "state.sqlite3", webhook_secret=SECRET)
    with serve_services(Services.load(settings)) as server, server.client() as client:
        answers = {url: client.post("/v1/jobs", json={"text": "مرحبا", "callback_url": url})
                   for url in REFUSED_ALWAYS + LOOPBACK}
        listed = client.get("/v1/jobs").json()
    for url, response in answers.items():
        error = assert_error(response, 400, "callback_not_allowed")
        assert "WEBHOOK_ALLOWED_HOSTS" in error["message"], url
    assert "loopback" in answers["http://localhost:9/hook"].json()["error"]["message"]  # a name resolving to 127.0.0.1
    assert "metadata" in answers["http://169.254.169.254/latest/meta-data/"].json()["error"]["message"]
    assert listed == {"jobs": [], "next_cursor": None}
    assert _stored_jobs(tmp_path / "state.sqlite3") == 0


def wait_for_callback(client, job_id: str) -> dict:
    return wait_for(lambda: (job := client.get(f"/v1/jobs/{job_id}").json())["callback"]["status"] != "pending"
                    and job)


def test_the_allow_list_admits_listed_loopback_only_and_deliveries_are_signed(tiny_marian_dir, tmp_path):
    """With loopback allowed, private and metadata addresses stay refused; deliveries to 127.0.0.1 and to
    `localhost` arrive signed, retried after a 500, and the docs' verification snippet accepts them."""
    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "state.sqlite3", webhook_secret=SECRET,
                             webhook_allowed_hosts="127.0.0.1,::1", webhook_backoff_s=0.05, webhook_max_attempts=4)
    with Receiver(failures=2) as flaky, Receiver() as named, serve_services(Services.load(settings)) as server, \
            server.client() as client:
        refused = {url: client.post("/v1/jobs", json={"text": "مرحبا", "callback_url": url})
                   for url in REFUSED_ALWAYS}
        by_ip = client.post("/v1/jobs", json={"text": "مرحبا بالعالم.", "callback_url": flaky.url}).json()
        by_name = client.post("/v1/jobs", json={"text": "شكرا جزيلا.",
                                                "callback_url": f"http://localhost:{named.port}/hook"}).json()
        ipv6 = client.post("/v1/jobs", json={"text": "مرحبا", "callback_url": "http://[::1]:9/hook"})
        finals = [wait_for_callback(client, job["id"]) for job in (by_ip, by_name)]
        metrics = client.get("/metrics").text
    for url, response in refused.items():
        assert_error(response, 400, "callback_not_allowed")
    assert ipv6.status_code == 202
    assert finals[0]["callback"] == {"url": flaky.url, "status": "delivered", "attempts": 3}
    assert finals[1]["callback"]["status"] == "delivered"
    assert [len(flaky.posts), len(named.posts)] == [3, 1]
    verify = docs_snippet()["verify_webhook"]
    for headers, body in flaky.posts + named.posts:
        assert verify(SECRET.encode(), headers, body)
        assert not verify(SECRET.encode(), headers, body.replace(b'"done"', b'"failed"'))  # tampered body
        assert not verify(b"another secret", headers, body)
    assert [headers["X-Model-Server-Job"] for headers, _ in flaky.posts] == [by_ip["id"]] * 3
    assert flaky.posts[-1][0]["Host"] == f"127.0.0.1:{flaky.port}"
    assert named.posts[0][0]["Host"] == f"localhost:{named.port}"
    assert b"Hello world." in flaky.posts[-1][1] and b"Thank you very much." in named.posts[0][1]
    assert 'model_server_webhook_attempts_total{outcome="delivered"} 2.0' in metrics
    assert 'model_server_webhook_attempts_total{outcome="failed"}' in metrics


def docs_snippet() -> dict:
    """Exec the verification snippet exactly as docs/operations.md shows it."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text[text.index("### Verifying a webhook"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "docs/operations.md", "exec"), namespace)  # noqa: S102 - our own docs
    return namespace


def test_docs_snippet_rejects_a_replayed_old_delivery():
    verify = docs_snippet()["verify_webhook"]
    from model_server.webhooks import sign

    old = str(int(time.time()) - 3600)
    headers = {"X-Model-Server-Timestamp": old, "X-Model-Server-Signature": sign(SECRET, old, b"{}")}
    assert not verify(SECRET.encode(), headers, b"{}")
    assert verify(SECRET.encode(), headers, b"{}", max_age_s=7200)
    assert not verify(SECRET.encode(), {}, b"{}")


# ----- the sender against real receivers -----
def test_redirects_are_not_followed():
    with Receiver() as target, Receiver(respond=lambda h, n: answer(h, 307, {"location": target.url})) as first:
        why = attempt(sender(), first.url)
    assert why == "HTTP 307 (redirects are not followed)"
    assert len(first.posts) == 1 and target.posts == []


def test_the_receivers_body_is_never_read():
    """The receiver announces a 1 GB body and sends none of it: the attempt ends at the status line."""
    def huge(handler, n):
        answer(handler, 200, {"content-length": str(10 ** 9)})
        handler.wfile.flush()
        receiver.release.wait(30)

    with Receiver(respond=huge) as receiver:
        started = time.monotonic()
        why = attempt(sender(timeout_s=5.0), receiver.url)
        elapsed = time.monotonic() - started
    assert why is None and elapsed < 2.0


def test_one_total_timeout_per_attempt():
    """A receiver that trickles its headers a byte every 50 ms never trips a per-read timeout; the attempt
    still ends after timeout_s in all."""
    def trickle(handler, n):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 400:
            if receiver.release.is_set():
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.05)

    with Receiver(respond=trickle) as receiver:
        started = time.monotonic()
        why = attempt(sender(timeout_s=0.6), receiver.url)
        elapsed = time.monotonic() - started
    assert why == "no answer within 0.6s"
    assert 0.5 < elapsed < 1.5


class FakeDns:
    """A resolver for names this machine cannot resolve; counts lookups."""

    def __init__(self, answers: dict[str, list[str]], delay_s: float = 0.0) -> None:
        self.answers = answers
        self.delay_s = delay_s
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        await asyncio.sleep(self.delay_s)
        return self.answers[host]


def test_the_checked_address_is_the_one_connected_to():
    """`hooks.example` exists only in the fake DNS: the POST reaches the receiver because the sender connects
    to the address it checked (resolving once), with the name kept in Host."""
    dns = FakeDns({"hooks.example": ["127.0.0.1"]})
    with Receiver() as receiver:
        why = attempt(sender(resolve=dns), f"http://hooks.example:{receiver.port}/hook?k=v")
    assert why is None and dns.lookups == ["hooks.example"]
    headers, _ = receiver.posts[0]
    assert headers["Host"] == f"hooks.example:{receiver.port}"


def test_a_name_resolving_to_any_internal_address_is_refused():
    dns = FakeDns({"mixed.example": ["93.184.216.34", "127.0.0.1"], "inside.example": ["10.0.0.7"]})
    with Receiver() as receiver:
        why = attempt(sender(resolve=dns, allowed=AllowList()), f"http://mixed.example:{receiver.port}/")
    assert why is not None and "loopback" in why and receiver.posts == []

    async def check(url, resolver=dns, **overrides):
        with pytest.raises(ServiceError) as raised:
            await sender(resolve=resolver, **overrides).check(url)
        return raised.value

    error = asyncio.run(check("http://inside.example/"))
    assert error.code == "callback_not_allowed" and "private" in error.message
    slow = FakeDns({"slow.example": ["93.184.216.34"]}, delay_s=5.0)
    started = time.monotonic()
    error = asyncio.run(check("http://slow.example/", slow, resolve_timeout_s=0.2))
    assert "did not resolve within 0.2s" in error.message and time.monotonic() - started < 1.0
    assert asyncio.run(sender(resolve=dns, allowed=AllowList.parse("inside.example")).check(
        "http://inside.example/")).addresses == (ipaddress.ip_address("10.0.0.7"),)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for `hooks.example` (its own CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-subj", "/CN=hooks.example",
                    "-addext", "subjectAltName=DNS:hooks.example"], check=True, capture_output=True)
    return folder / "cert.pem", folder / "key.pem"


def test_https_connects_to_the_checked_address_and_checks_the_certificate_against_the_name(tls_files):
    cert, key = tls_files
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    names_asked: list[str] = []
    server_tls.sni_callback = lambda sock, name, context: names_asked.append(name)
    trust = ssl.create_default_context(cafile=str(cert))
    dns = FakeDns({"hooks.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
    with Receiver(tls=server_tls) as receiver:
        ok = attempt(sender(resolve=dns, verify=trust), f"https://hooks.example:{receiver.port}/hook")
        wrong_name = attempt(sender(resolve=dns, verify=trust), f"https://other.example:{receiver.port}/hook")
    assert ok is None and receiver.posts[0][0]["Host"] == f"hooks.example:{receiver.port}"
    assert names_asked[:2] == ["hooks.example", "other.example"]  # SNI carries the name, not the IP
    assert wrong_name is not None and "certificate verify failed" in wrong_name and len(receiver.posts) == 1
