"""HTML-aware translation (`format: "html"`; DeepL `tag_handling=html|xml`; LibreTranslate `format=html`).

What is translated
    The text of every element that is not *inline* (p, h1-h6, li, blockquote, figcaption, td, th, caption,
    dt, dd, and generic containers such as div, section or an HTML fragment's top level), and the `alt`
    and `title` attributes of every element. A block's text runs from its start to its end, or up to a
    nested block (`<li>text<ul>...</ul>tail</li>` is two runs). Inline elements (a, b, em, strong, i, span,
    sub, sup, small, mark, q, time, ... see `INLINE_TAGS`) are part of the sentence they sit in.

What is never translated
    `script`, `style`, `code`, `pre`, `kbd`, `samp`, `textarea`, `template`, `noscript`, `svg`, `math`,
    comments, any element with `translate="no"` or class `notranslate`, the tags named in `skip_tags`, and
    everything inside them (attributes included). A run or attribute whose letters are not (mostly)
    Arabic (min_arabic_ratio) is left as it is: English quotes, numbers, dates in a table.

How inline markup survives (and what is guaranteed)
    A block is translated as plain text (the model never sees tags), then its inline elements are put
    back by aligning source positions to translation positions:

    1. each inline element's source span is mapped through a monotone piecewise-linear map whose knots
       are the block's sentence boundaries (a link in the third sentence lands in the third sentence's
       translation), then snapped to word boundaries;
    2. an inline element of one to eight words is also translated on its own, in the same pipeline call;
       when that translation occurs in the block's translation (case-insensitive, whole words, within
       the parent's span, after the previous sibling), that occurrence is used instead (names and
       links usually translate identically: `<a>خليفة حفتر</a>` -> `<a>Khalifa Haftar</a>`).

    Guaranteed: every tag, attribute and link is kept, once, in document order and with its nesting;
    the output is well-formed; the block's text with markup stripped is exactly the plain translation
    of the block's text; an inline element with text gets at least one word. NOT guaranteed: that the
    words inside an inline element are the translation of the words it wrapped, when step 2 finds no
    anchor (proportional position is an approximation; Arabic and English word orders differ).
    Elements that are never translated (`code`, `translate="no"`, `br`, `img`, comments) inside a
    sentence are left out of the text the model sees and are put back at the mapped position.

Parsing is lxml (libxml2): `lxml.html` for HTML (documents keep their doctype; fragments are parsed in
a container and written back without it), `lxml.etree` for XML with entity resolution, DTD loading
and network access off. libxml2 repairs broken HTML the way browsers do (e.g. a stray `</p>`), so
invalid input comes back repaired rather than byte-identical.
"""

from __future__ import annotations

import html as html_escape
import re
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from lxml import etree
from lxml import html as lxml_html

from model_server.assembly import summarize_review
from model_server.backends.base import GenerationOptions
from model_server.batching.batcher import Lane
from model_server.errors import ServiceError
from model_server.pipeline import Timings, TranslationPipeline
from model_server.results import ErrorBody, SentenceResult, TextResult
from model_server.text import arabic_ratio
# The invisible characters normalize_text removes: removing the same ones here keeps the offsets of a run's
# text valid for the sentences the pipeline returns (normalize_text(run.text) == run.text).
from model_server.text.normalize import _REMOVED_RE, normalize_text

__all__ = ["INLINE_TAGS", "SKIP_TAGS", "InlineSpan", "align_spans", "translate_markup"]

# Part of the sentence around them; their text is translated with it.
INLINE_TAGS = frozenset({
    "a", "abbr", "acronym", "b", "bdi", "bdo", "big", "cite", "data", "del", "dfn", "em", "font", "i", "ins",
    "label", "mark", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "time", "tt", "u", "var"})
