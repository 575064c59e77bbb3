"""Limits inside the pipeline: the token-count memo keeps no long strings, and a request with more segments
than the batch queue can ever hold gets 413 too_many_segments (never a 503 queue_full no retry can cure)."""

from __future__ import annotations

import asyncio
import re

import pytest

from model_server.batching.batcher import DynamicBatcher
from model_server.errors import ServiceError
from model_server.pipeline import TOKEN_COUNT_MEMO_MAX_CHARS, TokenCounter
from model_server.presets import PresetCatalog
from model_server.services import Services, load_summarization_backend
from tests.conftest import SAMPLE_AR, assert_error, serve_services, tiny_settings
from tests.fakes import DelegatingBackend

SENTENCES = ["مرحبا بالعالم.", "شكرا جزيلا.", "الطقس جميل اليوم.", "مرحبا بالعالم."]
TRANSLATIONS = ["Hello world.", "Thank you very much.", "The weather is nice today.", "Hello world."]


# --- the token-count memo ----------------------------------------------------------------------

def test_short_strings_are_memoized_and_long_ones_counted_afresh_without_being_kept():
    calls: list[str] = []

    def count(text: str) -> int:
        calls.append(text)
        return len(text.split())

    counter = TokenCounter(count)
    short = "كلمة " * (TOKEN_COUNT_MEMO_MAX_CHARS // 5)  # exactly the bound: still memoized
    long = short + "أخرى"
    assert len(short) == TOKEN_COUNT_MEMO_MAX_CHARS
    assert counter(short) == counter(short) == TOKEN_COUNT_MEMO_MAX_CHARS // 5
    assert counter(long) == counter(long) == TOKEN_COUNT_MEMO_MAX_CHARS // 5 + 1
    assert calls == [short, long, long]  # the long one reached the tokenizer each time
    assert counter.cache_info().currsize == 1  # and only the short one is kept


def test_the_pipeline_keeps_no_long_segment_in_its_memo(tiny_marian_dir, tiny_backend):
    pipeline = Services.from_backend(tiny_settings(tiny_marian_dir), DelegatingBackend(tiny_backend)).translator
    huge = "كلمة " * 10_000
    assert pipeline.count_tokens(huge) == tiny_backend.count_tokens(huge)
    assert pipeline.count_tokens.cache_info().currsize == 0
    pipeline.count_tokens(SENTENCES[0])
    assert pipeline.count_tokens.cache_info().currsize == 1


# --- too_many_segments -------------------------------------------------------------------------

def test_the_batcher_refuses_more_than_its_queue_holds_without_queueing_any():
    async def scenario():
        async def echo(group, payloads):
            return payloads

        batcher = DynamicBatcher(echo, max_batch_size=8, max_batch_tokens=1000, max_wait_ms=0, max_queue_items=3)
        batcher.start()
        with pytest.raises(ServiceError) as caught:
            batcher.submit_many(["a", "b", "c", "d"], costs=[1] * 4, group="g")
        assert caught.value.code == "too_many_segments" and caught.value.status == 413
        assert "Retry-After" not in caught.value.headers  # retrying is no use
        assert batcher.pending() == 0 and batcher.stats.rejected_full == 0
        assert await asyncio.gather(*batcher.submit_many(["a", "b", "c"], costs=[1] * 3, group="g")) == ["a", "b", "c"]
        await batcher.close()

    asyncio.run(asyncio.wait_for(scenario(), 10))


@pytest.fixture
def small_queue_server(tiny_marian_dir, tiny_backend):
    backend = DelegatingBackend(tiny_backend)
    services = Services.from_backend(tiny_settings(tiny_marian_dir, max_queue_segments=3), backend)
    with serve_services(services) as server:
        yield server, backend


@pytest.mark.parametrize("payload", [
    pytest.param({"text": " ".join(SENTENCES)}, id="one-text"),
    pytest.param({"texts": [" ".join(SENTENCES[:2]), " ".join(SENTENCES[2:])]}, id="several-texts"),
])
def test_a_request_with_more_segments_than_the_queue_holds_gets_413_naming_count_and_limit(small_queue_server,
                                                                                          payload):
    server, backend = small_queue_server
    with server.client() as client:
        response = client.post("/translate", json=payload)
        error = assert_error(response, 413, "too_many_segments")
        assert re.search(r"\b4 segments\b", error["message"]) and re.search(r"\bat most 3\b", error["message"])
        assert "retry-after" not in response.headers
        assert backend.generate_calls == 0  # refused before anything was queued
        # What fits is translated as usual.
        fits = client.post("/translate", json={"text": " ".join(SENTENCES[:3])})
    assert fits.status_code == 200, fits.text
    assert fits.json()["results"][0]["translation"] == " ".join(TRANSLATIONS[:3])


def test_the_compat_apis_refuse_too_many_segments_in_their_own_shape(small_queue_server):
    server, backend = small_queue_server
    text = " ".join(SENTENCES)
    with server.client() as client:
        deepl = client.post("/v2/translate", data={"text": text, "target_lang": "EN"})
        libre = client.post("/libretranslate/translate", json={"q": text, "source": "ar", "target": "en"})
    assert deepl.status_code == 413 and "at most 3" in deepl.json()["message"]   # DeepL: too large
    assert libre.status_code == 400 and "at most 3" in libre.json()["error"]     # LibreTranslate: bad input
    assert backend.generate_calls == 0


def test_a_summary_with_more_chunks_than_the_queue_holds_gets_413(tiny_marian_dir, tiny_mt5_dir, tiny_backend):
    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(tiny_mt5_dir),
                             summary_max_input_tokens=256, max_queue_segments=4, max_text_chars=20_000)
    summarizer = DelegatingBackend(load_summarization_backend(settings))
    services = Services.from_backend(
        settings, DelegatingBackend(tiny_backend), summarization_backend=summarizer,
        presets=PresetCatalog.load(settings.prompts_path(), settings.default_summary_preset))
    with serve_services(services) as server, server.client() as client:
        response = client.post("/summarize", json={"text": SAMPLE_AR})  # 8 chunks of 256 tokens
    error = assert_error(response, 413, "too_many_segments")
    assert re.search(r"\b8 segments\b", error["message"]) and re.search(r"\bat most 4\b", error["message"])
    assert summarizer.generate_calls == 0
