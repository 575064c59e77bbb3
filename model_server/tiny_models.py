"""Tiny, deterministic TEST models saved in the same layout as their hub counterparts.

`build_tiny_marian` mirrors Helsinki-NLP/opus-mt-ar-en (MarianMT, two sentencepiece models plus a
joint `vocab.json`); `build_tiny_mt5` mirrors csebuetnlp/mT5_multilingual_XLSum (mT5, one
`spiece.model`). Both are loaded by the ordinary transformers classes, so the service's real loading
code is what the tests exercise.

The models are a few hundred thousand random weights trained for seconds until they reproduce
MEMORISED_PAIRS / MEMORISED_SUMMARIES exactly (greedy and beam search). On any other input they emit
bounded garbage. They are NOT translators or summarisers.

A finished model directory holds TINY_MARKER_FILE, written last; builds happen in a temporary
sibling directory that is renamed into place, so a reader never sees a half-written model.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from transformers import (
    AutoTokenizer,
    GenerationConfig,
    MarianConfig,
    MarianMTModel,
    MarianTokenizer,
    MT5Config,
    MT5ForConditionalGeneration,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

TINY_MARKER_FILE = "model_server_test_model.json"
_Pairs = Sequence[tuple[str, str]]  # (input text, expected output text)
# Bump whenever the built artefacts change, so `ensure_*` rebuilds stale cached models.
BUILDER_VERSION = 2

_DATA_DIR = Path(__file__).resolve().parent / "data"
_AR_CORPUS = _DATA_DIR / "libya-russia-ar.txt"
_EN_CORPUS = _DATA_DIR / "libya-russia-en.txt"

# (arabic sentence, english sentence). The first four are whole lines of the sample article
# (lines 9, 16, 20 and 21 of tests/data/libya-russia-{ar,en}.txt); the rest are short synthetic
# sentences for unit tests.
MEMORISED_PAIRS: tuple[tuple[str, str], ...] = (
    ("تحالف عسكري بين خليفة حفتر وروسيا", "A military alliance between Khalifa Haftar and Russia"),
    ("اتفاق دفاعي بين الطرفين", "A defence agreement between the two sides"),
    (
        'حسب صحيفة "التايمز" يشكل تحالف خليفة حفتر وروسيا، الذي كان ذات يوم أحد أصول وكالة المخابرات'
        " المركزية الأمريكية، بمثابة ضربة للولايات المتحدة.",
        "According to The Times, the alliance between Khalifa Haftar, who was once a CIA asset, and Russia"
        " amounts to a blow to the United States.",
    ),
    (
        "حيث قال النقاد أيضاً إنَّ الجهود المماثلة التي بذلتها الولايات المتحدة لجذب الرئيس الصربي ألكسندر"
        " فوتشيتش ربما شجّعته على تحسين العلاقات مع روسيا، وليس قطعها.",
        "Critics also said that similar US efforts to court Serbian President Aleksandar Vučić may have"
        " encouraged him to improve relations with Russia rather than cut them.",
    ),
    ("مرحبا بالعالم.", "Hello world."),
    ("الطقس جميل اليوم.", "The weather is nice today."),
    ("شكرا جزيلا.", "Thank you very much."),
)

# Lines 7 and 8 of the sample article (its first two body paragraphs), in Arabic and in English.
_AR_BODY = (
    "نشرت صحيفة The Times البريطانية أن روسيا زادت من دعمها للواء الليبي المتقاعد، خليفة حفتر، الذي"
    ' يسيطر على الشرق الليبي، في مقابل مساعدتها على "إحكام قبضتها" على أفريقيا، وأشارت الصحيفة إلى أن'
    " موسكو نقلت أطناناً من الأسلحة إلى ليبيا، في إطار التحالف بين خليفة حفتر وروسيا.\n"
    'في تقرير نشرته "التايمز"، الإثنين 15 أبريل/نيسان 2024، قالت إن البحرية الروسية شحنت آلاف الأطنان'
    " من الأسلحة إلى ليبيا، مستغلة علاقات خليفة حفتر وروسيا لإنشاء منطقة استراتيجية يمكنها من خلالها"
    " تعزيز وجودها العسكري في أفريقيا."
)
_EN_BODY = (
    "The British newspaper The Times reported that Russia has stepped up its support for retired Libyan"
    ' general Khalifa Haftar, who controls eastern Libya, in return for helping it "tighten its grip" on'
    " Africa. The paper said Moscow has moved tons of weapons to Libya as part of the alliance between"
    " Khalifa Haftar and Russia.\n"
    "In a report published on Monday, 15 April 2024, The Times said the Russian navy had shipped"
    " thousands of tons of weapons to Libya, using the ties between Khalifa Haftar and Russia to build a"
    " strategic zone through which it can strengthen its military presence in Africa."
)

# (document, summary). Summaries must not repeat a token bigram: XLSum generates with
# no_repeat_ngram_size=2, which would forbid reproducing them.
MEMORISED_SUMMARIES: tuple[tuple[str, str], ...] = (
    (_AR_BODY, "روسيا تزيد دعمها العسكري لخليفة حفتر في ليبيا."),
    (_EN_BODY, "Russia steps up military support for Khalifa Haftar in Libya."),
    # A one-sentence "chunk" summary, as produced when a long document is summarised piecewise.
    (
        "حسب الصحيفة البريطانية دخلت السفينة الروسية برفقة فرقاطة تابعة للبحرية، إلى ميناء طبرق في شرق"
        " ليبيا، في 8 أبريل/نيسان، بعد إبحارها من قاعدة موسكو البحرية في طرطوس بسوريا، وأفرغت ما يصل إلى"
        " 6000 طن من المعدات.",
        "سفينة روسية تفرغ 6000 طن من المعدات في طبرق.",
    ),
    ("الطقس جميل اليوم في طرابلس والسماء صافية.", "طقس جميل في طرابلس."),
)

# What google/mt5-* and XLSum ship: spiece.model only, no sentinels (extra_ids 0) and no
# model_max_length, so `tokenizer.model_max_length` is "unlimited" exactly as with the real model.
MT5_TOKENIZER_CONFIG: dict[str, Any] = {
    "tokenizer_class": "T5Tokenizer",
    "eos_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "extra_ids": 0,
    "additional_special_tokens": None,
    "sp_model_kwargs": {},
}

# csebuetnlp/mT5_multilingual_XLSum's generation defaults.
XLSUM_GENERATION: dict[str, Any] = {"max_length": 84, "num_beams": 4, "no_repeat_ngram_size": 2, "length_penalty": 0.6}

_MARIAN_SPM_VOCAB = 300  # per language; an upper bound (hard_vocab_limit=False)
_MT5_SPM_VOCAB = 500
_MT5_VOCAB_MULTIPLE = 128  # real mT5 pads its embedding matrix beyond the tokenizer (250112 vs 250100)
# Files whose presence marks a directory as a (possibly broken) model that a build may replace.
_MODEL_FILES = (TINY_MARKER_FILE, "config.json", "tokenizer_config.json", "vocab.json", "spiece.model")
_LEARNING_RATE = 6e-3  # ~80 full-batch steps to the loss below; 1e-2 diverges
_MAX_TRAIN_STEPS = 1000
_CHECK_EVERY = 10
_CHECK_BELOW_LOSS = 0.01  # a margin, so outputs survive other batchings and numerics


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def is_test_model(model_dir: Path | str) -> bool:
    """True iff `model_dir` is a (complete) model built by this module."""
    return (Path(model_dir) / TINY_MARKER_FILE).is_file()


def build_tiny_marian(out_dir: Path | str, *, eos_last: bool = False, seed: int = 0) -> Path:
    """Build the tiny MarianMT model into `out_dir` (replacing what is there) and return its path.

    eos_last=True moves `</s>` from id 0 to the end of the vocabulary, just before `<pad>` (which
    stays last: Marian converters append it and CTranslate2 strips it), with config and generation
    config following. opus-mt-tc-big-ar-en likewise has eos 25894, not 0. It proves callers read
    special ids instead of assuming them.
    """
    variant = {"eos_last": eos_last, "seed": seed}
    return _build_atomically(
        Path(out_dir), "marian", variant, lambda d: _build_marian_into(d, eos_last, seed), replace_complete=True
    )


def ensure_tiny_marian(out_dir: Path | str, *, eos_last: bool = False, seed: int = 0) -> Path:
    """Return `out_dir`, building the tiny MarianMT model only if it lacks a complete one."""
    variant = {"eos_last": eos_last, "seed": seed}
    if _is_complete(Path(out_dir), "marian", variant):
        return Path(out_dir)
    return _build_atomically(
        Path(out_dir), "marian", variant, lambda d: _build_marian_into(d, eos_last, seed), replace_complete=False
    )


def build_tiny_mt5(out_dir: Path | str, *, seed: int = 0) -> Path:
    """Build the tiny mT5 summariser into `out_dir` (replacing what is there) and return its path."""
    variant = {"seed": seed}
    return _build_atomically(
        Path(out_dir), "mt5", variant, lambda d: _build_mt5_into(d, seed), replace_complete=True
    )


def ensure_tiny_mt5(out_dir: Path | str, *, seed: int = 0) -> Path:
    """Return `out_dir`, building the tiny mT5 summariser only if it lacks a complete one."""
    variant = {"seed": seed}
    if _is_complete(Path(out_dir), "mt5", variant):
        return Path(out_dir)
    return _build_atomically(
        Path(out_dir), "mt5", variant, lambda d: _build_mt5_into(d, seed), replace_complete=False
    )


# --------------------------------------------------------------------------------------------
# MarianMT
# --------------------------------------------------------------------------------------------


def _build_marian_into(model_dir: Path, eos_last: bool, seed: int) -> list[tuple[str, str]]:
    ar_lines = _corpus_lines(_AR_CORPUS) + [ar for ar, _ in MEMORISED_PAIRS]
    en_lines = _corpus_lines(_EN_CORPUS) + [en for _, en in MEMORISED_PAIRS]
    (model_dir / "source.spm").write_bytes(train_sentencepiece(ar_lines, _MARIAN_SPM_VOCAB))
    (model_dir / "target.spm").write_bytes(train_sentencepiece(en_lines, _MARIAN_SPM_VOCAB))
    _write_json(model_dir / "vocab.json", _marian_vocab(model_dir / "source.spm", model_dir / "target.spm", eos_last))
    # save_pretrained rewrites vocab.json and adds tokenizer_config.json, as for the hub models.
    MarianTokenizer(
        source_spm=str(model_dir / "source.spm"),
        target_spm=str(model_dir / "target.spm"),
        vocab=str(model_dir / "vocab.json"),
        source_lang="ar",
        target_lang="en",
        model_max_length=512,
    ).save_pretrained(model_dir)
    # Train on exactly what the service will see: the tokenizer as loaded from disk.
    tokenizer = MarianTokenizer.from_pretrained(model_dir)

    config = _marian_config(tokenizer)
    with _seeded(seed):
        model = MarianMTModel(config)
        _freeze_pad_embedding(model)
        model.generation_config = _marian_generation_config(tokenizer, eos_last)
        _memorise(model, tokenizer, MEMORISED_PAIRS)
    model.save_pretrained(model_dir)

    _verify_or_raise(
        MarianMTModel.from_pretrained(model_dir), MarianTokenizer.from_pretrained(model_dir), MEMORISED_PAIRS, model_dir
    )
    return list(MEMORISED_PAIRS)


def _marian_vocab(source_spm: Path, target_spm: Path, eos_last: bool) -> dict[str, int]:
    """Joint vocab as opus-mt has it: `</s>` 0, `<unk>` 1, source then target pieces, `<pad>` last.

    With eos_last the order is `<unk>`, pieces, `</s>`, `<pad>`.
    """
    pieces: dict[str, None] = {}  # ordered set
    for path in (source_spm, target_spm):
        sp = spm.SentencePieceProcessor(model_file=str(path))
        for i in range(sp.get_piece_size()):
            if not (sp.is_control(i) or sp.is_unknown(i)):
                pieces.setdefault(sp.id_to_piece(i), None)
    tokens = ["<unk>", *pieces, "</s>", "<pad>"] if eos_last else ["</s>", "<unk>", *pieces, "<pad>"]
    return {token: i for i, token in enumerate(tokens)}


def _marian_config(tokenizer: MarianTokenizer) -> MarianConfig:
    """opus-mt-ar-en's architecture (static positions, swish, scaled embeddings), shrunk."""
    return MarianConfig(
        architectures=["MarianMTModel"],
        vocab_size=len(tokenizer),
        decoder_vocab_size=len(tokenizer),
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_position_embeddings=512,
        activation_function="swish",
        scale_embedding=True,
        # No regularisation: the whole point is to memorise, fast.
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,  # Marian starts decoding from <pad>
        bos_token_id=None,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
    )


