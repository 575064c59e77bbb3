"""One way to reach the state Redis: a client with timeouts, and its failures as `state_unavailable`.

Every Redis-backed store takes its client from `connect` and wraps its commands in `reachable`, so an
outage is a 503 with a stable code on the requests that need shared state (the rest keep working) and the
next request after Redis returns simply succeeds: redis-py reconnects on its own.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from model_server.errors import ServiceError, overloaded


def connect(url: str, timeout_s: float):
    """A redis-py client for `url` (redis:// or rediss://); no connection is made until the first command."""
    try:
        import redis
    except ImportError:  # pragma: no cover - the scale extra is part of the default install
        raise ServiceError("state_unavailable", "state_url needs the `redis` package: pip install '.[scale]'") \
            from None
    return redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                health_check_interval=30, retry_on_timeout=False)


@contextmanager
def reachable(what: str) -> Iterator[None]:
    """Turn a connection failure or timeout of the state Redis into 503 `state_unavailable`."""
    import redis

    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise overloaded("state_unavailable", f"{what}: the state Redis does not answer ({exc})") from None
