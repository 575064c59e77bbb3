"""Paragraph and sentence segmentation for (normalized) Arabic news text.

Paragraph convention - decided here and only here: every non-empty line is one paragraph.
A single "\\n" and a blank line both separate paragraphs (scraped news text has one
paragraph per line; `normalize_text` keeps at most one blank line). Use
`PARAGRAPH_SEPARATOR` to join translated paragraphs back together.

Sentence rules:

* `.` `!` `?` `؟` `…` `۔` end a sentence - a run of them ("؟..", "!!", "...") ends it once,
  and the whole run stays with the sentence it ends - but only when followed by white space
  (or the end of the paragraph). So numbers and times (2.5, 10:12:02, 6,000, ٢٫٥) and
  dotted abbreviations ("U.S", "e.g") never split. Exception for a missing space, a common
  scraping artifact: a terminator directly followed by an Arabic letter ("المتحدة.وقال")
  ends a sentence unless the word before it is a single letter ("ق.م", "أ.د"). Arabic news headlines use ".." as a
  separator ("بالسلاح؟.. التايمز تكشف"): like any terminator run it ends a sentence.
* `،` `؛` `,` `;` `:` never end a sentence.
* Closing quotes/brackets right after a terminator stay in the sentence it ends (`."`, `؟»`).
* Nothing inside a quotation (`"..."`, `«...»`, `“...”`, `‹...›`) or brackets splits: a
  quote holding several sentences stays one sentence together with its attribution
  (`قال: "... . ... ."`). Only quotes whose opener and closer both occur in the same
  paragraph count, so a stray quote mark cannot swallow the rest of the paragraph. A quote
  that itself ends with a terminator (`"... موسكو."`) followed by white space ends the sentence.
* A "." after a known abbreviation does not split: Latin titles (Dr., Mr., Prof., ...),
  single Latin letters (initials "J. Smith"), dotted acronyms (U.S., e.g., i.e., أ.د.),
  the Arabic titles "د." (doctor) and "أ." (professor), and "No."/"p."/"Vol." before a number.
* No split before a lowercase Latin letter ("approx. three") or before punctuation that
  cannot start a sentence (`،`, `:`, a closing quote, ...), and no split that would leave a
  "sentence" without any letter (list markers such as "1.").

Offsets are exact: ``sentence.text == text[sentence.start:sentence.end]``, each sentence is
stripped of white space, and everything between sentences is white space, so segmentation
never loses or reorders a visible character. Segment the output of `normalize_text`; the
offsets then refer to the normalized text.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass

import regex

__all__ = ["Sentence", "Paragraph", "PARAGRAPH_SEPARATOR", "segment", "paragraph_spans"]

PARAGRAPH_SEPARATOR = "\n"


@dataclass(frozen=True)
class Sentence:
    """One sentence; `text == source[start:end]` where `source` is the segmented text."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Paragraph:
    """One paragraph (one non-empty line); spans its first to its last sentence."""

    sentences: tuple[Sentence, ...]
    start: int
    end: int


# A line of text; the paragraph convention above ("every non-empty line") in regex form.
_LINE_RE = re.compile(r"[^\n]+")

# A run of sentence terminators: "؟.." or "!!" or "..." ends a sentence once, as a whole.
# U+06D4 is the Urdu full stop, sometimes found in Arabic-script text.
_TERMINATOR_RUN_RE = re.compile(r"[.!?؟…۔]+")

# Characters that close a quote or bracket; right after a terminator they stay with the
# sentence it ends. ' and ’ are included although they are not tracked as quote pairs.
_TRAILING_CLOSERS = frozenset("\"'»”’›)]}")

# Opening character -> its closer, for the quotes and brackets that protect their content.
_PAIRED_OPENERS = {"«": "»", "“": "”", "‹": "›", "(": ")", "[": "]", "{": "}"}
_PAIRED_CLOSERS = frozenset(_PAIRED_OPENERS.values())
_STRAIGHT_QUOTE = '"'
# Real text nests quotes and brackets two or three deep; deeper openers are ignored.
_MAX_QUOTE_DEPTH = 8

# Characters that cannot start a sentence: if one follows the white space after a
# terminator, the terminator is not a sentence end (e.g. "نعم . ، ثم" or "« نعم. »").
_NON_INITIAL_PUNCTUATION = frozenset("،,؛;:.!?؟…۔") | _PAIRED_CLOSERS | {"”", "’"}

# Characters stripped from the front of the word before a "." when looking it up as an
# abbreviation: "(Dr." and "«د." are still "Dr" and "د".
_WORD_OPENERS = "\"'«“‹([{"

