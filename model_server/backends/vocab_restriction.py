"""Decode into the target vocabulary only (Marian models with a separate target sentencepiece model).

opus-mt's `vocab.json` is the union of its Arabic source pieces and its English target pieces, and the
decoder projects onto all of it at every step; the model was trained to emit target pieces only. Both
engines restrict the output to `target_vocabulary_ids`: the target.spm pieces plus the special tokens.

torch (`ReducedVocabulary`): a smaller output projection (and `final_logits_bias`) holding only the kept
rows; generation runs in the reduced id space (the generation config's ids remapped, the decoder's input
embedding looks reduced ids up in the full table) and output ids are mapped back. CTranslate2: a vocabulary
map (`vmap.txt`, written at conversion by ct2_convert) whose always-on entry lists the same pieces, used
with `use_vmap=True`.

Why a reduced id space rather than the simpler wrapper that computes only the kept logits and scatters
them into a full-width -inf tensor: the wrapper keeps every full-width operation after the projection
(log_softmax, the logits processors, beam search's top-k over beams x 62,834, the score recorder). Measured
on the random real-shape opus-mt (float32, a synthetic half split: 31,419 of 62,834 ids kept, 32 forced
decode steps, shared 2-core AMD EPYC, best of 3), ms per sentence-token, full / scatter / reduced:
greedy batch 16, 1 thread 3.63 / 2.98 / 2.73; beam 4 batch 16, 1 thread 11.69 / 10.48 / 7.74 (1.51x);
batch 8, 2 threads: greedy 5.44 / 4.67 / 4.06, beam 4 10.96 / 7.13 / 7.34 (noisy). CTranslate2 int8 with
the same map, batch 16: greedy 1.18 / 1.17, beam 4 1.85 / 1.46 ms (1.26x).

Log-probabilities are then normalised over the target vocabulary: each token's log-prob rises by
-log(probability mass the model put on the kept pieces at that step), which is 0 when the model puts no
mass on source-only pieces. Greedy outputs are unchanged wherever the unrestricted output uses no excluded
piece (the best token is kept, so it stays the best); beam search ranks whole hypotheses, each raised by its
own renormalisation, so it may choose the other of two near-tied hypotheses.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

TARGET_SPM = "target.spm"
SOURCE_SPM = "source.spm"
# Generation-config fields holding one token id or a list of them.
_ID_FIELDS = ("eos_token_id", "pad_token_id", "bos_token_id", "decoder_start_token_id", "forced_eos_token_id")
# Fields that restrict or bias output ids in ways this module does not remap: a model that sets one keeps
# its full vocabulary.
_UNMAPPED_FIELDS = ("forced_bos_token_id", "suppress_tokens", "begin_suppress_tokens", "sequence_bias",
                    "force_words_ids", "forced_decoder_ids")


def target_vocabulary_ids(vocab: Mapping[str, int], target_pieces: Iterable[str],
                          special_ids: Iterable[int]) -> list[int]:
    """The ids the decoder may emit, ascending: every target piece `vocab` has, plus `special_ids`
    (pad, eos, unk, decoder start). Pieces `vocab` lacks are skipped (the tokenizer maps them to unk)."""
    kept = {vocab[piece] for piece in target_pieces if piece in vocab}
    kept.update(int(i) for i in special_ids if i is not None)
    return sorted(kept)


def model_target_vocabulary(model_dir: Path | str) -> list[int] | None:
    """`target_vocabulary_ids` for the Marian model in `model_dir`, or None when nothing is to be
    restricted: not a Marian model, no separate target.spm (a joint one, or mT5's spiece.model), separate
    source and target vocabularies already, or a target vocabulary that is the whole vocabulary."""
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    target_spm, vocab_file = model_dir / TARGET_SPM, model_dir / "vocab.json"
    if config.get("model_type") != "marian" or not target_spm.is_file() or not vocab_file.is_file():
        return None
    source_spm = model_dir / SOURCE_SPM
    if source_spm.is_file() and source_spm.read_bytes() == target_spm.read_bytes():
        return None  # a joint sentencepiece model: every piece is a target piece
    if _read_json(model_dir / "tokenizer_config.json", missing={}).get("separate_vocabs"):
        return None  # the decoder's vocabulary (target_vocab.json) already holds target pieces only
    vocab = _read_json(vocab_file)
    kept = target_vocabulary_ids(vocab, _sentencepiece_pieces(target_spm), _special_ids(model_dir, config, vocab))
    return kept if len(kept) < config.get("vocab_size", len(vocab)) else None


def _sentencepiece_pieces(path: Path) -> list[str]:
    """The normal pieces of a sentencepiece model (control and unknown pieces are special tokens)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]


