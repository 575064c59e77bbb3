"""A WordPress (Gutenberg) article through the real server: POST /translate format=html, DeepL
tag_handling=html (the official `deepl` client) and LibreTranslate format=html.

Gutenberg wraps every block in comments that carry its attributes as JSON (`<!-- wp:heading
{"level":3} -->` ... `<!-- /wp:heading -->`); a normal story has dozens of them (on main, the regex that
told documents from fragments backtracked exponentially in their number: 40 blocks never finished).
The article is 40 blocks - headings, paragraphs with links and emphasis, a list, an image with alt and
caption, a quote, a separator, a spacer, code - written with the sample article's sentences that the
tiny model memorised (tests/data/libya-russia-ar.txt), so the translation is known exactly.

Asserted: every comment comes back byte for byte and in order; every element comes back with the same
tag, nesting and attributes (alt and title translated, every other attribute unchanged); every block's
text is the memorised translation of its Arabic; what is never translated (code, English) is unchanged.
The last test gives the paragraphs Gutenberg's right-to-left direction (`{"direction":"rtl"}` and
`<p dir="rtl">`): both come back ltr, in all three APIs (model_server/html/direction.py).
"""

from __future__ import annotations

import re

import pytest
from lxml import html as lxml_html

from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import SAMPLE_AR

deepl = pytest.importorskip("deepl")

MEMORISED = dict(MEMORISED_PAIRS)
# The article's sentences the tiny model knows: two subheadings and two paragraphs.
ALLIANCE, AGREEMENT, TIMES, CRITICS = [line for line in SAMPLE_AR.splitlines() if line in MEMORISED]
TRANSLATED_ATTRIBUTES = ("alt", "title")
BLOCKS = 40
_COMMENT_RE = re.compile(r"<!--.*?-->", re.S)   # test-side only: small, trusted input


def wrap(block: str, markup: str, attributes: str = "") -> str:
    return f"<!-- wp:{block}{attributes} -->\n{markup}\n<!-- /wp:{block} -->"


def block_cycle() -> list[str]:
    """Ten blocks of the kinds Gutenberg writes."""
    linked = TIMES.replace('"التايمز"', '"<a href="https://www.thetimes.co.uk/article?id=1&amp;x=2" '
                                        'target="_blank" rel="noreferrer noopener">التايمز</a>"')
    linked = linked.replace("خليفة حفتر", "<strong>خليفة حفتر</strong>", 1)
    emphasised = ALLIANCE.replace("خليفة حفتر", '<em title="' + AGREEMENT + '">خليفة حفتر</em>')
    items = "\n\n".join(wrap("list-item", f"<li>{text}</li>") for text in (ALLIANCE, AGREEMENT))
    return [
        wrap("heading", f'<h2 class="wp-block-heading" id="alliance">{ALLIANCE}</h2>'),
        wrap("paragraph", f"<p>{linked}</p>"),
        wrap("paragraph", f'<p class="has-drop-cap">{CRITICS}</p>', ' {"dropCap":true}'),
        wrap("image", '<figure class="wp-block-image size-large"><img src="https://example.com/wp-content/uploads/'
                      f'2024/04/tobruk.jpg" alt="{ALLIANCE}" class="wp-image-42"/><figcaption class="wp-element-'
                      f'caption">{AGREEMENT}</figcaption></figure>',
             ' {"id":42,"sizeSlug":"large","linkDestination":"none"}'),
        wrap("heading", f'<h3 class="wp-block-heading">{AGREEMENT}</h3>', ' {"level":3}'),
        wrap("list", f'<ul class="wp-block-list">{items}</ul>'),
        wrap("quote", f'<blockquote class="wp-block-quote">{wrap("paragraph", f"<p>{CRITICS}</p>")}'
                      "<cite>The Times</cite></blockquote>"),
        wrap("separator", '<hr class="wp-block-separator has-alpha-channel-opacity"/>'),
        wrap("paragraph", f"<p>{emphasised}</p>"),
        wrap("code", '<pre class="wp-block-code"><code>حفتر = "لا تترجم"</code></pre>'),
    ]


def wordpress_article(blocks: int = BLOCKS) -> str:
    cycle = block_cycle()
    return "\n\n".join(cycle[i % len(cycle)] for i in range(blocks))


def skeleton(markup: str, *, translated: bool) -> list[tuple]:
    """(depth, tag or "comment", attributes or comment text) of every node in document order; with
    `translated`, alt and title hold the memorised translation of the Arabic they held."""
    root = lxml_html.fragment_fromstring(markup, create_parent="div")
    nodes = []
    for node in root.iter():
        depth = sum(1 for _ in node.iterancestors())
        if not isinstance(node.tag, str):
            nodes.append((depth, "comment", node.text))
            continue
        attributes = tuple((name, MEMORISED[value] if translated and name in TRANSLATED_ATTRIBUTES else value)
                           for name, value in node.attrib.items())
        nodes.append((depth, node.tag, attributes))
    return nodes


