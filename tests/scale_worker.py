"""`model-server worker` for tests/test_jobs_scale.py, around the real tiny model with two optional test
behaviours (tests/fakes.py style: everything else is forwarded):
- MODEL_SERVER_TEST_GENERATE_DELAY_S: each generate() first sleeps this long, so a test can kill the worker
  while it is surely in the middle of a job;
- MODEL_SERVER_TEST_POISON: generate() raises on any input containing this string (a text that always fails);
- MODEL_SERVER_TEST_CRASH: the process dies at once (exit 137, as if killed) on any input containing it.
Run as `python -m tests.scale_worker` with the usual MODEL_SERVER_* environment."""

from __future__ import annotations

import os
import sys
import time

from model_server.logs import configure_logging
from model_server.services import Services, load_translation_backend
from model_server.settings import Settings
from model_server.worker import run_worker
from tests.fakes import DelegatingBackend


class TestBehaviourBackend(DelegatingBackend):
    def __init__(self, backend, delay_s: float, poison: str | None, crash: str | None = None) -> None:
        super().__init__(backend)
        self.delay_s = delay_s
        self.poison = poison
        self.crash = crash

    def generate(self, texts, options):
        time.sleep(self.delay_s)
        if self.crash and any(self.crash in text for text in texts):
            os._exit(137)
        if self.poison and any(self.poison in text for text in texts):
            raise RuntimeError("poisoned input (test)")
        return super().generate(texts, options)

    def close(self):
        self.backend.close()


def main() -> int:
    settings = Settings()
    configure_logging(settings)
    backend = TestBehaviourBackend(load_translation_backend(settings),
                                   float(os.environ.get("MODEL_SERVER_TEST_GENERATE_DELAY_S", "0")),
                                   os.environ.get("MODEL_SERVER_TEST_POISON") or None,
                                   os.environ.get("MODEL_SERVER_TEST_CRASH") or None)
    return run_worker(settings, Services.from_backend(settings, backend))


if __name__ == "__main__":
    sys.exit(main())
