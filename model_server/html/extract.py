"""Extraction: markup -> a parsed tree, the runs of text to translate (with their inline spans) and the
translatable attributes; and, once translated, writing the translations back into the tree.

Parsing is lxml (libxml2): `lxml.html` for HTML (documents keep their doctype; fragments are parsed in
a container and written back without it), `lxml.etree` for XML with entity resolution, DTD loading and
network access off. libxml2 repairs broken HTML the way browsers do (e.g. a stray `</p>`), so invalid
input comes back repaired rather than byte-identical. What libxml2 does NOT repair but drops is refused:
elements nested deeper than it keeps (256 levels, counting `html` and `body`) stop the parse, and
everything after that point would be lost, so that is a 400 `invalid_markup` naming the depth.

Every step is one pass over the input or the tree: whether the markup is a whole document is a scan
over the comments before it (`looks_like_document`), and the walks over the tree are iterative
(model_server/html/nesting.py), so no depth can raise RecursionError.
"""

from __future__ import annotations

import html as html_escape
import re
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any

from lxml import etree
from lxml import html as lxml_html

from model_server.errors import ServiceError
from model_server.html.align import InlineSpan
from model_server.html.nesting import Nested, run_nested
# The invisible characters normalize_text removes: removing the same ones here keeps the offsets of a run's
# text valid for the sentences the pipeline returns (normalize_text(run.text) == run.text).
from model_server.text.normalize import _REMOVED_RE, normalize_text

__all__ = ["INLINE_TAGS", "SKIP_TAGS", "Document", "Run", "looks_like_document", "parse_markup"]

# Part of the sentence around them; their text is translated with it.
INLINE_TAGS = frozenset({
    "a", "abbr", "acronym", "b", "bdi", "bdo", "big", "cite", "data", "del", "dfn", "em", "font", "i", "ins",
    "label", "mark", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "time", "tt", "u", "var"})
# Inline and without translatable content: kept in place, standing between words.
VOID_INLINE_TAGS = frozenset({"br", "img", "wbr", "input"})
# Never translated, nor anything inside them.
SKIP_TAGS = frozenset({"script", "style", "code", "pre", "kbd", "samp", "textarea", "template", "noscript",
                       "svg", "math"})
# Of those, the ones that sit inside a sentence (an atom in it) rather than between blocks.
_INLINE_SKIP_TAGS = frozenset({"code", "kbd", "samp", "script", "style", "svg", "math", "noscript"})
_INLINE_ANY = INLINE_TAGS | VOID_INLINE_TAGS | _INLINE_SKIP_TAGS
TRANSLATED_ATTRIBUTES = ("alt", "title")

_SPACES_RE = re.compile(r"\s+")
_SPACE_AT_RE = re.compile(r"\s*")
_XML_WRAPPER = "model-server-fragment"
_PARSER_DEPTH = 256   # libxml2's nesting limit without XML_PARSE_HUGE (read from its message when it names one)
_NUMBER_RE = re.compile(r"\d+")


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------
def looks_like_document(markup: str) -> bool:
    """A whole HTML document: after white space, an optional `<?xml ...>` and any comments, a doctype
    or an `<html>` tag. One scan (str.find per comment), linear in the markup."""
    at = _SPACE_AT_RE.match(markup).end()
    if markup[at:at + 5].lower() == "<?xml":
        close = markup.find(">", at)
        if close < 0:
            return False
        at = _SPACE_AT_RE.match(markup, close + 1).end()
    while markup.startswith("<!--", at):
        close = markup.find("-->", at + 4)
        if close < 0:
            return False
        at = _SPACE_AT_RE.match(markup, close + 3).end()
    head = markup[at:at + 9].lower()
    return head == "<!doctype" or (head.startswith("<html") and len(head) > 5 and (head[5].isspace() or head[5] == ">"))


_parsers = threading.local()   # lxml parsers are not to be shared between threads (error logs among others)


def _html_parser(*, huge: bool = False) -> Any:
    name = "huge" if huge else "default"
    parser = getattr(_parsers, name, None)
    if parser is None:
        parser = lxml_html.HTMLParser(huge_tree=huge)
        setattr(_parsers, name, parser)
    return parser


