"""Tests for model_server.text.normalize: meaning-safe normalization and Arabic detection."""

from __future__ import annotations

import random
import unicodedata
from pathlib import Path

import pytest

from model_server.text import arabic_ratio, has_arabic, normalize_text

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ImportError:  # hypothesis is a dev extra; the loop-based tests below still run
    given = None

DATA = Path(__file__).parent / "data"
SAMPLE_AR = (DATA / "libya-russia-ar.txt").read_text(encoding="utf-8")

INVISIBLES = [
    "\u0640",  # tatweel
    "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad",  # zero-width, soft hyphen
    "\u061c", "\u200e", "\u200f",  # ALM, LRM, RLM
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",  # embeddings / overrides
    "\u2066", "\u2067", "\u2068", "\u2069",  # isolates
    "\x00", "\x07", "\x1b", "\x7f", "\x80", "\x9f",  # C0 / C1 controls
]


# --- removal ---------------------------------------------------------------------------


def test_removes_tatweel():
    assert normalize_text("كتـــاب الـعـربـيـة") == "كتاب العربية"


@pytest.mark.parametrize("char", INVISIBLES, ids=lambda c: f"U+{ord(c):04X}")
def test_removes_invisible_and_control_characters(char):
    assert normalize_text(f"روسيا{char}حفتر") == "روسياحفتر"
    assert normalize_text(f"روسيا {char}حفتر") == "روسيا حفتر"


def test_removes_bidi_marks_around_latin_names():
    assert normalize_text("صحيفة \u202aThe Times\u202c\u200f البريطانية") == "صحيفة The Times البريطانية"


def test_removes_bom_at_start():
    assert normalize_text("\ufeffنشرت صحيفة") == "نشرت صحيفة"


# --- what must survive ----------------------------------------------------------------


def test_keeps_diacritics():
    text = "إنَّ الطموحَ وقَّعا أُطلِقَت مُحَمَّدٌ"
    assert normalize_text(text) == text


def test_keeps_digits_of_both_systems_and_decimal_separators():
    text = "نحو 400 و٤٠٠ طن، 2.5 و٢٫٥ و6,000 و٦٬٠٠٠ في 10:12:02 ص"
    assert normalize_text(text) == text


def test_keeps_latin_names_punctuation_and_symbols():
    text = 'وكالة Bloomberg وإذاعة Radio Radicale: "هل؟" - ℃ 11 (U.S.) «نعم»؛ 15 أبريل/نيسان'
    assert normalize_text(text) == text


def test_keeps_meaningful_arabic_format_characters():
    text = "\u0600١٢ \u06dd"  # ARABIC NUMBER SIGN, END OF AYAH
    assert normalize_text(text) == text


def test_applies_nfc():
    decomposed = "\u0627\u0653"  # alef + madda above
    assert normalize_text(decomposed) == "\u0622"  # alef with madda above
    assert normalize_text("e\u0301") == "é"


# --- whitespace and lines ---------------------------------------------------------------


def test_collapses_horizontal_whitespace_including_unicode_spaces():
    text = "روسيا \t\u00a0\u2003\u202f\u3000 حفتر\u00a0ليبيا"
    assert normalize_text(text) == "روسيا حفتر ليبيا"


def test_tab_becomes_space():
    assert normalize_text("أ\tب") == "أ ب"


def test_line_endings_become_newline():
    assert normalize_text("أ\r\nب\rج\u2028د\x85ه\x0bو\x0cز") == "أ\nب\nج\nد\nه\nو\nز"


def test_paragraph_separator_becomes_blank_line():
    assert normalize_text("أ\u2029ب") == "أ\n\nب"


def test_strips_spaces_at_line_starts_and_ends():
    assert normalize_text("  أ ب  \n\t ج \u00a0") == "أ ب\nج"


def test_keeps_single_newlines_and_one_blank_line():
    assert normalize_text("أ\nب\n\nج") == "أ\nب\n\nج"


