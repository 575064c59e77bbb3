"""ASGI middleware that guards the edge before any parsing: body size and text encoding."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from model_server.api.context import declared_length, drain, header, refuse, replay, send_error
from model_server.api.uploads import FORM_FIELDS_MAX_BYTES, UPLOAD_PATHS, is_multipart
from model_server.errors import ServiceError


# A \uXXXX escape of a UTF-16 surrogate without its partner (high then low): JSON's grammar allows it, but
# the string it makes is not Unicode text (it cannot be encoded, and tokenizers fail on it). Searched
# after escaped backslashes are removed, so every backslash left starts an escape. Linear, and fast: a
# literal prefix, then fixed-width look-arounds (a high not followed by a low; a low not preceded by a high).
_HIGH, _LOW = rb"\\u[dD][89abAB][0-9a-fA-F]{2}", rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_LONE_SURROGATE = re.compile(rb"\\u[dD](?:[89abAB][0-9a-fA-F]{2}(?!" + _LOW + rb")"
                             rb"|[c-fC-F][0-9a-fA-F]{2}(?<!" + _HIGH + _LOW + rb"))")


def _json_text_problem(body: bytes) -> str | None:
    """Why a JSON body cannot hold Unicode text (not UTF-8, or a lone surrogate escape), else None."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"the request body is not valid UTF-8 (byte {exc.start}): send UTF-8 encoded JSON"
    lone = _LONE_SURROGATE.search(body.replace(b"\\\\", b""))  # JSON pairs backslashes left to right
    if lone is not None:
        return (f"the JSON body escapes a lone UTF-16 surrogate ({lone.group().decode('ascii')}): texts must be "
                "valid Unicode (a surrogate escape needs its pair)")
    return None


# Bodies up to this size are checked on the event loop (microseconds); longer ones on the CPU pool
# (a 2 MB body of escapes takes ~30 ms), where no other request waits for them.
_CHECK_INLINE_BYTES = 65_536


async def _text_problem(scope: Scope, body: bytes) -> str | None:
    if len(body) <= _CHECK_INLINE_BYTES:
        return _json_text_problem(body)
    return await scope["app"].state.services.cpu.run(_json_text_problem, body)


class BodyGuard:
    """Reads the request body of every method (bounded by `max_body_bytes`), answers 413 `body_too_large`
    when it is longer - declared or streamed - and 400 `invalid_encoding` when a JSON body is not valid
    UTF-8 or escapes a lone surrogate, then replays the body to the app.

    An oversized body is read and discarded up to `max_drain_bytes` before the 413 goes out (see
    `model_server.api.context.drain`), so every client reads the answer instead of a connection reset.
    Buffering is fine here: bodies are capped, and the app would read the whole JSON body anyway.

    Document uploads (a multipart POST to /v1/jobs or DeepL's /v2/document, `UPLOAD_PATHS`) may be up to
    `max_document_bytes` plus the form fields' allowance instead; longer is 413 `document_too_large`.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_drain_bytes: int,
                 max_document_bytes: int | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_drain_bytes = max_drain_bytes
        self.max_upload_bytes = (max_document_bytes or 0) + FORM_FIELDS_MAX_BYTES

    def _limit(self, scope: Scope) -> tuple[int, str, str]:
        """(the most bytes this request's body may hold, the code past it, what the limit is)."""
        if (scope["path"] in UPLOAD_PATHS and scope["method"] == "POST"
                and is_multipart((header(scope, b"content-type") or b"").decode("latin-1"))):
            return self.max_upload_bytes, "document_too_large", "document_max_bytes plus the form fields' allowance"
        return self.max_body_bytes, "body_too_large", "max_body_bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, code, name = self._limit(scope)
        declared = declared_length(scope)
        if declared is not None and declared > limit:
            await refuse(scope, receive, send, ServiceError(
                code, f"request body is {declared} bytes; the limit is {limit} ({name})"),
                drain_bytes=self.max_drain_bytes)
            return
        body, read_bytes, more = await _read_body(receive, limit)
        if body is None:
            if more:
                await drain(receive, self.max_drain_bytes - read_bytes)
            await send_error(send, ServiceError(
                code, f"request body exceeds the limit of {limit} bytes ({name})"), close=True)
            return
        problem = await _text_problem(scope, body) if b"json" in (header(scope, b"content-type") or b"") else None
        if problem is not None:
            await send_error(send, ServiceError("invalid_encoding", problem))
            return
        await self.app(scope, replay([{"type": "http.request", "body": body, "more_body": False}], receive), send)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes | None, int, bool]:
    """(body, bytes read, more to come): the whole body if it fits in `limit`, else None once past it
    (and whether the client has more of it to send - then it is still to be drained)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), size, False
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            return None, size, more
        chunks.append(chunk)
        if not more:
            return b"".join(chunks), size, False
