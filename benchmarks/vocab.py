"""Output-vocabulary benchmark (issue 15): Marian with and without restrict_output_vocab, mT5 trimmed or not.

    python -m benchmarks.vocab                                    # random real-shape models, both engines
    python -m benchmarks.vocab --quick --marian-model DIR --mt5-model DIR --models-dir TMP   # smoke (seconds)

Marian: the random real-shape opus-mt-ar-en with the real model's source/target vocabulary split
(`random-opus-mt-ar-en-split`, benchmarks/models.py: a 32,000-piece English target.spm, 32,000 of the
62,834 ids) loaded twice per engine, restrict_output_vocab off and on (torch: the sliced output projection;
CTranslate2: the conversion's vocabulary map with use_vmap), each the service's own backend. The four
engines run in ONE `benchmarks.offline.run_offline`: per batch size every round runs each engine once, the
starting one rotating (ABAB...), medians. Equal work: every sentence decodes exactly `--decode-tokens` tokens
(min_new_tokens = max_new_tokens), so random weights that choose other tokens under the restriction still
do the same number of decoder steps, and tokens/s compares like with like (the rows check it:
forced_length_exact).

mT5: the random real-shape mT5_multilingual_XLSum against its copy trimmed by `model-server trim-vocab`
(model_server/trim_vocab.py, called as the command calls it). The random model's spiece.model is 850 pieces
learned from the sample article plus 249,250 placeholders standing for mT5's pieces of a hundred languages,
so trim-vocab alone would keep about 900 pieces; the real XL-Sum keeps ~30,000 (the published mT5-base trim
to 30k: 582 M -> 244 M parameters). The benchmark therefore adds a corpus file to trim-vocab's inputs that
names the first placeholders (`▁w<id>`: sentencepiece orders pieces by frequency, so a newsroom's corpus
hits low ids first), `--trim-kept` minus the learned pieces of them, so about `--trim-kept` rows are kept
(29,984 of 250,112 for the default 30,000); a model without placeholders needs no such file. Each model is served
by its own worker process (the service's summarization backend, one per model and engine), the sample
article summarized as the service plans it (benchmarks/summarization.py), the workers driven in turn
(ABAB...), medians; each worker's peak RSS (VmHWM, covering loading and every article) is its model's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from benchmarks import machine
from benchmarks.report import evaluate_targets, ratio
from benchmarks.summarization import input_tokens

log = logging.getLogger("benchmarks.vocab")

BACKENDS = ("torch", "ctranslate2")
VARIANTS = ("full", "restricted")  # restrict_output_vocab off / on
MT5_VARIANTS = ("original", "trimmed")
# Rows the real trimmed XL-Sum keeps (issue 15's anchor: mT5-base trimmed to a 30k vocabulary).
TRIM_KEPT = 30_000
_PLACEHOLDER = re.compile(r"^\u2581w\d+$")
# Written beside a trim made here: the inputs it was made from (a changed --trim-kept trims again).
TRIM_INPUTS_FILE = "model_server_benchmark_trim.json"

DEFAULTS = dict(batch_sizes="8,32,64", num_beams="model", decode_tokens=40, repeats=3, warmup=1, torch_threads=None,
                summary_decode_tokens=None, summary_num_beams=None, summary_repeats=3, summary_warmup=1,
                trim_words=None)
QUICK = dict(batch_sizes="1,4", num_beams="model,1", decode_tokens=6, repeats=2, warmup=0, torch_threads=1,
             summary_decode_tokens=8, summary_num_beams=2, summary_repeats=2, summary_warmup=0, trim_words=2000)

# (key, description, threshold, direction), evaluated on the headline decoding (the first of --num-beams).
TARGETS = (
    ("marian_torch_restricted_over_full", "Marian torch, restricted / full vocabulary, best batch each (tokens/s)",
     1.3, ">="),
    ("marian_ctranslate2_restricted_over_full", "Marian CTranslate2, restricted (use_vmap) / full, best batch each "
     "(tokens/s)", 1.3, ">="),
    ("mt5_torch_original_over_trimmed_s", "mT5 torch, s per article original / trimmed (median)", 1.8, ">="),
    ("mt5_torch_trimmed_over_original_peak_rss", "mT5 torch, peak RSS trimmed / original", 0.5, "<="),
)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.models import RANDOM_OPUS_MT_SPLIT
    from benchmarks.mt5_models import RANDOM_MT5_XLSUM
    from benchmarks.run import HelpFormatter

    p = argparse.ArgumentParser(prog="python -m benchmarks.vocab", description=__doc__.splitlines()[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--marian-model", default=RANDOM_OPUS_MT_SPLIT,
                   help="Marian with a separate target.spm: the random real-shape one with the real vocabulary "
                        "split (built once), 'tiny', a model directory, or 'none' to skip")
    p.add_argument("--mt5-model", default=RANDOM_MT5_XLSUM,
                   help="mT5 summarizer to trim: the random real-shape XL-Sum (built once), 'tiny', a model "
                        "directory, or 'none' to skip")
    p.add_argument("--trimmed-mt5", type=Path,
                   help="an existing trim-vocab output of --mt5-model [trimmed here into MODELS_DIR/<name>-trimmed]")
    p.add_argument("--trim-kept", type=int, default=TRIM_KEPT,
                   help="rows the trimmed random mT5 keeps (placeholder spiece only; see the module docstring)")
    p.add_argument("--trim-words", type=int, help="trim-vocab's words per language [its default, 50000]")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where built models are kept")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                   help="torch dtype of the Marian (auto = the service's rule)")
    p.add_argument("--summary-dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="torch dtype of the summarizer workers (auto = the service's summarizer rule)")
    p.add_argument("--backends", default="auto", help="torch, ctranslate2 or both (auto: both when installed)")
    p.add_argument("--ct2-compute-type", default="auto", help="CTranslate2 compute type (auto = int8 on cpu)")
    p.add_argument("--torch-threads", type=int, help="threads of every engine [the engines' choice; 1 with --quick]")
    p.add_argument("--batch-sizes", help=f"Marian batch sizes [{DEFAULTS['batch_sizes']}]")
    p.add_argument("--num-beams", help="Marian decodings, comma-separated, the first is the headline: 'model' = "
                                       f"its generation config (beam 4), or numbers [{DEFAULTS['num_beams']}]")
    p.add_argument("--decode-tokens", type=int,
                   help=f"Marian tokens per sentence, forced [{DEFAULTS['decode_tokens']}]")
    p.add_argument("--repeats", type=int, help=f"Marian measured rounds per batch size [{DEFAULTS['repeats']}]")
    p.add_argument("--warmup", type=int, help=f"Marian warm-up calls per engine and batch size [{DEFAULTS['warmup']}]")
    p.add_argument("--summary-decode-tokens", type=int, help="tokens per summary, forced [the preset's, 83]")
    p.add_argument("--summary-num-beams", type=int, help="summary beams [the preset's, 4]")
    p.add_argument("--summary-repeats", type=int, help=f"measured articles per model [{DEFAULTS['summary_repeats']}]")
    p.add_argument("--summary-warmup", type=int, help=f"unrecorded articles per model [{DEFAULTS['summary_warmup']}]")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the random models and of torch")
    p.add_argument("--quick", action="store_true", help="smoke settings: batch 1,4; beam 4 and greedy; 6 tokens; "
                   "1 repeat... (any value given explicitly still wins); use with tiny models")
    return p


def resolve_options(args: argparse.Namespace) -> argparse.Namespace:
    from benchmarks.run import _backends, _ints

    for key, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value if value is not None else DEFAULTS[key])
    try:
        args.batch_sizes = _ints(args.batch_sizes)
    except ValueError as exc:
        raise SystemExit(f"benchmarks: --batch-sizes: {exc}") from None
    args.backends = _backends(args.backends)
    args.num_beams = [part.strip() for part in args.num_beams.split(",") if part.strip()]
    if not args.num_beams or any(not (b == "model" or (b.isdigit() and int(b) >= 1)) for b in args.num_beams):
        raise SystemExit("benchmarks: --num-beams: expected 'model' or positive numbers, comma-separated")
    return args


# --------------------------------------------------------------------------------------------
# Marian: restrict_output_vocab off and on, both engines, one interleaved run
# --------------------------------------------------------------------------------------------


def marian_settings(args, model_path: Path, device: str, dtype: str, backend: str, restricted: bool,
                    ct2_dir: Path | None, num_beams: int):
    """The service's settings for the offline backends (benchmarks.run.service_settings, same rules)."""
    from benchmarks.run import service_settings
    from model_server.settings import Settings

    namespace = argparse.Namespace(models_dir=args.models_dir, num_beams=num_beams, decode_tokens=args.decode_tokens,
                                   restrict_output_vocab=restricted, max_batch_size=None,
                                   torch_threads=args.torch_threads, ct2_compute_type=args.ct2_compute_type,
                                   server_setting=[])
    return Settings(**service_settings(namespace, model_path, device, dtype, backend, ct2_dir))


