"""Rate and concurrency limits per principal (API key name, or client address when auth is off), in memory.

Two token buckets per principal, each holding one minute's worth and refilling continuously:
requests (`rate_limit_requests_per_minute`, charged by `RateLimitGuard` before the body is read) and
text characters (`rate_limit_chars_per_minute`, charged by `enforce_char_budget`, which a route calls
once it knows its texts and before any model work). Over the limit: 429 `rate_limited` with
Retry-After. A single request with more characters than a whole minute's budget can never pass: 413
`exceeds_rate_limit` (split it). 0 turns a limit off.

Concurrency: at most `max_inflight_per_key` requests of one principal in flight at once (`InFlight`,
counted by `RateLimitGuard` from admission until the response is sent); one more gets 429
`too_many_inflight` with Retry-After, before the body is read and without spending the request budget.
It keeps one client from holding every queue slot and worker with parallel requests.

One process, one event loop: no locks. Limits are per server process, not shared between replicas.
Health, readiness, docs and /metrics are never limited.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from model_server.api.auth import METRICS_PATH, OPEN_PATHS
from model_server.api.context import context_of, refuse
from model_server.errors import ServiceError

Clock = Callable[[], float]


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Per-key token buckets of `per_minute` capacity refilling at `per_minute / 60` per second (pure state)."""

    def __init__(self, per_minute: int, *, clock: Clock = time.monotonic, max_keys: int = 100_000) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute}")
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._last_prune = clock()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, amount: float = 1.0) -> float:
        """Spend `amount` for `key` and return 0, or spend nothing and return the seconds until it could."""
        now = self._clock()
        self._maybe_prune(now)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        else:
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.updated) * self.rate_per_s)
            bucket.updated = now
        if bucket.tokens >= amount:
            bucket.tokens -= amount
            return 0.0
        return (amount - bucket.tokens) / self.rate_per_s

    def _maybe_prune(self, now: float) -> None:
        """Forget buckets that have refilled (idle a minute or more): memory stays bounded by active keys."""
        if now - self._last_prune < 60.0 and len(self._buckets) < self.max_keys:
            return
        self._last_prune = now
        full_after_s = self.capacity / self.rate_per_s
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < full_after_s}


class RateLimiter:
    """The service's request and character budgets. `enabled` is False when both limits are 0."""

    def __init__(self, *, requests_per_minute: int = 0, chars_per_minute: int = 0, clock: Clock = time.monotonic):
        self.requests = TokenBuckets(requests_per_minute, clock=clock) if requests_per_minute else None
        self.chars = TokenBuckets(chars_per_minute, clock=clock) if chars_per_minute else None

    @property
    def enabled(self) -> bool:
        return self.requests is not None or self.chars is not None

    def check_request(self, key: str) -> None:
        if self.requests is not None:
            wait_s = self.requests.take(key)
            if wait_s:
                raise _limited(f"more than {self.requests.capacity:g} requests per minute", wait_s)

    def charge_chars(self, key: str, chars: int) -> None:
        if self.chars is None or chars <= 0:
            return
        if chars > self.chars.capacity:
            raise ServiceError("exceeds_rate_limit", f"this request holds {chars} characters, more than the "
                               f"{self.chars.capacity:g} per minute allowed: split it into smaller requests")
        wait_s = self.chars.take(key, chars)
        if wait_s:
            raise _limited(f"more than {self.chars.capacity:g} characters per minute", wait_s)


def _limited(what: str, wait_s: float) -> ServiceError:
    retry_after = max(1, math.ceil(wait_s))
    return ServiceError("rate_limited", f"rate limit: {what}; retry in {retry_after}s",
                        headers={"Retry-After": str(retry_after)})


class InFlight:
    """Requests in flight per key, at most `limit` each (pure state; keys at zero are forgotten)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self.limit = limit
        self._counts: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)

    def acquire(self, key: str) -> None:
        """Take one slot for `key`, or raise 429 `too_many_inflight` (taking nothing)."""
        if self._counts.get(key, 0) >= self.limit:
            raise ServiceError("too_many_inflight", f"more than {self.limit} requests in flight at once for this "
                               "client; wait for one to finish", headers={"Retry-After": "1"})
        self._counts[key] = self._counts.get(key, 0) + 1

    def release(self, key: str) -> None:
        left = self._counts.get(key, 0) - 1
        if left > 0:
            self._counts[key] = left
        else:
            self._counts.pop(key, None)


def is_limited_path(path: str) -> bool:
    return path not in OPEN_PATHS and path != METRICS_PATH


class RateLimitGuard:
    """Admits a request for its principal before the body is read (runs inside `AuthGuard`): one in-flight
    slot (`inflight`, held until the response is sent), then one request from the per-minute budget."""

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter, inflight: InFlight | None = None,
                 max_drain_bytes: int = 0) -> None:
        self.app = app
        self.limiter = limiter
        self.inflight = inflight
        self.max_drain_bytes = max_drain_bytes  # a refused body is drained so the client reads the answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or (self.limiter.requests is None and self.inflight is None)
                or not is_limited_path(scope["path"])):
            await self.app(scope, receive, send)
            return
        key = rate_key(scope)
        try:
            self._admit(key)
        except ServiceError as exc:
            await refuse(scope, receive, send, exc, drain_bytes=self.max_drain_bytes)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            if self.inflight is not None:
                self.inflight.release(key)

    def _admit(self, key: str) -> None:
        """One in-flight slot, then one request of the minute's budget; neither is taken if either refuses
        (a client refused for being busy spends no budget)."""
        if self.inflight is not None:
            self.inflight.acquire(key)
        try:
            self.limiter.check_request(key)
        except ServiceError:
            if self.inflight is not None:
                self.inflight.release(key)
            raise


def rate_key(scope: Scope) -> str:
    """Whose budget a request spends (`RequestContext.rate_key`; the peer address without a context)."""
    context = context_of(scope)
    return context.rate_key if context else f"ip:{(scope.get('client') or ('unknown',))[0]}"


def enforce_char_budget(request: Request, chars: int) -> None:
    """Charge `chars` text characters to the request's principal; raises 429/413 ServiceError when over.

    Call it from any route once its texts are parsed and before model work (a no-op when the limit is off).
    """
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None or limiter.chars is None:
        return
    limiter.charge_chars(rate_key(request.scope), chars)
