"""Liveness, readiness and what is loaded where."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request

from model_server.api.deps import get_services
from model_server.api.errors import error_response
from model_server.api.schemas import (TEST_MODEL_WARNING, ErrorResponse, HealthResponse, ModelsResponse,
                                      ReadinessResponse)
from model_server.backends.hardware import cpu_features

router = APIRouter()


@router.get("/healthz", response_model=HealthResponse, tags=["health"])
async def healthz() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadinessResponse, response_model_exclude_none=True,
            responses={503: {"model": ErrorResponse}}, tags=["health"])
async def readyz(request: Request):
    """Readiness: models loaded and the batcher accepting work. With a state Redis, `state` says whether
    it answers a PING; an unreachable one leaves the replica ready (200, status "degraded"): every
    replica shares that Redis, so taking them all out of the load balancer would turn clear 503
    state_unavailable answers, and the requests that need no shared state, into refused connections."""
    services = get_services(request)
    if not services.ready:
        return error_response(503, "not_ready", "the service is starting or shutting down")
    state = await asyncio.to_thread(services.state.health) if services.state is not None else None
    degraded = state is not None and not state["reachable"]
    return ReadinessResponse(status="degraded" if degraded else "ready", state=state)


@router.get("/v1/models", response_model=ModelsResponse, tags=["models"])
async def models(request: Request) -> ModelsResponse:
    """What is loaded, on which device and dtype (and why: extra.precision, hardware), with each model's
    batching settings and counters."""
    runners = get_services(request).runners()
    infos = [runner.backend.info for runner in runners]
    return ModelsResponse(
        models=infos,
        batching={runner.name: runner.describe_batching() for runner in runners},
        hardware=cpu_features().describe(),
        warning=TEST_MODEL_WARNING if any(info.test_model for info in infos) else None)
