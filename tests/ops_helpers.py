"""Helpers of the operations tests (auth, limits, metrics, logs): servers over the shared tiny backend."""

from __future__ import annotations

import time
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

from model_server.services import Services
from tests.conftest import LiveServer, serve_services, tiny_settings
from tests.fakes import DelegatingBackend

ARABIC = "مرحبا بالعالم."
ARABIC_TRANSLATION = "Hello world."


class SharedBackend(DelegatingBackend):
    """The session's tiny backend, minus `close()` (a server shutting down must not free it), counting calls."""


def ops_services(tiny_marian_dir, tiny_backend, **overrides) -> Services:
    return Services.from_backend(tiny_settings(tiny_marian_dir, **overrides), SharedBackend(tiny_backend))


def ops_server(tiny_marian_dir, tiny_backend, **overrides) -> LiveServer:
    """A live server around the session's tiny backend (no model reload) with the given settings."""
    return serve_services(ops_services(tiny_marian_dir, tiny_backend, **overrides))


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Access-log lines and request metrics are written just after the response is sent: poll for them."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def scrape(client, **kwargs) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics as {(sample name, sorted labels): value}."""
    response = client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)
