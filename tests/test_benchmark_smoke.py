"""The benchmark harness end to end on the tiny model: offline (both decodings, both torch dtypes), service
and naive servers (torch and CTranslate2), idle latency, report files. Numbers are not judged, only that
every section exists and is sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR


def _has_ctranslate2() -> bool:
    import importlib.util

    return importlib.util.find_spec("ctranslate2") is not None


@pytest.mark.slow
def test_benchmark_quick_run_writes_every_section(tmp_path, tiny_marian_dir):
    pytest.importorskip("matplotlib")
    from benchmarks.run import main

    returned = main(["--model", "tiny", "--quick", "--models-dir", str(MODELS_DIR), "--out", str(tmp_path),
                     "--device", "cpu"])

    [json_path] = tmp_path.glob("*-cpu-tiny.json")
    results = json.loads(json_path.read_text(encoding="utf-8"))
    assert results["ratios"] == returned["ratios"]
    # The headline decodes as the model ships (the tiny model's generation config: beam 4), greedy second.
    assert results["generation"] == {"num_beams": 4, "num_beams_source": "model generation config",
                                     "decode_tokens": 8, "min_new_tokens": 8, "max_new_tokens": 8}
    assert [(d["name"], d["num_beams"]) for d in results["decodings"]] == [("headline", 4), ("greedy", 1)]
    assert results["greedy"]["num_beams"] == 1
    assert all(s["min_new_tokens"] == s["max_new_tokens"] == 8 for s in results["settings"].values())

    backends = ["torch", "ctranslate2"] if _has_ctranslate2() else ["torch"]
    assert results["backends"] == backends
    def assert_offline_rows(rows, where):
        assert [row["batch_size"] for row in rows] == [1, 4], where
        for row in rows:
            assert row["segments_per_s"] > 0 and row["target_tokens_per_s"] > 0 and row["ms_per_batch"] > 0
            assert row["forced_length_exact"], "min_new_tokens = max_new_tokens must fix the decode length"
            assert row["cpu_s_per_batch"] > 0

    for backend in backends:
        assert results["settings"][backend]["backend"] == backend
        assert results["settings"][backend]["num_beams"] == 4
        for kind in ("offline", "raw"):  # the service's backend and the raw engine call under it, both decodings
            assert_offline_rows(results[kind][backend]["rows"], (kind, backend))
            assert_offline_rows(results["greedy"][kind][backend]["rows"], ("greedy", kind, backend))
    # Torch in both candidate dtypes, per decoding; the chosen one is the torch backend rows themselves.
    chosen = results["meta"]["precision"]["torch"]["chosen"]
    for section in (results, results["greedy"]):
        dtypes = section["torch_dtypes"]
        assert dtypes["chosen"] == chosen and set(dtypes["sections"]) == {"float32", "bfloat16"}
        for dtype, timed in dtypes["sections"].items():
            assert_offline_rows(timed["rows"], ("dtype", dtype))
        assert dtypes["sections"][chosen]["rows"] == section["offline"]["torch"]["rows"]
    if "ctranslate2" in backends:
        info = results["offline"]["ctranslate2"]["backend"]
        assert info["backend"] == "ctranslate2" and info["extra"]["quantization"] == "int8"
        assert results["raw"]["ctranslate2"]["engine"]["compute_type"].startswith("int8")

    naive_servers = ["naive"] + (["naive-ctranslate2"] if "ctranslate2" in backends else [])
    servers = [f"service-{backend}" for backend in backends] + naive_servers
    assert [name for name, value in results["online"].items() if isinstance(value, dict)] == servers
    assert results["online"]["naive"]["layout"] == {"engine": "torch", "dtype": chosen, "workers": 1, "threads": 1}
    if "ctranslate2" in backends:  # --quick: 2 request threads, 1 inter thread, 1 intra thread
        assert results["online"]["naive-ctranslate2"]["backend"] == "ctranslate2"
        assert results["online"]["naive-ctranslate2"]["layout"] == {
            "engine": "ctranslate2", "compute_type": results["meta"]["precision"]["ctranslate2"]["chosen"],
            "workers": 2, "inter_threads": 1, "intra_threads": 1}
    for server in servers:
        assert results["online"][server]["kind"] == ("naive" if server in naive_servers else "service")
        for mode, levels in (("single", [1, 4]), ("article", [1, 2]), ("single_greedy", [1, 4])):
            rows = results["online"][server][mode]
            assert [row["concurrency"] for row in rows] == levels
            for row in rows:
                assert row["errors"] == 0, row["first_error"]
                assert row["ok"] == row["requests"] > 0
                assert row["requests_per_s"] > 0 and row["target_tokens_per_s"] > 0
                assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
        if Path("/proc/self/stat").exists():  # per level >= 0 (10 ms ticks; a tiny level can read 0), in all > 0
            cpu = [row["server_cpu_s"] for mode in ("single", "article") for row in results["online"][server][mode]]
            assert min(cpu) >= 0 and sum(cpu) > 0
        if Path("/proc/self/status").exists():
            memory = results["memory"][server]
            assert 0 < memory["rss_mib"] <= memory["peak_rss_mib"]
    # Same work on every server; every measured segment went through the service's model (no cache, no
    # quality retries: the batcher saw exactly the segments the responses report).
    for server in servers:
        assert results["online"][server]["article"][0]["segments"] == results["workload"]["sentences"]
    for server in servers[:len(backends)]:
        online = results["online"][server]
        for row in online["single"] + online["article"] + online["single_greedy"]:
            assert row["batching"]["segments"] == row["segments"]
            assert row["batching"]["mean_batch_size"] >= 1
        assert results["settings"][server.removeprefix("service-")]["retry_suspect_sentences"] is False
        # The limits the service ran with and their sources; tests never see a tuning entry.
        limits = online["limits"]
        assert min(limits[key] for key in ("max_batch_size", "max_batch_hypotheses", "max_batch_tokens")) > 0
        assert set(limits["limits_source"].values()) <= {"settings", "tuning", "defaults"}
        assert limits["tuning"] is None

    idle = results["idle"]
    for backend in backends:
        assert idle[f"direct-{backend}"]["median_ms"] > 0
        assert idle[f"service-{backend}_http"]["direct_path"] == f"direct-{backend}"
        assert idle[f"service-{backend}_http"]["paired_ratio_to_direct"] > 0
    assert idle["naive_http"]["median_ms"] > 0
    ratio_keys = ["service_over_best_offline", "service_over_naive", "torch_backend_over_raw",
                  "torch_auto_dtype_over_other"]
    if "ctranslate2" in backends:
        assert idle["naive-ctranslate2_http"]["median_ms"] > 0
        ratio_keys += ["ct2_service_over_torch_service", "ct2_service_over_raw_ct2", "raw_ct2_over_raw_torch",
                       "ct2_engine_ceiling_over_naive_ct2", "ct2_service_over_naive_ct2",
                       "ct2_service_share_of_ceiling", "ct2_service_over_naive_ct2_latency_1_client"]
    headline_only = ["idle_http_over_direct"]  # the idle phase runs the headline decoding only
    if "ctranslate2" in backends:
        headline_only.append("ct2_idle_service_over_naive_ct2")
    for key in ratio_keys + headline_only:
        assert results["ratios"][key] > 0, key
    for key in ratio_keys:  # the same ratios for the greedy set (single sentences; no idle phase)
        assert results["greedy"]["ratios"][key] > 0, ("greedy", key)
    if "ctranslate2" in backends:
        ratios = results["ratios"]
        assert ratios["ct2_service_share_of_ceiling"] == pytest.approx(
            ratios["ct2_service_over_naive_ct2"] / ratios["ct2_engine_ceiling_over_naive_ct2"], rel=1e-3)
    assert [t["name"] for t in results["targets"]][:3] == [
        "service_over_best_offline", "service_over_naive", "idle_http_over_direct"]

    # The summarization rows: the tiny mT5 through the service's summarization backend on each engine.
    summaries = results["summarization"]["rows"]
    assert [row["model"]["backend"] for row in summaries] == backends
    for summary in summaries:
        assert summary["label"] == "tiny" and summary["chunks"] >= 1 and summary["forced_length_exact"]
        assert summary["generation"]["decode_tokens"] == 8 and summary["generation"]["num_beams"] == 2
        assert summary["s_per_article"] > 0 and summary["generated_tokens_per_s"] > 0
    # Same chunking whatever the engine: the service plans chunks, the engine only runs them.
    assert len({tuple(row["chunk_source_tokens"]) for row in summaries}) == 1

    meta = results["meta"]
    assert meta["machine"]["cpu_count"] >= 1 and meta["machine"]["torch"]
    assert meta["model"]["kind"] == "tiny-test-model"

    markdown = json_path.with_suffix(".md").read_text(encoding="utf-8")
    assert "## Offline engine" in markdown and "## Ratios and targets" in markdown
    assert "| 4 | service-torch |" in markdown and "| 4 | naive |" in markdown
    assert "## Online, single sentences, beam 4 (model generation config)" in markdown
    assert "## Online, single sentences, greedy (--greedy-row)" in markdown
    assert "## Torch dtypes" in markdown and "torch backend.generate bfloat16" in markdown
    assert "service-torch limits: max_batch_size" in markdown and "- naive: engine torch" in markdown
    if "ctranslate2" in backends:
        assert "| 4 | naive-ctranslate2 |" in markdown and "inter_threads 1, intra_threads 1" in markdown
    assert "## Memory: server processes" in markdown and "## Summarization" in markdown and "torch raw model.generate" in markdown
    for suffix in ("-throughput.png", "-latency.png"):
        png = json_path.with_name(json_path.stem + suffix)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Fast checks of the harness's own decisions, without running it (the run above exercises them end to end).


def test_num_beams_option_and_decoding_sets(tiny_marian_dir):
    from benchmarks.run import build_parser, decodings, model_num_beams, resolve_options

    def resolved(*argv):
        args = resolve_options(build_parser().parse_args(["--model", "tiny", "--quick", *argv]))
        args.num_beams_source = "test"
        if args.num_beams == "model":
            args.num_beams = model_num_beams(tiny_marian_dir)
        return args

    assert model_num_beams(tiny_marian_dir) == 4  # the tiny model's generation config, as opus-mt's
    assert [d["num_beams"] for d in decodings(resolved())] == [4, 1]
    assert [d["num_beams"] for d in decodings(resolved("--no-greedy-row"))] == [4]
    assert [d["num_beams"] for d in decodings(resolved("--num-beams", "1"))] == [1]  # greedy headline: one set
    assert [d["num_beams"] for d in decodings(resolved("--num-beams", "2"))] == [2, 1]
    for bad in ("0", "beam", "-1"):
        with pytest.raises(SystemExit):
            resolved("--num-beams", bad)


def test_naive_layouts_and_arguments(tmp_path):
    from benchmarks.run import build_parser, naive_argv, naive_layouts, other_torch_dtypes, resolve_options

    args = resolve_options(build_parser().parse_args(["--naive-ct2-workers", "8", "--naive-ct2-inter-threads", "2",
                                                      "--torch-threads", "2", "--backends", "torch"]))
    args.num_beams = 4
    values = {"torch": {"device": "cpu"}, "ctranslate2": {"device": "cpu", "ct2_model_dir": str(tmp_path)}}
    if not _has_ctranslate2():
        values.pop("ctranslate2")
    layouts = naive_layouts(args, "float32", values)
    assert layouts["naive"] == {"engine": "torch", "dtype": "float32", "workers": 1, "threads": 2}
    argv = naive_argv(args, tmp_path / "m", "cpu", layouts["naive"])
    assert argv[:2] == ["--engine", "torch"] and argv[argv.index("--num-beams") + 1] == "4"
    assert argv[argv.index("--threads") + 1] == "2" and argv[argv.index("--workers") + 1] == "1"
    if "ctranslate2" in values:  # LibreTranslate's best layout on 2 cores: 8 threads, inter 2, intra 1
        ct2 = layouts["naive-ctranslate2"]
        assert (ct2["workers"], ct2["inter_threads"], ct2["intra_threads"]) == (8, 2, 1)
        argv = naive_argv(args, tmp_path / "m", "cpu", ct2)
        assert argv[argv.index("--ct2-model") + 1] == str(tmp_path) and "--threads" not in argv
        assert [argv[argv.index(flag) + 1] for flag in ("--workers", "--inter-threads", "--intra-threads")] == \
            ["8", "2", "1"]
    assert other_torch_dtypes("float32", "cpu") == ["bfloat16"]
    assert other_torch_dtypes("bfloat16", "cpu") == ["float32"]
    assert other_torch_dtypes("float16", "cuda") == ["bfloat16"]


@pytest.mark.skipif(not _has_ctranslate2(), reason="ctranslate2 not installed")
def test_naive_ctranslate2_engine_does_the_forced_work(tiny_marian_dir):
    """One translate_batch per request; every sentence decodes exactly N tokens, counted as the service's
    backend counts them (the tiny model forces EOS as its last token, as opus-mt does)."""
    from transformers import AutoTokenizer

    from benchmarks.models import ensure_ct2_conversion
    from benchmarks.naive_server import ctranslate2_engine, torch_engine

    ct2_dir = ensure_ct2_conversion(tiny_marian_dir, MODELS_DIR, "int8")
    tokenizer = AutoTokenizer.from_pretrained(tiny_marian_dir)
    sentences = ["مرحبا بكم.", "كيف حالك اليوم؟", "شكرا"]
    engines = {"ctranslate2": ctranslate2_engine(str(tiny_marian_dir), tokenizer, ct2_model=str(ct2_dir),
                                                 device="cpu", compute_type="int8", inter_threads=1,
                                                 intra_threads=1, decode_tokens=8),
               "torch": torch_engine(str(tiny_marian_dir), tokenizer, device="cpu", dtype="float32", decode_tokens=8)}
    for name, translate in engines.items():
        for beams in (1, 4):
            texts, generated = translate(sentences, beams)
            assert len(texts) == 3 and all(isinstance(t, str) for t in texts), (name, beams)
            assert generated == 3 * 8, (name, beams)


def test_ct2_ceiling_ratios_and_greedy_view():
    from benchmarks.report import compute_ratios, decoding_view

    def level(clients, tokens, p50):
        return {"concurrency": clients, "ok": 4, "target_tokens_per_s": tokens, "latency_p50_ms": p50}

    def server(kind, backend, tokens, p50, greedy_tokens):
        return {"kind": kind, "backend": backend, "single": [level(1, tokens / 4, p50), level(64, tokens, p50 * 8)],
                "single_greedy": [level(64, greedy_tokens, 1.0)]}

    def best(tokens):
        return {"rows": [], "best": {"batch_size": 32, "target_tokens_per_s": tokens}}

    results = {"backends": ["ctranslate2"], "offline": {"ctranslate2": best(500.0)},
               "online": {"service-ctranslate2": server("service", "ctranslate2", 450.0, 400.0, 900.0),
                          "naive-ctranslate2": server("naive", "ctranslate2", 100.0, 380.0, 200.0),
                          "naive-ctranslate2_ready_s": 1.0},
               # Rounds interleaved: the ratio is the median of per-round ratios (0.5, 1.5, 0.5), not 30 / 20.
               "idle": {"service-ctranslate2_http": {"median_ms": 30.0, "ms": [10.0, 30.0, 50.0]},
                        "naive-ctranslate2_http": {"median_ms": 20.0, "ms": [20.0, 20.0, 100.0]}},
               "greedy": {"offline": {"ctranslate2": best(1000.0)}, "raw": {},
                          "torch_dtypes": {"chosen": "bfloat16", "sections": {"bfloat16": best(30.0),
                                                                              "float32": best(10.0)}}}}
    ratios = compute_ratios(results)
    assert ratios["ct2_engine_ceiling_over_naive_ct2"] == 5.0  # 500 / 100: the engine's batching gain
    assert ratios["ct2_service_over_naive_ct2"] == 4.5
    assert ratios["ct2_service_share_of_ceiling"] == 0.9
    assert ratios["ct2_service_over_naive_ct2_latency_1_client"] == pytest.approx(400 / 380, abs=1e-4)
    assert ratios["ct2_idle_service_over_naive_ct2"] == 0.5
    assert ratios["torch_auto_dtype_over_other"] is None  # no dtype rows in the headline here
    greedy = compute_ratios(decoding_view(results, "greedy"))
    assert greedy["ct2_engine_ceiling_over_naive_ct2"] == 5.0 and greedy["ct2_service_over_naive_ct2"] == 4.5
    assert greedy["torch_auto_dtype_over_other"] == 3.0
    assert greedy["ct2_idle_service_over_naive_ct2"] is None  # the greedy set has no idle phase
    assert decoding_view(results, "missing") is None
