"""Meaning-safe normalization of Arabic news text before segmentation and translation.

`normalize_text` only removes what carries no meaning for an Arabic->English translator
(invisible formatting characters, tatweel, control characters, redundant whitespace) and
canonicalises the rest (Unicode NFC, line endings). It deliberately KEEPS:

* diacritics (harakat, tanween, shadda, sukun) - they disambiguate words;
* Arabic-Indic digits (٠-٩), extended Arabic-Indic digits and Latin digits, unchanged;
* Latin script (names such as "The Times", "Bloomberg"), punctuation and symbols;
* Arabic-script format characters that carry meaning (U+0600-U+0605 number signs,
  U+06DD end of ayah, U+08E2), which is why removal uses explicit lists, not category Cf.

Line structure is preserved: every "\\n" survives (3+ newlines collapse to exactly one
blank line, "\\n\\n"). How lines map to paragraphs is decided in one place:
`model_server.text.segment` (every non-empty line is one paragraph; a single newline and a
blank line both separate paragraphs).

The result is idempotent: ``normalize_text(normalize_text(t)) == normalize_text(t)``.
"""

from __future__ import annotations

import re
import unicodedata

import regex

__all__ = ["normalize_text", "has_arabic", "arabic_ratio"]

TATWEEL = "\u0640"

# Invisible characters that only affect rendering, never meaning, in Arabic news text.
_ZERO_WIDTH = (
    "\u200b"  # ZERO WIDTH SPACE
    # ZERO WIDTH NON-JOINER is meaningful in Persian/Urdu (e.g. "می‌خواهم"), but not in Arabic
    # orthography; this service only translates Arabic, so dropping it is safe here.
    "\u200c"
    # ZERO WIDTH JOINER only forces joining forms in Arabic (or glues emoji sequences,
    # which then render as separate emoji - no loss of meaning for translation).
    "\u200d"
    "\u2060"  # WORD JOINER
    "\u2061\u2062\u2063\u2064"  # invisible math operators (function application, times, ...)
    "\ufeff"  # BOM / ZERO WIDTH NO-BREAK SPACE
    "\u180e"  # MONGOLIAN VOWEL SEPARATOR (zero width since Unicode 6.3)
    "\u00ad"  # SOFT HYPHEN: an invisible line-break hint
)

# Bidirectional controls: pasted from web pages and word processors, invisible, and they
# break tokenization (a word with an embedded U+200F is a different token).
_BIDI_CONTROLS = (
    "\u061c"  # ARABIC LETTER MARK
    "\u200e\u200f"  # LEFT-TO-RIGHT MARK, RIGHT-TO-LEFT MARK
    "\u202a\u202b\u202c\u202d\u202e"  # LRE, RLE, PDF, LRO, RLO
    "\u2066\u2067\u2068\u2069"  # LRI, RLI, FSI, PDI
)

# Every line-break convention becomes "\n". U+2029 PARAGRAPH SEPARATOR becomes a blank line so
# it still reads as a paragraph break. \v, \f, NEL (U+0085) and the information separators
# U+001C-U+001E are line boundaries for str.splitlines(), so they are treated the same way.
_LINE_BREAK_RE = re.compile(r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028]")

# Characters removed outright: tatweel, zero-width and bidi characters, and C0/C1 control
# characters except "\n" and "\t" ("\t" is whitespace and is collapsed below). Runs after
# line-break normalization, so "\r", "\v", "\f", NEL and friends are already "\n" here.
_REMOVED_RE = re.compile(
    "["
    + TATWEEL
    + _ZERO_WIDTH
    + _BIDI_CONTROLS
    + r"\x00-\x08\x0b-\x1f\x7f-\x9f"
    + "]"
)

# Horizontal whitespace: any Unicode white space except "\n" (tab, NBSP, U+202F narrow NBSP,
# en/em spaces, ideographic space, ...). A run of it becomes one ASCII space.
_HORIZONTAL_SPACE_RE = re.compile(r"[^\S\n]+")

