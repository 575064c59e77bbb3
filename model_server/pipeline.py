"""The translation request path below HTTP: validate -> normalize -> segment -> chunk -> batch -> assemble.

Each text of a request is prepared and judged on its own, so one bad text never fails its neighbours;
all segments of the good texts are submitted to the dynamic batcher in one go. Their answers are read
as each batch settles (a suspect output is retried right then), so a caller can observe the sentences as
they finish, in order (`translate(..., on_sentences=...)`, model_server.streaming) without changing a result.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Sequence

from model_server.assembly import PlannedSentence, PreparedText, assemble_text
from model_server.backends.base import Generated, GenerationOptions, Seq2SeqBackend
from model_server.batching.batcher import DynamicBatcher, Lane
from model_server.errors import ServiceError
from model_server.quality import RETRY_FLAGS, QualityThresholds, assess, clean_english, severity
from model_server.cache import CachedOutput, TranslationCache
from model_server.cpu import CpuPool
from model_server.results import CacheCounts, ErrorBody, TextResult
from model_server.settings import NonArabic, Settings
from model_server.streaming import FinishedSegment, OnFinished, SegmentsDone, SentenceReleaser
from model_server.text import arabic_ratio, chunk_sentence, normalize_text, segment

if TYPE_CHECKING:
    from model_server.glossary import Glossary

log = logging.getLogger(__name__)

TOKEN_COUNT_CACHE_SIZE = 16384  # distinct segments whose token counts are kept
# Longer texts are counted afresh every time, so the memo holds at most 16384 keys of 1,000 characters
# (~32 MB of Arabic) however large the segments a client sends; counting a long text costs far more than
# the look-up would save, so re-sent articles lose little.
TOKEN_COUNT_MEMO_MAX_CHARS = 1000


@dataclass(frozen=True)
class TextLimits:
    """The per-text input checks, one home for every endpoint (plain text, markup, summaries, articles,
    the compat APIs): each raises ServiceError with the code and message clients rely on."""

    max_text_chars: int
    min_arabic_ratio: float

    def check_length(self, text: str) -> None:
        if len(text) > self.max_text_chars:
            raise ServiceError("text_too_long", f"text has {len(text)} characters; the limit is {self.max_text_chars}")

    @staticmethod
    def check_not_blank(text: str) -> None:
        if not text.strip():
            raise ServiceError("empty_text", "text is empty or contains only whitespace/control characters")

    def check_arabic(self, text: str) -> None:
        """not_arabic when under min_arabic_ratio of `text`'s letters are Arabic script."""
        ratio = arabic_ratio(text)
        if ratio < self.min_arabic_ratio:
            raise ServiceError("not_arabic", f"text does not look like Arabic ({ratio:.0%} of its letters are "
                               f"Arabic script, at least {self.min_arabic_ratio:.0%} required)")


@dataclass(frozen=True)
class PipelineConfig:
    """The settings the translation path needs, in one place (built from Settings)."""

    limits: TextLimits
    request_timeout_s: float
    max_new_tokens: int
    default_num_beams: int | None = None
    min_new_tokens: int = 0  # benchmark-only: forced decode lengths (0 = off)
    quality: QualityThresholds = QualityThresholds()
    retry_suspects: bool = True
    non_arabic_passthrough: bool = False  # settings.non_arabic: a not_arabic text comes back unchanged, flagged
    set_translated_direction: bool = True  # translated markup gets dir="ltr" / lang="en" (model_server/html/direction.py)

    @classmethod
    def from_settings(cls, settings: Settings) -> "PipelineConfig":
        return cls(
            limits=TextLimits(max_text_chars=settings.max_text_chars, min_arabic_ratio=settings.min_arabic_ratio),
            request_timeout_s=settings.request_timeout_s, max_new_tokens=settings.max_new_tokens,
            default_num_beams=settings.num_beams, min_new_tokens=settings.min_new_tokens,
            quality=QualityThresholds(low_score=settings.low_score_threshold),
            retry_suspects=settings.retry_suspect_sentences,
            non_arabic_passthrough=settings.non_arabic is NonArabic.passthrough,
            set_translated_direction=settings.set_translated_direction)


def safer_options(options: GenerationOptions) -> GenerationOptions:
    """Decoding that resists loops: beam search, no repeated trigrams, a mild repetition penalty."""
    return replace(options, num_beams=max(options.num_beams, 4), no_repeat_ngram_size=3,
                   repetition_penalty=max(options.repetition_penalty, 1.2))


