"""Raw engine calls: the loaded model driven directly, without the service's backend code around it.

A raw engine wraps the objects a loaded service backend already holds (same weights, device, dtype,
threads) and calls the engine the way a hand-written script would: `model.generate(...)` for torch,
`ctranslate2.Translator.translate_batch(...)` for CTranslate2. Inputs are tokenized once, outside the
timed call, and no scores, decoding or result objects are made, so `backend row / raw row` is the cost
of the backend layer itself, net of what the backend does better than a stock call (torch: beam search
reorders its cross-attention cache once instead of at every step). The offline phase times raw engines with the same code as backends
(`benchmarks.offline.run_offline`), so rows line up batch size for batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from model_server.backends.base import GenerationOptions


@dataclass(frozen=True)
class RawOutput:
    num_tokens: int  # target tokens produced (what run_offline counts)


class RawTorchEngine:
    """`model.generate` on pre-tokenized inputs: greedy or beam search, no score bookkeeping."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.model, self.tokenizer, self.device = backend, backend.model, backend.tokenizer, backend.device
        self._encoded: dict[tuple[str, ...], Any] = {}
        self.info = {"engine": "transformers generate()", "device": backend.info.device, "dtype": backend.info.dtype}

    def generate(self, texts: Sequence[str], options: GenerationOptions) -> list[RawOutput]:
        import torch

        key = tuple(texts)
        if key not in self._encoded:  # tokenized once per distinct batch, outside later timed calls
            self._encoded[key] = self.tokenizer(list(texts), return_tensors="pt", padding=True).to(self.device)
        def run():
            with torch.inference_mode():
                return self.model.generate(**self._encoded[key], num_beams=options.num_beams, do_sample=False,
                                           max_new_tokens=options.max_new_tokens,
                                           min_new_tokens=options.min_new_tokens or None)

        # On the thread that loaded the model, as the backend runs it (see TorchSeq2SeqBackend).
        sequences = self.backend.on_model_thread(run)
        generated = sequences.shape[1] - 1  # minus the decoder start token; forced lengths: no padding
        return [RawOutput(generated)] * len(texts)


class RawCTranslate2Engine:
    """`Translator.translate_batch` on pre-tokenized inputs, with the decode lengths the backend uses.

    opus-mt forces EOS as the last allowed token; transformers computes that step and then overrides
    it, CTranslate2 (which has no such option) is asked for one token less and the EOS is appended
    without a model step. The raw call decodes the backend's own `decoding_steps` and splits the batch over
    the replicas as the backend does, so backend and raw rows do the same model work on the same threads and
    count the same tokens.
    """

    def __init__(self, backend: Any) -> None:
        import ctranslate2

        self.backend, self.translator, self.tokenizer = backend, backend.translator, backend.tokenizer
        self._tokens: dict[str, list[str]] = {}
        self.info = {"engine": "ctranslate2 Translator.translate_batch()", "device": backend.info.device,
                     "compute_type": self.translator.compute_type, "ctranslate2": ctranslate2.__version__}

    def _source(self, text: str) -> list[str]:
        if text not in self._tokens:
            self._tokens[text] = self.tokenizer.convert_ids_to_tokens(self.tokenizer(text)["input_ids"])
        return self._tokens[text]

    def generate(self, texts: Sequence[str], options: GenerationOptions) -> list[RawOutput]:
        sources = [self._source(text) for text in texts]
        steps = self.backend.decoding_steps(options)
        # The backend's even split over the translator's replicas (inter_threads): the same parallel layout.
        results = self.translator.translate_batch(sources, beam_size=options.num_beams, max_decoding_length=steps,
                                                  max_batch_size=self.backend.split_size(len(sources)),
                                                  min_decoding_length=min(options.min_new_tokens, steps),
                                                  max_input_length=0, return_end_token=True)
        appended = 1 if self.backend.forced_eos else 0
        return [RawOutput(len(result.hypotheses[0]) + appended) for result in results]


def raw_engine(backend: Any) -> RawTorchEngine | RawCTranslate2Engine:
    """The raw engine under a loaded translation backend (torch or ctranslate2)."""
    if backend.info.backend == "ctranslate2":
        return RawCTranslate2Engine(backend)
    return RawTorchEngine(backend)
