"""HTML-aware translation (model_server/html/) without a model: a fake word-by-word pipeline.

The fake translates each sentence word by word with a small dictionary (unknown words become
"w<length>"), so alignment and anchoring can be asserted exactly. The tiny real model is used in
tests/test_api_html.py.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest
from lxml import etree
from lxml import html as lxml_html

from model_server.cpu import CpuPool
from model_server.errors import ServiceError
from model_server.html import InlineSpan, align_spans, parse_markup, translate_markup
from model_server.pipeline import TextLimits, Timings
from model_server.results import SentenceResult, TextResult
from model_server.text import normalize_text, segment

WORDS = {"اتفاق": "agreement", "دفاعي": "defence", "بين": "between", "الطرفين": "the two sides",
         "خليفة": "Khalifa", "حفتر": "Haftar", "وروسيا": "and Russia", "تحالف": "alliance", "عسكري": "military",
         "صورة": "picture", "مرحبا": "hello", "بالعالم": "world", "شكرا": "thanks", "جزيلا": "a lot",
         "نص": "text", "رابط": "link", "في": "in", "ليبيا": "Libya"}


def fake_translate(sentence: str) -> str:
    out = []
    for word in sentence.split():
        core = word.strip(".،؟!")
        out.append(WORDS.get(core, f"w{len(core)}") + ("." if word.endswith(".") else ""))
    return " ".join(out)


class FakePipeline:
    """What translate_markup needs of TranslationPipeline: config.limits, config.non_arabic_passthrough,
    config.set_translated_direction, cpu (a real CpuPool) and translate(texts, options, lane=...) -> (results, Timings). Records every call."""

    def __init__(self, *, passthrough: bool = False, max_text_chars: int = 100_000, set_direction: bool = True) -> None:
        self.config = SimpleNamespace(limits=TextLimits(max_text_chars=max_text_chars, min_arabic_ratio=0.3),
                                      non_arabic_passthrough=passthrough, set_translated_direction=set_direction)
        self.calls: list[list[str]] = []
        self.cpu = CpuPool(1)

    async def translate(self, texts, options, *, lane=None):
        self.calls.append(list(texts))
        results = []
        for index, text in enumerate(texts):
            sentences = [SentenceResult(index=i, paragraph=0, source=s.text, translation=fake_translate(s.text),
                                        score=-0.1) for i, s in enumerate(
                             s for p in segment(normalize_text(text)) for s in p.sentences)]
            results.append(TextResult(index=index, translation=" ".join(s.translation for s in sentences),
                                      sentences=sentences, paragraphs=1))
        return results, Timings()


def run(markup: str | list[str], **kwargs):
    pipeline = FakePipeline(**{k: kwargs.pop(k) for k in ("passthrough", "max_text_chars", "set_direction")
                               if k in kwargs})
    documents = markup if isinstance(markup, list) else [markup]
    try:
        results, _ = asyncio.run(translate_markup(pipeline, documents, options=None, **kwargs))
    finally:
        pipeline.cpu.close()
    return (results if isinstance(markup, list) else results[0]), pipeline


def text_of(fragment: str) -> str:
    return lxml_html.fragment_fromstring(fragment, create_parent="div").text_content()


def test_inline_element_is_anchored_on_its_own_translation():
    result, pipeline = run("<p>اتفاق دفاعي بين <b>الطرفين</b></p>")
    assert result.translation == "<p>agreement defence between <b>the two sides</b></p>"
    # One pipeline call: the block, then the inline element's own text (the anchor hint).
    assert pipeline.calls == [["اتفاق دفاعي بين الطرفين", "الطرفين"]]
    assert [s.source for s in result.sentences] == ["اتفاق دفاعي بين الطرفين"]


def test_without_an_anchor_the_span_lands_by_proportional_position_on_whole_words():
    spans = [InlineSpan(start=17, end=24)]             # "الطرفين" in "اتفاق دفاعي بين الطرفين" (24 chars)
    align_spans(spans, 24, "A defence agreement between the two sides")
    start, end = spans[0].target
    assert "A defence agreement between the two sides"[start:end] in {"sides", "two sides", "the two sides"}


def test_links_keep_their_attributes_and_sentence_knots_keep_them_in_their_sentence():
    markup = ('<p>مرحبا بالعالم. <a href="https://example.com/a?b=1&amp;c=2" class="x">شكرا</a> جزيلا.</p>')
    result, _ = run(markup)
    root = lxml_html.fragment_fromstring(result.translation)
    link = root.find("a")
    assert link.get("href") == "https://example.com/a?b=1&c=2" and link.get("class") == "x"
    assert link.text == "thanks"
    assert root.text_content() == "hello world. thanks a lot."


def test_nested_inline_elements_stay_nested_and_ordered():
    result, _ = run("<p>تحالف <a href='/x'>عسكري بين <b>خليفة حفتر</b></a> وروسيا</p>")
    assert result.translation == ('<p>alliance <a href="/x">military between <b>Khalifa Haftar</b></a>'
                                  ' and Russia</p>')


def test_blocks_attributes_and_everything_never_translated():
    markup = ("<h1 title='عنوان'>مرحبا بالعالم</h1>"
              "<ul><li>نص<ul><li>شكرا جزيلا</li></ul>رابط</li></ul>"
              "<figure><img src='a.png' alt='صورة'><figcaption>نص في ليبيا</figcaption></figure>"
              "<pre>نص</pre><p>نص <code>print('نص')</code> رابط</p>"
              "<div translate='no'>نص <b>رابط</b></div><p class='lead notranslate'>نص</p>"
              "<script>var a = 'نص';</script><style>p{}</style><!-- نص -->"
              "<table><caption>نص</caption><tr><th>رابط</th><td>2024</td><td>The Times</td></tr></table>")
    result, _ = run(markup)
    out = result.translation
    assert "<h1 title=\"w5\">hello world</h1>" in out
    assert "<ul><li>text<ul><li>thanks a lot</li></ul>link</li></ul>" in out
    assert '<img src="a.png" alt="picture">' in out and "<figcaption>text in Libya</figcaption>" in out
    assert "<pre>نص</pre>" in out and "<code>print('نص')</code>" in out
    assert "<div translate=\"no\">نص <b>رابط</b></div>" in out and '<p class="lead notranslate">نص</p>' in out
    assert "<script>var a = 'نص';</script>" in out and "<style>p{}</style>" in out and "<!-- نص -->" in out
    assert "<caption>text</caption>" in out and "<th>link</th><td>2024</td><td>The Times</td>" in out
    # Translated units: h1, li, nested li, li tail, figcaption, p (around the code), caption, th + title, alt.
    assert result.paragraphs == 10


def test_code_inside_a_sentence_is_kept_in_place_and_left_out_of_the_model_input():
    result, pipeline = run("<p>نص <code>x = 1</code> رابط</p>")
    assert pipeline.calls[0][0] == "نص رابط"
    root = lxml_html.fragment_fromstring(result.translation)
    assert root.find("code").text == "x = 1"
    assert root.text_content().split() == ["text", "x", "=", "1", "link"]


def test_br_separates_words_and_stays_between_them():
    result, pipeline = run("<p>مرحبا<br>بالعالم</p>")
    assert pipeline.calls[0][0] == "مرحبا بالعالم"
    assert result.translation == "<p>hello<br> world</p>"
    spaced, _ = run("<p>مرحبا <br>بالعالم</p>")
    assert spaced.translation == "<p>hello <br>world</p>"


def test_whole_html_document_keeps_doctype_head_and_entities():
    markup = ("<!DOCTYPE html>\n<html lang='ar' dir='rtl'><head><meta charset='utf-8'><title>مرحبا</title>"
              "</head><body>\n  <p>شكرا&nbsp;جزيلا</p>\n</body></html>")
    result, _ = run(markup)
    assert result.translation.startswith("<!DOCTYPE html>")
    # Everything in it was translated, so it says it is English now (tests/test_html_direction.py).
    assert '<html lang="en" dir="ltr">' in result.translation and '<meta charset="utf-8">' in result.translation
    assert "<title>hello</title>" in result.translation
    assert "<body>\n  <p>thanks a lot</p>\n</body>" in result.translation


def test_output_is_well_formed_and_every_tag_survives():
    markup = ("<div><p>اتفاق <em>دفاعي</em> بين <a href='#'><strong>الطرفين</strong></a></p>"
              "<blockquote><p>نص <span class='k'>رابط</span></p></blockquote><dl><dt>نص</dt><dd>رابط</dd></dl></div>")
    result, _ = run(markup)
    before = [el.tag for el in lxml_html.fragment_fromstring(markup).iter()]
    after = [el.tag for el in lxml_html.fragment_fromstring(result.translation).iter()]
    assert before == after
    etree.fromstring(result.translation)   # also well-formed as XML (no void elements here)


def test_text_outside_any_element_and_text_between_blocks_is_translated():
    result, _ = run("مرحبا <b>بالعالم</b><p>شكرا</p>نص")
    assert result.translation == "hello <b>world</b><p>thanks</p>text"


def test_xml_mode_parses_fragments_and_keeps_unknown_elements():
    result, _ = run("<doc><title>مرحبا</title><para>شكرا <x:ref xmlns:x='urn:x' id='1'>جزيلا</x:ref></para></doc>",
                    xml=True)
    assert result.translation == ('<doc><title>hello</title><para>thanks <x:ref xmlns:x="urn:x" id="1">a lot'
                                  '</x:ref></para></doc>')
    fragment, _ = run("نص <b>رابط</b><p>شكرا</p>", xml=True)
    assert fragment.translation == "text <b>link</b><p>thanks</p>"


def test_xml_entities_are_not_expanded():
    xxe = '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]><d>نص &e;</d>'
    result, _ = run(xxe, xml=True)
    assert "root:" not in (result.translation or "")


def test_skip_tags_extend_the_never_translated_set():
    result, _ = run("<p>نص <x-name>خليفة</x-name></p><x-name>رابط</x-name>", skip_tags=frozenset({"x-name"}))
    assert "<x-name>خليفة</x-name>" in result.translation and "<x-name>رابط</x-name>" in result.translation


def test_document_level_checks():
    assert run("<p>The Times reported it.</p>")[0].error.code == "not_arabic"
    passthrough, _ = run("<p>The Times reported it.</p>", passthrough=True)
    assert passthrough.passthrough is True and passthrough.translation == "<p>The Times reported it.</p>"
    assert run("   ")[0].error.code == "empty_text"
    assert run("<p>" + "ن" * 50 + "</p>", max_text_chars=20)[0].error.code == "text_too_long"
    nothing, pipeline = run("<p><code>x = 1</code></p>")
    assert nothing.error is None and nothing.translation == "<p><code>x = 1</code></p>" and pipeline.calls == [[]]
    with pytest.raises(ServiceError) as raised:
        parse_markup("<a><b></a>", xml=True)
    assert raised.value.code == "invalid_markup"


def test_several_documents_share_one_pipeline_call_and_fail_independently():
    results, pipeline = run(["<p>مرحبا</p>", "<p>English only</p>", "<p>شكرا</p>"])
    assert len(pipeline.calls) == 1 and pipeline.calls[0] == ["مرحبا", "شكرا"]
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].translation == "<p>hello</p>" and results[1].error.code == "not_arabic"
    assert results[2].translation == "<p>thanks</p>"


def test_english_blocks_inside_an_arabic_document_are_left_alone():
    result, pipeline = run("<p>مرحبا بالعالم</p><blockquote>We will not comment.</blockquote>")
    assert result.translation == "<p>hello world</p><blockquote>We will not comment.</blockquote>"
    assert pipeline.calls == [["مرحبا بالعالم"]]


class RecordingPool(CpuPool):
    """A real pool that records which functions it ran and on which thread."""

    def __init__(self) -> None:
        super().__init__(1)
        self.ran: list[tuple[str, str]] = []

    async def run(self, fn, /, *args, **kwargs):
        def recorded(*a, **k):
            self.ran.append((fn.__name__, threading.current_thread().name))
            return fn(*a, **k)

        return await super().run(recorded, *args, **kwargs)


def test_markup_work_runs_in_the_cpu_pool_one_call_per_stage_for_all_documents():
    pipeline = FakePipeline()
    pipeline.cpu = RecordingPool()
    try:
        results, _ = asyncio.run(translate_markup(pipeline, ["<p>مرحبا</p>", "<p>شكرا</p>", "<p>نص</p>"], None))
    finally:
        pipeline.cpu.close()
    assert [r.translation for r in results] == ["<p>hello</p>", "<p>thanks</p>", "<p>text</p>"]
    assert [name for name, _ in pipeline.cpu.ran] == ["_plan_all", "_finish_all"]
    assert all(thread.startswith("prepare") for _, thread in pipeline.cpu.ran)
