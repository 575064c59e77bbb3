"""Word files (.docx) through the translator: a .docx in, the same .docx out with its Arabic paragraphs in English.

Entry point: `open_docx(data, settings)` -> `OpenedDocument` (model_server/document_files.py): `texts` holds one
XML piece per Arabic paragraph (format `DocumentFormat.xml`, translated by model_server/html/), `rebuild`
writes translations back and returns the new file's bytes.

Why a direct OOXML pass (lxml over the package's XML parts) rather than python-docx
    python-docx has no API for footnotes or endnotes, reaches hyperlinks and fields only through raw XML, and
    loads and re-serialises the whole package on save. Here only the parts that hold text are parsed
    (word/document.xml, word/header*.xml, word/footer*.xml, word/footnotes.xml, word/endnotes.xml), only
    those with a translated paragraph are written again, and every other zip member (styles, images,
    relationships, settings, custom XML) goes back with its bytes unchanged, in its original order.

What is translated
    Every paragraph (w:p) of those parts whose text (its runs' w:t) is Arabic (settings.min_arabic_ratio):
    body text, table cells, headers, footers, footnotes, endnotes, and text boxes (w:txbxContent). Empty,
    white-space-only and non-Arabic paragraphs are not sent to the model and stay byte for byte as they
    were, as does a paragraph whose translation failed (too long, say). Not translated: deleted text
    (w:del), field instructions (w:instrText), math, and the legacy copy of a text box kept for old Word
    versions (mc:Fallback: Word 2010 and later read the mc:Choice copy, which is translated).

How formatting survives
    A paragraph becomes one small XML piece: `<p>` holding a `<span>` per run (adjacent runs with the same
    w:rPr merged into one), an `<a>` per hyperlink (w:hyperlink) around its runs' spans, and an empty
    `<br/>` (tab, break) or `<wbr/>` (footnote or endnote reference, drawing, field character, symbol, ...)
    for each piece of a run that is not text. The markup translator aligns those elements onto the
    translation (model_server/html/__init__.py says what is guaranteed: a 1-8 word bold run or link is
    anchored on its own translation when it occurs in the paragraph's), and `rebuild` writes each span's
    words into its run, which keeps its w:rPr (bold, italic, style, size, colour), and puts every non-text
    piece back, in order, at its aligned position. Words or spaces the alignment leaves between two spans
    go to the run before them, or to the next one when it takes text and the run before did not end with
    a space in the source (so spaces stay on the side they were); where no run can take them without
    moving a reference, field or link boundary, into a new run copying the nearest text run's w:rPr. Runs
    of a field (w:fldChar, w:instrText) are never merged or rewritten, so no words land inside a field's
    instructions. Bookmarks, comment ranges and w:proofErr stay where they were among the runs.

Right to left -> left to right (settings.set_translated_direction, default true), on translated paragraphs only
    - w:pPr/w:bidi is dropped (written as w:bidi w:val="0" when styles.xml turns bidi on for some style or
      the defaults, so the paragraph does not inherit it);
    - in each run's w:rPr (and the paragraph mark's): w:rtl and w:cs are dropped (w:rtl w:val="0" likewise
      when styles.xml turns rtl on), and w:lang gets w:val="en-US" (its w:bidi and w:eastAsia attributes,
      the complex-script and East Asian languages, are kept);
    - left as they were: w:jc alignment (Word reads it relative to the paragraph direction), the section's
      w:bidi (page layout and column order), a table's w:bidiVisual, fonts (w:rFonts), and styles.xml.
    With the setting false, all of those are kept as they were.
    Always, on translated runs: a complex-script property without its Latin counterpart (w:bCs, w:iCs,
    w:szCs without w:b, w:i, w:sz) is copied to it, so bold Arabic set by Word's complex-script
    formatting stays bold in English.

Hostile files get a 4xx ServiceError, never a 500
    - larger than settings.document_max_bytes: document_too_large;
    - an OLE compound file with an EncryptedPackage stream (how Word stores a password-protected .docx), or
      an encrypted zip member: document_encrypted;
    - invalid_document: another OLE file (a Word 97-2003 .doc renamed), not a zip, no word/document.xml or
      one that is not a w:document (Strict Open XML), duplicate member names, a member that does not unpack
      (bad CRC, unknown compression, more bytes than it declares), XML that does not parse or declares a
      DTD, and zip members whose declared sizes sum past settings.document_max_unpacked_bytes (refused
      before anything is unpacked; every read is capped at its member's declared size).
    XML is parsed without entities, DTDs or network access, and libxml2 refuses elements nested deeper than
    256 levels; every walk here is iterative. Opening and rebuilding are linear in the document
    (tests/test_docx.py doubles the paragraph count).
"""

