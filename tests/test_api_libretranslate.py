"""LibreTranslate-compatible /libretranslate API: the `libretranslatepy` client (form bodies) and JSON
requests against a real server on loopback (tiny model)."""

from __future__ import annotations

import json
import urllib.error

import pytest

from model_server.tiny_models import MEMORISED_PAIRS

libretranslatepy = pytest.importorskip("libretranslatepy")

MEMORISED = dict(MEMORISED_PAIRS)
AGREEMENT = "اتفاق دفاعي بين الطرفين"
THANKS = "شكرا جزيلا."


@pytest.fixture()
def lt(tiny_server):
    return libretranslatepy.LibreTranslateAPI(f"{tiny_server.base_url}/libretranslate")


def test_client_translates_detects_and_lists_languages(lt):
    assert lt.translate(AGREEMENT, "ar", "en") == MEMORISED[AGREEMENT]
    assert lt.translate(THANKS, "auto", "en") == MEMORISED[THANKS]
    assert lt.detect(AGREEMENT) == [{"confidence": 100.0, "language": "ar"}, {"confidence": 0.0, "language": "en"}]
    assert lt.detect("Hello world")[0]["language"] == "en"
    assert lt.languages() == [{"code": "ar", "name": "Arabic", "targets": ["en"]},
                              {"code": "en", "name": "English", "targets": []}]


def test_client_errors_are_http_errors_with_libretranslate_bodies(lt):
    with pytest.raises(urllib.error.HTTPError) as raised:
        lt.translate(THANKS, "ar", "fr")
    assert raised.value.code == 400 and json.loads(raised.value.read()) == {"error": "fr is not supported"}
    with pytest.raises(urllib.error.HTTPError) as raised:
        lt.translate("The Times reported it.", "ar", "en")
    body = json.loads(raised.value.read())
    assert raised.value.code == 400 and set(body) == {"error"} and "Arabic" in body["error"]


def test_json_batch_with_auto_detection_html_and_alternatives(tiny_server):
    with tiny_server.client() as client:
        batch = client.post("/libretranslate/translate", json={"q": [THANKS, AGREEMENT], "source": "auto",
                                                               "target": "en", "alternatives": 2}).json()
        html = client.post("/libretranslate/translate", json={"q": f"<p>{THANKS}</p>", "source": "ar",
                                                              "target": "en", "format": "html"}).json()
    assert batch == {"translatedText": [MEMORISED[THANKS], MEMORISED[AGREEMENT]],
                     "detectedLanguage": [{"confidence": 100.0, "language": "ar"},
                                          {"confidence": 100.0, "language": "ar"}],
                     "alternatives": [[], []]}
    assert html == {"translatedText": f"<p>{MEMORISED[THANKS]}</p>"}


@pytest.mark.parametrize("payload,message", [
    ({"source": "ar", "target": "en"}, "Invalid request: missing q parameter"),
    ({"q": "", "source": "ar", "target": "en"}, "Invalid request: missing q parameter"),
    ({"q": THANKS, "target": "en"}, "Invalid request: missing source parameter"),
    ({"q": THANKS, "source": "de", "target": "en"}, "de is not supported"),
    ({"q": THANKS, "source": "ar", "target": "en", "format": "pdf"}, "pdf format is not supported"),
    ({"q": [THANKS] * 9, "source": "ar", "target": "en"}, "the limit is 8"),
])
def test_bad_requests_get_libretranslate_errors(tiny_server, payload, message):
    with tiny_server.client() as client:
        response = client.post("/libretranslate/translate", json=payload)
    assert response.status_code == 400, response.text
    assert response.json() == {"error": response.json()["error"]} and message in response.json()["error"]


def test_refusals_before_the_route_use_the_libretranslate_shape(tiny_server):
    with tiny_server.client() as client:
        too_big = client.post("/libretranslate/translate", content=b"q=" + b"a" * 300_000,
                              headers={"content-type": "application/x-www-form-urlencoded"})
        missing = client.get("/libretranslate/frontend/settings")
    assert too_big.status_code == 400 and "200000" in too_big.json()["error"]
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
