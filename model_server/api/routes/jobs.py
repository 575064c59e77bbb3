"""Asynchronous jobs: POST /v1/jobs (202 + id), GET /v1/jobs (the caller's own), GET and DELETE
/v1/jobs/{id} (model_server/jobs.py runs them; model_server/webhooks.py delivers them).

POST /v1/jobs takes a JSON body (texts) or a multipart/form-data document upload (a `file` part: .docx, .html,
.txt, and the job's options as form fields; model_server/api/uploads.py parses it, model_server/document_jobs.py
makes it a job); GET /v1/jobs/{id}/document downloads a document job's translated file once it is done."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model_server.api.context import context_of, note_texts
from model_server.api.deps import admit_texts, get_services
from model_server.api.errors import refuse_other_methods
from model_server.api.ratelimit import charge_char_budget, refund_char_quota
from model_server.api.routes.glossaries import find_glossary
from model_server.api.schemas import ErrorResponse, TranslateRequest
from model_server.api.uploads import Upload, content_disposition, is_multipart, read_upload
from model_server.batching.batcher import Lane
from model_server.document_jobs import PreparedDocument, job_request, media_type, prepare_document, translated_file
from model_server.errors import ServiceError
from model_server.jobs import MAX_PAGE, Caller, JobManager

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 404, 409, 410, 413, 415, 422, 503)}


class JobRequest(TranslateRequest):
    """The body of POST /translate, plus `callback_url`; jobs default to the `bulk` lane."""

    priority: Lane = Field(Lane.bulk, description="bulk (default for jobs) or interactive")
    callback_url: str | None = Field(None, max_length=2048, description=(
        "receives the finished job by POST, signed: X-Model-Server-Timestamp: <unix time> and "
        "X-Model-Server-Signature: sha256=<HMAC-SHA256 of '<timestamp>.<body>'>. Must reach a public address "
        "(loopback, private, link-local and metadata addresses only via MODEL_SERVER_WEBHOOK_ALLOWED_HOSTS)"))


class DocumentJobFields(BaseModel):
    """The form fields of a document upload to POST /v1/jobs (besides the `file` part): a JSON job's options,
    without `text(s)`, `clean` and `format` (the document's pieces and format are its own)."""

    model_config = ConfigDict(extra="forbid")

    source_lang: Literal["ar"] = "ar"
    target_lang: Literal["en"] = "en"
    num_beams: int | None = Field(None, ge=1, le=16)
    max_new_tokens: int | None = Field(None, ge=1, le=2048)
    priority: Lane = Lane.bulk
    model: str | None = Field(None, min_length=1, max_length=200)
    glossary: str | None = None
    callback_url: str | None = Field(None, max_length=2048)


def _document_schema() -> dict:
    schema = DocumentJobFields.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)  # Lane: already a component (POST /translate)
    for field_schema in schema["properties"].values():  # a form has no null: a field is sent or left out
        options = [option for option in field_schema.get("anyOf", []) if option.get("type") != "null"]
        if options:
            del field_schema["anyOf"]
            field_schema.pop("default", None)
            field_schema.update(options[0])
    schema["properties"] = {"file": {"type": "string", "format": "binary",
                                     "description": "the document: .docx, .html or .txt (by its filename)"},
                            **schema["properties"]}
    schema["required"] = ["file"]
    return schema


def _job_schema() -> dict:
    schema = JobRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


_SUBMIT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _job_schema()},
    "multipart/form-data": {"schema": _document_schema()}}}}


def job_manager(request: Request) -> JobManager:
    manager = getattr(request.app.state, "jobs", None)
    if manager is None:
        raise ServiceError("jobs_unavailable", "the job store cannot be opened (see the server log)")
    return manager


def job_caller(request: Request) -> Caller:
    """The API key's name with auth on, else the client address (uvicorn applies trusted X-Forwarded-For)."""
    context = context_of(request)
    if context is None:
        return Caller(owner="ip:unknown", authenticated=False)
    return Caller(owner=context.rate_key, authenticated=context.principal is not None)


@router.post("", status_code=202, responses={200: {"description": "an existing job (same Idempotency-Key)"},
                                             **_ERRORS}, openapi_extra=_SUBMIT_BODY)
async def submit_job(request: Request, idempotency_key: str | None = Header(None, max_length=200)) -> Any:
    """Accept a translation job (202 with its id): a JSON body of texts, or a multipart/form-data document
    upload (`file`: .docx, .html or .txt, up to document_max_bytes; the options as form fields), whose
    translated file GET /v1/jobs/{id}/document returns once the job is done. A repeated `Idempotency-Key`
    with the same body returns the first job (200); with another body 422 `idempotency_mismatch`. Keys are
    per API key (per client address when auth is off)."""
    if is_multipart(request.headers.get("content-type")):
        return await _submit_document(request, idempotency_key)
    body = _validated(JobRequest, await request.body(), request.headers.get("content-type"))
    manager = job_manager(request)
    texts, chars = admit_texts(request, body.text, body.texts, noun="job")
    await _check_names(request, body.model, body.glossary)
    await charge_char_budget(request, chars)
    stored = {"texts": texts, "num_beams": body.num_beams, "max_new_tokens": body.max_new_tokens,
              "priority": body.priority.value, "clean": body.clean, "format": body.format, "glossary": body.glossary,
              "model": body.model}
    return _accepted(*await submit_charged(request, manager, stored, chars, body.callback_url, idempotency_key))


