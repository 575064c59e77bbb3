"""Glossaries: CRUD under /v1/glossaries (model_server/glossary.py applies them to translations)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from model_server.api.deps import get_services
from model_server.api.errors import refuse_other_methods
from model_server.api.schemas import ErrorResponse
from model_server.errors import ServiceError
from model_server.glossary import NAME_PATTERN, Glossary, GlossaryLimits
from model_server.services import Services
from model_server.state.glossaries import GlossaryStore

router = APIRouter(prefix="/v1/glossaries", tags=["glossaries"])
_ERRORS = {status: {"model": ErrorResponse} for status in (400, 404, 409, 413, 422, 503)}
_NAME = Path(pattern=NAME_PATTERN, description="letters, digits, '_', '.', '-' (at most 64)")


_ENTRIES_DOC = ("Arabic term -> English rendering (at most MODEL_SERVER_GLOSSARY_MAX_ENTRIES entries, terms and "
                "renderings at most GLOSSARY_MAX_TERM_CHARS / GLOSSARY_MAX_RENDERING_CHARS characters)")


class GlossaryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"name": "libya-desk", "entries": {"خليفة حفتر": "Field Marshal Khalifa Haftar"}}]})

    name: str = Field(pattern=NAME_PATTERN, description="letters, digits, '_', '.', '-' (at most 64)")
    entries: dict[str, str] = Field(description=_ENTRIES_DOC)


class GlossaryReplace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    entries: dict[str, str] = Field(description=_ENTRIES_DOC)


class GlossaryOut(BaseModel):
    name: str
    entries: dict[str, str] = Field(description="normalized Arabic term -> English rendering")
    version: int = Field(description="grows by one on every replace (translation cache entries follow it)")
    created_at: float = Field(description="Unix time")
    updated_at: float = Field(description="Unix time")
    label: str | None = Field(None, description="the DeepL API's `name` of a glossary created through "
                              "/v2/glossaries (its DeepL glossary_id is `name`); null otherwise")


class GlossaryList(BaseModel):
    glossaries: list[GlossaryOut]


def glossary_store(services: Services) -> GlossaryStore:
    """The glossary store; 503 glossaries_unavailable when its file cannot be opened."""
    if services.glossaries is None:
        raise ServiceError("glossaries_unavailable", "the glossary store cannot be opened (see the server log)")
    return services.glossaries


async def find_glossary(services: Services, name: str) -> Glossary:
    """The named glossary (for translate routes); ServiceError unknown_glossary / glossaries_unavailable /
    state_unavailable (the state Redis does not answer)."""
    return await asyncio.to_thread(glossary_store(services).get, name)


def glossary_limits(services: Services) -> GlossaryLimits:
    return GlossaryLimits.from_settings(services.settings)


def _out(glossary: Glossary) -> GlossaryOut:
    return GlossaryOut(**glossary.to_dict())


@router.post("", status_code=201, response_model=GlossaryOut, responses=_ERRORS)
async def create_glossary(body: GlossaryCreate, request: Request):
    """Create a glossary; 409 glossary_exists when the name is taken, too_many_glossaries when the store is full."""
    services = get_services(request)
    return _out(await asyncio.to_thread(glossary_store(services).create, body.name, body.entries,
                                        glossary_limits(services)))


@router.get("", response_model=GlossaryList, responses=_ERRORS)
async def list_glossaries(request: Request):
    store = glossary_store(get_services(request))
    return GlossaryList(glossaries=[_out(g) for g in await asyncio.to_thread(store.list)])


@router.get("/{name}", response_model=GlossaryOut, responses=_ERRORS)
async def get_glossary(request: Request, name: str = _NAME):
    return _out(await find_glossary(get_services(request), name))


@router.put("/{name}", response_model=GlossaryOut, responses=_ERRORS)
async def replace_glossary(body: GlossaryReplace, request: Request, name: str = _NAME):
    """Replace the entries (version + 1); creates the glossary when it does not exist."""
    services = get_services(request)
    return _out(await asyncio.to_thread(glossary_store(services).replace, name, body.entries,
                                        glossary_limits(services)))


@router.delete("/{name}", status_code=204, responses=_ERRORS)
async def delete_glossary(request: Request, name: str = _NAME):
    store = glossary_store(get_services(request))
    await asyncio.to_thread(store.delete, name)
    return Response(status_code=204)


# After the real routes, so that they match first.
refuse_other_methods(router, "", ("GET", "POST"))
refuse_other_methods(router, "/{name}", ("GET", "PUT", "DELETE"))
