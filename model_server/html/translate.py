"""Translation of markup documents: plan (parse, extract, choose what the model sees), one pipeline call
for every text of every document, then finish (align inline elements, write back, mark what is now English
left-to-right (model_server/html/direction.py), serialize).

The two CPU stages run in the bounded worker pool `pipeline.cpu` (model_server/cpu.py), one call per
stage for all documents of a request, so parsing and alignment never block the event loop.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left
from dataclasses import dataclass
from typing import Sequence

from model_server.assembly import summarize_review
from model_server.backends.base import GenerationOptions
from model_server.batching.batcher import Lane
from model_server.errors import ServiceError
from model_server.html.align import InlineSpan, align_spans
from model_server.html.direction import switch_direction
from model_server.html.extract import Attribute, Document, Run, parse_markup
from model_server.pipeline import PipelineConfig, Timings, TranslationPipeline
from model_server.results import ErrorBody, SentenceResult, TextResult
from model_server.text import arabic_ratio

__all__ = ["Plan", "finish_document", "plan_document", "translate_markup"]

_MAX_HINT_WORDS = 8
_WORD_RE = re.compile(r"\S+")


@dataclass(eq=False)
class Plan:
    """One document's texts for the pipeline: its runs and attributes, then the anchor hints' sources."""

    document: Document
    runs: list[Run]
    attributes: list[Attribute]
    hint_spans: list[InlineSpan]
    texts: list[str]
    set_direction: bool          # PipelineConfig.set_translated_direction
    min_arabic_ratio: float      # what counts as Arabic left untranslated, for the direction pass


async def translate_markup(pipeline: TranslationPipeline, documents: Sequence[str], options: GenerationOptions, *,
                           lane: Lane = Lane.interactive, xml: bool = False, skip_tags: frozenset[str] = frozenset(),
                           glossary=None) -> tuple[list[TextResult], Timings]:
    """Translate HTML (or XML) documents: all their texts in ONE pipeline call; one result per document."""
    started = time.perf_counter()
    plans = await pipeline.cpu.run(_plan_all, documents, pipeline.config, xml, skip_tags)
    texts = [text for plan in plans if isinstance(plan, Plan) for text in plan.texts]
    markup_ms = (time.perf_counter() - started) * 1000
    results, timings = await pipeline.translate(texts, options, lane=lane,
                                                **({"glossary": glossary} if glossary is not None else {}))
    mark = time.perf_counter()
    out = await pipeline.cpu.run(_finish_all, plans, results)
    timings.extra["markup"] = markup_ms + (time.perf_counter() - mark) * 1000
    timings.total_ms += timings.extra["markup"]
    return out, timings


def _plan_all(documents: Sequence[str], config: PipelineConfig, xml: bool,
              skip_tags: frozenset[str]) -> list[Plan | TextResult]:
    plans: list[Plan | TextResult] = []
    for index, markup in enumerate(documents):
        try:
            plans.append(plan_document(index, markup, config, xml=xml, skip_tags=skip_tags))
        except ServiceError as exc:
            plans.append(TextResult(index=index, error=ErrorBody(**exc.to_dict())))
    return plans


def _finish_all(plans: Sequence[Plan | TextResult], results: Sequence[TextResult]) -> list[TextResult]:
    out: list[TextResult] = []
    position = 0
    for index, plan in enumerate(plans):
        if isinstance(plan, TextResult):
            out.append(plan)
            continue
        count = len(plan.texts)
        out.append(finish_document(index, plan, results[position:position + count]))
        position += count
    return out


def plan_document(index: int, markup: str, config: PipelineConfig, *, xml: bool = False,
                  skip_tags: frozenset[str] = frozenset()) -> Plan | TextResult:
    """Check and parse one document and choose its texts; a TextResult when there is nothing to translate
    (or a passthrough). Raises ServiceError (text_too_long, empty_text, invalid_markup, not_arabic)."""
    limits = config.limits
    limits.check_length(markup)
    limits.check_not_blank(markup)
    document = parse_markup(markup, xml=xml, skip_tags=skip_tags)
    every_text = " ".join([run.text for run in document.runs] + [a.text for a in document.attributes])
    if not every_text.strip():   # only tags, or only text that is never translated (code, translate="no")
        return TextResult(index=index, translation=document.serialize(), paragraphs=0)
    if arabic_ratio(every_text) < limits.min_arabic_ratio:
        if config.non_arabic_passthrough:
            return TextResult(index=index, translation=markup, passthrough=True)
        limits.check_arabic(every_text)
    return _plan(document, limits.min_arabic_ratio, set_direction=config.set_translated_direction)


def _plan(document: Document, min_ratio: float, *, set_direction: bool) -> Plan:
    runs = [run for run in document.runs if arabic_ratio(run.text) >= min_ratio]
    attributes = [a for a in document.attributes if arabic_ratio(a.text) >= min_ratio]
    hint_spans: list[InlineSpan] = []
    hint_texts: list[str] = []
    for run in runs:
        word_starts = [word.start() for word in _WORD_RE.finditer(run.text)] if run.spans else []
        for span in (node for top in run.spans for node in top.walk()):
            covers_run = span.start == 0 and span.end >= len(run.text)
            if span.atomic or covers_run or _words_in(run.text, word_starts, span.start, span.end) > _MAX_HINT_WORDS:
                continue   # counted before slicing: nested spans over one long text would copy it once per level
            text = run.text[span.start:span.end].strip()
            if text and arabic_ratio(text) >= min_ratio:
                hint_spans.append(span)
                hint_texts.append(text)
    texts = [run.text for run in runs] + [a.text for a in attributes] + hint_texts
    return Plan(document, runs, attributes, hint_spans, texts, set_direction, min_ratio)


def _words_in(text: str, word_starts: list[int], start: int, end: int) -> int:
    """len(text[start:end].split()), from the sorted word starts of `text`."""
    if end <= start:
        return 0
    inside_a_word = 0 < start < len(text) and not text[start - 1].isspace() and not text[start].isspace()
    return bisect_left(word_starts, end) - bisect_left(word_starts, start) + inside_a_word


def finish_document(index: int, plan: Plan, results: Sequence[TextResult]) -> TextResult:
    """Write the translations of `plan.texts` (`results`, in order) into the document and serialize it."""
    runs, attributes = len(plan.runs), len(plan.attributes)
    unit_results = results[:runs + attributes]
    for span, hint in zip(plan.hint_spans, results[runs + attributes:]):
        span.hint = hint.translation if hint.error is None and not hint.passthrough else None
    failed = next((r.error for r in unit_results if r.error is not None), None)
    if failed is not None:
        return TextResult(index=index, error=failed)
    sentences: list[SentenceResult] = []
    translated: list[Run | Attribute] = []
    for number, (unit, result) in enumerate(zip([*plan.runs, *plan.attributes], unit_results)):
        translation = result.translation or ""
        if isinstance(unit, Run):
            align_spans(unit.spans, len(unit.text), translation, _sentence_knots(unit.text, result))
        unit.write(translation)
        if not result.passthrough:
            translated.append(unit)
        for sentence in result.sentences:
            sentences.append(sentence.model_copy(update={"index": len(sentences), "paragraph": number}))
    if plan.set_direction:
        switch_direction(plan.document, translated, plan.min_arabic_ratio)
    return TextResult(index=index, translation=plan.document.serialize(), sentences=sentences,
                      paragraphs=runs + attributes, review=summarize_review(sentences))


def _sentence_knots(source: str, result: TextResult) -> list[tuple[int, int]]:
    """(source offset, translation offset) of every sentence start and end; [] when they cannot be located
    (the alignment then falls back to one proportional map over the whole run)."""
    knots: list[tuple[int, int]] = []
    source_at = target_at = 0
    parts: list[str] = []
    for sentence in result.sentences:
        found = source.find(sentence.source, source_at)
        if found < 0:
            return []
        if sentence.translation:
            if parts:
                target_at += 1   # the space join_paragraphs puts between sentences
            knots += [(found, target_at), (found + len(sentence.source), target_at + len(sentence.translation))]
            target_at += len(sentence.translation)
            parts.append(sentence.translation)
        source_at = found + len(sentence.source)
    return knots if " ".join(parts) == (result.translation or "") else []
