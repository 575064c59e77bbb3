"""Doubling tests: is a piece of work linear in its input? Time it at n and at 2n and check the ratio.

Ratios, not absolute seconds: these machines are noisy and differ from day to day. Linear work gives a
ratio near 2 (n log n a little more), quadratic work 4, exponential work far more. Each size is timed a
few times and the fastest run is kept (noise only ever adds time); a measurement that still looks too
slow is repeated, so one burst of background load cannot fail a test, while work that really is
super-linear fails every attempt.
"""

from __future__ import annotations

import gc
import time
from typing import Callable, TypeVar

T = TypeVar("T")

MAX_RATIO = 3.0       # linear ~2, n log n ~2.2, quadratic ~4
MIN_SECONDS = 0.03    # grow n until one run takes at least this long, so timer noise does not dominate


def best_time(run: Callable[[T], object], value: T, *, repeats: int = 3) -> float:
    """The fastest of `repeats` runs. Each starts from a collected heap with the cyclic collector paused:
    a full collection walks the whole test process's heap (torch and the app), a one-off pause of tens of
    ms that would land in whichever timing crosses its threshold, not work that grows with the input."""
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter()
            run(value)
            best = min(best, time.perf_counter() - started)
        finally:
            gc.enable()
    return best


def doubling_ratio(run: Callable[[T], object], make: Callable[[int], T], n: int, *, repeats: int = 3,
                   min_seconds: float = MIN_SECONDS, max_n: int | None = None) -> tuple[int, float, float]:
    """(n, seconds at n, seconds at 2n), after growing n (x2, up to `max_n`) until a run takes `min_seconds`."""
    small = make(n)
    run(small)  # warm-up: imports, caches, compiled patterns
    t_small = best_time(run, small, repeats=repeats)
    while t_small < min_seconds and (max_n is None or 2 * n <= max_n):
        n *= 2
        small = make(n)
        t_small = best_time(run, small, repeats=repeats)
    t_large = best_time(run, make(2 * n), repeats=repeats)
    return n, t_small, t_large


def assert_linear(run: Callable[[T], object], make: Callable[[int], T], n: int, *, max_ratio: float = MAX_RATIO,
                  attempts: int = 3, **kwargs) -> float:
    """Assert that `run(make(2n))` takes at most `max_ratio` times `run(make(n))`; returns the ratio seen."""
    seen = []
    for _ in range(attempts):
        size, t_small, t_large = doubling_ratio(run, make, n, **kwargs)
        ratio = t_large / max(t_small, 1e-9)
        if ratio <= max_ratio:
            return ratio
        seen.append(f"n={size}: {t_small * 1000:.1f} ms, 2n: {t_large * 1000:.1f} ms (x{ratio:.2f})")
        n = size
    raise AssertionError(f"super-linear: doubling the input multiplied the time by more than {max_ratio}: "
                         + "; ".join(seen))
