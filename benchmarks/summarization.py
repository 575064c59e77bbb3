"""Summarization cost: the sample article summarized by the service's own summarization backend.

    python -m benchmarks.summarization --model tiny --decode-tokens 84 --num-beams 4
    python -m benchmarks.summarization --model random-mt5-xlsum --torch-threads 1 --num-beams 1 --repeats 1 --warmup 0

The work is exactly what `SummarizationPipeline` asks of the model for one article (model_server.summarize):
the article normalized as the service does, cut by `plan_chunks` (whole paragraphs, the backend's own token
counts, the preset's prefix via `model_input`) into inputs of at most `max_input_tokens`; pass 1 is one
batched `backend.generate` of every chunk; when there was more than one chunk, the joined chunk summaries
are planned and summarized again (the final pass), until one input holds them. Only the generate calls are
timed (`benchmarks.offline.timed_generate`, CUDA synchronised); planning between passes is not.

Decoding uses the preset's settings (no_repeat_ngram_size, length_penalty) with the beam count given and a
forced length: `min_new_tokens = max_new_tokens = decode_tokens`, so every summary has exactly that many
tokens whatever the model says and runs are comparable (random weights never stop early). The chunk summaries
of the final pass are then as long as real summaries of that length (see benchmarks/mt5_models.py).
One untimed 1-token call on the first chunk precedes the runs (one-off initialisation), then `warmup`
unrecorded articles, then `repeats` measured ones; medians reported.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import statistics
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from benchmarks.report import machine_line, run_lines
from model_server.backends.base import Generated, GenerationOptions, Seq2SeqBackend

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# What the service would do
# --------------------------------------------------------------------------------------------


def load_preset(name: str | None = None, prompts_dir: Path | None = None):
    """A summary preset as the service loads it: `name` (default: the service's default preset) from
    `prompts_dir` (default: the service's default prompts directory)."""
    from model_server.presets import PresetCatalog, default_prompts_dir
    from model_server.settings import Settings

    default = Settings.model_fields["default_summary_preset"].default
    return PresetCatalog.load(prompts_dir or default_prompts_dir(), default).get(name)


def service_input_limit(backend: Seq2SeqBackend, preset) -> int:
    """Tokens per model input the service allows (SummarizationPipeline.input_limit)."""
    limit = backend.info.max_input_tokens
    return min(limit, preset.max_input_tokens) if preset.max_input_tokens else limit


def generation_options(preset, *, decode_tokens: int, num_beams: int) -> GenerationOptions:
    """The preset's decoding settings with `num_beams` and exactly `decode_tokens` tokens per summary."""
    return replace(preset.generation.options(), num_beams=num_beams, min_new_tokens=decode_tokens,
                   max_new_tokens=decode_tokens)


class _Recording:
    """The backend, keeping the outputs of its last generate call (timed_generate returns only counts)."""

    def __init__(self, backend: Seq2SeqBackend) -> None:
        self.backend = backend
        self.last: list[Generated] = []

    def generate(self, texts: Sequence[str], options: GenerationOptions) -> list[Generated]:
        self.last = self.backend.generate(texts, options)
        return self.last


def _one_article(recording: _Recording, chunks: list[str], count: Callable[[str], int], prefix: str,
                 max_input_tokens: int, options: GenerationOptions, sync) -> list[dict[str, Any]]:
    """SummarizationPipeline._summarize_text's passes, each one generate call; per pass: inputs, source
    tokens, seconds, generated tokens."""
    from benchmarks.offline import timed_generate
    from model_server.summarize import model_input, plan_chunks

    passes: list[dict[str, Any]] = []
    while True:
        seconds, produced = timed_generate(recording, [model_input(prefix, chunk) for chunk in chunks], options,
                                           sync)
        passes.append({"inputs": len(chunks), "source_tokens": [count(chunk) for chunk in chunks],
                       "seconds": seconds, "generated_tokens": produced})
        if len(chunks) == 1:
            return passes
        joined = "\n".join(out.text for out in recording.last if out.text)
        if not joined:  # the service returns an empty summary here
            return passes
        next_chunks = plan_chunks(joined, count, max_input_tokens)
        if len(next_chunks) >= len(chunks):
            raise RuntimeError(f"the summaries of {len(chunks)} chunks do not fit in fewer chunks of "
                               f"{max_input_tokens} tokens (the service fails such articles); use fewer "
                               "decode tokens or a larger input limit")
        chunks = next_chunks


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


def run_summarization(backend: Seq2SeqBackend, article: str, *, decode_tokens: int, num_beams: int,
                      max_input_tokens: int, repeats: int, warmup: int, device: str, preset=None,
                      label: str | None = None) -> dict[str, Any]:
    """Summarize `article` `warmup` + `repeats` times as the service would (see the module docstring) and
    return one result row: chunks, source tokens per input of each pass, seconds per article (median over
    `repeats`), generated tokens/s, CPU seconds per article, the generation options used.

    `preset` defaults to the service's default preset (its prefix and decoding settings); `label` (the
    row's name in tables) to the backend's model name."""
    from benchmarks.offline import synchronizer, timed_generate
    from model_server.summarize import model_input, plan_chunks
    from model_server.text import normalize_text

    if repeats < 1 or warmup < 0 or decode_tokens < 1 or num_beams < 1:
        raise ValueError("repeats, decode_tokens and num_beams must be at least 1, warmup at least 0")
    preset = preset if preset is not None else load_preset()
    options = generation_options(preset, decode_tokens=decode_tokens, num_beams=num_beams)

    def count(chunk: str) -> int:
        return backend.count_tokens(model_input(preset.prefix, chunk))

    text = normalize_text(article)  # what check_text hands the summarizer
    chunks = plan_chunks(text, count, max_input_tokens)
    if not chunks:
        raise ValueError("the article is empty")
    sync = synchronizer(device)
    recording = _Recording(backend)
    # One-off initialisation (allocator, thread pool, lazy kernels) out of the measured calls.
    timed_generate(backend, [model_input(preset.prefix, chunks[0])],
                   replace(options, min_new_tokens=1, max_new_tokens=1), sync)
    for _ in range(warmup):
        _one_article(recording, chunks, count, preset.prefix, max_input_tokens, options, sync)
    runs, cpu = [], []
    for _ in range(repeats):
        cpu_started = time.process_time()
        runs.append(_one_article(recording, chunks, count, preset.prefix, max_input_tokens, options, sync))
        cpu.append(time.process_time() - cpu_started)
    shapes = {tuple((p["inputs"], tuple(p["source_tokens"]), p["generated_tokens"]) for p in run) for run in runs}
    if len(shapes) != 1:  # greedy and beam search are deterministic: every run does the same work
        raise RuntimeError(f"the runs did different work: {sorted(shapes)}")

    per_article = [sum(p["seconds"] for p in run) for run in runs]
    median_s, median_cpu_s = statistics.median(per_article), statistics.median(cpu)
    passes = []
    for number, first in enumerate(runs[0], start=1):
        seconds = [run[number - 1]["seconds"] for run in runs]
        passes.append({"pass": number, "inputs": first["inputs"], "source_tokens": first["source_tokens"],
                       "seconds": [round(s, 6) for s in seconds], "median_s": round(statistics.median(seconds), 6),
                       "generated_tokens": first["generated_tokens"],
                       "forced_length_exact": first["generated_tokens"] == first["inputs"] * decode_tokens})
    generated = sum(p["generated_tokens"] for p in passes)
    row = {
        "label": label or backend.info.name,
        "model": backend.info.model_dump(mode="json"),
        "preset": {"name": preset.name, "version": preset.version, "prefix": preset.prefix},
        "generation": {"decode_tokens": decode_tokens, **asdict(options)},
        "max_input_tokens": max_input_tokens,
        "article_chars": len(article),
        "article_words": len(text.split()),
        "chunks": len(chunks),
        "chunk_source_tokens": passes[0]["source_tokens"],
        "final_pass": len(passes) > 1,
        "passes": passes,
        "warmup": warmup,
        "repeats": repeats,
        "seconds_per_article": [round(s, 6) for s in per_article],
        "s_per_article": round(median_s, 4),
        "generated_tokens_per_article": generated,
        "generated_tokens_per_s": round(generated / median_s, 3),
        "cpu_s_per_article": round(median_cpu_s, 4),
        "cpu_s": [round(c, 4) for c in cpu],
        "forced_length_exact": all(p["forced_length_exact"] for p in passes),
    }
    log.info("summarization %s: %d chunk(s) %s, %d pass(es), %.2f s/article, %.1f generated tokens/s",
             row["label"], row["chunks"], row["chunk_source_tokens"], len(passes), median_s,
             row["generated_tokens_per_s"])
    return row


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def input_tokens(row: dict[str, Any]) -> str:
    """'445 + 377 -> 171': the first pass's inputs, then each later pass's."""
    return " -> ".join(" + ".join(str(t) for t in p["source_tokens"]) for p in row["passes"])


def render_markdown(section: dict[str, Any]) -> list[str]:
    """Markdown lines: a heading and one table row per model measured. `section` is {"rows": [row, ...]}
    (rows from run_summarization) or a single row."""
    rows = section["rows"] if "rows" in section else [section]
    lines = ["## Summarization: the sample article through the summarization backend (no HTTP)", "",
             "Chunks of whole paragraphs batched in one generate call, then the joined chunk summaries summarized "
             "(final pass); every summary exactly the decode length; preset decoding settings otherwise.", "",
             "| model | engine | chunks | input tokens (per pass) | decode tokens x beams | s / article (median) "
             "| generated tokens/s | CPU s / article |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for row in rows:
        gen, model = row["generation"], row["model"]
        lines.append(f"| {row['label']} | {model['backend']} ({model['dtype']}) | {row['chunks']} | {input_tokens(row)} | "
                     f"{gen['decode_tokens']} x {gen['num_beams']} | {row['s_per_article']:,.2f} | "
                     f"{row['generated_tokens_per_s']:,.1f} | {row['cpu_s_per_article']:,.2f} |")
    notes = [f"{row['label']}: forced length NOT exact" for row in rows if not row["forced_length_exact"]]
    return lines + ([""] + [f"- {note}" for note in notes] if notes else []) + [""]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _threads(model: dict[str, Any]) -> Any:
    """The intra-op thread count the backend reports (torch: threads, CTranslate2: intra_threads)."""
    extra = model.get("extra") or {}
    return extra.get("threads", extra.get("intra_threads", "?"))


def _standalone_header(section: dict[str, Any]) -> list[str]:
    meta, machine = section["meta"], section["meta"]["machine"]
    lines = [f"# model_server summarization benchmark on {meta['device']}", "",
             machine_line(machine), *run_lines(meta)]
    for row in section["rows"]:
        model, under_test = row["model"], row.get("model_under_test") or {}
        lines.append(f"- {row['label']}: `{model['source']}` ({under_test.get('note', model['name'])}); "
                     f"{model['backend']} {model['dtype']}, {_threads(model)} threads; preset "
                     f"{row['preset']['name']} v{row['preset']['version']}; {row['repeats']} measured article(s) "
                     f"after {row['warmup']} warm-up")
    return lines + [""]


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.mt5_models import RANDOM_MT5_XLSUM

    p = argparse.ArgumentParser(prog="python -m benchmarks.summarization", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", default=None,
                   help=f"'{RANDOM_MT5_XLSUM}' (real XLSum architecture, random weights, built once), 'tiny' (test "
                        f"mT5) or an mT5 model directory; repeat for several rows [{RANDOM_MT5_XLSUM}]")
    p.add_argument("--backend", action="append", choices=["torch", "ctranslate2"], default=None,
                   help="engine of the summarizer, repeat for both (ctranslate2 converts into MODELS_DIR/ct2-cache "
                        "on first use) [torch]")
    p.add_argument("--ct2-compute-type", default="auto", help="CTranslate2 compute type (auto = int8 on cpu)")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where built models are kept")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                   help="auto = the service's rule for the summarizer (float32 on cpu, bfloat16 on cuda)")
    p.add_argument("--torch-threads", type=int, default=None, help="torch intra-op threads [torch's choice]")
    p.add_argument("--preset", default=None, help="summary preset [the service's default]")
    p.add_argument("--prompts-dir", type=Path, default=None, help="preset directory [the service's default]")
    p.add_argument("--decode-tokens", type=int, default=None,
                   help="every summary decodes exactly this many tokens [the preset's max_new_tokens]")
    p.add_argument("--num-beams", type=int, default=None, help="beam size [the preset's]")
    p.add_argument("--max-input-tokens", type=int, default=None,
                   help="tokens per model input [the service's limit: the model's, capped by the preset]")
    p.add_argument("--repeats", type=int, default=3, help="measured articles per model")
    p.add_argument("--warmup", type=int, default=1, help="unrecorded articles per model")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the random model and of torch")
    return p


def load_backend(model_path: Path, *, models_dir: Path, device: str, dtype: str, torch_threads: int | None,
                 engine: str = "torch", ct2_compute_type: str = "auto"):
    """The summarization backend exactly as the service loads it (load_summarization_backend), on `engine`:
    torch, or ctranslate2 converted on first use into models_dir/ct2-cache (the service's convert-on-start),
    with `torch_threads` as its cores (ct2_thread_layout)."""
    from model_server.services import load_summarization_backend
    from model_server.settings import Settings

    values: dict[str, Any] = dict(summarization_model=str(model_path), models_dir=str(models_dir), device=device,
                                  dtype=dtype, log_level="warning", summarization_backend=engine)
    if torch_threads:
        from benchmarks.run import ct2_thread_values

        values.update(torch_threads=torch_threads, **ct2_thread_values(device, torch_threads))
    if engine == "ctranslate2":
        values.update(ct2_convert_on_start=True, ct2_cache_dir=str(Path(models_dir) / "ct2-cache"),
                      ct2_compute_type=ct2_compute_type)
    return load_summarization_backend(Settings(**values))


def measure_models(specs: Sequence[str], article: str, *, models_dir: Path, device: str, dtype: str,
                   torch_threads: int | None, preset, decode_tokens: int | None, num_beams: int | None,
                   max_input_tokens: int | None, repeats: int, warmup: int, seed: int,
                   engines: Sequence[str] = ("torch",), ct2_compute_type: str = "auto") -> list[dict[str, Any]]:
    """One `run_summarization` row per model spec (tiny | random-mt5-xlsum | a directory) and engine (torch,
    ctranslate2), each model loaded as the service loads it and freed before the next. None for
    decode_tokens / num_beams / max_input_tokens = the preset's max_new_tokens / num_beams / the service's
    input limit."""
    import torch

    from benchmarks.mt5_models import resolve_summarization_model

    decode_tokens = decode_tokens or preset.generation.max_new_tokens
    num_beams = num_beams or preset.generation.num_beams
    rows = []
    for spec, engine in ((spec, engine) for spec in specs for engine in engines):
        torch.manual_seed(seed)
        model = resolve_summarization_model(spec, models_dir, seed=seed)
        backend = load_backend(model.path, models_dir=models_dir, device=device, dtype=dtype,
                               torch_threads=torch_threads, engine=engine, ct2_compute_type=ct2_compute_type)
        try:
            row = run_summarization(backend, article, decode_tokens=decode_tokens, num_beams=num_beams,
                                    max_input_tokens=max_input_tokens or service_input_limit(backend, preset),
                                    repeats=repeats, warmup=warmup, device=device, preset=preset,
                                    label=model.label)
        finally:
            backend.close()
        row["model_under_test"] = {"label": model.label, "path": str(model.path), "kind": model.kind,
                                   "note": model.note}
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from benchmarks import machine
    from benchmarks.mt5_models import RANDOM_MT5_XLSUM
    from benchmarks.workload import SAMPLE_ARTICLE
    from model_server.backends.loading import resolve_device
    from model_server.settings import Device

    started_wall, started = datetime.now(timezone.utc), time.monotonic()
    load_before = machine.load_average()
    device = resolve_device(Device(args.device))
    preset = load_preset(args.preset, args.prompts_dir)
    article = SAMPLE_ARTICLE.read_text(encoding="utf-8")
    rows = measure_models(args.model or [RANDOM_MT5_XLSUM], article, models_dir=args.models_dir, device=device,
                          dtype=args.dtype, torch_threads=args.torch_threads, preset=preset,
                          decode_tokens=args.decode_tokens, num_beams=args.num_beams,
                          max_input_tokens=args.max_input_tokens, repeats=args.repeats, warmup=args.warmup,
                          seed=args.seed, engines=args.backend or ["torch"], ct2_compute_type=args.ct2_compute_type)
    section = {
        "rows": rows,
        "meta": {"started_utc": started_wall.isoformat(timespec="seconds"),
                 "duration_s": round(time.monotonic() - started, 1),
                 "command": "python -m benchmarks.summarization " + shlex.join(argv),
                 "article": str(SAMPLE_ARTICLE), "device": device, "machine": machine.machine_info(device),
                 "load_before": load_before, "load_after": machine.load_average(), "git": machine.git_info()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    labels = "+".join("".join(c if c.isalnum() or c in "-_" else "-" for c in row["label"]) for row in rows)
    stem = args.out / f"{started_wall.strftime('%Y%m%dT%H%M%SZ')}-{device}-summarization-{labels}"
    section["files"] = {suffix.lstrip("."): str(stem.with_name(stem.name + suffix)) for suffix in (".json", ".md")}
    markdown = "\n".join(_standalone_header(section) + render_markdown(section))
    for suffix, text in ((".md", markdown + "\n"), (".json", json.dumps(section, indent=2, ensure_ascii=False) + "\n")):
        path = stem.with_name(stem.name + suffix)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    print(markdown)
    log.info("results: %s (+ .md)", section["files"]["json"])
    return section


if __name__ == "__main__":
    main()
