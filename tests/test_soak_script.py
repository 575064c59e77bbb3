"""scripts/soak.py, briefly: 8 clients for 10 s against a real `model-server serve` (tiny profile)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_short_soak_passes_and_reports(tmp_path, tiny_marian_dir):
    out = tmp_path / "soak.json"
    # A 4-segment queue: every overload request (8 texts) is refused, so the 503 path is certain.
    command = [sys.executable, str(ROOT / "scripts" / "soak.py"), "--clients", "8", "--duration", "10",
               "--max-queue-segments", "4", "--recovery-requests", "5", "--models-dir", str(tiny_marian_dir.parent),
               "--out", str(out), "--server-log", str(tmp_path / "server.log")]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(out.read_text(encoding="utf-8"))
    assert summary["passed"] and summary["failures"] == [] and summary == json.loads(proc.stdout)
    assert summary["requests"] > 0 and not summary["unexpected_statuses"] and not summary["transport_errors"]
    assert set(summary["by_status"]) <= {"200", "400", "413", "422", "429", "503"}
    assert "503" in summary["by_phase"]["overload"]
    assert summary["recovery"]["ok"] and summary["server_errors_logged"] == 0
    rss = summary["rss_mb"]
    assert 0 < rss["start"] <= rss["max"] and rss["end"] <= rss["max"] and rss["samples"]
    assert summary["latency_ms_200"]["all"].get("n", 0) == summary["by_status"].get("200", 0)
    assert summary["server_metrics"]["model_server_errors_total{code=\"queue_full\"}"] >= 1
