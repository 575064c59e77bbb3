"""transformers/torch engine for seq2seq models (MarianMT for translation, mT5 for summaries)."""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from model_server.backends.base import Generated, GenerationOptions, ModelInfo
from model_server.backends.loading import wrong_architecture
from model_server.errors import ServiceError

T = TypeVar("T")

log = logging.getLogger(__name__)

# Positional limit for models whose config has none (T5 family uses relative positions); mT5 was
# trained on 512-token inputs.
DEFAULT_MAX_INPUT_TOKENS = 512


def _is_test_model(source: str) -> bool:
    from model_server.tiny_models import is_test_model

    return Path(source).is_dir() and is_test_model(source)


class TorchSeq2SeqBackend:
    """One model on one device. `generate` is blocking; callers run it on one executor thread per model.

    Every torch call of the model (loading included) runs on the backend's own thread (`on_model_thread`):
    a model used from another thread than the one that loaded it ran 1.6x slower in bfloat16 (opus-mt shape,
    one beam-4 sentence, 2-core Zen 4: 357 ms on the loading thread, 567-580 ms on any other; float32 1.1x),
    whatever the malloc arenas or OpenMP settings. The service calls generate from its executor thread, so
    without this every server ran at the slower speed.

    `restrict_output_vocab`: a Marian model with a separate target.spm decodes into its target vocabulary
    only (model_server/backends/vocab_restriction.py); ids and scores leave generate_tokens in the full
    vocabulary's ids either way."""

    def __init__(self, *, model_thread: ThreadPoolExecutor | None = None, **kwargs) -> None:
        """`model_thread`: a one-worker executor to share with other torch backends (the caller shuts it down);
        default: the backend's own."""
        self._owns_thread = model_thread is None
        self._thread = model_thread or ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch-model")
        try:
            self.on_model_thread(self._load, **kwargs)
        except BaseException:
            if self._owns_thread:
                self._thread.shutdown(wait=False)
            raise

    def on_model_thread(self, function: Callable[..., T], *args, **kwargs) -> T:
        """Run `function` on the thread that loaded the model and wait for it."""
        return self._thread.submit(function, *args, **kwargs).result()

    def _load(self, *, name: str, source: str, task: str, architectures: Sequence[str], device: str,
              dtype: str, threads: int | None = None, max_input_tokens: int | None = None,
              restrict_output_vocab: bool = False, attention: str | None = None) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        try:
            config = AutoConfig.from_pretrained(source)
        except OSError as exc:
            raise ServiceError("model_unavailable", f"cannot read the config of model '{name}' from {source}: {exc}") from exc
        if config.model_type not in architectures:
            raise wrong_architecture(name, config.model_type, task, architectures)
        if attention is None:  # the rule, as the service's own loading applies it without a tuning record
            from model_server.backends.hardware import DEFAULT_TORCH_ATTENTION

            attention = DEFAULT_TORCH_ATTENTION
        from model_server.backends.beam_attention import base_implementation, grouped_implementation

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            # The beam-grouped variant of the chosen attention where transformers can register one.
            self.model = AutoModelForSeq2SeqLM.from_pretrained(
                source, dtype=getattr(torch, dtype),
                attn_implementation=grouped_implementation(attention) or attention)
        except (OSError, ValueError) as exc:
            raise ServiceError("model_unavailable", f"cannot load model '{name}' from {source}: {exc}") from exc
        self.model.eval().to(device)
        # Every call passes max_new_tokens; a model-level max_length (512 in opus-mt) would only make
        # transformers warn on each call that both are set. The library default counts as unset.
        from transformers import GenerationConfig

        self.model.generation_config.max_length = GenerationConfig().max_length
        self._reduced = _reduced_vocabulary(self.model, source, name) if restrict_output_vocab else None
        self._torch = torch
        self.device = device
        # Token counting runs on the request-preparation threads (model_server/cpu.py) while the model
        # thread encodes batches: a fast tokenizer's padding/truncation state is shared and mutated per
        # call, so concurrent calls can fail. Tokenizer calls are short; the lock never covers generate.
        self._tokenizer_lock = threading.Lock()
        limit = _model_input_limit(config, self.tokenizer)
        self.max_input_tokens = min(limit, max_input_tokens or limit)
        self.info = ModelInfo(
            name=name, source=source, task=task, architecture=config.model_type, backend="torch",
            device=device, dtype=dtype, max_input_tokens=self.max_input_tokens,
            test_model=_is_test_model(source),
            extra={"eos_token_id": self.model.generation_config.eos_token_id,
                   "decoder_start_token_id": self.model.generation_config.decoder_start_token_id,
                   "vocab_size": config.vocab_size,
                   "output_vocab_size": self._reduced.size if self._reduced else config.vocab_size,
                   "threads": torch.get_num_threads(),
                   "attention": base_implementation(self.model.config._attn_implementation)},
        )

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer(text, truncation=False)["input_ids"])

    def default_options(self) -> GenerationOptions:
        return GenerationOptions.from_generation_config(self.model.generation_config)

    def generate(self, texts: Sequence[str], options: GenerationOptions) -> list[Generated]:
        sequences, token_logprobs = self.on_model_thread(self.generate_tokens, texts, options)
        with self._tokenizer_lock:
            texts_out = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        return [self._result(texts_out[i], sequences[i], token_logprobs[i], options) for i in range(len(texts))]

    def generate_tokens(self, texts: Sequence[str], options: GenerationOptions):
        """Output token ids (decoder start first) and each token's log-probability, both on the CPU.
        Call it through on_model_thread (generate does)."""
        from transformers import LogitsProcessorList

        torch = self._torch
        with self._tokenizer_lock:
            encoded = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=False).to(self.device)
        # Greedy search's processors see logits; beam search's see log-probs, renormalized afterwards by
        # transformers' last processor when the generation config sets renormalize_logits (the tiny
        # eos-last Marian does), which runs after the recorder: the recorder then applies the same log_softmax.
        normalize = options.num_beams == 1 or bool(self.model.generation_config.renormalize_logits)
        reduced_ids = self._reduced.generation_kwargs if self._reduced else {}
        recorder = _ChosenTokenLogProbs(keep=_candidates_per_row(options.num_beams, self._eos_ids()),
                                        normalize=normalize)
        try:
            with torch.inference_mode():
                output = self.model.generate(
                    **encoded,
                    num_beams=options.num_beams,
                    num_return_sequences=1,
                    do_sample=False,
                    max_new_tokens=options.max_new_tokens,
                    min_new_tokens=options.min_new_tokens or None,
                    length_penalty=options.length_penalty,
                    no_repeat_ngram_size=options.no_repeat_ngram_size,
                    repetition_penalty=options.repetition_penalty,
                    logits_processor=LogitsProcessorList([recorder]),
                    return_dict_in_generate=True,
                    **reduced_ids,
                    **_beam_search_inputs(self.model, encoded, options.num_beams,
                                          reduced_ids.get("decoder_start_token_id", self._decoder_start_id())),
                )
                # The recorder saw reduced ids (restricted vocabulary): look scores up before mapping back.
                token_logprobs = recorder.chosen(output.sequences, getattr(output, "beam_indices", None)).cpu()
                sequences = self._reduced.to_full(output.sequences) if self._reduced else output.sequences
        except torch.cuda.OutOfMemoryError:
            # Free the cache so the batcher's smaller retry has room.
            torch.cuda.empty_cache()
            raise
        return sequences.cpu(), token_logprobs

    def _result(self, text: str, sequence, logprobs, options: GenerationOptions) -> Generated:
        eos_ids = self._eos_ids()
        generated = sequence[1:].tolist()  # drop decoder_start_token
        length = next((i + 1 for i, tok in enumerate(generated) if tok in eos_ids), len(generated))
        ended = length <= len(generated) and bool(generated) and generated[length - 1] in eos_ids
        # With forced_eos_token_id (opus-mt sets it) transformers forces EOS as the last allowed token:
        # an EOS there ends a cut output, it was not generated.
        forced_eos = self.model.generation_config.forced_eos_token_id is not None
        score = float(logprobs[:length].sum()) / max(length, 1)
        return Generated(text=text.strip(), score=round(score, 6), num_tokens=length,
                         hit_max_length=(not ended or forced_eos) and length >= options.max_new_tokens)

    def _decoder_start_id(self) -> int:
        config = self.model.generation_config
        start = config.decoder_start_token_id
        return start if start is not None else self.model.config.decoder_start_token_id

    def _eos_ids(self) -> set[int]:
        eos_id = self.model.generation_config.eos_token_id
        return set(eos_id if isinstance(eos_id, list) else [eos_id])

    def close(self) -> None:
        def release() -> None:
            del self.model
            if self.device == "cuda":
                self._torch.cuda.empty_cache()

        if hasattr(self, "model"):
            self.on_model_thread(release)
        if self._owns_thread:
            self._thread.shutdown(wait=True)


