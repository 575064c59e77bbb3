"""The summarization benchmark on the tiny mT5 (real model code, the service's own backend and pipeline), and
the benchmark-only real-shape random mT5_multilingual_XLSum (its shape, without building 580M weights)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import MODELS_DIR, SAMPLE_AR, tiny_settings
from tests.fakes import DelegatingBackend
from tests.test_summarize import run_summary

# A preset with a small input limit (the tiny mT5's own limit is 512): the sample article needs several
# chunks and a final pass. Decoding as XLSum's, except a forced length of 12 tokens and 2 beams.
SMALL_PRESET = """name: bench
version: 1
task: summarization
max_input_tokens: 256
generation:
  num_beams: 2
  max_new_tokens: 12
  min_new_tokens: 12
  no_repeat_ngram_size: 2
  length_penalty: 0.6
"""


@pytest.fixture(scope="module")
def tiny_mt5_backend(tiny_mt5_dir):
    from benchmarks.summarization import load_backend

    backend = load_backend(tiny_mt5_dir, models_dir=MODELS_DIR, device="cpu", dtype="float32", torch_threads=1)
    yield backend
    backend.close()


@pytest.fixture
def small_preset(tmp_path):
    from model_server.presets import PresetCatalog

    (tmp_path / "bench.yaml").write_text(SMALL_PRESET, encoding="utf-8")
    return PresetCatalog.load(tmp_path, "bench")


def test_long_article_is_chunked_batched_then_summarized_again(tiny_mt5_backend, small_preset):
    from benchmarks.summarization import render_markdown, run_summarization

    preset = small_preset.get(None)
    row = run_summarization(tiny_mt5_backend, SAMPLE_AR, decode_tokens=12, num_beams=2, max_input_tokens=256,
                            repeats=2, warmup=1, device="cpu", preset=preset, label="tiny")

    assert row["chunks"] > 1 and len(row["chunk_source_tokens"]) == row["chunks"]
    assert all(0 < tokens <= 256 for tokens in row["chunk_source_tokens"])
    first, final = row["passes"]  # 12-token summaries of a few chunks fit in one input: exactly two passes
    assert row["final_pass"] and first["inputs"] == row["chunks"] and final["inputs"] == 1
    assert 12 < final["source_tokens"][0] <= 256
    # Forced lengths: every summary has exactly 12 tokens, in both passes.
    assert row["forced_length_exact"] and first["generated_tokens"] == 12 * row["chunks"]
    assert row["generated_tokens_per_article"] == 12 * (row["chunks"] + 1)
    assert row["generation"] == {"decode_tokens": 12, "num_beams": 2, "max_new_tokens": 12, "min_new_tokens": 12,
                                 "length_penalty": 0.6, "no_repeat_ngram_size": 2, "repetition_penalty": 1.0}
    assert row["repeats"] == len(row["seconds_per_article"]) == len(first["seconds"]) == 2
    assert row["s_per_article"] > 0 and row["cpu_s_per_article"] > 0
    assert row["generated_tokens_per_s"] == pytest.approx(row["generated_tokens_per_article"] / row["s_per_article"],
                                                          rel=1e-3)
    assert row["model"]["architecture"] == "mt5" and row["model"]["test_model"] is True
    json.dumps(row)  # the harness writes it as JSON

    lines = render_markdown({"rows": [row, {**row, "label": "other"}]})
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 3 and table[1].startswith("| tiny | ") and table[2].startswith("| other | ")
    assert " -> " in table[1] and "| 12 x 2 |" in table[1]
    assert render_markdown(row) == render_markdown({"rows": [row]})


def test_the_benchmark_gives_the_model_what_the_service_gives_it(tiny_backend, tiny_mt5_backend, small_preset):
    """Same preset through the service's SummarizationPipeline: the same first-pass inputs, chunks and passes."""
    from benchmarks.summarization import generation_options, run_summarization
    from model_server.services import Services
    from tests.ops_helpers import SharedBackend

    service_model, bench_model = DelegatingBackend(tiny_mt5_backend), DelegatingBackend(tiny_mt5_backend)
    services = Services.from_backend(tiny_settings("unused", summarization_enabled=True), SharedBackend(tiny_backend),
                                     summarization_backend=service_model, presets=small_preset)

    result = run_summary(services, SAMPLE_AR)
    preset = small_preset.get(None)
    row = run_summarization(bench_model, SAMPLE_AR, decode_tokens=12, num_beams=2, max_input_tokens=256,
                            repeats=1, warmup=0, device="cpu", preset=preset)

    assert generation_options(preset, decode_tokens=12, num_beams=2) == preset.generation.options()
    assert result.long_article.chunks == row["chunks"] and result.long_article.passes == len(row["passes"]) == 2
    first_pass = service_model.seen[:row["chunks"]]
    # The benchmark's own calls: a 1-token initialisation on its first input, then pass 1, then the final pass.
    assert bench_model.seen[0] in first_pass
    assert sorted(bench_model.seen[1:1 + row["chunks"]]) == sorted(first_pass)
    assert len(service_model.seen) == len(bench_model.seen) - 1 == row["chunks"] + 1


