"""Asynchronous jobs: POST /v1/jobs (202 + id), GET /v1/jobs (the caller's own), GET and DELETE
/v1/jobs/{id} (model_server/jobs.py runs them; model_server/webhooks.py delivers them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from model_server.api.context import context_of
from model_server.api.deps import admit_texts, get_services
from model_server.api.errors import refuse_other_methods
from model_server.api.ratelimit import charge_char_budget, refund_char_quota
from model_server.api.routes.glossaries import find_glossary
from model_server.api.schemas import ErrorResponse, TranslateRequest
from model_server.batching.batcher import Lane
from model_server.errors import ServiceError
from model_server.jobs import MAX_PAGE, Caller, JobManager

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 404, 413, 422, 503)}


class JobRequest(TranslateRequest):
    """The body of POST /translate, plus `callback_url`; jobs default to the `bulk` lane."""

    priority: Lane = Field(Lane.bulk, description="bulk (default for jobs) or interactive")
    callback_url: str | None = Field(None, max_length=2048, description=(
        "receives the finished job by POST, signed: X-Model-Server-Timestamp: <unix time> and "
        "X-Model-Server-Signature: sha256=<HMAC-SHA256 of '<timestamp>.<body>'>. Must reach a public address "
        "(loopback, private, link-local and metadata addresses only via MODEL_SERVER_WEBHOOK_ALLOWED_HOSTS)"))


def _manager(request: Request) -> JobManager:
    manager = getattr(request.app.state, "jobs", None)
    if manager is None:
        raise ServiceError("jobs_unavailable", "the job store cannot be opened (see the server log)")
    return manager


def _caller(request: Request) -> Caller:
    """The API key's name with auth on, else the client address (uvicorn applies trusted X-Forwarded-For)."""
    context = context_of(request)
    if context is None:
        return Caller(owner="ip:unknown", authenticated=False)
    return Caller(owner=context.rate_key, authenticated=context.principal is not None)


@router.post("", status_code=202, responses={200: {"description": "an existing job (same Idempotency-Key)"},
                                             **_ERRORS})
async def submit_job(body: JobRequest, request: Request,
                     idempotency_key: str | None = Header(None, max_length=200)) -> Any:
    """Accept a translation job (202 with its id). A repeated `Idempotency-Key` with the same body returns the
    first job (200); with another body 422 `idempotency_mismatch`. Keys are per API key (per client address
    when auth is off)."""
    services = get_services(request)
    manager = _manager(request)
    texts, chars = admit_texts(request, body.text, body.texts, noun="job")
    services.translator_for(body.model)  # an unknown model fails now, not later
    if body.glossary:
        await find_glossary(services, body.glossary)  # an unknown glossary too
    await charge_char_budget(request, chars)
    stored = {"texts": texts, "num_beams": body.num_beams, "max_new_tokens": body.max_new_tokens,
              "priority": body.priority.value, "clean": body.clean, "format": body.format, "glossary": body.glossary,
              "model": body.model}
    try:
        job, created = await manager.submit(_caller(request), stored, len(texts), body.callback_url, idempotency_key)
    except ServiceError as exc:
        if exc.status >= 500:   # no job was made (the job store is down): nothing to pay for
            await refund_char_quota(request, chars)
        raise
    if not created:
        await refund_char_quota(request, chars)   # a replay (Idempotency-Key): the job was charged once
    return JSONResponse(job, status_code=202 if created else 200, headers={"Location": f"/v1/jobs/{job['id']}"})


@router.get("", responses=_ERRORS)
async def list_jobs(request: Request, limit: int = Query(20, ge=1, le=MAX_PAGE),
                    cursor: str | None = Query(None, max_length=200, description="next_cursor of the previous page"),
                    ) -> Any:
    """The caller's own jobs, newest first, without their results: `{"jobs": [...], "next_cursor"}`
    (null on the last page)."""
    return await _manager(request).list_jobs(_caller(request), limit=limit, cursor=cursor)


@router.get("/{job_id}", responses=_ERRORS)
async def get_job(job_id: str, request: Request) -> Any:
    """Status (queued | running | done | failed | cancelled | expired), progress {done, total} in texts,
    attempts, result or error. Another API key's job answers 404 `unknown_job`, as an unknown id does."""
    return await _manager(request).get(job_id, _caller(request))


@router.delete("/{job_id}", responses=_ERRORS)
async def cancel_job(job_id: str, request: Request) -> Any:
    """Cancel a queued or running job: it reads `cancelled`, its queued segments are dropped, no webhook is
    sent. A finished job is returned unchanged."""
    return await _manager(request).cancel(job_id, _caller(request))


# After the real routes, so that they match first.
refuse_other_methods(router, "", ("GET", "POST"))
refuse_other_methods(router, "/{job_id}", ("GET", "DELETE"))