# Inline and without translatable content: kept in place, standing between words.
VOID_INLINE_TAGS = frozenset({"br", "img", "wbr", "input"})
# Never translated, nor anything inside them.
SKIP_TAGS = frozenset({"script", "style", "code", "pre", "kbd", "samp", "textarea", "template", "noscript",
                       "svg", "math"})
# Of those, the ones that sit inside a sentence (an atom in it) rather than between blocks.
_INLINE_SKIP_TAGS = frozenset({"code", "kbd", "samp", "script", "style", "svg", "math", "noscript"})
TRANSLATED_ATTRIBUTES = ("alt", "title")

_MAX_HINT_WORDS = 8
_SPACES_RE = re.compile(r"\s+")
_DOCUMENT_RE = re.compile(r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype|<html[\s>])", re.I | re.S)
_ANCHOR_STRIP = " \t.,;:!?\"'«»“”‘’()[]"


# --------------------------------------------------------------------------------------------------
# Alignment (pure): source spans of inline elements -> spans of the translation
# --------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class InlineSpan:
    """An inline element's extent in a run's source text (`start:end`), its children, and (after
    `align_spans`) its extent in the translation (`target`). `atomic` spans keep their content."""

    start: int
    end: int
    element: Any = None
    atomic: bool = False
    children: list["InlineSpan"] = field(default_factory=list)
    hint: str | None = None             # the span's own text, translated on its own (an anchor candidate)
    after_space: bool = False           # an empty span: the source had white space right before it...
    space_after: bool = False           # ...and right after it (both: it stands between two spaces)
    target: tuple[int, int] = (0, 0)

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()


def align_spans(spans: Sequence[InlineSpan], source_length: int, target: str,
                knots: Sequence[tuple[int, int]] = ()) -> None:
    """Set `target` on every span (and descendant): ordered, nested, word-aligned, within `target`.

    `knots` are (source offset, target offset) pairs known to correspond (sentence boundaries); with
    (0, 0) and (source_length, len(target)) they define a monotone piecewise-linear position map."""
    points = sorted({(0, 0), (source_length, len(target)), *knots})
    sources = [p[0] for p in points]
    targets = [p[1] for p in points]

    def position(offset: int) -> float:
        for k in range(1, len(points)):
            if offset <= sources[k]:
                s0, s1, t0, t1 = sources[k - 1], sources[k], targets[k - 1], targets[k]
                return t0 if s1 == s0 else t0 + (offset - s0) * (t1 - t0) / (s1 - s0)
        return float(len(target))

    _align_level(list(spans), 0, len(target), target, position)


def _align_level(spans: list[InlineSpan], lo: int, hi: int, target: str, position: Callable[[int], float]) -> None:
    cursor = lo
    for span in spans:
        if span.end <= span.start:   # nothing to translate inside: a point between words
            point = _snap_gap(target, position(span.start), cursor, hi, after_space=span.after_space)
            span.target = (point, point)
        else:
            anchor = _find_anchor(target, span.hint, cursor, hi, position(span.start)) if span.hint else None
            if anchor is not None:
                start, end = anchor
            else:
                start = _snap_word_start(target, position(span.start), cursor, hi)
                end = _snap_word_end(target, position(span.end), start, hi)
                if end == start:
                    end = _word_end_after(target, start, hi)
            span.target = (start, end)
        cursor = span.target[1]
        if span.children and not span.atomic:
            _align_level(span.children, span.target[0], span.target[1], target, position)


def _nearest(candidates: list[int], estimate: float, default: int) -> int:
    return min(candidates, key=lambda p: (abs(p - estimate), p)) if candidates else default


def _snap_word_start(target: str, estimate: float, lo: int, hi: int) -> int:
    candidates = [p for p in range(lo, hi) if not target[p].isspace() and (p == lo or target[p - 1].isspace())]
    return _nearest(candidates, estimate, hi)


def _snap_word_end(target: str, estimate: float, lo: int, hi: int) -> int:
    candidates = [p for p in range(lo + 1, hi + 1)
                  if not target[p - 1].isspace() and (p == hi or target[p].isspace())]
    return _nearest(candidates, estimate, lo)