from __future__ import annotations

import copy
import io
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from lxml import etree

from model_server.document_files import DocumentKind, OpenedDocument
from model_server.documents import DocumentFormat
from model_server.errors import ServiceError
from model_server.settings import Settings
from model_server.text import arabic_ratio

__all__ = ["open_docx"]

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"
_OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_ENCRYPTED_STREAM = "EncryptedPackage".encode("utf-16-le")   # its name in the OLE directory
_MAIN_PART = "word/document.xml"
_TEXT_PARTS = re.compile(r"word/(document|header\d*|footer\d*|footnotes|endnotes)\.xml")
_STYLES_PART = "word/styles.xml"


def _w(name: str) -> str:
    return f"{{{_W}}}{name}"


_P, _R, _T, _PPR, _RPR, _HYPERLINK = (_w(n) for n in ("p", "r", "t", "pPr", "rPr", "hyperlink"))
_FALLBACK = f"{{{_MC}}}Fallback"
_VAL = _w("val")
# Elements between a paragraph and its runs that are walked into (their runs are the paragraph's text).
_WRAPPERS = frozenset(_w(n) for n in ("ins", "moveTo", "smartTag", "sdt", "sdtContent", "fldSimple", "customXml",
                                      "dir", "bdo"))
_FIELD_PIECES = frozenset(_w(n) for n in ("fldChar", "instrText"))
# Non-text run content that separates words (the others sit inside or right after a word).
_SEPARATING = frozenset(_w(n) for n in ("tab", "br", "cr", "ptab"))
_OFF = frozenset({"0", "false", "off"})
# Schema order of w:rPr (CT_ParaRPr's leading ins/del/moveFrom/moveTo included) and w:pPr children: Word refuses
# a file whose property elements are out of order, so elements added here go where the schema puts them.
_RPR_ORDER = {_w(n): i for i, n in enumerate((
    "ins", "del", "moveFrom", "moveTo", "rStyle", "rFonts", "b", "bCs", "i", "iCs", "caps", "smallCaps", "strike",
    "dstrike", "outline", "shadow", "emboss", "imprint", "noProof", "snapToGrid", "vanish", "webHidden", "color",
    "spacing", "w", "kern", "position", "sz", "szCs", "highlight", "u", "effect", "bdr", "shd", "fitText",
    "vertAlign", "rtl", "cs", "em", "lang", "eastAsianLayout", "specVanish", "oMath", "rPrChange"))}
_PPR_ORDER = {_w(n): i for i, n in enumerate((
    "pStyle", "keepNext", "keepLines", "pageBreakBefore", "framePr", "widowControl", "numPr", "suppressLineNumbers",
    "pBdr", "shd", "tabs", "suppressAutoHyphens", "kinsoku", "wordWrap", "overflowPunct", "topLinePunct",
    "autoSpaceDE", "autoSpaceDN", "bidi", "adjustRightInd", "snapToGrid", "spacing", "ind", "contextualSpacing",
    "mirrorIndents", "suppressOverlap", "jc", "textDirection", "textAlignment", "textboxTightWrap", "outlineLvl",
    "divId", "cnfStyle", "rPr", "sectPr", "pPrChange"))}
_COMPLEX_TO_LATIN = ((_w("bCs"), _w("b")), (_w("iCs"), _w("i")), (_w("szCs"), _w("sz")))
_TRANSLATED_LANGUAGE = "en-US"


def open_docx(data: bytes, settings: Settings) -> OpenedDocument:
    """Check a .docx and split it into one XML piece per Arabic paragraph (ServiceError on a hostile file)."""
    members = _unpack(data, settings)
    texts = [paragraph.markup for paragraph in _Package(members, settings).paragraphs]

    def rebuild(translations: Sequence[str | None]) -> bytes:
        # Opening is deterministic: parse again rather than mutate trees a second rebuild would share.
        return _Package(members, settings).rebuild(translations)

    return OpenedDocument(kind=DocumentKind.docx, texts=texts, format=DocumentFormat.xml, rebuild=rebuild)


