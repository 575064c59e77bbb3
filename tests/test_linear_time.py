"""Doubling tests (tests/timing.py): text preparation, clean-up, glossary matching and quality checks
stay linear on hostile input. Each class of input is built at n and 2n and the time ratio must stay
near 2; before the fixes in text/, glossary.py and quality.py several of these were quadratic (a run
of 10k dots took 2.1 s to chunk and 20k dots 9.5 s).

Preparation goes through `prepare_text` with the real tiny Marian tokenizer, so the token counts of
chunking are the real ones.
"""

from __future__ import annotations

import pytest

from model_server import quality
from model_server.glossary import Glossary
from model_server.pipeline import TextLimits, prepare_text
from model_server.text.cleanup import clean_scraped
from tests.timing import assert_linear

WORD = "كلمة"
# Only the texts' shape is under test: no length limit, the usual share of Arabic letters.
LIMITS = TextLimits(max_text_chars=10**8, min_arabic_ratio=0.3)

# name -> (a text of about n characters of that class, with Arabic words around it; the starting n of the
# clean-up test; that of the preparation test). Starting sizes near the 30 ms the helper wants keep the
# tests short; it doubles them when the machine is faster.
HOSTILE_TEXTS = {
    "terminator_run": (lambda n: f"{WORD} " + "." * n + WORD, 640_000, 20_000),
    "mixed_terminator_run": (lambda n: f"{WORD} " + "؟!.…?" * (n // 5) + WORD, 320_000, 10_000),
    "punctuation_run": (lambda n: f"{WORD} " + "،,:;!." * (n // 6) + WORD, 320_000, 20_000),
    "spaced_terminators": (lambda n: f"{WORD} " + ". " * (n // 2) + WORD, 320_000, 10_000),
    "one_huge_word": (lambda n: WORD * (n // 4), 320_000, 20_000),
    "short_lines": (lambda n: f"{WORD} قصيرة\n" * (n // 11), 80_000, 20_000),
    "diacritics_run": (lambda n: f"{WORD} ب" + "\u0651\u064e" * (n // 2) + f" {WORD}", 160_000, 10_000),
    "single_diacritic_run": (lambda n: f"{WORD} ب" + "\u064e" * n + f" {WORD}", 160_000, 5_000),
    "bidi_and_invisible_run": (lambda n: f"{WORD} " + "\u200f\u202e\u200b\u2066" * (n // 4) + f" {WORD}",
                               640_000, 640_000),
    "control_characters": (lambda n: f"{WORD} " + "\x01\x07\x1b\x9f" * (n // 4) + f" {WORD}", 640_000, 640_000),
    "quote_and_bracket_storm": (lambda n: f"{WORD} " + "«(\"[" * (n // 8) + f"{WORD}. " + ")»" * (n // 8),
                                640_000, 40_000),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE_TEXTS))
def test_clean_up_is_linear(kind):
    make, n, _ = HOSTILE_TEXTS[kind]
    assert_linear(clean_scraped, make, n)


@pytest.mark.parametrize("kind", sorted(HOSTILE_TEXTS))
def test_preparation_is_linear_with_the_real_tokenizer(kind, tiny_backend):
    """Normalize, segment and chunk (n log n: each split level counts the tokens of its pieces)."""
    make, _, n = HOSTILE_TEXTS[kind]
    assert_linear(lambda text: prepare_text(text, tiny_backend, LIMITS), make, n)


def test_clean_up_of_digit_lines_is_linear():
    # A 200-digit line (the longest the clean-up inspects) used to cost one temperature attempt per digit.
    assert_linear(clean_scraped, lambda n: ("1" * 199 + "\n") * (n // 200), 80_000)


_LETTERS = "ابتثجحخدذرزسشصضطظعغفقكلمنهوي"


def _overlapping_terms(count: int) -> dict[str, str]:
    """Terms sharing long prefixes ("كلمة كلمة ... <3 letters>"), plus one that shares none, so that no
    common prefix can be factored out of a plain alternation."""
    def suffix(k: int) -> str:
        return "".join(_LETTERS[k // len(_LETTERS) ** i % len(_LETTERS)] for i in range(3))

    terms = {f"{WORD} " * (k % 12 + 1) + suffix(k): f"term {k}" for k in range(count)}
    terms["ت"] = "t"
    return terms


def _repetitive_text(n: int) -> str:
    return (f"{WORD} " * 13 + "و" + WORD + " 7 ") * (n // 75)


def test_glossary_matching_is_linear_in_text_and_terms():
    """A glossary of n/20 overlapping terms against a text of n characters: one longest-first alternation
    cost text x terms (quadratic when both double); the trie costs the text's length."""
    def make(n: int) -> tuple[dict[str, str], str]:
        return _overlapping_terms(n // 20), _repetitive_text(n)

    def run(case: tuple[dict[str, str], str]) -> None:
        entries, text = case
        Glossary("g", entries).protect(text)   # compiles the pattern too

    assert_linear(run, make, 80_000)


def test_glossary_matching_a_long_text_against_thousands_of_terms_is_linear():
    glossary = Glossary("g", _overlapping_terms(5000))
    glossary.pattern()
    assert_linear(glossary.protect, _repetitive_text, 640_000)


def test_glossary_restore_is_linear():
    glossary = Glossary("g", _overlapping_terms(100))
    terms = list(glossary.entries)

    def make(n: int) -> tuple[str, list[str]]:
        count = min(n // 10, len(terms))
        return " ".join(f"ZX{i}Q" for i in range(count)) + " " + "ZX" + "9" * n + "Q", terms[:count]

    assert_linear(lambda case: glossary.restore(*case), make, 2_560_000)


# name -> (an English output of about n characters, the starting n)
REPETITIVE_OUTPUTS = {
    "word_loop": (lambda n: "the cat sat on the mat " * (n // 23), 40_000),
    "punctuation_loop": (lambda n: "yes ?!?, ;: .. " * (n // 15), 160_000),
    "space_runs": (lambda n: "word" + " " * n + "word", 320_000),
    "numbers": (lambda n: "1,000.5 " * (n // 8), 80_000),
}


@pytest.mark.parametrize("kind", sorted(REPETITIVE_OUTPUTS))
def test_quality_assessment_is_linear(kind):
    def run(output: str) -> None:
        quality.assess(WORD * (len(output) // 4), quality.clean_english(output), score=-0.5,
                       hit_max_length=False, thresholds=quality.QualityThresholds())

    make, n = REPETITIVE_OUTPUTS[kind]
    assert_linear(run, make, n)
