"""Scale benchmark: API replicas and workers on one Redis, a bulk backlog and interactive requests.

    python -m benchmarks.scale                     # stand-in and tiny model, ~3 minutes on 2 cores
    python -m benchmarks.scale --quick             # smoke run (tests/test_benchmark_scale.py)

Per model, real processes on loopback: a redis-server (tests/redis_server.py), two `model-server serve` API
replicas with MODEL_SERVER_STATE_URL (the clients send round robin over them: no load balancer) and one,
then two `model-server worker` processes. Models: `standin` (benchmarks/standin.py: the real serve/worker
code around a backend that sleeps per batch and per segment under a per-process lock, so it costs no CPU and
what two processes gain over one measures the system, not the 2 cores) and `tiny` (the repo's tiny test
model, really computed on the CPU). Phases, in this order:

1. bulk, 1 worker: a backlog of jobs (POST /v1/jobs) drained; texts/s = texts / (first submit -> last job's
   finished_at), plus the CPU each process spent per text;
2. bulk, 2 workers: a second worker is started and the same backlog drained again;
3. interactive, 1 replica then 2 replicas: closed-loop clients on POST /translate (single sentences of the
   sample article) for a fixed time: requests/s, p50/p99;
4. interactive, 2 replicas, while a fresh backlog (sized from phase 2 to outlast the window) drains on the 2
   workers; the backlog left is cancelled afterwards.

Targets (on the stand-in): 2 workers >= 1.8x one worker's bulk texts/s; interactive p99 with the backlog
draining <= 1.2x the p99 of phase 3's 2 replicas without it. The tiny model's ratios are reported too: there
the replicas, the workers and the clients share the same 2 cores.

Writes <out>/<UTC timestamp>-scale-<models>.json (every number, the settings each process got, machine and
CPU flags, command, git) and a .md table (also printed). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import httpx

from benchmarks import machine, online
from benchmarks.models import TINY, resolve_model
from benchmarks.report import _fmt, _table, ratio, run_lines
from benchmarks.run import HelpFormatter  # the same help style as the main harness
from benchmarks.workload import load_workload

log = logging.getLogger("benchmarks.scale")

MODELS = ("standin", "tiny")
TERMINAL = {"done", "failed", "cancelled", "expired"}
# (name, description, model, threshold, direction)
TARGETS = (
    ("workers_2_over_1", "bulk texts/s, 2 workers / 1 worker", "standin", 1.8, ">="),
    ("backlog_p99_over_idle_p99", "interactive p99 with a bulk backlog draining / without it (2 replicas)",
     "standin", 1.2, "<="),
)
INFO_RATIOS = (
    ("replicas_2_over_1", "interactive requests/s, 2 replicas / 1 replica"),
    ("backlog_p50_over_idle_p50", "interactive p50 with a bulk backlog draining / without it (2 replicas)"),
)

DEFAULTS = dict(models="standin,tiny", clients=8, duration_s=15.0, warmup_requests=2, backlog_jobs=60,
                texts_per_job=32, chunk_texts=8, worker_chunks=4, standin_batch_ms=20.0, standin_segment_ms=4.0,
                decode_tokens=16, torch_threads=1, backlog_margin=2.0)
# --quick: a smoke run of well under a minute (any value given explicitly still wins).
QUICK = dict(clients=4, duration_s=1.5, warmup_requests=1, backlog_jobs=4, texts_per_job=16, backlog_margin=1.5)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--models", help=f"comma-separated, from {', '.join(MODELS)} [{DEFAULTS['models']}]")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where the tiny model is (built once)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="device of every replica and worker")
    p.add_argument("--clients", type=int, help=f"closed-loop interactive clients [{DEFAULTS['clients']}]")
    p.add_argument("--duration-s", type=float, help=f"measured time per interactive level [{DEFAULTS['duration_s']}]")
    p.add_argument("--warmup-requests", type=int,
                   help=f"unrecorded requests per client before each interactive level [{DEFAULTS['warmup_requests']}]")
    p.add_argument("--backlog-jobs", type=int, help=f"jobs in each bulk backlog [{DEFAULTS['backlog_jobs']}]")
    p.add_argument("--texts-per-job", type=int,
                   help=f"texts (sentences of the sample article, cycled) per job [{DEFAULTS['texts_per_job']}]")
    p.add_argument("--chunk-texts", type=int, help=f"the service's jobs_chunk_texts [{DEFAULTS['chunk_texts']}]")
    p.add_argument("--worker-chunks", type=int,
                   help=f"the service's jobs_worker_concurrent_chunks [{DEFAULTS['worker_chunks']}]")
    p.add_argument("--standin-batch-ms", type=float, help=f"stand-in sleep per batch [{DEFAULTS['standin_batch_ms']}]")
    p.add_argument("--standin-segment-ms", type=float,
                   help=f"stand-in sleep per segment [{DEFAULTS['standin_segment_ms']}]")
    p.add_argument("--decode-tokens", type=int,
                   help=f"tiny model: every segment decodes exactly this many tokens, greedy [{DEFAULTS['decode_tokens']}]")
    p.add_argument("--torch-threads", type=int, help=f"torch threads of every process [{DEFAULTS['torch_threads']}]")
    p.add_argument("--backlog-margin", type=float,
                   help="the backlog drained during the interactive window holds this many windows' worth of "
                        f"texts at phase 2's rate [{DEFAULTS['backlog_margin']}]")
    p.add_argument("--server-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="any other setting of every replica and worker, repeatable")
    p.add_argument("--request-timeout-s", type=float, default=120.0, help="client timeout per request")
    p.add_argument("--drain-timeout-s", type=float, default=600.0, help="most time a backlog may take")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results directory")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    return p


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    for key, value in {**DEFAULTS, **(QUICK if args.quick else {})}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    if not args.models or any(name not in MODELS for name in args.models) or len(set(args.models)) != len(args.models):
        raise SystemExit(f"benchmarks.scale: --models: expected distinct names from {', '.join(MODELS)}")
    for name in ("clients", "backlog_jobs", "texts_per_job", "chunk_texts", "worker_chunks", "decode_tokens",
                 "torch_threads"):
        if getattr(args, name) < 1:
            raise SystemExit(f"benchmarks.scale: --{name.replace('_', '-')} must be at least 1")
    if args.duration_s <= 0 or args.backlog_margin < 1 or args.warmup_requests < 0 or \
            args.standin_batch_ms < 0 or args.standin_segment_ms < 0:
        raise SystemExit("benchmarks.scale: --duration-s must be > 0, --backlog-margin >= 1, the others >= 0")
    return args


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def process_settings(args, model_path: Path, redis_url: str, work_dir: Path) -> dict[str, Any]:
    """What every replica and worker gets (as MODEL_SERVER_* variables): the shared state Redis, the model,
    a fixed decode (greedy, exactly --decode-tokens tokens; the benchmark-only min_new_tokens), and the three
    features that would skip or add model work switched off, as in benchmarks.run (cache, quality retry,
    summarization). Job chunking and worker concurrency are the service's settings (defaults unless given)."""
    values: dict[str, Any] = dict(
        state_url=redis_url, translation_model=str(model_path), models_dir=str(args.models_dir), device=args.device,
        dtype="float32" if args.device == "cpu" else "auto", num_beams=1, max_new_tokens=args.decode_tokens,
        min_new_tokens=args.decode_tokens, torch_threads=args.torch_threads, cache_enabled=False,
        retry_suspect_sentences=False, summarization_enabled=False, tuning_file=str(work_dir / "tuning.json"),
        jobs_chunk_texts=args.chunk_texts, jobs_worker_concurrent_chunks=args.worker_chunks, log_level="warning",
        worker_health_port=0)  # several workers on one host: no fixed health port (nothing probes them here)
    for item in args.server_setting:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--server-setting {item!r}: expected NAME=VALUE")
        values[name.strip().lower().removeprefix("model_server_")] = value
    return values