def run_marian(args, device: str, dtype: str) -> dict[str, Any]:
    from benchmarks.models import resolve_model
    from benchmarks.offline import run_offline
    from benchmarks.run import _ct2_conversion, _load_backend, model_num_beams
    from benchmarks.workload import load_workload
    from model_server.backends.base import GenerationOptions

    model = resolve_model(args.marian_model, args.models_dir, seed=args.seed)
    beams = [model_num_beams(model.path) if b == "model" else int(b) for b in args.num_beams]
    ct2_dir = _ct2_conversion(args, model, device) if "ctranslate2" in args.backends else None
    engines: dict[str, Any] = {}
    try:
        for backend in args.backends:
            for variant in VARIANTS:
                settings = marian_settings(args, model.path, device, dtype, backend, variant == "restricted", ct2_dir,
                                           beams[0])
                engines[f"{backend} {variant}"] = _load_backend(settings)
        vocab = {name: engine.info.extra.get("output_vocab_size") for name, engine in engines.items()}
        for backend in args.backends:
            if not vocab[f"{backend} restricted"] < vocab[f"{backend} full"]:
                raise SystemExit(f"benchmarks: {model.path} decodes {vocab[f'{backend} restricted']} ids restricted on "
                                 f"{backend}, as many as unrestricted: it has no separate target vocabulary (or the "
                                 "CTranslate2 conversion has no vocabulary map)")
        workload = load_workload()
        decodings = []
        for spec, num_beams in zip(args.num_beams, beams):
            options = GenerationOptions(num_beams=num_beams, max_new_tokens=args.decode_tokens,
                                        min_new_tokens=args.decode_tokens)
            log.info("Marian %s, beam %d: %s", model.label, num_beams, ", ".join(engines))
            offline = run_offline(engines, workload, options, batch_sizes=args.batch_sizes, warmup=args.warmup,
                                  repeats=args.repeats, device=device)
            comparison = {backend: compare_variants(offline[f"{backend} full"], offline[f"{backend} restricted"])
                          for backend in args.backends}
            decodings.append({"num_beams": num_beams, "offline": offline, "comparison": comparison,
                              "source": "model generation config" if spec == "model" else "--num-beams"})
        return {"model": {"label": model.label, "path": str(model.path), "kind": model.kind, "note": model.note},
                "vocab": {"vocab_size": vocab[f"{args.backends[0]} full"], "output_vocab_size": vocab,
                          "split": _marker(model.path).get("vocabulary")},
                "engines": {name: engine.info.model_dump(mode="json") for name, engine in engines.items()},
                "decode_tokens": args.decode_tokens, "batch_sizes": args.batch_sizes, "repeats": args.repeats,
                "warmup": args.warmup, "decodings": decodings}
    finally:
        for engine in engines.values():
            engine.close()


