"""DeepL /v2/document through the official `deepl` client's own calls (translate_document, _upload,
_get_status, _download) against a real server on loopback (tiny model), backed by the service's jobs."""

from __future__ import annotations

import io
import time
import types
import zipfile

import httpx
import pytest

from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import serve_services
from tests.fakes import DelegatingBackend, GatedBackend
from tests.test_document_jobs import HELLO, HTML, THANKS, TXT, TXT_EN, WEATHER
from tests.test_jobs import services_around

deepl = pytest.importorskip("deepl")

MEMORISED = dict(MEMORISED_PAIRS)


@pytest.fixture(autouse=True)
def quick_client(monkeypatch):
    monkeypatch.setattr(deepl.http_client, "max_network_retries", 0)   # no backoff sleeps on 429/5xx
    # translate_document polls the status every 5 s; the tiny model needs milliseconds.
    monkeypatch.setattr(deepl.translator, "time", types.SimpleNamespace(time=time.time,
                                                                         sleep=lambda s: time.sleep(0.05)))


def named(data: bytes, name: str) -> io.BytesIO:
    """A file-like object with a name, as open() gives: what the client sends as the part's filename."""
    file = io.BytesIO(data)
    file.name = name
    return file


def serve(tiny_marian_dir, backend, tmp_path, **overrides):
    return serve_services(services_around(tiny_marian_dir, backend, tmp_path, **overrides))


@pytest.fixture()
def server(tiny_marian_dir, tiny_backend, tmp_path):
    with serve(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path, document_max_bytes=4096) as live:
        yield live


def translator(server, key: str = "any-key:fx"):
    return deepl.Translator(key, server_url=server.base_url)


def test_translate_document_txt_end_to_end(server):
    out = io.BytesIO()
    status = translator(server).translate_document(named(TXT.encode(), "story.txt"), out, target_lang="EN-US",
                                                   source_lang="AR")
    assert out.getvalue().decode() == TXT_EN
    # Billed: the Arabic paragraphs' characters (line breaks, the indent and the English line are not translated).
    assert status.done and status.billed_characters == len(HELLO) + len(THANKS) + len(WEATHER)


def test_translate_document_html_end_to_end(server, tmp_path):
    source, target = tmp_path / "page.html", tmp_path / "page.en.html"
    source.write_text(HTML, encoding="utf-8")
    translator(server).translate_document_from_filepath(source, target, target_lang="EN-GB")
    text = target.read_text(encoding="utf-8")
    assert f'<h1 class="x">{MEMORISED[THANKS]}</h1>' in text and MEMORISED[HELLO] in text


def minimal_docx(paragraphs: list[str]) -> bytes:
    """A Word file with only what Word itself needs: content types, the package relation, the body."""
    w = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    body = "".join(f"<w:p><w:r><w:t>{text}</w:t></w:r></w:p>" for text in paragraphs)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as package:
        package.writestr("[Content_Types].xml", (
            '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
            'content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.'
            'relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/'
            'document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.'
            'main+xml"/></Types>'))
        package.writestr("_rels/.rels", (
            '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/'
            '2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/'
            '2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>'))
        package.writestr("word/document.xml", f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{w}">'
                                              f"<w:body>{body}</w:body></w:document>")
    return out.getvalue()


def test_translate_document_docx_end_to_end(server):
    try:
        import model_server.docx_file  # noqa: F401
    except ImportError:
        pytest.skip("model_server.docx_file (the .docx reader, issue 16 item 2) is not in this branch: "
                    "the lead enables this test at merge")
    out = io.BytesIO()
    status = translator(server).translate_document(named(minimal_docx([HELLO, "Reuters", THANKS]), "report.docx"),
                                                   out, target_lang="EN-US")
    assert status.done
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as package:
        document = package.read("word/document.xml").decode()
    try:
        import docx  # python-docx, when installed, reads it as Word would
    except ImportError:
        texts = [MEMORISED[HELLO], "Reuters", MEMORISED[THANKS]]
        assert all(f">{text}<" in document for text in texts), document
    else:
        assert [p.text for p in docx.Document(io.BytesIO(out.getvalue())).paragraphs] == [
            MEMORISED[HELLO], "Reuters", MEMORISED[THANKS]]


def test_upload_status_and_download_one_by_one(server):
    client = translator(server)
    handle = client.translate_document_upload(HELLO.encode(), target_lang="EN-US", filename="a.txt")
    assert len(handle.document_key) == 64 and handle.document_id
    status = client.translate_document_wait_until_done(handle)
    assert status.status is deepl.DocumentStatus.Status.DONE and status.billed_characters == len(HELLO)
    assert status.seconds_remaining is None and status.error_message is None
    out = io.BytesIO()
    client.translate_document_download(handle, out)
    assert out.getvalue().decode() == MEMORISED[HELLO]
    with httpx.Client(base_url=server.base_url) as raw:
        response = raw.post(f"/v2/document/{handle.document_id}/result", json={"document_key": handle.document_key})
    assert response.headers["content-disposition"].startswith('attachment; filename="a.txt"')


