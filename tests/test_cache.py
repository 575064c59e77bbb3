"""Sentence-level translation cache (model_server/cache.py): units on the stores, then real servers on
loopback with the tiny Marian model: a re-sent article only translates its edited sentence, a restarted
server still hits, a broken cache file degrades to no cache."""

from __future__ import annotations

import asyncio

import pytest

from model_server.backends.base import Generated, GenerationOptions, ModelInfo
from model_server.cache import (CachedOutput, RedisCache, SQLiteCache, TranslationCache, cache_key, model_identity,
                                open_store)
from tests.conftest import SAMPLE_AR, serve_services, tiny_settings

INFO = ModelInfo(name="m", source="/nowhere", task="translation", architecture="marian", backend="torch",
                 device="cpu", dtype="float32", max_input_tokens=512)
EDITED_AR = SAMPLE_AR.replace("6000 طن", "7000 طن")


def test_keys_depend_on_model_options_context_and_text():
    identity = model_identity(INFO)
    base = cache_key(identity, GenerationOptions(), "مرحبا")
    assert base == cache_key(identity, GenerationOptions(), "مرحبا")
    assert base != cache_key(identity, GenerationOptions(num_beams=4), "مرحبا")
    assert base != cache_key(identity, GenerationOptions(), "مرحبا.")
    assert base != cache_key(identity, GenerationOptions(), "مرحبا", context="glossary:1")
    other = model_identity(INFO.model_copy(update={"dtype": "bfloat16"}))
    assert base != cache_key(other, GenerationOptions(), "مرحبا")


def test_sqlite_store_persists_and_evicts_least_recently_used(tmp_path):
    path = tmp_path / "c.sqlite3"
    store = SQLiteCache(path, max_entries=10)
    store.put_many({f"k{i}": f"v{i}" for i in range(10)})
    assert store.get_many(["k0"]) == {"k0": "v0"}  # k0 is now the most recently used
    store.put_many({"k10": "v10"})
    assert len(store) <= 10
    assert store.get_many(["k0", "k10", "k1"]) == {"k0": "v0", "k10": "v10"}  # k1 (oldest) evicted
    store.close()
    reopened = SQLiteCache(path, max_entries=10)
    assert reopened.get_many(["k10"]) == {"k10": "v10"}
    assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


