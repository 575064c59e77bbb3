"""multipart/form-data document uploads: POST /v1/jobs with a `file` part, DeepL POST /v2/document.

The body reaches the route already read and capped by BodyGuard (document_max_bytes plus
FORM_FIELDS_MAX_BYTES, on those two routes only); `parse_upload` runs python-multipart's streaming parser
over it on the CPU pool (linear; off the event loop) with caps of its own, each answered with a stable code:
- the `file` part: exactly one (none or two: 422 validation_error), at most document_max_bytes (413
  document_too_large);
- every other part is a text field: UTF-8 (400 invalid_encoding), all of them together at most
  FORM_FIELDS_MAX_BYTES;
- at most MAX_PARTS parts, MAX_PART_HEADERS headers per part, MAX_PART_HEADER_BYTES per header line, and the
  closing boundary present (400 invalid_multipart).
The client's filename only ever names the result (`safe_filename`: its last path component, no control
characters); it is never used as a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote

from python_multipart.multipart import MultipartParser, parse_options_header

from model_server.errors import ServiceError

MAX_PARTS = 64
MAX_PART_HEADERS = 8
MAX_PART_HEADER_BYTES = 4096
FORM_FIELDS_MAX_BYTES = 65_536  # also BodyGuard's allowance above document_max_bytes for an upload's body
FILE_FIELD = "file"
# The only routes whose multipart bodies may be as large as a document (BodyGuard); every other body, and a
# non-multipart body of these, stays under max_body_bytes.
UPLOAD_PATHS = frozenset({"/v1/jobs", "/v2/document"})
_UNSAFE_IN_NAME = re.compile(r"[\x00-\x1f\x7f\"\\/]")
MAX_FILENAME_CHARS = 200


@dataclass
class Upload:
    filename: str                                   # safe_filename of the client's name ("" if none)
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)  # the text parts (a repeated name: the last one)


def safe_filename(raw: str | None) -> str:
    """The last component of a client's file name (either slash), without control characters or quotes,
    at most MAX_FILENAME_CHARS (the extension kept): only ever a label for the translated file."""
    name = re.split(r"[/\\]", raw or "")[-1]
    name = _UNSAFE_IN_NAME.sub("", name).strip().lstrip(".") if name not in (".", "..") else ""
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, suffix = name.rpartition(".")
        name = (stem[:MAX_FILENAME_CHARS - len(suffix) - 1] + dot + suffix) if dot and len(suffix) < 16 \
            else name[:MAX_FILENAME_CHARS]
    return name


def content_disposition(filename: str) -> str:
    """`attachment` with an ASCII fallback name and the exact UTF-8 one (RFC 6266 / 5987)."""
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\%' else "_" for c in filename)
    return f"attachment; filename=\"{fallback or 'document'}\"; filename*=UTF-8''{quote(filename, safe='')}"


def is_multipart(content_type: str | None) -> bool:
    return (content_type or "").split(";")[0].strip().lower() == "multipart/form-data"


def _invalid(message: str) -> ServiceError:
    return ServiceError("invalid_multipart", message)


class _Collector:
    """python-multipart callbacks that build an `Upload`, enforcing the caps as the bytes arrive."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.parts = 0
        self.field_bytes = 0
        self.ended = False
        self.file: list[bytes] | None = None
        self.file_size = 0
        self.filename: str | None = None
        self.fields: dict[str, str] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._name: str | None = None
        self._value: bytearray | list[bytes] = bytearray()

    def callbacks(self) -> dict:
        return {"on_part_begin": self.part_begin, "on_header_field": self.header_field,
                "on_header_value": self.header_value, "on_header_end": self.header_end,
                "on_headers_finished": self.headers_finished, "on_part_data": self.part_data,
                "on_part_end": self.part_end, "on_end": self.end}

    def part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise _invalid(f"the upload has more than {MAX_PARTS} parts")
        self._headers, self._name = {}, None

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._header_name.decode("latin-1").strip().lower()] = bytes(self._header_value)
        self._header_name, self._header_value = bytearray(), bytearray()

    def headers_finished(self) -> None:
        kind, options = parse_options_header(self._headers.get("content-disposition"))
        name = options.get(b"name")
        if kind != b"form-data" or name is None:
            raise _invalid("every part needs a 'Content-Disposition: form-data; name=...' header")
        self._name = _utf8(name, "a part's name")
        if self._name == FILE_FIELD:
            if self.file is not None:
                raise ServiceError("validation_error", f"{FILE_FIELD}: send one file per upload, not two")
            self.file = []
            raw_filename = options.get(b"filename")
            self.filename = _utf8(raw_filename, "the file's name", errors="replace") if raw_filename else None
        else:
            self._value = bytearray()

    def part_data(self, data: bytes, start: int, end: int) -> None:
        size = end - start
        if self._name == FILE_FIELD:
            self.file_size += size
            if self.file_size > self.max_file_bytes:
                raise ServiceError("document_too_large", f"the file is over {self.max_file_bytes} bytes "
                                   "(document_max_bytes)")
            self.file.append(data[start:end])  # type: ignore[union-attr]
            return
        self.field_bytes += size
        if self.field_bytes > FORM_FIELDS_MAX_BYTES:
            raise _invalid(f"the upload's form fields hold more than {FORM_FIELDS_MAX_BYTES} bytes")
        self._value += data[start:end]  # type: ignore[operator]

    def part_end(self) -> None:
        if self._name is not None and self._name != FILE_FIELD:
            self.fields[self._name] = _utf8(bytes(self._value), f"form field {self._name!r}")

    def end(self) -> None:
        self.ended = True


def _utf8(raw: bytes, what: str, errors: str = "strict") -> str:
    # parse_options_header hands header parameters over as latin-1 bytes of what the client sent (UTF-8).
    try:
        return raw.decode("utf-8", errors)
    except UnicodeDecodeError as exc:
        raise ServiceError("invalid_encoding", f"{what} is not valid UTF-8 (byte {exc.start})") from None


def parse_upload(body: bytes, content_type: str, *, max_file_bytes: int) -> Upload:
    """The file and text fields of a multipart/form-data body (CPU work: run it on the CPU pool)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise _invalid("the Content-Type multipart/form-data has no boundary")
    collector = _Collector(max_file_bytes)
    try:
        parser = MultipartParser(boundary, collector.callbacks(), max_header_count=MAX_PART_HEADERS,
                                 max_header_size=MAX_PART_HEADER_BYTES)
        parser.write(body)
        parser.finalize()
    except ValueError as exc:  # MultipartParseError, and the parser's own checks (a boundary too long, ...)
        raise _invalid(f"the multipart body cannot be parsed: {exc}") from None
    if not collector.ended:
        raise _invalid("the multipart body ends before its closing boundary")
    if collector.file is None:
        raise ServiceError("validation_error", f"{FILE_FIELD}: a part named {FILE_FIELD!r} holding the document "
                           "is required")
    name = collector.filename or collector.fields.get("filename")
    return Upload(filename=safe_filename(name), data=b"".join(collector.file), fields=collector.fields)


async def read_upload(request) -> Upload:
    """The request's multipart body parsed (`parse_upload`) on the CPU pool, the file capped at
    document_max_bytes: what both upload routes call."""
    services = request.app.state.services
    return await services.cpu.run(parse_upload, await request.body(), request.headers.get("content-type", ""),
                                  max_file_bytes=services.settings.document_max_bytes)