# "." after these (case-insensitive) is an abbreviation, not a sentence end.
_LATIN_ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "messrs", "dr", "prof", "sr", "jr", "st", "mt", "rev", "hon",
        "gen", "col", "lt", "maj", "sgt", "capt", "cmdr", "adm", "gov", "sen", "rep",
        "pres", "vs", "approx", "dept", "est", "cf",
    }
)
# Abbreviations only when a number follows ("No. 5", "p. 12", "Vol. 3").
_NUMBER_PREFIX_ABBREVIATIONS = frozenset({"no", "nos", "vol", "p", "pp", "art", "fig", "ch", "sec"})
# The last word of a string (possibly empty).
_TRAILING_WORD_RE = re.compile(r"\S*\Z")
# Longest word looked at when deciding whether a "." ends an abbreviation.
_MAX_WORD_LENGTH = 32
# Arabic titles written with a period: "د. محمد" (doctor), "أ. أحمد" (professor/teacher).
_ARABIC_ABBREVIATIONS = frozenset({"د", "أ"})
# Dotted acronyms without their final period: "U.S", "e.g", "i.e", "U.N", "أ.د", "ق.م".
_DOTTED_ACRONYM_RE = regex.compile(r"(?:\p{L}\.)+\p{L}")
# A letter of the Arabic script (not a digit, not a diacritic).
_ARABIC_LETTER_RE = regex.compile(r"[\p{Script=Arabic}&&\p{L}]", regex.VERSION1)
# A single Latin letter: an initial ("J. Smith") or an enumerator ("Plan B.").
_SINGLE_LATIN_LETTER_RE = re.compile(r"[A-Za-z]")


def segment(text: str) -> list[Paragraph]:
    """Split `text` into paragraphs (non-empty lines) of sentences with exact offsets."""
    return [_segment_paragraph(text, start, end) for start, end in paragraph_spans(text)]


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of every paragraph: each non-empty line, stripped of white space."""
    spans = []
    for line in _LINE_RE.finditer(text):
        start, end = _strip_span(text, line.start(), line.end())
        if start < end:
            spans.append((start, end))
    return spans


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _segment_paragraph(text: str, start: int, end: int) -> Paragraph:
    sentences = []
    sentence_start = start
    for boundary in _sentence_ends(text, start, end):
        sentences.append(Sentence(text[sentence_start:boundary], sentence_start, boundary))
        sentence_start = _skip_spaces(text, boundary, end)
    sentences.append(Sentence(text[sentence_start:end], sentence_start, end))
    return Paragraph(tuple(sentences), start, end)


def _skip_spaces(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos].isspace():
        pos += 1
    return pos


def _sentence_ends(text: str, start: int, end: int) -> Iterator[int]:
    """Yield the exclusive end offset of every sentence but the paragraph's last one."""
    quotes = _outermost(_matched_quote_spans(text, start, end))
    letters = [pos for pos in range(start, end) if text[pos].isalpha()]
    sentence_start = start
    for run in _TERMINATOR_RUN_RE.finditer(text, start, end):
        boundary = _absorb_closers(text, run.end(), end)
        if boundary >= end:
            continue  # the paragraph end is an implicit boundary
        if text[boundary].isspace():
            next_char_pos = _skip_spaces(text, boundary, end)
        elif _glued_to_arabic_sentence(text, start, run, boundary):
            next_char_pos = boundary
        else:
            continue  # inside a token: "2.5", "U.S", "example.com"
        if _inside_quote(boundary, quotes):
            continue
        if not _has_letter(letters, sentence_start, run.start()):
            continue  # a list marker such as "1." or a stray "..." is not a sentence
        if _is_abbreviation(text, start, run, next_char_pos):
            continue
        if _cannot_start_sentence(text[next_char_pos]):
            continue
        yield boundary
        sentence_start = next_char_pos


def _glued_to_arabic_sentence(text: str, paragraph_start: int, run: re.Match[str], pos: int) -> bool:
    """True for a missing space after a terminator, a common scraping artifact: "المتحدة.وقال".

    Only an Arabic letter may follow (no Arabic number or abbreviation continues that way),
    and the word before must be longer than one letter: "ق.م" and "أ.د" are abbreviations.
    """
    return (
        _ARABIC_LETTER_RE.match(text, pos) is not None
        and len(_word_before(text, paragraph_start, run.start())) >= 2
    )


def _absorb_closers(text: str, pos: int, end: int) -> int:
    while pos < end and text[pos] in _TRAILING_CLOSERS:
        pos += 1
    return pos


