"""Scraped-text cleanup (model_server/text/cleanup.py): pure unit tests, no model."""

from __future__ import annotations

import pytest

from model_server.text.cleanup import MAX_FURNITURE_CHARS, clean_scraped, furniture_reason
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import SAMPLE_AR

SAMPLE_LINES = SAMPLE_AR.splitlines()
# Lines 1-6 of the sample are page furniture plus the headline (line 3, kept once); 7-22 are the body.
EXPECTED_DROPS = [(1, "weather"), (2, "date"), (4, "duplicate_line"), (5, "date"), (6, "clipboard_notice")]


def test_sample_article_loses_exactly_its_furniture():
    cleaned = clean_scraped(SAMPLE_AR)
    assert [(d.line, d.reason) for d in cleaned.dropped] == EXPECTED_DROPS
    assert [d.text for d in cleaned.dropped] == [SAMPLE_LINES[n - 1] for n, _ in EXPECTED_DROPS]
    dropped_numbers = {n for n, _ in EXPECTED_DROPS}
    # Kept lines are exactly the other lines, unchanged and in order.
    assert cleaned.text.splitlines() == [line for number, line in enumerate(SAMPLE_LINES, 1)
                                         if number not in dropped_numbers]


def test_every_body_line_of_the_sample_survives():
    kept = set(clean_scraped(SAMPLE_AR).text.splitlines())
    body = [SAMPLE_LINES[2], *SAMPLE_LINES[6:]]   # the headline once, then every paragraph
    assert len(body) == 17
    for line in body:
        assert line in kept
        assert furniture_reason(line) is None


def test_memorised_sentences_and_short_body_lines_are_not_furniture():
    for source, _ in MEMORISED_PAIRS:
        assert furniture_reason(source) is None


@pytest.mark.parametrize("line,reason", [
    ("- ℃ 11 تركيا", "weather"),
    ("25°C", "weather"),
    ("• -3 ℃ New York", "weather"),
    ("- 10 يناير 2025", "date"),
    ("- 16 أبريل 2024, 10:12:02 ص", "date"),
    ("الإثنين 15 أبريل/نيسان 2024", "date"),
    ("آخر تحديث: الثلاثاء، 16 أبريل/نيسان 2024 - 10:12 م", "date"),
    ("15 رمضان 1445 هـ", "date"),
    ("April 16, 2024", "date"),
    ("16/04/2024 10:12", "date"),
    ("١٦ أبريل ٢٠٢٤", "date"),
    ("10:12 ص", "date"),
    ("- تم نسخ عنوان المقال إلى الحافظة", "clipboard_notice"),
    ("تم نسخ الرابط", "clipboard_notice"),
    ("Link copied to clipboard!", "clipboard_notice"),
])
def test_furniture_patterns(line, reason):
    assert furniture_reason(line) == reason


@pytest.mark.parametrize("line", [
    "في 8 أبريل/نيسان",                                        # a date inside words is content
    'في تقرير نشرته "التايمز"، الإثنين 15 أبريل/نيسان 2024، قالت إن البحرية الروسية شحنت الأسلحة.',
    "ارتفعت الحرارة إلى 45 °C في بغداد اليوم",               # a temperature in a sentence is content
    "22 درجة مئوية في القاهرة",                                # written-out units are prose, never a widget
    "2024",                                                      # a bare number may be a heading ("2024")
    "رمضان",
    "نسخ الرابط إلى الحافظة لم يعد ممكنا بسبب عطل",            # a notice-like sentence with more words
    "",
])
def test_content_lines_are_kept(line):
    assert furniture_reason(line) is None


def test_long_lines_are_never_dropped_whatever_they_look_like():
    long_date_line = "10 يناير 2025 " * (MAX_FURNITURE_CHARS // 10)
    assert furniture_reason(long_date_line) is None
    headline = "ا" * (MAX_FURNITURE_CHARS + 1)
    assert clean_scraped(f"{headline}\n{headline}").dropped == ()


def test_only_consecutive_duplicates_are_dropped_and_blank_lines_do_not_separate_them():
    text = "عنوان المقال\n\nعنوان المقال\nفقرة أولى\nعنوان المقال"
    cleaned = clean_scraped(text)
    assert [(d.line, d.reason) for d in cleaned.dropped] == [(3, "duplicate_line")]
    assert cleaned.text == "عنوان المقال\n\nفقرة أولى\nعنوان المقال"


def test_line_numbers_follow_any_line_break_convention_and_kept_text_is_untouched():
    text = "- 10 يناير 2025\r\nمرحبا بالعالم.\r\n\u200f- ℃ 11 تركيا\rشكرا جزيلا."
    cleaned = clean_scraped(text)
    assert [(d.line, d.reason, d.text) for d in cleaned.dropped] == [
        (1, "date", "- 10 يناير 2025"), (3, "weather", "\u200f- ℃ 11 تركيا")]
    assert cleaned.text == "مرحبا بالعالم.\r\nشكرا جزيلا."


def test_text_without_furniture_is_returned_unchanged():
    text = "مرحبا بالعالم.\n\nالطقس جميل اليوم."
    assert clean_scraped(text).text == text and clean_scraped(text).dropped == ()
