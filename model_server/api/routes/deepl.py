"""DeepL-compatible API: POST /v2/translate, GET /v2/languages, GET|POST /v2/usage (and, included below,
/v2/glossaries: routes/deepl_glossaries.py), for clients written for DeepL (the official `deepl`
libraries, CMS plugins) pointed at this server (`server_url`).

Only Arabic -> English. Accepted and honoured: `text` (repeatable), `source_lang` (AR or absent),
`target_lang` (EN, EN-US, EN-GB: the same English), `tag_handling` (html, xml), `ignore_tags`,
`split_sentences` (1 default; 0 and nonewlines translate line breaks as spaces in plain text - sentences
are always split for the model), `show_billed_characters` (the characters charged to the key's quota),
`glossary_id` (or one `glossary_ids`: a /v2/glossaries id, which is a /v1/glossaries name; unknown: 404;
several: 400). Accepted, not applicable: `context` (the Marian model translates sentence by sentence;
never charged), `formality` default/prefer_more/prefer_less (English has no formality; more/less: 400
"'formality' is not supported for given 'target_lang'.", DeepL's own answer), `model_type` (any of
DeepL's three; `model_type_used` is latency_optimized: one classic NMT model). Accepted and ignored:
`preserve_formatting`, `outline_detection`, `splitting_tags`, `non_splitting_tags`,
`tag_handling_version` and unknown fields. Refused (400): `style_id`, `translation_memory_id`,
`custom_instructions`. Errors: `{"message": ...}` with DeepL's statuses (model_server.api.compat).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from model_server.api.compat import (
    DEEPL,
    FLAG_SCHEMA,
    as_flag,
    dialect_responses,
    dialect_route,
    documented_as,
    describe_with,
    read_params,
    request_body_doc,
    translate_texts,
)
from model_server.api.deps import get_services
from model_server.api.errors import refuse_other_methods
from model_server.api.quota import CharQuota
from model_server.api.ratelimit import quota_principal
from model_server.api.routes import deepl_glossaries
from model_server.api.routes.glossaries import find_glossary
from model_server.documents import DocumentFormat
from model_server.errors import ServiceError

router = APIRouter(prefix="/v2", route_class=dialect_route(DEEPL), tags=["deepl-compatible"])

TARGETS = ("EN", "EN-US", "EN-GB")
_ERRORS = dialect_responses(DEEPL, (400, 403, 404, 413, 429, 456, 500, 503, 504))  # 404: glossary


def _upper(value: Any) -> Any:
    """"en-us" -> "EN-US", "" -> None (absent); anything else is left to fail validation."""
    return (value.strip().upper() or None) if isinstance(value, str) else value


def _tags(value: Any) -> Any:
    """["a,b", "c"] or "a,b" -> ["a", "b", "c"]; anything else is left to fail validation."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [tag.strip() for item in value for tag in item.split(",") if tag.strip()]
    return value


_TARGETS = [*TARGETS, *(t.lower() for t in TARGETS)]