def _env(values: dict[str, Any]) -> dict[str, str]:
    return {f"MODEL_SERVER_{name.upper()}": str(value) for name, value in values.items() if value is not None}


def module_argv(args, model: str, command: str) -> list[str]:
    """`python -m` arguments of a replica (`serve`) or worker (`worker`) of `model`."""
    if model == "standin":
        return ["benchmarks.standin", command, "--batch-ms", f"{args.standin_batch_ms:g}",
                "--segment-ms", f"{args.standin_segment_ms:g}"]
    return ["model_server.cli", command]


class Cluster:
    """One model's processes: Redis, two API replicas, workers started on demand; all stopped on exit."""

    def __init__(self, args, model: str, model_path: Path, stack: contextlib.ExitStack, work_dir: Path) -> None:
        from tests.redis_server import RedisServer

        self.args, self.model, self.work_dir, self.stack = args, model, work_dir, stack
        self.redis = RedisServer()
        self.redis.start()
        stack.callback(self.redis.close)
        self.settings = process_settings(args, model_path, self.redis.url, work_dir)
        self.replicas: list[online.ServerProcess] = []
        self.workers: list[online.ServerProcess] = []
        self.ready_s: dict[str, float] = {}

    def _launch(self, command: str) -> online.ServerProcess:
        """Start a replica (`serve`) or a worker (`worker`; log_level info: it says "worker ready" once it
        consumes, having no HTTP port to poll); `wait_ready` waits for it."""
        group = self.replicas if command == "serve" else self.workers
        name = f"{self.model}-{'replica' if command == 'serve' else 'worker'}-{len(group) + 1}"
        (self.work_dir / name).mkdir(parents=True, exist_ok=True)
        values = {**self.settings, "state_path": str(self.work_dir / name / "state.sqlite3"),
                  **({} if command == "serve" else {"log_level": "info"})}
        process = online.service_server(_env(values), online.free_port() if command == "serve" else 0,
                                        self.work_dir / f"{name}.log", name=name,
                                        module_argv=module_argv(self.args, self.model, command))
        group.append(self.stack.enter_context(process))
        return process

    def start(self, *, replicas: int = 0, workers: int = 0) -> None:
        """Start processes at once (they load in parallel), then wait until each one is ready."""
        launched = [self._launch("serve") for _ in range(replicas)] + [self._launch("worker") for _ in range(workers)]
        for process in launched:
            ready_s = process.wait_ready(timeout_s=300) if process in self.replicas else \
                wait_logged(process, "worker ready", timeout_s=300)
            self.ready_s[process.name] = round(ready_s, 2)

    @property
    def urls(self) -> list[str]:
        return [replica.base_url for replica in self.replicas]

    def pids(self) -> dict[str, int | None]:
        out = {process.name: process.proc.pid if process.proc else None for process in self.replicas + self.workers}
        out["redis"] = self.redis.process.pid if self.redis.process else None
        return out


