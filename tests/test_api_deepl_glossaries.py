"""DeepL-compatible glossaries (model_server/api/routes/deepl_glossaries.py) through the official `deepl`
client's own calls: one set of glossaries with /v1/glossaries (a DeepL glossary_id is the service name),
TSV and CSV entries, `/entries` as TSV, and translate_text(glossary=...) changing the output. The label
(DeepL name) kept by the SQLite and the Redis store alike."""

from __future__ import annotations

import sqlite3

import pytest

from model_server.glossary import GlossaryLimits
from model_server.services import Services
from model_server.state.glossaries import RedisGlossaryStore, SqliteGlossaryStore
from model_server.state.redis_client import connect
from tests.conftest import serve_services, tiny_settings
from tests.test_glossary import ALLIANCE, ENTRIES, CopyingBackend

deepl = pytest.importorskip("deepl")

LIMITS = GlossaryLimits(max_count=5, max_entries=3, max_term_chars=20, max_rendering_chars=40)


@pytest.fixture()
def server(tiny_marian_dir, tiny_backend, monkeypatch):
    monkeypatch.setattr(deepl.http_client, "max_network_retries", 0)
    settings = tiny_settings(tiny_marian_dir, glossary_max_entries=3, glossary_max_rendering_chars=40)
    with serve_services(Services.from_backend(settings, CopyingBackend(tiny_backend))) as live:
        yield live


def test_create_list_get_entries_translate_and_delete_through_the_client(server):
    translator = deepl.Translator("any-key", server_url=server.base_url)
    assert [(p.source_lang, p.target_lang) for p in translator.get_glossary_languages()] == [("ar", "en")]
    created = translator.create_glossary("Libya desk: names", source_lang="AR", target_lang="EN-US",
                                         entries=ENTRIES)
    assert (created.name, created.source_lang, created.target_lang, created.entry_count, created.ready) == (
        "Libya desk: names", "AR", "EN", 2, True)
    assert len(created.glossary_id) == 36 and created.creation_time.tzinfo is not None   # a UUID
    assert [g.glossary_id for g in translator.list_glossaries()] == [created.glossary_id]
    assert translator.get_glossary(created.glossary_id).name == "Libya desk: names"
    assert translator.get_glossary_entries(created) == ENTRIES
    with_terms = translator.translate_text(ALLIANCE, source_lang="AR", target_lang="EN-GB", glossary=created)
    assert with_terms.text == "A military alliance between Field Marshal Khalifa Haftar and the Russian Federation"
    without = translator.translate_text(ALLIANCE, source_lang="AR", target_lang="EN-GB")
    assert without.text == "A military alliance between Khalifa Haftar and Russia"
    translator.delete_glossary(created)
    assert translator.list_glossaries() == []
    with pytest.raises(deepl.GlossaryNotFoundException):
        translator.get_glossary(created.glossary_id)
    with pytest.raises(deepl.GlossaryNotFoundException):
        translator.delete_glossary(created.glossary_id)
    with pytest.raises(deepl.DeepLException, match="Not found"):   # translate_text: no glossary=True there
        translator.translate_text(ALLIANCE, source_lang="AR", target_lang="EN-US", glossary=created.glossary_id)


def test_both_apis_see_the_same_glossaries(server):
    translator = deepl.Translator("any-key", server_url=server.base_url)
    with server.client() as client:
        assert client.post("/v1/glossaries", json={"name": "libya-desk", "entries": ENTRIES}).status_code == 201
        made_by_deepl = translator.create_glossary_from_csv(
            "From CSV", "ar", "en", csv_data='"خليفة حفتر",Haftar,ar,en\n\nروسيا,"Russia, the Federation"\n')
        v1 = {g["name"]: g for g in client.get("/v1/glossaries").json()["glossaries"]}
    listed = {g.glossary_id: g for g in translator.list_glossaries()}
    assert set(listed) == set(v1) == {"libya-desk", made_by_deepl.glossary_id}
    assert listed["libya-desk"].name == "libya-desk" and v1[made_by_deepl.glossary_id]["label"] == "From CSV"
    assert v1[made_by_deepl.glossary_id]["entries"] == {"خليفة حفتر": "Haftar", "روسيا": "Russia, the Federation"}
    # A /v1 glossary name is a DeepL glossary_id.
    result = translator.translate_text(ALLIANCE, source_lang="AR", target_lang="EN-US", glossary="libya-desk")
    assert result.text == "A military alliance between Field Marshal Khalifa Haftar and the Russian Federation"


