"""Jobs on several machines (`state_url`, model_server/state/jobs.py, jobs_queue.py, model_server/worker.py),
against a real redis-server (tests/redis_server.py): two API replicas sharing job records and
Idempotency-Keys; workers as real processes that are killed (-9), stopped (SIGTERM) and outlive a Redis
restart; a poison chunk that ends in the dead-letter queue; an unreachable Redis answered 503.
Recovery times are printed (run with -s to see them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from model_server.services import Services
from model_server.worker import run_worker
from model_server.state.jobs import PREFIX
from model_server.state.jobs_queue import CHUNK_QUEUE, WEBHOOK_QUEUE, JobQueue
from tests.conftest import (MODELS_DIR, ROOT, assert_error, free_port, serve_services, start_cli_server,
                            tiny_settings, wait_ready)
from tests.fakes import DelegatingBackend, GatedBackend
from tests.test_jobs import wait_until
from tests.test_webhooks import Receiver

ARTICLE = ["مرحبا بالعالم.", "شكرا جزيلا.", "الطقس جميل اليوم."]


def replica(tiny_marian_dir, backend, tmp_path, name: str, **overrides):
    """An API replica on loopback (the session's tiny backend) on the shared state Redis."""
    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / name / "state.sqlite3", **overrides)
    return serve_services(Services.from_backend(settings, DelegatingBackend(backend)))


def test_two_replicas_share_job_records_and_idempotency_keys(tiny_marian_dir, tiny_backend, tmp_path, redis_server):
    shared = {"state_url": redis_server.url}
    with replica(tiny_marian_dir, tiny_backend, tmp_path, "a", **shared) as a, \
            replica(tiny_marian_dir, tiny_backend, tmp_path, "b", **shared) as b, \
            a.client() as through_a, b.client() as through_b:
        first = through_a.post("/v1/jobs", json={"texts": ARTICLE}, headers={"Idempotency-Key": "cms-7"})
        again = through_b.post("/v1/jobs", json={"texts": ARTICLE}, headers={"Idempotency-Key": "cms-7"})
        other_body = through_b.post("/v1/jobs", json={"texts": ARTICLE[:1]}, headers={"Idempotency-Key": "cms-7"})
        read_on_b = through_b.get(f"/v1/jobs/{first.json()['id']}")
        listed_on_b = through_b.get("/v1/jobs").json()["jobs"]
        cancelled_on_b = through_b.delete(f"/v1/jobs/{first.json()['id']}")
        read_on_a = through_a.get(f"/v1/jobs/{first.json()['id']}").json()
    assert first.status_code == 202, first.text
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert_error(other_body, 422, "idempotency_mismatch")
    assert read_on_b.status_code == 200 and read_on_b.json()["progress"] == {"done": 0, "total": 3}
    assert [job["id"] for job in listed_on_b] == [first.json()["id"]]  # one job, not two
    assert cancelled_on_b.json()["status"] == "cancelled" and read_on_a["status"] == "cancelled"


def test_an_unreachable_state_redis_is_503_for_jobs_only_and_work_resumes(tiny_marian_dir, tiny_backend, tmp_path,
                                                                        redis_server):
    with replica(tiny_marian_dir, tiny_backend, tmp_path, "a", state_url=redis_server.url,
                 state_timeout_s=0.5) as server, server.client() as client:
        job = client.post("/v1/jobs", json={"texts": ARTICLE}).json()
        redis_server.stop()
        refused = [client.post("/v1/jobs", json={"texts": ARTICLE}), client.get(f"/v1/jobs/{job['id']}"),
                   client.get("/v1/jobs")]
        translated = client.post("/translate", json={"text": ARTICLE[0]})  # needs no shared state
        redis_server.start()
        started = time.monotonic()
        back = client.get(f"/v1/jobs/{job['id']}")
        while back.status_code != 200 and time.monotonic() - started < 10:
            time.sleep(0.1)
            back = client.get(f"/v1/jobs/{job['id']}")
    for response in refused:
        assert_error(response, 503, "state_unavailable")
        assert response.headers["retry-after"]
    assert translated.status_code == 200, translated.text
    assert back.status_code == 200 and back.json()["id"] == job["id"]  # appendonly: the record survived



