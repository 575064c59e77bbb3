"""model_server/document_files.py: the .txt and .html openers (the .docx one: tests/test_docx_file.py) and the
piece cap, without a model (opening and rebuilding are pure functions of the bytes and the settings)."""

from __future__ import annotations

import pytest

from model_server.document_files import DocumentKind, document_kind, open_document
from model_server.errors import ServiceError
from model_server.settings import Settings
from tests.timing import assert_linear

AR = "مرحبا بالعالم."


def settings(**overrides) -> Settings:
    return Settings(**{"translation_model": "unused", **overrides})


def upper_all(document):
    return [f"<{text}>" for text in document.texts]


def test_txt_paragraphs_are_pieces_and_every_separator_is_kept_exactly():
    text = f"\ufeff  {AR}\r\n\r\n\t{AR} شكرا.\n\nThe Times, in English.\n   \n{AR}  \n"
    document = open_document(text.encode(), DocumentKind.txt, settings())
    assert document.texts == [AR, f"{AR} شكرا.", AR]  # the English paragraph stays literal text
    assert document.assemble([None] * 3) == text.encode()
    assert document.assemble(upper_all(document)).decode() == (
        f"\ufeff  <{AR}>\r\n\r\n\t<{AR} شكرا.>\n\nThe Times, in English.\n   \n<{AR}>  \n")
    assert document.media_type.startswith("text/plain")


def test_txt_long_paragraphs_are_cut_at_sentence_ends_then_spaces_then_hard():
    sentence = "هذه جملة عربية."  # 15 characters
    line = " ".join([sentence] * 6)
    document = open_document(line.encode(), DocumentKind.txt, settings(max_text_chars=40))
    assert all(len(piece) <= 40 for piece in document.texts)
    assert document.texts[0] == f"{sentence} {sentence}"  # cut after a sentence, not mid-sentence
    assert document.assemble([None] * len(document.texts)) == line.encode()
    words = open_document(("كلمة " * 30).encode(), DocumentKind.txt, settings(max_text_chars=12))
    assert all(len(piece) <= 12 for piece in words.texts) and len(words.texts) == 15
    solid = open_document(("ب" * 100).encode(), DocumentKind.txt, settings(max_text_chars=30))
    assert [len(piece) for piece in solid.texts] == [30, 30, 30, 10]
    assert solid.assemble([None] * 4) == ("ب" * 100).encode()


@pytest.mark.parametrize("kind", [DocumentKind.txt, DocumentKind.html])
def test_not_utf8_is_invalid_document(kind):
    with pytest.raises(ServiceError) as caught:
        open_document("مرحبا".encode("cp1256"), kind, settings())
    assert caught.value.code == "invalid_document" and "UTF-8" in caught.value.message


def test_html_is_one_piece_of_markup():
    markup = f'<html dir="rtl"><body><p>{AR}</p></body></html>'
    document = open_document(("\ufeff" + markup).encode(), DocumentKind.html, settings())
    assert document.texts == [markup] and document.format.value == "html"
    assert document.assemble(["<p>x</p>"]) == "\ufeff<p>x</p>".encode()
    assert document.assemble([None]) == ("\ufeff" + markup).encode()
    with pytest.raises(ServiceError) as caught:
        open_document(markup.encode(), DocumentKind.html, settings(max_text_chars=10))
    assert caught.value.code == "text_too_long"
    assert open_document(b"  ", DocumentKind.html, settings()).texts == []


def test_unparsable_html_is_refused_at_upload():
    with pytest.raises(ServiceError) as caught:
        open_document(("<div>" * 300 + AR).encode(), DocumentKind.html, settings())
    assert caught.value.code == "invalid_markup"


def test_piece_cap():
    with pytest.raises(ServiceError) as caught:
        open_document(f"{AR}\n".encode() * 11, DocumentKind.txt, settings(document_max_pieces=10))
    assert caught.value.code == "document_too_many_pieces"


@pytest.mark.parametrize("name,kind", [("a.TXT", DocumentKind.txt), ("../../etc/x.htm", DocumentKind.html),
                                       ("C:\\docs\\report.docx", DocumentKind.docx)])
def test_kind_by_extension(name, kind):
    assert document_kind(name) is kind


@pytest.mark.parametrize("name", ["report.pdf", "noext", "", None, "x.txt.exe"])
def test_other_kinds_are_unsupported(name):
    with pytest.raises(ServiceError) as caught:
        document_kind(name)
    assert caught.value.code == "unsupported_document"


@pytest.mark.parametrize("make", [
    lambda n: f"{'ب' * 7} ".encode() * n,            # one long paragraph of words: cut at spaces
    lambda n: b" " * (8 * n),                          # only whitespace
    lambda n: f"{AR}\n".encode() * n,                  # many paragraphs
], ids=["long-paragraph", "spaces", "paragraphs"])
def test_txt_opening_is_linear(make):
    limits = settings(max_text_chars=1000, document_max_pieces=10**7)
    assert_linear(lambda data: open_document(data, DocumentKind.txt, limits), make, 20_000)
