"""DeepL-compatible document translation: POST /v2/document (upload), POST /v2/document/{id} (status),
POST /v2/document/{id}/result (download), as the official `deepl` clients call them (`translate_document`).

Backed by the service's jobs (model_server/document_jobs.py): a document is a job of the caller (its API key,
or its address with auth off), so the job rules apply - the owner alone sees it, the job store may be
SQLite or Redis + workers, the file is kept until jobs_retention_s after it finished. `document_id` is the
job's id; `document_key` a secret made at upload (only its SHA-256 is stored) that the status and result
calls must send: a wrong key gets the same 404 as an unknown id. Job states map to DeepL's: queued ->
queued, running -> translating (seconds_remaining estimated from the progress), done -> done (with
billed_characters: the characters translated), failed | cancelled | expired -> error (error_message).

Upload fields: `file` (.docx, .html, .txt, by its filename), `target_lang` (EN, EN-US, EN-GB), `source_lang`
(AR or absent), `glossary_id` (or one `glossary_ids`; a glossary of /v1/glossaries), `output_format` (only
the input's own kind), `filename` (when the file part has none); `formality` and any other field are accepted
and ignored. Errors are DeepL's `{"message"}` with its statuses; document codes map to 400 (unsupported,
malformed or encrypted files), 413 (too large), 503 for a result not ready yet (the client's
DocumentNotReadyException), 404 for a result that will never come.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from model_server.api.compat import DEEPL, describe_with, dialect_responses, dialect_route, read_params
from model_server.api.deps import get_services
from model_server.api.routes.glossaries import find_glossary
from model_server.api.routes.jobs import admit_document, document_response, job_caller, job_manager, submit_charged
from model_server.api.uploads import is_multipart, read_upload
from model_server.document_jobs import job_request
from model_server.errors import ServiceError
from model_server.jobs import StoredDocument

# DeepL's statuses for the document codes (the rest as in routes/deepl.py).
DEEPL_DOCUMENTS = dataclasses.replace(DEEPL, statuses={
    **DEEPL.statuses, "unsupported_document": 400, "invalid_document": 400, "document_encrypted": 400,
    "invalid_multipart": 400, "document_too_large": 413, "document_too_many_pieces": 413,
    "document_not_ready": 503, "document_unavailable": 404})

router = APIRouter(prefix="/v2", route_class=dialect_route(DEEPL_DOCUMENTS), tags=["deepl-compatible"])
_ERRORS = dialect_responses(DEEPL_DOCUMENTS, (400, 403, 404, 413, 429, 456, 500, 503))
_describe = describe_with(missing="Parameter '{name}' not specified.", bad="Value for '{name}' not supported.")
_STATUSES = {"queued": "queued", "running": "translating", "done": "done"}  # anything else: error


def _upper(value: Any) -> Any:
    return (value.strip().upper() or None) if isinstance(value, str) else value


class DeepLDocumentFields(BaseModel):
    """The form fields of DeepL's POST /v2/document this server reads (others are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    target_lang: Literal["EN", "EN-US", "EN-GB"]
    source_lang: Literal["AR"] | None = None
    glossary_id: str | None = None
    glossary_ids: str | None = Field(None, description="comma-separated; one glossary (more: 400)")
    output_format: str | None = None

    _langs = field_validator("target_lang", "source_lang", mode="before")(_upper)


class DocumentKeyBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    document_key: str = Field(min_length=1, max_length=200)


class DeepLDocumentHandle(BaseModel):
    document_id: str
    document_key: str


class DeepLDocumentStatus(BaseModel):
    document_id: str
    status: Literal["queued", "translating", "done", "error"]
    seconds_remaining: int | None = None
    billed_characters: int | None = None
    error_message: str | None = None


_UPLOAD_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "target_lang"],
    "properties": {"file": {"type": "string", "format": "binary", "description": ".docx, .html or .txt"},
                   "target_lang": {"type": "string", "enum": ["EN", "EN-US", "EN-GB", "en", "en-us", "en-gb"]},
                   "source_lang": {"type": "string", "enum": ["AR", "ar"]},
                   "glossary_id": {"type": "string"}, "glossary_ids": {"type": "string"},
                   "output_format": {"type": "string"}, "filename": {"type": "string"},
                   "formality": {"type": "string"}}}}}}}