def attention_choice(requested: str, tuning_file: Path, name: str, source: str, dtype: str,
                     device: str) -> tuple[str, str]:
    """(attention implementation, where it came from): `requested` unless it is auto, else what `model-server
    tune` recorded for this model and machine, else the rule (hardware.DEFAULT_TORCH_ATTENTION)."""
    from model_server.backends.hardware import DEFAULT_TORCH_ATTENTION

    if requested != "auto":
        return requested, "settings"
    from model_server.tuning import layout_key_for, read_layouts

    tuned = read_layouts(tuning_file).get(layout_key_for("torch", name, source, dtype, device))
    if tuned is not None and "attention" in tuned:
        return tuned["attention"], f"tuning file {tuning_file}"
    return DEFAULT_TORCH_ATTENTION, "auto rule"


def _beam_search_inputs(model, encoded, num_beams: int, decoder_start_token_id: int) -> dict:
    """generate() keyword arguments that let beam search compute each sentence's cross-attention keys and
    values once, for the sentence, and never reorder them; {} where that does not apply (greedy, or a
    transformers without encoder-decoder cache objects).

    transformers runs the encoder, repeats its output once per beam, and the first decoder step projects
    every copy onto each layer's cross-attention keys and values: num_beams times the same work. With
    512-token mT5 chunks that is about as much as the encoder itself. Here the encoder runs once, one
    decoder step on the sentences (not the beams) fills the cross-attention cache, and all the beams of a
    sentence attend over that one copy (beam_attention; with an attention implementation that cannot, it is
    repeated per beam): the same numbers, a quarter of the projections at beam 4. Cross-attention entries
    depend only on the source, the same for every beam of a sentence, and beams are only ever reordered
    among their own sentence's beams, so reordering them would copy tensors into equal ones: the cache
    reorders its self-attention half only. The decoder input of that one step does not matter (keys and
    values are projections of the source); the decoder start token keeps it a real one."""
    if num_beams == 1 or not model.config.is_encoder_decoder:
        return {}
    keyword = _cache_keyword()
    if keyword is None:
        return {}
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    from model_server.backends.beam_attention import is_grouped

    config = model.config.get_text_config(decoder=True)
    mask = encoded["attention_mask"]
    encoder_outputs = model.get_encoder()(input_ids=encoded["input_ids"], attention_mask=mask, return_dict=True)
    cross = DynamicCache(config=config)
    start = torch.full((mask.shape[0], 1), decoder_start_token_id, dtype=torch.long, device=mask.device)
    model.get_decoder()(input_ids=start, encoder_hidden_states=encoder_outputs.last_hidden_state,
                        encoder_attention_mask=mask, use_cache=True,
                        **{keyword: EncoderDecoderCache(DynamicCache(config=config), cross)})
    if not is_grouped(model.config._attn_implementation):  # attention that needs a copy per beam
        cross.batch_repeat_interleave(num_beams)
    cache = _source_only_cross_attention_cache_class()(DynamicCache(config=config), cross)
    return {"encoder_outputs": encoder_outputs, keyword: cache}


