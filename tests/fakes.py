"""Test doubles around a real backend (the session's tiny model): they forward everything, so outputs stay
the model's, and add one behaviour each: gating, recording, rewriting."""

from __future__ import annotations

import threading


class DelegatingBackend:
    """Forwards to `backend`, records every input and counts `generate` calls. `close()` does nothing: the
    wrapped backend is shared by the session's tests and must survive a server's shutdown."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.info = backend.info
        self.seen: list[str] = []
        self.generate_calls = 0

    def count_tokens(self, text):
        return self.backend.count_tokens(text)

    def default_options(self):
        return self.backend.default_options()

    def generate(self, texts, options):
        self.generate_calls += 1
        self.seen.extend(texts)
        return self.backend.generate(texts, options)

    def close(self):
        pass


class GatedBackend(DelegatingBackend):
    """Each `generate` first waits for `gate` (and sets `entered`), so tests reach 'model busy' states
    deterministically instead of racing timers."""

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def generate(self, texts, options):
        self.entered.set()
        assert self.gate.wait(30), "test never opened the gate"
        return super().generate(texts, options)


class PermitBackend(DelegatingBackend):
    """Each `generate` first takes a permit (`allow(n)` hands out n; `open()` lets every call through), and
    `completed` counts the calls that ran: a test lets exactly the batches it wants reach the model."""

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self.permits = threading.Semaphore(0)
        self.completed = 0
        self._open = False

    def allow(self, calls: int) -> None:
        self.permits.release(calls)

    def open(self) -> None:
        self._open = True
        self.permits.release(1000)

    def generate(self, texts, options):
        assert self._open or self.permits.acquire(timeout=30), "test never allowed this model call"
        try:
            return super().generate(texts, options)
        finally:
            self.completed += 1
