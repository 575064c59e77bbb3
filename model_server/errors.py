"""Service errors: one exception type carrying a stable code, and the one table of codes and statuses.

Every layer raises `ServiceError(code, message)`; the HTTP layer turns it into
`{"error": {"code": ..., "message": ...}}` with the status from `ERROR_CODES`. Codes are part of the
API (the README lists them): never rename one.
"""

from __future__ import annotations

# code -> (HTTP status, when it happens)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "the body is not valid JSON"),
    "invalid_encoding": (400, "the body is not valid UTF-8, or JSON escapes a lone UTF-16 surrogate"),
    "empty_text": (400, "a text is empty or only whitespace/control characters"),
    "not_arabic": (400, "a text is not (mostly) Arabic script"),
    "invalid_markup": (400, "format=html (or DeepL tag_handling=xml): the markup cannot be parsed, or nests deeper "
                            "than the parser keeps (256 levels)"),
    "unsupported_option": (400, "a DeepL option this server does not offer (several glossary_ids, formality "
                           "more/less, style_id, translation_memory_id, custom_instructions)"),
    "unknown_model": (422, "the request names a translation model that is not loaded"),
    "validation_error": (422, "a field is missing, unknown, of the wrong type or out of range"),
    "body_too_large": (413, "the request body exceeds max_body_bytes"),
    "text_too_long": (413, "a text exceeds max_text_chars"),
    "too_many_texts": (413, "a request holds more than max_texts_per_request texts"),
    "unauthorized": (401, "no API key sent (Authorization: Bearer <key> or X-API-Key: <key>) while auth is on"),
    "forbidden": (403, "the API key sent is not a valid key"),
    "rate_limited": (429, "requests or characters per minute over the limit; retry after Retry-After seconds"),
    "exceeds_rate_limit": (413, "one request holds more characters than rate_limit_chars_per_minute; split it"),
    "not_found": (404, "no such endpoint"),
    "method_not_allowed": (405, "wrong HTTP method for the endpoint"),
    "queue_full": (503, "the batch queue is full; retry after Retry-After seconds"),
    "shutting_down": (503, "the server is shutting down"),
    "not_ready": (503, "models are still loading or the server is shutting down"),
    "client_closed": (499, "the client disconnected; its queued work was dropped (never seen by clients)"),
    "timeout": (504, "the request did not finish within request_timeout_s"),
    "inference_failed": (500, "the model failed on this input (other inputs are unaffected)"),
    "model_unavailable": (503, "model weights cannot be found or loaded (start-up)"),
    "summarization_disabled": (503, "summarization is off (summarization_enabled=false) or no summarizer is loaded"),
    "unknown_preset": (422, "the request names a summary preset that prompts_dir does not hold"),
    "invalid_preset": (500, "a preset file in prompts_dir is invalid (start-up: the message names file and field)"),
    "invalid_glossary": (400, "a glossary term or rendering is empty after normalization, a term spans lines, "
                         "or a rendering holds a control or bidi character"),
    "unknown_glossary": (404, "the request names a glossary that does not exist (GET /v1/glossaries lists them)"),
    "glossary_exists": (409, "POST /v1/glossaries with a name already taken (PUT replaces a glossary)"),
    "glossaries_unavailable": (503, "the glossary store (state_path) cannot be opened; see the start-up log"),
    "unknown_job": (404, "/v1/jobs/{id} with an id this server never issued, or (auth on) another API key's job"),
    "jobs_unavailable": (503, "the job store (state_path) cannot be opened; see the start-up log"),
    "too_many_segments": (413, "a request's segments alone exceed max_queue_segments: no retry can admit it; split it"),
    "callback_not_allowed": (400, "callback_url is not http(s), does not resolve, or reaches a loopback, private, "
                             "link-local, multicast or cloud metadata address not in webhook_allowed_hosts"),
    "idempotency_mismatch": (422, "an Idempotency-Key already used by this client for a different request body"),
    "invalid_cursor": (400, "GET /v1/jobs with a cursor that is not a next_cursor this server returned"),
    "job_interrupted": (500, "a job's error: the server stopped while it ran jobs_max_attempts times (it may crash "
                        "the server), so it is not run again"),
    "too_many_inflight": (429, "more requests of one API key (or client address) in flight at once than "
                          "max_inflight_per_key; retry after Retry-After seconds"),
    "too_many_glossaries": (409, "creating a glossary while glossaries_max_count are stored (delete one first)"),
    "glossary_too_many_entries": (413, "a glossary with more than glossary_max_entries entries"),
    "glossary_term_too_long": (413, "a glossary term longer than glossary_max_term_chars"),
    "glossary_rendering_too_long": (413, "a glossary rendering longer than glossary_max_rendering_chars"),
    "state_unavailable": (503, "the shared state Redis (state_url) does not answer; retry after Retry-After seconds"),
    "worker_unhealthy": (503, "a `model-server worker`'s health port: its model loop is stuck or a queue thread died"),
    "quota_exceeded": (403, "the API key's characters of this char_quota_period are spent (char_quota_per_period)"),
    "stream_unsupported": (400, "Accept: text/event-stream on POST /translate with format html or xml: markup is "
                           "translated as a whole document, not streamed; ask for application/json"),
    "invalid_multipart": (400, "a multipart/form-data upload that cannot be parsed, or with more parts, part "
                          "headers or form-field bytes than the upload parser allows (README 'Documents')"),
    "document_too_many_pieces": (413, "a document with more pieces to translate than document_max_pieces"),
    "document_not_ready": (409, "GET /v1/jobs/{id}/document of a job still queued or running (DeepL: 503)"),
    "document_unavailable": (410, "GET /v1/jobs/{id}/document of a document job that failed, was cancelled or "
                             "expired: no translated file will come"),
    "unsupported_document": (415, "a document upload whose kind is not .docx, .html or .txt"),
    "invalid_document": (400, "a document upload that cannot be read as the kind it claims (a broken .docx, "
                         "not UTF-8 .txt/.html, a zip that unpacks past document_max_unpacked_bytes)"),
    "document_encrypted": (400, "a password-protected (encrypted) Word file: save it without a password first"),
    "document_too_large": (413, "a document upload larger than document_max_bytes"),
    "internal_error": (500, "a bug: logged with its stack trace"),
}


def status_for(code: str) -> int:
    return ERROR_CODES.get(code, (500, ""))[0]


class ServiceError(Exception):
    def __init__(self, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code!r}: add it to ERROR_CODES")
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}

    @property
    def status(self) -> int:
        return status_for(self.code)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


def overloaded(code: str, message: str, retry_after_s: int = 1) -> ServiceError:
    """A 503 the client should retry: carries Retry-After."""
    return ServiceError(code, message, headers={"Retry-After": str(retry_after_s)})
