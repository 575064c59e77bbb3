"""Server-sent events (text/event-stream) for the streamed endpoints: framing, keep-alive and disconnects.

`event_stream(request, produce, ...)` runs `produce(send)` as a task: `send(event, payload)` queues one
event, and what `produce` returns is the final `result` event. The response starts only once the first
event is ready, so an error before it (bad input, 429, queue_full, a single text's error...) is still the
ordinary JSON error response with its status; an error after it is an `error` event whose data is
{"code", "message"}, and the stream ends. A disconnected client cancels the task (Starlette's
StreamingResponse notices the disconnect and stops the body; the task is cancelled with it), which drops
its queued segments from the batcher. Payloads are serialized on the CPU pool, never on the event loop.

Framing: `id: <n>` (1, 2, ... per stream), `event: <name>`, `data: <one line of JSON>`, a blank line;
`: keep-alive` comment lines when no event came for `stream_keepalive_s`. Headers: Cache-Control: no-cache
and X-Accel-Buffering: no (nginx must not buffer the stream).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi import Request
import pydantic_core
from starlette.responses import StreamingResponse

from model_server.api.deps import cancel_on_disconnect
from model_server.cpu import CpuPool
from model_server.errors import ServiceError

log = logging.getLogger(__name__)

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
KEEPALIVE = b": keep-alive\n\n"

# send(*events): each event a (name, payload) pair, the payload a pydantic model or JSON-able data (dicts and
# lists may hold models); one call serializes them all in one CPU-pool call.
Send = Callable[..., Awaitable[None]]
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def wants_event_stream(request: Request) -> bool:
    """The client accepts text/event-stream (among the media ranges of its Accept header)."""
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == MEDIA_TYPE for part in accept.split(","))


def frame(event: str, data: str, event_id: int) -> bytes:
    """One event. `data` is JSON (one line); any line break would still be framed as more data lines."""
    lines = [f"id: {event_id}", f"event: {event}", *(f"data: {line}" for line in data.split("\n"))]
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def to_json(payload: Any) -> str:
    """One line of JSON; pydantic models (also inside dicts and lists) as their JSON dump."""
    return pydantic_core.to_json(payload).decode("utf-8")


def _all_json(payloads: list[Any]) -> list[str]:
    return [to_json(payload) for payload in payloads]


async def event_stream(request: Request, produce: Callable[[Send], Awaitable[Any]], *, cpu: CpuPool,
                       keepalive_s: float) -> StreamingResponse:
    """The streamed response of `produce` (see the module doc); raises what `produce` raises before its
    first event (the app's error handlers answer it as JSON), or ClientDisconnected."""
    queue: asyncio.Queue = asyncio.Queue()

    async def send(*events: tuple[str, Any]) -> None:
        if not events:
            return
        for event, data in zip([name for name, _ in events], await cpu.run(_all_json, [p for _, p in events])):
            queue.put_nowait((event, data))

    async def run() -> None:
        try:
            final = await produce(send)
            queue.put_nowait(("result", await cpu.run(to_json, final)))
        except Exception as exc:  # noqa: BLE001 - answered as the response or an `error` event
            queue.put_nowait(_Failed(exc))
        queue.put_nowait(_END)

    task = asyncio.ensure_future(run())
    try:
        first = await cancel_on_disconnect(request, queue.get())
    except BaseException:
        task.cancel()
        raise
    if isinstance(first, _Failed):  # nothing sent yet: the ordinary JSON error response
        raise first.error
    return StreamingResponse(_frames(first, queue, task, keepalive_s), media_type=MEDIA_TYPE, headers=HEADERS)


async def _frames(first: Any, queue: asyncio.Queue, task: asyncio.Task, keepalive_s: float) -> AsyncIterator[bytes]:
    event_id = 0
    item = first
    try:
        while item is not _END:
            event_id += 1
            if isinstance(item, _Failed):
                yield frame("error", to_json(_error_body(item.error)), event_id)
                return
            event, data = item
            yield frame(event, data, event_id)
            item = None
            while item is None:
                try:
                    item = await asyncio.wait_for(queue.get(), keepalive_s)
                except asyncio.TimeoutError:
                    yield KEEPALIVE
    finally:
        task.cancel()  # a disconnect (or an early end): the rest of the work stops, its queued segments dropped


def _error_body(error: BaseException) -> dict[str, str]:
    if isinstance(error, ServiceError):
        return {"code": error.code, "message": error.message}
    log.error("streamed request failed", exc_info=error)
    return {"code": "internal_error", "message": "an internal error occurred; it has been logged"}
