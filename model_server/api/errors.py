"""One error shape for every failure: `{"error": {"code", "message"}}`. Stack traces go to the log."""

from __future__ import annotations

import logging

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from model_server.api.deps import ClientDisconnected
from model_server.errors import ServiceError

log = logging.getLogger(__name__)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def refuse_other_methods(router: APIRouter, path: str, allowed: tuple[str, ...]) -> None:
    """405 with an `Allow` naming every method of `path` (Starlette's own names only the first route's).
    Call after the path's real routes, so that they match first."""
    others = [m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE") if m not in allowed]

    async def refuse() -> JSONResponse:
        return error_response(405, "method_not_allowed", "Method Not Allowed", headers={"Allow": ", ".join(allowed)})

    router.add_api_route(path, refuse, methods=others, include_in_schema=False)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{location}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
    if exc.status >= 500:
        log.warning("request failed: %s (%s)", exc.code, exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    if any(error.get("type") == "json_invalid" for error in exc.errors()):
        return error_response(400, "invalid_json", "the request body is not valid JSON: " + _describe_validation(exc))
    return error_response(422, "validation_error", _describe_validation(exc))


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 400 and "parsing the body" in message:
        # FastAPI's own body parsing failed beyond a syntax error: nesting deeper than the parser's
        # recursion limit, a number too long to convert, ...
        code, message = "invalid_json", "the request body is not valid JSON: it cannot be parsed (nested too " \
                                        "deeply, or a number too long?)"
    return error_response(exc.status_code, code, message, getattr(exc, "headers", None))


async def _client_disconnected(_: Request, exc: ClientDisconnected) -> JSONResponse:
    # Nobody reads this: the connection is gone. 499 is the conventional "client closed request" status.
    return error_response(499, "client_closed", "the client disconnected before the response was ready")


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "an internal error occurred; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ClientDisconnected, _client_disconnected)
    app.add_exception_handler(Exception, _unexpected_error)
