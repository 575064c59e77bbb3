"""The scale benchmark's stand-in model: the real `model-server serve` / `model-server worker`, with a
translation backend that sleeps instead of computing.

    python -m benchmarks.standin serve  --batch-ms 20 --segment-ms 4   # configured by MODEL_SERVER_* as usual
    python -m benchmarks.standin worker --batch-ms 20 --segment-ms 4

Each `generate()` sleeps `batch_ms + segment_ms x segments` under one lock per process, so one process runs one
batch at a time, as one model on one device does, but the model costs no CPU: on a 2-core machine, what two
workers gain over one then measures the system itself (HTTP, Redis, Dramatiq, the pipelines and batchers),
not how the 2 cores are shared between two models. Everything else is the real model's: the tiny model
named by MODEL_SERVER_TRANSLATION_MODEL is loaded for its tokenizer (token counts, chunking), decoding
options and model info; its weights never run. The outputs are a fixed placeholder, not translations.

Only model loading differs from the real CLI (`model_server.cli.load_services` is replaced before the
command runs): settings, start-up, signals, the app and the worker loop are the product's own code. The
stand-in is no product setting: it exists only here.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Sequence

from model_server.backends.base import GenerationOptions, Generated

PLACEHOLDER = "stand-in output"


class SleepingBackend:
    """Forwards tokenizer, options and info to a real backend; `generate` sleeps under a per-process lock."""

    def __init__(self, backend, batch_s: float, segment_s: float) -> None:
        self.backend = backend
        self.info = backend.info.model_copy(update={"extra": {
            **backend.info.extra, "standin": f"sleeps {batch_s * 1000:g} ms per batch + {segment_s * 1000:g} ms "
                                             "per segment (benchmarks/standin.py)"}})
        self.batch_s = batch_s
        self.segment_s = segment_s
        self._lock = threading.Lock()  # one batch at a time in this process, like one model on one device

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)

    def default_options(self) -> GenerationOptions:
        return self.backend.default_options()

    def generate(self, texts: Sequence[str], options: GenerationOptions) -> list[Generated]:
        with self._lock:
            time.sleep(self.batch_s + self.segment_s * len(texts))
        tokens = max(options.min_new_tokens, 1)
        return [Generated(text=PLACEHOLDER, score=-0.1, num_tokens=tokens, hit_max_length=False) for _ in texts]

    def close(self) -> None:
        self.backend.close()


def sleeping_loader(batch_s: float, segment_s: float):
    """A replacement for `model_server.cli.load_services`: the real services around a SleepingBackend."""

    def load_services(settings, *, summarization: bool | None = None):
        from model_server.services import Services, load_translation_backend

        return Services.from_backend(settings, SleepingBackend(load_translation_backend(settings), batch_s, segment_s))

    return load_services


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.standin", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["serve", "worker"], help="the model-server command to run")
    parser.add_argument("--batch-ms", type=float, required=True, help="sleep per generate() call")
    parser.add_argument("--segment-ms", type=float, required=True, help="extra sleep per segment in the call")
    args = parser.parse_args(argv)
    if args.batch_ms < 0 or args.segment_ms < 0:
        parser.error("--batch-ms and --segment-ms must be at least 0")
    from model_server import cli

    cli.load_services = sleeping_loader(args.batch_ms / 1000, args.segment_ms / 1000)
    return cli.main([args.command])


if __name__ == "__main__":
    sys.exit(main())
