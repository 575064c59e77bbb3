"""`model-server trim-vocab`: an mT5/T5 model cut down to the sentencepiece pieces Arabic and English need.

mT5 projects every generated token onto 250,112 pieces of about a hundred languages; summaries here are
Arabic or English. Trimming keeps the pieces that tokenizing these texts produces with the model's own
sentencepiece model:
- the user's corpus files (`corpus_files`), the kind of text that will be summarised;
- wordfreq's Arabic and English word lists (`words_per_language` most frequent words each; English also
  capitalised, as at the start of a sentence);
- every single character of the Arabic and Latin alphabets, alone and word-initial (so any Arabic or
  English text still tokenizes without <unk>, if into shorter pieces), and every piece made only of digits
  and punctuation;
and always the special pieces (control, unknown, user-defined and byte pieces), the sentinels
(<extra_id_N>) and the tokens the tokenizer adds after the sentencepiece vocabulary.

Kept rows keep their relative order, so the special ids (pad 0, eos 1, unk 2) stay put. The output is a
normal model directory: config.json (new vocab_size, special ids remapped), model.safetensors (the
embedding and lm_head rows of the kept ids), a rebuilt spiece.model whose piece i is row i, the tokenizer
and generation config files, and MANIFEST_FILE (the source, its fingerprint, what was kept and from
what). Text made only of kept pieces tokenizes to the same pieces as before (a unigram segmentation
never crosses a space, and the best segmentation of such text uses only kept pieces); other text falls
back to shorter pieces. Outputs stay the same wherever the original model would not emit a removed
piece; scores move by the probability mass the removed pieces had (`model-server check-vocab` measures
both on real weights).
"""

from __future__ import annotations

import json
import re
import shutil
import string
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Sequence

from model_server.files import read_utf8

TRIMMABLE_ARCHITECTURES = ("mt5", "t5")
MANIFEST_FILE = "model_server_trim.json"
MANIFEST_FORMAT = 1
LANGUAGES = ("ar", "en")
DEFAULT_WORDS_PER_LANGUAGE = 50_000
SPM_FILE = "spiece.model"
# Files copied as they are (ids inside are remapped where they occur); tokenizer.json is rebuilt.
_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
_CONFIG_ID_KEYS = ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id", "sep_token_id",
                   "forced_bos_token_id", "forced_eos_token_id")