def _word_end_after(target: str, start: int, hi: int) -> int:
    end = start
    while end < hi and target[end].isspace():
        end += 1
    while end < hi and not target[end].isspace():
        end += 1
    return end


def _snap_gap(target: str, estimate: float, lo: int, hi: int, *, after_space: bool) -> int:
    """A point between words: before a word when the source had a space there, else right after one."""
    if after_space:
        candidates = [p for p in range(lo, hi + 1)
                      if p in (lo, hi) or (target[p - 1].isspace() and not target[p].isspace())]
    else:
        candidates = [p for p in range(lo, hi + 1)
                      if p in (lo, hi) or (not target[p - 1].isspace() and target[p].isspace())]
    return _nearest(candidates, estimate, lo)


def _find_anchor(target: str, hint: str | None, lo: int, hi: int, estimate: float) -> tuple[int, int] | None:
    needle = (hint or "").strip(_ANCHOR_STRIP).casefold()
    if len(needle) < 2:
        return None
    haystack = target.casefold()
    if len(haystack) != len(target):   # casefold changed lengths (e.g. "ß"): offsets would not match
        return None
    best: tuple[int, int] | None = None
    found = haystack.find(needle, lo, hi)
    while found != -1:
        end = found + len(needle)
        if (found == 0 or not haystack[found - 1].isalnum()) and (end == len(haystack) or not haystack[end].isalnum()):
            if best is None or abs(found - estimate) < abs(best[0] - estimate):
                best = (found, end)
        found = haystack.find(needle, found + 1, hi)
    return best


# --------------------------------------------------------------------------------------------------
# Extraction: a parsed tree -> runs of text (with their inline spans) and attributes
# --------------------------------------------------------------------------------------------------
def _tag(element: Any) -> str | None:
    """Lower-case local tag name; None for comments, processing instructions and entities."""
    if not isinstance(element.tag, str):
        return None
    return etree.QName(element).localname.lower()


def _clean_piece(raw: str | None) -> str:
    """A piece of HTML text as the pipeline will see it: invisible characters removed, NFC, and every run of
    white space (newlines included: HTML does not break lines on them) one space."""
    if not raw:
        return ""
    return _SPACES_RE.sub(" ", unicodedata.normalize("NFC", _REMOVED_RE.sub("", raw)))


@dataclass(eq=False)
class _Run:
    """Inline content between block boundaries: the text before the first inline element lives in
    `lead` (an element and "text" or "tail"); each top-level span's element holds the text after it."""

    lead: tuple[Any, str]
    text: str
    spans: list[InlineSpan]
    lead_space: str      # white space the run started with in the source (kept around the translation)
    trail_space: str

    def write(self, translation: str) -> None:
        _set(self.lead, self.lead_space + translation[:self.spans[0].target[0]] if self.spans
             else self.lead_space + translation + self.trail_space)
        for number, span in enumerate(self.spans):
            _write_span(span, translation)
            last = number == len(self.spans) - 1
            upto = len(translation) if last else self.spans[number + 1].target[0]
            span.element.tail = _tail(span, translation, upto) + (self.trail_space if last else "") or None


def _write_span(span: InlineSpan, translation: str) -> None:
    if span.atomic:
        return
    start, end = span.target
    if not span.children:
        span.element.text = translation[start:end] or None
        return
    span.element.text = translation[start:span.children[0].target[0]] or None
    for number, child in enumerate(span.children):
        _write_span(child, translation)
        upto = end if number == len(span.children) - 1 else span.children[number + 1].target[0]
        child.element.tail = _tail(child, translation, upto) or None


def _tail(span: InlineSpan, translation: str, upto: int) -> str:
    """The translation between a span and the next one; an element that stood between two spaces in the
    source (`word <code>x</code> word`) gets its second space back."""
    tail = translation[span.target[1]:upto]
    start, end = span.target
    if (start == end and span.after_space and span.space_after and tail and not tail[0].isspace()
            and start > 0 and translation[start - 1].isspace()):
        return " " + tail
    return tail


