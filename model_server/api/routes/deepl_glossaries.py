"""DeepL-compatible glossaries: /v2/glossary-language-pairs and /v2/glossaries (create, list, get, delete,
`/entries` as TSV), backed by the service's own glossaries (`state.glossaries`: SQLite or the state Redis,
with the caps and error codes of /v1/glossaries).

One set of glossaries, two APIs. A DeepL `glossary_id` IS the service glossary's name:

* a glossary created here gets a new UUID (DeepL's id form, which is also a valid service name) as its
  name, and keeps the DeepL `name` the client gave as its `label`; /v1/glossaries lists it under the UUID;
* a glossary created through /v1/glossaries is listed here with its name as both `glossary_id` and `name`;
* `glossary_id` in /v2/translate (and `glossary` in /translate, /v1/jobs) finds either kind by that name.

DeepL glossaries are immutable (no replace through /v2); PUT /v1/glossaries/{id} replaces one here too.
Only AR -> EN (`source_lang` ar, `target_lang` en, any case, regional variants allowed); others: 400
`validation_error` ("Value for 'source_lang' not supported.").
`entries` are TSV (`entries_format=tsv`, the default: one `term<TAB>rendering` a line) or CSV (`csv`:
`term,rendering` or `term,rendering,ar,en` a line, RFC 4180 quoting), parsed off the event loop; a line that
is neither: 400 `invalid_glossary` naming the line. Terms are normalized as for /v1 (`/entries` returns
them normalized).
"""

from __future__ import annotations

import asyncio
import csv
import re
import uuid
from datetime import datetime, timezone
from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, field_validator

from model_server.api.compat import DEEPL, describe_with, dialect_responses, dialect_route, read_params, \
    request_body_doc
from model_server.api.deps import get_services
from model_server.api.errors import refuse_other_methods
from model_server.api.routes.glossaries import find_glossary, glossary_store, glossary_limits
from model_server.errors import ServiceError
from model_server.glossary import NAME_PATTERN, Glossary
from model_server.state.glossaries import unknown

router = APIRouter(route_class=dialect_route(DEEPL), tags=["deepl-compatible"])

_ERRORS = dialect_responses(DEEPL, (400, 403, 404, 409, 413, 429, 456, 500, 503))
_describe = describe_with(missing="Parameter '{name}' not specified.", bad="Value for '{name}' not supported.")
_NAME = re.compile(NAME_PATTERN)
TSV_MEDIA_TYPE = "text/tab-separated-values; charset=utf-8"   # what DeepL answers /entries with


class DeepLGlossaryLanguagePair(BaseModel):
    source_lang: str
    target_lang: str


class DeepLGlossaryLanguagePairs(BaseModel):
    supported_languages: list[DeepLGlossaryLanguagePair]


@router.get("/glossary-language-pairs", response_model=DeepLGlossaryLanguagePairs, responses=_ERRORS)
async def deepl_glossary_language_pairs():
    """DeepL `GET /v2/glossary-language-pairs`: this server's one pair."""
    return DeepLGlossaryLanguagePairs(supported_languages=[DeepLGlossaryLanguagePair(source_lang="ar",
                                                                                     target_lang="en")])


class DeepLGlossaryCreate(BaseModel):
    """DeepL's POST /v2/glossaries fields (JSON or form)."""

    name: str = Field(min_length=1, max_length=256, description="any name (kept as the glossary's label)")
    source_lang: Literal["ar"] = Field(description="ar (any case)")
    target_lang: Literal["en"] = Field(description="en (any case; EN-US, EN-GB: en)")
    entries: str = Field(description="the entries, in entries_format")
    entries_format: Literal["tsv", "csv"] = "tsv"

    @field_validator("source_lang", "target_lang", mode="before")
    @classmethod
    def _language(cls, value):
        if not isinstance(value, str):
            return value
        return value.strip().lower().split("-")[0]   # anything but ar / en: 400 "Value for ... not supported."


class DeepLGlossaryInfo(BaseModel):
    glossary_id: str
    name: str
    ready: bool = True
    source_lang: str = "ar"
    target_lang: str = "en"
    creation_time: str = Field(description="ISO 8601, UTC")
    entry_count: int


class DeepLGlossaryList(BaseModel):
    glossaries: list[DeepLGlossaryInfo]


def _info(glossary: Glossary) -> DeepLGlossaryInfo:
    created = datetime.fromtimestamp(glossary.created_at, tz=timezone.utc)
    return DeepLGlossaryInfo(glossary_id=glossary.name, name=glossary.label or glossary.name,
                             creation_time=created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                             entry_count=len(glossary.entries))


