"""Rate-limit storage: per-key token buckets, in this process (`TokenBuckets`) or in the state Redis
(`RedisTokenBuckets`, shared by every replica). The same bucket either way: `per_minute` capacity,
refilling continuously at `per_minute / 60` per second; `take` spends or says how long to wait.

The Redis bucket is one Lua script (read, refill, spend, write, expire: atomic on the server, on the
server's clock, so replicas with skewed clocks still share one budget exactly). Its key expires once the
bucket would be full again: an idle key costs nothing.

The in-flight limit (max_inflight_per_key, `model_server.api.ratelimit.InFlight`) stays per process:
sharing it would need a lease per request so that a replica that dies mid-request does not keep its
slots forever, which is neither cheap nor simple; it bounds what one client holds of one replica.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from model_server.state.redis_client import reachable

Clock = Callable[[], float]


class Buckets(Protocol):
    """Token buckets of `capacity` per key. `take` blocks (an embedded one only for microseconds);
    `spend` is the same from the event loop. Both return 0 (spent) or the seconds to wait (nothing
    spent), and may raise ServiceError state_unavailable."""

    capacity: float

    def take(self, key: str, amount: float = 1.0) -> float: ...

    async def spend(self, key: str, amount: float = 1.0) -> float: ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Per-key token buckets of `per_minute` capacity refilling at `per_minute / 60` per second, in this
    process (one event loop: no locks)."""

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

    async def spend(self, key: str, amount: float = 1.0) -> float:
        return self.take(key, amount)

    def _maybe_prune(self, now: float) -> None:
        """Forget buckets that have refilled (idle a minute or more): memory stays bounded by active keys."""
        if now - self._last_prune < 60.0 and len(self._buckets) < self.max_keys:
            return
        self._last_prune = now
        full_after_s = self.capacity / self.rate_per_s
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < full_after_s}


# KEYS[1]: the bucket (a hash: tokens, updated). ARGV: capacity, refill per second, amount.
# Returns the seconds to wait as a string ("0": spent). TIME is the server's clock (Redis >= 5 replicates
# a script's effects, so a non-deterministic command before writes is allowed).
_TAKE = """
local capacity, rate, amount = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'updated')
local tokens = tonumber(state[1]) or capacity
local updated = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - updated) * rate)
local wait = 0
if tokens >= amount then tokens = tokens - amount else wait = (amount - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000))
return tostring(wait)
"""


class RedisTokenBuckets:
    """The same buckets in the state Redis, under `<prefix>ratelimit:<name>:<key>`: every replica spends
    from one budget per key."""

    def __init__(self, client, name: str, per_minute: int, prefix: str = "model-server:") -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute}")
        self.capacity = float(per_minute)
        self.rate_per_s = per_minute / 60.0
        self._prefix = f"{prefix}ratelimit:{name}:"
        self._take = client.register_script(_TAKE)  # EVALSHA, loaded again after a Redis restart

    def take(self, key: str, amount: float = 1.0) -> float:
        with reachable("rate limits"):
            return float(self._take(keys=[self._prefix + key], args=[self.capacity, self.rate_per_s, amount]))

    async def spend(self, key: str, amount: float = 1.0) -> float:
        return await asyncio.to_thread(self.take, key, amount)  # a network round trip: off the event loop
