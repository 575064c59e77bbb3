"""Measured batch limits: `model-server tune` and the tuning file the server reads.

Where a batch stops paying off depends on the model, the engine, its precision, the decoding (beam search
computes num_beams hypotheses per segment), the threads and the machine: on 2 CPU cores torch beam 4 peaked at
16-32 segments and CTranslate2's best batch moved from run to run (issue 13). So the limits are measured where
the service runs instead of guessed:

- `measure` times `backend.generate` on the sample article's sentences at a handful of batch sizes, with a
  fixed forced output length (min_new_tokens = max_new_tokens, as the benchmarks do), a warm-up call and the
  median of a few repeats per size; it stops early once throughput falls clearly or a batch exceeds the
  latency bound (larger ones cannot qualify).
- `choose_batch_size` (pure) picks the smallest batch within `tolerance` of the best throughput among those
  whose one call stays under the latency bound; `limits_for` (pure) turns it into max_batch_size,
  max_batch_hypotheses (segments x beams) and max_batch_tokens (hypotheses x the sample's longest input, with
  headroom).
- The entry is stored under a `fingerprint` of what the figures depend on (model and its files, engine,
  precision, beams, threads, device, output vocabulary size (restrict_output_vocab), CPU model and flags or
  GPU name), so one file holds entries for several models and machines; it is rewritten atomically.
- `resolve_limits` (pure) is what the server applies: the tuned limits, except those the user set explicitly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import platform
import socket
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Sequence

from model_server.backends.base import GenerationOptions, ModelInfo, Seq2SeqBackend

log = logging.getLogger(__name__)

FORMAT = 1
SAMPLE_ARTICLE = Path(__file__).resolve().parent / "data" / "libya-russia-ar.txt"
DEFAULT_BATCH_SIZES = (1, 4, 8, 16, 32, 64)
LIMIT_NAMES = ("max_batch_size", "max_batch_hypotheses", "max_batch_tokens")
# Longer inputs than the sample's longest still fill a batch of the chosen size: the token budget is the
# chosen batch's padded cost times this.
TOKEN_HEADROOM = 2.0
# Throughput below this fraction of the best so far: past the peak, larger batches are not measured.
STOP_BELOW_FRACTION = 0.8
CPUINFO = Path("/proc/cpuinfo")


class TuningFileError(ValueError):
    """The tuning file cannot be used; the message names the file and the fix (one line at start-up)."""


# --- measurement -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    batch_size: int
    seconds: float  # median of the repeats: one generate call of the whole batch
    tokens_per_s: float  # target tokens (the forced length, EOS included) per second
    samples_s: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "seconds": round(self.seconds, 6),
                "tokens_per_s": round(self.tokens_per_s, 3), "samples_s": [round(s, 6) for s in self.samples_s]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Measurement":
        return cls(int(data["batch_size"]), float(data["seconds"]), float(data["tokens_per_s"]),
                   tuple(float(s) for s in data.get("samples_s", ())))


def sample_sentences(path: Path = SAMPLE_ARTICLE) -> list[str]:
    """The sample article's sentences, segmented as the service segments them."""
    from model_server.text import normalize_text, segment

    sentences = [s.text for p in segment(normalize_text(path.read_text(encoding="utf-8"))) for s in p.sentences]
    if not sentences:
        raise ValueError(f"no sentences in {path}")
    return sentences