@dataclass
class Timings:
    """Milliseconds per stage of one request."""

    prepare_ms: float = 0.0
    translate_ms: float = 0.0
    assemble_ms: float = 0.0
    total_ms: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in
                {"prepare": self.prepare_ms, "translate": self.translate_ms, "assemble": self.assemble_ms,
                 "total": self.total_ms, **self.extra}.items()}


def check_text(text: str, limits: TextLimits, *, arabic: bool = True) -> str:
    """The input checks of every text endpoint; returns the normalized text. Raises ServiceError
    (text_too_long, empty_text, not_arabic - the last only when `arabic`)."""
    limits.check_length(text)
    normalized = normalize_text(text)
    limits.check_not_blank(normalized)
    if arabic:
        limits.check_arabic(normalized)
    return normalized


def prepare_text(text: str, backend: Seq2SeqBackend, limits: TextLimits, *,
                 count_tokens: Callable[[str], int] | None = None) -> PreparedText:
    """Normalize, check, segment and chunk one text. Raises ServiceError (empty_text, not_arabic, text_too_long)
    for bad content. `count_tokens` defaults to the backend's (the pipeline passes a memoized one)."""
    count_tokens = count_tokens or backend.count_tokens
    normalized = check_text(text, limits)
    paragraphs = segment(normalized)
    sentences: list[PlannedSentence] = []
    for number, paragraph in enumerate(paragraphs):
        for sentence in paragraph.sentences:
            chunks = chunk_sentence(sentence.text, count_tokens, backend.info.max_input_tokens)
            sentences.append(PlannedSentence(paragraph=number, source=sentence.text, chunks=tuple(chunks)))
    separators = tuple(
        "\n\n" if "\n\n" in normalized[before.end:after.start] else "\n"
        for before, after in zip(paragraphs, paragraphs[1:]))
    return PreparedText(normalized=normalized, sentences=tuple(sentences), paragraph_separators=separators)


class TokenCounter:
    """`count(text)` with a bounded memo of short texts (TOKEN_COUNT_MEMO_MAX_CHARS): every segment is
    tokenized while chunking and again for its batch cost, and re-sent articles repeat sentences.
    The memo is thread-safe (the CPU pool's threads share it); `count` must be too."""

    def __init__(self, count: Callable[[str], int], *, maxsize: int = TOKEN_COUNT_CACHE_SIZE,
                 max_chars: int = TOKEN_COUNT_MEMO_MAX_CHARS) -> None:
        self._count = count
        self._memo = functools.lru_cache(maxsize=maxsize)(count)
        self.max_chars = max_chars

    def __call__(self, text: str) -> int:
        return self._memo(text) if len(text) <= self.max_chars else self._count(text)

    def cache_info(self):
        """The memo's hits, misses and size (functools.lru_cache's)."""
        return self._memo.cache_info()


