"""Alignment (pure, no parser): the source spans of a run's inline elements -> spans of its translation.

`align_spans` places each inline element of a run on its translation (see model_server/html/__init__.py
for what is guaranteed): it maps the element's source offsets through a monotone piecewise-linear map
whose knots are sentence boundaries, snaps them to word boundaries, and prefers an *anchor* (the
element's own translation found in the run's, whole words, nearest the mapped position).

Every lookup is O(log n) on an index built once per translation (`_Target`: the sorted word starts
and ends, and the positions of every case-folded alphanumeric run), so a run with thousands of inline
elements costs n log n, never spans x length.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

from model_server.html.nesting import Nested, run_nested

__all__ = ["InlineSpan", "align_spans"]

_WORD_RE = re.compile(r"\S+")           # a word: what str.isspace() does not separate
_ALNUM_RE = re.compile(r"[^\W_]+")      # a run of characters for which str.isalnum() is true
_ANCHOR_STRIP = " \t.,;:!?\"'«»“”‘’()[]"
# An anchor is looked for among this many occurrences of its first word nearest the mapped position: a
# translation that repeats a word thousands of times cannot make each span scan all of them.
_MAX_ANCHOR_CANDIDATES = 16


@dataclass(eq=False)
class InlineSpan:
    """An inline element's extent in a run's source text (`start:end`), its children, and (after
    `align_spans`) its extent in the translation (`target`). `atomic` spans keep their content."""

    start: int
    end: int
    element: Any = None
    atomic: bool = False
    children: list["InlineSpan"] = field(default_factory=list)
    hint: str | None = None             # the span's own text, translated on its own (an anchor candidate)
    after_space: bool = False           # an empty span: the source had white space right before it...
    space_after: bool = False           # ...and right after it (both: it stands between two spaces)
    target: tuple[int, int] = (0, 0)

    def walk(self) -> Iterator["InlineSpan"]:
        """This span and its descendants, in document order."""
        stack = [self]
        while stack:
            span = stack.pop()
            yield span
            stack.extend(reversed(span.children))


def align_spans(spans: Sequence[InlineSpan], source_length: int, target: str,
                knots: Sequence[tuple[int, int]] = ()) -> None:
    """Set `target` on every span (and descendant): ordered, nested, word-aligned, within `target`.

    `knots` are (source offset, target offset) pairs known to correspond (sentence boundaries); with
    (0, 0) and (source_length, len(target)) they define a monotone piecewise-linear position map."""
    points = sorted({(0, 0), (source_length, len(target)), *knots})
    sources = [p[0] for p in points]
    targets = [p[1] for p in points]

    def position(offset: int) -> float:
        k = bisect_left(sources, offset, 1)   # the first knot at or after `offset`
        if k == len(points):
            return float(len(target))
        s0, s1, t0, t1 = sources[k - 1], sources[k], targets[k - 1], targets[k]
        return t0 if s1 == s0 else t0 + (offset - s0) * (t1 - t0) / (s1 - s0)

    run_nested(_align_level(list(spans), 0, len(target), _Target(target), position))


def _align_level(spans: list[InlineSpan], lo: int, hi: int, target: "_Target",
                 position: Callable[[int], float]) -> Nested:
    """Place sibling `spans` in order within `target[lo:hi]`, then (nested calls) their children."""
    cursor = lo
    for span in spans:
        if span.end <= span.start:   # nothing to translate inside: a point between words
            point = target.snap_gap(position(span.start), cursor, hi, after_space=span.after_space)
            span.target = (point, point)
        else:
            anchor = target.find_anchor(span.hint, cursor, hi, position(span.start)) if span.hint else None
            if anchor is not None:
                start, end = anchor
            else:
                start = target.snap_word_start(position(span.start), cursor, hi)
                end = target.snap_word_end(position(span.end), start, hi)
                if end == start:
                    end = target.word_end_after(start, hi)
            span.target = (start, end)
        cursor = span.target[1]
        if span.children and not span.atomic:
            yield _align_level(span.children, span.target[0], span.target[1], target, position)


class _Target:
    """One translation, indexed once for the position queries of all its spans."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.word_starts: list[int] = []   # p: text[p] is not space, text[p - 1] is (or p == 0)
        self.word_ends: list[int] = []     # p: text[p - 1] is not space, text[p] is (or p == len)
        for word in _WORD_RE.finditer(text):
            self.word_starts.append(word.start())
            self.word_ends.append(word.end())
        self._folded = ""
        self._runs: dict[str, list[int]] | None = None   # built on the first anchor lookup
        self._runs_built = False

    def _space(self, p: int) -> bool:
        return self.text[p].isspace()

    def snap_word_start(self, estimate: float, lo: int, hi: int) -> int:
        """The start of a word in [lo, hi) nearest `estimate` (lo counts when it is not a space); else hi."""
        extra = [lo] if lo < hi and not self._space(lo) else []
        return _nearest(self.word_starts, lo, hi, estimate, extra, default=hi)

    def snap_word_end(self, estimate: float, lo: int, hi: int) -> int:
        """The end of a word in (lo, hi] nearest `estimate` (hi counts after a non-space); else lo."""
        extra = [hi] if lo < hi and not self._space(hi - 1) else []
        return _nearest(self.word_ends, lo + 1, hi, estimate, extra, default=lo)

    def word_end_after(self, start: int, hi: int) -> int:
        """The end of the word at or after `start`, at most hi."""
        k = bisect_right(self.word_ends, start)
        return min(hi, self.word_ends[k]) if k < len(self.word_ends) else hi

    def snap_gap(self, estimate: float, lo: int, hi: int, *, after_space: bool) -> int:
        """A point between words in [lo, hi]: before a word when the source had a space there, else right
        after one (lo and hi always count)."""
        if hi < lo:
            return lo
        points = self.word_starts if after_space else self.word_ends
        return _nearest(points, lo + 1, hi, estimate, [lo, hi], default=lo)

    def find_anchor(self, hint: str | None, lo: int, hi: int, estimate: float) -> tuple[int, int] | None:
        """Where `hint` occurs in text[lo:hi] (case-insensitive, whole words), nearest `estimate`.

        An occurrence starts its first alphanumeric run where the translation has exactly that run, so
        only those positions are tried (the nearest `_MAX_ANCHOR_CANDIDATES` of them)."""
        needle = (hint or "").strip(_ANCHOR_STRIP).casefold()
        first_run = _ALNUM_RE.search(needle)
        if len(needle) < 2 or first_run is None:
            return None
        runs = self._alnum_runs()
        if runs is None:
            return None
        offset = first_run.start()
        starts = runs.get(first_run.group(), [])
        # Occurrence start f = run start - offset, with lo <= f and f + len(needle) <= hi.
        left = bisect_left(starts, lo + offset)
        right_end = bisect_right(starts, hi - len(needle) + offset)
        right = bisect_left(starts, estimate + offset, left, right_end)
        left_index = right - 1
        for _ in range(_MAX_ANCHOR_CANDIDATES):
            take_left = left_index >= left and (right >= right_end or estimate - (starts[left_index] - offset)
                                                <= (starts[right] - offset) - estimate)
            if take_left:
                found, left_index = starts[left_index] - offset, left_index - 1
            elif right < right_end:
                found, right = starts[right] - offset, right + 1
            else:
                return None
            if self._whole_word_at(needle, found):
                return found, found + len(needle)
        return None

    def _alnum_runs(self) -> dict[str, list[int]] | None:
        """Case-folded alphanumeric run -> its start offsets; None when case folding changes the length
        (e.g. "ß"), so folded offsets would not be offsets of the translation."""
        if not self._runs_built:
            self._runs_built = True
            folded = self.text.casefold()
            if len(folded) == len(self.text):
                self._folded, self._runs = folded, {}
                for run in _ALNUM_RE.finditer(folded):
                    self._runs.setdefault(run.group(), []).append(run.start())
        return self._runs

    def _whole_word_at(self, needle: str, found: int) -> bool:
        folded, end = self._folded, found + len(needle)
        return (folded.startswith(needle, found) and (found == 0 or not folded[found - 1].isalnum())
                and (end == len(folded) or not folded[end].isalnum()))


def _nearest(points: list[int], lo: int, hi: int, estimate: float, extra: list[int], *, default: int) -> int:
    """Of the sorted `points` within [lo, hi) and the `extra` ones, the nearest `estimate` (the smaller on
    a tie); `default` when there are none."""
    first, last = bisect_left(points, lo), bisect_left(points, hi)
    at = bisect_left(points, estimate, first, last)
    candidates = [*extra, *points[max(first, at - 1):min(last, at + 1)]]
    return min(candidates, key=lambda p: (abs(p - estimate), p)) if candidates else default