def wait_logged(process: online.ServerProcess, text: str, timeout_s: float) -> float:
    """Wait until `text` appears in the process's log; seconds since it was started."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.proc is not None and process.proc.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.proc.returncode}:\n{process.log_tail()}")
        if text in process.log_path.read_text(encoding="utf-8", errors="replace"):
            return time.monotonic() - process.spawned
        time.sleep(0.2)
    raise RuntimeError(f"{process.name}: no {text!r} after {timeout_s:g}s:\n{process.log_tail()}")


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float | None]:
    return {name: online.process_cpu_s(pid) for name, pid in pids.items()}


def cpu_ms_per(before: dict[str, float | None], after: dict[str, float | None], count: int) -> dict[str, Any]:
    """CPU ms per text (or request) of each process, and of the replicas, the workers and Redis as groups."""
    spent = {name: after[name] - before[name] for name in before
             if before[name] is not None and after.get(name) is not None}
    groups = {"replicas": [v for k, v in spent.items() if "-replica-" in k],
              "workers": [v for k, v in spent.items() if "-worker-" in k], "redis": [spent.get("redis")]}
    per = {group: round(sum(values) * 1000 / count, 3) if count and values and None not in values else None
           for group, values in groups.items()}
    return {**per, "per_process": {name: round(value * 1000 / count, 3) if count else None
                                   for name, value in spent.items()}}


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


def job_texts(sentences: Sequence[str], job: int, count: int) -> list[str]:
    """The sample article's sentences, cycled, starting one further per job (no two jobs alike)."""
    return [sentences[(job + i) % len(sentences)] for i in range(count)]