@functools.cache
def _cache_keyword() -> str | None:
    """The generate() and forward() keyword for a cache object: `cache` (transformers 5), `past_key_values`
    (4.x, where EncoderDecoderCache exists), or None."""
    try:
        from transformers.cache_utils import EncoderDecoderCache  # noqa: F401
        from transformers.generation import utils
    except ImportError:
        return None
    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


@functools.cache
def _source_only_cross_attention_cache_class():
    """Defined on first use: transformers is imported only where a model is loaded."""
    from transformers.cache_utils import EncoderDecoderCache

    class SourceOnlyCrossAttentionCache(EncoderDecoderCache):
        """Reorders the self-attention cache at every beam step and never the cross-attention cache, whose
        entries are equal for every beam of a sentence (see _beam_search_inputs)."""

        def reorder_cache(self, beam_idx) -> None:
            self.self_attention_cache.reorder_cache(beam_idx)

    return SourceOnlyCrossAttentionCache


def _reduced_vocabulary(model, source: str, name: str):
    """The model restricted to its target vocabulary (see vocab_restriction), or None (logged) when it has
    none to restrict to."""
    from model_server.backends.vocab_restriction import ReducedVocabulary, model_target_vocabulary

    model_dir = _local_model_dir(source)
    kept = model_target_vocabulary(model_dir) if model_dir is not None else None
    reason = ("no separate target vocabulary (not a Marian model with its own target.spm)" if kept is None
              else ReducedVocabulary.unmapped_reason(model.generation_config))
    if reason is not None:
        log.info("%s: output vocabulary not restricted: %s", name, reason)
        return None
    try:
        reduced = ReducedVocabulary(model, kept)
    except ValueError as exc:
        log.warning("%s: output vocabulary not restricted: %s", name, exc)
        return None
    log.info("%s: decoding into its target vocabulary: %d of %d ids", name, reduced.size, model.config.vocab_size)
    return reduced


def _local_model_dir(source: str) -> Path | None:
    """The directory holding the loaded model's files (a hub id: its cached snapshot), or None."""
    if Path(source).is_dir():
        return Path(source)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached as a snapshot: nothing to read the vocabulary from
        return None


def _candidates_per_row(num_beams: int, eos_ids: set[int]) -> int:
    """How many continuations per hypothesis row can survive one step. Greedy keeps the best token;
    beam search keeps the top (EOS tokens + 1) x beams (at least 2 x beams) of all rows' continuations,
    so whatever a row contributes is within that row's own top that many."""
    if num_beams == 1:
        return 1
    return max(2, 1 + len(eos_ids)) * num_beams


