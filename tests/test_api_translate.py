"""POST /translate end to end: a real uvicorn server on loopback, the tiny Marian model, real tokenizers."""

from __future__ import annotations

import pytest

from model_server.text import normalize_text, segment
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import JSON_BODY_ERRORS, SAMPLE_AR, assert_error

MEMORISED = dict(MEMORISED_PAIRS)


def test_sample_article_comes_back_sentence_aligned_in_order(tiny_server):
    with tiny_server.client() as client:
        response = client.post("/translate", json={"text": SAMPLE_AR})
    assert response.status_code == 200, response.text
    body = response.json()
    result = body["results"][0]
    expected = [(number, s.text) for number, p in enumerate(segment(normalize_text(SAMPLE_AR))) for s in p.sentences]
    assert len(expected) == 26 and result["paragraphs"] == 22
    assert [(s["paragraph"], s["source"]) for s in result["sentences"]] == expected
    assert [s["index"] for s in result["sentences"]] == list(range(26))
    memorised_seen = 0
    for sentence in result["sentences"]:
        assert isinstance(sentence["score"], float) and sentence["score"] <= 0
        if sentence["source"] in MEMORISED:
            assert sentence["translation"] == MEMORISED[sentence["source"]]
            assert sentence["flags"] == [] and sentence["needs_review"] is False  # clean sentences carry no flags
            memorised_seen += 1
    assert memorised_seen == 4
    review = result["review"]
    assert review["sentences_needing_review"] == sum(s["needs_review"] for s in result["sentences"])
    # Paragraphs preserved: one output line per source line, memorised lines in place.
    lines = result["translation"].split("\n")
    assert len(lines) == 22
    assert lines[8] == "A military alliance between Khalifa Haftar and Russia"
    assert lines[15] == "A defence agreement between the two sides"
    assert body["model"]["test_model"] is True and "NOT a translation" in body["warning"]
    assert set(body["timing_ms"]) >= {"prepare", "translate", "assemble", "total"}


def test_paragraph_and_sentence_shape_of_a_small_text(tiny_server):
    text = "مرحبا بالعالم. الطقس جميل اليوم.\n\nشكرا جزيلا."
    with tiny_server.client() as client:
        result = client.post("/translate", json={"text": text}).json()["results"][0]
    assert result["translation"] == "Hello world. The weather is nice today.\n\nThank you very much."
    assert [s["paragraph"] for s in result["sentences"]] == [0, 0, 1]


def test_texts_are_independent_and_one_bad_item_does_not_fail_neighbours(tiny_server):
    texts = ["مرحبا بالعالم.", "   ", "This is English only.", "شكرا جزيلا."]
    with tiny_server.client() as client:
        response = client.post("/translate", json={"texts": texts})
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2, 3]
    assert results[0]["translation"] == "Hello world." and results[0]["error"] is None
    assert results[1]["error"]["code"] == "empty_text" and results[1]["translation"] is None
    assert results[2]["error"]["code"] == "not_arabic"
    assert results[3]["translation"] == "Thank you very much."


def test_control_and_invisible_characters_are_removed_not_translated(tiny_server):
    dirty = "\u200fمرحبا\u0640 \x00بالعالم\u200b."
    with tiny_server.client() as client:
        result = client.post("/translate", json={"text": dirty}).json()["results"][0]
    assert result["sentences"][0]["source"] == "مرحبا بالعالم."
    assert result["translation"] == "Hello world."


def test_generation_options_are_accepted_and_beam_search_gives_memorised_output(tiny_server):
    with tiny_server.client() as client:
        result = client.post("/translate", json={"text": "اتفاق دفاعي بين الطرفين", "num_beams": 4,
                                                 "max_new_tokens": 64, "priority": "bulk"}).json()
    assert result["results"][0]["translation"] == "A defence agreement between the two sides"


