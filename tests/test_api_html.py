"""POST /translate with format=html: real server on loopback, the tiny Marian model.

The tiny model only translates MEMORISED_PAIRS, so exactness is asserted on memorised sentences wrapped
in markup. What the alignment guarantees (model_server/html/): every tag and attribute survives in
order; the text with markup stripped is exactly the block's plain translation; an inline element with
text gets whole words of it. Which words is only asserted in tests/test_html.py (a fake pipeline).
"""

from __future__ import annotations

from lxml import etree
from lxml import html as lxml_html

from model_server.tiny_models import MEMORISED_PAIRS

MEMORISED = dict(MEMORISED_PAIRS)
AGREEMENT = "اتفاق دفاعي بين الطرفين"
ALLIANCE = "تحالف عسكري بين خليفة حفتر وروسيا"


def translate_html(server, markup: str | list[str]):
    with server.client() as client:
        body = {"texts": markup} if isinstance(markup, list) else {"text": markup}
        response = client.post("/translate", json={**body, "format": "html"})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_inline_bold_survives_and_stripped_text_is_the_memorised_translation(tiny_server):
    result = translate_html(tiny_server, "<p>اتفاق دفاعي بين <b>الطرفين</b></p>")[0]
    root = lxml_html.fragment_fromstring(result["translation"])
    assert root.tag == "p" and [el.tag for el in root.iter()] == ["p", "b"]
    expected = MEMORISED[AGREEMENT]
    assert root.text_content() == expected
    bold = root.find("b").text
    assert bold and bold == bold.strip() and f" {bold}" in f" {expected}"   # whole words of the translation
    assert [s["source"] for s in result["sentences"]] == [AGREEMENT]
    assert result["sentences"][0]["translation"] == expected


def test_document_blocks_links_attributes_and_untranslated_elements(tiny_server):
    markup = ("<!DOCTYPE html><html lang='ar'><head><title>شكرا جزيلا.</title>"
              "<script>var headline = 'مرحبا';</script></head><body>"
              f"<article><h1 class='headline'>{ALLIANCE}</h1>"
              f"<p><a href='https://example.com/x?a=1&amp;b=2' title='مرحبا بالعالم.'>{AGREEMENT}</a></p>"
              "<figure><img src='/p.jpg' alt='الطقس جميل اليوم.'><figcaption>مرحبا بالعالم.</figcaption></figure>"
              "<pre>لا تترجم</pre><p translate='no'>لا تترجم</p><p>Reuters</p></article></body></html>")
    result = translate_html(tiny_server, markup)[0]
    out = result["translation"]
    root = lxml_html.document_fromstring(out)
    assert out.startswith("<!DOCTYPE html>")
    assert [el.tag for el in root.iter()] == [el.tag for el in lxml_html.document_fromstring(markup).iter()]
    assert root.find(".//title").text == MEMORISED["شكرا جزيلا."]
    assert root.find(".//h1").text == MEMORISED[ALLIANCE] and root.find(".//h1").get("class") == "headline"
    link = root.find(".//a")
    assert link.get("href") == "https://example.com/x?a=1&b=2" and link.text == MEMORISED[AGREEMENT]
    assert link.get("title") == MEMORISED["مرحبا بالعالم."]
    assert root.find(".//img").get("alt") == MEMORISED["الطقس جميل اليوم."]
    assert root.find(".//img").get("src") == "/p.jpg"
    assert root.find(".//figcaption").text == MEMORISED["مرحبا بالعالم."]
    assert root.find(".//script").text == "var headline = 'مرحبا';"
    assert root.find(".//pre").text == "لا تترجم" and root.findall(".//p")[1].text == "لا تترجم"
    assert root.findall(".//p")[2].text == "Reuters"
    # Sentences: one per translated unit, numbered in document order (runs, then attributes).
    assert [s["paragraph"] for s in result["sentences"]] == [0, 1, 2, 3, 4, 5]
    assert result["paragraphs"] == 6


def test_fragment_output_is_well_formed(tiny_server):
    markup = f"<div><p>{ALLIANCE}</p><ul><li><em>{AGREEMENT}</em></li></ul></div>"
    out = translate_html(tiny_server, markup)[0]["translation"]
    tree = etree.fromstring(out)   # no void elements here, so it is well-formed XML too
    assert [el.tag for el in tree.iter()] == ["div", "p", "ul", "li", "em"]
    assert tree.find("p").text == MEMORISED[ALLIANCE] and tree.find(".//em").text == MEMORISED[AGREEMENT]


def test_html_documents_fail_independently_and_errors_keep_their_codes(tiny_server):
    results = translate_html(tiny_server, ["<p>شكرا جزيلا.</p>", "<p>English only.</p>", "  "])
    assert results[0]["translation"] == "<p>Thank you very much.</p>"
    assert results[1]["error"]["code"] == "not_arabic" and results[2]["error"]["code"] == "empty_text"
    with tiny_server.client() as client:
        response = client.post("/translate", json={"text": "<p>x</p>", "format": "html", "clean": True})
        assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error"
        response = client.post("/translate", json={"text": "<p>x</p>", "format": "pdf"})
        assert response.status_code == 422


def test_nesting_deeper_than_the_parser_keeps_is_400_invalid_markup_naming_the_depth(tiny_server):
    deep = "<div>" * 400 + AGREEMENT + "</div>" * 400 + "<p>شكرا جزيلا.</p>"
    with tiny_server.client() as client:
        response = client.post("/translate", json={"text": deep, "format": "html"})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_markup"
        assert "400 levels deep" in error["message"] and "at most 254 levels" in error["message"]
        # In a batch it is that document's error only.
        results = client.post("/translate", json={"texts": [deep, "<p>شكرا جزيلا.</p>"], "format": "html"}).json()
    assert results["results"][0]["error"]["code"] == "invalid_markup"
    assert results["results"][1]["translation"] == "<p>Thank you very much.</p>"


def test_nesting_at_the_parser_limit_translates_every_level(tiny_server):
    # 254 levels below the html and body a fragment is parsed in (libxml2 keeps 256): the deepest block,
    # a block half way and the one after all of them come back translated.
    markup = ("<div>" * 126 + f"<h2>{ALLIANCE}</h2>" + "<div>" * 127 + f"<p>{AGREEMENT}</p>" + "</div>" * 253
              + "<p>شكرا جزيلا.</p>")
    out = translate_html(tiny_server, markup)[0]["translation"]
    root = lxml_html.fragment_fromstring(out, create_parent="div")
    assert root.find(".//h2").text == MEMORISED[ALLIANCE]
    deepest = root.find(".//p")
    assert deepest.text == MEMORISED[AGREEMENT] and len(list(deepest.iterancestors())) == 254
    assert root.findall("p")[-1].text == MEMORISED["شكرا جزيلا."]
