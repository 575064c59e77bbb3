"""Split a sentence that is too long for the translation model into chunks that fit.

`chunk_sentence` measures text with a caller-supplied token counter (the model tokenizer's)
and, while a piece is longer than `max_tokens`, splits it in two at the best boundary
available, in this priority:

1. after a sentence terminator followed by white space (`.`, `!`, `؟`, ... - these only
   remain inside one segmented sentence within quotations: `قال: "... . ..."`);
2. after `؛` or `;`;
3. after `،` or `,` (not the thousands separator in "6,000");
4. before a word starting with `و` (the Arabic conjunction "and" is a prefix; the next
   chunk starts with "و..."). Without morphology "وقال" (and he said) and "وزير" (minister)
   look alike; a short list of frequent news words whose first letter is a root و is skipped,
   the rest is accepted as a known approximation;
5. at any white space;
6. a hard cut in the middle of the text, never between a letter and its diacritics
   unless the text is nothing but diacritics.

Among boundaries of the best kind present, the one closest to the middle (in characters)
wins, so the two halves have similar sizes. A higher kind always wins over a lower one,
even when off-centre. Pieces are split again until they fit.

Contract: chunks are non-empty and stripped of white space; they are consecutive
substrings of the stripped sentence and only white space lies between two of them
(none after a hard cut). Joining them with " " therefore reproduces the sentence up to
white space, and no visible character is lost, duplicated or reordered. A single code
point that alone exceeds `max_tokens` (pathological) is returned as its own chunk, so the
function always terminates; that chunk is the only kind that may exceed the limit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["chunk_sentence"]

# The split position is the end of the match: terminators (with their closing quotes)
# followed by white space, e.g. `طبرق. ولا` inside a quotation. A match starts only at the
# start of a run, and the possessive quantifiers never give back: a run of 100k terminators
# not followed by white space is one failed attempt, not one per terminator (quadratic).
_AFTER_TERMINATOR_RE = re.compile(r"(?<![.!?؟…۔])[.!?؟…۔]++[\"'»”’)\]]*+(?=\s)")
# Split after the semicolon.
_AFTER_SEMICOLON_RE = re.compile(r"[؛;]")
# Split after the comma; a Latin comma between two digits is a thousands separator (6,000).
_AFTER_COMMA_RE = re.compile(r"،|(?<!\d),|,(?!\d)")
# Split before a word-initial "و" so the conjunction starts the next chunk. The word itself
# is captured to skip the frequent words in which "و" is a root letter, not "and".
_BEFORE_WAW_RE = re.compile(r"(?<=\s)(?P<word>و[\w\u064b-\u065f\u0670]*)")
# Arabic diacritics (harakat, tanween, shadda, sukun, dagger alef), ignored in that lookup.
_DIACRITICS_RE = re.compile(r"[\u064b-\u065f\u0670]")
# Frequent news words starting with a root "و" (not exhaustive, exact undiacritized forms).
_ROOT_WAW_WORDS = frozenset(
    """
    وزير وزيرة وزراء وزارة وزارات وكالة وكالات وكيل وجود وجودها وجوده وصول وقت وسط
    وفق وفقا وضع وراء ولاية ولايات واشنطن وحدة وحدات وطني وطنية وثيقة وثائق
    وقف وقود وفد وفاة وظيفة واقع وادي
    """.split()
)
# Split at white space (one candidate per run, so long runs stay linear).
_BEFORE_SPACE_RE = re.compile(r"\s+")

# (pattern, split at match end?) in priority order; the hard cut is the fallback.
_BOUNDARY_KINDS: tuple[tuple[re.Pattern[str], bool], ...] = (
    (_AFTER_TERMINATOR_RE, True),
    (_AFTER_SEMICOLON_RE, True),
    (_AFTER_COMMA_RE, True),
    (_BEFORE_WAW_RE, False),
    (_BEFORE_SPACE_RE, False),
)

Span = tuple[int, int]


def chunk_sentence(
    sentence: str, count_tokens: Callable[[str], int], max_tokens: int
) -> list[str]:
    """Split `sentence` into chunks of at most `max_tokens` tokens each (see module doc).

    A sentence that fits is returned as one stripped chunk; a blank sentence gives [].
    Raises ValueError when `max_tokens` < 1.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    text = sentence.strip()
    if not text:
        return []
    return [text[start:end] for start, end in _chunk_spans(text, count_tokens, max_tokens)]


def _chunk_spans(
    text: str, count_tokens: Callable[[str], int], max_tokens: int
) -> list[Span]:
    """Spans of the chunks of stripped `text`, in order (iterative: no recursion limit)."""
    chunks: list[Span] = []
    pending: list[Span] = [(0, len(text))]  # a stack; the leftmost piece is on top
    while pending:
        start, end = pending.pop()
        if end - start <= 1 or count_tokens(text[start:end]) <= max_tokens:
            chunks.append((start, end))
            continue
        left, right = _split_in_two(text, start, end)
        pending.append(right)
        pending.append(left)
    return chunks


def _split_in_two(text: str, start: int, end: int) -> tuple[Span, Span]:
    """Split the stripped span [start, end) (length >= 2) into two non-empty stripped spans."""
    for pattern, after_match in _BOUNDARY_KINDS:
        candidates = [
            halves
            for match in pattern.finditer(text, start, end)
            if not _is_root_waw_word(match)
            and (halves := _halves(text, start, end, match.end() if after_match else match.start()))
        ]
        if candidates:
            middle = (start + end) / 2
            return min(candidates, key=lambda halves: (abs(halves[0][1] - middle), halves[0][1]))
    cut = _hard_cut(text, start, end)
    return (start, cut), (cut, end)


def _is_root_waw_word(match: re.Match[str]) -> bool:
    word = match.groupdict().get("word")
    return word is not None and _DIACRITICS_RE.sub("", word) in _ROOT_WAW_WORDS


def _halves(text: str, start: int, end: int, cut: int) -> tuple[Span, Span] | None:
    """The two stripped halves of cutting [start, end) at `cut`, or None if one is empty."""
    left_end = cut
    while left_end > start and text[left_end - 1].isspace():
        left_end -= 1
    right_start = cut
    while right_start < end and text[right_start].isspace():
        right_start += 1
    if left_end == start or right_start == end:
        return None
    return (start, left_end), (right_start, end)


def _hard_cut(text: str, start: int, end: int) -> int:
    """Cut position nearest the middle that does not separate a base from its combining marks."""
    middle = (start + end) // 2
    for distance in range(end - start):
        for pos in (middle - distance, middle + distance):
            if start < pos < end and not _is_combining_mark(text[pos]):
                return pos
    return middle  # nothing but combining marks: cut anyway rather than exceed the limit


def _is_combining_mark(char: str) -> bool:
    # Category M (Mn/Mc/Me): harakat, shadda, Quranic marks... they belong to the letter before.
    return unicodedata.category(char).startswith("M")
