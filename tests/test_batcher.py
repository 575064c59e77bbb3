"""The dynamic batcher driven by fake batch functions: coalescing, isolation, limits, cancellation,
priority and shutdown. Long max_wait plus 'nothing released yet' checks instead of timing sleeps."""

import asyncio
import time

import pytest

from model_server.batching.batcher import DynamicBatcher, Lane
from model_server.errors import ServiceError

LONG_WAIT_MS = 60_000


class Recorder:
    """A fake model: records every call; optionally blocks until released or fails on chosen inputs."""

    def __init__(self, fail_on=(), max_ok_size=None):
        self.calls: list[tuple[object, list[str]]] = []
        self.gate: asyncio.Event | None = None
        self.fail_on = set(fail_on)
        self.max_ok_size = max_ok_size

    async def __call__(self, group, payloads):
        self.calls.append((group, list(payloads)))
        if self.gate is not None:
            await self.gate.wait()
        if self.max_ok_size is not None and len(payloads) > self.max_ok_size:
            raise MemoryError("CUDA out of memory (simulated)")
        bad = self.fail_on.intersection(payloads)
        if bad:
            raise ValueError(f"cannot process {sorted(bad)}")
        return [p.upper() for p in payloads]


def make(recorder, **overrides):
    options = dict(max_batch_size=8, max_batch_tokens=10_000, max_wait_ms=LONG_WAIT_MS, max_queue_items=100)
    options.update(overrides)
    return DynamicBatcher(recorder, **options)


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_concurrent_requests_coalesce_into_one_full_batch():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_batch_size=6)
        batcher.start()
        futures = [batcher.submit_many([f"s{i}"], costs=[3], group="g")[0] for i in range(6)]
        assert await asyncio.gather(*futures) == [f"S{i}" for i in range(6)]
        assert len(recorder.calls) == 1 and len(recorder.calls[0][1]) == 6
        await batcher.close()

    run(scenario())


def test_partial_batch_waits_for_max_wait_then_runs_on_close():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder)
        batcher.start()
        futures = batcher.submit_many(["a", "b"], costs=[1, 1], group="g")
        await settle()
        assert recorder.calls == []  # nothing released yet: the batch is not full and the wait is long
        await batcher.close()        # closing flushes what is queued
        assert [f.result() for f in futures] == ["A", "B"]

    run(scenario())


def test_short_wait_releases_a_partial_batch():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_wait_ms=1)
        batcher.start()
        futures = batcher.submit_many(["a"], costs=[1], group="g")
        assert await futures[0] == "A"
        await batcher.close()

    run(scenario())


def test_groups_never_share_a_batch():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_wait_ms=0)
        batcher.start()
        futures = (batcher.submit_many(["a", "b"], costs=[1, 1], group="beam1")
                   + batcher.submit_many(["c"], costs=[1], group="beam4"))
        await asyncio.gather(*futures)
        assert {(g, tuple(p)) for g, p in recorder.calls} == {("beam1", ("a", "b")), ("beam4", ("c",))}
        await batcher.close()

    run(scenario())


def test_one_failing_segment_fails_only_itself():
    async def scenario():
        recorder = Recorder(fail_on={"bad"})
        batcher = make(recorder, max_batch_size=4)
        batcher.start()
        futures = batcher.submit_many(["a", "bad", "c", "d"], costs=[1, 1, 1, 1], group="g")
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert results[0] == "A" and results[2] == "C" and results[3] == "D"
        assert isinstance(results[1], ValueError)
        assert batcher.stats.failed_segments == 1 and batcher.stats.splits >= 1
        await batcher.close()

    run(scenario())


def test_out_of_memory_batch_is_split_and_retried_not_dropped():
    async def scenario():
        recorder = Recorder(max_ok_size=2)
        batcher = make(recorder, max_batch_size=8)
        batcher.start()
        payloads = [f"s{i}" for i in range(8)]
        futures = batcher.submit_many(payloads, costs=[1] * 8, group="g")
        assert await asyncio.gather(*futures) == [p.upper() for p in payloads]
        # Halved until it fits: 8 fails, 4 fails, 2+2 succeed, for each half.
        assert [len(p) for _, p in recorder.calls] == [8, 4, 2, 2, 4, 2, 2]
        await batcher.close()

    run(scenario())


