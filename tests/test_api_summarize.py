"""POST /summarize and POST /v1/articles end to end: a real uvicorn server on loopback, the tiny Marian and
the tiny mT5 (real sentencepiece tokenizers), both strategies, long articles, presets, bad input."""

from __future__ import annotations

import pytest

from model_server.text import normalize_text, segment
from model_server.tiny_models import MEMORISED_SUMMARIES
from tests.conftest import JSON_BODY_ERRORS, SAMPLE_AR, LiveServer, assert_error, serve_services, tiny_settings

AR_BODY, AR_SUMMARY = MEMORISED_SUMMARIES[0]
EN_BODY, EN_SUMMARY = MEMORISED_SUMMARIES[1]
SHORT_AR, SHORT_AR_SUMMARY = MEMORISED_SUMMARIES[3]
TITLE, TITLE_EN = "تحالف عسكري بين خليفة حفتر وروسيا", "A military alliance between Khalifa Haftar and Russia"
# The summarizer's input limit is lowered from mT5's 512 to 256 tokens: the memorised bodies (~220 tokens)
# still fit whole, the sample article (~1600 tokens with the tiny tokenizer) needs several chunks and passes.
SUMMARY_LIMIT = 256


@pytest.fixture(scope="module")
def summary_server(tiny_marian_dir, tiny_mt5_dir):
    from model_server.api.app import create_app

    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(tiny_mt5_dir),
                             summary_max_input_tokens=SUMMARY_LIMIT, max_body_bytes=200_000, max_text_chars=20_000)
    with LiveServer(create_app(settings)) as server:
        yield server


def test_arabic_text_gets_its_memorised_summary_with_preset_and_chunking_reported(summary_server):
    with summary_server.client() as client:
        response = client.post("/summarize", json={"text": AR_BODY})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] == {"text": AR_SUMMARY, "lang": "ar", "method": "mt5(ar)",
                               "long_article": {"chunked": False, "chunks": 1, "passes": 1}}
    assert body["long_article"] == {"chunked": False, "chunks": 1, "passes": 1}
    assert body["preset"] == {"name": "summary-xlsum", "version": "1"}
    assert body["model"]["architecture"] == "mt5" and body["model"]["max_input_tokens"] == SUMMARY_LIMIT
    assert body["model"]["test_model"] is True and "NOT a translation" in body["warning"]
    assert set(body["timing_ms"]) == {"prepare", "summarize", "total"}


def test_english_text_and_a_named_preset(summary_server):
    with summary_server.client() as client:
        body = client.post("/summarize", json={"text": EN_BODY, "lang": "en", "preset": "summary-brief",
                                               "priority": "bulk"}).json()
    assert body["summary"]["text"] == EN_SUMMARY and body["summary"]["method"] == "mt5(en)"
    assert body["preset"] == {"name": "summary-brief", "version": "1"}


