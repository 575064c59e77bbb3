"""Benchmark the translation service: offline engine, online service, naive baseline, idle latency.

    python -m benchmarks.run                      # random real-shape opus-mt-ar-en, defaults
    python -m benchmarks.run --model tiny --quick # smoke run (seconds)
    python -m benchmarks.run --model /models/opus-mt-ar-en --device cuda

Writes <out>/<UTC timestamp>-<device>-<model>.json (raw results, machine and settings), a .md table
(also printed) and -throughput.png / -latency.png plots. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from benchmarks import machine, online, report
from benchmarks.models import RANDOM_OPUS_MT, resolve_model
from benchmarks.workload import SAMPLE_ARTICLE, load_workload

log = logging.getLogger("benchmarks")

DEFAULTS = dict(batch_sizes="1,8,32,64", concurrency="1,8,32,64", article_concurrency=None, requests_per_client=3,
                article_requests_per_client=None, naive_requests_per_client=None, warmup_requests=1,
                decode_tokens=40, idle_repeats=20, offline_repeats=3, offline_warmup=1, torch_threads=None)
# --quick: a smoke run of seconds on the tiny model (any value given explicitly still wins).
# One torch thread: tiny ops gain nothing from two, and on a busy machine two threads are several times slower.
QUICK = dict(batch_sizes="1,4", concurrency="1,4", article_concurrency="1,2", requests_per_client=2,
             article_requests_per_client=1, warmup_requests=1, decode_tokens=8, idle_repeats=5, offline_repeats=2,
             offline_warmup=1, torch_threads=1)


def _ints(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; 'none' -> [] (skip those levels)."""
    if text.strip().lower() == "none":
        return []
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ValueError(f"expected a comma-separated list of positive integers or 'none', got {text!r}")
    return values


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the ones resolved after parsing (None here; given in [brackets] instead)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0],
                                formatter_class=_HelpFormatter)
    p.add_argument("--model", default=RANDOM_OPUS_MT,
                   help=f"'{RANDOM_OPUS_MT}' (real architecture, random weights, built once), 'tiny' (test model) "
                        "or a model directory")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where built models are kept")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto = cuda when available")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                   help="auto = float32 on cpu, float16 on cuda (the service's rule)")
    p.add_argument("--torch-threads", type=int,
                   help="torch intra-op threads for the offline phase and both servers [torch's choice; 1 with --quick]")
    p.add_argument("--num-beams", type=int, default=1, help="beam size (greedy by default)")
    p.add_argument("--decode-tokens", type=int, help=f"every segment decodes exactly this many tokens "
                   f"[{DEFAULTS['decode_tokens']}]")
    p.add_argument("--batch-sizes", help=f"offline batch sizes [{DEFAULTS['batch_sizes']}]")
    p.add_argument("--offline-repeats", type=int, help=f"measured calls per batch size [{DEFAULTS['offline_repeats']}]")
    p.add_argument("--offline-warmup", type=int, help=f"warm-up calls per batch size [{DEFAULTS['offline_warmup']}]")
    p.add_argument("--concurrency", help=f"client counts, single-sentence requests; 'none' skips them "
                                         f"[{DEFAULTS['concurrency']}]")
    p.add_argument("--article-concurrency",
                   help="client counts, whole-article requests; 'none' skips articles [same as --concurrency]")
    p.add_argument("--requests-per-client", type=int,
                   help=f"measured single-sentence requests per client and level [{DEFAULTS['requests_per_client']}]")
    p.add_argument("--article-requests-per-client", type=int,
                   help="measured article requests per client and level [same as --requests-per-client]")
    p.add_argument("--naive-requests-per-client", type=int,
                   help="the naive server's measured requests per client and level, both request kinds (it runs "
                        "one request at a time, so its throughput does not depend on this) [same as the service]")
    p.add_argument("--duration-s", type=float, default=None,
                   help="instead of a request count: each client keeps sending for this long per level")
    p.add_argument("--warmup-requests", type=int,
                   help=f"unrecorded requests per client before each level [{DEFAULTS['warmup_requests']}]")
    p.add_argument("--idle-repeats", type=int, help=f"idle-latency samples per path [{DEFAULTS['idle_repeats']}]")
    p.add_argument("--max-batch-size", type=int, default=64, help="the service's max_batch_size")
    p.add_argument("--server-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="any other service setting (e.g. max_wait_ms=2), repeatable")
    p.add_argument("--request-timeout-s", type=float, default=900.0, help="client timeout per request")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results directory")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    p.add_argument("--skip-offline", action="store_true", help="no offline table and no direct idle probe")
    p.add_argument("--skip-online", action="store_true", help="no servers at all")
    p.add_argument("--skip-naive", action="store_true", help="no naive baseline server")
    p.add_argument("--seed", type=int, default=0, help="seed of the random model and of torch")
    return p


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    base = {**DEFAULTS, **(QUICK if args.quick else {})}
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.article_concurrency = args.article_concurrency or args.concurrency
    args.article_requests_per_client = args.article_requests_per_client or args.requests_per_client
    try:
        args.batch_sizes, args.concurrency = _ints(args.batch_sizes), _ints(args.concurrency)
        args.article_concurrency = _ints(args.article_concurrency)
    except ValueError as exc:
        raise SystemExit(f"benchmarks: {exc}") from None
    for name in ("requests_per_client", "article_requests_per_client", "offline_repeats", "idle_repeats",
                 "decode_tokens", "num_beams"):
        if getattr(args, name) < 1:
            raise SystemExit(f"benchmarks: --{name.replace('_', '-')} must be at least 1")
    for name in ("warmup_requests", "offline_warmup"):
        if getattr(args, name) < 0:
            raise SystemExit(f"benchmarks: --{name.replace('_', '-')} must be at least 0")
    return args


def service_settings(args: argparse.Namespace, model_path: Path, device: str, dtype: str) -> dict[str, Any]:
    """The service's settings as MODEL_SERVER_* values (forced decode length: min = max = decode tokens).

    The quality retry (re-generating sentences flagged as cut or looping with beam search) is off: with
    forced lengths every output reaches max_new_tokens and is flagged, so it would re-run every sentence
    with 4 beams, work the naive server and the offline phase never do. Turn it back on with
    --server-setting retry_suspect_sentences=true. The translation cache is off: the benchmark re-sends
    the same 26 sentences, which a cache would answer without the model (and it persists across runs).
    The summarization model is not loaded: only translation is measured, and the service then owns the
    machine the way the naive server does.
    """
    values: dict[str, Any] = dict(translation_model=str(model_path), models_dir=str(args.models_dir), device=device,
                                  dtype=dtype, num_beams=args.num_beams, max_new_tokens=args.decode_tokens,
                                  min_new_tokens=args.decode_tokens, max_batch_size=args.max_batch_size,
                                  retry_suspect_sentences=False, cache_enabled=False, summarization_enabled=False,
                                  log_level="warning")
    if args.torch_threads:
        values["torch_threads"] = args.torch_threads
    for item in args.server_setting:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--server-setting {item!r}: expected NAME=VALUE")
        values[name.strip().lower().removeprefix("model_server_")] = value
    return values


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = resolve_options(build_parser().parse_args(argv))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import torch

    from model_server.backends.loading import resolve_device, resolve_dtype
    from model_server.settings import Device, DType, Settings

    started_wall, started = datetime.now(timezone.utc), time.monotonic()
    load_before = machine.load_average()
    torch.manual_seed(args.seed)
    device = resolve_device(Device(args.device))
    dtype = resolve_dtype(DType(args.dtype), device)
    model = resolve_model(args.model, args.models_dir, seed=args.seed)
    values = service_settings(args, model.path, device, dtype)
    try:
        settings = Settings(**values)  # validates (and adds MODEL_SERVER_* from the environment, as the server will)
    except Exception as exc:  # noqa: BLE001 - pydantic's message names the setting
        raise SystemExit(f"benchmarks: invalid service settings: {exc}") from None
    workload = load_workload()
    log.info("model %s (%s) on %s/%s; %d sentences in the sample article", model.label, model.path, device, dtype,
             len(workload.sentences))

    results: dict[str, Any] = {
        "schema": 1,
        "generation": {"num_beams": args.num_beams, "decode_tokens": args.decode_tokens,
                       "min_new_tokens": args.decode_tokens, "max_new_tokens": args.decode_tokens},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "settings": settings.model_dump(mode="json"),
        "workload": {"article": str(SAMPLE_ARTICLE), "sentences": len(workload.sentences),
                     "article_chars": len(workload.article)},
        "offline": None, "idle": {}, "online": {},
    }

    with tempfile.TemporaryDirectory(prefix="bench-server-logs-") as logs, contextlib.ExitStack() as stack:
        # Every model loads at once (servers and the in-process backend), then the phases run one at a
        # time: while one is measured the others are idle (an idle server uses no CPU or GPU time).
        servers = [] if args.skip_online else _start_servers(args, values, model, device, dtype, Path(logs), stack)
        backend = None if args.skip_offline else _load_backend(settings)
        for name, server, _ in servers:
            ready_s = server.wait_ready(timeout_s=900)
            results["online"][f"{name}_ready_s"] = round(ready_s, 2)
            log.info("%s server ready %.1f s after start, at %s", name, ready_s, server.base_url)
        try:
            _idle_phase(args, backend, servers, workload, device, results)
            if backend is not None:
                _offline_phase(args, backend, workload, device, results)
        finally:
            if backend is not None:
                backend.close()  # free the device (and memory) before the servers are measured
        for name, server, parse in servers:
            _online_phase(args, name, server, parse, workload, results)

    results["ratios"] = report.compute_ratios(results)
    results["targets"] = report.evaluate_targets(results["ratios"])
    results["meta"] = {
        "started_utc": started_wall.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "command": "python -m benchmarks.run " + shlex.join(argv),
        "model": {"label": model.label, "path": str(model.path), "kind": model.kind, "note": model.note},
        "device": device, "dtype": dtype,
        "machine": machine.machine_info(device),
        "load_before": load_before, "load_after": machine.load_average(),
        "git": machine.git_info(),
    }
    _write_outputs(args.out, results, started_wall, device, model.label)
    return results


def _load_backend(settings):
    from model_server.services import load_translation_backend

    return load_translation_backend(settings)


def _options(args):
    from model_server.backends.base import GenerationOptions

    return GenerationOptions(num_beams=args.num_beams, max_new_tokens=args.decode_tokens,
                             min_new_tokens=args.decode_tokens)


def _idle_phase(args, backend, servers, workload, device: str, results: dict[str, Any]) -> None:
    """Direct generate vs each server over HTTP, one request at a time, interleaved (benchmarks/idle.py)."""
    from benchmarks.idle import http_probe, idle_client, run_idle
    from benchmarks.offline import synchronizer, timed_generate

    if backend is not None:
        sentence = workload.idle_sentence(backend.count_tokens)
        results["idle"]["sentence_tokens"] = backend.count_tokens(sentence)
    else:
        sentence = sorted(workload.sentences, key=len)[len(workload.sentences) // 2]
    probes = {}
    if backend is not None:
        options, sync = _options(args), synchronizer(device)
        probes["direct"] = lambda: (timed_generate(backend, [sentence], options, sync)[0] * 1000, {})
    with contextlib.ExitStack() as stack:
        for name, server, parse in servers:
            client = stack.enter_context(idle_client(args.request_timeout_s))
            probes[f"{name}_http"] = http_probe(client, server.base_url, {"text": sentence}, parse)
        if not probes:
            return
        results["idle"].update(run_idle(probes, repeats=args.idle_repeats, warmup=2))
    log.info("idle latency (median ms): %s", ", ".join(
        f"{name} {results['idle'][name]['median_ms']:.1f}" for name in probes))


def _offline_phase(args, backend, workload, device: str, results: dict[str, Any]) -> None:
    from benchmarks.offline import run_offline

    results["offline"] = run_offline(backend, workload, _options(args), batch_sizes=args.batch_sizes,
                                     warmup=args.offline_warmup, repeats=args.offline_repeats, device=device)
    results["offline"]["backend"] = backend.info.model_dump(mode="json")


def _start_servers(args, values: dict[str, Any], model, device: str, dtype: str, log_dir: Path,
                   stack: contextlib.ExitStack) -> list[tuple[str, online.ServerProcess, online.ResponseParser]]:
    env = {f"MODEL_SERVER_{name.upper()}": str(value) for name, value in values.items() if value is not None}
    servers = [("service", online.service_server(env, online.free_port(), log_dir / "service.log"),
                online.service_parser(args.decode_tokens))]
    if not args.skip_naive:
        naive_args = ["--model", str(model.path), "--device", device, "--dtype", dtype,
                      "--decode-tokens", str(args.decode_tokens), "--num-beams", str(args.num_beams)]
        if args.torch_threads:
            naive_args += ["--threads", str(args.torch_threads)]
        servers.append(("naive", online.naive_server(naive_args, online.free_port(), log_dir / "naive.log"),
                        online.naive_parser))
    for _, server, _ in servers:
        stack.enter_context(server)
    return servers


def _online_phase(args, name: str, server: online.ServerProcess, parse: online.ResponseParser, workload,
                  results: dict[str, Any]) -> None:
    singles = [{"text": s} for s in workload.sentences]
    articles = [{"text": workload.article}]
    level_kwargs = dict(warmup=args.warmup_requests, duration_s=args.duration_s, timeout_s=args.request_timeout_s)
    out: dict[str, list] = {"single": [], "article": []}
    for mode, payloads, levels, requests in (
            ("single", singles, args.concurrency, args.requests_per_client),
            ("article", articles, args.article_concurrency, args.article_requests_per_client)):
        if name == "naive" and args.naive_requests_per_client:
            requests = args.naive_requests_per_client
        for concurrency in levels:
            level = online.run_level(server.base_url, payloads, parse, concurrency=concurrency,
                                     requests=requests, batcher_stats=name == "service",
                                     server_pid=server.proc.pid if server.proc else None, **level_kwargs)
            out[mode].append(level)
            log.info("%s %-7s x%-3d: %7.2f req/s %8.1f tokens/s p50 %8.1f ms p99 %8.1f ms%s%s", name, mode,
                     concurrency, level["requests_per_s"], level["target_tokens_per_s"],
                     level.get("latency_p50_ms") or 0, level.get("latency_p99_ms") or 0,
                     f" mean batch {level['batching']['mean_batch_size']:.1f}"
                     f" busy {level['batching']['model_utilization']:.2f}" if level.get("batching") else "",
                     f" ERRORS {level['errors']}: {level['first_error']}" if level["errors"] else "")
    results["online"][name] = out


def _write_outputs(out_dir: Path, results: dict[str, Any], started: datetime, device: str, label: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    safe_label = "".join(c if c.isalnum() or c in "-_" else "-" for c in label)
    stem = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{device}-{safe_label}"
    markdown = report.render_markdown(results)
    plots = report.render_plots(results, stem)
    def path(suffix: str) -> Path:
        return stem.with_name(stem.name + suffix)

    results["files"] = {"json": str(path(".json")), "markdown": str(path(".md")), "plots": [str(p) for p in plots]}
    for suffix, text in ((".md", markdown), (".json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")):
        tmp = path(suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path(suffix))
    print(markdown)
    log.info("results: %s (+ .md, %d plots)", path(".json"), len(plots))


if __name__ == "__main__":
    main()