def test_wrong_number_of_results_is_an_error_not_a_misalignment():
    async def scenario():
        async def drops_one(group, payloads):
            return [p for p in payloads][:-1]

        batcher = make(drops_one, max_batch_size=2)
        batcher.start()
        futures = batcher.submit_many(["a", "b"], costs=[1, 1], group="g")
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(r, Exception) and "results for" in str(r) for r in results)
        await batcher.close()

    run(scenario())


def test_full_queue_rejects_whole_request_with_retry_after():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_queue_items=3)
        batcher.start()
        batcher.submit_many(["a", "b"], costs=[1, 1], group="g")
        with pytest.raises(ServiceError) as caught:
            batcher.submit_many(["c", "d"], costs=[1, 1], group="g")
        assert caught.value.code == "queue_full" and caught.value.status == 503
        assert caught.value.headers["Retry-After"] == "1"
        assert batcher.pending() == 2  # nothing of the rejected request was admitted
        await batcher.close()

    run(scenario())


def test_cancelled_segments_are_dropped_before_inference():
    async def scenario():
        recorder = Recorder()
        recorder.gate = asyncio.Event()
        batcher = make(recorder, max_wait_ms=0, max_batch_size=2)
        batcher.start()
        first = batcher.submit_many(["busy1", "busy2"], costs=[1, 1], group="g")
        await settle()  # the worker is now blocked inside the first batch
        gone = batcher.submit_many(["gone1", "gone2"], costs=[1, 1], group="g")
        kept = batcher.submit_many(["kept"], costs=[1], group="g")
        for future in gone:
            future.cancel()  # the client disconnected
        recorder.gate.set()
        await asyncio.gather(*first, *kept)
        seen = [p for _, payloads in recorder.calls for p in payloads]
        assert "gone1" not in seen and "gone2" not in seen and "kept" in seen
        assert batcher.stats.dropped_cancelled == 2
        await batcher.close()

    run(scenario())


def test_interactive_lane_goes_before_a_bulk_backlog():
    async def scenario():
        recorder = Recorder()
        recorder.gate = asyncio.Event()
        batcher = make(recorder, max_wait_ms=0, max_batch_size=2)
        batcher.start()
        running = batcher.submit_many(["b0", "b1"], costs=[1, 1], group="g", lane=Lane.bulk)
        await settle()
        backlog = batcher.submit_many([f"b{i}" for i in range(2, 10)], costs=[1] * 8, group="g", lane=Lane.bulk)
        editor = batcher.submit_many(["editor"], costs=[1], group="g", lane=Lane.interactive)
        recorder.gate.set()
        await asyncio.gather(*running, *backlog, *editor)
        order = [payloads for _, payloads in recorder.calls]
        assert order[0] == ["b0", "b1"]
        assert order[1] == ["editor"]  # delayed by at most the batch already running
        await batcher.close()

    run(scenario())


def test_close_finishes_queued_work_then_refuses_new_work():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_batch_size=2)
        batcher.start()
        futures = batcher.submit_many(["a", "b", "c"], costs=[1, 1, 1], group="g")
        await batcher.close()
        assert [f.result() for f in futures] == ["A", "B", "C"]
        assert not batcher.running
        with pytest.raises(ServiceError) as caught:
            batcher.submit_many(["late"], costs=[1], group="g")
        assert caught.value.code == "shutting_down"

    run(scenario())


def test_close_times_out_and_fails_stuck_work():
    async def scenario():
        recorder = Recorder()
        recorder.gate = asyncio.Event()  # never released: the model hangs
        batcher = make(recorder, max_wait_ms=0, max_batch_size=1)
        batcher.start()
        futures = batcher.submit_many(["a", "b"], costs=[1, 1], group="g")
        await settle()
        await batcher.close(drain_timeout_s=0.05)
        assert futures[1].done() and isinstance(futures[1].exception(), ServiceError)
        assert futures[0].exception().code == "shutting_down"  # the stuck batch's own segment is answered too

    run(scenario())


