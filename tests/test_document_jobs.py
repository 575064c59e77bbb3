"""Document jobs through POST /v1/jobs (multipart upload) and GET /v1/jobs/{id}/document, on a real server
(tiny model) with the embedded SQLite job store and with Redis + a real queue worker; hostile uploads."""

from __future__ import annotations

import threading

import httpx
import pytest

from model_server.api.uploads import MAX_PARTS, content_disposition, parse_upload, safe_filename
from model_server.services import Services
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import assert_error, serve_services, tiny_settings
from tests.fakes import DelegatingBackend, GatedBackend
from tests.test_jobs import services_around, wait_for_job
from tests.timing import assert_linear

MEMORISED = dict(MEMORISED_PAIRS)
HELLO, THANKS, WEATHER = "مرحبا بالعالم.", "شكرا جزيلا.", "الطقس جميل اليوم."
TXT = f"{HELLO}\r\n\r\n  {THANKS}\nThe Times, untouched.\n\n{WEATHER}\n"
TXT_EN = (f"{MEMORISED[HELLO]}\r\n\r\n  {MEMORISED[THANKS]}\nThe Times, untouched.\n\n{MEMORISED[WEATHER]}\n")
HTML = f'<!DOCTYPE html>\n<html><body><h1 class="x">{THANKS}</h1><p>{HELLO} <b>{WEATHER}</b></p></body></html>'


@pytest.fixture()
def server(tiny_marian_dir, tiny_backend, tmp_path):
    services = services_around(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path, document_max_bytes=4096,
                               max_body_bytes=2048)
    with serve_services(services) as live:
        yield live


def upload(client, name: str, data: bytes, **fields):
    return client.post("/v1/jobs", files={"file": (name, data)}, data=fields)


def finished_document(client, response) -> httpx.Response:
    assert response.status_code == 202, response.text
    job = wait_for_job(client, response.json()["id"])
    assert job["status"] == "done", job
    return client.get(job["document"]["download"])


def test_a_txt_upload_comes_back_translated_with_its_layout(server):
    with server.client() as client:
        accepted = upload(client, "../../etc/story 1.txt", TXT.encode(), num_beams="1", priority="interactive")
        download = finished_document(client, accepted)
        job = client.get(f"/v1/jobs/{accepted.json()['id']}").json()
    assert download.status_code == 200 and download.content.decode() == TXT_EN
    assert download.headers["content-type"] == "text/plain; charset=utf-8"
    assert download.headers["content-disposition"] == (
        "attachment; filename=\"story 1.txt\"; filename*=UTF-8''story%201.txt")  # the path parts are gone
    assert job["document"] == {"filename": "story 1.txt", "kind": "txt", "bytes": len(TXT.encode()),
                               "download": f"/v1/jobs/{job['id']}/document"}
    assert job["progress"] == {"done": 3, "total": 3}  # three Arabic paragraphs; the English one stays literal


def test_an_html_upload_keeps_its_markup(server):
    with server.client() as client:
        download = finished_document(client, upload(client, "page.html", HTML.encode()))
    text = download.content.decode()
    assert download.headers["content-type"] == "text/html; charset=utf-8"
    assert text.startswith("<!DOCTYPE html>") and f'<h1 class="x">{MEMORISED[THANKS]}</h1>' in text
    assert f"<b>{MEMORISED[WEATHER].rstrip('.')}" in text and MEMORISED[HELLO] in text  # the <b> kept


def test_a_file_with_nothing_to_translate_comes_back_as_it_was(server):
    english = b"Reuters, in English only.\r\n\r\n  Nothing Arabic here.\n"
    with server.client() as client:
        accepted = upload(client, "en.txt", english)
        download = finished_document(client, accepted)
    assert accepted.json()["progress"] == {"done": 0, "total": 0} and download.content == english


def test_idempotency_covers_the_file(server):
    with server.client() as client:
        key = {"Idempotency-Key": "doc-1"}
        first = client.post("/v1/jobs", files={"file": ("a.txt", HELLO.encode())}, headers=key)
        again = client.post("/v1/jobs", files={"file": ("a.txt", HELLO.encode())}, headers=key)
        other = client.post("/v1/jobs", files={"file": ("a.txt", THANKS.encode())}, headers=key)
    assert first.status_code == 202 and again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert_error(other, 422, "idempotency_mismatch")


