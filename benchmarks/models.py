"""Models under test: the benchmark-only random opus-mt-ar-en, the tiny test model, or any model dir.

`random-opus-mt-ar-en` has the exact architecture and special ids of Helsinki-NLP/opus-mt-ar-en
(config.json and generation_config.json as on the hub) with seeded RANDOM weights, so it costs what the
real model costs per token without a download. Its tokenizer gives the sample article realistic source
lengths (1.41 tokens per Arabic word, within the 1.2-1.4 published for Arabic sentencepiece models) and its
vocab.json is padded to 62834 ids (see `_write_tokenizer`). It is NOT a translator: the directory holds BENCH_MARKER_FILE,
config.json has `model_server_benchmark_only: true`, and it also carries the repo's test-model marker so
a server that loads it flags every response as coming from a test model.

`random-opus-mt-ar-en-split` is the same model (architecture, seed, weights, source tokenizer) with the real
model's source/target split of its vocabulary: a 32,000-piece English target.spm whose pieces are half of
vocab.json (see TARGET_SPM_PIECES), so restrict_output_vocab cuts the projection as it does on the real model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

RANDOM_OPUS_MT = "random-opus-mt-ar-en"
# The same model (architecture, seed, weights, source tokenizer) with the real model's source/target split of
# its vocabulary: what benchmarks.vocab measures restrict_output_vocab on (see _write_split_tokenizer).
RANDOM_OPUS_MT_SPLIT = "random-opus-mt-ar-en-split"
TINY = "tiny"
BENCH_MARKER_FILE = "model_server_benchmark_model.json"
BENCH_DIRNAME = "bench-random-opus-mt-ar-en"
SPLIT_DIRNAME = "bench-random-opus-mt-ar-en-split"
BUILDER_VERSION = 3
SPLIT_BUILDER_VERSION = 1
# The source sentencepiece model is trained on the sample article with this many BPE pieces, which
# gives it 1.41 tokens per word (mean 30.6 tokens per sentence, EOS included). The tiny model's own
# 300-piece tokenizer gives 2.9 tokens per word, twice the length real opus-mt sources have, and that
# doubles encoder and cross-attention cost. Published figures for Arabic sentencepiece models are 1.2-1.4
# tokens per word (e.g. AraToken, arXiv 2512.18399); the real opus-mt-ar-en tokenizer could not be measured
# here (no download), so 1.4 is an estimate of its fertility, not a measurement.
SOURCE_SPM_PIECES = 900
# The split variant's English target.spm: opus-mt-ar-en's model card gives its pre-processing as "SentencePiece
# (spm32k,spm32k)", one 32k-piece model per side, and its joint vocab.json (62,834 ids) is their union. So the
# target side here is a 32,000-piece unigram model (sentencepiece's default type, as OPUS-MT's) trained on
# English: wordfreq's TARGET_SPM_WORDS most frequent English words (without digits), the 20,000 most frequent
# capitalised again (sentence starts, names), and the English sample article. Its 31,997 normal pieces are the
# decoder's output vocabulary (plus </s>, <unk>, <pad>): 32,000 of the 62,834 ids, 50.9 %.
TARGET_SPM_PIECES = 32_000
TARGET_SPM_WORDS = 200_000
_CAPITALISED_WORDS = 20_000

# Helsinki-NLP/opus-mt-ar-en config.json (the fields that shape compute and decoding).
OPUS_MT_AR_EN_CONFIG = dict(
    vocab_size=62834, decoder_vocab_size=62834, d_model=512,
    encoder_layers=6, decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8,
    encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
    activation_function="swish", scale_embedding=True, static_position_embeddings=True,
    share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
    pad_token_id=62833, decoder_start_token_id=62833, eos_token_id=0, bos_token_id=0, forced_eos_token_id=0,
    dropout=0.1, attention_dropout=0.0, activation_dropout=0.0, init_std=0.02,
    normalize_before=False, normalize_embedding=False, add_final_layer_norm=False, use_cache=True,
)
# Helsinki-NLP/opus-mt-ar-en generation_config.json.
OPUS_MT_AR_EN_GENERATION = dict(
    bad_words_ids=[[62833]], bos_token_id=0, decoder_start_token_id=62833, eos_token_id=0,
    forced_eos_token_id=0, max_length=512, num_beams=4, pad_token_id=62833,
)


@dataclass(frozen=True)
class ModelUnderTest:
    label: str          # short name used in result file names: random-opus-mt-ar-en | tiny | <dir name>
    path: Path          # a model directory the service and the naive server both load
    kind: str           # random-real-architecture | tiny-test-model | user-model
    note: str


def resolve_model(spec: str, models_dir: Path, *, seed: int = 0) -> ModelUnderTest:
    """`random-opus-mt-ar-en` (built once into models_dir), `tiny`, or a model directory."""
    if spec == RANDOM_OPUS_MT:
        path = ensure_random_opus_mt(models_dir / BENCH_DIRNAME, models_dir, seed=seed)
        return ModelUnderTest(RANDOM_OPUS_MT, path, "random-real-architecture",
                              "Helsinki-NLP/opus-mt-ar-en architecture with seeded RANDOM weights: "
                              "speed only, NOT a translator")
    if spec == RANDOM_OPUS_MT_SPLIT:
        path = ensure_random_opus_mt_split(models_dir / SPLIT_DIRNAME, seed=seed)
        return ModelUnderTest(RANDOM_OPUS_MT_SPLIT, path, "random-real-architecture",
                              "Helsinki-NLP/opus-mt-ar-en architecture with seeded RANDOM weights and the real "
                              f"model's vocabulary split (a {TARGET_SPM_PIECES:,}-piece English target.spm): speed "
                              "only, NOT a translator")
    if spec == TINY:
        from model_server.tiny_models import ensure_tiny_marian

        path = ensure_tiny_marian(models_dir / "tiny-marian-ar-en")
        return ModelUnderTest(TINY, Path(path), "tiny-test-model",
                              "repo-built tiny test model (d_model 64, 2 layers): smoke runs only")
    return user_model(spec, "--model", (RANDOM_OPUS_MT, RANDOM_OPUS_MT_SPLIT))


def user_model(spec: str, option: str, built: Sequence[str]) -> ModelUnderTest:
    """A model directory given on the command line (`option`), checked; `built` names the random models."""
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        names = ", ".join(map(repr, (*built, TINY)))
        raise SystemExit(f"benchmarks: {option} {spec!r} is neither {names} nor a model directory with a "
                         "config.json")
    return ModelUnderTest(path.resolve().name, path.resolve(), "user-model", f"model directory {path}")


def ensure_ct2_conversion(model_path: Path, models_dir: Path, quantization: str) -> Path:
    """`model_path` converted for CTranslate2 into models_dir/<name>-ct2-<quantization>; an existing
    conversion is reused while its recorded source fingerprint matches the model's files and it is not a
    Marian conversion made before vocabulary maps (restrict_output_vocab needs the map)."""
    from model_server.backends import ct2_convert
    from model_server.errors import ServiceError

    out_dir = Path(models_dir).absolute() / f"{Path(model_path).name}-ct2-{quantization}"
    try:
        recorded = ct2_convert.read_metadata(out_dir)
        if recorded.get("source_fingerprint") == ct2_convert.source_fingerprint(Path(model_path)) \
                and recorded.get("quantization") == quantization \
                and not ct2_convert.converted_before_vocabulary_maps(recorded):
            return out_dir
    except ServiceError:
        pass  # missing or not a conversion: convert() says so if it cannot replace it
    log.info("converting %s for CTranslate2 (%s) into %s", model_path, quantization, out_dir)
    return ct2_convert.convert(str(model_path), out_dir, quantization, force=out_dir.exists(),
                               models_dir=models_dir)


def ensure_random_opus_mt(out_dir: Path, models_dir: Path, *, seed: int = 0) -> Path:
    """Return `out_dir`, building the random opus-mt-ar-en there first unless a complete one exists."""
    out_dir = Path(out_dir).absolute()
    if is_complete(out_dir, BUILDER_VERSION, seed):
        return out_dir
    from model_server.tiny_models import ensure_tiny_marian

    tiny = ensure_tiny_marian(Path(models_dir) / "tiny-marian-ar-en")
    log.info("building the benchmark-only random opus-mt-ar-en model into %s (once)", out_dir)
    return build_atomically(out_dir, lambda tmp: _build_into(
        tmp, seed, lambda model_dir: _write_tokenizer(model_dir, Path(tiny)), BUILDER_VERSION,
        {"tokenizer_from": str(tiny)}))


def ensure_random_opus_mt_split(out_dir: Path, *, seed: int = 0) -> Path:
    """Return `out_dir`, building the random opus-mt-ar-en with the real vocabulary split there first unless a
    complete one exists."""
    out_dir = Path(out_dir).absolute()
    if is_complete(out_dir, SPLIT_BUILDER_VERSION, seed):
        return out_dir
    log.info("building the benchmark-only random opus-mt-ar-en with a %d-piece English target.spm into %s (once)",
             TARGET_SPM_PIECES, out_dir)
    return build_random_opus_mt_split(out_dir, seed=seed)


def build_random_opus_mt_split(out_dir: Path, *, seed: int = 0, target_pieces: int = TARGET_SPM_PIECES,
                               target_words: int = TARGET_SPM_WORDS,
                               shape_overrides: dict[str, Any] | None = None) -> Path:
    """Build the split variant into `out_dir` (atomically). `target_pieces`, `target_words` and
    `shape_overrides` (tests only) shrink the target.spm and the layers; the marker records them."""
    overrides = dict(shape_overrides or {})
    extra = {"vocabulary": f"source.spm: {SOURCE_SPM_PIECES} BPE pieces learned from the sample article, "
                           f"placeholders for the rest of the source side; target.spm: {target_pieces} unigram "
                           f"pieces trained on wordfreq's {target_words} most frequent English words",
             **({"target_spm": {"pieces": target_pieces, "words": target_words}}
                if (target_pieces, target_words) != (TARGET_SPM_PIECES, TARGET_SPM_WORDS) else {}),
             **({"shape_overrides": overrides} if overrides else {})}
    return build_atomically(out_dir, lambda tmp: _build_into(
        tmp, seed, lambda model_dir: _write_split_tokenizer(model_dir, target_pieces, target_words),
        SPLIT_BUILDER_VERSION, extra, overrides))


def build_atomically(out_dir: Path, build_into: Callable[[Path], None]) -> Path:
    """Build a model into a temporary sibling of `out_dir` (markers written last by `build_into`), then
    rename it into place, replacing only a previous (stale or incomplete) model directory."""
    out_dir = Path(out_dir).absolute()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        build_into(tmp)
        if out_dir.exists():
            if any(out_dir.iterdir()) and not (out_dir / BENCH_MARKER_FILE).exists() \
                    and not (out_dir / "config.json").exists():
                raise FileExistsError(f"refusing to replace {out_dir}: it does not look like a model directory")
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed
    return out_dir


def is_complete(model_dir: Path, builder_version: int, seed: int) -> bool:
    """A finished build of this builder version and seed (the marker is written last), at full size."""
    try:
        marker = json.loads((Path(model_dir) / BENCH_MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("builder_version") == builder_version and marker.get("seed") == seed and \
        not marker.get("shape_overrides") and not marker.get("target_spm") and \
        (Path(model_dir) / "model.safetensors").is_file()


def _write_tokenizer(model_dir: Path, tokenizer_dir: Path) -> None:
    """A source sentencepiece model of realistic fertility, the tiny model's target one, a padded vocab.

    vocab.json keeps every id the tiny vocab has (`</s>` 0, `<unk>` 1, its pieces), adds the new source
    pieces after them, fills the gap with placeholder pieces ("▁w<id>", decoded as words) and moves
    `<pad>` to the last id, 62833, as in opus-mt-ar-en. So every id the random model can emit decodes,
    and tokenizer and model agree on pad.
    """
    (model_dir / "source.spm").write_bytes(_source_spm())
    shutil.copyfile(tokenizer_dir / "target.spm", model_dir / "target.spm")
    tiny = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    _write_joint_vocab(model_dir, tiny, _normal_pieces(model_dir / "source.spm"))


def _write_split_tokenizer(model_dir: Path, target_pieces: int, target_words: int) -> None:
    """The same source.spm, an English target.spm (TARGET_SPM_PIECES), vocab.json = their union, padded.

    vocab.json: `</s>` 0, `<unk>` 1, the target pieces, the source pieces the target lacks, placeholder
    pieces ("▁w<id>": the rest of a 32k Arabic source side) up to 62832, `<pad>` 62833. The placeholders are
    source-side pieces, so restrict_output_vocab keeps the target pieces and the special ids, about half.
    """
    (model_dir / "source.spm").write_bytes(_source_spm())
    (model_dir / "target.spm").write_bytes(_english_spm(target_pieces, target_words))
    pieces = _normal_pieces(model_dir / "target.spm") + _normal_pieces(model_dir / "source.spm")
    _write_joint_vocab(model_dir, {"</s>": 0, "<unk>": 1}, list(dict.fromkeys(pieces)))


def _source_spm() -> bytes:
    from model_server.tiny_models import train_sentencepiece
    from benchmarks.workload import SAMPLE_ARTICLE

    article_lines = [line for line in SAMPLE_ARTICLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    return train_sentencepiece(article_lines, SOURCE_SPM_PIECES, "bpe")


def _english_spm(pieces: int, words: int) -> bytes:
    """A unigram sentencepiece model of English (see TARGET_SPM_PIECES). No digits in the training text, so
    no target piece can be spelled like a "▁w<id>" placeholder."""
    import wordfreq

    from model_server.tiny_models import train_sentencepiece
    from benchmarks.workload import SAMPLE_ARTICLE_EN

    top = [word for word in wordfreq.top_n_list("en", words) if not any(c.isdigit() for c in word)]
    lines = top + [word.capitalize() for word in top[:_CAPITALISED_WORDS]] + \
        [line for line in SAMPLE_ARTICLE_EN.read_text(encoding="utf-8").splitlines() if line.strip()]
    return train_sentencepiece(lines, pieces, "unigram")


def _normal_pieces(spm_file: Path) -> list[str]:
    import sentencepiece as spm

    model = spm.SentencePieceProcessor(model_file=str(spm_file))
    return [model.id_to_piece(i) for i in range(model.get_piece_size())
            if not (model.is_control(i) or model.is_unknown(i))]


def _write_joint_vocab(model_dir: Path, base: dict[str, int], pieces: list[str]) -> None:
    """vocab.json: `base`'s ids (but `<pad>`), then `pieces` it lacks in order, placeholder pieces ("▁w<id>",
    decoded as words) for every id left below the last, `<pad>` at the last id (62833, as in opus-mt-ar-en);
    then the Marian tokenizer files. So every id the random model can emit decodes, and tokenizer and model
    agree on pad."""
    from transformers import MarianTokenizer

    vocab_size, pad_id = OPUS_MT_AR_EN_CONFIG["vocab_size"], OPUS_MT_AR_EN_CONFIG["pad_token_id"]
    ids = {token: i for token, i in base.items() if token != "<pad>" and i < pad_id}
    new_pieces = [piece for piece in pieces if piece not in ids]
    next_id = max(ids.values()) + 1
    ids.update({piece: next_id + k for k, piece in enumerate(new_pieces)})
    used = set(ids.values())
    vocab = {**ids, **{f"\u2581w{i}": i for i in range(vocab_size - 1) if i not in used}, "<pad>": pad_id}
    if sorted(vocab.values()) != list(range(vocab_size)) or vocab.get("</s>") != 0:
        raise RuntimeError("benchmark vocab is not a permutation of range(vocab_size) with </s> = 0")
    (model_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    MarianTokenizer(source_spm=str(model_dir / "source.spm"), target_spm=str(model_dir / "target.spm"),
                    vocab=str(model_dir / "vocab.json"), source_lang="ar", target_lang="en",
                    model_max_length=512).save_pretrained(model_dir)


def _build_into(model_dir: Path, seed: int, write_tokenizer: Callable[[Path], None], builder_version: int,
                marker_extra: dict[str, Any], shape_overrides: dict[str, Any] | None = None) -> None:
    import torch
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    write_tokenizer(model_dir)
    config = MarianConfig(architectures=["MarianMTModel"], **{**OPUS_MT_AR_EN_CONFIG, **(shape_overrides or {})})
    config.model_server_benchmark_only = True  # saved into config.json: a marker any reader sees
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MarianMTModel(config)
    model.generation_config = GenerationConfig(**OPUS_MT_AR_EN_GENERATION)
    model.eval()
    model.save_pretrained(model_dir)
    from model_server.tiny_models import TINY_MARKER_FILE

    marker = {"benchmark_only": True, "random_weights": True, "builder_version": builder_version, "seed": seed,
              "architecture_of": "Helsinki-NLP/opus-mt-ar-en", **marker_extra,
              "warning": "benchmark-only model: real opus-mt-ar-en architecture, RANDOM weights; NOT a translator"}
    # The repo's test-model marker makes the service report test_model=true and warn in every response.
    for name in (TINY_MARKER_FILE, BENCH_MARKER_FILE):  # BENCH_MARKER_FILE last: it means "complete"
        (model_dir / name).write_text(json.dumps({"test_model": True, "kind": "benchmark-random-opus-mt-ar-en",
                                                  **marker}, indent=2) + "\n", encoding="utf-8")
    model_dir.chmod(0o755)
    for path in model_dir.iterdir():
        path.chmod(0o644)