@pytest.mark.parametrize("bad,message", [
    (dict(max_wait_ms=-1), "max_wait_ms"),
    (dict(max_queue_items=0), "max_queue_items"),
    (dict(max_batch_hypotheses=0), "max_batch_hypotheses"),
    (dict(max_collect_ms=-1), "max_collect_ms"),
])
def test_constructor_validates_limits(bad, message):
    async def noop(group, payloads):
        return payloads

    with pytest.raises(ValueError, match=message):
        DynamicBatcher(noop, **{**dict(max_batch_size=1, max_batch_tokens=1, max_wait_ms=0, max_queue_items=1), **bad})


def beams_of(group):
    """Test groups are named 'beam<N>': N hypotheses per segment."""
    return int(group.removeprefix("beam"))


def test_a_beam_batch_is_full_at_its_hypothesis_limit_a_greedy_one_at_its_segment_limit():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_batch_size=8, max_batch_hypotheses=8, group_weight=beams_of)
        batcher.start()
        greedy = batcher.submit_many([f"g{i}" for i in range(8)], costs=[3] * 8, group="beam1")
        beam = batcher.submit_many([f"b{i}" for i in range(5)], costs=[3] * 5, group="beam4")
        await asyncio.gather(*greedy, *beam[:4])
        # Full batches ran at once (no max_wait): 8 greedy segments = 8 hypotheses, 2 beam-4 segments = 8.
        assert [(g, len(p)) for g, p in recorder.calls] == [("beam1", 8), ("beam4", 2), ("beam4", 2)]
        assert batcher.pending() == 1  # a partial beam batch waits for company
        await batcher.close()
        assert recorder.calls[-1] == ("beam4", ["b4"])

    run(scenario())


def test_padded_tokens_are_charged_per_hypothesis():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_batch_size=64, max_batch_tokens=400, group_weight=beams_of, max_wait_ms=0)
        batcher.start()
        # 4 beams x 50 tokens = 200 per segment: two per batch; greedy, eight (8 x 50 = 400).
        futures = batcher.submit_many([f"b{i}" for i in range(4)], costs=[50] * 4, group="beam4")
        futures += batcher.submit_many([f"g{i}" for i in range(8)], costs=[50] * 8, group="beam1")
        await asyncio.gather(*futures)
        assert [len(p) for _, p in recorder.calls] == [2, 2, 8]
        await batcher.close()

    run(scenario())


def test_a_bad_group_weight_refuses_that_request_and_the_queue_keeps_serving():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_wait_ms=0, group_weight=beams_of)
        batcher.start()
        with pytest.raises(ValueError, match="weight"):
            batcher.submit_many(["x"], costs=[1], group="beam0")
        assert await asyncio.gather(*batcher.submit_many(["ok"], costs=[1], group="beam1")) == ["OK"]
        await batcher.close()

    run(scenario())


