"""`model-server` command line: serve, translate, summarize, article, download, convert, build-tiny.

Every setting of `Settings` is also a flag of `serve` and `translate` (generated, so flags, environment
variables and defaults can never disagree); flags override `MODEL_SERVER_*` environment variables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from pydantic import ValidationError

from model_server.backends.ct2_convert import QUANTIZATIONS as CT2_QUANTIZATIONS
from model_server.cli_summaries import register as register_summary_commands
from model_server.errors import ServiceError
from model_server.settings import Settings

log = logging.getLogger("model_server")


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("settings (flag > MODEL_SERVER_* environment variable > default)")
    for name, field in Settings.model_fields.items():
        default = field.default.value if hasattr(field.default, "value") else field.default
        group.add_argument(f"--{name.replace('_', '-')}", dest=f"setting_{name}", default=argparse.SUPPRESS,
                           metavar=name.upper(),
                           help=f"{field.description or ''} [env MODEL_SERVER_{name.upper()}; default {default}]")


def _settings_from(args: argparse.Namespace) -> Settings:
    overrides = {key.removeprefix("setting_"): value for key, value in vars(args).items()
                 if key.startswith("setting_")}
    try:
        # Structured settings (e.g. extra_translation_models) are given as JSON, as in the environment.
        for name, value in overrides.items():
            if Settings.model_fields[name].annotation in (dict[str, str], list[str]):
                overrides[name] = json.loads(value)
        return Settings(**overrides)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"model-server: invalid settings: a JSON value does not parse: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise SystemExit(f"model-server: invalid settings: {problems}") from None


def _load_services(settings: Settings, *, summarization: bool | None = None):
    from model_server.services import Services

    try:
        return Services.load(settings, summarization=summarization)
    except ServiceError as exc:
        raise SystemExit(f"model-server: {exc.message}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from model_server.api.app import create_app
    from model_server.logs import configure_logging, logging_config

    from model_server.api.auth import load_api_keys

    settings = _settings_from(args)
    try:
        load_api_keys(settings)  # a bad key file fails now, naming its line, before any model loads
    except ValueError as exc:
        raise SystemExit(f"model-server: invalid settings: {exc}") from None
    configure_logging(settings)  # model loading already logs in the configured format
    services = _load_services(settings)  # fail fast, with one clear message, before binding the port
    app = create_app(settings, services)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=int(settings.request_timeout_s),
                log_config=logging_config(settings), access_log=False)  # JSON/text lines; our own access log
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    settings = _settings_from(args)
    text = sys.stdin.read() if args.input in (None, "-") else Path(args.input).read_text(encoding="utf-8")
    services = _load_services(settings, summarization=False)

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
        print(f"model-server: {result.error.code}: {result.error.message}", file=sys.stderr)
        return 1
    if args.json:
        info = services.translation.backend.info
        payload = {"result": result.model_dump(), "model": info.model_dump(), "timing_ms": timings.to_dict()}
        json.dump(payload, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(result.translation + "\n")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from huggingface_hub import snapshot_download

    from model_server.backends.loading import hub_dirname

    target = Path(args.models_dir) / hub_dirname(args.model)
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

    base = _settings_from(args)
    try:
        variants = [Variant.parse(spec) for spec in args.variant]
        report = evaluate(Path(args.source), Path(args.reference), variants, base)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"model-server eval: {exc}") from None
    except ServiceError as exc:
        raise SystemExit(f"model-server eval: {exc.message}") from None
    table = render_markdown(report)
    sys.stdout.write(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
        (out / "eval.md").write_text(table, encoding="utf-8")
        print(f"wrote {out / 'eval.json'} and {out / 'eval.md'}", file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from model_server.backends.ct2_convert import convert, read_metadata

    try:
        path = convert(args.model, args.out_dir, args.quantization, force=args.force, models_dir=Path(args.models_dir))
    except ServiceError as exc:
        raise SystemExit(f"model-server: {exc.message}") from None
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

    base = _settings_from(args)
    try:
        report = evaluate_summaries(Path(args.pairs), base, lang=args.lang, preset=args.preset)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"model-server eval-summaries: {exc}") from None
    except ServiceError as exc:
        raise SystemExit(f"model-server eval-summaries: {exc.message}") from None
    test = " (TEST MODEL)" if report["model"]["test_model"] else ""
    print(f"{report['documents']} documents ({report['lang']}), preset {report['preset']}, "
          f"model {report['model']['name']}{test}: ROUGE-1 {report['rouge1']:.2f}  ROUGE-2 {report['rouge2']:.2f}  "
          f"ROUGE-L {report['rougeL']:.2f}  ({report['seconds']} s)")
    if args.out:
        Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model-server", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    _add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    translate = sub.add_parser("translate", help="translate a file (or stdin) to stdout")
    translate.add_argument("input", nargs="?", help="UTF-8 Arabic text file; '-' or omitted = stdin")
    translate.add_argument("--json", action="store_true", help="print sentences, scores and timings as JSON")
    _add_settings_flags(translate)
    translate.set_defaults(func=cmd_translate)
    register_summary_commands(sub)  # summarize, article

    download = sub.add_parser("download", help="prefetch a hub model into a directory for offline/Docker use")
    download.add_argument("model", help="hub id, e.g. Helsinki-NLP/opus-mt-ar-en")
    download.add_argument("--models-dir", default="models", help="where to store it (default: models)")
    download.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    download.add_argument("--all-files", action="store_true", help="fetch every file, not just weights+tokenizer")
    download.set_defaults(func=cmd_download)

    convert = sub.add_parser("convert", help="convert a model for backend=ctranslate2 (docs/ctranslate2.md)")
    convert.add_argument("model", help="model directory or hub id, e.g. Helsinki-NLP/opus-mt-ar-en")
    convert.add_argument("out_dir", help="directory to write; point MODEL_SERVER_CT2_MODEL_DIR (or, for mT5, "
                         "MODEL_SERVER_CT2_SUMMARIZATION_MODEL_DIR) at it")
    convert.add_argument("--quantization", choices=CT2_QUANTIZATIONS, default="int8",
                         help="weight type stored (default: int8; CTranslate2 converts at load time to ct2_compute_type)")
    convert.add_argument("--force", action="store_true", help="replace OUT_DIR if it holds a previous conversion")
    convert.add_argument("--models-dir", default="models", help="where hub ids are looked up first (default: models)")
    convert.set_defaults(func=cmd_convert)

    tiny = sub.add_parser("build-tiny", help="build the tiny test model (a fixture, not a translator)")
    tiny.add_argument("--models-dir", default=None, help="default: the models_dir setting")
    tiny.add_argument("--force", action="store_true", help="rebuild even if present")
    tiny.set_defaults(func=cmd_build_tiny)
    evaluate = sub.add_parser("eval", help="score translations of a line-aligned test set (BLEU, chrF, flags)")
    evaluate.add_argument("source", help="Arabic source file, one segment per line")
    evaluate.add_argument("reference", help="English reference file, line-aligned with the source")
    evaluate.add_argument("--variant", action="append", default=[], metavar="[NAME:]KEY=VALUE,...",
                          help="setting overrides of one variant, e.g. 'ct2:backend=ctranslate2'; repeat to "
                               "compare variants side by side (default: one variant with the settings as given)")
    evaluate.add_argument("--out", default=None, help="directory for eval.json and eval.md")
    _add_settings_flags(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    eval_summaries = sub.add_parser("eval-summaries", help="ROUGE-1/2/L of summaries against references")
    eval_summaries.add_argument("pairs", help='JSON Lines: {"document": ..., "summary": ...} per line')
    eval_summaries.add_argument("--lang", choices=["ar", "en"], default="ar", help="language of the documents")
    eval_summaries.add_argument("--preset", default=None, help="summary preset (default: the setting)")
    eval_summaries.add_argument("--out", default=None, help="write the JSON report (with every summary) here")
    _add_settings_flags(eval_summaries)
    eval_summaries.set_defaults(func=cmd_eval_summaries)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
