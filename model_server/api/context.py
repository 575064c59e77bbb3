"""Per-request context shared by the edge middleware (request id, principal) and the routes (sizes,
timings), and the one home of what those pure-ASGI middlewares share: header lookup, body replay and
draining, and the JSON error sender.

One mutable `RequestContext` lives in `scope["state"]` (what `request.state` reads), created by the
outermost middleware (`model_server.api.observe.RequestObserver`). Inner layers fill it in; the observer
writes the access log line and the HTTP metrics from it once the response is sent.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Iterable

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from model_server.errors import ServiceError

# The current request's id, for every log line written while serving it (see model_server.logs).
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_STATE_KEY = "model_server_ctx"


@dataclass
class RequestContext:
    request_id: str
    client: str | None = None          # peer address (uvicorn applies X-Forwarded-For from trusted proxies)
    principal: str | None = None       # API key *name* when auth is on; never the key
    body_bytes: int = 0
    texts: int | None = None
    chars: int | None = None
    timing_ms: dict[str, float] | None = None
    text_error_codes: list[str] = field(default_factory=list)  # per-text errors inside a 200 response
    body: bytearray | None = None      # request body, only when log_request_bodies is on (debug)

    @property
    def rate_key(self) -> str:
        """Whose budget a request spends: the key name, else the client address."""
        return f"key:{self.principal}" if self.principal else f"ip:{self.client or 'unknown'}"


def attach_context(scope: Scope, context: RequestContext) -> None:
    scope.setdefault("state", {})[_STATE_KEY] = context


def context_of(scope_or_request: Scope | Request) -> RequestContext | None:
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    return (scope.get("state") or {}).get(_STATE_KEY)


# ----- hooks for routes (generic: any endpoint that handles texts can call them) -----
def note_texts(request: Request, *, texts: int, chars: int) -> None:
    """Record how many texts/characters a request holds (access log; never the text itself)."""
    context = context_of(request)
    if context is not None:
        context.texts, context.chars = texts, chars


def note_results(request: Request, *, error_codes: Iterable[str], timing_ms: dict[str, float] | None) -> None:
    """Record per-text error codes (metrics) and stage timings (access log) of a finished request."""
    context = context_of(request)
    if context is not None:
        context.text_error_codes.extend(error_codes)
        context.timing_ms = timing_ms


# ----- the one home of the edge's ASGI plumbing: headers, bodies, refusals -----
def header(message: Scope | Message, name: bytes) -> bytes | None:
    """The first value of header `name` (lower case) of a request scope or a response-start message."""
    for key, value in message.get("headers") or ():
        if key == name:
            return value
    return None


def declared_length(scope: Scope) -> int | None:
    """The request's Content-Length, when it declares a valid one (the server itself refuses bad ones)."""
    raw = header(scope, b"content-length")
    return int(raw) if raw is not None and raw.isdigit() else None


def has_body(scope: Scope) -> bool:
    """Whether the request carries a body (of any method): a non-zero Content-Length, or chunked."""
    return header(scope, b"transfer-encoding") is not None or (declared_length(scope) or 0) > 0


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that first returns `messages` (what a middleware already read), then the real ones."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def drain(receive: Receive, limit_bytes: int) -> bool:
    """Read and discard the rest of the request body, at most `limit_bytes` of it. True if it ended.

    A server that answers and closes with a body still unread makes the kernel reset the connection,
    and clients that write the whole body before reading (urllib, requests) report that reset instead
    of the answer. Reading the body first lets every client read the refusal."""
    read = 0
    while read <= limit_bytes:
        message = await receive()
        if message["type"] != "http.request":
            return True   # the client went away: nothing left to read
        read += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


async def send_error(send: Send, error: ServiceError, *, close: bool = False) -> None:
    """Send `error` as `{"error": {"code", "message"}}` with its status and headers (Retry-After). `close=True`
    when the request body was not (all) read, so the connection is not reused with a body still in flight."""
    payload = json.dumps({"error": error.to_dict()}).encode()
    raw: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                      (b"content-length", str(len(payload)).encode())]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in error.headers.items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def refuse(scope: Scope, receive: Receive, send: Send, error: ServiceError, *, drain_bytes: int) -> None:
    """Answer `error` to a request whose body has not been read (or not all of it): what is left of the
    body is drained first (up to `drain_bytes`, see `drain`), then the connection is closed. A body
    declared longer than `drain_bytes` is not read at all: the client could not read the answer anyway."""
    body = has_body(scope)
    if body and (declared_length(scope) or 0) <= drain_bytes:
        await drain(receive, drain_bytes)
    await send_error(send, error, close=body)


def error_code_of(body: bytes) -> str | None:
    """The `error.code` of an error response body, if it is one."""
    try:
        payload: Any = json.loads(body)
        code = payload["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None