def _parse_html(markup: str, *, is_document: bool, huge: bool = False) -> tuple[Any, list[Any]]:
    """(root, the parser's fatal errors). A fragment's root is the container it was parsed in."""
    parser = _html_parser(huge=huge)
    if is_document:
        root = lxml_html.document_fromstring(markup, parser=parser)
    else:
        root = lxml_html.fragment_fromstring(markup, create_parent="div", parser=parser)
    return root, [e for e in parser.error_log if e.level == etree.ErrorLevels.FATAL]


def _parse_checked_html(markup: str) -> tuple[Any, bool]:
    """(root, is_document); ServiceError invalid_markup when libxml2 gave up part way (it then keeps only
    what came before: refusing is better than answering 200 with text silently missing)."""
    is_document = looks_like_document(markup)
    root, fatal = _parse_html(markup, is_document=is_document)
    if not fatal:
        return root, is_document
    message = fatal[0].message.strip()
    if "depth" not in message.lower():
        raise ServiceError("invalid_markup", f"the HTML cannot be parsed: {message}")
    limit = int(next(iter(_NUMBER_RE.findall(message)), _PARSER_DEPTH))
    # A fragment is parsed inside html and body, which count for libxml2 but not for the client.
    if not is_document:
        limit -= 2
    # How deep it really is: the same markup parsed with the larger limit (XML_PARSE_HUGE, 2048 levels).
    deep_root, still_fatal = _parse_html(markup, is_document=is_document, huge=True)
    depth = nesting_depth(deep_root) - (0 if is_document else 1)   # not the fragment's container
    raise ServiceError("invalid_markup", f"the HTML nests elements {'at least ' if still_fatal else ''}{depth} "
                       f"levels deep; the parser keeps at most {limit} levels"
                       f"{'' if is_document else ' in a fragment'}, and would drop everything after that point")


def nesting_depth(root: Any) -> int:
    """Levels of elements from `root` (1) down to its deepest descendant; one walk, no recursion."""
    depth = deepest = 0
    for event, _ in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        deepest = max(deepest, depth)
    return deepest


def _parse_xml(markup: str) -> Any:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    data = markup.encode("utf-8")
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError:
        if markup.lstrip().startswith("<?xml"):
            raise
    # Not one element: a fragment (text and several elements), as DeepL clients send it.
    return etree.fromstring(f"<{_XML_WRAPPER}>".encode() + data + f"</{_XML_WRAPPER}>".encode(), parser)


def _parse_error(exc: Exception, *, xml: bool) -> ServiceError:
    message = str(exc)
    if xml and "excessive depth" in message.lower():
        limit = int(next(iter(_NUMBER_RE.findall(message)), _PARSER_DEPTH))
        return ServiceError("invalid_markup", f"the XML nests elements more than {limit} levels deep; the parser "
                            f"keeps at most {limit} levels")
    return ServiceError("invalid_markup", f"the {'XML' if xml else 'HTML'} cannot be parsed: {message}")


def parse_markup(markup: str, *, xml: bool = False, skip_tags: frozenset[str] = frozenset()) -> "Document":
    """Parse HTML (a document or a fragment) or XML, and find what to translate. ServiceError invalid_markup."""
    try:
        root, is_document = (_parse_xml(markup), True) if xml else _parse_checked_html(markup)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError) as exc:
        raise _parse_error(exc, xml=xml) from None
    extractor = _Extractor(root, skip_tags)
    if not extractor.skipped(root):
        run_nested(extractor.container(root))
    return Document(root, is_document, xml, extractor.runs, extractor.attributes, extractor.skipped_blocks)


# --------------------------------------------------------------------------------------------------
# Runs and attributes, and writing their translations back
# --------------------------------------------------------------------------------------------------
def _tag(element: Any) -> str | None:
    """Lower-case local tag name; None for comments, processing instructions and entities."""
    if not isinstance(element.tag, str):
        return None
    return etree.QName(element).localname.lower()


