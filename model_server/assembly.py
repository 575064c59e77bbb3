"""Assembly: model outputs back into sentences, paragraphs and whole texts shaped like the source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from model_server.backends.base import Generated
from model_server.quality import RETRIED, QualityThresholds, assess, needs_review
from model_server.results import ReviewSummary, SentenceResult, TextResult


@dataclass(frozen=True)
class PlannedSentence:
    paragraph: int
    source: str
    chunks: tuple[str, ...]   # model inputs; more than one when the sentence exceeded the model's limit


@dataclass(frozen=True)
class PreparedText:
    """A text after normalization, segmentation and chunking, ready for the model."""

    normalized: str
    sentences: tuple[PlannedSentence, ...]
    paragraph_separators: tuple[str, ...]  # separator *after* paragraph i (len = paragraphs - 1)

    @property
    def segments(self) -> list[str]:
        return [chunk for sentence in self.sentences for chunk in sentence.chunks]

    @property
    def paragraph_count(self) -> int:
        return len(self.paragraph_separators) + 1 if self.sentences else 0


def assemble_text(index: int, prepared: PreparedText, generated: Sequence[Generated], *,
                  retried: set[int] = frozenset(), thresholds: QualityThresholds = QualityThresholds()) -> TextResult:
    """Join chunk translations into sentences and sentences into paragraphs, in source order, and flag
    suspect sentences. `retried` holds the indices of segments that were re-generated."""
    if len(generated) != len(prepared.segments):
        raise ValueError(f"{len(generated)} outputs for {len(prepared.segments)} segments")
    sentences: list[SentenceResult] = []
    position = 0
    for sentence_index, planned in enumerate(prepared.sentences):
        parts = generated[position:position + len(planned.chunks)]
        was_retried = any(position + k in retried for k in range(len(parts)))
        position += len(planned.chunks)
        sentences.append(assemble_sentence(sentence_index, planned, parts, retried=was_retried,
                                           thresholds=thresholds))
    return TextResult(index=index, translation=join_paragraphs(sentences, prepared.paragraph_separators),
                      sentences=sentences, paragraphs=prepared.paragraph_count, review=summarize_review(sentences))


def assemble_sentence(sentence_index: int, planned: PlannedSentence, parts: Sequence[Generated], *,
                      retried: bool = False, thresholds: QualityThresholds = QualityThresholds()) -> SentenceResult:
    """One sentence from its chunks' translations, flagged: what `assemble_text` builds for each sentence,
    and what a streamed request sends as soon as the sentence is done (model_server.streaming)."""
    translation = " ".join(part.text for part in parts if part.text)
    score = _token_weighted_score(parts)
    hit_max_length = any(part.hit_max_length for part in parts)
    flags = assess(planned.source, translation, score=score, hit_max_length=hit_max_length, thresholds=thresholds)
    if retried:
        flags.append(RETRIED)
    return SentenceResult(
        index=sentence_index, paragraph=planned.paragraph, source=planned.source, translation=translation,
        score=score, chunks=len(parts), hit_max_length=hit_max_length, flags=flags, needs_review=needs_review(flags))


def summarize_review(sentences: Sequence[SentenceResult]) -> ReviewSummary:
    counts: dict[str, int] = {}
    for sentence in sentences:
        for flag in sentence.flags:
            counts[flag] = counts.get(flag, 0) + 1
    return ReviewSummary(sentences_needing_review=sum(s.needs_review for s in sentences), flags=counts)


def join_paragraphs(sentences: Sequence[SentenceResult], separators: Sequence[str]) -> str:
    """Sentences of a paragraph joined by a space; paragraphs by the separator the source used."""
    paragraphs: dict[int, list[str]] = {}
    for sentence in sentences:
        paragraphs.setdefault(sentence.paragraph, []).append(sentence.translation)
    out: list[str] = []
    for number in sorted(paragraphs):
        if out:
            out.append(separators[number - 1] if number - 1 < len(separators) else "\n")
        out.append(" ".join(text for text in paragraphs[number] if text))
    return "".join(out)


def _token_weighted_score(parts: Sequence[Generated]) -> float:
    tokens = sum(part.num_tokens for part in parts)
    if tokens == 0:
        return 0.0
    return round(sum(part.score * part.num_tokens for part in parts) / tokens, 6)
