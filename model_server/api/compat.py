"""Plumbing shared by the drop-in compatible APIs: DeepL (`/v2/*`) and LibreTranslate (`/libretranslate/*`).

The adapters translate through the same `translate_documents` -> `TranslationPipeline` path as
POST /translate; they only parse their dialect's requests and write their dialect's responses.

Errors speak the dialect, never the main `{"error": {"code", "message"}}` shape:

* DeepL: `{"message": "..."}` with DeepL's statuses (400 bad request, 403 missing or bad key, 413 too
  large, 429 busy - rate limited, too many in flight or queue full, 456 quota - the period's character
  quota spent, or one request above the per-minute character budget, 503 starting/stopping, 504 timeout,
  500).
* LibreTranslate: `{"error": "..."}` with LibreTranslate's statuses (400 any bad input, size limits
  included; 403 missing or bad key; 429 "Slowdown: ..."; 500; 503; 504).

Two mechanisms, one mapping (`Dialect`):

1. `dialect_route(dialect)`: the compat routers' route class. A `ServiceError` raised by a compat route
   (or anything below it) becomes a dialect response right there - the app's main exception handlers
   are never involved and never changed.
2. `CompatEdge`: pure ASGI middleware, outermost. Refusals made before any route runs (API key,
   request rate, requests in flight, body size, unknown path/method under a compat prefix) come from
   the edge middleware in the main shape; CompatEdge rewrites those error responses into the dialect
   (same mapping).

`CompatKeys` (ASGI middleware just outside `AuthGuard`, installed by `model_server.api.operations`) maps
the dialects' API keys onto the service's own auth (`model_server.api.auth`): DeepL's
`Authorization: DeepL-Auth-Key <key>` and LibreTranslate's `api_key` body/query field become
`X-API-Key: <key>` before `AuthGuard` sees the request, and so does DeepL's legacy `auth_key` field (a
form body or the query string, as old plugins send it: wagtail's `text=...&auth_key=...`). When auth is
off it is not installed. LibreTranslate clients can only send the key in the body, so under
/libretranslate/, and under /v2/ when no DeepL-Auth-Key header came (auth on, no service key header),
the body is read there, bounded by max_body_bytes, and decoded (off the event loop) by the same
`decode_params` the routes use: a body that cannot be decoded is answered 400 (`invalid_json`, ...) as
the route would, never a 500.

Request parameters are decoded and validated off the event loop (`read_params` -> `services.cpu`):
JSON parsing of a capped body is linear, but one request must not hold the loop for others.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_server.api.auth import authorization_token, presented_key
from model_server.api.context import error_code_of, header, note_results, refuse, replay
from model_server.api.deps import ClientDisconnected, admit, cancel_on_disconnect, get_services
from model_server.api.ratelimit import charge_char_budget, refund_char_quota
from model_server.documents import DocumentFormat, translate_documents
from model_server.errors import ServiceError, status_for
from model_server.results import TextResult
from model_server.text import arabic_ratio, normalize_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dialect:
    name: str
    prefix: str                         # paths under it answer in this dialect
    statuses: dict[str, int]            # service error code -> status (others: the service's own status)
    message_key: str                    # {"message": ...} (DeepL) or {"error": ...} (LibreTranslate)
    prefixes: dict[int, str]            # status -> text put before the message ("Slowdown: ")
    body_key: str                       # the API key's field in a form/JSON body or the query string

    def status(self, code: str) -> int:
        return self.statuses.get(code, status_for(code))

    def body(self, code: str, message: str) -> dict[str, str]:
        return {self.message_key: self.prefixes.get(self.status(code), "") + message}

    def response(self, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(code, message), status_code=self.status(code), headers=headers)

    def owns(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix + "/")


_BAD_INPUT = ("invalid_json", "invalid_encoding", "empty_text", "not_arabic", "validation_error", "invalid_markup",
              "unsupported_option")
DEEPL = Dialect(
    name="deepl", prefix="/v2", message_key="message", prefixes={}, body_key="auth_key",
    statuses={**{code: 400 for code in _BAD_INPUT}, "unauthorized": 403, "forbidden": 403,
              "body_too_large": 413, "text_too_long": 413, "too_many_texts": 413, "too_many_segments": 413,
              "exceeds_rate_limit": 456, "quota_exceeded": 456,
              "rate_limited": 429, "too_many_inflight": 429, "queue_full": 429})
LIBRETRANSLATE = Dialect(
    name="libretranslate", prefix="/libretranslate", message_key="error", prefixes={429: "Slowdown: "},
    body_key="api_key",
    statuses={**{code: 400 for code in _BAD_INPUT}, "unauthorized": 403, "forbidden": 403,
              "body_too_large": 400, "text_too_long": 400, "too_many_texts": 400, "too_many_segments": 400,
              "exceeds_rate_limit": 400,
              "rate_limited": 429, "too_many_inflight": 429, "queue_full": 429})
DIALECTS = (DEEPL, LIBRETRANSLATE)


def dialect_of(path: str) -> Dialect | None:
    return next((d for d in DIALECTS if d.owns(path)), None)


def dialect_route(dialect: Dialect) -> type[APIRoute]:
    """A route class whose handler answers every failure in `dialect`'s error shape."""

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def handle(request: Request):
                try:
                    return await handler(request)
                except ServiceError as exc:
                    if exc.status >= 500:
                        log.warning("%s request failed: %s (%s)", dialect.name, exc.code, exc.message)
                    return dialect.response(exc.code, exc.message, exc.headers)
                except RequestValidationError as exc:   # FastAPI's own parsing (compat routes parse themselves)
                    return dialect.response("validation_error", "; ".join(
                        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
                        for e in exc.errors()[:5]))
                except ClientDisconnected:
                    raise   # nobody is listening; the main handler logs it
                except Exception:
                    log.exception("unhandled error in a %s-compatible route", dialect.name)
                    return dialect.response("internal_error", "an internal error occurred; it has been logged")

            return handle

    return DialectRoute


