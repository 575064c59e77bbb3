"""Finding model weights (local directory, download dir, HF cache or hub) and choosing device/dtype
(dtype=auto per CPU: see choose_dtype and model_server.backends.hardware).

Loading never silently downloads on a machine that cannot reach the hub: when a model is neither local
nor cached and the hub is unreachable, start-up fails at once with one message that says how to
provide the model.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Sequence
from urllib.parse import urlparse

from model_server.backends.base import ModelInfo
from model_server.backends.hardware import NATIVE_BF16_FLAGS, cpu_features, torch_runs_bf16_on_cpu
from model_server.errors import ServiceError
from model_server.settings import Device, DType

log = logging.getLogger(__name__)

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


def choose_dtype(flags: frozenset[str], device: str, *, task: str = "translation", cuda_bf16: bool = False,
                 torch_bf16: bool = True) -> tuple[str, str]:
    """What dtype=auto means on this machine, and why (pure: the flags and probes are arguments).

    CUDA: float16, except the summarizer: mT5's feed-forward activations overflow float16 (inf/NaN
    summaries), so bfloat16 (float32's range) where the GPU has it (`cuda_bf16`), else float32.
    CPU: bfloat16 where the CPU has native bf16 (avx512_bf16 or amx_bf16) and torch can run it
    (`torch_bf16`, its oneDNN probe), else float32: without native bf16 it is emulated and several
    times slower than float32."""
    if device == "cuda":
        if task != "summarization":
            return "float16", "cuda: float16"
        if cuda_bf16:
            return "bfloat16", "cuda, summarizer: bfloat16 (mT5 overflows float16)"
        return "float32", "cuda, summarizer: float32 (mT5 overflows float16; this GPU has no bfloat16)"
    native = sorted(NATIVE_BF16_FLAGS & flags)
    if not native:
        return "float32", ("cpu without native bf16 (no avx512_bf16 or amx_bf16): bfloat16 would be emulated, "
                           "slower than float32")
    if not torch_bf16:
        return "float32", f"cpu has {', '.join(native)} but this torch build cannot run bfloat16 on it (no oneDNN)"
    return "bfloat16", f"cpu has native bf16 ({', '.join(native)})"


def dtype_choice(dtype: DType, device: str, *, task: str = "translation") -> tuple[str, str]:
    """(dtype, reason): an explicit setting wins; `auto` is choose_dtype on this machine's detected flags."""
    if dtype is DType.float16 and device != "cuda":
        raise ServiceError("model_unavailable", "dtype=float16 is only supported on cuda; on cpu use float32 or bfloat16")
    if dtype is not DType.auto:
        return dtype.value, f"dtype={dtype.value} set explicitly"
    if device == "cuda":
        return choose_dtype(frozenset(), device, task=task, cuda_bf16=task == "summarization" and _cuda_bf16())
    return choose_dtype(cpu_features().flags, device, task=task, torch_bf16=torch_runs_bf16_on_cpu())


def resolve_dtype(dtype: DType, device: str, *, task: str = "translation") -> str:
    """The dtype to load with (see dtype_choice for the reason)."""
    return dtype_choice(dtype, device, task=task)[0]


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_bf16_supported()


def with_precision(info: ModelInfo, requested: str, chosen: str, reason: str) -> ModelInfo:
    """`info` with what precision was asked for, what runs and why, in extra["precision"] (/v1/models);
    logged once, at load, with the CPU flags it was chosen from (also as structured fields)."""
    precision = {"requested": requested, "chosen": chosen, "reason": reason}
    cpu = cpu_features()
    log.info("%s model %s on %s/%s: %s=%s -> %s: %s; cpu flags: %s", info.task, info.name, info.backend, info.device,
             "ct2_compute_type" if info.backend == "ctranslate2" else "dtype", requested, chosen, reason,
             cpu.summary(), extra={"fields": {"precision": precision, "hardware": cpu.describe()}})
    return info.model_copy(update={"extra": {**info.extra, "precision": precision}})
