"""Benchmark the translation service: offline engine, online service, naive baseline, idle latency.

Every backend (torch and, when installed, CTranslate2) is measured in the same run: its raw engine
call, the service's backend offline, and the service over HTTP, next to the naive server.

    python -m benchmarks.run                      # random real-shape opus-mt-ar-en, defaults
    python -m benchmarks.run --model tiny --quick # smoke run (seconds)
    python -m benchmarks.run --model /models/opus-mt-ar-en --device cuda

Writes <out>/<UTC timestamp>-<device>-<model>.json (raw results, machine and settings), a .md table
(also printed) and -throughput.png / -latency.png plots. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from benchmarks import machine, online, report
from benchmarks.models import RANDOM_OPUS_MT, ensure_ct2_conversion, resolve_model
from benchmarks.workload import SAMPLE_ARTICLE, load_workload

log = logging.getLogger("benchmarks")

BACKENDS = ("torch", "ctranslate2")

# The naive CTranslate2 server's layout: LibreTranslate's best measured on 2 cores (8 request threads,
# inter_threads 2 = one call per core, intra_threads 1); inter_threads None = the usable CPUs.
DEFAULTS = dict(batch_sizes="1,8,32,64", concurrency="1,8,32,64", article_concurrency=None, requests_per_client=3,
                article_requests_per_client=None, naive_requests_per_client=None, warmup_requests=1,
                naive_ct2_workers=8, naive_ct2_inter_threads=None, naive_ct2_intra_threads=1,
                decode_tokens=40, idle_repeats=20, offline_repeats=3, offline_warmup=1, torch_threads=None,
                tune_repeats=3,
                summary_models="tiny,random-mt5-xlsum", summary_repeats=3, summary_warmup=1)
# --quick: a smoke run of seconds on the tiny model (any value given explicitly still wins).
# One torch thread: tiny ops gain nothing from two, and on a busy machine two threads are several times slower.
QUICK = dict(batch_sizes="1,4", concurrency="1,4", article_concurrency="1,2", requests_per_client=2,
             article_requests_per_client=1, warmup_requests=1, decode_tokens=8, idle_repeats=5, offline_repeats=2,
             offline_warmup=1, torch_threads=1, tune_repeats=1, summary_models="tiny", summary_repeats=1,
             summary_warmup=0,
             summary_decode_tokens=8, summary_num_beams=2, naive_ct2_workers=2, naive_ct2_inter_threads=1)


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


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the ones resolved after parsing (None here; given in [brackets] instead)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--model", default=RANDOM_OPUS_MT,
                   help=f"'{RANDOM_OPUS_MT}' (real architecture, random weights, built once), 'tiny' (test model) "
                        "or a model directory")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where built models are kept")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto = cuda when available")
    p.add_argument("--backends", default="auto",
                   help="comma-separated service backends to measure, first = the one the batching targets use: "
                        "torch, ctranslate2; auto = torch,ctranslate2 when ctranslate2 is installed, else torch")
    p.add_argument("--ct2-compute-type", default="auto",
                   help="CTranslate2 compute type (the service's ct2_compute_type): auto = int8 on cpu, "
                        "int8_float16 on cuda; the model is converted once into --models-dir")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                   help="auto = the service's rule: bfloat16 on a CPU with native bf16, else float32; float16 on cuda")
    p.add_argument("--torch-threads", type=int,
                   help="intra-op threads of every engine (torch_threads and ct2_intra_threads), offline and in "
                        "every server [the engines' own choice; 1 with --quick]")
    p.add_argument("--num-beams", default="model",
                   help="beam size of the headline rows: 'model' = the model's own generation config (4 for "
                        "opus-mt-ar-en and the random real-shape model), or a number")
    p.add_argument("--greedy-row", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure greedy decoding (offline rows and single-sentence online levels, same "
                        "servers) when the headline decoding is beam search")
    p.add_argument("--torch-dtypes", action=argparse.BooleanOptionalAction, default=True,
                   help="offline torch rows in both candidate dtypes (float32 and bfloat16 on cpu, float16 and "
                        "bfloat16 on cuda), interleaved, to show whether dtype=auto picked the faster one")
    p.add_argument("--naive-ct2-workers", type=int,
                   help="naive CTranslate2 server: request threads (LibreTranslate's waitress threads) "
                        f"[{DEFAULTS['naive_ct2_workers']}]")
    p.add_argument("--naive-ct2-inter-threads", type=int,
                   help="naive CTranslate2 server: translate_batch calls in parallel [usable CPUs; 1 with --quick]")
    p.add_argument("--naive-ct2-intra-threads", type=int,
                   help=f"naive CTranslate2 server: threads per call [{DEFAULTS['naive_ct2_intra_threads']}]")
    p.add_argument("--decode-tokens", type=int, help=f"every segment decodes exactly this many tokens "
                   f"[{DEFAULTS['decode_tokens']}]")
    p.add_argument("--batch-sizes", help=f"offline batch sizes [{DEFAULTS['batch_sizes']}]")
    p.add_argument("--offline-repeats", type=int, help=f"measured calls per batch size [{DEFAULTS['offline_repeats']}]")
    p.add_argument("--offline-warmup", type=int, help=f"warm-up calls per batch size [{DEFAULTS['offline_warmup']}]")
    p.add_argument("--tune-repeats", type=int, help="measured calls per batch size in `model-server tune` (the median "
                   f"decides the service's limits; one call let a slow moment pick batch 8 over 32) "
                   f"[{DEFAULTS['tune_repeats']}]")
    p.add_argument("--concurrency", help=f"client counts, single-sentence requests; 'none' skips them "
                                         f"[{DEFAULTS['concurrency']}]")
    p.add_argument("--article-concurrency",
                   help="client counts, whole-article requests; 'none' skips articles [same as --concurrency]")
    p.add_argument("--requests-per-client", type=int,
                   help=f"measured single-sentence requests per client and level [{DEFAULTS['requests_per_client']}]")
    p.add_argument("--article-requests-per-client", type=int,
                   help="measured article requests per client and level [same as --requests-per-client]")
    p.add_argument("--naive-requests-per-client", type=int,
                   help="the naive servers' measured requests per client and level, all request kinds (they do "
                        "not batch across requests, so their throughput barely depends on this) [same as the service]")
    p.add_argument("--duration-s", type=float, default=None,
                   help="instead of a request count: each client keeps sending for this long per level")
    p.add_argument("--warmup-requests", type=int,
                   help=f"unrecorded requests per client before each level [{DEFAULTS['warmup_requests']}]")
    p.add_argument("--idle-repeats", type=int, help=f"idle-latency samples per path [{DEFAULTS['idle_repeats']}]")
    p.add_argument("--max-batch-size", type=int,
                   help="the service's max_batch_size [unset: the service's own limits, a matching tuning entry "
                        "(model-server tune, in --models-dir) or its defaults]")
    p.add_argument("--server-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="any other service setting (e.g. max_wait_ms=2), repeatable")
    p.add_argument("--request-timeout-s", type=float, default=900.0, help="client timeout per request")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results directory")
    p.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    p.add_argument("--restrict-output-vocab", action=argparse.BooleanOptionalAction, default=False,
                   help="decode into the target vocabulary only (the service's default). Off here by default: the "
                        "random real-shape opus-mt carries the tiny model's target.spm (300 of 62,834 pieces), a "
                        "split no real model has [off]")
    p.add_argument("--tune", action=argparse.BooleanOptionalAction, default=None,
                   help="run `model-server tune` for each service first, with its own settings and into its own "
                        "tuning file (what a deployment does once), so the services serve with limits (and a "
                        "CTranslate2 thread layout) measured on this machine [on; off with --quick]")
    p.add_argument("--skip-offline", action="store_true", help="no offline table and no direct idle probe")
    p.add_argument("--skip-online", action="store_true", help="no servers at all")
    p.add_argument("--skip-naive", action="store_true", help="no naive baseline server")
    p.add_argument("--skip-raw", action="store_true", help="no raw engine rows (model.generate / translate_batch)")
    p.add_argument("--summary-models",
                   help="summarization rows: comma-separated 'tiny', 'random-mt5-xlsum' (real XLSum architecture, "
                        f"random weights, built once), mT5 model dirs, or 'none' [{DEFAULTS['summary_models']}]")
    p.add_argument("--summary-decode-tokens", type=int,
                   help="every summary decodes exactly this many tokens [the default preset's max_new_tokens]")
    p.add_argument("--summary-num-beams", type=int, help="beam size of the summaries [the default preset's]")
    p.add_argument("--summary-repeats", type=int, help=f"measured articles per summarizer "
                                                      f"[{DEFAULTS['summary_repeats']}]")
    p.add_argument("--summary-warmup", type=int, help=f"unrecorded articles per summarizer "
                                                     f"[{DEFAULTS['summary_warmup']}]")
    p.add_argument("--seed", type=int, default=0, help="seed of the random model and of torch")
    return p


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    base = {**DEFAULTS, **(QUICK if args.quick else {})}
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.tune is None:
        args.tune = not args.quick
    args.article_concurrency = args.article_concurrency or args.concurrency
    args.article_requests_per_client = args.article_requests_per_client or args.requests_per_client
    try:
        args.batch_sizes, args.concurrency = _ints(args.batch_sizes), _ints(args.concurrency)
        args.article_concurrency = _ints(args.article_concurrency)
    except ValueError as exc:
        raise SystemExit(f"benchmarks: {exc}") from None
    if args.naive_ct2_inter_threads is None:
        args.naive_ct2_inter_threads = machine.usable_cpus()
    args.num_beams = _num_beams(args.num_beams)
    for name in ("requests_per_client", "article_requests_per_client", "offline_repeats", "idle_repeats",
                 "decode_tokens", "naive_ct2_workers", "naive_ct2_inter_threads", "naive_ct2_intra_threads"):
        if getattr(args, name) < 1:
            raise SystemExit(f"benchmarks: --{name.replace('_', '-')} must be at least 1")
    args.summary_models = [] if args.summary_models.strip().lower() == "none" else \
        [part.strip() for part in args.summary_models.split(",") if part.strip()]
    for name in ("summary_decode_tokens", "summary_num_beams"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SystemExit(f"benchmarks: --{name.replace('_', '-')} must be at least 1")
    if args.summary_repeats < 1:
        raise SystemExit("benchmarks: --summary-repeats must be at least 1")
    for name in ("warmup_requests", "offline_warmup", "summary_warmup"):
        if getattr(args, name) < 0:
            raise SystemExit(f"benchmarks: --{name.replace('_', '-')} must be at least 0")
    args.backends = _backends(args.backends)
    return args


def _num_beams(text: str) -> int | str:
    """'model' (the model's own generation config, resolved once the model is) or a positive beam size."""
    if str(text).strip().lower() == "model":
        return "model"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise SystemExit(f"benchmarks: --num-beams {text!r}: expected 'model' or a positive integer")
    return value


def model_num_beams(model_path: Path) -> int:
    """The beam size the model ships with (its generation config's num_beams; 1 when it names none)."""
    from transformers import GenerationConfig

    try:
        return int(GenerationConfig.from_pretrained(model_path).num_beams or 1)
    except OSError:  # no generation_config.json: transformers' default, greedy
        return 1


def decodings(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The decoding sets a run measures: the headline (the model's own decoding unless --num-beams says
    otherwise) and, with --greedy-row when the headline is beam search, greedy as the second set."""
    sets = [{"name": "headline", "num_beams": args.num_beams, "source": args.num_beams_source}]
    if args.greedy_row and args.num_beams != 1:
        sets.append({"name": "greedy", "num_beams": 1, "source": "--greedy-row"})
    return sets


def _backends(text: str) -> list[str]:
    """'auto' -> torch (+ ctranslate2 when importable); else the listed backends, checked."""
    if text.strip().lower() == "auto":
        import importlib.util

        return ["torch"] + (["ctranslate2"] if importlib.util.find_spec("ctranslate2") else [])
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [name for name in names if name not in BACKENDS]
    if not names or unknown or len(set(names)) != len(names):
        raise SystemExit(f"benchmarks: --backends {text!r}: expected distinct names from {', '.join(BACKENDS)} "
                         "or 'auto'")
    return names


def ct2_thread_values(device: str, cores: int) -> dict[str, int]:
    """ct2_inter_threads/ct2_intra_threads for `cores` cores, as the service's auto layout chooses them."""
    from model_server.backends.hardware import ct2_thread_layout

    inter, intra = ct2_thread_layout(device, cores)
    return {"ct2_inter_threads": inter, "ct2_intra_threads": intra}


def service_settings(args: argparse.Namespace, model_path: Path, device: str, dtype: str, backend: str = "torch",
                     ct2_dir: Path | None = None) -> dict[str, Any]:
    """The service's settings as MODEL_SERVER_* values (forced decode length: min = max = decode tokens).

    The quality retry (re-generating sentences flagged as cut or looping with beam search) is off: with
    forced lengths every output reaches max_new_tokens and is flagged, so it would re-run every sentence
    with 4 beams, work the naive server and the offline phase never do. Turn it back on with
    --server-setting retry_suspect_sentences=true. The translation cache is off: the benchmark re-sends
    the same 26 sentences, which a cache would answer without the model (and it persists across runs).
    The summarization model is not loaded: only translation is measured, and the service then owns the
    machine the way the naive server does. CTranslate2 gets the torch thread count as its cores: fewer
    than the machine's in the layout the auto rule picks for that many (ct2_thread_layout), all of them
    in the service's own layout (tuned, else the auto rule: on 2 cores 2 one-thread replicas).
    """
    values: dict[str, Any] = dict(translation_model=str(model_path), models_dir=str(args.models_dir), device=device,
                                  dtype=dtype, num_beams=args.num_beams, max_new_tokens=args.decode_tokens,
                                  min_new_tokens=args.decode_tokens, retry_suspect_sentences=False,
                                  cache_enabled=False, summarization_enabled=False, log_level="warning",
                                  backend=backend, restrict_output_vocab=args.restrict_output_vocab)
    if args.max_batch_size:  # else the service's own limits, as it would serve: tuned or default
        values["max_batch_size"] = args.max_batch_size
    if args.torch_threads:
        values["torch_threads"] = args.torch_threads
    if backend == "ctranslate2":
        values.update(ct2_model_dir=str(ct2_dir), ct2_compute_type=args.ct2_compute_type)
        # The same cores as torch: fewer than the machine's, laid out as the auto rule lays out that many;
        # all of them, left to the service (its tuned layout, else the auto rule), as a deployment runs.
        if args.torch_threads and args.torch_threads < machine.usable_cpus():
            values.update(ct2_thread_values(device, args.torch_threads))
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

    from model_server.backends.hardware import cpu_features
    from model_server.backends.loading import dtype_choice, resolve_device
    from model_server.settings import Device, DType, Settings

    started_wall, started = datetime.now(timezone.utc), time.monotonic()
    load_before = machine.load_average()
    torch.manual_seed(args.seed)
    device = resolve_device(Device(args.device))
    dtype, dtype_reason = dtype_choice(DType(args.dtype), device)
    precision = {"torch": {"requested": args.dtype, "chosen": dtype, "reason": dtype_reason}}
    if "ctranslate2" in args.backends:
        precision["ctranslate2"] = _ct2_precision(args, device)
    model = resolve_model(args.model, args.models_dir, seed=args.seed)
    args.num_beams_source = "model generation config" if args.num_beams == "model" else "--num-beams"
    if args.num_beams == "model":
        args.num_beams = model_num_beams(model.path)
    ct2_dir = _ct2_conversion(args, model, device) if "ctranslate2" in args.backends else None
    values = {backend: service_settings(args, model.path, device, dtype, backend, ct2_dir) for backend in args.backends}
    try:
        # Validates (and adds MODEL_SERVER_* from the environment, as the servers will).
        settings = {backend: Settings(**backend_values) for backend, backend_values in values.items()}
    except Exception as exc:  # noqa: BLE001 - pydantic's message names the setting
        raise SystemExit(f"benchmarks: invalid service settings: {exc}") from None
    workload = load_workload()
    log.info("model %s (%s) on %s/%s, backends %s; %d sentences in the sample article", model.label, model.path,
             device, dtype, ", ".join(args.backends), len(workload.sentences))

    results: dict[str, Any] = {
        "schema": 2,
        "backends": list(args.backends),
        "generation": {"num_beams": args.num_beams, "num_beams_source": args.num_beams_source,
                       "decode_tokens": args.decode_tokens,
                       "min_new_tokens": args.decode_tokens, "max_new_tokens": args.decode_tokens},
        # Which decoding each table row used: the headline set is at the top level (offline, raw, online
        # single/article, idle); the greedy set (if any) under "greedy" and online "single_greedy".
        "decodings": decodings(args),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "settings": {backend: s.model_dump(mode="json") for backend, s in settings.items()},
        "workload": {"article": str(SAMPLE_ARTICLE), "sentences": len(workload.sentences),
                     "article_chars": len(workload.article)},
        "offline": {}, "raw": {}, "idle": {}, "online": {}, "memory": {}, "summarization": None,
    }
    for decoding in results["decodings"][1:]:
        results[decoding["name"]] = {"num_beams": decoding["num_beams"], "offline": {}, "raw": {}}

    if args.tune and not args.skip_online:
        results["tuning"] = {backend: tune_service(args, backend_values) for backend, backend_values in values.items()}
    with tempfile.TemporaryDirectory(prefix="bench-server-logs-") as logs, contextlib.ExitStack() as stack:
        # Every model loads at once (servers and the in-process backends), then the phases run one at a
        # time: while one is measured the others are idle (an idle server uses no CPU or GPU time).
        servers = [] if args.skip_online else _start_servers(args, values, model, device, dtype, Path(logs), stack)
        backends = {} if args.skip_offline else {name: _load_backend(s) for name, s in settings.items()}
        # The other candidate torch dtype(s), offline only: does dtype=auto pick the faster one here?
        dtype_backends = {} if args.skip_offline or "torch" not in settings or not args.torch_dtypes else {
            other: _load_backend(settings["torch"].model_copy(update={"dtype": DType(other)}))
            for other in other_torch_dtypes(dtype, device)}
        for server in servers:
            ready_s = server.process.wait_ready(timeout_s=900)
            results["online"][f"{server.name}_ready_s"] = round(ready_s, 2)
            log.info("%s server ready %.1f s after start, at %s", server.name, ready_s, server.process.base_url)
        try:
            _idle_phase(args, backends, servers, workload, device, results)
            if backends:
                _offline_phase(args, backends, dtype_backends, workload, device, results)
        finally:
            for backend in [*backends.values(), *dtype_backends.values()]:
                backend.close()  # free the device (and memory) before the servers are measured
        if args.summary_models:
            _summarization_phase(args, device, workload, results)
        if servers:
            _online_phase(args, servers, workload, results)

    results["ratios"] = report.compute_ratios(results)
    results["targets"] = report.evaluate_targets(results["ratios"])
    for decoding in results["decodings"][1:]:  # the same ratios and targets for the greedy set
        ratios = report.compute_ratios(report.decoding_view(results, decoding["name"]))
        results[decoding["name"]].update(ratios=ratios, targets=report.evaluate_targets(ratios))
    results["meta"] = {
        "started_utc": started_wall.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started, 1),
        "command": "python -m benchmarks.run " + shlex.join(argv),
        "model": {"label": model.label, "path": str(model.path), "kind": model.kind, "note": model.note},
        "device": device, "dtype": dtype,
        "machine": machine.machine_info(device),
        # The CPU flags the precision defaults were chosen from, and what each engine was given and why.
        "hardware": cpu_features().describe(), "precision": precision,
        "load_before": load_before, "load_after": machine.load_average(),
        "git": machine.git_info(),
    }
    _write_outputs(args.out, results, started_wall, device, model.label)
    return results


def ct2_quantization(args, device: str) -> str:
    """The weight type a CTranslate2 conversion needs for `--ct2-compute-type` on `device`."""
    from model_server.backends.ct2_convert import quantization_for
    from model_server.backends.ctranslate2_backend import resolve_compute_type, resolve_ct2_device

    return quantization_for(resolve_compute_type(args.ct2_compute_type, resolve_ct2_device(device)))


def _ct2_conversion(args, model, device: str) -> Path:
    """The model converted for CTranslate2 at the weight type `--ct2-compute-type` needs (once, then reused)."""
    return ensure_ct2_conversion(model.path, args.models_dir, ct2_quantization(args, device))


def _ct2_precision(args, device: str) -> dict[str, str]:
    from model_server.backends.ctranslate2_backend import compute_type_choice, resolve_ct2_device

    chosen, reason = compute_type_choice(args.ct2_compute_type, resolve_ct2_device(device))
    return {"requested": args.ct2_compute_type, "chosen": chosen, "reason": reason}


# The in-process torch backends (the run's dtype and the other candidates) share one model thread: torch's
# OpenMP (libgomp) throttles its worker threads once a process has more of them than cores, which two torch
# threads with their own teams already are on 2 cores (one beam-4 sentence: 391 ms shared, 670 ms apart).
# A server runs one torch model per thread; sharing keeps the offline rows comparable with it.
_TORCH_THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-torch")


def _load_backend(settings):
    from model_server.services import load_translation_backend

    return load_translation_backend(settings, model_thread=_TORCH_THREAD)


def _options(args, num_beams: int | None = None):
    from model_server.backends.base import GenerationOptions

    return GenerationOptions(num_beams=num_beams or args.num_beams, max_new_tokens=args.decode_tokens,
                             min_new_tokens=args.decode_tokens)


def other_torch_dtypes(chosen: str, device: str) -> list[str]:
    """The candidate torch dtypes besides the chosen one: float32 / bfloat16 on a CPU, float16 / bfloat16
    on CUDA (what dtype=auto chooses between)."""
    candidates = ("float16", "bfloat16") if device.startswith("cuda") else ("float32", "bfloat16")
    return [dtype for dtype in candidates if dtype != chosen]


def _idle_phase(args, backends: dict, servers: list["Server"], workload, device: str,
                results: dict[str, Any]) -> None:
    """Direct generate per backend vs each server over HTTP, one request at a time, interleaved
    (benchmarks/idle.py). Each service is paired with the direct call of its own backend."""
    from benchmarks.idle import http_probe, idle_client, run_idle
    from benchmarks.offline import synchronizer, timed_generate

    count_tokens = next(iter(backends.values())).count_tokens if backends else None
    if count_tokens is not None:
        sentence = workload.idle_sentence(count_tokens)
        results["idle"]["sentence_tokens"] = count_tokens(sentence)
    else:
        sentence = sorted(workload.sentences, key=len)[len(workload.sentences) // 2]
    options, sync = _options(args), synchronizer(device)
    probes, pairs = {}, {}
    for name, backend in backends.items():
        probes[f"direct-{name}"] = (lambda b=backend: (timed_generate(b, [sentence], options, sync)[0] * 1000, {}))
    with contextlib.ExitStack() as stack:
        for server in servers:
            client = stack.enter_context(idle_client(args.request_timeout_s))
            probes[f"{server.name}_http"] = http_probe(client, server.process.base_url, {"text": sentence},
                                                       server.parse)
            if server.backend in backends:
                pairs[f"{server.name}_http"] = f"direct-{server.backend}"
        if not probes:
            return
        results["idle"].update(run_idle(probes, repeats=args.idle_repeats, warmup=2, pairs=pairs))
    log.info("idle latency (median ms): %s", ", ".join(
        f"{name} {results['idle'][name]['median_ms']:.1f}" for name in probes))


def _offline_phase(args, backends: dict, dtype_backends: dict, workload, device: str,
                   results: dict[str, Any]) -> None:
    """Every backend, (unless --skip-raw) the raw engine under it and the torch backend in its other candidate
    dtypes on the same fixed batches, interleaved; once per decoding set (headline, then greedy)."""
    from benchmarks.offline import run_offline
    from benchmarks.raw import raw_engine

    engines: dict[str, Any] = {}
    for name, backend in backends.items():
        engines[f"{name} backend"] = backend
        if not args.skip_raw:
            engines[f"{name} raw"] = raw_engine(backend)
    for dtype, backend in dtype_backends.items():
        engines[f"torch {dtype} backend"] = backend
    for decoding in results["decodings"]:
        log.info("offline, num_beams %d: %s, interleaved", decoding["num_beams"], ", ".join(engines))
        sections = run_offline(engines, workload, _options(args, decoding["num_beams"]), batch_sizes=args.batch_sizes,
                               warmup=args.offline_warmup, repeats=args.offline_repeats, device=device)
        target = results if decoding["name"] == "headline" else results[decoding["name"]]
        for name, backend in backends.items():
            target["offline"][name] = {**sections[f"{name} backend"], "backend": backend.info.model_dump(mode="json")}
            if not args.skip_raw:
                target["raw"][name] = {**sections[f"{name} raw"], "engine": engines[f"{name} raw"].info}
        if dtype_backends and "torch" in backends:
            # The torch backend per dtype: the chosen one is the "torch backend" rows themselves.
            target["torch_dtypes"] = {"chosen": backends["torch"].info.dtype, "sections": {
                backends["torch"].info.dtype: sections["torch backend"],
                **{dtype: sections[f"torch {dtype} backend"] for dtype in dtype_backends}}}


def _summarization_phase(args, device: str, workload, results: dict[str, Any]) -> None:
    """The sample article through each summarizer on each measured engine as the service would
    (benchmarks/summarization.py): chunks batched, then the final pass; one model loaded at a time, while the
    servers are idle. CTranslate2 converts each summarizer once into MODELS_DIR/ct2-cache."""
    from benchmarks.summarization import load_preset, measure_models

    preset = load_preset()
    rows = measure_models(args.summary_models, workload.article, models_dir=args.models_dir, device=device,
                          dtype=args.dtype, torch_threads=args.torch_threads, preset=preset,
                          decode_tokens=args.summary_decode_tokens, num_beams=args.summary_num_beams,
                          max_input_tokens=None, repeats=args.summary_repeats, warmup=args.summary_warmup,
                          seed=args.seed, engines=args.backends, ct2_compute_type=args.ct2_compute_type)
    results["summarization"] = {"rows": rows}


@dataclasses.dataclass
class Server:
    name: str                       # service-torch | service-ctranslate2 | naive | naive-ctranslate2
    kind: str                       # service | naive
    backend: str                    # the engine it runs
    process: online.ServerProcess
    parse: online.ResponseParser
    layout: dict[str, Any] | None = None  # a naive server's engine, precision and threads (for the report)


def tune_service(args: argparse.Namespace, backend_values: dict[str, Any]) -> dict[str, Any]:
    """`model-server tune` as a subprocess configured like the service (its MODEL_SERVER_* values), at the
    run's batch sizes and decode length; the service then finds the entry in its tuning file at start."""
    env = {**os.environ, **{f"MODEL_SERVER_{name.upper()}": str(value) for name, value in backend_values.items()
                            if value is not None}}
    argv = [sys.executable, "-m", "model_server.cli", "tune", "--batch-sizes", ",".join(map(str, args.batch_sizes)),
            "--repeats", str(args.tune_repeats), "--warmup", "1", "--new-tokens", str(args.decode_tokens)]
    started = time.monotonic()
    log.info("tuning the %s service (model-server tune)", backend_values.get("backend"))
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"benchmarks: model-server tune failed:\n{done.stderr[-2000:]}")
    log.info("tune output:\n%s", done.stdout)
    return {"command": " ".join(argv[2:]), "seconds": round(time.monotonic() - started, 1), "output": done.stdout}


def _start_servers(args, values: dict[str, dict[str, Any]], model, device: str, dtype: str, log_dir: Path,
                   stack: contextlib.ExitStack) -> list[Server]:
    servers = []
    for backend, backend_values in values.items():
        env = {f"MODEL_SERVER_{name.upper()}": str(value) for name, value in backend_values.items()
               if value is not None}
        name = f"service-{backend}"
        servers.append(Server(name, "service", backend,
                              online.service_server(env, online.free_port(), log_dir / f"{name}.log", name=name),
                              online.service_parser(args.decode_tokens)))
    if not args.skip_naive:
        for name, layout in naive_layouts(args, dtype, values).items():
            servers.append(Server(name, "naive", layout["engine"],
                                  online.naive_server(naive_argv(args, model.path, device, layout), online.free_port(),
                                                      log_dir / f"{name}.log", name=name),
                                  online.naive_parser, layout))
    for server in servers:
        stack.enter_context(server.process)
    return servers


def naive_layouts(args, dtype: str, values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Server name -> engine, precision and thread layout of each naive server: per-request torch
    generate() under one lock ("naive"), and with CTranslate2 measured, one translate_batch per request
    with --naive-ct2-workers request threads and the given inter/intra threads ("naive-ctranslate2", on the
    service's converted model and compute type)."""
    layouts = {"naive": {"engine": "torch", "dtype": dtype, "workers": 1, "threads": args.torch_threads}}
    if "ctranslate2" in values:
        from model_server.backends.ctranslate2_backend import compute_type_choice, resolve_ct2_device

        ct2 = values["ctranslate2"]
        compute_type, _ = compute_type_choice(args.ct2_compute_type, resolve_ct2_device(ct2["device"]))
        layouts["naive-ctranslate2"] = {"engine": "ctranslate2", "ct2_model": ct2["ct2_model_dir"],
                                        "compute_type": compute_type, "workers": args.naive_ct2_workers,
                                        "inter_threads": args.naive_ct2_inter_threads,
                                        "intra_threads": args.naive_ct2_intra_threads}
    return layouts


def naive_argv(args, model_path: Path, device: str, layout: dict[str, Any]) -> list[str]:
    """benchmarks.naive_server's arguments for one layout (same model, decode length and default beams)."""
    argv = ["--engine", layout["engine"], "--model", str(model_path), "--decode-tokens", str(args.decode_tokens),
            "--num-beams", str(args.num_beams), "--workers", str(layout["workers"])]
    if layout["engine"] == "ctranslate2":
        from model_server.backends.ctranslate2_backend import resolve_ct2_device

        return argv + ["--device", resolve_ct2_device(device), "--ct2-model", layout["ct2_model"],
                       "--compute-type", layout["compute_type"], "--inter-threads", str(layout["inter_threads"]),
                       "--intra-threads", str(layout["intra_threads"])]
    argv += ["--device", device, "--dtype", layout["dtype"]]
    return argv + (["--threads", str(layout["threads"])] if layout["threads"] else [])


def _online_phase(args, servers: list[Server], workload, results: dict[str, Any]) -> None:
    """Each load level runs on every server back to back (levels outer, servers inner), so servers compared
    at one level are measured minutes apart at most, whatever the background load does meanwhile."""
    singles = [{"text": s, "num_beams": args.num_beams} for s in workload.sentences]
    articles = [{"text": workload.article, "num_beams": args.num_beams}]
    modes = [("single", singles, args.concurrency, args.requests_per_client),
             ("article", articles, args.article_concurrency, args.article_requests_per_client)]
    for decoding in results["decodings"][1:]:  # greedy: single sentences on the same servers, per request
        modes.append((f"single_{decoding['name']}", [{**p, "num_beams": decoding["num_beams"]} for p in singles],
                      args.concurrency, args.requests_per_client))
    level_kwargs = dict(warmup=args.warmup_requests, duration_s=args.duration_s, timeout_s=args.request_timeout_s)
    for server in servers:
        results["online"][server.name] = {"kind": server.kind, "backend": server.backend,
                                          **{mode: [] for mode, *_ in modes}}
        if server.layout:
            results["online"][server.name]["layout"] = {k: v for k, v in server.layout.items() if k != "ct2_model"}
    for mode, payloads, levels, requests in modes:
        for concurrency in levels:
            for server in servers:
                count = args.naive_requests_per_client if server.kind == "naive" and \
                    args.naive_requests_per_client else requests
                level = online.run_level(server.process.base_url, payloads, server.parse, concurrency=concurrency,
                                         requests=count, batcher_stats=server.kind == "service",
                                         server_pid=server.process.proc.pid if server.process.proc else None,
                                         **level_kwargs)
                results["online"][server.name][mode].append(level)
                log.info("%s %-7s x%-3d: %7.2f req/s %8.1f tokens/s p50 %8.1f ms p99 %8.1f ms%s%s", server.name,
                         mode, concurrency, level["requests_per_s"], level["target_tokens_per_s"],
                         level.get("latency_p50_ms") or 0, level.get("latency_p99_ms") or 0,
                         f" mean batch {level['batching']['mean_batch_size']:.1f}"
                         f" busy {level['batching']['model_utilization']:.2f}" if level.get("batching") else "",
                         f" ERRORS {level['errors']}: {level['first_error']}" if level["errors"] else "")
    for server in servers:
        results["memory"][server.name] = online.process_memory(server.process.proc.pid if server.process.proc
                                                               else None)
        if server.kind == "service":  # the batch limits it ran with and where they came from (a tuning entry?)
            results["online"][server.name]["limits"] = online.batching_limits(server.process.base_url)


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
