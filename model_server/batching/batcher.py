"""Cross-request dynamic batcher (asyncio), generic over `async process(group, payloads) -> results`.

Segments from all in-flight requests join one bounded queue with two priority lanes. One worker task
forms a batch when the lane's budget fills or arrivals pause for `max_wait_ms` (at the latest `max_collect_ms`
after the oldest segment), runs the process function on it (which runs the model off the event loop) and
resolves each segment's future. Up to `parallel_batches` batches run at once (an engine with that many
independent replicas, e.g. CTranslate2's inter_threads): each batch then gets 1/N of every limit, and the
segments waiting are shared evenly among the free slots, so two replicas never sit one idle and one busy
while work waits, and one replica's clients come back while the other still runs.

Guarantees:
- only segments of the same `group` (e.g. equal decoding options) share a batch, so batching never
  changes a result;
- a batch's budget is in what the engine computes: `group_weight(group)` (given by the caller, e.g. the
  number of beams) is the hypotheses per segment of that group, and the planner caps segments,
  hypotheses (max_batch_hypotheses) and padded tokens per hypothesis (max_batch_tokens);
- a failing batch is split in halves and retried until the failure is pinned to single segments
  (isolates a poison input; also how a CUDA out-of-memory batch is retried smaller);
- futures already done (cancelled by a timed-out or disconnected client) are dropped, never resolved;
- `interactive` always goes before `bulk`, so a backlog delays an editor by at most the batch already
  running (with parallel batches: until the first of them ends);
- `close()` stops admission, finishes queued work, then stops the worker.
- an optional `observer` (`BatchObserver`) gets each segment's queue wait and each batch's size, padded
  tokens and time (metrics); a failing observer is logged and never stalls the queue.

It knows nothing about models, tokens or HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Awaitable, Callable, Generic, Hashable, Protocol, Sequence, TypeVar

from model_server.batching.planner import check_limits, fits, most_segments, select_batch
from model_server.errors import ServiceError, overloaded

T = TypeVar("T")
R = TypeVar("R")
ProcessFn = Callable[[Hashable, list[T]], Awaitable[list[R]]]
WeightFn = Callable[[Hashable], int]  # hypotheses the engine computes per segment of a group


def _unweighted(group: Hashable) -> int:
    return 1

log = logging.getLogger(__name__)

MAX_REBATCH_WAIT_S = 2.0  # cap on the wait after a batch, however long the batch took


class Lane(str, Enum):
    interactive = "interactive"
    bulk = "bulk"


@dataclass(eq=False)
class _Pending(Generic[T, R]):
    payload: T
    cost: int
    group: Hashable
    weight: int  # hypotheses per segment: the group's weight, checked at admission
    future: asyncio.Future
    enqueued_at: float = field(default_factory=time.monotonic)


@dataclass
class BatcherStats:
    batches: int = 0
    segments: int = 0
    padded_tokens: int = 0
    failed_segments: int = 0
    dropped_cancelled: int = 0
    rejected_full: int = 0
    splits: int = 0
    busy_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class BatchSizeMismatch(RuntimeError):
    pass


class BatchObserver(Protocol):
    """Optional measurements hook (metrics). Called on the event loop: keep it cheap; errors are logged."""

    def on_batch(self, *, lane: Lane, size: int, padded_tokens: int, seconds: float) -> None: ...

    def on_queue_wait(self, *, lane: Lane, seconds: float) -> None: ...


class DynamicBatcher(Generic[T, R]):
    def __init__(
        self,
        process: ProcessFn,
        *,
        max_batch_size: int,
        max_batch_tokens: int,
        max_wait_ms: float,
        max_queue_items: int,
        retry_after_s: int = 1,
        name: str = "batcher",
        observer: BatchObserver | None = None,
        rebatch_wait_fraction: float = 0.0,
        rebatch_gap_ms: float = 300.0,
        max_batch_hypotheses: int | None = None,
        group_weight: WeightFn = _unweighted,
        max_collect_ms: float | None = None,
        parallel_batches: int = 1,
    ) -> None:
        check_limits(max_batch_size, max_batch_tokens, max_batch_hypotheses)
        if parallel_batches < 1:
            raise ValueError(f"parallel_batches must be >= 1, got {parallel_batches}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_queue_items < 1:
            raise ValueError(f"max_queue_items must be >= 1, got {max_queue_items}")
        if not 0 <= rebatch_wait_fraction <= 1:
            raise ValueError(f"rebatch_wait_fraction must be within [0, 1], got {rebatch_wait_fraction}")
        if max_collect_ms is not None and max_collect_ms < 0:
            raise ValueError(f"max_collect_ms must be >= 0, got {max_collect_ms}")
        if rebatch_gap_ms < 0:
            raise ValueError(f"rebatch_gap_ms must be >= 0, got {rebatch_gap_ms}")
        self._process = process
        self.rebatch_wait_fraction = rebatch_wait_fraction
        self.rebatch_gap_s = rebatch_gap_ms / 1000.0
        self._last_batch_end = 0.0
        self._last_batch_s = 0.0
        self._last_arrival = 0.0
        # Segments the batches that ended answered, less the segments that arrived since: clients the
        # batcher still expects back (closed-loop clients send their next request when answered).
        self._awaited = 0
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_hypotheses = max_batch_hypotheses
        self.parallel_batches = parallel_batches
        self._group_weight = group_weight
        self.max_wait_s = max_wait_ms / 1000.0
        # None or less than max_wait: a batch waits max_wait after its oldest segment, however busy the arrivals.
        self.max_collect_s = max(self.max_wait_s, (max_collect_ms or 0.0) / 1000.0)
        self.max_queue_items = max_queue_items
        self.retry_after_s = retry_after_s
        self.name = name
        self.stats = BatcherStats()
        self.observer = observer  # may be set later, before start()
        self._lanes: dict[Lane, deque[_Pending]] = {lane: deque() for lane in Lane}
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()  # batches in flight, at most parallel_batches

    # ----- lifecycle -----
    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run_forever(), name=self.name)

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done() and not self._closing

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Stop admission, let queued work finish (up to the timeout), then stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._worker is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._worker), drain_timeout_s)
        except asyncio.TimeoutError:
            log.warning("%s: drain timed out after %.1fs; failing queued work", self.name, drain_timeout_s)
            self._worker.cancel()
            stuck = list(self._running)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)  # their segments fail with shutting_down
            self._fail_all_pending(ServiceError("shutting_down", "the server shut down before this work ran"))

    # ----- admission -----
    def pending(self, lane: Lane | None = None) -> int:
        """Queued segments whose client is still waiting (cancelled ones are dropped lazily)."""
        lanes = [lane] if lane else list(Lane)
        return sum(1 for name in lanes for item in self._lanes[name] if not item.future.done())

    def submit_many(self, payloads: Sequence[T], *, costs: Sequence[int], group: Hashable,
                    lane: Lane = Lane.interactive) -> list[asyncio.Future]:
        """Queue all payloads of one request, or none of them (a request is never half-admitted).
        More payloads than the queue ever holds: 413 too_many_segments; no room now: 503 queue_full."""
        if len(payloads) != len(costs):
            raise ValueError("payloads and costs differ in length")
        if len(payloads) > self.max_queue_items:  # even an empty queue could not take it: no retry can help
            raise ServiceError(
                "too_many_segments", f"this request has {len(payloads)} segments for the model; the batch queue "
                f"admits at most {self.max_queue_items} at once, so no retry can help: split the request")
        if self._closing or self._worker is None:
            raise overloaded("shutting_down", "the server is shutting down and accepts no new work",
                             self.retry_after_s)
        if self.pending() + len(payloads) > self.max_queue_items:
            self.stats.rejected_full += 1
            raise overloaded(
                "queue_full", f"the batch queue is full ({self.pending()} segments waiting, limit "
                f"{self.max_queue_items}); retry later", self.retry_after_s)
        weight = self._group_weight(group)
        check_limits(self.max_batch_size, self.max_batch_tokens, self.max_batch_hypotheses, weight)
        loop = asyncio.get_running_loop()
        items = [_Pending(p, c, group, weight, loop.create_future()) for p, c in zip(payloads, costs)]
        self._lanes[lane].extend(items)
        self._last_arrival = time.monotonic()
        self._awaited = max(0, self._awaited - len(items))
        self._wakeup.set()
        return [item.future for item in items]

    # ----- worker -----
    async def _run_forever(self) -> None:
        while True:
            lane = self._next_lane() if self._free_slots() else None
            if lane is None:
                if self._closing and not self._running and self._next_lane() is None:
                    return
                self._wakeup.clear()  # set again by an arrival, a finished batch or close()
                await self._wakeup.wait()
                continue
            wait_s = self._remaining_wait(lane)
            if wait_s > 0:
                await self._sleep_unless_woken(wait_s)
                continue
            batch = self._take_batch(lane)
            if batch:
                self._launch(batch, lane)

    def _free_slots(self) -> int:
        return self.parallel_batches - len(self._running)

    def _launch(self, batch: list[_Pending], lane: Lane) -> None:
        """Run a batch as its own task, so the worker can fill another slot meanwhile."""
        task = asyncio.get_running_loop().create_task(self._execute(batch, lane), name=f"{self.name}-batch")
        self._running.add(task)
        task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:  # _execute settles every failure itself
            log.error("%s: batch task failed", self.name, exc_info=task.exception())
        self._wakeup.set()

    def _next_lane(self) -> Lane | None:
        for lane in Lane:  # declaration order is priority order
            self._drop_cancelled(lane)
            if self._lanes[lane]:
                return lane
        return None

    def _drop_cancelled(self, lane: Lane) -> None:
        queue = self._lanes[lane]
        if any(item.future.done() for item in queue):
            kept = [item for item in queue if not item.future.done()]
            self.stats.dropped_cancelled += len(queue) - len(kept)
            self._lanes[lane] = deque(kept)

    def _remaining_wait(self, lane: Lane) -> float:
        """Seconds to keep collecting before running a non-full batch; 0 = run now."""
        if self._closing or self._fills_free_slots(lane):
            return 0.0
        queue = self._lanes[lane]
        ready_at = max(self._collect_ready_at(queue[0].enqueued_at), self._rebatch_ready_at())
        return max(0.0, ready_at - time.monotonic())

    def _fills_free_slots(self, lane: Lane) -> bool:
        """Whether what waits (of the oldest segment's group) fills a batch in every free slot.

        Every free slot, not one: 64 clients arriving ~0.4 ms apart make a full batch of 16 for one of two
        idle replicas long before the other's is full, and starting the first then would leave the second
        a partial batch that the rest of the clients then wait behind."""
        queue = self._lanes[lane]
        group = queue[0].group
        same = [item.cost for item in queue if item.group == group]
        free = max(self._free_slots(), 1)
        limits = self._limits(queue[0].weight)
        most = most_segments(max_batch_size=limits["max_batch_size"],
                             max_batch_hypotheses=limits["max_batch_hypotheses"], weight=queue[0].weight)
        return len(same) >= most * free or not fits(self._even_share(len(same)), max(same[:most * free]), **limits)

    def _even_share(self, count: int) -> int:
        """What one free slot takes of `count` waiting segments, shared evenly among the free slots."""
        return _share_of(count, max(self._free_slots(), 1))

    def _collect_ready_at(self, oldest: float) -> float:
        """When a non-full batch stops collecting: `max_wait` after the latest arrival, so clients that are
        still sending get in, and at the latest `max_collect` after its oldest segment.

        Clients that start together do not arrive together: 64 HTTP clients sent their first requests over
        ~25 ms (about 0.4 ms apart), so a wait counted from the first arrival alone ran a batch of the first
        dozen and left the rest for a second, partial one."""
        return min(max(oldest, self._last_arrival) + self.max_wait_s, oldest + self.max_collect_s)

    def _rebatch_ready_at(self) -> float:
        """When to stop waiting for the clients of the last batch (0.0: do not wait).

        Clients answered by a batch send their next requests right away; a partial batch started before
        they are back splits them into a small batch and a large one that keep alternating (measured on
        a 2-core CPU with 64 clients: batches of 10 and 54, when a slow client took 1.4 s to send
        the 64 next requests, with a 225 ms pause among them, hence the 300 ms default gap).
        So after a batch, keep collecting while they arrive: until as many segments arrived as the batches
        that ended answered, or no segment arrived for rebatch_gap, or at the latest a fraction of the
        batch's duration after it (a waiting batch never costs more than that share of throughput).
        """
        if self.rebatch_wait_fraction == 0 or self._awaited == 0:
            return 0.0
        cap = self._last_batch_end + min(self.rebatch_wait_fraction * self._last_batch_s, MAX_REBATCH_WAIT_S)
        quiet_until = max(self._last_batch_end, self._last_arrival) + self.rebatch_gap_s
        return min(cap, quiet_until)

    async def _sleep_unless_woken(self, seconds: float) -> None:
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    def _limits(self, weight: int, share: int | None = None) -> dict[str, Any]:
        """The planner's limits for one batch of segments of `weight` hypotheses each: 1/parallel_batches of
        each configured limit (the configured ones cap what the engine runs at once), and at most `share`
        segments."""
        slot_size = _share_of(self.max_batch_size, self.parallel_batches)
        return dict(max_batch_size=min(slot_size, share or slot_size),
                    max_batch_tokens=_share_of(self.max_batch_tokens, self.parallel_batches),
                    max_batch_hypotheses=(None if self.max_batch_hypotheses is None
                                          else _share_of(self.max_batch_hypotheses, self.parallel_batches)),
                    weight=weight)

    def _take_batch(self, lane: Lane) -> list[_Pending]:
        queue = self._lanes[lane]
        group = queue[0].group
        candidates = [item for item in queue if item.group == group]
        if time.monotonic() >= self._rebatch_ready_at():
            self._awaited = 0  # the wait for them is over: late clients are new arrivals, not awaited ones
        # What waits is shared evenly among the free slots (8 segments and 2 idle replicas make 4 + 4; a
        # 26-sentence article 13 + 13), once it fills them all or the waits are over (_remaining_wait).
        chosen_idx = select_batch([item.cost for item in candidates],
                                  **self._limits(queue[0].weight, self._even_share(len(candidates))))
        chosen = [candidates[i] for i in chosen_idx]
        chosen_ids = {id(item) for item in chosen}
        self._lanes[lane] = deque(item for item in queue if id(item) not in chosen_ids)
        return chosen

    async def _execute(self, batch: list[_Pending], lane: Lane) -> None:
        started = time.monotonic()
        padded_tokens = len(batch) * max(item.cost for item in batch)
        self.stats.batches += 1
        self.stats.segments += len(batch)
        self.stats.padded_tokens += padded_tokens
        if self.observer is not None:
            for item in batch:
                self._notify(self.observer.on_queue_wait, lane=lane, seconds=started - item.enqueued_at)
        try:
            await self._process_isolating_failures(batch)
        except asyncio.CancelledError:  # close() timed out on this batch: its clients get an answer
            for item in batch:
                _settle(item.future, exception=ServiceError("shutting_down", "the server shut down before this "
                                                                             "work finished"))
            raise
        seconds = time.monotonic() - started
        log.debug("%s: batch of %d segments (%d padded tokens) ran %.0f ms; oldest waited %.0f ms; %d left queued",
                  self.name, len(batch), padded_tokens, seconds * 1000,
                  (started - min(item.enqueued_at for item in batch)) * 1000, len(self._lanes[lane]))
        self._last_batch_end, self._last_batch_s = started + seconds, seconds
        self._awaited += len(batch)
        self.stats.busy_s += seconds
        if self.observer is not None:
            self._notify(self.observer.on_batch, lane=lane, size=len(batch), padded_tokens=padded_tokens,
                         seconds=seconds)

    def _notify(self, hook: Callable[..., None], /, **kwargs: Any) -> None:
        try:
            hook(**kwargs)
        except Exception:  # noqa: BLE001 - a broken observer must never stall the queue
            log.exception("%s: batch observer failed", self.name)

    async def _process_isolating_failures(self, batch: list[_Pending]) -> None:
        live = [item for item in batch if not item.future.done()]
        if not live:
            return
        try:
            results = await self._process(live[0].group, [item.payload for item in live])
            if len(results) != len(live):
                raise BatchSizeMismatch(f"batch function returned {len(results)} results for {len(live)} inputs")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any model failure is isolated below
            if len(live) == 1:
                self.stats.failed_segments += 1
                log.warning("%s: segment failed: %r", self.name, exc)
                _settle(live[0].future, exception=exc)
                return
            # Split and retry: pins the failure on its own segment(s), and retries a batch that was too
            # large for the device (out of memory) at half the size.
            self.stats.splits += 1
            middle = len(live) // 2
            await self._process_isolating_failures(live[:middle])
            await self._process_isolating_failures(live[middle:])
            return
        for item, result in zip(live, results):
            _settle(item.future, result=result)

    def _fail_all_pending(self, exc: Exception) -> None:
        for lane in Lane:
            for item in self._lanes[lane]:
                _settle(item.future, exception=exc)
            self._lanes[lane].clear()


def _share_of(limit: int, parts: int) -> int:
    """One of `parts` equal shares of a limit, rounded up (never below 1)."""
    return max(1, -(-limit // parts))


def _settle(future: asyncio.Future, *, result: Any = None, exception: BaseException | None = None) -> None:
    """Resolve a future unless its client already gave up on it."""
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
