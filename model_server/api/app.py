"""HTTP layer: routes, lifespan and request plumbing. Routes call the pipeline; they never touch models."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, Awaitable, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from model_server import __version__
from model_server.api.errors import error_response, install_error_handlers
from model_server.api.middleware import BodyGuard
from model_server.api.schemas import (TEST_MODEL_WARNING, ErrorResponse, HealthResponse, ModelsResponse,
                                      TranslateRequest, TranslateResponse)
from model_server.errors import ServiceError, status_for
from model_server.services import Services
from model_server.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in [(400, "empty, non-Arabic or malformed input"), (413, "too large"),
                                (422, "invalid fields"), (503, "queue full or shutting down (Retry-After)"),
                                (504, "timed out")]
}


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. Tests inject `services` (e.g. around a fake backend); otherwise models load at start-up."""
    settings = settings or (services.settings if services else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = services or await asyncio.to_thread(Services.load, settings)
        loaded.start()
        app.state.services = loaded
        log.info("ready: %s", loaded.translation.backend.info.model_dump())
        try:
            yield
        finally:
            # uvicorn has stopped accepting and waited for in-flight requests; drain what is queued.
            await loaded.close(drain_timeout_s=settings.request_timeout_s)

    app = FastAPI(title="model-server", version=__version__, lifespan=lifespan,
                  description="Arabic-to-English translation and summarization for newsrooms.")
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    _add_routes(app, settings)
    return app


def _services(request: Request) -> Services:
    return request.app.state.services


def _add_routes(app: FastAPI, settings: Settings) -> None:
    @app.get("/healthz", response_model=HealthResponse, tags=["health"])
    async def healthz() -> HealthResponse:
        """Liveness: the process answers."""
        return HealthResponse(status="ok")

    @app.get("/readyz", response_model=HealthResponse, responses={503: {"model": ErrorResponse}}, tags=["health"])
    async def readyz(request: Request):
        """Readiness: models loaded and the batcher accepting work."""
        if not _services(request).ready:
            return error_response(503, "not_ready", "the service is starting or shutting down")
        return HealthResponse(status="ready")

    @app.get("/v1/models", response_model=ModelsResponse, tags=["models"])
    async def models(request: Request) -> ModelsResponse:
        """What is loaded, on which device and dtype, and the batching settings and counters."""
        services = _services(request)
        info = services.translation.backend.info
        batcher = services.translation.batcher
        return ModelsResponse(
            models=[info],
            batching={info.task: {"max_batch_size": batcher.max_batch_size,
                                  "max_batch_tokens": batcher.max_batch_tokens,
                                  "max_wait_ms": batcher.max_wait_s * 1000, "max_queue": batcher.max_queue_items,
                                  "pending": batcher.pending(), **batcher.stats.to_dict()}},
            warning=TEST_MODEL_WARNING if info.test_model else None)

    @app.post("/translate", response_model=TranslateResponse, responses=ERROR_RESPONSES, tags=["translation"])
    async def translate(body: TranslateRequest, request: Request):
        """Translate one Arabic text (`text`) or several (`texts`), sentence by sentence.

        With `texts`, a bad text gets an `error` entry in its own result and never fails the others."""
        services = _services(request)
        texts = [body.text] if body.text is not None else body.texts or []
        if len(texts) > settings.max_texts_per_request:
            raise ServiceError("too_many_texts",
                               f"{len(texts)} texts in one request; the limit is {settings.max_texts_per_request}")
        pipeline = services.translator
        options = pipeline.options(num_beams=body.num_beams, max_new_tokens=body.max_new_tokens)
        results, timings = await cancel_on_disconnect(
            request, pipeline.translate(texts, options, lane=body.priority))
        if body.text is not None and results[0].error is not None:
            # A single text has nobody to share the response with: its error is the response.
            error = results[0].error
            return error_response(status_for(error.code), error.code, error.message)
        info = pipeline.backend.info
        return TranslateResponse(results=results, model=info, timing_ms=timings.to_dict(),
                                 warning=TEST_MODEL_WARNING if info.test_model else None)


async def cancel_on_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run `work`, cancelling it if the client disconnects first (its queued segments are then dropped)."""
    task = asyncio.ensure_future(work)
    disconnect = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        if task not in done:
            task.cancel()
            log.info("client disconnected; request cancelled")
            try:
                await task
            except BaseException:  # noqa: BLE001 - the client is gone; nothing to report to
                pass
            return JSONResponse({"error": {"code": "client_closed", "message": "client disconnected"}},
                                status_code=499)  # type: ignore[return-value]
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
