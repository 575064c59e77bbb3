"""Request plumbing shared by the routes: access to services/settings and disconnect-aware execution."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, TypeVar

from fastapi import Request

from model_server.api.context import note_texts
from model_server.api.schemas import ErrorResponse
from model_server.errors import ServiceError
from model_server.services import Services

log = logging.getLogger(__name__)
T = TypeVar("T")

# Documented error responses of the model endpoints (OpenAPI).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [(400, "empty, non-Arabic or malformed input"), (413, "too large"),
                                (422, "invalid fields"), (503, "queue full or shutting down (Retry-After)"),
                                (504, "timed out")]
}


class ClientDisconnected(Exception):
    """The client went away before its response was ready; nothing is sent."""


def admit(request: Request, texts: list[str], *, noun: str = "request") -> int:
    """Check `texts` against max_texts_per_request (413 `too_many_texts`) and note their count and size
    for the access log: the one admission of every endpoint that takes texts (the main routes through
    `admit_texts`, the compat routes through `compat.translate_texts`). Returns the total characters."""
    limit = get_services(request).settings.max_texts_per_request
    if len(texts) > limit:
        raise ServiceError("too_many_texts", f"{len(texts)} texts in one {noun}; the limit is {limit}")
    chars = sum(len(text) for text in texts)
    note_texts(request, texts=len(texts), chars=chars)
    return chars


def admit_texts(request: Request, text: str | None, texts: list[str] | None, *,
                noun: str = "request") -> tuple[list[str], int]:
    """The texts of a /translate-shaped body (`text` or `texts`), admitted (`admit`): the texts and their
    total characters."""
    admitted = [text] if text is not None else texts or []
    return admitted, admit(request, admitted, noun=noun)


def get_services(request: Request) -> Services:
    return request.app.state.services


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client disconnects first (its queued segments are then dropped)."""
    task = asyncio.ensure_future(work)
    disconnect = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            log.info("client disconnected; request cancelled")
            raise ClientDisconnected()
        return task.result()
    finally:
        disconnect.cancel()
        if not task.done():
            task.cancel()


async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
