"""`model-server` command line: the service, its batch commands and its model tools.

serve, worker, translate, summarize, article, download, convert, trim-vocab, check-vocab, build-tiny, eval,
eval-summaries, tune.

Every setting of `Settings` is also a flag of `serve`, `worker`, `translate`, `summarize`, `article`, `eval` and `tune`
(generated, so flags, environment variables and defaults can never disagree); flags override
`MODEL_SERVER_*` environment variables. Every command fails the same way (`cli_common.run_command`): one
line on stderr naming the problem and the fix, exit status 1 (2 for bad arguments); `--debug` adds the
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from model_server.allocator import apply_arena_cap
from model_server.backends.ct2_convert import QUANTIZATIONS as CT2_QUANTIZATIONS
from model_server.cli_common import (USAGE_ERROR, CommandFailed, add_settings_flags, debug_flag, load_services,
                                     prepare_output, read_input, run_command, settings_from)
from model_server.cli_summaries import register as register_summary_commands
from model_server.cli_vocab import register as register_vocab_commands
from model_server.errors import ServiceError
from model_server.settings import Settings

log = logging.getLogger("model_server")

_settings_from = settings_from  # the name tests/test_model_choice.py and test_ctranslate2.py import


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from model_server.api.app import create_app
    from model_server.api.auth import exposure_warning, load_api_keys
    from model_server.logs import configure_logging, logging_config

    settings = settings_from(args)
    apply_arena_cap(settings.malloc_arena_max)  # before any thread or model allocates
    try:
        load_api_keys(settings)  # a bad key file fails now, naming its line, before any model loads
    except ValueError as exc:
        raise CommandFailed(f"invalid settings: {exc}", USAGE_ERROR) from None
    configure_logging(settings)  # model loading already logs in the configured format
    warning = exposure_warning(settings)
    if warning:
        log.warning(warning)
    services = load_services(settings)  # fail fast, with one clear message, before binding the port
    app = create_app(settings, services)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=int(settings.request_timeout_s),
                log_config=logging_config(settings), access_log=False)  # JSON/text lines; our own access log
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from model_server.logs import configure_logging
    from model_server.worker import run_worker

    settings = settings_from(args)
    if not settings.state_url:
        raise CommandFailed("model-server worker has no job queue: set MODEL_SERVER_STATE_URL=redis://HOST:6379/0, "
                            "the API replicas' state Redis (without it `model-server serve` runs jobs itself)",
                            USAGE_ERROR)
    apply_arena_cap(settings.malloc_arena_max)
    configure_logging(settings)
    services = load_services(settings, summarization=False)  # jobs translate; a worker never summarizes
    return run_worker(settings, services)


def cmd_translate(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    apply_arena_cap(settings.malloc_arena_max)
    if args.input and Path(args.input).suffix.lower() == ".docx":
        return _translate_docx(args, settings)
    text = read_input(args.input)
    output = prepare_output(args.output) if args.output else None
    services = load_services(settings, summarization=False)

    async def run():
        services.start()
        try:
            pipeline = services.translator
            return await pipeline.translate([text], pipeline.options())
        finally:
            await services.close()

    results, timings = asyncio.run(run())
    result = results[0]
    if result.error is not None:
        raise ServiceError(result.error.code, result.error.message)
    if args.json:
        info = services.translation.backend.info
        payload = {"result": result.model_dump(), "model": info.model_dump(), "timing_ms": timings.to_dict()}
        printed = json.dumps(payload, ensure_ascii=False, indent=2) + "\n"
    else:
        printed = result.translation + "\n"
    if output is None:
        sys.stdout.write(printed)
    else:
        output.write_text(printed, encoding="utf-8")
    return 0


def _translate_docx(args: argparse.Namespace, settings: Settings) -> int:
    """A Word file in, a Word file out (model_server/docx_file.py), through the one whole-file interface."""
    from model_server.document_files import DocumentKind, open_document, translate_opened

    if not args.output:
        raise CommandFailed(f"{args.input} is a Word file, and its translation is one too: give the file to write "
                            "with -o OUT.docx", USAGE_ERROR)
    if args.json:
        raise CommandFailed("--json prints the sentences of a text; a .docx is translated into the -o file: "
                            "leave out --json", USAGE_ERROR)
    try:
        opened = open_document(Path(args.input).read_bytes(), DocumentKind.docx, settings)  # before the model loads
    except ServiceError as exc:
        raise CommandFailed(f"{args.input}: {exc.message}") from None
    output = prepare_output(args.output)
    services = load_services(settings, summarization=False)

    async def run() -> bytes:
        services.start()
        try:
            pipeline = services.translator
            return await translate_opened(pipeline, opened, pipeline.options())
        finally:
            await services.close()

    output.write_bytes(asyncio.run(run()))
    sys.stdout.write(f"{output}: {len(opened.texts)} Arabic paragraphs translated\n")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from huggingface_hub import snapshot_download

    from model_server.backends.loading import hub_dirname, looks_like_path, require_hub

    if looks_like_path(args.model):
        raise CommandFailed(f"download takes a hub id such as Helsinki-NLP/opus-mt-ar-en, not a path "
                            f"({args.model}); a model directory needs no download: use it directly", USAGE_ERROR)
    require_hub(args.model)  # offline: one sentence with both ways to provide the model, at once
    target = prepare_output(Path(args.models_dir), directory=True) / hub_dirname(args.model)
    print(f"downloading {args.model} to {target} ...", file=sys.stderr)
    snapshot_download(args.model, local_dir=target, revision=args.revision,
                      allow_patterns=["*.json", "*.spm", "*.model", "*.txt", "*.safetensors", "*.bin"]
                      if not args.all_files else None)
    print(f"done. Serve it offline with MODEL_SERVER_MODELS_DIR={args.models_dir} "
          f"(the id {args.model} then resolves to {target}).", file=sys.stderr)
    return 0


def cmd_build_tiny(args: argparse.Namespace) -> int:
    from model_server.tiny_models import build_tiny_marian, build_tiny_mt5, ensure_tiny_marian, ensure_tiny_mt5

    settings = Settings(models_dir=Path(args.models_dir)) if args.models_dir else Settings()
    target = settings.tiny_marian_dir()
    path = build_tiny_marian(target) if args.force else ensure_tiny_marian(target)
    print(f"tiny test model (NOT a translator) ready at {path}")
    target = settings.tiny_mt5_dir()
    path = build_tiny_mt5(target) if args.force else ensure_tiny_mt5(target)
    print(f"tiny test summarizer (NOT a summarizer) ready at {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from model_server.evaluation import Variant, evaluate, render_markdown

    try:
        variants = [Variant.parse(spec) for spec in args.variant]
    except ValueError as exc:  # a usage error, in one line (argparse would print every settings flag)
        raise CommandFailed(str(exc), USAGE_ERROR) from None
    base = settings_from(args)
    out = prepare_output(args.out, directory=True) if args.out else None
    report = evaluate(Path(args.source), Path(args.reference), variants, base)
    table = render_markdown(report)
    sys.stdout.write(table)
    if out is not None:
        (out / "eval.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        (out / "eval.md").write_text(table, encoding="utf-8")
        print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}", file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from model_server.backends.ct2_convert import convert, read_metadata

    models_dir = Path(args.models_dir) if args.models_dir else Settings().models_dir
    path = convert(args.model, args.out_dir, args.quantization, force=args.force, models_dir=models_dir,
                   setting_example=f"`model-server convert /models/opus-mt-ar-en {args.out_dir}`")
    if read_metadata(path)["architecture"] == "marian":
        serve = (f"MODEL_SERVER_BACKEND=ctranslate2 MODEL_SERVER_CT2_MODEL_DIR={path} "
                 f"MODEL_SERVER_TRANSLATION_MODEL={args.model}")
    else:  # (m)T5: a summarizer
        serve = (f"MODEL_SERVER_SUMMARIZATION_BACKEND=ctranslate2 MODEL_SERVER_CT2_SUMMARIZATION_MODEL_DIR={path} "
                 f"MODEL_SERVER_SUMMARIZATION_MODEL={args.model}")
    print(f"converted {args.model} to {path} ({args.quantization}). Serve it with {serve}", file=sys.stderr)
    return 0


def cmd_eval_summaries(args: argparse.Namespace) -> int:
    from model_server.evaluation import evaluate_summaries

    base = settings_from(args)
    out = prepare_output(args.out) if args.out else None
    report = evaluate_summaries(Path(args.pairs), base, lang=args.lang, preset=args.preset)
    test = " (TEST MODEL)" if report["model"]["test_model"] else ""
    print(f"{report['documents']} documents ({report['lang']}), preset {report['preset']}, "
          f"model {report['model']['name']}{test}: ROUGE-1 {report['rouge1']:.2f}  ROUGE-2 {report['rouge2']:.2f}  "
          f"ROUGE-L {report['rougeL']:.2f}  ({report['seconds']} s)")
    if out is not None:
        out.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


def batch_sizes_arg(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        sizes = ()
    if not sizes or sizes[0] < 1:
        raise CommandFailed(f"--batch-sizes {text!r}: give positive integers separated by commas, e.g. 1,4,8,16,32",
                            USAGE_ERROR)
    return sizes


def cmd_tune(args: argparse.Namespace) -> int:
    from model_server.tuning import TuneConfig, read_entries

    settings = settings_from(args)
    config = TuneConfig(batch_sizes=batch_sizes_arg(args.batch_sizes), repeats=args.repeats, warmup=args.warmup,
                        new_tokens=args.new_tokens, max_latency_s=settings.tune_max_batch_latency_s,
                        tolerance=args.tolerance)
    if config.repeats < 1 or config.warmup < 0 or config.new_tokens < 1 or not 0 <= config.tolerance < 1:
        raise CommandFailed("--repeats and --new-tokens must be >= 1, --warmup >= 0, --tolerance in [0, 1)",
                            USAGE_ERROR)
    path = settings.tuning_path()
    read_entries(path)  # a corrupt file fails now, before minutes of measuring
    prepare_output(path)
    candidates = _layout_candidates(settings, args)
    if candidates:
        return _tune_layouts(settings, candidates, config, path, args)
    _tune_one(settings, config, path, args)
    return 0


def _layout_candidates(settings: Settings, args: argparse.Namespace) -> list[tuple[str, dict, dict]]:
    """(label, settings update, tuning-file record) of each layout `tune` measures, the auto rule's first;
    [] = only the settings as given. CTranslate2 on CPU with its thread layout left to the service (neither ct2 thread setting set):
    the candidate thread layouts; torch with torch_attention=auto: both attention implementations."""
    from model_server.backends.ctranslate2_backend import resolve_ct2_device
    from model_server.backends.hardware import usable_cpus
    from model_server.settings import Backend, TorchAttention
    from model_server.tuning import attention_candidates, layout_candidates

    if args.no_layouts:
        return []
    if settings.backend is Backend.ctranslate2:
        if settings.ct2_inter_threads or settings.ct2_intra_threads or resolve_ct2_device(settings.device.value) != "cpu":
            return []
        return [(f"{inter} x {intra}", {"ct2_inter_threads": inter, "ct2_intra_threads": intra},
                 {"inter_threads": inter, "intra_threads": intra}) for inter, intra in layout_candidates(usable_cpus())]
    if settings.torch_attention is not TorchAttention.auto:
        return []
    return [(choice, {"torch_attention": TorchAttention(choice)}, {"attention": choice})
            for choice in attention_candidates()]


def _tune_one(settings: Settings, config, path: Path, args: argparse.Namespace):
    """Measure the batch limits of the model as `settings` load it; write and print its entry."""
    from model_server.services import load_translation_backend
    from model_server.tuning import render_table, tune, write_entry

    backend = load_translation_backend(settings)
    try:
        num_beams = settings.num_beams or backend.default_options().num_beams
        key, entry = tune(backend, num_beams, config, progress=sys.stderr.isatty() or args.progress)
    finally:
        backend.close()
    write_entry(path, key, entry)
    info = backend.info
    attention = f", {info.extra['attention']} attention" if info.extra.get("attention") else ""
    sys.stdout.write(f"{info.name} on {info.backend}/{info.device} {info.dtype}, beam {num_beams}, "
                     f"{config.new_tokens} target tokens per segment, threads {entry['fingerprint']['threads']}"
                     f"{attention}; {entry['fingerprint']['hardware']}\n\n")
    sys.stdout.write(render_table(entry))
    limits = ", ".join(f"{name} {value}" for name, value in entry["limits"].items())
    sys.stdout.write(f"\nchosen: {limits} (smallest batch within {config.tolerance:.0%} of the best throughput "
                     f"and under {config.max_latency_s:g} s per call)\nwrote entry {key} to {path}\n\n")
    return info, num_beams, entry


# Per engine: what its layouts choose, and the tune table's first column.
_LAYOUT_KINDS = {"ctranslate2": ("thread layout", "replicas x threads"), "torch": ("attention", "attention")}


def _tune_layouts(settings: Settings, candidates: list[tuple[str, dict, dict]], config, path: Path,
                  args: argparse.Namespace) -> int:
    """Tune each candidate layout (CTranslate2 thread layouts or torch attention implementations), then record
    the one whose chosen batch was fastest; the server loads that layout (and its limits) from then on."""
    import datetime as dt

    from model_server.tuning import choose_layout, layout_key_for, write_layout

    throughputs: dict[str, float] = {}
    for label, update, _ in candidates:
        sys.stdout.write(f"--- layout: {label}\n")
        info, num_beams, entry = _tune_one(settings.model_copy(update=update), config, path, args)
        chosen = next(m for m in entry["measurements"] if m["batch_size"] == entry["batch_size"])
        throughputs[label] = chosen["tokens_per_s"]
    label = choose_layout(throughputs, preferred=candidates[0][0])
    record = next(record for name, _, record in candidates if name == label)
    precision = info.extra["requested_compute_type"] if info.backend == "ctranslate2" else info.dtype
    key = layout_key_for(info.backend, info.name, info.source, precision, info.device)
    write_layout(path, key, {**record, "num_beams": num_beams,
                             "tokens_per_s": {name: round(value, 1) for name, value in throughputs.items()},
                             "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    kind, column = _LAYOUT_KINDS[info.backend]
    rows = "".join(f"| {name} | {value:.1f}{' <- chosen' if name == label else ''} |\n"
                   for name, value in throughputs.items())
    sys.stdout.write(f"| {column} | tokens/s at its chosen batch |\n|---|---:|\n" + rows)
    sys.stdout.write(f"\n{kind}: {label} (the auto rule's {candidates[0][0]} unless another was more than 3% "
                     f"faster); wrote {key} to {path}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = [debug_flag()]  # `--debug` after the sub-command too
    parser = argparse.ArgumentParser(prog="model-server", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", default=False,
                        help="on failure print the full traceback (default: one line naming the problem and fix)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service", parents=common)
    add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="load the models and run queued jobs (needs state_url; docs/scaling.md)",
                            parents=common)
    add_settings_flags(worker)
    worker.set_defaults(func=cmd_worker)

    translate = sub.add_parser("translate", help="translate a file (or stdin) to stdout, or a .docx to a .docx",
                               parents=common)
    translate.add_argument("input", nargs="?", help="UTF-8 Arabic text file, or a Word .docx (needs -o); "
                           "'-' or omitted = stdin")
    translate.add_argument("-o", "--output", help="write the translation to this file instead of stdout (a .docx "
                           "input: the translated .docx, required)")
    translate.add_argument("--json", action="store_true", help="print sentences, scores and timings as JSON")
    add_settings_flags(translate)
    translate.set_defaults(func=cmd_translate)
    register_summary_commands(sub, parents=common)  # summarize, article

    download = sub.add_parser("download", help="prefetch a hub model into a directory for offline/Docker use",
                              parents=common)
    download.add_argument("model", help="hub id, e.g. Helsinki-NLP/opus-mt-ar-en")
    download.add_argument("--models-dir", default="models", help="where to store it (default: models)")
    download.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    download.add_argument("--all-files", action="store_true", help="fetch every file, not just weights+tokenizer")
    download.set_defaults(func=cmd_download)

    convert = sub.add_parser("convert", help="convert a model for backend=ctranslate2 (docs/ctranslate2.md)",
                             parents=common)
    convert.add_argument("model", help="model directory or hub id, e.g. Helsinki-NLP/opus-mt-ar-en")
    convert.add_argument("out_dir", help="directory to write; point MODEL_SERVER_CT2_MODEL_DIR (or, for mT5, "
                         "MODEL_SERVER_CT2_SUMMARIZATION_MODEL_DIR) at it")
    convert.add_argument("--quantization", choices=CT2_QUANTIZATIONS, default="int8",
                         help="weight type stored (default: int8; CTranslate2 converts at load time to ct2_compute_type)")
    convert.add_argument("--force", action="store_true", help="replace OUT_DIR if it holds a previous conversion")
    convert.add_argument("--models-dir", default=None,
                         help="where hub ids are looked up first (default: the models_dir setting)")
    convert.set_defaults(func=cmd_convert)
    register_vocab_commands(sub, parents=common)  # trim-vocab, check-vocab

    tiny = sub.add_parser("build-tiny", help="build the tiny test model (a fixture, not a translator)",
                          parents=common)
    tiny.add_argument("--models-dir", default=None, help="default: the models_dir setting")
    tiny.add_argument("--force", action="store_true", help="rebuild even if present")
    tiny.set_defaults(func=cmd_build_tiny)

    evaluate = sub.add_parser("eval", help="score translations of a line-aligned test set (BLEU, chrF, flags)",
                              parents=common)
    evaluate.add_argument("source", help="Arabic source file, one segment per line")
    evaluate.add_argument("reference", help="English reference file, line-aligned with the source")
    evaluate.add_argument("--variant", action="append", default=[], metavar="[NAME:]KEY=VALUE,...",
                          help="setting overrides of one variant, e.g. 'ct2:backend=ctranslate2'; repeat to "
                               "compare variants side by side (default: one variant with the settings as given)")
    evaluate.add_argument("--out", default=None, help="directory for eval.json and eval.md")
    add_settings_flags(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    eval_summaries = sub.add_parser("eval-summaries", help="ROUGE-1/2/L of summaries against references",
                                    parents=common)
    eval_summaries.add_argument("pairs", help='JSON Lines: {"document": ..., "summary": ...} per line')
    eval_summaries.add_argument("--lang", choices=["ar", "en"], default="ar", help="language of the documents")
    eval_summaries.add_argument("--preset", default=None, help="summary preset (default: the setting)")
    eval_summaries.add_argument("--out", default=None, help="write the JSON report (with every summary) here")
    add_settings_flags(eval_summaries)
    eval_summaries.set_defaults(func=cmd_eval_summaries)

    tuner = sub.add_parser("tune", help="measure the batch limits of the configured model on this machine and "
                           "write them to the tuning file the server reads", parents=common)
    tuner.add_argument("--batch-sizes", default="1,4,8,16,32,64",
                       help="segments per batch to measure (default: 1,4,8,16,32,64; stops early past the peak)")
    tuner.add_argument("--repeats", type=int, default=3, help="measured calls per batch size, median (default: 3)")
    tuner.add_argument("--warmup", type=int, default=1, help="unmeasured calls per batch size first (default: 1)")
    tuner.add_argument("--new-tokens", type=int, default=40,
                       help="forced output length per segment, as the benchmarks' min_new_tokens (default: 40)")
    tuner.add_argument("--tolerance", type=float, default=0.05,
                       help="pick the smallest batch within this fraction of the best throughput (default: 0.05)")
    tuner.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is no terminal")
    tuner.add_argument("--no-layouts", action="store_true",
                       help="measure only the auto layout, not each candidate (CTranslate2 on CPU: thread layouts; "
                       "torch: attention implementations)")
    add_settings_flags(tuner)
    tuner.set_defaults(func=cmd_tune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A failure prints one line (problem and fix) on stderr and raises SystemExit with
    status 1 (2 for bad arguments, as argparse does); `--debug` prints the traceback first."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_command(args.func, args, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