def _special_ids(model_dir: Path, config: Mapping[str, Any], vocab: Mapping[str, int]) -> list[int]:
    """pad, eos, bos, decoder start and forced eos as the configs set them; unk, eos and pad as the
    tokenizer names them."""
    ids: list[Any] = []
    for source in (config, _read_json(model_dir / "generation_config.json", missing={})):
        for field in _ID_FIELDS:
            value = source.get(field)
            ids.extend(value if isinstance(value, list) else [value])
    tokenizer_config = _read_json(model_dir / "tokenizer_config.json", missing={})
    for field, default in (("unk_token", "<unk>"), ("eos_token", "</s>"), ("pad_token", "<pad>")):
        token = tokenizer_config.get(field) or default
        if isinstance(token, str) and token in vocab:
            ids.append(vocab[token])
    return [i for i in ids if isinstance(i, int)]


def _read_json(path: Path, missing: dict | None = None) -> dict:
    """The JSON object in `path`; `missing` (when given) if there is no such file."""
    if missing is not None and not path.is_file():
        return missing
    return json.loads(path.read_text(encoding="utf-8"))


def vmap_text(model_dir: Path | str, kept: list[int]) -> str:
    """CTranslate2's vocabulary map with one always-on entry (an empty source key): the kept tokens.
    CTranslate2 adds unk, bos and eos itself; tokens its vocabulary lacks (Marian's pad) count as unk."""
    vocab = _read_json(Path(model_dir) / "vocab.json")
    token_of = {i: token for token, i in vocab.items()}
    return "\t" + " ".join(token_of[i] for i in kept if i in token_of) + "\n"


class ReducedVocabulary:
    """A loaded MarianMTModel restricted to `kept` output ids (torch).

    The output projection and `final_logits_bias` keep only the kept rows; the decoder's input embedding
    maps reduced ids to full ones and looks them up in the shared table (the encoder keeps it as is).
    `generation_kwargs` are the generation config's ids in the reduced space; `to_full` maps output ids
    back. Call `unmapped_reason` first: a model that sets a field this class does not remap is refused;
    a ValueError (a generation id outside `kept`) leaves the model unchanged."""

    def __init__(self, model, kept: list[int]) -> None:
        import torch

        self.size = len(kept)
        self.reduced_of = {full: reduced for reduced, full in enumerate(kept)}
        self.generation_kwargs = self._remapped_generation(model.generation_config)  # before changing the model
        weight = model.get_output_embeddings().weight
        self.full_ids = torch.tensor(kept, dtype=torch.long, device=weight.device)
        head = torch.nn.Linear(weight.shape[1], self.size, bias=False, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            head.weight.copy_(weight.index_select(0, self.full_ids))
        model.lm_head = head
        model.final_logits_bias = torch.nn.Buffer(model.final_logits_bias.index_select(1, self.full_ids))
        decoder = model.get_decoder()
        decoder.embed_tokens = _reduced_id_embedding_class()(decoder.embed_tokens, self.full_ids)

    @staticmethod
    def unmapped_reason(generation_config) -> str | None:
        """Why a model's generation config cannot run restricted, or None."""
        for field in _UNMAPPED_FIELDS:
            if getattr(generation_config, field, None):
                return f"its generation config sets {field}"
        return None

    def _remapped_generation(self, generation_config) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for field in _ID_FIELDS:
            value = getattr(generation_config, field, None)
            if value is None:
                continue
            ids = value if isinstance(value, list) else [value]
            reduced = [self.reduced_of[i] for i in ids if i in self.reduced_of]
            if not reduced:
                raise ValueError(f"generation config {field}={value} is outside the target vocabulary")
            kwargs[field] = reduced if isinstance(value, list) else reduced[0]
        # A banned sequence with an excluded token can no longer occur: drop it.
        bad = [[self.reduced_of[i] for i in words] for words in (generation_config.bad_words_ids or [])
               if all(i in self.reduced_of for i in words)]
        kwargs["bad_words_ids"] = bad or None
        return kwargs

    def to_full(self, ids):
        """Reduced ids (any shape) as ids of the full vocabulary."""
        return self.full_ids.to(ids.device)[ids]


@functools.cache
def _reduced_id_embedding_class():
    """Defined on first use: torch is imported only where a model is loaded."""
    import torch

    class ReducedIdEmbedding(torch.nn.Module):
        """The full embedding table, indexed by reduced ids."""

        def __init__(self, full, full_ids) -> None:
            super().__init__()
            self.full = full
            self.register_buffer("full_ids", full_ids, persistent=False)

        def forward(self, ids):
            return self.full(self.full_ids[ids])

    return ReducedIdEmbedding
