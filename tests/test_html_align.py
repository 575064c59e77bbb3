"""The pure pieces of model_server/html/, tested directly: alignment (align.py), document detection and
depth refusal (extract.py), and the non-recursive walker (nesting.py).

The indexed alignment (bisect over word boundaries and alphanumeric runs) must place spans exactly where
the straightforward scans it replaced did: `Reference*` below are those scans, and random texts compare
the two position by position.
"""

from __future__ import annotations

import random

import pytest

from model_server.errors import ServiceError
from model_server.html import InlineSpan, align_spans, looks_like_document, parse_markup
from model_server.html.align import _Target
from model_server.html.extract import nesting_depth
from model_server.html.nesting import run_nested

_ANCHOR_STRIP = " \t.,;:!?\"'«»“”‘’()[]"


# The scans the index replaced (quadratic over a run's spans, but obviously right).
def _nearest(candidates, estimate, default):
    return min(candidates, key=lambda p: (abs(p - estimate), p)) if candidates else default


def reference_word_start(target, estimate, lo, hi):
    return _nearest([p for p in range(lo, hi) if not target[p].isspace() and (p == lo or target[p - 1].isspace())],
                    estimate, hi)


def reference_word_end(target, estimate, lo, hi):
    return _nearest([p for p in range(lo + 1, hi + 1)
                     if not target[p - 1].isspace() and (p == hi or target[p].isspace())], estimate, lo)


def reference_gap(target, estimate, lo, hi, after_space):
    if after_space:
        found = [p for p in range(lo, hi + 1) if p in (lo, hi) or (target[p - 1].isspace() and not target[p].isspace())]
    else:
        found = [p for p in range(lo, hi + 1) if p in (lo, hi) or (not target[p - 1].isspace() and target[p].isspace())]
    return _nearest(found, estimate, lo)


def reference_word_end_after(target, start, hi):
    end = start
    while end < hi and target[end].isspace():
        end += 1
    while end < hi and not target[end].isspace():
        end += 1
    return end


def reference_anchor(target, hint, lo, hi, estimate):
    needle = hint.strip(_ANCHOR_STRIP).casefold()
    haystack = target.casefold()
    if len(needle) < 2 or len(haystack) != len(target):
        return None
    best = None
    found = haystack.find(needle, lo, hi)
    while found != -1:
        end = found + len(needle)
        if (found == 0 or not haystack[found - 1].isalnum()) and (end == len(haystack) or not haystack[end].isalnum()):
            if best is None or abs(found - estimate) < abs(best[0] - estimate):
                best = (found, end)
        found = haystack.find(needle, found + 1, hi)
    return best


def random_estimate(rng: random.Random, lo: int, hi: int) -> float:
    """Whole and half offsets too: ties between two candidates must break the same way."""
    return rng.choice([rng.randint(lo - 2, hi + 2), rng.randint(lo - 2, hi + 2) + 0.5, rng.uniform(lo - 2, hi + 2)])


def random_text(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("ab  Ab.\t-") for _ in range(length))


def test_indexed_snapping_matches_the_scans_it_replaced():
    rng = random.Random(12)
    for _ in range(3000):
        text = random_text(rng, rng.randint(0, 24))
        target = _Target(text)
        lo = rng.randint(0, len(text))
        hi = rng.randint(lo, len(text))
        estimate = random_estimate(rng, lo, hi)
        assert target.snap_word_start(estimate, lo, hi) == reference_word_start(text, estimate, lo, hi)
        assert target.snap_word_end(estimate, lo, hi) == reference_word_end(text, estimate, lo, hi)
        for after_space in (True, False):
            assert target.snap_gap(estimate, lo, hi, after_space=after_space) == reference_gap(
                text, estimate, lo, hi, after_space)
        assert target.word_end_after(lo, hi) == reference_word_end_after(text, lo, hi)


def test_indexed_anchor_search_matches_the_scan_it_replaced():
    rng = random.Random(7)
    words = ["ab", "Ab", "b", "ab-b", "ab.", "(ab)", "ba"]
    for _ in range(3000):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 10)))
        hint = rng.choice(["ab", "AB", "ab b", "b ab", "-b", "(ab)", "ab-b", "x", "ba ab."])
        lo = rng.randint(0, len(text))
        hi = rng.randint(lo, len(text))
        estimate = random_estimate(rng, lo, hi)
        assert _Target(text).find_anchor(hint, lo, hi, estimate) == reference_anchor(text, hint, lo, hi, estimate), (
            text, hint, lo, hi, estimate)


