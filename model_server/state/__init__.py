"""Shared state: glossaries, rate limits, idempotency keys, job records and the sentence cache.

Each kind of state has a small interface with two implementations: embedded (this process and its SQLite
file `state_path`, the default: nothing else to run) and Redis (`state_url`, shared by every replica).
`open_state(settings)` chooses; nothing above this package knows which one runs.

- glossaries: `glossaries.GlossaryStore` (SQLite table / Redis hashes, versioned; caps enforced atomically).
- rate limits: `ratelimits.Buckets` (token buckets in memory / one Lua script in Redis); the in-flight
  limit stays per process (see `ratelimits`).
- character quotas: `quotas.CharCounts` (characters per principal per billing period: a SQLite table /
  one Lua script in Redis).
- the sentence cache: `model_server.cache` (SQLite in `state_path`, or Redis with `cache_url`). It keeps
  its own URL on purpose: a cache may be evicted (`allkeys-lru`), state must not (`noeviction`), so they
  belong on different Redis instances (docs/scaling.md).

A Redis that does not answer is `state_unavailable` (503 with Retry-After) on the requests that need it,
never a crash, and the next request after it returns simply succeeds: see `redis_client`.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from model_server.state.ratelimits import Buckets, TokenBuckets

if TYPE_CHECKING:
    from model_server.settings import Settings
    from model_server.state.glossaries import GlossaryStore
    from model_server.state.quotas import CharCounts

log = logging.getLogger(__name__)


class EmbeddedState:
    """This process and its SQLite file: glossaries in `state_path`, rate limits in memory."""

    kind = "embedded"

    def __init__(self, path: Path) -> None:
        self._path = path

    @cached_property
    def glossaries(self) -> "GlossaryStore | None":
        """Opened on first use (None, logged, when the file cannot be opened: 503 glossaries_unavailable)."""
        from model_server.state.glossaries import open_sqlite_glossaries

        return open_sqlite_glossaries(self._path)

    def token_buckets(self, name: str, per_minute: int) -> Buckets:
        return TokenBuckets(per_minute)

    @cached_property
    def char_counts(self) -> "CharCounts | None":
        """Opened on first use (None, logged, when the file cannot be opened: quota requests get 503)."""
        from model_server.state.quotas import SqliteCharCounts

        try:
            return SqliteCharCounts(self._path)
        except Exception as exc:  # noqa: BLE001
            log.warning("character counts %s unavailable (%s: %s)", self._path, type(exc).__name__, exc)
            return None

    def health(self) -> dict | None:
        """Nothing to report: there is no other process to reach."""
        return None

    def close(self) -> None:
        for name in ("glossaries", "char_counts"):
            if self.__dict__.get(name) is not None:
                self.__dict__[name].close()


class RedisState:
    """The state Redis (`state_url`), shared by every replica: glossaries, rate limits and character counts."""

    kind = "redis"

    def __init__(self, url: str, timeout_s: float) -> None:
        from model_server.state.redis_client import connect

        self._client = connect(url, timeout_s)

    @cached_property
    def glossaries(self) -> "GlossaryStore":
        from model_server.state.glossaries import RedisGlossaryStore

        return RedisGlossaryStore(self._client)

    def token_buckets(self, name: str, per_minute: int) -> Buckets:
        from model_server.state.ratelimits import RedisTokenBuckets

        return RedisTokenBuckets(self._client, name, per_minute)

    @cached_property
    def char_counts(self) -> "CharCounts":
        from model_server.state.quotas import RedisCharCounts

        return RedisCharCounts(self._client)

    def health(self) -> dict:
        """{"store": "redis", "reachable": bool}: one PING within state_timeout_s (blocking)."""
        from model_server.errors import ServiceError
        from model_server.state.redis_client import reachable

        try:
            with reachable("state"):
                self._client.ping()
        except ServiceError as exc:
            return {"store": self.kind, "reachable": False, "error": exc.message}
        return {"store": self.kind, "reachable": True}

    def close(self) -> None:
        self._client.close()


State = EmbeddedState | RedisState


def open_state(settings: "Settings") -> State:
    """The shared state the settings choose: Redis with `state_url`, else this process and `state_path`.
    Opening connects to nothing yet (the embedded glossary file opens on first use, Redis on the first
    command), so a Redis that is down at start-up is a 503 on the requests that need it, not a failed start."""
    if settings.state_url:
        log.info("shared state: Redis %s", _without_password(settings.state_url))
        return RedisState(settings.state_url, settings.state_timeout_s)
    return EmbeddedState(settings.state_file())


def _without_password(url: str) -> str:
    """`url` without its credentials, for the log."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