def test_finished_jobs_expire_on_every_replica_and_free_their_key(tiny_marian_dir, tiny_backend, tmp_path,
                                                                 redis_server):
    shared = {"state_url": redis_server.url, "jobs_retention_s": 0.2}
    with replica(tiny_marian_dir, tiny_backend, tmp_path, "a", **shared) as a, \
            replica(tiny_marian_dir, tiny_backend, tmp_path, "b", **shared) as b, \
            a.client() as through_a, b.client() as through_b:
        job = through_a.post("/v1/jobs", json={"texts": ARTICLE}, headers={"Idempotency-Key": "k"}).json()
        through_a.delete(f"/v1/jobs/{job['id']}")
        deadline = time.monotonic() + 10
        while through_b.get(f"/v1/jobs/{job['id']}").json().get("status") != "expired":
            assert time.monotonic() < deadline, "the cancelled job never expired"
            time.sleep(0.05)
        reused = through_b.post("/v1/jobs", json={"texts": ARTICLE[:1]}, headers={"Idempotency-Key": "k"})
        while through_a.get(f"/v1/jobs/{job['id']}").status_code != 404:
            assert time.monotonic() < deadline, "the expired job was never deleted"
            time.sleep(0.05)
    assert reused.status_code == 202 and reused.json()["id"] != job["id"]  # the key was freed with the job


def test_a_replay_sends_the_chunks_of_a_job_whose_sending_failed(tiny_marian_dir, tiny_backend, tmp_path,
                                                                redis_server):
    import redis

    raw = redis.Redis.from_url(redis_server.url)
    queue = JobQueue(tiny_settings(tiny_marian_dir, state_url=redis_server.url))
    body, key = {"texts": ARTICLE}, {"Idempotency-Key": "story-9"}
    try:
        with replica(tiny_marian_dir, tiny_backend, tmp_path, "a", state_url=redis_server.url,
                     jobs_chunk_texts=2) as server, server.client() as client:
            job = client.post("/v1/jobs", json=body, headers=key).json()
            sent = queue.depth(CHUNK_QUEUE)
            client.post("/v1/jobs", json=body, headers=key)  # an ordinary replay sends nothing
            replayed_normally = queue.depth(CHUNK_QUEUE)
            # As if Redis had gone away between storing the job and sending its chunks:
            raw.delete(f"model-server:queue:{CHUNK_QUEUE}")
            raw.hset(f"{PREFIX}job:{job['id']}", "enqueued", 0)
            again = client.post("/v1/jobs", json=body, headers=key)
            resent = queue.depth(CHUNK_QUEUE)
    finally:
        queue.close()
    assert (sent, replayed_normally) == (2, 2)
    assert again.status_code == 200 and again.json()["id"] == job["id"] and resent == 2

# ----- workers as real processes -----
SECRET = "s3cret"
TEXTS = ["مرحبا بالعالم.", "شكرا جزيلا.", "الطقس جميل اليوم.", "اتفاق دفاعي بين الطرفين",
         "تحالف عسكري بين خليفة حفتر وروسيا", "وصل الوفد إلى العاصمة.", "بدأ الاجتماع صباح اليوم.",
         "انتهت المحادثات دون اتفاق.", "قال المتحدث إن الحوار مستمر.", "ارتفعت الأسعار في الأسواق.",
         "أعلنت الحكومة خطة جديدة.", "عاد الهدوء إلى المدينة."]
POISON = "مسموم"


