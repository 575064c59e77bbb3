"""Character quota storage: characters translated per principal per billing period (a calendar month or
day, UTC), in the SQLite file of the embedded state (`SqliteCharCounts`) or in the state Redis
(`RedisCharCounts`, shared by every replica).

`charge(principal, period, chars, limit)` adds `chars` to the period's count unless that would take it past
`limit` (0: no limit, always added) and returns `(charged, count)`: the count after charging, or the
count as it stands when refused. A negative `chars` gives characters back (a refund; the count never
goes below 0). Check and add are one atomic step either way (one conditional UPSERT in
SQLite, one Lua script in Redis), so concurrent requests - of one process or of many replicas - can never
spend past the limit together. A period's count is its own row / key: a new period starts at zero with
nothing to reset. Redis keys expire at their period's end; SQLite rows of past periods are deleted when
a new period's first charge is made (at most one old row per principal stays until then).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from model_server.state.redis_client import reachable

PERIODS = ("month", "day")


@dataclass(frozen=True)
class Period:
    """One billing period: its id ("2026-12" or "2026-12-01") and its end (UTC)."""

    id: str
    ends_at: datetime

    @classmethod
    def containing(cls, now: datetime, kind: str) -> "Period":
        """The period of `kind` ("month" or "day") that holds `now` (an aware datetime)."""
        now = now.astimezone(timezone.utc)
        if kind == "day":
            start = now.replace(hour=0, minute=0, second=0, microsecond=0)
            return cls(start.strftime("%Y-%m-%d"), start + timedelta(days=1))
        if kind == "month":
            start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(
                month=start.month + 1)
            return cls(start.strftime("%Y-%m"), end)
        raise ValueError(f"unknown period {kind!r}; one of {PERIODS}")


class CharCounts(Protocol):
    """Characters counted per principal and period. Blocking (embedded: microseconds); `charge_async`
    and `count_async` are the same from the event loop. May raise ServiceError state_unavailable."""

    def charge(self, principal: str, period: Period, chars: int, limit: int) -> tuple[bool, int]: ...

    def count(self, principal: str, period: Period) -> int: ...


class _Async:
    async def charge_async(self, principal: str, period: Period, chars: int, limit: int) -> tuple[bool, int]:
        return await asyncio.to_thread(self.charge, principal, period, chars, limit)  # type: ignore[attr-defined]

    async def count_async(self, principal: str, period: Period) -> int:
        return await asyncio.to_thread(self.count, principal, period)  # type: ignore[attr-defined]


class SqliteCharCounts(_Async):
    """Counts in a table of the embedded state's SQLite file (`state_path`): they survive restarts."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # One write per translation request: no fsync per commit (WAL + NORMAL survives a crash of the
            # process; a power cut may lose the last counts, which only ever favours the client).
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS char_counts (principal TEXT NOT NULL, period TEXT NOT NULL, "
                             "chars INTEGER NOT NULL, PRIMARY KEY (principal, period))")

    def charge(self, principal: str, period: Period, chars: int, limit: int) -> tuple[bool, int]:
        with self._lock:
            if chars < 0:   # a refund
                self._db.execute("UPDATE char_counts SET chars = MAX(0, chars + ?) WHERE principal = ? AND period = ?",
                                 (chars, principal, period.id))
                return True, self._count(principal, period)
            if limit and chars > limit:
                return False, self._count(principal, period)
            # One statement: the row is created, or grown only while it stays within the limit.
            changed = self._db.execute(
                "INSERT INTO char_counts VALUES (?, ?, ?) ON CONFLICT(principal, period) DO UPDATE SET "
                "chars = chars + excluded.chars WHERE ? = 0 OR chars + excluded.chars <= ?",
                (principal, period.id, chars, limit, limit)).rowcount
            count = self._count(principal, period)
            if changed and count == chars:  # the period's first charge: forget the principal's past periods
                self._db.execute("DELETE FROM char_counts WHERE principal = ? AND period != ?", (principal, period.id))
        return bool(changed), count

    def count(self, principal: str, period: Period) -> int:
        with self._lock:
            return self._count(principal, period)

    def _count(self, principal: str, period: Period) -> int:
        row = self._db.execute("SELECT chars FROM char_counts WHERE principal = ? AND period = ?",
                               (principal, period.id)).fetchone()
        return row[0] if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


# KEYS[1]: the count of one principal in one period. ARGV: chars, limit (0: none), the period's end (Unix s).
# Returns {charged (0/1), count}. EXPIREAT the period's end: a finished period's count costs nothing.
_CHARGE = """
local chars, limit, ends_at = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
if limit > 0 and count + chars > limit then return {0, count} end
if count + chars < 0 then chars = -count end
count = redis.call('INCRBY', KEYS[1], chars)
redis.call('EXPIREAT', KEYS[1], ends_at)
return {1, count}
"""


class RedisCharCounts(_Async):
    """Counts in the state Redis, under `<prefix>chars:<period id>:<principal>`: every replica counts into one."""

    def __init__(self, client, prefix: str = "model-server:") -> None:
        self._redis = client
        self._prefix = f"{prefix}chars:"
        self._charge = client.register_script(_CHARGE)  # EVALSHA, loaded again after a Redis restart

    def _key(self, principal: str, period: Period) -> str:
        return f"{self._prefix}{period.id}:{principal}"

    def charge(self, principal: str, period: Period, chars: int, limit: int) -> tuple[bool, int]:
        with reachable("character quota"):
            charged, count = self._charge(keys=[self._key(principal, period)],
                                          args=[chars, limit, int(period.ends_at.timestamp())])
        return bool(charged), int(count)

    def count(self, principal: str, period: Period) -> int:
        with reachable("character quota"):
            value = self._redis.get(self._key(principal, period))
        return int(value or 0)
