"""Wiring: settings -> backend -> batcher -> pipeline. Used by the HTTP app, the CLI and benchmarks."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Hashable

from model_server.backends.base import Generated, GenerationOptions, Seq2SeqBackend
from model_server.backends.loading import dtype_choice, resolve_device, resolve_model_source, with_precision
from model_server.batching.batcher import DynamicBatcher, Lane
from model_server.cache import open_cache
from model_server.cpu import CpuPool
from model_server.errors import ServiceError
from model_server.pipeline import PipelineConfig, TranslationPipeline
from model_server.presets import PresetCatalog
from model_server.settings import Backend, Profile, Settings
from model_server.state import State, open_state
from model_server.state.glossaries import GlossaryStore
from model_server.summarize import SummarizationPipeline
from model_server.tuning import LIMIT_NAMES, BatchLimits, TuneConfig, backend_fingerprint, read_entries, \
    resolve_limits, tune, write_entry

if TYPE_CHECKING:
    from model_server.metrics import Metrics

log = logging.getLogger(__name__)

TRANSLATION_ARCHITECTURES = ("marian",)
SUMMARIZATION_ARCHITECTURES = ("mt5", "t5")


def load_translation_backend(settings: Settings, model: str | None = None, *,
                             model_thread: ThreadPoolExecutor | None = None) -> Seq2SeqBackend:
    """Load the configured translation model, or `model` (an extra one), building the tiny test model first
    in the tiny profile. `model_thread`: on torch, a thread shared with other torch backends (see
    TorchSeq2SeqBackend; the benchmarks share one so that their in-process models run as one server's)."""
    if settings.profile is Profile.tiny:
        from model_server.tiny_models import ensure_tiny_marian

        ensure_tiny_marian(settings.tiny_marian_dir())
    name = model or settings.translation_model_source()
    if settings.backend is Backend.ctranslate2:
        from model_server.backends.ctranslate2_backend import load_ctranslate2_backend

        # ct2_model_dir is the conversion of the default model; extra models are converted on start.
        converted = settings.ct2_model_dir if model is None else None
        return load_ctranslate2_backend(settings, name, converted_dir=converted, task="translation",
                                        architectures=TRANSLATION_ARCHITECTURES,
                                        max_input_tokens=settings.max_input_tokens)
    source = resolve_model_source(name, settings.models_dir)
    return _load_torch_backend(settings, name, source, task="translation", architectures=TRANSLATION_ARCHITECTURES,
                               max_input_tokens=settings.max_input_tokens, model_thread=model_thread)


def load_summarization_backend(settings: Settings) -> Seq2SeqBackend:
    """Load the configured summarization model (building the tiny test mT5 first in the tiny profile) on
    the engine `summarization_backend` names, independent of the translation `backend`: on ctranslate2
    from ct2_summarization_model_dir or, with ct2_convert_on_start, a conversion in ct2_cache_dir.

    mT5 overflows float16, so `auto` never means float16 here: torch runs bfloat16 (float32 without it)
    on CUDA, CTranslate2 int8_bfloat16 (int8_float32 without it); on CPU `auto` follows the CPU's native bf16
    detection as for translation."""
    if settings.profile is Profile.tiny:
        from model_server.tiny_models import ensure_tiny_mt5

        ensure_tiny_mt5(settings.tiny_mt5_dir())
    name = settings.summarization_model_source()
    if settings.summarization_backend is Backend.ctranslate2:
        try:
            settings.check_summarizer_engine()
        except ValueError as exc:
            raise ServiceError("model_unavailable", str(exc)) from None
        from model_server.backends.ctranslate2_backend import load_ctranslate2_backend

        try:
            return load_ctranslate2_backend(settings, name, converted_dir=settings.ct2_summarization_model_dir,
                                            task="summarization", architectures=SUMMARIZATION_ARCHITECTURES,
                                            max_input_tokens=settings.summary_max_input_tokens)
        except ServiceError as exc:
            raise ServiceError(exc.code, f"summarization model: {exc.message}") from None
    try:
        source = resolve_model_source(name, settings.models_dir,
                                      setting_example="MODEL_SERVER_SUMMARIZATION_MODEL=/models/mt5-xlsum")
    except ServiceError as exc:
        raise ServiceError(exc.code, f"summarization model: {exc.message} Or serve translation only with "
                           "MODEL_SERVER_SUMMARIZATION_ENABLED=false.") from None
    # mT5 overflows float16: on cuda `auto` is bfloat16 or float32 for it (choose_dtype).
    return _load_torch_backend(settings, name, source, task="summarization",
                               architectures=SUMMARIZATION_ARCHITECTURES,
                               max_input_tokens=settings.summary_max_input_tokens)


def _load_torch_backend(settings: Settings, name: str, source: str, *, task: str, architectures: tuple[str, ...],
                        max_input_tokens: int | None,
                        model_thread: ThreadPoolExecutor | None = None) -> Seq2SeqBackend:
    """A model on torch, on the configured device, in the dtype chosen for this task and machine (recorded)."""
    device = resolve_device(settings.device)
    dtype, reason = dtype_choice(settings.dtype, device, task=task)
    from model_server.backends.torch_backend import TorchSeq2SeqBackend, attention_choice

    attention, attention_source = attention_choice(settings.torch_attention.value, settings.tuning_path(), name,
                                                   source, dtype, device)
    backend = TorchSeq2SeqBackend(name=name, source=source, task=task, architectures=architectures, device=device,
                                  dtype=dtype, threads=settings.torch_threads, max_input_tokens=max_input_tokens,
                                  model_thread=model_thread, restrict_output_vocab=settings.restrict_output_vocab,
                                  attention=attention)
    backend.info = with_precision(backend.info, settings.dtype.value, dtype, reason)
    backend.info = backend.info.model_copy(update={"extra": {**backend.info.extra,
                                                             "attention_source": attention_source}})
    log.info("%s on torch: %s attention (%s)", name, attention, attention_source)
    return backend


def hypotheses_per_segment(group: Hashable) -> int:
    """What one segment of a batch group costs the engine: beam search computes num_beams hypotheses."""
    assert isinstance(group, GenerationOptions)
    return group.num_beams


def _limits_with(settings: Settings, entry: dict | None, **where) -> BatchLimits:
    """The three limits: those set explicitly (flag or variable: pydantic's model_fields_set), then `entry`'s,
    then the settings' defaults."""
    return resolve_limits({name: getattr(settings, name) for name in LIMIT_NAMES},
                          settings.model_fields_set & set(LIMIT_NAMES), entry, **where)


def setting_limits(settings: Settings, untuned_because: str = "no tuning entry for this model/machine") -> BatchLimits:
    """The batch limits the settings give (explicit or default), without a tuning entry."""
    return _limits_with(settings, None, untuned_because=untuned_because)


def translation_limits(settings: Settings, backend: Seq2SeqBackend, entries: dict[str, dict]) -> BatchLimits:
    """The batch limits for a translation model: its tuning entry (model, engine, precision, beams, threads,
    machine: model_server/tuning.py) where one matches, measured now with `autotune`; settings set explicitly
    win over it."""
    path = settings.tuning_path()
    if not entries and not settings.autotune:
        return setting_limits(settings)  # no file: nothing to look up
    num_beams = settings.num_beams or backend.default_options().num_beams
    key, _ = backend_fingerprint(backend, num_beams)
    entry = entries.get(key)
    if entry is None and settings.autotune:
        log.info("autotune: no tuning entry for %s (beam %d) on this machine in %s; measuring (model-server tune)",
                 backend.info.name, num_beams, path)
        key, entry = tune(backend, num_beams, TuneConfig(max_latency_s=settings.tune_max_batch_latency_s))
        entries[key] = entry
        try:
            write_entry(path, key, entry)
        except OSError as exc:  # a read-only models dir: serve with what was measured, measure again next time
            log.warning("autotune: cannot write %s (%s); using the measured limits for this run only", path, exc)
    return _limits_with(settings, entry, file=path, key=key)


@dataclass
class ModelRunner:
    """A backend with its own executor threads and batch queue: blocking model calls never run on the
    event loop. One thread per model, or one per parallel call where the backend runs independent replicas
    (`parallel_calls`, CTranslate2's inter_threads): the batcher then runs that many batches at once."""

    backend: Seq2SeqBackend
    batcher: DynamicBatcher[str, Generated]
    executor: ThreadPoolExecutor
    name: str = "translation"  # label in /v1/models and metrics: the task, or "translation:<alias>"
    limits: BatchLimits | None = None  # the batch limits in use and where each came from

    @classmethod
    def create(cls, backend: Seq2SeqBackend, settings: Settings, name: str,
               limits: BatchLimits | None = None) -> "ModelRunner":
        """`limits`: the batch limits (default: the settings' own, `setting_limits`)."""
        limits = limits or setting_limits(settings)
        log.info("%s %s", name, limits.describe(),
                 extra={"fields": {"model": name, "batching_sources": limits.sources, "tuning": limits.tuning}})
        parallel = max(1, getattr(backend, "parallel_calls", 1))
        executor = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix=f"model-{name}")
        generate = functools.partial(backend.generate, parallel=True) if parallel > 1 else backend.generate

        async def process(group: Hashable, texts: list[str]) -> list[Generated]:
            assert isinstance(group, GenerationOptions)
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(executor, generate, texts, group)

        batcher: DynamicBatcher[str, Generated] = DynamicBatcher(
            process, max_batch_size=limits.max_batch_size, max_batch_tokens=limits.max_batch_tokens,
            max_batch_hypotheses=limits.max_batch_hypotheses, group_weight=hypotheses_per_segment,
            max_wait_ms=settings.max_wait_ms, max_collect_ms=settings.max_collect_ms,
            max_queue_items=settings.max_queue_segments, name=f"batcher-{name}",
            rebatch_wait_fraction=settings.rebatch_wait_fraction, rebatch_gap_ms=settings.rebatch_gap_ms,
            parallel_batches=parallel)
        return cls(backend=backend, batcher=batcher, executor=executor, name=name, limits=limits)

    def start(self) -> None:
        self.batcher.start()

    def describe_batching(self) -> dict:
        batcher = self.batcher
        return {"max_batch_size": batcher.max_batch_size, "max_batch_hypotheses": batcher.max_batch_hypotheses,
                "max_batch_tokens": batcher.max_batch_tokens,
                # per limit: "settings" (set explicitly), "tuning" (the tuning file's entry) or "defaults"
                "limits_source": self.limits.sources if self.limits else None,
                "tuning": self.limits.tuning if self.limits else None,
                "max_wait_ms": batcher.max_wait_s * 1000, "max_collect_ms": batcher.max_collect_s * 1000,
                "max_queue": batcher.max_queue_items, "parallel_batches": batcher.parallel_batches,
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
    # None when summarization is disabled (or not injected): summary endpoints then answer 503.
    summarization: ModelRunner | None = None
    summarizer: SummarizationPipeline | None = None
    # Shared state (model_server/state/): embedded (this process, state_path) or Redis (state_url).
    state: State | None = None
    glossaries: GlossaryStore | None = None  # state.glossaries; None when its SQLite file cannot be opened (503)
    # Extra translation models by alias (setting extra_translation_models), each with its own queue.
    extra_translation: dict[str, ModelRunner] = field(default_factory=dict)
    extra_translators: dict[str, TranslationPipeline] = field(default_factory=dict)

    @classmethod
    def from_backend(cls, settings: Settings, backend: Seq2SeqBackend, *,
                     summarization_backend: Seq2SeqBackend | None = None,
                     presets: PresetCatalog | None = None,
                     extra_backends: dict[str, Seq2SeqBackend] | None = None,
                     tuning_entries: dict[str, dict] | None = None, state: State | None = None) -> "Services":
        """`tuning_entries`: the tuning file's entries, when already read (default: read it now); `state`: the
        app's shared state (default: opened now from the settings; the services close it)."""
        entries = read_entries(settings.tuning_path()) if tuning_entries is None else tuning_entries
        runner = ModelRunner.create(backend, settings, "translation", translation_limits(settings, backend, entries))
        cpu = CpuPool(settings.prepare_workers)
        pipeline = TranslationPipeline(backend, runner.batcher, PipelineConfig.from_settings(settings),
                                       cache=open_cache(settings, backend.info), cpu=cpu)
        state = state or open_state(settings)
        services = cls(settings=settings, translation=runner, translator=pipeline, state=state,
                       glossaries=state.glossaries)
        for alias, extra in (extra_backends or {}).items():
            extra_runner = ModelRunner.create(extra, settings, f"translation:{alias}",
                                              translation_limits(settings, extra, entries))
            services.extra_translation[alias] = extra_runner
            services.extra_translators[alias] = TranslationPipeline(
                extra, extra_runner.batcher, PipelineConfig.from_settings(settings),
                cache=open_cache(settings, extra.info), cpu=cpu)
        if summarization_backend is not None:
            presets = presets or PresetCatalog.load(settings.prompts_path(), settings.default_summary_preset)
            summary_runner = ModelRunner.create(summarization_backend, settings, "summarization",
                                                setting_limits(settings, "model-server tune measures translation only"))
            services.summarization = summary_runner
            services.summarizer = SummarizationPipeline(summarization_backend, summary_runner.batcher, pipeline,
                                                        presets, strategy=settings.summary_strategy)
        return services

    @classmethod
    def load(cls, settings: Settings, *, summarization: bool | None = None, state: State | None = None) -> "Services":
        """Load the models. `summarization` (default: the summarization_enabled setting) False = translation only;
        `state` as for from_backend."""
        presets = None
        if settings.summarization_enabled if summarization is None else summarization:
            # Presets first: a bad file fails start-up in milliseconds, before any model is loaded.
            presets = PresetCatalog.load(settings.prompts_path(), settings.default_summary_preset)
        entries = read_entries(settings.tuning_path())  # a corrupt tuning file fails now too, naming it
        backend = load_translation_backend(settings)
        loaded = [backend]
        try:
            extras = {}
            for alias, model in settings.extra_translation_models.items():
                extras[alias] = load_translation_backend(settings, model)
                loaded.append(extras[alias])
            if presets is None:
                return cls.from_backend(settings, backend, extra_backends=extras, tuning_entries=entries, state=state)
            summarizer = load_summarization_backend(settings)
            loaded.append(summarizer)
            if not summarizer.info.test_model:
                presets.check_model(summarizer.info.name)
            return cls.from_backend(settings, backend, summarization_backend=summarizer, presets=presets,
                                    extra_backends=extras, tuning_entries=entries, state=state)
        except BaseException:
            for model in loaded:  # e.g. a preset too long for the model's input limit
                model.close()
            raise

    @property
    def cpu(self) -> CpuPool:
        """The one pool for per-request CPU work (model_server/cpu.py): every pipeline shares the translator's."""
        return self.translator.cpu

    def runners(self) -> list[ModelRunner]:
        """Every loaded model with its queue (one per model)."""
        return ([self.translation, *self.extra_translation.values()]
                + ([self.summarization] if self.summarization is not None else []))

    def translator_for(self, model: str | None) -> TranslationPipeline:
        """The pipeline of the model a request names: None or 'default' (or the default model's id) is the
        default model; otherwise an alias of extra_translation_models (or that model's id)."""
        if model in (None, "default", self.translator.backend.info.name):
            return self.translator
        for alias, pipeline in self.extra_translators.items():
            if model in (alias, pipeline.backend.info.name):
                return pipeline
        names = ", ".join(["default", *self.extra_translators])
        raise ServiceError("unknown_model", f"no translation model named {model!r}; available: {names}")

    def instrument(self, metrics: "Metrics") -> None:
        """Report every model's queue depth, queue waits and batches to `metrics` (call before start())."""
        for runner in self.runners():
            model = runner.name
            runner.batcher.observer = metrics.batch_observer(model)
            metrics.track_queue_depth(model, list(Lane), runner.batcher.pending)
        if self.translator.cache is not None:
            self.translator.cache.observer = metrics.cache_observer("translation")
            self.translator.cache._observe("error", self.translator.cache.counters.errors)  # failed to open

    def start(self) -> None:
        for runner in self.runners():
            runner.start()

    @property
    def ready(self) -> bool:
        return all(runner.batcher.running for runner in self.runners())

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        await asyncio.gather(*(runner.close(drain_timeout_s) for runner in self.runners()))
        for pipeline in (self.translator, *self.extra_translators.values()):
            if pipeline.cache is not None:
                await asyncio.to_thread(pipeline.cache.close)
        if self.state is not None:
            self.state.close()  # and its glossary store
        self.cpu.close()
