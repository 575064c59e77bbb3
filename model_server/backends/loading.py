"""Finding model weights (local directory, download dir, HF cache or hub) and choosing device/dtype.

Loading never silently downloads on a machine that cannot reach the hub: when a model is neither local
nor cached and the hub is unreachable, start-up fails at once with one message that says how to
provide the model.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from model_server.errors import ServiceError
from model_server.settings import Device, DType

HUB_PROBE_TIMEOUT_S = 3.0


def hub_dirname(model_id: str) -> str:
    """Directory name `model-server download` uses for a hub id ('org/name' -> 'org--name')."""
    return model_id.strip("/").replace("/", "--")


def _looks_like_path(name: str) -> bool:
    """Hub ids are 'name' or 'org/name'; anything else is meant as a directory."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1


def _how_to_provide(name: str, setting_example: str = "MODEL_SERVER_TRANSLATION_MODEL=/models/opus-mt-ar-en") -> str:
    return (
        f"Provide it in one of two ways: (1) on a machine with network run "
        f"`model-server download {name} --models-dir DIR` and copy or mount DIR here, then set "
        f"MODEL_SERVER_MODELS_DIR=DIR; or (2) mount a directory holding the model files (config.json, "
        f"weights, tokenizer) and point the setting at it, e.g. {setting_example}."
    )


def resolve_model_source(name: str, models_dir: Path, *,
                         setting_example: str = "MODEL_SERVER_TRANSLATION_MODEL=/models/opus-mt-ar-en") -> str:
    """Return a local directory or a hub id that `from_pretrained` can load without hanging.
    `setting_example` shows, in error messages, which setting points at a model directory."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ServiceError("model_unavailable", f"model directory {path} has no config.json; is it a complete model? "
                                   + _how_to_provide(name, setting_example))
        return str(path)
    if _looks_like_path(name) or path.exists():
        raise ServiceError("model_unavailable",
                           f"model directory {path} does not exist. " + _how_to_provide(name, setting_example))
    downloaded = models_dir / hub_dirname(name)
    if (downloaded / "config.json").is_file():
        return str(downloaded)
    if _in_hf_cache(name) or _hub_reachable():
        return name
    raise ServiceError("model_unavailable", 
        f"model '{name}' is not available: not in {downloaded}, not in the Hugging Face cache, "
        f"and the hub cannot be reached from this machine. " + _how_to_provide(name, setting_example))


def _in_hf_cache(model_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is simply "not cached"
        return False


def _hub_reachable() -> bool:
    """A quick TCP probe, so an offline machine fails in seconds instead of minutes of HTTP retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


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
