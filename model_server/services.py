"""Wiring: settings -> backend -> batcher -> pipeline. Used by the HTTP app, the CLI and benchmarks."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Hashable

from model_server.backends.base import Generated, GenerationOptions, Seq2SeqBackend
from model_server.backends.loading import resolve_device, resolve_dtype, resolve_model_source
from model_server.batching.batcher import DynamicBatcher, Lane
from model_server.pipeline import PipelineConfig, TranslationPipeline
from model_server.settings import Backend, Profile, Settings

if TYPE_CHECKING:
    from model_server.metrics import Metrics

log = logging.getLogger(__name__)

TRANSLATION_ARCHITECTURES = ("marian",)


def load_translation_backend(settings: Settings) -> Seq2SeqBackend:
    """Load the configured translation model (building the tiny test model first in the tiny profile)."""
    if settings.profile is Profile.tiny:
        from model_server.tiny_models import ensure_tiny_marian

        ensure_tiny_marian(settings.tiny_marian_dir())
    name = settings.translation_model_source()
    if settings.backend is Backend.ctranslate2:
        from model_server.backends.ctranslate2_backend import load_ctranslate2_backend

        return load_ctranslate2_backend(settings, name, converted_dir=settings.ct2_model_dir, task="translation",
                                        architectures=TRANSLATION_ARCHITECTURES)
    source = resolve_model_source(name, settings.models_dir)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    from model_server.backends.torch_backend import TorchSeq2SeqBackend

    return TorchSeq2SeqBackend(name=name, source=source, task="translation",
                               architectures=TRANSLATION_ARCHITECTURES, device=device, dtype=dtype,
                               threads=settings.torch_threads, max_input_tokens=settings.max_input_tokens)


@dataclass
class ModelRunner:
    """A backend with its own executor thread and batch queue: blocking model calls never run on the
    event loop, and each model has exactly one thread touching it."""

    backend: Seq2SeqBackend
    batcher: DynamicBatcher[str, Generated]
    executor: ThreadPoolExecutor

    @classmethod
    def create(cls, backend: Seq2SeqBackend, settings: Settings, name: str) -> "ModelRunner":
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")

        async def process(group: Hashable, texts: list[str]) -> list[Generated]:
            assert isinstance(group, GenerationOptions)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(executor, backend.generate, texts, group)

        batcher: DynamicBatcher[str, Generated] = DynamicBatcher(
            process, max_batch_size=settings.max_batch_size, max_batch_tokens=settings.max_batch_tokens,
            max_wait_ms=settings.max_wait_ms, max_queue_items=settings.max_queue_segments, name=f"batcher-{name}")
        return cls(backend=backend, batcher=batcher, executor=executor)

    def start(self) -> None:
        self.batcher.start()

    def describe_batching(self) -> dict:
        batcher = self.batcher
        return {"max_batch_size": batcher.max_batch_size, "max_batch_tokens": batcher.max_batch_tokens,
                "max_wait_ms": batcher.max_wait_s * 1000, "max_queue": batcher.max_queue_items,
                "pending": batcher.pending(), **batcher.stats.to_dict()}

    async def close(self, drain_timeout_s: float) -> None:
        await self.batcher.close(drain_timeout_s)
        self.executor.shutdown(wait=True)
        self.backend.close()


@dataclass
class Services:
    settings: Settings
    translation: ModelRunner
    translator: TranslationPipeline

    @classmethod
    def from_backend(cls, settings: Settings, backend: Seq2SeqBackend) -> "Services":
        runner = ModelRunner.create(backend, settings, "translation")
        pipeline = TranslationPipeline(backend, runner.batcher, PipelineConfig.from_settings(settings))
        return cls(settings=settings, translation=runner, translator=pipeline)

    @classmethod
    def load(cls, settings: Settings) -> "Services":
        return cls.from_backend(settings, load_translation_backend(settings))

    def runners(self) -> list[ModelRunner]:
        """Every loaded model with its queue (one per model)."""
        return [self.translation]

    def instrument(self, metrics: "Metrics") -> None:
        """Report every model's queue depth, queue waits and batches to `metrics` (call before start())."""
        for runner in self.runners():
            model = runner.backend.info.task
            runner.batcher.observer = metrics.batch_observer(model)
            metrics.track_queue_depth(model, list(Lane), runner.batcher.pending)

    def start(self) -> None:
        for runner in self.runners():
            runner.start()

    @property
    def ready(self) -> bool:
        return all(runner.batcher.running for runner in self.runners())

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        await asyncio.gather(*(runner.close(drain_timeout_s) for runner in self.runners()))