def _glossary_name(fields: DeepLDocumentFields) -> str | None:
    names = [name.strip() for name in [fields.glossary_id or "", *(fields.glossary_ids or "").split(",")]
             if name.strip()]
    if len(set(names)) > 1:
        raise ServiceError("unsupported_option", "Only one glossary per request is supported.")
    return names[0] if names else None


@router.post("/document", response_model=DeepLDocumentHandle, responses=_ERRORS, openapi_extra=_UPLOAD_BODY)
async def deepl_document_upload(request: Request):
    """DeepL `POST /v2/document`: a multipart upload; answers `document_id` and `document_key`."""
    manager = job_manager(request)
    if not is_multipart(request.headers.get("content-type")):
        raise ServiceError("validation_error", "send the document as multipart/form-data with a 'file' part")
    upload = await read_upload(request)
    try:
        fields = DeepLDocumentFields.model_validate(upload.fields)
    except ValidationError as exc:
        raise ServiceError("validation_error", _describe(exc)) from None
    glossary = _glossary_name(fields)
    if glossary:
        await find_glossary(get_services(request), glossary)
    if fields.output_format and _kind_named(fields.output_format) != _kind_named(upload.filename.rpartition(".")[2]):
        raise ServiceError("unsupported_option", f"output_format {fields.output_format!r}: a file is translated "
                           "into the same kind of file only")
    prepared = await admit_document(request, upload)
    key = secrets.token_hex(32)
    stored = StoredDocument({**prepared.stored.about, "key_sha256": _digest(key)}, prepared.stored.data)
    job, _ = await submit_charged(request, manager, job_request(prepared, glossary=glossary), prepared.chars, None,
                                  None, document=stored)
    return DeepLDocumentHandle(document_id=job["id"], document_key=key)


def _kind_named(output_format: str) -> str:
    name = output_format.strip().lower().lstrip(".")
    return "html" if name == "htm" else name


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


async def _keyed_job(request: Request, document_id: str) -> tuple[dict, dict]:
    """The document job `document_id` if the request's `document_key` is its key; otherwise the one answer an
    unknown id gets, so a key cannot be told from an id by probing."""
    body: DocumentKeyBody = await read_params(request, DocumentKeyBody, lists=frozenset(), describe=_describe)
    unknown = ServiceError("unknown_job", f"Document {document_id!r} not found.")
    try:
        job, about = await job_manager(request).visible_document_job(document_id, job_caller(request))
    except ServiceError as exc:
        raise unknown if exc.code == "unknown_job" else exc
    if not about.get("key_sha256") or not hmac.compare_digest(about["key_sha256"], _digest(body.document_key)):
        raise unknown
    return job, about


def _seconds_remaining(job: dict) -> int | None:
    """From the pace so far (the job's age per translated piece); None before the first piece."""
    if job["done"] <= 0:
        return None
    per_piece_s = (time.time() - job["created_at"]) / job["done"]
    return max(round(per_piece_s * (job["total"] - job["done"])), 0)


@router.post("/document/{document_id}", response_model=DeepLDocumentStatus, response_model_exclude_none=True,
             responses=_ERRORS)
async def deepl_document_status(document_id: str, request: Request):
    """DeepL `POST /v2/document/{document_id}` with `document_key`: queued, translating, done or error."""
    job, about = await _keyed_job(request, document_id)
    status = _STATUSES.get(job["status"], "error")
    if status == "error":  # the job's own error message, else its state (cancelled, expired)
        message = json.loads(job["error"])["message"] if job["error"] else f"the translation was {job['status']}"
        return DeepLDocumentStatus(document_id=document_id, status="error", error_message=message)
    return DeepLDocumentStatus(
        document_id=document_id, status=status,
        seconds_remaining=_seconds_remaining(job) if status == "translating" else None,
        billed_characters=about["chars"] if status == "done" else None)


@router.post("/document/{document_id}/result", responses={
    200: {"description": "the translated file", "content": {"application/octet-stream": {}}}, **_ERRORS})
async def deepl_document_result(document_id: str, request: Request):
    """DeepL `POST /v2/document/{document_id}/result` with `document_key`: the translated file (503 while it
    is not ready, as DeepL)."""
    await _keyed_job(request, document_id)
    return await document_response(request, document_id, job_caller(request))
