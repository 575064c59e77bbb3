"""The translation request path below HTTP: validate -> normalize -> segment -> chunk -> batch -> assemble.

Each text of a request is prepared and judged on its own, so one bad text never fails its neighbours;
all segments of the good texts are submitted to the dynamic batcher in one go.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

from model_server.assembly import PlannedSentence, PreparedText, assemble_text
from model_server.backends.base import Generated, GenerationOptions, Seq2SeqBackend
from model_server.batching.batcher import DynamicBatcher, Lane
from model_server.errors import ServiceError
from model_server.results import ErrorBody, TextResult
from model_server.text import arabic_ratio, chunk_sentence, normalize_text, segment

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextLimits:
    max_text_chars: int
    min_arabic_ratio: float


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


def prepare_text(text: str, backend: Seq2SeqBackend, limits: TextLimits) -> PreparedText:
    """Normalize, check, segment and chunk one text. Raises ServiceError (empty_text, not_arabic, text_too_long) for bad content."""
    if len(text) > limits.max_text_chars:
        raise ServiceError("text_too_long", f"text has {len(text)} characters; the limit is {limits.max_text_chars}")
    normalized = normalize_text(text)
    if not normalized.strip():
        raise ServiceError("empty_text", "text is empty or contains only whitespace/control characters")
    ratio = arabic_ratio(normalized)
    if ratio < limits.min_arabic_ratio:
        raise ServiceError("not_arabic", f"text does not look like Arabic ({ratio:.0%} of its letters are "
                           f"Arabic script, at least {limits.min_arabic_ratio:.0%} required)")
    paragraphs = segment(normalized)
    sentences: list[PlannedSentence] = []
    for number, paragraph in enumerate(paragraphs):
        for sentence in paragraph.sentences:
            chunks = chunk_sentence(sentence.text, backend.count_tokens, backend.info.max_input_tokens)
            sentences.append(PlannedSentence(paragraph=number, source=sentence.text, chunks=tuple(chunks)))
    separators = tuple(
        "\n\n" if "\n\n" in normalized[before.end:after.start] else "\n"
        for before, after in zip(paragraphs, paragraphs[1:]))
    return PreparedText(normalized=normalized, sentences=tuple(sentences), paragraph_separators=separators)


class TranslationPipeline:
    def __init__(self, backend: Seq2SeqBackend, batcher: DynamicBatcher[str, Generated], limits: TextLimits,
                 *, request_timeout_s: float, max_new_tokens: int, default_num_beams: int | None = None,
                 min_new_tokens: int = 0) -> None:
        self.backend = backend
        self.batcher = batcher
        self.limits = limits
        self.request_timeout_s = request_timeout_s
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens  # benchmark-only: forced decode lengths (0 = off)
        self.default_num_beams = default_num_beams

    def options(self, *, num_beams: int | None = None, max_new_tokens: int | None = None) -> GenerationOptions:
        """The model's own defaults, then the service's settings, then the request; capped by the limit."""
        defaults = self.backend.default_options()
        limit = min(max_new_tokens or self.max_new_tokens, self.max_new_tokens)
        return GenerationOptions(
            num_beams=num_beams or self.default_num_beams or defaults.num_beams,
            max_new_tokens=limit,
            length_penalty=defaults.length_penalty,
            no_repeat_ngram_size=defaults.no_repeat_ngram_size,
            repetition_penalty=defaults.repetition_penalty,
            min_new_tokens=min(self.min_new_tokens, limit),
        )

    async def translate(self, texts: Sequence[str], options: GenerationOptions, *,
                        lane: Lane = Lane.interactive) -> tuple[list[TextResult], Timings]:
        started = time.perf_counter()
        timings = Timings()
        prepared: list[PreparedText | ServiceError] = [self._prepare_or_error(t) for t in texts]
        timings.prepare_ms = (time.perf_counter() - started) * 1000

        mark = time.perf_counter()
        outputs = await self._run_segments(prepared, options, lane)
        timings.translate_ms = (time.perf_counter() - mark) * 1000

        mark = time.perf_counter()
        results = [self._assemble_or_error(i, item, outputs[i]) for i, item in enumerate(prepared)]
        timings.assemble_ms = (time.perf_counter() - mark) * 1000
        timings.total_ms = (time.perf_counter() - started) * 1000
        return results, timings

    def _prepare_or_error(self, text: str) -> PreparedText | ServiceError:
        try:
            return prepare_text(text, self.backend, self.limits)
        except ServiceError as exc:
            return exc

    async def _run_segments(self, prepared: Sequence[PreparedText | ServiceError], options: GenerationOptions,
                            lane: Lane) -> list[list[Generated | BaseException]]:
        """Submit every segment of every good text at once; return each text's outputs in order."""
        segments = [seg for item in prepared if isinstance(item, PreparedText) for seg in item.segments]
        if not segments:
            return [[] for _ in prepared]
        costs = [self.backend.count_tokens(seg) for seg in segments]
        futures = self.batcher.submit_many(segments, costs=costs, group=options, lane=lane)
        try:
            flat = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), self.request_timeout_s)
        except asyncio.TimeoutError:
            raise ServiceError("timeout", f"translation did not finish within {self.request_timeout_s:g}s") from None
        finally:
            for future in futures:  # a timed-out or disconnected client: drop its queued segments
                future.cancel()
        per_text: list[list[Generated | BaseException]] = []
        position = 0
        for item in prepared:
            count = len(item.segments) if isinstance(item, PreparedText) else 0
            per_text.append(list(flat[position:position + count]))
            position += count
        return per_text

    def _assemble_or_error(self, index: int, item: PreparedText | ServiceError,
                           outputs: list[Generated | BaseException]) -> TextResult:
        if isinstance(item, ServiceError):
            return TextResult(index=index, error=ErrorBody(**item.to_dict()))
        failure = next((out for out in outputs if isinstance(out, BaseException)), None)
        if failure is not None:
            error = failure if isinstance(failure, ServiceError) else ServiceError(
                "inference_failed",
                f"the model failed on a segment of this text ({type(failure).__name__}); other texts are unaffected")
            if not isinstance(failure, ServiceError):
                log.error("inference failed for text %d", index, exc_info=failure)
            return TextResult(index=index, error=ErrorBody(**error.to_dict()))
        return assemble_text(index, item, outputs)  # type: ignore[arg-type]
