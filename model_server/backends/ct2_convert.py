"""Converting Hugging Face seq2seq models (MarianMT, T5/mT5) for the CTranslate2 backend.

A converted directory is self-contained:

    model.bin, config.json, *_vocabulary.json   CTranslate2's own files (TransformersConverter)
    hf/                                         the source's config, generation config and tokenizer files
    vmap.txt                                    Marian with a separate target.spm: the vocabulary map
                                                (always-on entry: the target pieces and special tokens)
    model_server_ct2.json                       METADATA_FILE, written last: what it was converted from

The metadata records the source (as configured, its resolved directory, a fingerprint of its files, the
hub commit when known), the quantization and the library versions. The server refuses a converted
directory whose fingerprint differs from the configured model's, so a stale conversion is never served
under a new model's name. Conversions are written to a temporary sibling and renamed into place, so a
reader never sees half a model.

This module is the one home of the on-disk format and of importing the optional `ctranslate2` package;
the engine (`ctranslate2_backend`) imports from here, never the other way round.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from model_server.backends.loading import TRANSLATION_EXAMPLE, hub_dirname, resolve_model_source
from model_server.errors import ServiceError

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'model-server[ct2]'"
METADATA_FILE = "model_server_ct2.json"
METADATA_FORMAT = 1
TOKENIZER_SUBDIR = "hf"
VMAP_FILE = "vmap.txt"  # CTranslate2 loads the vocabulary map of a model directory from this name
# Weight types a conversion can store (`--quantization`). CTranslate2 converts them again at load time
# to the compute type (e.g. int8 weights run as int8_float16 on CUDA).
QUANTIZATIONS = ("int8", "int8_float16", "int8_bfloat16", "float16", "bfloat16", "float32")
# Seq2seq architectures the service runs on CTranslate2 (tested). Other CTranslate2-convertible models
# (BERT encoders, decoder-only LLMs) cannot serve translate_batch.
CONVERTIBLE_ARCHITECTURES = ("marian", "t5", "mt5")
# Files copied into hf/: what AutoTokenizer, AutoConfig and GenerationConfig read.
_HF_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json",
             "added_tokens.json", "tokenizer.json", "vocab.json", "source.spm", "target.spm", "spiece.model",
             "sentencepiece.bpe.model")
_FINGERPRINT_SUFFIXES = (".json", ".spm", ".model", ".safetensors", ".bin", ".txt")
_SAMPLE_BYTES = 1 << 20  # big files are fingerprinted by size + first and last MiB
_CONVERT_LOCK = threading.Lock()  # conversions patch a converter class (see _t5_output_scale_as_transformers)


def import_ctranslate2():
    """The optional `ctranslate2` package, or a start-up error that says how to install it."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise ServiceError("model_unavailable",
                           f"backend=ctranslate2 needs the optional ctranslate2 package: {INSTALL_HINT}") from exc
    return ctranslate2


def quantization_for(compute_type: str) -> str:
    """The weight type to store for a compute type (used by ct2_convert_on_start)."""
    return "int8" if compute_type == "int8_float32" else compute_type


