"""`model-server trim-vocab` and `model-server check-vocab`: a summarizer cut down to the Arabic and English
pieces, and the check that two ways of running a model give the same outputs.

Registered by `model_server.cli.build_parser`; the work is in `model_server.trim_vocab` and
`model_server.check_vocab`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from model_server.cli_common import (USAGE_ERROR, CommandFailed, add_settings_flags, prepare_output, read_input,
                                     settings_from)
from model_server.settings import DType, Settings


def register(sub: Any, *, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    from model_server.check_vocab import DEFAULT_BATCH_SIZE, TASKS
    from model_server.trim_vocab import DEFAULT_WORDS_PER_LANGUAGE

    trim = sub.add_parser("trim-vocab", help="write a copy of an mT5/T5 summarizer that keeps only the vocabulary "
                          "Arabic and English need (smaller, faster)", parents=list(parents))
    trim.add_argument("model", help="mT5/T5 model directory or hub id, e.g. csebuetnlp/mT5_multilingual_XLSum")
    trim.add_argument("out_dir", help="directory to write; point MODEL_SERVER_SUMMARIZATION_MODEL at it")
    trim.add_argument("--corpus", action="append", default=[], metavar="FILE",
                      help="UTF-8 text like what will be summarised (repeatable): every piece it uses is kept")
    trim.add_argument("--words", type=int, default=DEFAULT_WORDS_PER_LANGUAGE, metavar="N",
                      help=f"keep the pieces of wordfreq's N most frequent Arabic and English words each "
                           f"(default: {DEFAULT_WORDS_PER_LANGUAGE}; 0: the corpus only)")
    trim.add_argument("--force", action="store_true", help="replace OUT_DIR if it holds a previous trim-vocab output")
    trim.add_argument("--models-dir", default=None, help="where hub ids are looked up first (default: the "
                                                         "models_dir setting)")
    trim.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is no terminal")
    trim.set_defaults(func=cmd_trim_vocab)

    check = sub.add_parser("check-vocab", help="compare a model's outputs on a corpus in two ways of running it "
                           "(original vs trimmed, or two dtypes): exact-match rate, score differences, every "
                           "differing output; exit status 1 when any output differs", parents=list(parents))
    check.add_argument("corpus", nargs="?", help="UTF-8 file, one input per line; '-' = stdin (default: the "
                                                 "sentences of the sample article in model_server/data/)")
    check.add_argument("--task", choices=TASKS, default="summarization", help="which model (default: summarization)")
    check.add_argument("--against", metavar="MODEL", default=None,
                       help="side B runs this model instead (e.g. the trim-vocab output)")
    dtypes = [dtype.value for dtype in DType]
    check.add_argument("--dtype-a", choices=dtypes, default=None, help="side A's dtype (default: the setting)")
    check.add_argument("--dtype-b", choices=dtypes, default=None, help="side B's dtype (default: side A's)")
    check.add_argument("--a", dest="overrides_a", default=None, metavar="[NAME:]KEY=VALUE,...",
                       help="any other setting overrides of side A, e.g. 'ct2:summarization_backend=ctranslate2'")
    check.add_argument("--b", dest="overrides_b", default=None, metavar="[NAME:]KEY=VALUE,...",
                       help="any other setting overrides of side B")
    check.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                       help="inputs per generate call (the settings --num-beams and --max-new-tokens set the "
                            "decoding; default: the model's own beam)")
    check.add_argument("--json", action="store_true", help="print the whole report as JSON")
    add_settings_flags(check)
    check.set_defaults(func=cmd_check_vocab)


def cmd_trim_vocab(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from model_server.trim_vocab import trim_vocab

    if args.words < 0:
        raise CommandFailed(f"--words {args.words}: give 0 (the corpus only) or a positive number", USAGE_ERROR)
    models_dir = Path(args.models_dir) if args.models_dir else Settings().models_dir
    prepare_output(Path(args.out_dir).absolute().parent, directory=True)  # unwritable: fail before the work
    show = sys.stderr.isatty() or args.progress
    result = trim_vocab(args.model, args.out_dir, corpus_files=args.corpus, words_per_language=args.words,
                        models_dir=models_dir, force=args.force,
                        progress=(lambda items, **kw: tqdm(items, file=sys.stderr, **kw)) if show else None)
    removed = result.source_rows - result.kept
    print(f"trimmed {args.model} to {result.out_dir}: kept {result.kept} of {result.source_rows} vocabulary rows "
          f"({removed} removed). Check it on your texts once: model-server check-vocab YOUR_TEXTS.txt "
          f"--summarization-model {args.model} --against {result.out_dir}; then serve it with "
          f"MODEL_SERVER_SUMMARIZATION_MODEL={result.out_dir}", file=sys.stderr)
    return 0


def cmd_check_vocab(args: argparse.Namespace) -> int:
    from model_server.check_vocab import MODEL_SETTING, check, render_text, sample_sentences
    from model_server.evaluation import Variant

    try:
        a = Variant.parse(args.overrides_a or "")
        b = Variant.parse(args.overrides_b or "")
    except ValueError as exc:
        raise CommandFailed(str(exc), USAGE_ERROR) from None
    a_overrides = {**a.overrides, **({"dtype": args.dtype_a} if args.dtype_a else {})}
    b_overrides = {**a_overrides, **b.overrides,
                   **({MODEL_SETTING[args.task]: args.against} if args.against else {}),
                   **({"dtype": args.dtype_b} if args.dtype_b else {})}
    if a_overrides == b_overrides:
        raise CommandFailed("check-vocab: both sides would run the same way; give --against MODEL (e.g. the "
                            "trim-vocab output), --dtype-b, or --b KEY=VALUE", USAGE_ERROR)
    if args.batch_size < 1:
        raise CommandFailed(f"--batch-size {args.batch_size}: give a number >= 1", USAGE_ERROR)
    base = settings_from(args)
    inputs = ([line for line in read_input(args.corpus).splitlines() if line.strip()] if args.corpus
              else sample_sentences(args.task))
    if not inputs:
        raise CommandFailed(f"{args.corpus}: no non-empty lines to compare; give one input per line")
    report = check(base, Variant(_label(a, args.dtype_a) or "A", a_overrides),
                   Variant(_label(b, args.dtype_b) or "B", b_overrides), task=args.task, inputs=inputs,
                   batch_size=args.batch_size)
    if args.json:
        json.dump(report, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(report))
    return 0 if not report["differing"] else 1


def _label(variant, dtype: str | None) -> str:
    """What distinguishes a side besides its model (which the report names): dtype and other overrides."""
    return ", ".join(([f"dtype {dtype}"] if dtype else []) + ([variant.name] if variant.overrides else []))
