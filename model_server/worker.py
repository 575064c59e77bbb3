"""`model-server worker`: loads the translation models and consumes job chunks from the queue (`state_url`).

Processes of several machines: `model-server serve` with `state_url` is an API replica (it loads its models
and answers interactive requests itself; jobs it only stores and enqueues), `model-server worker` runs the
jobs. Both may be scaled independently; every worker consumes every job's chunks.

A chunk (model_server/state/jobs_queue.py) runs through this worker's own `Services`: one event loop thread
holds the pipelines and their dynamic batchers, and each of the `jobs_worker_concurrent_chunks` Dramatiq
threads hands its chunk to that loop, so the chunks of many jobs meet in the same bulk-lane batches.

Per chunk: count the try in the job record (`start_chunk`; a cancelled or finished job is skipped);
translate; a text failing with a retryable code (queue_full, timeout, shutting_down, inference_failed),
or the chunk raising, is tried again (`TryAgain`, backoff from jobs_retry_backoff_s) until jobs_max_attempts
tries are spent; the last try stores what it has, per-text errors included, marks the chunk failed and sends
the message to the dead-letter queue (`GaveUp`). The result is written set-if-absent per chunk index, so a
redelivered chunk (its worker died after writing) never duplicates output. The chunk that completes the set
assembles the result, finishes the job (done, or failed naming how many texts failed) and sends one webhook
message; the webhook actor delivers it once per job (a lease per job, the delivery record's status and
attempts, one POST per try with backoff, dead letter after webhook_max_attempts).

Redis going away mid-chunk: every state command is retried for up to `STATE_OUTAGE_WAIT_S` before the
message is given up, so a restarted Redis (appendonly) loses no job.
SIGTERM/SIGINT: the chunks in progress finish (up to request_timeout_s), prefetched ones are handed back to
the queue, then the models close. kill -9: the broker requeues this worker's chunks after
jobs_worker_heartbeat_timeout_s.

Health and metrics: /healthz, /readyz and /metrics on `worker_health_port` (model_server/worker_health.py).
Every chunk message counts in model_server_worker_chunks_total{outcome}: done (stored, no failure), skipped
(cancelled or finished meanwhile), retried (TryAgain), failed (out of tries or raising: dead-lettered).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from typing import Any, Callable, Coroutine

from model_server.errors import ServiceError
from model_server.jobs import TRANSIENT, JobTranslation, public_view
from model_server.metrics import Metrics
from model_server.state.jobs import RedisJobStore
from model_server.state.jobs_queue import GaveUp, JobQueue, TryAgain
from model_server.webhooks import WebhookSender
from model_server.worker_health import WorkerProbes, open_listener

log = logging.getLogger(__name__)

RETRYABLE = TRANSIENT | {"inference_failed"}  # a model failure may be this worker's (device, memory): try again
STATE_OUTAGE_WAIT_S = 60.0


def patiently(call: Callable, *args, **kwargs) -> Any:
    """`call(*args, **kwargs)`, retried while the state Redis is unreachable (state_unavailable), for up to
    STATE_OUTAGE_WAIT_S."""
    deadline, pause_s = time.monotonic() + STATE_OUTAGE_WAIT_S, 0.1
    while True:
        try:
            return call(*args, **kwargs)
        except ServiceError as exc:
            if exc.code != "state_unavailable" or time.monotonic() > deadline:
                raise
            log.warning("state Redis unreachable; retrying in %.1fs", pause_s)
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 2.0)


def _failed_results(texts: list[str], start: int, error: dict) -> list[dict]:
    return [{"index": start + i, "error": error} for i in range(len(texts))]


class ChunkWorker:
    """The handlers of one worker process, around its loaded `services` (started on a loop thread here)."""

    def __init__(self, settings, services) -> None:
        self.settings = settings
        self.services = services
        self.max_attempts = settings.jobs_max_attempts
        self.metrics = Metrics()
        services.instrument(self.metrics)  # before start: the batchers report to this worker's /metrics
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="worker-loop", daemon=True)
        self._thread.start()
        self._on_loop(self._start())
        self.store = RedisJobStore(settings.state_url, settings.state_timeout_s)
        self.queue = JobQueue(settings, handlers={"chunk": self.chunk, "webhook": self.webhook})
        self.webhooks = WebhookSender.from_settings(settings, observe=self.metrics.webhook_attempts_observer())

    async def _start(self) -> None:
        self.services.start()

    def _on_loop(self, coroutine: Coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    # ----- chunks -----
    def chunk(self, job_id: str, index: int) -> None:
        """The chunk actor: `_chunk`, its outcome counted."""
        try:
            outcome = self._chunk(job_id, index)
        except TryAgain:
            self.metrics.worker_chunks.labels("retried").inc()
            raise
        except Exception:  # GaveUp, or anything else: either way the broker dead-letters the message
            self.metrics.worker_chunks.labels("failed").inc()
            raise
        self.metrics.worker_chunks.labels(outcome).inc()

    def _chunk(self, job_id: str, index: int) -> str:
        """"done" or "skipped"; raises TryAgain for another try, GaveUp after the last."""
        tries = patiently(self.store.start_chunk, job_id, index)
        if tries < 0:
            return "skipped"  # cancelled, finished or expired meanwhile
        job = patiently(self.store.get, job_id)
        request = json.loads(job["request"])
        start = index * job["chunk_texts"]  # as the submitting replica split it
        texts = request["texts"][start:start + job["chunk_texts"]]
        if tries > self.max_attempts:
            # Every earlier try ended with its worker (killed, out of memory, a crash in native code): running
            # it again would take down one worker after another, so its texts fail instead.
            failure = {"code": "job_interrupted", "message": f"the worker stopped during each of the chunk's "
                       f"{self.max_attempts} tries; it is not run again"}
            results, model = _failed_results(texts, start, failure), None
        else:
            results, model, failure = self._on_loop(self._translate(request, texts, start))
        if failure is not None and failure["code"] in RETRYABLE and tries < self.max_attempts:
            log.warning("job %s chunk %d: %s (try %d/%d); trying again", job_id, index, failure["code"], tries,
                        self.max_attempts)
            raise TryAgain(failure["message"])
        chunk = {"results": results, "model": model, "error": failure}
        stored = patiently(self.store.store_chunk, job_id, index, chunk, len(texts))
        if stored >= job["chunks"] or stored < 0:  # complete (maybe again, redelivered), or finished meanwhile
            self._complete(job_id)
        if failure is not None:
            raise GaveUp(f"job {job_id} chunk {index}: {failure['code']} after {tries} tries")
        return "done"

    async def _translate(self, request: dict, texts: list[str], start: int) -> tuple[list[dict], dict | None,
                                                                                     dict | None]:
        """(results, model info, the failure that makes the chunk worth another try or a dead letter)."""
        try:
            run = await JobTranslation.prepare(self.services, request)
            results = await run.translate(texts, start)
        except ServiceError as exc:  # the whole chunk: timeout, queue_full, unknown_model, unknown_glossary...
            return _failed_results(texts, start, exc.to_dict()), None, exc.to_dict()
        except Exception:  # noqa: BLE001 - a bug in one chunk: logged, tried again, then dead-lettered
            log.exception("chunk of %d texts from %d failed", len(texts), start)
            error = {"code": "internal_error", "message": "the chunk failed; it has been logged"}
            return _failed_results(texts, start, error), None, error
        failure = next((r["error"] for r in results if r.get("error") and r["error"]["code"] in RETRYABLE), None)
        return results, run.model_info(), failure

    def _complete(self, job_id: str) -> None:
        """All chunks stored: assemble, finish (once: a conditional transition) and send the webhook."""
        job = patiently(self.store.get, job_id)
        if job["status"] == "running":
            chunks = patiently(self.store.chunks, job_id)
            results = [result for chunk in chunks for result in chunk["results"]]
            model = next((chunk["model"] for chunk in chunks if chunk["model"]), None)
            failures = [chunk["error"] for chunk in chunks if chunk["error"]]
            error = None
            if failures:
                bad = sum(1 for result in results if result.get("error"))
                error = {"code": failures[0]["code"], "message": (
                    f"{bad} of {len(results)} texts failed after {self.max_attempts} tries (per-text errors in "
                    f"result; the others are translated): {failures[0]['message']}")}
            if patiently(self.store.finish, job_id, "failed" if failures else "done",
                         result={"results": results, "model": model}, error=error):
                log.info("job %s %s", job_id, "failed" if failures else "done")
            job = patiently(self.store.get, job_id)
        if job["status"] in ("done", "failed") and job["callback_status"] == "pending":
            patiently(self.queue.send_webhook, job_id)

    # ----- webhooks -----
    def webhook(self, job_id: str) -> None:
        job = patiently(self.store.get, job_id)
        if not job["callback_url"] or job["callback_status"] != "pending":
            return
        if not self.webhooks.secret:  # the API replica that accepted the callback had one: a configuration slip
            patiently(self.store.record_delivery, job_id, job["callback_attempts"], "failed")
            raise GaveUp(f"webhook of job {job_id}: this worker has no MODEL_SERVER_WEBHOOK_SECRET to sign it")
        if not patiently(self.store.claim_delivery, job_id, self.webhooks.timeout_s * 2):
            raise TryAgain(f"job {job_id}: another delivery is in progress")
        try:
            job = patiently(self.store.get, job_id)  # under the lease: the record is current
            if job["callback_status"] != "pending":
                return
            attempt = job["callback_attempts"] + 1
            body = json.dumps(public_view(job), ensure_ascii=False).encode()
            why = self._on_loop(self.webhooks.attempt(job["callback_url"], body, {"X-Model-Server-Job": job_id}))
            if why is None:
                patiently(self.store.record_delivery, job_id, attempt, "delivered")
                return
            log.warning("webhook of job %s failed (attempt %d/%d): %s", job_id, attempt, self.webhooks.max_attempts,
                        why)
            if attempt < self.webhooks.max_attempts:
                patiently(self.store.record_delivery, job_id, attempt, "pending")
                raise TryAgain(why)
            patiently(self.store.record_delivery, job_id, attempt, "failed")
            raise GaveUp(f"webhook of job {job_id}: {why} after {attempt} attempts")
        finally:
            patiently(self.store.release_delivery, job_id)

    def close(self) -> None:
        async def closing() -> None:
            await self.webhooks.close()
            await self.services.close(drain_timeout_s=self.settings.request_timeout_s)

        self._on_loop(closing())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.queue.close()
        self.store.close()


def run_worker(settings, services, *, stop: threading.Event | None = None) -> int:
    """Consume until SIGTERM/SIGINT (or `stop`): chunks in progress finish, prefetched ones go back."""
    assert settings.state_url, "the CLI refuses a worker without state_url"
    stop = stop or threading.Event()
    listener = open_listener(settings)  # bound first: a port in use fails before the worker joins the queue
    try:
        _consume(settings, services, stop, listener)
    finally:
        if listener is not None:
            listener.close()
    log.info("worker stopped")
    return 0


def _consume(settings, services, stop: threading.Event, listener) -> None:
    import dramatiq

    runtime = ChunkWorker(settings, services)
    threads = settings.jobs_worker_concurrent_chunks
    heartbeat_ms = int(settings.jobs_worker_heartbeat_timeout_s * 1000)
    # Polls (each one a heartbeat) at least 4 times per heartbeat timeout; prefetch no more than it can run,
    # so an idle worker next to a busy one gets the next chunk.
    worker = dramatiq.Worker(runtime.queue.broker, worker_threads=threads, worker_timeout=min(1000, heartbeat_ms // 4))
    worker.queue_prefetch = threads
    if threading.current_thread() is threading.main_thread():  # the CLI; tests run it in a thread with `stop`
        for name in (signal.SIGTERM, signal.SIGINT):
            signal.signal(name, lambda signum, frame: stop.set())
    worker.start()
    if listener is not None:
        listener.serve(WorkerProbes(runtime, worker, stop).routes(runtime.metrics))
    log.info("worker ready: %d chunks at a time, heartbeat timeout %gs", threads,
             settings.jobs_worker_heartbeat_timeout_s)
    try:
        while not stop.wait(0.1):  # a signal handler only sets the event; this (main) thread stops the worker
            pass
        log.info("worker stopping: finishing the chunks in progress")
        worker.stop(timeout=int(settings.request_timeout_s * 1000))
    finally:
        runtime.close()
