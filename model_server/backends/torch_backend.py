"""transformers/torch engine for seq2seq models (MarianMT for translation, mT5 for summaries)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Sequence

from model_server.backends.base import Generated, GenerationOptions, ModelInfo
from model_server.backends.loading import wrong_architecture
from model_server.errors import ServiceError

log = logging.getLogger(__name__)

# Positional limit for models whose config has none (T5 family uses relative positions); mT5 was
# trained on 512-token inputs.
DEFAULT_MAX_INPUT_TOKENS = 512


def _is_test_model(source: str) -> bool:
    from model_server.tiny_models import is_test_model

    return Path(source).is_dir() and is_test_model(source)


class TorchSeq2SeqBackend:
    """One model on one device. `generate` is blocking and not thread-safe: callers run it on one
    dedicated executor thread per model."""

    def __init__(self, *, name: str, source: str, task: str, architectures: Sequence[str], device: str,
                 dtype: str, threads: int | None = None, max_input_tokens: int | None = None) -> None:
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
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForSeq2SeqLM.from_pretrained(source, dtype=getattr(torch, dtype))
        except (OSError, ValueError) as exc:
            raise ServiceError("model_unavailable", f"cannot load model '{name}' from {source}: {exc}") from exc
        self.model.eval().to(device)
        # Every call passes max_new_tokens; a model-level max_length (512 in opus-mt) would only make
        # transformers warn on each call that both are set. The library default counts as unset.
        from transformers import GenerationConfig

        self.model.generation_config.max_length = GenerationConfig().max_length
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
                   "vocab_size": config.vocab_size, "threads": torch.get_num_threads()},
        )

    def count_tokens(self, text: str) -> int:
        with self._tokenizer_lock:
            return len(self.tokenizer(text, truncation=False)["input_ids"])

    def default_options(self) -> GenerationOptions:
        return GenerationOptions.from_generation_config(self.model.generation_config)

    def generate(self, texts: Sequence[str], options: GenerationOptions) -> list[Generated]:
        torch = self._torch
        with self._tokenizer_lock:
            encoded = self.tokenizer(list(texts), return_tensors="pt", padding=True, truncation=False).to(self.device)
        greedy = options.num_beams == 1
        # Greedy search records only the chosen tokens' log-probs; output_scores would keep a full
        # vocabulary distribution per row and step (gigabytes for a batch of 64 at a 62k vocabulary).
        # Beam search needs output_scores to trace each kept beam's token scores.
        recorder = _ChosenTokenLogProbs() if greedy else None
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
                    logits_processor=_processors(recorder),
                    return_dict_in_generate=True,
                    output_scores=not greedy,
                )
                if greedy:
                    token_logprobs = recorder.stacked().cpu()
                else:
                    token_logprobs = self.model.compute_transition_scores(
                        output.sequences, output.scores, output.beam_indices, normalize_logits=False).float().cpu()
        except torch.cuda.OutOfMemoryError:
            # Free the cache so the batcher's smaller retry has room.
            torch.cuda.empty_cache()
            raise
        sequences = output.sequences.cpu()
        with self._tokenizer_lock:
            texts_out = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        return [self._result(texts_out[i], sequences[i], token_logprobs[i], options) for i in range(len(texts))]

    def _result(self, text: str, sequence, logprobs, options: GenerationOptions) -> Generated:
        eos_id = self.model.generation_config.eos_token_id
        eos_ids = set(eos_id if isinstance(eos_id, list) else [eos_id])
        generated = sequence[1:].tolist()  # drop decoder_start_token
        length = next((i + 1 for i, tok in enumerate(generated) if tok in eos_ids), len(generated))
        ended = length <= len(generated) and bool(generated) and generated[length - 1] in eos_ids
        # With forced_eos_token_id (opus-mt sets it) transformers forces EOS as the last allowed token:
        # an EOS there ends a cut output, it was not generated.
        forced_eos = self.model.generation_config.forced_eos_token_id is not None
        score = float(logprobs[:length].sum()) / max(length, 1)
        return Generated(text=text.strip(), score=round(score, 6), num_tokens=length,
                         hit_max_length=(not ended or forced_eos) and length >= options.max_new_tokens)

    def close(self) -> None:
        del self.model
        if self.device == "cuda":
            self._torch.cuda.empty_cache()


class _ChosenTokenLogProbs:
    """A logits processor (run after transformers' own) that records, per step, the log-probability of
    the token greedy search picks: the maximum of the processed scores' log-softmax. Same numbers as
    compute_transition_scores(normalize_logits=True), without storing whole distributions."""

    def __init__(self) -> None:
        self.steps: list = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.log_softmax(dim=-1).max(dim=-1).values.float())
        return scores

    def stacked(self):
        import torch

        return torch.stack(self.steps, dim=1)


def _processors(recorder: _ChosenTokenLogProbs | None):
    from transformers import LogitsProcessorList

    return LogitsProcessorList([recorder] if recorder is not None else [])


def _model_input_limit(config, tokenizer) -> int:
    limit = getattr(config, "max_position_embeddings", None) or DEFAULT_MAX_INPUT_TOKENS
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < 100_000:
        limit = min(limit, tokenizer_limit)
    return int(limit)
