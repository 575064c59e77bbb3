"""Request and response bodies of the HTTP API (validated once, here, at the edge)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model_server.backends.base import ModelInfo
from model_server.batching.batcher import Lane
from model_server.results import ErrorBody, TextResult

TEST_MODEL_WARNING = ("served by a tiny test model built by the repo: the output is NOT a translation "
                      "(set MODEL_SERVER_PROFILE=default and a real model for real use)")

EXAMPLE_ARTICLE = "تحالف عسكري بين خليفة حفتر وروسيا\nاتفاق دفاعي بين الطرفين"


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"text": EXAMPLE_ARTICLE}],
        # "exactly one of text/texts" (the validator below), said in the schema too, for clients and fuzzers.
        "oneOf": [{"required": ["text"], "properties": {"text": {"type": "string"}}},
                  {"required": ["texts"], "properties": {"texts": {"type": "array"}}}],
        # "clean only with format=text" (the validator below), said in the schema too.
        "not": {"required": ["clean", "format"], "properties": {"clean": {"const": True}, "format": {"const": "html"}}}})

    text: str | None = Field(None, description="one Arabic text (an article, paragraphs separated by newlines)")
    texts: list[str] | None = Field(None, min_length=1, description="several Arabic texts, translated independently")
    source_lang: Literal["ar"] = Field("ar", description="only Arabic is supported")
    target_lang: Literal["en"] = Field("en", description="only English is supported")
    num_beams: int | None = Field(None, ge=1, le=16, description="beam size (default: the model's own)")
    max_new_tokens: int | None = Field(None, ge=1, le=2048, description="cap on generated tokens per sentence")
    priority: Lane = Field(Lane.interactive, description="interactive (editors) goes before bulk (backlogs)")
    model: str | None = Field(None, min_length=1, max_length=200, description="translation model: 'default' or a name from the "
                              "extra_translation_models setting (GET /v1/models lists them)")
    clean: bool = Field(False, strict=True, description="drop page furniture of scraped articles first (weather widgets, date "
                        "stamps, a repeated headline, 'copied to clipboard' notices); each result lists them in `dropped`")
    glossary: str | None = Field(None, description="name of a glossary (POST /v1/glossaries) whose terms are "
                                 "rendered as configured; see README 'Glossaries'")
    format: Literal["text", "html"] = Field("text", description="html: translate the text of HTML (a document or "
                                            "a fragment), keeping every tag, attribute and link; see README 'HTML'")

    @model_validator(mode="after")
    def _exactly_one_input(self) -> "TranslateRequest":
        if (self.text is None) == (self.texts is None):
            raise ValueError("give exactly one of 'text' (a string) or 'texts' (a list of strings)")
        if self.clean and self.format != "text":
            raise ValueError("'clean' works on plain text only (format='text')")
        return self


class TranslateResponse(BaseModel):
    results: list[TextResult] = Field(description="one entry per input text, in request order")
    model: ModelInfo
    timing_ms: dict[str, float] = Field(description="milliseconds per stage: prepare, translate, assemble, total")
    warning: str | None = Field(None, description="set when a test model produced this response")


class ErrorResponse(BaseModel):
    error: ErrorBody


class HealthResponse(BaseModel):
    status: str


class ReadinessResponse(HealthResponse):
    state: dict | None = Field(None, description="/readyz with a state Redis (state_url): {store, reachable, "
                               "error}; absent with the embedded state")


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    batching: dict[str, Any] = Field(description="batcher settings and counters per model")
    hardware: dict[str, Any] = Field(
        default_factory=dict, description="the CPU flags the precision defaults were chosen from (machine, "
        "flags_source, flags, native_bf16); each model's extra.precision says what was chosen and why")
    warning: str | None = None