class DeepLTranslateBody(BaseModel):
    """The fields of DeepL's POST /v2/translate this server reads (others are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")

    text: list[str] = Field(min_length=1, description="texts to translate (form: repeat `text`)", json_schema_extra=
                            documented_as({"anyOf": [{"type": "array", "items": {"type": "string"}, "minItems": 1},
                                                     {"type": "string"}]}))
    target_lang: Literal["EN", "EN-US", "EN-GB"] = Field(description="EN, EN-US or EN-GB", json_schema_extra=
                                                         documented_as({"type": "string", "enum": _TARGETS}))
    source_lang: Literal["AR"] | None = Field(None, description="AR, or absent to detect", json_schema_extra=
                                              documented_as({"anyOf": [{"type": "string", "enum": ["AR", "ar", ""]},
                                                                       {"type": "null"}]}))
    tag_handling: Literal["html", "xml"] | None = None
    split_sentences: Literal["0", "1", "nonewlines"] = Field("1", json_schema_extra=documented_as(
        {"anyOf": [{"type": "string", "enum": ["0", "1", "nonewlines"]}, {"type": "integer", "enum": [0, 1]}]}))
    ignore_tags: list[str] = Field(default_factory=list, description="tags whose content is never translated",
                                   json_schema_extra=documented_as({"anyOf": [
                                       {"type": "array", "items": {"type": "string"}}, {"type": "string"}]}))
    show_billed_characters: bool = Field(False, json_schema_extra=documented_as(FLAG_SCHEMA))
    glossary_id: str | None = Field(None, description="a /v2/glossaries glossary_id: the name of a glossary of "
                                    "/v1/glossaries")
    glossary_ids: list[str] | None = Field(None, description="one glossary id (more than one: 400)")
    context: str | None = Field(None, description="accepted, not used: the Marian model translates sentence by "
                                "sentence, without context; never charged")
    formality: Literal["default", "more", "less", "prefer_more", "prefer_less"] | None = Field(
        None, description="English has no formality: default/prefer_* are ignored, more/less answer 400 as DeepL does")
    model_type: Literal["latency_optimized", "quality_optimized", "prefer_quality_optimized"] | None = Field(
        None, description="accepted; one model serves every request: model_type_used is latency_optimized")

    _text = field_validator("text", mode="before")(lambda v: [v] if isinstance(v, str) else v)
    _langs = field_validator("target_lang", "source_lang", mode="before")(_upper)
    _tags = field_validator("ignore_tags", mode="before")(_tags)
    _split = field_validator("split_sentences", mode="before")(
        lambda v: str(v) if isinstance(v, int) and not isinstance(v, bool) and v in (0, 1) else v)
    _flag = field_validator("show_billed_characters", mode="before")(as_flag)
    _lower = field_validator("formality", "model_type", mode="before")(
        lambda v: (v.strip().lower() or None) if isinstance(v, str) else v)


class DeepLTranslation(BaseModel):
    detected_source_language: str
    text: str
    billed_characters: int | None = None
    model_type_used: str | None = None


# DeepL features that change what a translation is; ignoring them would return something else than asked.
REFUSED_FIELDS = ("style_id", "translation_memory_id", "custom_instructions")
# The one model, classic sentence-level NMT: what DeepL calls its latency-optimized kind.
MODEL_TYPE_USED = "latency_optimized"


def _check_options(body: DeepLTranslateBody) -> None:
    """400 for what this server cannot honour: formality more/less (English has none: DeepL's own answer),
    style rules, translation memories, custom instructions."""
    if body.formality in ("more", "less"):
        raise ServiceError("unsupported_option", "'formality' is not supported for given 'target_lang'.")
    refused = [name for name in REFUSED_FIELDS if (body.model_extra or {}).get(name) not in (None, "", [])]
    if refused:
        raise ServiceError("unsupported_option", f"'{refused[0]}' is not supported by this server.")


class DeepLTranslateResponse(BaseModel):
    translations: list[DeepLTranslation]


_describe = describe_with(missing="Parameter '{name}' not specified.", bad="Value for '{name}' not supported.")


@router.post("/translate", response_model=DeepLTranslateResponse, response_model_exclude_none=True,
             responses=_ERRORS, openapi_extra=request_body_doc(DeepLTranslateBody))
async def deepl_translate(request: Request):
    """DeepL `POST /v2/translate`: form or JSON body; `Authorization: DeepL-Auth-Key <key>` when keys are on."""
    body: DeepLTranslateBody = await read_params(request, DeepLTranslateBody, describe=_describe,
                                                 lists=frozenset({"text", "ignore_tags", "glossary_ids"}))
    _check_options(body)
    glossary_names = [name for name in [body.glossary_id, *(body.glossary_ids or [])] if name]
    if len(set(glossary_names)) > 1:
        raise ServiceError("unsupported_option", "Only one glossary per request is supported.")
    # A glossary_id is the name of a service glossary (routes/deepl_glossaries.py).
    glossary = await find_glossary(get_services(request), glossary_names[0]) if glossary_names else None
    format = DocumentFormat(body.tag_handling) if body.tag_handling else DocumentFormat.text
    texts = body.text
    if format is DocumentFormat.text and body.split_sentences in ("0", "nonewlines"):
        texts = [" ".join(text.splitlines()) for text in texts]
    results = await translate_texts(request, texts, format=format, skip_tags=frozenset(body.ignore_tags),
                                    glossary=glossary)
    return DeepLTranslateResponse(translations=[
        # A text passed through untranslated (non_arabic=passthrough) is reported as EN: the service only
        # tells Arabic from not-Arabic, and English is the other language it knows.
        DeepLTranslation(detected_source_language="EN" if result.passthrough else "AR", text=result.translation or "",
                         billed_characters=len(text) if body.show_billed_characters else None,
                         model_type_used=MODEL_TYPE_USED if body.model_type else None)
        for text, result in zip(texts, results)])   # the texts charged (translate_texts): billed as counted


# What DeepL reports as the character_limit of a key without one (a Pro key without cost control): the
# client's Usage then reads as valid and never reached, which a missing or zero limit would not.
NO_LIMIT = 1_000_000_000_000


class DeepLUsage(BaseModel):
    character_count: int = Field(description="characters translated this period (char_quota_period)")
    character_limit: int = Field(description=f"char_quota_per_period; {NO_LIMIT} when there is none (DeepL's "
                                 "value for a key without a limit)")


@router.get("/usage", response_model=DeepLUsage, responses=_ERRORS, operation_id="deepl_usage")
@router.post("/usage", response_model=DeepLUsage, responses=_ERRORS, operation_id="deepl_usage_post")
async def deepl_usage(request: Request):
    """DeepL `GET /v2/usage` (POST too, as older clients send it): the caller's API key's characters this
    period and its quota (auth off: every client's one count)."""
    quota: CharQuota = request.app.state.char_quota
    count = await quota.usage(quota_principal(request.scope))
    return DeepLUsage(character_count=count, character_limit=quota.limit or NO_LIMIT)


class DeepLLanguage(BaseModel):
    language: str
    name: str
    supports_formality: bool | None = None


class DeepLLanguagesQuery(BaseModel):
    type: Literal["source", "target"] = "source"


_TYPE_PARAMETER = {"parameters": [{"name": "type", "in": "query", "required": False,
                                   "schema": {"type": "string", "enum": ["source", "target"], "default": "source"}}]}


@router.get("/languages", response_model=list[DeepLLanguage], response_model_exclude_none=True, responses=_ERRORS,
            openapi_extra=_TYPE_PARAMETER, operation_id="deepl_languages")
@router.post("/languages", response_model=list[DeepLLanguage], response_model_exclude_none=True, responses=_ERRORS,
             openapi_extra=_TYPE_PARAMETER, operation_id="deepl_languages_post")
async def deepl_languages(request: Request):
    """DeepL `GET /v2/languages?type=source|target` (query or form body, as the `deepl` client sends it; POST
    too, as older plugins send it): this server's pair, AR -> EN."""
    query: DeepLLanguagesQuery = await read_params(request, DeepLLanguagesQuery, lists=frozenset(),
                                                   describe=_describe)
    if query.type == "target":
        return [DeepLLanguage(language="EN-GB", name="English (British)", supports_formality=False),
                DeepLLanguage(language="EN-US", name="English (American)", supports_formality=False)]
    return [DeepLLanguage(language="AR", name="Arabic")]


# An Allow naming both methods (after the real routes, so that they match first).
refuse_other_methods(router, "/usage", ("GET", "POST"))
refuse_other_methods(router, "/languages", ("GET", "POST"))

# /v2/glossary-language-pairs and /v2/glossaries (model_server/api/routes/deepl_glossaries.py).
router.include_router(deepl_glossaries.router)