def assert_article_translated(source: str, translation: str) -> None:
    assert _COMMENT_RE.findall(translation) == _COMMENT_RE.findall(source)   # byte for byte, in order
    assert skeleton(translation, translated=False) == skeleton(source, translated=True)
    before = lxml_html.fragment_fromstring(source, create_parent="div")
    after = lxml_html.fragment_fromstring(translation, create_parent="div")
    blocks = 0
    for original, translated in zip(before.iter("h2", "h3", "p", "li", "figcaption"), after.iter(
            "h2", "h3", "p", "li", "figcaption")):
        assert translated.text_content() == MEMORISED[original.text_content()]
        blocks += 1
    assert blocks == 9 * BLOCKS // 10   # per ten blocks: h2, h3, four p, two li, one figcaption
    for link in after.iter("a", "strong", "em"):   # inline elements wrap whole words of the translation
        assert link.text and link.text == link.text.strip()
    assert [c.text for c in after.iter("cite")] == ["The Times"] * 4
    assert [c.text for c in after.iter("code")] == ['حفتر = "لا تترجم"'] * 4


def test_the_article_is_forty_gutenberg_blocks():
    article = wordpress_article()
    root = lxml_html.fragment_fromstring(article, create_parent="div")
    openers = [node.text for node in root if not isinstance(node.tag, str) and node.text.startswith(" wp:")]
    assert len(openers) == BLOCKS and ' wp:heading {"level":3} ' in openers
    assert len(article) < 20_000   # the test server's max_text_chars


def test_wordpress_article_through_translate(tiny_server):
    article = wordpress_article()
    with tiny_server.client(timeout=300) as client:
        response = client.post("/translate", json={"text": article, "format": "html"})
    assert response.status_code == 200, response.text
    assert_article_translated(article, response.json()["results"][0]["translation"])


def test_wordpress_article_through_deepl_tag_handling_html(tiny_server, monkeypatch):
    monkeypatch.setattr(deepl.http_client, "max_network_retries", 0)
    translator = deepl.Translator("any-key:fx", server_url=tiny_server.base_url)
    article = wordpress_article()
    result = translator.translate_text(article, source_lang="AR", target_lang="EN-US", tag_handling="html")
    assert_article_translated(article, result.text)


def test_wordpress_article_through_libretranslate_format_html(tiny_server):
    # libretranslatepy's translate() has no `format` argument: the same form body it sends, plus format=html.
    article = wordpress_article()
    with tiny_server.client(timeout=300) as client:
        response = client.post("/libretranslate/translate",
                               data={"q": article, "source": "ar", "target": "en", "format": "html"})
    assert response.status_code == 200, response.text
    assert_article_translated(article, response.json()["translatedText"])


# ---- right-to-left paragraphs (model_server/html/direction.py) --------------------------------------
def right_to_left(article: str) -> str:
    """The article as an Arabic site stores it: plain paragraph blocks carry Gutenberg's direction
    attribute, in the block comment and on the <p> (the editor writes both)."""
    return article.replace("<!-- wp:paragraph -->\n<p>", '<!-- wp:paragraph {"direction":"rtl"} -->\n<p dir="rtl">')


def translate_through(api: str, server, article: str) -> str:
    if api == "deepl":
        translator = deepl.Translator("any-key:fx", server_url=server.base_url)
        return translator.translate_text(article, source_lang="AR", target_lang="EN-US", tag_handling="html").text
    with server.client(timeout=300) as client:
        if api == "translate":
            response = client.post("/translate", json={"text": article, "format": "html"})
            assert response.status_code == 200, response.text
            return response.json()["results"][0]["translation"]
        response = client.post("/libretranslate/translate",
                               data={"q": article, "source": "ar", "target": "en", "format": "html"})
        assert response.status_code == 200, response.text
        return response.json()["translatedText"]


@pytest.mark.parametrize("api", ["translate", "deepl", "libretranslate"])
def test_right_to_left_paragraph_blocks_come_back_left_to_right_in_every_api(tiny_server, monkeypatch, api):
    monkeypatch.setattr(deepl.http_client, "max_network_retries", 0)
    article = right_to_left(wordpress_article())
    assert article.count('{"direction":"rtl"}') == article.count('<p dir="rtl">') == 3 * BLOCKS // 10
    translation = translate_through(api, tiny_server, article)
    # Exactly the article's translation with both halves of every direction attribute switched: the editor
    # rebuilds a block from its comment, so the two must agree. Everything else as asserted above.
    switched = article.replace('{"direction":"rtl"}', '{"direction":"ltr"}').replace('dir="rtl"', 'dir="ltr"')
    assert_article_translated(switched, translation)