def _set(slot: tuple[Any, str], value: str) -> None:
    element, where = slot
    setattr(element, where, value or None)


@dataclass(eq=False)
class _Attribute:
    element: Any
    name: str
    text: str

    def write(self, translation: str) -> None:
        self.element.set(self.name, translation)


class _RunBuilder:
    def __init__(self, lead: tuple[Any, str], raw: str | None) -> None:
        self.lead = lead
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[InlineSpan] = []
        self.lead_space = _leading_space(raw)
        self.last_raw = raw
        self.add(raw)

    def add(self, raw: str | None) -> None:
        piece = _clean_piece(raw)
        if piece.startswith(" ") and (self.length == 0 or self.parts[-1].endswith(" ")):
            piece = piece[1:]
        if piece:
            self.parts.append(piece)
            self.length += len(piece)

    def add_tail(self, raw: str | None) -> None:
        self.add(raw)
        self.last_raw = raw

    def ends_with_space(self) -> bool:
        return bool(self.parts) and self.parts[-1].endswith(" ")

    def separator(self) -> None:
        self.add(" ")

    def build(self) -> _Run | None:
        text = "".join(self.parts)
        stripped = text.rstrip()
        if not stripped:
            return None
        for span in self.spans:
            for node in span.walk():
                node.start, node.end = min(node.start, len(stripped)), min(node.end, len(stripped))
        return _Run(lead=self.lead, text=stripped, spans=self.spans, lead_space=self.lead_space,
                    trail_space=_trailing_space(self.last_raw))


def _leading_space(raw: str | None) -> str:
    return raw[:len(raw) - len(raw.lstrip())] if raw else ""


def _trailing_space(raw: str | None) -> str:
    return raw[len(raw.rstrip()):] if raw else ""


class _Extractor:
    def __init__(self, skip_tags: frozenset[str]) -> None:
        self.skip_tags = SKIP_TAGS | {t.lower() for t in skip_tags}
        self.runs: list[_Run] = []
        self.attributes: list[_Attribute] = []

    def skipped(self, element: Any) -> bool:
        tag = _tag(element)
        if tag is None or tag in self.skip_tags:
            return True
        if (element.get("translate") or "").strip().lower() == "no":
            return True
        return "notranslate" in (element.get("class") or "").split()

    def inline(self, element: Any) -> bool:
        tag = _tag(element)
        if tag is None or tag in VOID_INLINE_TAGS or tag in _INLINE_SKIP_TAGS:
            return True
        return tag in INLINE_TAGS and not any(
            _tag(d) is not None and not self._inline_tag(_tag(d)) for d in element.iterdescendants())

    def _inline_tag(self, tag: str) -> bool:
        return tag in INLINE_TAGS or tag in VOID_INLINE_TAGS or tag in _INLINE_SKIP_TAGS

    def container(self, element: Any) -> None:
        """A block (or the document root): its runs of inline content, and its nested blocks."""
        self.attributes_of(element)
        builder = _RunBuilder((element, "text"), element.text)
        for child in element:
            if self.inline(child):
                self.inline_span(child, builder, builder.spans)
                builder.add_tail(child.tail)
                continue
            self.finish(builder)
            if not self.skipped(child):
                self.container(child)
            builder = _RunBuilder((child, "tail"), child.tail)
        self.finish(builder)

    def finish(self, builder: _RunBuilder) -> None:
        run = builder.build()
        if run is not None:
            self.runs.append(run)

    def inline_span(self, element: Any, builder: _RunBuilder, siblings: list[InlineSpan]) -> None:
        atomic = self.skipped(element) or _tag(element) in VOID_INLINE_TAGS
        span = InlineSpan(start=builder.length, end=builder.length, element=element, atomic=atomic,
                          after_space=builder.ends_with_space())
        siblings.append(span)
        if atomic:
            span.space_after = bool(element.tail) and element.tail[0].isspace()
            if _tag(element) in VOID_INLINE_TAGS:
                self.attributes_of(element)
            if _tag(element) != "wbr" and _tag(element) is not None:
                builder.separator()   # "word<br>word" and "word<code>x</code>word" stay two words
            return
        self.attributes_of(element)
        builder.add(element.text)
        for child in element:
            self.inline_span(child, builder, span.children)
            builder.add(child.tail)
        span.end = builder.length

    def attributes_of(self, element: Any) -> None:
        for name in TRANSLATED_ATTRIBUTES:
            value = element.get(name)
            if value and value.strip():
                self.attributes.append(_Attribute(element, name, normalize_text(value)))


