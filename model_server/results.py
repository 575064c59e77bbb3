"""Result shapes shared by the pipeline, the CLI and the HTTP API (one definition, used as the
API's response models)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable error code")
    message: str = Field(description="human-readable explanation")


class GlossaryTerm(BaseModel):
    source: str = Field(description="the Arabic term (normalized) as the glossary holds it")
    target: str = Field(description="its English rendering, put into the translation")


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
    glossary_terms: list[GlossaryTerm] | None = Field(None, description="with a glossary: its terms found in this "
                                                      "sentence; flag glossary_missed = not all could be kept")


class ReviewSummary(BaseModel):
    sentences_needing_review: int = 0
    flags: dict[str, int] = Field(default_factory=dict, description="sentences per flag")


class DroppedLine(BaseModel):
    line: int = Field(description="1-based line number in the text as sent")
    text: str = Field(description="the dropped line, as sent")
    reason: str = Field(description="weather | date | duplicate_line | clipboard_notice")


class CacheCounts(BaseModel):
    hits: int = Field(0, description="model segments answered from the translation cache")
    misses: int = Field(0, description="model segments translated by the model")


class TextResult(BaseModel):
    index: int = Field(description="position of the text in the request")
    translation: str | None = Field(None, description="the whole English text, paragraphs kept")
    sentences: list[SentenceResult] = Field(default_factory=list)
    paragraphs: int = 0
    review: ReviewSummary | None = Field(None, description="quality flags aggregated over the text")
    error: ErrorBody | None = Field(None, description="set when this text could not be translated")
    dropped: list[DroppedLine] | None = Field(None, description="with clean=true: the page-furniture lines removed "
                                              "before translation (model_server/text/cleanup.py)")
    passthrough: bool = Field(False, description="the text is not Arabic and non_arabic=passthrough: `translation` "
                              "is the text unchanged, nothing was translated")
    cache: CacheCounts | None = Field(None, description="translation cache hits/misses of this text's segments "
                                      "(absent when the cache is off)")
