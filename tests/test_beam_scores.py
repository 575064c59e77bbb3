"""The torch backend's scores, computed without per-step distributions, equal the old computation.

The old computation is kept here, and only here. Beam search: `generate(output_scores=True)` kept every
hypothesis row's whole processed distribution at every step, and `compute_transition_scores` gathered the
chosen tokens' log-probabilities from them. Greedy search: a logits processor recorded the maximum of each
step's log_softmax (`OldGreedyRecorder`). The backend now
keeps only each row's few candidates per step (`_ChosenTokenLogProbs`). Both must give the same tokens,
the same per-token log-probabilities and the same per-sentence score, greedy and beam, with the decoding
options the pipeline uses (safer_options: repetition penalty, no repeated n-grams).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessorList

from model_server.backends.base import GenerationOptions
from model_server.backends.torch_backend import TorchSeq2SeqBackend
from model_server.pipeline import safer_options
from model_server.services import SUMMARIZATION_ARCHITECTURES, TRANSLATION_ARCHITECTURES
from model_server.tiny_models import MEMORISED_PAIRS, MEMORISED_SUMMARIES, ensure_tiny_marian

pytestmark = [pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
              pytest.mark.usefixtures("one_torch_thread")]

TOLERANCE = 1e-5
DATA = Path(__file__).parent / "data"
# Memorised sources (confident, EOS-terminated outputs) and unseen article lines (junk that runs to
# max_new_tokens), in one padded batch.
ARTICLE_LINES = [line for line in (DATA / "libya-russia-ar.txt").read_text(encoding="utf-8").splitlines() if line]
MARIAN_SOURCES = [source for source, _ in MEMORISED_PAIRS[:4]] + ARTICLE_LINES[:3]
MT5_SOURCES = [source for source, _ in MEMORISED_SUMMARIES[:2]] + [" ".join(ARTICLE_LINES[:2])]

BASE = GenerationOptions(max_new_tokens=24)
OPTIONS = {
    "greedy": BASE,
    "greedy-safer": replace(safer_options(BASE), num_beams=1),
    "beam2": replace(BASE, num_beams=2),
    "beam4": replace(BASE, num_beams=4),
    "beam4-safer": safer_options(BASE),
    "beam4-short-penalty": replace(BASE, num_beams=4, length_penalty=0.6, min_new_tokens=3),
    "beam2-long-penalty": replace(BASE, num_beams=2, length_penalty=1.4, repetition_penalty=1.5),
}


def _backend(model_dir: Path, task: str, architectures) -> TorchSeq2SeqBackend:
    return TorchSeq2SeqBackend(name=str(model_dir), source=str(model_dir), task=task, architectures=architectures,
                               device="cpu", dtype="float32", threads=1)


@pytest.fixture(scope="module")
def marian(tiny_marian_dir: Path) -> TorchSeq2SeqBackend:
    return _backend(tiny_marian_dir, "translation", TRANSLATION_ARCHITECTURES)


@pytest.fixture(scope="module")
def marian_eos_last(tiny_marian_dir: Path) -> TorchSeq2SeqBackend:
    # Special ids at the end of the vocabulary: the traced token ids are not small numbers.
    model_dir = ensure_tiny_marian(tiny_marian_dir.parent / "tiny-marian-ar-en-eos-last", eos_last=True)
    return _backend(model_dir, "translation", TRANSLATION_ARCHITECTURES)


@pytest.fixture(scope="module")
def mt5(tiny_mt5_dir: Path) -> TorchSeq2SeqBackend:
    return _backend(tiny_mt5_dir, "summarization", SUMMARIZATION_ARCHITECTURES)


class OldGreedyRecorder:
    """The backend's former greedy recorder: per step, the best token's log-probability."""

    def __init__(self) -> None:
        self.steps: list = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.log_softmax(dim=-1).max(dim=-1).values.float())
        return scores


def old_token_logprobs(backend: TorchSeq2SeqBackend, texts: list[str], options: GenerationOptions):
    """What the backend computed before: greedy, the recorder; beam, full per-step scores and then
    compute_transition_scores."""
    model = backend.model
    encoded = backend.tokenizer(texts, return_tensors="pt", padding=True, truncation=False)
    greedy = options.num_beams == 1
    recorder = OldGreedyRecorder()
    with torch.inference_mode():
        output = model.generate(
            **encoded, num_beams=options.num_beams, num_return_sequences=1, do_sample=False,
            max_new_tokens=options.max_new_tokens, min_new_tokens=options.min_new_tokens or None,
            length_penalty=options.length_penalty, no_repeat_ngram_size=options.no_repeat_ngram_size,
            repetition_penalty=options.repetition_penalty, return_dict_in_generate=True,
            logits_processor=LogitsProcessorList([recorder] if greedy else []), output_scores=not greedy)
        if greedy:
            return output.sequences, torch.stack(recorder.steps, dim=1)
        scores = model.compute_transition_scores(output.sequences, output.scores, output.beam_indices,
                                                 normalize_logits=False)
    return output.sequences, scores.float()


def max_score_difference(backend: TorchSeq2SeqBackend, texts: list[str], options: GenerationOptions) -> float:
    """Asserts the same tokens and per-token log-probs; returns the largest per-sentence score difference."""
    old_sequences, old_logprobs = old_token_logprobs(backend, texts, options)
    sequences, logprobs = backend.generate_tokens(texts, options)
    assert torch.equal(sequences, old_sequences)
    results = backend.generate(texts, options)
    worst = 0.0
    for i, result in enumerate(results):
        length = result.num_tokens
        assert torch.allclose(logprobs[i, :length], old_logprobs[i, :length], atol=TOLERANCE, rtol=0)
        old_score = float(old_logprobs[i, :length].sum()) / max(length, 1)
        worst = max(worst, abs(result.score - old_score))
    return worst


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_marian_scores_equal_the_full_distribution_computation(marian: TorchSeq2SeqBackend, name: str) -> None:
    assert max_score_difference(marian, MARIAN_SOURCES, OPTIONS[name]) <= TOLERANCE


@pytest.mark.parametrize("name", ["greedy", "beam4", "beam4-safer"])
def test_scores_equal_with_the_blocked_top_k(marian: TorchSeq2SeqBackend, name: str, monkeypatch) -> None:
    """The tiny vocabularies are too narrow for row_top_k's blocked path (real ones take it): with
    4-column blocks the tiny Marian's beam search goes through it too, with the same tokens and scores."""
    from model_server.backends import torch_backend

    monkeypatch.setattr(torch_backend, "TOP_K_BLOCK", 4)
    assert marian.model.config.vocab_size >= 4 * 8 * 4  # wide enough for the blocked path at beam 4
    assert max_score_difference(marian, MARIAN_SOURCES, OPTIONS[name]) <= TOLERANCE