def submit_backlog(client: httpx.Client, urls: Sequence[str], sentences: Sequence[str], jobs: int,
                   texts_per_job: int, first: int = 0) -> list[str]:
    """POST `jobs` jobs, round robin over the replicas; their ids in submission order."""
    ids = []
    for n in range(jobs):
        response = client.post(f"{urls[n % len(urls)]}/v1/jobs",
                               json={"texts": job_texts(sentences, first + n, texts_per_job)})
        if response.status_code != 202:
            raise RuntimeError(f"job submission answered {response.status_code}: {response.text[:300]}")
        ids.append(response.json()["id"])
    return ids


def wait_finished(client: httpx.Client, urls: Sequence[str], ids: Sequence[str], timeout_s: float,
                  poll_s: float = 0.1) -> list[dict[str, Any]]:
    """Each job's final view, waited for in submission order (the queue is FIFO: one GET per poll)."""
    deadline, views = time.monotonic() + timeout_s, []
    for n, job_id in enumerate(ids):
        while True:
            view = client.get(f"{urls[n % len(urls)]}/v1/jobs/{job_id}").json()
            if view.get("status") in TERMINAL:
                views.append(view)
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} still {view.get('status')} after {timeout_s:g}s")
            time.sleep(poll_s)
    return views


def job_progress(client: httpx.Client, url: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """id -> view without result, for the given ids, from the caller's job list (pages of 100)."""
    wanted, found, cursor = set(ids), {}, None
    while wanted - set(found):
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"{url}/v1/jobs", params=params).json()
        found.update({job["id"]: job for job in page["jobs"] if job["id"] in wanted})
        cursor = page.get("next_cursor")
        if not cursor:
            break
    return found


def failed_texts(views: Sequence[dict[str, Any]]) -> int:
    return sum(1 for view in views for result in ((view.get("result") or {}).get("results") or [])
               if result.get("error")) + sum(view["progress"]["total"] for view in views if view["status"] != "done")


def bulk_phase(cluster: Cluster, client: httpx.Client, sentences: Sequence[str], *, first_job: int) -> dict[str, Any]:
    """A backlog drained by the cluster's current workers: texts/s from the first submission to the last
    job's finished_at (the servers' clock: same machine), and the CPU each process spent per text."""
    args = cluster.args
    warm = submit_backlog(client, cluster.urls, sentences, len(cluster.workers), args.chunk_texts * args.worker_chunks,
                          first=first_job)
    wait_finished(client, cluster.urls, warm, args.drain_timeout_s)  # the workers' first batches, unrecorded
    cpu_before = cpu_seconds(cluster.pids())
    started = time.time()
    ids = submit_backlog(client, cluster.urls, sentences, args.backlog_jobs, args.texts_per_job,
                         first=first_job + len(warm))
    submitted_s = time.time() - started
    views = wait_finished(client, cluster.urls, ids, args.drain_timeout_s)
    cpu_after = cpu_seconds(cluster.pids())
    texts = args.backlog_jobs * args.texts_per_job
    span = max(view["finished_at"] for view in views) - started
    return {"workers": len(cluster.workers), "replicas": len(cluster.replicas), "jobs": len(ids), "texts": texts,
            "submit_s": round(submitted_s, 3), "span_s": round(span, 3),
            "texts_per_s": round(texts / span, 2) if span > 0 else None,
            "failed_texts": failed_texts(views), "statuses": sorted({view["status"] for view in views}),
            "sample_translation": ((views[0].get("result") or {}).get("results") or [{}])[0].get("translation"),
            "cpu_ms_per_text": cpu_ms_per(cpu_before, cpu_after, texts)}


