"""The FastAPI app: lifespan, middleware, error handlers and routers. Routes never touch models."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from model_server import __version__
from model_server.api.compat import install_compat
from model_server.api.errors import install_error_handlers
from model_server.api.operations import install_operations
from model_server.api.routes import (articles, deepl, glossaries, health, jobs, libretranslate, metrics, summarize,
                                     translate)
from model_server.api.routes import deepl_documents  # DeepL /v2/document: document jobs
from model_server.jobs import start_jobs
from model_server.services import Services
from model_server.settings import Settings
from model_server.state import open_state

log = logging.getLogger(__name__)

ROUTERS = (health.router, translate.router, summarize.router, articles.router, metrics.router,
           deepl.router, libretranslate.router,  # drop-in DeepL (/v2) and LibreTranslate (/libretranslate) APIs
           glossaries.router, jobs.router, deepl_documents.router)
# Left out of /openapi.json when summarization is disabled (they then answer 503 summarization_disabled).
SUMMARY_ROUTERS = (summarize.router, articles.router)


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. Tests inject `services` (e.g. around a gated backend); otherwise models load at start-up."""
    settings = settings or (services.settings if services else Settings())
    # One shared state (model_server/state/) for the rate limits here and the services loaded below.
    state = services.state if services else open_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loaded = services or await asyncio.to_thread(Services.load, settings, state=state)
        loaded.instrument(app.state.metrics)
        loaded.start()
        app.state.services = loaded
        app.state.jobs = await start_jobs(loaded, app.state.metrics)  # persisted jobs resume (model_server/jobs.py)
        log.info("ready: %s", [runner.backend.info.model_dump() for runner in loaded.runners()])
        try:
            yield
        finally:
            # uvicorn has stopped accepting and waited for in-flight requests; drain what is queued.
            if app.state.jobs is not None:
                await app.state.jobs.close()  # running jobs stay 'running' in the store: resumed next start
            await loaded.close(drain_timeout_s=settings.request_timeout_s)

    app = FastAPI(title="model-server", version=__version__, lifespan=lifespan,
                  description="Arabic-to-English translation and summarization for newsrooms.")
    install_operations(app, settings, state)  # body limits, API keys, rate limits, request ids, access logs, metrics
    install_compat(app)  # outermost: DeepL/LibreTranslate keys in, dialect-shaped refusals out
    install_error_handlers(app)
    summaries = services.summarizer is not None if services else settings.summarization_enabled
    for router in ROUTERS:
        app.include_router(router, include_in_schema=summaries or router not in SUMMARY_ROUTERS)
    return app
