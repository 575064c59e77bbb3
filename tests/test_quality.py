"""Quality signals, output clean-up and the retry path (crafted outputs, a scripted backend, the tiny model)."""

from __future__ import annotations


import pytest

from model_server.backends.base import Generated, GenerationOptions, ModelInfo
from model_server.quality import QualityThresholds, assess, clean_english, has_repetition, missing_numbers
from model_server.services import Services
from tests.conftest import SAMPLE_AR, SAMPLE_EN, run_with, tiny_settings

THRESHOLDS = QualityThresholds()
PAIRS = list(zip(SAMPLE_AR.splitlines(), SAMPLE_EN.splitlines()))


def flags_of(source, translation, score=-0.3, hit_max_length=False):
    return assess(source, translation, score=score, hit_max_length=hit_max_length, thresholds=THRESHOLDS)


@pytest.mark.parametrize("arabic,english", PAIRS)
def test_the_human_reference_translation_raises_no_flag(arabic, english):
    assert flags_of(arabic, english) == []


def test_repetition_loops_are_flagged():
    source = PAIRS[8][0]
    assert flags_of(source, "No, no, no, no, no, no, no.")[:1] == ["repetition"]
    assert "repetition" in flags_of(source, "the Russian navy the Russian navy the Russian navy shipped")
    assert "repetition" in flags_of(source, "")
    assert not has_repetition(PAIRS[8][1])


def test_untranslated_output_is_flagged():
    arabic = PAIRS[8][0]
    assert "untranslated" in flags_of(arabic, arabic)
    assert "untranslated" in flags_of(arabic, "Haftar " + arabic)


def test_length_ratio_catches_dropped_content_but_not_headlines():
    long_source, long_english = PAIRS[9]
    assert "length_ratio" in flags_of(long_source, "Russia.")
    assert "length_ratio" in flags_of(long_source, long_english * 4)
    assert flags_of("اتفاق دفاعي", "A defence agreement between the two sides") == []


@pytest.mark.parametrize("source,translation,missing", [
    ("وأفرغت ما يصل إلى 6000 طن", "unloaded up to 6,000 tons", set()),
    ("وأفرغت ما يصل إلى ٦٠٠٠ طن", "unloaded up to 6000 tons", set()),
    ("نمو بنسبة ٢٫٥ بالمئة", "growth of 2.5 percent", set()),
    ("من 300 إلى نحو 400.", "from 300 to about 400.", set()),
    ("من 300 إلى نحو 400.", "from 300 to about 40.", {"400"}),
    ("الإثنين 15 أبريل/نيسان 2024", "on Monday, April 2024", {"15"}),
])
def test_numbers_must_survive_translation(source, translation, missing):
    assert missing_numbers(source, translation) == missing
    assert ("numbers" in flags_of(source, translation)) == bool(missing)


def test_low_score_and_truncated():
    source, english = PAIRS[8]
    assert flags_of(source, english, score=-2.5) == ["low_score"]
    assert flags_of(source, english, hit_max_length=True) == ["truncated"]


@pytest.mark.parametrize("raw,clean", [
    ("How is Russia arming Haftar, its man in Libya؟؟ The Times reveals",
     "How is Russia arming Haftar, its man in Libya? The Times reveals"),
    ("in return for helping it «tighten its grip» on Africa", 'in return for helping it "tighten its grip" on Africa'),
    ("unloaded up to ٦٠٠٠ tons of equipment", "unloaded up to 6000 tons of equipment"),
    ("in Tartus ، Syria ؛ and unloaded", "in Tartus, Syria; and unloaded"),
    ("He asked: Is it possible that they missed the Russians passing through??",
     "He asked: Is it possible that they missed the Russians passing through?"),
    ("The Times reveals..", "The Times reveals."),
    ("Harchaoui added...", "Harchaoui added..."),
    ("a growth of ٢٫٥ percent", "a growth of 2.5 percent"),
])
def test_arabic_punctuation_leaking_into_english_is_mapped(raw, clean):
    assert clean_english(raw) == clean


def test_clean_english_leaves_the_reference_translation_unchanged():
    for _, english in PAIRS:
        assert clean_english(english) == english


class ScriptedBackend:
    """Loops on greedy decoding, translates cleanly with the retry's safer settings."""

    info = ModelInfo(name="scripted", source="scripted", task="translation", architecture="marian",
                     backend="scripted", device="cpu", dtype="float32", max_input_tokens=512, test_model=True)

    def __init__(self, retry_helps: bool = True) -> None:
        self.retry_helps = retry_helps
        self.calls: list[GenerationOptions] = []

    def count_tokens(self, text):
        return len(text.split()) + 1

    def default_options(self):
        return GenerationOptions()

    def generate(self, texts, options):
        self.calls.append(options)
        safer = options.num_beams >= 4 and options.no_repeat_ngram_size == 3
        if safer and self.retry_helps:
            return [Generated(text="A defence agreement between the two sides", score=-0.4, num_tokens=9,
                              hit_max_length=False) for _ in texts]
        return [Generated(text="the the the the the the the the", score=-0.2, num_tokens=8, hit_max_length=False)
                for _ in texts]

    def close(self):
        pass


def translate_with(backend, text, **settings):
    return translate_on(Services.from_backend(tiny_settings("unused", **settings), backend), text, num_beams=1)


def translate_on(services, text, **options):
    """`text` through the translation pipeline of `services` with these decoding options."""
    return run_with(services, lambda s: s.translator.translate([text], s.translator.options(**options)))[0][0]


def test_a_looping_sentence_is_retried_with_safer_decoding_and_the_better_output_kept():
    backend = ScriptedBackend()
    result = translate_with(backend, "اتفاق دفاعي بين الطرفين")
    sentence = result.sentences[0]
    assert sentence.translation == "A defence agreement between the two sides"
    assert sentence.flags == ["retried"] and not sentence.needs_review
    assert [(o.num_beams, o.no_repeat_ngram_size, o.repetition_penalty) for o in backend.calls] == [
        (1, 0, 1.0), (4, 3, 1.2)]
    assert result.review.sentences_needing_review == 0 and result.review.flags == {"retried": 1}


def test_a_retry_that_does_not_help_keeps_the_original_and_flags_it():
    result = translate_with(ScriptedBackend(retry_helps=False), "اتفاق دفاعي بين الطرفين")
    sentence = result.sentences[0]
    assert sentence.translation == "the the the the the the the the"
    assert sentence.flags == ["repetition", "retried"] and sentence.needs_review
    assert result.review.sentences_needing_review == 1


def test_retry_can_be_switched_off():
    backend = ScriptedBackend()
    result = translate_with(backend, "اتفاق دفاعي بين الطرفين", retry_suspect_sentences=False)
    assert len(backend.calls) == 1 and result.sentences[0].flags == ["repetition"]


def test_tiny_model_output_cut_at_max_length_is_flagged_truncated(tiny_marian_dir):
    services = Services.load(tiny_settings(tiny_marian_dir))
    source = "حيث قال النقاد أيضاً إنَّ الجهود المماثلة التي بذلتها الولايات المتحدة لجذب الرئيس الصربي ألكسندر فوتشيتش ربما شجّعته على تحسين العلاقات مع روسيا، وليس قطعها."

    sentence = translate_on(services, source, max_new_tokens=4).sentences[0]
    assert sentence.hit_max_length
    assert {"truncated", "retried", "length_ratio"} <= set(sentence.flags) and sentence.needs_review
