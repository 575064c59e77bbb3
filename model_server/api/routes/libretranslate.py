"""LibreTranslate-compatible API under /libretranslate/: POST translate, POST detect, GET languages, for
clients written for LibreTranslate (point them at `http://host:port/libretranslate/`).

Only Arabic -> English: `source` is `ar` or `auto`, `target` is `en`; `format` text or html; `q` a string
(form or JSON) or a list of strings (JSON); `api_key` (body or query) when the service's API keys are on;
`alternatives` is accepted and answered with an empty list. Detection only tells Arabic from not-Arabic
(model_server.api.compat.detect_language). Errors: `{"error": ...}` with LibreTranslate's statuses.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_server.api.compat import (
    COUNT_SCHEMA,
    LIBRETRANSLATE,
    as_count,
    detect_language,
    dialect_responses,
    dialect_route,
    documented_as,
    describe_with,
    read_params,
    request_body_doc,
    translate_texts,
)
from model_server.documents import DocumentFormat
from model_server.errors import ServiceError

router = APIRouter(prefix="/libretranslate", route_class=dialect_route(LIBRETRANSLATE),
                   tags=["libretranslate-compatible"])
_ERRORS = dialect_responses(LIBRETRANSLATE, (400, 403, 429, 500, 503, 504))


class LibreTranslateBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    q: str | list[str] = Field(description="text, or (JSON) a list of texts")
    source: str = Field(description="ar, or auto to detect")
    target: str = Field(description="en")
    format: str = Field("text", description="text | html")
    api_key: str | None = None
    alternatives: int = Field(0, ge=0, description="accepted; no alternatives are produced",
                              json_schema_extra=documented_as(COUNT_SCHEMA))

    _count = field_validator("alternatives", mode="before")(as_count)


class LibreDetectBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    q: str = Field(description="text to detect")
    api_key: str | None = None


class Detection(BaseModel):
    confidence: float
    language: str


class LibreTranslateResponse(BaseModel):
    translatedText: str | list[str]
    detectedLanguage: Detection | list[Detection] | None = None
    alternatives: list[str] | list[list[str]] | None = None


class LibreLanguage(BaseModel):
    code: str
    name: str
    targets: list[str]


_describe = describe_with(missing="Invalid request: missing {name} parameter",
                          bad="Invalid request: bad {name} parameter")


@router.post("/translate", response_model=LibreTranslateResponse, response_model_exclude_none=True,
             responses=_ERRORS, openapi_extra=request_body_doc(LibreTranslateBody))
async def libretranslate_translate(request: Request):
    """LibreTranslate `POST /translate`."""
    body: LibreTranslateBody = await read_params(request, LibreTranslateBody, lists=frozenset(), describe=_describe)
    batch = isinstance(body.q, list)
    texts = body.q if isinstance(body.q, list) else [body.q]
    if not batch and not body.q:
        raise ServiceError("validation_error", "Invalid request: missing q parameter")
    source, target, format = body.source.strip().lower(), body.target.strip().lower(), body.format.strip().lower()
    if source not in ("ar", "auto"):
        raise ServiceError("validation_error", f"{body.source} is not supported")
    if target != "en":
        raise ServiceError("validation_error", f"{body.target} is not supported")
    if format not in ("text", "html"):
        raise ServiceError("validation_error", f"{body.format} format is not supported")
    results = await translate_texts(request, texts, format=DocumentFormat(format))
    translations = [result.translation or "" for result in results]
    response: dict[str, Any] = {"translatedText": translations if batch else translations[0]}
    if source == "auto":
        detected = [_detected(text, result.passthrough) for text, result in zip(texts, results)]
        response["detectedLanguage"] = detected if batch else detected[0]
    if body.alternatives:
        response["alternatives"] = [[] for _ in texts] if batch else []
    return LibreTranslateResponse(**response)


def _detected(text: str, passthrough: bool) -> Detection:
    candidates = dict(detect_language(text))
    language = "en" if passthrough else "ar"   # what was actually done with the text
    return Detection(language=language, confidence=candidates[language])


@router.post("/detect", response_model=list[Detection], responses=_ERRORS,
             openapi_extra=request_body_doc(LibreDetectBody))
async def libretranslate_detect(request: Request):
    """LibreTranslate `POST /detect`: Arabic or not (share of Arabic-script letters), most likely first."""
    body: LibreDetectBody = await read_params(request, LibreDetectBody, lists=frozenset(), describe=_describe)
    if not body.q.strip():
        raise ServiceError("validation_error", "Invalid request: missing q parameter")
    return [Detection(language=language, confidence=confidence) for language, confidence in detect_language(body.q)]


@router.get("/languages", response_model=list[LibreLanguage], responses=_ERRORS)
async def libretranslate_languages():
    """LibreTranslate `GET /languages`: this server's pair (ar -> en)."""
    return [LibreLanguage(code="ar", name="Arabic", targets=["en"]), LibreLanguage(code="en", name="English",
                                                                                  targets=[])]