def test_download_before_done_after_cancel_and_of_a_text_job(tiny_marian_dir, tiny_backend, tmp_path):
    backend = GatedBackend(tiny_backend)
    with serve_services(services_around(tiny_marian_dir, backend, tmp_path)) as live, live.client() as client:
        try:
            job = upload(client, "a.txt", HELLO.encode()).json()
            assert backend.entered.wait(30)
            not_ready = client.get(f"/v1/jobs/{job['id']}/document")
            queued = upload(client, "b.txt", THANKS.encode()).json()
            client.delete(f"/v1/jobs/{queued['id']}")
            cancelled = client.get(f"/v1/jobs/{queued['id']}/document")
            text_job = client.post("/v1/jobs", json={"text": HELLO}).json()
            of_texts = client.get(f"/v1/jobs/{text_job['id']}/document")
            unknown = client.get("/v1/jobs/nope/document")
            wrong_method = client.post(f"/v1/jobs/{job['id']}/document")
        finally:
            backend.gate.set()
        done = client.get(f"/v1/jobs/{wait_for_job(client, job['id'])['id']}/document")
    assert_error(not_ready, 409, "document_not_ready")
    assert_error(cancelled, 410, "document_unavailable")
    assert_error(of_texts, 404, "unknown_job")
    assert_error(unknown, 404, "unknown_job")
    assert_error(wrong_method, 405, "method_not_allowed")
    assert done.content.decode() == MEMORISED[HELLO]


def multipart(*parts: bytes, boundary: bytes = b"b0undary") -> dict:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + boundary + b"--\r\n"
    return {"content": body, "headers": {"content-type": "multipart/form-data; boundary=" + boundary.decode()}}


def part(name: str, value: bytes, filename: str | None = None, extra: bytes = b"") -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return disposition.encode() + b"\r\n" + extra + b"\r\n" + value


FILE = part("file", HELLO.encode(), "a.txt")


