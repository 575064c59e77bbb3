"""The outermost middleware: request ids, one access log line per request, and HTTP metrics.

- `X-Request-ID` is taken from the request when it is 1-128 printable ASCII characters, else a new
  uuid4 hex is made; it is returned on every response, errors included (also those of the inner
  middlewares and unhandled exceptions, which are answered here as 500 `internal_error`).
- The access line (logger `model_server.access`) holds the request id, method, route template, status,
  principal, client, body and response bytes, number of texts and characters when the route reported
  them, and timings - never the article text, unless `log_request_bodies` (debug) is on. Probe and
  scrape paths (/healthz, /readyz, /metrics) log at DEBUG unless they fail.
- Metrics are labelled by route template ("/translate"), never the raw path ("unmatched" for 404s).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Callable, Iterable

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model_server.api.context import (
    RequestContext,
    attach_context,
    error_code_of,
    header,
    request_id_var,
    send_error,
)
from model_server.errors import ServiceError
from model_server.metrics import Metrics

access_log = logging.getLogger("model_server.access")
log = logging.getLogger(__name__)

REQUEST_ID_HEADER = b"x-request-id"
MAX_REQUEST_ID_CHARS = 128
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_LOGGED_BODY_BYTES = 65_536
_MAX_ERROR_BODY_BYTES = 8_192
# Status recorded when the response never started (the client went away and the handler was cancelled).
NO_RESPONSE_STATUS = 499


def accept_request_id(raw: bytes | None) -> str:
    """The client's request id if acceptable (1-128 printable ASCII, no spaces at the ends), else a new one."""
    if raw is not None and 0 < len(raw) <= MAX_REQUEST_ID_CHARS and all(0x20 <= b <= 0x7E for b in raw):
        value = raw.decode("ascii")
        if value.strip() == value:
            return value
    return uuid.uuid4().hex


class RouteTemplates:
    """Path -> route template, for requests answered before routing (401, 429, 413 from the body guard).

    Built lazily from the app's path templates (its OpenAPI paths), so it needs nothing from the router's
    internals; routed requests use the template the router itself recorded in `scope["route"]`."""

    def __init__(self, templates: Callable[[], Iterable[str]]) -> None:
        self._source = templates
        self._compiled: list[tuple[re.Pattern[str], str]] | None = None

    def lookup(self, path: str) -> str | None:
        if self._compiled is None:
            self._compiled = [(compile_path(t)[0], t) for t in sorted(set(self._source()))]
        return next((template for regex, template in self._compiled if regex.match(path)), None)


def route_template(scope: Scope, templates: RouteTemplates) -> str:
    """The route's path template ("/translate"), never the raw path; "unmatched" when no route matches."""
    return getattr(scope.get("route"), "path", None) or templates.lookup(scope["path"]) or "unmatched"


class RequestObserver:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, templates: Callable[[], Iterable[str]],
                 log_request_bodies: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.templates = RouteTemplates(templates)
        self.log_request_bodies = log_request_bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        client = scope.get("client")
        context = RequestContext(request_id=accept_request_id(header(scope, REQUEST_ID_HEADER)),
                                 client=client[0] if client else None,
                                 body=bytearray() if self.log_request_bodies else None)
        attach_context(scope, context)
        token = request_id_var.set(context.request_id)
        id_header = (REQUEST_ID_HEADER, context.request_id.encode("ascii"))
        status: int | None = None
        response_bytes = 0
        error_body = bytearray()

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                context.body_bytes += len(chunk)
                if context.body is not None and len(context.body) < MAX_LOGGED_BODY_BYTES:
                    context.body += chunk[: MAX_LOGGED_BODY_BYTES - len(context.body)]
            return message

        async def tagging_send(message: Message) -> None:
            nonlocal status, response_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER]
                message = {**message, "headers": [*headers, id_header]}
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                response_bytes += len(chunk)
                if status is not None and status >= 400 and len(error_body) < _MAX_ERROR_BODY_BYTES:
                    error_body.extend(chunk)
            await send(message)

        self.metrics.http_in_flight.inc()
        try:
            await self.app(scope, counting_receive, tagging_send)
        except Exception:  # noqa: BLE001 - answered here so the 500 carries the request id too
            log.exception("unhandled error", extra={"fields": {"request_id": context.request_id}})
            if status is None:
                await send_error(tagging_send, ServiceError("internal_error",
                                                            "an internal error occurred; it has been logged"))
        finally:
            self.metrics.http_in_flight.dec()
            seconds = time.perf_counter() - started
            final_status = status if status is not None else NO_RESPONSE_STATUS
            route = route_template(scope, self.templates)
            error_code = error_code_of(bytes(error_body)) if final_status >= 400 else None
            if error_code is None and final_status == NO_RESPONSE_STATUS:
                error_code = "client_closed"
            if final_status >= 400:  # a single text's error is the response: counted once, by its code
                context.text_error_codes.clear()
            self.metrics.observe_request(method=scope["method"], route=route, status=final_status, seconds=seconds,
                                         error_code=error_code, text_error_codes=context.text_error_codes)
            self._log(scope, context, route, final_status, error_code, seconds, response_bytes)
            request_id_var.reset(token)

    def _log(self, scope: Scope, context: RequestContext, route: str, status: int, error_code: str | None,
             seconds: float, response_bytes: int) -> None:
        level = logging.INFO
        if status >= 500:
            level = logging.WARNING
        elif scope["path"] in QUIET_PATHS and status < 400:
            level = logging.DEBUG
        if not access_log.isEnabledFor(level):
            return
        fields: dict[str, object] = {
            "request_id": context.request_id, "method": scope["method"], "route": route,
            "path": scope["path"][:200], "status": status, "duration_ms": round(seconds * 1000, 2),
            "principal": context.principal, "client": context.client,
            "body_bytes": context.body_bytes, "response_bytes": response_bytes,
        }
        if error_code:
            fields["error_code"] = error_code
        if context.texts is not None:
            fields["texts"], fields["chars"] = context.texts, context.chars
        if context.text_error_codes:
            fields["text_errors"] = context.text_error_codes
        if context.timing_ms:
            fields["timing_ms"] = context.timing_ms
        if context.body is not None:
            fields["body"] = context.body.decode("utf-8", "replace")
        access_log.log(level, "%s %s %d %.1fms", scope["method"], route, status, seconds * 1000,
                       extra={"fields": fields})