def interactive_phase(cluster: Cluster, replicas: int, sentences: Sequence[str]) -> dict[str, Any]:
    """Closed-loop clients on /translate, round robin over the first `replicas` replicas, for --duration-s."""
    args = cluster.args
    cpu_before = cpu_seconds(cluster.pids())
    level = online.run_level(cluster.urls[:replicas], [{"text": s} for s in sentences],
                             online.service_parser(args.decode_tokens), concurrency=args.clients,
                             warmup=args.warmup_requests, requests=0, duration_s=args.duration_s,
                             timeout_s=args.request_timeout_s)
    level["cpu_ms_per_request"] = cpu_ms_per(cpu_before, cpu_seconds(cluster.pids()), level["requests"])
    return {"replicas": replicas, "workers": len(cluster.workers), "backlog": False, **level}


def interactive_with_backlog(cluster: Cluster, client: httpx.Client, sentences: Sequence[str], bulk_rate: float,
                             *, first_job: int) -> dict[str, Any]:
    """Phase 4: a backlog worth --backlog-margin windows at the bulk rate measured with the same workers is
    submitted, then the interactive level runs while it drains; what is left is cancelled afterwards."""
    args = cluster.args
    jobs = max(1, math.ceil((bulk_rate or 0) * args.duration_s * args.backlog_margin / args.texts_per_job))
    ids = submit_backlog(client, cluster.urls, sentences, jobs, args.texts_per_job, first=first_job)
    done_before = sum(v["progress"]["done"] for v in job_progress(client, cluster.urls[0], ids).values())
    window_started = time.monotonic()
    level = interactive_phase(cluster, len(cluster.replicas), sentences)
    window_s = time.monotonic() - window_started
    progress = job_progress(client, cluster.urls[0], ids)
    done_after = sum(v["progress"]["done"] for v in progress.values())
    left = [job_id for job_id, view in progress.items() if view["status"] not in TERMINAL]
    for job_id in left:  # not needed any more: the workers skip cancelled jobs' chunks
        client.delete(f"{cluster.urls[0]}/v1/jobs/{job_id}")
    level.update(backlog=True, backlog_jobs=jobs, backlog_texts=jobs * args.texts_per_job,
                 backlog_texts_done_in_window=done_after - done_before,
                 backlog_texts_per_s_in_window=round((done_after - done_before) / window_s, 2),
                 # False: the backlog ran dry before the window ended (then raise --backlog-margin).
                 backlog_outlasted_window=bool(left))
    return level


def probe(client: httpx.Client, urls: Sequence[str], sentence: str) -> list[dict[str, Any]]:
    """One /translate per replica: what answers (the stand-in says so in its model info)."""
    out = []
    for url in urls:
        body = client.post(f"{url}/translate", json={"text": sentence}).json()
        out.append({"url": url, "translation": body["results"][0].get("translation"),
                    "standin": body["model"]["extra"].get("standin")})
    return out


def run_model(args, model: str, model_path: Path, sentences: Sequence[str], work_dir: Path) -> dict[str, Any]:
    with contextlib.ExitStack() as stack, httpx.Client(timeout=args.request_timeout_s) as client:
        cluster = Cluster(args, model, model_path, stack, work_dir / model)
        log.info("%s: starting redis, 2 API replicas and 1 worker", model)
        cluster.start(replicas=2, workers=1)
        out: dict[str, Any] = {"settings": cluster.settings, "probe": probe(client, cluster.urls, sentences[0]),
                               "bulk": [], "interactive": []}
        if model == "standin":
            out["standin"] = {"batch_ms": args.standin_batch_ms, "segment_ms": args.standin_segment_ms}
        job = 0
        for workers in (1, 2):
            if workers == 2:
                cluster.start(workers=1)
            out["bulk"].append(bulk_phase(cluster, client, sentences, first_job=job))
            job += args.backlog_jobs + workers
            _log_bulk(model, out["bulk"][-1])
        for replicas in (1, 2):
            out["interactive"].append(interactive_phase(cluster, replicas, sentences))
            _log_interactive(model, out["interactive"][-1])
        out["interactive"].append(interactive_with_backlog(cluster, client, sentences, out["bulk"][-1]["texts_per_s"],
                                                           first_job=job))
        _log_interactive(model, out["interactive"][-1])
        out["ready_s"] = cluster.ready_s
        out["memory"] = {process.name: online.process_memory(process.proc.pid if process.proc else None)
                         for process in cluster.replicas + cluster.workers}
    return out