def dialect_responses(dialect: Dialect, statuses: Sequence[int]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a compat route: its error statuses with the dialect's error body."""
    schema = {"type": "object", "properties": {dialect.message_key: {"type": "string"}},
              "required": [dialect.message_key]}
    return {status: {"description": f"{dialect.name}-style error",
                     "content": {"application/json": {"schema": schema}}} for status in statuses}


def documented_as(schema: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """`json_schema_extra` that replaces a field's generated schema: the adapters accept more than one JSON
    type for some fields (forms send everything as strings) and the spec must say exactly what is accepted."""

    def replace(generated: dict[str, Any]) -> None:
        description = generated.get("description")
        generated.clear()
        generated.update(schema, **({"description": description} if description else {}))

    return replace


FLAG_SCHEMA = {"anyOf": [{"type": "boolean"}, {"type": "integer", "enum": [0, 1]}, {"type": "string"}]}
COUNT_SCHEMA = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}


def as_flag(value: Any) -> Any:
    """A form or JSON flag: true/false, 1/0, "1"/"0", "true"/"false" (any case). Others are left to fail."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "0", "false"):
        return value.strip().lower() in ("1", "true")
    return None if value is None else "invalid"


def as_count(value: Any) -> Any:
    """A non-negative integer, from JSON or from a form's digits. Others (floats, booleans) are left to fail."""
    if isinstance(value, bool):
        return "invalid"
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) else "invalid"


def request_body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI `requestBody` for a compat route: the same fields as JSON or as a form."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema},
                                                          "application/x-www-form-urlencoded": {"schema": schema}}}}