def _clean_piece(raw: str | None) -> str:
    """A piece of HTML text as the pipeline will see it: invisible characters removed, NFC, and every run of
    white space (newlines included: HTML does not break lines on them) one space."""
    if not raw:
        return ""
    return _SPACES_RE.sub(" ", unicodedata.normalize("NFC", _REMOVED_RE.sub("", raw)))


@dataclass(eq=False)
class Run:
    """Inline content between block boundaries: the text before the first inline element lives in
    `lead` (an element and "text" or "tail"); each top-level span's element holds the text after it."""

    lead: tuple[Any, str]
    text: str
    spans: list[InlineSpan]
    lead_space: str      # white space the run started with in the source (kept around the translation)
    trail_space: str

    def write(self, translation: str) -> None:
        """Put `translation` (its spans aligned: model_server/html/align.py) into the tree."""
        _set(self.lead, self.lead_space + translation[:self.spans[0].target[0]] if self.spans
             else self.lead_space + translation + self.trail_space)
        for number, span in enumerate(self.spans):
            run_nested(_write_span(span, translation))
            last = number == len(self.spans) - 1
            upto = len(translation) if last else self.spans[number + 1].target[0]
            span.element.tail = _tail(span, translation, upto) + (self.trail_space if last else "") or None


def _write_span(span: InlineSpan, translation: str) -> Nested:
    if span.atomic:
        return
    start, end = span.target
    if not span.children:
        span.element.text = translation[start:end] or None
        return
    span.element.text = translation[start:span.children[0].target[0]] or None
    for number, child in enumerate(span.children):
        yield _write_span(child, translation)
        upto = end if number == len(span.children) - 1 else span.children[number + 1].target[0]
        child.element.tail = _tail(child, translation, upto) or None


def _tail(span: InlineSpan, translation: str, upto: int) -> str:
    """The translation between a span and the next one; an element that stood between two spaces in the
    source (`word <code>x</code> word`) gets its second space back."""
    tail = translation[span.target[1]:upto]
    start, end = span.target
    if (start == end and span.after_space and span.space_after and tail and not tail[0].isspace()
            and start > 0 and translation[start - 1].isspace()):
        return " " + tail
    return tail


def _set(slot: tuple[Any, str], value: str) -> None:
    element, where = slot
    setattr(element, where, value or None)


@dataclass(eq=False)
class Attribute:
    element: Any
    name: str
    text: str

    def write(self, translation: str) -> None:
        self.element.set(self.name, translation)


class _RunBuilder:
    def __init__(self, lead: tuple[Any, str], raw: str | None) -> None:
        self.lead = lead
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[InlineSpan] = []
        self.lead_space = _leading_space(raw)
        self.last_raw = raw
        self.add(raw)

    def add(self, raw: str | None) -> None:
        piece = _clean_piece(raw)
        if piece.startswith(" ") and (self.length == 0 or self.parts[-1].endswith(" ")):
            piece = piece[1:]
        if piece:
            self.parts.append(piece)
            self.length += len(piece)

    def add_tail(self, raw: str | None) -> None:
        self.add(raw)
        self.last_raw = raw

    def ends_with_space(self) -> bool:
        return bool(self.parts) and self.parts[-1].endswith(" ")

    def separator(self) -> None:
        self.add(" ")

    def build(self) -> Run | None:
        text = "".join(self.parts)
        stripped = text.rstrip()
        if not stripped:
            return None
        for span in self.spans:
            for node in span.walk():
                node.start, node.end = min(node.start, len(stripped)), min(node.end, len(stripped))
        return Run(lead=self.lead, text=stripped, spans=self.spans, lead_space=self.lead_space,
                   trail_space=_trailing_space(self.last_raw))


def _leading_space(raw: str | None) -> str:
    return raw[:len(raw) - len(raw.lstrip())] if raw else ""


def _trailing_space(raw: str | None) -> str:
    return raw[len(raw.rstrip()):] if raw else ""


