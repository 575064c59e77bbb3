"""Request and response bodies of the summary endpoints (/summarize, /v1/articles)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from model_server.api.schemas import EXAMPLE_ARTICLE
from model_server.batching.batcher import Lane
from model_server.settings import SummaryStrategy
from model_server.summarize import ArticleResult, SummaryResult

PRESET_FIELD = Field(None, min_length=1, max_length=100,
                     description="summary preset (a file in prompts/); default: MODEL_SERVER_DEFAULT_SUMMARY_PRESET")


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"text": EXAMPLE_ARTICLE}]})

    text: str = Field(description="the text to summarize (an article, paragraphs separated by newlines)")
    lang: Literal["ar", "en"] = Field("ar", description="language of the text; the summary is in the same language")
    preset: str | None = PRESET_FIELD
    priority: Lane = Field(Lane.interactive, description="interactive (editors) goes before bulk (backlogs)")


class SummarizeResponse(SummaryResult):
    warning: str | None = Field(None, description="set when a test model produced this response")


class ArticleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "id": "2024-04-16-libya", "title": "تحالف عسكري بين خليفة حفتر وروسيا", "body": EXAMPLE_ARTICLE}]})

    title: str = Field(description="the Arabic headline")
    body: str = Field(description="the Arabic article, paragraphs separated by newlines")
    id: str | None = Field(None, max_length=200, description="the caller's article id, echoed back")
    metadata: dict[str, Any] | None = Field(None, description="any JSON object, echoed back untouched")
    strategy: SummaryStrategy | None = Field(None, description="how the English summary is made (default: "
                                                                "MODEL_SERVER_SUMMARY_STRATEGY)")
    preset: str | None = PRESET_FIELD
    priority: Lane = Field(Lane.interactive, description="interactive (editors) goes before bulk (backlogs)")


class ArticleResponse(ArticleResult):
    warning: str | None = Field(None, description="set when a test model produced this response")