def _matched_quote_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(opener, closer) positions of quotes/brackets opened and closed within [start, end).

    Unclosed openers and unopened closers are ignored. A straight quote '"' opens when
    followed by a non-space and not preceded by one (`قال: "`), closes when preceded by a
    non-space and not followed by one (`"،` counts as followed by a non-space, so such
    ambiguous quotes close an open straight quote and otherwise open one). Openers nested
    deeper than _MAX_QUOTE_DEPTH are ignored, which keeps hostile input linear.
    """
    stack: list[tuple[str, int]] = []  # (expected closer, opener position)
    spans = []
    for pos in range(start, end):
        char = text[pos]
        if char in _PAIRED_OPENERS:
            if len(stack) < _MAX_QUOTE_DEPTH:
                stack.append((_PAIRED_OPENERS[char], pos))
        elif char in _PAIRED_CLOSERS or char == _STRAIGHT_QUOTE:
            if char == _STRAIGHT_QUOTE and _straight_quote_opens(text, pos, start, end, stack):
                if len(stack) < _MAX_QUOTE_DEPTH:
                    stack.append((_STRAIGHT_QUOTE, pos))
                continue
            opener = _pop_matching_opener(stack, char)
            if opener is not None:
                spans.append((opener, pos))
    return spans


def _straight_quote_opens(
    text: str, pos: int, start: int, end: int, stack: list[tuple[str, int]]
) -> bool:
    space_before = pos == start or text[pos - 1].isspace()
    space_after = pos + 1 == end or text[pos + 1].isspace()
    if space_before != space_after:
        return space_before  # `: "word` opens, `word" ` closes
    return not any(expected == _STRAIGHT_QUOTE for expected, _ in stack)


def _pop_matching_opener(stack: list[tuple[str, int]], closer: str) -> int | None:
    """Pop up to and including the innermost opener expecting `closer`; return its position.

    Openers above it were never closed and are discarded. Without a match, nothing changes.
    """
    for depth in range(len(stack) - 1, -1, -1):
        if stack[depth][0] == closer:
            opener = stack[depth][1]
            del stack[depth:]
            return opener
    return None


def _outermost(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans not inside another one, sorted (matched pairs nest or are disjoint)."""
    outermost: list[tuple[int, int]] = []
    for opener, closer in sorted(spans):
        if not outermost or opener > outermost[-1][1]:
            outermost.append((opener, closer))
    return outermost


def _inside_quote(boundary: int, quotes: list[tuple[int, int]]) -> bool:
    """True when ending a sentence at `boundary` would separate a quote's opener and closer.

    `quotes` are sorted, disjoint (outermost) spans.
    """
    index = bisect.bisect_left(quotes, (boundary, -1)) - 1  # last quote opened before boundary
    return index >= 0 and boundary <= quotes[index][1]


def _has_letter(letters: list[int], start: int, end: int) -> bool:
    """True when a position in the sorted `letters` lies in [start, end)."""
    index = bisect.bisect_left(letters, start)
    return index < len(letters) and letters[index] < end


def _is_abbreviation(text: str, paragraph_start: int, run: re.Match[str], next_pos: int) -> bool:
    """True when the single "." of `run` ends an abbreviation rather than a sentence."""
    if run.group() != ".":
        return False
    word = _word_before(text, paragraph_start, run.start())
    lowered = word.lower()
    if lowered in _LATIN_ABBREVIATIONS or word in _ARABIC_ABBREVIATIONS:
        return True
    if _SINGLE_LATIN_LETTER_RE.fullmatch(word) or _DOTTED_ACRONYM_RE.fullmatch(word):
        return True
    return lowered in _NUMBER_PREFIX_ABBREVIATIONS and text[next_pos].isdigit()


def _word_before(text: str, paragraph_start: int, pos: int) -> str:
    """The word ending at `pos`, without opening quotes; at most _MAX_WORD_LENGTH characters
    (abbreviations are short, and the bound keeps long unspaced runs linear)."""
    window = text[max(paragraph_start, pos - _MAX_WORD_LENGTH) : pos]
    return _TRAILING_WORD_RE.search(window).group().lstrip(_WORD_OPENERS)


def _cannot_start_sentence(char: str) -> bool:
    # Lowercase (Latin, Greek, Cyrillic...) continues the sentence: "approx. three".
    # Arabic has no case, so this never blocks a split before an Arabic word.
    return char.islower() or char in _NON_INITIAL_PUNCTUATION
