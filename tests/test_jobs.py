"""Asynchronous jobs (/v1/jobs, model_server/jobs.py) on real servers on loopback with the tiny model:
lifecycle, idempotency per owner, isolation between API keys, listing, cancelling, surviving a restart,
poison jobs, transient retries, workers that survive their own error paths, retention, and opening a job file
written by the first version. Webhooks: tests/test_webhooks.py."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time

import httpx
import pytest

from model_server.batching.batcher import Lane
from model_server.jobs import Caller, JobManager, JobStore
from model_server.metrics import Metrics
from model_server.services import Services
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import (SAMPLE_AR, assert_error, free_port, run_with, serve_services, start_cli_server,
                            tiny_settings, wait_ready)
from tests.fakes import DelegatingBackend, GatedBackend
from tests.test_api_lifecycle import post_in_thread

MEMORISED = dict(MEMORISED_PAIRS)
ALLIANCE = "تحالف عسكري بين خليفة حفتر وروسيا"
LOCAL = Caller(owner="ip:127.0.0.1", authenticated=False)


def wait_for_job(client, job_id, timeout_s=60, statuses=("done", "failed"), **kwargs):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", **kwargs).json()
        if job.get("status") in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job}")


def wait_until(predicate, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def services_around(tiny_marian_dir, backend, tmp_path, **overrides) -> Services:
    """Services on the session's tiny backend (wrapped: a server's shutdown must not close it)."""
    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "state.sqlite3", **overrides)
    return Services.from_backend(settings, backend)


def test_job_lifecycle_idempotency_per_client_and_listing(tiny_marian_dir, tiny_backend, tmp_path):
    texts = ["مرحبا بالعالم.", "   ", "شكرا جزيلا.", "الطقس جميل اليوم.", "اتفاق دفاعي بين الطرفين"]
    services = services_around(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path)
    other_address = httpx.HTTPTransport(local_address="127.0.0.2")  # another client, as the server sees it
    with serve_services(services) as server, server.client() as client, \
            server.client(transport=other_address) as other:
        accepted = client.post("/v1/jobs", json={"texts": texts}, headers={"Idempotency-Key": "cms-42"})
        assert accepted.status_code == 202, accepted.text
        job = accepted.json()
        assert job["status"] in ("queued", "running") and job["progress"]["total"] == 5
        assert accepted.headers["location"] == f"/v1/jobs/{job['id']}"
        replay = client.post("/v1/jobs", json={"texts": texts}, headers={"Idempotency-Key": "cms-42"})
        mismatch = client.post("/v1/jobs", json={"texts": texts[:2]}, headers={"Idempotency-Key": "cms-42"})
        theirs = other.post("/v1/jobs", json={"text": "شكرا جزيلا."}, headers={"Idempotency-Key": "cms-42"})
        done = wait_for_job(client, job["id"])
        later = [client.post("/v1/jobs", json={"text": text}).json()["id"] for text in [*texts[2:], ALLIANCE]]
        pages, cursor = [], None
        while True:
            page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            pages.append(page["jobs"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        their_list = other.get("/v1/jobs").json()
        bad_cursor = client.get("/v1/jobs", params={"cursor": "not-a-cursor"})
        too_many = client.get("/v1/jobs", params={"limit": 101})
        missing = client.get("/v1/jobs/nope")
        no_secret = client.post("/v1/jobs", json={"text": "مرحبا", "callback_url": "https://cms.example/x"})
    assert done["status"] == "done" and done["progress"] == {"done": 5, "total": 5} and done["attempts"] == 1
    results = done["result"]["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["translation"] for r in results] == ["Hello world.", None, "Thank you very much.",
                                                   "The weather is nice today.", MEMORISED[texts[4]]]
    assert results[1]["error"]["code"] == "empty_text"
    assert replay.status_code == 200 and replay.json()["id"] == job["id"]
    assert_error(mismatch, 422, "idempotency_mismatch")
    # Another client's "cms-42" is its own job, not the first client's (result, callback and all).
    assert theirs.status_code == 202 and theirs.json()["id"] != job["id"]
    assert [j["id"] for j in their_list["jobs"]] == [theirs.json()["id"]]
    # Newest first, two a page, without results; the other client's job is not among them.
    assert [[j["id"] for j in page] for page in pages] == [later[::-1][:2], later[::-1][2:], [job["id"]]]
    assert all("result" not in j for page in pages for j in page)
    assert_error(bad_cursor, 400, "invalid_cursor")
    assert_error(too_many, 422, "validation_error")
    assert_error(missing, 404, "unknown_job")
    assert no_secret.status_code == 400 and "WEBHOOK_SECRET" in no_secret.json()["error"]["message"]


ALPHA, BETA = {"X-API-Key": "alpha-key-0123456789"}, {"X-API-Key": "beta-key-0123456789"}


def test_with_auth_a_job_is_visible_only_to_the_key_that_made_it(tiny_marian_dir, tiny_backend, tmp_path):
    services = services_around(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path,
                               api_keys="alpha:alpha-key-0123456789,beta:beta-key-0123456789")
    with serve_services(services) as server, server.client() as client:
        job = client.post("/v1/jobs", json={"text": "مرحبا بالعالم."}, headers={**ALPHA, "Idempotency-Key": "k1"})
        job_id = job.json()["id"]
        done = wait_for_job(client, job_id, headers=ALPHA)
        seen_by_beta = client.get(f"/v1/jobs/{job_id}", headers=BETA)
        never_issued = client.get("/v1/jobs/0123456789abcdef0123456789abcdef", headers=BETA)
        cancelled_by_beta = client.delete(f"/v1/jobs/{job_id}", headers=BETA)
        listed_by_beta = client.get("/v1/jobs", headers=BETA).json()
        betas_own = client.post("/v1/jobs", json={"text": "شكرا جزيلا."}, headers={**BETA, "Idempotency-Key": "k1"})
        alpha_after = client.get(f"/v1/jobs/{job_id}", headers=ALPHA).json()
        listed_by_alpha = client.get("/v1/jobs", headers=ALPHA).json()
    assert job.status_code == 202 and done["status"] == "done"
    # Not 403: another key cannot even learn that the job exists.
    assert_error(seen_by_beta, 404, "unknown_job")
    assert_error(cancelled_by_beta, 404, "unknown_job")
    assert set(seen_by_beta.json()["error"]) == set(never_issued.json()["error"]) == {"code", "message"}
    assert listed_by_beta == {"jobs": [], "next_cursor": None}
    assert betas_own.status_code == 202 and betas_own.json()["id"] != job_id  # the same key, another owner
    assert alpha_after["status"] == "done"  # beta's DELETE did nothing
    assert [j["id"] for j in listed_by_alpha["jobs"]] == [job_id]


def test_a_job_survives_a_graceful_restart_without_spending_an_attempt(tiny_marian_dir, tiny_backend, tmp_path):
    gated = GatedBackend(tiny_backend)
    server = serve_services(services_around(tiny_marian_dir, gated, tmp_path)).__enter__()
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
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:  # stopped mid-job: queued again, attempt given back
        assert db.execute("SELECT status, attempts FROM jobs WHERE id = ?", (job["id"],)).fetchone() == ("queued", 0)
    # A new server on the same file picks the interrupted job up and finishes it.
    with serve_services(services_around(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path)) as server, \
            server.client() as client:
        done = wait_for_job(client, job["id"])
    assert done["status"] == "done" and done["attempts"] == 1
    assert done["result"]["results"][0]["translation"] == "Thank you very much."


def _left_running(path, attempts_by_text: dict[str, int]) -> list[str]:
    """Jobs as a process that died mid-run leaves them: 'running', with the attempts already spent."""
    store = JobStore(path)
    ids = [store.create(LOCAL, {"texts": [text]}, 1, None, None)[0]["id"] for text in attempts_by_text]
    store.close()
    with sqlite3.connect(path) as db:
        for job_id, attempts in zip(ids, attempts_by_text.values()):
            db.execute("UPDATE jobs SET status = 'running', attempts = ? WHERE id = ?", (attempts, job_id))
    return ids


def test_a_job_that_keeps_killing_the_server_ends_failed(tiny_marian_dir, tiny_backend, tmp_path, caplog):
    poison, survivor = _left_running(tmp_path / "state.sqlite3", {"مرحبا بالعالم.": 3, "شكرا جزيلا.": 2})
    services = services_around(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path, jobs_max_attempts=3)
    with caplog.at_level(logging.ERROR, logger="model_server.jobs"), serve_services(services) as server, \
            server.client() as client:
        failed = wait_for_job(client, poison)
        retried = wait_for_job(client, survivor)
    assert failed["status"] == "failed" and failed["attempts"] == 3 and failed["result"] is None
    assert failed["error"]["code"] == "job_interrupted" and "3 times" in failed["error"]["message"]
    assert retried["status"] == "done" and retried["attempts"] == 3  # its last attempt, and it worked
    assert any(poison in record.getMessage() and "job_interrupted" in record.getMessage()
               for record in caplog.records)


def test_transient_errors_are_retried_with_backoff_until_attempts_run_out(tiny_marian_dir, tiny_backend, tmp_path):
    """A full queue (two segments waiting behind a held batch, limit 2) makes the job's run fail with
    queue_full: it goes back to the queue and succeeds once the queue drains; held longer, it fails after
    jobs_max_attempts runs with the last error."""
    gated = GatedBackend(tiny_backend)
    services = services_around(tiny_marian_dir, gated, tmp_path, max_queue_segments=2, max_wait_ms=0,
                               jobs_retry_backoff_s=0.2, jobs_max_attempts=3)
    batcher = services.translation.batcher
    with serve_services(services) as server, server.client() as client:
        def fill_the_queue(answers):
            gated.gate.clear()
            gated.entered.clear()
            threads = [post_in_thread(server, {"text": "مرحبا بالعالم."}, answers)]
            assert gated.entered.wait(30)
            threads.append(post_in_thread(server, {"texts": ["شكرا جزيلا.", "الطقس جميل اليوم."]}, answers))
            wait_until(lambda: batcher.pending(Lane.interactive) == 2)
            return threads

        answers: list = []
        threads = fill_the_queue(answers)
        job = client.post("/v1/jobs", json={"text": "اتفاق دفاعي بين الطرفين"}).json()
        wait_until(lambda: (j := client.get(f"/v1/jobs/{job['id']}").json())["attempts"] >= 1
                   and j["status"] == "queued")
        postponed = client.get(f"/v1/jobs/{job['id']}").json()
        gated.gate.set()
        done = wait_for_job(client, job["id"])
        for thread in threads:
            thread.join(30)

        threads = fill_the_queue(answers)
        started = time.monotonic()
        doomed = client.post("/v1/jobs", json={"text": "مرحبا بالعالم."}).json()
        gave_up = wait_for_job(client, doomed["id"])
        took_s = time.monotonic() - started
        gated.gate.set()
        for thread in threads:
            thread.join(30)
    assert postponed["error"]["code"] == "queue_full" and postponed["attempts"] == 1
    assert done["status"] == "done" and done["attempts"] == 2 and done["error"] is None
    assert done["result"]["results"][0]["translation"] == MEMORISED["اتفاق دفاعي بين الطرفين"]
    assert gave_up["status"] == "failed" and gave_up["attempts"] == 3
    assert gave_up["error"]["code"] == "queue_full" and "gave up after 3 attempts" in gave_up["error"]["message"]
    assert took_s >= 0.2 + 0.4  # backoff 0.2 s, then doubled
    assert [a.status_code for a in answers] == [200] * 4


class FlakyStore(JobStore):
    """A real store whose next `failures` writes of a failed outcome raise (a full disk, a locked file):
    the way to reach the workers' error paths."""

    def __init__(self, path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    def finish(self, job_id, status, **outcome):
        if status == "failed" and self.failures:
            self.failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return super().finish(job_id, status, **outcome)


def test_the_worker_survives_an_exception_in_its_error_path(tiny_marian_dir, tiny_backend, tmp_path, caplog):
    """One worker; a job that crashes it (a format no code knows) and whose failure cannot be written
    either; the next job still runs. Both exceptions are logged and counted."""
    services = services_around(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path, jobs_max_concurrent=1)
    metrics = Metrics()

    async def work(services):
        manager = JobManager(services, FlakyStore(tmp_path / "jobs.sqlite3", failures=1), metrics=metrics)
        await manager.start()
        try:
            broken, _ = await manager.submit(LOCAL, {"texts": ["مرحبا"], "format": "bogus"}, 1, None, None)
            good, _ = await manager.submit(LOCAL, {"texts": ["شكرا جزيلا."]}, 1, None, None)
            for _ in range(600):
                if (await manager.get(good["id"], LOCAL))["status"] == "done":
                    break
                await asyncio.sleep(0.05)
            return await manager.get(broken["id"], LOCAL), await manager.get(good["id"], LOCAL)
        finally:
            await manager.close()

    with caplog.at_level(logging.ERROR, logger="model_server.jobs"):
        broken, good = run_with(services, work)
    assert good["status"] == "done" and good["result"]["results"][0]["translation"] == "Thank you very much."
    assert broken["status"] == "running"  # its failure could not be recorded; a restart counts the attempt
    errors = {stage: metrics.registry.get_sample_value("model_server_job_worker_errors_total", {"stage": stage})
              for stage in ("run", "process")}
    assert errors == {"run": 1.0, "process": 1.0}
    logged = [r for r in caplog.records if r.getMessage().startswith("job worker error")]
    assert [r.getMessage() for r in logged] == [f"job worker error (run, job {broken['id']})",
                                                f"job worker error (process, job {broken['id']})"]
    assert logged[0].exc_info[0] is ValueError and logged[1].exc_info[0] is sqlite3.OperationalError


def test_finished_jobs_expire_then_go(tiny_marian_dir, tiny_backend, tmp_path):
    services = services_around(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path, jobs_retention_s=0.5)
    with serve_services(services) as server, server.client() as client:
        job = client.post("/v1/jobs", json={"text": "مرحبا بالعالم."}, headers={"Idempotency-Key": "a"}).json()
        done = wait_for_job(client, job["id"])
        expired = wait_for_job(client, job["id"], statuses=("expired",))
        with sqlite3.connect(tmp_path / "state.sqlite3") as db:
            stored = db.execute("SELECT request, result FROM jobs WHERE id = ?", (job["id"],)).fetchone()
        again = client.post("/v1/jobs", json={"text": "مرحبا بالعالم."}, headers={"Idempotency-Key": "a"})
        wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").status_code == 404)
    assert done["status"] == "done" and done["result"] is not None
    assert expired["result"] is None and expired["progress"] == {"done": 1, "total": 1}
    assert stored == ("", None)  # the article text and its translation are gone from the file
    assert again.status_code == 202 and again.json()["id"] != job["id"]  # the key is free again


def test_cancel_a_running_and_a_queued_job(tiny_marian_dir, tiny_backend, tmp_path):
    """The running job's queued segments leave the batch queue at once; the queued job never runs."""
    gated = GatedBackend(tiny_backend)
    services = services_around(tiny_marian_dir, gated, tmp_path, max_batch_size=1, max_wait_ms=0,
                               jobs_max_concurrent=1, webhook_secret="s", webhook_allowed_hosts="127.0.0.1")
    batcher = services.translation.batcher
    running_texts = ["مرحبا بالعالم.", "شكرا جزيلا.", "الطقس جميل اليوم.", "اتفاق دفاعي بين الطرفين"]
    with serve_services(services) as server, server.client() as client:
        running = client.post("/v1/jobs", json={"texts": running_texts}).json()
        assert gated.entered.wait(30)  # one segment in the model, three waiting
        queued = client.post("/v1/jobs", json={"text": "مرحبا", "callback_url": "http://127.0.0.1:9/hook"}).json()
        wait_until(lambda: batcher.pending(Lane.bulk) == 3)
        cancelled_queued = client.delete(f"/v1/jobs/{queued['id']}").json()  # first: the worker is still busy
        cancelled = client.delete(f"/v1/jobs/{running['id']}")
        pending_after = batcher.pending(Lane.bulk)
        gated.gate.set()
        after = client.post("/v1/jobs", json={"text": ALLIANCE}).json()
        wait_for_job(client, after["id"])
        final = client.get(f"/v1/jobs/{running['id']}").json()
        again = client.delete(f"/v1/jobs/{after['id']}").json()
        unknown = client.delete("/v1/jobs/nope")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert pending_after == 0
    assert cancelled_queued["status"] == "cancelled" and cancelled_queued["attempts"] == 0
    assert cancelled_queued["callback"] == {"url": "http://127.0.0.1:9/hook", "status": "not_sent", "attempts": 0}
    assert final["status"] == "cancelled" and final["progress"]["done"] == 0 and final["result"] is None
    assert gated.seen == [running_texts[0], ALLIANCE]  # the held segment, then the next job's only
    assert again["status"] == "done"  # a finished job is left as it is
    assert_error(unknown, 404, "unknown_job")


# The jobs table as the first version created it (a globally unique idempotency_key, no owner or attempts).
V1_SCHEMA = ("CREATE TABLE jobs (id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, status TEXT NOT NULL, "
             "request TEXT NOT NULL, result TEXT, error TEXT, done INTEGER NOT NULL, total INTEGER NOT NULL, "
             "callback_url TEXT, callback_status TEXT, callback_attempts INTEGER NOT NULL DEFAULT 0, "
             "created_at REAL NOT NULL, updated_at REAL NOT NULL)")


def test_a_job_file_of_the_first_version_is_migrated(tiny_marian_dir, tiny_backend, tmp_path):
    path, now = tmp_path / "state.sqlite3", time.time()
    with sqlite3.connect(path) as db:
        db.execute(V1_SCHEMA)
        db.execute("INSERT INTO jobs (id, idempotency_key, status, request, result, done, total, created_at, "
                   "updated_at) VALUES ('old-done', 'cms-42', 'done', '{\"texts\": [\"x\"]}', "
                   "'{\"results\": [], \"model\": {}}', 1, 1, ?, ?)", (now - 10, now - 10))
        db.execute("INSERT INTO jobs (id, status, request, done, total, created_at, updated_at) "
                   "VALUES ('old-queued', 'queued', ?, 0, 1, ?, ?)", ('{"texts": ["شكرا جزيلا."]}', now - 5, now - 5))
    services = services_around(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path)
    with serve_services(services) as server, server.client() as client:
        old = client.get("/v1/jobs/old-done").json()
        resumed = wait_for_job(client, "old-queued")
        new = client.post("/v1/jobs", json={"text": "مرحبا"}, headers={"Idempotency-Key": "cms-42"})
        replay = client.post("/v1/jobs", json={"text": "مرحبا"}, headers={"Idempotency-Key": "cms-42"})
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    assert old["status"] == "done" and old["attempts"] == 0 and old["result"] == {"results": [], "model": {}}
    assert resumed["status"] == "done" and resumed["result"]["results"][0]["translation"] == "Thank you very much."
    assert new.status_code == 202 and replay.status_code == 200 and replay.json()["id"] == new.json()["id"]
    assert {"owner", "request_key", "request_hash", "attempts", "finished_at"} <= columns


@pytest.mark.parametrize("retention_s", [0, -1])
def test_retention_must_be_positive(tiny_marian_dir, retention_s):
    with pytest.raises(ValueError, match="jobs_retention_s"):
        tiny_settings(tiny_marian_dir, jobs_retention_s=retention_s)


def test_a_job_running_when_the_process_is_killed_spends_its_attempt(tiny_marian_dir, tmp_path):
    """A real crash: `model-server serve` killed with SIGKILL mid-job. With one attempt allowed, the next
    start fails the job (job_interrupted) instead of running it again."""
    env = {"MODEL_SERVER_PROFILE": "tiny", "MODEL_SERVER_MODELS_DIR": str(tiny_marian_dir.parent),
           "MODEL_SERVER_CACHE_PATH": str(tmp_path / "state.sqlite3"), "MODEL_SERVER_JOBS_MAX_ATTEMPTS": "1",
           "MODEL_SERVER_SUMMARIZATION_ENABLED": "false", "MODEL_SERVER_LOG_LEVEL": "warning"}
    port = free_port()
    proc = start_cli_server(env, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            job = client.post("/v1/jobs", json={"texts": [SAMPLE_AR] * 48}).json()
            running = wait_for_job(client, job["id"], statuses=("running", "done"))
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert running["status"] == "running", "the job finished before the kill: make it longer"
    port = free_port()
    proc = start_cli_server(env, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            after = wait_for_job(client, job["id"])
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
    assert after["status"] == "failed" and after["error"]["code"] == "job_interrupted" and after["attempts"] == 1
