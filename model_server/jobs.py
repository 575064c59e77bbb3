"""Asynchronous translation jobs: accepted (202) now, translated in the `bulk` lane, fetched, listed,
cancelled, or delivered by signed webhook (model_server/webhooks.py) later.

States: queued -> running -> done | failed | cancelled, and a finished job -> expired after
`jobs_retention_s` (request and result deleted; the row itself goes after twice that).

- Ownership: every job belongs to the caller that made it: `key:<name>` with auth on, `ip:<address>` when
  it is off. With auth on only the owner sees a job (any other key gets 404 unknown_job: existence is not
  revealed); with auth off the unguessable id is what grants access. Lists are always the caller's own.
- Idempotency: `Idempotency-Key` is unique per owner; a repeat returns the first job if the request is
  the same (by a hash of the stored request and callback URL), else 422 idempotency_mismatch.
- Attempts: each run spends one (`attempts`). Transient errors (queue_full, timeout, shutting_down) put
  the job back in the queue after `jobs_retry_backoff_s` x 2^(n-1); once `jobs_max_attempts` are spent the
  job fails with the last error. A job found 'running' at start-up was running when the process died (a
  crash, kill -9, or a hang): with its attempts spent it fails with `job_interrupted` instead of crashing
  the server forever. A graceful stop gives the interrupted runs their attempt back.
- The workers survive any exception, their error paths included: logged, counted in
  model_server_job_worker_errors_total{stage}.
- Persistence: rows of the SQLite file (`cache_path`); files written by older versions get the new
  columns on open (ALTER TABLE ADD COLUMN).
- Document jobs (a file uploaded to POST /v1/jobs or DeepL /v2/document, model_server/document_jobs.py):
  their texts are the document's pieces, translated like any job's; the record adds `document` (a small
  JSON description: name, kind, size, SHA-256, the settings it was opened with) and keeps the original bytes
  beside it (table `job_documents`; Redis `job:<id>:document`), read only when the translated file is
  downloaded and deleted when the job expires. Beside, not in the request: the workers read the request for
  every run (Redis: for every chunk) and the bytes are needed only at download.

With `state_url` (several machines) `QueuedJobManager` replaces the embedded workers: the same API and
views (`JobViews`), records in Redis (model_server/state/jobs.py), the work split into chunk messages on
Dramatiq (model_server/state/jobs_queue.py) for `model-server worker` (model_server/worker.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable

from model_server.batching.batcher import Lane
from model_server.documents import DocumentFormat, translate_documents
from model_server.errors import ServiceError
from model_server.webhooks import WebhookSender

log = logging.getLogger(__name__)

TEXTS_PER_STEP = 4
FINISHED = ("done", "failed", "cancelled")
TRANSIENT = frozenset({"queue_full", "timeout", "shutting_down"})  # cured by waiting: retried
MAX_PAGE = 100

_CREATE = ("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL, request TEXT NOT NULL, "
           "result TEXT, error TEXT, done INTEGER NOT NULL, total INTEGER NOT NULL, callback_url TEXT, "
           "callback_status TEXT, callback_attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, "
           "updated_at REAL NOT NULL)")
# Columns added since the first version, in order; a file without them gets them by ALTER TABLE. (Files of
# the first version also keep their unused, globally unique `idempotency_key` column; new rows leave it NULL.)
_ADDED_COLUMNS = {
    "owner": "TEXT",                  # key:<name> | ip:<address>; NULL for jobs made before ownership
    "request_key": "TEXT",            # the Idempotency-Key, unique per owner
    "request_hash": "TEXT",           # SHA-256 of the stored request and callback URL
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "finished_at": "REAL",
    "document": "TEXT",               # document jobs: the JSON description of the file (StoredDocument.about)
}
_CREATE_DOCUMENTS = "CREATE TABLE IF NOT EXISTS job_documents (id TEXT PRIMARY KEY, data BLOB NOT NULL)"
_INDEXES = ("CREATE UNIQUE INDEX IF NOT EXISTS jobs_owner_request_key ON jobs (owner, request_key)",
            "CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created_at, id)",
            "CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status)")


@dataclass(frozen=True)
class Caller:
    """Who is asking: jobs are scoped to `owner`; with auth on (`authenticated`) nobody else sees them."""

    owner: str
    authenticated: bool

    def may_see(self, job: dict) -> bool:
        return not self.authenticated or job["owner"] == self.owner


@dataclass(frozen=True)
class StoredDocument:
    """The file of a document job: `about` (JSON-able: filename, kind, bytes, sha256, settings...) goes in the
    job record, `data` (the original bytes) beside it."""

    about: dict
    data: bytes


def request_digest(request: dict, callback_url: str | None) -> str:
    canonical = json.dumps({"request": request, "callback_url": callback_url}, sort_keys=True, ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _unknown(job_id: str) -> ServiceError:
    return ServiceError("unknown_job", f"no job {job_id!r}")


class JobStore:
    """Jobs in SQLite (blocking; the manager calls it from threads). State changes are conditional on the
    current status, so a cancelled job is never turned back into a done or queued one by a late writer."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_CREATE)
            self._db.execute(_CREATE_DOCUMENTS)
            present = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for name, kind in _ADDED_COLUMNS.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
            for statement in _INDEXES:
                self._db.execute(statement)

    # Every statement runs and is read under the lock: one connection serves all threads.
    def _write(self, sql: str, args: tuple = ()) -> int:
        """Run a statement; the number of rows it changed."""
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _ids(self, sql: str, args: tuple = ()) -> list[str]:
        return [row[0] for row in self._rows(sql, args)]

    def create(self, caller: Caller, request: dict, total: int, callback_url: str | None,
               request_key: str | None, *, document: StoredDocument | None = None) -> tuple[dict, bool]:
        """(job, created). A `request_key` this owner already used returns that job when the request is the
        same, else raises idempotency_mismatch. A document job's file is stored in the same transaction."""
        job_id, now, digest = uuid.uuid4().hex, time.time(), request_digest(request, callback_url)
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    self._db.execute(
                        "INSERT INTO jobs (id, owner, request_key, request_hash, status, request, done, total, "
                        "callback_url, callback_status, created_at, updated_at, document) "
                        "VALUES (?, ?, ?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?, ?)",
                        (job_id, caller.owner, request_key, digest, json.dumps(request, ensure_ascii=False), total,
                         callback_url, "pending" if callback_url else None, now, now,
                         json.dumps(document.about, ensure_ascii=False) if document else None))
                    if document is not None:
                        self._db.execute("INSERT INTO job_documents (id, data) VALUES (?, ?)", (job_id, document.data))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.IntegrityError:
            found = self._rows("SELECT id, request_hash FROM jobs WHERE owner = ? AND request_key = ?",
                               (caller.owner, request_key))
            if not found:  # the job holding the key expired meanwhile (its key freed): try again
                return self.create(caller, request, total, callback_url, request_key, document=document)
            existing = found[0]
            if existing["request_hash"] != digest:
                raise ServiceError("idempotency_mismatch", f"Idempotency-Key {request_key!r} was used for another "
                                   "request (its body differs); use a new key for a new request") from None
            return self.get(existing["id"]), False
        return self.get(job_id), True

    def get(self, job_id: str) -> dict:
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise _unknown(job_id)
        return dict(rows[0])

    def get_document(self, job_id: str) -> bytes | None:
        """A document job's original file (None: not a document job, or expired)."""
        rows = self._rows("SELECT data FROM job_documents WHERE id = ?", (job_id,))
        return bytes(rows[0]["data"]) if rows else None

    def page(self, owner: str, limit: int, before: tuple[float, str] | None) -> list[dict]:
        """`owner`'s jobs, newest first, strictly older than `before` (created_at, id)."""
        if before is None:
            rows = self._rows("SELECT * FROM jobs WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                              (owner, limit))
        else:
            rows = self._rows("SELECT * FROM jobs WHERE owner = ? AND (created_at, id) < (?, ?) "
                              "ORDER BY created_at DESC, id DESC LIMIT ?", (owner, *before, limit))
        return [dict(row) for row in rows]

    def _transition(self, job_id: str, from_statuses: tuple[str, ...], **fields: Any) -> bool:
        """Set `fields` only if the job is in one of `from_statuses`; whether it was."""
        fields["updated_at"] = time.time()
        names = ", ".join(f"{name} = ?" for name in fields)
        marks = ", ".join("?" * len(from_statuses))
        return self._write(f"UPDATE jobs SET {names} WHERE id = ? AND status IN ({marks})",
                           (*fields.values(), job_id, *from_statuses)) == 1

    def start(self, job_id: str) -> bool:
        """queued -> running, spending one attempt."""
        return self._write("UPDATE jobs SET status = 'running', done = 0, attempts = attempts + 1, updated_at = ? "
                           "WHERE id = ? AND status = 'queued'", (time.time(), job_id)) == 1

    def progress(self, job_id: str, done: int) -> bool:
        """Record progress; False when the job is no longer running (cancelled meanwhile)."""
        return self._transition(job_id, ("running",), done=done)

    def finish(self, job_id: str, status: str, *, result: dict | None = None, error: dict | None = None) -> bool:
        return self._transition(job_id, ("running",), status=status, finished_at=time.time(),
                                result=json.dumps(result, ensure_ascii=False) if result is not None else None,
                                error=json.dumps(error) if error is not None else None)

    def postpone(self, job_id: str, error: dict) -> bool:
        """running -> queued after a transient failure (the error stays visible until a later run succeeds)."""
        return self._transition(job_id, ("running",), status="queued", done=0, error=json.dumps(error))

    def cancel(self, job_id: str) -> bool:
        """queued | running -> cancelled; its webhook will not be sent."""
        now = time.time()
        return self._write("UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?, callback_status = "
                           "CASE WHEN callback_url IS NULL THEN NULL ELSE 'not_sent' END "
                           "WHERE id = ? AND status IN ('queued', 'running')", (now, now, job_id)) == 1

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """At start-up: (jobs to run, oldest first; jobs just failed). A job still 'running' was interrupted by
        the process ending: with its attempts spent it fails (job_interrupted), otherwise it is re-queued."""
        now = time.time()
        interrupted = self._ids("SELECT id FROM jobs WHERE status = 'running' AND attempts >= ?", (max_attempts,))
        error = json.dumps({"code": "job_interrupted", "message": (
            f"the server stopped while this job was running, {max_attempts} times (it may crash or hang the "
            "server); it is not run again")})
        for job_id in interrupted:
            self._transition(job_id, ("running",), status="failed", error=error, finished_at=now)
        self._write("UPDATE jobs SET status = 'queued', done = 0 WHERE status = 'running'")
        return self._ids("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at"), interrupted

    def requeue(self, job_ids: list[str]) -> None:
        """A graceful stop interrupted these runs: back to queued, the attempt given back."""
        for job_id in job_ids:
            self._write("UPDATE jobs SET status = 'queued', done = 0, attempts = MAX(attempts - 1, 0) "
                        "WHERE id = ? AND status = 'running'", (job_id,))

    def undelivered(self) -> list[str]:
        return self._ids("SELECT id FROM jobs WHERE status IN ('done', 'failed') AND callback_status = 'pending' "
                         "ORDER BY created_at")

    def record_delivery(self, job_id: str, attempts: int, status: str) -> None:
        self._write("UPDATE jobs SET callback_attempts = ?, callback_status = ? WHERE id = ?",
                    (attempts, status, job_id))

    def expire(self, now: float, retention_s: float) -> None:
        """Finished jobs older than the retention lose their request and result (-> expired; the key is freed
        for reuse); expired ones older than twice the retention are deleted."""
        finished = "COALESCE(finished_at, updated_at)"  # rows from before finished_at existed
        marks = ", ".join("?" * len(FINISHED))
        self._write(f"UPDATE jobs SET status = 'expired', request = '', result = NULL, request_key = NULL, "
                    f"finished_at = {finished}, updated_at = ? WHERE status IN ({marks}) AND {finished} < ?",
                    (now, *FINISHED, now - retention_s))
        self._write("DELETE FROM job_documents WHERE id IN (SELECT id FROM jobs WHERE status = 'expired')")
        self._write(f"DELETE FROM jobs WHERE status = 'expired' AND {finished} < ?", (now - 2 * retention_s,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def public_view(job: dict, *, with_result: bool = True) -> dict:
    """A job as GET /v1/jobs/{id} returns it (and the webhook delivers it); lists leave the result out."""
    view = {"id": job["id"], "status": job["status"], "progress": {"done": job["done"], "total": job["total"]},
            "attempts": job["attempts"], "created_at": job["created_at"], "updated_at": job["updated_at"],
            "finished_at": job["finished_at"], "error": json.loads(job["error"]) if job["error"] else None}
    if with_result:
        view["result"] = json.loads(job["result"]) if job["result"] else None
    if job["callback_url"]:
        view["callback"] = {"url": job["callback_url"], "status": job["callback_status"],
                            "attempts": job["callback_attempts"]}
    if job.get("document"):
        about = json.loads(job["document"])
        view["document"] = {"filename": about["filename"], "kind": about["kind"], "bytes": about["bytes"],
                            "download": f"/v1/jobs/{job['id']}/document"}
    return view


def _cursor(job: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps([job["created_at"], job["id"]]).encode()).decode()


def _parse_cursor(cursor: str) -> tuple[float, str]:
    try:
        created_at, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(created_at), str(job_id)
    except (ValueError, TypeError) as exc:  # binascii.Error and JSONDecodeError are ValueErrors
        raise ServiceError("invalid_cursor", "cursor: not a value this server returned as next_cursor") from exc


@dataclass
class JobTranslation:
    """A stored job request made ready to run: its pipeline, decoding options and glossary. Shared by the
    embedded workers (JobManager) and the queue's workers (model_server/worker.py)."""

    request: dict
    pipeline: Any
    options: Any
    glossary: Any

    @classmethod
    async def prepare(cls, services, request: dict) -> "JobTranslation":
        pipeline = services.translator_for(request.get("model"))  # unknown after a restart: the job fails
        options = pipeline.options(num_beams=request.get("num_beams"), max_new_tokens=request.get("max_new_tokens"))
        glossary = None
        if request.get("glossary"):
            if services.glossaries is None:
                raise ServiceError("glossaries_unavailable", "the glossary store cannot be opened")
            glossary = await asyncio.to_thread(services.glossaries.get, request["glossary"])
        return cls(request, pipeline, options, glossary)

    async def translate(self, texts: list[str], start: int) -> list[dict]:
        """Results of `texts` (the job's texts from index `start`) in the job's lane, as JSON dicts."""
        request = self.request
        part, _ = await translate_documents(
            self.pipeline, texts, self.options, lane=Lane(request.get("priority", "bulk")),
            clean=request.get("clean", False), format=DocumentFormat(request.get("format", "text")),
            glossary=self.glossary)
        return [r.model_copy(update={"index": start + i}).model_dump(mode="json") for i, r in enumerate(part)]

    def model_info(self) -> dict:
        return self.pipeline.backend.info.model_dump(mode="json")


class JobViews:
    """What every job manager answers the API the same way, whichever store it reads."""

    store: Any
    webhooks: WebhookSender

    async def check_callback(self, callback_url: str | None) -> None:
        if callback_url:
            if not self.webhooks.secret:
                raise ServiceError("unsupported_option", "callback_url needs a webhook secret on the server "
                                   "(MODEL_SERVER_WEBHOOK_SECRET)")
            await self.webhooks.check(callback_url)  # refused: 400 callback_not_allowed, nothing stored

    async def _visible(self, job_id: str, caller: Caller) -> dict:
        job = await asyncio.to_thread(self.store.get, job_id)
        if not caller.may_see(job):
            raise _unknown(job_id)  # the same answer as for an id never issued
        return job

    async def get(self, job_id: str, caller: Caller) -> dict:
        return public_view(await self._visible(job_id, caller))

    async def visible_document_job(self, job_id: str, caller: Caller) -> tuple[dict, dict]:
        """(job, its document's description) of a document job the caller may see; unknown_job otherwise."""
        job = await self._visible(job_id, caller)
        if not job.get("document"):
            raise ServiceError("unknown_job", f"job {job_id!r} translates texts, not a file: it has no document")
        return job, json.loads(job["document"])

    async def document_source(self, job_id: str, caller: Caller) -> tuple[dict, dict, bytes]:
        """(job, description, original bytes) of a finished document job, to assemble its translated file.
        409 document_not_ready while queued or running; 410 document_unavailable once failed, cancelled or
        expired."""
        job, about = await self.visible_document_job(job_id, caller)
        if job["status"] in ("queued", "running"):
            done, total = job["done"], job["total"]
            raise ServiceError("document_not_ready", f"job {job_id!r} is {job['status']} ({done} of {total} pieces "
                               "translated): download the document once its status is done")
        if job["status"] != "done":
            raise ServiceError("document_unavailable", f"job {job_id!r} is {job['status']}: no translated document "
                               "will come" + (" (its error says why)" if job["status"] == "failed" else ""))
        data = await asyncio.to_thread(self.store.get_document, job_id)
        if data is None:  # a Redis that lost the key (no appendonly across a restart, or evicted under maxmemory)
            raise ServiceError("document_unavailable", f"job {job_id!r} is done but its file is gone from the job "
                               "store: upload it again")
        return job, about, data

    async def list_jobs(self, caller: Caller, *, limit: int, cursor: str | None) -> dict:
        before = _parse_cursor(cursor) if cursor else None
        jobs = await asyncio.to_thread(self.store.page, caller.owner, limit + 1, before)
        more = len(jobs) > limit
        return {"jobs": [public_view(job, with_result=False) for job in jobs[:limit]],
                "next_cursor": _cursor(jobs[limit - 1]) if more else None}


class JobManager(JobViews):
    """Workers that run persisted jobs through the translation pipeline (one per allowed concurrent job)."""

    def __init__(self, services, store: JobStore, *, metrics=None, webhooks: WebhookSender | None = None) -> None:
        self.services = services
        self.store = store
        self.metrics = metrics
        settings = services.settings
        self.concurrency = settings.jobs_max_concurrent
        self.max_attempts = settings.jobs_max_attempts
        self.retry_backoff_s = settings.jobs_retry_backoff_s
        self.retention_s = settings.jobs_retention_s
        observe = metrics.webhook_attempts_observer() if metrics is not None else None
        self.webhooks = webhooks or WebhookSender.from_settings(settings, observe=observe)
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        self._running: dict[str, asyncio.Task] = {}  # job id -> the task translating it

    async def start(self) -> None:
        queued, interrupted = await asyncio.to_thread(self.store.recover, self.max_attempts)
        for job_id in interrupted:
            log.error("job %s failed: the server stopped while it ran %d times (job_interrupted)", job_id,
                      self.max_attempts)
        for job_id in queued:
            self._queue.put_nowait(job_id)
        for job_id in await asyncio.to_thread(self.store.undelivered):
            self._background(self._deliver(job_id), "deliver", job_id)
        for _ in range(self.concurrency):
            self._spawn(self._worker())
        self._spawn(self._sweep_forever())

    def _spawn(self, coroutine: Awaitable) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _background(self, coroutine: Awaitable, stage: str, job_id: str | None = None) -> None:
        """Run `coroutine` on its own; an exception is logged and counted, never lost."""
        async def guarded() -> None:
            try:
                await coroutine
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                self._worker_error(stage, job_id)

        self._spawn(guarded())

    def _worker_error(self, stage: str, job_id: str | None) -> None:
        log.exception("job worker error (%s, job %s)", stage, job_id)
        if self.metrics is not None:
            self.metrics.job_worker_errors.labels(stage).inc()

    # ----- the API's side -----
    async def submit(self, caller: Caller, request: dict, total: int, callback_url: str | None,
                     idempotency_key: str | None, *, document: StoredDocument | None = None) -> tuple[dict, bool]:
        await self.check_callback(callback_url)
        job, created = await asyncio.to_thread(self.store.create, caller, request, total, callback_url,
                                               idempotency_key, document=document)
        if created:
            self._queue.put_nowait(job["id"])
        return public_view(job), created

    async def cancel(self, job_id: str, caller: Caller) -> dict:
        """Cancel a queued or running job (a running one stops now: its queued segments are dropped). A
        finished job is returned unchanged."""
        await self._visible(job_id, caller)
        if await asyncio.to_thread(self.store.cancel, job_id):
            run = self._running.get(job_id)
            if run is not None:
                run.cancel()
        return public_view(await asyncio.to_thread(self.store.get, job_id))

    # ----- workers -----
    async def _worker(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._process(job_id)
            except asyncio.CancelledError:
                raise  # stopping: close() re-queues the interrupted job
            except Exception:  # noqa: BLE001 - even a failing error path never stops the worker
                self._worker_error("process", job_id)

    async def _process(self, job_id: str) -> None:
        if not await asyncio.to_thread(self.store.start, job_id):
            return  # cancelled (or unknown) while it waited
        run = self._spawn(self._run(job_id))
        self._running[job_id] = run
        try:
            await asyncio.wait({run})
        except asyncio.CancelledError:
            run.cancel()
            raise
        finally:
            self._running.pop(job_id, None)
        if run.cancelled():
            return  # DELETE /v1/jobs/{id}: already 'cancelled' in the store
        try:
            result = run.result()
        except ServiceError as exc:
            await self._failed(job_id, exc)
        except Exception:  # noqa: BLE001 - a bug in one job: that job fails, the worker goes on
            self._worker_error("run", job_id)
            await self._finish(job_id, "failed", error={"code": "internal_error",
                                                        "message": "the job failed; it has been logged"})
        else:
            await self._finish(job_id, "done", result=result)

    async def _run(self, job_id: str) -> dict:
        """Translate the job, a few texts at a time; its result, or ServiceError."""
        job = await asyncio.to_thread(self.store.get, job_id)
        request = json.loads(job["request"])
        run = await JobTranslation.prepare(self.services, request)
        texts = request["texts"]
        results: list[dict] = []
        for start in range(0, len(texts), TEXTS_PER_STEP):
            part = await run.translate(texts[start:start + TEXTS_PER_STEP], start)
            transient = next((r["error"] for r in part if r.get("error") and r["error"]["code"] in TRANSIENT), None)
            if transient is not None:  # e.g. the batcher shut down under this text: retry the job, not a partial result
                raise ServiceError(transient["code"], transient["message"])
            results.extend(part)
            if not await asyncio.to_thread(self.store.progress, job_id, len(results)):
                raise asyncio.CancelledError  # cancelled between two steps
        return {"results": results, "model": run.model_info()}

    async def _failed(self, job_id: str, exc: ServiceError) -> None:
        """A transient failure with attempts left goes back to the queue after a backoff; otherwise the job fails."""
        attempts = (await asyncio.to_thread(self.store.get, job_id))["attempts"]
        error = exc.to_dict()
        if exc.code in TRANSIENT:
            if attempts < self.max_attempts:
                if await asyncio.to_thread(self.store.postpone, job_id, error):
                    delay_s = self.retry_backoff_s * 2 ** (attempts - 1)
                    log.warning("job %s: %s (attempt %d/%d); retrying in %.1fs", job_id, exc.code, attempts,
                                self.max_attempts, delay_s)
                    self._background(self._requeue_after(job_id, delay_s), "retry", job_id)
                return
            error["message"] += f" (gave up after {attempts} attempts)"
        await self._finish(job_id, "failed", error=error)

    async def _requeue_after(self, job_id: str, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self._queue.put_nowait(job_id)

    async def _finish(self, job_id: str, status: str, **outcome: Any) -> None:
        if await asyncio.to_thread(self.store.finish, job_id, status, **outcome):
            self._background(self._deliver(job_id), "deliver", job_id)

    async def _deliver(self, job_id: str) -> None:
        """POST the finished job to its callback_url (model_server/webhooks.py: checked, signed, retried)."""
        job = await asyncio.to_thread(self.store.get, job_id)
        if not job["callback_url"] or job["callback_status"] != "pending" or not self.webhooks.secret:
            return
        body = json.dumps(public_view(job), ensure_ascii=False).encode()

        async def record(attempts: int, ok: bool) -> None:
            await asyncio.to_thread(self.store.record_delivery, job_id, attempts, "delivered" if ok else "pending")

        delivered = await self.webhooks.deliver(job["callback_url"], body, headers={"X-Model-Server-Job": job_id},
                                                attempts_done=job["callback_attempts"], on_attempt=record)
        if not delivered:
            await asyncio.to_thread(self.store.record_delivery, job_id, self.webhooks.max_attempts, "failed")

    async def _sweep_forever(self) -> None:
        """Retention: expire (and later delete) finished jobs, a few times per retention period."""
        interval_s = min(max(self.retention_s / 4, 0.05), 300.0)
        while True:
            try:
                await asyncio.to_thread(self.store.expire, time.time(), self.retention_s)
            except Exception:  # noqa: BLE001 - e.g. a locked file: try again next round
                self._worker_error("retention", None)
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        interrupted = list(self._running)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.store.requeue, interrupted)  # a graceful stop spends no attempt
        await self.webhooks.close()
        await asyncio.to_thread(self.store.close)


class QueuedJobManager(JobViews):
    """Jobs of several machines (`state_url`): records in Redis (model_server/state/jobs.py), work as chunk
    messages on Dramatiq (model_server/state/jobs_queue.py) that `model-server worker` processes. This side
    only stores, enqueues, reads and cancels; any replica answers for any job."""

    def __init__(self, services, store, queue, *, metrics=None, webhooks: WebhookSender | None = None) -> None:
        self.services = services
        self.store = store
        self.queue = queue
        self.metrics = metrics
        self.retention_s = services.settings.jobs_retention_s
        observe = metrics.webhook_attempts_observer() if metrics is not None else None
        self.webhooks = webhooks or WebhookSender.from_settings(services.settings, observe=observe)
        self._sweeper: asyncio.Task | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.ensure_future(self._sweep_forever())

    async def submit(self, caller: Caller, request: dict, total: int, callback_url: str | None,
                     idempotency_key: str | None, *, document: StoredDocument | None = None) -> tuple[dict, bool]:
        await self.check_callback(callback_url)
        count, size = self.queue.split(total)
        job, created = await asyncio.to_thread(self.store.create, caller, request, total, callback_url,
                                               idempotency_key, chunks=count, chunk_texts=size, document=document)
        if created or (job["status"] == "queued" and not job["enqueued"]):
            # A replay of a job whose sending failed (Redis went away in between: the client got a 503 and
            # retried with its Idempotency-Key) sends them now; a chunk sent twice is still written once.
            # A document job's file is written first (again, on a replay: the same bytes, by the digest).
            if document is not None:
                await asyncio.to_thread(self.store.put_document, job["id"], document.data)
            await asyncio.to_thread(self.queue.send_chunks, job["id"], job["chunks"])
            await asyncio.to_thread(self.store.mark_enqueued, job["id"])
        return public_view(job), created

    async def cancel(self, job_id: str, caller: Caller) -> dict:
        """Cancel a queued or running job: chunks not yet translated are skipped by the workers, chunks
        being translated are not written; no webhook. A finished job is returned unchanged."""
        await self._visible(job_id, caller)
        await asyncio.to_thread(self.store.cancel, job_id)
        return public_view(await asyncio.to_thread(self.store.get, job_id))

    async def _sweep_forever(self) -> None:
        """Retention, as the embedded manager's (any replica may sweep: expiring twice changes nothing)."""
        interval_s = min(max(self.retention_s / 4, 0.05), 300.0)
        while True:
            try:
                await asyncio.to_thread(self.store.expire, time.time(), self.retention_s)
            except Exception:  # noqa: BLE001 - e.g. Redis away: try again next round
                log.warning("job retention sweep failed; retrying in %.0fs", interval_s, exc_info=True)
                if self.metrics is not None:
                    self.metrics.job_worker_errors.labels("retention").inc()
            await asyncio.sleep(interval_s)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await self.webhooks.close()
        await asyncio.to_thread(self.queue.close)
        await asyncio.to_thread(self.store.close)


async def start_jobs(services, metrics=None) -> JobManager | QueuedJobManager | None:
    """The app's job manager, started: with `state_url` records in Redis and work on the queue (no model work
    in this process); otherwise on `cache_path`, where queued and interrupted jobs resume. None (logged; job
    endpoints then answer 503 jobs_unavailable) when the SQLite file cannot be opened."""
    settings = services.settings
    if settings.state_url:
        from model_server.state.jobs import RedisJobStore
        from model_server.state.jobs_queue import JobQueue

        queued = QueuedJobManager(services, RedisJobStore(settings.state_url, settings.state_timeout_s),
                                  JobQueue(settings), metrics=metrics)
        await queued.start()  # connects lazily: a Redis down at start-up is a 503 per request, not a crash
        return queued
    try:
        store = await asyncio.to_thread(JobStore, settings.cache_file())
    except Exception as exc:  # noqa: BLE001
        log.warning("job store unavailable (%s: %s); /v1/jobs answers 503", type(exc).__name__, exc)
        return None
    manager = JobManager(services, store, metrics=metrics)
    await manager.start()
    return manager
