"""Direction and language of translated markup (model_server/html/direction.py, settings.set_translated_direction).

The rule is asserted exactly with the fake word-by-word pipeline of tests/test_html.py; then end to end on
the real server with the tiny model: POST /translate format=html, DeepL tag_handling=html and xml through
the official `deepl` client, a Gutenberg article, and a server with the setting off (every attribute and
comment as it was).
"""

from __future__ import annotations

import re

import pytest
from lxml import html as lxml_html

from model_server.html import parse_markup, plan_document
from model_server.html.direction import switch_direction
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import LiveServer, tiny_settings
from tests.test_html import run
from tests.test_html_linear import CONFIG, WORD, translate_markup_work
from tests.timing import assert_linear

deepl = pytest.importorskip("deepl")

MEMORISED = dict(MEMORISED_PAIRS)
AGREEMENT = "اتفاق دفاعي بين الطرفين"
ALLIANCE = "تحالف عسكري بين خليفة حفتر وروسيا"
THANKS = "شكرا جزيلا."
_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)   # test-side only: small, trusted input


def fragment(markup: str):
    return lxml_html.fragment_fromstring(markup, create_parent="div")


def attributes_of(root) -> list[tuple[str, dict]]:
    return [(el.tag, dict(el.attrib)) for el in root.iter() if isinstance(el.tag, str)]


# ---- the rule, exactly (fake pipeline) -------------------------------------------------------------
def test_a_full_rtl_document_becomes_english_left_to_right_and_rtl_css_is_left_alone():
    markup = ("<!DOCTYPE html><html lang='ar' dir='rtl'><head><meta charset='utf-8'><title>مرحبا</title>"
              "<script>var a = 'نص';</script><style>.rtl{}</style></head>"
              "<body dir='rtl'><div dir='rtl' class='rtl' style='text-align:right'><p>مرحبا بالعالم</p>"
              "<img src='a.png' alt='صورة'></div></body></html>")
    result, _ = run(markup)
    root = lxml_html.document_fromstring(result.translation)
    assert (root.get("lang"), root.get("dir")) == ("en", "ltr")
    assert root.find("body").get("dir") == "ltr"
    div = root.find(".//div")
    # The stylesheet's own right-to-left class and inline alignment: the service cannot know what they mean.
    assert (div.get("dir"), div.get("class"), div.get("style")) == ("ltr", "rtl", "text-align:right")
    assert root.find(".//script").text == "var a = 'نص';"   # Arabic in a script is not read: it holds nothing back


def test_nested_dir_switches_where_the_text_was_translated_and_only_rtl_and_arabic_values():
    markup = ("<div dir='rtl'><section dir='rtl' lang='ar'><p dir='rtl' lang='ar-EG'>مرحبا</p></section>"
              "<p dir='rtl'>2024</p><blockquote dir='ltr' lang='en-GB'>We will not comment.</blockquote>"
              "<p dir='auto' lang='fr'>شكرا</p><hr dir='rtl'><p dir='Rtl' LANG='AR'>نص</p></div>")
    result, _ = run(markup)
    assert attributes_of(fragment(result.translation))[1:] == [
        ("div", {"dir": "ltr"}),
        ("section", {"dir": "ltr", "lang": "en"}),
        ("p", {"dir": "ltr", "lang": "en"}),
        ("p", {"dir": "rtl"}),                          # nothing translated in it: kept
        ("blockquote", {"dir": "ltr", "lang": "en-GB"}),
        ("p", {"dir": "auto", "lang": "fr"}),           # only rtl and Arabic values change
        ("hr", {"dir": "rtl"}),                         # no text at all
        ("p", {"dir": "ltr", "lang": "en"})]


