"""CTranslate2 engine for seq2seq models (MarianMT, T5/mT5): int8 on CPU, int8/float16 on CUDA.

`ct2_compute_type=auto` is chosen per machine from what CTranslate2 offers and the CPU flags
(choose_compute_type).

It runs a directory written by `model-server convert` (see `ct2_convert`): CTranslate2's `model.bin`
plus the original tokenizer and configs in `hf/`. The results mean exactly what the torch backend's
mean (`Generated`): the service's dynamic batcher plans each batch, this backend only runs it.

CTranslate2 works on token *strings*: sources are encoded with the Hugging Face tokenizer and turned into
pieces; outputs are pieces turned back into ids and decoded by the same tokenizer.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from model_server.backends.base import Generated, GenerationOptions, ModelInfo
from model_server.backends.ct2_convert import (VMAP_FILE, cached_conversion, converted_before_vocabulary_maps,
                                               import_ctranslate2, quantization_for, read_metadata, tokenizer_dir,
                                               verify_converted)
from model_server.backends.hardware import NATIVE_BF16_FLAGS, cpu_features, ct2_thread_layout, usable_cpus
from model_server.backends.loading import with_precision, wrong_architecture
from model_server.backends.torch_backend import _model_input_limit  # the same limit on both backends
from model_server.errors import ServiceError

if TYPE_CHECKING:
    from model_server.settings import Settings

log = logging.getLogger(__name__)

# Compute types that CTranslate2 runs on CUDA only.
CUDA_ONLY_COMPUTE_TYPES = frozenset({"float16", "int8_float16", "bfloat16", "int8_bfloat16"})
# `auto` for summarization on CUDA, best first: mT5's feed-forward activations overflow float16 (inf/NaN,
# garbage summaries; the torch backend swaps float16 for bfloat16 for the same reason), so its activations
# run in bfloat16 (float32's range) or, on GPUs without bfloat16, in float32.
AUTO_SUMMARIZATION_CUDA_COMPUTE_TYPES = ("int8_bfloat16", "int8_float32")


def resolve_ct2_device(device: str) -> str:
    """auto -> cuda when CTranslate2 sees a GPU (it has its own CUDA build, independent of torch's)."""
    ctranslate2 = import_ctranslate2()
    has_cuda = ctranslate2.get_cuda_device_count() > 0
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise ServiceError("model_unavailable", "device=cuda was requested but CTranslate2 sees no CUDA device "
                                                "(set MODEL_SERVER_DEVICE=cpu or auto)")
    return device


def choose_compute_type(flags: frozenset[str], device: str, supported: frozenset[str] | set[str], *,
                        task: str = "translation") -> tuple[str, str]:
    """What ct2_compute_type=auto means here, and why (pure: `supported` is what
    ctranslate2.get_supported_compute_types(device) lists, `flags` the CPU flags).

    CPU: int8 weights with float32 activations (`int8`, run as int8_float32: the fast path, and no overflow
    for mT5); int8_bfloat16 where the CPU has native bf16 and CTranslate2 offers it (CTranslate2 4.x offers
    bfloat16 on CUDA only); float32 where CTranslate2 offers no int8. CUDA: int8 weights with float16
    activations (half float16's memory, about its speed); the summarizer first of
    AUTO_SUMMARIZATION_CUDA_COMPUTE_TYPES it supports."""
    if device == "cuda":
        if task == "summarization":
            chosen = next((t for t in AUTO_SUMMARIZATION_CUDA_COMPUTE_TYPES if t in supported),
                          AUTO_SUMMARIZATION_CUDA_COMPUTE_TYPES[-1])
            return chosen, "cuda, summarizer: mT5 overflows float16, so bfloat16 activations (else float32)"
        return "int8_float16", "cuda: int8 weights, float16 activations"
    native = sorted(NATIVE_BF16_FLAGS & flags)
    if native and "int8_bfloat16" in supported:
        return "int8_bfloat16", f"cpu has native bf16 ({', '.join(native)}) and CTranslate2 offers int8_bfloat16"
    if "int8" in supported:
        why = (f"cpu has {', '.join(native)} but CTranslate2 offers no bfloat16 on cpu" if native
               else "cpu without native bf16")
        return "int8", f"int8 weights, float32 activations ({why})"
    return "float32", "CTranslate2 offers no int8 on this cpu"


def compute_type_choice(compute_type: str, device: str, task: str = "translation") -> tuple[str, str]:
    """(compute type, reason): `auto` is choose_compute_type on this machine; anything else must be
    supported by this machine."""
    supported = frozenset(import_ctranslate2().get_supported_compute_types(device))
    if compute_type == "auto":
        resolved, reason = choose_compute_type(cpu_features().flags, device, supported, task=task)
    else:
        resolved, reason = compute_type, f"ct2_compute_type={compute_type} set explicitly"
    if task == "summarization" and "float16" in resolved.split("_"):
        log.warning("ct2_compute_type=%s for the summarizer: mT5's activations overflow float16 (empty or garbage "
                    "summaries); prefer auto, int8_bfloat16 or bfloat16", resolved)
    if resolved not in supported:
        raise ServiceError("model_unavailable", f"ct2_compute_type={resolved} is not supported on {device} here "
                                                f"(supported: {', '.join(sorted(supported))})")
    return resolved, reason


def resolve_compute_type(compute_type: str, device: str, task: str = "translation") -> str:
    """The compute type to load with (see compute_type_choice for the reason)."""
    return compute_type_choice(compute_type, device, task)[0]


class CTranslate2Seq2SeqBackend:
    """One converted model on one device. `generate` is blocking and thread-safe: a call spreads its batch
    over every replica (inter_threads), or, with `parallel=True`, runs on one replica, so that up to
    `parallel_calls` calls from as many threads keep the replicas busy independently (the service's batcher
    runs that many batches at once: a replica whose batch ended starts the next one while the others still
    run, instead of waiting for the slowest sub-batch and for its clients' next requests)."""

    def __init__(self, *, name: str, model_dir: Path | str, task: str, architectures: Sequence[str],
                 device: str, compute_type: str, intra_threads: int = 0, inter_threads: int = 1,
                 max_batch_size: int = 0, batch_type: str = "examples", beam_patience: float = 2.0,
                 max_input_tokens: int | None = None, restrict_output_vocab: bool = False) -> None:
        ctranslate2 = import_ctranslate2()
        model_dir = Path(model_dir)
        metadata = read_metadata(model_dir)
        architecture = metadata["architecture"]
        if architecture not in architectures:
            raise wrong_architecture(name, architecture, task, architectures)
        self.tokenizer, config, generation = _load_hf_side(tokenizer_dir(model_dir), name)
        try:
            self.translator = ctranslate2.Translator(str(model_dir), device=device, compute_type=compute_type,
                                                     intra_threads=intra_threads, inter_threads=inter_threads)
        except (RuntimeError, ValueError) as exc:
            raise ServiceError("model_unavailable", f"CTranslate2 cannot load {model_dir}: {exc}") from exc
        self._generation = generation
        # transformers forces EOS as the last allowed token when the model sets forced_eos_token_id
        # (opus-mt does); CTranslate2 has no such option, so generate() emulates it.
        self.forced_eos = generation.forced_eos_token_id is not None
        # patience 2 (collect 2 x beam finished hypotheses, then pick the best) chose what transformers'
        # beam search chooses on every tiny-model test input; CTranslate2's default 1 stops earlier.
        use_vmap = restrict_output_vocab and _has_vocabulary_map(model_dir, metadata, name)
        self._run_options = {"batch_type": batch_type, "patience": beam_patience, "use_vmap": use_vmap}
        self._max_batch_size = max_batch_size
        self._replicas = inter_threads
        # As in the torch backend: a fast tokenizer's padding/truncation state is shared and mutated per call,
        # and it is called from the request-preparation threads (count_tokens) and from every parallel
        # generate. Tokenizer calls are short; the engine call runs outside the lock.
        self._tokenizer_lock = threading.Lock()
        self._end_token = self.tokenizer.eos_token
        limit = _model_input_limit(config, self.tokenizer)
        self.max_input_tokens = min(limit, max_input_tokens or limit)
        self.info = ModelInfo(
            name=name, source=str(model_dir), task=task, architecture=architecture, backend="ctranslate2",
            device=device, dtype=self.translator.compute_type, max_input_tokens=self.max_input_tokens,
            test_model=bool(metadata.get("test_model")),
            # compute_type is what CTranslate2 runs (int8 on cpu runs as int8_float32), requested_... the setting.
            extra={"compute_type": self.translator.compute_type, "requested_compute_type": compute_type,
                   "quantization": metadata["quantization"],
                   "converted_from": metadata["source_model"],
                   "source_fingerprint": metadata["source_fingerprint"],
                   "ctranslate2_version": ctranslate2.__version__,
                   "eos_token_id": generation.eos_token_id,
                   "decoder_start_token_id": generation.decoder_start_token_id,
                   "vocab_size": config.vocab_size,
                   "output_vocab_size": metadata["output_vocab_size"] if use_vmap else config.vocab_size,
                   "intra_threads": intra_threads,
                   "inter_threads": inter_threads, "ct2_max_batch_size": max_batch_size,
                   "ct2_batch_type": batch_type, "ct2_beam_patience": beam_patience},
        )

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer(text, truncation=False)["input_ids"])

    def default_options(self) -> GenerationOptions:
        return GenerationOptions.from_generation_config(self._generation)

    def decoding_steps(self, options: GenerationOptions) -> int:
        """Tokens CTranslate2 decodes for `max_new_tokens` (both count EOS). With a forced EOS the last
        position is reserved for it: it is appended afterwards without a model step (see _result)."""
        return max(options.max_new_tokens - 1, 1) if self.forced_eos else options.max_new_tokens

    @property
    def parallel_calls(self) -> int:
        """Calls worth running at once: one per replica on cpu, unless ct2_max_batch_size makes CTranslate2
        cut every batch into sub-batches itself (those are spread over the replicas by CTranslate2)."""
        return self._replicas if self.info.device == "cpu" and not self._max_batch_size else 1

    def generate(self, texts: Sequence[str], options: GenerationOptions, *,
                 parallel: bool = False) -> list[Generated]:
        """`parallel`: this call runs beside others (see parallel_calls), so it takes one replica."""
        tokenizer = self.tokenizer
        with self._tokenizer_lock:
            sources = [tokenizer.convert_ids_to_tokens(tokenizer(text, truncation=False)["input_ids"])
                       for text in texts]
        max_length = self.decoding_steps(options)
        results = self.translator.translate_batch(
            sources,
            **self._run_options,
            max_batch_size=0 if parallel else self.split_size(len(sources)),
            beam_size=options.num_beams,
            num_hypotheses=1,
            length_penalty=options.length_penalty,
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
            max_decoding_length=max_length,
            min_decoding_length=min(options.min_new_tokens, max_length),  # the default 1 forbids empty outputs
            max_input_length=0,  # no silent truncation: the pipeline already bounds segment lengths
            return_end_token=True,  # hypothesis lengths (and the length penalty) count EOS, as transformers does
            return_scores=True,
        )
        if len(results) != len(texts):
            raise RuntimeError(f"CTranslate2 returned {len(results)} results for {len(texts)} inputs")
        with self._tokenizer_lock:
            return [self._result(result.hypotheses[0], result.scores[0], options, max_length) for result in results]

    def split_size(self, count: int) -> int:
        """CTranslate2's sub-batch size: ct2_max_batch_size when set, else an even split of the batch over the
        replicas (inter_threads), which CTranslate2 runs in parallel; 0 (no split) with one replica."""
        if self._max_batch_size:
            return self._max_batch_size
        return -(-count // self._replicas) if self._replicas > 1 else 0

    def _result(self, tokens: list[str], score: float, options: GenerationOptions, max_length: int) -> Generated:
        ended = bool(tokens) and tokens[-1] == self._end_token
        length = len(tokens)
        # CTranslate2's score is sum(log p) / length**length_penalty (length with EOS, see generate);
        # undo the normalisation, then average per token as the torch backend does.
        total = score * length ** options.length_penalty if length else 0.0
        cut = not ended and length >= max_length
        if cut and self.forced_eos:
            length += 1  # the forced EOS: probability 1 after forcing, so log-prob 0
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Generated(text=text.strip(), score=round(total / max(length, 1), 6), num_tokens=length,
                         hit_max_length=cut)

    def close(self) -> None:
        translator, self.translator = self.translator, None
        if translator is not None:
            translator.unload_model()


def _has_vocabulary_map(model_dir: Path, metadata: dict, name: str) -> bool:
    """Whether the conversion has a vocabulary map (ct2_convert writes one for Marian models with a separate
    target vocabulary); a Marian conversion from before that is served unrestricted, said once at load."""
    if (model_dir / VMAP_FILE).is_file() and metadata.get("output_vocab_size"):
        return True
    if converted_before_vocabulary_maps(metadata):
        log.info("%s: %s has no vocabulary map (converted by an older model-server): decoding into the whole "
                 "vocabulary; convert it again (--force) to decode into the target vocabulary only", name, model_dir)
    return False


def load_ctranslate2_backend(settings: "Settings", name: str, *, converted_dir: Path | None, task: str,
                             architectures: Sequence[str], max_input_tokens: int | None) -> CTranslate2Seq2SeqBackend:
    """The configured model on CTranslate2: `converted_dir` (checked against `name`) or, with
    ct2_convert_on_start, a converted copy in the cache (converted now if missing).

    `max_input_tokens` is the task's own limit (max_input_tokens or summary_max_input_tokens; None = the
    model's); `task` also picks what ct2_compute_type=auto means (see choose_compute_type)."""
    device = resolve_ct2_device(settings.device.value)
    compute_type, reason = compute_type_choice(settings.ct2_compute_type.value, device, task)
    if converted_dir is not None:
        model_dir = verify_converted(converted_dir, name, settings.models_dir)
    else:
        model_dir = cached_conversion(name, settings.models_dir, settings.ct2_cache_path(),
                                      quantization_for(compute_type))
    inter_threads, intra_threads, layout_source = thread_layout(settings, name, model_dir, compute_type, device)
    backend = CTranslate2Seq2SeqBackend(
        name=name, model_dir=model_dir, task=task, architectures=architectures, device=device,
        compute_type=compute_type, intra_threads=intra_threads,
        inter_threads=inter_threads, max_batch_size=settings.ct2_max_batch_size,
        batch_type=settings.ct2_batch_type.value, beam_patience=settings.ct2_beam_patience,
        max_input_tokens=max_input_tokens, restrict_output_vocab=settings.restrict_output_vocab)
    backend.info = with_precision(backend.info, settings.ct2_compute_type.value, backend.translator.compute_type,
                                  reason)
    backend.info = backend.info.model_copy(update={"extra": {**backend.info.extra,
                                                             "thread_layout_source": layout_source}})
    log.info("%s on ctranslate2: %d replicas x %d threads (%s)", name, inter_threads, intra_threads, layout_source)
    return backend


def thread_layout(settings: "Settings", name: str, model_dir: Path, compute_type: str,
                  device: str) -> tuple[int, int, str]:
    """(inter_threads, intra_threads, where they came from): the settings when either is set, else the layout
    `model-server tune` measured best for this model and machine, else the auto rule (ct2_thread_layout)."""
    cores = usable_cpus()
    if settings.ct2_inter_threads or settings.ct2_intra_threads:
        return (*ct2_thread_layout(device, cores, settings.ct2_inter_threads, settings.ct2_intra_threads),
                "settings")
    if device == "cpu":
        from model_server.tuning import layout_key_for, read_layouts

        key = layout_key_for("ctranslate2", name, model_dir, compute_type, device)
        tuned = read_layouts(settings.tuning_path()).get(key)
        if tuned is not None:
            return tuned["inter_threads"], tuned["intra_threads"], f"tuning file {settings.tuning_path()}"
    return (*ct2_thread_layout(device, cores), "auto rule")


def _load_hf_side(hf_dir: Path, name: str) -> tuple[Any, Any, Any]:
    """Tokenizer, config and generation defaults of the source model, from the converted dir's copy."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    try:
        config = AutoConfig.from_pretrained(hf_dir)
        tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    except (OSError, ValueError) as exc:
        raise ServiceError("model_unavailable", f"cannot load the tokenizer of '{name}' from {hf_dir}: {exc}") from exc
    try:
        generation = GenerationConfig.from_pretrained(hf_dir)
    except OSError:  # no generation_config.json: defaults live in config.json (the XLSum layout)
        generation = GenerationConfig.from_pretrained(hf_dir, config_file_name="config.json", _from_model_config=True)
    return tokenizer, config, generation