class SlowRecorder(Recorder):
    """Each batch takes `seconds` of wall time (as a model would)."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds = seconds

    async def __call__(self, group, payloads):
        await asyncio.sleep(self.seconds)
        return await super().__call__(group, payloads)


@pytest.mark.parametrize("fraction,expected_batches", [
    (0.5, [["a1", "a2"], ["b1", "b2"]]),   # waits until both clients of the first batch are back
    (0.0, [["a1", "a2"], ["b1"], ["b2"]]),  # off: the first returning client runs alone
])
def test_after_a_batch_the_batcher_waits_for_its_clients_to_come_back(fraction, expected_batches):
    """Closed-loop clients return right after their batch: with a rebatch wait they share the next batch."""
    async def scenario():
        recorder = SlowRecorder(0.4)
        batcher = make(recorder, max_wait_ms=0, rebatch_wait_fraction=fraction, rebatch_gap_ms=1000)
        batcher.start()
        await asyncio.gather(*batcher.submit_many(["a1", "a2"], costs=[1, 1], group="g"))
        first = batcher.submit_many(["b1"], costs=[1], group="g")            # right after the batch
        await asyncio.sleep(0.05)
        second = batcher.submit_many(["b2"], costs=[1], group="g")           # within 0.5 x 0.4 s = 0.2 s
        await asyncio.gather(*first, *second)
        assert [payloads for _, payloads in recorder.calls] == expected_batches
        await batcher.close()

    run(scenario())


def test_a_lone_returning_client_is_not_kept_waiting():
    """One closed-loop client: once it is back, as many segments wait as the last batch had: run at once."""
    async def scenario():
        recorder = SlowRecorder(0.4)
        batcher = make(recorder, max_wait_ms=0, rebatch_wait_fraction=1.0, rebatch_gap_ms=1000)
        batcher.start()
        await asyncio.gather(*batcher.submit_many(["a"], costs=[1], group="g"))
        started = time.monotonic()
        await asyncio.gather(*batcher.submit_many(["b"], costs=[1], group="g"))
        assert time.monotonic() - started < 0.4 + 0.15  # its own batch, no rebatch wait (up to 0.4 s)
        await batcher.close()

    run(scenario())


@pytest.mark.parametrize("gap_ms,cap_fraction,max_wait_s", [
    (100, 1.0, 0.3),    # the gap ends the wait: the second client is not coming back
    (5000, 0.25, 0.3),  # the cap ends it: 0.25 x 0.4 s = 0.1 s after the batch
])
def test_the_rebatch_wait_ends_when_clients_stop_arriving_or_at_the_cap(gap_ms, cap_fraction, max_wait_s):
    async def scenario():
        recorder = SlowRecorder(0.4)
        batcher = make(recorder, max_wait_ms=0, rebatch_wait_fraction=cap_fraction, rebatch_gap_ms=gap_ms)
        batcher.start()
        await asyncio.gather(*batcher.submit_many(["a1", "a2"], costs=[1, 1], group="g"))
        started = time.monotonic()
        await asyncio.gather(*batcher.submit_many(["b1"], costs=[1], group="g"))  # a2's client never returns
        waited = time.monotonic() - started - 0.4
        assert 0.05 <= waited <= max_wait_s, waited
        assert [payloads for _, payloads in recorder.calls] == [["a1", "a2"], ["b1"]]
        await batcher.close()

    run(scenario())


class BatchSizes:
    """A BatchObserver that keeps each batch's size."""

    def __init__(self):
        self.sizes: list[int] = []

    def on_batch(self, *, lane, size, padded_tokens, seconds):
        self.sizes.append(size)

    def on_queue_wait(self, *, lane, seconds):
        pass


@pytest.mark.parametrize(("num_beams", "expected"), [(1, [8]), (4, [2, 2, 2, 2])])
def test_the_model_runner_budgets_a_batch_in_beams(tiny_marian_dir, num_beams, expected):
    """Wiring: the runner weighs each decoding group by its beams (real tiny model, real generate)."""
    from model_server.backends.base import GenerationOptions
    from model_server.services import ModelRunner, load_translation_backend
    from tests.conftest import tiny_settings

    settings = tiny_settings(tiny_marian_dir, max_batch_size=8, max_batch_hypotheses=8, max_wait_ms=LONG_WAIT_MS)
    runner = ModelRunner.create(load_translation_backend(settings), settings, "translation")
    sizes = BatchSizes()
    runner.batcher.observer = sizes

    async def scenario():
        runner.start()
        futures = runner.batcher.submit_many(["مرحبا"] * 8, costs=[4] * 8,
                                             group=GenerationOptions(num_beams=num_beams, max_new_tokens=8))
        results = await asyncio.gather(*futures)
        await runner.close(drain_timeout_s=10)
        return results

    assert len(run(scenario())) == 8
    assert sizes.sizes == expected


async def trickle(batcher, names, gap_s):
    """Submit one segment per name, `gap_s` apart (clients that start together but arrive spread out)."""
    futures = []
    for name in names:
        futures += batcher.submit_many([name], costs=[1], group="g")
        await asyncio.sleep(gap_s)
    return futures


def test_arrivals_closer_than_max_wait_join_one_batch():
    """Segments 20 ms apart with max_wait 60 ms: each arrival extends the wait, so all 6 share one batch
    although the last comes 100 ms after the first (counted from the first alone, 3 would have run)."""
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_wait_ms=60, max_collect_ms=2000)
        batcher.start()
        await asyncio.gather(*await trickle(batcher, [f"s{i}" for i in range(6)], 0.02))
        assert [payloads for _, payloads in recorder.calls] == [[f"s{i}" for i in range(6)]]
        await batcher.close()

    run(scenario())


