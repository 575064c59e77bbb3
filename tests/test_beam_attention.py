"""Beam-grouped cross-attention (model_server/backends/beam_attention.py): the beams of a sentence attend over
one copy of its keys and values, with the same results as transformers' copy per beam."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from model_server.backends.base import GenerationOptions
from model_server.backends.beam_attention import PREFIX, _base_function, _grouped_attention, grouped_implementation
from model_server.backends.torch_backend import TorchSeq2SeqBackend
from model_server.services import SUMMARIZATION_ARCHITECTURES, TRANSLATION_ARCHITECTURES
from tests.test_beam_scores import MARIAN_SOURCES, MT5_SOURCES

pytestmark = [pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
              pytest.mark.usefixtures("one_torch_thread")]

MODELS = {"marian": ("tiny_marian_dir", "translation", TRANSLATION_ARCHITECTURES, MARIAN_SOURCES),
          "mt5": ("tiny_mt5_dir", "summarization", SUMMARIZATION_ARCHITECTURES, MT5_SOURCES)}


def _cross_attention_module(model):
    decoder = model.get_decoder()
    return decoder.layers[0].encoder_attn if hasattr(decoder, "layers") else decoder.block[0].layer[1].EncDecAttention


@pytest.mark.parametrize("base", ["eager", "sdpa"])
@pytest.mark.parametrize("queries", [1, 3])
def test_grouped_attention_equals_a_copy_per_beam(base: str, queries: int, tiny_mt5_dir: Path) -> None:
    """Random queries of 2 sentences x 4 beams over 2 sentences' keys, with padding and a position bias
    (T5's eager attention adds it): outputs and weights equal the base function's over keys repeated per beam."""
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_mt5_dir, attn_implementation=base)
    module = _cross_attention_module(model)
    generator = torch.Generator().manual_seed(0)
    sentences, beams, heads, keys, dim = 2, 4, 3, 7, 8
    query = torch.randn(sentences * beams, heads, queries, dim, generator=generator)
    key, value = (torch.randn(sentences, heads, keys, dim, generator=generator) for _ in range(2))
    valid = torch.ones(sentences, keys, dtype=torch.bool)
    valid[1, 5:] = False  # the second sentence is padded
    allowed = valid.repeat_interleave(beams, 0)[:, None, None, :]
    additive = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
    mask = allowed if base == "sdpa" else additive  # the kinds of mask transformers builds for each
    bias = torch.randn(1, heads, queries, keys, generator=generator)
    kwargs = dict(scaling=1.0, dropout=0.0, position_bias=bias)

    grouped, grouped_weights = _grouped_attention(base, module, query, key, value, mask, **kwargs)
    copied, copied_weights = _base_function(base, module)(module, query, key.repeat_interleave(beams, 0),
                                                          value.repeat_interleave(beams, 0), mask, **kwargs)
    assert grouped.shape == copied.shape == (sentences * beams, queries, heads, dim)
    torch.testing.assert_close(grouped, copied, rtol=1e-5, atol=1e-6)
    if copied_weights is not None:
        torch.testing.assert_close(grouped_weights, copied_weights, rtol=1e-5, atol=1e-6)
    assert grouped_weights is None or grouped_weights[sentences * beams - 1, :, :, 5:].max() == 0  # padding


def test_queries_that_cannot_share_keys_are_refused(tiny_mt5_dir: Path) -> None:
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_mt5_dir, attn_implementation="eager")
    with pytest.raises(ValueError, match="cannot share"):
        _grouped_attention("eager", _cross_attention_module(model), torch.zeros(5, 1, 1, 4), torch.zeros(2, 1, 3, 4),
                           torch.zeros(2, 1, 3, 4), None)


@pytest.mark.parametrize("base", ["eager", "sdpa"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_backend_decodes_what_plain_transformers_decodes(name: str, base: str, request) -> None:
    """The backend (grouped cross-attention, one projection per sentence) and a model loaded as transformers
    loads it (a copy per beam): the same beam-4 outputs, on both tiny models and both attention functions."""
    fixture, task, architectures, sources = MODELS[name]
    model_dir: Path = request.getfixturevalue(fixture)
    backend = TorchSeq2SeqBackend(name=name, source=str(model_dir), task=task, architectures=architectures,
                                  device="cpu", dtype="float32", threads=1, attention=base)
    try:
        assert backend.model.config._attn_implementation == grouped_implementation(base) == PREFIX + base
        assert backend.info.extra["attention"] == base
        options = GenerationOptions(max_new_tokens=16, num_beams=4)
        sequences, _ = backend.on_model_thread(backend.generate_tokens, sources, options)
    finally:
        backend.close()
    plain = AutoModelForSeq2SeqLM.from_pretrained(model_dir, attn_implementation=base).eval()
    encoded = AutoTokenizer.from_pretrained(model_dir)(sources, return_tensors="pt", padding=True)
    with torch.inference_mode():
        expected = plain.generate(**encoded, num_beams=4, max_new_tokens=16, do_sample=False,
                                  length_penalty=options.length_penalty, no_repeat_ngram_size=0,
                                  repetition_penalty=1.0)
    assert torch.equal(sequences, expected)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_plain_attention_gets_a_copy_per_beam(name: str, request) -> None:
    """A model loaded with transformers' own attention (no beam-grouped variant, as on a transformers without
    an attention registry) still gets one projection per sentence, repeated per beam, and the same outputs."""
    from model_server.backends.torch_backend import _beam_search_inputs

    fixture, _, _, sources = MODELS[name]
    model_dir: Path = request.getfixturevalue(fixture)
    plain = AutoModelForSeq2SeqLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    encoded = AutoTokenizer.from_pretrained(model_dir)(sources, return_tensors="pt", padding=True)
    options = dict(num_beams=4, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    with torch.inference_mode():
        inputs = _beam_search_inputs(plain, encoded, 4, plain.generation_config.decoder_start_token_id)
        cache = next(value for key, value in inputs.items() if key != "encoder_outputs")
        assert cache.cross_attention_cache.layers[0].keys.shape[0] == len(sources) * 4
        assert torch.equal(plain.generate(**encoded, **options, **inputs), plain.generate(**encoded, **options))