@pytest.mark.parametrize("width", [1, 7, 64, 2047, 2048, 62_834])
@pytest.mark.parametrize("k", [1, 2, 8, 12])
def test_row_top_k_values_equal_torch_topk(width: int, k: int) -> None:
    """Same values as torch.topk, and indices that point at them, on rows with ties, -inf and a short
    last block (62,834 = opus-mt's vocabulary, not a multiple of the block)."""
    from model_server.backends.torch_backend import row_top_k

    generator = torch.Generator().manual_seed(width * 100 + k)
    rows = torch.randn(6, width, generator=generator)
    rows[1] = rows[1].round()  # many ties
    rows[2, : width - 1] = float("-inf")  # forced EOS: one finite value
    rows[3, -1] = 50.0  # the maximum in the short last block
    values, indices = row_top_k(rows, k)
    expected = rows.topk(min(k, width), dim=-1).values
    assert torch.equal(values, expected)
    assert torch.equal(rows.gather(1, indices), values)
    assert all(len(set(row.tolist())) == row.numel() for row in indices)  # no column twice


@pytest.mark.parametrize("name", ["greedy", "beam4", "beam4-safer"])
def test_marian_eos_last_scores_equal(marian_eos_last: TorchSeq2SeqBackend, name: str) -> None:
    assert max_score_difference(marian_eos_last, MARIAN_SOURCES, OPTIONS[name]) <= TOLERANCE


