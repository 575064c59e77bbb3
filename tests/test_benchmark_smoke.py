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
    for key in ratio_keys + ["idle_http_over_direct"]:
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