def parse_json(body: bytes) -> Any:
    """`json.loads`, with every way it can fail - bad syntax, nesting deeper than the parser's recursion
    limit (RecursionError), numbers too long to convert - answered 400 `invalid_json`."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        problem = "it nests too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ServiceError("invalid_json", f"the request body is not valid JSON: {problem}") from None


def decode_params(body: bytes, content_type: str, query: str, *, lists: frozenset[str]) -> dict[str, Any]:
    """A request's parameters: its JSON object or form-urlencoded body plus its query string (the body
    wins). Form fields named in `lists` may repeat (`text=a&text=b`). ServiceError when undecodable."""
    media_type = content_type.split(";")[0].strip().lower()
    data: dict[str, Any] = {}
    if media_type == "application/json" or media_type.endswith("+json"):
        payload = parse_json(body) if body else {}
        if not isinstance(payload, dict):
            raise ServiceError("validation_error", "the JSON body must be an object")
        data = payload
    elif media_type.startswith("multipart/"):
        raise ServiceError("validation_error", "multipart bodies are not supported: send JSON or a form "
                           "(application/x-www-form-urlencoded)")
    elif body:
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError as exc:
            raise ServiceError("invalid_encoding", f"the request body is not valid UTF-8 (byte {exc.start})") from None
        data = {key: values if key in lists else values[0] for key, values in form.items()}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        data.setdefault(key, values if key in lists else values[0])
    return data


def _validated_params(body: bytes, content_type: str, query: str, model: type[BaseModel], lists: frozenset[str],
                      describe: Callable[[ValidationError], str]) -> Any:
    data = decode_params(body, content_type, query, lists=lists)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ServiceError("validation_error", describe(exc)) from None


async def read_params(request: Request, model: type[BaseModel], *, lists: frozenset[str],
                      describe: Callable[[ValidationError], str]) -> Any:
    """The request's parameters (`decode_params`), validated by `model`, decoded on the CPU pool (off the
    event loop). ServiceError when bad."""
    body = await request.body()
    return await get_services(request).cpu.run(_validated_params, body, request.headers.get("content-type", ""),
                                               request.url.query, model, lists, describe)


def missing_and_bad(exc: ValidationError) -> tuple[list[str], list[str]]:
    """Field names that are missing and field names that are invalid, from a pydantic error."""
    missing, bad = [], []
    for error in exc.errors():
        name = str(error["loc"][0]) if error.get("loc") else "body"
        (missing if error.get("type") == "missing" else bad).append(name)
    return missing, bad


def describe_with(missing: str, bad: str) -> Callable[[ValidationError], str]:
    """A `read_params` describer in an API's own words: `missing` / `bad` are templates with {name}, filled
    with the first missing field, else the first invalid one."""
    def describe(exc: ValidationError) -> str:
        missing_names, bad_names = missing_and_bad(exc)
        return missing.format(name=missing_names[0]) if missing_names else bad.format(name=bad_names[0])

    return describe


async def translate_texts(request: Request, texts: list[str], *, format: DocumentFormat = DocumentFormat.text,
                          skip_tags: frozenset[str] = frozenset(), glossary=None) -> list[TextResult]:
    """Translate `texts` for a compat route: the service's limits, rate budget and metrics hooks, then ONE
    `translate_documents` call. Blank texts come back as "" (both APIs do that) without model work.
    Raises the first text's error as a ServiceError: neither API has per-text errors."""
    services = get_services(request)
    chars = admit(request, texts)
    await charge_char_budget(request, chars)
    wanted = [i for i, text in enumerate(texts) if text.strip()]
    pipeline = services.translator
    try:
        results, timings = await cancel_on_disconnect(request, translate_documents(
            pipeline, [texts[i] for i in wanted], pipeline.options(), format=format, skip_tags=skip_tags,
            glossary=glossary))
        note_results(request, error_codes=[r.error.code for r in results if r.error], timing_ms=timings.to_dict())
        for result in results:
            if result.error is not None:
                raise ServiceError(result.error.code, result.error.message)
    except (ServiceError, ClientDisconnected) as exc:
        # Nothing comes back: a client that retries a busy or failing server (5xx: queue_full, timeout, ...;
        # DeepL's client retries by itself) or that left is not charged again (model_server/api/quota.py).
        if isinstance(exc, ClientDisconnected) or exc.status >= 500:
            await refund_char_quota(request, chars)
        raise
    out = [TextResult(index=i, translation="") for i in range(len(texts))]
    for i, result in zip(wanted, results):
        out[i] = result.model_copy(update={"index": i})
    return out


