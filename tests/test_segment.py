"""Tests for model_server.text.segment: paragraphs and sentences of Arabic news text."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from model_server.text import PARAGRAPH_SEPARATOR, Paragraph, Sentence, normalize_text, segment

try:
    from hypothesis import given
    from hypothesis import strategies as st
except ImportError:  # hypothesis is a dev extra; the loop-based test below still runs
    given = None

DATA = Path(__file__).parent / "data"
SAMPLE_AR = normalize_text((DATA / "libya-russia-ar.txt").read_text(encoding="utf-8"))
SAMPLE_EN = normalize_text((DATA / "libya-russia-en.txt").read_text(encoding="utf-8"))
SAMPLE_LINES = SAMPLE_AR.split("\n")


def sentences(text: str) -> list[str]:
    """All sentence texts of `text`, paragraphs flattened."""
    return [s.text for p in segment(text) for s in p.sentences]


def line_sentences(line_number: int) -> list[str]:
    """Sentence texts of line `line_number` (1-based, as in `cat -n`) of the sample article."""
    return sentences(SAMPLE_LINES[line_number - 1])


# --- the sample article ------------------------------------------------------------------

# Sentences per paragraph of tests/data/libya-russia-ar.txt, line by line (22 lines, one
# paragraph each, 26 sentences):
#  3, 4: the duplicated headline "...بالسلاح؟.. التايمز تكشف" -> question + "التايمز تكشف"
#  14:   "... من 300 إلى نحو 400. وجعل حفتر ..." -> split after "400."
#  19:   "... على ليبيا. وتساءل: "هل ... الروس؟"." -> split after "ليبيا."; the quoted
#        question stays inside the second sentence, which ends with `؟".`
#  12, 15, 22: attribution + quotation (15 and 22 quote two sentences) -> one sentence each
#  18:   contains "؛" -> one sentence
SAMPLE_SENTENCES_PER_PARAGRAPH = [1, 1, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1]


def test_sample_article_paragraph_and_sentence_counts():
    paragraphs = segment(SAMPLE_AR)
    assert len(paragraphs) == 22
    assert [len(p.sentences) for p in paragraphs] == SAMPLE_SENTENCES_PER_PARAGRAPH
    assert sum(len(p.sentences) for p in paragraphs) == 26


def test_sample_article_offsets_are_exact():
    paragraphs = segment(SAMPLE_AR)
    for paragraph, line in zip(paragraphs, SAMPLE_LINES, strict=True):
        assert SAMPLE_AR[paragraph.start : paragraph.end] == line
        for sentence in paragraph.sentences:
            assert SAMPLE_AR[sentence.start : sentence.end] == sentence.text
    assert PARAGRAPH_SEPARATOR.join(SAMPLE_AR[p.start : p.end] for p in paragraphs) == SAMPLE_AR


def test_sample_headline_question_keeps_its_double_dot():
    assert line_sentences(3) == ["كيف تدعم روسيا حفتر رجلها في ليبيا بالسلاح؟..", "التايمز تكشف"]
    assert line_sentences(4) == line_sentences(3)


def test_sample_widget_date_line_is_one_sentence():
    assert line_sentences(5) == ["- 16 أبريل 2024, 10:12:02 ص"]
    assert line_sentences(1) == ["- ℃ 11 تركيا"]


def test_sample_split_after_number_with_period():
    first, second = line_sentences(14)
    assert first.endswith("من 300 إلى نحو 400.")
    assert second.startswith("وجعل حفتر ميناء طبرق")
    assert second.endswith("يونس- بك يفكوروف.")


@pytest.mark.parametrize("line_number", [12, 15, 22])
def test_sample_quotation_with_attribution_is_one_sentence(line_number):
    line = SAMPLE_LINES[line_number - 1]
    assert line_sentences(line_number) == [line]
    assert line.endswith('".')


def test_sample_quoted_question_stays_with_its_attribution():
    first, second = line_sentences(19)
    assert first.endswith("الذي فرضته الأمم المتحدة على ليبيا.")
    assert second == 'وتساءل: "هل من الممكن أنهم فاتهم مرور الروس؟".'


@pytest.mark.parametrize("line_number", [7, 8, 10, 13, 17, 18])
def test_sample_commas_semicolons_and_latin_names_do_not_split(line_number):
    assert line_sentences(line_number) == [SAMPLE_LINES[line_number - 1]]


def test_english_reference_segments_with_the_same_rules():
    counts = [len(p.sentences) for p in segment(SAMPLE_EN)]
    assert len(counts) == 22
    # 3/4: "...in Libya? The Times reveals"; 7, 14, 19: two sentences each; the
    # quotations of 12, 15 and 22 (two quoted sentences) stay whole.
    assert counts == [1, 1, 2, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1]


# --- terminators ---------------------------------------------------------------------------


@pytest.mark.parametrize("terminator", [".", "!", "؟", "?", "…", "...", "؟..", "!!", "?!"])
def test_terminators_end_a_sentence(terminator):
    assert sentences(f"قال الوزير{terminator} وأضاف المتحدث") == [
        f"قال الوزير{terminator}",
        "وأضاف المتحدث",
    ]


@pytest.mark.parametrize("separator", ["،", "؛", ",", ";", ":", " -"])
def test_commas_semicolons_and_colons_do_not_end_a_sentence(separator):
    text = f"قال الوزير{separator} وأضاف المتحدث"
    assert sentences(text) == [text]


def test_line_break_ends_sentence_and_paragraph():
    paragraphs = segment("قال الوزير\nوأضاف المتحدث")
    assert [[s.text for s in p.sentences] for p in paragraphs] == [["قال الوزير"], ["وأضاف المتحدث"]]


def test_terminator_without_following_space_does_not_split():
    assert sentences("انظر الموقع example.com/ar.html اليوم") == ["انظر الموقع example.com/ar.html اليوم"]
    assert sentences("بالسلاح؟..The Times") == ["بالسلاح؟..The Times"]


@pytest.mark.parametrize("terminator", [".", "؟", "!", "؟..", '."'])
def test_missing_space_before_an_arabic_sentence_still_splits(terminator):
    (paragraph,) = segment(f"قالت الولايات المتحدة{terminator}وأضاف المتحدث")
    first, second = paragraph.sentences
    assert first.text == f"قالت الولايات المتحدة{terminator}"
    assert (second.text, second.start) == ("وأضاف المتحدث", first.end)


@pytest.mark.parametrize("text", ["في عام 300 ق.م.كانت المدينة", "قال أ.د.أحمد", "قال د.أحمد", "بلغ ٢.٥ مليون"])
def test_missing_space_after_single_letter_abbreviation_does_not_split(text):
    assert sentences(text) == [text]


# --- numbers, dates, abbreviations --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "في الساعة 10:12:02 ص وصلت السفينة.",
        "أفرغت ما يصل إلى 6000 طن.",
        "بلغ النمو 2.5 في المئة.",
        "بلغ النمو ٢٫٥ في المئة.",
        "بلغ النمو ٢.٥ في المئة.",
        "أفرغت 6,000 طن و٦٬٠٠٠ أخرى.",
        "في 15 أبريل/نيسان 2024، قالت الصحيفة.",
        "- 16 أبريل 2024, 10:12:02 ص",
        "في 16.04.2024 وصلت السفينة.",
    ],
)
def test_numbers_and_dates_do_not_split(text):
    assert sentences(text) == [text]


@pytest.mark.parametrize(
    "text",
    [
        "قال المسؤول في وزارة الخارجية U.S. إن الاتفاق قريب.",
        "التقى Dr. Smith بالوزير.",
        "التقى Mr. Brown بالوزير.",
        "وقال Prof. Khan إن الأمر خطير.",
        "في مدن مثل e.g. طرابلس وبنغازي.",
        "وفقاً للقرار No. 5 الصادر أمس.",
        "وصرح J. Smith للصحيفة.",
        "قال د. محمد عبد الله إن الوضع مستقر.",
        "قال أ.د. أحمد إن الوضع مستقر.",
        "في عام 300 ق.م. كانت المدينة مزدهرة.",
        "the deal was signed approx. three weeks ago.",
    ],
)
def test_abbreviations_do_not_split(text):
    assert sentences(text) == [text]


def test_no_before_a_word_is_a_sentence_end():
    assert sentences("He said no. Then he left.") == ["He said no.", "Then he left."]


def test_list_marker_is_not_a_sentence():
    assert sentences("1. البند الأول. 2. البند الثاني.") == ["1. البند الأول.", "2. البند الثاني."]


# --- quotes and brackets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opener", "closer"), [('"', '"'), ("«", "»"), ("“", "”"), ("‹", "›"), ("(", ")"), ("[", "]")]
)
def test_no_split_inside_quotes_or_brackets(opener, closer):
    text = f"قال الوزير: {opener}الوضع صعب. لكننا سننتصر! هل تشكون{closer} ثم غادر القاعة."
    assert sentences(text) == [text]


def test_quote_ending_with_terminator_then_space_ends_the_sentence():
    # The quote is closed, so its final "؟" is also the end of the enclosing sentence.
    assert sentences('قال الوزير: "الوضع صعب. هل تشكون؟" ثم غادر القاعة.') == [
        'قال الوزير: "الوضع صعب. هل تشكون؟"',
        "ثم غادر القاعة.",
    ]


def test_closer_after_terminator_stays_with_its_sentence():
    assert sentences('قال الوزير: "سنرحل." وأضاف المتحدث.') == [
        'قال الوزير: "سنرحل."',
        "وأضاف المتحدث.",
    ]
    assert sentences("قال: «هل نرحل؟» ثم صمت.") == ["قال: «هل نرحل؟»", "ثم صمت."]
    assert sentences("(انتهى الاجتماع.) ثم بدأ المؤتمر.") == ["(انتهى الاجتماع.)", "ثم بدأ المؤتمر."]


def test_nested_quotes():
    text = "قال: «نقل عنه “لن نرحل. أبداً.” أمس. ثم نفى» وانتهى."
    assert sentences(text) == [text]


def test_unclosed_quote_does_not_swallow_the_paragraph():
    assert sentences('قال "الوزير إن الوضع صعب. وأضاف المتحدث.') == [
        'قال "الوزير إن الوضع صعب.',
        "وأضاف المتحدث.",
    ]
    assert sentences("قال «الوزير. وأضاف.") == ["قال «الوزير.", "وأضاف."]


def test_unopened_closer_is_ignored():
    assert sentences("1) البند الأول. 2) البند الثاني.") == ["1) البند الأول.", "2) البند الثاني."]


def test_quoted_title_inside_sentence():
    text = 'في تقرير نشرته "التايمز"، الإثنين. وقالت "بلومبرغ" إن.'
    assert sentences(text) == ['في تقرير نشرته "التايمز"، الإثنين.', 'وقالت "بلومبرغ" إن.']


# --- paragraphs ---------------------------------------------------------------------------


def test_single_newline_and_blank_line_both_separate_paragraphs():
    paragraphs = segment("أ.\nب.\n\nج. د.")
    assert [[s.text for s in p.sentences] for p in paragraphs] == [["أ."], ["ب."], ["ج.", "د."]]


def test_whitespace_only_lines_are_not_paragraphs():
    assert len(segment("  \nأ\n \t \n\nب\n  ")) == 2


def test_empty_text_has_no_paragraphs():
    assert segment("") == []
    assert segment(" \n\n \t") == []


def test_offsets_skip_surrounding_whitespace():
    text = "  قال.   وأضاف.  \n"
    (paragraph,) = segment(text)
    assert paragraph == Paragraph(
        (Sentence("قال.", 2, 6), Sentence("وأضاف.", 9, 15)),
        2,
        15,
    )


def test_dataclasses_are_frozen():
    sentence = Sentence("أ", 0, 1)
    with pytest.raises(AttributeError):
        sentence.text = "ب"  # type: ignore[misc]


# --- invariants: nothing lost or reordered --------------------------------------------------

ALPHABET = list("كتبروسياحفترلإىةءأ" + "ًَّ" + "0123٠١٢" + "AbUS" + ".!?؟…،؛,;:" + '"«»“”()' + "  \n\t") + [
    "...",
    "؟..",
    "U.S.",
    "Dr.",
    "د.",
    "\n\n",
]


def _check_invariants(text: str) -> None:
    paragraphs = segment(text)
    lines_with_text = [line for line in text.split("\n") if line.strip()]
    assert len(paragraphs) == len(lines_with_text)
    position = 0
    for paragraph in paragraphs:
        assert paragraph.sentences, "a paragraph has at least one sentence"
        assert paragraph.start == paragraph.sentences[0].start
        assert paragraph.end == paragraph.sentences[-1].end
        assert "\n" not in text[paragraph.start : paragraph.end]
        for sentence in paragraph.sentences:
            assert text[sentence.start : sentence.end] == sentence.text
            assert sentence.text and sentence.text == sentence.text.strip()
            assert sentence.start >= position, "sentences are ordered and do not overlap"
            assert text[position : sentence.start].strip() == "", "only whitespace between sentences"
            position = sentence.end
    assert text[position:].strip() == ""


def test_invariants_on_random_strings():
    rng = random.Random(16042024)
    for _ in range(2000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 40)))
        _check_invariants(text)
        _check_invariants(normalize_text(text))


def test_invariants_on_sample_article_shuffled_lines():
    rng = random.Random(7)
    for _ in range(50):
        lines = SAMPLE_LINES[:]
        rng.shuffle(lines)
        _check_invariants(" \n\n".join(lines))


if given is not None:

    @given(st.lists(st.sampled_from(ALPHABET), max_size=60).map("".join))
    def test_invariants_property(text):
        _check_invariants(text)

    @given(st.text(max_size=60))
    def test_invariants_on_any_unicode(text):
        _check_invariants(text)


# --- hostile input stays fast (each case was quadratic or worse in a naive version) ---------


@pytest.mark.parametrize(
    "text",
    [
        "1. " * 10000 + "ا",  # no letters for a long stretch
        "«" * 20000 + ")" * 20000,  # deep unmatched nesting
        "«" * 20000 + '"' * 20000,
        "اب." * 8000,  # terminators glued to Arabic words
        '"اب." ' * 4000,  # many short quotes
    ],
    ids=["letterless", "nesting-brackets", "nesting-quotes", "glued", "quotes"],
)
def test_hostile_input_is_segmented_quickly(text):
    started = time.perf_counter()
    segment(text)
    assert time.perf_counter() - started < 2.0
