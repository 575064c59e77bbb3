""".docx in, .docx out (model_server/docx_file.py): files built here with python-docx (plus the parts it cannot
write: footnotes, bidi settings, by hand), translated with the tiny Marian through `translate_opened` and a real
TranslationPipeline, read back with python-docx and lxml; hostile files get their 4xx codes; opening and
rebuilding are linear in the paragraph count.

The tiny model only translates MEMORISED_PAIRS, so exactness is asserted on memorised sentences. Which words a
bold run or a link gets is the markup aligner's business (tests/test_html.py); here: the runs keep their
properties, hold whole words of the translation, in order, and the paragraph reads as the memorised translation.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import subprocess
import sys
import zipfile
from copy import deepcopy

import docx
import pytest
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from docx.oxml import parse_xml
from docx.oxml.ns import nsdecls
from lxml import etree

from model_server.document_files import DocumentKind, open_document, translate_opened
from model_server.docx_file import open_docx
from model_server.errors import ServiceError
from model_server.services import Services
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import ROOT, run_with, tiny_settings
from tests.fakes import DelegatingBackend
from tests.timing import assert_linear

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MEMORISED = dict(MEMORISED_PAIRS)
AGREEMENT = "اتفاق دفاعي بين الطرفين"
ALLIANCE = "تحالف عسكري بين خليفة حفتر وروسيا"
HELLO, WEATHER, THANKS = "مرحبا بالعالم.", "الطقس جميل اليوم.", "شكرا جزيلا."
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
NS = {"w": W}
TEXT_PARTS = {"word/document.xml", "word/header1.xml", "word/footer1.xml", "word/footnotes.xml"}


def w(name: str) -> str:
    return f"{{{W}}}{name}"


# --------------------------------------------------------------------------------------------------
# Building .docx files
# --------------------------------------------------------------------------------------------------
def saved(document) -> bytes:
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def raw_paragraph(document, inner: str, ppr: str = ""):
    """A body paragraph written as WordprocessingML (what python-docx has no API for), before the sectPr."""
    paragraph = document.add_paragraph()
    new = parse_xml(f"<w:p {nsdecls('w', 'r')}><w:pPr>{ppr}</w:pPr>{inner}</w:p>")
    paragraph._p.addnext(new)
    paragraph._p.getparent().remove(paragraph._p)
    return new


def add_hyperlink(paragraph, url: str, text: str) -> None:
    rid = paragraph.part.relate_to(url, RT.HYPERLINK, is_external=True)
    paragraph._p.append(parse_xml(f'<w:hyperlink {nsdecls("w", "r")} r:id="{rid}"><w:r><w:rPr>'
                                  f'<w:rStyle w:val="Hyperlink"/></w:rPr><w:t>{text}</w:t></w:r></w:hyperlink>'))


FOOTNOTES = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:footnotes {nsdecls("w")}>'
             '<w:footnote w:type="separator" w:id="-1"><w:p><w:r><w:separator/></w:r></w:p></w:footnote>'
             '<w:footnote w:type="continuationSeparator" w:id="0"><w:p><w:r><w:continuationSeparator/></w:r>'
             '</w:p></w:footnote>{notes}</w:footnotes>')
FOOTNOTE = ('<w:footnote w:id="{id}"><w:p><w:pPr><w:pStyle w:val="FootnoteText"/></w:pPr><w:r><w:rPr>'
            '<w:rStyle w:val="FootnoteReference"/></w:rPr><w:footnoteRef/></w:r><w:r><w:t xml:space="preserve"> '
            '{text}</w:t></w:r></w:p></w:footnote>')
FOOTNOTE_REFERENCE = ('<w:r><w:rPr><w:rStyle w:val="FootnoteReference"/><w:vertAlign w:val="superscript"/></w:rPr>'
                      '<w:footnoteReference w:id="{id}"/></w:r>')


def with_footnotes(data: bytes, notes: dict[int, str]) -> bytes:
    """python-docx cannot write footnotes: add word/footnotes.xml, its relationship and its content type."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == "[Content_Types].xml":
                content = content.replace(b"</Types>", b'<Override PartName="/word/footnotes.xml" ContentType="'
                                          b'application/vnd.openxmlformats-officedocument.wordprocessingml.'
                                          b'footnotes+xml"/></Types>')
            elif info.filename == "word/_rels/document.xml.rels":
                content = content.replace(b"</Relationships>", b'<Relationship Id="rIdFootnotes" Type="http://'
                                          b'schemas.openxmlformats.org/officeDocument/2006/relationships/footnotes" '
                                          b'Target="footnotes.xml"/></Relationships>')
            target.writestr(info, content)
        body = "".join(FOOTNOTE.format(id=k, text=v) for k, v in notes.items())
        target.writestr("word/footnotes.xml", FOOTNOTES.format(notes=body))
    return out.getvalue()


