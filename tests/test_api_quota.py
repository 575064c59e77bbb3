"""The character quota per API key per billing period (model_server/api/quota.py): charged by every
translation route (main API, /v1/jobs, DeepL, LibreTranslate) before model work, reported by DeepL's
GET /v2/usage, refused past the limit (403 quota_exceeded; DeepL 456, not retried by its client). The
counting stores (model_server/state/quotas.py) against SQLite and a real Redis: atomic, per period."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest

from model_server.api.routes.deepl import NO_LIMIT
from model_server.state.quotas import Period, RedisCharCounts, SqliteCharCounts
from model_server.state.redis_client import connect
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import LiveServer, assert_error, tiny_settings

deepl = pytest.importorskip("deepl")
libretranslatepy = pytest.importorskip("libretranslatepy")

MEMORISED = dict(MEMORISED_PAIRS)
THANKS = "شكرا جزيلا."            # 11 characters
AGREEMENT = "اتفاق دفاعي بين الطرفين"
QUOTA = 60
KEYS = {name: f"secret-{name}" for name in ("spender", "neighbour", "jobs")}


@pytest.fixture(scope="module")
def quota_server(tiny_marian_dir):
    from model_server.api.app import create_app

    settings = tiny_settings(tiny_marian_dir, api_keys=",".join(f"{n}:{k}" for n, k in KEYS.items()),
                             char_quota_per_period=QUOTA)
    with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture(autouse=True)
def no_deepl_retries(monkeypatch):
    monkeypatch.setattr(deepl.http_client, "max_network_retries", 0)


def usage(server, key: str) -> tuple[int, int]:
    found = deepl.Translator(key, server_url=server.base_url).get_usage().character
    return found.count, found.limit


def test_every_translation_route_spends_the_keys_quota_until_it_is_refused(quota_server):
    key = KEYS["spender"]
    translator = deepl.Translator(key, server_url=quota_server.base_url)
    assert usage(quota_server, key) == (0, QUOTA)
    result = translator.translate_text(THANKS, target_lang="EN-US")
    assert result.text == MEMORISED[THANKS] and result.billed_characters == len(THANKS)
    assert usage(quota_server, key) == (len(THANKS), QUOTA)
    with quota_server.client(headers={"X-API-Key": key}) as client:
        assert client.post("/translate", json={"text": THANKS}).status_code == 200
        lt = libretranslatepy.LibreTranslateAPI(f"{quota_server.base_url}/libretranslate/", api_key=key)
        assert lt.translate(THANKS, "ar", "en") == MEMORISED[THANKS]
        assert usage(quota_server, key) == (3 * len(THANKS), QUOTA)
        # 33 of 60 spent: 23 more (AGREEMENT) would be 56, allowed; then 11 more would be 67: refused whole.
        assert translator.translate_text(AGREEMENT, target_lang="EN-US").billed_characters == len(AGREEMENT)
        with pytest.raises(deepl.QuotaExceededException, match="character quota spent: 56 of 60"):
            translator.translate_text(THANKS, target_lang="EN-US")
        assert_error(client.post("/translate", json={"text": THANKS}), 403, "quota_exceeded")
        libre = client.post("/libretranslate/translate", json={"q": THANKS, "source": "ar", "target": "en"})
        assert libre.status_code == 403 and "quota" in libre.json()["error"]
        assert usage(quota_server, key) == (56, QUOTA)   # refusals cost nothing
        assert client.post("/translate", json={"text": "شكرا"}).status_code == 200   # 4 more fit exactly
    assert usage(quota_server, key) == (QUOTA, QUOTA)
    assert deepl.Translator(key, server_url=quota_server.base_url).get_usage().any_limit_reached
    # Another key has its own quota.
    neighbour = KEYS["neighbour"]
    assert deepl.Translator(neighbour, server_url=quota_server.base_url).translate_text(
        THANKS, target_lang="EN-US").text == MEMORISED[THANKS]
    assert usage(quota_server, neighbour) == (len(THANKS), QUOTA)


def test_a_job_is_charged_when_submitted_and_a_request_above_the_whole_quota_never_passes(quota_server):
    key = KEYS["jobs"]
    with quota_server.client(headers={"X-API-Key": key}) as client:
        assert client.post("/v1/jobs", json={"texts": [THANKS, AGREEMENT]}).status_code == 202
        assert usage(quota_server, key) == (len(THANKS) + len(AGREEMENT), QUOTA)
        error = assert_error(client.post("/v1/jobs", json={"text": "ب" * (QUOTA + 1)}), 403, "quota_exceeded")
    assert "more than the whole quota of 60 per month" in error["message"]
    with pytest.raises(deepl.QuotaExceededException):
        deepl.Translator(key, server_url=quota_server.base_url).translate_text("ب" * (QUOTA + 1), target_lang="EN-US")
    assert usage(quota_server, key) == (len(THANKS) + len(AGREEMENT), QUOTA)


def test_without_auth_or_limit_usage_is_the_servers_count_and_reports_no_limit(tiny_marian_dir):
    from model_server.api.app import create_app

    with LiveServer(create_app(tiny_settings(tiny_marian_dir))) as server:
        translator = deepl.Translator("any-key", server_url=server.base_url)
        before = translator.get_usage()
        assert (before.character.count, before.character.limit) == (0, NO_LIMIT) and not before.any_limit_reached
        translator.translate_text(THANKS, target_lang="EN-US")
        with server.client() as client:
            client.post("/translate", json={"texts": [THANKS, AGREEMENT]})
            posted = client.post("/v2/usage", data={"auth_key": "anything"}).json()   # POST, as old clients
        after = deepl.Translator("another-key", server_url=server.base_url).get_usage()   # one server-wide count
    assert after.character.count == 2 * len(THANKS) + len(AGREEMENT) == posted["character_count"]


def test_periods_are_calendar_months_and_days_in_utc():
    late = datetime(2026, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    assert Period.containing(late, "month") == Period("2026-12", datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert Period.containing(late, "day") == Period("2026-12-31", datetime(2027, 1, 1, tzinfo=timezone.utc))
    assert Period.containing(datetime(2026, 2, 10, tzinfo=timezone.utc), "month").ends_at.month == 3


def _spend_concurrently(counts, period: Period, limit: int) -> int:
    """8 threads charging 1 character 40 times each against `limit`: how many were charged."""
    charged = []

    def spend() -> None:
        charged.extend(ok for ok, _ in (counts.charge("desk", period, 1, limit) for _ in range(40)) if ok)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(charged)


def test_sqlite_counts_are_atomic_per_period_and_forget_past_periods(tmp_path):
    counts = SqliteCharCounts(tmp_path / "state.sqlite3")
    december, january = Period("2026-12", datetime(2027, 1, 1, tzinfo=timezone.utc)), Period(
        "2027-01", datetime(2027, 2, 1, tzinfo=timezone.utc))
    assert _spend_concurrently(counts, december, 100) == 100 and counts.count("desk", december) == 100
    assert counts.charge("desk", december, 5, 0) == (True, 105)   # no limit: always counted
    assert counts.charge("desk", january, 7, 100) == (True, 7) and counts.count("desk", december) == 0
    assert counts.charge("desk", january, 101, 100) == (False, 7)
    assert counts.charge("desk", january, -3, 100) == (True, 4) and counts.charge("desk", january, -9, 0) == (True, 0)


def test_redis_counts_are_atomic_shared_and_expire_at_the_periods_end(redis_server):
    client = connect(redis_server.url, 2.0)
    replicas = [RedisCharCounts(client), RedisCharCounts(connect(redis_server.url, 2.0))]
    ends_at = datetime.fromtimestamp(int(time.time()) + 3600, tz=timezone.utc)
    period = Period("2026-12", ends_at)
    assert _spend_concurrently(replicas[0], period, 100) == 100
    assert replicas[1].charge("desk", period, 1, 100) == (False, 100)   # the other replica sees one count
    assert replicas[1].charge("desk", period, 1, 0) == (True, 101)
    ttl = client.ttl("model-server:chars:2026-12:desk")
    assert 3590 <= ttl <= 3600
    assert replicas[0].charge("desk", period, -1, 0) == (True, 100)   # a refund
    assert replicas[0].charge("desk", period, -500, 0) == (True, 0)   # never below 0


def test_articles_are_charged_and_summaries_alone_are_not(tiny_marian_dir, tiny_mt5_dir):
    from model_server.api.app import create_app

    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(tiny_mt5_dir),
                             max_text_chars=20_000)
    with LiveServer(create_app(settings)) as server, server.client() as client:
        assert client.post("/summarize", json={"text": AGREEMENT}).status_code == 200
        assert usage(server, "any-key") == (0, NO_LIMIT)
        article = client.post("/v1/articles", json={"title": THANKS, "body": AGREEMENT})
        assert article.status_code == 200, article.text
        assert usage(server, "any-key") == (len(THANKS) + len(AGREEMENT), NO_LIMIT)


def test_replicas_sharing_a_state_redis_spend_one_quota(tiny_marian_dir, tiny_backend, redis_server):
    from model_server.services import Services
    from tests.conftest import serve_services
    from tests.fakes import DelegatingBackend   # the session's backend must survive these servers

    settings = tiny_settings(tiny_marian_dir, state_url=redis_server.url, char_quota_per_period=30,
                             api_keys=f"desk:{KEYS['spender']}")
    with serve_services(Services.from_backend(settings, DelegatingBackend(tiny_backend))) as a, \
            serve_services(Services.from_backend(settings, DelegatingBackend(tiny_backend))) as b:
        on_a, on_b = (deepl.Translator(KEYS["spender"], server_url=s.base_url) for s in (a, b))
        assert on_a.translate_text(THANKS, target_lang="EN-US").text == MEMORISED[THANKS]
        assert on_b.translate_text(THANKS, target_lang="EN-US").text == MEMORISED[THANKS]
        with pytest.raises(deepl.QuotaExceededException):   # 22 + 11 > 30, whichever replica
            on_a.translate_text(THANKS, target_lang="EN-US")
        assert usage(b, KEYS["spender"]) == (2 * len(THANKS), 30)


def test_a_state_redis_outage_refuses_a_quota_and_only_pauses_the_count_without_one(redis_server, caplog):
    import asyncio

    from model_server.api.quota import CharQuota
    from model_server.errors import ServiceError
    from model_server.state import RedisState

    state = RedisState(redis_server.url, 0.5)
    limited, counting = CharQuota(state, limit=100), CharQuota(state, limit=0)
    asyncio.run(counting.charge("desk", 5))
    assert asyncio.run(counting.usage("desk")) == 5
    redis_server.stop()
    with pytest.raises(ServiceError) as refused:   # fail closed: an outage never lifts a quota
        asyncio.run(limited.charge("desk", 5))
    assert refused.value.code == "state_unavailable"
    with caplog.at_level("WARNING", logger="model_server.api.quota"):
        for _ in range(3):
            asyncio.run(counting.charge("desk", 5))   # translations go on, uncounted
    assert caplog.text.count("characters not counted for 30 s") == 1   # one attempt, then the pause
    state.close()


def test_retried_failures_and_job_replays_are_charged_once(tiny_marian_dir, tiny_backend, monkeypatch):
    """A DeepL request that times out (504, which the client retries) gives its characters back; so does a
    /v1/jobs replay (same Idempotency-Key). A text found not to be Arabic stays charged."""
    from model_server.services import Services
    from tests.conftest import serve_services
    from tests.fakes import GatedBackend

    monkeypatch.setattr(deepl.http_client, "max_network_retries", 1)
    monkeypatch.setattr(deepl.http_client._BackoffTimer, "BACKOFF_INITIAL", 0.05)
    backend = GatedBackend(tiny_backend)
    settings = tiny_settings(tiny_marian_dir, request_timeout_s=0.5, max_wait_ms=0, char_quota_per_period=1000)
    with serve_services(Services.from_backend(settings, backend)) as server:
        translator = deepl.Translator("any-key", server_url=server.base_url)
        with pytest.raises(deepl.DeepLException, match="504"):   # tried twice, timed out twice
            translator.translate_text(THANKS, target_lang="EN-US")
        assert usage(server, "any-key") == (0, 1000)
        backend.gate.set()
        assert translator.translate_text(THANKS, target_lang="EN-US").text == MEMORISED[THANKS]
        with server.client() as client:
            for _ in range(2):
                submitted = client.post("/v1/jobs", json={"text": AGREEMENT}, headers={"Idempotency-Key": "a-1"})
                assert submitted.status_code in (200, 202)
            assert client.post("/v2/translate", json={"text": ["Not Arabic"], "target_lang": "EN"}).status_code == 400
        assert usage(server, "any-key") == (len(THANKS) + len(AGREEMENT) + len("Not Arabic"), 1000)
