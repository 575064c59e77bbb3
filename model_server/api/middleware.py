"""ASGI middleware that guards the edge before any parsing: body size and text encoding."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyGuard:
    """Reads the request body (bounded by `max_body_bytes`), answers 413 when it is too large and 400
    when a JSON body is not valid UTF-8, then replays the body to the app.

    Buffering is fine here: bodies are capped, and the app would read the whole JSON body anyway.
    """

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS", "DELETE"}:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await _reject(send, 413, "body_too_large",
                          f"request body is {int(declared)} bytes; the limit is {self.max_body_bytes}")
            return
        body, complete = await _read_body(receive, self.max_body_bytes)
        if not complete:
            await _reject(send, 413, "body_too_large", f"request body exceeds the limit of {self.max_body_bytes} bytes")
            return
        if b"json" in headers.get(b"content-type", b"") and body:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                await _reject(send, 400, "invalid_encoding",
                              f"the request body is not valid UTF-8 (byte {exc.start}): send UTF-8 encoded JSON")
                return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as the server would

    return replay


async def _reject(send: Send, status: int, code: str, message: str) -> None:
    payload = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