def newsroom_docx() -> bytes:
    """Bold and italic runs, a hyperlink, a table, a header, a footer, a footnote, RTL paragraphs and runs, and
    paragraphs that are not sent (English, empty)."""
    document = docx.Document()
    first = document.add_paragraph()
    first.add_run(HELLO + " ")
    first.add_run(THANKS).bold = True
    second = document.add_paragraph()
    second.add_run(WEATHER).italic = True
    second.add_run(" " + ALLIANCE)
    third = document.add_paragraph()
    third.add_run("اتفاق دفاعي بين ")
    third.add_run("الطرفين").bold = True
    link = document.add_paragraph()
    add_hyperlink(link, "https://example.com/a?b=1&c=2", HELLO)
    table = document.add_table(rows=1, cols=2)
    table.cell(0, 0).text = WEATHER
    table.cell(0, 1).text = "Reuters 2024"
    document.add_paragraph("English only, kept as it is.")
    document.add_paragraph("")
    raw_paragraph(document, f'<w:r><w:rPr><w:rtl/><w:lang w:val="ar-SA" w:bidi="ar-SA"/></w:rPr>'
                            f'<w:t>{THANKS}</w:t></w:r>' + FOOTNOTE_REFERENCE.format(id=1),
                  ppr='<w:bidi/><w:jc w:val="left"/>')
    section = document.sections[0]
    section.header.paragraphs[0].text = HELLO
    section.footer.paragraphs[0].text = WEATHER
    return with_footnotes(saved(document), {1: THANKS})


# --------------------------------------------------------------------------------------------------
# Translating with the tiny model
# --------------------------------------------------------------------------------------------------
def translate_docx(backend, model_dir, data: bytes, **settings_overrides) -> bytes:
    settings = tiny_settings(model_dir, **settings_overrides)
    opened = open_document(data, DocumentKind.docx, settings)
    services = Services.from_backend(settings, DelegatingBackend(backend))   # the session's backend stays open
    return run_with(services, lambda s: translate_opened(s.translator, opened, s.translator.options()))


@pytest.fixture(scope="module")
def newsroom(tiny_backend, tiny_marian_dir):
    data = newsroom_docx()
    return data, translate_docx(tiny_backend, tiny_marian_dir, data)


def members(data: bytes) -> dict[str, bytes]:
    archive = zipfile.ZipFile(io.BytesIO(data))
    return {name: archive.read(name) for name in archive.namelist()}


def part(data: bytes, name: str):
    return etree.fromstring(members(data)[name])


def test_body_paragraphs_are_the_memorised_translations_with_their_runs_formatting(newsroom):
    _, out = newsroom
    first, second, third = docx.Document(io.BytesIO(out)).paragraphs[:3]
    # A bold or italic sentence is anchored on its own translation: exactly its words are bold (italic).
    assert first.text == f"{MEMORISED[HELLO]} {MEMORISED[THANKS]}"
    assert [(run.text, run.bold) for run in first.runs] == [(MEMORISED[HELLO] + " ", None), (MEMORISED[THANKS], True)]
    assert second.text == f"{MEMORISED[WEATHER]} {MEMORISED[ALLIANCE]}"
    assert [run.italic for run in second.runs] == [True, None]
    # (the anchor is matched without its closing punctuation, which then starts the next run)
    assert second.runs[0].text.rstrip(".") == MEMORISED[WEATHER].rstrip(".")
    # One bold word the tiny model cannot translate on its own: the paragraph is still exact, its runs and
    # their properties are all there, and the bold run holds whole words of the end, if any.
    assert third.text == MEMORISED[AGREEMENT]
    assert [run.bold for run in third.runs] == [None, True]
    bold = third.runs[1].text
    assert bold == bold.strip() and MEMORISED[AGREEMENT].endswith(bold)


