"""Per-request context shared by the edge middleware (request id, principal) and the routes (sizes,
timings), plus the JSON error sender those pure-ASGI middlewares use.

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
from starlette.types import Scope, Send

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


# ----- responses sent by pure-ASGI middleware, in the service's one error shape -----
async def send_error(send: Send, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                     close: bool = False) -> None:
    """Send `{"error": {"code", "message"}}`. `close=True` when the request body was left unread, so the
    connection is not reused with a body still in flight."""
    payload = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                      (b"content-length", str(len(payload)).encode())]
    raw += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


def has_body(scope: Scope) -> bool:
    return scope.get("method") not in {"GET", "HEAD", "OPTIONS", "DELETE"}


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header (name in lower case)."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return value
    return None


def error_code_of(body: bytes) -> str | None:
    """The `error.code` of an error response body, if it is one."""
    try:
        payload: Any = json.loads(body)
        code = payload["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, str) else None