# --------------------------------------------------------------------------------------------------
# The package: checked unpacking, the text parts, writing it back
# --------------------------------------------------------------------------------------------------
def _invalid(message: str) -> ServiceError:
    return ServiceError("invalid_document", f"not a readable .docx: {message}")


def _unpack(data: bytes, settings: Settings) -> list[tuple[zipfile.ZipInfo, bytes]]:
    """Every zip member, in order, after the size, encryption and well-formedness checks."""
    if len(data) > settings.document_max_bytes:
        raise ServiceError("document_too_large", f"the .docx is {len(data)} bytes; the most this service takes is "
                           f"{settings.document_max_bytes} (document_max_bytes)")
    if data.startswith(_OLE_SIGNATURE):
        # Word wraps a password-protected .docx in an OLE compound file with an EncryptedPackage stream; any
        # other OLE file here is most likely a Word 97-2003 .doc renamed.
        if _ENCRYPTED_STREAM in data:
            raise ServiceError("document_encrypted", "the file is an encrypted (password-protected) Word "
                               "document: open it in Word, remove the password and save it again")
        raise _invalid("the file is an OLE compound file (a Word 97-2003 .doc?), not a zip package: save it from "
                       "Word as .docx")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, EOFError, OSError):
        raise _invalid("the file is not a zip package (a .docx is one): save it from Word as .docx") from None
    with archive:
        infos = archive.infolist()
        declared = sum(info.file_size for info in infos)
        if declared > settings.document_max_unpacked_bytes:
            raise _invalid(f"its members unpack to {declared} bytes; the most this service unpacks is "
                           f"{settings.document_max_unpacked_bytes} (document_max_unpacked_bytes)")
        names = [info.filename for info in infos]
        if len(set(names)) != len(names):
            raise _invalid("the zip names a member twice")
        if _MAIN_PART not in names:
            raise _invalid(f"it has no {_MAIN_PART}")
        if any(info.flag_bits & 0x1 for info in infos):
            raise ServiceError("document_encrypted", "the .docx's zip members are encrypted: save it without a "
                               "password first")
        return [(info, _read_member(archive, info)) for info in infos]


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with archive.open(info) as member:
            content = member.read(info.file_size + 1)   # never more than it declared (plus one, to notice)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError, OSError) as exc:
        raise _invalid(f"member {info.filename} cannot be unpacked ({exc})") from None
    if len(content) != info.file_size:
        raise _invalid(f"member {info.filename} unpacks to other than the {info.file_size} bytes it declares")
    return content


def _parse_part(name: str, content: bytes) -> Any:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as exc:
        raise _invalid(f"{name} is not well-formed XML ({exc})") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise _invalid(f"{name} declares a DTD, which Word files never do")
    return root


def _is_on(element: Any) -> bool:
    return (element.get(_VAL) or "true").strip().lower() not in _OFF


@dataclass(eq=False)
class _Part:
    info: zipfile.ZipInfo
    root: Any
    paragraphs: list["_Paragraph"]


class _Package:
    """The parsed text parts of one .docx and its Arabic paragraphs, in document order."""

    def __init__(self, members: list[tuple[zipfile.ZipInfo, bytes]], settings: Settings) -> None:
        self.members = members
        self.settings = settings
        self.parts: list[_Part] = []
        self.paragraphs: list[_Paragraph] = []
        styles = next((content for info, content in members if info.filename == _STYLES_PART), None)
        self.styles_bidi, self.styles_rtl = _direction_in_styles(styles)
        for info, content in members:
            if not _TEXT_PARTS.fullmatch(info.filename):
                continue
            root = _parse_part(info.filename, content)
            if info.filename == _MAIN_PART and root.tag != _w("document"):
                raise _invalid(f"{_MAIN_PART} is not a WordprocessingML document (its root is <{root.tag}>; a "
                               "Strict Open XML file is not supported: save it as a Word Document, .docx)")
            found = [paragraph for element in _paragraph_elements(root)
                     if (paragraph := _Paragraph.read(element, settings.min_arabic_ratio)) is not None]
            self.parts.append(_Part(info, root, found))
            self.paragraphs += found

    def rebuild(self, translations: Sequence[str | None]) -> bytes:
        if len(translations) != len(self.paragraphs):
            raise ValueError(f"{len(translations)} translations for {len(self.paragraphs)} paragraphs")
        changed: dict[str, bytes] = {}
        at = 0
        for part in self.parts:
            wrote = False
            for paragraph in part.paragraphs:
                translation = translations[at]
                at += 1
                if translation is not None and paragraph.write(translation):
                    wrote = True
                    if self.settings.set_translated_direction:
                        paragraph.switch_direction(self.styles_bidi, self.styles_rtl)
            if wrote:
                docinfo = part.root.getroottree().docinfo
                changed[part.info.filename] = etree.tostring(part.root, xml_declaration=True, encoding="UTF-8",
                                                             standalone=docinfo.standalone)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for info, content in self.members:
                archive.writestr(copy.copy(info), changed.get(info.filename, content))
        return out.getvalue()


