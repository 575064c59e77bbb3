"""The output-vocabulary benchmark (benchmarks/vocab.py, issue 15): end to end on the tiny models (Marian with and
without restrict_output_vocab on both engines, the tiny mT5 against its trim-vocab copy in worker processes,
report files), and the two things it builds for the real-shape run: the random opus-mt with the real
vocabulary split, and the trimmed random mT5's kept set. Numbers are not judged, only that every section
exists, compares equal work and is sane."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest


def _has_ctranslate2() -> bool:
    import importlib.util

    return importlib.util.find_spec("ctranslate2") is not None


@pytest.mark.slow
def test_vocab_benchmark_quick_run_writes_every_section(tmp_path, tiny_marian_dir, tiny_mt5_dir):
    from benchmarks.vocab import main

    models = tmp_path / "models"  # conversions and the trimmed copy land here, not beside the test models
    returned = main(["--quick", "--marian-model", str(tiny_marian_dir), "--mt5-model", str(tiny_mt5_dir),
                     "--models-dir", str(models), "--out", str(tmp_path / "out"), "--device", "cpu",
                     "--dtype", "float32"])

    [json_path] = (tmp_path / "out").glob("*-cpu-vocab.json")
    results = json.loads(json_path.read_text(encoding="utf-8"))
    assert results["ratios"] == returned["ratios"]  # what main returns is what it wrote
    backends = ["torch", "ctranslate2"] if _has_ctranslate2() else ["torch"]
    assert results["backends"] == backends

    marian = results["marian"]
    sizes = marian["vocab"]["output_vocab_size"]
    for backend in backends:  # the tiny Marian keeps its 300 target pieces of 559 ids (tests/test_vocab_restriction.py)
        assert sizes[f"{backend} full"] == 559 and sizes[f"{backend} restricted"] == 300
    assert [(d["num_beams"], d["source"]) for d in marian["decodings"]] == [(4, "model generation config"),
                                                                         (1, "--num-beams")]
    for decoding in marian["decodings"]:
        assert set(decoding["offline"]) == {f"{b} {v}" for b in backends for v in ("full", "restricted")}
        for backend in backends:
            comparison = decoding["comparison"][backend]
            assert [row["batch_size"] for row in comparison["rows"]] == [1, 4]
            assert all(row["equal_work"] and row["ratio"] > 0 and row["paired_ratio"] > 0 for row in comparison["rows"])
            suffix = "" if decoding["num_beams"] == 4 else "_greedy"  # the headline is the model's beam 4
            assert results["ratios"][f"marian_{backend}_restricted_over_full{suffix}"] == comparison["ratio_best"] \
                == round(comparison["best_restricted"]["target_tokens_per_s"]
                         / comparison["best_full"]["target_tokens_per_s"], 4)
            for variant in ("full", "restricted"):  # every sentence exactly the forced 6 tokens
                assert all(row["target_tokens_per_batch"] == row["batch_size"] * 6
                           for row in decoding["offline"][f"{backend} {variant}"]["rows"])
    assert marian["engines"]["torch restricted"]["dtype"] == "float32"

    mt5 = results["mt5"]
    assert mt5["original"]["vocab_rows"] == 512 and mt5["trimmed"]["vocab_rows"] < 512
    assert mt5["trimmed"]["path"] == str((models / f"{tiny_mt5_dir.name}-trimmed").absolute())
    assert mt5["trimmed"]["benchmark_inputs"]["placeholder_pieces"] == 0  # real pieces: trim-vocab decides alone
    for engine in backends:
        section = mt5["engines"][engine]
        assert section["ratios"]["equal_work"]
        for variant in ("original", "trimmed"):
            row = section[variant]
            assert row["model"]["backend"] == engine and len(row["seconds_per_article"]) == 2
            # the peak after the articles covers loading and cannot fall below the peak after loading
            assert row["memory"]["peak_rss_mib"] >= row["memory_after_load"]["peak_rss_mib"] > 0
            assert row["generation"]["num_beams"] == 2 and row["work"]["generated_tokens"] > 0
        assert section["original"]["work"] == section["trimmed"]["work"]
        assert section["ratios"]["trimmed_over_original_peak_rss"] == round(
            section["trimmed"]["memory"]["peak_rss_mib"] / section["original"]["memory"]["peak_rss_mib"], 4)
    assert [t["name"] for t in results["targets"]] == [
        "marian_torch_restricted_over_full", "marian_ctranslate2_restricted_over_full",
        "mt5_torch_original_over_trimmed_s", "mt5_torch_trimmed_over_original_peak_rss"]
    assert all(t["value"] is not None for t in results["targets"] if "ctranslate2" in backends or "torch" in t["name"])
    assert results["meta"]["hardware"]["flags"] and results["meta"]["machine"]["cpus_usable"] >= 1

    markdown = Path(results["files"]["markdown"]).read_text(encoding="utf-8")
    for heading in ("## Marian: decode tokens/s", "### beam 4", "### greedy", "## mT5: the original",
                    "## Targets (issue 15)", "- precision: cpu flags"):
        assert heading in markdown


def test_the_split_opus_mt_decodes_into_its_english_target_pieces(tmp_path):
    """The random opus-mt with the real vocabulary split, shrunk (a 500-piece target.spm, one thin layer): the
    joint vocab is source + target pieces padded to 62,834 ids, the restriction keeps the target pieces and the
    special ids, and a shrunk build never passes for the real-shape one."""
    from benchmarks.models import BENCH_MARKER_FILE, SPLIT_BUILDER_VERSION, build_random_opus_mt_split, is_complete
    from model_server.backends.base import GenerationOptions
    from model_server.backends.vocab_restriction import model_target_vocabulary
    from model_server.services import load_translation_backend
    from tests.conftest import tiny_settings

    small = dict(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)
    model_dir = build_random_opus_mt_split(tmp_path / "split", target_pieces=500, target_words=3000,
                                           shape_overrides=small)
    assert not is_complete(model_dir, SPLIT_BUILDER_VERSION, 0)
    marker = json.loads((model_dir / BENCH_MARKER_FILE).read_text(encoding="utf-8"))
    assert marker["target_spm"] == {"pieces": 500, "words": 3000} and marker["shape_overrides"] == small
    # Each of the two keys alone marks a build the benchmark must not reuse as its full-size model.
    marker_file = model_dir / BENCH_MARKER_FILE
    for kept_key in ("target_spm", "shape_overrides"):
        marker_file.write_text(json.dumps({k: v for k, v in marker.items()
                                           if k not in {"target_spm", "shape_overrides"} - {kept_key}}))
        assert not is_complete(model_dir, SPLIT_BUILDER_VERSION, 0), kept_key
    marker_file.write_text(json.dumps({k: v for k, v in marker.items() if k not in {"target_spm", "shape_overrides"}}))
    assert is_complete(model_dir, SPLIT_BUILDER_VERSION, 0)
    marker_file.write_text(json.dumps(marker))

    vocab = json.loads((model_dir / "vocab.json").read_text(encoding="utf-8"))
    assert sorted(vocab.values()) == list(range(62834))
    assert (vocab["</s>"], vocab["<unk>"], vocab["<pad>"]) == (0, 1, 62833)
    kept = model_target_vocabulary(model_dir)
    assert len(kept) == 500 and {0, 1, 62833} <= set(kept)  # 497 normal pieces + </s>, <unk>, <pad>
    assert "\u2581the" in {token for token, i in vocab.items() if i in set(kept)}

    backend = load_translation_backend(tiny_settings(model_dir, device="cpu", dtype="float32", torch_threads=1))
    try:
        assert backend.info.extra["output_vocab_size"] == 500
        [out] = backend.generate(["قالت الحكومة الليبية"], GenerationOptions(max_new_tokens=5, min_new_tokens=5))
        assert out.num_tokens == 5 and out.text
        assert not re.search(r"\bw\d+\b", out.text)  # no source-side placeholder piece ("▁w<id>") decoded
    finally:
        backend.close()


@pytest.mark.slow
def test_the_trimmed_random_mt5_keeps_the_requested_rows(tmp_path):
    """A shrunk random mT5 (its spiece: learned pieces + placeholders) trimmed as the benchmark trims the real-shape
    one: the placeholder corpus keeps exactly the named placeholders beside what trim-vocab keeps itself (the
    article's pieces), so the kept rows come close to the request; a second call reuses the trim."""
    from benchmarks.mt5_models import build_random_mt5_xlsum
    from benchmarks.vocab import TRIM_INPUTS_FILE, ensure_trimmed, placeholder_ids

    small = dict(d_model=16, d_kv=4, d_ff=32, num_layers=1, num_decoder_layers=1, num_heads=2)
    source = build_random_mt5_xlsum(tmp_path / "bench-mt5", shape_overrides=small)
    first_placeholder = placeholder_ids(source / "spiece.model")[0]
    out, manifest = ensure_trimmed(source, tmp_path, kept=first_placeholder + 1000, words=300)
    assert manifest["benchmark_inputs"]["placeholder_pieces"] == 1000
    kept = manifest["vocab"]["kept"]
    assert len(placeholder_ids(out / "spiece.model")) == 1000  # exactly the named ones survive
    assert 1000 + first_placeholder // 2 <= kept <= 1000 + first_placeholder  # + the learned pieces trim-vocab keeps
    assert json.loads((out / "config.json").read_text(encoding="utf-8"))["vocab_size"] == kept
    written = (out / TRIM_INPUTS_FILE).stat().st_mtime_ns
    again, _ = ensure_trimmed(source, tmp_path, kept=first_placeholder + 1000, words=300)
    assert again == out and (out / TRIM_INPUTS_FILE).stat().st_mtime_ns == written