def batch_of(sentences: Sequence[str], size: int) -> list[str]:
    """A fixed batch of `size` that costs what `size` of the sentences cost on average: every sentence once per
    whole pass, and the rest evenly spread over the sentences sorted by length (quantiles: a batch of 1 is the
    median sentence). Taking the first `size` in order would time the article's head - a title and datelines
    of 7 tokens against a mean of 31 - and make small batches look several times cheaper than the traffic
    they stand for."""
    if not sentences:
        raise ValueError("no sentences to batch")
    whole, rest = divmod(size, len(sentences))
    by_length = sorted(range(len(sentences)), key=lambda i: (len(sentences[i]), i))
    spread = sorted(by_length[(2 * k + 1) * len(sentences) // (2 * rest)] for k in range(rest))
    return [*sentences] * whole + [sentences[i] for i in spread]


def forced_length(options: GenerationOptions, new_tokens: int) -> GenerationOptions:
    """Every output exactly `new_tokens` long: the same work per segment whatever the model (random or tiny
    weights would otherwise stop at different lengths per batch)."""
    return replace(options, min_new_tokens=new_tokens, max_new_tokens=new_tokens)


def _synchronizer(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None


def measure(backend: Seq2SeqBackend, sentences: Sequence[str], options: GenerationOptions, *,
            batch_sizes: Sequence[int], repeats: int, warmup: int, max_latency_s: float,
            on_call: Callable[[], None] = lambda: None) -> list[Measurement]:
    """Throughput of `backend.generate` per batch size (ascending); `on_call` after every call (progress)."""
    sync = _synchronizer(backend.info.device)

    def timed(texts: list[str]) -> tuple[float, int]:
        sync()
        started = time.perf_counter()
        outputs = backend.generate(texts, options)
        sync()
        elapsed = time.perf_counter() - started
        on_call()
        return elapsed, sum(out.num_tokens for out in outputs)

    timed(batch_of(sentences, 1))  # first call: one-off initialisation, never measured
    results: list[Measurement] = []
    for size in sorted(batch_sizes):
        batch = batch_of(sentences, size)
        for _ in range(warmup):
            timed(batch)
        samples = [timed(batch) for _ in range(repeats)]
        seconds = statistics.median(s for s, _ in samples)
        tokens = statistics.median(t for _, t in samples)
        results.append(Measurement(size, seconds, tokens / seconds if seconds > 0 else math.inf,
                                   tuple(s for s, _ in samples)))
        best = max(m.tokens_per_s for m in results)
        if seconds > max_latency_s or results[-1].tokens_per_s < STOP_BELOW_FRACTION * best:
            break  # larger batches are slower still, or past the peak
    return results


# --- the choice (pure) -------------------------------------------------------------------------------------

def choose_batch_size(measurements: Sequence[Measurement], *, max_latency_s: float, tolerance: float = 0.05) -> int:
    """The smallest batch within `tolerance` of the best throughput among batches whose call stays under
    `max_latency_s` (smaller batches mean shorter waits and less memory for the same throughput). When none
    stays under the bound, the smallest batch measured."""
    if not measurements:
        raise ValueError("no measurements to choose from")
    within = [m for m in measurements if m.seconds <= max_latency_s]
    if not within:
        return min(m.batch_size for m in measurements)
    best = max(m.tokens_per_s for m in within)
    return min(m.batch_size for m in within if m.tokens_per_s >= (1 - tolerance) * best)


def limits_for(batch_size: int, num_beams: int, longest_input_tokens: int,
               headroom: float = TOKEN_HEADROOM) -> dict[str, int]:
    """The batcher's three limits for batches of `batch_size` segments decoded with `num_beams` beams."""
    hypotheses = batch_size * num_beams
    return {"max_batch_size": batch_size, "max_batch_hypotheses": hypotheses,
            "max_batch_tokens": max(64, math.ceil(hypotheses * longest_input_tokens * headroom))}


# --- fingerprint -------------------------------------------------------------------------------------------

def files_digest(source: str) -> str:
    """What identifies the model's files without reading gigabytes: every file's relative path and size (a
    converted CTranslate2 dir's metadata and weights included). A hub id without a directory: the id."""
    root = Path(source)
    if not root.is_dir():
        return f"hub:{source}"
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root).as_posix()}\0{path.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def parse_cpu_model(cpuinfo: str) -> str:
    """The first CPU's model name in /proc/cpuinfo ('model name' on x86; ARM kernels may have none)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in {"model name", "Model", "Hardware"}:
            return " ".join(value.split())
    return ""


def describe_hardware(device: str, *, cpu_name: str, flags: frozenset[str], cpus: int, gpu_name: str = "") -> str:
    """The machine as far as throughput goes: the GPU's name on CUDA, else the CPU model, the reported flags
    (model_server/backends/hardware.py) and the usable cores."""
    if device.startswith("cuda"):
        return f"cuda: {gpu_name or '?'}"
    from model_server.backends.hardware import REPORTED_FLAGS

    present = " ".join(flag for flag in REPORTED_FLAGS if flag in flags) or "-"
    return f"cpu: {cpu_name or '?'}; flags {present}; {cpus} cpus"


def hardware_identity(device: str) -> str:
    """describe_hardware for this machine."""
    if device.startswith("cuda"):
        import torch

        return describe_hardware(device, cpu_name="", flags=frozenset(), cpus=0, gpu_name=torch.cuda.get_device_name())
    from model_server.backends.hardware import cpu_features, usable_cpus

    try:
        name = parse_cpu_model(CPUINFO.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        name = ""
    return describe_hardware(device, cpu_name=name or platform.processor() or platform.machine(),
                             flags=cpu_features().flags, cpus=usable_cpus())


def threads_of(info: ModelInfo) -> str:
    if info.backend == "ctranslate2":
        return f"intra {info.extra.get('intra_threads')} inter {info.extra.get('inter_threads')}"
    return str(info.extra.get("threads"))


def fingerprint_components(info: ModelInfo, num_beams: int, hardware: str) -> dict[str, Any]:
    """Everything the measured limits depend on, readable (stored in the entry next to its key).

    `output_vocab_size` is what restrict_output_vocab changes: the decoder's projection and beam search run
    over it (62,834 ids or about half for opus-mt), so limits measured with one setting do not fit the other;
    a model the setting leaves alone (mT5, a conversion without a vocabulary map) keeps its entry."""
    components = {"model": info.name, "model_files": files_digest(info.source), "engine": info.backend,
                  "precision": info.dtype, "num_beams": num_beams, "threads": threads_of(info), "device": info.device,
                  "output_vocab_size": info.extra.get("output_vocab_size"), "hardware": hardware}
    if info.extra.get("attention"):  # torch: each attention implementation has its own limits
        components["attention"] = info.extra["attention"]
    return components


def fingerprint(components: Mapping[str, Any]) -> str:
    """The entry's key: stable for equal components, different when any one changes."""
    canonical = json.dumps(dict(components), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def backend_fingerprint(backend: Seq2SeqBackend, num_beams: int) -> tuple[str, dict[str, Any]]:
    components = fingerprint_components(backend.info, num_beams, hardware_identity(backend.info.device))
    return fingerprint(components), components


# --- the file ----------------------------------------------------------------------------------------------

def _invalid(path: Path, reason: str) -> TuningFileError:
    return TuningFileError(f"{path} is not a valid tuning file ({reason}); remove it and run `model-server tune` "
                           "again, or point MODEL_SERVER_TUNING_FILE elsewhere")


def _read_file(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """{"entries": fingerprint -> batch limits entry, "layouts": layout key -> thread layout}; empty when the
    file does not exist. A file that is not ours fails, naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {"entries": {}, "layouts": {}}
    except UnicodeDecodeError:
        raise _invalid(path, "not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _invalid(path, f"not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
        raise _invalid(path, 'expected a JSON object with "entries"')
    if data.get("format") != FORMAT:
        raise _invalid(path, f"format {data.get('format')!r}, this version reads format {FORMAT}")
    layouts = data.get("layouts", {})
    if not isinstance(layouts, dict):
        raise _invalid(path, '"layouts" must be an object')
    for key, entry in data["entries"].items():
        _check_entry(path, key, entry)
    for key, layout in layouts.items():
        _check_layout(path, key, layout)
    return {"entries": data["entries"], "layouts": layouts}


def read_entries(path: Path) -> dict[str, dict[str, Any]]:
    """fingerprint -> entry; {} when the file does not exist. A file that is not ours fails, naming it."""
    return _read_file(path)["entries"]


def read_layouts(path: Path) -> dict[str, dict[str, Any]]:
    """layout key -> measured layout (a CTranslate2 thread layout or a torch attention choice: see layout_key);
    {} when there are none."""
    return _read_file(path)["layouts"]


def _positive_ints(values: Any, names: Sequence[str]) -> bool:
    return isinstance(values, dict) and all(isinstance(values.get(name), int) and not isinstance(values.get(name), bool)
                                            and values[name] >= 1 for name in names)


def _check_entry(path: Path, key: str, entry: Any) -> None:
    if not _positive_ints(entry.get("limits") if isinstance(entry, dict) else None, LIMIT_NAMES):
        raise _invalid(path, f"entry {key!r} needs integer limits >= 1: {', '.join(LIMIT_NAMES)}")


def _check_layout(path: Path, key: str, layout: Any) -> None:
    """A CTranslate2 thread layout (inter_threads, intra_threads) or a torch attention choice (attention)."""
    if isinstance(layout, dict) and "attention" in layout:
        if layout["attention"] not in ATTENTION_CHOICES:
            raise _invalid(path, f"layout {key!r} needs attention set to one of {', '.join(ATTENTION_CHOICES)}")
        return
    if not _positive_ints(layout, ("inter_threads", "intra_threads")):
        raise _invalid(path, f"layout {key!r} needs integer inter_threads and intra_threads >= 1")


def _write_file(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps({"format": FORMAT, **data}, ensure_ascii=False, indent=2) + "\n",
                             encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_entry(path: Path, key: str, entry: Mapping[str, Any]) -> None:
    """Add or replace one batch limits entry, keeping everything else."""
    data = _read_file(path)
    _check_entry(path, key, entry)
    data["entries"][key] = dict(entry)
    _write_file(path, data)


def write_layout(path: Path, key: str, layout: Mapping[str, Any]) -> None:
    """Add or replace one thread layout, keeping everything else."""
    data = _read_file(path)
    _check_layout(path, key, layout)
    data["layouts"][key] = dict(layout)
    _write_file(path, data)


# --- layouts: CTranslate2 thread layouts, torch attention -----------------------------------------------------
# How a loaded model runs, chosen among candidates that give the same results. CTranslate2: how many replicas
# (inter_threads) and threads each (intra_threads) split the cores; torch: which attention kernels it uses.
# The rules in model_server/backends/hardware.py (ct2_thread_layout, DEFAULT_TORCH_ATTENTION) are the
# defaults; `model-server tune` measures the candidates on the machine at hand and the server uses the
# measured best where one is recorded.

ATTENTION_CHOICES = ("eager", "sdpa")


def attention_candidates() -> list[str]:
    """The rule's attention implementation (hardware.DEFAULT_TORCH_ATTENTION) first, then the other."""
    from model_server.backends.hardware import DEFAULT_TORCH_ATTENTION

    return [DEFAULT_TORCH_ATTENTION] + [choice for choice in ATTENTION_CHOICES if choice != DEFAULT_TORCH_ATTENTION]


def layout_candidates(cores: int) -> list[tuple[int, int]]:
    """The auto rule's layout first, then one replica per core, one replica with every core, and (4+ cores)
    two replicas of half the cores each."""
    from model_server.backends.hardware import ct2_thread_layout

    cores = max(cores, 1)
    candidates = [ct2_thread_layout("cpu", cores), (cores, 1), (1, cores)]
    if cores >= 4:
        candidates.append((2, cores // 2))
    return list(dict.fromkeys(candidates))


def choose_layout(throughputs: Mapping[Hashable, float], preferred: Hashable, tolerance: float = 0.03) -> Hashable:
    """The layout with the highest throughput; `preferred` (the auto rule's) when it is within `tolerance`
    of it, so noise alone never moves a machine off the rule."""
    best = max(throughputs, key=throughputs.get)
    if preferred in throughputs and throughputs[preferred] >= (1 - tolerance) * throughputs[best]:
        return preferred
    return best


def layout_components(model: str, model_dir: str, precision: str, device: str, hardware: str,
                      engine: str) -> dict[str, Any]:
    """What a layout depends on: the batch limit fingerprint without the threads or attention (and the beams:
    one loaded model serves every decoding)."""
    return {"model": model, "model_files": files_digest(model_dir), "engine": engine, "precision": precision,
            "device": device, "hardware": hardware}


def layout_key(components: Mapping[str, Any]) -> str:
    return "layout-" + fingerprint(components)


def layout_key_for(engine: str, name: str, source: Path | str, precision: str, device: str) -> str:
    """The tuning file's key for a model's measured layout on this machine: CTranslate2's thread layout
    (precision: the requested compute type) or torch's attention implementation (precision: the dtype)."""
    return layout_key(layout_components(name, str(source), precision, device, hardware_identity(device), engine))


# --- a whole tuning run ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TuneConfig:
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    repeats: int = 3
    warmup: int = 1
    new_tokens: int = 40
    max_latency_s: float = 5.0
    tolerance: float = 0.05


def tune(backend: Seq2SeqBackend, num_beams: int, config: TuneConfig, *, progress: bool = False,
         sentences: Sequence[str] | None = None) -> tuple[str, dict[str, Any]]:
    """Measure `backend` with `num_beams` beams and return (fingerprint, entry) for the tuning file."""
    sentences = list(sentences or sample_sentences())
    options = forced_length(replace(backend.default_options(), num_beams=num_beams), config.new_tokens)
    calls = 1 + len(config.batch_sizes) * (config.warmup + config.repeats)
    from tqdm import tqdm

    with tqdm(total=calls, desc="tuning", unit="call", disable=not progress, leave=False) as bar:
        measurements = measure(backend, sentences, options, batch_sizes=config.batch_sizes, repeats=config.repeats,
                               warmup=config.warmup, max_latency_s=config.max_latency_s, on_call=bar.update)
    chosen = choose_batch_size(measurements, max_latency_s=config.max_latency_s, tolerance=config.tolerance)
    longest = max(backend.count_tokens(text) for text in sentences)
    key, components = backend_fingerprint(backend, num_beams)
    entry = {"fingerprint": components, "limits": limits_for(chosen, num_beams, longest), "batch_size": chosen,
             "measurements": [m.to_dict() for m in measurements],
             "method": {**asdict(config), "batch_sizes": list(config.batch_sizes), "sentences": len(sentences),
                        "longest_input_tokens": longest},
             "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
             "host": socket.gethostname()}
    return key, entry


def render_table(entry: Mapping[str, Any]) -> str:
    """The measurements as a small Markdown table, the chosen batch marked."""
    lines = ["| batch | s/batch | target tokens/s |", "|---:|---:|---:|"]
    for row in entry["measurements"]:
        mark = " <- chosen" if row["batch_size"] == entry["batch_size"] else ""
        lines.append(f"| {row['batch_size']} | {row['seconds']:.3f} | {row['tokens_per_s']:.1f}{mark} |")
    return "\n".join(lines) + "\n"


# --- what the server applies (pure) ------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchLimits:
    max_batch_size: int
    max_batch_hypotheses: int
    max_batch_tokens: int
    sources: dict[str, str]  # limit -> "settings" (set explicitly), "tuning" or "defaults"
    tuning: dict[str, Any] | None = None  # file, fingerprint, measured_at of the entry used; None without one
    untuned_because: str = "no tuning entry for this model/machine"  # said in the log line when tuning is None

    def describe(self) -> str:
        """For the start-up log line."""
        values = ", ".join(f"{name} {getattr(self, name)}" for name in LIMIT_NAMES)
        explicit = [name for name, source in self.sources.items() if source == "settings"]
        note = f"; set explicitly: {', '.join(explicit)}" if explicit else ""
        if self.tuning is not None:
            return f"batching limits from {self.tuning['file']} (tuned {self.tuning['measured_at']}): {values}{note}"
        return f"batching limits: defaults ({self.untuned_because}): {values}{note}"


def resolve_limits(values: Mapping[str, int], explicit: set[str] | frozenset[str], entry: Mapping[str, Any] | None,
                   *, file: Path | None = None, key: str | None = None,
                   untuned_because: str = BatchLimits.untuned_because) -> BatchLimits:
    """The limits in use: an explicit setting wins, then the tuning entry, then the setting's default."""
    chosen: dict[str, int] = {}
    sources: dict[str, str] = {}
    for name in LIMIT_NAMES:
        if name in explicit or entry is None:
            chosen[name], sources[name] = values[name], "settings" if name in explicit else "defaults"
        else:
            chosen[name], sources[name] = entry["limits"][name], "tuning"
    tuning = None if entry is None else {"file": str(file), "fingerprint": key,
                                         "measured_at": entry.get("measured_at")}
    return BatchLimits(**chosen, sources=sources, tuning=tuning, untuned_because=untuned_because)