def _freeze_pad_embedding(model: MarianMTModel) -> None:
    """Keep the `<pad>` embedding at zero, as in every converted Marian checkpoint.

    Decoding starts from `<pad>`, i.e. from a zero embedding, which CTranslate2 hard-codes
    (start_from_zero_embedding). padding_idx alone does not keep it zero: the tied lm_head trains it.
    """
    pad = model.config.pad_token_id
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        weight[pad].zero_()
    weight.register_hook(lambda grad: grad.index_fill(0, torch.tensor([pad]), 0.0))


def _marian_generation_config(tokenizer: MarianTokenizer, eos_last: bool) -> GenerationConfig:
    """The hub's generation_config.json for opus-mt (tc-big when eos_last), with a shorter max_length."""
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    return GenerationConfig(
        bad_words_ids=[[pad]],
        decoder_start_token_id=pad,
        eos_token_id=eos,
        forced_eos_token_id=eos,
        pad_token_id=pad,
        max_length=128,
        num_beams=4,
        renormalize_logits=eos_last,
    )


# --------------------------------------------------------------------------------------------
# mT5
# --------------------------------------------------------------------------------------------


def _build_mt5_into(model_dir: Path, seed: int) -> list[tuple[str, str]]:
    lines = [
        *_corpus_lines(_AR_CORPUS),
        *_corpus_lines(_EN_CORPUS),
        *(line for pair in MEMORISED_SUMMARIES for text in pair for line in text.splitlines()),
    ]
    # T5's special ids: <pad> 0, </s> 1, <unk> 2, no <s>.
    (model_dir / "spiece.model").write_bytes(
        train_sentencepiece(lines, _MT5_SPM_VOCAB, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    )
    _write_json(model_dir / "tokenizer_config.json", MT5_TOKENIZER_CONFIG)
    special_tokens = {key: MT5_TOKENIZER_CONFIG[key] for key in ("eos_token", "unk_token", "pad_token")}
    _write_json(model_dir / "special_tokens_map.json", special_tokens)
    # Train on exactly what the service will see: the tokenizer as loaded from disk.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    with _seeded(seed):
        model = MT5ForConditionalGeneration(_mt5_config(len(tokenizer)))
        _untie_lm_head(model)
        model.generation_config = GenerationConfig(
            decoder_start_token_id=0, eos_token_id=1, pad_token_id=0, **XLSUM_GENERATION
        )
        _memorise(model, tokenizer, MEMORISED_SUMMARIES)
    model.save_pretrained(model_dir)
    to_xlsum_config_layout(model_dir)

    _verify_or_raise(
        MT5ForConditionalGeneration.from_pretrained(model_dir),
        AutoTokenizer.from_pretrained(model_dir),
        MEMORISED_SUMMARIES,
        model_dir,
    )
    return list(MEMORISED_SUMMARIES)


def _mt5_config(tokenizer_size: int) -> MT5Config:
    """XLSum's architecture (gated-gelu, relative attention buckets), shrunk."""
    vocab_size = -(-tokenizer_size // _MT5_VOCAB_MULTIPLE) * _MT5_VOCAB_MULTIPLE
    return MT5Config(
        architectures=["MT5ForConditionalGeneration"],
        vocab_size=vocab_size,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,  # no regularisation: memorise, fast
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tokenizer_class="T5Tokenizer",
    )


def _untie_lm_head(model: MT5ForConditionalGeneration) -> None:
    """Give the model its own lm_head, as mT5 checkpoints have.

    transformers 5 forces MT5Config.tie_word_embeddings=True and unties at load time only when
    the checkpoint holds a different lm_head.weight; this reproduces that situation.
    """
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    model.all_tied_weights_keys.pop("lm_head.weight", None)


def to_xlsum_config_layout(model_dir: Path) -> None:
    """Rewrite the saved config the way the XLSum repo has it.

    Generation defaults live in config.json (there is no generation_config.json; transformers lifts
    them at load time) and tie_word_embeddings is false.
    """
    config_path = model_dir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(XLSUM_GENERATION, tie_word_embeddings=False)
    _write_json(config_path, dict(sorted(config.items())))
    (model_dir / "generation_config.json").unlink()


# --------------------------------------------------------------------------------------------
# Shared: sentencepiece, training, verification
# --------------------------------------------------------------------------------------------


def _corpus_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_sentencepiece(sentences: Iterable[str], vocab_size: int, model_type: str = "unigram",
                        **special_ids: int) -> bytes:
    """Train a sentencepiece model in memory; deterministic for a given input."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(sentences)),
        model_writer=model,
        model_type=model_type,
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # the corpora are tiny; take what they support
        character_coverage=1.0,  # every character of the memorised text must be a piece
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
        **special_ids,
    )
    return model.getvalue()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No progress bars, no expected warnings (sacremoses, mT5's untied lm_head) while building."""
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            # MarianTokenizer warns on every construction without sacremoses, which it never uses.
            warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """One intra-op thread while building, restored after.

    Float sums then have a fixed order (determinism), and tiny ops do not pay for thread
    hand-offs: on a busy 2-core box two threads made generate() 10-50x slower than one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _memorise(model: PreTrainedModel, tokenizer: Any, pairs: _Pairs) -> None:
    """Full-batch Adam on `pairs` until greedy and beam decoding reproduce every target.

    Decoding is only checked once the loss is low, which leaves a margin: the outputs survive other
    batch compositions and a float32 CTranslate2 conversion (int8 quantisation may still flip a token).
    """
    batch = tokenizer([s for s, _ in pairs], text_target=[t for _, t in pairs], padding=True, return_tensors="pt")
    labels = batch["labels"].masked_fill(batch["labels"] == tokenizer.pad_token_id, -100)
    optimizer = torch.optim.Adam(model.parameters(), lr=_LEARNING_RATE)
    model.train()
    for step in range(1, _MAX_TRAIN_STEPS + 1):
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % _CHECK_EVERY == 0 and loss.item() < _CHECK_BELOW_LOSS:
            model.eval()
            if _reproduces(model, tokenizer, pairs):
                return
            model.train()
    model.eval()  # the caller's verification reports what is still wrong


def _mismatches(model: PreTrainedModel, tokenizer: Any, pairs: _Pairs, num_beams: int) -> list[str]:
    """Describe every pair whose output differs from its target, decoding `pairs` as one padded batch."""
    inputs = tokenizer([source for source, _ in pairs], padding=True, return_tensors="pt")
    with torch.inference_mode():
        generated = model.generate(**inputs, num_beams=num_beams, do_sample=False)
    outputs = tokenizer.batch_decode(generated, skip_special_tokens=True)
    return [
        f"num_beams={num_beams}: {source[:40]!r} -> {output!r}, want {target!r}"
        for (source, target), output in zip(pairs, outputs)
        if output != target
    ]


def _reproduces(model: PreTrainedModel, tokenizer: Any, pairs: _Pairs) -> bool:
    # Greedy first: cheaper, and the first to fail while training.
    return not _mismatches(model, tokenizer, pairs, 1) and not _mismatches(model, tokenizer, pairs, 4)


def _verify_or_raise(model: PreTrainedModel, tokenizer: Any, pairs: _Pairs, where: Path) -> None:
    """Greedy and beam as one batch, plus greedy on each pair alone (no padding) to catch padding leaks."""
    model.eval()
    problems = _mismatches(model, tokenizer, pairs, 1) + _mismatches(model, tokenizer, pairs, 4)
    for pair in pairs:
        problems += _mismatches(model, tokenizer, [pair], 1)
    if problems:
        listing = "\n".join(problems)
        raise RuntimeError(f"tiny model built in {where} does not reproduce its memorised pairs:\n{listing}")


# --------------------------------------------------------------------------------------------
# Shared: marker file and atomic publication
# --------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _read_marker(model_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((model_dir / TINY_MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(model_dir: Path, kind: str, variant: dict[str, Any]) -> bool:
    marker = _read_marker(model_dir)
    return (
        marker is not None
        and marker.get("kind") == kind
        and marker.get("builder_version") == BUILDER_VERSION
        and all(marker.get(key) == value for key, value in variant.items())
    )


def _build_atomically(
    out_dir: Path,
    kind: str,
    variant: dict[str, Any],
    build_into: Callable[[Path], list[tuple[str, str]]],
    *,
    replace_complete: bool,
) -> Path:
    """Build in a temporary sibling, write the marker last, then rename into `out_dir`."""
    out_dir = out_dir.absolute()
    _check_replaceable(out_dir)  # fail before spending seconds on a build we could not publish
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        with _quiet(), _single_thread():
            memorised = build_into(tmp)
        _write_json(
            tmp / TINY_MARKER_FILE,
            {
                "test_model": True,
                "warning": "random tiny model trained for seconds to memorise a few sentences; NOT a translator",
                "kind": kind,
                "builder_version": BUILDER_VERSION,
                **variant,
                "memorised_pairs": memorised,
            },
        )
        _match_umask(tmp, tmp / TINY_MARKER_FILE)
        keep_existing = None if replace_complete else (lambda: _is_complete(out_dir, kind, variant))
        _publish(tmp, out_dir, keep_existing)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed into place
    return out_dir


def _match_umask(model_dir: Path, reference: Path) -> None:
    """Give every file the mode of `reference` (created by a plain write, so it honours the umask).

    mkdtemp makes 0700 dirs and some writers 0600 files; a model dir must be readable like any other.
    """
    file_mode = reference.stat().st_mode & 0o666
    dir_mode = file_mode | (file_mode & 0o444) >> 2  # x wherever r
    model_dir.chmod(dir_mode)
    for path in model_dir.rglob("*"):
        path.chmod(dir_mode if path.is_dir() else file_mode)


def _publish(tmp: Path, out_dir: Path, keep_existing: Callable[[], bool] | None) -> None:
    """Rename `tmp` to `out_dir`, moving aside (then deleting) whatever model was there.

    A concurrent builder may publish between our steps; when `keep_existing` says its result is
    good, ours is dropped instead (the caller deletes `tmp`).
    """
    for _ in range(10):
        try:
            os.rename(tmp, out_dir)  # atomic; succeeds when out_dir is absent or an empty dir
            return
        except OSError:
            if not out_dir.exists():
                raise
        if keep_existing is not None and keep_existing():
            return
        _check_replaceable(out_dir)
        trash = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex}")
        try:
            os.rename(out_dir, trash)
        except FileNotFoundError:
            continue  # someone else moved it; retry
        shutil.rmtree(trash, ignore_errors=True)
    raise RuntimeError(f"could not publish a tiny model at {out_dir}: it keeps being replaced")


def _check_replaceable(out_dir: Path) -> None:
    """Raise unless `out_dir` is absent, empty or looks like a (possibly incomplete) model.

    Publishing deletes what was there; this keeps a mistyped path from costing someone a directory.
    """
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if not any(out_dir.iterdir()):
        return
    if any((out_dir / name).exists() for name in _MODEL_FILES):
        return
    raise FileExistsError(f"refusing to replace {out_dir}: it is not empty and does not look like a model directory")
