"""Streamed POST /translate and POST /v1/articles (Accept: text/event-stream), end to end: a real uvicorn server
on loopback, the tiny Marian (and tiny mT5), and a real server-sent-events client (httpx-sse).

The model is reached through `PermitBackend` (tests/fakes.py): the real tiny model, but each model call
waits for a permit, so "the first sentence arrived while later segments were still queued" and "after a
disconnect the model is never called again" are observed on the server's own batcher and call counters,
never raced against timers."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from httpx_sse import connect_sse

from model_server.services import Services, load_summarization_backend
from model_server.tiny_models import MEMORISED_PAIRS, MEMORISED_SUMMARIES
from tests.conftest import SAMPLE_AR, assert_error, serve_services, tiny_settings
from tests.fakes import PermitBackend
from tests.ops_helpers import SharedBackend, wait_until

MEMORISED = dict(MEMORISED_PAIRS)
# Seven memorised sentences in one text, a line each (two have no final stop): seven model segments, one
# batch each with max_batch_size=1.
SENTENCES = [source for source, _ in MEMORISED_PAIRS]
ARTICLE_BODY = "\n\n".join(SENTENCES)
SEVEN = "\n".join(SENTENCES)
TITLE = SENTENCES[0]
AR_BODY, AR_SUMMARY = MEMORISED_SUMMARIES[0]
STREAM = {"Accept": "text/event-stream"}


def events(client: httpx.Client, path: str, body: dict) -> list[tuple[str, dict, str]]:
    """Every event of a streamed request: (event name, data, id)."""
    with connect_sse(client, "POST", path, json=body, headers=STREAM) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert source.response.headers["cache-control"] == "no-cache"
        assert source.response.headers["x-accel-buffering"] == "no"
        return [(event.event, event.json(), event.id) for event in source.iter_sse()]


def without_timings(response: dict) -> dict:
    """A response minus its timings, which differ between any two requests."""
    return {key: value for key, value in response.items() if key != "timing_ms"}


@contextmanager
def permit_server(tiny_marian_dir, tiny_backend, **overrides):
    """A live server whose model calls wait for PermitBackend permits (all let through at the end, so a
    failing test never leaves a model call waiting): (server, services, backend)."""
    backend = PermitBackend(tiny_backend)
    services = Services.from_backend(tiny_settings(tiny_marian_dir, **overrides), backend)
    with serve_services(services) as server:
        try:
            yield server, services, backend
        finally:
            backend.open()


@pytest.fixture(scope="module")
def open_server(tiny_marian_dir, tiny_backend):
    settings = tiny_settings(tiny_marian_dir, max_text_chars=20_000, max_texts_per_request=8)
    with serve_services(Services.from_backend(settings, SharedBackend(tiny_backend))) as server:
        yield server


def test_first_sentence_arrives_while_the_later_segments_are_still_queued(tiny_marian_dir, tiny_backend):
    with permit_server(tiny_marian_dir, tiny_backend, max_batch_size=1, max_wait_ms=0) as (server, services, backend), \
            server.client() as client:
        batcher = services.translation.batcher
        backend.allow(1)  # one batch of one segment may run; the second waits for its permit
        with connect_sse(client, "POST", "/translate", json={"text": SEVEN}, headers=STREAM) as source:
            stream = source.iter_sse()
            first = next(stream)
            # Received while the model has answered one segment and five more wait in the batch queue.
            assert backend.completed == 1 and batcher.pending() >= 5
            assert first.event == "sentence" and first.id == "1"
            assert first.json() == {"text": 0, "sentence": {
                "index": 0, "paragraph": 0, "source": SENTENCES[0], "translation": MEMORISED[SENTENCES[0]],
                "score": first.json()["sentence"]["score"], "chunks": 1, "hit_max_length": False, "flags": [],
                "needs_review": False, "glossary_terms": None}}
            backend.open()
            rest = [(event.event, event.json(), event.id) for event in stream]
        assert [name for name, _, _ in rest] == ["sentence"] * 6 + ["result"]
        assert [int(event_id) for _, _, event_id in rest] == list(range(2, 9))
        streamed = [first.json()["sentence"], *(data["sentence"] for name, data, _ in rest if name == "sentence")]
        assert [s["translation"] for s in streamed] == [MEMORISED[s] for s in SENTENCES]
        final = rest[-1][1]
        assert final["results"][0]["sentences"] == streamed
        plain = client.post("/translate", json={"text": SEVEN})
        assert without_timings(final) == without_timings(plain.json())
        assert set(final["timing_ms"]) == set(plain.json()["timing_ms"])


def test_texts_stream_in_order_with_a_bad_text_in_its_place(open_server):
    texts = [SEVEN, "hello there, not Arabic", SAMPLE_AR, MEMORISED_PAIRS[4][0]]
    with open_server.client() as client:
        streamed = events(client, "/translate", {"texts": texts})
        plain = client.post("/translate", json={"texts": texts}).json()
    names = [name for name, _, _ in streamed]
    assert names[-1] == "result" and "error" not in names
    assert [int(event_id) for _, _, event_id in streamed] == list(range(1, len(streamed) + 1))
    # Sentences in source order, text by text; the bad text's error in its place, the others unaffected.
    places = [(data["text"], data["sentence"]["index"] if name == "sentence" else -1)
              for name, data, _ in streamed[:-1]]
    assert places == sorted(places)
    assert [data for name, data, _ in streamed if name == "text_error"] == [
        {"text": 1, "error": plain["results"][1]["error"]}]
    assert plain["results"][1]["error"]["code"] == "not_arabic"
    for result in plain["results"]:
        assert [data["sentence"] for name, data, _ in streamed
                if name == "sentence" and data["text"] == result["index"]] == result["sentences"]
    assert len(plain["results"][2]["sentences"]) > 10
    assert without_timings(streamed[-1][1]) == without_timings(plain)


def test_accept_without_event_stream_is_the_json_response(open_server):
    body = {"texts": [SEVEN, "hello"]}
    with open_server.client() as client:
        default = client.post("/translate", json=body)
        for accept in ("application/json", "*/*", "text/html, application/json;q=0.9"):
            response = client.post("/translate", json=body, headers={"Accept": accept})
            assert response.status_code == 200 and response.headers["content-type"] == "application/json"
            assert without_timings(response.json()) == without_timings(default.json())


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"text": "hello there, not Arabic"}, 400, "not_arabic"),  # a single text's error is the request's
    ({"text": "   "}, 400, "empty_text"),
    ({"texts": [SEVEN] * 9}, 413, "too_many_texts"),
    ({"text": "<p>مرحبا بالعالم.</p>", "format": "html"}, 400, "stream_unsupported"),
    ({"text": SEVEN, "glossary": "nope"}, 404, "unknown_glossary"),
])
def test_errors_before_the_stream_starts_are_the_json_errors(open_server, body, status, code):
    with open_server.client() as client:
        streamed = client.post("/translate", json=body, headers={"Accept": "text/event-stream"})
        plain = client.post("/translate", json=body)
    assert streamed.headers["content-type"] == "application/json"
    error = assert_error(streamed, status, code)
    if code != "stream_unsupported":  # the same error as without streaming
        assert error == assert_error(plain, status, code)


def test_an_error_after_the_stream_started_is_an_error_event_after_keepalives(tiny_marian_dir, tiny_backend):
    with permit_server(tiny_marian_dir, tiny_backend, max_batch_size=1, max_wait_ms=0, request_timeout_s=1.5,
                       stream_keepalive_s=0.2) as (server, services, backend), server.client() as client:
        backend.allow(1)  # the first sentence is translated, then the model stalls until the request times out
        with client.stream("POST", "/translate", json={"text": SEVEN}, headers=STREAM) as response:
            raw = "".join(response.iter_text())
    blocks = [block for block in raw.split("\n\n") if block]
    assert blocks[0].splitlines()[:2] == ["id: 1", "event: sentence"]
    assert ": keep-alive" in blocks[1:-1]  # the stalled seconds kept the connection alive
    last = blocks[-1].splitlines()
    assert last[:2] == ["id: 2", "event: error"]
    assert httpx.Response(200, content=last[2].removeprefix("data: ")).json() == {
        "code": "timeout", "message": "translation did not finish within 1.5s"}


def test_a_disconnect_drops_the_queued_segments(tiny_marian_dir, tiny_backend):
    with permit_server(tiny_marian_dir, tiny_backend, max_batch_size=1, max_wait_ms=0) as (server, services, backend):
        batcher = services.translation.batcher
        backend.allow(1)
        with server.client() as client, \
                connect_sse(client, "POST", "/translate", json={"text": SEVEN}, headers=STREAM) as source:
            assert next(source.iter_sse()).event == "sentence"
            # The second segment is in the model (waiting for its permit), five wait in the queue.
        # The client has gone: the server cancels the request, whose queued segments are no longer pending.
        wait_until(lambda: batcher.pending() == 0)
        backend.open()  # the segment already in the model finishes; the five queued ones are dropped unrun
        wait_until(lambda: batcher.stats.dropped_cancelled == 5)
        assert backend.completed == 2 and batcher.stats.segments == 2
        time.sleep(0.2)
        assert backend.completed == 2  # and the model is never called again for them


@pytest.fixture(scope="module")
def article_server(tiny_marian_dir, tiny_mt5_dir, tiny_backend):
    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(tiny_mt5_dir))
    services = Services.from_backend(settings, SharedBackend(tiny_backend),
                                     summarization_backend=load_summarization_backend(settings))
    with serve_services(services) as server:
        yield server


@pytest.mark.parametrize("strategy", ["translate-summary", "summarize-both"])
def test_article_streams_sentences_then_summaries_then_the_response(article_server, strategy):
    body = {"id": "a-1", "title": TITLE, "body": AR_BODY, "strategy": strategy}
    with article_server.client() as client:
        streamed = events(client, "/v1/articles", body)
        plain = client.post("/v1/articles", json=body).json()
    names = [name for name, _, _ in streamed]
    assert names[-1] == "result" and sorted(set(names)) == ["result", "sentence", "summary"]
    sentences = [data for name, data, _ in streamed if name == "sentence"]
    assert [(s["field"], s["text"]) for s in sentences] == \
        [("title", 0)] * len(plain["title"]["sentences"]) + [("body", 1)] * len(plain["body"]["sentences"])
    assert [s["sentence"] for s in sentences] == plain["title"]["sentences"] + plain["body"]["sentences"]
    summaries = [data for name, data, _ in streamed if name == "summary"]
    assert summaries == [plain["summary"]["ar"], plain["summary"]["en"]]
    assert summaries[0]["text"] == AR_SUMMARY
    # The Arabic summary runs concurrently with the translation (it may come first); the English one needs it
    # (or the whole translation), so it comes after every sentence.
    last_sentence = max(i for i, name in enumerate(names) if name == "sentence")
    assert names[-2] == "summary" and last_sentence < len(names) - 2
    assert without_timings(streamed[-1][1]) == without_timings(plain)


def test_article_errors_before_the_stream_are_the_json_errors(article_server):
    with article_server.client() as client:
        response = client.post("/v1/articles", json={"title": TITLE, "body": "not Arabic at all"}, headers=STREAM)
    assert response.headers["content-type"] == "application/json"
    assert_error(response, 400, "not_arabic")


def test_article_disconnect_cancels_the_translation_and_the_summary(tiny_marian_dir, tiny_mt5_dir, tiny_backend):
    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(tiny_mt5_dir),
                             max_batch_size=1, max_wait_ms=0)
    translation = PermitBackend(tiny_backend)
    summarization = PermitBackend(load_summarization_backend(settings))
    services = Services.from_backend(settings, translation, summarization_backend=summarization)
    batcher = services.translation.batcher
    with serve_services(services) as server:
        try:
            translation.allow(1)  # the title's one sentence; the body's wait, and so does the Arabic summary
            with server.client() as client, connect_sse(client, "POST", "/v1/articles", headers=STREAM,
                                                        json={"title": TITLE, "body": ARTICLE_BODY}) as source:
                first = next(source.iter_sse())
                assert first.event == "sentence" and first.json()["field"] == "title"
            wait_until(lambda: batcher.pending() == 0 and services.summarization.batcher.pending() == 0)
        finally:
            translation.open()
            summarization.open()
        # Of the body's seven segments one was in the model; the six queued are dropped unrun.
        wait_until(lambda: batcher.stats.dropped_cancelled == len(SENTENCES) - 1)
        assert translation.completed == 2 and batcher.stats.segments == 2


def test_streams_run_side_by_side_without_mixing(open_server):
    texts = {i: [SENTENCES[i], SENTENCES[(i + 1) % 7]] for i in range(4)}
    out: dict[int, list] = {}

    def run(i: int) -> None:
        with open_server.client() as client:
            out[i] = events(client, "/translate", {"texts": texts[i]})

    threads = [threading.Thread(target=run, args=(i,)) for i in texts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i, pair in texts.items():
        sentences = [data["sentence"]["translation"] for name, data, _ in out[i] if name == "sentence"]
        assert sentences == [MEMORISED[s] for s in pair]


def test_retried_sentences_stream_as_the_json_has_them(tiny_marian_dir, tiny_backend):
    # max_new_tokens=8 cuts every long sentence: each is retried with safer decoding, batch by batch.
    settings = tiny_settings(tiny_marian_dir, max_new_tokens=8, max_batch_size=4, max_text_chars=20_000)
    with serve_services(Services.from_backend(settings, SharedBackend(tiny_backend))) as server, \
            server.client() as client:
        streamed = events(client, "/translate", {"texts": [SAMPLE_AR, SEVEN]})
        plain = client.post("/translate", json={"texts": [SAMPLE_AR, SEVEN]}).json()
    sentences = [data["sentence"] for name, data, _ in streamed if name == "sentence"]
    assert sentences == plain["results"][0]["sentences"] + plain["results"][1]["sentences"]
    assert sum("retried" in s["flags"] for s in sentences) > 10
    assert without_timings(streamed[-1][1]) == without_timings(plain)


def test_glossary_and_cache_hits_stream_as_the_json_has_them(tiny_marian_dir, tiny_backend, tmp_path):
    from tests.test_glossary import ALLIANCE, ENTRIES, CopyingBackend

    settings = tiny_settings(tiny_marian_dir, cache_enabled=True, cache_path=tmp_path / "state.sqlite3")
    texts = [SEVEN, ALLIANCE, "شكرا جزيلا."]
    with serve_services(Services.from_backend(settings, CopyingBackend(tiny_backend))) as server, \
            server.client() as client:
        assert client.put("/v1/glossaries/desk", json={"entries": ENTRIES}).status_code in (200, 201)
        body = {"texts": texts, "glossary": "desk"}
        first = events(client, "/translate", body)  # model work: kept placeholders, and lost ones redone
        again = events(client, "/translate", body)  # every segment a cache hit
        plain = client.post("/translate", json=body).json()
    assert plain["results"][0]["cache"]["misses"] == 0
    for streamed in (first, again):
        sentences = [(data["text"], data["sentence"]) for name, data, _ in streamed if name == "sentence"]
        assert sentences == [(r["index"], s) for r in plain["results"] for s in r["sentences"]]
    kept = plain["results"][1]["sentences"][0]
    assert kept["translation"] == "A military alliance between Field Marshal Khalifa Haftar and the Russian Federation"
    assert any("glossary_missed" in s["flags"] for r in plain["results"] for s in r["sentences"])
    assert without_timings(again[-1][1]) == without_timings(plain)