def _with_block_descendants(root: Any) -> set[Any]:
    """The elements that have a descendant that is not inline (one bottom-up walk: each element marks
    its parent), so telling an inline element from a block one never walks its subtree again."""
    marked: set[Any] = set()
    for _, element in etree.iterwalk(root, events=("end",)):
        parent = element.getparent()
        if parent is None or parent in marked:
            continue
        tag = _tag(element)
        if element in marked or (tag is not None and tag not in _INLINE_ANY):
            marked.add(parent)
    return marked


class _Extractor:
    """Walks the tree once (nested calls through run_nested) and collects runs and attributes in
    document order."""

    def __init__(self, root: Any, skip_tags: frozenset[str]) -> None:
        self.skip_tags = SKIP_TAGS | {t.lower() for t in skip_tags}
        self.runs: list[Run] = []
        self.attributes: list[Attribute] = []
        self.skipped_blocks: list[Any] = []   # never-translated elements between blocks (not inside a sentence)
        self.with_blocks = _with_block_descendants(root)

    def skipped(self, element: Any) -> bool:
        tag = _tag(element)
        if tag is None or tag in self.skip_tags:
            return True
        if (element.get("translate") or "").strip().lower() == "no":
            return True
        return "notranslate" in (element.get("class") or "").split()

    def inline(self, element: Any) -> bool:
        tag = _tag(element)
        if tag is None or tag in VOID_INLINE_TAGS or tag in _INLINE_SKIP_TAGS:
            return True
        return tag in INLINE_TAGS and element not in self.with_blocks

    def container(self, element: Any) -> Nested:
        """A block (or the document root): its runs of inline content, and its nested blocks."""
        self.attributes_of(element)
        builder = _RunBuilder((element, "text"), element.text)
        for child in element:
            if self.inline(child):
                yield self.inline_span(child, builder, builder.spans)
                builder.add_tail(child.tail)
                continue
            self.finish(builder)
            if self.skipped(child):
                self.skipped_blocks.append(child)
            else:
                yield self.container(child)
            builder = _RunBuilder((child, "tail"), child.tail)
        self.finish(builder)

    def finish(self, builder: _RunBuilder) -> None:
        run = builder.build()
        if run is not None:
            self.runs.append(run)

    def inline_span(self, element: Any, builder: _RunBuilder, siblings: list[InlineSpan]) -> Nested:
        tag = _tag(element)
        atomic = self.skipped(element) or tag in VOID_INLINE_TAGS
        span = InlineSpan(start=builder.length, end=builder.length, element=element, atomic=atomic,
                          after_space=builder.ends_with_space())
        siblings.append(span)
        if atomic:
            span.space_after = bool(element.tail) and element.tail[0].isspace()
            if tag in VOID_INLINE_TAGS:
                self.attributes_of(element)
            if tag != "wbr" and tag is not None:
                builder.separator()   # "word<br>word" and "word<code>x</code>word" stay two words
            return
        self.attributes_of(element)
        builder.add(element.text)
        for child in element:
            yield self.inline_span(child, builder, span.children)
            builder.add(child.tail)
        span.end = builder.length

    def attributes_of(self, element: Any) -> None:
        for name in TRANSLATED_ATTRIBUTES:
            value = element.get(name)
            if value and value.strip():
                self.attributes.append(Attribute(element, name, normalize_text(value)))


@dataclass(eq=False)
class Document:
    """A parsed document and what to translate in it, in document order."""

    root: Any
    is_document: bool
    xml: bool
    runs: list[Run]
    attributes: list[Attribute]
    skipped_blocks: list[Any]   # never-translated blocks, outermost only (their subtrees are not walked)

    def serialize(self) -> str:
        if self.xml:
            if self.root.tag == _XML_WRAPPER:
                return (html_escape.escape(self.root.text or "", quote=False)
                        + "".join(etree.tostring(child, encoding="unicode", with_tail=True) for child in self.root))
            return etree.tostring(self.root.getroottree(), encoding="unicode")
        if self.is_document:
            return etree.tostring(self.root.getroottree(), encoding="unicode", method="html")
        return (html_escape.escape(self.root.text or "", quote=False)
                + "".join(lxml_html.tostring(child, encoding="unicode", with_tail=True) for child in self.root))