def compare_variants(full: dict[str, Any], restricted: dict[str, Any]) -> dict[str, Any]:
    """Restricted over full: at each batch size (medians, and the median of the per-round ratios: the same
    round's calls ran back to back) and best batch over best batch (the target)."""
    rows = []
    for a, b in zip(full["rows"], restricted["rows"]):
        paired = statistics.median(sa / sb for sa, sb in zip(a["seconds"], b["seconds"]))
        rows.append({"batch_size": a["batch_size"], "full_tokens_per_s": a["target_tokens_per_s"],
                     "restricted_tokens_per_s": b["target_tokens_per_s"],
                     "ratio": ratio(b["target_tokens_per_s"], a["target_tokens_per_s"]),
                     "paired_ratio": round(paired, 4),
                     "equal_work": a["forced_length_exact"] and b["forced_length_exact"]
                     and a["target_tokens_per_batch"] == b["target_tokens_per_batch"]})
    return {"rows": rows, "best_full": full["best"], "best_restricted": restricted["best"],
            "ratio_best": ratio(restricted["best"]["target_tokens_per_s"], full["best"]["target_tokens_per_s"])}


def _marker(model_dir: Path) -> dict[str, Any]:
    from benchmarks.models import BENCH_MARKER_FILE

    return _read_json(Path(model_dir) / BENCH_MARKER_FILE) or {}