def test_hyperlink_table_header_footer_and_footnote_are_translated_in_place(newsroom):
    source, out = newsroom
    document = docx.Document(io.BytesIO(out))
    body = part(out, "word/document.xml")
    link = body.find(".//w:hyperlink", NS)
    assert "".join(link.itertext()) == MEMORISED[HELLO]
    assert link.find("w:r/w:rPr/w:rStyle", NS).get(w("val")) == "Hyperlink"
    rid = link.get("{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id")
    assert document.part.rels[rid].target_ref == "https://example.com/a?b=1&c=2"
    cells = document.tables[0].rows[0].cells
    assert cells[0].text == MEMORISED[WEATHER] and cells[1].text == "Reuters 2024"
    section = document.sections[0]
    assert section.header.paragraphs[0].text == MEMORISED[HELLO]
    assert section.footer.paragraphs[0].text == MEMORISED[WEATHER]
    note = part(out, "word/footnotes.xml").find(".//w:footnote[@w:id='1']", NS)
    assert note.find(".//w:footnoteRef", NS) is not None   # the note's own number stays first
    assert "".join(note.itertext()).strip() == MEMORISED[THANKS]
    rtl = [p for p in body.iter(w("p")) if p.find(".//w:footnoteReference", NS) is not None]
    assert len(rtl) == 1 and "".join(rtl[0].itertext()) == MEMORISED[THANKS]
    runs = rtl[0].findall("w:r", NS)   # the reference is still after the sentence, in its own run
    assert runs[-1].find("w:footnoteReference", NS).get(w("id")) == "1"
    assert runs[-1].find("w:rPr/w:vertAlign", NS).get(w("val")) == "superscript"


def test_what_is_not_translated_is_kept_and_other_members_are_byte_identical(newsroom):
    source, out = newsroom
    before, after = members(source), members(out)
    assert list(before) == list(after)   # same members, same order
    for name in before:
        if name not in TEXT_PARTS:
            assert after[name] == before[name], name
    paragraph = "English only, kept as it is."
    kept, = part(out, "word/document.xml").xpath("//w:p[w:r/w:t=$t]", namespaces=NS, t=paragraph)
    was, = part(source, "word/document.xml").xpath("//w:p[w:r/w:t=$t]", namespaces=NS, t=paragraph)
    assert etree.tostring(kept) == etree.tostring(was)
    assert "" in [p.text for p in docx.Document(io.BytesIO(out)).paragraphs]
    separator = part(out, "word/footnotes.xml").find(".//w:footnote[@w:id='-1']", NS)
    assert separator.find(".//w:separator", NS) is not None


def test_untranslated_document_is_rebuilt_identical(tiny_marian_dir):
    data = newsroom_docx()
    opened = open_docx(data, tiny_settings(tiny_marian_dir))
    assert len(opened.texts) == 9   # 3 body, link, cell, rtl, header, footer, footnote: nothing else
    assert members(opened.assemble([None] * len(opened.texts))) == members(data)


def rtl_paragraph(data: bytes):
    body = part(data, "word/document.xml")
    return next(p for p in body.iter(w("p")) if p.find(".//w:footnoteReference", NS) is not None)


def test_right_to_left_settings_are_switched_on_translated_paragraphs(newsroom):
    source, out = newsroom
    paragraph = rtl_paragraph(out)
    assert paragraph.find("w:pPr/w:bidi", NS) is None
    assert paragraph.find("w:pPr/w:jc", NS).get(w("val")) == "left"   # alignment is left as it was
    for run in paragraph.findall("w:r", NS):
        assert run.find("w:rPr/w:rtl", NS) is None
        assert run.find("w:rPr/w:lang", NS).get(w("val")) == "en-US"
    assert paragraph.find("w:r/w:rPr/w:lang", NS).get(w("bidi")) == "ar-SA"   # the complex-script language
    assert rtl_paragraph(source).find("w:pPr/w:bidi", NS) is not None
    first = part(out, "word/document.xml").find("w:body/w:p", NS)
    assert [lang.get(w("val")) for lang in first.iterfind("w:r/w:rPr/w:lang", NS)] == ["en-US", "en-US"]