def _validated(model: type[BaseModel], raw: bytes, content_type: str | None) -> Any:
    """The JSON body as `model`, refused as FastAPI's own body parsing refuses it (400 invalid_json, 422
    validation_error: no body, or a body that is not JSON by its declared type)."""
    media_type = (content_type or "application/json").split(";")[0].strip().lower()
    if not (media_type == "application/json" or media_type.endswith("+json")):
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",), "msg": (
            "send JSON (application/json) texts, or a document as multipart/form-data")}])
    if not raw.strip():
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required"}])
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in exc.errors(include_url=False)]) from None


async def _check_names(request: Request, model: str | None, glossary: str | None) -> None:
    get_services(request).translator_for(model)  # an unknown model fails now, not later
    if glossary:
        await find_glossary(get_services(request), glossary)  # an unknown glossary too


async def admit_document(request: Request, upload: Upload) -> PreparedDocument:
    """Open an uploaded file (its kind, checks, pieces) and admit its pieces as a job's texts: noted for the
    access log and charged to the caller's character budget (shared with DeepL's /v2/document)."""
    prepared = await prepare_document(get_services(request), upload.filename, upload.data)
    note_texts(request, texts=len(prepared.document.texts), chars=prepared.chars)
    await charge_char_budget(request, prepared.chars)
    return prepared


async def submit_charged(request: Request, manager: JobManager, stored: dict, chars: int, callback_url: str | None,
                         idempotency_key: str | None, **extra: Any) -> tuple[dict, bool]:
    """Store the (already charged) job; its characters go back when no job was made (the job store is down)
    or when an Idempotency-Key replay returns the job it was charged for first. (Shared with DeepL's
    /v2/document.)"""
    try:
        job, created = await manager.submit(job_caller(request), stored, len(stored["texts"]), callback_url,
                                            idempotency_key, **extra)
    except ServiceError as exc:
        if exc.status >= 500:
            await refund_char_quota(request, chars)
        raise
    if not created:
        await refund_char_quota(request, chars)
    return job, created


def _accepted(job: dict, created: bool) -> JSONResponse:
    return JSONResponse(job, status_code=202 if created else 200, headers={"Location": f"/v1/jobs/{job['id']}"})


async def _submit_document(request: Request, idempotency_key: str | None) -> Any:
    manager = job_manager(request)
    upload = await read_upload(request)
    try:
        fields = DocumentJobFields.model_validate(upload.fields)
    except ValidationError as exc:
        raise RequestValidationError([{**error, "loc": ("body", *error["loc"])}
                                      for error in exc.errors(include_url=False)]) from None
    await _check_names(request, fields.model, fields.glossary)
    prepared = await admit_document(request, upload)
    stored = job_request(prepared, model=fields.model, glossary=fields.glossary, num_beams=fields.num_beams,
                         max_new_tokens=fields.max_new_tokens, priority=fields.priority.value)
    return _accepted(*await submit_charged(request, manager, stored, prepared.chars, fields.callback_url,
                                           idempotency_key, document=prepared.stored))


@router.get("", responses=_ERRORS)
async def list_jobs(request: Request, limit: int = Query(20, ge=1, le=MAX_PAGE),
                    cursor: str | None = Query(None, max_length=200, description="next_cursor of the previous page"),
                    ) -> Any:
    """The caller's own jobs, newest first, without their results: `{"jobs": [...], "next_cursor"}`
    (null on the last page)."""
    return await job_manager(request).list_jobs(job_caller(request), limit=limit, cursor=cursor)


@router.get("/{job_id}", responses=_ERRORS)
async def get_job(job_id: str, request: Request) -> Any:
    """Status (queued | running | done | failed | cancelled | expired), progress {done, total} in texts,
    attempts, result or error. Another API key's job answers 404 `unknown_job`, as an unknown id does."""
    return await job_manager(request).get(job_id, job_caller(request))


@router.get("/{job_id}/document", responses={200: {"description": "the translated file", "content": {
    media: {} for media in ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                            "text/html", "text/plain")}}, **_ERRORS}, response_class=Response)
async def download_document(job_id: str, request: Request) -> Response:
    """A document job's translated file, of the uploaded kind, named as uploaded (Content-Disposition). 409
    `document_not_ready` while the job is queued or running; 410 `document_unavailable` once it failed, was
    cancelled or expired; 404 `unknown_job` for a job of texts."""
    return await document_response(request, job_id, job_caller(request))


async def document_response(request: Request, job_id: str, caller: Caller) -> Response:
    """The translated file of document job `job_id` (shared with DeepL's /v2/document/{id}/result)."""
    job, about, data = await job_manager(request).document_source(job_id, caller)
    translated = await translated_file(get_services(request), job, about, data)
    return Response(translated, media_type=media_type(about),
                    headers={"Content-Disposition": content_disposition(about["filename"])})


@router.delete("/{job_id}", responses=_ERRORS)
async def cancel_job(job_id: str, request: Request) -> Any:
    """Cancel a queued or running job: it reads `cancelled`, its queued segments are dropped, no webhook is
    sent. A finished job is returned unchanged."""
    return await job_manager(request).cancel(job_id, job_caller(request))


# After the real routes, so that they match first.
refuse_other_methods(router, "", ("GET", "POST"))
refuse_other_methods(router, "/{job_id}", ("GET", "DELETE"))
refuse_other_methods(router, "/{job_id}/document", ("GET",))