# --------------------------------------------------------------------------------------------
# mT5: the original against its trim-vocab copy
# --------------------------------------------------------------------------------------------


def placeholder_ids(spm_file: Path) -> list[int]:
    """Ids of the random mT5's placeholder pieces (benchmarks.mt5_models.padded_spiece_model), ascending."""
    return _placeholders(_spm_pieces(spm_file))


def _placeholders(pieces: Sequence[str]) -> list[int]:
    return [i for i, piece in enumerate(pieces) if _PLACEHOLDER.match(piece)]


def placeholder_corpus(spm_file: Path, kept: int) -> str | None:
    """The corpus lines naming the first placeholders, `kept` minus the pieces before them, so that about `kept`
    pieces survive the trim; None for a model without placeholders (its pieces are real: trim-vocab decides)."""
    pieces = _spm_pieces(spm_file)
    ids = _placeholders(pieces)
    if not ids:
        return None
    words = [pieces[i].removeprefix("\u2581") for i in ids[:max(0, kept - ids[0])]]
    return "\n".join(" ".join(words[i:i + 1000]) for i in range(0, len(words), 1000)) + "\n"


def _spm_pieces(spm_file: Path) -> list[str]:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(Path(spm_file).read_bytes())
    return [piece.piece for piece in proto.pieces]