def _direction_in_styles(styles: bytes | None) -> tuple[bool, bool]:
    """Whether styles.xml turns paragraph bidi / run rtl on anywhere (defaults or a style)."""
    if styles is None:
        return False, False
    root = _parse_part(_STYLES_PART, styles)
    return (any(_is_on(e) for e in root.iter(_w("bidi"))), any(_is_on(e) for e in root.iter(_w("rtl"))))


def _paragraph_elements(root: Any) -> list[Any]:
    """Every w:p in document order (text boxes' nested paragraphs too), except inside mc:Fallback."""
    found: list[Any] = []
    in_fallback = 0
    for event, element in etree.iterwalk(root, events=("start", "end")):
        if element.tag == _FALLBACK:
            in_fallback += 1 if event == "start" else -1
        elif event == "start" and element.tag == _P and not in_fallback:
            found.append(element)
    return found


# --------------------------------------------------------------------------------------------------
# One paragraph: its runs as markup, and the translated markup written back into its runs
# --------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Group:
    """Adjacent runs with the same w:rPr (or one run): one <span> of the markup."""

    runs: list[Any]
    has_text: bool = False
    atomics: list[Any] = field(default_factory=list)   # non-text run content, in order (a <br/> or <wbr/> each)
    span: Any = None   # its <span> while the markup is built
    space_after: bool = False   # its source text ended with white space


@dataclass(eq=False)
class _Link:
    element: Any


def _rpr_key(run: Any) -> bytes:
    rpr = run.find(_RPR)
    return b"" if rpr is None else etree.tostring(rpr)


def _has_field(run: Any) -> bool:
    return any(child.tag in _FIELD_PIECES for child in run)


def _follows(run: Any, previous: Any) -> bool:
    """`run` comes right after `previous` among its siblings (only proofing marks between)."""
    sibling = run.getprevious()
    while sibling is not None and sibling.tag == _w("proofErr"):
        sibling = sibling.getprevious()
    return sibling is previous


def _walk_runs(paragraph: Any) -> list[Any]:
    """The paragraph's own runs and hyperlink boundaries, in order: a run element, or ("start"|"end", link).
    Iterative; nested paragraphs (text boxes) are inside runs and not walked into; a hyperlink inside a
    hyperlink counts as a plain wrapper."""
    events: list[Any] = []
    stack = [(iter(paragraph), None)]
    in_link = False
    while stack:
        children, link = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            if link is not None:
                events.append(("end", link))
                in_link = False
            continue
        if child.tag == _R:
            events.append(child)
        elif child.tag == _HYPERLINK and not in_link:
            events.append(("start", child))
            in_link = True
            stack.append((iter(child), child))
        elif child.tag in _WRAPPERS or child.tag == _HYPERLINK:
            stack.append((iter(child), None))
    return events


