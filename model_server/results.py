"""Result shapes shared by the pipeline, the CLI and the HTTP API (one definition, used as the
API's response models)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable error code")
    message: str = Field(description="human-readable explanation")


class SentenceResult(BaseModel):
    index: int = Field(description="position of the sentence in the text, from 0")
    paragraph: int = Field(description="paragraph the sentence belongs to, from 0")
    source: str = Field(description="the (normalized) Arabic sentence")
    translation: str
    score: float = Field(description="mean log-probability per generated token (closer to 0 = more confident)")
    chunks: int = Field(1, description="model segments the sentence was split into (>1 for over-long sentences)")
    hit_max_length: bool = Field(False, description="generation stopped at max_new_tokens: output may be cut")
    flags: list[str] = Field(default_factory=list, description=(
        "quality signals: repetition, untranslated, length_ratio, numbers, low_score, truncated; "
        "'retried' = re-generated once with safer decoding"))
    needs_review: bool = Field(False, description="an editor should check this sentence (any flag but 'retried')")


class ReviewSummary(BaseModel):
    sentences_needing_review: int = 0
    flags: dict[str, int] = Field(default_factory=dict, description="sentences per flag")


class TextResult(BaseModel):
    index: int = Field(description="position of the text in the request")
    translation: str | None = Field(None, description="the whole English text, paragraphs kept")
    sentences: list[SentenceResult] = Field(default_factory=list)
    paragraphs: int = 0
    review: ReviewSummary | None = Field(None, description="quality flags aggregated over the text")
    error: ErrorBody | None = Field(None, description="set when this text could not be translated")
