"""Glossaries (terminology): named Arabic term -> English rendering tables, applied to translations.

Storage: `model_server.state` (a table of the SQLite file `state_path`, or the state Redis with
`state_url`), each glossary with a version that grows on every replace. Applying one (`translate_with_glossary`):

1. Matching. Terms and texts are normalized the same way (`normalize_text`). A term matches as whole
   words only (no letter or digit right before or after), optionally preceded by ONE attached Arabic
   proclitic from `و ف ب ل ك` and/or the article `ال` (when the term itself has no article):
   for the term `حفتر`, `وحفتر` and `بالحفتر` match, `حفتري` does not. Longest terms win. The terms
   are compiled as a trie (one regex branch per shared prefix), so matching costs the text's length
   times at most the longest term, whatever the number of terms (one branch per term would cost the
   text's length times the number of terms: thousands).
2. Protection. Each match becomes a placeholder token `ZX<n>Q` that a Marian model copies like a Latin
   proper noun; a proclitic is kept before it as its own word (`و ZX0Q`, "and <term>"), the article
   is dropped (the target rendering carries it).
3. Restoration. After translation each placeholder is replaced by the term's English rendering. If
   any placeholder of a segment is missing (or duplicated) from the model's output, that segment is
   translated again WITHOUT placeholders and its sentence gets the flag `glossary_missed` (an editor
   must check the terminology); nothing is silently dropped.
4. Reporting: every sentence lists the terms applied to it in `glossary_terms` ([{source, target}]).

Cache entries of protected segments are keyed with the glossary's name, version and creation time;
segments without any term share entries with glossary-free requests.

Bounds (`GlossaryLimits`, from the settings): glossaries stored, entries per glossary, term and
rendering length, each refused with its own error code; renderings holding control or bidi characters
are refused (`invalid_glossary`). A store keeps only the latest version of each glossary compiled.
Matching and restoring run on the pipeline's CPU pool, off the event loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

from model_server.backends.base import Generated, GenerationOptions
from model_server.errors import ServiceError
from model_server.quality import needs_review
from model_server.results import GlossaryTerm, SentenceResult, TextResult
from model_server.streaming import FinishedSegment
from model_server.text import normalize_text

if TYPE_CHECKING:
    from model_server.assembly import PreparedText
    from model_server.streaming import SegmentsDone
    from model_server.batching.batcher import Lane
    from model_server.pipeline import TranslationPipeline

GLOSSARY_MISSED = "glossary_missed"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_PROCLITICS = "وفبلك"
_PLACEHOLDER = re.compile(r"ZX\s?(\d+)\s?Q")
# Placeholder numbers are below the terms of one segment; a longer digit run is simply not one of ours
# (and int() of thousands of digits is refused by Python).
_MAX_PLACEHOLDER_DIGITS = 9
# Refused in renderings (they reach the English output as they are): C0 and C1 controls (tab and line
# breaks included: a rendering is one line) and the bidi controls, which can make the output read
# other than it is.
_FORBIDDEN_IN_RENDERING = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class GlossaryLimits:
    """The caps on stored glossaries (settings glossaries_max_count, glossary_max_*)."""

    max_count: int
    max_entries: int
    max_term_chars: int
    max_rendering_chars: int

    @classmethod
    def from_settings(cls, settings) -> "GlossaryLimits":
        return cls(max_count=settings.glossaries_max_count, max_entries=settings.glossary_max_entries,
                   max_term_chars=settings.glossary_max_term_chars,
                   max_rendering_chars=settings.glossary_max_rendering_chars)


@dataclass(frozen=True)
class Glossary:
    name: str
    entries: dict[str, str]  # normalized Arabic term -> English rendering
    version: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    label: str | None = None  # the DeepL API's `name` of a glossary made through /v2/glossaries (its id is `name`)
    _pattern: re.Pattern | None = field(default=None, compare=False, repr=False)

    @property
    def cache_context(self) -> str:
        # The creation time too: a glossary deleted and created again starts at version 1 again.
        return f"glossary:{self.name}:{self.version}:{self.created_at!r}"

    def to_dict(self) -> dict:
        return {"name": self.name, "entries": self.entries, "version": self.version,
                "created_at": self.created_at, "updated_at": self.updated_at, "label": self.label}

    def pattern(self) -> re.Pattern | None:
        if self._pattern is None and self.entries:
            terms = _trie_alternation(self.entries)
            compiled = re.compile(rf"(?<![\w])(?P<clitic>[{_PROCLITICS}]?)(?P<article>ال)?(?P<term>{terms})(?![\w])")
            object.__setattr__(self, "_pattern", compiled)
        return self._pattern

    def protect(self, segment: str) -> tuple[str, list[str]]:
        """`segment` with each term replaced by a placeholder; the terms, in placeholder order."""
        pattern = self.pattern()
        if pattern is None:
            return segment, []
        terms: list[str] = []

        def swap(match: re.Match) -> str:
            term = match.group("term")
            if match.group("article") and term.startswith("ال"):
                return match.group(0)
            terms.append(term)
            clitic = match.group("clitic")
            return f"{clitic} ZX{len(terms) - 1}Q" if clitic else f"ZX{len(terms) - 1}Q"

        protected = pattern.sub(swap, segment)
        return protected, terms

    def restore(self, output: str, terms: list[str]) -> str | None:
        """The output with placeholders rendered, or None when a placeholder was lost or invented."""
        seen = [int(number) if len(number) <= _MAX_PLACEHOLDER_DIGITS else -1
                for number in _PLACEHOLDER.findall(output)]
        if sorted(seen) != list(range(len(terms))):
            return None
        return _PLACEHOLDER.sub(lambda m: self.entries[terms[int(m.group(1))]], output)


def _trie_alternation(terms) -> str:
    """A regex that matches exactly `terms`, preferring the longest (as a longest-first alternation
    does), written as a trie: at each position the engine follows one branch per character instead of
    trying every term. Branches of a node start with different characters, so their order is free; a
    term that ends at a node makes the rest optional, greedy (longer first, shorter on backtracking)."""
    root: dict = {}
    for term in terms:
        node = root
        for char in term:
            node = node.setdefault(char, {})
        node[""] = None  # a term ends here
    parts: dict[int, str] = {}
    stack: list[tuple[dict, bool]] = [(root, False)]  # post-order without recursion (long terms)
    while stack:
        node, children_done = stack.pop()
        if not children_done:
            stack.append((node, True))
            stack.extend((child, False) for char, child in node.items() if char)
            continue
        branches = [re.escape(char) + parts.pop(id(child)) for char, child in node.items() if char]
        if len(branches) > 1:
            body = "(?:" + "|".join(branches) + ")"
        else:
            body = branches[0] if branches else ""
        parts[id(node)] = f"(?:{body})?" if "" in node and body else body
    return parts[id(root)]


def _entry_label(source: str) -> str:
    """An entry named in an error message: its term, shortened (terms that are too long are long)."""
    return repr(source if len(source) <= 40 else source[:40] + "...")


def normalize_entries(entries: dict[str, str], limits: GlossaryLimits) -> dict[str, str]:
    """Validated, normalized entries. Raises ServiceError: glossary_too_many_entries, glossary_term_too_long,
    glossary_rendering_too_long (each cap of `limits`), invalid_glossary (empty, multi-line term, control
    or bidi characters in a rendering); the message names the entry."""
    if len(entries) > limits.max_entries:
        raise ServiceError("glossary_too_many_entries", f"the glossary has {len(entries)} entries; at most "
                           f"{limits.max_entries} are allowed (glossary_max_entries)")
    out: dict[str, str] = {}
    for source, target in entries.items():
        _check_entry(source, target, limits)
        term, rendering = normalize_text(source), " ".join(target.split())
        if not term or not rendering:
            raise ServiceError("invalid_glossary", f"glossary entry {_entry_label(source)}: term and rendering "
                               "must not be empty")
        if "\n" in term:
            raise ServiceError("invalid_glossary", f"glossary entry {_entry_label(source)}: a term is one line")
        out[term] = rendering
    return out


def _check_entry(source: str, target: str, limits: GlossaryLimits) -> None:
    if len(source) > limits.max_term_chars:
        raise ServiceError("glossary_term_too_long", f"glossary entry {_entry_label(source)}: the term has "
                           f"{len(source)} characters; at most {limits.max_term_chars} (glossary_max_term_chars)")
    if len(target) > limits.max_rendering_chars:
        raise ServiceError("glossary_rendering_too_long", f"glossary entry {_entry_label(source)}: the rendering "
                           f"has {len(target)} characters; at most {limits.max_rendering_chars} "
                           "(glossary_max_rendering_chars)")
    forbidden = _FORBIDDEN_IN_RENDERING.search(target)
    if forbidden is not None:
        raise ServiceError("invalid_glossary", f"glossary entry {_entry_label(source)}: the rendering holds the "
                           f"control character U+{ord(forbidden.group()):04X}; renderings are plain one-line text")


@dataclass
class SegmentMarks:
    """What the glossary did to one segment."""

    terms: list[str] = field(default_factory=list)
    missed: bool = False


async def translate_with_glossary(pipeline: "TranslationPipeline", glossary: Glossary, segments: list[str],
                                  options: GenerationOptions, lane: "Lane", deadline: float, *,
                                  on_done: "SegmentsDone | None" = None):
    """`TranslationPipeline.translate_segments` with the glossary applied: protect, translate, restore
    (as the segments finish), and re-translate unprotected the segments whose placeholders got lost.
    Returns its outputs, retried indices and cache hits, plus one SegmentMarks per segment; `on_done`
    (streaming) gets each segment once final, with its marks. Matching and restoring run on the
    pipeline's CPU pool (linear in the text, but long texts against big glossaries are real work)."""
    protected = await pipeline.cpu.run(_protect_all, glossary, segments)
    inputs = [text for text, _ in protected]
    contexts = [glossary.cache_context if terms else "" for _, terms in protected]
    marks = [SegmentMarks(terms=terms) for _, terms in protected]
    restored: dict[int, Generated | BaseException] = {}
    lost: list[int] = []

    async def restore(done: dict[int, FinishedSegment]) -> None:
        kept, missed = await pipeline.cpu.run(_restore_some, glossary, done, marks)
        restored.update((i, item.output) for i, item in kept.items())
        lost.extend(missed)
        if on_done is not None and kept:
            await on_done(kept)

    outputs, retried, hits = await pipeline.translate_segments(inputs, options, lane, deadline, contexts=contexts,
                                                               on_done=restore)
    for i, output in restored.items():
        outputs[i] = output
    if lost:
        lost.sort()
        for i in lost:
            marks[i].missed = True

        async def again_done(done: dict[int, FinishedSegment]) -> None:
            await on_done({lost[j]: replace(item, mark=marks[lost[j]]) for j, item in done.items()})

        again, again_retried, again_hits = await pipeline.translate_segments(
            [segments[i] for i in lost], options, lane, deadline, on_done=again_done if on_done else None)
        for j, i in enumerate(lost):
            outputs[i] = again[j]
            if j in again_retried:
                retried.add(i)
            else:
                retried.discard(i)
            if hits is not None and again_hits is not None:
                hits[i] = hits[i] and again_hits[j]
    return outputs, retried, hits, marks


