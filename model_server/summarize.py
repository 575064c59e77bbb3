"""Summaries below HTTP: long-article chunking, mT5 passes through the summarizer's own batch queue, and
the bilingual article strategies that combine it with the translation pipeline.

- `plan_chunks` (pure): an article as model inputs of at most `max_tokens` tokens each, made of whole
  paragraphs; a paragraph that alone is too long is split into sentences, a sentence that is too long by
  `chunk_sentence`. Nothing is ever truncated: joining the chunks gives back every visible character.
- `SummarizationPipeline.summarize`: one chunk -> one summary. More chunks -> a summary per chunk, then
  the joined chunk summaries are summarized the same way (another pass) until they fit in one input.
- `SummarizationPipeline.article`: title and body translated in one pipeline call while mT5 summarizes
  the Arabic body; then the English summary by the configured strategy:
  `translate-summary` (Marian translates the Arabic summary) or `summarize-both` (mT5 summarizes the
  English translation).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Awaitable, Literal, Sequence, TypeVar

from pydantic import BaseModel, Field

from model_server.backends.base import Generated, GenerationOptions, ModelInfo, Seq2SeqBackend
from model_server.batching.batcher import DynamicBatcher, Lane
from model_server.errors import ServiceError
from model_server.pipeline import TextLimits, TranslationPipeline, check_text
from model_server.presets import PresetCatalog, SummaryPreset, display_path
from model_server.results import TextResult
from model_server.settings import SummaryStrategy
from model_server.streaming import OnFinished
from model_server.text import chunk_sentence, normalize_text, segment

log = logging.getLogger(__name__)
T = TypeVar("T")

Lang = Literal["ar", "en"]


# --------------------------------------------------------------------------------------------
# Result shapes (also the API's response models, see model_server.api.summary_schemas)
# --------------------------------------------------------------------------------------------


class LongArticle(BaseModel):
    chunked: bool = Field(description="the text was longer than the summarizer's input limit")
    chunks: int = Field(description="model inputs of the first pass (1 = the text fitted)")
    passes: int = Field(description="summarization passes: 1, or more when chunk summaries were summarized again")


class SummaryText(BaseModel):
    text: str
    lang: Lang
    method: str = Field(description="how it was made: mt5(ar), mt5(en), marian(mt5(ar)) or mt5(en translation)")
    long_article: LongArticle | None = Field(None, description="chunking of mT5's input (null when Marian made it)")


OnSummary = Callable[[SummaryText], Awaitable[None]]  # streaming: a summary as soon as it is ready


class PresetRef(BaseModel):
    name: str
    version: str


class SummaryResult(BaseModel):
    summary: SummaryText
    preset: PresetRef
    model: ModelInfo
    long_article: LongArticle
    timing_ms: dict[str, float] = Field(description="milliseconds: prepare, summarize, total")


class BilingualSummary(BaseModel):
    ar: SummaryText
    en: SummaryText


class ArticleResult(BaseModel):
    id: str | None = Field(None, description="the request's id, echoed")
    metadata: dict[str, Any] | None = Field(None, description="the request's metadata, echoed")
    title: TextResult = Field(description="the translated title, same shape as a /translate result")
    body: TextResult = Field(description="the translated body, sentence-aligned, paragraphs kept")
    summary: BilingualSummary
    strategy: SummaryStrategy
    preset: PresetRef
    models: dict[str, ModelInfo] = Field(description="the models used: translation, summarization")
    long_article: LongArticle = Field(description="chunking of the Arabic body for its summary")
    timing_ms: dict[str, float] = Field(description="milliseconds per stage; translate and summarize_ar run "
                                                    "concurrently, so stages can add up to more than total")


# --------------------------------------------------------------------------------------------
# Planning (pure)
# --------------------------------------------------------------------------------------------


def model_input(prefix: str, text: str) -> str:
    """What the model reads: the preset's prefix, then the text with every whitespace run (newlines
    included) as one space, as on the XLSum model card."""
    return prefix + " ".join(text.split())


def plan_chunks(text: str, count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Split normalized `text` into chunks of consecutive whole paragraphs (one per line) with
    `count_tokens(chunk) <= max_tokens`; over-long paragraphs are split by sentences, over-long
    sentences by `chunk_sentence`. Chunks keep their paragraphs on separate lines. [] for blank text.

    Each piece is counted once and chunks are packed by adding counts (sentencepiece never merges across
    white space, so that is exact up to the special tokens, counted once per input); each chunk is then
    counted whole, and one that still exceeds the limit is re-packed counting every candidate."""
    units: list[tuple[str, int]] = []
    for paragraph in segment(text):
        whole = text[paragraph.start:paragraph.end]
        size = count_tokens(whole)
        if size <= max_tokens:
            units.append((whole, size))
            continue
        for sentence in paragraph.sentences:
            size = count_tokens(sentence.text)
            if size <= max_tokens:
                units.append((sentence.text, size))
            else:
                units.extend((piece, count_tokens(piece))
                             for piece in chunk_sentence(sentence.text, count_tokens, max_tokens))
    overhead = count_tokens("")  # special tokens (and a prefix) that every input carries once
    groups: list[list[str]] = []
    used = 0
    for unit, size in units:
        if groups and used + size - overhead <= max_tokens:
            groups[-1].append(unit)
            used += size - overhead
        else:
            groups.append([unit])
            used = size
    chunks: list[str] = []
    for group in groups:
        chunk = "\n".join(group)
        chunks.extend([chunk] if len(group) == 1 or count_tokens(chunk) <= max_tokens
                      else _pack_counting_each(group, count_tokens, max_tokens))
    return chunks


