"""POST /translate with `clean: true` and the `non_arabic` setting: real server on loopback, tiny model."""

from __future__ import annotations

import pytest

from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import SAMPLE_AR, LiveServer, tiny_settings

MEMORISED = dict(MEMORISED_PAIRS)


def test_clean_drops_furniture_reports_it_and_translates_the_body(tiny_server):
    with tiny_server.client() as client:
        response = client.post("/translate", json={"text": SAMPLE_AR, "clean": True})
    assert response.status_code == 200, response.text
    result = response.json()["results"][0]
    assert [(d["line"], d["reason"]) for d in result["dropped"]] == [
        (1, "weather"), (2, "date"), (4, "duplicate_line"), (5, "date"), (6, "clipboard_notice")]
    assert result["dropped"][0]["text"] == "- ℃ 11 تركيا"
    # 22 lines - 5 dropped = 17 paragraphs, every body sentence is there and memorised ones are exact.
    assert result["paragraphs"] == 17
    lines = result["translation"].split("\n")
    assert len(lines) == 17
    assert lines[3] == MEMORISED["تحالف عسكري بين خليفة حفتر وروسيا"]
    sources = [s["source"] for s in result["sentences"]]
    assert sources[:2] == ["كيف تدعم روسيا حفتر رجلها في ليبيا بالسلاح؟..", "التايمز تكشف"]  # the headline...
    assert sources.count(sources[0]) == 1                                                # ...once
    assert "اتفاق دفاعي بين الطرفين" in sources and not any("تركيا" in s for s in sources)
    assert result["passthrough"] is False


def test_without_clean_nothing_is_dropped(tiny_server):
    with tiny_server.client() as client:
        result = client.post("/translate", json={"text": "مرحبا بالعالم.\n- 10 يناير 2025"}).json()["results"][0]
    assert result["dropped"] is None and result["paragraphs"] == 2


def test_clean_applies_per_text(tiny_server):
    with tiny_server.client() as client:
        results = client.post("/translate", json={"texts": ["- 10 يناير 2025\nشكرا جزيلا.", "مرحبا بالعالم."],
                                                  "clean": True}).json()["results"]
    assert results[0]["translation"] == "Thank you very much." and results[0]["dropped"][0]["line"] == 1
    assert results[1]["translation"] == "Hello world." and results[1]["dropped"] == []


@pytest.fixture(scope="module")
def passthrough_server(tiny_marian_dir):
    from model_server.api.app import create_app

    with LiveServer(create_app(tiny_settings(tiny_marian_dir, non_arabic="passthrough"))) as server:
        yield server


def test_non_arabic_passthrough_returns_the_text_unchanged_and_flagged(passthrough_server):
    english = "The Times reported that Russia stepped up support."
    with passthrough_server.client() as client:
        single = client.post("/translate", json={"text": english})
        several = client.post("/translate", json={"texts": [english, "شكرا جزيلا.", " "]})
    assert single.status_code == 200, single.text
    result = single.json()["results"][0]
    assert result["passthrough"] is True and result["translation"] == english and result["error"] is None
    assert result["sentences"] == []
    results = several.json()["results"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[0]["passthrough"] is True and results[0]["translation"] == english
    assert results[1]["passthrough"] is False and results[1]["translation"] == "Thank you very much."
    assert results[2]["error"]["code"] == "empty_text"   # passthrough only concerns the language check


def test_reject_is_the_default(tiny_server):
    with tiny_server.client() as client:
        response = client.post("/translate", json={"text": "The Times reported that Russia stepped up support."})
    assert response.status_code == 400 and response.json()["error"]["code"] == "not_arabic"