# Spaces at either end of a line are never meaningful (indentation is not used in news text). Runs
# after horizontal white space is collapsed, so at most one space stands on either side (" *" would
# retry a long run of spaces from each of its positions: quadratic).
_SPACE_AROUND_NEWLINE_RE = re.compile(r" ?\n ?")

# More than one blank line carries nothing more than one blank line.
_EXCESS_NEWLINES_RE = re.compile(r"\n{3,}")

# A letter of the Arabic script (the Arabic, Arabic Supplement, Extended-A/B and presentation
# forms blocks all have Script=Arabic). Harakat are marks (\p{M}), digits are \p{N}: neither counts.
_ARABIC_LETTER_RE = regex.compile(r"[\p{Script=Arabic}&&\p{L}]", regex.VERSION1)
_ANY_LETTER_RE = regex.compile(r"\p{L}")

# A character followed by a long run of combining marks (real words carry two or three). CPython's NFC
# puts such a run in canonical order with an insertion sort, quadratic when the marks alternate classes
# (shadda, fatha, shadda, ...: 20k marks take seconds), so long runs are put in that order here first,
# with a stable sort; NFC then finds them ordered and stays linear. The class is generous (marks and
# non-zero combining classes as the `regex` module's Unicode version knows them); what it misses is
# only slower, never different.
_LONG_MARK_RUN_RE = regex.compile(r".[\p{M}\P{ccc=0}]{16,}", regex.DOTALL)


def normalize_text(text: str) -> str:
    """Return `text` normalized for translation without changing its meaning.

    Steps, in order: line endings -> "\\n"; remove tatweel, zero-width, bidi and control
    characters; Unicode NFC; collapse horizontal whitespace to one space; strip spaces at line
    starts and ends; collapse 3+ newlines to one blank line; strip the whole text.
    """
    text = _unify_line_breaks(text)
    text = _REMOVED_RE.sub("", text)
    text = _LONG_MARK_RUN_RE.sub(lambda run: _canonical_decomposition(run.group()), text)
    text = unicodedata.normalize("NFC", text)
    return _tidy_whitespace(text)


def _canonical_decomposition(run: str) -> str:
    """NFD of `run` (each character decomposed, then each sequence of non-starters stably sorted by
    combining class), in n log n. Canonically equivalent to `run`, so NFC of the text is unchanged."""
    ordered: list[str] = []
    marks: list[str] = []
    for char in "".join(unicodedata.normalize("NFD", c) for c in run):
        if unicodedata.combining(char):
            marks.append(char)
            continue
        ordered.extend(sorted(marks, key=unicodedata.combining))
        marks.clear()
        ordered.append(char)
    ordered.extend(sorted(marks, key=unicodedata.combining))
    return "".join(ordered)


def _unify_line_breaks(text: str) -> str:
    text = text.replace("\u2029", "\n\n")
    return _LINE_BREAK_RE.sub("\n", text)


def _tidy_whitespace(text: str) -> str:
    text = _HORIZONTAL_SPACE_RE.sub(" ", text)
    text = _SPACE_AROUND_NEWLINE_RE.sub("\n", text)
    text = _EXCESS_NEWLINES_RE.sub("\n\n", text)
    return text.strip()


def has_arabic(text: str) -> bool:
    """True when `text` contains at least one Arabic-script letter."""
    return _ARABIC_LETTER_RE.search(text) is not None


def arabic_ratio(text: str) -> float:
    """Share of the letters in `text` that are Arabic script, in [0.0, 1.0].

    Only letters count: digits, punctuation, spaces and diacritics are ignored, so
    "6000 طن" is 1.0 and "The Times" is 0.0. Text without any letter gives 0.0.
    """
    letters = len(_ANY_LETTER_RE.findall(text))
    if letters == 0:
        return 0.0
    return len(_ARABIC_LETTER_RE.findall(text)) / letters
