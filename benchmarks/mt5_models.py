"""Summarizers under test: the benchmark-only random mT5_multilingual_XLSum, the tiny test mT5, or a model dir.

`random-mt5-xlsum` has the exact architecture and special ids of csebuetnlp/mT5_multilingual_XLSum, i.e.
google/mt5-base (d_model 768, d_kv 64, d_ff 2048, 12 heads, 12 + 12 layers, gated-gelu, relative attention
32 buckets / distance 128, vocab 250112, untied lm_head, pad 0 = decoder start, eos 1) and XLSum's config.json
layout (generation defaults inside it, no generation_config.json), with seeded RANDOM weights, so it costs
what the real model costs per token without a 2.3 GB download. It is built once into
`models/bench-random-mt5-xlsum/` and loaded by the service's ordinary `load_summarization_backend`.

Its `spiece.model` gives the sample article realistic lengths: BPE pieces learned from the article (about 1.5
tokens per Arabic word, see SPIECE_LEARNED_PIECES) stored as a unigram model, padded with placeholder pieces
to the 250100 pieces mT5's tokenizer has, so (almost) every id the random model emits decodes to a word that
encodes back to one token, and summaries of N tokens are ~N tokens long when summarized again (the final
pass over joined chunk summaries). The 12 embedding rows beyond the tokenizer (250100..250111, as in mT5)
decode to nothing, as with the real model.

It is NOT a summarizer: the directory holds benchmarks.models.BENCH_MARKER_FILE, config.json has
`model_server_benchmark_only: true`, and the repo's test-model marker makes the service flag every response.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from benchmarks.models import BENCH_MARKER_FILE, TINY, ModelUnderTest, build_atomically, is_complete, user_model

log = logging.getLogger(__name__)

RANDOM_MT5_XLSUM = "random-mt5-xlsum"
MT5_BENCH_DIRNAME = "bench-random-mt5-xlsum"
TINY_MT5_DIRNAME = "tiny-mt5-sum"  # Settings.tiny_mt5_dir() and tests/conftest.py use the same name
MT5_BUILDER_VERSION = 1
ARCHITECTURE_OF = "csebuetnlp/mT5_multilingual_XLSum (google/mt5-base)"
# BPE pieces learned from the sample article. Measured through the service's tokenizer (T5Tokenizer, a
# unigram model in transformers 5): 850 pieces give 1.50 tokens per word (820 tokens for the whole article,
# EOS included: 2 inputs of at most 512); 800 give 1.59, 900 give 1.41. mT5's 250k-piece vocabulary is
# shared by 101 languages, so 1.5 (a little above dedicated Arabic tokenizers' 1.2-1.4) is an estimate of
# its Arabic fertility: the real tokenizer could not be downloaded here to measure it.
SPIECE_LEARNED_PIECES = 850
SPIECE_SIZE = 250100  # pieces in google/mt5-base's (and XLSum's) spiece.model; the embedding has 250112 rows
_PLACEHOLDER_SCORE = -2.0  # placeholders match only "▁w<digits>" words, which learned pieces spell with <unk>

# google/mt5-base config.json, which csebuetnlp/mT5_multilingual_XLSum keeps (the fields that shape compute,
# special ids and numerics).
MT5_XLSUM_CONFIG: dict[str, Any] = dict(
    vocab_size=250112, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12, num_heads=12,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
    dropout_rate=0.1, layer_norm_epsilon=1e-6, initializer_factor=1.0, is_encoder_decoder=True, use_cache=True,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, tie_word_embeddings=False,
    tokenizer_class="T5Tokenizer",
)


def resolve_summarization_model(spec: str, models_dir: Path, *, seed: int = 0) -> ModelUnderTest:
    """`random-mt5-xlsum` (built once into models_dir), `tiny` (the tiny test mT5), or a model directory."""
    if spec == RANDOM_MT5_XLSUM:
        path = ensure_random_mt5_xlsum(Path(models_dir) / MT5_BENCH_DIRNAME, seed=seed)
        return ModelUnderTest(RANDOM_MT5_XLSUM, path, "random-real-architecture",
                              "csebuetnlp/mT5_multilingual_XLSum architecture (mT5-base) with seeded RANDOM "
                              "weights: speed only, NOT a summarizer")
    if spec == TINY:
        from model_server.tiny_models import ensure_tiny_mt5

        path = ensure_tiny_mt5(Path(models_dir) / TINY_MT5_DIRNAME)
        return ModelUnderTest(TINY, Path(path), "tiny-test-model",
                              "repo-built tiny test mT5 (d_model 64, 2 + 2 layers): smoke runs only")
    return user_model(spec, "summarization model", (RANDOM_MT5_XLSUM,))


def mt5_xlsum_config(**overrides: Any):
    """The MT5Config the random model is built from (overrides only for tests of the build itself).

    transformers 5's MT5Config always says tie_word_embeddings=True in memory; the saved config.json says
    false, as XLSum's does, and the saved lm_head differs from the embedding, so it loads untied."""
    from transformers import MT5Config

    return MT5Config(architectures=["MT5ForConditionalGeneration"], **{**MT5_XLSUM_CONFIG, **overrides})


