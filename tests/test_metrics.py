"""GET /metrics after real traffic, the batcher's observer hook, and per-app registries."""

from __future__ import annotations

import asyncio

import pytest

from model_server.batching.batcher import DynamicBatcher, Lane
from model_server.metrics import Metrics
from tests.ops_helpers import ARABIC, ops_server, ops_services, scrape, serve_services, value, wait_until
from tests.fakes import GatedBackend
from tests.test_api_lifecycle import post_in_thread

TWO_SENTENCES = "مرحبا بالعالم. الطقس جميل اليوم."


# --- the batcher hook, with a fake batch function ----------------------------------------------

class RecordingObserver:
    def __init__(self) -> None:
        self.batches: list[dict] = []
        self.waits: list[dict] = []

    def on_batch(self, **kwargs) -> None:
        self.batches.append(kwargs)

    def on_queue_wait(self, **kwargs) -> None:
        self.waits.append(kwargs)


async def upper(group, payloads):
    return [p.upper() for p in payloads]


def test_batcher_reports_every_batch_and_every_queue_wait():
    async def scenario():
        observer = RecordingObserver()
        batcher = DynamicBatcher(upper, max_batch_size=3, max_batch_tokens=1000, max_wait_ms=0, max_queue_items=10,
                                 observer=observer)
        batcher.start()
        futures = batcher.submit_many(["a", "b", "c", "d"], costs=[2, 5, 1, 1], group="g", lane=Lane.bulk)
        assert await asyncio.gather(*futures) == ["A", "B", "C", "D"]
        await batcher.close()
        return observer

    observer = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert [b["size"] for b in observer.batches] == [3, 1]
    # The planner groups similar lengths: a, c, d (3 x longest 2), then b alone (1 x 5).
    assert [b["padded_tokens"] for b in observer.batches] == [6, 5]
    assert all(b["lane"] is Lane.bulk and b["seconds"] >= 0 for b in observer.batches)
    assert len(observer.waits) == 4 and all(w["seconds"] >= 0 and w["lane"] is Lane.bulk for w in observer.waits)


def test_a_failing_observer_never_breaks_the_queue():
    class Broken:
        def on_batch(self, **kwargs):
            raise RuntimeError("observer bug")

        def on_queue_wait(self, **kwargs):
            raise RuntimeError("observer bug")

    async def scenario():
        batcher = DynamicBatcher(upper, max_batch_size=2, max_batch_tokens=1000, max_wait_ms=0, max_queue_items=10,
                                 observer=Broken())
        batcher.start()
        results = await asyncio.gather(*batcher.submit_many(["x", "y", "z"], costs=[1, 1, 1], group="g"))
        await batcher.close()
        return results

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == ["X", "Y", "Z"]


def test_label_values_stay_bounded():
    metrics = Metrics()
    for method in ("GET", "BREW", "X" * 50):
        metrics.observe_request(method=method, route="unmatched", status=405, seconds=0.001)
    text = metrics.render().decode()
    assert 'method="other",route="unmatched",status="405"} 2.0' in text and "BREW" not in text


def test_each_app_has_its_own_registry():
    first, second = Metrics(), Metrics()  # the same names twice would raise on a shared registry
    first.observe_request(method="GET", route="/healthz", status=200, seconds=0.01)
    assert b'route="/healthz"' in first.render() and b'route="/healthz"' not in second.render()


# --- over HTTP ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def traffic(tiny_marian_dir, tiny_backend):
    """A server that has served: 3 good single texts, 1 multi-text request with a bad item, 1 not-Arabic
    text, 1 validation error, 1 unknown path. Yields the server and its services."""
    services = ops_services(tiny_marian_dir, tiny_backend)
    with serve_services(services) as server, server.client() as client:
        for _ in range(3):
            assert client.post("/translate", json={"text": TWO_SENTENCES}).status_code == 200
        assert client.post("/translate", json={"texts": [ARABIC, "   ", ARABIC], "priority": "bulk"}).status_code == 200
        assert client.post("/translate", json={"text": "English only here."}).status_code == 400
        assert client.post("/translate", json={"text": 42}).status_code == 422
        assert client.get("/no/such/path/123").status_code == 404
        yield server, services


