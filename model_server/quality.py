"""Cheap per-sentence quality signals and the safe clean-up of English output.

Each check targets a known failure mode of Marian/opus-mt models: repetition loops, source copied back
untranslated, dropped content (length ratio, missing numbers), low model confidence and output cut at the
length limit. They run on every sentence; none needs another model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from model_server.text import arabic_ratio

REPETITION = "repetition"
UNTRANSLATED = "untranslated"
LENGTH_RATIO = "length_ratio"
NUMBERS = "numbers"
LOW_SCORE = "low_score"
TRUNCATED = "truncated"
RETRIED = "retried"  # informational: the sentence was re-generated with safer settings
ALL_FLAGS = (REPETITION, UNTRANSLATED, LENGTH_RATIO, NUMBERS, LOW_SCORE, TRUNCATED, RETRIED)
# Flags that make a retry with safer decoding worthwhile.
RETRY_FLAGS = frozenset({REPETITION, TRUNCATED})


@dataclass(frozen=True)
class QualityThresholds:
    low_score: float = -1.5           # mean log-prob per token below this is suspect
    min_length_ratio: float = 0.4     # English chars / Arabic chars; normal news is about 1.0-1.6
    max_length_ratio: float = 3.5
    min_chars_for_ratio: int = 20     # the ratio means nothing on headlines of three words
    max_arabic_ratio: float = 0.3     # share of Arabic letters in the English output


# --- output clean-up -------------------------------------------------------------------------

_ARABIC_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "01234567890123456789")
_ARABIC_PUNCTUATION = str.maketrans({"؟": "?", "،": ",", "؛": ";", "«": '"', "»": '"', "٪": "%",
                                     "٫": ".", "٬": ","})
# "??", "?!?", ",," ... -> the first mark; keeps "..." (an ellipsis) intact.
_DOUBLED_PUNCTUATION = re.compile(r"([?!,;:])[?!,;:]+|(?<!\.)\.\.(?!\.)")
# White space before a mark that ends a word ("word , next" -> "word, next"). Every run of white space
# matches (the mark part is optional), so a long run that is not before a mark is one match, not one
# failed attempt per space (quadratic); `_drop_space_before_mark` keeps the run when no mark follows.
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+(?:([?!,;:.])(\s|$))?")


def clean_english(text: str) -> str:
    """Map Arabic punctuation and digits that leak into English to English forms; drop doubled marks."""
    text = text.translate(_ARABIC_PUNCTUATION).translate(_ARABIC_DIGITS)
    text = _DOUBLED_PUNCTUATION.sub(lambda m: m.group(1) or ".", text)
    return _SPACE_BEFORE_PUNCTUATION.sub(_drop_space_before_mark, text)


def _drop_space_before_mark(match: re.Match[str]) -> str:
    mark = match.group(1)
    return mark + match.group(2) if mark else match.group(0)


# --- signals ---------------------------------------------------------------------------------

_WORD = re.compile(r"\w+", re.UNICODE)
_NUMBER = re.compile(r"\d+(?:[.,٫٬]\d+)*")


def has_repetition(text: str, *, min_repeats: int = 3, max_ngram: int = 4) -> bool:
    """A loop: some n-gram (n <= max_ngram) repeated min_repeats times in a row, or a long output made of
    very few distinct words."""
    words = [w.lower() for w in _WORD.findall(text)]
    for n in range(1, max_ngram + 1):
        for start in range(0, max(0, len(words) - n * min_repeats + 1)):
            gram = words[start:start + n]
            if all(words[start + k * n:start + (k + 1) * n] == gram for k in range(1, min_repeats)):
                return True
    return len(words) >= 12 and len(set(words)) / len(words) < 0.35


def numbers_in(text: str) -> set[str]:
    """Numbers normalised for comparison: Latin digits, no thousands separators ('6,000' == '6000')."""
    found = set()
    for match in _NUMBER.findall(text.translate(_ARABIC_DIGITS)):
        value = match.replace("٬", ",").replace("٫", ".")
        # A comma followed by exactly three digits is a thousands separator; otherwise keep the mark.
        value = re.sub(r",(?=\d{3}(?:\D|$))", "", value)
        found.add(value.replace(",", "."))
    return found


def missing_numbers(source: str, translation: str) -> set[str]:
    return numbers_in(source) - numbers_in(translation)


def assess(source: str, translation: str, *, score: float, hit_max_length: bool,
           thresholds: QualityThresholds) -> list[str]:
    """Flags for one translated sentence, in ALL_FLAGS order; empty when nothing looks wrong."""
    flags = set()
    if not translation.strip() or has_repetition(translation):
        flags.add(REPETITION)
    if translation.strip() == source.strip() or (translation and arabic_ratio(translation) > thresholds.max_arabic_ratio):
        flags.add(UNTRANSLATED)
    if len(source) >= thresholds.min_chars_for_ratio:
        ratio = len(translation) / max(len(source), 1)
        if not thresholds.min_length_ratio <= ratio <= thresholds.max_length_ratio:
            flags.add(LENGTH_RATIO)
    if missing_numbers(source, translation):
        flags.add(NUMBERS)
    if score < thresholds.low_score:
        flags.add(LOW_SCORE)
    if hit_max_length:
        flags.add(TRUNCATED)
    return [flag for flag in ALL_FLAGS if flag in flags]


def needs_review(flags: list[str]) -> bool:
    return any(flag != RETRIED for flag in flags)


def severity(flags: list[str]) -> int:
    """For choosing between an original and a retried output: fewer problem flags is better."""
    return sum(1 for flag in flags if flag != RETRIED)