def _protect_all(glossary: Glossary, segments: list[str]) -> list[tuple[str, list[str]]]:
    glossary.pattern()  # compiled once here, on the pool (thousands of terms take a while)
    return [glossary.protect(segment) for segment in segments]


def _restore_some(glossary: Glossary, done: "dict[int, FinishedSegment]", marks: list[SegmentMarks],
                  ) -> "tuple[dict[int, FinishedSegment], list[int]]":
    """A wave of finished segments with their placeholders rendered (and their marks attached), and the
    indices of those that lost one (to translate again unprotected)."""
    kept: dict[int, FinishedSegment] = {}
    lost: list[int] = []
    for i, item in done.items():
        mark, output = marks[i], item.output
        if mark.terms and isinstance(output, Generated):
            text = glossary.restore(output.text, mark.terms)
            if text is None:
                lost.append(i)
                continue
            output = replace(output, text=text)
        kept[i] = replace(item, output=output, mark=mark)
    return kept, lost


def mark_sentences(result: TextResult, prepared: "PreparedText", glossary: Glossary, marks: list[SegmentMarks]) -> None:
    """Add `glossary_terms` and the `glossary_missed` flag to the sentences of an assembled result."""
    if result.error is not None:
        return
    position = 0
    for sentence, planned in zip(result.sentences, prepared.sentences):
        mark_sentence(sentence, glossary, marks[position:position + len(planned.chunks)])
        position += len(planned.chunks)
    if result.review is not None:
        from model_server.assembly import summarize_review

        result.review = summarize_review(result.sentences)


def mark_sentence(sentence: SentenceResult, glossary: Glossary, own: Sequence[SegmentMarks]) -> None:
    """One sentence's `glossary_terms` and `glossary_missed` flag, from the marks of its segments."""
    terms = list(dict.fromkeys(term for mark in own for term in mark.terms))
    sentence.glossary_terms = [GlossaryTerm(source=term, target=glossary.entries[term]) for term in terms]
    if any(mark.missed for mark in own):
        sentence.flags.append(GLOSSARY_MISSED)
        sentence.needs_review = needs_review(sentence.flags)