_EMBEDDING = "shared.weight"
_VOCAB_TENSORS = (_EMBEDDING, "lm_head.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
_TIED_TO_EMBEDDING = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")  # always shared.weight in T5
_SENTINEL = re.compile(r"^▁?<extra_id_\d+>$")
_WORD_START = "▁"
# Unicode ranges kept character by character: ASCII, Latin-1 (names with accents), general punctuation
# (dashes, curly quotes), Arabic, Arabic Supplement, Arabic Extended-A.
_ALPHABET_RANGES = ((0x20, 0x7E), (0xA0, 0xFF), (0x2010, 0x2027), (0x0600, 0x06FF), (0x0750, 0x077F),
                    (0x08A0, 0x08FF))
_NEUTRAL_CHARS = frozenset(string.digits + string.punctuation + "٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹،؛؟«»“”‘’–—…" + _WORD_START)
_ENCODE_CHUNK = 2_000  # texts per sentencepiece call: a progress step


@dataclass(frozen=True)
class TrimResult:
    out_dir: Path
    source_rows: int
    kept: int
    manifest: dict


def trim_vocab(model: str, out_dir: Path | str, *, corpus_files: Sequence[Path | str] = (),
               words_per_language: int = DEFAULT_WORDS_PER_LANGUAGE, models_dir: Path | str = Path("models"),
               force: bool = False, progress: Callable[..., Iterable] | None = None) -> TrimResult:
    """Write the trimmed copy of `model` (a directory or hub id) to `out_dir` and return what was kept.

    `progress(iterable, total=..., desc=...)` wraps the long steps (tqdm); None shows nothing.
    ValueError (one line) for a model that is not T5-family or has no spiece.model, or an existing
    `out_dir` without `force`."""
    from transformers import AutoTokenizer

    # The one place that resolves a model name to a local directory, downloading a hub id, as `convert` does.
    from model_server.backends.ct2_convert import local_source

    out_dir = Path(out_dir).absolute()
    _check_replaceable(out_dir, force)
    source = local_source(model, Path(models_dir), setting_example="model-server trim-vocab /models/mt5-xlsum OUT")
    config = _trimmable_config(source, model)
    spm_bytes = (source / SPM_FILE).read_bytes()
    proto = _parse_spm(spm_bytes)
    texts, lists = _texts_to_cover(corpus_files, words_per_language)
    kept_pieces = _pieces_to_keep(proto, spm_bytes, texts, progress)
    source_tokenizer = AutoTokenizer.from_pretrained(source)
    rows = _kept_rows(source, len(source_tokenizer), proto, kept_pieces, config["vocab_size"])
    new_id = {old: new for new, old in enumerate(rows)}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.trimming-", dir=out_dir.parent))
    try:
        (tmp / SPM_FILE).write_bytes(_rebuilt_spm(proto, kept_pieces, new_id))
        _write_config(source, tmp, config, new_id, len(rows))
        _write_tokenizer_files(source, tmp, new_id)
        _write_weights(source, tmp, rows, config["vocab_size"], progress)
        _check_tokenizer(source_tokenizer, tmp, rows)
        _copy_test_marker(source, tmp)
        manifest = _manifest(model, source, config, len(proto.pieces), len(rows), lists, corpus_files)
        _write_json(tmp / MANIFEST_FILE, manifest)  # last: a directory with a manifest is complete
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TrimResult(out_dir=out_dir, source_rows=config["vocab_size"], kept=len(rows), manifest=manifest)


def _manifest(model: str, source: Path, config: dict, pieces: int, kept: int, lists: dict,
              corpus_files: Sequence[Path | str]) -> dict:
    """What the trimmed model was made from and of: its source, what was kept, from which texts."""
    from model_server.backends.ct2_convert import source_fingerprint

    return {
        "format": MANIFEST_FORMAT,
        "source_model": model,
        "source_path": str(source),
        "source_fingerprint": source_fingerprint(source),
        "architecture": config["model_type"],
        "vocab": {"source_rows": config["vocab_size"], "source_pieces": pieces, "kept": kept,
                  "removed": config["vocab_size"] - kept},
        "word_lists": lists,
        "corpus": [_describe_file(Path(path)) for path in corpus_files],
        "always_kept": ["special pieces (control, unknown, user-defined, byte)", "sentinels <extra_id_N>",
                        "tokens added after the sentencepiece vocabulary",
                        "Arabic and Latin characters, alone and word-initial", "pieces of digits and punctuation only"],
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def read_manifest(model_dir: Path | str) -> dict | None:
    path = Path(model_dir) / MANIFEST_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


# --- what to keep -----------------------------------------------------------------------------------


def _check_replaceable(out_dir: Path, force: bool) -> None:
    if not out_dir.exists():
        return
    if not force:
        raise ValueError(f"{out_dir} already exists; pass --force to replace it")
    if not (out_dir / MANIFEST_FILE).is_file():
        raise ValueError(f"{out_dir} exists and is not a trim-vocab output (no {MANIFEST_FILE}); choose another "
                         "directory")


def _trimmable_config(source: Path, name: str) -> dict:
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    architecture = config.get("model_type", "?")
    if architecture not in TRIMMABLE_ARCHITECTURES:
        raise ValueError(f"trim-vocab works on mT5/T5-family summarizers ({', '.join(TRIMMABLE_ARCHITECTURES)}); "
                         f"'{name}' is a '{architecture}' model: give an mT5 model such as "
                         "csebuetnlp/mT5_multilingual_XLSum")
    if not (source / SPM_FILE).is_file():
        raise ValueError(f"'{name}' has no {SPM_FILE} in {source}: trim-vocab rebuilds the sentencepiece model, "
                         "so it needs the model's own spiece.model")
    return config


def _parse_spm(spm_bytes: bytes):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(spm_bytes)
    return proto


def _texts_to_cover(corpus_files: Sequence[Path | str], words_per_language: int) -> tuple[list[str], dict]:
    """The corpus lines and word-list words to tokenize, and a description of the word lists."""
    texts = [line for path in corpus_files for line in read_utf8(path).splitlines() if line.strip()]
    lists: dict = {}
    if words_per_language > 0:
        from importlib.metadata import version

        import wordfreq

        for lang in LANGUAGES:
            words = wordfreq.top_n_list(lang, words_per_language)
            texts.extend(words)
            if lang == "en":
                texts.extend(word.capitalize() for word in words)
            lists[lang] = {"package": "wordfreq", "version": version("wordfreq"), "words": len(words)}
    return texts, lists


def _pieces_to_keep(proto, spm_bytes: bytes, texts: Sequence[str], progress) -> set[int]:
    """Sentencepiece ids of every piece the texts tokenize into, plus the always-kept pieces."""
    import sentencepiece

    kinds = type(proto).SentencePiece
    special = {kinds.CONTROL, kinds.UNKNOWN, kinds.USER_DEFINED, kinds.BYTE}
    kept = {i for i, piece in enumerate(proto.pieces)
            if piece.type in special or _SENTINEL.match(piece.piece)
            or set(piece.piece) <= _NEUTRAL_CHARS}
    alphabet = {chr(code) for low, high in _ALPHABET_RANGES for code in range(low, high + 1)}
    by_text = {piece.piece: i for i, piece in enumerate(proto.pieces)}
    kept |= {by_text[text] for char in alphabet for text in (char, _WORD_START + char) if text in by_text}
    processor = sentencepiece.SentencePieceProcessor(model_proto=spm_bytes)
    chunks = range(0, len(texts), _ENCODE_CHUNK)
    for start in (progress(chunks, desc="tokenizing corpus and word lists", unit="chunk") if progress else chunks):
        for ids in processor.encode(list(texts[start:start + _ENCODE_CHUNK]), out_type=int):
            kept.update(ids)
    return kept


def _kept_rows(source: Path, tokenizer_size: int, proto, kept_pieces: set[int], vocab_rows: int) -> list[int]:
    """Old row ids in their new order: the kept pieces, then the tokens the tokenizer adds after the
    sentencepiece vocabulary (T5's <extra_id_N>); the embedding's padding rows past the tokenizer go."""
    added = range(len(proto.pieces), tokenizer_size)
    rows = sorted(kept_pieces) + list(added)
    if rows[-1] >= vocab_rows:
        raise ValueError(f"{source}: the tokenizer has {tokenizer_size} tokens but the model only {vocab_rows} "
                         "embedding rows; the model files do not belong together")
    return rows


# --- writing ------------------------------------------------------------------------------------------


def _rebuilt_spm(proto, kept_pieces: set[int], new_id: dict[int, int]) -> bytes:
    """The sentencepiece model with only the kept pieces, piece i = new row i (types and scores kept)."""
    kept = [proto.pieces[i] for i in sorted(kept_pieces)]
    rebuilt = type(proto)()
    rebuilt.CopyFrom(proto)
    del rebuilt.pieces[:]
    rebuilt.pieces.extend(kept)
    spec = rebuilt.trainer_spec
    spec.vocab_size = len(kept)
    for field in ("unk_id", "bos_id", "eos_id", "pad_id"):
        if getattr(spec, field) >= 0:
            setattr(spec, field, _remapped(getattr(spec, field), new_id, f"sentencepiece {field}"))
    return rebuilt.SerializeToString()


def _remapped(old: int, new_id: dict[int, int], what: str) -> int:
    if old not in new_id:
        raise ValueError(f"{what} {old} is not among the kept pieces")  # special pieces are always kept
    return new_id[old]


def _remap_ids(value, new_id: dict[int, int], what: str):
    if isinstance(value, int) and not isinstance(value, bool):
        return _remapped(value, new_id, what)
    if isinstance(value, list):
        return [_remap_ids(item, new_id, what) for item in value]
    return value


def _remap_config(config: dict, new_id: dict[int, int]) -> dict:
    remapped = {key: _remap_ids(value, new_id, key) if key in _CONFIG_ID_KEYS else value
                for key, value in config.items()}
    if config.get("bad_words_ids"):  # a banned sequence with a removed piece can no longer be generated
        remapped["bad_words_ids"] = [[new_id[i] for i in words] for words in config["bad_words_ids"]
                                     if all(i in new_id for i in words)]
    return remapped


def _write_config(source: Path, out: Path, config: dict, new_id: dict[int, int], rows: int) -> None:
    _write_json(out / "config.json", {**_remap_config(config, new_id), "vocab_size": rows})
    generation = source / "generation_config.json"
    if generation.is_file():  # else the generation defaults live in config.json, as in XLSum's repo
        _write_json(out / "generation_config.json",
                    _remap_config(json.loads(generation.read_text(encoding="utf-8")), new_id))


def _write_tokenizer_files(source: Path, out: Path, new_id: dict[int, int]) -> None:
    """The tokenizer's own files with ids remapped; a tokenizer.json is rebuilt from the new spiece.model."""
    for name in _TOKENIZER_FILES:
        path = source / name
        if not path.is_file():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        if name == "added_tokens.json":
            data = {token: _remapped(i, new_id, f"added token {token!r}") for token, i in data.items()}
        elif "added_tokens_decoder" in data:
            data["added_tokens_decoder"] = {str(_remapped(int(i), new_id, "added token")): token
                                            for i, token in data["added_tokens_decoder"].items()}
        _write_json(out / name, data)
    if (source / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(out).backend_tokenizer.save(str(out / "tokenizer.json"))


def _write_weights(source: Path, out: Path, rows: list[int], vocab_rows: int, progress) -> None:
    """model.safetensors: every tensor of the source, the vocabulary ones cut to `rows` (in that order)."""
    import torch
    from safetensors.torch import save_file

    tensors = _read_state_dict(source)
    if _EMBEDDING in tensors:
        for name in _TIED_TO_EMBEDDING:  # transformers ties them to shared.weight at load
            tensors.pop(name, None)
    index = torch.tensor(rows, dtype=torch.long)
    names = [name for name in _VOCAB_TENSORS if name in tensors]
    for name in (progress(names, desc="cutting embedding rows", unit="tensor") if progress else names):
        if tensors[name].shape[0] != vocab_rows:
            raise ValueError(f"{source}: {name} has {tensors[name].shape[0]} rows, config.json says vocab_size "
                             f"{vocab_rows}; the model files do not belong together")
        tensors[name] = tensors[name].index_select(0, index).contiguous()
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})


def _read_state_dict(source: Path) -> dict:
    """All weights of a (possibly sharded) safetensors or pytorch_model.bin checkpoint."""
    from safetensors.torch import load_file

    for index_name, load in (("model.safetensors.index.json", load_file),
                             ("pytorch_model.bin.index.json", _load_bin)):
        index = source / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            return {name: tensor for shard in shards for name, tensor in load(str(source / shard)).items()}
    if (source / "model.safetensors").is_file():
        return load_file(str(source / "model.safetensors"))
    if (source / "pytorch_model.bin").is_file():
        return _load_bin(str(source / "pytorch_model.bin"))
    raise ValueError(f"{source} holds no weights (model.safetensors or pytorch_model.bin)")


def _load_bin(path: str) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _check_tokenizer(source_tokenizer, out: Path, rows: list[int]) -> None:
    """The rebuilt tokenizer's token i must be the source's token rows[i]: the weights' row order."""
    from transformers import AutoTokenizer

    rebuilt = AutoTokenizer.from_pretrained(out)
    if len(rebuilt) != len(rows):
        raise RuntimeError(f"the rebuilt tokenizer has {len(rebuilt)} tokens for {len(rows)} kept rows; this is a bug")
    before = source_tokenizer.convert_ids_to_tokens(rows)
    after = rebuilt.convert_ids_to_tokens(list(range(len(rows))))
    wrong = next((i for i, (old, new) in enumerate(zip(before, after)) if old != new), None)
    if wrong is not None:
        raise RuntimeError(f"the rebuilt tokenizer's token {wrong} is {after[wrong]!r}, the kept row's is "
                           f"{before[wrong]!r}; this is a bug")


def _copy_test_marker(source: Path, out: Path) -> None:
    """A trimmed test model is still a test model (/v1/models and responses say so)."""
    from model_server.tiny_models import TINY_MARKER_FILE

    if (source / TINY_MARKER_FILE).is_file():
        shutil.copyfile(source / TINY_MARKER_FILE, out / TINY_MARKER_FILE)


def _describe_file(path: Path) -> dict:
    import hashlib

    data = path.read_bytes()
    return {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(),
            "lines": sum(1 for line in data.decode("utf-8").splitlines() if line.strip())}


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
