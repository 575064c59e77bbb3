"""POST /translate: Arabic texts in, sentence-aligned English out; streamed as server-sent events
(one per sentence, then the whole response) when the client accepts text/event-stream."""

from __future__ import annotations

from typing import Sequence

from fastapi import APIRouter, Request

from model_server.api.context import note_results
from model_server.api.deps import ERROR_RESPONSES, admit_texts, cancel_on_disconnect, get_services
from model_server.api.errors import error_response
from model_server.api.ratelimit import charge_char_budget
from model_server.api.schemas import TEST_MODEL_WARNING, ErrorResponse, TranslateRequest, TranslateResponse
from model_server.api.routes.glossaries import find_glossary
from model_server.api.sse import Send, event_stream, wants_event_stream
from model_server.documents import DocumentFormat, translate_documents
from model_server.errors import ServiceError, status_for
from model_server.pipeline import Timings, TranslationPipeline
from model_server.results import TextResult
from model_server.streaming import Finished

router = APIRouter()


@router.post("/translate", response_model=TranslateResponse, tags=["translation"],
             responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "unknown glossary"},
                        200: {"content": {"text/event-stream": {}},
                              "description": "JSON, or server-sent events with Accept: text/event-stream"}})
async def translate(body: TranslateRequest, request: Request):
    """Translate one Arabic text (`text`) or several (`texts`), sentence by sentence.

    With `texts`, a bad text gets an `error` entry in its own result and never fails the others.
    With `Accept: text/event-stream` the response is streamed (README "Streaming"): a `sentence` event per
    sentence as soon as it and every earlier one are done, `text_error` for a failed text of `texts`,
    then `result` holding exactly the JSON response (or `error`)."""
    services = get_services(request)
    texts, chars = admit_texts(request, body.text, body.texts)
    streamed = wants_event_stream(request)
    if streamed and body.format != DocumentFormat.text.value:
        raise ServiceError("stream_unsupported", f"format={body.format} is translated as one whole document and "
                           "is not streamed; ask for application/json")
    await charge_char_budget(request, chars)  # 429 before any model work
    pipeline = services.translator_for(body.model)
    options = pipeline.options(num_beams=body.num_beams, max_new_tokens=body.max_new_tokens)
    glossary = await find_glossary(services, body.glossary) if body.glossary else None

    async def work(on_sentences=None):
        return await translate_documents(pipeline, texts, options, lane=body.priority, clean=body.clean,
                                         format=DocumentFormat(body.format), glossary=glossary,
                                         on_sentences=on_sentences)

    if streamed:
        async def produce(send: Send) -> TranslateResponse:
            async def on_sentences(released: list[Finished]) -> None:
                await send(*sentence_events(released, single=body.text is not None))

            results, timings = await work(on_sentences)
            response = _response(request, body, pipeline, results, timings)
            if not isinstance(response, TranslateResponse):  # the single text's error
                error = results[0].error
                raise ServiceError(error.code, error.message)
            return response

        return await event_stream(request, produce, cpu=pipeline.cpu,
                                  keepalive_s=services.settings.stream_keepalive_s)
    results, timings = await cancel_on_disconnect(request, work())
    return _response(request, body, pipeline, results, timings)


def sentence_events(released: list[Finished], *, single: bool = False,
                    fields: Sequence[str] | None = None) -> list[tuple[str, dict]]:
    """Released sentences as `sentence` events ({"text": i, "sentence": SentenceResult}, with "field": the
    text's name when `fields` names them), a failed text of `texts` as `text_error` ({"text": i, "error":
    {code, message}}); a single text's error is the request's, answered as the JSON error or the `error`
    event."""
    events: list[tuple[str, dict]] = []
    for item in released:
        place = {"field": fields[item.text]} if fields else {}
        if item.sentence is not None:
            events.append(("sentence", {**place, "text": item.text, "sentence": item.sentence}))
        elif item.error is not None and not single:
            events.append(("text_error", {**place, "text": item.text, "error": item.error}))
    return events


def _response(request: Request, body: TranslateRequest, pipeline: TranslationPipeline, results: list[TextResult],
              timings: Timings):
    note_results(request, error_codes=[r.error.code for r in results if r.error], timing_ms=timings.to_dict())
    if body.text is not None and results[0].error is not None:
        # A single text has nobody to share the response with: its error is the response.
        error = results[0].error
        return error_response(status_for(error.code), error.code, error.message)
    info = pipeline.backend.info
    return TranslateResponse(results=results, model=info, timing_ms=timings.to_dict(),
                             warning=TEST_MODEL_WARNING if info.test_model else None)
