"""Nothing heavy on the event loop: while one request is being prepared (normalize, segment, chunk, count
tokens), the server keeps answering everyone else.

A wrapper around the tiny backend makes `count_tokens` burn CPU in pure Python for a few seconds on one
marked text, and says when it starts and ends. While it burns, /healthz is polled over real HTTP: every
answer must come in under a second. On the event loop the first poll would wait for the whole burn."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from model_server.presets import PresetCatalog
from model_server.services import Services, load_summarization_backend
from model_server.tiny_models import MEMORISED_PAIRS, MEMORISED_SUMMARIES
from tests.conftest import serve_services, tiny_settings
from tests.fakes import DelegatingBackend

BURN_S = 2.5         # how long the marked text's token count takes
HEALTHZ_LIMIT_S = 1.0


class SlowCountBackend(DelegatingBackend):
    """`count_tokens` of a text containing `marker` spins for `burn_s` in pure Python (it holds the GIL as
    real tokenizing and scanning do) and sets `burning`, then `burnt`; results stay the model's."""

    def __init__(self, backend, marker: str, burn_s: float = BURN_S) -> None:
        super().__init__(backend)
        self.marker = marker
        self.burn_s = burn_s
        self.burning = threading.Event()
        self.burnt = threading.Event()

    def count_tokens(self, text):
        if self.marker in text:
            self.burning.set()
            until = time.monotonic() + self.burn_s
            while time.monotonic() < until:
                sum(i * i for i in range(1000))
            self.burnt.set()
        return super().count_tokens(text)


def post_in_thread(base_url: str, path: str, payload: dict, results: list) -> threading.Thread:
    def run():
        with httpx.Client(base_url=base_url, timeout=60) as client:
            results.append(client.post(path, json=payload))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def healthz_latencies_while(backend: SlowCountBackend, base_url: str) -> list[float]:
    """Seconds per /healthz answer, polled from when the slow count starts until it ends."""
    assert backend.burning.wait(30), "the slow request never reached preparation"
    latencies = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not backend.burnt.is_set():
            started = time.perf_counter()
            response = client.get("/healthz")
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200
            time.sleep(0.05)
    return latencies


def assert_loop_answered(latencies: list[float]) -> None:
    assert latencies, "no /healthz answer during the slow preparation"
    worst = max(latencies)
    print(f"/healthz during a {BURN_S:g} s preparation: {len(latencies)} polls, max {worst * 1000:.1f} ms")
    assert worst < HEALTHZ_LIMIT_S, f"/healthz took {worst:.2f} s while a request was being prepared"
    # The polls spanned the burn (one blocked poll cannot pass for many fast ones).
    assert len(latencies) >= 5


@pytest.mark.parametrize("clean", [False, True], ids=["plain", "clean"])
def test_healthz_answers_while_a_translation_is_prepared(tiny_marian_dir, tiny_backend, clean):
    source, translation = MEMORISED_PAIRS[0]
    backend = SlowCountBackend(tiny_backend, marker=source)
    services = Services.from_backend(tiny_settings(tiny_marian_dir), backend)
    with serve_services(services) as server:
        results: list = []
        thread = post_in_thread(server.base_url, "/translate", {"text": source, "clean": clean}, results)
        latencies = healthz_latencies_while(backend, server.base_url)
        thread.join(60)
    assert_loop_answered(latencies)
    assert results[0].status_code == 200, results[0].text
    assert results[0].json()["results"][0]["translation"] == translation


@pytest.fixture(scope="module")
def tiny_summarizer(tiny_marian_dir, tiny_mt5_dir):
    return load_summarization_backend(tiny_settings(tiny_marian_dir, summarization_enabled=True,
                                                    summarization_model=str(tiny_mt5_dir)))


@pytest.mark.parametrize("path", ["/summarize", "/v1/articles"])
def test_healthz_answers_while_a_summary_is_prepared(tiny_marian_dir, tiny_mt5_dir, tiny_backend, tiny_summarizer,
                                                     path):
    body, summary = MEMORISED_SUMMARIES[3]
    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(tiny_mt5_dir))
    slow = SlowCountBackend(tiny_summarizer, marker=body.split()[0])
    services = Services.from_backend(
        settings, DelegatingBackend(tiny_backend), summarization_backend=slow,
        presets=PresetCatalog.load(settings.prompts_path(), settings.default_summary_preset))
    payload = {"text": body} if path == "/summarize" else {"title": body.split("\n")[0], "body": body}
    with serve_services(services) as server:
        results: list = []
        thread = post_in_thread(server.base_url, path, payload, results)
        latencies = healthz_latencies_while(slow, server.base_url)
        thread.join(60)
    assert_loop_answered(latencies)
    assert results[0].status_code == 200, results[0].text
    answer = results[0].json()
    assert (answer["summary"] if path == "/summarize" else answer["summary"]["ar"])["text"] == summary
