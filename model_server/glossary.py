"""Glossaries (terminology): named Arabic term -> English rendering tables, applied to translations.

Storage: `GlossaryStore`, a table in the service's SQLite file (`cache_path`), each glossary with a
version that grows on every replace. Applying one (`translate_with_glossary`):

1. Matching. Terms and texts are normalized the same way (`normalize_text`). A term matches as whole
   words only (no letter or digit right before or after), optionally preceded by ONE attached Arabic
   proclitic from `و ف ب ل ك` and/or the article `ال` (when the term itself has no article):
   for the term `حفتر`, `وحفتر` and `بالحفتر` match, `حفتري` does not. Longest terms win.
2. Protection. Each match becomes a placeholder token `ZX<n>Q` that a Marian model copies like a Latin
   proper noun; a proclitic is kept before it as its own word (`و ZX0Q`, "and <term>"), the article
   is dropped (the target rendering carries it).
3. Restoration. After translation each placeholder is replaced by the term's English rendering. If
   any placeholder of a segment is missing (or duplicated) from the model's output, that segment is
   translated again WITHOUT placeholders and its sentence gets the flag `glossary_missed` (an editor
   must check the terminology); nothing is silently dropped.
4. Reporting: every sentence lists the terms applied to it in `glossary_terms` ([{source, target}]).

Cache entries of protected segments are keyed with the glossary's name and version; segments without
any term share entries with glossary-free requests.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from model_server.backends.base import Generated, GenerationOptions
from model_server.errors import ServiceError
from model_server.quality import needs_review
from model_server.results import GlossaryTerm, TextResult
from model_server.text import normalize_text

if TYPE_CHECKING:
    from model_server.assembly import PreparedText
    from model_server.batching.batcher import Lane
    from model_server.pipeline import TranslationPipeline

GLOSSARY_MISSED = "glossary_missed"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_ENTRIES = 5000
_PROCLITICS = "وفبلك"
_PLACEHOLDER = re.compile(r"ZX\s?(\d+)\s?Q")


@dataclass(frozen=True)
class Glossary:
    name: str
    entries: dict[str, str]  # normalized Arabic term -> English rendering
    version: int = 1
    created_at: float = 0.0
    updated_at: float = 0.0
    _pattern: re.Pattern | None = field(default=None, compare=False, repr=False)

    @property
    def cache_context(self) -> str:
        return f"glossary:{self.name}:{self.version}"

    def to_dict(self) -> dict:
        return {"name": self.name, "entries": self.entries, "version": self.version,
                "created_at": self.created_at, "updated_at": self.updated_at}

    def pattern(self) -> re.Pattern | None:
        if self._pattern is None and self.entries:
            terms = "|".join(re.escape(term) for term in sorted(self.entries, key=len, reverse=True))
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
        seen = [int(number) for number in _PLACEHOLDER.findall(output)]
        if sorted(seen) != list(range(len(terms))):
            return None
        return _PLACEHOLDER.sub(lambda m: self.entries[terms[int(m.group(1))]], output)


def normalize_entries(entries: dict[str, str]) -> dict[str, str]:
    """Validated, normalized entries (raises ServiceError invalid_glossary)."""
    if len(entries) > MAX_ENTRIES:
        raise ServiceError("invalid_glossary", f"a glossary holds at most {MAX_ENTRIES} entries")
    out: dict[str, str] = {}
    for source, target in entries.items():
        term, rendering = normalize_text(source), " ".join(target.split())
        if not term or not rendering:
            raise ServiceError("invalid_glossary", f"glossary entry {source!r}: term and rendering must not be empty")
        if "\n" in term:
            raise ServiceError("invalid_glossary", f"glossary entry {source!r}: a term is one line")
        out[term] = rendering
    return out


class GlossaryStore:
    """Glossaries in a SQLite file (shared with the translation cache). Blocking: call from a thread."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._compiled: dict[tuple[str, int], Glossary] = {}
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS glossaries (name TEXT PRIMARY KEY, entries TEXT NOT NULL, "
                             "version INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)")

    def _row(self, row) -> Glossary:
        name, entries, version, created, updated = row
        cached = self._compiled.get((name, version))
        if cached is not None:
            return cached
        glossary = Glossary(name, json.loads(entries), version, created, updated)
        self._compiled[(name, version)] = glossary
        return glossary

    def list(self) -> list[Glossary]:
        with self._lock:
            rows = self._db.execute("SELECT name, entries, version, created_at, updated_at FROM glossaries "
                                    "ORDER BY name").fetchall()
        return [self._row(row) for row in rows]

    def get(self, name: str) -> Glossary:
        with self._lock:
            row = self._db.execute("SELECT name, entries, version, created_at, updated_at FROM glossaries "
                                   "WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise ServiceError("unknown_glossary", f"no glossary named {name!r} (GET /v1/glossaries lists them)")
        return self._row(row)

    def create(self, name: str, entries: dict[str, str]) -> Glossary:
        entries, now = normalize_entries(entries), time.time()
        with self._lock:
            try:
                self._db.execute("INSERT INTO glossaries VALUES (?, ?, 1, ?, ?)",
                                 (name, json.dumps(entries, ensure_ascii=False), now, now))
            except sqlite3.IntegrityError:
                raise ServiceError("glossary_exists", f"a glossary named {name!r} exists; PUT replaces it") from None
        return self.get(name)

    def replace(self, name: str, entries: dict[str, str]) -> Glossary:
        """Replace the entries (version + 1), or create the glossary when it does not exist."""
        entries, now = normalize_entries(entries), time.time()
        payload = json.dumps(entries, ensure_ascii=False)
        with self._lock:
            self._db.execute("INSERT INTO glossaries VALUES (?, ?, 1, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                             "entries = excluded.entries, version = glossaries.version + 1, "
                             "updated_at = excluded.updated_at", (name, payload, now, now))
        return self.get(name)

    def delete(self, name: str) -> None:
        with self._lock:
            deleted = self._db.execute("DELETE FROM glossaries WHERE name = ?", (name,)).rowcount
        if not deleted:
            raise ServiceError("unknown_glossary", f"no glossary named {name!r}")

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass
class SegmentMarks:
    """What the glossary did to one segment."""

    terms: list[str] = field(default_factory=list)
    missed: bool = False


async def translate_with_glossary(pipeline: "TranslationPipeline", glossary: Glossary, segments: list[str],
                                  options: GenerationOptions, lane: "Lane", deadline: float):
    """`TranslationPipeline._translate_segments` with the glossary applied: protect, translate, restore,
    and re-translate unprotected the segments whose placeholders got lost. Returns its outputs, retried
    indices and cache hits, plus one SegmentMarks per segment."""
    protected = [glossary.protect(segment) for segment in segments]
    inputs = [text for text, _ in protected]
    contexts = [glossary.cache_context if terms else "" for _, terms in protected]
    outputs, retried, hits = await pipeline.translate_segments(inputs, options, lane, deadline, contexts=contexts)
    marks = [SegmentMarks(terms=terms) for _, terms in protected]
    lost: list[int] = []
    for i, (output, mark) in enumerate(zip(outputs, marks)):
        if not mark.terms or not isinstance(output, Generated):
            continue
        restored = glossary.restore(output.text, mark.terms)
        if restored is None:
            lost.append(i)
        else:
            outputs[i] = replace(output, text=restored)
    if lost:
        again, again_retried, again_hits = await pipeline.translate_segments(
            [segments[i] for i in lost], options, lane, deadline)
        for j, i in enumerate(lost):
            outputs[i] = again[j]
            marks[i].missed = True
            if j in again_retried:
                retried.add(i)
            else:
                retried.discard(i)
            if hits is not None and again_hits is not None:
                hits[i] = hits[i] and again_hits[j]
    return outputs, retried, hits, marks


def mark_sentences(result: TextResult, prepared: "PreparedText", glossary: Glossary, marks: list[SegmentMarks]) -> None:
    """Add `glossary_terms` and the `glossary_missed` flag to the sentences of an assembled result."""
    if result.error is not None:
        return
    position = 0
    for sentence, planned in zip(result.sentences, prepared.sentences):
        own = marks[position:position + len(planned.chunks)]
        position += len(planned.chunks)
        terms = list(dict.fromkeys(term for mark in own for term in mark.terms))
        sentence.glossary_terms = [GlossaryTerm(source=term, target=glossary.entries[term]) for term in terms]
        if any(mark.missed for mark in own):
            sentence.flags.append(GLOSSARY_MISSED)
            sentence.needs_review = needs_review(sentence.flags)
    if result.review is not None:
        from model_server.assembly import summarize_review

        result.review = summarize_review(result.sentences)


def open_glossary_store(path: Path) -> GlossaryStore | None:
    """The store, or None (logged) when the file cannot be opened: translation still works without it."""
    try:
        return GlossaryStore(path)
    except Exception as exc:  # noqa: BLE001
        import logging

        logging.getLogger(__name__).warning("glossary store %s unavailable (%s: %s); glossary requests get 503",
                                            path, type(exc).__name__, exc)
        return None