# The bad-input catalogue: (request kwargs for httpx, expected status, expected code).
CATALOGUE = [
    *JSON_BODY_ERRORS,
    pytest.param({"json": {"text": 42}}, 422, "validation_error", id="wrong-type"),
    pytest.param({"json": {"texts": "not a list"}}, 422, "validation_error", id="texts-not-a-list"),
    pytest.param({"json": {"texts": ["ok", 5]}}, 422, "validation_error", id="texts-item-wrong-type"),
    pytest.param({"json": {"texts": []}}, 422, "validation_error", id="texts-empty-list"),
    pytest.param({"json": {}}, 422, "validation_error", id="missing-text"),
    pytest.param({"json": {"text": "مرحبا", "texts": ["مرحبا"]}}, 422, "validation_error", id="text-and-texts"),
    pytest.param({"json": {"text": "مرحبا", "colour": "red"}}, 422, "validation_error", id="unknown-field"),
    pytest.param({"json": {"text": "مرحبا", "num_beams": 0}}, 422, "validation_error", id="beams-out-of-range"),
    pytest.param({"json": {"text": "مرحبا", "source_lang": "fr"}}, 422, "validation_error", id="unsupported-lang"),
    pytest.param({"json": ["مرحبا"]}, 422, "validation_error", id="body-is-a-list"),
    pytest.param({"json": {"text": ""}}, 400, "empty_text", id="empty-text"),
    pytest.param({"json": {"text": " \n\t  "}}, 400, "empty_text", id="whitespace-text"),
    pytest.param({"json": {"text": "\x00\x01\u200b\u200f"}}, 400, "empty_text", id="only-control-chars"),
    pytest.param({"json": {"text": "The Times reported that Russia stepped up support."}}, 400, "not_arabic",
                 id="english-text"),
    pytest.param({"json": {"text": "مرحبا " * 4000}}, 413, "text_too_long", id="text-too-long"),
    pytest.param({"json": {"texts": ["مرحبا"] * 9}}, 413, "too_many_texts", id="too-many-texts"),
    pytest.param({"content": b'{"text": "' + b"a" * 300_000 + b'"}', "headers": {"content-type": "application/json"}},
                 413, "body_too_large", id="huge-body"),
    pytest.param({"content": b"text=hello", "headers": {"content-type": "application/x-www-form-urlencoded"}},
                 422, "validation_error", id="form-body"),
]


@pytest.mark.parametrize("request_kwargs,status,code", CATALOGUE)
def test_bad_input_gets_a_json_error_with_a_stable_code(tiny_server, request_kwargs, status, code):
    with tiny_server.client() as client:
        assert_error(client.post("/translate", **request_kwargs), status, code)
        # The server is still up and still translating.
        assert client.post("/translate", json={"text": "شكرا جزيلا."}).status_code == 200


def test_huge_body_without_content_length_is_rejected_while_streaming(tiny_server):
    def chunks():
        yield b'{"text": "'
        for _ in range(100):
            yield b"a" * 10_000
        yield b'"}'

    with tiny_server.client() as client:
        response = client.post("/translate", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("method,path,status,code", [
    ("GET", "/translate", 405, "method_not_allowed"),
    ("GET", "/no-such-endpoint", 404, "not_found"),
])
def test_routing_errors_use_the_same_error_shape(tiny_server, method, path, status, code):
    with tiny_server.client() as client:
        response = client.request(method, path)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_health_readiness_models_and_openapi(tiny_server, tiny_marian_dir):
    with tiny_server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ready"}
        models = client.get("/v1/models").json()
        spec = client.get("/openapi.json").json()
        docs = client.get("/docs")
    model = models["models"][0]
    assert model["test_model"] is True and model["architecture"] == "marian"
    assert model["device"] == "cpu" and model["dtype"] == "float32" and model["backend"] == "torch"
    assert model["source"] == str(tiny_marian_dir)
    assert models["batching"]["translation"]["max_batch_size"] == 64
    assert "NOT a translation" in models["warning"]
    assert "/translate" in spec["paths"] and docs.status_code == 200