def state_env(redis_url: str, tiny_marian_dir, tmp_path, **extra: str) -> dict[str, str]:
    """MODEL_SERVER_* of the processes of one test: tiny model, one torch thread, short heartbeat and backoffs."""
    env = {"MODEL_SERVER_STATE_URL": redis_url, "MODEL_SERVER_TRANSLATION_MODEL": str(tiny_marian_dir),
           "MODEL_SERVER_MODELS_DIR": str(MODELS_DIR), "MODEL_SERVER_DEVICE": "cpu", "MODEL_SERVER_DTYPE": "float32",
           "MODEL_SERVER_NUM_BEAMS": "1", "MODEL_SERVER_MAX_WAIT_MS": "2", "MODEL_SERVER_TORCH_THREADS": "1",
           "MODEL_SERVER_SUMMARIZATION_ENABLED": "false", "MODEL_SERVER_CACHE_ENABLED": "false",
           "MODEL_SERVER_CACHE_PATH": str(tmp_path / "state.sqlite3"),
           "MODEL_SERVER_TUNING_FILE": str(tmp_path / "tuning.json"), "MODEL_SERVER_LOG_LEVEL": "info",
           "MODEL_SERVER_JOBS_CHUNK_TEXTS": "2", "MODEL_SERVER_JOBS_WORKER_CONCURRENT_CHUNKS": "2",
           "MODEL_SERVER_JOBS_WORKER_HEARTBEAT_TIMEOUT_S": "2", "MODEL_SERVER_JOBS_RETRY_BACKOFF_S": "0.1",
           "MODEL_SERVER_WEBHOOK_SECRET": SECRET, "MODEL_SERVER_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1",
           "MODEL_SERVER_WEBHOOK_BACKOFF_S": "0.1",
           "MODEL_SERVER_WORKER_HEALTH_PORT": "0"}  # several workers per test: health tests give each a free port
    env.update(extra)
    return env


def api_replica(tiny_marian_dir, backend, tmp_path, redis_server):
    """An in-process API replica configured as the processes of `state_env` (the chunks it makes are theirs)."""
    return replica(tiny_marian_dir, backend, tmp_path, "api", state_url=redis_server.url, jobs_chunk_texts=2,
                   webhook_secret=SECRET, webhook_allowed_hosts="127.0.0.1")


class WorkerProcess:
    """`model-server worker` as a process, its output collected; with test behaviours (a slow or poisoned
    model) `python -m tests.scale_worker`, the same worker around a wrapped tiny model."""

    def __init__(self, env: dict[str, str], **behaviour: str) -> None:
        command = ["-m", "tests.scale_worker"] if behaviour else ["-m", "model_server.cli", "worker"]
        self.process = subprocess.Popen([sys.executable, *command], env={**os.environ, **env,
                                        **behaviour}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        assert self.ready.wait(120), "worker did not start:\n" + "".join(self.lines)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if "worker ready" in line:
                self.ready.set()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = 60) -> int:
        return self.process.wait(timeout=timeout_s)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def workers():
    started: list[WorkerProcess] = []

    def start(env, **behaviour) -> WorkerProcess:
        started.append(WorkerProcess(env, **behaviour))
        return started[-1]

    yield start
    for n, worker in enumerate(started):
        worker.close()
        print(f"--- worker {n} output ---\n" + "".join(worker.lines[-40:]))  # shown when a test fails


def wait_job(client, job_id: str, timeout_s: float = 90, statuses=("done", "failed")) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job}")


def assert_each_text_once(job: dict, total: int) -> None:
    """The result has every text exactly once, in order, each translated."""
    results = job["result"]["results"]
    assert [result["index"] for result in results] == list(range(total)), [r["index"] for r in results]
    assert all(result.get("translation") and not result.get("error") for result in results), results
    assert job["progress"] == {"done": total, "total": total}


def chunk_tries(redis_url: str, job_id: str) -> dict[int, int]:
    import redis

    raw = redis.Redis.from_url(redis_url).hgetall(f"{PREFIX}job:{job_id}:tries")
    return {int(key): int(value) for key, value in raw.items()}


