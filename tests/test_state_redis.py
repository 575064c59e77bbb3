"""Shared state on Redis (model_server/state/): two replicas act as one service.

A real redis-server per test (tests/redis_server.py); two replicas are two apps, each with its own
Services, batcher and SQLite file, on their own loopback ports, sharing only `state_url` (and, for the
cache, `cache_url`): what one replica does is visible to the other only through Redis. Then the stores
themselves against the real Redis, and the outage: 503 state_unavailable where shared state is needed,
everything else working, and recovery on its own when Redis returns."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import Iterator

import httpx
import pytest

from model_server.errors import ServiceError
from model_server.glossary import GlossaryLimits
from model_server.services import Services
from model_server.settings import Settings
from model_server.state import EmbeddedState, RedisState, open_state
from model_server.state.glossaries import RedisGlossaryStore
from model_server.state.ratelimits import RedisTokenBuckets
from model_server.state.redis_client import connect
from tests.conftest import assert_error, free_port, serve_services, start_cli_server, tiny_settings, wait_ready
from tests.test_glossary import ALLIANCE, CopyingBackend

THANKS = "شكرا جزيلا."
LIMITS = GlossaryLimits(max_count=2, max_entries=3, max_term_chars=12, max_rendering_chars=24)


@contextlib.contextmanager
def two_replicas(redis_server, tiny_marian_dir, tiny_backend, **overrides) -> Iterator[list]:
    """Replicas A and B: [(client, backend)] - each its own app, Services and counting backend."""
    settings = dict(state_url=redis_server.url, **overrides)
    with contextlib.ExitStack() as stack:
        replicas = []
        for _ in range(2):
            backend = CopyingBackend(tiny_backend)
            server = stack.enter_context(serve_services(
                Services.from_backend(tiny_settings(tiny_marian_dir, **settings), backend)))
            replicas.append((stack.enter_context(server.client()), backend))
        yield replicas


def cache_db(redis_server) -> str:
    """The cache on its own database of the same server (in production: its own allkeys-lru Redis)."""
    return redis_server.url.rsplit("/", 1)[0] + "/1"


# --- two replicas, one service ------------------------------------------------------------------------

def test_two_replicas_share_one_request_budget_exactly(redis_server, tiny_marian_dir, tiny_backend):
    with two_replicas(redis_server, tiny_marian_dir, tiny_backend, rate_limit_requests_per_minute=6) as replicas:
        (a, _), (b, _) = replicas
        answers = [(a if i % 2 else b).get("/v1/models") for i in range(12)]
    assert [r.status_code for r in answers] == [200] * 6 + [429] * 6  # 6 across both, not 6 each
    for refused in answers[6:]:
        assert_error(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) >= 1


def test_two_replicas_share_one_character_budget(redis_server, tiny_marian_dir, tiny_backend):
    with two_replicas(redis_server, tiny_marian_dir, tiny_backend, rate_limit_chars_per_minute=15) as replicas:
        (a, _), (b, _) = replicas
        assert a.post("/translate", json={"text": THANKS}).status_code == 200  # 11 of 15 characters
        refused = b.post("/translate", json={"text": THANKS})
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1


def test_a_sentence_translated_through_a_is_a_cache_hit_through_b(redis_server, tiny_marian_dir, tiny_backend):
    with two_replicas(redis_server, tiny_marian_dir, tiny_backend, cache_enabled=True,
                      cache_url=cache_db(redis_server)) as replicas:
        (a, on_a), (b, on_b) = replicas
        first = a.post("/translate", json={"text": THANKS}).json()["results"][0]
        second = b.post("/translate", json={"text": THANKS}).json()["results"][0]
        metrics = b.get("/metrics").text
    assert on_a.generate_calls == 1 and first["cache"] == {"hits": 0, "misses": 1}
    assert on_b.generate_calls == 0 and second["cache"] == {"hits": 1, "misses": 0}
    assert second["translation"] == first["translation"] == "Thank you very much."
    assert re.search(r'model_server_cache_hits_total\{model="translation"\} 1\.0', metrics)


def test_a_glossary_put_through_a_is_used_by_b_on_the_very_next_request(redis_server, tiny_marian_dir,
                                                                        tiny_backend):
    with two_replicas(redis_server, tiny_marian_dir, tiny_backend, cache_enabled=True,
                      cache_url=cache_db(redis_server)) as replicas:
        (a, _), (b, _) = replicas
        assert a.put("/v1/glossaries/desk", json={"entries": {"خليفة حفتر": "Haftar", "روسيا": "Russia"}}
                     ).status_code == 200
        before = b.post("/translate", json={"text": ALLIANCE, "glossary": "desk"}).json()["results"][0]
        assert before["translation"] == "A military alliance between Haftar and Russia"  # B compiled version 1
        a.put("/v1/glossaries/desk", json={"entries": {"خليفة حفتر": "Field Marshal Haftar", "روسيا": "Moscow"}})
        after = b.post("/translate", json={"text": ALLIANCE, "glossary": "desk"}).json()["results"][0]
        listed = b.get("/v1/glossaries").json()["glossaries"]
        assert a.delete("/v1/glossaries/desk").status_code == 204
        gone = b.post("/translate", json={"text": ALLIANCE, "glossary": "desk"})
    assert after["translation"] == "A military alliance between Field Marshal Haftar and Moscow"
    assert [(g["name"], g["version"]) for g in listed] == [("desk", 2)]
    assert_error(gone, 404, "unknown_glossary")


def test_glossary_caps_hold_across_replicas(redis_server, tiny_marian_dir, tiny_backend):
    caps = dict(glossaries_max_count=2, glossary_max_entries=2)
    with two_replicas(redis_server, tiny_marian_dir, tiny_backend, **caps) as replicas:
        (a, _), (b, _) = replicas
        statuses: list[int] = []

        def create(client, name):  # six creations at once, three through each replica
            statuses.append(client.post("/v1/glossaries", json={"name": name, "entries": {"روسيا": "Russia"}})
                            .status_code)

        threads = [threading.Thread(target=create, args=(client, f"g{i}")) for i, client in enumerate([a, b] * 3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        names = [g["name"] for g in a.get("/v1/glossaries").json()["glossaries"]]
        full = b.post("/v1/glossaries", json={"name": "late", "entries": {"روسيا": "Russia"}})
        taken = b.post("/v1/glossaries", json={"name": names[0], "entries": {"روسيا": "Russia"}})
        too_long = b.put(f"/v1/glossaries/{names[0]}", json={"entries": {"أ": "a", "ب": "b", "ج": "c"}})
    assert sorted(statuses) == [201, 201, 409, 409, 409, 409] and len(names) == 2  # never a third
    assert_error(full, 409, "too_many_glossaries")
    assert_error(taken, 409, "glossary_exists")
    assert_error(too_long, 413, "glossary_too_many_entries")


def test_two_serve_processes_configured_by_environment_act_as_one(redis_server, tiny_marian_dir, tmp_path):
    """`model-server serve` twice, as deployed: only MODEL_SERVER_STATE_URL in common (own SQLite files)."""
    procs, urls = [], []
    try:
        for name in ("a", "b"):
            env = {"MODEL_SERVER_PROFILE": "tiny", "MODEL_SERVER_MODELS_DIR": str(tiny_marian_dir.parent),
                   "MODEL_SERVER_STATE_PATH": str(tmp_path / f"{name}.sqlite3"),
                   "MODEL_SERVER_STATE_URL": redis_server.url, "MODEL_SERVER_RATE_LIMIT_REQUESTS_PER_MINUTE": "5",
                   "MODEL_SERVER_SUMMARIZATION_ENABLED": "false", "MODEL_SERVER_LOG_LEVEL": "warning"}
            port = free_port()
            procs.append(start_cli_server(env, port))
            urls.append(f"http://127.0.0.1:{port}")
        for proc, url in zip(procs, urls):
            wait_ready(url, proc)
        with httpx.Client(base_url=urls[0], timeout=30) as a, httpx.Client(base_url=urls[1], timeout=30) as b:
            assert b.get("/readyz").json()["state"] == {"store": "redis", "reachable": True}
            assert a.put("/v1/glossaries/desk", json={"entries": {"روسيا": "Russia"}}).status_code == 200
            assert b.get("/v1/glossaries/desk").json()["entries"] == {"روسيا": "Russia"}
            statuses = [(a if i % 2 else b).get("/v1/models").status_code for i in range(6)]
    finally:
        for proc in procs:
            proc.terminate()
            proc.communicate(timeout=60)
    assert statuses == [200] * 3 + [429] * 3  # 5 requests per minute across both, probes not counted


# --- Redis goes away, then comes back ------------------------------------------------------------------

def _state_unavailable(response) -> None:
    assert_error(response, 503, "state_unavailable")
    assert response.headers["Retry-After"] == "1"


def test_redis_down_refuses_only_what_needs_shared_state_and_recovers(redis_server, tiny_marian_dir, tiny_backend):
    # The cache on the same (stopped) server too: a cache that does not answer never fails a request.
    with two_replicas(redis_server, tiny_marian_dir, tiny_backend, cache_enabled=True,
                      cache_url=cache_db(redis_server)) as replicas:
        (a, _), (b, _) = replicas
        a.put("/v1/glossaries/desk", json={"entries": {"خليفة حفتر": "Haftar", "روسيا": "Russia"}})
        assert b.get("/readyz").json() == {"status": "ready", "state": {"store": "redis", "reachable": True}}
        redis_server.stop()
        _state_unavailable(b.get("/v1/glossaries"))
        _state_unavailable(b.put("/v1/glossaries/desk", json={"entries": {"روسيا": "Russia"}}))
        _state_unavailable(b.post("/translate", json={"text": ALLIANCE, "glossary": "desk"}))
        deepl = b.post("/v2/translate", json={"text": [ALLIANCE], "target_lang": "EN", "glossary_id": "desk"})
        assert deepl.status_code == 503 and deepl.headers["Retry-After"] == "1"  # in DeepL's own error shape
        assert "state Redis" in deepl.json()["message"]
        plain = b.post("/translate", json={"text": THANKS})
        assert plain.status_code == 200 and plain.json()["results"][0]["translation"] == "Thank you very much."
        assert b.get("/healthz").status_code == 200
        ready = b.get("/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["state"]["reachable"] is False
        redis_server.start()  # same port and data (appendonly): the glossary is still there
        again = b.post("/translate", json={"text": ALLIANCE, "glossary": "desk"})
        assert again.status_code == 200, again.text
        assert again.json()["results"][0]["translation"] == "A military alliance between Haftar and Russia"
        assert b.get("/readyz").json()["status"] == "ready"


def test_rate_limited_routes_fail_closed_while_redis_is_down(redis_server, tiny_marian_dir, tiny_backend):
    with two_replicas(redis_server, tiny_marian_dir, tiny_backend, rate_limit_requests_per_minute=100,
                      rate_limit_chars_per_minute=1000) as replicas:
        (a, _), _ = replicas
        assert a.post("/translate", json={"text": THANKS}).status_code == 200
        redis_server.stop()
        _state_unavailable(a.post("/translate", json={"text": THANKS}))  # a limit that cannot be checked holds
        _state_unavailable(a.get("/v1/models"))
        assert a.get("/healthz").status_code == 200 and a.get("/metrics").status_code == 200
        redis_server.start()
        assert a.post("/translate", json={"text": THANKS}).status_code == 200


# --- the stores on a real Redis ------------------------------------------------------------------------

def test_redis_glossary_store_versions_and_compiled_copies(redis_server):
    one, two = (RedisGlossaryStore(connect(redis_server.url, 2.0)) for _ in range(2))  # two replicas' stores
    created = one.create("desk", {"روسيا": "Russia"}, LIMITS)
    assert (created.version, created.entries) == (1, {"روسيا": "Russia"})
    assert two.get("desk") is two.get("desk")  # compiled once per version read
    replaced = one.replace("desk", {"روسيا": "Moscow"}, LIMITS)
    seen = two.get("desk")
    assert (seen.version, seen.entries, seen.created_at) == (2, {"روسيا": "Moscow"}, created.created_at)
    assert replaced.updated_at >= created.updated_at and two.compiled_versions() == {"desk": 2}
    one.delete("desk")
    with pytest.raises(ServiceError) as gone:
        two.get("desk")
    assert gone.value.code == "unknown_glossary"
    again = one.create("desk", {"روسيا": "Russia"}, LIMITS)
    assert again.version == 1 and two.get("desk").cache_context != seen.cache_context  # a new creation
    assert [g.name for g in two.list()] == ["desk"]


def test_redis_glossary_store_caps_and_errors(redis_server):
    store = RedisGlossaryStore(connect(redis_server.url, 2.0))
    store.create("a", {"روسيا": "Russia"}, LIMITS)
    store.replace("b", {"روسيا": "Russia"}, LIMITS)  # PUT creates within the cap
    for attempt in (lambda: store.create("c", {"روسيا": "Russia"}, LIMITS),
                    lambda: store.replace("c", {"روسيا": "Russia"}, LIMITS)):
        with pytest.raises(ServiceError) as full:
            attempt()
        assert full.value.code == "too_many_glossaries"
    store.replace("a", {"طبرق": "Tobruk"}, LIMITS)  # replacing takes no new place
    for name, entries, code in [("a", {"روسيا": "Russia"}, "glossary_exists"),
                                ("x", {"ا" * 13: "long"}, "glossary_term_too_long"),
                                ("x", {"روسيا": "Russia\u202e"}, "invalid_glossary")]:
        with pytest.raises(ServiceError) as refused:
            store.create(name, entries, LIMITS)
        assert refused.value.code == code
    with pytest.raises(ServiceError) as missing:
        store.delete("nope")
    assert missing.value.code == "unknown_glossary"
    redis_server.stop()
    with pytest.raises(ServiceError) as down:
        store.get("a")
    assert down.value.code == "state_unavailable" and down.value.headers == {"Retry-After": "1"}


def test_redis_token_buckets_are_one_budget_on_the_server_clock(redis_server):
    client = connect(redis_server.url, 2.0)
    one, two = RedisTokenBuckets(client, "requests", 6000), RedisTokenBuckets(client, "requests", 6000)  # 100/s
    assert one.take("k", 3000) == 0 and two.take("k", 3000) == 0  # the whole minute, spent through both
    wait_s = one.take("k", 50)
    assert 0.3 < wait_s <= 0.5  # ~50 tokens short at 100 per second (a few ms may have refilled)
    time.sleep(wait_s + 0.05)
    assert two.take("k", 50) == 0  # refilled, continuously
    assert one.take("other", 1) == 0  # keys are independent
    assert 0 < client.pttl("model-server:ratelimit:requests:k") <= 60_000  # gone once it would be full again
    redis_server.stop()
    with pytest.raises(ServiceError) as down:
        one.take("k")
    assert down.value.code == "state_unavailable"


def test_open_state_chooses_by_state_url(redis_server, tmp_path):
    embedded = open_state(Settings(state_path=tmp_path / "s.sqlite3"))
    shared = open_state(Settings(state_url=redis_server.url))
    assert isinstance(embedded, EmbeddedState) and embedded.health() is None
    assert isinstance(shared, RedisState) and shared.health() == {"store": "redis", "reachable": True}
    assert embedded.glossaries.list() == [] and shared.glossaries.list() == []
    embedded.close()
    shared.close()


def test_state_path_keeps_its_old_name_cache_path(tmp_path, monkeypatch):
    from model_server.cli_common import add_settings_flags, settings_from

    assert Settings(cache_path=tmp_path / "old.sqlite3").state_file() == tmp_path / "old.sqlite3"
    monkeypatch.setenv("MODEL_SERVER_CACHE_PATH", str(tmp_path / "env.sqlite3"))
    assert Settings().state_path == tmp_path / "env.sqlite3"
    monkeypatch.setenv("MODEL_SERVER_STATE_PATH", str(tmp_path / "new.sqlite3"))
    assert Settings().state_path == tmp_path / "new.sqlite3"  # the new name wins
    import argparse

    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    flags = settings_from(parser.parse_args(["--cache-path", str(tmp_path / "flag.sqlite3")]))
    assert flags.state_path == flags.cache_path == tmp_path / "flag.sqlite3"
