"""Online load: a server as a subprocess, and an asyncio + aiohttp closed-loop load generator.

Each level has N clients. Every client first sends `warmup` unrecorded requests; once all clients have
finished warming up (a barrier), they start together and each sends `requests` recorded requests back
to back (or keeps sending until `duration_s` has passed). Throughput = recorded requests (segments,
target tokens) / span from the common start to the last response. Latency = per request, send to
response parsed, monotonic clock.

The load generator runs on the same machine as the server, so its own CPU per request counts: aiohttp,
not httpx, because httpx's connection pool cost 12-19 ms of CPU per request at 64 concurrent connections
(measured on the 2-core CPU; `client_cpu_ms_per_request` in each level), taken from the cores the server
needs exactly when a batch's answers go out and its clients send their next requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import aiohttp
import httpx

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]


def process_cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads) from /proc; None where unavailable."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def process_memory(pid: int | None) -> dict[str, float | None]:
    """Peak and current resident memory of a process in MiB (VmHWM, VmRSS from /proc; None elsewhere).

    Read after a server's last load level, the peak covers loading and every batch it ran.
    """
    out: dict[str, float | None] = {"peak_rss_mib": None, "rss_mib": None}
    if pid is None:
        return out
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):  # "  123456 kB"
            out["peak_rss_mib" if key == "VmHWM" else "rss_mib"] = round(int(value.split()[0]) / 1024, 1)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server subprocess whose output goes to a log file; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str], port: int, log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ServerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.spawned = time.monotonic()
        return self

    def wait_ready(self, timeout_s: float) -> float:
        """Poll /readyz until it answers 200; returns seconds since the process was started."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - self.spawned
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} server not ready after {timeout_s:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __exit__(self, *exc) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log.warning("%s server ignored SIGTERM for 60s; killing it", self.name)
                proc.kill()
                proc.wait(timeout=30)
        self._log.close()


def service_server(env_settings: dict[str, str], port: int, log_path: Path, *, name: str = "service",
                   module_argv: Sequence[str] = ("model_server.cli", "serve")) -> ServerProcess:
    """`model-server serve` configured only through MODEL_SERVER_* variables, as in production;
    `module_argv` runs another module the same way (`python -m ...`: the worker, the scale stand-in)."""
    env = {**os.environ, **env_settings, "MODEL_SERVER_PORT": str(port), "MODEL_SERVER_HOST": "127.0.0.1"}
    return ServerProcess(name, [sys.executable, "-m", *module_argv], env=env, port=port, log_path=log_path)


def naive_server(args: Sequence[str], port: int, log_path: Path, *, name: str = "naive") -> ServerProcess:
    argv = [sys.executable, "-m", "benchmarks.naive_server", "--port", str(port), *args]
    return ServerProcess(name, argv, env=dict(os.environ), port=port, log_path=log_path)


LIMIT_KEYS = ("max_batch_size", "max_batch_hypotheses", "max_batch_tokens", "limits_source", "tuning")


def batching_limits(base_url: str) -> dict[str, Any] | None:
    """The service's translation batch limits, per limit where it came from ("settings", "tuning" or
    "defaults") and the tuning entry used, from /v1/models; None where it cannot be read."""
    try:
        batching = httpx.get(f"{base_url}/v1/models", timeout=30).json()["batching"]["translation"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None
    return {key: batching.get(key) for key in LIMIT_KEYS}


# ---------------------------------------------------------------------------------------------
# Load generator
# ---------------------------------------------------------------------------------------------


@dataclass
class Record:
    client: int
    start: float
    end: float
    status: int
    segments: int = 0
    tokens: int = 0
    server_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    @property
    def latency_s(self) -> float:
        return self.end - self.start


# Parses a 200 response body into (segments, target tokens, server-side timings in ms).
ResponseParser = Callable[[dict[str, Any]], tuple[int, int, dict[str, float]]]


def service_parser(decode_tokens: int) -> ResponseParser:
    """The service does not return token counts; with forced decode lengths every segment produces
    exactly `decode_tokens` tokens (checked offline), so tokens = segments x decode_tokens."""

    def parse(body: dict[str, Any]) -> tuple[int, int, dict[str, float]]:
        segments = 0
        for result in body["results"]:
            if result.get("error"):
                raise ValueError(f"text failed: {result['error']}")
            segments += sum(sentence.get("chunks", 1) for sentence in result["sentences"])
        return segments, segments * decode_tokens, dict(body.get("timing_ms") or {})

    return parse


def naive_parser(body: dict[str, Any]) -> tuple[int, int, dict[str, float]]:
    return int(body["segments"]), int(body["generated_tokens"]), dict(body.get("timing_ms") or {})


async def _one_request(client: aiohttp.ClientSession, url: str, payload: dict[str, Any], index: int,
                       parse: ResponseParser) -> Record:
    start = time.perf_counter()
    try:
        async with client.post(url, json=payload) as response:
            status = response.status
            body = await response.json(content_type=None)
        end = time.perf_counter()
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
        return Record(index, start, time.perf_counter(), 0, error=f"{type(exc).__name__}: {exc}")
    if status != 200:
        return Record(index, start, end, status, error=str(body)[:300])
    try:
        segments, tokens, server_ms = parse(body)
    except (KeyError, TypeError, ValueError) as exc:
        return Record(index, start, end, status, error=f"bad response: {exc}")
    return Record(index, start, end, 200, segments, tokens, server_ms)


async def _batcher_stats(client: aiohttp.ClientSession, base_url: str) -> dict[str, Any] | None:
    """The service's batcher counters (/v1/models); None for a server without them (naive)."""
    try:
        async with client.get(f"{base_url}/v1/models") as response:
            body = await response.json(content_type=None)
        return dict(body["batching"]["translation"])
    except (aiohttp.ClientError, asyncio.TimeoutError, KeyError, TypeError, ValueError):
        return None


async def _run_level(base_urls: Sequence[str], payloads: Sequence[dict[str, Any]], parse: ResponseParser, *,
                     concurrency: int, warmup: int, requests: int, duration_s: float | None,
                     timeout_s: float, stats: bool, server_pid: int | None
                     ) -> tuple[list[Record], float, float, dict | None, dict | None, float, float | None]:
    urls = [f"{base_url}/translate" for base_url in base_urls]
    base_url = base_urls[0]  # batcher stats: only asked for with one server
    # keepalive_timeout below uvicorn's 5 s keep-alive timeout: a connection idle for a whole batch is
    # closed by the client instead of being reused just as the server closes it (a dropped request).
    connector = aiohttp.TCPConnector(limit=concurrency * len(urls), keepalive_timeout=2.0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
        def payload_for(index: int, k: int) -> dict[str, Any]:
            # Deterministic and spread: round k of client i sends payload (i + k*N) mod len.
            return payloads[(index + k * concurrency) % len(payloads)]

        def url_for(index: int, k: int) -> str:
            # Several servers (replicas, no load balancer): round robin over them, per client and request.
            return urls[(index + k) % len(urls)]

        async def warm(index: int) -> None:
            for k in range(warmup):
                await _one_request(client, url_for(index, k), payload_for(index, k), index, parse)

        await asyncio.gather(*(warm(i) for i in range(concurrency)))
        stats_before = await _batcher_stats(client, base_url) if stats else None

        records: list[Record] = []
        server_cpu_started = process_cpu_s(server_pid)
        cpu_started = time.process_time()
        started = time.perf_counter()
        deadline = started + duration_s if duration_s else None

        async def measure(index: int) -> None:
            k = warmup
            while True:
                if deadline is None and k - warmup >= requests:
                    return
                if deadline is not None and time.perf_counter() >= deadline:
                    return
                records.append(await _one_request(client, url_for(index, k), payload_for(index, k), index, parse))
                k += 1

        await asyncio.gather(*(measure(i) for i in range(concurrency)))
        finished = time.perf_counter()
        client_cpu_s = time.process_time() - cpu_started
        server_cpu_ended = process_cpu_s(server_pid)
        server_cpu_s = (server_cpu_ended - server_cpu_started
                        if server_cpu_started is not None and server_cpu_ended is not None else None)
        stats_after = await _batcher_stats(client, base_url) if stats else None
    return records, started, finished, stats_before, stats_after, client_cpu_s, server_cpu_s


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(records: Sequence[Record], started: float, finished: float) -> dict[str, Any]:
    ok = [r for r in records if r.status == 200 and r.error is None]
    errors = [r for r in records if r not in ok]
    span = max((r.end for r in records), default=finished) - started
    latencies_ms = [r.latency_s * 1000 for r in ok]
    out: dict[str, Any] = {
        "requests": len(records), "ok": len(ok), "errors": len(errors),
        "first_error": errors[0].error if errors else None,
        "span_s": round(span, 4),
        "requests_per_s": round(len(ok) / span, 4) if span > 0 else 0.0,
        "segments_per_s": round(sum(r.segments for r in ok) / span, 4) if span > 0 else 0.0,
        "target_tokens_per_s": round(sum(r.tokens for r in ok) / span, 3) if span > 0 else 0.0,
        "segments": sum(r.segments for r in ok),
    }
    if latencies_ms:
        out.update({f"latency_{name}_ms": round(_percentile(latencies_ms, q), 3)
                    for name, q in (("p50", 50), ("p95", 95), ("p99", 99))})
        out["latency_mean_ms"] = round(statistics.fmean(latencies_ms), 3)
        out["latency_max_ms"] = round(max(latencies_ms), 3)
        keys = sorted({key for r in ok for key in r.server_ms})
        out["server_timing_median_ms"] = {
            key: round(statistics.median(r.server_ms[key] for r in ok if key in r.server_ms), 3) for key in keys}
    return out


def run_level(base_url: str | Sequence[str], payloads: Sequence[dict[str, Any]], parse: ResponseParser, *,
              concurrency: int, warmup: int, requests: int, duration_s: float | None, timeout_s: float,
              batcher_stats: bool = False, server_pid: int | None = None) -> dict[str, Any]:
    """One load level; with batcher_stats, also the service's batch counters over the measured phase; with
    server_pid, the server process's CPU time over it. Several base URLs (API replicas): the requests go
    round robin over them (batcher stats and server CPU are then not asked for)."""
    base_urls = [base_url] if isinstance(base_url, str) else list(base_url)
    if not base_urls or (len(base_urls) > 1 and (batcher_stats or server_pid is not None)):
        raise ValueError("run_level: one base URL for batcher_stats/server_pid, at least one in any case")
    records, started, finished, before, after, client_cpu_s, server_cpu_s = asyncio.run(_run_level(
        base_urls, payloads, parse, concurrency=concurrency, warmup=warmup, requests=requests,
        duration_s=duration_s, timeout_s=timeout_s, stats=batcher_stats, server_pid=server_pid))
    summary = {"concurrency": concurrency, **summarize(records, started, finished)}
    # The load generator's own CPU per measured request (this whole process): when it nears the time
    # per request the server achieves, the client, not the server, limits the level.
    summary["client_cpu_ms_per_request"] = round(client_cpu_s * 1000 / max(len(records), 1), 3)
    if server_cpu_s is not None:
        # /proc counts CPU in clock ticks (10 ms): a level shorter than a tick can read 0 (no ratio then).
        summary["server_cpu_s"] = round(server_cpu_s, 3)
        if server_cpu_s > 0:
            summary["segments_per_server_cpu_s"] = round(summary["segments"] / server_cpu_s, 4)
    batching = _stats_delta(before, after, finished - started)
    if batching is not None:
        summary["batching"] = batching
    return summary


def _stats_delta(before: dict[str, Any] | None, after: dict[str, Any] | None, span_s: float) -> dict[str, Any] | None:
    if not before or not after:
        return None
    batches = after["batches"] - before["batches"]
    segments = after["segments"] - before["segments"]
    busy = after["busy_s"] - before["busy_s"]
    parallel = after.get("parallel_batches", 1)  # batch-seconds add up over the batches running at once
    return {"batches": batches, "segments": segments, "parallel_batches": parallel,
            "mean_batch_size": round(segments / batches, 3) if batches else 0.0,
            "padded_tokens": after["padded_tokens"] - before["padded_tokens"],
            "model_busy_s": round(busy, 4),
            # Share of the measured span each batch slot (model thread) was running a batch: < 1 means idle gaps.
            "model_utilization": round(busy / parallel / span_s, 4) if span_s > 0 else 0.0,
            "splits": after["splits"] - before["splits"],
            "rejected_full": after["rejected_full"] - before["rejected_full"]}
