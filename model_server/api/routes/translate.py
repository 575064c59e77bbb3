"""POST /translate: Arabic texts in, sentence-aligned English out."""

from __future__ import annotations

from fastapi import APIRouter, Request

from model_server.api.context import note_results
from model_server.api.deps import ERROR_RESPONSES, admit_texts, cancel_on_disconnect, get_services
from model_server.api.errors import error_response
from model_server.api.ratelimit import charge_char_budget
from model_server.api.schemas import TEST_MODEL_WARNING, ErrorResponse, TranslateRequest, TranslateResponse
from model_server.api.routes.glossaries import find_glossary
from model_server.documents import DocumentFormat, translate_documents
from model_server.errors import status_for

router = APIRouter()


@router.post("/translate", response_model=TranslateResponse, tags=["translation"],
             responses={**ERROR_RESPONSES, 404: {"model": ErrorResponse, "description": "unknown glossary"}})
async def translate(body: TranslateRequest, request: Request):
    """Translate one Arabic text (`text`) or several (`texts`), sentence by sentence.

    With `texts`, a bad text gets an `error` entry in its own result and never fails the others."""
    services = get_services(request)
    texts, chars = admit_texts(request, body.text, body.texts)
    await charge_char_budget(request, chars)  # 429 before any model work
    pipeline = services.translator_for(body.model)
    options = pipeline.options(num_beams=body.num_beams, max_new_tokens=body.max_new_tokens)
    glossary = await find_glossary(services, body.glossary) if body.glossary else None
    results, timings = await cancel_on_disconnect(request, translate_documents(
        pipeline, texts, options, lane=body.priority, clean=body.clean, format=DocumentFormat(body.format),
        glossary=glossary))
    note_results(request, error_codes=[r.error.code for r in results if r.error], timing_ms=timings.to_dict())
    if body.text is not None and results[0].error is not None:
        # A single text has nobody to share the response with: its error is the response.
        error = results[0].error
        return error_response(status_for(error.code), error.code, error.message)
    info = pipeline.backend.info
    return TranslateResponse(results=results, model=info, timing_ms=timings.to_dict(),
                             warning=TEST_MODEL_WARNING if info.test_model else None)
