#!/usr/bin/env python
"""Load and soak test of a real `model-server serve` process (tiny profile, loopback).

Starts the server as a subprocess, runs N closed-loop clients for D seconds (bounded by --max-requests)
through three phases - mixed traffic (valid requests and bad inputs), overload (8-text requests
against a small queue, so 503s happen), mixed again - while sampling the server's RSS from
/proc/<pid>/status. Then checks recovery (ready, empty queue, valid requests translated correctly),
prints a JSON summary and writes it to --out.

Exit status 1 when any response has an unexpected status (anything but 200/400/413/422/429/503), a
request fails at the transport level, recovery fails, the server logs an error, or RSS grows by more than
--max-rss-growth-mb between the end of warm-up and the end of the run.

    .venv/bin/python scripts/soak.py                      # 64 clients, 300 s
    .venv/bin/python scripts/soak.py --clients 8 --duration 10 --out /tmp/soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_LINES = [line for line in (ROOT / "model_server" / "data" / "libya-russia-ar.txt").read_text(
    encoding="utf-8").splitlines() if line.strip()]
MEMORISED = ("مرحبا بالعالم.", "Hello world.")  # the tiny model's exact output for this input
EXPECTED_STATUSES = frozenset({200, 400, 413, 422, 429, 503})
PHASES = (("mixed", 0.5), ("overload", 0.25), ("after", 0.25))  # share of --duration, in order
# Server limits the bad inputs are built against.
MAX_TEXTS = 8
MAX_TEXT_CHARS = 20_000
MAX_BODY_BYTES = 200_000


# ----- requests -----------------------------------------------------------------------------------
def valid_request(rng: random.Random, bulk_share: float) -> dict:
    if rng.random() < bulk_share:
        return {"json": {"texts": rng.sample(SAMPLE_LINES, rng.randint(2, 6)), "priority": "bulk"}}
    if rng.random() < 0.7:
        return {"json": {"text": "\n".join(rng.sample(SAMPLE_LINES, rng.randint(1, 3)))}}
    return {"json": {"texts": rng.sample(SAMPLE_LINES, rng.randint(2, 4))}}


JSON = {"content-type": "application/json"}
BAD_REQUESTS = [  # (kind, request kwargs)
    ("malformed_json", {"content": b'{"text": "abc"', "headers": JSON}),
    ("invalid_utf8", {"content": b'{"text": "\xff\xfe"}', "headers": JSON}),
    ("not_arabic", {"json": {"text": "The Times reported that Russia stepped up its support."}}),
    ("empty", {"json": {"text": " \n\u200b "}}),
    ("wrong_type", {"json": {"text": 42}}),
    ("unknown_field", {"json": {"text": "مرحبا", "colour": "red"}}),
    ("too_many_texts", {"json": {"texts": ["مرحبا"] * (MAX_TEXTS + 1)}}),
    ("text_too_long", {"json": {"text": "مرحبا " * (MAX_TEXT_CHARS // 6 + 1)}}),
    ("body_too_large", {"content": b'{"text": "' + b"a" * (MAX_BODY_BYTES + 10) + b'"}', "headers": JSON}),
    ("mixed_batch", {"json": {"texts": [SAMPLE_LINES[8], "", "English here.", SAMPLE_LINES[15]]}}),
]


def overload_request(rng: random.Random) -> dict:
    return {"json": {"texts": rng.sample(SAMPLE_LINES, MAX_TEXTS)}}


# ----- bookkeeping --------------------------------------------------------------------------------
@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    by_phase: dict[str, Counter] = field(default_factory=dict)
    by_kind: dict[str, Counter] = field(default_factory=dict)
    latencies_ok: dict[str, list[float]] = field(default_factory=dict)  # phase -> ms of 200s
    transport_errors: Counter = field(default_factory=Counter)
    transport_error_samples: list[str] = field(default_factory=list)
    wrong_translations: int = 0
    sent: int = 0

    def record(self, phase: str, kind: str, status: int, ms: float) -> None:
        self.statuses[status] += 1
        self.by_phase.setdefault(phase, Counter())[status] += 1
        self.by_kind.setdefault(kind, Counter())[status] += 1
        if status == 200:
            self.latencies_ok.setdefault(phase, []).append(ms)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)

    return {"n": len(ordered), "p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "max": round(ordered[-1], 1)}


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----- the run ------------------------------------------------------------------------------------
async def client_loop(number: int, client: httpx.AsyncClient, tally: Tally, started: float,
                      args: argparse.Namespace) -> None:
    duration_s, max_requests = args.duration, args.max_requests
    rng = random.Random(args.seed * 1000 + number)
    boundaries, elapsed = [], 0.0
    for name, share in PHASES:
        elapsed += share * duration_s
        boundaries.append((elapsed, name))
    while tally.sent < max_requests:
        now = time.monotonic() - started
        if now >= duration_s:
            return
        phase = next(name for end, name in boundaries if now < end)
        if phase == "overload" and rng.random() < 0.8:
            kind, kwargs = "overload", overload_request(rng)
        elif rng.random() < 0.2:
            kind, kwargs = rng.choice(BAD_REQUESTS)
        else:
            kind, kwargs = "valid", valid_request(rng, args.bulk_share)
        tally.sent += 1
        began = time.perf_counter()
        try:
            response = await client.post("/translate", **kwargs)
        except httpx.HTTPError as exc:
            tally.transport_errors[f"{kind}:{type(exc).__name__}"] += 1
            if len(tally.transport_error_samples) < 5:
                tally.transport_error_samples.append(f"{phase} {kind} {type(exc).__name__}: {exc!r}"[:300])
            continue
        tally.record(phase, kind, response.status_code, (time.perf_counter() - began) * 1000)
        if response.status_code == 503 and phase != "overload":
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")) * rng.random())


async def check_recovery(client: httpx.AsyncClient, requests: int, timeout_s: float = 60.0) -> dict:
    """After the load: ready, queue drained, and valid requests translated exactly."""
    began = time.monotonic()
    problems: list[str] = []
    while time.monotonic() - began < timeout_s:
        ready = (await client.get("/readyz")).status_code == 200
        depth = queue_depth((await client.get("/metrics")).text)
        if ready and depth == 0:
            break
        await asyncio.sleep(0.2)
    else:
        problems.append(f"not ready with an empty queue after {timeout_s:g}s")
    statuses = Counter()
    for _ in range(requests):
        response = await client.post("/translate", json={"text": MEMORISED[0]})
        statuses[response.status_code] += 1
        if response.status_code == 200 and response.json()["results"][0]["translation"] != MEMORISED[1]:
            problems.append("a recovery request was translated wrongly")
    if statuses != Counter({200: requests}):
        problems.append(f"recovery requests got {dict(statuses)}")
    return {"ok": not problems, "seconds": round(time.monotonic() - began, 2), "problems": problems}


def queue_depth(metrics_text: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics_text.splitlines()
               if line.startswith("model_server_queue_depth{"))


def server_counters(metrics_text: str) -> dict[str, float]:
    wanted = ("model_server_errors_total", "model_server_batch_size_sum", "model_server_batch_size_count")
    totals: Counter = Counter()
    for line in metrics_text.splitlines():
        for name in wanted:
            if line.startswith(name + "{"):
                label = line[len(name) + 1:].split("}", 1)[0] if name == "model_server_errors_total" else ""
                totals[f"{name}{{{label}}}" if label else name] += float(line.rsplit(" ", 1)[1])
    return dict(sorted(totals.items()))


async def run_load(args: argparse.Namespace, base_url: str, api_key: str, pid: int) -> dict:
    headers = {"Authorization": f"Bearer {api_key}"}
    # Idle connections expire before uvicorn's 5 s keep-alive timeout closes them under a request.
    limits = httpx.Limits(max_connections=args.clients + 4, max_keepalive_connections=args.clients + 4,
                          keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=args.request_timeout_s,
                                 limits=limits) as client:
        for _ in range(3):  # warm-up: first calls allocate the model's buffers
            (await client.post("/translate", json={"text": "\n".join(SAMPLE_LINES[:3])})).raise_for_status()
        rss_samples: list[tuple[float, float]] = []
        tally = Tally()
        started = time.monotonic()
        rss_start = rss_mb(pid)

        async def sample_rss() -> None:
            while True:
                value = rss_mb(pid)
                if value is not None:
                    rss_samples.append((round(time.monotonic() - started, 1), value))
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample_rss())
        await asyncio.gather(*(client_loop(n, client, tally, started, args) for n in range(args.clients)))
        load_s = time.monotonic() - started
        recovery = await check_recovery(client, args.recovery_requests)
        sampler.cancel()
        rss_end = rss_mb(pid)
        counters = server_counters((await client.get("/metrics")).text)
    return {"tally": tally, "load_s": load_s, "recovery": recovery, "rss_samples": rss_samples,
            "rss_start": rss_start, "rss_end": rss_end, "server": counters}


def start_server(args: argparse.Namespace, port: int, api_key: str, log_path: Path) -> subprocess.Popen:
    env = {**os.environ, "MODEL_SERVER_PROFILE": "tiny", "MODEL_SERVER_MODELS_DIR": str(args.models_dir),
           "MODEL_SERVER_HOST": "127.0.0.1", "MODEL_SERVER_PORT": str(port),
           "MODEL_SERVER_MAX_QUEUE_SEGMENTS": str(args.max_queue_segments or args.clients),
           "MODEL_SERVER_MAX_TEXTS_PER_REQUEST": str(MAX_TEXTS),
           "MODEL_SERVER_MAX_TEXT_CHARS": str(MAX_TEXT_CHARS), "MODEL_SERVER_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
           "MODEL_SERVER_API_KEYS": f"soak:{api_key}", "MODEL_SERVER_LOG_FORMAT": "json",
           "MODEL_SERVER_LOG_LEVEL": "warning", "MODEL_SERVER_REQUEST_TIMEOUT_S": str(args.server_timeout_s),
           # The tiny model emits garbage up to the token cap: keep decoding cheap, the soak is about the server.
           # (Its every sentence looks suspect, so the quality retry, beam search, is off too.)
           "MODEL_SERVER_NUM_BEAMS": "1", "MODEL_SERVER_MAX_NEW_TOKENS": "32",
           "MODEL_SERVER_RETRY_SUSPECT_SENTENCES": "false",
           # The load generator shares the machine: torch threads spinning on every core slow the model ~10x.
           "MODEL_SERVER_TORCH_THREADS": str(args.torch_threads),
           # The sample lines repeat: with the translation cache on, the model (and the queue) would hardly
           # be used. Off by default; --cache soaks the cached path, in a throw-away SQLite file.
           "MODEL_SERVER_CACHE_ENABLED": "true" if args.cache else "false",
           "MODEL_SERVER_CACHE_PATH": str(log_path.with_suffix(".cache.sqlite3"))}
    if args.rate_limit_rpm:
        env["MODEL_SERVER_RATE_LIMIT_REQUESTS_PER_MINUTE"] = str(args.rate_limit_rpm)
    log = log_path.open("w", encoding="utf-8")
    return subprocess.Popen([sys.executable, "-m", "model_server.cli", "serve"], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)


def wait_ready(base_url: str, proc: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"soak: the server exited during start-up (status {proc.returncode})")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("soak: the server did not become ready")


def logged_errors(log_path: Path) -> list[str]:
    errors = []
    for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                errors.append(line[:300])
            continue
        if isinstance(entry, dict) and entry.get("level") in {"error", "critical"}:
            errors.append(f"{entry.get('logger')}: {entry.get('msg')}"[:300])
    return errors


def summarize(args: argparse.Namespace, result: dict, errors: list[str], exit_status: int | None) -> dict:
    tally: Tally = result["tally"]
    unexpected = {str(s): n for s, n in tally.statuses.items() if s not in EXPECTED_STATUSES}
    rss_values = [value for _, value in result["rss_samples"]] + [v for v in (result["rss_start"],
                                                                             result["rss_end"]) if v]
    growth = (result["rss_end"] or 0) - (result["rss_start"] or 0)
    # Leak signal independent of the first big batches' allocations: median of the last quarter of the run
    # minus median of the second quarter.
    quarter = len(result["rss_samples"]) // 4
    drift = (statistics.median(v for _, v in result["rss_samples"][3 * quarter:])
             - statistics.median(v for _, v in result["rss_samples"][quarter:2 * quarter])) if quarter else None
    failures = []
    if unexpected:
        failures.append(f"unexpected statuses {unexpected}")
    if sum(tally.transport_errors.values()) > args.max_transport_errors:
        failures.append(f"transport errors {dict(tally.transport_errors)}")
    if not result["recovery"]["ok"]:
        failures.append(f"recovery failed: {result['recovery']['problems']}")
    if growth > args.max_rss_growth_mb:
        failures.append(f"RSS grew {growth:.1f} MB (> {args.max_rss_growth_mb} MB)")
    if errors:
        failures.append(f"the server logged {len(errors)} error(s): {errors[:3]}")
    if exit_status not in (0, -signal.SIGTERM):
        failures.append(f"the server exited with status {exit_status} on SIGTERM")
    every = max(1, len(result["rss_samples"]) // 60)
    return {
        "passed": not failures,
        "failures": failures,
        "clients": args.clients,
        "duration_s": args.duration,
        "load_s": round(result["load_s"], 1),
        "requests": sum(tally.statuses.values()),
        "requests_per_s": round(sum(tally.statuses.values()) / max(result["load_s"], 1e-9), 1),
        "by_status": {str(k): v for k, v in sorted(tally.statuses.items())},
        "by_phase": {phase: {str(k): v for k, v in sorted(c.items())} for phase, c in tally.by_phase.items()},
        "by_kind": {kind: {str(k): v for k, v in sorted(c.items())} for kind, c in sorted(tally.by_kind.items())},
        "unexpected_statuses": unexpected,
        "transport_errors": dict(tally.transport_errors),
        "transport_error_samples": tally.transport_error_samples,
        "latency_ms_200": {"all": percentiles([v for vs in tally.latencies_ok.values() for v in vs]),
                           **{phase: percentiles(vs) for phase, vs in tally.latencies_ok.items()}},
        "rss_mb": {"start": result["rss_start"], "end": result["rss_end"], "max": max(rss_values, default=None),
                   "growth": round(growth, 1), "drift_q2_to_q4": None if drift is None else round(drift, 1),
                   "samples": result["rss_samples"][::every]},
        "recovery": result["recovery"],
        "server_metrics": result["server"],
        "server_errors_logged": len(errors),
        "settings": {"max_queue_segments": args.max_queue_segments or args.clients, "max_texts": MAX_TEXTS,
                     "server_timeout_s": args.server_timeout_s, "bulk_share": args.bulk_share,
                     "torch_threads": args.torch_threads, "cache": args.cache,
                     "max_text_chars": MAX_TEXT_CHARS, "max_body_bytes": MAX_BODY_BYTES,
                     "rate_limit_rpm": args.rate_limit_rpm, "max_requests": args.max_requests, "seed": args.seed},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent closed-loop clients (default 64)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    parser.add_argument("--max-requests", type=int, default=500_000, help="stop after this many requests")
    parser.add_argument("--max-queue-segments", type=int, default=0,
                        help="server queue limit (default: one segment per client; the overload phase exceeds it)")
    parser.add_argument("--bulk-share", type=float, default=0.0,
                        help="share of valid requests sent with priority=bulk (default 0: under saturation the "
                        "interactive lane always goes first, so bulk work starves into 504s by design)")
    parser.add_argument("--torch-threads", type=int, default=1, help="server torch threads (default 1)")
    parser.add_argument("--cache", action="store_true", help="turn the translation cache on (default off)")
    parser.add_argument("--rate-limit-rpm", type=int, default=0, help="server requests-per-minute limit (0 = off)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=150.0,
                        help="fail if RSS grows more than this from the end of warm-up to the end")
    parser.add_argument("--max-transport-errors", type=int, default=0, help="tolerated connection-level failures")
    parser.add_argument("--recovery-requests", type=int, default=20,
                        help="sequential valid requests that must all succeed after the load")
    parser.add_argument("--server-timeout-s", type=float, default=120.0, help="server request_timeout_s")
    parser.add_argument("--request-timeout-s", type=float, default=180.0,
                        help="client timeout; above the server's, so a slow request shows as its 504")
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models", help="where the tiny model is (built)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON summary here too")
    parser.add_argument("--server-log", type=Path, default=None, help="keep the server's log here")
    args = parser.parse_args(argv)

    port, api_key = free_port(), secrets.token_urlsafe(24)
    base_url = f"http://127.0.0.1:{port}"
    log_path = args.server_log or Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-server-{port}.log"
    proc = start_server(args, port, api_key, log_path)
    exit_status = None
    try:
        wait_ready(base_url, proc)
        result = asyncio.run(run_load(args, base_url, api_key, proc.pid))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                exit_status = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                exit_status = proc.wait()
        else:
            exit_status = proc.returncode
    errors = logged_errors(log_path)
    summary = summarize(args, result, errors, exit_status)
    summary["server_log"] = str(log_path)
    text = json.dumps(summary, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
