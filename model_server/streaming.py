"""Sentences as they finish, in source order: the hook behind streamed requests (Accept: text/event-stream).

`TranslationPipeline.translate_segments` reports each model segment once its output is final (after its
quality retry; after glossary restoration, or the re-translation of a segment that lost a placeholder) as a
`FinishedSegment`, one wave at a time (the segments a batch answered, or the cache hits). A `SentenceReleaser`
turns those waves into `Finished` items in order: a sentence is released once it and every sentence before
it (of its text, and of the texts before it) are done; it is built by the same `assemble_sentence` as the
whole text, so the released sentences are exactly the final result's. A text that failed is released as
its error, in its place; a passed-through (non-Arabic) text has no sentences and releases nothing.

Nothing here knows about HTTP or SSE (model_server.api.sse does), and batching is untouched: the segments
go to the batcher as they always do; only the order in which their results are read changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Sequence

from model_server.assembly import PreparedText, assemble_sentence
from model_server.backends.base import Generated
from model_server.errors import ServiceError
from model_server.quality import QualityThresholds
from model_server.results import ErrorBody, SentenceResult, TextResult

if TYPE_CHECKING:
    from model_server.glossary import Glossary, SegmentMarks


@dataclass(frozen=True)
class FinishedSegment:
    """One model segment's final output (or the exception it failed with)."""

    output: Generated | BaseException
    retried: bool = False  # re-generated once with safer decoding
    mark: "SegmentMarks | None" = None  # with a glossary: its terms, and whether it was re-translated unprotected


@dataclass(frozen=True)
class Finished:
    """One released piece of a translation: a sentence of text `text`, or that text's error."""

    text: int
    sentence: SentenceResult | None = None
    error: ErrorBody | None = None


# Waves of final segments by position (among all segments the call translates), and of released items.
SegmentsDone = Callable[[dict[int, FinishedSegment]], Awaitable[None]]
OnFinished = Callable[[list[Finished]], Awaitable[None]]


class SentenceReleaser:
    """Collects final segments and releases whole sentences in order (see the module doc).

    `prepared` is what the pipeline prepared per text (a PreparedText, the text's ServiceError, or a
    passed-through TextResult); segment positions count the PreparedTexts' segments in order. `add` is
    called one wave at a time (never concurrently)."""

    def __init__(self, prepared: Sequence[PreparedText | ServiceError | TextResult], *,
                 thresholds: QualityThresholds, failure_error: Callable[[BaseException], ServiceError],
                 glossary: "Glossary | None" = None) -> None:
        self._prepared = prepared
        self._thresholds = thresholds
        self._failure_error = failure_error
        self._glossary = glossary
        self._done: dict[int, FinishedSegment] = {}
        self._text = 0       # the text being released
        self._sentence = 0   # its next sentence
        self._position = 0   # that sentence's first segment
        self._text_end = 0   # the position after the current text's segments

    def add(self, done: dict[int, FinishedSegment]) -> list[Finished]:
        """Take a wave of final segments; return what is now releasable, in order."""
        self._done.update((position, item) for position, item in done.items() if position >= self._position)
        released: list[Finished] = []
        while self._text < len(self._prepared):
            item = self._prepared[self._text]
            if isinstance(item, ServiceError):
                released.append(Finished(self._text, error=ErrorBody(**item.to_dict())))
                self._next_text()
                continue
            if not isinstance(item, PreparedText) or self._sentence == len(item.sentences):
                self._next_text()  # passed through, or every sentence released
                continue
            if self._sentence == 0:
                self._text_end = self._position + len(item.segments)
            planned = item.sentences[self._sentence]
            positions = range(self._position, self._position + len(planned.chunks))
            if any(position not in self._done for position in positions):
                break
            parts = [self._done.pop(position) for position in positions]
            failure = next((part.output for part in parts if isinstance(part.output, BaseException)), None)
            if failure is not None:  # the text's result is this error: the rest of it is never released
                released.append(Finished(self._text, error=ErrorBody(**self._failure_error(failure).to_dict())))
                self._position = self._text_end
                self._next_text()
                continue
            released.append(Finished(self._text, sentence=self._sentence_of(planned, parts)))
            self._position += len(planned.chunks)
            self._sentence += 1
        return released

    def _sentence_of(self, planned, parts: list[FinishedSegment]) -> SentenceResult:
        sentence = assemble_sentence(self._sentence, planned, [part.output for part in parts],  # type: ignore[misc]
                                     retried=any(part.retried for part in parts), thresholds=self._thresholds)
        if self._glossary is not None and all(part.mark is not None for part in parts):
            from model_server.glossary import mark_sentence

            mark_sentence(sentence, self._glossary, [part.mark for part in parts])  # type: ignore[misc]
        return sentence

    def _next_text(self) -> None:
        self._text += 1
        self._sentence = 0
