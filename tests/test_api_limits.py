"""Rate limits (token buckets, pure and over HTTP) and the 413 size limits, with auth on and off."""

from __future__ import annotations

import pytest

from model_server.api.ratelimit import RateLimiter, TokenBuckets
from model_server.errors import ServiceError
from tests.ops_helpers import ARABIC, ops_server, ops_services, serve_services


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the buckets, synchronously, with a fake clock ----------------------------------------------

def test_bucket_allows_a_minute_then_refills_continuously():
    clock = FakeClock()
    buckets = TokenBuckets(60, clock=clock)  # one per second
    assert all(buckets.take("a") == 0 for _ in range(60))
    assert buckets.take("a") == pytest.approx(1.0)
    assert buckets.take("b") == 0  # other keys are independent
    clock.now += 0.5
    assert buckets.take("a") == pytest.approx(0.5)  # a refusal spends nothing
    clock.now += 0.5
    assert buckets.take("a") == 0
    clock.now += 3600
    assert all(buckets.take("a") == 0 for _ in range(60))  # capped at one minute's worth
    assert buckets.take("a") > 0


def test_bucket_charges_amounts_and_reports_the_wait():
    clock = FakeClock()
    buckets = TokenBuckets(600, clock=clock)  # 10 per second
    assert buckets.take("a", 550) == 0
    assert buckets.take("a", 100) == pytest.approx(5.0)  # 50 left, 50 missing at 10/s
    clock.now += 5
    assert buckets.take("a", 100) == 0


def test_idle_buckets_are_forgotten():
    clock = FakeClock()
    buckets = TokenBuckets(60, clock=clock)
    for n in range(100):
        buckets.take(f"ip:{n}")
    assert len(buckets) == 100
    clock.now += 61
    buckets.take("ip:new")
    assert len(buckets) == 1


def test_limiter_raises_rate_limited_with_retry_after_and_413_for_oversized():
    clock = FakeClock()
    limiter = RateLimiter(requests_per_minute=2, chars_per_minute=100, clock=clock)
    limiter.check_request("k")
    limiter.check_request("k")
    with pytest.raises(ServiceError) as info:
        limiter.check_request("k")
    assert info.value.code == "rate_limited" and info.value.status == 429
    assert info.value.headers["Retry-After"] == "30"
    limiter.charge_chars("k", 90)
    with pytest.raises(ServiceError) as info:
        limiter.charge_chars("k", 22)
    assert info.value.code == "rate_limited" and info.value.headers["Retry-After"] == "8"  # 12 short, 5/3 a second
    with pytest.raises(ServiceError) as info:
        limiter.charge_chars("k", 101)
    assert info.value.code == "exceeds_rate_limit" and info.value.status == 413


def test_zero_turns_limits_off():
    limiter = RateLimiter()
    assert not limiter.enabled
    for _ in range(1000):
        limiter.check_request("k")
        limiter.charge_chars("k", 10**9)


# --- over HTTP -----------------------------------------------------------------------------------

def assert_limited(response, code="rate_limited"):
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == code
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response.headers["X-Request-ID"]


def test_requests_per_minute_per_client_address_when_auth_is_off(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend, rate_limit_requests_per_minute=3) as server:
        with server.client() as client:
            for _ in range(3):
                assert client.post("/translate", json={"text": ARABIC}).status_code == 200
            assert_limited(client.post("/translate", json={"text": ARABIC}))
            assert_limited(client.get("/v1/models"))  # every protected endpoint spends the same budget
            # Probes, docs and metrics are never limited.
            for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
                assert client.get(path).status_code == 200
            spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/translate"]["post"]["responses"]
    assert "Retry-After" in responses["429"]["headers"]
    assert "429" not in spec["paths"]["/healthz"]["get"]["responses"]


def test_requests_per_minute_per_key_when_auth_is_on(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend, api_keys="a:key-a,b:key-b",
                    rate_limit_requests_per_minute=2) as server, server.client() as client:
        a, b = {"X-API-Key": "key-a"}, {"X-API-Key": "key-b"}
        assert client.get("/v1/models", headers=a).status_code == 200
        assert client.get("/v1/models", headers=a).status_code == 200
        assert_limited(client.get("/v1/models", headers=a))
        assert client.get("/v1/models", headers=b).status_code == 200  # same address, other key
        # Refused clients never reach the limiter: 401s do not spend anybody's budget.
        for _ in range(5):
            assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers=b).status_code == 200


def test_characters_per_minute_are_charged_before_model_work(tiny_marian_dir, tiny_backend):
    services = ops_services(tiny_marian_dir, tiny_backend, rate_limit_chars_per_minute=40)
    backend = services.translation.backend
    with serve_services(services) as server, server.client() as client:
        assert client.post("/translate", json={"text": ARABIC}).status_code == 200  # 14 characters
        assert client.post("/translate", json={"texts": [ARABIC, "شكرا جزيلا."]}).status_code == 200  # 25
        calls = backend.generate_calls
        assert_limited(client.post("/translate", json={"text": ARABIC}))
        oversized = client.post("/translate", json={"text": "مرحبا " * 10})
        assert oversized.status_code == 413 and oversized.json()["error"]["code"] == "exceeds_rate_limit"
        assert "Retry-After" not in oversized.headers  # retrying can never help: split it
        assert backend.generate_calls == calls  # refused work never reached the model
        assert services.translation.batcher.stats.segments == 3


@pytest.mark.parametrize("request_kwargs,code", [
    ({"content": b'{"text": "' + "ب".encode() * 6000 + b'"}', "headers": {"content-type": "application/json"}},
     "body_too_large"),
    ({"json": {"text": "مرحبا " * 400}}, "text_too_long"),
    ({"json": {"texts": [ARABIC] * 5}}, "too_many_texts"),
], ids=["body", "text", "texts"])
def test_size_limits_answer_413_with_a_valid_key(tiny_marian_dir, tiny_backend, request_kwargs, code):
    with ops_server(tiny_marian_dir, tiny_backend, api_keys="a:key-a", max_body_bytes=10_000,
                    max_text_chars=1000, max_texts_per_request=4) as server, server.client() as client:
        headers = {**request_kwargs.pop("headers", {}), "X-API-Key": "key-a"}
        response = client.post("/translate", headers=headers, **request_kwargs)
        assert response.status_code == 413 and response.json()["error"]["code"] == code
        assert response.headers["X-Request-ID"]
