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


# --- bounds: every cap a setting with its own code, through the real HTTP API ---------------------------

CAPS = dict(glossaries_max_count=2, glossary_max_entries=3, glossary_max_term_chars=12,
            glossary_max_rendering_chars=24)


@pytest.fixture()
def capped_server(tiny_marian_dir, tiny_backend, tmp_path):
    settings = tiny_settings(tiny_marian_dir, cache_enabled=True, cache_path=tmp_path / "state.sqlite3", **CAPS)
    services = Services.from_backend(settings, CopyingBackend(tiny_backend))
    with serve_services(services) as server, server.client() as client:
        yield client, services


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code, response.text
    return response.json()["error"]["message"]


def test_the_number_of_glossaries_is_capped(capped_server):
    client, _ = capped_server
    for name in ("one", "two"):
        assert client.post("/v1/glossaries", json={"name": name, "entries": {"روسيا": "Russia"}}).status_code == 201
    message = _error(client.post("/v1/glossaries", json={"name": "three", "entries": {"روسيا": "Russia"}}),
                     409, "too_many_glossaries")
    assert "glossaries_max_count=2" in message and "delete one" in message
    _error(client.put("/v1/glossaries/three", json={"entries": {"روسيا": "Russia"}}), 409, "too_many_glossaries")
    # Replacing a stored glossary is not one more; after a delete there is room again.
    assert client.put("/v1/glossaries/two", json={"entries": {"روسيا": "Russia!"}}).json()["version"] == 2
    assert client.delete("/v1/glossaries/one").status_code == 204
    assert client.put("/v1/glossaries/three", json={"entries": {"روسيا": "Russia"}}).status_code == 200
    assert [g["name"] for g in client.get("/v1/glossaries").json()["glossaries"]] == ["three", "two"]


def test_entries_terms_and_renderings_are_capped_each_with_its_code(capped_server):
    client, _ = capped_server
    four = {"روسيا": "Russia", "طبرق": "Tobruk", "حفتر": "Haftar", "ليبيا": "Libya"}
    message = _error(client.post("/v1/glossaries", json={"name": "big", "entries": four}),
                     413, "glossary_too_many_entries")
    assert "4 entries" in message and "at most 3" in message
    long_term = "حفتر " * 3  # 15 characters
    message = _error(client.put("/v1/glossaries/big", json={"entries": {"روسيا": "Russia", long_term: "Haftar"}}),
                     413, "glossary_term_too_long")
    assert repr(long_term) in message and "at most 12" in message
    message = _error(client.put("/v1/glossaries/big", json={"entries": {"روسيا": "the Russian Federation, Moscow"}}),
                     413, "glossary_rendering_too_long")
    assert "'روسيا'" in message and "at most 24" in message
    # At the caps exactly: accepted.
    at_caps = {"روسيا": "R" * 24, "ح" * 12: "Haftar", "طبرق": "Tobruk"}
    assert client.post("/v1/glossaries", json={"name": "big", "entries": at_caps}).status_code == 201


@pytest.mark.parametrize("rendering", ["Rus\x07sia", "Russia\n", "Rus\tsia", "Rus\x85sia", "\u202eaissuR",
                                       "Russia\u2066", "Russia\u200f"])
def test_control_and_bidi_characters_in_renderings_are_refused_naming_the_entry(capped_server, rendering):
    client, _ = capped_server
    message = _error(client.post("/v1/glossaries", json={"name": "ctl", "entries": {"طبرق": "Tobruk",
                                                                                   "روسيا": rendering}}),
                     400, "invalid_glossary")
    assert "'روسيا'" in message and f"U+{ord(next(c for c in rendering if not c.isalpha())):04X}" in message
    assert client.get("/v1/glossaries").json()["glossaries"] == []


def test_only_the_latest_compiled_version_of_a_glossary_is_kept(capped_server):
    client, services = capped_server
    alliance = {"translation": "A military alliance between Haftar and Russia"}
    client.post("/v1/glossaries", json={"name": "desk", "entries": {"خليفة حفتر": "Haftar", "روسيا": "Russia"}})
    for version in (1, 2, 3):
        if version > 1:
            client.put("/v1/glossaries/desk", json={"entries": {"خليفة حفتر": "Haftar", "روسيا": "Russia"}})
        result = client.post("/translate", json={"text": ALLIANCE, "glossary": "desk"}).json()["results"][0]
        assert result["translation"] == alliance["translation"]
        assert services.glossaries.compiled_versions() == {"desk": version}
    assert client.delete("/v1/glossaries/desk").status_code == 204
    assert services.glossaries.compiled_versions() == {}


def test_a_glossary_deleted_and_created_again_is_the_new_one(capped_server):
    client, _ = capped_server
    client.post("/v1/glossaries", json={"name": "desk", "entries": {"خليفة حفتر": "Haftar", "روسيا": "Russia"}})
    first = client.post("/translate", json={"text": ALLIANCE, "glossary": "desk"}).json()["results"][0]
    assert first["translation"] == "A military alliance between Haftar and Russia"
    client.delete("/v1/glossaries/desk")
    client.post("/v1/glossaries", json={"name": "desk", "entries": {"خليفة حفتر": "Haftar", "روسيا": "Moscow"}})
    assert client.get("/v1/glossaries/desk").json()["entries"]["روسيا"] == "Moscow"
    again = client.post("/translate", json={"text": ALLIANCE, "glossary": "desk"}).json()["results"][0]
    assert again["translation"] == "A military alliance between Haftar and Moscow"


def test_a_placeholder_with_thousands_of_digits_counts_as_lost():
    glossary = Glossary("g", {"روسيا": "Russia"})
    assert glossary.restore("ZX" + "9" * 5000 + "Q and ZX0Q", ["روسيا"]) is None
    assert glossary.restore("to ZX0Q", ["روسيا"]) == "to Russia"
