"""The benchmark harness end to end on the tiny model: offline, service and naive servers, idle latency,
report files. Numbers are not judged, only that every section exists and is sane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MODELS_DIR


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
    assert results["settings"]["min_new_tokens"] == results["settings"]["max_new_tokens"] == 8

    offline = results["offline"]
    assert [row["batch_size"] for row in offline["rows"]] == [1, 4]
    for row in offline["rows"]:
        assert row["segments_per_s"] > 0 and row["target_tokens_per_s"] > 0 and row["ms_per_batch"] > 0
        assert row["forced_length_exact"], "min_new_tokens = max_new_tokens must fix the decode length"
        assert row["cpu_s_per_batch"] > 0

    for server in ("service", "naive"):
        for mode, levels in (("single", [1, 4]), ("article", [1, 2])):
            rows = results["online"][server][mode]
            assert [row["concurrency"] for row in rows] == levels
            for row in rows:
                assert row["errors"] == 0, row["first_error"]
                assert row["ok"] == row["requests"] > 0
                assert row["requests_per_s"] > 0 and row["target_tokens_per_s"] > 0
                assert 0 < row["latency_p50_ms"] <= row["latency_p95_ms"] <= row["latency_p99_ms"]
                if Path("/proc/self/stat").exists():
                    assert row["server_cpu_s"] > 0
    # Same work on both servers; every measured segment went through the service's model (no cache, no
    # quality retries: the batcher saw exactly the segments the responses report).
    article_service = results["online"]["service"]["article"][0]
    article_naive = results["online"]["naive"]["article"][0]
    assert article_service["segments"] == article_naive["segments"] == results["workload"]["sentences"]
    for row in results["online"]["service"]["single"] + results["online"]["service"]["article"]:
        assert row["batching"]["segments"] == row["segments"]
        assert row["batching"]["mean_batch_size"] >= 1
    assert results["settings"]["retry_suspect_sentences"] is False

    idle = results["idle"]
    for key in ("direct", "service_http", "naive_http"):
        assert idle[key]["median_ms"] > 0
    for key in ("service_over_best_offline", "service_over_naive", "idle_http_over_direct"):
        assert results["ratios"][key] > 0

    meta = results["meta"]
    assert meta["machine"]["cpu_count"] >= 1 and meta["machine"]["torch"]
    assert meta["model"]["kind"] == "tiny-test-model"

    markdown = json_path.with_suffix(".md").read_text(encoding="utf-8")
    assert "## Offline engine" in markdown and "## Ratios and targets" in markdown
    assert "| 4 | service |" in markdown and "| 4 | naive |" in markdown
    for suffix in ("-throughput.png", "-latency.png"):
        png = json_path.with_name(json_path.stem + suffix)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
