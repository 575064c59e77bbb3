"""The bounded worker pool for per-request CPU work: normalizing, cleaning, segmenting, chunking and
token counting, HTML parsing and alignment, glossary matching, compat body parsing.

None of that may run on the event loop: one heavy request would stall every other request and
`/healthz`. `CpuPool.run(fn, *args)` runs `fn` on one of `prepare_workers` threads and awaits it, so a
heavy request slows only itself (and whoever waits for the same few threads). Model calls have their
own executors (one per model, `model_server.services.ModelRunner`); this pool never runs them.

Threads, not processes: the work needs the loaded tokenizers and the parsed trees, which cannot be
shipped to another process cheaply. Pure-Python work holds the GIL but yields it every switch
interval (5 ms), so the event loop keeps answering; and every scan that runs here is linear in its
input (the doubling tests: tests/test_*linear*.py, tests/timing.py), so no single call holds it for long.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

__all__ = ["CpuPool"]

T = TypeVar("T")


class CpuPool:
    """A fixed number of threads for CPU-bound request preparation (see the module doc)."""

    def __init__(self, workers: int = 2, *, name: str = "prepare") -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)

    async def run(self, fn: Callable[..., T], /, *args, **kwargs) -> T:
        """`fn(*args, **kwargs)` on a pool thread, with the caller's context (request id in the logs)."""
        context = contextvars.copy_context()
        call = functools.partial(context.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
