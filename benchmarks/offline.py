"""Offline engine throughput: `generate` on fixed batches, no HTTP, no batcher.

Engines are the service's backends (the same classes and settings the service uses,
`load_translation_backend`) and the raw engine calls under them (`benchmarks/raw.py`). One initialising
call each, then per batch size: warm-up calls, then measured calls, interleaved across engines, timed
with a monotonic clock (CUDA synchronised); medians reported. Batch size 1 is the "per-request
generate()" engine baseline.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any, Callable, Sequence

from model_server.backends.base import GenerationOptions, Seq2SeqBackend

from benchmarks.workload import Workload

log = logging.getLogger(__name__)


def synchronizer(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def timed_generate(backend: Seq2SeqBackend, texts: Sequence[str], options: GenerationOptions,
                   sync: Callable[[], None]) -> tuple[float, int]:
    """Seconds for one generate call and the target tokens it produced (EOS included)."""
    sync()
    started = time.perf_counter()
    outputs = backend.generate(texts, options)
    sync()
    elapsed = time.perf_counter() - started
    if len(outputs) != len(texts):
        raise RuntimeError(f"backend returned {len(outputs)} outputs for {len(texts)} inputs")
    return elapsed, sum(out.num_tokens for out in outputs)


def run_offline(engines: dict[str, Any], workload: Workload, options: GenerationOptions, *,
                batch_sizes: Sequence[int], warmup: int, repeats: int, device: str) -> dict[str, dict[str, Any]]:
    """Time every engine (name -> anything with `generate(texts, options)`) on the same fixed batches.

    Engines are interleaved: per batch size, each one's warm-up calls, then `repeats` rounds in which
    every engine runs once, the starting engine rotating. Drift in background load then hits every
    engine alike, so their ratios hold even on a noisy machine. Returns name -> {"rows", "best", ...}.
    """
    sync = synchronizer(device)
    names = list(engines)
    for engine in engines.values():
        timed_generate(engine, workload.batch(1), options, sync)  # first call: one-off initialisation
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for size in batch_sizes:
        batch = workload.batch(size)
        for name in names:
            for _ in range(warmup):
                timed_generate(engines[name], batch, options, sync)
        samples: dict[str, list[tuple[float, int, float]]] = {name: [] for name in names}
        for round_ in range(repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                cpu_started = time.process_time()
                seconds, produced = timed_generate(engines[name], batch, options, sync)
                samples[name].append((seconds, produced, time.process_time() - cpu_started))
        for name in names:
            row = _row(size, samples[name], options)
            log.info("offline %-22s batch %3d: %8.1f ms/batch, %7.2f segments/s, %8.1f tokens/s", name, size,
                     row["ms_per_batch"], row["segments_per_s"], row["target_tokens_per_s"])
            rows[name].append(row)
    return {name: _section(rows[name]) for name in names}


def _row(size: int, samples: list[tuple[float, int, float]], options: GenerationOptions) -> dict[str, Any]:
    times = [seconds for seconds, _, _ in samples]
    tokens = [produced for _, produced, _ in samples]
    median_s = statistics.median(times)
    median_cpu_s = statistics.median(cpu for _, _, cpu in samples)
    return {
        "batch_size": size,
        "repeats": len(samples),
        "seconds": [round(t, 6) for t in times],
        "ms_per_batch": round(median_s * 1000, 3),
        "segments_per_s": round(size / median_s, 4),
        "target_tokens_per_batch": statistics.median(tokens),
        "target_tokens_per_s": round(statistics.median(tokens) / median_s, 3),
        "forced_length_exact": all(t == size * options.max_new_tokens for t in tokens),
        # CPU time of this process per batch: on a CPU, throughput per CPU-second does not depend on
        # how much of the machine other jobs take (it does on thread over-subscription).
        "cpu_s_per_batch": round(median_cpu_s, 4),
        "segments_per_cpu_s": round(size / median_cpu_s, 4) if median_cpu_s > 0 else None,
    }


def _section(rows: list[dict[str, Any]]) -> dict[str, Any]:
    if not rows:
        return {"rows": [], "best": None}
    best = max(rows, key=lambda r: r["target_tokens_per_s"])
    best_cpu = max(rows, key=lambda r: r["segments_per_cpu_s"] or 0)
    return {"rows": rows, "best": {"batch_size": best["batch_size"], "segments_per_s": best["segments_per_s"],
                                   "target_tokens_per_s": best["target_tokens_per_s"]},
            "best_per_cpu_s": {"batch_size": best_cpu["batch_size"],
                               "segments_per_cpu_s": best_cpu["segments_per_cpu_s"]}}
