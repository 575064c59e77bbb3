"""The small interface every inference engine implements.

A backend turns one *batch* of source strings into generated strings. It knows nothing about HTTP,
queues or articles: batching is decided upstream (`model_server.batching`), text processing before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class GenerationOptions:
    """Decoding options. Equal options are the condition for sharing a batch, so this is hashable."""

    num_beams: int = 1
    max_new_tokens: int = 256
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0

    @classmethod
    def from_generation_config(cls, gen: Any) -> "GenerationOptions":
        """Decoding options a model ships with (its transformers GenerationConfig)."""
        return cls(
            num_beams=gen.num_beams or 1,
            length_penalty=float(gen.length_penalty if gen.length_penalty is not None else 1.0),
            no_repeat_ngram_size=gen.no_repeat_ngram_size or 0,
            repetition_penalty=float(gen.repetition_penalty or 1.0),
        )


@dataclass(frozen=True)
class Generated:
    text: str
    # Mean log-probability per generated token (EOS included): comparable across lengths and backends.
    score: float
    num_tokens: int
    # Generation stopped at max_new_tokens without producing EOS: the output is likely cut.
    hit_max_length: bool


class ModelInfo(BaseModel):
    """What is loaded and where it runs; reported by /v1/models and with every response."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the configured model: hub id or directory")
    source: str = Field(description="what was actually loaded (resolved directory or hub id)")
    task: str = Field(description="translation | summarization")
    architecture: str = Field(description="config.model_type, e.g. marian, mt5")
    backend: str = Field(description="torch | ctranslate2")
    device: str
    dtype: str
    max_input_tokens: int = Field(description="longest segment the model is given, in tokens")
    test_model: bool = Field(False, description="a repo-built tiny test model: NOT a real translator")
    extra: dict[str, Any] = Field(default_factory=dict)


class Seq2SeqBackend(Protocol):
    """A model the service batches for. Optionally, a backend with independent replicas (CTranslate2 on cpu)
    also has `parallel_calls` (> 1: that many `generate` calls may run at once from as many threads) and
    accepts `generate(..., parallel=True)` (this call runs beside others, so it takes one replica); the
    service's ModelRunner then runs that many batches at once. Without the attribute: one call at a time."""

    info: ModelInfo

    def count_tokens(self, text: str) -> int:
        """Source tokens the model sees for `text` (special tokens included)."""

    def default_options(self) -> GenerationOptions:
        """Decoding options from the model's own generation config."""

    def generate(self, texts: Sequence[str], options: GenerationOptions) -> list[Generated]:
        """Generate for one batch; blocking. Must return exactly one result per input, in order."""

    def close(self) -> None:
        """Release the model (GPU memory) at shutdown."""