def _pack_counting_each(units: Sequence[str], count_tokens: Callable[[str], int], max_tokens: int) -> list[str]:
    """Greedy packing that counts every candidate chunk (for tokenizers whose counts do not add up)."""
    chunks: list[str] = []
    current: list[str] = []
    for unit in units:
        if current and count_tokens("\n".join([*current, unit])) <= max_tokens:
            current.append(unit)
            continue
        if current:
            chunks.append("\n".join(current))
        current = [unit]
    if current:
        chunks.append("\n".join(current))
    return chunks


async def gather_or_cancel(*work: Awaitable[Any]) -> list[Any]:
    """asyncio.gather, but the first failure cancels the siblings (their queued segments are dropped)."""
    tasks = [asyncio.ensure_future(item) for item in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


class SummarizationPipeline:
    """mT5 summaries through its own batcher, plus the article strategies over `translator`."""

    def __init__(self, backend: Seq2SeqBackend, batcher: DynamicBatcher[str, Generated],
                 translator: TranslationPipeline, presets: PresetCatalog, *,
                 strategy: SummaryStrategy = SummaryStrategy.translate_summary) -> None:
        self.backend = backend
        self.batcher = batcher
        self.translator = translator
        self.presets = presets
        self.strategy = strategy
        # Summaries are model output, not user input: translate them without the user-input checks.
        self.summary_translator = TranslationPipeline(
            translator.backend, translator.batcher,
            replace(translator.config, limits=TextLimits(max_text_chars=10**9, min_arabic_ratio=0.0)),
            cpu=translator.cpu)
        # Planning, tokenizing and checking scan the whole text: the translator's CPU pool, never the loop.
        self.cpu = translator.cpu
        for name in presets.names():
            self._check_fits(name, presets.get(name))

    @property
    def limits(self) -> TextLimits:
        return self.translator.config.limits

    @property
    def request_timeout_s(self) -> float:
        return self.translator.config.request_timeout_s

    def input_limit(self, preset: SummaryPreset) -> int:
        limit = self.backend.info.max_input_tokens
        return min(limit, preset.max_input_tokens) if preset.max_input_tokens else limit

    def _check_fits(self, name: str, preset: SummaryPreset) -> None:
        """Chunk summaries must fit two to an input, or long articles could never be reduced to one."""
        limit = self.input_limit(preset)
        prefix_tokens = self.backend.count_tokens(model_input(preset.prefix, ""))
        most = (limit - prefix_tokens) // 2 - 1
        if preset.generation.max_new_tokens > most:
            raise ServiceError("invalid_preset", (
                f"{display_path(self.presets.path_of(name))}: generation.max_new_tokens: "
                f"{preset.generation.max_new_tokens} is too long for the summarizer's input limit of {limit} tokens "
                f"(at most {most}: two summaries and the prefix must fit in one input to summarize long articles "
                f"in passes)"))

    # ---- summaries ----

    async def summarize(self, text: str, *, lang: Lang = "ar", preset: str | None = None,
                        lane: Lane = Lane.interactive) -> SummaryResult:
        """One text's summary in its own language. Raises ServiceError for bad input or a failure."""
        started = time.perf_counter()
        chosen = self.presets.get(preset)
        normalized = await self.cpu.run(check_text, text, self.limits, arabic=lang == "ar")
        prepared = time.perf_counter()
        summary, long_article = await self._within_timeout(self._summarize_text(normalized, chosen, lane))
        done = time.perf_counter()
        return SummaryResult(
            summary=SummaryText(text=summary, lang=lang, method=f"mt5({lang})", long_article=long_article),
            preset=PresetRef(name=chosen.name, version=chosen.version), model=self.backend.info,
            long_article=long_article,
            timing_ms=_ms({"prepare": prepared - started, "summarize": done - prepared, "total": done - started}))

    async def _summarize_text(self, text: str, preset: SummaryPreset, lane: Lane) -> tuple[str, LongArticle]:
        """Summarize normalized `text` in as many passes as it takes to fit the input limit."""
        limit = self.input_limit(preset)
        options = preset.generation.options()

        @functools.cache  # planning already counts every chunk it returns; the batch costs reuse those counts
        def count(chunk: str) -> int:
            return self.backend.count_tokens(model_input(preset.prefix, chunk))

        chunks, inputs, costs = await self.cpu.run(_plan_inputs, preset.prefix, text, count, limit)
        first, passes = len(chunks), 0
        while True:
            passes += 1
            summaries = await self._generate(inputs, costs, options, lane)
            if len(chunks) == 1:
                return summaries[0], LongArticle(chunked=first > 1, chunks=first, passes=passes)
            joined = "\n".join(s for s in summaries if s)
            if not joined:
                return "", LongArticle(chunked=True, chunks=first, passes=passes)
            next_chunks, inputs, costs = await self.cpu.run(_plan_inputs, preset.prefix, joined, count, limit)
            if len(next_chunks) >= len(chunks):
                raise ServiceError("inference_failed", (
                    f"the summaries of {len(chunks)} chunks do not fit in fewer chunks of {limit} tokens; "
                    f"use a preset with a smaller generation.max_new_tokens"))
            chunks = next_chunks

    async def _generate(self, inputs: Sequence[str], costs: Sequence[int], options: GenerationOptions,
                        lane: Lane) -> list[str]:
        futures = self.batcher.submit_many(list(inputs), costs=costs, group=options, lane=lane)
        try:
            outputs = await asyncio.gather(*futures)
        except ServiceError:
            raise
        except Exception as exc:  # noqa: BLE001 - the model failed on an input: one clear code
            log.error("summarization failed", exc_info=exc)
            raise ServiceError("inference_failed",
                               f"the summarizer failed on this text ({type(exc).__name__})") from None
        finally:
            for future in futures:  # failure, timeout or disconnect: drop what is still queued
                future.cancel()
        return [out.text for out in outputs]

    async def _within_timeout(self, work: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(work, self.request_timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError("timeout", f"not finished within {self.request_timeout_s:g}s") from None

    # ---- articles ----

    async def article(self, title: str, body: str, *, strategy: SummaryStrategy | str | None = None,
                      preset: str | None = None, lane: Lane = Lane.interactive, article_id: str | None = None,
                      metadata: dict[str, Any] | None = None, on_sentences: OnFinished | None = None,
                      on_summary: OnSummary | None = None) -> ArticleResult:
        """Translated title and body plus Arabic and English summaries of the body.

        Streaming (model_server.streaming): `on_sentences` gets the title's (text 0) and the body's (text 1)
        sentences in order as they are done, `on_summary` each summary as soon as it is ready (the Arabic
        one can come before the body's last sentences: it runs concurrently)."""
        started = time.perf_counter()
        strategy = SummaryStrategy(strategy) if strategy else self.strategy
        chosen = self.presets.get(preset)
        body_normalized = await self.cpu.run(_check_article, title, body, self.limits)
        timings: dict[str, float] = {"prepare": time.perf_counter() - started}
        result = await self._within_timeout(
            self._article(title, body, body_normalized, strategy, chosen, lane, timings, on_sentences,
                          on_summary or _ignore))
        title_result, body_result, summary, long_article = result
        timings["total"] = time.perf_counter() - started
        return ArticleResult(
            id=article_id, metadata=metadata, title=title_result, body=body_result, summary=summary,
            strategy=strategy, preset=PresetRef(name=chosen.name, version=chosen.version),
            models={"translation": self.translator.backend.info, "summarization": self.backend.info},
            long_article=long_article, timing_ms=_ms(timings))

    async def _article(self, title: str, body: str, body_normalized: str, strategy: SummaryStrategy,
                       preset: SummaryPreset, lane: Lane, timings: dict[str, float],
                       on_sentences: OnFinished | None, on_summary: OnSummary):
        options = self.translator.options()

        async def summarize_arabic() -> tuple[SummaryText, LongArticle]:
            text, long_article = await self._summarize_text(body_normalized, preset, lane)
            arabic = SummaryText(text=text, lang="ar", method="mt5(ar)", long_article=long_article)
            await on_summary(arabic)
            return arabic, long_article

        translated, (arabic, long_article) = await gather_or_cancel(
            _timed(timings, "translate", self.translator.translate([title, body], options, lane=lane,
                                                                   on_sentences=on_sentences)),
            _timed(timings, "summarize_ar", summarize_arabic()))
        results, _ = translated
        for field, result in zip(("title", "body"), results):
            _raise_text_error(field, result)
        title_result, body_result = results
        summary_ar = arabic.text
        if strategy is SummaryStrategy.summarize_both:
            english_source = await self.cpu.run(normalize_text, body_result.translation or "")
            text_en, long_en = ("", None)
            if english_source.strip():
                text_en, long_en = await _timed(timings, "summarize_en",
                                                self._summarize_text(english_source, preset, lane))
            english = SummaryText(text=text_en, lang="en", method="mt5(en translation)", long_article=long_en)
        else:
            text_en = ""
            if summary_ar.strip():
                (translated_summary,), _ = await _timed(
                    timings, "translate_summary", self.summary_translator.translate([summary_ar], options, lane=lane))
                _raise_text_error("summary", translated_summary)
                text_en = translated_summary.translation or ""
            english = SummaryText(text=text_en, lang="en", method="marian(mt5(ar))")
        await on_summary(english)
        return title_result, body_result, BilingualSummary(ar=arabic, en=english), long_article


async def _ignore(_: SummaryText) -> None:
    return None


def _plan_inputs(prefix: str, text: str, count: Callable[[str], int],
                 max_tokens: int) -> tuple[list[str], list[str], list[int]]:
    """One pass's preparation (it scans and tokenizes the whole text, so it runs in the CPU pool): the
    chunks of `text`, what the model reads for each, and their token counts (the batch costs)."""
    chunks = plan_chunks(text, count, max_tokens)
    return chunks, [model_input(prefix, chunk) for chunk in chunks], [count(chunk) for chunk in chunks]


def _check_article(title: str, body: str, limits: TextLimits) -> str:
    """Both fields checked (title first); returns the normalized body."""
    _check_field("title", title, limits)
    return _check_field("body", body, limits)


def _check_field(field: str, text: str, limits: TextLimits) -> str:
    """check_text, with the field named in the message (an article has two texts)."""
    try:
        return check_text(text, limits)
    except ServiceError as exc:
        raise ServiceError(exc.code, f"{field}: {exc.message}") from None


def _raise_text_error(field: str, result: TextResult) -> None:
    if result.error is not None:
        raise ServiceError(result.error.code, f"{field}: {result.error.message}")


async def _timed(timings: dict[str, float], stage: str, work: Awaitable[T]) -> T:
    mark = time.perf_counter()
    try:
        return await work
    finally:
        timings[stage] = time.perf_counter() - mark


def _ms(seconds: dict[str, float]) -> dict[str, float]:
    return {stage: round(value * 1000, 2) for stage, value in seconds.items()}
