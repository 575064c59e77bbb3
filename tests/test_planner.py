"""The pure batch planner: limits, coverage, ordering and fairness."""

import random

import pytest

from model_server.batching.planner import fits, plan_batches, select_batch


def test_fits_allows_a_single_oversized_segment():
    assert fits(1, 10_000, max_batch_size=4, max_batch_tokens=100)
    assert not fits(2, 60, max_batch_size=4, max_batch_tokens=100)
    assert fits(4, 25, max_batch_size=4, max_batch_tokens=100)
    assert not fits(5, 1, max_batch_size=4, max_batch_tokens=100)


@pytest.mark.parametrize("seed", range(20))
def test_plan_batches_covers_every_segment_once_within_limits(seed):
    rng = random.Random(seed)
    costs = [rng.randint(1, 120) for _ in range(rng.randint(0, 200))]
    batches = plan_batches(costs, max_batch_size=16, max_batch_tokens=512)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(costs)))
    for batch in batches:
        longest = max(costs[i] for i in batch)
        assert len(batch) == 1 or (len(batch) <= 16 and len(batch) * longest <= 512)
    # Sorted by length: batches do not interleave lengths.
    for left, right in zip(batches, batches[1:]):
        assert max(costs[i] for i in left) <= min(costs[i] for i in right)


def test_plan_batches_rejects_bad_limits():
    with pytest.raises(ValueError, match="max_batch_size"):
        plan_batches([1], max_batch_size=0, max_batch_tokens=10)
    with pytest.raises(ValueError, match="max_batch_tokens"):
        plan_batches([1], max_batch_size=1, max_batch_tokens=0)


def test_select_batch_always_takes_the_oldest_and_its_nearest_lengths():
    costs = [50, 10, 48, 52, 90, 49, 11]
    chosen = select_batch(costs, max_batch_size=4, max_batch_tokens=10_000)
    assert chosen == [0, 2, 3, 5]


def test_select_batch_respects_token_budget():
    costs = [30, 30, 30, 30, 30]
    assert select_batch(costs, max_batch_size=64, max_batch_tokens=100) == [0, 1, 2]


def test_select_batch_oversized_oldest_runs_alone():
    assert select_batch([500, 5, 5], max_batch_size=8, max_batch_tokens=100) == [0]


@pytest.mark.parametrize("seed", range(20))
def test_select_batch_is_within_limits_and_contains_oldest(seed):
    rng = random.Random(seed)
    costs = [rng.randint(1, 100) for _ in range(rng.randint(1, 100))]
    chosen = select_batch(costs, max_batch_size=8, max_batch_tokens=300)
    assert 0 in chosen
    assert len(set(chosen)) == len(chosen)
    longest = max(costs[i] for i in chosen)
    assert len(chosen) == 1 or (len(chosen) <= 8 and len(chosen) * longest <= 300)
