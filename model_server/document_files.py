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

        return open_docx(data, settings)
    raise NotImplementedError(kind)  # html and txt: issue 16, document jobs


async def translate_opened(pipeline: TranslationPipeline, document: OpenedDocument, options: GenerationOptions, *,
                           lane: Lane = Lane.bulk, glossary: Glossary | None = None) -> bytes:
    """Translate every piece of `document` in one pipeline call; the finished file's bytes."""
    if not document.texts:
        return document.assemble([])
    results, _ = await translate_documents(pipeline, document.texts, options, lane=lane, format=document.format,
                                           glossary=glossary)
    translations = [None if result.error or result.passthrough else result.translation for result in results]
    return await pipeline.cpu.run(document.assemble, translations)