def parse_entries(text: str, entries_format: str) -> dict[str, str]:
    """TSV or CSV glossary entries -> {term: rendering}; ServiceError invalid_glossary naming the bad line."""
    lines = text.splitlines()
    rows = csv.reader(lines, strict=True) if entries_format == "csv" else (line.split("\t") for line in lines)
    entries: dict[str, str] = {}
    try:
        for number, row in enumerate(rows, 1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue   # blank lines are skipped, as DeepL does
            entry = _entry(row, entries_format)
            if entry is None:
                raise _bad_line(number, entries_format)
            term, rendering = entry
            if term in entries:
                raise ServiceError("invalid_glossary", f"glossary entries line {number}: the term {term[:40]!r} "
                                   "appears twice")
            entries[term] = rendering
    except csv.Error as exc:
        raise ServiceError("invalid_glossary", f"glossary entries are not valid CSV: {exc}") from None
    if not entries:
        raise ServiceError("invalid_glossary", "the glossary has no entries")
    return entries


def _entry(row: list[str], entries_format: str) -> tuple[str, str] | None:
    """(term, rendering) of one row, or None when it is not an entry of that format."""
    if len(row) == 4 and entries_format == "csv":   # term,rendering,source language,target language
        if (row[2].strip().lower(), row[3].strip().lower().split("-")[0]) != ("ar", "en"):
            return None
        row = row[:2]
    if len(row) != 2 or not row[0].strip() or not row[1].strip():
        return None
    return row[0].strip(), row[1].strip()


def _bad_line(number: int, entries_format: str) -> ServiceError:
    shape = "term,rendering (or term,rendering,ar,en)" if entries_format == "csv" else "term<TAB>rendering"
    return ServiceError("invalid_glossary", f"glossary entries line {number} is not {shape}")


async def _find(request: Request, glossary_id: str) -> Glossary:
    """The glossary of a DeepL glossary_id (the service name); 404 unknown_glossary."""
    if not _NAME.fullmatch(glossary_id):
        raise unknown(glossary_id[:100])
    return await find_glossary(get_services(request), glossary_id)


@router.post("/glossaries", status_code=201, response_model=DeepLGlossaryInfo, responses=_ERRORS,
             openapi_extra=request_body_doc(DeepLGlossaryCreate))
async def deepl_create_glossary(request: Request):
    """DeepL `POST /v2/glossaries`: a new glossary (id: a new UUID; `name` kept as its label)."""
    body: DeepLGlossaryCreate = await read_params(request, DeepLGlossaryCreate, lists=frozenset(),
                                                  describe=_describe)
    services = get_services(request)
    entries = await services.cpu.run(parse_entries, body.entries, body.entries_format)
    store = glossary_store(services)
    glossary = await asyncio.to_thread(store.create, str(uuid.uuid4()), entries, glossary_limits(services), body.name)
    return _info(glossary)


@router.get("/glossaries", response_model=DeepLGlossaryList, responses=_ERRORS)
async def deepl_list_glossaries(request: Request):
    """DeepL `GET /v2/glossaries`: every glossary, /v1 ones included."""
    glossaries = await asyncio.to_thread(glossary_store(get_services(request)).list)
    return DeepLGlossaryList(glossaries=[_info(glossary) for glossary in glossaries])


@router.get("/glossaries/{glossary_id}", response_model=DeepLGlossaryInfo, responses=_ERRORS)
async def deepl_get_glossary(request: Request, glossary_id: str):
    return _info(await _find(request, glossary_id))


@router.get("/glossaries/{glossary_id}/entries", responses={
    200: {"content": {"text/tab-separated-values": {"schema": {"type": "string"}}},
          "description": "one `term<TAB>rendering` a line (terms normalized)"}, **_ERRORS})
async def deepl_glossary_entries(request: Request, glossary_id: str):
    """DeepL `GET /v2/glossaries/{id}/entries`: the entries as TSV."""
    glossary = await _find(request, glossary_id)
    tsv = "\n".join(f"{term}\t{rendering}" for term, rendering in glossary.entries.items())
    return Response(tsv, media_type=TSV_MEDIA_TYPE)


@router.delete("/glossaries/{glossary_id}", status_code=204, responses=_ERRORS)
async def deepl_delete_glossary(request: Request, glossary_id: str):
    if not _NAME.fullmatch(glossary_id):
        raise unknown(glossary_id[:100])
    await asyncio.to_thread(glossary_store(get_services(request)).delete, glossary_id)
    return Response(status_code=204)


# After the real routes, so that they match first: an Allow naming every method of the path.
refuse_other_methods(router, "/glossaries", ("GET", "POST"))
refuse_other_methods(router, "/glossaries/{glossary_id}", ("GET", "DELETE"))