@pytest.mark.parametrize("fields,status,message", [
    ({"entries": "خليفة حفتر Haftar"}, 400, "line 1 is not term<TAB>rendering"),
    ({"entries": "روسيا\tRussia\nروسيا\tRussia"}, 400, "appears twice"),
    ({"entries": "a\tb\tc"}, 400, "line 1 is not"),
    ({"entries": "\n\n"}, 400, "no entries"),
    ({"entries": "روسيا,Russia,ar,de", "entries_format": "csv"}, 400, "line 1 is not term,rendering"),
    ({"entries": '"روسيا,Russia', "entries_format": "csv"}, 400, "not valid CSV"),
    ({"entries_format": "xlsx"}, 400, "Value for 'entries_format' not supported."),
    ({"target_lang": "de"}, 400, "Value for 'target_lang' not supported."),
    ({"entries": "\n".join(f"كلمة{i}\tword{i}" for i in range(4))}, 413, "at most 3"),
    ({"entries": "روسيا\t" + "R" * 41}, 413, "glossary_max_rendering_chars"),
])
def test_bad_glossaries_get_deepl_errors(server, fields, status, message):
    body = {"name": "desk", "source_lang": "ar", "target_lang": "en", "entries": "روسيا\tRussia", **fields}
    with server.client() as client:
        response = client.post("/v2/glossaries", data=body)   # a form, as older plugins send it
    assert response.status_code == status, response.text
    assert set(response.json()) == {"message"} and message in response.json()["message"]


def test_entries_are_tsv_with_deepls_media_type_and_odd_ids_are_404(server):
    translator = deepl.Translator("any-key", server_url=server.base_url)
    created = translator.create_glossary("desk", "ar", "en", {"روسيا": "Russia"})
    with server.client() as client:
        entries = client.get(f"/v2/glossaries/{created.glossary_id}/entries",
                             headers={"Accept": "text/tab-separated-values"})
        odd = client.get("/v2/glossaries/..%2F..%2Fv1")
        newline = client.delete(f"/v2/glossaries/{created.glossary_id}%0A")
    assert entries.headers["content-type"] == "text/tab-separated-values; charset=utf-8"
    assert entries.text == "روسيا\tRussia"
    assert odd.status_code == 404 and set(odd.json()) == {"message"}
    assert newline.status_code == 404 and translator.get_glossary(created.glossary_id).name == "desk"


def test_labels_are_kept_by_both_stores_and_an_old_sqlite_file_gains_the_column(tmp_path, redis_server):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:   # the table as it was before labels
        db.execute("CREATE TABLE glossaries (name TEXT PRIMARY KEY, entries TEXT NOT NULL, version INTEGER NOT NULL, "
                   "created_at REAL NOT NULL, updated_at REAL NOT NULL)")
        db.execute("INSERT INTO glossaries VALUES ('old', '{\"روسيا\": \"Russia\"}', 1, 1.0, 1.0)")
    for store in (SqliteGlossaryStore(path), RedisGlossaryStore(connect(redis_server.url, 2.0))):
        store.create("a-uuid", {"روسيا": "Russia"}, LIMITS, "Desk: names")
        assert store.get("a-uuid").label == "Desk: names"
        assert store.replace("a-uuid", {"روسيا": "the Russian Federation"}, LIMITS).label == "Desk: names"
        store.replace("plain", {"روسيا": "Russia"}, LIMITS)
        assert store.get("plain").label is None
    assert SqliteGlossaryStore(path).get("old").label is None
