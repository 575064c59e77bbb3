"""GET /metrics: Prometheus text exposition of this app's registry."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from model_server.metrics import CONTENT_TYPE

router = APIRouter()


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"description": "Prometheus text format", "content": {"text/plain": {
                "schema": {"type": "string"}}}}})
async def metrics(request: Request) -> Response:
    """Request, queue, batch and error metrics (open unless `metrics_require_key`; see docs/operations.md)."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
