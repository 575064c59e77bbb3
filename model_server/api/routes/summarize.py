"""POST /summarize: one Arabic or English text in, its summary (same language) out."""

from __future__ import annotations

from fastapi import APIRouter, Request

from model_server.api.context import note_results, note_texts
from model_server.api.deps import ERROR_RESPONSES, cancel_on_disconnect, get_services
from model_server.api.ratelimit import charge_char_budget
from model_server.api.schemas import TEST_MODEL_WARNING
from model_server.api.summary_schemas import SummarizeRequest, SummarizeResponse
from model_server.errors import ServiceError
from model_server.summarize import SummarizationPipeline

router = APIRouter()


def get_summarizer(request: Request) -> SummarizationPipeline:
    """The summarization pipeline, or 503 summarization_disabled."""
    summarizer = get_services(request).summarizer
    if summarizer is None:
        raise ServiceError("summarization_disabled", "summarization is not available on this server "
                           "(MODEL_SERVER_SUMMARIZATION_ENABLED=false or no summarization model loaded)")
    return summarizer


@router.post("/summarize", response_model=SummarizeResponse, responses=ERROR_RESPONSES, tags=["summarization"])
async def summarize(body: SummarizeRequest, request: Request):
    """Summarize one text with mT5 in its own language. Texts longer than the model's input limit are
    summarized in chunks of whole paragraphs, then the chunk summaries are summarized (`long_article`)."""
    summarizer = get_summarizer(request)
    note_texts(request, texts=1, chars=len(body.text))
    await charge_char_budget(request, len(body.text), translated=False)  # 429 before any model work
    result = await cancel_on_disconnect(
        request, summarizer.summarize(body.text, lang=body.lang, preset=body.preset, lane=body.priority))
    note_results(request, error_codes=[], timing_ms=result.timing_ms)
    return SummarizeResponse(**dict(result), warning=TEST_MODEL_WARNING if result.model.test_model else None)