# --------------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Document:
    root: Any
    is_document: bool
    xml: bool
    runs: list[_Run]
    attributes: list[_Attribute]

    def serialize(self) -> str:
        if self.xml:
            tree = self.root.getroottree()
            if self.root.tag == _XML_WRAPPER:
                return (html_escape.escape(self.root.text or "", quote=False)
                        + "".join(etree.tostring(child, encoding="unicode", with_tail=True) for child in self.root))
            return etree.tostring(tree, encoding="unicode")
        if self.is_document:
            return etree.tostring(self.root.getroottree(), encoding="unicode", method="html")
        return (html_escape.escape(self.root.text or "", quote=False)
                + "".join(lxml_html.tostring(child, encoding="unicode", with_tail=True) for child in self.root))


_XML_WRAPPER = "model-server-fragment"


def parse_markup(markup: str, *, xml: bool = False, skip_tags: frozenset[str] = frozenset()) -> _Document:
    """Parse HTML (a document or a fragment) or XML, and find what to translate. ServiceError invalid_markup."""
    try:
        if xml:
            root, is_document = _parse_xml(markup), True
        elif _DOCUMENT_RE.match(markup):
            root, is_document = lxml_html.document_fromstring(markup), True
        else:
            root, is_document = lxml_html.fragment_fromstring(markup, create_parent="div"), False
    except (etree.ParserError, etree.XMLSyntaxError, ValueError) as exc:
        raise ServiceError("invalid_markup", f"the {'XML' if xml else 'HTML'} cannot be parsed: {exc}") from None
    extractor = _Extractor(skip_tags)
    if not extractor.skipped(root):
        extractor.container(root)
    return _Document(root, is_document, xml, extractor.runs, extractor.attributes)


def _parse_xml(markup: str) -> Any:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    data = markup.encode("utf-8")
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        if markup.lstrip().startswith("<?xml"):
            raise
    # Not one element: a fragment (text and several elements), as DeepL clients send it.
    return etree.fromstring(f"<{_XML_WRAPPER}>".encode() + data + f"</{_XML_WRAPPER}>".encode(), parser)


@dataclass(eq=False)
class _Plan:
    """One document's texts for the pipeline: its runs and attributes, then the anchor hints' sources."""

    document: _Document
    runs: list[_Run]
    attributes: list[_Attribute]
    hint_spans: list[InlineSpan]
    texts: list[str]


def _plan(document: _Document, min_ratio: float) -> _Plan:
    runs = [run for run in document.runs if arabic_ratio(run.text) >= min_ratio]
    attributes = [a for a in document.attributes if arabic_ratio(a.text) >= min_ratio]
    hint_spans: list[InlineSpan] = []
    hint_texts: list[str] = []
    for run in runs:
        for span in (node for top in run.spans for node in top.walk()):
            text = run.text[span.start:span.end].strip()
            covers_run = span.start == 0 and span.end >= len(run.text)
            if (not span.atomic and text and not covers_run and len(text.split()) <= _MAX_HINT_WORDS
                    and arabic_ratio(text) >= min_ratio):
                hint_spans.append(span)
                hint_texts.append(text)
    texts = [run.text for run in runs] + [a.text for a in attributes] + hint_texts
    return _Plan(document, runs, attributes, hint_spans, texts)