@pytest.mark.parametrize("request_kwargs,status,code", [
    ({"files": {"file": ("report.pdf", b"%PDF-1.4")}}, 415, "unsupported_document"),
    ({"files": {"file": ("noname", HELLO.encode())}}, 415, "unsupported_document"),
    ({"files": {"file": ("a.txt", "مرحبا".encode("cp1256"))}}, 400, "invalid_document"),
    ({"files": {"file": ("a.html", "مرحبا".encode("utf-16"))}}, 400, "invalid_document"),
    ({"files": {"file": ("a.txt", b"x" * 4097)}}, 413, "document_too_large"),        # the file part's own cap
    ({"files": {"file": ("a.txt", b"x" * 80_000)}}, 413, "document_too_large"),      # BodyGuard, the body's cap
    ({"data": {"model": "x"}, "files": {"other": ("a.txt", b"x")}}, 422, "validation_error"),   # no file part
    (multipart(FILE, FILE), 422, "validation_error"),                                 # two file parts
    ({"files": {"file": ("a.txt", HELLO.encode())}, "data": {"num_beams": "many"}}, 422, "validation_error"),
    ({"files": {"file": ("a.txt", HELLO.encode())}, "data": {"format": "html"}}, 422, "validation_error"),
    ({"files": {"file": ("a.txt", HELLO.encode())}, "data": {"model": "nope"}}, 422, "unknown_model"),
    ({"files": {"file": ("a.txt", HELLO.encode())}, "data": {"glossary": "nope"}}, 404, "unknown_glossary"),
    (multipart(FILE, *[part(f"f{i}", b"v") for i in range(MAX_PARTS)]), 400, "invalid_multipart"),
    (multipart(part("file", HELLO.encode(), "a.txt", extra=b"X-Pad: " + b"p" * 5000 + b"\r\n")), 400,
     "invalid_multipart"),                                                            # one huge part header
    (multipart(part("file", HELLO.encode(), "a.txt", extra=b"".join(b"X-%d: v\r\n" % i for i in range(20)))),
     400, "invalid_multipart"),                                                       # too many part headers
    (multipart(FILE, part("model", b"\xff\xfe")), 400, "invalid_encoding"),
    ({"content": multipart(FILE)["content"][:-12], "headers": multipart(FILE)["headers"]}, 400, "invalid_multipart"),
    ({"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, 400, "invalid_multipart"),
    ({"json": {"text": "ب" * 3000}}, 413, "body_too_large"),  # JSON bodies keep max_body_bytes
], ids=["pdf", "no-extension", "not-utf8-txt", "utf16-html", "file-over-cap", "body-over-cap", "no-file-part",
        "two-file-parts", "bad-field", "unknown-field", "unknown-model", "unknown-glossary", "too-many-parts",
        "huge-part-header", "many-part-headers", "field-not-utf8", "no-closing-boundary", "no-boundary",
        "json-over-max-body"])
def test_hostile_uploads_get_clear_errors(server, request_kwargs, status, code):
    with server.client() as client:
        assert_error(client.post("/v1/jobs", **request_kwargs), status, code)
        assert client.get("/v1/jobs").json()["jobs"] == []  # nothing was stored


def test_only_the_upload_routes_take_document_sized_bodies(server):
    big = {"files": {"file": ("a.txt", HELLO.encode() + b" " * 3000)}}
    with server.client() as client:
        assert client.post("/v1/jobs", **big).status_code == 202  # over max_body_bytes, under the document cap
        assert_error(client.post("/translate", **big), 413, "body_too_large")
        assert_error(client.post("/v1/glossaries", **big), 413, "body_too_large")


@pytest.mark.parametrize("raw,safe", [
    ("../../etc/passwd.txt", "passwd.txt"), ("C:\\Users\\me\\story.txt", "story.txt"), ("..", ""),
    ('a"b\r\nX-Evil: 1.txt', "abX-Evil: 1.txt"), (".hidden.txt", "hidden.txt"), ("تقرير.docx", "تقرير.docx"),
    ("x" * 300 + ".txt", "x" * 196 + ".txt"), (None, ""),
])
def test_a_client_s_file_name_is_only_a_label(raw, safe):
    assert safe_filename(raw) == safe


def test_content_disposition_names_the_file_exactly_and_safely():
    assert content_disposition("تقرير 1.docx") == (
        "attachment; filename=\"_____ 1.docx\"; filename*=UTF-8''%D8%AA%D9%82%D8%B1%D9%8A%D8%B1%201.docx")
    assert content_disposition("a%b.txt") == "attachment; filename=\"a_b.txt\"; filename*=UTF-8''a%25b.txt"


def test_finished_document_jobs_expire_with_their_files(tiny_marian_dir, tiny_backend, tmp_path):
    import sqlite3

    services = services_around(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path, jobs_retention_s=0.3)
    with serve_services(services) as live, live.client() as client:
        job = upload(client, "a.txt", HELLO.encode()).json()
        wait_for_job(client, job["id"])
        wait_for_job(client, job["id"], statuses=("expired",))
        expired = client.get(f"/v1/jobs/{job['id']}/document")
    assert_error(expired, 410, "document_unavailable")
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM job_documents").fetchone() == (0,)


def test_json_jobs_are_refused_as_before(server):
    with server.client() as client:
        assert_error(client.post("/v1/jobs", content=b"", headers={"content-type": "application/json"}), 422,
                     "validation_error")
        assert_error(client.post("/v1/jobs", content=b'{"texts": [', headers={"content-type": "application/json"}),
                     400, "invalid_json")
        assert_error(client.post("/v1/jobs", content=b'{"text": "x"}', headers={"content-type": "text/plain"}), 422,
                     "validation_error")
        assert_error(client.post("/v1/jobs", json={"text": HELLO, "extra": 1}), 422, "validation_error")


def test_parsing_an_upload_is_linear_in_its_size():
    # A file full of near-boundaries ("\r\n--" then not the boundary): the classic quadratic trap.
    def make(n: int) -> tuple[bytes, str]:
        body = multipart(part("file", b"\r\n--b0undar" * n, "a.txt"))
        return body["content"], body["headers"]["content-type"]

    assert_linear(lambda body: parse_upload(*body, max_file_bytes=10**9), make, 20_000)


def test_a_document_job_on_redis_and_a_queue_worker(tiny_marian_dir, tiny_backend, tmp_path, redis_server):
    import redis

    from model_server.state.jobs import PREFIX
    from model_server.worker import run_worker

    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "worker.sqlite3", state_url=redis_server.url,
                             jobs_chunk_texts=2)
    stop = threading.Event()
    worker = threading.Thread(target=run_worker, args=(settings, Services.from_backend(
        settings, DelegatingBackend(tiny_backend))), kwargs={"stop": stop})
    worker.start()
    api_settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "api.sqlite3", state_url=redis_server.url,
                                 jobs_chunk_texts=2, jobs_retention_s=3)
    raw = redis.Redis.from_url(redis_server.url)
    try:
        with serve_services(Services.from_backend(api_settings, DelegatingBackend(tiny_backend))) as api, \
                api.client() as client:
            accepted = upload(client, "story.txt", TXT.encode())
            download = finished_document(client, accepted)
            html = finished_document(client, upload(client, "page.htm", HTML.encode()))
            untouched = finished_document(client, upload(client, "en.txt", b"Reuters.\n"))  # no piece: one empty chunk
            file_key = f"{PREFIX}job:{accepted.json()['id']}:document"
            stored = raw.get(file_key)
            wait_for_job(client, accepted.json()["id"], statuses=("expired",))
    finally:
        stop.set()
        worker.join(timeout=60)
    assert download.content.decode() == TXT_EN  # 3 pieces in 2 chunks, assembled at download
    assert MEMORISED[WEATHER] in html.content.decode().replace("</b>", "")
    assert untouched.content == b"Reuters.\n"
    assert stored == TXT.encode() and raw.get(file_key) is None  # the file went with the job's expiry
