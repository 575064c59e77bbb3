"""The pure batch planner: limits, coverage, ordering and fairness."""

import random

import pytest

from model_server.batching.planner import fits, most_segments, plan_batches, select_batch


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


# --- weighted batches: segments x hypotheses per segment (beams) --------------------------------------

BEAM4 = dict(max_batch_size=64, max_batch_hypotheses=128, max_batch_tokens=16384, weight=4)


def test_fits_counts_hypotheses_not_segments():
    # Greedy: 64 segments are 64 hypotheses; beam 4: 32 segments are already 128.
    assert fits(64, 30, max_batch_size=64, max_batch_hypotheses=128, max_batch_tokens=16384, weight=1)
    assert fits(32, 30, **BEAM4)
    assert not fits(33, 30, **BEAM4)
    assert fits(64, 30, max_batch_size=64, max_batch_hypotheses=128, max_batch_tokens=16384, weight=2)


def test_fits_charges_padded_tokens_per_hypothesis():
    # 16 segments x 4 beams x 100 tokens = 6400 padded hypothesis tokens.
    limits = dict(max_batch_size=64, max_batch_hypotheses=None, max_batch_tokens=6400)
    assert fits(16, 100, weight=4, **limits)
    assert not fits(17, 100, weight=4, **limits)
    assert fits(64, 100, weight=1, **limits)


def test_one_segment_always_fits_even_with_more_beams_than_the_hypothesis_limit():
    assert fits(1, 10, max_batch_size=8, max_batch_hypotheses=2, max_batch_tokens=100, weight=8)
    assert not fits(2, 1, max_batch_size=8, max_batch_hypotheses=2, max_batch_tokens=100, weight=8)


def test_weight_one_and_no_hypothesis_limit_mean_the_old_rule():
    rng = random.Random(7)
    for _ in range(500):
        count, longest = rng.randint(0, 80), rng.randint(1, 300)
        old = count <= 1 or (count <= 16 and count * longest <= 512)
        assert fits(count, longest, max_batch_size=16, max_batch_tokens=512) == old
        assert fits(count, longest, max_batch_size=16, max_batch_tokens=512, max_batch_hypotheses=16) == old


@pytest.mark.parametrize(("weight", "expected"), [(1, 64), (2, 64), (4, 32), (5, 25), (8, 16), (200, 1)])
def test_most_segments_per_batch_follows_the_beams(weight, expected):
    assert most_segments(max_batch_size=64, max_batch_hypotheses=128, weight=weight) == expected
    assert most_segments(max_batch_size=64, weight=weight) == 64


@pytest.mark.parametrize("seed", range(10))
def test_weighted_plans_cover_every_segment_within_every_limit(seed):
    rng = random.Random(seed)
    costs = [rng.randint(1, 120) for _ in range(rng.randint(0, 300))]
    weight = rng.choice([1, 2, 4, 6])
    limits = dict(max_batch_size=64, max_batch_hypotheses=96, max_batch_tokens=8192, weight=weight)
    batches = plan_batches(costs, **limits)
    assert sorted(i for batch in batches for i in batch) == list(range(len(costs)))
    for batch in batches:
        longest = max(costs[i] for i in batch)
        assert len(batch) == 1 or (len(batch) * weight <= 96 and len(batch) * weight * longest <= 8192)
    chosen = select_batch(costs or [1], **limits)
    assert 0 in chosen and fits(len(chosen), max((costs or [1])[i] for i in chosen), **limits)


def test_a_beam_batch_is_capped_where_a_greedy_one_is_not():
    costs = [30] * 100
    assert len(select_batch(costs, max_batch_size=64, max_batch_tokens=16384, max_batch_hypotheses=128,
                            weight=1)) == 64
    assert len(select_batch(costs, **BEAM4)) == 32
    assert [len(batch) for batch in plan_batches(costs, **BEAM4)] == [32, 32, 32, 4]


def test_limits_reject_a_zero_hypothesis_limit_or_weight():
    with pytest.raises(ValueError, match="max_batch_hypotheses"):
        plan_batches([1], max_batch_size=1, max_batch_tokens=10, max_batch_hypotheses=0)
    with pytest.raises(ValueError, match="weight"):
        select_batch([1], max_batch_size=1, max_batch_tokens=10, weight=0)