def test_an_arabic_block_left_untranslated_holds_its_ancestors_back_but_inline_arabic_does_not():
    markup = ("<article lang='ar' dir='rtl'>"
              "<div lang='ar'><p lang='ar'>مرحبا</p><pre lang='ar' dir='rtl'>نص</pre></div>"
              "<div lang='ar'><p>شكرا</p><p translate='no' dir='rtl'>رابط</p></div>"
              "<div lang='ar'><p>شكرا</p><x-name dir='rtl'>خليفة</x-name></div>"
              "<div lang='ar'><p>شكرا</p><pre>x = 1</pre></div>"
              "<p lang='ar' dir='rtl'>نص <span translate='no' lang='ar'>خليفة</span> <code dir='rtl'>رابط</code>"
              " في ليبيا</p></article>")
    result, _ = run(markup, skip_tags=frozenset({"x-name"}))
    root = fragment(result.translation)
    article = root.find("article")
    assert (article.get("lang"), article.get("dir")) == ("ar", "rtl")   # it still holds Arabic blocks
    first, second, third, fourth = article.findall("div")
    assert first.get("lang") == "ar" and first.find("p").get("lang") == "en"
    assert (first.find("pre").get("lang"), first.find("pre").text) == ("ar", "نص")   # never modified
    assert second.get("lang") == "ar" and second.findall("p")[1].get("dir") == "rtl"
    assert third.get("lang") == "ar" and third.find("x-name").get("dir") == "rtl"   # skip_tags / ignore_tags
    assert fourth.get("lang") == "en"   # a never-translated block without Arabic holds nothing back
    sentence = article.find("p")
    assert (sentence.get("lang"), sentence.get("dir")) == ("en", "ltr")   # Arabic inside the sentence only
    assert sentence.find("span").get("lang") == "ar" and sentence.find("code").get("dir") == "rtl"


def test_inline_elements_and_attributes_switch_with_their_translated_text():
    result, _ = run("<p>مرحبا <b lang='ar'>بالعالم</b> <img dir='rtl' alt='صورة'> <img dir='rtl' src='x.png'></p>")
    b, with_alt, without_alt = fragment(result.translation).find("p")
    assert b.get("lang") == "en" and with_alt.get("dir") == "ltr" and without_alt.get("dir") == "rtl"


def test_xml_lang_in_xml_and_html():
    xml, _ = run("<doc xml:lang='ar' dir='rtl'><t lang='ar'>مرحبا</t><k dir='rtl'>2024</k></doc>", xml=True)
    assert xml.translation == '<doc xml:lang="en" dir="ltr"><t lang="en">hello</t><k dir="rtl">2024</k></doc>'
    html, _ = run("<p xml:lang='ar'>مرحبا</p>")
    assert html.translation == '<p xml:lang="en">hello</p>'


def test_gutenberg_direction_attribute_follows_its_paragraph():
    markup = ('<!-- wp:paragraph {"direction":"rtl","fontSize":"large"} -->\n<p dir="rtl" class="has-large-font-size">'
              'مرحبا</p>\n<!-- /wp:paragraph -->\n<!-- wp:paragraph {"direction":"rtl"} -->\n<p dir="rtl">2024</p>\n'
              '<!-- /wp:paragraph -->\n<!-- wp:heading {"textAlign":"right"} -->\n<h2 class="has-text-align-right">'
              'شكرا</h2>\n<!-- /wp:heading -->')
    result, _ = run(markup)
    assert _COMMENT_RE.findall(result.translation) == [
        '<!-- wp:paragraph {"direction":"ltr","fontSize":"large"} -->', "<!-- /wp:paragraph -->",
        '<!-- wp:paragraph {"direction":"rtl"} -->', "<!-- /wp:paragraph -->",   # its <p> kept rtl: so does it
        '<!-- wp:heading {"textAlign":"right"} -->', "<!-- /wp:heading -->"]
    assert '<h2 class="has-text-align-right">thanks</h2>' in result.translation


def test_with_the_setting_off_every_attribute_and_comment_is_as_it_was():
    markup = ('<!-- wp:paragraph {"direction":"rtl"} --><div dir="rtl" lang="ar" xml:lang="ar"><p dir="rtl" '
              'lang="ar">مرحبا <b lang="ar">بالعالم</b></p><img dir="rtl" alt="صورة"></div><!-- /wp:paragraph -->')
    result, _ = run(markup, set_direction=False)
    expected = [(tag, {**attrs, **({"alt": "picture"} if "alt" in attrs else {})})
                for tag, attrs in attributes_of(fragment(markup))]
    assert attributes_of(fragment(result.translation)) == expected
    assert _COMMENT_RE.findall(result.translation) == _COMMENT_RE.findall(markup)
    assert run(markup)[0].translation != result.translation   # the same markup does switch with it on


