"""The health port of `model-server worker` (`worker_health_port`, on `host`): /healthz, /readyz, /metrics.

A worker serves no API, but Kubernetes and compose still need to know whether it lives and whether it can
work (deploy/kubernetes/worker.yaml, deploy/compose.yaml):

- `/healthz` (liveness): 200 while the process can work: the event loop that holds the models answers
  within `LOOP_ANSWER_S` and every Dramatiq consumer and worker thread is alive; else 503
  `worker_unhealthy` naming what is stuck or dead, and the orchestrator restarts the process. It never
  asks Redis: a Redis outage is not cured by restarting every worker (each then reloads its models).
- `/readyz` (readiness): 200 when the worker is alive, its models are loaded (their batchers running) and
  the state Redis, which holds the queue, answers a PING within `state_timeout_s`; else 503 with the one
  error shape: `not_ready` (stopping, models not running), `worker_unhealthy`, or `state_unavailable`, plus
  `state` as the API's /readyz reports it. No Service sends a worker traffic, so unlike the API's /readyz
  (which stays 200 "degraded" during a Redis outage) being unready costs nothing but holding a rolling
  update, which is what should happen while the new workers cannot reach their queue.
- `/metrics`: this worker's Prometheus registry (model_server/metrics.py): batches, queue waits and cache
  of its models, chunks by outcome, webhook attempts. The port carries no API, so no API key is asked
  (`metrics_require_key` is about the API's port); do not publish it outside the cluster.

After SIGTERM `/healthz` stays 200 (`"stopping": true`: draining chunks is the process doing its job) and
`/readyz` is 503 `not_ready`. The listener is the standard library's threaded HTTP server on a daemon
thread: three GET routes need no framework, it shares no event loop with the models (so a busy or stuck
loop is measured, not suffered), and it takes no signal handlers from the main thread. It binds before the
worker joins the queue, so a port in use fails the start with one clear line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Callable

from model_server.errors import ServiceError
from model_server.metrics import CONTENT_TYPE, Metrics
from model_server.state.redis_client import reachable

if TYPE_CHECKING:
    import dramatiq

    from model_server.worker import ChunkWorker

log = logging.getLogger(__name__)

LOOP_ANSWER_S = 2.0  # a loop that cannot run a no-op this fast is stuck (the model calls run off it)
JSON = "application/json"

Route = Callable[[], tuple[int, bytes, str]]  # () -> (status, body, content type)


def _error(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message}, **extra}


class WorkerProbes:
    """The answers of the probes, read from the running parts of one worker process."""

    def __init__(self, runtime: "ChunkWorker", consumer: "dramatiq.Worker", stop: threading.Event) -> None:
        self.runtime = runtime
        self.consumer = consumer
        self.stop = stop

    def problems(self) -> list[str]:
        """What keeps this process from working: a stuck or stopped model loop, dead Dramatiq threads."""
        found = []
        loop = self.runtime.loop
        if not loop.is_running():
            found.append("the model event loop is not running")
        else:
            answered = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop)
            try:
                answered.result(timeout=LOOP_ANSWER_S)
            except TimeoutError:
                answered.cancel()
                found.append(f"the model event loop did not answer within {LOOP_ANSWER_S:g}s")
        threads = [*self.consumer.consumers.values(), *self.consumer.workers]
        dead = [thread.name for thread in threads if not thread.is_alive()]
        if dead:
            found.append(f"{len(dead)} of {len(threads)} Dramatiq threads have died ({', '.join(dead)})")
        return found

    def liveness(self) -> tuple[int, dict]:
        if self.stop.is_set():
            return 200, {"status": "ok", "stopping": True}
        problems = self.problems()
        if problems:
            return 503, _error("worker_unhealthy", "; ".join(problems))
        return 200, {"status": "ok"}

    def readiness(self) -> tuple[int, dict]:
        if self.stop.is_set():
            return 503, _error("not_ready", "the worker is stopping: it finishes its chunks and takes no more")
        if not self.runtime.services.ready:
            return 503, _error("not_ready", "the models are not running (starting or closing)")
        problems = self.problems()
        if problems:
            return 503, _error("worker_unhealthy", "; ".join(problems))
        try:
            with reachable("job queue"):
                self.runtime.queue.client.ping()
        except ServiceError as exc:
            return 503, _error(exc.code, exc.message, state={"store": "redis", "reachable": False,
                                                               "error": exc.message})
        return 200, {"status": "ready", "state": {"store": "redis", "reachable": True}}

    def routes(self, metrics: Metrics) -> dict[str, Route]:
        return {"/healthz": _as_json(self.liveness), "/readyz": _as_json(self.readiness),
                "/metrics": lambda: (200, metrics.render(), CONTENT_TYPE)}


def _as_json(probe: Callable[[], tuple[int, dict]]) -> Route:
    def answer() -> tuple[int, bytes, str]:
        status, body = probe()
        return status, json.dumps(body).encode(), JSON
    return answer


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        route = self.server.routes.get(self.path.split("?", 1)[0])
        try:
            status, body, content_type = route() if route else (
                404, json.dumps(_error("not_found", "the worker serves /healthz, /readyz and /metrics")).encode(),
                JSON)
        except Exception:  # noqa: BLE001 - a bug in a probe: logged, answered 500, the listener lives on
            log.exception("worker health route %s failed", self.path)
            status, body, content_type = 500, json.dumps(_error("internal_error", "logged")).encode(), JSON
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        log.debug("health %s", format % args)  # probes every few seconds: not worth an info line each


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a probe's thread never holds the process up
    routes: dict[str, Route]  # set by HealthListener


class HealthListener:
    """The bound port; `serve(routes)` starts answering on a daemon thread, `close()` stops."""

    def __init__(self, host: str, port: int) -> None:
        try:
            self._server = _Server((host, port), _Handler)
        except OSError as exc:
            raise ValueError(f"worker_health_port: cannot listen on {host}:{port} ({exc.strerror or exc}); choose "
                             "another MODEL_SERVER_WORKER_HEALTH_PORT, or 0 to turn the health port off") from None
        self._server.routes = {}  # until serve(): every path 404
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def serve(self, routes: dict[str, Route]) -> None:
        self._server.routes = routes
        self._thread = threading.Thread(target=self._server.serve_forever, name="worker-health", daemon=True)
        self._thread.start()
        log.info("worker health port %d: /healthz, /readyz, /metrics", self.port)

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


def open_listener(settings) -> HealthListener | None:
    """The worker's health port, bound now (None when worker_health_port is 0)."""
    if not settings.worker_health_port:
        return None
    return HealthListener(settings.host, settings.worker_health_port)
