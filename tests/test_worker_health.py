"""The health port of `model-server worker` (model_server/worker_health.py): a real worker process and a
real redis-server (tests/redis_server.py) for the probes across a Redis outage; an in-process worker
(tests/test_jobs_scale.py style) for a dead queue thread and a port that is already taken."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import dramatiq
import httpx
import pytest

from model_server.services import Services
from model_server.worker import run_worker
from tests.conftest import free_port, tiny_settings
from tests.fakes import DelegatingBackend
from tests.test_jobs_scale import state_env, workers  # noqa: F401 - `workers` is a fixture


def poll(probe: httpx.Client, path: str, status: int, timeout_s: float = 15) -> httpx.Response:
    """GET `path` until it answers `status` (or the deadline: the last answer, for the assertion)."""
    deadline = time.monotonic() + timeout_s
    response = probe.get(path)
    while response.status_code != status and time.monotonic() < deadline:
        time.sleep(0.1)
        response = probe.get(path)
    return response


def test_probes_answer_and_readiness_follows_the_state_redis(tiny_marian_dir, tmp_path, redis_server, workers):
    port = free_port()
    workers(state_env(redis_server.url, tiny_marian_dir, tmp_path, MODEL_SERVER_WORKER_HEALTH_PORT=str(port),
                      MODEL_SERVER_STATE_TIMEOUT_S="0.5"))  # "worker ready" is logged once the port answers
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
        alive, ready, metrics, unknown = (probe.get(path) for path in ("/healthz", "/readyz", "/metrics", "/v1/jobs"))
        redis_server.stop()
        unready = poll(probe, "/readyz", 503)
        alive_without_redis = probe.get("/healthz")
        redis_server.start()
        restarted = time.monotonic()
        back = poll(probe, "/readyz", 200)
        print(f"\nworker /readyz 200 again {time.monotonic() - restarted:.2f}s after the state Redis restarted")
    assert alive.status_code == 200 and alive.json() == {"status": "ok"}
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "state": {"store": "redis", "reachable": True}}
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'model_server_queue_depth{lane="bulk",model="translation"}' in metrics.text  # its own batcher
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
    assert unready.status_code == 503, unready.text
    body = unready.json()
    assert body["error"]["code"] == "state_unavailable" and "state Redis does not answer" in body["error"]["message"]
    assert body["state"]["reachable"] is False
    assert alive_without_redis.status_code == 200  # liveness never asks Redis: an outage restarts no worker
    assert back.status_code == 200 and back.json()["state"]["reachable"] is True


@pytest.fixture
def in_process_worker(tiny_marian_dir, tiny_backend, redis_server):
    """run_worker on a thread around the session's tiny model, its health port on a free port: (port, stop)."""
    port = free_port()
    settings = tiny_settings(tiny_marian_dir, state_url=redis_server.url, worker_health_port=port,
                             jobs_worker_concurrent_chunks=2)
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(settings, Services.from_backend(
        settings, DelegatingBackend(tiny_backend))), kwargs={"stop": stop})
    worker.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if probe.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and worker.is_alive(), "the worker's health port never answered"
                time.sleep(0.05)
            yield probe
    finally:
        stop.set()
        worker.join(timeout=60)


def test_a_dead_queue_thread_fails_liveness_and_readiness(in_process_worker):
    probe = in_process_worker
    threads = [thread for thread in threading.enumerate()
               if isinstance(thread, dramatiq.worker.WorkerThread) and thread.is_alive()]
    assert len(threads) == 2  # jobs_worker_concurrent_chunks
    threads[0].stop()  # dramatiq's own way out of its loop: as if the thread had died
    threads[0].join(timeout=10)
    alive, ready = probe.get("/healthz"), probe.get("/readyz")
    for response in (alive, ready):
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "worker_unhealthy" and "Dramatiq threads have died" in error["message"], error


def test_a_taken_health_port_fails_the_start_with_one_clear_message(tiny_marian_dir, tiny_backend, redis_server):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = tiny_settings(tiny_marian_dir, state_url=redis_server.url, worker_health_port=port)
        services = Services.from_backend(settings, DelegatingBackend(tiny_backend))
        try:
            with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}.*WORKER_HEALTH_PORT"):
                run_worker(settings, services)
        finally:
            asyncio.run(services.close())
    assert not [thread for thread in threading.enumerate() if isinstance(thread, dramatiq.worker.WorkerThread)
                and thread.is_alive()], "the worker joined the queue although its port was taken"
