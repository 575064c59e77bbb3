"""Batching never changes a result: batched == one-by-one on the tiny model, greedy and beam search,
with mixed lengths (padding), through the backend, the dynamic batcher and concurrent HTTP clients."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from model_server.backends.base import GenerationOptions
from model_server.batching.planner import plan_batches
from model_server.quality import clean_english
from model_server.services import Services
from model_server.text import normalize_text, segment
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import SAMPLE_AR, run_with, serve_services, tiny_settings

# Memorised and unseen sentences of very different lengths, so batches carry real padding.
SENTENCES = [ar for ar, _ in MEMORISED_PAIRS] + [
    s.text for p in segment(normalize_text(SAMPLE_AR)) for s in p.sentences][:14]


def one_by_one(backend, options):
    return [backend.generate([sentence], options)[0] for sentence in SENTENCES]


@pytest.mark.parametrize("num_beams", [1, 4])
def test_backend_batch_equals_one_by_one(tiny_backend, num_beams):
    options = GenerationOptions(num_beams=num_beams, max_new_tokens=48)
    single = one_by_one(tiny_backend, options)
    batched = tiny_backend.generate(SENTENCES, options)
    assert [b.text for b in batched] == [s.text for s in single]
    assert [b.num_tokens for b in batched] == [s.num_tokens for s in single]
    for b, s in zip(batched, single):
        assert b.score == pytest.approx(s.score, abs=1e-3)
    lengths = {tiny_backend.count_tokens(s) for s in SENTENCES}
    assert len(lengths) > 5  # the batch really mixed lengths


def test_planned_batches_return_results_in_caller_order(tiny_backend):
    options = GenerationOptions(num_beams=1, max_new_tokens=48)
    costs = [tiny_backend.count_tokens(s) for s in SENTENCES]
    outputs = [None] * len(SENTENCES)
    for batch in plan_batches(costs, max_batch_size=4, max_batch_tokens=200):
        for index, result in zip(batch, tiny_backend.generate([SENTENCES[i] for i in batch], options)):
            outputs[index] = result.text
    assert outputs == [r.text for r in one_by_one(tiny_backend, options)]


@pytest.mark.parametrize("num_beams", [1, 4])
def test_concurrent_http_clients_get_unbatched_results(tiny_marian_dir, tiny_backend, num_beams):
    # The service cleans English output (Arabic punctuation mapped); the reference gets the same clean-up.
    expected = [clean_english(r.text)
                for r in one_by_one(tiny_backend, GenerationOptions(num_beams=num_beams, max_new_tokens=48))]
    # No quality retries: sentences cut at 48 tokens would be re-generated, adding segments to the count.
    settings = tiny_settings(tiny_marian_dir, max_wait_ms=20, num_beams=num_beams, max_new_tokens=48,
                             retry_suspect_sentences=False)
    services = Services.load(settings)
    with serve_services(services) as server:
        def translate(sentence):
            with server.client() as client:
                response = client.post("/translate", json={"text": sentence})
                assert response.status_code == 200, response.text
                return response.json()["results"][0]["translation"]

        with ThreadPoolExecutor(max_workers=len(SENTENCES)) as pool:
            got = list(pool.map(translate, SENTENCES))
        stats = services.translation.batcher.stats
    assert got == expected
    # The requests really were coalesced: fewer model calls than requests.
    assert stats.segments == len(SENTENCES) and stats.batches < len(SENTENCES)


def test_dynamic_batcher_groups_by_decoding_options(tiny_marian_dir, tiny_backend):
    """Greedy and beam requests in flight together still match their own unbatched results."""
    services = Services.load(tiny_settings(tiny_marian_dir, max_wait_ms=20, max_new_tokens=48,
                                           retry_suspect_sentences=False))
    greedy = services.translator.options(num_beams=1)
    beam = services.translator.options(num_beams=4)

    (greedy_results, _), (beam_results, _) = run_with(services, lambda s: asyncio.gather(
        s.translator.translate(SENTENCES, greedy), s.translator.translate(SENTENCES, beam)))
    assert [r.translation for r in greedy_results] == [clean_english(r.text) for r in one_by_one(tiny_backend, greedy)]
    assert [r.translation for r in beam_results] == [clean_english(r.text) for r in one_by_one(tiny_backend, beam)]
