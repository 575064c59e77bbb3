"""Rate and concurrency limits per principal (API key name, or client address when auth is off).

Two token buckets per principal, each holding one minute's worth and refilling continuously:
requests (`rate_limit_requests_per_minute`, charged by `RateLimitGuard` before the body is read) and
text characters (`rate_limit_chars_per_minute`, charged by `charge_char_budget`, which a route awaits
once it knows its texts and before any model work). Over the limit: 429 `rate_limited` with
Retry-After. A single request with more characters than a whole minute's budget can never pass: 413
`exceeds_rate_limit` (split it). 0 turns a limit off.

Concurrency: at most `max_inflight_per_key` requests of one principal in flight at once (`InFlight`,
counted by `RateLimitGuard` from admission until the response is sent); one more gets 429
`too_many_inflight` with Retry-After, before the body is read and without spending the request budget.
It keeps one client from holding every queue slot and worker with parallel requests.

Where the buckets live is `model_server.state`'s choice: in this process, or in the state Redis
(`state_url`), where every replica spends from one budget per principal; a state Redis that does not
answer refuses limited requests with 503 `state_unavailable` (fail closed). The in-flight count is
always per process (model_server/state/ratelimits.py says why). Health, readiness, docs and /metrics
are never limited.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from model_server.api.auth import METRICS_PATH, OPEN_PATHS
from model_server.api.context import context_of, refuse
from model_server.api.quota import ALL_CLIENTS
from model_server.errors import ServiceError
from model_server.state.ratelimits import Buckets, TokenBuckets

__all__ = ["InFlight", "RateLimitGuard", "RateLimiter", "TokenBuckets", "charge_char_budget", "quota_principal",
           "rate_key", "refund_char_quota"]

Clock = Callable[[], float]


class RateLimiter:
    """The service's request and character budgets. `enabled` is False when both limits are 0.

    `buckets(name, per_minute)` makes the buckets ("requests", "chars"): `State.token_buckets` (in this
    process, or shared in the state Redis: model_server/state/ratelimits.py); default: in this process.
    The async methods are what the server uses (a shared bucket is a network round trip, off the event
    loop); the blocking ones serve callers without a loop."""

    def __init__(self, *, requests_per_minute: int = 0, chars_per_minute: int = 0, clock: Clock = time.monotonic,
                 buckets: Callable[[str, int], Buckets] | None = None):
        make = buckets or (lambda name, per_minute: TokenBuckets(per_minute, clock=clock))
        self.requests = make("requests", requests_per_minute) if requests_per_minute else None
        self.chars = make("chars", chars_per_minute) if chars_per_minute else None

    @property
    def enabled(self) -> bool:
        return self.requests is not None or self.chars is not None

    def check_request(self, key: str) -> None:
        if self.requests is not None:
            self._over_requests(self.requests.take(key))

    async def admit_request(self, key: str) -> None:
        """One request of `key`'s budget, or 429 rate_limited (503 state_unavailable: shared buckets unreachable)."""
        if self.requests is not None:
            self._over_requests(await self.requests.spend(key))

    def charge_chars(self, key: str, chars: int) -> None:
        if self._counts_chars(chars):
            self._over_chars(self.chars.take(key, chars))

    async def spend_chars(self, key: str, chars: int) -> None:
        """`chars` of `key`'s character budget, or 429 rate_limited / 413 exceeds_rate_limit / 503."""
        if self._counts_chars(chars):
            self._over_chars(await self.chars.spend(key, chars))

    def _over_requests(self, wait_s: float) -> None:
        if wait_s:
            raise _limited(f"more than {self.requests.capacity:g} requests per minute", wait_s)

    def _counts_chars(self, chars: int) -> bool:
        """Whether `chars` is charged; 413 when it is more than a whole minute's budget (it never could pass)."""
        if self.chars is None or chars <= 0:
            return False
        if chars > self.chars.capacity:
            raise ServiceError("exceeds_rate_limit", f"this request holds {chars} characters, more than the "
                               f"{self.chars.capacity:g} per minute allowed: split it into smaller requests")
        return True

    def _over_chars(self, wait_s: float) -> None:
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
            await self._admit(key)
        except ServiceError as exc:
            await refuse(scope, receive, send, exc, drain_bytes=self.max_drain_bytes)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            if self.inflight is not None:
                self.inflight.release(key)

    async def _admit(self, key: str) -> None:
        """One in-flight slot, then one request of the minute's budget; neither is taken if either refuses
        (a client refused for being busy spends no budget). Shared buckets that do not answer refuse too
        (503 state_unavailable: fail closed, so an outage never lifts the limits)."""
        if self.inflight is not None:
            self.inflight.acquire(key)
        try:
            await self.limiter.admit_request(key)
        except ServiceError:
            if self.inflight is not None:
                self.inflight.release(key)
            raise


def rate_key(scope: Scope) -> str:
    """Whose budget a request spends (`RequestContext.rate_key`; the peer address without a context)."""
    context = context_of(scope)
    return context.rate_key if context else f"ip:{(scope.get('client') or ('unknown',))[0]}"


async def charge_char_budget(request: Request, chars: int, *, translated: bool = True) -> None:
    """Charge `chars` text characters to the request's principal: the per-minute budget, then (`translated`:
    every translation route) the character quota of the billing period (`model_server.api.quota`). Raises
    429/413 ServiceError when over the minute's budget, 403 quota_exceeded when over the period's (503
    state_unavailable when shared state does not answer).

    Await it from any route once its texts are parsed and before model work (a no-op when the limits are off).
    """
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None and limiter.chars is not None:
        await limiter.spend_chars(rate_key(request.scope), chars)
    quota = getattr(request.app.state, "char_quota", None)
    if translated and quota is not None:
        await quota.charge(quota_principal(request.scope), chars)


async def refund_char_quota(request: Request, chars: int) -> None:
    """Give `chars` back to the request's character quota (`CharQuota.refund`): its work produced nothing
    it should pay for. The per-minute budget is not refunded (it paces load, and the load happened)."""
    quota = getattr(request.app.state, "char_quota", None)
    if quota is not None:
        await quota.refund(quota_principal(request.scope), chars)


def quota_principal(scope: Scope) -> str:
    """Whose character quota a request spends: its API key's name; with auth off, every client's one count."""
    context = context_of(scope)
    return context.principal if context is not None and context.principal else ALL_CLIENTS