def test_documents_with_nothing_translated_come_back_as_they_were():
    passthrough, _ = run("<p dir='rtl' lang='ar'>The Times reported it.</p>", passthrough=True)
    assert passthrough.translation == "<p dir='rtl' lang='ar'>The Times reported it.</p>"
    only_code, _ = run("<div dir='rtl'><code>x = 1</code></div>")
    assert only_code.translation == '<div dir="rtl"><code>x = 1</code></div>'


# ---- linear time ---------------------------------------------------------------------------------
DIRECTION_BLOCK = (f"<div dir='rtl' lang='ar'><p dir='rtl' lang='ar'>{WORD} <b lang='ar'>{WORD}</b>.</p>"
                   f"<pre dir='rtl'>{WORD}</pre><img dir='rtl' alt='{WORD}'></div>")


def direction_work(n: int) -> str:
    """n blocks that carry dir and lang (each with a translated <p>, an inline element, a never-translated
    Arabic <pre> and a translated alt), inside one element that carries them too: doubling n doubles the
    elements (nesting cannot grow: the parser caps it)."""
    return f"<section dir='rtl' lang='ar'>{DIRECTION_BLOCK * n}</section>"


def test_the_direction_pass_is_linear_in_the_element_count():
    def switch_only(plan) -> None:   # the pass alone (after the first run it finds the same, switches nothing)
        switch_direction(plan.document, [*plan.runs, *plan.attributes], 0.3)

    assert_linear(switch_only, lambda n: plan_document(0, direction_work(n), CONFIG), 200)
    assert_linear(translate_markup_work, direction_work, 200)   # and everything a markup request does


def test_the_linear_test_input_exercises_both_outcomes():
    out = translate_markup_work(direction_work(2))
    root = fragment(out)
    assert root.find("section").get("dir") == "rtl"   # held back by the Arabic <pre> blocks
    assert [p.get("dir") for p in root.iter("p")] == ["ltr", "ltr"]
    assert len(parse_markup(direction_work(2)).skipped_blocks) == 2


# ---- end to end: the real server and the tiny model ------------------------------------------------
RTL_DOCUMENT = ("<!DOCTYPE html><html lang='ar' dir='rtl'><head><title>شكرا جزيلا.</title></head>"
                f"<body dir='rtl'><div dir='rtl' class='rtl'><h1 lang='ar'>{ALLIANCE}</h1>"
                f"<p dir='rtl'>{AGREEMENT}</p></div><div dir='rtl'><p>مرحبا بالعالم.</p><pre>لا تترجم</pre></div>"
                "</body></html>")


def test_translate_format_html_switches_a_full_rtl_document(tiny_server):
    with tiny_server.client() as client:
        response = client.post("/translate", json={"text": RTL_DOCUMENT, "format": "html"})
    assert response.status_code == 200, response.text
    root = lxml_html.document_fromstring(response.json()["results"][0]["translation"])
    # The <pre> keeps Arabic: its <div>, <body> and <html> keep rtl; the first <div> and what is in it switch.
    assert (root.get("lang"), root.get("dir"), root.find("body").get("dir")) == ("ar", "rtl", "rtl")
    translated, held = root.findall(".//div")
    assert (translated.get("dir"), translated.get("class")) == ("ltr", "rtl")
    assert translated.find("h1").get("lang") == "en" and translated.find("h1").text == MEMORISED[ALLIANCE]
    assert translated.find("p").get("dir") == "ltr" and translated.find("p").text == MEMORISED[AGREEMENT]
    assert held.get("dir") == "rtl" and held.find("pre").text == "لا تترجم"


def test_translate_format_html_switches_html_and_body_when_everything_was_translated(tiny_server):
    markup = RTL_DOCUMENT.replace("<pre>لا تترجم</pre>", "<pre>x = 1</pre>")
    with tiny_server.client() as client:
        out = client.post("/translate", json={"text": markup, "format": "html"}).json()["results"][0]["translation"]
    root = lxml_html.document_fromstring(out)
    assert (root.get("lang"), root.get("dir"), root.find("body").get("dir")) == ("en", "ltr", "ltr")
    assert [div.get("dir") for div in root.iter("div")] == ["ltr", "ltr"]


@pytest.fixture()
def translator(tiny_server, monkeypatch):
    monkeypatch.setattr(deepl.http_client, "max_network_retries", 0)   # no backoff sleeps on 429/5xx
    return deepl.Translator("any-key:fx", server_url=tiny_server.base_url)


