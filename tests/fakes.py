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
