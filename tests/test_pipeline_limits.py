"""Limits inside the pipeline: the token-count memo keeps no long strings."""

from __future__ import annotations

from model_server.pipeline import TOKEN_COUNT_MEMO_MAX_CHARS, TokenCounter
from model_server.services import Services
from tests.conftest import tiny_settings
from tests.fakes import DelegatingBackend

SENTENCES = ["مرحبا بالعالم.", "شكرا جزيلا.", "الطقس جميل اليوم.", "مرحبا بالعالم."]


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
