"""Direction and language of translated markup (`settings.set_translated_direction`, on by default).

An Arabic article says so in its markup (`<html lang="ar" dir="rtl">`, `<div dir="rtl">`, `<p lang="ar">`);
left as it is on the English translation, a browser or CMS renders the English right-to-left and hyphenates,
spell-checks and reads it aloud as Arabic. After a document's texts are written back, this pass says which
elements now hold English.

The rule (one bottom-up walk, `switch_direction`)
    An element *switches* when both hold:

    1. its subtree holds translated text: a translated run (block text, including the text of its inline
       elements), or a translated `alt`/`title` attribute (of the element or a descendant);
    2. its subtree holds no Arabic left untranslated: no never-translated block (`pre`, `code`, `textarea`,
       `svg`, `math`, `noscript`, `translate="no"`, class `notranslate`, `skip_tags` / DeepL `ignore_tags`,
       ...) standing between blocks whose text is Arabic (at least `min_arabic_ratio` of its letters).
       `script`, `style` and `template` are not rendered and never count; neither do comments.

    A switching element that carries `dir="rtl"` gets `dir="ltr"`; one whose `lang` (and `xml:lang`, in
    HTML or XML) is Arabic (`ar`, `ar-EG`, ...) gets `lang="en"` (`xml:lang="en"`). Nothing is added where
    the attribute is absent, and every other value is left alone: `dir="auto"` (the browser then finds the
    direction from the English text itself), `dir="ltr"`, `lang` of another language.

    So `<html>` and `<body>` of a full document switch when everything readable in them was translated, and so
    does an ancestor such as `<div dir="rtl">`. An element keeps its attributes when nothing in it was
    translated (English or numbers left as they were, an empty element) or when it still holds an Arabic
    block (`<div dir="rtl"><p>...</p><pre>عربي</pre></div>` keeps `rtl`: its Arabic would otherwise be
    declared English); the `<p>` inside it still switches if it carries the attributes itself. Arabic that
    never-translated markup keeps *inside a sentence* (`<p lang="ar">... <span translate="no">اسم</span></p>`)
    does not hold the block back: the sentence is English, and the bidi algorithm places the Arabic word.
    Never-translated elements themselves, and everything inside them, are never modified. A document that
    fails, or is passed through as not Arabic, comes back unmodified (no translated text).

    Gutenberg (WordPress) stores a paragraph's direction twice: `<!-- wp:paragraph {"direction":"rtl"} -->`
    and `<p dir="rtl">`. The editor rebuilds the `<p>` from the comment's attributes and flags the block as
    invalid when the two differ, so when a `<p>` switches, the `"direction":"rtl"` of the block comment right
    before it becomes `"direction":"ltr"` (nothing else in any comment is changed).

    Not changed: CSS that only suits right-to-left text (`class="rtl"`, `style="text-align:right"`,
    Gutenberg's `"textAlign":"right"`) and `<meta>` language declarations: the service cannot know what a
    site's stylesheet means by them, and a CMS that styles by class restyles its own templates.

With the setting off the pass does not run and every attribute comes back as it was. It is the server's
setting (MODEL_SERVER_SET_TRANSLATED_DIRECTION), not a request field: it says what the CMS in front of the
service does with the markup (rewrite the attributes itself, or not), which no DeepL or LibreTranslate
plugin could send per request anyway.

Cost: one walk over the tree (children before parents) with constant work per element, plus one pass over
the text of each outermost never-translated block: linear in the document.
"""

from __future__ import annotations

from typing import Any, Iterable

from lxml import etree

from model_server.html.extract import Attribute, Document, Run
from model_server.text import arabic_ratio

__all__ = ["switch_direction"]

_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_LANG_ATTRIBUTES = ("lang", "xml:lang", _XML_LANG)   # xml:lang: its name in an HTML parse, then in an XML one
_UNRENDERED_TAGS = frozenset({"script", "style", "template"})
_GUTENBERG_RTL = '"direction":"rtl"'
_GUTENBERG_LTR = '"direction":"ltr"'


def switch_direction(document: Document, translated: Iterable[Run | Attribute], min_arabic_ratio: float) -> None:
    """Mark the elements of `document` whose text is now English (`translated`: the runs and attributes
    whose translation was written) as left-to-right English, by the rule above."""
    holders = _holders(translated)
    arabic_left = {block for block in document.skipped_blocks if _left_arabic(block, min_arabic_ratio)}
    with_translated: set[Any] = set()
    with_arabic: set[Any] = set()
    for _, element in etree.iterwalk(document.root, events=("end",)):   # children before their parent
        if not isinstance(element.tag, str):
            continue
        holds_translated = element in holders or element in with_translated
        holds_arabic = element in arabic_left or element in with_arabic
        if holds_translated and not holds_arabic:
            _switch(element)
        parent = element.getparent()
        if parent is not None:
            if holds_translated:
                with_translated.add(parent)
            if holds_arabic:
                with_arabic.add(parent)


def _holders(translated: Iterable[Run | Attribute]) -> set[Any]:
    """The elements that hold translated text themselves: a run's block (its `lead` is the block's text or
    the tail of a child block), the inline elements with text in a run, the element of an attribute."""
    holders: set[Any] = set()
    for unit in translated:
        if isinstance(unit, Attribute):
            holders.add(unit.element)
            continue
        element, where = unit.lead
        holders.add(element if where == "text" else element.getparent())
        for top in unit.spans:
            holders.update(span.element for span in top.walk() if not span.atomic and span.end > span.start)
    holders.discard(None)
    return holders


def _left_arabic(block: Any, min_arabic_ratio: float) -> bool:
    """A never-translated block whose text a reader sees and that is Arabic (as a run would be judged)."""
    tag = block.tag
    if not isinstance(tag, str) or etree.QName(block).localname.lower() in _UNRENDERED_TAGS:
        return False
    text = "".join(block.itertext())
    return bool(text.strip()) and arabic_ratio(text) >= min_arabic_ratio


def _switch(element: Any) -> None:
    direction = element.get("dir")
    if direction is not None and direction.strip().lower() == "rtl":
        element.set("dir", "ltr")
        _switch_gutenberg_comment(element)
    for name in _LANG_ATTRIBUTES:
        value = element.get(name)
        if value is not None and _is_arabic_tag(value):
            element.set(name, "en")


def _is_arabic_tag(value: str) -> bool:
    language = value.strip().lower()
    return language == "ar" or language.startswith("ar-")


def _switch_gutenberg_comment(element: Any) -> None:
    """`<!-- wp:paragraph {"direction":"rtl"} -->` right before a block that switched says ltr too."""
    comment = element.getprevious()
    if comment is None or comment.tag is not etree.Comment:
        return
    text = comment.text or ""
    if text.lstrip().startswith("wp:") and _GUTENBERG_RTL in text:
        comment.text = text.replace(_GUTENBERG_RTL, _GUTENBERG_LTR)
