"""Finding model weights (local directory, download dir, HF cache or hub) and choosing device/dtype.

Loading never silently downloads on a machine that cannot reach the hub: when a model is neither local
nor cached and the hub is unreachable, start-up fails at once with one message that says how to
provide the model.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

from model_server.errors import ServiceError
from model_server.settings import Device, DType

HUB_PROBE_TIMEOUT_S = 3.0


def hub_dirname(model_id: str) -> str:
    """Directory name `model-server download` uses for a hub id ('org/name' -> 'org--name')."""
    return model_id.strip("/").replace("/", "--")


def looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else is meant as a directory."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


TRANSLATION_EXAMPLE = "MODEL_SERVER_TRANSLATION_MODEL=/models/opus-mt-ar-en"
# What each task needs, for messages that say how to fix a wrong model: (setting, kind of model, example id).
_TASK_MODELS = {
    "translation": ("MODEL_SERVER_TRANSLATION_MODEL (--translation-model)", "a MarianMT model",
                    "Helsinki-NLP/opus-mt-ar-en"),
    "summarization": ("MODEL_SERVER_SUMMARIZATION_MODEL (--summarization-model)", "an mT5 model",
                      "csebuetnlp/mT5_multilingual_XLSum"),
}


def _hub_id_in_hints(name: str) -> str:
    """`name` when it is a hub id; a placeholder when it names a directory (`download` takes hub ids)."""
    return "ORG/NAME" if looks_like_path(name) or Path(name).expanduser().exists() else name


def _how_to_provide(name: str, setting_example: str = TRANSLATION_EXAMPLE) -> str:
    hub_id = _hub_id_in_hints(name)
    return (
        f"Provide it in one of two ways: (1) on a machine with network run "
        f"`model-server download {hub_id} --models-dir DIR` and copy or mount DIR here, then set "
        f"MODEL_SERVER_MODELS_DIR=DIR; or (2) mount a directory holding the model files (config.json, "
        f"weights, tokenizer) and use it instead, e.g. {setting_example}."
    )


def resolve_model_source(name: str, models_dir: Path, *, setting_example: str = TRANSLATION_EXAMPLE) -> str:
    """Return a local directory or a hub id that `from_pretrained` can load without hanging.
    `setting_example` shows, in error messages, which setting points at a model directory."""
    path = Path(name).expanduser()
    if path.is_dir():
        _check_config(path, name, setting_example)
        return str(path)
    if looks_like_path(name) or path.exists():
        problem = "is a file, not a model directory" if path.exists() else "does not exist"
        raise ServiceError("model_unavailable",
                           f"model directory {path} {problem}. " + _how_to_provide(name, setting_example))
    downloaded = models_dir / hub_dirname(name)
    if (downloaded / "config.json").is_file():
        _check_config(downloaded, name, setting_example)
        return str(downloaded)
    offline = hub_unreachable_reason()
    if _in_hf_cache(name) or offline is None:
        return name
    raise ServiceError("model_unavailable",
        f"model '{name}' is not available: not in {downloaded}, not in the Hugging Face cache, "
        f"and the hub cannot be reached from this machine ({offline}). " + _how_to_provide(name, setting_example))


def require_hub(name: str) -> None:
    """Refuse at once, with both ways to provide `name`, when the hub cannot be reached (`download`)."""
    offline = hub_unreachable_reason()
    if offline is not None:
        raise ServiceError("model_unavailable", f"cannot download '{name}': the Hugging Face hub cannot be reached "
                                                f"from this machine ({offline}). " + _how_to_provide(name))


def _check_config(model_dir: Path, name: str, setting_example: str) -> None:
    """A model directory must hold a config.json that parses (a damaged copy fails here, in one sentence)."""
    config = model_dir / "config.json"
    if not config.is_file():
        raise ServiceError("model_unavailable", f"model directory {model_dir} has no config.json; is it a complete "
                                                f"model? " + _how_to_provide(name, setting_example))
    try:
        problem = None if isinstance(json.loads(config.read_text(encoding="utf-8")), dict) else "not a JSON object"
    except (OSError, ValueError) as exc:
        problem = str(exc)
    if problem is not None:
        raise ServiceError("model_unavailable", f"{config} is not a readable model config ({problem}): the model "
                                                f"files are damaged; copy them again or download them again with "
                                                f"`model-server download {_hub_id_in_hints(name)} --models-dir DIR`")


def wrong_architecture(name: str, architecture: str, task: str, architectures: Sequence[str]) -> ServiceError:
    """The error for a model of the wrong kind (e.g. the mT5 summarizer given as the translation model)."""
    setting, kind, example = _TASK_MODELS.get(task, ("the model setting", "a suitable model", "a hub id"))
    return ServiceError("model_unavailable", f"model '{name}' is a '{architecture}' model, but {task} needs one of "
                                             f"{', '.join(architectures)}: point {setting} at {kind}, e.g. {example}")


def _in_hf_cache(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is simply "not cached"
        return False


def hub_unreachable_reason() -> str | None:
    """None when the hub answers a quick TCP probe, else why not; an offline machine fails in seconds
    instead of minutes of HTTP retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"no network: {endpoint.hostname}:{port}: {exc.strerror or exc}"


def resolve_device(device: Device) -> str:
    import torch

    if device is Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device is Device.cuda and not torch.cuda.is_available():
        raise ServiceError("model_unavailable", "device=cuda was requested but torch sees no CUDA device "
                               "(set MODEL_SERVER_DEVICE=cpu or auto)")
    return device.value


def resolve_dtype(dtype: DType, device: str) -> str:
    """float32 on CPU and float16 on CUDA by default; half precision float16 only on CUDA."""
    if dtype is DType.auto:
        return "float16" if device == "cuda" else "float32"
    if dtype is DType.float16 and device != "cuda":
        raise ServiceError("model_unavailable", "dtype=float16 is only supported on cuda; on cpu use float32 or bfloat16")
    return dtype.value