@dataclass(eq=False)
class _Paragraph:
    element: Any
    slots: list[_Group | _Link]   # one per <span> and <a> of the markup, in document order
    tags: list[str]               # the markup's tags, <p> first: a translation must have exactly these
    markup: str

    @classmethod
    def read(cls, element: Any, min_ratio: float) -> "_Paragraph | None":
        """The paragraph as markup, or None when it has no Arabic text to translate."""
        root = etree.Element("p")
        slots: list[_Group | _Link] = []
        container, group, texts = root, None, []
        for event in _walk_runs(element):
            if isinstance(event, tuple):
                kind, link = event
                group = None
                if kind == "start":
                    container = etree.SubElement(root, "a")
                    slots.append(_Link(link))
                else:
                    container = root
                continue
            run = event
            if (group is not None and not _has_field(run) and not _has_field(group.runs[-1])
                    and _follows(run, group.runs[-1]) and _rpr_key(run) == _rpr_key(group.runs[-1])):
                group.runs.append(run)
            else:
                group = _Group([run], span=etree.SubElement(container, "span"))
                slots.append(group)
            texts.append(_add_run(group, run))
        text = "".join(texts)
        if not text.strip() or arabic_ratio(text) < min_ratio:
            return None
        for group in (slot for slot in slots if isinstance(slot, _Group)):
            span, group.span = group.span, None
            group.space_after = _ends_with_space(span)
            if group.has_text and len(span) == 0 and not (span.text or "").strip():
                span.tail, span.text = span.text, None   # white space only: a point between words, not a word
        return cls(element, slots, [e.tag for e in root.iter()], etree.tostring(root, encoding="unicode"))

    def write(self, translation: str) -> bool:
        """Put a translated markup piece into the paragraph's runs; False (paragraph untouched) when it does
        not have the markup's elements."""
        try:
            root = etree.fromstring(translation.encode("utf-8"),
                                    etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
        except etree.XMLSyntaxError:
            return False
        elements = list(root.iter())
        if [e.tag for e in elements] != self.tags:
            return False
        slot_of = dict(zip((e for e in elements if e.tag in ("span", "a")), self.slots))
        _Writer(self, slot_of).container(root, None)
        for run in self.runs():
            rpr = run.find(_RPR)
            if rpr is not None:
                _latin_from_complex(rpr)
        return True

    def runs(self) -> list[Any]:
        """Every run element of the paragraph that the markup stood for (after a write: the ones left)."""
        return [run for slot in self.slots if isinstance(slot, _Group) for run in slot.runs]

    def switch_direction(self, styles_bidi: bool, styles_rtl: bool) -> None:
        ppr = self.element.find(_PPR)
        if ppr is not None or styles_bidi:
            if ppr is None:
                ppr = etree.Element(_PPR)
                self.element.insert(0, ppr)
            _turn_off(ppr, _w("bidi"), keep_off=styles_bidi, order=_PPR_ORDER)
            mark = ppr.find(_RPR)
            if mark is not None:
                _english_run_properties(mark, styles_rtl)
        for run in self.runs():
            _english_run_properties(_run_properties(run), styles_rtl)


def _ends_with_space(span: Any) -> bool:
    last = (span[-1].tail if len(span) else span.text) or ""
    return last[-1:].isspace()


def _add_run(group: _Group, run: Any) -> str:
    """Append one run's content to its group's span; the run's text."""
    span = group.span
    texts: list[str] = []
    holder: tuple[Any, str] = (span[-1], "tail") if len(span) else (span, "text")
    for child in run:
        if child.tag == _RPR:
            continue
        if child.tag == _T:
            piece = child.text or ""
            texts.append(piece)
            group.has_text = group.has_text or bool(piece)
            element, where = holder
            setattr(element, where, (getattr(element, where) or "") + piece or None)
        elif isinstance(child.tag, str):
            group.atomics.append(child)
            holder = (etree.SubElement(span, "br" if child.tag in _SEPARATING else "wbr"), "tail")
    return "".join(texts)


class _Writer:
    """One walk over a translated piece: each text group's new content, and the words that fall between
    groups (`pending`) put into the next group, or into a new run where none can take them."""

    def __init__(self, paragraph: _Paragraph, slot_of: dict[Any, _Group | _Link]) -> None:
        self.paragraph = paragraph
        self.slot_of = slot_of
        self.pending: list[str] = []
        self.text_groups = [slot for slot in paragraph.slots if isinstance(slot, _Group) and slot.has_text]
        self.next_text_group = 0   # index into text_groups of the first one not yet written

    def container(self, markup: Any, link: _Link | None) -> None:
        """<p> or one <a>: its children in order (a link's runs are one level down; links do not nest)."""
        self.pending.append(markup.text or "")
        last_element = None
        for child in markup:
            slot = self.slot_of[child]
            if isinstance(slot, _Link):
                self.flush(before=slot.element)
                self.container(child, slot)
                self.flush(inside_end_of=slot.element)   # words after its last run are still the link's
                self.pending.append(child.tail or "")
                last_element = slot.element
            elif slot.has_text:
                self.write_group(slot, child, self.gives_tail(slot, child))
                last_element = slot.runs[0]
            else:   # a run without text (a reference, a field character): kept as it was
                self.flush(before=slot.runs[0])
                self.pending += [child.text or ""] + [void.tail or "" for void in child] + [child.tail or ""]
                last_element = slot.runs[-1]
        if link is None:
            if last_element is not None:
                self.flush(after=last_element)
            else:
                self.flush(inside_end_of=self.paragraph.element)

    def gives_tail(self, group: _Group, span: Any) -> bool:
        """The white space (or words) after a span go to the next run when that one takes text and this one
        did not end with white space in the source: "A" + " B" stays "A" + " B", "A " + "B" stays "A " + "B"."""
        following = span.getnext()
        return (not group.space_after and following is not None
                and getattr(self.slot_of[following], "has_text", False))

    def write_group(self, group: _Group, span: Any, gives_tail: bool) -> None:
        prefix = "".join(self.pending)
        self.pending = []
        content: list[Any] = [prefix + (span.text or "")]
        for original, void in zip(group.atomics, span):
            content += [original, void.tail or ""]
        if gives_tail:
            self.pending.append(span.tail or "")
        else:
            content.append(span.tail or "")
        _rewrite_run(group.runs[0], content)
        for extra in group.runs[1:]:
            extra.getparent().remove(extra)
        del group.runs[1:]
        self.next_text_group += 1

    def flush(self, *, before: Any = None, after: Any = None, inside_end_of: Any = None) -> None:
        """The pending words as a new run at this point (copying the nearest text run's w:rPr)."""
        text = "".join(self.pending)
        self.pending = []
        if not text:
            return
        groups = self.text_groups
        model = groups[min(self.next_text_group, len(groups) - 1)].runs[0]
        run = etree.Element(_R)
        rpr = model.find(_RPR)
        if rpr is not None:
            run.append(copy.deepcopy(rpr))
        _append_text(run, text)
        if before is not None:
            before.addprevious(run)
        elif after is not None:
            after.addnext(run)
        else:
            inside_end_of.append(run)
        self.paragraph.slots.append(_Group([run], has_text=True))   # its direction is switched with the rest


def _rewrite_run(run: Any, content: list[Any]) -> None:
    """Replace a run's content (all but w:rPr) with `content`: strings (merged into w:t) and elements."""
    for child in list(run):
        if child.tag != _RPR:
            run.remove(child)
    text = ""
    for piece in content:
        if isinstance(piece, str):
            text += piece
            continue
        _append_text(run, text)
        text = ""
        run.append(piece)
    _append_text(run, text)


def _append_text(run: Any, text: str) -> None:
    if text:
        element = etree.SubElement(run, _T)
        element.text = text
        element.set(_XML_SPACE, "preserve")


# --------------------------------------------------------------------------------------------------
# Properties: direction and language, in schema order
# --------------------------------------------------------------------------------------------------
def _run_properties(run: Any) -> Any:
    rpr = run.find(_RPR)
    if rpr is None:
        rpr = etree.Element(_RPR)
        run.insert(0, rpr)
    return rpr


def _insert_ordered(parent: Any, element: Any, order: dict[str, int]) -> None:
    """Insert `element` before the first child that the schema puts after it."""
    rank = order[element.tag]
    for index, child in enumerate(parent):
        if order.get(child.tag, -1) > rank:
            parent.insert(index, element)
            return
    parent.append(element)


def _turn_off(parent: Any, tag: str, *, keep_off: bool, order: dict[str, int]) -> None:
    """Drop the on/off property `tag`; with `keep_off`, say val="0" instead (overriding what styles turn on)."""
    for element in parent.findall(tag):
        parent.remove(element)
    if keep_off:
        element = etree.Element(tag)
        element.set(_VAL, "0")
        _insert_ordered(parent, element, order)


def _english_run_properties(rpr: Any, styles_rtl: bool) -> None:
    _turn_off(rpr, _w("rtl"), keep_off=styles_rtl, order=_RPR_ORDER)
    _turn_off(rpr, _w("cs"), keep_off=False, order=_RPR_ORDER)
    lang = rpr.find(_w("lang"))
    if lang is None:
        lang = etree.Element(_w("lang"))
        _insert_ordered(rpr, lang, _RPR_ORDER)
    lang.set(_VAL, _TRANSLATED_LANGUAGE)


def _latin_from_complex(rpr: Any) -> None:
    for complex_tag, latin_tag in _COMPLEX_TO_LATIN:
        source = rpr.find(complex_tag)
        if source is not None and rpr.find(latin_tag) is None:
            latin = copy.deepcopy(source)
            latin.tag = latin_tag
            _insert_ordered(rpr, latin, _RPR_ORDER)