def _log_bulk(model: str, row: dict[str, Any]) -> None:
    log.info("%s bulk, %d worker(s): %d texts in %.2f s = %.1f texts/s, %d failed", model, row["workers"],
             row["texts"], row["span_s"], row["texts_per_s"] or 0, row["failed_texts"])


def _log_interactive(model: str, row: dict[str, Any]) -> None:
    log.info("%s interactive, %d replica(s)%s: %.1f req/s p50 %.1f ms p99 %.1f ms, %d errors", model,
             row["replicas"], ", backlog draining" if row["backlog"] else "", row["requests_per_s"],
             row.get("latency_p50_ms") or 0, row.get("latency_p99_ms") or 0, row["errors"])


# ---------------------------------------------------------------------------------------------
# Ratios, targets, report
# ---------------------------------------------------------------------------------------------


def compute_ratios(model_results: dict[str, Any]) -> dict[str, float | None]:
    bulk = {row["workers"]: row for row in model_results["bulk"]}
    idle = {row["replicas"]: row for row in model_results["interactive"] if not row["backlog"]}
    busy = next((row for row in model_results["interactive"] if row["backlog"]), {})
    return {"workers_2_over_1": ratio(bulk.get(2, {}).get("texts_per_s"), bulk.get(1, {}).get("texts_per_s")),
            "replicas_2_over_1": ratio(idle.get(2, {}).get("requests_per_s"), idle.get(1, {}).get("requests_per_s")),
            "backlog_p99_over_idle_p99": ratio(busy.get("latency_p99_ms"), idle.get(2, {}).get("latency_p99_ms")),
            "backlog_p50_over_idle_p50": ratio(busy.get("latency_p50_ms"), idle.get(2, {}).get("latency_p50_ms"))}


def evaluate_targets(ratios: dict[str, dict[str, float | None]]) -> list[dict[str, Any]]:
    out = []
    for name, description, model, threshold, direction in TARGETS:
        value = (ratios.get(model) or {}).get(name)
        met = None if value is None else (value >= threshold if direction == ">=" else value <= threshold)
        out.append({"name": name, "description": description, "model": model, "value": value,
                    "target": f"{direction} {threshold:g}", "met": met})
    return out


