"""Idle latency: one request at a time, the same sentence, through each path, interleaved.

Paths: `direct-<backend>` (in-process `backend.generate([sentence])`), `service-<backend>_http` and
`naive_http` (one HTTP request to each server). Rounds go through every path in turn (the starting path
rotates), so a change in background load hits all paths alike; only the path being measured is busy.
Reported per path: the median; per pair (a server and the direct call of its backend): the median of
per-round ratios (robust to drift).
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import httpx

from benchmarks.online import ResponseParser

# A probe returns (milliseconds, server-side timings in ms).
Probe = Callable[[], tuple[float, dict[str, float]]]


def http_probe(client: httpx.Client, base_url: str, payload: dict[str, Any], parse: ResponseParser) -> Probe:
    def probe() -> tuple[float, dict[str, float]]:
        started = time.perf_counter()
        response = client.post(f"{base_url}/translate", json=payload)
        body = response.json()
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"idle probe {base_url}: HTTP {response.status_code}: {str(body)[:300]}")
        return elapsed, parse(body)[2]

    return probe


def idle_client(timeout_s: float) -> httpx.Client:
    # Close idle connections before the server's keep-alive timeout (uvicorn: 5 s) can race a reuse.
    return httpx.Client(timeout=timeout_s, limits=httpx.Limits(keepalive_expiry=1.0))


def run_idle(probes: dict[str, Probe], *, repeats: int, warmup: int, pairs: dict[str, str] | None = None
             ) -> dict[str, Any]:
    """`pairs` maps a path to the direct path it is compared with (paired_ratio_to_direct)."""
    names = list(probes)
    samples: dict[str, list[float]] = {name: [] for name in names}
    server_ms: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for round_ in range(warmup + repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            ms, timings = probes[name]()
            if round_ >= warmup:
                samples[name].append(ms)
                server_ms[name].append(timings)
    out: dict[str, Any] = {"repeats": repeats, "interleaved": True}
    for name in names:
        entry: dict[str, Any] = {"median_ms": round(statistics.median(samples[name]), 3),
                                 "ms": [round(v, 3) for v in samples[name]]}
        keys = sorted({key for timing in server_ms[name] for key in timing})
        if keys:
            entry["server_timing_median_ms"] = {
                key: round(statistics.median(t[key] for t in server_ms[name] if key in t), 3) for key in keys}
        out[name] = entry
    for name, direct in (pairs or {}).items():
        paired = [a / b for a, b in zip(samples[name], samples[direct]) if b > 0]
        out[name]["paired_ratio_to_direct"] = round(statistics.median(paired), 4) if paired else None
        out[name]["direct_path"] = direct
    return out