@pytest.mark.parametrize("max_collect_ms,expected", [
    (350, [["s0", "s1", "s2", "s3"], ["s4", "s5", "s6", "s7"]]),  # the cap cuts a never-ending trickle
    (None, [["s0", "s1"], ["s2", "s3"], ["s4", "s5"], ["s6", "s7"]]),  # no collect window: from the oldest
])
def test_a_steady_trickle_is_cut_at_max_collect(max_collect_ms, expected):
    """Arrivals every 100 ms never pause for max_wait (160 ms): the batch starts max_collect after its oldest
    segment (350 ms: 4 segments); without a collect window, max_wait after the oldest (160 ms: 2)."""
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_wait_ms=160, max_collect_ms=max_collect_ms)
        batcher.start()
        started = time.monotonic()
        futures = await trickle(batcher, [f"s{i}" for i in range(8)], 0.1)
        await asyncio.gather(*futures)
        assert [payloads for _, payloads in recorder.calls] == expected
        assert time.monotonic() - started < 0.8 + 0.3  # the last batch is not held past its window
        await batcher.close()

    run(scenario())


def test_a_lone_segment_waits_max_wait_not_max_collect():
    async def scenario():
        recorder = Recorder()
        batcher = make(recorder, max_wait_ms=20, max_collect_ms=5000)
        batcher.start()
        started = time.monotonic()
        await asyncio.gather(*batcher.submit_many(["a"], costs=[1], group="g"))
        assert time.monotonic() - started < 0.5
        await batcher.close()

    run(scenario())



