"""The character quota: characters translated per API key per billing period, as DeepL bills them.

`char_quota_per_period` characters per key per `char_quota_period` (a calendar month by default, or a
day; UTC). With auth off every client counts into one server-wide count (`ALL_CLIENTS`). The count is
kept in the shared state (`model_server.state.quotas`: the embedded SQLite file, or the state Redis
where every replica counts into one) and charged by `charge_char_budget` once a translation route knows
its texts, before any model work - the characters a request sends, as `billed_characters` reports them
(DeepL's count: characters of the source texts). A refused request is not charged. Characters are given
back (`refund_char_quota`) when the work produced nothing through no fault of the request: a DeepL or
LibreTranslate request that fails with a 5xx - queue full, timeout, shutting down (which their clients
retry: each retry would be charged again) - or whose client left, a /v1/jobs replay of an existing job
(Idempotency-Key), and a job submission the job store could not take.
Other failures (bad input found after the charge, e.g. not Arabic) and the main routes' per-text errors
stay charged, as for the per-minute budget.

A request that would take the count past the limit is refused whole: 403 `quota_exceeded` (DeepL API:
456, which DeepL's clients do not retry; it is not 429, which clients retry with backoff, because
retrying cannot help before the period ends). 0 = no limit: the characters are still counted for
`GET /v2/usage`, and a state that cannot count then only costs the count, never the translation (after
a failure, counting pauses for UNCOUNTED_PAUSE_S, so an outage of the state Redis costs one request per
pause its timeout, not every request).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Callable

from model_server.errors import ServiceError
from model_server.state import State
from model_server.state.quotas import CharCounts, Period

log = logging.getLogger(__name__)

# The main-shape routes that charge it (for their documented 403; the compat routes document their own statuses).
QUOTA_PATHS = frozenset({"/translate", "/v1/articles", "/v1/jobs"})
UNCOUNTED_PAUSE_S = 30.0
ALL_CLIENTS = "*"   # the one principal when auth is off (never a key name: those start with a letter or digit)
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class CharQuota:
    """`limit` characters (0: none) per principal per `period` ("month" | "day"), counted in `state`."""

    def __init__(self, state: State, *, limit: int, period: str = "month", clock: Clock = _utc_now) -> None:
        Period.containing(clock(), period)  # an unknown period fails here, at start-up
        self.state = state
        self.limit = limit
        self.period = period
        self._clock = clock
        self._uncounted_until = 0.0   # without a limit, counting pauses after a state failure (monotonic)

    def current(self) -> Period:
        return Period.containing(self._clock(), self.period)

    def _counts(self) -> CharCounts:
        counts = self.state.char_counts
        if counts is None:
            raise ServiceError("state_unavailable", "the character counts (state_path) cannot be opened; see the "
                               "server log")
        return counts

    async def charge(self, principal: str, chars: int) -> None:
        """Count `chars` for `principal`, or raise 403 quota_exceeded (nothing counted)."""
        if chars <= 0:
            return
        period = self.current()
        if not self.limit and time.monotonic() < self._uncounted_until:
            return
        try:
            charged, count = await self._counts().charge_async(principal, period, chars, self.limit)
        except ServiceError as exc:
            if self.limit:
                raise   # fail closed: an outage never lifts a quota
            # Counting only: not worth a state timeout on every request while the state is down.
            self._uncounted_until = time.monotonic() + UNCOUNTED_PAUSE_S
            log.warning("characters not counted for %.0f s (%s): %s", UNCOUNTED_PAUSE_S, exc.code, exc.message)
            return
        if not charged:
            raise _exceeded(chars, count, self.limit, period, self.period)

    async def refund(self, principal: str, chars: int) -> None:
        """Give back `chars` charged for work that produced nothing (the server failed or was too busy, the
        client left, a job was a replay): a client that retries is charged once. Best effort: a state
        that does not answer keeps the charge (logged)."""
        if chars <= 0:
            return
        try:
            await self._counts().charge_async(principal, self.current(), -chars, 0)
        except ServiceError as exc:
            log.warning("%d characters not refunded to %s (%s): %s", chars, principal, exc.code, exc.message)

    async def usage(self, principal: str) -> int:
        """Characters `principal` has been charged this period (ServiceError state_unavailable)."""
        return await self._counts().count_async(principal, self.current())


def _exceeded(chars: int, count: int, limit: int, period: Period, kind: str) -> ServiceError:
    renews = period.ends_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    if chars > limit:
        return ServiceError("quota_exceeded", f"this request holds {chars} characters, more than the whole quota of "
                            f"{limit} per {kind}: it can never pass")
    return ServiceError("quota_exceeded", f"character quota spent: {count} of {limit} characters this {kind}, and "
                        f"this request holds {chars}; it renews at {renews}")
