"""API keys: parsing, constant-time lookup, and 401/403 over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from model_server.api.auth import ApiKey, ApiKeys, load_api_keys, main, parse_key_entry
from model_server.settings import Settings
from tests.conftest import ROOT
from tests.ops_helpers import ARABIC, ARABIC_TRANSLATION, ops_server, wait_until

EDITOR_KEY = "ed-7f3c9a1b2e"
WIRE_KEY = "wire-0d9e8c7b6a"
HASHED_KEY = "hashed-5a4b3c2d1e"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


# --- parsing ---------------------------------------------------------------------------------

def test_entry_forms():
    assert parse_key_entry(f"editors:{EDITOR_KEY}", "x") == ApiKey("editors", digest(EDITOR_KEY))
    prehashed = parse_key_entry(f"ci:sha256:{hashlib.sha256(b'k').hexdigest()}", "x")
    assert prehashed == ApiKey("ci", digest("k"))
    bare = parse_key_entry(EDITOR_KEY, "x")
    assert bare.name == "key-" + hashlib.sha256(EDITOR_KEY.encode()).hexdigest()[:8]
    assert EDITOR_KEY not in repr(bare) and "digest" not in repr(bare)


@pytest.mark.parametrize("entry,problem", [
    ("bad name:secret", "key name"),
    ("ci:sha256:abc", "64 hex digits"),
    ("ci:", "is empty"),
])
def test_bad_entries_are_named_by_location_never_by_key(entry, problem):
    with pytest.raises(ValueError) as info:
        parse_key_entry(entry, "api_keys entry 3")
    message = str(info.value)
    assert problem in message and "api_keys entry 3" in message and "secret" not in message


def test_key_file_with_comments_and_env_keys_combine(tmp_path):
    path = tmp_path / "keys"
    path.write_text(f"# newsroom keys\n\neditors:{EDITOR_KEY}\n  wire:{WIRE_KEY}  \n", encoding="utf-8")
    keys = load_api_keys(Settings(api_keys_file=path, api_keys=f"ci:sha256:{hashlib.sha256(b'k').hexdigest()}"))
    assert keys.names == ["editors", "wire", "ci"]
    assert keys.identify(EDITOR_KEY) == "editors" and keys.identify(WIRE_KEY) == "wire"
    assert keys.identify("k") == "ci"
    assert keys.identify("nope") is None and keys.identify("") is None


@pytest.mark.parametrize("content,problem", [
    ("editors:abc\nci:sha256:zz\n", "line 2"), (None, "cannot read"), ("# nothing\n", "holds no keys")])
def test_bad_key_files_fail_at_start_up_with_the_line(tmp_path, content, problem):
    from model_server.api.app import create_app

    path = tmp_path / "keys"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    settings = Settings(api_keys_file=path)  # the settings only know that keys are set
    with pytest.raises(ValueError, match=problem):
        load_api_keys(settings)
    with pytest.raises(ValueError, match=problem):
        create_app(settings)  # start-up: the app is never built around bad keys


def test_serve_refuses_a_bad_key_file_in_one_line_before_loading_models(tmp_path):
    path = tmp_path / "keys"
    path.write_text("editors:abc\nci:sha256:zz\n", encoding="utf-8")
    env = {**os.environ, "MODEL_SERVER_API_KEYS_FILE": str(path), "MODEL_SERVER_TRANSLATION_MODEL": "/nonexistent"}
    done = subprocess.run([sys.executable, "-m", "model_server.cli", "serve"], env=env, capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "line 2" in lines[0] and "64 hex digits" in lines[0], done.stderr
    assert "/nonexistent" not in done.stderr   # refused before the model was looked for


def test_settings_never_import_the_api():
    """Key loading belongs to model_server.api.auth; the settings (imported by everything) stay below it."""
    check = ("import sys; from model_server.settings import Settings; Settings(api_keys='a:k'); "
             "print(sorted(m for m in sys.modules if m.startswith('model_server.api')))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_key_settings_consistency():
    with pytest.raises(ValidationError, match="metrics_require_key needs API keys"):
        Settings(metrics_require_key=True)
    with pytest.raises(ValueError, match="duplicate API key names"):
        ApiKeys([ApiKey("a", digest("1")), ApiKey("a", digest("2"))])
    with pytest.raises(ValueError, match="configured twice"):
        ApiKeys([ApiKey("a", digest("1")), ApiKey("b", digest("1"))])


def test_settings_never_show_the_keys():
    settings = Settings(api_keys=f"editors:{EDITOR_KEY}")
    assert EDITOR_KEY not in repr(settings) and EDITOR_KEY not in str(settings.model_dump())


def test_hash_helper_prints_a_prehashed_entry(monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(EDITOR_KEY + "\n"))
    assert main(["editors"]) == 0
    entry = capsys.readouterr().out.strip()
    assert entry == f"editors:sha256:{hashlib.sha256(EDITOR_KEY.encode()).hexdigest()}"
    assert parse_key_entry(entry, "x") == ApiKey("editors", digest(EDITOR_KEY))


# --- over HTTP ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def auth_server(tiny_marian_dir, tiny_backend):
    hashed = f"ci:sha256:{hashlib.sha256(HASHED_KEY.encode()).hexdigest()}"
    with ops_server(tiny_marian_dir, tiny_backend, api_keys=f"editors:{EDITOR_KEY},wire:{WIRE_KEY},{hashed}",
                    max_body_bytes=10_000) as server:
        yield server


@pytest.mark.parametrize("headers", [
    {"Authorization": f"Bearer {EDITOR_KEY}"},
    {"authorization": f"bearer   {EDITOR_KEY}"},
    {"X-API-Key": WIRE_KEY},
    {"X-API-Key": HASHED_KEY},
    {"X-API-Key": EDITOR_KEY, "Authorization": "Bearer wrong"},  # X-API-Key wins
], ids=["bearer", "bearer-case-space", "x-api-key", "prehashed", "x-api-key-first"])
def test_valid_key_translates(auth_server, headers):
    with auth_server.client() as client:
        response = client.post("/translate", json={"text": ARABIC}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["translation"] == ARABIC_TRANSLATION


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": "Bearer"},
                                     {"X-API-Key": ""}], ids=["none", "basic", "empty-bearer", "empty-x-api-key"])
def test_missing_key_is_401(auth_server, headers):
    with auth_server.client() as client:
        response = client.post("/translate", json={"text": ARABIC}, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["X-Request-ID"]


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer not-a-key"}, {"X-API-Key": EDITOR_KEY + "x"},
                                     {"X-API-Key": "sha256:" + hashlib.sha256(HASHED_KEY.encode()).hexdigest()}],
                         ids=["bearer", "x-api-key", "the-hash-itself"])
def test_wrong_key_is_403(auth_server, headers):
    with auth_server.client() as client:
        response = client.post("/translate", json={"text": ARABIC}, headers=headers)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_other_endpoints_are_protected_by_default(auth_server):
    with auth_server.client() as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/no-such-endpoint").status_code == 401  # nothing is learnt about routes
        assert client.get("/v1/models", headers={"X-API-Key": EDITOR_KEY}).status_code == 200
        assert client.get("/no-such-endpoint", headers={"X-API-Key": EDITOR_KEY}).status_code == 404


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs", "/metrics"])
def test_probes_docs_and_metrics_stay_open(auth_server, path):
    with auth_server.client() as client:
        assert client.get(path).status_code == 200


def test_anonymous_body_is_refused_before_it_is_read(auth_server):
    """Auth runs before the body guard: an anonymous 1 MB body gets 401, not 413."""
    with auth_server.client() as client:
        response = client.post("/translate", content=b"x" * 1_000_000, headers={"content-type": "application/json"})
        assert response.status_code == 401
        response = client.post("/translate", content=b"x" * 1_000_000,
                               headers={"content-type": "application/json", "X-API-Key": EDITOR_KEY})
        assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_openapi_documents_the_security_schemes(auth_server):
    with auth_server.client() as client:
        spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"bearerAuth", "apiKeyHeader"}
    translate = spec["paths"]["/translate"]["post"]
    assert translate["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert {"401", "403"} <= set(translate["responses"])
    assert "security" not in spec["paths"]["/healthz"]["get"] and "security" not in spec["paths"]["/metrics"]["get"]


def test_key_name_is_the_principal_in_the_log_and_the_key_never_appears(auth_server, caplog):
    caplog.set_level(logging.INFO, logger="model_server.access")
    with auth_server.client() as client:
        response = client.post("/translate", json={"text": ARABIC}, headers={"Authorization": f"Bearer {EDITOR_KEY}"})
        client.post("/translate", json={"text": ARABIC}, headers={"X-API-Key": "wrong-key-value"})
    request_id = response.headers["X-Request-ID"]
    wait_until(lambda: sum(r.name == "model_server.access" for r in caplog.records) >= 2)
    line = next(r for r in caplog.records if getattr(r, "fields", {}).get("request_id") == request_id)
    assert line.fields["principal"] == "editors"
    assert EDITOR_KEY not in caplog.text and "wrong-key-value" not in caplog.text
    assert all(EDITOR_KEY not in str(getattr(r, "fields", "")) for r in caplog.records)


def test_metrics_can_require_a_key(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend, api_keys=f"prometheus:{WIRE_KEY}",
                    metrics_require_key=True) as server, server.client() as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": "nope"}).status_code == 403
        assert client.get("/metrics", headers={"X-API-Key": WIRE_KEY}).status_code == 200
        assert client.get("/healthz").status_code == 200
        spec = client.get("/openapi.json").json()
        assert "security" in spec["paths"]["/metrics"]["get"]


def test_auth_is_off_by_default(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend) as server, server.client() as client:
        assert client.post("/translate", json={"text": ARABIC}).status_code == 200
        spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in spec["components"] and "401" not in spec["paths"]["/translate"]["post"]["responses"]


@pytest.mark.parametrize("host, keys, warned", [
    ("0.0.0.0", None, True), ("::", None, True), ("10.1.2.3", None, True), ("my-host", None, True),
    ("127.0.0.1", None, False), ("localhost", None, False), ("::1", None, False), ("[::1]", None, False),
    ("0.0.0.0", "ci:k", False),
])
def test_serving_beyond_loopback_without_keys_is_warned_about(host, keys, warned):
    from model_server.api.auth import exposure_warning

    warning = exposure_warning(Settings(host=host, api_keys=keys))
    assert (warning is not None) is warned
    if warned:
        assert host in warning and "MODEL_SERVER_API_KEYS_FILE" in warning
