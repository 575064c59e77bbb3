"""Document jobs: a whole file translated as an ordinary job, for POST /v1/jobs uploads and DeepL /v2/document.

Upload: `prepare_document` names the kind (document_files.document_kind), opens the file on the CPU pool
(checks, pieces) and describes it (`StoredDocument`: name, kind, size, SHA-256 and the settings that shape
its pieces); `job_request` makes the stored job request: the pieces as the job's texts, read as the
document's format (text, html, or xml for .docx), plus `document_sha256` so that an Idempotency-Key
replay with another file is a mismatch, not the first job. Any job store and runner then translates the
pieces like any texts (model_server/jobs.py, model_server/worker.py): one odd piece never fails the others.

Download: `translated_file` opens the original bytes again - opening is deterministic, and it uses the
settings stored at upload, so a restart with other limits cuts the file the same way - and puts every
translated piece in its place; a piece that failed or was passed through stays as it was.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from model_server.document_files import DocumentKind, OpenedDocument, document_kind, open_document, MEDIA_TYPES
from model_server.errors import ServiceError
from model_server.jobs import StoredDocument
from model_server.settings import Settings

# The settings an opener reads: kept with the job, so its file is reopened at download exactly as at upload.
OPENING_SETTINGS = ("max_text_chars", "min_arabic_ratio", "set_translated_direction", "document_max_unpacked_bytes",
                    "document_max_pieces")


@dataclass
class PreparedDocument:
    document: OpenedDocument
    stored: StoredDocument

    @property
    def chars(self) -> int:
        """Characters to translate: what the character budget is charged and DeepL's billed_characters."""
        return self.stored.about["chars"]


def _open_and_describe(data: bytes, kind: DocumentKind, filename: str, settings: Settings) -> PreparedDocument:
    document = open_document(data, kind, settings)
    about = {"filename": filename or f"document.{kind.value}", "kind": kind.value, "bytes": len(data),
             "sha256": hashlib.sha256(data).hexdigest(), "pieces": len(document.texts),
             "chars": sum(len(text) for text in document.texts),
             "settings": {name: getattr(settings, name) for name in OPENING_SETTINGS}}
    return PreparedDocument(document, StoredDocument(about, data))


async def prepare_document(services, filename: str, data: bytes) -> PreparedDocument:
    """Check and open an uploaded file (`filename`: already `safe_filename`d). ServiceError: unsupported_document,
    invalid_document, document_encrypted, document_too_many_pieces, text_too_long..."""
    kind = document_kind(filename)
    return await services.cpu.run(_open_and_describe, data, kind, filename, services.settings)


def job_request(prepared: PreparedDocument, *, model: str | None = None, glossary: str | None = None,
                num_beams: int | None = None, max_new_tokens: int | None = None, priority: str = "bulk") -> dict:
    """The stored request of a document job: the same fields as a JSON job's, read by the same runners."""
    return {"texts": prepared.document.texts, "num_beams": num_beams, "max_new_tokens": max_new_tokens,
            "priority": priority, "clean": False, "format": prepared.document.format.value, "glossary": glossary,
            "model": model, "document_sha256": prepared.stored.about["sha256"]}


def media_type(about: dict) -> str:
    return MEDIA_TYPES[DocumentKind(about["kind"])]


def _assemble(data: bytes, about: dict, settings: Settings, result_json: str | None) -> bytes:
    results = json.loads(result_json)["results"] if result_json else []
    document = open_document(data, DocumentKind(about["kind"]), settings)
    if len(results) != len(document.texts):  # only if the opener itself changed between upload and download
        raise ServiceError("document_unavailable", f"the file now opens into {len(document.texts)} pieces, "
                           f"not the {len(results)} translated: upload it again")
    translations = [None if r.get("error") or r.get("passthrough") else r.get("translation") for r in results]
    return document.assemble(translations)


async def translated_file(services, job: dict, about: dict, data: bytes) -> bytes:
    """The translated file of a finished document job (CPU work on the pool)."""
    settings = services.settings.model_copy(update=about["settings"])
    return await services.cpu.run(_assemble, data, about, settings, job["result"])