def worker_samples(health_port: int, name: str) -> dict[str, float]:
    """The samples of counter `name` on a worker's /metrics, by their one label's value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{health_port}/metrics", timeout=10).text
    return {next(iter(sample.labels.values()), ""): sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name}


def one_delivery(receiver, job_id: str, settle_s: float = 1.0) -> dict:
    """The receiver got exactly one POST for the job (waiting `settle_s` more for a duplicate)."""
    deadline = time.monotonic() + 30
    while not receiver.posts and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(settle_s)
    assert len(receiver.posts) == 1, [body for _, body in receiver.posts]
    headers, body = receiver.posts[0]
    assert headers["X-Model-Server-Job"] == job_id
    return json.loads(body)


def test_a_killed_worker_s_chunks_are_finished_by_another_once_each(tiny_marian_dir, tmp_path, redis_server, workers):
    env = state_env(redis_server.url, tiny_marian_dir, tmp_path)
    texts = TEXTS * 2  # 12 chunks of 2
    port = free_port()
    api = start_cli_server(env, port)  # `model-server serve` with state_url: an API replica that enqueues
    try:
        wait_ready(f"http://127.0.0.1:{port}", api)
        # The doomed worker is slow (30 s per batch): from its first chunk until it is killed (once the
        # survivor is up, seconds later) it surely holds that chunk in progress. With 3 s it could finish its
        # chunks while the survivor started and hold none at the kill (seen once in CI).
        doomed = workers(env, MODEL_SERVER_TEST_GENERATE_DELAY_S="30")
        with Receiver() as receiver, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            job = client.post("/v1/jobs", json={"texts": texts, "callback_url": receiver.url}).json()
            wait_until(lambda: chunk_tries(redis_server.url, job["id"]))
            workers(env)  # the survivor
            assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "running"
            doomed.signal(signal.SIGKILL)
            killed = time.monotonic()
            done = wait_job(client, job["id"])
            recovery_s = time.monotonic() - killed
            delivered = one_delivery(receiver, job["id"])
            record = client.get(f"/v1/jobs/{job['id']}").json()
    finally:
        api.terminate()
        api.wait(timeout=30)
    print(f"\nRECOVERY kill -9 -> job finished by the other worker: {recovery_s:.1f}s (heartbeat timeout 2s, "
          f"{len(texts)} texts in chunks of 2)")
    assert done["status"] == "done", done
    assert_each_text_once(done, len(texts))
    assert max(chunk_tries(redis_server.url, job["id"]).values()) == 2  # the killed worker's chunk, run again
    assert delivered["status"] == "done" and delivered["result"] == done["result"]
    assert record["callback"] == {"url": receiver.url, "status": "delivered", "attempts": 1}


def test_sigterm_finishes_the_chunks_in_progress_and_hands_back_the_rest(tiny_marian_dir, tmp_path, redis_server,
                                                                      tiny_backend, workers):
    env = state_env(redis_server.url, tiny_marian_dir, tmp_path)
    with api_replica(tiny_marian_dir, tiny_backend, tmp_path, redis_server) as api, \
            api.client() as client:
        stopping = workers(env, MODEL_SERVER_TEST_GENERATE_DELAY_S="1")  # 6 chunks, 2 at a time: ~3s
        job = client.post("/v1/jobs", json={"texts": TEXTS}).json()
        wait_until(lambda: chunk_tries(redis_server.url, job["id"]))  # a chunk is being translated
        stopping.signal(signal.SIGTERM)
        assert stopping.wait(30) == 0, "".join(stopping.lines)
        partial = client.get(f"/v1/jobs/{job['id']}").json()
        workers(env)
        done = wait_job(client, job["id"])
    assert 0 < partial["progress"]["done"] < len(TEXTS)  # the stopped worker finished what it had begun
    assert done["status"] == "done"
    assert_each_text_once(done, len(TEXTS))
    assert set(chunk_tries(redis_server.url, job["id"]).values()) == {1}  # nothing abandoned and redone


def test_jobs_queued_across_a_state_redis_restart_all_finish(tiny_marian_dir, tmp_path, redis_server, tiny_backend,
                                                           workers):
    env = state_env(redis_server.url, tiny_marian_dir, tmp_path)
    with api_replica(tiny_marian_dir, tiny_backend, tmp_path, redis_server) as api, \
            api.client() as client:
        workers(env, MODEL_SERVER_TEST_GENERATE_DELAY_S="0.3")
        jobs = [client.post("/v1/jobs", json={"texts": TEXTS[i:i + 4]}).json() for i in range(0, len(TEXTS), 4)]
        assert client.get(f"/v1/jobs/{jobs[-1]['id']}").json()["status"] in ("queued", "running")
        redis_server.restart()  # appendonly: records and queued messages survive
        restarted = time.monotonic()
        finished = [wait_job(client, job["id"]) for job in jobs]
        recovery_s = time.monotonic() - restarted
    print(f"\nRECOVERY state Redis restart -> all {len(jobs)} jobs finished: {recovery_s:.1f}s")
    for job in finished:
        assert job["status"] == "done", job
        assert_each_text_once(job, 4)


def test_a_poison_chunk_ends_the_job_failed_with_per_text_errors_and_dead_letters(tiny_marian_dir, tmp_path,
                                                                                redis_server, tiny_backend, workers):
    health_port = free_port()
    env = state_env(redis_server.url, tiny_marian_dir, tmp_path, MODEL_SERVER_WORKER_HEALTH_PORT=str(health_port))
    texts = [TEXTS[0], f"هذا نص {POISON} تماما.", TEXTS[1], TEXTS[2]]
    with api_replica(tiny_marian_dir, tiny_backend, tmp_path, redis_server) as api, \
            api.client() as client, Receiver() as receiver:
        workers(env, MODEL_SERVER_TEST_POISON=POISON)
        job = client.post("/v1/jobs", json={"texts": texts, "callback_url": receiver.url}).json()
        failed = wait_job(client, job["id"])
        delivered = one_delivery(receiver, job["id"])
        chunks = worker_samples(health_port, "model_server_worker_chunks_total")
        webhooks = worker_samples(health_port, "model_server_webhook_attempts_total")
    # The poisoned chunk: 2 tries again, then failed (dead-lettered); its neighbour: done at once.
    assert chunks == {"done": 1, "retried": 2, "failed": 1}, chunks
    assert webhooks == {"delivered": 1}, webhooks
    results = failed["result"]["results"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "inference_failed"
    assert "1 of 4 texts failed after 3 tries" in failed["error"]["message"]
    assert results[1]["error"]["code"] == "inference_failed"  # its neighbours are translated
    assert all(results[i]["translation"] and not results[i].get("error") for i in (0, 2, 3))
    assert chunk_tries(redis_server.url, job["id"]) == {0: 3, 1: 1}
    assert delivered["status"] == "failed" and delivered["result"] == failed["result"]
    queue = JobQueue(tiny_settings(tiny_marian_dir, state_url=redis_server.url))
    try:
        assert queue.dead_letters(CHUNK_QUEUE) == [("translate_chunk", [job["id"], 0])]
    finally:
        queue.close()



def test_a_chunk_that_kills_every_worker_that_runs_it_ends_interrupted(tiny_marian_dir, tmp_path, redis_server,
                                                                       tiny_backend, workers):
    """A text that takes its worker down (exit 137, as an out-of-memory kill) on every try: after
    jobs_max_attempts tries the next worker fails its texts with job_interrupted instead of dying too, and
    the job ends failed with its other texts translated."""
    crash = "انهيار"
    # One chunk at a time: a killed worker loses every chunk it holds, and this test follows one of them.
    env = state_env(redis_server.url, tiny_marian_dir, tmp_path, MODEL_SERVER_JOBS_MAX_ATTEMPTS="2",
                    MODEL_SERVER_JOBS_WORKER_CONCURRENT_CHUNKS="1")
    texts = [f"هذا نص {crash} تماما.", TEXTS[0], TEXTS[1], TEXTS[2]]  # chunks of 2: the first holds the crash
    with api_replica(tiny_marian_dir, tiny_backend, tmp_path, redis_server) as api, api.client() as client:
        job = client.post("/v1/jobs", json={"texts": texts}).json()
        deaths = 0
        for _ in range(4):  # each worker either dies on the chunk or finishes the job
            worker = workers(env, MODEL_SERVER_TEST_CRASH=crash)
            deadline = time.monotonic() + 60
            while worker.process.poll() is None and client.get(f"/v1/jobs/{job['id']}").json()["status"] not in (
                    "done", "failed") and time.monotonic() < deadline:
                time.sleep(0.1)
            if worker.process.poll() is None:
                break
            deaths += 1
        finished = wait_job(client, job["id"])
    assert deaths == 2  # one per allowed try, then no more
    assert finished["status"] == "failed" and finished["error"]["code"] == "job_interrupted"
    results = finished["result"]["results"]
    assert [r.get("error", {}).get("code") for r in results[:2]] == ["job_interrupted"] * 2  # its chunk
    assert all(results[i]["translation"] and not results[i].get("error") for i in (2, 3))


def test_a_webhook_that_keeps_failing_ends_failed_and_dead_letters(tiny_marian_dir, tmp_path, redis_server,
                                                                  tiny_backend, workers):
    env = state_env(redis_server.url, tiny_marian_dir, tmp_path, MODEL_SERVER_WEBHOOK_MAX_ATTEMPTS="2")
    with api_replica(tiny_marian_dir, tiny_backend, tmp_path, redis_server) as api, api.client() as client, \
            Receiver(failures=100) as receiver:
        workers(env)
        job = client.post("/v1/jobs", json={"texts": TEXTS[:3], "callback_url": receiver.url}).json()
        assert wait_job(client, job["id"])["status"] == "done"
        wait_until(lambda: client.get(f"/v1/jobs/{job['id']}").json()["callback"]["status"] == "failed")
        callback = client.get(f"/v1/jobs/{job['id']}").json()["callback"]
    assert callback == {"url": receiver.url, "status": "failed", "attempts": 2} and len(receiver.posts) == 2
    queue = JobQueue(tiny_settings(tiny_marian_dir, state_url=redis_server.url))
    try:
        assert queue.dead_letters(WEBHOOK_QUEUE) == [("deliver_webhook", [job["id"]])]
    finally:
        queue.close()


class BatchRecordingBackend(GatedBackend):
    """Gated (tests/fakes.py), and records the inputs of each generate() call: one list per batch."""

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self.batches: list[list[str]] = []

    def generate(self, texts, options):
        self.batches.append(list(texts))
        return super().generate(texts, options)


def test_chunks_of_different_jobs_share_the_worker_s_batches(tiny_marian_dir, tiny_backend, tmp_path, redis_server):
    backend = BatchRecordingBackend(tiny_backend)
    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "worker.sqlite3", state_url=redis_server.url,
                             jobs_chunk_texts=2, jobs_worker_concurrent_chunks=4)
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(settings, Services.from_backend(settings, backend)),
                              kwargs={"stop": stop})
    worker.start()
    try:
        with api_replica(tiny_marian_dir, tiny_backend, tmp_path, redis_server) as api, api.client() as client:
            first = client.post("/v1/jobs", json={"texts": TEXTS[:2]}).json()
            assert backend.entered.wait(30)  # the first job's batch holds the model (gate closed)
            others = [client.post("/v1/jobs", json={"texts": TEXTS[i:i + 2]}).json() for i in (2, 4)]
            wait_until(lambda: all(chunk_tries(redis_server.url, job["id"]) for job in others))
            time.sleep(0.2)  # both chunks' texts reach the batcher's bulk lane
            backend.gate.set()
            for job in [first, *others]:
                assert wait_job(client, job["id"])["status"] == "done"
    finally:
        backend.gate.set()
        stop.set()
        worker.join(timeout=60)
    assert len(backend.batches) == 2, backend.batches
    assert sorted(backend.batches[1]) == sorted(TEXTS[2:6])  # one batch for the chunks of two jobs