def ensure_trimmed(source: Path, models_dir: Path, *, kept: int, words: int | None) -> tuple[Path, dict[str, Any]]:
    """`source` trimmed by trim-vocab into models_dir/<name>-trimmed, reused while its manifest names the same
    source files and TRIM_INPUTS_FILE the same inputs; returns the directory and its manifest, with how its
    kept set was chosen under "benchmark_inputs"."""
    from model_server.backends.ct2_convert import source_fingerprint
    from model_server.trim_vocab import DEFAULT_WORDS_PER_LANGUAGE, SPM_FILE, read_manifest, trim_vocab

    from benchmarks.workload import SAMPLE_ARTICLE, SAMPLE_ARTICLE_EN

    out = Path(models_dir).absolute() / f"{Path(source).name}-trimmed"
    words = DEFAULT_WORDS_PER_LANGUAGE if words is None else words
    extra = placeholder_corpus(Path(source) / SPM_FILE, kept)
    corpus = [SAMPLE_ARTICLE, SAMPLE_ARTICLE_EN]
    inputs = {"corpus": [str(p) for p in corpus], "words_per_language": words,
              "placeholder_pieces": len(extra.split()) if extra else 0, "kept_requested": kept if extra else None}
    manifest = read_manifest(out)
    if manifest and manifest.get("source_fingerprint") == source_fingerprint(Path(source)) \
            and _read_json(out / TRIM_INPUTS_FILE) == inputs:
        return out, {**manifest, "benchmark_inputs": inputs}
    with tempfile.TemporaryDirectory(prefix="bench-trim-") as tmp:
        if extra:
            corpus.append(Path(tmp) / "placeholder-pieces.txt")
            corpus[-1].write_text(extra, encoding="utf-8")
        log.info("trimming %s into %s (model-server trim-vocab)", source, out)
        result = trim_vocab(str(source), out, corpus_files=corpus, words_per_language=words, models_dir=models_dir,
                            force=True)
    (out / TRIM_INPUTS_FILE).write_text(json.dumps(inputs, indent=2) + "\n", encoding="utf-8")
    return out, {**result.manifest, "benchmark_inputs": inputs}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class SummaryWorker:
    """One model on one engine in its own process (`python -m benchmarks.vocab summary-worker CONFIG`): its
    resident memory is that model's alone. `article()` summarizes the sample article once."""

    def __init__(self, config: dict[str, Any], log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.vocab", "summary-worker", json.dumps(config)],
                                     cwd=machine.ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True)

    def _reply(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"summary worker exited ({self.proc.returncode}); its log:\n{tail}")
        return json.loads(line)

    def ready(self) -> dict[str, Any]:
        return self._reply()

    def article(self) -> dict[str, Any]:
        self.proc.stdin.write("article\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def worker_main(config_json: str) -> None:
    """The worker's side: load, report ready, then one article per 'article' line; replies are JSON lines on
    the original stdout (anything else printed goes to stderr)."""
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from benchmarks.online import process_memory
    from benchmarks.summarization import load_backend, load_preset, run_summarization, service_input_limit
    from benchmarks.workload import SAMPLE_ARTICLE

    config = json.loads(config_json)
    torch.manual_seed(config["seed"])
    started = time.perf_counter()
    backend = load_backend(Path(config["model"]), models_dir=Path(config["models_dir"]), device=config["device"],
                           dtype=config["dtype"], torch_threads=config["torch_threads"], engine=config["engine"],
                           ct2_compute_type=config["ct2_compute_type"])
    load_s = time.perf_counter() - started
    preset = load_preset()
    article = SAMPLE_ARTICLE.read_text(encoding="utf-8")
    decode_tokens = config["decode_tokens"] or preset.generation.max_new_tokens
    num_beams = config["num_beams"] or preset.generation.num_beams
    me = os.getpid()
    replies.write(json.dumps({"ready": True, "load_s": round(load_s, 3), "model": backend.info.model_dump(mode="json"),
                              "memory": process_memory(me)}) + "\n")
    while sys.stdin.readline().strip() == "article":
        row = run_summarization(backend, article, decode_tokens=decode_tokens, num_beams=num_beams,
                                max_input_tokens=service_input_limit(backend, preset), repeats=1, warmup=0,
                                device=config["device"], preset=preset, label=config["label"])
        replies.write(json.dumps({"row": row, "memory": process_memory(me)}) + "\n")
    backend.close()


def run_mt5(args, device: str) -> dict[str, Any]:
    from benchmarks.mt5_models import resolve_summarization_model
    from model_server.trim_vocab import read_manifest

    original = resolve_summarization_model(args.mt5_model, args.models_dir, seed=args.seed)
    if args.trimmed_mt5:
        trimmed = args.trimmed_mt5.absolute()
        manifest = {**(read_manifest(trimmed) or {}), "benchmark_inputs": _read_json(trimmed / TRIM_INPUTS_FILE)}
    else:
        trimmed, manifest = ensure_trimmed(original.path, args.models_dir, kept=args.trim_kept, words=args.trim_words)
    paths = {"original": original.path, "trimmed": trimmed}
    engines = {}
    with tempfile.TemporaryDirectory(prefix="bench-vocab-workers-") as logs:
        for engine in args.backends:
            if engine == "ctranslate2":
                for path in paths.values():  # converted before the workers start: not part of their memory
                    _convert_summarizer(args, path, device)
            engines[engine] = _measure_summaries(args, device, engine, paths, Path(logs))
    return {"original": {"label": original.label, "path": str(original.path), "note": original.note,
                         "vocab_rows": _vocab_rows(original.path)},
            "trimmed": {"path": str(trimmed), "vocab_rows": _vocab_rows(trimmed),
                        "kept": (manifest.get("vocab") or {}).get("kept"),
                        "benchmark_inputs": manifest.get("benchmark_inputs"),
                        "word_lists": manifest.get("word_lists")},
            "repeats": args.summary_repeats, "warmup": args.summary_warmup, "engines": engines}


def _vocab_rows(model_dir: Path) -> int | None:
    return (_read_json(Path(model_dir) / "config.json") or {}).get("vocab_size")


def _convert_summarizer(args, path: Path, device: str) -> Path:
    """The conversion the service's ct2_convert_on_start makes (MODELS_DIR/ct2-cache), made now."""
    from benchmarks.run import ct2_quantization
    from model_server.backends.ct2_convert import cached_conversion

    return cached_conversion(str(path), args.models_dir, args.models_dir / "ct2-cache", ct2_quantization(args, device))


def _measure_summaries(args, device: str, engine: str, paths: dict[str, Path], logs: Path) -> dict[str, Any]:
    """Both models on `engine`, each in its worker, articles in turn (the first model rotating), medians."""
    workers: dict[str, SummaryWorker] = {}
    try:
        for variant, path in paths.items():
            config = {"model": str(path), "models_dir": str(args.models_dir.absolute()), "device": device,
                      "torch_threads": args.torch_threads, "engine": engine, "ct2_compute_type": args.ct2_compute_type,
                      "dtype": args.summary_dtype,
                      "decode_tokens": args.summary_decode_tokens, "num_beams": args.summary_num_beams,
                      "seed": args.seed, "label": variant}
            workers[variant] = SummaryWorker(config, logs / f"{engine}-{variant}.log")
        ready = {variant: worker.ready() for variant, worker in workers.items()}
        rows: dict[str, list[dict[str, Any]]] = {variant: [] for variant in workers}
        memory: dict[str, Any] = {}
        names = list(workers)
        for round_ in range(args.summary_warmup + args.summary_repeats):
            shift = round_ % len(names)
            for variant in names[shift:] + names[:shift]:
                reply = workers[variant].article()
                memory[variant] = reply["memory"]
                if round_ >= args.summary_warmup:
                    rows[variant].append(reply["row"])
                log.info("mT5 %s %s article %d: %.2f s", engine, variant, round_ + 1, reply["row"]["s_per_article"])
    finally:
        for worker in workers.values():
            worker.close()
    out = {variant: _summary_variant(rows[variant], ready[variant], memory[variant]) for variant in names}
    paired = statistics.median(a["s_per_article"] / b["s_per_article"]
                               for a, b in zip(rows["original"], rows["trimmed"]))
    out["ratios"] = {
        "original_over_trimmed_s": ratio(out["original"]["s_per_article"], out["trimmed"]["s_per_article"]),
        "original_over_trimmed_s_paired": round(paired, 4),
        "trimmed_over_original_peak_rss": ratio(out["trimmed"]["memory"]["peak_rss_mib"],
                                                 out["original"]["memory"]["peak_rss_mib"]),
        "equal_work": out["original"]["work"]["generated_tokens"] == out["trimmed"]["work"]["generated_tokens"]
        and out["original"]["work"]["forced_length_exact"] and out["trimmed"]["work"]["forced_length_exact"]}
    return out


def _summary_variant(rows: list[dict[str, Any]], ready: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:
    first = rows[0]
    shapes = {json.dumps([(p["inputs"], p["source_tokens"], p["generated_tokens"]) for p in row["passes"]])
              for row in rows}
    if len(shapes) != 1:
        raise RuntimeError(f"{first['label']}: the articles did different work: {sorted(shapes)}")
    median_s = statistics.median(row["s_per_article"] for row in rows)
    return {"s_per_article": round(median_s, 4),
            "seconds_per_article": [row["s_per_article"] for row in rows],
            "cpu_s_per_article": round(statistics.median(row["cpu_s_per_article"] for row in rows), 4),
            "generated_tokens_per_s": round(first["generated_tokens_per_article"] / median_s, 3),
            "work": {"chunks": first["chunks"], "passes": [{"inputs": p["inputs"], "source_tokens": p["source_tokens"]}
                                                           for p in first["passes"]],
                     "generated_tokens": first["generated_tokens_per_article"],
                     "forced_length_exact": all(row["forced_length_exact"] for row in rows)},
            "generation": first["generation"], "load_s": ready["load_s"], "model": ready["model"],
            "memory": memory, "memory_after_load": ready["memory"], "rows": rows}


# --------------------------------------------------------------------------------------------
# Targets and report
# --------------------------------------------------------------------------------------------


def compute_ratios(results: dict[str, Any]) -> dict[str, Any]:
    ratios: dict[str, Any] = {}
    marian = results.get("marian") or {}
    for decoding_index, decoding in enumerate(marian.get("decodings") or []):
        beams = decoding["num_beams"]
        suffix = "" if decoding_index == 0 else "_greedy" if beams == 1 else f"_beam{beams}"
        for backend, comparison in decoding["comparison"].items():
            ratios[f"marian_{backend}_restricted_over_full{suffix}"] = comparison["ratio_best"]
    for engine, section in ((results.get("mt5") or {}).get("engines") or {}).items():
        ratios[f"mt5_{engine}_original_over_trimmed_s"] = section["ratios"]["original_over_trimmed_s"]
        ratios[f"mt5_{engine}_trimmed_over_original_peak_rss"] = section["ratios"]["trimmed_over_original_peak_rss"]
    return ratios


def render_markdown(results: dict[str, Any]) -> str:
    from benchmarks.report import _fmt, _precision_line, _table, machine_line, run_lines

    meta, machine_info = results["meta"], results["meta"]["machine"]
    lines = [f"# model_server output-vocabulary benchmark on {meta['device']}", "",
             machine_line(machine_info), f"- precision: {_precision_line(meta)}", *run_lines(meta), ""]
    marian = results.get("marian")
    if marian:
        vocab = marian["vocab"]
        sizes = ", ".join(f"{name} {size:,}" for name, size in vocab["output_vocab_size"].items())
        lines += ["## Marian: decode tokens/s without and with restrict_output_vocab", "",
                  f"- model: `{marian['model']['path']}` ({marian['model']['note']})",
                  f"- vocabulary: {vocab['vocab_size']:,} ids; output vocabulary per engine: {sizes}"
                  + (f"; {vocab['split']}" if vocab.get("split") else ""),
                  f"- engines: {_marian_engines(marian)}",
                  f"- equal work: every sentence decodes exactly {marian['decode_tokens']} tokens "
                  "(min_new_tokens = max_new_tokens); the four engines interleaved per batch size (each round runs "
                  f"each once, the first rotating), {marian['warmup']} warm-up call(s) then {marian['repeats']} "
                  "rounds, medians; `paired` = median over rounds of full s / restricted s", ""]
        for decoding in marian["decodings"]:
            rows = []
            for backend, comparison in decoding["comparison"].items():
                for row in comparison["rows"]:
                    rows.append([backend, row["batch_size"], row["full_tokens_per_s"], row["restricted_tokens_per_s"],
                                 _fmt(row["ratio"], 3), _fmt(row["paired_ratio"], 3),
                                 "yes" if row["equal_work"] else "**NO**"])
                rows.append([f"**{backend} best batch**",
                             f"{comparison['best_full']['batch_size']} / {comparison['best_restricted']['batch_size']}",
                             comparison["best_full"]["target_tokens_per_s"],
                             comparison["best_restricted"]["target_tokens_per_s"],
                             f"**{_fmt(comparison['ratio_best'], 3)}**", "-", "-"])
            kind = "greedy" if decoding["num_beams"] == 1 else f"beam {decoding['num_beams']}"
            lines += [f"### {kind} ({decoding['source']})", ""]
            lines += _table(["engine", "batch size", "full tokens/s", "restricted tokens/s", "restricted / full",
                             "paired", "equal work"], rows, left=1) + [""]
    mt5 = results.get("mt5")
    if mt5:
        trimmed = mt5["trimmed"]
        inputs = trimmed.get("benchmark_inputs") or {}
        lines += ["## mT5: the original against its `model-server trim-vocab` copy", "",
                  f"- original: `{mt5['original']['path']}` ({mt5['original']['note']}), "
                  f"{mt5['original']['vocab_rows']:,} vocabulary rows",
                  f"- trimmed: `{trimmed['path']}`, {trimmed['vocab_rows']:,} rows kept; trim-vocab inputs: the "
                  f"Arabic and English sample articles, wordfreq {inputs.get('words_per_language')} words per language"
                  + (f", and {inputs['placeholder_pieces']:,} placeholder pieces named in a corpus file (the random "
                     f"model's stand-ins for real pieces, to keep ~{inputs['kept_requested']:,} rows as the real "
                     "XL-Sum trim does)" if inputs.get("placeholder_pieces") else ""),
                  f"- each model in its own worker process, articles in turn; {mt5['warmup']} warm-up article(s), "
                  f"{mt5['repeats']} measured, medians; peak RSS = the worker's VmHWM after its last article "
                  "(loading included)", ""]
        rows = []
        for engine, section in mt5["engines"].items():
            for variant in MT5_VARIANTS:
                v = section[variant]
                gen = v["generation"]
                rows.append([engine, variant, v["model"]["dtype"], input_tokens(v["work"]),
                             f"{gen['decode_tokens']} x {gen['num_beams']}", _fmt(v["s_per_article"], 2),
                             _fmt(v["cpu_s_per_article"], 2), _fmt(v["load_s"], 1), v["memory"]["peak_rss_mib"],
                             v["memory"]["rss_mib"]])
            r = section["ratios"]
            work = "equal work" if r["equal_work"] else "**NOT equal work**"
            rows.append([f"**{engine}**", "original / trimmed", "-", work,
                         "-", f"**{_fmt(r['original_over_trimmed_s'], 3)}** (paired "
                         f"{_fmt(r['original_over_trimmed_s_paired'], 3)})", "-", "-",
                         f"trimmed / original **{_fmt(r['trimmed_over_original_peak_rss'], 3)}**", "-"])
        lines += _table(["engine", "model", "dtype", "input tokens (per pass)", "decode tokens x beams",
                         "s / article (median)", "CPU s / article", "load s", "peak RSS MiB", "RSS MiB at the end"],
                        rows, left=2) + [""]
    lines += ["## Targets (issue 15)", "", "| ratio | value | target | met |", "|---|---:|---:|---:|"]
    met = {True: "yes", False: "**NO**", None: "-"}
    lines += [f"| {t['description']} | {_fmt(t['value'], 3)} | {t['target']} | {met[t['met']]} |"
              for t in results["targets"]]
    others = {k: v for k, v in results["ratios"].items() if k not in {t["name"] for t in results["targets"]}}
    if others:
        lines += ["", "Other ratios: " + ", ".join(f"`{k}` {_fmt(v, 3)}" for k, v in others.items())]
    return "\n".join(lines) + "\n"


def _marian_engines(marian: dict[str, Any]) -> str:
    parts = []
    for name, info in marian["engines"].items():
        extra = info.get("extra") or {}
        threads = (f"inter {extra.get('inter_threads')} x intra {extra.get('intra_threads')}"
                   if info["backend"] == "ctranslate2" else
                   f"{extra.get('threads')} threads, {extra.get('attention')} attention")
        parts.append(f"{name} ({info['dtype']}, {threads})")
    return "; ".join(parts)


def render_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Marian tokens/s per batch size, full vs restricted, per engine and decoding (matplotlib, if installed)."""
    marian = results.get("marian")
    if not marian:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    decodings = marian["decodings"]
    fig, axes = plt.subplots(1, len(decodings), figsize=(6 * len(decodings), 4), squeeze=False)
    for ax, decoding in zip(axes[0], decodings):
        for color, (backend, comparison) in zip(("tab:blue", "tab:red"), decoding["comparison"].items()):
            sizes = [row["batch_size"] for row in comparison["rows"]]
            for variant, style in (("full", "--"), ("restricted", "-")):
                ax.plot(sizes, [row[f"{variant}_tokens_per_s"] for row in comparison["rows"]], style, marker="o",
                        color=color, label=f"{backend} {variant}")
        kind = "greedy" if decoding["num_beams"] == 1 else f"beam {decoding['num_beams']}"
        ax.set(title=f"Marian {kind}: restrict_output_vocab off / on", xlabel="batch size",
               ylabel="target tokens/s", xscale="log")
        ax.minorticks_off()
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["summary-worker"]:
        worker_main(argv[1])
        return {}
    args = resolve_options(build_parser().parse_args(argv))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from model_server.backends.hardware import cpu_features
    from model_server.backends.loading import dtype_choice, resolve_device
    from model_server.settings import Device, DType

    started_wall, started = datetime.now(timezone.utc), time.monotonic()
    load_before = machine.load_average()
    torch.manual_seed(args.seed)
    device = resolve_device(Device(args.device))
    dtype, dtype_reason = dtype_choice(DType(args.dtype), device)
    results: dict[str, Any] = {"schema": 1, "backends": args.backends,
                               "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if args.marian_model != "none":
        results["marian"] = run_marian(args, device, dtype)
    if args.mt5_model != "none":
        results["mt5"] = run_mt5(args, device)
    results["ratios"] = compute_ratios(results)
    results["targets"] = evaluate_targets(results["ratios"], TARGETS)
    precision = {"torch": {"requested": args.dtype, "chosen": dtype, "reason": dtype_reason}}
    if "ctranslate2" in args.backends:
        from benchmarks.run import _ct2_precision

        precision["ctranslate2"] = _ct2_precision(args, device)
    results["meta"] = {"started_utc": started_wall.isoformat(timespec="seconds"),
                       "duration_s": round(time.monotonic() - started, 1),
                       "command": "python -m benchmarks.vocab " + shlex.join(argv), "device": device, "dtype": dtype,
                       "machine": machine.machine_info(device), "hardware": cpu_features().describe(),
                       "precision": precision, "load_before": load_before, "load_after": machine.load_average(),
                       "git": machine.git_info()}
    _write_outputs(args.out, results, started_wall, device)
    return results


def _write_outputs(out_dir: Path, results: dict[str, Any], started: datetime, device: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{device}-vocab"
    plot = render_plot(results, stem.with_name(stem.name + ".png"))
    results["files"] = {"json": str(stem.with_name(stem.name + ".json")),
                        "markdown": str(stem.with_name(stem.name + ".md")), "plot": str(plot) if plot else None}
    markdown = render_markdown(results)
    for suffix, text in ((".md", markdown), (".json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")):
        path = stem.with_name(stem.name + suffix)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    print(markdown)
    log.info("results: %s (+ .md%s)", results["files"]["json"], ", .png" if plot else "")


if __name__ == "__main__":
    main()