class FakeRedis:
    """The three calls RedisCache makes (mget, pipeline().set/execute)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.expiries: dict[str, int | None] = {}

    def mget(self, keys):
        return [self.data.get(key) for key in keys]

    def pipeline(self):
        return self

    def set(self, key, value, ex=None):
        self.data[key] = value.encode()
        self.expiries[key] = ex

    def execute(self):
        pass


def test_redis_store_round_trip_with_a_fake_client():
    fake = FakeRedis()
    store = RedisCache("redis://unused", ttl_s=60, client=fake)
    value = CachedOutput(Generated("Hello world.", -0.1, 4, False), retried=True).dumps()
    store.put_many({"a": value})
    assert list(fake.data) == ["model_server:tc:a"] and fake.expiries["model_server:tc:a"] == 60
    assert CachedOutput.loads(store.get_many(["a", "b"])["a"]) == CachedOutput(Generated("Hello world.", -0.1, 4,
                                                                                         False), True)


class BrokenStore:
    def get_many(self, keys):
        raise OSError("disk I/O error")

    def put_many(self, items):
        raise OSError("disk I/O error")

    def close(self):
        pass


def test_store_failures_are_misses_and_counted_never_errors():
    cache = TranslationCache(BrokenStore(), INFO)
    events = []
    cache.observer = lambda kind, count: events.append((kind, count))

    async def scenario():
        assert await cache.lookup(["k"]) == {}
        await cache.store_many({"k": CachedOutput(Generated("x", 0.0, 1, False))})

    asyncio.run(scenario())
    cache.close()
    assert cache.counters.errors == 2 and events == [("error", 1), ("error", 1)]


def test_uninstalled_or_unreachable_redis_degrades_to_no_cache(tmp_path):
    store, failed = open_store(enabled=True, path=tmp_path / "unused", url="redis://127.0.0.1:1/0", max_entries=10)
    cache = TranslationCache(store, INFO)

    async def lookup():
        return await cache.lookup(["k"])

    assert asyncio.run(lookup()) == {}
    cache.close()
    assert failed or cache.counters.errors == 1  # no `redis` package: refused at open; else: connection refused


def _batched_segments(client) -> int:
    return client.get("/v1/models").json()["batching"]["translation"]["segments"]


def _without_cache(result: dict) -> dict:
    """The result minus its cache counts, scores rounded: a sentence batched with different neighbours
    may score a last-digit different (padding), never translate differently."""
    out = {key: value for key, value in result.items() if key != "cache"}
    out["sentences"] = [{**s, "score": round(s["score"], 4)} for s in result["sentences"]]
    return out


def test_resent_article_translates_only_the_edited_sentence_and_survives_restart(tiny_marian_dir, tmp_path):
    from model_server.services import Services

    path = tmp_path / "cache.sqlite3"
    settings = tiny_settings(tiny_marian_dir, cache_enabled=True, cache_path=path, max_new_tokens=64)
    with serve_services(Services.load(settings)) as server, server.client() as client:
        first = client.post("/translate", json={"text": SAMPLE_AR}).json()["results"][0]
        segments = len(first["sentences"])
        assert first["cache"] == {"hits": 0, "misses": segments}
        before = _batched_segments(client)
        edited = client.post("/translate", json={"text": EDITED_AR}).json()["results"][0]
        model_work = _batched_segments(client) - before
        metrics = client.get("/metrics").text
    changed = [s for s in edited["sentences"] if "7000" in s["source"]]
    assert len(changed) == 1
    assert edited["cache"] == {"hits": segments - 1, "misses": 1}
    # ONE segment went to the model (plus its one quality retry when it was flagged).
    assert model_work == 1 + ("retried" in changed[0]["flags"])
    assert 'model_server_cache_misses_total{model="translation"} %.1f' % (segments + 1) in metrics
    assert 'model_server_cache_hits_total{model="translation"} %.1f' % (segments - 1) in metrics

    # The same edited article without a cache: identical results.
    with serve_services(Services.load(tiny_settings(tiny_marian_dir, max_new_tokens=64))) as server, \
            server.client() as client:
        uncached = client.post("/translate", json={"text": EDITED_AR}).json()["results"][0]
    assert uncached["cache"] is None
    assert _without_cache(uncached) == _without_cache(edited)

    # A restarted server on the same file: everything hits, nothing reaches the model, flags kept.
    with serve_services(Services.load(settings)) as server, server.client() as client:
        again = client.post("/translate", json={"text": EDITED_AR}).json()["results"][0]
        assert _batched_segments(client) == 0
    assert again["cache"] == {"hits": segments, "misses": 0}
    assert _without_cache(again) == _without_cache(edited)


@pytest.mark.parametrize("breakage", ["corrupt-file", "path-is-a-directory"])
def test_a_broken_cache_file_degrades_to_no_cache(tiny_marian_dir, tmp_path, breakage):
    from model_server.services import Services

    path = tmp_path / "cache.sqlite3"
    if breakage == "corrupt-file":
        path.write_bytes(b"this is not a database" * 100)
    else:
        path.mkdir()
    settings = tiny_settings(tiny_marian_dir, cache_enabled=True, cache_path=path)
    with serve_services(Services.load(settings)) as server, server.client() as client:
        for _ in range(2):
            response = client.post("/translate", json={"text": "مرحبا بالعالم."})
            assert response.status_code == 200, response.text
            assert response.json()["results"][0]["translation"] == "Hello world."
        metrics = client.get("/metrics").text
    assert 'model_server_cache_errors_total{model="translation"} 1.0' in metrics
