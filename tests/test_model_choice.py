"""Several translation models at once, chosen per request by name, each with its own queue; special token
ids come from each model's config (a tiny model whose eos id is not 0)."""

from __future__ import annotations

import json

import pytest

from model_server.backends.hardware import REPORTED_FLAGS, cpu_features
from model_server.cli import build_parser, _settings_from
from model_server.services import Services
from model_server.tiny_models import MEMORISED_PAIRS, ensure_tiny_marian
from tests.conftest import MODELS_DIR, serve_services, tiny_settings


@pytest.fixture(scope="module")
def eos_last_dir():
    return ensure_tiny_marian(MODELS_DIR / "tiny-marian-ar-en-eos-last", eos_last=True)


@pytest.fixture(scope="module")
def two_model_server(tiny_marian_dir, eos_last_dir):
    settings = tiny_settings(tiny_marian_dir, extra_translation_models={"eos-last": str(eos_last_dir)})
    services = Services.load(settings)
    with serve_services(services) as server:
        yield server, services


def test_requests_choose_a_model_by_name_and_each_has_its_own_queue(two_model_server):
    server, services = two_model_server
    sentences = [ar for ar, _ in MEMORISED_PAIRS]
    with server.client() as client:
        chosen = client.post("/translate", json={"texts": sentences, "model": "eos-last"}).json()
        default = client.post("/translate", json={"texts": sentences, "model": "default"}).json()
    expected = [en for _, en in MEMORISED_PAIRS]
    assert [r["translation"] for r in chosen["results"]] == expected
    assert [r["translation"] for r in default["results"]] == expected
    assert chosen["model"]["name"].endswith("tiny-marian-ar-en-eos-last")
    assert default["model"]["name"].endswith("tiny-marian-ar-en")
    assert services.extra_translation["eos-last"].batcher.stats.segments == len(sentences)
    assert services.translation.batcher.stats.segments == len(sentences)


def test_a_model_with_nonzero_eos_id_translates_exactly(two_model_server, eos_last_dir):
    server, services = two_model_server
    backend = services.extra_translators["eos-last"].backend
    config = json.loads((eos_last_dir / "config.json").read_text())
    assert config["eos_token_id"] != 0
    assert backend.info.extra["eos_token_id"] == config["eos_token_id"]
    assert services.translator.backend.info.extra["eos_token_id"] == 0
    with server.client() as client:
        result = client.post("/translate", json={"text": "اتفاق دفاعي بين الطرفين", "model": "eos-last",
                                                 "num_beams": 4}).json()["results"][0]
    assert result["translation"] == "A defence agreement between the two sides"
    assert result["sentences"][0]["flags"] == []


def test_models_endpoint_lists_every_model_with_its_queue(two_model_server):
    server, _ = two_model_server
    with server.client() as client:
        models = client.get("/v1/models").json()
    assert len(models["models"]) == 2
    assert set(models["batching"]) == {"translation", "translation:eos-last"}
    # Each model says what precision it runs and why; the CPU flags behind the defaults are listed once.
    assert [m["extra"]["precision"] for m in models["models"]] == [
        {"requested": "float32", "chosen": "float32", "reason": "dtype=float32 set explicitly"}] * 2
    assert models["hardware"] == cpu_features().describe()
    assert list(models["hardware"]["flags"]) == list(REPORTED_FLAGS)


def test_unknown_model_is_a_clear_422(two_model_server):
    server, _ = two_model_server
    with server.client() as client:
        response = client.post("/translate", json={"text": "مرحبا بالعالم.", "model": "huge"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_model" and "eos-last" in error["message"]


def test_extra_models_setting_from_the_command_line_and_environment(monkeypatch):
    args = build_parser().parse_args(["serve", "--extra-translation-models", '{"big": "/models/tc-big"}'])
    assert _settings_from(args).extra_translation_models == {"big": "/models/tc-big"}
    monkeypatch.setenv("MODEL_SERVER_EXTRA_TRANSLATION_MODELS", '{"big": "Helsinki-NLP/opus-mt-tc-big-ar-en"}')
    assert tiny_settings("x").extra_translation_models == {"big": "Helsinki-NLP/opus-mt-tc-big-ar-en"}