def source_fingerprint(model_dir: Path) -> str:
    """A cheap identity of a model directory's contents: sha256 over the names and bytes of its configs
    and tokenizer files and, for big (weight) files, their size plus first and last MiB. Independent
    of paths and mtimes, so a copied or mounted model keeps its fingerprint; re-trained or re-downloaded
    weights change it."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if not path.is_file() or path.suffix not in _FINGERPRINT_SUFFIXES:
            continue
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(_SAMPLE_BYTES))
            if size > 2 * _SAMPLE_BYTES:
                handle.seek(size - _SAMPLE_BYTES)
                digest.update(handle.read())
            elif size > _SAMPLE_BYTES:
                digest.update(handle.read())
    return digest.hexdigest()


def read_metadata(converted_dir: Path) -> dict:
    path = Path(converted_dir) / METADATA_FILE
    if not Path(converted_dir).is_dir():
        raise ServiceError("model_unavailable", f"converted model directory {converted_dir} does not exist; create it "
                                                f"with `model-server convert MODEL {converted_dir}`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ServiceError("model_unavailable", f"{converted_dir} is not a model-server conversion (no readable "
                                                f"{METADATA_FILE}); create it with `model-server convert`") from exc


def tokenizer_dir(converted_dir: Path) -> Path:
    return Path(converted_dir) / TOKENIZER_SUBDIR


def convert(model_dir_or_id: str, out_dir: Path | str, quantization: str, force: bool = False, *,
            models_dir: Path | str = Path("models"), setting_example: str = TRANSLATION_EXAMPLE) -> Path:
    """Convert a local model directory or hub id into `out_dir` and return it.

    Hub ids are looked up like the server does (`models_dir`, the Hugging Face cache, then the hub).
    An existing `out_dir` is only replaced with `force`, and only if it looks like a conversion.
    `setting_example` shows, when the model is not here, how to use a model directory instead.
    """
    if quantization not in QUANTIZATIONS:
        raise ServiceError("model_unavailable", f"unknown quantization {quantization!r}; "
                                                f"choose one of {', '.join(QUANTIZATIONS)}")
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not force:
        raise ServiceError("model_unavailable", f"{out_dir} already exists; pass --force to replace it")
    source = local_source(model_dir_or_id, Path(models_dir), setting_example)
    architecture = _check_architecture(source, model_dir_or_id)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.converting-", dir=out_dir.parent))
    try:
        _convert_into(source, tmp, quantization, model_dir_or_id)
        output_vocab_size = _write_vocabulary_map(source, tmp)
        hf_dir = tokenizer_dir(tmp)
        hf_dir.mkdir()
        for name in _HF_FILES:
            if (source / name).is_file():
                shutil.copyfile(source / name, hf_dir / name)
        metadata = {**_metadata(model_dir_or_id, source, architecture, quantization),
                    "output_vocab_size": output_vocab_size}
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        tmp.chmod(0o755)
        _publish(tmp, out_dir, replace=force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op once renamed into place
    log.info("converted %s (%s) to %s with quantization %s", model_dir_or_id, source, out_dir, quantization)
    return out_dir


def verify_converted(converted_dir: Path, name: str, models_dir: Path) -> Path:
    """Return `converted_dir` if it was converted from the configured model `name`, else refuse.

    Fingerprints decide when the configured model's files are here; when they are not (only the
    converted copy was deployed), the recorded name must equal the configured one.
    """
    metadata = read_metadata(converted_dir)
    recorded = f"'{metadata['source_model']}' (fingerprint {metadata['source_fingerprint'][:12]})"
    source = _cached_source(name, models_dir)
    if source is not None:
        fingerprint = source_fingerprint(source)
        if fingerprint != metadata["source_fingerprint"]:
            raise ServiceError("model_unavailable", (
                f"converted model {converted_dir} was converted from {recorded}, but the configured model is "
                f"'{name}' ({source}, fingerprint {fingerprint[:12]}); convert it again: "
                f"model-server convert {name} {converted_dir} --quantization {metadata['quantization']} --force"))
    elif metadata["source_model"] != name:
        raise ServiceError("model_unavailable", (
            f"converted model {converted_dir} was converted from {recorded}, but the configured model is "
            f"'{name}'; configure '{metadata['source_model']}' or convert '{name}'"))
    else:
        log.warning("%s: the files of '%s' are not here, so its fingerprint is not checked", converted_dir, name)
    return Path(converted_dir)


def cached_conversion(name: str, models_dir: Path, cache_dir: Path, quantization: str) -> Path:
    """The cache entry for (model contents, quantization), converted now if missing.

    Entries are keyed by fingerprint, so a changed model gets a new entry instead of a stale one;
    old entries can be deleted at any time while no server uses them. A Marian entry converted before
    vocabulary maps were written is converted again, once.
    """
    source = local_source(name, models_dir)
    fingerprint = source_fingerprint(source)
    stem = source.name if Path(name).expanduser().is_dir() else hub_dirname(name)
    entry = Path(cache_dir) / f"{stem}-{quantization}-{fingerprint[:12]}"
    if (entry / METADATA_FILE).is_file() and not converted_before_vocabulary_maps(read_metadata(entry)):
        return entry
    log.info("ct2_convert_on_start: converting %s to %s (%s); this happens once", name, entry, quantization)
    try:
        # An existing entry is broken or from before vocabulary maps: replace it.
        return convert(name, entry, quantization, force=entry.exists(), models_dir=models_dir)
    except ServiceError:
        if (entry / METADATA_FILE).is_file():  # another process converted it concurrently
            return entry
        raise


def converted_before_vocabulary_maps(metadata: dict) -> bool:
    """A Marian conversion by a model-server that wrote no vocabulary map (it recorded no output_vocab_size)."""
    return metadata.get("architecture") == "marian" and "output_vocab_size" not in metadata


def local_source(name: str, models_dir: Path, setting_example: str = TRANSLATION_EXAMPLE) -> Path:
    """A local directory with the model's files: resolved like the server does, fetched when a hub id."""
    resolved = resolve_model_source(name, models_dir, setting_example=setting_example)
    if Path(resolved).is_dir():
        return Path(resolved).absolute()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(resolved, allow_patterns=["*.json", "*.spm", "*.model", "*.safetensors", "*.bin",
                                                               "*.txt"]))
    except Exception as exc:  # noqa: BLE001 - network, auth and cache errors all mean "not available"
        raise ServiceError("model_unavailable", f"cannot fetch '{name}' for conversion ({exc}); check the hub id, "
                                                f"or pass a directory holding the model files instead") from exc


