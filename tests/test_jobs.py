"""Asynchronous jobs (/v1/jobs, model_server/jobs.py) on real servers on loopback with the tiny model:
lifecycle, idempotency, surviving a restart, and signed webhooks with retries to a local receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from model_server.services import Services
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import serve_services, tiny_settings
from tests.fakes import GatedBackend

MEMORISED = dict(MEMORISED_PAIRS)
SECRET = "s3cret"


def wait_for_job(client, job_id, timeout_s=60, statuses=("done", "failed")):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']}")


def test_job_lifecycle_and_idempotency(tiny_marian_dir, tmp_path):
    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "state.sqlite3")
    texts = ["مرحبا بالعالم.", "   ", "شكرا جزيلا.", "الطقس جميل اليوم.", "اتفاق دفاعي بين الطرفين"]
    with serve_services(Services.load(settings)) as server, server.client() as client:
        accepted = client.post("/v1/jobs", json={"texts": texts}, headers={"Idempotency-Key": "cms-42"})
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert job["status"] in ("queued", "running") and job["progress"]["total"] == 5
        assert accepted.headers["location"] == f"/v1/jobs/{job['id']}"
        replay = client.post("/v1/jobs", json={"texts": texts}, headers={"Idempotency-Key": "cms-42"})
        assert replay.status_code == 200 and replay.json()["id"] == job["id"]
        done = wait_for_job(client, job["id"])
        missing = client.get("/v1/jobs/nope")
        bad = client.post("/v1/jobs", json={"text": "مرحبا", "callback_url": "http://127.0.0.1:9/x"})
    assert done["status"] == "done" and done["progress"] == {"done": 5, "total": 5}
    results = done["result"]["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["translation"] for r in results] == ["Hello world.", None, "Thank you very much.",
                                                   "The weather is nice today.", MEMORISED[texts[4]]]
    assert results[1]["error"]["code"] == "empty_text"
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_job"
    assert bad.status_code == 400 and "WEBHOOK_SECRET" in bad.json()["error"]["message"]  # no secret set


def test_a_job_survives_a_server_restart(tiny_marian_dir, tiny_backend, tmp_path):
    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "state.sqlite3")
    gated = GatedBackend(tiny_backend)
    server = serve_services(Services.from_backend(settings, gated)).__enter__()
    try:
        with server.client() as client:
            job = client.post("/v1/jobs", json={"text": "شكرا جزيلا."}).json()
            assert gated.entered.wait(30)  # the job is running, its batch held at the gate
            assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
    finally:
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        time.sleep(0.3)  # shutdown has begun (the job worker is cancelled) ...
        gated.gate.set()  # ... then let the held batch finish so the batcher drains
        stopper.join(60)
    import sqlite3

    with sqlite3.connect(tmp_path / "state.sqlite3") as db:  # stopped mid-job: still 'running', not lost
        assert db.execute("SELECT status FROM jobs WHERE id = ?", (job["id"],)).fetchone() == ("running",)
    # A new server on the same file picks the interrupted job up and finishes it.
    with serve_services(Services.load(settings)) as server, server.client() as client:
        done = wait_for_job(client, job["id"])
    assert done["status"] == "done"
    assert done["result"]["results"][0]["translation"] == "Thank you very much."


class Receiver:
    """A tiny webhook receiver on loopback: answers 500 to the first `failures` posts, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.posts: list[tuple[dict, bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                status = 500 if len(receiver.posts) < receiver.failures else 200
                receiver.posts.append((dict(self.headers), body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_webhook_arrives_signed_and_is_retried_after_a_500(tiny_marian_dir, tmp_path):
    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "state.sqlite3", webhook_secret=SECRET,
                             webhook_backoff_s=0.05, webhook_max_attempts=4)
    with Receiver(failures=2) as receiver, serve_services(Services.load(settings)) as server, \
            server.client() as client:
        job = client.post("/v1/jobs", json={"text": "مرحبا بالعالم.", "callback_url": receiver.url}).json()
        wait_for_job(client, job["id"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and client.get(f"/v1/jobs/{job['id']}").json()["callback"]["status"] \
                == "pending":
            time.sleep(0.05)
        final = client.get(f"/v1/jobs/{job['id']}").json()
    assert [status for _, _, status in receiver.posts] == [500, 500, 200]
    assert final["callback"] == {"url": receiver.url, "status": "delivered", "attempts": 3}
    headers, body, _ = receiver.posts[-1]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Model-Server-Signature"], expected)
    delivered = json.loads(body)
    assert delivered["id"] == job["id"] and delivered["status"] == "done"
    assert delivered["result"]["results"][0]["translation"] == "Hello world."