class TranslationPipeline:
    def __init__(self, backend: Seq2SeqBackend, batcher: DynamicBatcher[str, Generated], config: PipelineConfig,
                 *, cache: TranslationCache | None = None, cpu: CpuPool | None = None) -> None:
        self.backend = backend
        # Per-request CPU work (preparation, markup, glossary matching) runs here, never on the event loop.
        self.cpu = cpu or CpuPool(1)
        self.batcher = batcher
        self.config = config
        self.count_tokens = TokenCounter(backend.count_tokens)
        self.cache = cache  # sentence-level translation cache (model_server.cache); None = off

    def options(self, *, num_beams: int | None = None, max_new_tokens: int | None = None) -> GenerationOptions:
        """The model's own defaults, then the service's settings, then the request; capped by the limit."""
        defaults = self.backend.default_options()
        limit = min(max_new_tokens or self.config.max_new_tokens, self.config.max_new_tokens)
        return GenerationOptions(
            num_beams=num_beams or self.config.default_num_beams or defaults.num_beams,
            max_new_tokens=limit,
            length_penalty=defaults.length_penalty,
            no_repeat_ngram_size=defaults.no_repeat_ngram_size,
            repetition_penalty=defaults.repetition_penalty,
            min_new_tokens=min(self.config.min_new_tokens, limit),
        )

    async def translate(self, texts: Sequence[str], options: GenerationOptions, *,
                        lane: Lane = Lane.interactive, glossary: "Glossary | None" = None,
                        on_sentences: OnFinished | None = None) -> tuple[list[TextResult], Timings]:
        """One result per text, in order. Preparation and assembly each run as one call in the CPU pool
        (`self.cpu`), the model work in the batcher: the event loop only waits.

        `on_sentences` (streaming, model_server.streaming): awaited with each wave of sentences (and text
        errors) as soon as they and everything before them are done, in order; the results returned are
        the same with or without it."""
        started = time.perf_counter()
        deadline = time.monotonic() + self.config.request_timeout_s
        timings = Timings()
        prepared = await self.cpu.run(self._prepare_all, texts)
        timings.prepare_ms = (time.perf_counter() - started) * 1000

        mark = time.perf_counter()
        segments = [seg for item in prepared if isinstance(item, PreparedText) for seg in item.segments]
        glossary = glossary if glossary is not None and glossary.entries else None
        on_done = await self._releasing(prepared, glossary, on_sentences) if on_sentences is not None else None
        marks = None  # glossary terms and misses per segment (model_server.glossary)
        if glossary is None:
            outputs, retried, hits = await self.translate_segments(segments, options, lane, deadline, on_done=on_done)
        else:
            from model_server.glossary import translate_with_glossary

            outputs, retried, hits, marks = await translate_with_glossary(self, glossary, segments, options, lane,
                                                                          deadline, on_done=on_done)
        timings.translate_ms = (time.perf_counter() - mark) * 1000

        mark = time.perf_counter()
        results = await self.cpu.run(self._assemble_all, prepared, outputs, retried, hits, glossary, marks)
        timings.assemble_ms = (time.perf_counter() - mark) * 1000
        timings.total_ms = (time.perf_counter() - started) * 1000
        return results, timings

    async def _releasing(self, prepared: Sequence[PreparedText | ServiceError | TextResult],
                         glossary: "Glossary | None", on_sentences: OnFinished) -> SegmentsDone:
        """The segment callback that releases sentences in order to `on_sentences` (texts that failed
        preparation before the first segment are released at once)."""
        releaser = SentenceReleaser(prepared, thresholds=self.config.quality, failure_error=_failure_error,
                                    glossary=glossary)

        async def segments_done(done: dict[int, FinishedSegment]) -> None:
            released = await self.cpu.run(releaser.add, done)  # assembly and quality checks: off the loop
            if released:
                await on_sentences(released)

        await segments_done({})
        return segments_done

    def _prepare_all(self, texts: Sequence[str]) -> list[PreparedText | ServiceError | TextResult]:
        return [self._prepare_or_error(text) for text in texts]

    def _assemble_all(self, prepared: Sequence[PreparedText | ServiceError | TextResult],
                      outputs: list[Generated | BaseException], retried: set[int], hits: list[bool] | None,
                      glossary: "Glossary | None", marks: list | None) -> list[TextResult]:
        """Each text's slice of the outputs back into its result, with its cache counts and glossary marks."""
        results = []
        position = 0
        for index, item in enumerate(prepared):
            count = len(item.segments) if isinstance(item, PreparedText) else 0
            own_retries = {i - position for i in retried if position <= i < position + count}
            results.append(self._assemble_or_error(index, item, outputs[position:position + count], own_retries))
            if hits is not None and isinstance(item, PreparedText):  # translation cache counts (model_server.cache)
                own_hits = sum(hits[position:position + count])
                results[-1].cache = CacheCounts(hits=own_hits, misses=count - own_hits)
            if marks is not None and isinstance(item, PreparedText):
                from model_server.glossary import mark_sentences

                mark_sentences(results[-1], item, glossary, marks[position:position + count])
            position += count
        return results

    async def translate_segments(self, segments: list[str], options: GenerationOptions, lane: Lane, deadline: float,
                                 *, contexts: Sequence[str] | None = None, on_done: SegmentsDone | None = None,
                                 ) -> tuple[list[Generated | BaseException], set[int], list[bool] | None]:
        """Translate prepared model inputs (chunks, as `PreparedText.segments` lists them) by `deadline`
        (time.monotonic()): the step between preparation and assembly, also used by model_server.glossary.

        Returns the outputs per segment (a `Generated`, or the exception that segment failed with), the
        indices re-generated by a quality retry, and which came from the cache (None when the cache is off).
        `contexts` (one per segment) joins the cache key: the same segment under another glossary version is
        another entry. Only cache misses go to the batcher, each distinct segment once; the final chosen
        output (after any retry) is what gets cached. With the cache off every position is its own key: each
        segment reaches the model, as the request's sentence count says. Raises ServiceError for what fails
        the whole request: timeout, queue_full, shutting_down, too_many_segments.

        `on_done` is awaited with each wave of final outputs by position (the cache hits first, then
        what each batch answers, after its retry): every position exactly once."""
        cache = self.cache if self.cache is not None and self.cache.enabled else None
        if cache is not None:
            keys = await self.cpu.run(_cache_keys, cache, options, segments, contexts)  # a hash per segment
            found = await cache.lookup(keys)
        else:
            keys, found = list(range(len(segments))), {}
        first: dict[str | int, int] = {}
        for i, key in enumerate(keys):
            if key not in found:
                first.setdefault(key, i)
        missing = list(first)
        fresh_done = None
        if on_done is not None:
            if found:
                await on_done({i: FinishedSegment(found[key].generated, found[key].retried)
                               for i, key in enumerate(keys) if key in found})
            fresh_done = _spread(on_done, missing, keys, found)
        fresh, fresh_retried = await self._generate_final([segments[first[key]] for key in missing], options, lane,
                                                          deadline, on_done=fresh_done)
        chosen = {key: (out, j in fresh_retried) for j, (key, out) in enumerate(zip(missing, fresh))}
        outputs: list[Generated | BaseException] = []
        retried = set()
        hits: list[bool] = []
        for i, key in enumerate(keys):
            entry = found.get(key)
            output, was_retried = (entry.generated, entry.retried) if entry is not None else chosen[key]
            outputs.append(output)
            hits.append(entry is not None)
            if was_retried:
                retried.add(i)
        if cache is None:
            return outputs, retried, None
        cache.record(sum(hits), len(hits) - sum(hits))
        await cache.store_many({key: CachedOutput(out, was_retried) for key, (out, was_retried) in chosen.items()
                                if isinstance(out, Generated)})
        return outputs, retried, hits

    def _prepare_or_error(self, text: str) -> PreparedText | ServiceError | TextResult:
        try:
            return prepare_text(text, self.backend, self.config.limits, count_tokens=self.count_tokens)
        except ServiceError as exc:
            if exc.code == "not_arabic" and self.config.non_arabic_passthrough:
                return TextResult(index=0, translation=text, passthrough=True)  # index set at assembly
            return exc

    async def _generate_final(self, segments: list[str], options: GenerationOptions, lane: Lane, deadline: float,
                              *, on_done: SegmentsDone | None = None,
                              ) -> tuple[list[Generated | BaseException], set[int]]:
        """Every segment's final output (cleaned up; a per-segment error kept as it is) and the indices
        re-generated by a quality retry. All segments go to the batcher at once; as each batch answers,
        its looping or cut-off outputs are re-generated once with safer decoding (keeping whichever has
        fewer problems, then the higher score) and the rest are final (`on_done`)."""
        outputs: list[Generated | BaseException] = [RuntimeError("not generated")] * len(segments)
        retried: set[int] = set()
        if not segments:
            return outputs, retried
        costs = await self.cpu.run(self._costs, segments)
        answered = _Answers()
        futures: list[asyncio.Future] = []

        def submit(indices: Sequence[int], group: GenerationOptions, is_retry: bool) -> None:
            submitted = self.batcher.submit_many([segments[i] for i in indices], costs=[costs[i] for i in indices],
                                                 group=group, lane=lane)
            futures.extend(submitted)
            for i, future in zip(indices, submitted):
                answered.watch(future, i, is_retry)

        submit(range(len(segments)), options, False)
        waiting = len(segments)
        try:
            while waiting:
                wave = await self._next_wave(answered, deadline)
                waiting -= len(wave)
                final, suspects = await self.cpu.run(self._settle_wave, segments, outputs, wave)
                if suspects:
                    submit(suspects, safer_options(options), True)
                    retried.update(suspects)
                    waiting += len(suspects)
                if on_done is not None and final:
                    await on_done({i: FinishedSegment(outputs[i], i in retried) for i in final})
        finally:
            for future in futures:  # a timed-out or disconnected client: drop its queued segments
                if future.done() and not future.cancelled():
                    future.exception()  # read, so asyncio never logs it as "never retrieved"
                future.cancel()
        return outputs, retried

    async def _next_wave(self, answered: "_Answers", deadline: float) -> list[tuple[int, bool, object]]:
        """The segments answered since the last wave (at least one): (index, is_retry, output or exception)."""
        entries = await answered.wave(max(deadline - time.monotonic(), 0.001))
        if not entries:
            raise ServiceError("timeout", f"translation did not finish within {self.config.request_timeout_s:g}s")
        return [(i, is_retry, _outcome(future)) for i, is_retry, future in entries]

    def _settle_wave(self, segments: Sequence[str], outputs: list[Generated | BaseException],
                     wave: Sequence[tuple[int, bool, object]]) -> tuple[list[int], list[int]]:
        """Clean up a wave's outputs into `outputs`; returns the indices now final and the suspects to retry
        (first-pass outputs that loop or were cut off, when retry_suspects is on)."""
        final: list[int] = []
        suspects: list[int] = []
        for i, is_retry, output in sorted(wave, key=lambda entry: entry[0]):
            output = _cleaned_one(output)
            if is_retry:
                current = outputs[i]
                if isinstance(output, Generated) and isinstance(current, Generated) and \
                        self._better(segments[i], output, current):
                    outputs[i] = output
                final.append(i)
                continue
            outputs[i] = output
            if self.config.retry_suspects and isinstance(output, Generated) and \
                    RETRY_FLAGS.intersection(self._flags(segments[i], output)):
                suspects.append(i)
            else:
                final.append(i)
        return final, suspects

    def _costs(self, segments: Sequence[str]) -> list[int]:
        return [self.count_tokens(segment) for segment in segments]

    def _flags(self, source: str, output: Generated) -> list[str]:
        return assess(source, output.text, score=output.score, hit_max_length=output.hit_max_length,
                      thresholds=self.config.quality)

    def _better(self, source: str, candidate: Generated, current: Generated) -> bool:
        return (severity(self._flags(source, candidate)), -candidate.score) < \
            (severity(self._flags(source, current)), -current.score)

    def _assemble_or_error(self, index: int, item: PreparedText | ServiceError | TextResult,
                           outputs: list[Generated | BaseException], retried: set[int]) -> TextResult:
        if isinstance(item, TextResult):  # passed through untranslated
            return item.model_copy(update={"index": index})
        if isinstance(item, ServiceError):
            return TextResult(index=index, error=ErrorBody(**item.to_dict()))
        failure = next((out for out in outputs if isinstance(out, BaseException)), None)
        if failure is not None:
            if not isinstance(failure, ServiceError):
                log.error("inference failed for text %d", index, exc_info=failure)
            return TextResult(index=index, error=ErrorBody(**_failure_error(failure).to_dict()))
        return assemble_text(index, item, outputs, retried=retried, thresholds=self.config.quality)  # type: ignore[arg-type]