def test_direction_is_kept_when_the_setting_is_off(tiny_backend, tiny_marian_dir):
    out = translate_docx(tiny_backend, tiny_marian_dir, newsroom_docx(), set_translated_direction=False)
    paragraph = rtl_paragraph(out)
    assert "".join(paragraph.itertext()) == MEMORISED[THANKS]
    assert paragraph.find("w:pPr/w:bidi", NS) is not None
    assert paragraph.find("w:r/w:rPr/w:rtl", NS) is not None
    assert paragraph.find("w:r/w:rPr/w:lang", NS).get(w("val")) == "ar-SA"


def test_bidi_from_styles_is_overridden_and_complex_script_bold_becomes_bold(tiny_backend, tiny_marian_dir):
    document = docx.Document()
    styles = document.styles.element
    styles.find(".//w:pPrDefault/w:pPr", NS).append(parse_xml(f"<w:bidi {nsdecls('w')}/>"))
    raw_paragraph(document, f"<w:r><w:rPr><w:bCs/><w:szCs w:val='28'/><w:rtl/></w:rPr><w:t>{AGREEMENT}</w:t></w:r>")
    out = translate_docx(tiny_backend, tiny_marian_dir, saved(document))
    paragraph = part(out, "word/document.xml").find("w:body/w:p", NS)
    assert "".join(paragraph.itertext()) == MEMORISED[AGREEMENT]
    assert paragraph.find("w:pPr/w:bidi", NS).get(w("val")) == "0"
    rpr = paragraph.find("w:r/w:rPr", NS)
    # In schema order (Word refuses a file whose properties are out of order): b, bCs, ..., sz, szCs, ..., lang.
    assert [etree.QName(child).localname for child in rpr] == ["b", "bCs", "sz", "szCs", "lang"]
    assert rpr.find("w:sz", NS).get(w("val")) == "28"
    assert docx.Document(io.BytesIO(out)).paragraphs[0].runs[0].bold is True


def test_tabs_breaks_and_fields_stay_in_the_runs(tiny_backend, tiny_marian_dir):
    document = docx.Document()
    raw_paragraph(document, "<w:r><w:tab/><w:t>مرحبا</w:t></w:r>"
                            "<w:r><w:br/><w:t xml:space='preserve'> بالعالم. </w:t></w:r>"
                            "<w:r><w:fldChar w:fldCharType='begin'/></w:r>"
                            "<w:r><w:instrText xml:space='preserve'> PAGE </w:instrText></w:r>"
                            "<w:r><w:fldChar w:fldCharType='separate'/></w:r>"
                            "<w:r><w:t>1</w:t></w:r><w:r><w:fldChar w:fldCharType='end'/></w:r>")
    out = translate_docx(tiny_backend, tiny_marian_dir, saved(document))
    paragraph = part(out, "word/document.xml").find("w:body/w:p", NS)
    pieces = [etree.QName(child).localname for run in paragraph.iterfind("w:r", NS) for child in run
              if child.tag != w("rPr")]
    assert [p for p in pieces if p != "t"] == ["tab", "br", "fldChar", "instrText", "fldChar", "fldChar"]
    assert pieces[0] == "tab"
    instruction = paragraph.find(".//w:instrText/..", NS)
    assert [etree.QName(child).localname for child in instruction if child.tag != w("rPr")] == ["instrText"]
    words = "".join(t.text for t in paragraph.iterfind(".//w:t", NS))
    assert words.startswith(MEMORISED[HELLO])


