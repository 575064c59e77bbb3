"""Contract fuzzing: schemathesis generates requests from the service's own OpenAPI spec and checks
every response against it - no 5xx, documented status codes, content types, headers and bodies, auth
enforced, and schema-valid requests never refused as invalid.

The spec is the app's own (built at import, no model loaded); the requests go to a real server on
loopback built with the same settings (tiny model, auth and a character budget on, small size limits so
the 413s are reachable). Bounded (few examples per operation, no deadline) to stay within a couple of
minutes on 2 shared cores.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402

from model_server.api.app import create_app  # noqa: E402
from tests.conftest import MODELS_DIR, tiny_settings  # noqa: E402
from tests.ops_helpers import ops_server, scrape  # noqa: E402

KEY = "fuzz-key-0123"
MAX_EXAMPLES = 30
SETTINGS = dict(api_keys=f"fuzz:{KEY}", max_body_bytes=20_000, max_text_chars=2_000, max_texts_per_request=4,
                max_new_tokens=16, rate_limit_chars_per_minute=1_000_000)

CONFIG = SchemathesisConfig.from_dict({
    # The valid key for both documented schemes; schemathesis also tries without and with wrong keys.
    "auth": {"openapi": {"bearerAuth": {"bearer": KEY}, "apiKeyHeader": {"api_key": KEY}}},
    "generation": {"mode": "all"},  # schema-valid requests and invalid ones (which must get a documented 4xx)
    "checks": {"positive_data_acceptance": {"expected-statuses": [
        # Schema-valid is not always acceptable: a text can be empty after normalization or not Arabic (400),
        # over a size limit that depends on the deployment (413), name a model, preset or glossary this
        # deployment lacks (404/422), or be shed (429/456/503). `validation_error` is checked separately.
        # A document upload's kind goes by its file name, which a schema cannot constrain (415).
        "2XX", 400, 401, 403, 404, 409, 413, 415, 422, 429, 456, 503]}},
})
schema = schemathesis.openapi.from_dict(
    create_app(tiny_settings(MODELS_DIR / "tiny-marian-ar-en", **SETTINGS)).openapi(), config=CONFIG)


def schema_valid_requests_pass_validation(ctx, response, case):
    """A request the spec calls valid must never be refused as malformed: if it is, the spec promises too much
    (e.g. a rule enforced by a validator but missing from the schema)."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code < 400:
        return None
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None  # the compat APIs' own error shapes carry no code
    assert code not in ("validation_error", "invalid_json"), \
        f"schema-valid request refused with {code}: {response.text[:300]}"
    return None


@pytest.fixture(scope="module")
def fuzz_server(tiny_marian_dir, tiny_backend):
    with ops_server(tiny_marian_dir, tiny_backend, **SETTINGS) as server:
        yield server


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_every_endpoint_honours_its_schema(case, fuzz_server):
    case.call_and_validate(base_url=fuzz_server.base_url, timeout=60,
                           additional_checks=[schema_valid_requests_pass_validation])


def test_the_fuzzer_reached_success_rejections_and_no_server_error(fuzz_server):
    """Runs after the fuzz test (file order): the traffic it sent covered the interesting paths."""
    with fuzz_server.client() as client:
        samples = scrape(client)
    seen = {dict(labels)["status"] for (name, labels), count in samples.items()
            if name == "model_server_http_requests_total" and dict(labels)["route"] == "/translate" and count}
    if not seen - {"405"}:
        pytest.skip("run together with test_every_endpoint_honours_its_schema")
    assert {"200", "401", "403", "422"} <= seen, seen
    assert not any(status.startswith("5") for (name, labels), _ in samples.items()
                   if name == "model_server_http_requests_total" for status in [dict(labels)["status"]])
