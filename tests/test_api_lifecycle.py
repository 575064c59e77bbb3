"""Overload, timeouts, client disconnects and shutdown, over real HTTP on loopback.

A gated wrapper around the tiny backend holds the model busy on demand, so 'queued' and 'in flight'
states are reached deterministically rather than by racing timers."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from model_server.services import Services
from tests.fakes import GatedBackend
from tests.conftest import free_port, serve_services, start_cli_server, tiny_settings, wait_ready


def gated_services(tiny_marian_dir, tiny_backend, **overrides):
    backend = GatedBackend(tiny_backend)
    settings = tiny_settings(tiny_marian_dir, **overrides)
    return Services.from_backend(settings, backend), backend


def post_in_thread(server, payload, results, timeout=60):
    def run():
        try:
            with server.client(timeout=timeout) as client:
                results.append(client.post("/translate", json=payload))
        except httpx.HTTPError as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_full_queue_answers_503_with_retry_after(tiny_marian_dir, tiny_backend):
    services, backend = gated_services(tiny_marian_dir, tiny_backend, max_queue_segments=3, max_wait_ms=0)
    with serve_services(services) as server:
        first: list = []
        thread = post_in_thread(server, {"text": "مرحبا بالعالم."}, first)
        assert backend.entered.wait(10)  # the model is busy with the first request
        with server.client() as client:
            queued: list = []
            second = post_in_thread(server, {"text": "شكرا جزيلا. الطقس جميل اليوم."}, queued)
            wait_until(lambda: services.translation.batcher.pending() == 2)
            response = client.post("/translate", json={"text": "مرحبا بالعالم. شكرا جزيلا."})
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "queue_full"
            assert response.headers["Retry-After"] == "1"
            backend.gate.set()
            thread.join(30)
            second.join(30)
            # Recovered: the queued and new work succeed once the model is free.
            assert first[0].status_code == 200 and queued[0].status_code == 200
            assert client.post("/translate", json={"text": "شكرا جزيلا."}).status_code == 200


def test_request_timeout_answers_504_and_drops_its_segments(tiny_marian_dir, tiny_backend):
    services, backend = gated_services(tiny_marian_dir, tiny_backend, request_timeout_s=0.5, max_wait_ms=0)
    with serve_services(services) as server:
        blocker: list = []
        thread = post_in_thread(server, {"text": "مرحبا بالعالم."}, blocker)
        assert backend.entered.wait(10)
        with server.client() as client:
            response = client.post("/translate", json={"text": "الطقس جميل اليوم."})
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        assert services.translation.batcher.pending() == 0  # the timed-out segment left the queue
        backend.gate.set()
        thread.join(30)
        wait_until(lambda: services.translation.batcher.stats.dropped_cancelled == 1)
        assert "الطقس جميل اليوم." not in backend.seen  # timed-out work never reached the model


def test_client_disconnect_cancels_queued_segments(tiny_marian_dir, tiny_backend):
    services, backend = gated_services(tiny_marian_dir, tiny_backend, max_wait_ms=0)
    with serve_services(services) as server:
        blocker: list = []
        thread = post_in_thread(server, {"text": "مرحبا بالعالم."}, blocker)
        assert backend.entered.wait(10)
        gone_text = "شكرا جزيلا. الطقس جميل اليوم."
        with pytest.raises(httpx.ReadTimeout):
            with server.client(timeout=0.5) as client:  # the client gives up and closes its connection
                client.post("/translate", json={"text": gone_text})
        wait_until(lambda: services.translation.batcher.pending() == 0)
        backend.gate.set()
        thread.join(30)
        assert blocker[0].status_code == 200
        wait_until(lambda: services.translation.batcher.stats.dropped_cancelled == 2)
        assert "شكرا جزيلا." not in backend.seen and "الطقس جميل اليوم." not in backend.seen


def test_graceful_shutdown_finishes_in_flight_work(tiny_marian_dir, tiny_backend):
    services, backend = gated_services(tiny_marian_dir, tiny_backend, max_wait_ms=0)
    server = serve_services(services).__enter__()
    results: list = []
    thread = post_in_thread(server, {"text": "مرحبا بالعالم. الطقس جميل اليوم."}, results)
    assert backend.entered.wait(10)
    server.server.should_exit = True  # SIGTERM: stop accepting...
    time.sleep(0.2)
    with pytest.raises(httpx.HTTPError):
        httpx.post(server.base_url + "/translate", json={"text": "شكرا جزيلا."}, timeout=2)
    backend.gate.set()  # ...but finish what is in flight
    thread.join(30)
    server.thread.join(30)
    assert not server.thread.is_alive()
    assert results[0].status_code == 200
    assert results[0].json()["results"][0]["translation"] == "Hello world. The weather is nice today."
    assert not services.translation.batcher.running


def test_cli_server_tiny_profile_serves_and_exits_cleanly_on_sigterm(tmp_path, tiny_marian_dir):
    """`MODEL_SERVER_PROFILE=tiny model-server serve`: offline start, real translation, graceful SIGTERM."""
    port = free_port()
    proc = start_cli_server({"MODEL_SERVER_PROFILE": "tiny", "MODEL_SERVER_MODELS_DIR": str(tiny_marian_dir.parent)},
                            port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        response = httpx.post(f"http://127.0.0.1:{port}/translate", json={"text": "مرحبا بالعالم."}, timeout=30)
        assert response.json()["results"][0]["translation"] == "Hello world."
        # The server re-executed itself (same PID) with the malloc arena cap (model_server/allocator.py).
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert os.environ.get("MALLOC_ARENA_MAX", "2").encode() in {v.removeprefix(b"MALLOC_ARENA_MAX=")
                                                                    for v in environ if v.startswith(b"MALLOC_")}
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status says "terminated".
        assert proc.returncode in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in output and "Traceback" not in output
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_server_fails_fast_with_a_clear_message_when_weights_are_missing(tmp_path):
    port = free_port()
    started = time.monotonic()
    proc = start_cli_server({"MODEL_SERVER_MODELS_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1",
                             "MODEL_SERVER_TRANSLATION_MODEL": "Helsinki-NLP/opus-mt-ar-en"}, port)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - started < 60
    assert "Helsinki-NLP/opus-mt-ar-en" in output
    assert "model-server download" in output and "MODEL_SERVER_TRANSLATION_MODEL" in output
    assert "Traceback" not in output


def test_missing_local_directory_is_reported_by_path(tmp_path):
    port = free_port()
    missing = tmp_path / "no-such-model"
    proc = start_cli_server({"MODEL_SERVER_TRANSLATION_MODEL": str(missing)}, port)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and str(missing) in output and "does not exist" in output
