"""Pure batch planning: which segments go into one model call.

No asyncio, no models: functions of segment costs (source tokens), a weight and three limits, so they are
unit-tested synchronously: `select_batch` is what the dynamic batcher runs; `plan_batches` splits a whole
known set at once with the same `fits` rule (the equivalence tests use it to batch a backend directly).

A batch's cost is what the engine computes for it. `weight` is the hypotheses the engine runs per segment
(beam search with 4 beams: 4; greedy: 1), the same for the whole batch (segments share a batch only with
equal decoding options). Limits: segments, hypotheses = segments x weight, and padded tokens = hypotheses x
longest member (every hypothesis attends to its padded source). With weight 1 hypotheses are segments
and padded tokens are segments x longest.
"""

from __future__ import annotations

from typing import Sequence


def check_limits(max_batch_size: int, max_batch_tokens: int, max_batch_hypotheses: int | None = None,
                 weight: int = 1) -> None:
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if max_batch_tokens < 1:
        raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
    if max_batch_hypotheses is not None and max_batch_hypotheses < 1:
        raise ValueError(f"max_batch_hypotheses must be >= 1, got {max_batch_hypotheses}")
    if weight < 1:
        raise ValueError(f"weight (hypotheses per segment) must be >= 1, got {weight}")


def fits(count: int, longest: int, *, max_batch_size: int, max_batch_tokens: int,
         max_batch_hypotheses: int | None = None, weight: int = 1) -> bool:
    """Whether `count` segments of `weight` hypotheses each, padded to `longest` tokens, fit every limit
    (no max_batch_hypotheses: no hypothesis limit). One segment always fits: a segment longer than the
    budget, or with more beams than max_batch_hypotheses, still has to run, alone."""
    hypotheses = count * weight
    return count <= 1 or (count <= max_batch_size
                          and (max_batch_hypotheses is None or hypotheses <= max_batch_hypotheses)
                          and hypotheses * longest <= max_batch_tokens)


def _checked_limits(max_batch_size: int, max_batch_tokens: int, max_batch_hypotheses: int | None,
                    weight: int) -> dict:
    """The limits as `fits` keywords, once validated."""
    check_limits(max_batch_size, max_batch_tokens, max_batch_hypotheses, weight)
    return dict(max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens,
                max_batch_hypotheses=max_batch_hypotheses, weight=weight)


def most_segments(*, max_batch_size: int, max_batch_hypotheses: int | None = None, weight: int = 1) -> int:
    """The most segments of `weight` hypotheses one batch can hold, whatever their length (at least 1)."""
    if max_batch_hypotheses is None:
        return max_batch_size
    return max(1, min(max_batch_size, max_batch_hypotheses // weight))


def plan_batches(costs: Sequence[int], *, max_batch_size: int, max_batch_tokens: int,
                 max_batch_hypotheses: int | None = None, weight: int = 1) -> list[list[int]]:
    """Split all segments into batches sorted by length (minimal padding). Returns lists of indices into
    `costs`; every index appears exactly once."""
    limits = _checked_limits(max_batch_size, max_batch_tokens, max_batch_hypotheses, weight)
    order = sorted(range(len(costs)), key=lambda i: costs[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # Sorted ascending, so the newcomer is the longest member.
        if current and not fits(len(current) + 1, costs[index], **limits):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def select_batch(costs: Sequence[int], *, max_batch_size: int, max_batch_tokens: int,
                 max_batch_hypotheses: int | None = None, weight: int = 1) -> list[int]:
    """Choose the next batch from pending segments given in arrival order.

    The oldest segment (index 0) is always included, so nothing starves; the rest are the pending
    segments closest to it in length, so padding stays small. Returns indices into `costs`, ascending.
    """
    limits = _checked_limits(max_batch_size, max_batch_tokens, max_batch_hypotheses, weight)
    if not costs:
        return []
    by_length = sorted(range(len(costs)), key=lambda i: (costs[i], i))
    anchor = by_length.index(0)
    lo = hi = anchor
    # Grow a window in length order around the oldest segment, one neighbour at a time, always taking
    # the neighbour whose length is closer to the anchor's.
    while True:
        below = by_length[lo - 1] if lo > 0 else None
        above = by_length[hi + 1] if hi + 1 < len(by_length) else None
        if below is None and above is None:
            break
        take_below = above is None or (
            below is not None and costs[0] - costs[below] <= costs[above] - costs[0]
        )
        longest = costs[by_length[hi]] if take_below else costs[above]
        if not fits(hi - lo + 2, longest, **limits):
            if take_below or below is None:
                break
            # The longer neighbour does not fit, a shorter one still may.
            if not fits(hi - lo + 2, costs[by_length[hi]], **limits):
                break
            take_below = True
        if take_below:
            lo -= 1
        else:
            hi += 1
    return sorted(by_length[lo:hi + 1])
