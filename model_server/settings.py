"""The one settings object of the service.

Precedence (lowest to highest): defaults declared here, `MODEL_SERVER_*` environment variables,
command-line flags of `model-server serve` (generated from these fields). Contradictory options fail
at start-up with a message that names the setting.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TRANSLATION_MODEL = "Helsinki-NLP/opus-mt-ar-en"


class Profile(str, Enum):
    default = "default"
    # Offline smoke profile: builds (if needed) and serves the tiny test model. Not a translator.
    tiny = "tiny"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class DType(str, Enum):
    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


class Backend(str, Enum):
    torch = "torch"
    ctranslate2 = "ctranslate2"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODEL_SERVER_", extra="ignore", use_enum_values=False)

    # --- models ---
    profile: Profile = Field(Profile.default, description="'tiny' serves the repo-built test model (offline smoke runs)")
    translation_model: str = Field(
        DEFAULT_TRANSLATION_MODEL, description="hub id or local directory of a MarianMT ar->en model"
    )
    models_dir: Path = Field(
        Path("models"), description="where `download` stores models and where hub ids are looked up first"
    )
    backend: Backend = Field(Backend.torch, description="inference engine: torch | ctranslate2")
    device: Device = Field(Device.auto, description="auto picks cuda when available, else cpu")
    dtype: DType = Field(
        DType.auto, description="auto = float32 on cpu, float16 on cuda; bfloat16 allowed on both, float16 cuda only"
    )
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: torch's own choice)")

    # --- generation ---
    num_beams: int | None = Field(None, ge=1, le=16, description="default beam size (default: the model's own)")
    max_new_tokens: int = Field(256, ge=1, le=2048, description="hard cap on generated tokens per sentence")
    max_input_tokens: int | None = Field(
        None, ge=8, description="longest segment sent to the model, in tokens (default: the model's limit)"
    )
    min_new_tokens: int = Field(
        0, ge=0, le=2048, description="BENCHMARK-ONLY: generate at least this many tokens per segment (EOS "
        "suppressed until then); with min_new_tokens = max_new_tokens every segment decodes exactly that many "
        "tokens, so benchmark runs are comparable. 0 (default) = off; never set it for real translation"
    )

    # --- quality ---
    low_score_threshold: float = Field(
        -1.5, le=0, description="sentences whose mean token log-probability is below this get the low_score flag")
    retry_suspect_sentences: bool = Field(
        True, description="re-generate sentences flagged repetition/truncated once with safer decoding")

    # --- batching ---
    max_batch_size: int = Field(64, ge=1, description="most segments in one model call")
    max_batch_tokens: int = Field(
        8192, ge=1, description="token budget of one model call: batch size x longest input (padded tokens)"
    )
    max_wait_ms: float = Field(5.0, ge=0, description="how long a non-full batch waits for more segments")
    max_queue_segments: int = Field(
        4096, ge=1, description="segments waiting across all requests; beyond it new work gets 503"
    )
    request_timeout_s: float = Field(300.0, gt=0, description="a request still unfinished after this gets 504")

    # --- HTTP / limits ---
    host: str = Field("127.0.0.1", description="address to bind")
    port: int = Field(8000, ge=0, le=65535, description="port to bind (0 = any free port)")
    max_body_bytes: int = Field(2_000_000, ge=1024, description="largest request body; bigger gets 413")
    max_text_chars: int = Field(100_000, ge=1, description="longest single text; longer gets 413")
    max_texts_per_request: int = Field(128, ge=1, description="most texts in one request; more gets 413")
    min_arabic_ratio: float = Field(
        0.3, ge=0, le=1, description="share of letters that must be Arabic script, else the text is rejected"
    )
    log_level: str = Field("info", description="uvicorn/app log level")

    @model_validator(mode="after")
    def _check_consistency(self) -> "Settings":
        if self.dtype is DType.float16 and self.device is Device.cpu:
            raise ValueError("dtype=float16 needs device=cuda (on cpu use float32 or bfloat16)")
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError("min_new_tokens (benchmark-only) must not exceed max_new_tokens")
        if self.max_batch_tokens < self.max_batch_size and self.max_batch_tokens < 64:
            raise ValueError("max_batch_tokens is smaller than one segment can be; raise it")
        return self

    def translation_model_source(self) -> str:
        """The model to load: the tiny test model dir in the tiny profile, else the configured one."""
        if self.profile is Profile.tiny:
            return str(self.tiny_marian_dir())
        return self.translation_model

    def tiny_marian_dir(self) -> Path:
        return self.models_dir / "tiny-marian-ar-en"

    def tiny_mt5_dir(self) -> Path:
        return self.models_dir / "tiny-mt5-sum"
