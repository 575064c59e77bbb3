"""Shared fixtures: the repo-built tiny models and real uvicorn servers on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn

from tests.redis_server import redis_server  # noqa: F401  (a fixture: a real redis-server per test)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
# Tiny models are built once into the repo's (git-ignored) models/ dir and reused across runs.
MODELS_DIR = Path(os.environ.get("MODEL_SERVER_TEST_MODELS_DIR", ROOT / "models"))

SAMPLE_AR = (DATA / "libya-russia-ar.txt").read_text(encoding="utf-8")
SAMPLE_EN = (DATA / "libya-russia-en.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_marian_dir() -> Path:
    from model_server.tiny_models import ensure_tiny_marian

    return ensure_tiny_marian(MODELS_DIR / "tiny-marian-ar-en")


@pytest.fixture(scope="session")
def tiny_mt5_dir() -> Path:
    from model_server.tiny_models import ensure_tiny_mt5

    return ensure_tiny_mt5(MODELS_DIR / "tiny-mt5-sum")


def tiny_settings(model_dir: Path, **overrides):
    from model_server.settings import Settings

    # One torch thread: the tests share two cores with the server's own threads, and torch's spinning
    # worker threads slow a tiny model down ten-fold when cores are oversubscribed.
    values = dict(translation_model=str(model_dir), models_dir=MODELS_DIR, device="cpu", dtype="float32",
                  host="127.0.0.1", port=0, max_wait_ms=2, num_beams=1, log_level="warning", torch_threads=1,
                  worker_health_port=0,  # off: in-process workers bind no fixed port (health tests pick a free one)
                  summarization_enabled=False,  # summary tests turn it on with the tiny mT5 (tiny_mt5_dir)
                  cache_enabled=False,  # cache tests turn it on (tests/test_cache.py): no hits across tests
                  # A fresh SQLite file (cache, glossaries, jobs) per settings: no state shared between tests.
                  cache_path=Path(tempfile.mkdtemp(prefix="model-server-test-")) / "state.sqlite3")
    # Never the shared models dir's tuning.json: a `tune` run there would change every test's batch limits.
    values["tuning_file"] = values["cache_path"].parent / "tuning.json"
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread for a module that calls generate() directly: with 2 threads on a busy
    2-core box, tiny generate() calls run ~50x slower (thread hand-offs). Use with
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_backend(tiny_marian_dir):
    """One loaded tiny Marian backend, shared by tests that only call `generate`."""
    from model_server.services import load_translation_backend

    return load_translation_backend(tiny_settings(tiny_marian_dir))


class LiveServer:
    """A real uvicorn server on a free loopback port, in a background thread of this process."""

    def __init__(self, app) -> None:
        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                     timeout_graceful_shutdown=30)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = ""

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=kwargs.pop("timeout", 60), **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True  # what uvicorn's SIGTERM handler does
        self.thread.join(timeout=60)

    def __exit__(self, *exc) -> None:
        self.stop()


# Bad bodies every JSON endpoint rejects the same way, before its own fields are read: (httpx request
# kwargs, status, code), for the endpoints' bad-input catalogues.
JSON_BODY_ERRORS = [
    pytest.param({"content": b'{"text": "abc"', "headers": {"content-type": "application/json"}}, 400, "invalid_json",
                 id="malformed-json"),
    pytest.param({"content": b'{"text": "\xff\xfe\xfa"}', "headers": {"content-type": "application/json"}}, 400,
                 "invalid_encoding", id="invalid-utf8"),
]


def assert_error(response, status: int, code: str) -> dict:
    """The service's JSON error: this status, this stable code and a human message. Returns the error."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and isinstance(error["message"], str) and error["message"]
    return error


def run_with(services, work):
    """Start `services` (batchers running), return `await work(services)`, then close them: for tests that
    drive the pipelines directly, without an HTTP server."""
    import asyncio

    async def go():
        services.start()
        try:
            return await work(services)
        finally:
            await services.close()

    return asyncio.run(go())


def serve_services(services) -> LiveServer:
    from model_server.api.app import create_app

    return LiveServer(create_app(services.settings, services))


@pytest.fixture(scope="module")
def tiny_server(tiny_marian_dir) -> Iterator[LiveServer]:
    """The full app (model loaded by its own lifespan) on loopback, with small limits for the catalogue."""
    from model_server.api.app import create_app

    settings = tiny_settings(tiny_marian_dir, max_body_bytes=200_000, max_text_chars=20_000,
                             max_texts_per_request=8)
    with LiveServer(create_app(settings)) as server:
        yield server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cli_server(env_overrides: dict[str, str], port: int) -> subprocess.Popen:
    """`model-server serve` as a separate process (start-up, signals and exit codes are real)."""
    env = {**os.environ, "MODEL_SERVER_PORT": str(port), "MODEL_SERVER_HOST": "127.0.0.1",
           "MODEL_SERVER_TORCH_THREADS": "1", "MODEL_SERVER_CACHE_ENABLED": "false", **env_overrides}
    return subprocess.Popen([sys.executable, "-m", "model_server.cli", "serve"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_ready(base_url: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not become ready")
