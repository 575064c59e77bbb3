"""The compat APIs with the service's API keys and character budget on: DeepL-Auth-Key and LibreTranslate's
api_key map onto the service's keys; refusals (403, 429, 456) come in each API's own shape."""

from __future__ import annotations

import json
import time
import urllib.error

import pytest

from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import LiveServer, tiny_settings

deepl = pytest.importorskip("deepl")
libretranslatepy = pytest.importorskip("libretranslatepy")

MEMORISED = dict(MEMORISED_PAIRS)
THANKS = "شكرا جزيلا."
KEY, BURST_KEY = "secret-key-1", "secret-key-2"
CHARS_PER_MINUTE = 400


@pytest.fixture(scope="module")
def keyed_server(tiny_marian_dir):
    from model_server.api.app import create_app

    settings = tiny_settings(tiny_marian_dir, api_keys=f"cms:{KEY},burst:{BURST_KEY}",
                             rate_limit_chars_per_minute=CHARS_PER_MINUTE)
    with LiveServer(create_app(settings)) as server:
        yield server


@pytest.fixture(autouse=True)
def no_deepl_retries(monkeypatch):
    monkeypatch.setattr(deepl.http_client, "max_network_retries", 0)


def test_deepl_auth_key_is_the_service_key(keyed_server):
    assert deepl.Translator(KEY, server_url=keyed_server.base_url).translate_text(
        THANKS, target_lang="EN-US").text == MEMORISED[THANKS]
    with pytest.raises(deepl.AuthorizationException):
        deepl.Translator("wrong-key", server_url=keyed_server.base_url).translate_text(THANKS, target_lang="EN-US")
    with keyed_server.client() as client:
        anonymous = client.post("/v2/translate", json={"text": [THANKS], "target_lang": "EN-US"})
        bearer = client.post("/v2/translate", json={"text": [THANKS], "target_lang": "EN-US"},
                             headers={"Authorization": f"Bearer {KEY}"})
    assert anonymous.status_code == 403 and set(anonymous.json()) == {"message"}   # DeepL: 403, not 401
    assert bearer.status_code == 200   # the service's own headers work too


def test_deepl_request_above_the_character_budget_is_quota_exceeded(keyed_server):
    translator = deepl.Translator(KEY, server_url=keyed_server.base_url)
    with pytest.raises(deepl.QuotaExceededException):
        translator.translate_text("ا" * (CHARS_PER_MINUTE + 1), target_lang="EN-US")


def test_libretranslate_api_key_in_form_json_or_query(keyed_server):
    lt = libretranslatepy.LibreTranslateAPI(f"{keyed_server.base_url}/libretranslate/", api_key=KEY)
    assert lt.translate(THANKS, "ar", "en") == MEMORISED[THANKS]
    assert lt.languages()[0]["code"] == "ar"   # a GET whose key is in a form body
    assert lt.detect(THANKS)[0]["language"] == "ar"
    with keyed_server.client() as client:
        as_json = client.post("/libretranslate/translate", json={"q": THANKS, "source": "ar", "target": "en",
                                                                 "api_key": KEY})
        in_query = client.post(f"/libretranslate/translate?api_key={KEY}", json={"q": THANKS, "source": "ar",
                                                                                 "target": "en"})
    assert as_json.json() == in_query.json() == {"translatedText": MEMORISED[THANKS]}


@pytest.mark.parametrize("api_key", [None, "wrong-key"])
def test_libretranslate_without_a_valid_key_is_403_in_its_shape(keyed_server, api_key):
    lt = libretranslatepy.LibreTranslateAPI(f"{keyed_server.base_url}/libretranslate/", api_key=api_key)
    with pytest.raises(urllib.error.HTTPError) as raised:
        lt.translate(THANKS, "ar", "en")
    assert raised.value.code == 403
    assert set(json.loads(raised.value.read())) == {"error"}


