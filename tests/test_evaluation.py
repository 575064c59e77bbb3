"""`model-server eval`: sacreBLEU scores with signatures, flag rates, variants side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from model_server.evaluation import Variant, score_translations
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import DATA, ROOT


def run_eval(*args):
    env = {**os.environ, "MODEL_SERVER_TORCH_THREADS": "1", "MODEL_SERVER_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "-m", "model_server.cli", "eval", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_memorised_pairs_score_100_and_variants_are_compared_side_by_side(tmp_path, tiny_marian_dir):
    source, reference = tmp_path / "src.ar", tmp_path / "ref.en"
    source.write_text("\n".join(ar for ar, _ in MEMORISED_PAIRS) + "\n", encoding="utf-8")
    reference.write_text("\n".join(en for _, en in MEMORISED_PAIRS) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    done = run_eval(str(source), str(reference), "--translation-model", str(tiny_marian_dir),
                    "--variant", "greedy:num_beams=1", "--variant", "beam:num_beams=4", "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert [v["variant"] for v in report["variants"]] == ["greedy", "beam"]
    for variant in report["variants"]:
        assert variant["bleu"] == 100.0 and variant["chrf"] == 100.0
        assert variant["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
        assert variant["needs_review_rate"] == 0 and variant["failed_lines"] == 0
        assert variant["model"]["test_model"] is True and variant["lines_per_s"] > 0
    assert "BLEU signature: `nrefs:1" in done.stdout and "| greedy |" in done.stdout and "| beam |" in done.stdout
    assert (out / "eval.md").read_text(encoding="utf-8") == done.stdout


def test_sample_article_pair_prints_bleu_and_chrf_with_signature(tiny_marian_dir):
    done = run_eval(str(DATA / "libya-russia-ar.txt"), str(DATA / "libya-russia-en.txt"),
                    "--translation-model", str(tiny_marian_dir))
    assert done.returncode == 0, done.stderr
    assert "22 lines" in done.stdout and "chrF signature: `nrefs:1|case:mixed|eff:yes|nc:6|nw:0" in done.stdout
    assert "(TEST MODEL)" in done.stdout


def test_misaligned_files_are_refused(tmp_path, tiny_marian_dir):
    (tmp_path / "a").write_text("مرحبا\nشكرا\n", encoding="utf-8")
    (tmp_path / "b").write_text("Hello\n", encoding="utf-8")
    done = run_eval(str(tmp_path / "a"), str(tmp_path / "b"), "--translation-model", str(tiny_marian_dir))
    assert done.returncode != 0 and "line-aligned" in done.stderr


@pytest.mark.parametrize("spec,name,overrides", [
    ("ct2:backend=ctranslate2", "ct2", {"backend": "ctranslate2"}),
    ("num_beams=4,max-new-tokens=64", "num_beams=4,max_new_tokens=64", {"num_beams": "4", "max_new_tokens": "64"}),
    ("big:translation_model=/models/tc-big", "big", {"translation_model": "/models/tc-big"}),
])
def test_variant_specs(spec, name, overrides):
    variant = Variant.parse(spec)
    assert variant.name == name and variant.overrides == overrides


def test_bad_variant_spec_is_rejected():
    with pytest.raises(ValueError, match="key=value"):
        Variant.parse("fast:num_beams")


def test_scores_are_sacrebleu_corpus_scores():
    scores = score_translations(["The weather is nice today."], ["The weather is nice today."])
    assert scores["bleu"] == 100.0 and scores["chrf"] == 100.0


def test_summary_rouge_is_100_on_memorised_summaries_and_counts_arabic_words(tmp_path, tiny_marian_dir, tiny_mt5_dir):
    from model_server.evaluation import evaluate_summaries, rouge_scores
    from model_server.text import arabic_ratio
    from model_server.tiny_models import MEMORISED_SUMMARIES
    from tests.conftest import tiny_settings

    arabic = [(doc, summary) for doc, summary in MEMORISED_SUMMARIES if arabic_ratio(doc) > 0.5]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"document": d, "summary": s}, ensure_ascii=False) for d, s in arabic),
                     encoding="utf-8")
    base = tiny_settings(tiny_marian_dir, summarization_model=str(tiny_mt5_dir))
    report = evaluate_summaries(pairs, base, lang="ar")
    assert report["documents"] == len(arabic) >= 2
    assert (report["rouge1"], report["rouge2"], report["rougeL"]) == (100.0, 100.0, 100.0)
    # The tokenizer keeps Arabic words (rouge-score's default would drop them and score nothing).
    partial = rouge_scores(["روسيا تزيد دعمها"], ["روسيا تزيد دعمها العسكري"])
    assert partial["rouge1"] == pytest.approx(85.71, abs=0.01)


def test_summary_pairs_file_errors_name_the_line(tmp_path):
    from model_server.evaluation import read_summary_pairs

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"document": "x", "summary": "y"}\n{"document": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        read_summary_pairs(bad)
