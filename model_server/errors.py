"""Service errors: one exception type carrying a stable code, and the one table of codes and statuses.

Every layer raises `ServiceError(code, message)`; the HTTP layer turns it into
`{"error": {"code": ..., "message": ...}}` with the status from `ERROR_CODES`. Codes are part of the
API (the README lists them): never rename one.
"""

from __future__ import annotations

# code -> (HTTP status, when it happens)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "invalid_json": (400, "the body is not valid JSON"),
    "invalid_encoding": (400, "the body is not valid UTF-8"),
    "empty_text": (400, "a text is empty or only whitespace/control characters"),
    "not_arabic": (400, "a text is not (mostly) Arabic script"),
    "validation_error": (422, "a field is missing, unknown, of the wrong type or out of range"),
    "body_too_large": (413, "the request body exceeds max_body_bytes"),
    "text_too_long": (413, "a text exceeds max_text_chars"),
    "too_many_texts": (413, "a request holds more than max_texts_per_request texts"),
    "not_found": (404, "no such endpoint"),
    "method_not_allowed": (405, "wrong HTTP method for the endpoint"),
    "queue_full": (503, "the batch queue is full; retry after Retry-After seconds"),
    "shutting_down": (503, "the server is shutting down"),
    "not_ready": (503, "models are still loading or the server is shutting down"),
    "client_closed": (499, "the client disconnected; its queued work was dropped (never seen by clients)"),
    "timeout": (504, "the request did not finish within request_timeout_s"),
    "inference_failed": (500, "the model failed on this input (other inputs are unaffected)"),
    "model_unavailable": (503, "model weights cannot be found or loaded (start-up)"),
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