def test_collapses_three_or_more_newlines_to_one_blank_line():
    assert normalize_text("أ\n\n\nب\n \n\t\n\r\n\nج") == "أ\n\nب\n\nج"


def test_strips_text_ends():
    assert normalize_text("\n\n  أ  \n\n") == "أ"
    assert normalize_text(" \u200f\n\t") == ""


def test_sample_article_keeps_its_22_lines():
    normalized = normalize_text(SAMPLE_AR)
    assert normalized == SAMPLE_AR.strip()  # the scraped sample is already clean
    assert len(normalized.split("\n")) == 22


def test_dirty_copy_of_sample_normalizes_to_clean_sample():
    dirty = (
        "\ufeff" + SAMPLE_AR.replace("\n", " \r\n").replace(" ", "\u00a0 ")
        .replace("حفتر", "حفـتـر\u200f").replace("The Times", "\u202aThe Times\u202c")
    )
    assert normalize_text(dirty) == SAMPLE_AR.strip()


# --- invariants --------------------------------------------------------------------------

REMOVED = set("".join(INVISIBLES)) | {"\r", "\t", "\x0b", "\x0c", "\u2028", "\u2029", "\u00a0"}
ALPHABET = (
    "كتبروسياحفترلبنإىةءآأؤئ" + "ًٌٍَُِّْ" + "٠١٢٣0123٫٬.,،؛؟!:" + "abcXYZ" + '"«»“”()- '
    + "\n\r\t\u00a0\u2003\u2028\u2029" + "".join(INVISIBLES) + "\u0627\u0653e\u0301"
)


def _check_invariants(text: str) -> None:
    normalized = normalize_text(text)
    assert normalize_text(normalized) == normalized, "idempotent"
    assert unicodedata.is_normalized("NFC", normalized)
    assert not REMOVED & set(normalized)
    assert "  " not in normalized and "\n\n\n" not in normalized
    assert normalized == normalized.strip()
    assert all(line == line.strip(" ") for line in normalized.split("\n"))
    # only removed characters and whitespace disappear; everything visible keeps its order
    kept = "".join(c for c in text if c.isspace() or c not in REMOVED)
    visible = [c for c in unicodedata.normalize("NFC", kept) if not c.isspace()]
    assert [c for c in normalized if not c.isspace()] == visible


def test_invariants_on_random_strings():
    rng = random.Random(20240416)
    for _ in range(2000):
        _check_invariants("".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 60))))


if given is not None:

    @given(st.text(alphabet=ALPHABET, max_size=80))
    def test_invariants_property(text):
        _check_invariants(text)

    @given(st.text(max_size=80))
    def test_idempotent_on_any_unicode(text):
        normalized = normalize_text(text)
        assert normalize_text(normalized) == normalized


# --- Arabic detection ----------------------------------------------------------------------


def test_has_arabic():
    assert has_arabic("نشرت صحيفة The Times")
    assert has_arabic("ﻻ")  # presentation form
    assert not has_arabic("The Times, 2024")
    assert not has_arabic("١٢٣ ، ؟")  # Arabic digits and punctuation are not letters
    assert not has_arabic("")


def test_arabic_ratio_counts_letters_only():
    assert arabic_ratio("6000 طن من المعدات.") == 1.0
    assert arabic_ratio("The Times") == 0.0
    assert arabic_ratio("١٢٣ 456 ...") == 0.0
    assert arabic_ratio("") == 0.0
    assert arabic_ratio("مُحَمَّد") == 1.0  # diacritics are ignored, not counted as non-Arabic
    assert arabic_ratio("ab جد") == pytest.approx(0.5)


def test_arabic_ratio_of_sample_article_is_high():
    assert arabic_ratio(SAMPLE_AR) > 0.95
    english = (DATA / "libya-russia-en.txt").read_text(encoding="utf-8")
    assert arabic_ratio(english) == 0.0
