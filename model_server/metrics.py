"""Prometheus metrics of one app instance (served at GET /metrics).

Each `Metrics` owns its own `CollectorRegistry`, never the global one, so several apps in one process
(tests) do not collide. Producers stay ignorant of Prometheus: the HTTP edge calls `observe_request`,
and the batcher reports through the small observer returned by `batch_observer` (wired in services.py).

Names (all prefixed `model_server_`):
  http_requests_total{method,route,status}            requests by route template (never the raw path)
  http_request_duration_seconds{method,route,status}  latency histogram
  http_requests_in_flight                             requests being served now
  errors_total{code}                                  error responses by error code
  text_errors_total{code}                             per-text errors inside multi-text 200 responses
  queue_depth{model,lane}                             segments waiting in the batch queue (at scrape time)
  queue_wait_seconds{model,lane}                      time a segment waited before its batch ran
  batch_size{model,lane}                              segments per model call
  batch_padded_tokens{model,lane}                     batch size x longest segment, per model call
  batch_inference_seconds{model,lane}                 model time per batch (including split retries)
  cache_hits_total / cache_misses_total / cache_errors_total{model}  translation cache, in segments
  job_worker_errors_total{stage}                      exceptions the job workers caught and logged (model_server.jobs)
  webhook_attempts_total{outcome}                     webhook delivery attempts: delivered | failed | refused
  worker_chunks_total{outcome}                        job chunk messages a `model-server worker` handled: done |
                                                      skipped | retried | failed (model_server/worker.py)

`model-server worker` has a `Metrics` of its own, served on its health port (model_server/worker_health.py):
its batches, queue waits, cache, chunks and webhook attempts; the HTTP families stay empty there.
"""

from __future__ import annotations

from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE  # noqa: F401 - re-exported for the route

PREFIX = "model_server_"
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
QUEUE_WAIT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Label values stay bounded: clients choose the method string, so unknown ones are lumped together.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
PADDED_TOKEN_BUCKETS = (16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # --- HTTP edge ---
        self.http_requests = Counter(PREFIX + "http_requests", "HTTP requests by route template and status",
                                     ["method", "route", "status"], registry=r)
        self.http_duration = Histogram(PREFIX + "http_request_duration_seconds", "HTTP request latency",
                                       ["method", "route", "status"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.http_in_flight = Gauge(PREFIX + "http_requests_in_flight", "HTTP requests being served", registry=r)
        self.errors = Counter(PREFIX + "errors", "error responses by error code", ["code"], registry=r)
        self.text_errors = Counter(PREFIX + "text_errors", "per-text errors inside multi-text responses",
                                   ["code"], registry=r)
        # --- batching (per model and lane) ---
        self.queue_depth = Gauge(PREFIX + "queue_depth", "segments waiting in the batch queue",
                                 ["model", "lane"], registry=r)
        self.queue_wait = Histogram(PREFIX + "queue_wait_seconds", "time a segment waited for its batch",
                                    ["model", "lane"], buckets=QUEUE_WAIT_BUCKETS_S, registry=r)
        self.batch_size = Histogram(PREFIX + "batch_size", "segments per model call", ["model", "lane"],
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_padded_tokens = Histogram(PREFIX + "batch_padded_tokens",
                                             "padded input tokens per model call (size x longest segment)",
                                             ["model", "lane"], buckets=PADDED_TOKEN_BUCKETS, registry=r)
        self.batch_inference = Histogram(PREFIX + "batch_inference_seconds", "model time per batch",
                                         ["model", "lane"], buckets=LATENCY_BUCKETS_S, registry=r)
        # --- later issues add theirs here, on this registry ---
        # --- translation cache (model_server.cache) ---
        self.cache_events = {kind: Counter(PREFIX + f"cache_{kind}", f"translation cache {kind} (segments)",
                                           ["model"], registry=r) for kind in ("hits", "misses", "errors")}
        # quality: model_server_flags_raised_total{flag}
        # --- jobs and webhooks (model_server.jobs, model_server.webhooks) ---
        self.job_worker_errors = Counter(PREFIX + "job_worker_errors", "exceptions caught (and logged) by the job "
                                         "workers, by stage", ["stage"], registry=r)
        self.webhook_attempts = Counter(PREFIX + "webhook_attempts", "webhook delivery attempts by outcome "
                                        "(delivered, failed, refused)", ["outcome"], registry=r)
        # --- job chunks on several machines (model_server/worker.py) ---
        self.worker_chunks = Counter(PREFIX + "worker_chunks", "job chunk messages handled by this worker, by "
                                     "outcome (done, skipped, retried, failed: dead-lettered)", ["outcome"], registry=r)

    # ----- producers -----
    def observe_request(self, *, method: str, route: str, status: int, seconds: float,
                        error_code: str | None = None, text_error_codes: list[str] | None = None) -> None:
        labels = (method if method in HTTP_METHODS else "other", route, str(status))
        self.http_requests.labels(*labels).inc()
        self.http_duration.labels(*labels).observe(seconds)
        if error_code:
            self.errors.labels(error_code).inc()
        for code in text_error_codes or ():
            self.text_errors.labels(code).inc()

    def batch_observer(self, model: str) -> "BatchMetrics":
        return BatchMetrics(self, model)

    def cache_observer(self, model: str) -> Callable[[str, int], None]:
        """A TranslationCache observer: ("hit" | "miss" | "error", count) -> cache_{hits,misses,errors}_total."""
        return lambda kind, count: self.cache_events[kind + ("es" if kind == "miss" else "s")].labels(model).inc(count)

    def webhook_attempts_observer(self) -> Callable[[str], None]:
        """A WebhookSender observer: outcome ("delivered" | "failed" | "refused") -> webhook_attempts_total."""
        return lambda outcome: self.webhook_attempts.labels(outcome).inc()

    def track_queue_depth(self, model: str, lanes: list[Any], pending: Callable[[Any], int]) -> None:
        """Queue depth per lane, read at scrape time from `pending(lane)`."""
        for lane in lanes:
            self.queue_depth.labels(model, _label(lane)).set_function(lambda lane=lane: pending(lane))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class BatchMetrics:
    """A DynamicBatcher observer (see `BatchObserver` in model_server.batching.batcher) for one model."""

    def __init__(self, metrics: Metrics, model: str) -> None:
        self._metrics = metrics
        self._model = model

    def on_batch(self, *, lane: Any, size: int, padded_tokens: int, seconds: float) -> None:
        labels = (self._model, _label(lane))
        self._metrics.batch_size.labels(*labels).observe(size)
        self._metrics.batch_padded_tokens.labels(*labels).observe(padded_tokens)
        self._metrics.batch_inference.labels(*labels).observe(seconds)

    def on_queue_wait(self, *, lane: Any, seconds: float) -> None:
        self._metrics.queue_wait.labels(self._model, _label(lane)).observe(seconds)


def _label(lane: Any) -> str:
    return str(getattr(lane, "value", lane))