def test_rate_limited_is_429_in_both_shapes(keyed_server):
    with keyed_server.client() as client:
        spend = client.post("/v2/translate", json={"text": ["a" * (CHARS_PER_MINUTE - 10)], "target_lang": "EN-US"},
                            headers={"Authorization": f"DeepL-Auth-Key {BURST_KEY}"})
        assert spend.status_code == 400   # charged, then refused as not Arabic
        libre = client.post("/libretranslate/translate", json={"q": "a" * 20, "source": "ar", "target": "en",
                                                               "api_key": BURST_KEY})
    assert libre.status_code == 429 and libre.json()["error"].startswith("Slowdown: ")
    assert int(libre.headers["retry-after"]) >= 1
    with pytest.raises(deepl.TooManyRequestsException):
        deepl.Translator(BURST_KEY, server_url=keyed_server.base_url).translate_text("a" * 20, target_lang="EN-US")


def test_legacy_auth_key_in_a_form_body_or_the_query_string(keyed_server):
    with keyed_server.client() as client:
        # wagtail-style: a form-encoded body holding text and auth_key, no Authorization header
        form = client.post("/v2/translate", content=f"text={THANKS}&target_lang=EN-US&auth_key={KEY}".encode(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
        query = client.get(f"/v2/usage?auth_key={KEY}")
        wrong = client.post("/v2/translate", data={"text": THANKS, "target_lang": "EN-US", "auth_key": "nope"})
        missing = client.post("/v2/translate", data={"text": THANKS, "target_lang": "EN-US"})
    assert form.status_code == 200, form.text
    assert form.json()["translations"][0]["text"] == MEMORISED[THANKS]
    assert query.status_code == 200 and set(query.json()) == {"character_count", "character_limit"}
    assert wrong.status_code == missing.status_code == 403 and set(wrong.json()) == {"message"}


def test_the_deepl_key_covers_usage_and_glossaries(keyed_server):
    translator = deepl.Translator(KEY, server_url=keyed_server.base_url)
    assert translator.get_usage().character.limit > 0
    created = translator.create_glossary("desk", "ar", "en", {"روسيا": "Russia"})
    assert [g.glossary_id for g in translator.list_glossaries()] == [created.glossary_id]
    translator.delete_glossary(created)
    stranger = deepl.Translator("wrong-key", server_url=keyed_server.base_url)
    for call in (stranger.get_usage, stranger.list_glossaries, stranger.get_glossary_languages):
        with pytest.raises(deepl.AuthorizationException):
            call()


def test_busy_answers_are_retried_by_the_client_and_an_exhausted_quota_is_not(tiny_marian_dir, monkeypatch, caplog):
    """429 (here: the per-minute request budget) is retried with backoff and then succeeds; 456 is final."""
    from model_server.api.app import create_app

    monkeypatch.setattr(deepl.http_client, "max_network_retries", 2)
    monkeypatch.setattr(deepl.http_client._BackoffTimer, "BACKOFF_INITIAL", 1.5)   # > one token's refill (1 s)
    settings = tiny_settings(tiny_marian_dir, rate_limit_requests_per_minute=60, char_quota_per_period=20)
    with LiveServer(create_app(settings)) as server:
        with server.client() as client:
            while client.get("/v2/languages").status_code != 429:   # spend the minute's requests
                pass
        translator = deepl.Translator("any-key", server_url=server.base_url)
        with caplog.at_level("INFO", logger="deepl"):
            assert translator.translate_text(THANKS, target_lang="EN-US").text == MEMORISED[THANKS]
            assert "Starting retry 1" in caplog.text
            caplog.clear()
            time.sleep(1.2)   # a request token again: this one meets the quota, not the rate limit
            started = time.monotonic()
            with pytest.raises(deepl.QuotaExceededException):   # 11 + 11 > 20
                translator.translate_text(THANKS, target_lang="EN-US")
            assert "Starting retry" not in caplog.text and time.monotonic() - started < 1.0
