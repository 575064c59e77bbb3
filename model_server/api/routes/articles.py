"""POST /v1/articles: an Arabic article in; its English title and body and bilingual summaries out."""

from __future__ import annotations

from fastapi import APIRouter, Request

from model_server.api.context import note_results, note_texts
from model_server.api.deps import ERROR_RESPONSES, cancel_on_disconnect
from model_server.api.ratelimit import charge_char_budget
from model_server.api.routes.summarize import get_summarizer
from model_server.api.schemas import TEST_MODEL_WARNING
from model_server.api.summary_schemas import ArticleRequest, ArticleResponse

router = APIRouter()


@router.post("/v1/articles", response_model=ArticleResponse, responses=ERROR_RESPONSES, tags=["summarization"])
async def article(body: ArticleRequest, request: Request):
    """Translate the title and body (sentence-aligned, as /translate) and summarize the body in Arabic and
    English. The Arabic summary runs concurrently with the translation; `strategy` decides whether the
    English summary is the Arabic one translated (`translate-summary`) or mT5 on the translation
    (`summarize-both`). Any bad field fails the whole article with the /translate error codes."""
    summarizer = get_summarizer(request)
    chars = len(body.title) + len(body.body)
    note_texts(request, texts=2, chars=chars)
    await charge_char_budget(request, chars)  # 429 before any model work
    result = await cancel_on_disconnect(request, summarizer.article(
        body.title, body.body, strategy=body.strategy, preset=body.preset, lane=body.priority,
        article_id=body.id, metadata=body.metadata))
    note_results(request, error_codes=[], timing_ms=result.timing_ms)
    test_model = any(info.test_model for info in result.models.values())
    return ArticleResponse(**dict(result), warning=TEST_MODEL_WARNING if test_model else None)
