"""Tests for model_server.text.chunk: splitting over-long sentences for the model."""

from __future__ import annotations

import random
import time
import unicodedata
from pathlib import Path

import pytest

from model_server.text import chunk_sentence, normalize_text

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ImportError:  # hypothesis is a dev extra; the loop-based test below still runs
    given = None

DATA = Path(__file__).parent / "data"
SAMPLE_LINES = normalize_text((DATA / "libya-russia-ar.txt").read_text(encoding="utf-8")).split("\n")


def words(text: str) -> int:
    """Fake tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def chars(text: str) -> int:
    """Fake tokenizer: one token per character."""
    return len(text)


def assert_nothing_lost(sentence: str, chunks: list[str]) -> None:
    """Chunks are non-empty, stripped, consecutive pieces of the sentence with only
    whitespace between them."""
    text = sentence.strip()
    position = 0
    for chunk in chunks:
        assert chunk and chunk == chunk.strip()
        start = text.index(chunk, position)
        assert text[position:start].strip() == "", "only whitespace between chunks"
        position = start + len(chunk)
    assert position == len(text)
    assert "".join("".join(chunks).split()) == "".join(sentence.split())


# --- contract ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_tokens", [0, -1, -100])
def test_rejects_max_tokens_below_one(max_tokens):
    with pytest.raises(ValueError):
        chunk_sentence("قال الوزير", words, max_tokens)


def test_sentence_that_fits_is_returned_whole_and_stripped():
    assert chunk_sentence("  قال الوزير.  ", words, 2) == ["قال الوزير."]
    assert chunk_sentence(SAMPLE_LINES[6], words, 1000) == [SAMPLE_LINES[6]]


def test_blank_sentence_gives_no_chunk():
    assert chunk_sentence("", words, 5) == []
    assert chunk_sentence(" \t ", words, 5) == []


@pytest.mark.parametrize("counter", [words, chars], ids=["words", "chars"])
@pytest.mark.parametrize("max_tokens", [1, 3, 7, 20, 60])
def test_sample_lines_respect_limits_and_lose_nothing(counter, max_tokens):
    for sentence in SAMPLE_LINES:
        chunks = chunk_sentence(sentence, counter, max_tokens)
        assert_nothing_lost(sentence, chunks)
        assert all(counter(chunk) <= max_tokens for chunk in chunks), sentence


def test_single_character_over_the_limit_is_its_own_chunk():
    def always_ten(text: str) -> int:
        return 10

    assert chunk_sentence("أب جد", always_ten, 1) == ["أ", "ب", "ج", "د"]


# --- boundary priority ------------------------------------------------------------------------


def test_terminator_inside_quotation_is_the_best_boundary():
    sentence = SAMPLE_LINES[14]  # كما أضاف حرشاوي: "... في طبرق. ولا أعتقد ... موسكو".
    chunks = chunk_sentence(sentence, words, words(sentence) - 1)
    assert len(chunks) == 2
    assert chunks[0].endswith("دائم في طبرق.")
    assert chunks[1].startswith("ولا أعتقد")


def test_semicolon_beats_more_central_commas():
    sentence = SAMPLE_LINES[17]  # ... في شرق ليبيا، في خطة ... قاعدة بحرية؛ ما يمنحها ...
    chunks = chunk_sentence(sentence, words, words(sentence) - 1)
    assert len(chunks) == 2
    assert chunks[0].endswith("إنشاء قاعدة بحرية؛")
    assert chunks[1].startswith("ما يمنحها")


def test_latin_semicolon_counts_as_semicolon():
    chunks = chunk_sentence("أ، ب، ج، د; هـ و", words, 5)
    assert chunks == ["أ، ب، ج، د;", "هـ و"]


def test_comma_beats_waw_and_space():
    sentence = "قال الوزير إن الاتفاق وقع وأضاف أن المحادثات مستمرة، والوفد عاد"
    chunks = chunk_sentence(sentence, words, words(sentence) - 1)
    assert chunks == ["قال الوزير إن الاتفاق وقع وأضاف أن المحادثات مستمرة،", "والوفد عاد"]


def test_thousands_separator_is_not_a_comma_boundary():
    sentence = "أفرغت السفينة 6,000 طن من المعدات"
    chunks = chunk_sentence(sentence, chars, len(sentence) - 1)
    assert any("6,000" in chunk for chunk in chunks)


def test_waw_beats_plain_space_and_starts_the_next_chunk():
    sentence = "قال الوزير إن الاتفاق النهائي قريب جدا من التوقيع الرسمي وأضاف أن المحادثات مستمرة"
    chunks = chunk_sentence(sentence, words, words(sentence) - 1)
    assert chunks == ["قال الوزير إن الاتفاق النهائي قريب جدا من التوقيع الرسمي", "وأضاف أن المحادثات مستمرة"]


def test_root_waw_words_are_not_conjunction_boundaries():
    sentence = "التقى الرئيس مع وزير الدفاع في مكتبه بالعاصمة أمس وقال إن الوضع مستقر"
    chunks = chunk_sentence(sentence, words, words(sentence) - 1)
    assert chunks[1].startswith("وقال")


def test_space_when_no_punctuation_and_balanced_chunks():
    sentence = " ".join(["كلمة"] * 16)
    assert [words(chunk) for chunk in chunk_sentence(sentence, words, 4)] == [4, 4, 4, 4]
    assert [words(chunk) for chunk in chunk_sentence(sentence, words, 8)] == [8, 8]


def test_closest_to_middle_among_boundaries_of_the_best_kind():
    sentence = "أ، ب، ج، د، هـ، ز، ح، ط"
    assert chunk_sentence(sentence, words, 4) == ["أ، ب، ج، د،", "هـ، ز، ح، ط"]


def test_hard_cut_for_text_without_spaces():
    token = "https://example.com/" + "a" * 50
    chunks = chunk_sentence(token, chars, 16)
    assert "".join(chunks) == token
    assert all(len(chunk) <= 16 for chunk in chunks)
    assert max(map(len, chunks)) - min(map(len, chunks)) <= 2  # balanced halves


def test_hard_cut_keeps_diacritics_with_their_letter():
    word = "مُحَمَّدٌوَعَلِيٌّ"
    chunks = chunk_sentence(word, chars, 4)
    assert "".join(chunks) == word
    assert all(len(chunk) <= 4 for chunk in chunks)
    assert not any(unicodedata.category(chunk[0]).startswith("M") for chunk in chunks)


# --- invariants -------------------------------------------------------------------------------

ALPHABET = list("كتبروسياحفلإىةءأ" + "ًَّ" + "0123٠١" + "ab" + ".؟،؛,;:" + '"«»') + [" ", " ", "  ", " و", " وزير", "\t"]


def arabic_letters_plus_one(text: str) -> int:
    """A lumpy counter: unrelated to length in a simple way."""
    return 1 + sum("\u0621" <= c <= "\u064a" for c in text)


COUNTERS = [words, chars, arabic_letters_plus_one]


def _check(sentence: str, counter, max_tokens: int) -> None:
    chunks = chunk_sentence(sentence, counter, max_tokens)
    assert_nothing_lost(sentence, chunks)
    assert all(counter(chunk) <= max_tokens or len(chunk) == 1 for chunk in chunks)
    if sentence.strip() and counter(sentence.strip()) <= max_tokens:
        assert chunks == [sentence.strip()]


def test_invariants_on_random_sentences():
    rng = random.Random(400)
    for _ in range(1500):
        sentence = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 50)))
        _check(sentence, rng.choice(COUNTERS), rng.randint(1, 12))


if given is not None:

    @given(
        st.lists(st.sampled_from(ALPHABET), max_size=60).map("".join),
        st.sampled_from(COUNTERS),
        st.integers(min_value=1, max_value=15),
    )
    def test_invariants_property(sentence, counter, max_tokens):
        _check(sentence, counter, max_tokens)


def test_long_input_is_chunked_quickly():
    sentence = "ب" * 20000 + " " + "كلمة، " * 4000 + " " * 20000 + "ج"
    started = time.perf_counter()
    chunks = chunk_sentence(sentence, words, 50)
    assert time.perf_counter() - started < 2.0
    assert_nothing_lost(sentence, chunks)