def render_markdown(results: dict[str, Any]) -> str:
    meta, opts = results["meta"], results["options"]
    info = meta["machine"]
    flags = " ".join(name for name, present in meta["hardware"]["flags"].items() if present) or "none reported"
    lines = [
        "# model_server scale benchmark: API replicas and workers on one Redis", "",
        f"- machine: {info['cpu_model']}, {info['cpus_usable']} usable CPUs, {info['memory_gib']} GiB; CPU flags: "
        f"{flags} (from {meta['hardware']['flags_source']}); python {info['python']}, torch {info['torch']}",
        f"- every replica and worker: device {opts['device']}, {opts['torch_threads']} torch thread(s), greedy, "
        f"exactly {opts['decode_tokens']} tokens per segment (tiny model), jobs_chunk_texts {opts['chunk_texts']}, "
        f"jobs_worker_concurrent_chunks {opts['worker_chunks']}, cache and quality retry off",
        f"- stand-in model: sleeps {opts['standin_batch_ms']:g} ms per batch + {opts['standin_segment_ms']:g} ms "
        "per segment under a per-process lock (benchmarks/standin.py; no CPU); tiny: the repo's tiny test model",
        f"- bulk: {opts['backlog_jobs']} jobs x {opts['texts_per_job']} texts; interactive: {opts['clients']} "
        f"closed-loop clients, single sentences, {opts['duration_s']:g} s per level, round robin over the replicas",
        *run_lines(meta), "",
        "## Bulk: a backlog of /v1/jobs drained by the workers", ""]
    rows = [[model, row["workers"], row["texts"], row["span_s"], row["texts_per_s"], row["failed_texts"],
             *(_fmt(row["cpu_ms_per_text"][group], 2) for group in ("workers", "redis", "replicas"))]
            for model, section in results["models"].items() for row in section["bulk"]]
    lines += _table(["model", "workers", "texts", "span s", "texts/s", "failed texts", "worker CPU ms/text",
                     "redis CPU ms/text", "replica CPU ms/text"], rows, left=1)
    lines += ["", "Span: first submission to the last job's finished_at. CPU: all processes of the group.", "",
              "## Interactive: POST /translate, closed-loop clients", ""]
    rows = [[model, row["replicas"], row["workers"],
             f"draining ({row['backlog_texts_per_s_in_window']:,.1f} texts/s)" if row["backlog"] else "none",
             row["ok"], row["requests_per_s"], row.get("latency_p50_ms"), row.get("latency_p99_ms"), row["errors"],
             _fmt(row["cpu_ms_per_request"]["replicas"], 2)]
            for model, section in results["models"].items() for row in section["interactive"]]
    lines += _table(["model", "replicas", "workers", "bulk backlog", "requests", "req/s", "p50 ms", "p99 ms",
                     "errors", "replica CPU ms/request"], rows, left=1)
    dry = [model for model, section in results["models"].items()
           for row in section["interactive"] if row["backlog"] and not row["backlog_outlasted_window"]]
    if dry:
        lines += ["", f"**The backlog ran dry before the window ended ({', '.join(dry)}): raise --backlog-margin.**"]
    lines += ["", "## Ratios and targets", "", "| ratio | model | value | target | met |", "|---|---|---:|---:|---:|"]
    for target in results["targets"]:
        lines.append(f"| {target['description']} | {target['model']} | {_fmt(target['value'], 3)} | "
                     f"{target['target']} | {({True: 'yes', False: '**NO**', None: '-'})[target['met']]} |")
    targeted = {(t["name"], t["model"]) for t in results["targets"]}
    for model, ratios in results["ratios"].items():
        for name, description in [(n, d) for n, d, *_ in TARGETS] + list(INFO_RATIOS):
            if (name, model) not in targeted:
                lines.append(f"| {description} | {model} | {_fmt(ratios.get(name), 3)} | - | - |")
    return "\n".join(lines) + "\n"


def _write_outputs(out_dir: Path, results: dict[str, Any], started: datetime, models: Sequence[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{started.strftime('%Y%m%dT%H%M%SZ')}-scale-{'+'.join(models)}"
    markdown = render_markdown(results)
    paths = {"json": out_dir / f"{stem}.json", "markdown": out_dir / f"{stem}.md"}
    results["files"] = {kind: str(path) for kind, path in paths.items()}
    for path, text in ((paths["markdown"], markdown),
                       (paths["json"], json.dumps(results, indent=2, ensure_ascii=False) + "\n")):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    print(markdown)
    log.info("results: %s (+ .md)", paths["json"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = resolve_options(build_parser().parse_args(argv))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from model_server.backends.hardware import cpu_features

    started_wall, started = datetime.now(timezone.utc), time.monotonic()
    load_before = machine.load_average()
    model_path = resolve_model(TINY, args.models_dir).path  # the stand-in's tokenizer and info, the tiny rows' model
    sentences = load_workload().sentences
    results: dict[str, Any] = {"schema": 1, "benchmark": "scale",
                               "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as work_dir:
        for model in args.models:
            try:
                results["models"][model] = run_model(args, model, model_path, sentences, Path(work_dir))
            except RuntimeError as exc:
                raise SystemExit(f"benchmarks.scale: {model}: {exc}") from None
    results["ratios"] = {model: compute_ratios(section) for model, section in results["models"].items()}
    results["targets"] = evaluate_targets(results["ratios"])
    results["meta"] = {
        "started_utc": started_wall.isoformat(timespec="seconds"), "duration_s": round(time.monotonic() - started, 1),
        "command": "python -m benchmarks.scale " + shlex.join(argv), "machine": machine.machine_info(args.device),
        "hardware": cpu_features().describe(), "load_before": load_before, "load_after": machine.load_average(),
        "git": machine.git_info()}
    _write_outputs(args.out, results, started_wall, args.models)
    return results


if __name__ == "__main__":
    main()
