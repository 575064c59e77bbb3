"""Request ids (given, generated, replaced; on every response) and the access log line (JSON, no text)."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from model_server.api.observe import accept_request_id
from model_server.logs import JsonFormatter, TextFormatter, logging_config
from model_server.settings import LogFormat, Settings
from tests.conftest import SAMPLE_AR, free_port, start_cli_server, wait_ready
from tests.ops_helpers import ops_server, ops_services, serve_services, wait_until

ARTICLE = SAMPLE_AR.split("\n")[8]  # one line of the sample article: "تحالف عسكري بين خليفة حفتر وروسيا"


def is_generated(request_id: str) -> bool:
    return len(request_id) == 32 and all(c in "0123456789abcdef" for c in request_id)


@pytest.mark.parametrize("raw,kept", [
    (b"abc-123", True), (b"x" * 128, True), (b"req id with spaces", True), (b"A!~", True),
    (b"", False), (b"x" * 129, False), (b"caf\xc3\xa9", False), (b"tab\there", False), (b" padded", False),
])
def test_request_id_validation(raw, kept):
    accepted = accept_request_id(raw)
    assert (accepted == raw.decode("latin-1")) is kept
    if not kept:
        assert is_generated(accepted)
    assert is_generated(accept_request_id(None))


@pytest.fixture(scope="module")
def server(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend, api_keys="editors:k-1", max_body_bytes=4096) as live:
        yield live


def access_line(caplog, request_id: str) -> dict:
    """The access record of `request_id`, rendered by the JSON formatter and parsed back."""
    def find():
        return next((r for r in caplog.records if r.name == "model_server.access"
                     and r.fields.get("request_id") == request_id), None)

    wait_until(find)
    line = JsonFormatter().format(find())
    assert "\n" not in line
    return json.loads(line)


def test_given_request_id_is_echoed_and_logged(server, caplog):
    caplog.set_level(logging.INFO, logger="model_server.access")
    with server.client() as client:
        response = client.post("/translate", json={"texts": [ARTICLE, "  "]},
                               headers={"X-Request-ID": "newsroom-42", "X-API-Key": "k-1"})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "newsroom-42"
    line = access_line(caplog, "newsroom-42")
    assert line["msg"].startswith("POST /translate 200 ") and line["msg"].endswith("ms")
    assert line["level"] == "info" and line["logger"] == "model_server.access"
    assert line["method"] == "POST" and line["route"] == "/translate" and line["status"] == 200
    assert line["principal"] == "editors" and line["client"] == "127.0.0.1"
    assert line["texts"] == 2 and line["chars"] == len(ARTICLE) + 2
    assert line["body_bytes"] == int(response.request.headers["content-length"])
    assert line["response_bytes"] == len(response.content)
    assert line["text_errors"] == ["empty_text"]
    assert set(line["timing_ms"]) >= {"prepare", "translate", "assemble", "total"}
    assert 0 < line["timing_ms"]["total"] <= line["duration_ms"]
    # Never the article: neither the raw text nor any piece of it, in any field.
    rendered = json.dumps(line, ensure_ascii=False)
    assert ARTICLE not in rendered and "حفتر" not in rendered and ARTICLE not in caplog.text


@pytest.mark.parametrize("method,path,kwargs,status", [
    ("POST", "/translate", {"json": {"text": "hi"}}, 401),  # auth middleware
    ("POST", "/translate", {"json": {"text": ARTICLE}, "headers": {"X-API-Key": "bad"}}, 403),
    ("POST", "/translate", {"content": b"{" * 5000, "headers": {"X-API-Key": "k-1",
                                                                "content-type": "application/json"}}, 413),
    ("POST", "/translate", {"json": {"text": 1}, "headers": {"X-API-Key": "k-1"}}, 422),
    ("GET", "/translate", {"headers": {"X-API-Key": "k-1"}}, 405),
    ("GET", "/healthz", {}, 200),
], ids=["401", "403", "413-body-guard", "422", "405", "open-probe"])
def test_every_response_carries_a_request_id(server, method, path, kwargs, status):
    with server.client() as client:
        generated = client.request(method, path, **kwargs)
        kwargs.setdefault("headers", {})["X-Request-ID"] = "given-1"
        given = client.request(method, path, **kwargs)
        kwargs["headers"]["X-Request-ID"] = "x" * 200
        replaced = client.request(method, path, **kwargs)
    assert generated.status_code == given.status_code == replaced.status_code == status
    assert is_generated(generated.headers["X-Request-ID"])
    assert given.headers["X-Request-ID"] == "given-1"
    assert is_generated(replaced.headers["X-Request-ID"])
    assert len(given.headers.get_list("X-Request-ID")) == 1


def test_rejected_requests_are_logged_with_their_route_and_code(server, caplog):
    caplog.set_level(logging.INFO, logger="model_server.access")
    with server.client() as client:
        response = client.post("/translate", json={"text": ARTICLE})
    line = access_line(caplog, response.headers["X-Request-ID"])
    assert line["status"] == 401 and line["route"] == "/translate" and line["error_code"] == "unauthorized"
    assert line["principal"] is None and "texts" not in line


def test_unhandled_error_is_a_500_with_request_id_and_a_logged_traceback(tiny_marian_dir, tiny_backend, caplog):
    caplog.set_level(logging.INFO)
    services = ops_services(tiny_marian_dir, tiny_backend)

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    services.translator.translate = broken
    with serve_services(services) as live, live.client() as client:
        response = client.post("/translate", json={"text": ARTICLE}, headers={"X-Request-ID": "bug-1"})
        assert client.get("/healthz").status_code == 200
    assert response.status_code == 500 and response.json()["error"]["code"] == "internal_error"
    assert response.headers["X-Request-ID"] == "bug-1"
    line = access_line(caplog, "bug-1")
    assert line["status"] == 500 and line["level"] == "warning"
    error = next(r for r in caplog.records if r.getMessage() == "unhandled error")
    rendered = json.loads(JsonFormatter().format(error))
    assert rendered["request_id"] == "bug-1" and "RuntimeError: a bug" in rendered["exc"]


def test_request_bodies_are_logged_only_in_debug_mode(tiny_marian_dir, tiny_backend, caplog):
    caplog.set_level(logging.INFO, logger="model_server.access")
    with ops_server(tiny_marian_dir, tiny_backend, log_request_bodies=True) as live, live.client() as client:
        response = client.post("/translate", json={"text": ARTICLE})
    line = access_line(caplog, response.headers["X-Request-ID"])
    assert json.loads(line["body"]) == {"text": ARTICLE}


def test_lines_written_while_serving_a_request_carry_its_id():
    from model_server.api.context import request_id_var

    record = logging.LogRecord("model_server.pipeline", logging.WARNING, __file__, 1, "slow batch", (), None)
    token = request_id_var.set("req-7")
    try:
        assert json.loads(JsonFormatter().format(record))["request_id"] == "req-7"
        assert TextFormatter().format(record).endswith('slow batch request_id="req-7"')
    finally:
        request_id_var.reset(token)
    assert "request_id" not in json.loads(JsonFormatter().format(record))


def test_text_formatter_appends_fields():
    record = logging.LogRecord("model_server.access", logging.INFO, __file__, 1, "GET %s", ("/healthz",), None)
    record.fields = {"request_id": "r1", "status": 200}
    line = TextFormatter().format(record)
    assert line.endswith('INFO model_server.access: GET /healthz request_id="r1" status=200')


def test_logging_config_uses_the_chosen_formatter():
    json_config = logging_config(Settings(log_format="json", log_level="warning"))
    assert json_config["formatters"]["default"]["()"].endswith("JsonFormatter")
    assert json_config["root"]["level"] == "WARNING"
    assert logging_config(Settings(log_format=LogFormat.text))["formatters"]["default"]["()"].endswith("TextFormatter")


def test_cli_server_writes_json_lines_only(tiny_marian_dir):
    """`model-server serve`: every log line (start-up, uvicorn, access) is one JSON object; no article text."""
    port = free_port()
    proc = start_cli_server({"MODEL_SERVER_PROFILE": "tiny", "MODEL_SERVER_MODELS_DIR": str(tiny_marian_dir.parent),
                             "MODEL_SERVER_LOG_FORMAT": "json"}, port)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        response = httpx.post(f"http://127.0.0.1:{port}/translate", json={"text": ARTICLE},
                              headers={"X-Request-ID": "cli-1"}, timeout=30)
        assert response.status_code == 200
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    lines = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert any(line["msg"] == "Application startup complete." for line in lines)
    access = [line for line in lines if line["logger"] == "model_server.access"]
    assert [line["request_id"] for line in access if line["route"] == "/translate"] == ["cli-1"]
    assert not any(line["logger"] == "uvicorn.access" for line in lines)
    assert ARTICLE not in output and "حفتر" not in output


def test_a_client_that_disconnects_leaves_no_asyncio_error_in_the_log(tiny_marian_dir, tiny_backend, caplog):
    """Found by the soak: a cancelled request used to leave an unread gather exception, logged as an error."""
    import gc

    from model_server.services import Services
    from tests.conftest import tiny_settings
    from tests.fakes import GatedBackend
    from tests.test_api_lifecycle import post_in_thread

    caplog.set_level(logging.INFO)
    backend = GatedBackend(tiny_backend)
    services = Services.from_backend(tiny_settings(tiny_marian_dir, max_wait_ms=0), backend)
    with serve_services(services) as live:
        blocker: list = []
        thread = post_in_thread(live, {"text": ARTICLE}, blocker)
        assert backend.entered.wait(10)
        with pytest.raises(httpx.ReadTimeout), live.client(timeout=0.5) as client:
            client.post("/translate", json={"text": "شكرا جزيلا. الطقس جميل اليوم."})
        wait_until(lambda: services.translation.batcher.pending() == 0)
        backend.gate.set()
        thread.join(30)
        wait_until(lambda: any(r.fields.get("error_code") == "client_closed"
                               for r in caplog.records if r.name == "model_server.access"))
    gc.collect()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