def test_deepl_tag_handling_html_switches_and_ignore_tags_hold_back(translator):
    result = translator.translate_text(
        f"<div dir='rtl' lang='ar'><p dir='rtl'>{THANKS}</p></div>"
        f"<div dir='rtl'><p>{AGREEMENT}</p><x-keep dir='rtl'>{THANKS}</x-keep></div>",
        target_lang="EN-US", tag_handling="html", ignore_tags=["x-keep"])
    switched, held = fragment(result.text).findall("div")
    assert attributes_of(switched) == [("div", {"dir": "ltr", "lang": "en"}), ("p", {"dir": "ltr"})]
    assert switched.find("p").text == MEMORISED[THANKS]
    assert held.get("dir") == "rtl" and held.find("x-keep").get("dir") == "rtl"
    assert held.find("x-keep").text == THANKS and held.find("p").text == MEMORISED[AGREEMENT]


def test_deepl_tag_handling_xml_switches_xml_lang(translator):
    result = translator.translate_text(f"<doc xml:lang='ar'><t dir='rtl'>{THANKS}</t><k id='1' dir='rtl'/></doc>",
                                       target_lang="EN-US", tag_handling="xml")
    assert result.text == f'<doc xml:lang="en"><t dir="ltr">{MEMORISED[THANKS]}</t><k id="1" dir="rtl"/></doc>'


def test_gutenberg_rtl_article_through_translate(tiny_server):
    article = "\n\n".join([
        f'<!-- wp:heading {{"textAlign":"right"}} -->\n<h2 class="wp-block-heading has-text-align-right">{ALLIANCE}'
        "</h2>\n<!-- /wp:heading -->",
        f'<!-- wp:paragraph {{"direction":"rtl"}} -->\n<p dir="rtl">{AGREEMENT}</p>\n<!-- /wp:paragraph -->',
        '<!-- wp:code -->\n<pre class="wp-block-code"><code>حفتر = "لا تترجم"</code></pre>\n<!-- /wp:code -->'])
    with tiny_server.client() as client:
        out = client.post("/translate", json={"text": article, "format": "html"}).json()["results"][0]["translation"]
    assert _COMMENT_RE.findall(out) == [c.replace('"direction":"rtl"', '"direction":"ltr"')
                                        for c in _COMMENT_RE.findall(article)]
    root = fragment(out)
    assert root.find("p").get("dir") == "ltr" and root.find("p").text == MEMORISED[AGREEMENT]
    assert root.find("h2").get("class") == "wp-block-heading has-text-align-right"


@pytest.fixture(scope="module")
def server_keeping_direction(tiny_marian_dir):
    from model_server.api.app import create_app

    with LiveServer(create_app(tiny_settings(tiny_marian_dir, set_translated_direction=False))) as server:
        yield server


def test_with_the_setting_off_the_server_keeps_every_attribute(server_keeping_direction, monkeypatch):
    markup = RTL_DOCUMENT.replace("<pre>لا تترجم</pre>", "<pre>x = 1</pre>")
    gutenberg = f'<!-- wp:paragraph {{"direction":"rtl"}} -->\n<p dir="rtl" lang="ar">{AGREEMENT}</p>\n<!-- /wp:paragraph -->'
    with server_keeping_direction.client() as client:
        results = client.post("/translate", json={"texts": [markup, gutenberg], "format": "html"}).json()["results"]
    document, block = (r["translation"] for r in results)
    assert attributes_of(lxml_html.document_fromstring(document)) == attributes_of(lxml_html.document_fromstring(markup))
    assert block == gutenberg.replace(AGREEMENT, MEMORISED[AGREEMENT])   # byte for byte around the text
    monkeypatch.setattr(deepl.http_client, "max_network_retries", 0)
    translator = deepl.Translator("any-key:fx", server_url=server_keeping_direction.base_url)
    xml = translator.translate_text(f"<doc xml:lang='ar'><t dir='rtl'>{THANKS}</t></doc>", target_lang="EN-US",
                                    tag_handling="xml")
    assert xml.text == f'<doc xml:lang="ar"><t dir="rtl">{MEMORISED[THANKS]}</t></doc>'
    html = translator.translate_text(f"<p dir='rtl' lang='ar'>{THANKS}</p>", target_lang="EN-US", tag_handling="html")
    assert html.text == f'<p dir="rtl" lang="ar">{MEMORISED[THANKS]}</p>'