def detect_language(text: str) -> list[tuple[str, float]]:
    """("ar" | "en", confidence 0-100), most likely first. The service tells Arabic from not-Arabic only
    (share of Arabic-script letters); anything else is reported as English, the other language it knows."""
    ratio = arabic_ratio(normalize_text(text))
    scores = [("ar", round(ratio * 100, 1)), ("en", round((1 - ratio) * 100, 1))]
    return sorted(scores, key=lambda item: -item[1])


# --------------------------------------------------------------------------------------------------
# The edge: API keys of the dialects, and dialect-shaped refusals
# --------------------------------------------------------------------------------------------------
class CompatKeys:
    """Maps the dialects' API keys onto `X-API-Key` for `AuthGuard` (install it just outside AuthGuard,
    only when auth is on). Requests that already carry a service key header are left alone."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_drain_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_drain_bytes = max_drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dialect = dialect_of(scope["path"]) if scope["type"] == "http" else None
        if dialect is None or presented_key(scope) is not None:
            await self.app(scope, receive, send)
            return
        key = authorization_token(scope, "DeepL-Auth-Key") if dialect is DEEPL else None
        if key is None:   # DeepL's legacy `auth_key` field, LibreTranslate's `api_key`
            body, receive = await self._read_bounded(receive)
            try:
                key = await self._body_key(scope, body, dialect.body_key) if body is not None else None
            except ServiceError as exc:   # the body cannot be decoded: the route would say the same
                await refuse(scope, receive, send, exc, drain_bytes=self.max_drain_bytes)
                return
        if key is not None:
            scope = {**scope, "headers": [*scope.get("headers", ()), (b"x-api-key", key.encode("latin-1", "replace"))]}
        await self.app(scope, receive, send)

    async def _read_bounded(self, receive: Receive) -> tuple[bytes | None, Receive]:
        """The body (None when longer than max_body_bytes or the client left), and a `receive` that
        replays what was read."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= self.max_body_bytes:
            message = await receive()
            if message["type"] != "http.request":
                return None, replay([message], receive)
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        # Over the limit: no key, so AuthGuard refuses it (and drains the rest).
        return None if more else body, replay([{"type": "http.request", "body": body, "more_body": more}], receive)

    @staticmethod
    async def _body_key(scope: Scope, body: bytes, field: str) -> str | None:
        """The key `field` from the body or the query string, decoded as the routes decode it. A multipart
        body (a DeepL document upload) is not decoded here: its key must come in the header or the query."""
        content_type = (header(scope, b"content-type") or b"").decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        if content_type.strip().lower().startswith("multipart/"):
            body, content_type = b"", ""
        params = await scope["app"].state.services.cpu.run(decode_params, body, content_type, query,
                                                           lists=frozenset())
        key = params.get(field)
        return key if isinstance(key, str) and key.strip() else None


class CompatEdge:
    """Outermost middleware for the compat prefixes: dialect-shaped refusals out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        dialect = dialect_of(scope["path"]) if scope["type"] == "http" else None
        if dialect is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, _dialect_errors(send, dialect))


def _dialect_errors(send: Send, dialect: Dialect) -> Send:
    """Rewrite main-shape error responses (`{"error": {"code", "message"}}`) into `dialect`'s shape."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            content_type = header(message, b"content-type") or b""
            if message["status"] >= 400 and content_type.startswith(b"application/json"):
                start = message   # hold it until the body tells whether it is a main-shape error
                return
            await send(message)
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        status = start["status"]
        headers = [(k, v) for k, v in start.get("headers") or [] if k != b"content-length"]
        code = error_code_of(body)
        if code is not None:
            payload = json.loads(body)["error"]
            body = json.dumps(dialect.body(code, str(payload.get("message", "")))).encode()
            status = dialect.status(code)
        await send({**start, "status": status, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return wrapped


def install_compat(app: FastAPI) -> None:
    """Add CompatEdge as the outermost middleware (call after install_operations)."""
    app.add_middleware(CompatEdge)
