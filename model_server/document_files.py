"""Whole files through the translator: a .docx, .html or .txt file in, the same kind of file out.

One mechanism for every entry point that takes files (POST /v1/jobs document uploads, DeepL /v2/document,
`model-server translate FILE`):

1. `document_kind(filename, content_type)` says which kind a file is (refusing others: `unsupported_document`);
2. `open_document(data, kind, settings)` checks the bytes (caps, malformed or encrypted files: clear 4xx codes)
   and returns an `OpenedDocument`: the pieces of text the pipeline translates (`texts`, read as `format`) and
   how to put the file back together (`assemble`). Opening is CPU work: run it off the event loop.
3. `translate_opened(pipeline, document, options, ...)` translates the pieces in one pipeline call and returns
   the finished file's bytes. A piece that cannot be translated (a paragraph that is not Arabic, say) is kept
   as it was: one odd paragraph never fails the document.

Opening is deterministic, so a stored job keeps only the original bytes and the translations, and assembles
the file again when it is downloaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePath
from typing import Callable, Sequence

from model_server.backends.base import GenerationOptions
from model_server.batching.batcher import Lane
from model_server.documents import DocumentFormat, translate_documents
from model_server.errors import ServiceError
from model_server.glossary import Glossary
from model_server.pipeline import TranslationPipeline
from model_server.settings import Settings
from model_server.text import arabic_ratio, normalize_text


class DocumentKind(str, Enum):
    docx = "docx"
    html = "html"
    txt = "txt"


MEDIA_TYPES = {
    DocumentKind.docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    DocumentKind.html: "text/html; charset=utf-8",
    DocumentKind.txt: "text/plain; charset=utf-8",
}
_EXTENSIONS = {".docx": DocumentKind.docx, ".html": DocumentKind.html, ".htm": DocumentKind.html,
               ".txt": DocumentKind.txt}


@dataclass
class OpenedDocument:
    kind: DocumentKind
    texts: list[str]                 # the pieces the pipeline translates, in document order
    format: DocumentFormat           # how the pipeline reads each piece
    rebuild: Callable[[Sequence[str | None]], bytes]  # one translation per piece; None keeps the piece as it was

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.kind]

    def assemble(self, translations: Sequence[str | None]) -> bytes:
        if len(translations) != len(self.texts):
            raise ValueError(f"{len(translations)} translations for {len(self.texts)} pieces")
        return self.rebuild(translations)


def document_kind(filename: str | None, content_type: str | None = None) -> DocumentKind:
    """The kind of an uploaded file, by its name's extension (what DeepL's API goes by too)."""
    suffix = PurePath(filename or "").suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    raise ServiceError("unsupported_document", f"cannot translate {suffix or 'files without an extension'}: "
                       f"send a {', '.join(sorted(_EXTENSIONS))} file")


def open_document(data: bytes, kind: DocumentKind, settings: Settings) -> OpenedDocument:
    """Check and split a file into the pieces to translate (CPU work: call it off the event loop)."""
    if kind is DocumentKind.docx:
        from model_server.docx_file import open_docx  # lxml and zipfile work only when a .docx comes

        document = open_docx(data, settings)
    elif kind is DocumentKind.html:
        document = _open_html(data, settings)
    else:
        document = _open_txt(data, settings)
    if len(document.texts) > settings.document_max_pieces:
        raise ServiceError("document_too_many_pieces", f"the {kind.value} file has {len(document.texts)} pieces to "
                           f"translate (paragraphs, table cells...); the limit is {settings.document_max_pieces}")
    return document


_BOM = "\ufeff"


def _decoded(data: bytes, kind: DocumentKind) -> tuple[str, str]:
    """(byte-order mark or "", text): UTF-8 only (what every CMS and editor writes); the mark is put back on
    rebuild, so a file comes back as it went."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServiceError("invalid_document", f"the .{kind.value} file is not valid UTF-8 (byte {exc.start}): "
                           "save it as UTF-8") from None
    return (_BOM, text[1:]) if text.startswith(_BOM) else ("", text)


