"""Asynchronous translation jobs: accepted (202) now, translated in the `bulk` lane, fetched or delivered
by signed webhook later. Nothing accepted is lost: jobs live in the SQLite file (`cache_path`), and a
starting server re-queues every job that was queued or running when the last one stopped (and re-sends
webhooks not yet delivered).

States: queued -> running -> done | failed. At most `jobs_max_concurrent` jobs run at once; each job's
texts are translated a few at a time so `progress` moves. Webhooks: POST of the job (as GET returns it)
to `callback_url` with `X-Model-Server-Signature: sha256=<hex HMAC-SHA256 of the raw body with
webhook_secret>`; a non-2xx answer or a network error is retried with exponential backoff
(`webhook_backoff_s` x 2^n) up to `webhook_max_attempts` attempts.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from model_server.batching.batcher import Lane
from model_server.documents import DocumentFormat, translate_documents
from model_server.errors import ServiceError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Model-Server-Signature"
TEXTS_PER_STEP = 4
ACTIVE = ("queued", "running")


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class JobStore:
    """Jobs in SQLite (blocking; the manager calls it from threads)."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, "
                "status TEXT NOT NULL, request TEXT NOT NULL, result TEXT, error TEXT, done INTEGER NOT NULL, "
                "total INTEGER NOT NULL, callback_url TEXT, callback_status TEXT, callback_attempts INTEGER "
                "NOT NULL DEFAULT 0, created_at REAL NOT NULL, updated_at REAL NOT NULL)")

    def create(self, request: dict, total: int, callback_url: str | None, idempotency_key: str | None,
               ) -> tuple[dict, bool]:
        """(job, created): an existing job with the same idempotency key is returned, not duplicated."""
        job_id, now = uuid.uuid4().hex, time.time()
        with self._lock:
            try:
                self._db.execute("INSERT INTO jobs (id, idempotency_key, status, request, done, total, callback_url, "
                                 "callback_status, created_at, updated_at) "
                                 "VALUES (?, ?, 'queued', ?, 0, ?, ?, ?, ?, ?)",
                                 (job_id, idempotency_key, json.dumps(request, ensure_ascii=False), total,
                                  callback_url, "pending" if callback_url else None, now, now))
                created = True
            except sqlite3.IntegrityError:
                job_id = self._db.execute("SELECT id FROM jobs WHERE idempotency_key = ?",
                                          (idempotency_key,)).fetchone()[0]
                created = False
        return self.get(job_id), created

    def get(self, job_id: str) -> dict:
        with self._lock:
            self._db.row_factory = sqlite3.Row
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            self._db.row_factory = None
        if row is None:
            raise ServiceError("unknown_job", f"no job {job_id!r}")
        return dict(row)

    def update(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        names = ", ".join(f"{name} = ?" for name in fields)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {names} WHERE id = ?", (*fields.values(), job_id))

    def unfinished(self) -> list[str]:
        """Jobs to resume, oldest first; running ones (interrupted by a stop) go back to queued."""
        with self._lock:
            self._db.execute("UPDATE jobs SET status = 'queued', done = 0 WHERE status = 'running'")
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY created_at")]

    def undelivered(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status IN ('done', 'failed') AND "
                                                    "callback_status = 'pending' ORDER BY created_at")]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def public_view(job: dict) -> dict:
    """A job as GET /v1/jobs/{id} returns it (and the webhook delivers it)."""
    view = {"id": job["id"], "status": job["status"], "progress": {"done": job["done"], "total": job["total"]},
            "created_at": job["created_at"], "updated_at": job["updated_at"],
            "result": json.loads(job["result"]) if job["result"] else None,
            "error": json.loads(job["error"]) if job["error"] else None}
    if job["callback_url"]:
        view["callback"] = {"url": job["callback_url"], "status": job["callback_status"],
                            "attempts": job["callback_attempts"]}
    return view


