"""Operations layer around the app: API keys, rate and in-flight limits, body limits, request ids, access
logs, metrics, and the OpenAPI description of what they add (security schemes, 401/403/429 responses,
X-Request-ID).

Middleware order, outermost first: (CompatEdge, `model_server.api.compat`) -> RequestObserver (ids,
logs, metrics) -> CompatKeys (DeepL/LibreTranslate keys, when auth is on) -> AuthGuard -> RateLimitGuard
(rate and in-flight limits) -> BodyGuard (body size, encoding) -> routes. So every response (a 401
included) carries X-Request-ID and is counted, and an unauthenticated or rate-limited client is refused
before its body is read (it is only drained, up to max_drain_bytes, so the client reads the refusal).
"""

from __future__ import annotations

from typing import Any, Callable

from fastapi import FastAPI

from model_server.api.auth import OPEN_PATHS, AuthGuard, is_protected, load_api_keys
from model_server.api.compat import CompatKeys
from model_server.api.middleware import BodyGuard
from model_server.api.observe import RequestObserver
from model_server.api.quota import QUOTA_PATHS, CharQuota
from model_server.api.ratelimit import InFlight, RateLimiter, RateLimitGuard, is_limited_path
from model_server.api.schemas import ErrorResponse
from model_server.metrics import Metrics
from model_server.settings import Settings
from model_server.state import State

_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
_ERROR_CONTENT = {"application/json": {"schema": _ERROR_SCHEMA}}
_RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
_REQUEST_ID = {"description": "the request's id (the client's X-Request-ID if valid, else generated)",
               "schema": {"type": "string"}}


def install_operations(app: FastAPI, settings: Settings, state: State) -> None:
    """Add the edge middleware and set app.state.metrics/rate_limiter/inflight; the rate buckets live where
    `state` keeps them. A bad key file fails here (ValueError naming its line), at start-up."""
    keys = load_api_keys(settings)
    metrics = Metrics()
    limiter = RateLimiter(requests_per_minute=settings.rate_limit_requests_per_minute,
                          chars_per_minute=settings.rate_limit_chars_per_minute, buckets=state.token_buckets)
    inflight = InFlight(settings.max_inflight_per_key) if settings.max_inflight_per_key else None
    app.state.metrics = metrics
    app.state.rate_limiter = limiter
    app.state.inflight = inflight
    app.state.char_quota = CharQuota(state, limit=settings.char_quota_per_period, period=settings.char_quota_period)
    drain = settings.max_drain_bytes
    # add_middleware puts each new one outside the previous ones.
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes, max_drain_bytes=drain,
                       max_document_bytes=settings.document_max_bytes)  # uploads: model_server/api/uploads.py
    app.add_middleware(RateLimitGuard, limiter=limiter, inflight=inflight, max_drain_bytes=drain)
    app.add_middleware(AuthGuard, keys=keys, metrics_require_key=settings.metrics_require_key, max_drain_bytes=drain)
    if keys:  # DeepL-Auth-Key and LibreTranslate's api_key, as X-API-Key for AuthGuard
        app.add_middleware(CompatKeys, max_body_bytes=settings.max_body_bytes, max_drain_bytes=drain)
    app.add_middleware(RequestObserver, metrics=metrics, templates=lambda: [*app.openapi()["paths"], *OPEN_PATHS],
                       log_request_bodies=settings.log_request_bodies)
    app.openapi = _documented(app.openapi, app, auth=bool(keys),  # type: ignore
                              rate_limited=limiter.enabled or inflight is not None,
                              metrics_require_key=settings.metrics_require_key,
                              quota=bool(settings.char_quota_per_period))


def _documented(generate: Callable[[], dict[str, Any]], app: FastAPI, *, auth: bool, rate_limited: bool,
                metrics_require_key: bool, quota: bool = False) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = generate()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        if "ErrorResponse" not in schemas:  # referenced below; normally already there via the model routes
            schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(schema.pop("$defs", {}))
            schemas["ErrorResponse"] = schema
        if auth:
            spec["components"]["securitySchemes"] = {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            }
        for path, item in spec.get("paths", {}).items():
            for operation in item.values():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                responses = operation["responses"]
                if auth and is_protected(path, metrics_require_key=metrics_require_key):
                    operation["security"] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
                    responses.setdefault("401", {"description": "no API key sent", "content": _ERROR_CONTENT})
                    responses.setdefault("403", {"description": "invalid API key", "content": _ERROR_CONTENT})
                if rate_limited and is_limited_path(path):
                    responses.setdefault("429", {"description": "rate limited, or too many requests in flight "
                                                                "(Retry-After)",
                                                 "content": _ERROR_CONTENT, "headers": {"Retry-After": _RETRY_AFTER}})
                if quota and operation is item.get("post") and path in QUOTA_PATHS:
                    responses.setdefault("403", {"description": "the character quota of this period is spent "
                                                                "(quota_exceeded)", "content": _ERROR_CONTENT})
                for response in responses.values():
                    response.setdefault("headers", {})["X-Request-ID"] = _REQUEST_ID
        app.openapi_schema = spec
        return spec

    return openapi