def _open_html(data: bytes, settings: Settings) -> OpenedDocument:
    """One piece, the whole markup, read as format html (model_server/html: tags, attributes and links kept)."""
    bom, markup = _decoded(data, DocumentKind.html)
    if len(markup) > settings.max_text_chars:  # the markup translator's own limit: refused now, not per piece
        raise ServiceError("text_too_long", f"the .html file has {len(markup)} characters; the limit for one "
                           f"document is {settings.max_text_chars} (max_text_chars)")
    if not markup.strip():
        return OpenedDocument(DocumentKind.html, [], DocumentFormat.html, lambda _: data)
    from model_server.html import parse_markup  # parsed once now too: unparsable markup is a 400 at upload, not
    # a job that ends "done" with the file untranslated
    parse_markup(markup)

    def rebuild(translations: Sequence[str | None]) -> bytes:
        return (bom + (translations[0] if translations[0] is not None else markup)).encode("utf-8")

    return OpenedDocument(DocumentKind.html, [markup], DocumentFormat.html, rebuild)


# Whitespace runs, found left to right (each match consumes its run: linear); a run holding a line break
# separates paragraphs, one without splits an over-long paragraph.
_WHITESPACE = re.compile(r"\s+")
_LINE_BREAK = re.compile(r"[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_SENTENCE_END = frozenset(".!?\u061f\u06d4\u2026")  # . ! ? ؟ ۔ …


def _open_txt(data: bytes, settings: Settings) -> OpenedDocument:
    """Paragraphs (text between line breaks) as pieces, each at most max_text_chars (a longer one is cut at a
    sentence end, else at a space, else hard); every separator - line breaks, indents, blank lines, \\r\\n - and
    every paragraph that is not Arabic (by min_arabic_ratio, the pipeline's own rule) stays literal text."""
    bom, text = _decoded(data, DocumentKind.txt)
    literals, pieces = _split_text(text, settings.max_text_chars, settings.min_arabic_ratio)

    def rebuild(translations: Sequence[str | None]) -> bytes:
        out = [bom, literals[0]]
        for piece, translation, literal in zip(pieces, translations, literals[1:]):
            out += [piece if translation is None else translation, literal]
        return "".join(out).encode("utf-8")

    return OpenedDocument(DocumentKind.txt, pieces, DocumentFormat.text, rebuild)


def _split_text(text: str, max_chars: int, min_ratio: float) -> tuple[list[str], list[str]]:
    """(literals, pieces) with text == literals[0] + pieces[0] + literals[1] + ... + literals[-1]."""
    literals: list[str] = [""]
    pieces: list[str] = []

    def add(start: int, end: int, separator_end: int) -> None:
        """text[start:end] as a piece (or literal when not Arabic), then text[end:separator_end] as literal."""
        piece = text[start:end]
        normalized = normalize_text(piece) if piece else ""
        if normalized.strip() and arabic_ratio(normalized) >= min_ratio:
            pieces.append(piece)
            literals.append(text[end:separator_end])
        else:
            literals[-1] += text[start:separator_end]

    start = 0          # where the current piece begins
    cut = None         # the best place to cut it so far: (end, separator_end), a space run inside it
    for run in _WHITESPACE.finditer(text):
        while run.start() - start > max_chars:  # the piece would be too long: cut it before this run
            end, separator_end = cut if cut is not None else (start + max_chars, start + max_chars)
            add(start, end, separator_end)
            start, cut = separator_end, None
        if run.start() == start or _LINE_BREAK.search(run.group()):  # leading whitespace, or a paragraph's end
            add(start, run.start(), run.end())
            start, cut = run.end(), None
        elif cut is None or text[run.start() - 1] in _SENTENCE_END or text[cut[0] - 1] not in _SENTENCE_END:
            cut = (run.start(), run.end())  # the latest sentence end, else the latest space
    while len(text) - start > max_chars:
        end, separator_end = cut if cut is not None else (start + max_chars, start + max_chars)
        add(start, end, separator_end)
        start, cut = separator_end, None
    add(start, len(text), len(text))
    return literals, pieces


async def translate_opened(pipeline: TranslationPipeline, document: OpenedDocument, options: GenerationOptions, *,
                           lane: Lane = Lane.bulk, glossary: Glossary | None = None) -> bytes:
    """Translate every piece of `document` in one pipeline call; the finished file's bytes."""
    if not document.texts:
        return document.assemble([])
    results, _ = await translate_documents(pipeline, document.texts, options, lane=lane, format=document.format,
                                           glossary=glossary)
    translations = [None if result.error or result.passthrough else result.translation for result in results]
    return await pipeline.cpu.run(document.assemble, translations)