class Concurrency:
    """A fake engine with replicas: each call waits for its own release; records how many ran at once."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.releases: list[asyncio.Event] = []
        self.running = 0
        self.most_at_once = 0

    async def __call__(self, group, payloads):
        self.calls.append(list(payloads))
        release = asyncio.Event()
        self.releases.append(release)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await release.wait()
        finally:
            self.running -= 1
        if "bad" in payloads:
            raise ValueError("cannot process bad")
        return [p.upper() for p in payloads]

    async def finish(self, calls: int) -> None:
        """Let every batch end, until `calls` batches have run."""
        while len(self.calls) < calls or any(not release.is_set() for release in self.releases):
            for release in self.releases:
                release.set()
            await settle()


def test_parallel_batches_share_what_waits_evenly_and_run_at_once():
    async def scenario():
        engine = Concurrency()
        batcher = make(engine, max_wait_ms=0, max_batch_size=64, parallel_batches=2)
        batcher.start()
        futures = batcher.submit_many([f"s{i}" for i in range(8)], costs=[1] * 8, group="g")
        await settle()
        assert [len(call) for call in engine.calls] == [4, 4]  # 8 waiting, 2 free slots: 4 + 4, not 8 + 0
        assert engine.running == 2
        for release in engine.releases:
            release.set()
        assert await asyncio.gather(*futures) == [f"S{i}" for i in range(8)]
        await batcher.close()

    run(scenario())


def test_parallel_batches_get_an_equal_share_of_each_limit():
    async def scenario():
        engine = Concurrency()
        batcher = make(engine, max_wait_ms=0, max_batch_size=8, max_batch_hypotheses=6, parallel_batches=2,
                       group_weight=beams_of)
        batcher.start()
        greedy = batcher.submit_many([f"g{i}" for i in range(20)], costs=[1] * 20, group="beam1")
        await settle()
        assert [len(call) for call in engine.calls] == [3, 3]  # 6 hypotheses at once: 3 per batch
        assert engine.most_at_once == 2  # no third batch while two run
        await engine.finish(calls=7)
        assert await asyncio.gather(*greedy) == [f"G{i}" for i in range(20)]
        assert max(len(call) for call in engine.calls) == 3 and engine.most_at_once == 2
        await batcher.close()

    run(scenario())


def test_a_free_slot_starts_the_next_batch_while_the_other_still_runs():
    async def scenario():
        engine = Concurrency()
        batcher = make(engine, max_wait_ms=0, max_batch_size=4, parallel_batches=2)
        batcher.start()
        first = batcher.submit_many(["a", "b", "c", "d"], costs=[1] * 4, group="g")
        await settle()
        assert engine.calls == [["a", "b"], ["c", "d"]]
        engine.releases[0].set()  # one replica finishes; its client comes back at once
        assert await asyncio.gather(*first[:2]) == ["A", "B"]
        again = batcher.submit_many(["e", "f"], costs=[1, 1], group="g")
        await settle()
        assert engine.calls[2] == ["e", "f"] and not first[2].done()  # the other batch still runs
        for release in engine.releases:
            release.set()
        assert await asyncio.gather(*first[2:], *again) == ["C", "D", "E", "F"]
        await batcher.close()

    run(scenario())


def test_a_failing_parallel_batch_fails_only_its_own_segments():
    async def scenario():
        engine = Concurrency()
        batcher = make(engine, max_wait_ms=0, max_batch_size=2, parallel_batches=2)
        batcher.start()
        good = batcher.submit_many(["ok"], costs=[1], group="g")
        bad = batcher.submit_many(["bad"], costs=[1], group="g")
        await engine.finish(calls=2)
        assert await good[0] == "OK"
        with pytest.raises(ValueError):
            await bad[0]
        await batcher.close()

    run(scenario())


def test_close_drains_every_parallel_batch_and_times_out_on_stuck_ones():
    async def scenario():
        engine = Concurrency()
        batcher = make(engine, max_wait_ms=0, max_batch_size=2, parallel_batches=2)
        batcher.start()
        futures = batcher.submit_many(["a", "b"], costs=[1, 1], group="g")
        await settle()
        engine.releases[0].set()
        await batcher.close(drain_timeout_s=0.05)  # the second batch never ends
        assert futures[0].result() == "A"
        assert isinstance(futures[1].exception(), ServiceError) and futures[1].exception().code == "shutting_down"
        assert engine.running == 0  # the stuck batch's task was cancelled, not left behind

    run(scenario())


def test_parallel_batches_must_be_positive():
    async def noop(group, payloads):
        return payloads

    with pytest.raises(ValueError, match="parallel_batches"):
        DynamicBatcher(noop, max_batch_size=1, max_batch_tokens=1, max_wait_ms=0, max_queue_items=1,
                       parallel_batches=0)


def test_parallel_batches_that_ended_together_wait_for_their_clients_instead_of_splitting_them():
    """Two parallel batches of 2 end together; their 4 clients come back spread over 60 ms. The first two
    back fill one batch (2 more are still expected), the last two the other: 2 + 2, never 1 + 1 + 1 + 1."""
    async def scenario():
        recorder = SlowRecorder(0.4)
        batcher = make(recorder, max_wait_ms=0, max_batch_size=4, parallel_batches=2, rebatch_wait_fraction=0.5,
                       rebatch_gap_ms=1000)
        batcher.start()
        await asyncio.gather(*batcher.submit_many(["a1", "a2", "a3", "a4"], costs=[1] * 4, group="g"))
        returning = []
        for name in ["b1", "b2", "b3", "b4"]:
            returning += batcher.submit_many([name], costs=[1], group="g")
            await asyncio.sleep(0.02)
        await asyncio.gather(*returning)
        assert [len(payloads) for _, payloads in recorder.calls] == [2, 2, 2, 2]
        await batcher.close()

    run(scenario())


def test_parallel_slots_start_once_arrivals_fill_them_all_and_share_a_burst_evenly():
    """Clients trickling in fill both slots' batches before either starts (not a full first batch and a
    partial second); one request's 26 segments on two idle slots run as 13 + 13, not 16 + 10."""
    async def scenario():
        engine = Concurrency()
        batcher = make(engine, max_batch_size=4, parallel_batches=2)  # max_wait 60 s: only fullness starts one
        batcher.start()
        trickle = []
        for name in ["a1", "a2", "a3"]:
            trickle += batcher.submit_many([name], costs=[1], group="g")
            await settle()
        assert engine.calls == []  # one slot's batch is full, the other's is not: keep collecting
        trickle += batcher.submit_many(["a4"], costs=[1], group="g")
        await settle()
        assert engine.calls == [["a1", "a2"], ["a3", "a4"]]
        await engine.finish(calls=2)
        await asyncio.gather(*trickle)

        article = make(engine, max_wait_ms=0, max_batch_size=32, parallel_batches=2)
        article.start()
        segments = article.submit_many([f"p{i}" for i in range(26)], costs=[1] * 26, group="g")
        await settle()
        assert [len(call) for call in engine.calls[2:]] == [13, 13]
        await engine.finish(calls=4)
        await asyncio.gather(*segments)
        await batcher.close()
        await article.close()

    run(scenario())