def test_article_translate_summary_strategy(summary_server):
    request = {"id": "art-1", "title": TITLE, "body": AR_BODY, "metadata": {"source": "sample", "tags": ["libya"]}}
    with summary_server.client() as client:
        response = client.post("/v1/articles", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "art-1" and body["metadata"] == {"source": "sample", "tags": ["libya"]}
    assert body["title"]["translation"] == TITLE_EN and body["title"]["error"] is None
    assert body["body"]["paragraphs"] == 2 and [s["paragraph"] for s in body["body"]["sentences"]] == [0, 1]
    assert body["strategy"] == "translate-summary"
    assert body["summary"]["ar"] == {"text": AR_SUMMARY, "lang": "ar", "method": "mt5(ar)",
                                     "long_article": {"chunked": False, "chunks": 1, "passes": 1}}
    english = body["summary"]["en"]
    # The tiny Marian has not memorised the Arabic summary: its English is noise, but it is Marian's.
    assert english["method"] == "marian(mt5(ar))" and english["text"] and english["long_article"] is None
    assert body["preset"] == {"name": "summary-xlsum", "version": "1"}
    assert body["models"]["translation"]["architecture"] == "marian"
    assert body["models"]["summarization"]["architecture"] == "mt5"
    assert set(body["timing_ms"]) == {"prepare", "translate", "summarize_ar", "translate_summary", "total"}
    assert body["warning"]


def test_article_summarize_both_strategy(summary_server):
    with summary_server.client() as client:
        body = client.post("/v1/articles", json={"title": TITLE, "body": AR_BODY, "strategy": "summarize-both",
                                                 "preset": "summary-brief"}).json()
    assert body["strategy"] == "summarize-both" and body["id"] is None
    assert body["summary"]["ar"]["text"] == AR_SUMMARY
    english = body["summary"]["en"]
    assert english["method"] == "mt5(en translation)" and english["long_article"]["passes"] >= 1
    assert "summarize_en" in body["timing_ms"] and "translate_summary" not in body["timing_ms"]
    assert body["preset"]["name"] == "summary-brief"


def test_sample_article_is_translated_and_its_long_body_summarized_in_chunks(summary_server):
    lines = SAMPLE_AR.splitlines()
    title, body_text = lines[2], "\n".join(lines[3:])  # the first headline line; the rest is the body
    with summary_server.client() as client:
        response = client.post("/v1/articles", json={"title": title, "body": body_text})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = [(number, s.text) for number, p in enumerate(segment(normalize_text(body_text))) for s in p.sentences]
    assert body["body"]["paragraphs"] == 19
    assert [(s["paragraph"], s["source"]) for s in body["body"]["sentences"]] == expected
    assert TITLE_EN in body["body"]["translation"].split("\n")
    assert body["long_article"]["chunked"] is True and body["long_article"]["chunks"] > 1
    assert body["long_article"]["passes"] >= 2 and body["summary"]["ar"]["long_article"] == body["long_article"]
    assert body["summary"]["ar"]["text"] and body["summary"]["en"]["text"]
    assert body["strategy"] == "translate-summary" and body["preset"]["name"] == "summary-xlsum"


def test_models_lists_the_summarizer_with_its_own_queue(summary_server):
    with summary_server.client() as client:
        models = client.get("/v1/models").json()
        spec = client.get("/openapi.json").json()
    assert [m["task"] for m in models["models"]] == ["translation", "summarization"]
    assert set(models["batching"]) == {"translation", "summarization"}
    assert models["batching"]["summarization"]["batches"] >= 1
    assert {"/summarize", "/v1/articles"} <= set(spec["paths"])


SUMMARIZE_CATALOGUE = [
    *JSON_BODY_ERRORS,
    pytest.param({"json": {"text": 42}}, 422, "validation_error", id="wrong-type"),
    pytest.param({"json": {}}, 422, "validation_error", id="missing-text"),
    pytest.param({"json": ["مرحبا"]}, 422, "validation_error", id="body-is-a-list"),
    pytest.param({"json": {"text": "مرحبا", "colour": "red"}}, 422, "validation_error", id="unknown-field"),
    pytest.param({"json": {"text": "مرحبا", "lang": "fr"}}, 422, "validation_error", id="unsupported-lang"),
    pytest.param({"json": {"text": "مرحبا", "preset": ""}}, 422, "validation_error", id="empty-preset-name"),
    pytest.param({"json": {"text": "مرحبا", "preset": "nope"}}, 422, "unknown_preset", id="unknown-preset"),
    pytest.param({"json": {"text": ""}}, 400, "empty_text", id="empty-text"),
    pytest.param({"json": {"text": " \n\t "}}, 400, "empty_text", id="whitespace-text"),
    pytest.param({"json": {"text": "\x00\u200b\u200f", "lang": "en"}}, 400, "empty_text", id="only-control-chars"),
    pytest.param({"json": {"text": "The Times reported that Russia stepped up support."}}, 400, "not_arabic",
                 id="english-text-as-arabic"),
    pytest.param({"json": {"text": "مرحبا " * 4000}}, 413, "text_too_long", id="text-too-long"),
    pytest.param({"content": b'{"text": "' + b"a" * 300_000 + b'"}', "headers": {"content-type": "application/json"}},
                 413, "body_too_large", id="huge-body"),
]

ARTICLE_CATALOGUE = [
    *JSON_BODY_ERRORS,
    pytest.param({"json": {"title": TITLE}}, 422, "validation_error", id="missing-body"),
    pytest.param({"json": {"body": AR_BODY}}, 422, "validation_error", id="missing-title"),
    pytest.param({"json": {"title": TITLE, "body": AR_BODY, "metadata": ["x"]}}, 422, "validation_error",
                 id="metadata-not-an-object"),
    pytest.param({"json": {"title": TITLE, "body": AR_BODY, "id": 7}}, 422, "validation_error", id="id-not-a-string"),
    pytest.param({"json": {"title": TITLE, "body": AR_BODY, "strategy": "guess"}}, 422, "validation_error",
                 id="unknown-strategy"),
    pytest.param({"json": {"title": TITLE, "body": AR_BODY, "lang": "ar"}}, 422, "validation_error",
                 id="unknown-field"),
    pytest.param({"json": {"title": TITLE, "body": AR_BODY, "preset": "nope"}}, 422, "unknown_preset",
                 id="unknown-preset"),
    pytest.param({"json": {"title": "  ", "body": AR_BODY}}, 400, "empty_text", id="blank-title"),
    pytest.param({"json": {"title": TITLE, "body": ""}}, 400, "empty_text", id="empty-body"),
    pytest.param({"json": {"title": TITLE, "body": "Only English here."}}, 400, "not_arabic", id="english-body"),
    pytest.param({"json": {"title": TITLE, "body": "مرحبا " * 4000}}, 413, "text_too_long", id="body-too-long"),
]


@pytest.mark.parametrize("request_kwargs,status,code", SUMMARIZE_CATALOGUE)
def test_summarize_bad_input_gets_a_json_error_with_a_stable_code(summary_server, request_kwargs, status, code):
    with summary_server.client() as client:
        error = assert_error(client.post("/summarize", **request_kwargs), status, code)
        # The server is still up and still summarizing.
        assert client.post("/summarize", json={"text": AR_BODY}).status_code == 200
    if code == "unknown_preset":
        assert "'nope'" in error["message"] and "summary-xlsum" in error["message"]


@pytest.mark.parametrize("request_kwargs,status,code", ARTICLE_CATALOGUE)
def test_article_bad_input_gets_a_json_error_with_a_stable_code(summary_server, request_kwargs, status, code):
    with summary_server.client() as client:
        error = assert_error(client.post("/v1/articles", **request_kwargs), status, code)
        assert client.post("/v1/articles", json={"title": TITLE, "body": AR_BODY}).status_code == 200
    if code in ("empty_text", "not_arabic", "text_too_long"):  # content errors name the field
        assert error["message"].split(":")[0] in {"title", "body"}


def test_the_summarizer_still_works_after_the_catalogue(summary_server):
    with summary_server.client() as client:
        body = client.post("/summarize", json={"text": SHORT_AR}).json()
    assert body["summary"]["text"] == SHORT_AR_SUMMARY


def test_summarization_disabled_answers_503_and_leaves_the_docs(tiny_marian_dir, tiny_backend):
    from model_server.services import Services
    from tests.ops_helpers import SharedBackend

    services = Services.from_backend(tiny_settings(tiny_marian_dir), SharedBackend(tiny_backend))
    with serve_services(services) as server, server.client() as client:
        summarize = client.post("/summarize", json={"text": AR_BODY})
        article = client.post("/v1/articles", json={"title": TITLE, "body": AR_BODY})
        spec = client.get("/openapi.json").json()
        models = client.get("/v1/models").json()
        translated = client.post("/translate", json={"text": TITLE})
    for response in (summarize, article):
        assert response.status_code == 503 and response.json()["error"]["code"] == "summarization_disabled"
    assert "/summarize" not in spec["paths"] and "/v1/articles" not in spec["paths"]
    assert [m["task"] for m in models["models"]] == ["translation"]
    assert translated.json()["results"][0]["translation"] == TITLE_EN