async def translate_markup(pipeline: TranslationPipeline, documents: Sequence[str], options: GenerationOptions, *,
                           lane: Lane = Lane.interactive, xml: bool = False, skip_tags: frozenset[str] = frozenset(),
                           glossary=None) -> tuple[list[TextResult], Timings]:
    """Translate HTML (or XML) documents: all their texts in ONE pipeline call; one result per document."""
    started = time.perf_counter()
    plans: list[_Plan | TextResult] = []
    for index, markup in enumerate(documents):
        try:
            plans.append(_prepare_document(index, markup, pipeline, xml=xml, skip_tags=skip_tags))
        except ServiceError as exc:
            plans.append(TextResult(index=index, error=ErrorBody(**exc.to_dict())))
    texts = [text for plan in plans if isinstance(plan, _Plan) for text in plan.texts]
    markup_ms = (time.perf_counter() - started) * 1000
    results, timings = await pipeline.translate(texts, options, lane=lane,
                                                **({"glossary": glossary} if glossary is not None else {}))
    mark = time.perf_counter()
    out: list[TextResult] = []
    position = 0
    for index, plan in enumerate(plans):
        if isinstance(plan, TextResult):
            out.append(plan)
            continue
        count = len(plan.texts)
        out.append(_finish(index, plan, results[position:position + count]))
        position += count
    timings.extra["markup"] = markup_ms + (time.perf_counter() - mark) * 1000
    timings.total_ms += timings.extra["markup"]
    return out, timings


def _prepare_document(index: int, markup: str, pipeline: TranslationPipeline, *, xml: bool,
                      skip_tags: frozenset[str]) -> _Plan | TextResult:
    limits = pipeline.config.limits
    if len(markup) > limits.max_text_chars:
        raise ServiceError("text_too_long", f"text has {len(markup)} characters; the limit is {limits.max_text_chars}")
    if not markup.strip():
        raise ServiceError("empty_text", "text is empty or contains only whitespace/control characters")
    document = parse_markup(markup, xml=xml, skip_tags=skip_tags)
    every_text = " ".join([run.text for run in document.runs] + [a.text for a in document.attributes])
    if not every_text.strip():   # only tags, or only text that is never translated (code, translate="no")
        return TextResult(index=index, translation=document.serialize(), paragraphs=0)
    ratio = arabic_ratio(every_text)
    if ratio < limits.min_arabic_ratio:
        if pipeline.config.non_arabic_passthrough:
            return TextResult(index=index, translation=markup, passthrough=True)
        raise ServiceError("not_arabic", f"text does not look like Arabic ({ratio:.0%} of its letters are "
                           f"Arabic script, at least {limits.min_arabic_ratio:.0%} required)")
    return _plan(document, limits.min_arabic_ratio)


def _finish(index: int, plan: _Plan, results: Sequence[TextResult]) -> TextResult:
    runs, attributes = len(plan.runs), len(plan.attributes)
    unit_results = results[:runs + attributes]
    for span, hint in zip(plan.hint_spans, results[runs + attributes:]):
        span.hint = hint.translation if hint.error is None and not hint.passthrough else None
    failed = next((r.error for r in unit_results if r.error is not None), None)
    if failed is not None:
        return TextResult(index=index, error=failed)
    sentences: list[SentenceResult] = []
    for number, (unit, result) in enumerate(zip([*plan.runs, *plan.attributes], unit_results)):
        translation = result.translation or ""
        if isinstance(unit, _Run):
            align_spans(unit.spans, len(unit.text), translation, _sentence_knots(unit.text, result))
        unit.write(translation)
        for sentence in result.sentences:
            sentences.append(sentence.model_copy(update={"index": len(sentences), "paragraph": number}))
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