class _ChosenTokenLogProbs:
    """A logits processor (run after transformers' own) that keeps, per step and hypothesis row, only the
    few candidates that can be chosen: the top `keep` processed log-probabilities and their token ids.
    `chosen` then traces each output token back to its row (beam_indices) and looks its score up.

    Same numbers as compute_transition_scores over output_scores=True, without keeping a vocabulary-wide
    distribution per row and step (hypotheses x 62k x steps floats: gigabytes for a beam-4 batch of 64).
    `normalize` applies log_softmax first (greedy search's processors see logits, not log-probs)."""

    def __init__(self, *, keep: int, normalize: bool) -> None:
        self.keep = keep
        self.normalize = normalize
        self.values: list = []
        self.tokens: list = []

    def __call__(self, input_ids, scores):
        logprobs = scores.log_softmax(dim=-1) if self.normalize else scores
        values, tokens = row_top_k(logprobs, self.keep)
        self.values.append(values.float())
        self.tokens.append(tokens)
        return scores

    def chosen(self, sequences, beam_indices=None):
        """Log-probability of each output token, (outputs, generated steps); 0 past the end of a beam
        search hypothesis (greedy: the step's best token, as past EOS nothing is used).
        `sequences` start with the decoder prompt; `beam_indices` (beam search) names, per output and
        step, the row the token was chosen from; None means row = output (greedy)."""
        import torch

        steps = min(len(self.values), sequences.shape[1] - 1)
        if steps == 0:
            return torch.zeros((sequences.shape[0], 0))
        values = torch.stack(self.values[:steps], dim=1)  # (rows, steps, keep)
        tokens = torch.stack(self.tokens[:steps], dim=1)
        outputs = sequences.shape[0]
        if beam_indices is None:
            rows = torch.arange(outputs, device=values.device)[:, None].expand(outputs, steps)
        else:
            rows = beam_indices[:, :steps].to(device=values.device, dtype=torch.long)
        ended = rows < 0
        rows = rows.clamp(min=0)
        step_index = torch.arange(steps, device=values.device)[None, :].expand_as(rows)
        row_values = values[rows, step_index]  # (outputs, steps, keep)
        row_tokens = tokens[rows, step_index]
        picked = row_tokens == sequences[:, 1:steps + 1, None].to(values.device)
        found = torch.where(picked, row_values, torch.full_like(row_values, float("-inf"))).amax(dim=-1)
        # A token the search took but topk left out ties with the last kept candidate (nothing outside
        # the top `keep` scores higher than it), so that candidate's value is the token's.
        logprobs = torch.where(picked.any(dim=-1), found, row_values[..., -1])
        return logprobs.masked_fill(ended, 0.0)


TOP_K_BLOCK = 64


def row_top_k(rows, k: int):
    """`rows.topk(k, dim=-1)` (values and indices; rows of any width) in about a quarter of its time on CPU.

    torch's topk over a 62,834-wide vocabulary cost ~3.6 ms per step for 128 beam hypotheses (2 threads), 3-4%
    of a beam-4 batch. The k largest values lie in the k blocks of 64 columns with the largest maxima (each
    is its own block's maximum or below it), so: one max per block, topk over the block maxima, topk over
    the k x 64 candidates gathered from those blocks. Same values as topk; among equal values the index
    may differ, as it may between topk implementations."""
    import torch

    count, width = rows.shape
    k = min(k, width)
    if k == 1:
        best = rows.max(dim=-1, keepdim=True)
        return best.values, best.indices
    if width < 4 * k * TOP_K_BLOCK:
        top = rows.topk(k, dim=-1)
        return top.values, top.indices
    whole = width // TOP_K_BLOCK * TOP_K_BLOCK
    maxima = rows[:, :whole].reshape(count, -1, TOP_K_BLOCK).amax(dim=-1)  # a view of rows, split in blocks
    if whole < width:  # the short last block
        maxima = torch.cat([maxima, rows[:, whole:].amax(dim=-1, keepdim=True)], dim=1)
    blocks = maxima.topk(k, dim=-1).indices
    columns = (blocks[..., None] * TOP_K_BLOCK + torch.arange(TOP_K_BLOCK, device=rows.device)).reshape(count, -1)
    outside = columns >= width  # past the end of the short last block
    candidates = rows.gather(1, columns.clamp(max=width - 1)).masked_fill(outside, float("-inf"))
    top = candidates.topk(k, dim=-1)
    return top.values, columns.gather(1, top.indices)


def _model_input_limit(config, tokenizer) -> int:
    limit = getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_INPUT_TOKENS
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 100_000:
        limit = min(limit, tokenizer_limit)
    return int(limit)