def _cache_keys(cache: TranslationCache, options: GenerationOptions, segments: Sequence[str],
                contexts: Sequence[str] | None) -> list[str]:
    return [cache.key(options, segment, contexts[i] if contexts else "") for i, segment in enumerate(segments)]


class _Answers:
    """Batch futures as they settle, read a wave at a time. The reader waits on a plain future, so a
    cancelled request stops at that very step and its `finally` drops its queued segments at once (a
    coroutine waiter would take more loop steps, while the batcher could pick them)."""

    def __init__(self) -> None:
        self._settled: list[tuple[int, bool, asyncio.Future]] = []
        self._wake: asyncio.Future | None = None

    def watch(self, future: asyncio.Future, index: int, is_retry: bool) -> None:
        future.add_done_callback(lambda done: self._arrive((index, is_retry, done)))

    def _arrive(self, entry: tuple[int, bool, asyncio.Future]) -> None:
        self._settled.append(entry)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def wave(self, timeout_s: float) -> list[tuple[int, bool, asyncio.Future]]:
        """What settled since the last wave, waiting up to `timeout_s` for something; [] = timed out."""
        if not self._settled:
            self._wake = asyncio.get_running_loop().create_future()
            await asyncio.wait({self._wake}, timeout=timeout_s)
        wave, self._settled = self._settled, []
        return wave


def _failure_error(failure: BaseException) -> ServiceError:
    """What a text whose segment failed with `failure` reports."""
    return failure if isinstance(failure, ServiceError) else ServiceError(
        "inference_failed",
        f"the model failed on a segment of this text ({type(failure).__name__}); other texts are unaffected")


def _outcome(future: asyncio.Future) -> object:
    """A settled batch future's output, or the exception it failed (or was cancelled) with."""
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception() or future.result()


def _cleaned_one(output: object) -> object:
    """A model output with its English cleaned up (an error kept as it is)."""
    return output if isinstance(output, BaseException) else replace(output, text=clean_english(output.text))


def _spread(on_done: SegmentsDone, missing: Sequence, keys: Sequence, found: dict) -> SegmentsDone:
    """`on_done` for the distinct cache misses: each answer reported at every position with its key."""
    positions: dict = {}
    for i, key in enumerate(keys):
        if key not in found:
            positions.setdefault(key, []).append(i)

    async def done(answers: dict[int, FinishedSegment]) -> None:
        await on_done({i: answer for j, answer in answers.items() for i in positions[missing[j]]})

    return done
