"""Glossaries (model_server/glossary.py, /v1/glossaries): matching, placeholders, CRUD over HTTP, and
translation with a glossary - kept placeholders (a backend that copies them) and lost ones (the tiny
model, which only knows its memorised pairs)."""

from __future__ import annotations

import pytest

from model_server.backends.base import Generated
from model_server.glossary import Glossary
from model_server.services import Services
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import serve_services, tiny_settings
from tests.fakes import DelegatingBackend

MEMORISED = dict(MEMORISED_PAIRS)
ALLIANCE = "تحالف عسكري بين خليفة حفتر وروسيا"
ENTRIES = {"خليفة حفتر": "Field Marshal Khalifa Haftar", "روسيا": "the Russian Federation"}


def test_terms_match_whole_words_with_proclitics_and_article():
    glossary = Glossary("g", {"خليفة حفتر": "Haftar", "روسيا": "Russia", "طبرق": "Tobruk"})
    assert glossary.protect(ALLIANCE) == ("تحالف عسكري بين ZX0Q و ZX1Q", ["خليفة حفتر", "روسيا"])
    assert glossary.protect("ميناء بالطبرق") == ("ميناء ب ZX0Q", ["طبرق"])   # proclitic kept, article dropped
    assert glossary.protect("روسيات طبرقي") == ("روسيات طبرقي", [])          # not whole words
    assert glossary.restore("between ZX0Q and ZX1Q", ["خليفة حفتر", "روسيا"]) == "between Haftar and Russia"
    assert glossary.restore("between ZX 0 Q and ZX1Q", ["خليفة حفتر", "روسيا"]) == "between Haftar and Russia"
    assert glossary.restore("between and ZX1Q", ["خليفة حفتر", "روسيا"]) is None  # lost
    assert glossary.restore("ZX0Q ZX0Q ZX1Q", ["خليفة حفتر", "روسيا"]) is None    # duplicated


class CopyingBackend(DelegatingBackend):
    """The tiny model, except that it 'translates' the protected memorised sentence keeping placeholders,
    as a real Marian model copies a Latin token. Records its inputs."""

    PROTECTED = {"تحالف عسكري بين ZX0Q و ZX1Q": "A military alliance between ZX0Q and ZX1Q"}

    def generate(self, texts, options):
        real = super().generate(texts, options)
        return [Generated(self.PROTECTED[t], -0.1, 10, False) if t in self.PROTECTED else out
                for t, out in zip(texts, real)]


@pytest.fixture()
def copying_server(tiny_marian_dir, tiny_backend, tmp_path):
    backend = CopyingBackend(tiny_backend)
    settings = tiny_settings(tiny_marian_dir, cache_enabled=True, cache_path=tmp_path / "state.sqlite3")
    with serve_services(Services.from_backend(settings, backend)) as server:
        yield server, backend


def test_glossary_crud_over_http(copying_server):
    server, _ = copying_server
    with server.client() as client:
        created = client.post("/v1/glossaries", json={"name": "libya-desk", "entries": ENTRIES})
        assert created.status_code == 201, created.text
        assert created.json()["version"] == 1 and created.json()["entries"] == ENTRIES
        again = client.post("/v1/glossaries", json={"name": "libya-desk", "entries": {}})
        assert again.status_code == 409 and again.json()["error"]["code"] == "glossary_exists"
        assert [g["name"] for g in client.get("/v1/glossaries").json()["glossaries"]] == ["libya-desk"]
        replaced = client.put("/v1/glossaries/libya-desk", json={"entries": {"روسيا": "Russia"}})
        assert replaced.json()["version"] == 2 and replaced.json()["entries"] == {"روسيا": "Russia"}
        assert client.get("/v1/glossaries/libya-desk").json()["version"] == 2
        bad = client.post("/v1/glossaries", json={"name": "no spaces!", "entries": {}})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
        empty = client.put("/v1/glossaries/x", json={"entries": {"\u200b": "x"}})
        assert empty.status_code == 400 and empty.json()["error"]["code"] == "invalid_glossary"
        assert client.delete("/v1/glossaries/libya-desk").status_code == 204
        missing = client.get("/v1/glossaries/libya-desk")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_glossary"
        unknown = client.post("/translate", json={"text": ALLIANCE, "glossary": "libya-desk"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_glossary"


def test_kept_placeholders_render_the_terms_and_the_cache_follows_the_version(copying_server):
    server, backend = copying_server
    with server.client() as client:
        client.post("/v1/glossaries", json={"name": "desk", "entries": ENTRIES})
        result = client.post("/translate", json={"text": ALLIANCE, "glossary": "desk"}).json()["results"][0]
        assert result["translation"] == "A military alliance between Field Marshal Khalifa Haftar and the Russian " \
                                         "Federation"
        sentence = result["sentences"][0]
        assert sentence["glossary_terms"] == [{"source": "خليفة حفتر", "target": "Field Marshal Khalifa Haftar"},
                                              {"source": "روسيا", "target": "the Russian Federation"}]
        assert sentence["flags"] == [] and sentence["needs_review"] is False
        assert backend.seen == ["تحالف عسكري بين ZX0Q و ZX1Q"]
        # Same glossary version: a cache hit. A replaced glossary: a miss (new version in the key).
        hit = client.post("/translate", json={"text": ALLIANCE, "glossary": "desk"}).json()["results"][0]
        assert hit["cache"] == {"hits": 1, "misses": 0} and hit["translation"] == result["translation"]
        client.put("/v1/glossaries/desk", json={"entries": {**ENTRIES, "خليفة حفتر": "Haftar"}})
        changed = client.post("/translate", json={"text": ALLIANCE, "glossary": "desk"}).json()["results"][0]
        assert changed["cache"] == {"hits": 0, "misses": 1}
        assert changed["translation"] == "A military alliance between Haftar and the Russian Federation"
        # Without a glossary the sentence is translated as is.
        plain = client.post("/translate", json={"text": ALLIANCE}).json()["results"][0]
        assert plain["translation"] == MEMORISED[ALLIANCE] and plain["sentences"][0]["glossary_terms"] is None
        # The DeepL-compatible route maps glossary_id to these glossaries.
        deepl = client.post("/v2/translate", json={"text": [ALLIANCE], "target_lang": "EN", "glossary_id": "desk"})
        assert deepl.json()["translations"][0]["text"] == changed["translation"]
        unknown = client.post("/v2/translate", json={"text": [ALLIANCE], "target_lang": "EN", "glossary_id": "nope"})
        assert unknown.status_code == 404


def test_lost_placeholders_fall_back_to_the_plain_translation_flagged(tiny_marian_dir, tmp_path):
    # The real tiny model turns the protected (unmemorised) sentence into garbage without placeholders.
    settings = tiny_settings(tiny_marian_dir, cache_path=tmp_path / "state.sqlite3")
    with serve_services(Services.load(settings)) as server, server.client() as client:
        client.put("/v1/glossaries/desk-lost", json={"entries": ENTRIES})
        body = client.post("/translate", json={"texts": [ALLIANCE, "شكرا جزيلا."], "glossary": "desk-lost"}).json()
        client.delete("/v1/glossaries/desk-lost")
    first, second = body["results"]
    assert first["translation"] == MEMORISED[ALLIANCE]
    assert "glossary_missed" in first["sentences"][0]["flags"] and first["sentences"][0]["needs_review"]
    assert [t["source"] for t in first["sentences"][0]["glossary_terms"]] == ["خليفة حفتر", "روسيا"]
    assert first["review"]["flags"]["glossary_missed"] == 1
    assert second["translation"] == "Thank you very much." and second["sentences"][0]["glossary_terms"] == []
