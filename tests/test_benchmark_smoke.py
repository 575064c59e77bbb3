"""The benchmark harness end to end on the tiny model: offline, service and naive servers, idle latency,
report files. Numbers are not judged, only that every section exists and is sane."""

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
    assert results["generation"] == {"num_beams": 1, "decode_tokens": 8, "min_new_tokens": 8, "max_new_tokens": 8}
    assert all(s["min_new_tokens"] == s["max_new_tokens"] == 8 for s in results["settings"].values())

    backends = ["torch", "ctranslate2"] if _has_ctranslate2() else ["torch"]
    assert results["backends"] == backends
    for backend in backends:
        assert results["settings"][backend]["backend"] == backend
        for kind in ("offline", "raw"):  # the service's backend and the raw engine call under it
            rows = results[kind][backend]["rows"]
            assert [row["batch_size"] for row in rows] == [1, 4], (kind, backend)
            for row in rows:
                assert row["segments_per_s"] > 0 and row["target_tokens_per_s"] > 0 and row["ms_per_batch"] > 0
                assert row["forced_length_exact"], "min_new_tokens = max_new_tokens must fix the decode length"
                assert row["cpu_s_per_batch"] > 0
    if "ctranslate2" in backends:
        info = results["offline"]["ctranslate2"]["backend"]
        assert info["backend"] == "ctranslate2" and info["extra"]["quantization"] == "int8"
        assert results["raw"]["ctranslate2"]["engine"]["compute_type"].startswith("int8")

    servers = [f"service-{backend}" for backend in backends] + ["naive"]
    for server in servers:
        assert results["online"][server]["kind"] == ("naive" if server == "naive" else "service")
        for mode, levels in (("single", [1, 4]), ("article", [1, 2])):
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
    for server in servers[:-1]:
        for row in results["online"][server]["single"] + results["online"][server]["article"]:
            assert row["batching"]["segments"] == row["segments"]
            assert row["batching"]["mean_batch_size"] >= 1
        assert results["settings"][server.removeprefix("service-")]["retry_suspect_sentences"] is False

    idle = results["idle"]
    for backend in backends:
        assert idle[f"direct-{backend}"]["median_ms"] > 0
        assert idle[f"service-{backend}_http"]["direct_path"] == f"direct-{backend}"
        assert idle[f"service-{backend}_http"]["paired_ratio_to_direct"] > 0
    assert idle["naive_http"]["median_ms"] > 0
    for key in ("service_over_best_offline", "service_over_naive", "idle_http_over_direct", "torch_backend_over_raw"):
        assert results["ratios"][key] > 0
    if "ctranslate2" in backends:
        for key in ("ct2_service_over_torch_service", "ct2_service_over_raw_ct2", "raw_ct2_over_raw_torch"):
            assert results["ratios"][key] > 0
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
    assert "## Memory: server processes" in markdown and "## Summarization" in markdown and "torch raw model.generate" in markdown
    for suffix in ("-throughput.png", "-latency.png"):
        png = json_path.with_name(json_path.stem + suffix)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