def ensure_random_mt5_xlsum(out_dir: Path, *, seed: int = 0) -> Path:
    """Return `out_dir`, building the random mT5_multilingual_XLSum there first unless a complete one exists."""
    out_dir = Path(out_dir).absolute()
    if is_complete(out_dir, MT5_BUILDER_VERSION, seed):
        return out_dir
    log.info("building the benchmark-only random mT5_multilingual_XLSum (580M parameters) into %s (once)", out_dir)
    return build_random_mt5_xlsum(out_dir, seed=seed)


def build_random_mt5_xlsum(out_dir: Path, *, seed: int = 0, shape_overrides: dict[str, Any] | None = None) -> Path:
    """Build into a temporary sibling, write the markers last, then rename it to `out_dir` (replacing only a
    previous model directory). `shape_overrides` (tests only) shrink the model; the marker records them."""
    return build_atomically(out_dir, lambda tmp: _build_into(tmp, seed, shape_overrides or {}))


def padded_spiece_model(learned_pieces: int = SPIECE_LEARNED_PIECES, size: int = SPIECE_SIZE) -> bytes:
    """A unigram sentencepiece model (T5's special ids: <pad> 0, </s> 1, <unk> 2) of `size` pieces.

    The pieces are learned by BPE on the sample article. They are stored as a *unigram* model with equal
    scores (tie broken by BPE rank), because transformers 5 reads every T5 spiece.model as a unigram model:
    with BPE's rank scores its Viterbi search would prefer short early pieces (2.1 tokens per word instead of
    1.5). Then `▁w<id>` placeholder pieces fill the ids up to `size`; they match no Arabic text.
    """
    from sentencepiece import sentencepiece_model_pb2

    from benchmarks.workload import SAMPLE_ARTICLE
    from model_server.tiny_models import train_sentencepiece

    lines = [line for line in SAMPLE_ARTICLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(train_sentencepiece(lines, learned_pieces, "bpe", pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    normal = sentencepiece_model_pb2.ModelProto.SentencePiece.NORMAL
    for rank, piece in enumerate(proto.pieces):
        if piece.type == normal:
            piece.score = -(1.0 + rank / 1e5)
    proto.trainer_spec.model_type = sentencepiece_model_pb2.TrainerSpec.UNIGRAM
    learned = len(proto.pieces)
    if learned > size:
        raise ValueError(f"{learned} learned pieces do not fit in {size}")
    for i in range(learned, size):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = f"\u2581w{i}", _PLACEHOLDER_SCORE, normal
    return proto.SerializeToString()


def _build_into(model_dir: Path, seed: int, shape_overrides: dict[str, Any]) -> None:
    import torch
    from transformers import AutoTokenizer, MT5ForConditionalGeneration

    from model_server.tiny_models import (
        MT5_TOKENIZER_CONFIG, XLSUM_GENERATION, TINY_MARKER_FILE, to_xlsum_config_layout)

    (model_dir / "spiece.model").write_bytes(padded_spiece_model())
    _write_json(model_dir / "tokenizer_config.json", MT5_TOKENIZER_CONFIG)
    _write_json(model_dir / "special_tokens_map.json",
                {key: MT5_TOKENIZER_CONFIG[key] for key in ("eos_token", "unk_token", "pad_token")})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = mt5_xlsum_config(**shape_overrides)
    if (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) != (0, 1, 2) \
            or len(tokenizer) > config.vocab_size:
        raise RuntimeError(f"benchmark mT5 tokenizer does not fit the model: {len(tokenizer)} pieces, "
                           f"pad/eos/unk {tokenizer.pad_token_id}/{tokenizer.eos_token_id}/{tokenizer.unk_token_id}")
    # Every id the model can emit must decode (ids beyond the tokenizer decode to nothing, as with mT5's 12).
    tokenizer.decode(list(range(config.vocab_size)), skip_special_tokens=True)
    config.model_server_benchmark_only = True  # saved into config.json: a marker any reader sees
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MT5ForConditionalGeneration(config)
        # Its own lm_head (mT5 checkpoints are untied), initialised as T5 initialises an untied one.
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight).normal_(0.0, 1.0))
        model.all_tied_weights_keys.pop("lm_head.weight", None)
    model.eval()
    model.save_pretrained(model_dir)
    to_xlsum_config_layout(model_dir)  # generation defaults in config.json, tie_word_embeddings false
    marker = {"test_model": True, "kind": "benchmark-random-mt5-xlsum", "benchmark_only": True,
              "random_weights": True, "builder_version": MT5_BUILDER_VERSION, "seed": seed,
              "architecture_of": ARCHITECTURE_OF, "generation_config_of": dict(XLSUM_GENERATION),
              "tokenizer": f"{SPIECE_LEARNED_PIECES} BPE pieces learned from the sample article (as a unigram "
                           f"model), padded to {SPIECE_SIZE} pieces with placeholders",
              **({"shape_overrides": shape_overrides} if shape_overrides else {}),
              "warning": "benchmark-only model: real mT5_multilingual_XLSum architecture, RANDOM weights; "
                         "NOT a summarizer"}
    # The repo's test-model marker makes the service report test_model=true and warn in every response.
    for name in (TINY_MARKER_FILE, BENCH_MARKER_FILE):  # BENCH_MARKER_FILE last: it means "complete"
        _write_json(model_dir / name, marker)
    model_dir.chmod(0o755)
    for path in model_dir.iterdir():
        path.chmod(0o644)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
