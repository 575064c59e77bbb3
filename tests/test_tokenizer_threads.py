"""The request-preparation threads (model_server/cpu.py) count tokens while the model thread encodes
and decodes batches with the same tokenizer: no call may fail or see the other's padding state."""

from __future__ import annotations

import threading
import time

from model_server.backends.base import GenerationOptions
from model_server.services import load_summarization_backend
from tests.conftest import SAMPLE_AR, tiny_settings


def test_counting_tokens_beside_batch_generation_never_fails(tiny_marian_dir, tiny_mt5_dir):
    # The tiny mT5 tokenizer is a fast (Rust) one whose padding state a padded batch call changes.
    backend = load_summarization_backend(tiny_settings(tiny_marian_dir, summarization_enabled=True,
                                                       summarization_model=str(tiny_mt5_dir)))
    lines = [line for line in SAMPLE_AR.splitlines() if line.strip()]
    expected = {line: backend.count_tokens(line) for line in lines}
    options = GenerationOptions(num_beams=1, max_new_tokens=2)
    failures: list[BaseException] = []
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            for line in lines:
                try:
                    assert backend.count_tokens(line) == expected[line]
                except BaseException as exc:  # noqa: BLE001 - collected and reported below
                    failures.append(exc)

    counter = threading.Thread(target=count)
    counter.start()
    batches = 0
    deadline = time.monotonic() + 3.0
    try:
        while time.monotonic() < deadline:
            try:
                backend.generate(lines[:8], options)  # mixed lengths: padded
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)
            batches += 1
    finally:
        stop.set()
        counter.join()
        backend.close()
    assert batches > 10
    assert not failures, f"{len(failures)} failures in {batches} batches, e.g. {failures[0]!r}"