class JobManager:
    """Workers that run persisted jobs through the translation pipeline (one per allowed concurrent job)."""

    def __init__(self, services, store: JobStore) -> None:
        self.services = services
        self.store = store
        settings = services.settings
        self.concurrency = settings.jobs_max_concurrent
        self.secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        self.max_attempts = settings.webhook_max_attempts
        self.backoff_s = settings.webhook_backoff_s
        self.timeout_s = settings.webhook_timeout_s
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        for job_id in await asyncio.to_thread(self.store.unfinished):
            self._queue.put_nowait(job_id)
        for job_id in await asyncio.to_thread(self.store.undelivered):
            self._spawn(self._deliver(job_id))
        for _ in range(self.concurrency):
            self._spawn(self._worker())

    def _spawn(self, coroutine) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def submit(self, request: dict, total: int, callback_url: str | None,
                     idempotency_key: str | None) -> tuple[dict, bool]:
        if callback_url and not self.secret:
            raise ServiceError("unsupported_option", "callback_url needs a webhook secret on the server "
                               "(MODEL_SERVER_WEBHOOK_SECRET)")
        job, created = await asyncio.to_thread(self.store.create, request, total, callback_url, idempotency_key)
        if created:
            self._queue.put_nowait(job["id"])
        return public_view(job), created

    async def get(self, job_id: str) -> dict:
        return public_view(await asyncio.to_thread(self.store.get, job_id))

    async def _worker(self) -> None:
        while True:
            job_id = await self._queue.get()
            try:
                await self._run(job_id)
            except asyncio.CancelledError:
                raise  # stopping: the job stays 'running' in the store and is re-queued on the next start
            except Exception:  # noqa: BLE001 - a bug in one job never stops the worker
                log.exception("job %s crashed", job_id)
                await asyncio.to_thread(self.store.update, job_id, status="failed", error=json.dumps(
                    {"code": "internal_error", "message": "the job failed; it has been logged"}))
                self._spawn(self._deliver(job_id))

    async def _run(self, job_id: str) -> None:
        job = await asyncio.to_thread(self.store.get, job_id)
        if job["status"] not in ACTIVE:
            return
        await asyncio.to_thread(self.store.update, job_id, status="running", done=0)
        request = json.loads(job["request"])
        glossary = None
        try:
            pipeline = self.services.translator_for(request.get("model"))  # unknown after a restart: job fails
            options = pipeline.options(num_beams=request.get("num_beams"),
                                       max_new_tokens=request.get("max_new_tokens"))
            if request.get("glossary"):
                if self.services.glossaries is None:
                    raise ServiceError("glossaries_unavailable", "the glossary store cannot be opened")
                glossary = await asyncio.to_thread(self.services.glossaries.get, request["glossary"])
            texts = request["texts"]
            results: list[dict] = []
            for start in range(0, len(texts), TEXTS_PER_STEP):
                part, _ = await translate_documents(
                    pipeline, texts[start:start + TEXTS_PER_STEP], options, lane=Lane(request.get("priority", "bulk")),
                    clean=request.get("clean", False), format=DocumentFormat(request.get("format", "text")),
                    glossary=glossary)
                results.extend(r.model_copy(update={"index": start + i}).model_dump(mode="json")
                               for i, r in enumerate(part))
                await asyncio.to_thread(self.store.update, job_id, done=len(results))
        except ServiceError as exc:
            await asyncio.to_thread(self.store.update, job_id, status="failed", error=json.dumps(exc.to_dict()))
        else:
            result = {"results": results, "model": pipeline.backend.info.model_dump(mode="json")}
            await asyncio.to_thread(self.store.update, job_id, status="done",
                                    result=json.dumps(result, ensure_ascii=False))
        self._spawn(self._deliver(job_id))

    async def _deliver(self, job_id: str) -> None:
        """POST the finished job to its callback_url, signed, retrying with exponential backoff."""
        job = await asyncio.to_thread(self.store.get, job_id)
        if not job["callback_url"] or job["callback_status"] != "pending" or not self.secret:
            return
        import httpx

        body = json.dumps(public_view(job), ensure_ascii=False).encode()
        headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(self.secret, body),
                   "X-Model-Server-Job": job_id}
        attempts = job["callback_attempts"]
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            while attempts < self.max_attempts:
                attempts += 1
                try:
                    response = await client.post(job["callback_url"], content=body, headers=headers)
                    ok, why = response.is_success, f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    ok, why = False, f"{type(exc).__name__}: {exc}"
                await asyncio.to_thread(self.store.update, job_id, callback_attempts=attempts,
                                        callback_status="delivered" if ok else "pending")
                if ok:
                    return
                log.warning("webhook for job %s failed (attempt %d/%d): %s", job_id, attempts, self.max_attempts, why)
                if attempts < self.max_attempts:
                    await asyncio.sleep(self.backoff_s * 2 ** (attempts - 1))
        await asyncio.to_thread(self.store.update, job_id, callback_status="failed")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.store.close)


async def start_jobs(services) -> JobManager | None:
    """The app's job manager on `cache_path`, started (queued and interrupted jobs resume), or None
    (logged; job endpoints then answer 503 jobs_unavailable) when the file cannot be opened."""
    try:
        store = await asyncio.to_thread(JobStore, services.settings.cache_file())
    except Exception as exc:  # noqa: BLE001
        log.warning("job store unavailable (%s: %s); /v1/jobs answers 503", type(exc).__name__, exc)
        return None
    manager = JobManager(services, store)
    await manager.start()
    return manager
