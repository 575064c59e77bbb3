"""Doubling tests for markup (tests/timing.py): every hostile-input class costs ~2x at twice the size.

They time the markup work itself - parse_markup, plan_document, align_spans, finish_document - with a
fake translation (each sentence becomes as many "word"s as it has words, so every inline element's
anchor occurs everywhere: the worst case for the anchor search), never the model.

Figures on main before the fix (one core of the dev machine): 22 WordPress blocks took 1.4 s and x4 for
every 2 more (regex backtracking in the document detection), `<p>` + "كلمة<br>" * 4000 took 3.5 s (x3.8
per doubling), 4000 `<b>` spans 1.9 s (x3.8). Nesting past libxml2's 256 levels silently lost text.
"""

from __future__ import annotations

import re

from model_server.html import InlineSpan, align_spans, finish_document, looks_like_document, parse_markup, plan_document
from model_server.pipeline import PipelineConfig, TextLimits
from model_server.results import SentenceResult, TextResult
from tests.timing import assert_linear

CONFIG = PipelineConfig(limits=TextLimits(max_text_chars=10**8, min_arabic_ratio=0.3), request_timeout_s=60,
                        max_new_tokens=256)
WORD = "كلمة"
_SENTENCE_END_RE = re.compile(r"(?<=\.) ")
PARSER_LEVELS = 254   # what libxml2 keeps below the html and body a fragment is parsed in


def fake_result(text: str) -> TextResult:
    """One sentence per "."-terminated piece, each word translated as "word"."""
    sentences = []
    for number, source in enumerate(s for s in _SENTENCE_END_RE.split(text) if s):
        translation = " ".join("word" for _ in source.split()) + ("." if source.endswith(".") else "")
        sentences.append(SentenceResult(index=number, paragraph=0, source=source, translation=translation, score=-0.1))
    return TextResult(index=0, translation=" ".join(s.translation for s in sentences), sentences=sentences)


def translate_markup_work(markup: str) -> str:
    """What a markup request costs besides the model: plan, (fake) translation, finish."""
    plan = plan_document(0, markup, CONFIG)
    result = finish_document(0, plan, [fake_result(text) for text in plan.texts])
    assert result.error is None
    return result.translation




def test_the_fake_translation_goes_through_every_stage():
    out = translate_markup_work(f"<!-- wp:paragraph --><p>{WORD} <b>{WORD}</b>. {WORD}<br>{WORD}</p>")
    assert out == "<!-- wp:paragraph --><p>word <b>word</b>. word<br> word</p>"


# ---- comment runs ---------------------------------------------------------------------------------
WORDPRESS_BLOCK = (f'<!-- wp:heading {{"level":3}} -->\n<h3 class="wp-block-heading">{WORD} {WORD}</h3>\n'
                   f"<!-- /wp:heading -->\n\n<!-- wp:paragraph -->\n<p>{WORD} {WORD}.</p>\n<!-- /wp:paragraph -->\n\n")


def test_wordpress_block_comments_are_linear():
    assert_linear(parse_markup, lambda n: WORDPRESS_BLOCK * n, 200)
    assert_linear(translate_markup_work, lambda n: WORDPRESS_BLOCK * n, 200)


def test_empty_comment_runs_are_linear_in_fragments_and_before_a_document():
    assert_linear(parse_markup, lambda n: "<!---->" * n + f"<p>{WORD}</p>", 2000)
    assert_linear(parse_markup, lambda n: "<!---->" * n + f"<html><body><p>{WORD}</p></body></html>", 2000)
    assert_linear(looks_like_document, lambda n: "<!-- wp:paragraph -->\n" * n + "<html>", 5000)


# ---- tag storms -----------------------------------------------------------------------------------
def test_br_storm_is_linear():
    assert_linear(translate_markup_work, lambda n: "<p>" + f"{WORD}<br>" * n + "</p>", 500)


def test_many_inline_spans_in_one_sentence_are_linear():
    assert_linear(translate_markup_work, lambda n: "<p>" + f"<b>{WORD}</b> <a href='/x'>{WORD} {WORD}</a> " * n
                  + "</p>", 300)


def test_many_sentences_with_spans_are_linear():
    assert_linear(translate_markup_work, lambda n: "<p>" + f"{WORD} <em>{WORD}</em> {WORD}. " * n + "</p>", 300)


def nested_inline(depth: int) -> str:
    return "".join(f"<b>{WORD} {WORD} {WORD} " for _ in range(depth)) + "</b>" * depth


def inline_around_a_block(depth: int) -> str:
    return "".join(f"<span>{WORD} " for _ in range(depth)) + f"<div>{WORD}</div>" + "</span>" * depth


def test_nested_inline_tags_are_linear_up_to_the_parser_limit():
    # Ten nests each, so that doubling the depth (up to what the parser keeps) is real work. Inline tags
    # around a block make every level a block container whose inline-ness is asked again (the descendant
    # walk per element that this replaced was quadratic in the depth there).
    assert_linear(translate_markup_work, lambda n: "<p>" + nested_inline(n) * 10 + "</p>", 60,
                  max_n=PARSER_LEVELS // 2)
    assert_linear(translate_markup_work, lambda n: inline_around_a_block(n) * 10, 60, max_n=PARSER_LEVELS // 2)


def test_align_spans_is_linear_in_the_spans_of_one_run():
    def make(n: int):
        source = f"{WORD} " * n
        return source, [InlineSpan(start=5 * i, end=5 * i + 4, hint="word") for i in range(0, n, 2)]

    def run(value):
        source, spans = value
        align_spans(spans, len(source), "word " * (len(source) // 5))

    assert_linear(run, make, 1000)


# ---- deep nesting ---------------------------------------------------------------------------------
def nested_blocks(depth: int) -> str:
    return "".join(f"<div>{WORD} {WORD} " for _ in range(depth)) + "</div>" * depth


def test_deeply_nested_blocks_are_linear_up_to_the_parser_limit():
    assert_linear(translate_markup_work, lambda n: nested_blocks(n) * 10, 60, max_n=PARSER_LEVELS // 2)


def test_nesting_past_the_limit_is_refused_in_linear_time():
    # The refusal parses twice (the second time to measure the depth): still one pass each.
    def refuse(markup: str) -> None:
        try:
            parse_markup(markup)
        except Exception as exc:   # noqa: BLE001 - asserted just below
            assert getattr(exc, "code", None) == "invalid_markup"
        else:
            raise AssertionError("accepted")

    # Capped at 2^19 words (~4 MB, 2n ~8 MB: past any body limit): the refusal is so fast that growing n
    # until one run takes 30 ms reached 4M words (28 MB), where page faults of the huge buffers, not the
    # parser, made the ratio 3.2 in one CI run.
    assert_linear(refuse, lambda n: "<div>" * (PARSER_LEVELS + 1) + f"{WORD} " * n, 2000, max_n=1 << 19)


# ---- long attribute values and many blocks --------------------------------------------------------
def test_long_attribute_values_are_linear():
    assert_linear(translate_markup_work, lambda n: f'<p><img alt="{f"{WORD} " * n}">{WORD}</p>', 2000)
    assert_linear(translate_markup_work, lambda n: f'<p class="{"lead " * n}"><a href="/?q={"a" * n}" '
                  f'title="{WORD}">{WORD}</a></p>', 5000)


def test_many_blocks_are_linear():
    assert_linear(translate_markup_work, lambda n: f"<p>{WORD} {WORD}.</p><li>{WORD}</li>" * n, 300)