def test_runs_word_split_for_revisions_and_spelling_marks_are_translated_as_one(tiny_backend, tiny_marian_dir):
    """Word splits a sentence into runs with the same properties (one per revision id, around w:proofErr): the
    model sees one span, and the sentence comes back in the first of them."""
    rpr = "<w:rPr><w:rFonts w:cs='Simplified Arabic'/><w:b/><w:bCs/><w:rtl/><w:lang w:bidi='ar-EG'/></w:rPr>"
    document = docx.Document()
    raw_paragraph(document, f"<w:r w:rsidR='00A1'>{rpr}<w:t>مرحبا</w:t></w:r><w:proofErr w:type='spellStart'/>"
                            f"<w:r w:rsidR='00B2'>{rpr}<w:lastRenderedPageBreak/><w:t xml:space='preserve'> بالعالم"
                            f"</w:t></w:r><w:proofErr w:type='spellEnd'/><w:r w:rsidR='00C3'>{rpr}<w:t>.</w:t></w:r>",
                  ppr="<w:bidi/>")
    source = saved(document)
    assert open_docx(source, tiny_settings(tiny_marian_dir)).texts == ["<p><span>مرحبا<wbr/> بالعالم.</span></p>"]
    paragraph = part(translate_docx(tiny_backend, tiny_marian_dir, source), "word/document.xml").find("w:body/w:p", NS)
    runs = paragraph.findall("w:r", NS)
    assert len(runs) == 1 and runs[0].get(w("rsidR")) == "00A1"
    assert "".join(t.text for t in runs[0].iterfind("w:t", NS)) == MEMORISED[HELLO]
    assert runs[0].find("w:lastRenderedPageBreak", NS) is not None
    assert [etree.QName(e).localname for e in runs[0].find("w:rPr", NS)] == ["rFonts", "b", "bCs", "lang"]
    assert len(paragraph.findall("w:proofErr", NS)) == 2


def test_text_too_long_for_the_model_keeps_the_paragraph(tiny_backend, tiny_marian_dir):
    document = docx.Document()
    document.add_paragraph(AGREEMENT + " " + "كلمة " * 200)
    document.add_paragraph(HELLO)
    data = saved(document)
    out = translate_docx(tiny_backend, tiny_marian_dir, data, max_text_chars=500)
    paragraphs = docx.Document(io.BytesIO(out)).paragraphs
    assert paragraphs[0].text == docx.Document(io.BytesIO(data)).paragraphs[0].text
    assert paragraphs[1].text == MEMORISED[HELLO]