def test_input_limit_and_defaults_follow_the_service(tiny_mt5_backend):
    from benchmarks.summarization import load_preset, service_input_limit

    preset = load_preset()
    assert preset.name == "summary-xlsum"
    assert service_input_limit(tiny_mt5_backend, preset) == min(tiny_mt5_backend.info.max_input_tokens, 512)


def test_real_shape_config_is_mt5_base_as_xlsum_ships_it():
    """The architecture only: the 580M-parameter model is built on the meta device (no memory, no weights)."""
    import torch
    from transformers import MT5ForConditionalGeneration

    from benchmarks.mt5_models import mt5_xlsum_config

    config = mt5_xlsum_config()
    shape = {key: getattr(config, key) for key in (
        "vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_decoder_layers", "num_heads",
        "relative_attention_num_buckets", "relative_attention_max_distance", "feed_forward_proj",
        "pad_token_id", "eos_token_id", "decoder_start_token_id", "layer_norm_epsilon")}
    assert shape == dict(vocab_size=250112, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12,
                         num_heads=12, relative_attention_num_buckets=32, relative_attention_max_distance=128,
                         feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
                         layer_norm_epsilon=1e-6)
    assert config.model_type == "mt5" and config.is_gated_act and config.dense_act_fn == "gelu_new"
    with torch.device("meta"):
        model = MT5ForConditionalGeneration(config)
    embedding = model.shared.weight.numel()
    # Built with its own lm_head (untied, as mT5 checkpoints are): mT5-base's 582,401,280 parameters.
    assert embedding == 250112 * 768
    assert sum(p.numel() for p in model.parameters()) + embedding == 582_401_280
    assert len(model.encoder.block) == len(model.decoder.block) == 12


@pytest.mark.slow
def test_random_mt5_build_loads_through_the_service_and_every_id_decodes(tmp_path):
    """The whole build, with the width and depth shrunk (vocabulary, tokenizer, markers and layout as built)."""
    from transformers import AutoTokenizer

    from benchmarks.models import BENCH_MARKER_FILE
    from benchmarks.models import is_complete
    from benchmarks.mt5_models import MT5_BUILDER_VERSION, SPIECE_SIZE, build_random_mt5_xlsum
    from benchmarks.summarization import load_backend
    from model_server.backends.base import GenerationOptions
    from model_server.tiny_models import TINY_MARKER_FILE

    small = dict(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1, num_heads=4)
    model_dir = build_random_mt5_xlsum(tmp_path / "bench-mt5", shape_overrides=small)

    marker = json.loads((model_dir / BENCH_MARKER_FILE).read_text(encoding="utf-8"))
    assert marker["benchmark_only"] and marker["random_weights"] and "NOT a summarizer" in marker["warning"]
    assert (model_dir / TINY_MARKER_FILE).is_file()
    assert not is_complete(model_dir, MT5_BUILDER_VERSION, 0), "a shrunk build must never pass for the real-shape model"
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_server_benchmark_only"] is True and config["tie_word_embeddings"] is False
    assert (config["num_beams"], config["max_length"], config["no_repeat_ngram_size"], config["length_penalty"]) == \
        (4, 84, 2, 0.6)
    assert not (model_dir / "generation_config.json").exists()  # XLSum's layout
    assert not list(tmp_path.glob(".bench-mt5.building-*"))

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert len(tokenizer) == SPIECE_SIZE and (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)
    lines = [line for line in SAMPLE_AR.splitlines() if line.strip()]
    fertility = sum(len(tokenizer(line)["input_ids"]) - 1 for line in lines) / sum(len(l.split()) for l in lines)
    assert 1.4 <= fertility <= 1.6
    assert isinstance(tokenizer.decode(list(range(config["vocab_size"])), skip_special_tokens=True), str)

    backend = load_backend(model_dir, models_dir=MODELS_DIR, device="cpu", dtype="float32", torch_threads=1)
    try:
        assert backend.info.test_model and backend.info.max_input_tokens == 512
        assert backend.info.extra["vocab_size"] == 250112
        assert backend.model.lm_head.weight.data_ptr() != backend.model.shared.weight.data_ptr()
        [out] = backend.generate([lines[0]], GenerationOptions(max_new_tokens=20, min_new_tokens=20))
        # Placeholder pieces decode to words that encode back to one token each: summaries summarized again
        # (the final pass) are as long as they were generated.
        assert out.num_tokens == 20 and 18 <= backend.count_tokens(out.text) <= 21
    finally:
        backend.close()