def test_a_wrong_key_gets_the_answer_of_an_unknown_id(server):
    client = translator(server)
    handle = client.translate_document_upload(HELLO.encode(), target_lang="EN-US", filename="a.txt")
    forged = deepl.DocumentHandle(handle.document_id, "0" * 64)
    unknown = deepl.DocumentHandle("f" * 32, handle.document_key)
    with pytest.raises(deepl.DeepLException) as wrong_key:
        client.translate_document_get_status(forged)
    with pytest.raises(deepl.DeepLException) as unknown_id:
        client.translate_document_get_status(unknown)
    with pytest.raises(deepl.DeepLException) as wrong_key_download:
        client.translate_document_download(forged)
    assert wrong_key.value.http_status_code == unknown_id.value.http_status_code == 404
    assert str(wrong_key.value).replace(handle.document_id, "ID") == str(unknown_id.value).replace("f" * 32, "ID")
    assert wrong_key_download.value.http_status_code == 404
    with httpx.Client(base_url=server.base_url) as raw:  # and a job of /v1/jobs (it has no key) is not a document
        text_job = raw.post("/v1/jobs", json={"text": HELLO}).json()
        assert raw.post(f"/v2/document/{text_job['id']}", json={"document_key": "x"}).json() == {
            "message": f"Document {text_job['id']!r} not found."}


def test_not_ready_is_deepl_s_document_not_ready(tiny_marian_dir, tiny_backend, tmp_path):
    backend = GatedBackend(tiny_backend)
    with serve(tiny_marian_dir, backend, tmp_path) as live:
        client = translator(live)
        try:
            handle = client.translate_document_upload(HELLO.encode(), target_lang="EN-US", filename="a.txt")
            assert backend.entered.wait(30)
            status = client.translate_document_get_status(handle)
            with pytest.raises(deepl.DocumentNotReadyException):
                client.translate_document_download(handle)
        finally:
            backend.gate.set()
        assert client.translate_document_wait_until_done(handle).done
    assert status.status is deepl.DocumentStatus.Status.TRANSLATING


def test_with_auth_a_document_is_its_key_s_own(tiny_marian_dir, tiny_backend, tmp_path):
    with serve(tiny_marian_dir, DelegatingBackend(tiny_backend), tmp_path, api_keys="a:key-a,b:key-b") as live:
        owner, other = translator(live, "key-a"), translator(live, "key-b")
        handle = owner.translate_document_upload(HELLO.encode(), target_lang="EN-US", filename="a.txt")
        with pytest.raises(deepl.DeepLException) as theirs:
            other.translate_document_get_status(handle)  # the right document_key, another API key
        with pytest.raises(deepl.AuthorizationException):
            translator(live, "nope").translate_document_upload(HELLO.encode(), target_lang="EN-US",
                                                               filename="a.txt")
        assert owner.translate_document_wait_until_done(handle).done
    assert theirs.value.http_status_code == 404


@pytest.mark.parametrize("kwargs,status,message", [
    ({"files": {"file": ("r.pdf", b"%PDF")}, "data": {"target_lang": "EN-US"}}, 400, "cannot translate .pdf"),
    ({"files": {"file": ("r.txt", "مرحبا".encode("cp1256"))}, "data": {"target_lang": "EN-US"}}, 400, "UTF-8"),
    ({"files": {"file": ("r.txt", b"x" * 5000)}, "data": {"target_lang": "EN-US"}}, 413, "document_max_bytes"),
    ({"files": {"file": ("r.txt", b"x" * 90_000)}, "data": {"target_lang": "EN-US"}}, 413, "document_max_bytes"),
    ({"files": {"file": ("r.txt", HELLO.encode())}}, 400, "Parameter 'target_lang' not specified."),
    ({"files": {"file": ("r.txt", HELLO.encode())}, "data": {"target_lang": "DE"}}, 400,
     "Value for 'target_lang' not supported."),
    ({"files": {"file": ("r.txt", HELLO.encode())}, "data": {"target_lang": "EN-US", "output_format": "docx"}},
     400, "output_format"),
    ({"files": {"file": ("r.txt", HELLO.encode())}, "data": {"target_lang": "EN-US", "glossary_id": "g"}}, 404,
     "no glossary named 'g'"),
    ({"data": {"target_lang": "EN-US"}, "files": {"doc": ("r.txt", b"x")}}, 400, "'file'"),
    ({"json": {"target_lang": "EN-US"}}, 400, "multipart/form-data"),
], ids=["pdf", "not-utf8", "file-over-cap", "body-over-cap", "no-target", "bad-target", "output-format",
        "unknown-glossary", "no-file", "json"])
def test_hostile_uploads_get_deepl_errors(server, kwargs, status, message):
    with httpx.Client(base_url=server.base_url) as raw:
        response = raw.post("/v2/document", headers={"Authorization": "DeepL-Auth-Key k"}, **kwargs)
    assert response.status_code == status, response.text
    assert list(response.json()) == ["message"] and message in response.json()["message"]