def test_the_command_line_translates_a_docx_into_a_docx(tmp_path, tiny_marian_dir):
    source, out = tmp_path / "report.docx", tmp_path / "en" / "report.docx"
    source.write_bytes(newsroom_docx())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MODEL_SERVER_DEVICE": "cpu", "MODEL_SERVER_TORCH_THREADS": "1",
           "MODEL_SERVER_CACHE_ENABLED": "false", "MODEL_SERVER_CACHE_PATH": str(tmp_path / "state.sqlite3")}
    done = subprocess.run([sys.executable, "-m", "model_server.cli", "translate", str(source), "-o", str(out),
                           "--translation-model", str(tiny_marian_dir)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{out}: 9 Arabic paragraphs translated\n"
    document = docx.Document(str(out))
    assert document.paragraphs[0].text == f"{MEMORISED[HELLO]} {MEMORISED[THANKS]}"
    assert document.sections[0].header.paragraphs[0].text == MEMORISED[HELLO]


MC_NAMESPACES = ('xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006" '
                 'xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape" '
                 'xmlns:v="urn:schemas-microsoft-com:vml"')


def test_text_boxes_are_translated_and_their_legacy_copies_left_alone(tiny_backend, tiny_marian_dir):
    box = f"<w:txbxContent><w:p><w:r><w:t>{HELLO}</w:t></w:r></w:p></w:txbxContent>"
    document = docx.Document()
    raw_paragraph(document, f'<w:r><w:t xml:space="preserve">{THANKS} </w:t></w:r><w:r><mc:AlternateContent '
                            f'{MC_NAMESPACES}><mc:Choice Requires="wps"><w:drawing><wps:txbx>{box}'
                            f'</wps:txbx></w:drawing></mc:Choice><mc:Fallback><w:pict><v:textbox>{box}</v:textbox>'
                            '</w:pict></mc:Fallback></mc:AlternateContent></w:r>')
    out = translate_docx(tiny_backend, tiny_marian_dir, with_endnotes(saved(document), WEATHER))
    body = part(out, "word/document.xml")
    outer = body.find("w:body/w:p", NS)
    assert "".join(t.text for t in outer.findall("w:r/w:t", NS)) == MEMORISED[THANKS]
    mc = "{http://schemas.openxmlformats.org/markup-compatibility/2006}"
    choice, fallback = outer.find(f".//{mc}Choice"), outer.find(f".//{mc}Fallback")
    assert "".join(choice.find(".//w:p", NS).itertext()) == MEMORISED[HELLO]
    assert "".join(fallback.find(".//w:p", NS).itertext()) == HELLO
    note = part(out, "word/endnotes.xml").find(".//w:endnote[@w:id='1']", NS)
    assert note.find(".//w:endnoteRef", NS) is not None and "".join(note.itertext()).strip() == MEMORISED[WEATHER]


def with_endnotes(data: bytes, text: str) -> bytes:
    notes = FOOTNOTES.replace("footnote", "endnote").replace("Footnote", "Endnote")
    note = FOOTNOTE.replace("footnote", "endnote").replace("Footnote", "Endnote")
    return zipped({**members(data), "word/endnotes.xml": notes.format(notes=note.format(id=1, text=text))})


# Random paragraphs: runs with and without text, tabs, breaks, references, fields, proofing marks and links; then
# random "translations" of their pieces with the aligner's shape (text anywhere but inside runs that had none).
RUN_PIECES = ["<w:t xml:space='preserve'>{words}</w:t>", "<w:tab/>", "<w:br/>", "<w:t>{words}</w:t>"]
NON_TEXT_RUNS = ["<w:r><w:rPr><w:vertAlign w:val='superscript'/></w:rPr><w:footnoteReference w:id='1'/></w:r>",
                 "<w:r><w:fldChar w:fldCharType='begin'/></w:r><w:r><w:instrText> PAGE </w:instrText></w:r>"
                 "<w:r><w:fldChar w:fldCharType='separate'/></w:r>", "<w:r><w:fldChar w:fldCharType='end'/></w:r>",
                 "<w:proofErr w:type='spellStart'/>", "<w:bookmarkStart w:id='0' w:name='x'/>"]
PROPERTIES = ["", "<w:rPr><w:b/></w:rPr>", "<w:rPr><w:i/><w:rtl/></w:rPr>"]


def random_paragraph(rng) -> str:
    def words() -> str:
        return " ".join(rng.choice(["اتفاق", "دفاعي", "بين", "الطرفين", " ", "2024"]) for _ in range(rng.randint(1, 3)))

    def text_run() -> str:
        pieces = "".join(rng.choice(RUN_PIECES).format(words=words()) for _ in range(rng.randint(1, 3)))
        return f"<w:r>{rng.choice(PROPERTIES)}{pieces}</w:r>"

    def item() -> str:
        roll = rng.random()
        if roll < 0.55:
            return text_run()
        if roll < 0.8:
            return rng.choice(NON_TEXT_RUNS)
        return f"<w:hyperlink w:anchor='a'>{''.join(text_run() for _ in range(rng.randint(0, 2)))}</w:hyperlink>"

    return "<w:p><w:r><w:t>اتفاق</w:t></w:r>" + "".join(item() for _ in range(rng.randint(1, 8))) + "</w:p>"


def random_translation(rng, markup: str) -> str:
    root = etree.fromstring(markup)
    for element in root.iter("p", "a", "span"):
        if element.tag == "span" and not "".join(element.itertext()).strip():
            continue   # a run without text: the aligner gives it a point, nothing inside
        element.text = rng.choice(["", " ", "x", "Two words", " spaced "])
        for child in element:
            child.tail = rng.choice(["", " ", "y", "tail words "])
    return etree.tostring(root, encoding="unicode")


def tokens_of_markup(root) -> list:
    out: list = []

    def walk(element) -> None:
        if element.tag == "a":
            out.append("link")
        out.append(element.text or "")
        for child in element:
            if child.tag in ("br", "wbr"):
                out.append(child.tag)
            else:
                walk(child)
            out.append(child.tail or "")
        if element.tag == "a":
            out.append("/link")

    walk(root)
    return merged(out)


def tokens_of_paragraph(paragraph) -> list:
    out: list = []

    def walk(element) -> None:
        for child in element:
            if child.tag == w("r"):
                for piece in child:
                    if piece.tag == w("t"):
                        out.append(piece.text or "")
                    elif piece.tag != w("rPr"):
                        out.append("br" if piece.tag in (w("tab"), w("br")) else "wbr")
            elif child.tag == w("hyperlink"):
                out.append("link")
                walk(child)
                out.append("/link")

    walk(paragraph)
    return merged(out)


def merged(tokens: list) -> list:
    """Adjacent text joined, empty text dropped."""
    out: list = []
    for token in tokens:
        if token in ("br", "wbr", "link", "/link"):
            out.append((token,))
        elif token and out and isinstance(out[-1], str):
            out[-1] += token
        elif token:
            out.append(token)
    return out


def test_random_paragraphs_keep_the_order_of_every_word_reference_and_link(tiny_marian_dir):
    """Whatever the alignment does, the rebuilt paragraph holds the translated piece's text, non-text run
    content and link boundaries in the piece's order, and the runs of references and fields unchanged
    (direction switching off: it adds w:lang to every run)."""
    import random

    settings = tiny_settings(tiny_marian_dir, set_translated_direction=False)
    for seed in range(200):
        rng = random.Random(seed)
        paragraphs = [random_paragraph(rng) for _ in range(3)]
        body = f'<w:document {nsdecls("w")}><w:body>{"".join(paragraphs)}</w:body></w:document>'
        opened = open_docx(replace_member(small_docx(), "word/document.xml", body.encode()), settings)
        translations = [random_translation(rng, text) for text in opened.texts]
        rebuilt = part(opened.assemble(translations), "word/document.xml").findall("w:body/w:p", NS)
        originals = etree.fromstring(body).findall("w:body/w:p", NS)
        assert len(opened.texts) == len(rebuilt) == 3, seed
        for translation, paragraph, original in zip(translations, rebuilt, originals):
            assert tokens_of_paragraph(paragraph) == tokens_of_markup(etree.fromstring(translation)), seed
            assert kept_runs(paragraph) == kept_runs(original), seed


def kept_runs(paragraph) -> list[bytes]:
    """The runs that hold a reference or a piece of a field (never merged with others, never rewritten)."""
    kept = {w("footnoteReference"), w("fldChar"), w("instrText")}
    return [etree.tostring(run) for run in paragraph.iter(w("r")) if any(child.tag in kept for child in run)]


# --------------------------------------------------------------------------------------------------
# Hostile files
# --------------------------------------------------------------------------------------------------
def zipped(files: dict[str, bytes | str]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


def replace_member(data: bytes, name: str, content: bytes) -> bytes:
    return zipped({**members(data), name: content})


def patch_central_directory(data: bytes, member: str, offset: int, fmt: str, value: int) -> bytes:
    """Change one field (at `offset` from its signature) of `member`'s central directory entry."""
    patched = bytearray(data)
    at = patched.find(b"PK\x01\x02")
    while at >= 0:
        (name_length,) = struct.unpack_from("<H", patched, at + 28)
        if patched[at + 46:at + 46 + name_length] == member.encode():
            struct.pack_into(fmt, patched, at + offset, value)
            return bytes(patched)
        at = patched.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"no {member} in the central directory")


@functools.cache
def small_docx() -> bytes:
    document = docx.Document()
    document.add_paragraph(HELLO)
    return saved(document)


OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"   # the compound file signature
BILLION_LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE w:document [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">'
                  b']><w:document xmlns:w="' + W.encode() + b'"><w:body><w:p><w:r><w:t>&b;</w:t></w:r></w:p>'
                  b'</w:body></w:document>')
DEEP = (b'<w:document xmlns:w="' + W.encode() + b'"><w:body>' + b"<w:sdt>" * 3000 + b"</w:sdt>" * 3000
        + b"</w:body></w:document>")

HOSTILE = {
    "not a zip": (lambda: b"PK but not really a zip " * 100, {}, "invalid_document", "not a zip"),
    "no word/document.xml": (lambda: zipped({"[Content_Types].xml": "<Types/>"}), {}, "invalid_document",
                             "no word/document.xml"),
    "broken XML": (lambda: replace_member(small_docx(), "word/document.xml", b"<w:document><w:body>"), {},
                   "invalid_document", "not well-formed XML"),
    "Strict Open XML": (lambda: replace_member(small_docx(), "word/document.xml", b'<w:document xmlns:w="http://'
                                               b'purl.oclc.org/ooxml/wordprocessingml/main"/>'), {},
                        "invalid_document", "Strict Open XML"),
    "a DTD with entities": (lambda: replace_member(small_docx(), "word/document.xml", BILLION_LAUGHS), {},
                            "invalid_document", "DTD"),
    "nested too deep": (lambda: replace_member(small_docx(), "word/document.xml", DEEP), {}, "invalid_document",
                        "not well-formed XML"),
    "an encrypted Word file (OLE)": (lambda: OLE + bytes(1000) + "EncryptedPackage".encode("utf-16-le") + bytes(9),
                                     {}, "document_encrypted", "password"),
    "a Word 97-2003 .doc (OLE)": (lambda: OLE + bytes(4000), {}, "invalid_document", "save it from Word as .docx"),
    "an encrypted zip member": (lambda: patch_central_directory(small_docx(), "word/document.xml", 8, "<H", 1), {},
                                "document_encrypted", "password"),
    "too large": (small_docx, {"document_max_bytes": 4096}, "document_too_large", "document_max_bytes"),
    "declared sizes past the unpacked cap": (
        lambda: replace_member(small_docx(), "customXml/item1.xml", bytes(3_000_000)),
        {"document_max_unpacked_bytes": 2_000_000}, "invalid_document", "document_max_unpacked_bytes"),
    "a member larger than it declares": (
        lambda: patch_central_directory(small_docx(), "word/document.xml", 24, "<I", 10), {}, "invalid_document",
        "word/document.xml"),
    "a member named twice": (lambda: _duplicated(), {}, "invalid_document", "twice"),
}


def _duplicated() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("word/document.xml", b"<a/>")
        with pytest.warns(UserWarning):
            archive.writestr("word/document.xml", b"<b/>")
    return out.getvalue()


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_files_get_a_clear_4xx(name, tiny_marian_dir):
    make, overrides, code, words = HOSTILE[name]
    with pytest.raises(ServiceError) as caught:
        open_docx(make(), tiny_settings(tiny_marian_dir, **overrides))
    assert caught.value.code == code and 400 <= caught.value.status < 500
    assert words in caught.value.message, caught.value.message


# --------------------------------------------------------------------------------------------------
# Linear time
# --------------------------------------------------------------------------------------------------
PARAGRAPH = ("<w:p><w:pPr><w:bidi/></w:pPr><w:r><w:rPr><w:rtl/></w:rPr><w:t xml:space='preserve'>اتفاق دفاعي "
             "</w:t></w:r><w:r><w:rPr><w:b/><w:rtl/></w:rPr><w:t>بين</w:t></w:r><w:hyperlink w:anchor='x'><w:r>"
             "<w:t xml:space='preserve'> الطرفين</w:t></w:r></w:hyperlink><w:r><w:footnoteReference w:id='1'/>"
             "</w:r><w:r><w:t>Reuters</w:t></w:r></w:p>")


def docx_with_paragraphs(n: int) -> bytes:
    body = (f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document {nsdecls("w")}><w:body>'
            + PARAGRAPH * n + "<w:sectPr/></w:body></w:document>")
    return replace_member(small_docx(), "word/document.xml", body.encode())


def test_opening_is_linear_in_the_paragraph_count(tiny_marian_dir):
    settings = tiny_settings(tiny_marian_dir)
    assert_linear(lambda data: open_docx(data, settings), docx_with_paragraphs, 200)


def test_rebuilding_is_linear_in_the_paragraph_count(tiny_marian_dir):
    settings = tiny_settings(tiny_marian_dir)

    def make(n: int):
        opened = open_docx(docx_with_paragraphs(n), settings)
        # The pieces themselves as translations: every run, link and reference is written back.
        return opened, [text.replace("اتفاق", "agreement") for text in opened.texts]

    assert_linear(lambda made: made[0].assemble(made[1]), make, 200)


def test_opened_document_rebuilds_the_same_file_twice(tiny_marian_dir):
    opened = open_docx(docx_with_paragraphs(3), tiny_settings(tiny_marian_dir))
    translations = [deepcopy(text).replace("اتفاق", "agreement") for text in opened.texts]
    assert opened.assemble(translations) == opened.assemble(translations)