@pytest.mark.parametrize("name", ["greedy", "greedy-safer", "beam2", "beam4", "beam4-safer"])
def test_mt5_scores_equal_the_full_distribution_computation(mt5: TorchSeq2SeqBackend, name: str) -> None:
    assert max_score_difference(mt5, MT5_SOURCES, OPTIONS[name]) <= TOLERANCE


def test_the_batch_mixes_finished_and_cut_outputs(marian: TorchSeq2SeqBackend) -> None:
    """The comparison covers both kinds of hypothesis: ended with EOS early, and cut at max_new_tokens."""
    results = marian.generate(MARIAN_SOURCES, OPTIONS["beam4"])
    assert {result.hit_max_length for result in results} == {True, False}
    assert len({result.num_tokens for result in results}) > 1


def test_a_token_left_out_by_a_tie_gets_the_tied_value() -> None:
    """When scores tie at the last kept candidate, topk may keep another token than the search took: the
    taken token's value is then the tied one."""
    from model_server.backends.torch_backend import _ChosenTokenLogProbs

    recorder = _ChosenTokenLogProbs(keep=2, normalize=False)
    scores = torch.tensor([[-0.5, -1.0, -1.0, -1.0, -9.0]])
    recorder(None, scores)
    kept = set(recorder.tokens[0][0].tolist())
    left_out = next(token for token in (1, 2, 3) if token not in kept)
    sequences = torch.tensor([[0, left_out]])
    assert recorder.chosen(sequences, torch.tensor([[0]])).tolist() == [[-1.0]]
    assert recorder.chosen(torch.tensor([[0, 0]]), torch.tensor([[0]])).tolist() == [[-0.5]]


@pytest.mark.parametrize("fixture", ["marian", "mt5"])
def test_beam_search_projects_the_source_once_per_sentence(fixture: str, request) -> None:
    """The backend's beam-search inputs project each sentence's cross-attention keys and values once (on the
    sentences, not their beams), never reorder them, reorder self-attention at every step, and decode exactly
    what transformers' default generate decodes (the tests above compare the scores)."""
    from model_server.backends.torch_backend import _beam_search_inputs

    backend: TorchSeq2SeqBackend = request.getfixturevalue(fixture)
    sources = MARIAN_SOURCES if fixture == "marian" else MT5_SOURCES
    encoded = backend.tokenizer(sources, return_tensors="pt", padding=True)
    start = backend.model.generation_config.decoder_start_token_id
    projected_rows: list[int] = []
    hooks = [module.register_forward_hook(lambda _m, args, _out: projected_rows.append(args[0].shape[0]))
             for name, module in backend.model.get_decoder().named_modules()
             if name.endswith(("encoder_attn.k_proj", "EncDecAttention.k"))]
    assert len(hooks) == backend.model.config.get_text_config(decoder=True).num_hidden_layers
    with torch.inference_mode():
        assert _beam_search_inputs(backend.model, encoded, 1, start) == {}
        inputs = _beam_search_inputs(backend.model, encoded, 4, start)
    for hook in hooks:
        hook.remove()
    assert projected_rows == [len(sources)] * len(hooks)
    cache = next(value for key, value in inputs.items() if key != "encoder_outputs")
    reorders = {"self": 0, "cross": 0}
    for name, layer_cache in (("self", cache.self_attention_cache), ("cross", cache.cross_attention_cache)):
        def counted(beam_idx, _reorder=layer_cache.reorder_cache, _name=name):
            reorders[_name] += 1
            _reorder(beam_idx)
        layer_cache.reorder_cache = counted
    options = dict(num_beams=4, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    with torch.inference_mode():
        default = backend.model.generate(**encoded, **options)
        once = backend.model.generate(**encoded, **options, **inputs)
    assert torch.equal(once, default)
    assert reorders == {"self": reorders["self"], "cross": 0} and reorders["self"] >= 10
