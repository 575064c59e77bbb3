"""The FastAPI app: lifespan, middleware, error handlers and routers. Routes never touch models."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from model_server import __version__
from model_server.api.errors import install_error_handlers
from model_server.api.middleware import BodyGuard
from model_server.api.routes import health, translate
from model_server.services import Services
from model_server.settings import Settings

log = logging.getLogger(__name__)

ROUTERS = (health.router, translate.router)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. Tests inject `services` (e.g. around a gated backend); otherwise models load at start-up."""
    settings = settings or (services.settings if services else Settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = services or await asyncio.to_thread(Services.load, settings)
        loaded.start()
        app.state.services = loaded
        log.info("ready: %s", [runner.backend.info.model_dump() for runner in loaded.runners()])
        try:
            yield
        finally:
            # uvicorn has stopped accepting and waited for in-flight requests; drain what is queued.
            await loaded.close(drain_timeout_s=settings.request_timeout_s)

    app = FastAPI(title="model-server", version=__version__, lifespan=lifespan,
                  description="Arabic-to-English translation and summarization for newsrooms.")
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
