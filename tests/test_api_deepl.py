"""DeepL-compatible /v2 API: the official `deepl` Python client against a real server on loopback (tiny model)."""

from __future__ import annotations

import pytest
from lxml import html as lxml_html

from model_server.tiny_models import MEMORISED_PAIRS

deepl = pytest.importorskip("deepl")

MEMORISED = dict(MEMORISED_PAIRS)
AGREEMENT = "اتفاق دفاعي بين الطرفين"
THANKS = "شكرا جزيلا."


@pytest.fixture()
def translator(tiny_server, monkeypatch):
    monkeypatch.setattr(deepl.http_client, "max_network_retries", 0)   # no backoff sleeps on 429/5xx
    return deepl.Translator("any-key:fx", server_url=tiny_server.base_url)


def test_official_client_translates_one_and_many_texts(translator):
    single = translator.translate_text(AGREEMENT, target_lang="EN-US")
    assert single.text == MEMORISED[AGREEMENT]
    assert single.detected_source_lang == "AR" and single.billed_characters == len(AGREEMENT)
    many = translator.translate_text([THANKS, "مرحبا بالعالم.\nالطقس جميل اليوم."], source_lang="AR",
                                     target_lang="EN-GB")
    assert [r.text for r in many] == [MEMORISED[THANKS], "Hello world.\nThe weather is nice today."]


def test_split_sentences_nonewlines_joins_lines(translator):
    result = translator.translate_text("مرحبا بالعالم.\nالطقس جميل اليوم.", target_lang="EN-US",
                                       split_sentences="nonewlines")
    assert result.text == "Hello world. The weather is nice today."


def test_tag_handling_html_keeps_markup_and_ignore_tags(translator):
    result = translator.translate_text(f"<p>اتفاق دفاعي بين <b>الطرفين</b></p><p><x-keep>{THANKS}</x-keep></p>",
                                       target_lang="EN-US", tag_handling="html", ignore_tags=["x-keep"])
    root = lxml_html.fragment_fromstring(result.text, create_parent="div")
    first, second = root.findall("p")
    assert first.text_content() == MEMORISED[AGREEMENT] and first.find("b").text
    assert second.find("x-keep").text == THANKS


def test_tag_handling_xml(translator):
    result = translator.translate_text(f"<doc><t>{THANKS}</t><k id='1'/></doc>", target_lang="EN-US",
                                       tag_handling="xml")
    assert result.text == f"<doc><t>{MEMORISED[THANKS]}</t><k id=\"1\"/></doc>"


def test_languages(translator):
    assert [(lang.code, lang.name) for lang in translator.get_source_languages()] == [("AR", "Arabic")]
    assert {lang.code for lang in translator.get_target_languages()} == {"EN-GB", "EN-US"}


def test_languages_by_post_as_older_plugins_send_it(tiny_server):
    with tiny_server.client() as client:
        response = client.post("/v2/languages", data={"type": "target", "auth_key": "k"})
    assert [lang["language"] for lang in response.json()] == ["EN-GB", "EN-US"]


def test_errors_are_deepl_exceptions(translator):
    with pytest.raises(deepl.DeepLException, match="no glossary named 'g-1'"):  # glossary_id: /v1/glossaries
        translator.translate_text(THANKS, source_lang="AR", target_lang="EN-US", glossary="g-1")
    with pytest.raises(deepl.DeepLException, match="Bad request.*does not look like Arabic"):
        translator.translate_text("The Times reported it.", target_lang="EN-US")
    with pytest.raises(deepl.DeepLException, match="Bad request.*target_lang"):
        translator.translate_text(THANKS, target_lang="DE")


def test_form_body_and_exact_response_shape(tiny_server):
    with tiny_server.client() as client:
        response = client.post("/v2/translate", data={"text": [THANKS, "   "], "target_lang": "EN"},
                               headers={"Authorization": "DeepL-Auth-Key whatever"})
    assert response.status_code == 200, response.text
    assert response.json() == {"translations": [
        {"detected_source_language": "AR", "text": MEMORISED[THANKS]},
        {"detected_source_language": "AR", "text": ""}]}


@pytest.mark.parametrize("request_kwargs,status,message", [
    ({"json": {"target_lang": "EN-US"}}, 400, "Parameter 'text' not specified."),
    ({"json": {"text": [THANKS]}}, 400, "Parameter 'target_lang' not specified."),
    ({"json": {"text": [THANKS], "target_lang": "FR"}}, 400, "Value for 'target_lang' not supported."),
    ({"json": {"text": [THANKS], "target_lang": "EN-US", "source_lang": "DE"}}, 400,
     "Value for 'source_lang' not supported."),
    ({"json": {"text": [THANKS], "target_lang": "EN-US", "split_sentences": "2"}}, 400,
     "Value for 'split_sentences' not supported."),
    ({"content": b'{"text": ', "headers": {"content-type": "application/json"}}, 400, "not valid JSON"),
    ({"json": {"text": [THANKS] * 9, "target_lang": "EN-US"}}, 413, "the limit is 8"),
    ({"content": b'{"text": ["' + b"a" * 300_000 + b'"]}', "headers": {"content-type": "application/json"}},
     413, "the limit is 200000"),
])
def test_bad_requests_get_deepl_errors(tiny_server, request_kwargs, status, message):
    with tiny_server.client() as client:
        response = client.post("/v2/translate", **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"message"} and message in body["message"]


def test_unknown_paths_and_methods_in_the_namespace_answer_in_deepl_shape(tiny_server):
    with tiny_server.client() as client:
        missing = client.post("/v2/write/rephrase", json={})
        wrong_method = client.delete("/v2/translate")
        patch = client.patch("/v2/glossaries/some-id", json={})
        main = client.post("/translate", json={"text": "The Times reported it."})
    assert missing.status_code == 404 and set(missing.json()) == {"message"}
    assert wrong_method.status_code == 405 and set(wrong_method.json()) == {"message"}
    assert patch.status_code == 405 and set(patch.json()) == {"message"}
    assert main.json()["error"]["code"] == "not_arabic"   # the main API keeps its own shape


def test_context_formality_and_model_type_are_accepted_as_not_applicable(translator):
    result = translator.translate_text(AGREEMENT, target_lang="EN-US", context="مقال عن ليبيا",
                                       formality="prefer_more", model_type="quality_optimized")
    assert result.text == MEMORISED[AGREEMENT] and result.model_type_used == "latency_optimized"
    assert result.billed_characters == len(AGREEMENT)   # context is never charged
    assert translator.translate_text(AGREEMENT, target_lang="EN-GB", formality="default").model_type_used is None
    with pytest.raises(deepl.DeepLException, match="'formality' is not supported for given 'target_lang'"):
        translator.translate_text(AGREEMENT, target_lang="EN-US", formality="more")
    with pytest.raises(deepl.DeepLException, match="Value for 'model_type' not supported"):
        translator.translate_text(AGREEMENT, target_lang="EN-US", model_type="fastest")
    for refused in ({"style_id": "house-style"}, {"custom_instructions": ["Use British spelling"]}):
        with pytest.raises(deepl.DeepLException, match=f"'{next(iter(refused))}' is not supported"):
            translator.translate_text(AGREEMENT, target_lang="EN-US", extra_body_parameters=refused)