def test_anchor_lands_on_the_occurrence_nearest_the_mapped_position():
    text = "Haftar met Putin; later Haftar flew home; Haftar again"
    spans = [InlineSpan(start=30, end=36, hint="haftar")]
    align_spans(spans, 54, text)
    assert spans[0].target == (24, 30)   # the middle "Haftar", nearest offset 30


def test_a_word_repeated_thousands_of_times_keeps_each_anchor_lookup_bounded():
    # The needle's first word occurs everywhere but the whole needle nowhere: the search gives up after a
    # bounded number of tries and the span falls back to proportional position, on whole words.
    text = " ".join(["the city"] * 2000)
    spans = [InlineSpan(start=100, end=110, hint="the town")]
    align_spans(spans, len(text), text)
    start, end = spans[0].target
    assert text[start:end].strip() and (start == 0 or text[start - 1] == " ")


def test_sentence_knots_keep_spans_in_their_sentence():
    # Source: two sentences of 10 and 30 characters; translation: 30 and 10. A span at source 12-16 (in the
    # second sentence) must land in the second sentence's translation, not at 30 % of the whole.
    target = "one two three four five six se. eight nine"
    spans = [InlineSpan(start=12, end=16)]
    align_spans(spans, 40, target, knots=[(0, 0), (10, 31), (11, 32), (40, len(target))])
    start, end = spans[0].target
    assert start >= 32 and target[start:end] in {"eight", "nine"}


def test_deeply_nested_spans_align_and_walk_without_recursion():
    outer = span = InlineSpan(start=0, end=4000)
    for depth in range(1, 3000):
        child = InlineSpan(start=depth, end=4000 - depth)
        span.children.append(child)
        span = child
    align_spans([outer], 4000, "word " * 800)
    assert sum(1 for _ in outer.walk()) == 3000
    assert all(node.target[0] <= node.target[1] for node in outer.walk())


def test_run_nested_runs_nested_calls_in_order_at_any_depth():
    seen = []

    def visit(level):
        seen.append(("enter", level))
        if level < 5000:
            yield visit(level + 1)
        seen.append(("leave", level))

    run_nested(visit(0))
    assert seen[:2] == [("enter", 0), ("enter", 1)] and seen[-1] == ("leave", 0) and len(seen) == 10002


@pytest.mark.parametrize("markup,expected", [
    ("<!DOCTYPE html><p>x</p>", True),
    ("  <html lang='ar'><body>x</body></html>", True),
    ("<html>", True),
    ("<?xml version='1.0'?>\n<!-- a --> <!--b--><!doctype html>", True),
    ("<!---->" * 50 + "<html>", True),
    ("<!-- wp:paragraph -->\n<p>x</p>\n<!-- /wp:paragraph -->", False),
    ("<!-- a --> text <!-- b --><html>", False),   # text before <html>: a fragment
    ("<!-- unclosed <html>", False),
    ("<htmlx>", False),
    ("<p>x</p>", False),
    ("", False),
])
def test_document_detection(markup, expected):
    assert looks_like_document(markup) is expected


def test_nesting_within_the_parser_limit_keeps_every_level():
    # 254 levels below the html and body a fragment is parsed in: libxml2's 256.
    markup = "".join(f"<div>مستوى{i} " for i in range(254)) + "</div>" * 254 + "<p>بعد</p>"
    document = parse_markup(markup)
    assert nesting_depth(document.root) == 255   # the container, then 254 levels
    text = " ".join(run.text for run in document.runs)
    assert "مستوى0" in text and "مستوى253" in text and "بعد" in text


@pytest.mark.parametrize("depth,named", [(255, "255 levels"), (400, "400 levels"), (3000, "at least 2046 levels")])
def test_nesting_deeper_than_the_parser_keeps_is_refused_naming_the_depth(depth, named):
    with pytest.raises(ServiceError) as raised:
        parse_markup("<div>" * depth + "نص" + "</div>" * depth + "<p>بعد</p>")
    assert raised.value.code == "invalid_markup"
    assert named in raised.value.message and "at most 254 levels" in raised.value.message


def test_whole_documents_count_html_and_body_and_xml_names_its_limit():
    with pytest.raises(ServiceError, match="300 levels deep; the parser keeps at most 256 levels"):
        parse_markup("<!doctype html><html><body>" + "<div>" * 298 + "نص")
    with pytest.raises(ServiceError, match="more than 256 levels deep") as raised:
        parse_markup("<d>" * 300 + "نص" + "</d>" * 300, xml=True)
    assert raised.value.code == "invalid_markup"
