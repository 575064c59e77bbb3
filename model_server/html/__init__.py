"""HTML-aware translation (`format: "html"`; DeepL `tag_handling=html|xml`; LibreTranslate `format=html`).

What is translated
    The text of every element that is not *inline* (p, h1-h6, li, blockquote, figcaption, td, th, caption,
    dt, dd, and generic containers such as div, section or an HTML fragment's top level), and the `alt`
    and `title` attributes of every element. A block's text runs from its start to its end, or up to a
    nested block (`<li>text<ul>...</ul>tail</li>` is two runs). Inline elements (a, b, em, strong, i, span,
    sub, sup, small, mark, q, time, ... see `INLINE_TAGS`) are part of the sentence they sit in.

What is never translated
    `script`, `style`, `code`, `pre`, `kbd`, `samp`, `textarea`, `template`, `noscript`, `svg`, `math`,
    comments, any element with `translate="no"` or class `notranslate`, the tags named in `skip_tags`, and
    everything inside them (attributes included). A run or attribute whose letters are not (mostly)
    Arabic (min_arabic_ratio) is left as it is: English quotes, numbers, dates in a table.

How inline markup survives (and what is guaranteed)
    A block is translated as plain text (the model never sees tags), then its inline elements are put
    back by aligning source positions to translation positions:

    1. each inline element's source span is mapped through a monotone piecewise-linear map whose knots
       are the block's sentence boundaries (a link in the third sentence lands in the third sentence's
       translation), then snapped to word boundaries;
    2. an inline element of one to eight words is also translated on its own, in the same pipeline call;
       when that translation occurs in the block's translation (case-insensitive, whole words, within
       the parent's span, after the previous sibling), the occurrence nearest the mapped position is
       used instead (names and links usually translate identically: `<a>خليفة حفتر</a>` ->
       `<a>Khalifa Haftar</a>`). Only the 16 occurrences of its first word nearest that position are
       tried, so a word repeated thousands of times cannot make the search quadratic.

    Guaranteed: every tag, attribute and link is kept, once, in document order and with its nesting;
    the output is well-formed; the block's text with markup stripped is exactly the plain translation
    of the block's text; an inline element with text gets at least one word. NOT guaranteed: that the
    words inside an inline element are the translation of the words it wrapped, when step 2 finds no
    anchor (proportional position is an approximation; Arabic and English word orders differ).
    Elements that are never translated (`code`, `translate="no"`, `br`, `img`, comments) inside a
    sentence are left out of the text the model sees and are put back at the mapped position.

Direction and language (settings.set_translated_direction, on by default)
    An element carrying `dir="rtl"` or an Arabic `lang`/`xml:lang` gets `dir="ltr"` / `lang="en"` when its
    subtree holds translated text and no Arabic block left untranslated (`pre`, `translate="no"`,
    `skip_tags`, ... with Arabic text); Gutenberg's `{"direction":"rtl"}` follows its `<p>`; RTL-only CSS
    classes and styles are left alone. The exact rule: direction.py. Off: every attribute as it was.

Parsing is lxml (libxml2); markup nested deeper than libxml2 keeps (256 levels, counting html and body)
is refused with 400 `invalid_markup` naming the depth, never answered with the deeper text missing.

Modules
    extract.py     parse (HTML document or fragment, or XML), find runs, spans and attributes, write back
    align.py       pure: source spans of inline elements -> spans of the translation
    direction.py   after write-back: dir/lang of the elements whose text is now English
    translate.py   plan, one pipeline call for all documents, finish; CPU stages in `pipeline.cpu`
    nesting.py     the non-recursive walker every tree and span walk uses

Every step is linear (or n log n) in its input: tests/test_html_linear.py doubles each hostile input.
"""

from model_server.html.align import InlineSpan, align_spans
from model_server.html.extract import INLINE_TAGS, SKIP_TAGS, looks_like_document, parse_markup
from model_server.html.translate import finish_document, plan_document, translate_markup

__all__ = ["INLINE_TAGS", "SKIP_TAGS", "InlineSpan", "align_spans", "finish_document", "looks_like_document",
           "parse_markup", "plan_document", "translate_markup"]