def test_request_counts_and_latency_by_route_template_and_status(traffic):
    server, _ = traffic
    with server.client() as client:
        wait_until(lambda: value(scrape(client), "model_server_http_requests_total", method="GET",
                                 route="unmatched", status="404") == 1)
        samples = scrape(client)
    post = dict(method="POST", route="/translate")
    assert value(samples, "model_server_http_requests_total", **post, status="200") == 4
    assert value(samples, "model_server_http_requests_total", **post, status="400") == 1
    assert value(samples, "model_server_http_requests_total", **post, status="422") == 1
    assert value(samples, "model_server_http_request_duration_seconds_count", **post, status="200") == 4
    assert value(samples, "model_server_http_request_duration_seconds_bucket", **post, status="200", le="+Inf") == 4
    assert value(samples, "model_server_http_request_duration_seconds_sum", **post, status="200") > 0
    assert not any("/no/such/path" in str(labels) for _, labels in samples)  # raw paths never become labels
    assert value(samples, "model_server_http_requests_in_flight") == 1  # this scrape


def test_errors_by_code_and_per_text_errors(traffic):
    server, _ = traffic
    with server.client() as client:
        samples = scrape(client)
    assert value(samples, "model_server_errors_total", code="not_arabic") == 1
    assert value(samples, "model_server_errors_total", code="validation_error") == 1
    assert value(samples, "model_server_errors_total", code="not_found") == 1
    assert value(samples, "model_server_text_errors_total", code="empty_text") == 1  # inside a 200
    assert value(samples, "model_server_text_errors_total", code="not_arabic") == 0  # counted once, above


def test_queue_and_batch_metrics_match_the_batcher(traffic):
    server, services = traffic
    stats = services.translation.batcher.stats
    with server.client() as client:
        samples = scrape(client)
    interactive, bulk = dict(model="translation", lane="interactive"), dict(model="translation", lane="bulk")
    assert value(samples, "model_server_queue_wait_seconds_count", **interactive) == 6  # 3 x 2 sentences
    assert value(samples, "model_server_queue_wait_seconds_count", **bulk) == 2
    assert value(samples, "model_server_batch_size_sum", **interactive) + value(
        samples, "model_server_batch_size_sum", **bulk) == stats.segments == 8
    batches = sum(value(samples, "model_server_batch_inference_seconds_count", **lane) for lane in (interactive, bulk))
    assert batches == stats.batches >= 4
    padded = sum(value(samples, "model_server_batch_padded_tokens_sum", **lane) for lane in (interactive, bulk))
    assert padded == stats.padded_tokens >= stats.segments
    assert value(samples, "model_server_batch_size_bucket", **bulk, le="2.0") == 1  # the 2 good texts, one batch
    assert value(samples, "model_server_queue_depth", **interactive) == 0
    assert value(samples, "model_server_queue_depth", **bulk) == 0
    assert value(samples, "model_server_batch_inference_seconds_sum", **interactive) > 0


def test_queue_depth_while_the_model_is_busy(tiny_marian_dir, tiny_backend):
    from model_server.services import Services
    from tests.conftest import tiny_settings

    backend = GatedBackend(tiny_backend)
    services = Services.from_backend(tiny_settings(tiny_marian_dir, max_wait_ms=0), backend)
    with serve_services(services) as server, server.client() as client:
        first: list = []
        threads = [post_in_thread(server, {"text": ARABIC}, first)]
        assert backend.entered.wait(10)
        threads.append(post_in_thread(server, {"text": TWO_SENTENCES, "priority": "bulk"}, first))
        wait_until(lambda: services.translation.batcher.pending() == 2)
        samples = scrape(client)
        assert value(samples, "model_server_queue_depth", model="translation", lane="bulk") == 2
        assert value(samples, "model_server_queue_depth", model="translation", lane="interactive") == 0
        backend.gate.set()
        for thread in threads:
            thread.join(30)
        assert [r.status_code for r in first] == [200, 200]
        samples = scrape(client)
        assert value(samples, "model_server_queue_depth", model="translation", lane="bulk") == 0
        # The bulk segments waited at least as long as the first batch was held.
        assert value(samples, "model_server_queue_wait_seconds_bucket", model="translation", lane="bulk",
                     le="0.001") == 0


def test_metrics_endpoint_content_type_and_openapi(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend) as server, server.client() as client:
        response = client.get("/metrics")
        spec = client.get("/openapi.json").json()
    assert response.headers["content-type"].startswith("text/plain")
    assert "# TYPE model_server_http_request_duration_seconds histogram" in response.text
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
