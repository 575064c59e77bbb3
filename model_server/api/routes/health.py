"""Liveness, readiness and what is loaded where."""

from __future__ import annotations

from fastapi import APIRouter, Request

from model_server.api.deps import get_services
from model_server.api.errors import error_response
from model_server.api.schemas import TEST_MODEL_WARNING, ErrorResponse, HealthResponse, ModelsResponse
from model_server.backends.hardware import cpu_features

router = APIRouter()


@router.get("/healthz", response_model=HealthResponse, tags=["health"])
async def healthz() -> HealthResponse:
    """Liveness: the process answers."""
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=HealthResponse, responses={503: {"model": ErrorResponse}}, tags=["health"])
async def readyz(request: Request):
    """Readiness: models loaded and the batcher accepting work."""
    if not get_services(request).ready:
        return error_response(503, "not_ready", "the service is starting or shutting down")
    return HealthResponse(status="ready")


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
