"""POST /v1/articles: an Arabic article in; its English title and body and bilingual summaries out; streamed as
server-sent events (sentences, then summaries, then the whole response) with Accept: text/event-stream."""

from __future__ import annotations

from fastapi import APIRouter, Request

from model_server.api.context import note_results, note_texts
from model_server.api.deps import ERROR_RESPONSES, cancel_on_disconnect, get_services
from model_server.api.ratelimit import charge_char_budget
from model_server.api.routes.summarize import get_summarizer
from model_server.api.routes.translate import sentence_events
from model_server.api.schemas import TEST_MODEL_WARNING
from model_server.api.sse import Send, event_stream, wants_event_stream
from model_server.api.summary_schemas import ArticleRequest, ArticleResponse
from model_server.streaming import Finished
from model_server.summarize import ArticleResult, SummaryText

router = APIRouter()

ARTICLE_FIELDS = ("title", "body")  # the texts of an article, in the order they are translated (and streamed)


@router.post("/v1/articles", response_model=ArticleResponse, tags=["summarization"],
             responses={**ERROR_RESPONSES, 200: {"content": {"text/event-stream": {}}, "description":
                                                 "JSON, or server-sent events with Accept: text/event-stream"}})
async def article(body: ArticleRequest, request: Request):
    """Translate the title and body (sentence-aligned, as /translate) and summarize the body in Arabic and
    English. The Arabic summary runs concurrently with the translation; `strategy` decides whether the
    English summary is the Arabic one translated (`translate-summary`) or mT5 on the translation
    (`summarize-both`). Any bad field fails the whole article with the /translate error codes.

    With `Accept: text/event-stream` (README "Streaming"): `sentence` events (title, then body), a `summary`
    event per summary as soon as it is ready, then `result` holding exactly the JSON response (or `error`)."""
    summarizer = get_summarizer(request)
    chars = len(body.title) + len(body.body)
    note_texts(request, texts=2, chars=chars)
    await charge_char_budget(request, chars)  # 429 before any model work

    async def work(on_sentences=None, on_summary=None) -> ArticleResponse:
        result = await summarizer.article(
            body.title, body.body, strategy=body.strategy, preset=body.preset, lane=body.priority,
            article_id=body.id, metadata=body.metadata, on_sentences=on_sentences, on_summary=on_summary)
        return _response(request, result)

    if wants_event_stream(request):
        async def produce(send: Send) -> ArticleResponse:
            async def on_sentences(released: list[Finished]) -> None:
                # A failed title or body fails the whole article: its error comes as the `error` event.
                await send(*[event for event in sentence_events(released, fields=ARTICLE_FIELDS)
                             if event[0] == "sentence"])

            async def on_summary(summary: SummaryText) -> None:
                await send(("summary", summary))

            return await work(on_sentences, on_summary)

        return await event_stream(request, produce, cpu=summarizer.cpu,
                                  keepalive_s=get_services(request).settings.stream_keepalive_s)
    return await cancel_on_disconnect(request, work())


def _response(request: Request, result: ArticleResult) -> ArticleResponse:
    note_results(request, error_codes=[], timing_ms=result.timing_ms)
    test_model = any(info.test_model for info in result.models.values())
    return ArticleResponse(**dict(result), warning=TEST_MODEL_WARNING if test_model else None)