def _cached_source(name: str, models_dir: Path) -> Path | None:
    """The model's local directory if it is here (directory, models_dir or HF cache); never downloads."""
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return path.absolute()
    downloaded = models_dir / hub_dirname(name)
    if (downloaded / "config.json").is_file():
        return downloaded.absolute()
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - malformed id or not cached: not here
        return None


def _check_architecture(source: Path, name: str) -> str:
    try:
        config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ServiceError("model_unavailable", f"cannot read the config of '{name}' in {source} ({exc}): the "
                                                f"model files are damaged; copy or download them again") from exc
    architecture = config.get("model_type", "?")
    if architecture not in CONVERTIBLE_ARCHITECTURES:
        raise ServiceError("model_unavailable", f"cannot convert '{name}': its architecture '{architecture}' is not "
                                                f"supported: convert a MarianMT (translation) or T5/mT5 (summarization) "
                                                f"model ({', '.join(CONVERTIBLE_ARCHITECTURES)})")
    return architecture


def _convert_into(source: Path, tmp: Path, quantization: str, name: str) -> None:
    import_ctranslate2()
    from ctranslate2.converters import TransformersConverter

    try:
        with _CONVERT_LOCK, _t5_output_scale_as_transformers():
            TransformersConverter(str(source)).convert(str(tmp), quantization=quantization, force=True)
    except (OSError, ValueError, RuntimeError, KeyError, NotImplementedError) as exc:
        raise ServiceError("model_unavailable", f"CTranslate2 cannot convert '{name}' ({source}): {exc}") from exc


def _write_vocabulary_map(source: Path, out_dir: Path) -> int | None:
    """Write CTranslate2's vocabulary map (VMAP_FILE, what the converter's `vmap` option copies in) for a
    Marian model with a separate target vocabulary, and return how many ids it keeps; None (no map)
    otherwise. The backend decodes with it (`use_vmap`) when restrict_output_vocab is on."""
    from model_server.backends.vocab_restriction import model_target_vocabulary, vmap_text

    kept = model_target_vocabulary(source)
    if kept is None:
        return None
    (out_dir / VMAP_FILE).write_text(vmap_text(source, kept), encoding="utf-8")
    return len(kept)


@contextlib.contextmanager
def _t5_output_scale_as_transformers() -> Iterator[None]:
    """Scale (m)T5 decoder outputs exactly when the loaded transformers model does.

    CTranslate2's T5 loader scales by d_model**-0.5 whenever config.tie_word_embeddings (the transformers
    4 rule). transformers 5 forces tie_word_embeddings=True on every (m)T5 config and decides with
    config.scale_decoder_outputs (T5) or never scales (mT5), so the unpatched loader flattens an mT5's
    output distribution: same greedy text, wrong scores and beam choices.
    """
    from ctranslate2.converters import transformers as ct2_transformers
    from ctranslate2.specs import model_spec

    loader = getattr(ct2_transformers, "T5Loader", None)
    if loader is None:
        yield
        return
    original = loader.get_model_spec

    def get_model_spec(self, model):
        spec = original(self, model)
        if not _scales_decoder_outputs(model.config):
            spec.decoder.scale_outputs = model_spec.OPTIONAL
        return spec

    loader.get_model_spec = get_model_spec
    try:
        yield
    finally:
        loader.get_model_spec = original


def _scales_decoder_outputs(config) -> bool:
    import transformers

    explicit = getattr(config, "scale_decoder_outputs", None)  # transformers 5 T5
    if explicit is not None:
        return bool(explicit)
    return bool(config.tie_word_embeddings) and int(transformers.__version__.split(".")[0]) < 5


def _metadata(name: str, source: Path, architecture: str, quantization: str) -> dict:
    import ctranslate2
    import transformers

    return {
        "format": METADATA_FORMAT,
        "source_model": name,
        "source_path": str(source),
        "source_fingerprint": source_fingerprint(source),
        # Hub snapshots live in .../snapshots/<commit>.
        "source_commit": source.name if source.parent.name == "snapshots" else None,
        "architecture": architecture,
        "quantization": quantization,
        "test_model": _is_test_model(source),
        "ctranslate2_version": ctranslate2.__version__,
        "transformers_version": transformers.__version__,
        "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _is_test_model(source: Path) -> bool:
    from model_server.tiny_models import is_test_model

    return is_test_model(source)


def _publish(tmp: Path, out_dir: Path, *, replace: bool) -> None:
    """Rename `tmp` to `out_dir`, moving a previous conversion aside first (never a foreign directory)."""
    if out_dir.exists():
        if not replace:  # appeared while we converted (a concurrent conversion)
            raise ServiceError("model_unavailable", f"{out_dir} already exists; pass --force to replace it")
        if not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / METADATA_FILE).is_file()
                                    and not (out_dir / "model.bin").is_file()):
            raise ServiceError("model_unavailable",
                               f"refusing to replace {out_dir}: it is not empty and not a CTranslate2 conversion")
        trash = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex}")
        out_dir.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    tmp.rename(out_dir)
