"""Summaries below HTTP: chunk planning (pure), presets (validated at start-up), the multi-pass logic over a
fake model, and the `summarize` / `article` commands on the tiny models."""

from __future__ import annotations

import json

import pytest

from model_server.backends.base import Generated, GenerationOptions, ModelInfo
from model_server.errors import ServiceError
from model_server.presets import PresetCatalog
from model_server.services import Services
from model_server.summarize import plan_chunks
from model_server.text import normalize_text
from model_server.tiny_models import MEMORISED_SUMMARIES
from tests.conftest import ROOT, run_with, tiny_settings


def words(text: str) -> int:
    """A token counter for pure tests: one token per word plus EOS."""
    return len(text.split()) + 1


def paragraph(n: int, word: str = "كلمة") -> str:
    return " ".join([word] * n) + "."


# ---------------------------------------------------------------------------------- planning (pure)


def test_a_text_that_fits_is_one_chunk():
    text = "فقرة أولى.\nفقرة ثانية."
    assert plan_chunks(text, words, 100) == [text]
    assert plan_chunks("", words, 100) == [] and plan_chunks("  \n ", words, 100) == []


def test_whole_paragraphs_are_packed_in_order_and_each_chunk_fits():
    paragraphs = [paragraph(n) for n in (6, 6, 6, 9, 3, 7)]
    chunks = plan_chunks("\n".join(paragraphs), words, 14)
    # 6+6 words (+EOS) = 13 fit; a third paragraph would not. Paragraphs are never split when they fit.
    assert chunks == ["\n".join(paragraphs[0:2]), paragraphs[2], "\n".join(paragraphs[3:5]), paragraphs[5]]
    assert all(words(chunk) <= 14 for chunk in chunks)


def test_an_over_long_paragraph_is_split_by_sentences_then_an_over_long_sentence_by_chunk_sentence():
    long_sentence = " ".join(f"كلمة{i}،" for i in range(30)) + " نهاية."
    text = normalize_text(f"جملة قصيرة أولى. {long_sentence} جملة قصيرة أخيرة.\nفقرة صغيرة.")
    chunks = plan_chunks(text, words, 12)
    assert len(chunks) > 4 and all(words(chunk) <= 12 for chunk in chunks)
    assert chunks[0].startswith("جملة قصيرة أولى.") and chunks[-1].endswith("فقرة صغيرة.")
    # Nothing is lost, duplicated or reordered: only white space differs.
    assert " ".join(chunks).split() == text.split()


def test_chunks_fit_even_when_a_tokenizer_counts_more_for_joined_pieces():
    def joins_cost_extra(text: str) -> int:  # counts do not add up: each line break costs 3 tokens
        return words(text) + 3 * text.count("\n")

    paragraphs = [paragraph(4) for _ in range(6)]
    # Adding counts puts three paragraphs (4 + 4 + 4 + 1 = 13 tokens) in each input; counted whole they are
    # 19, so each such chunk is re-packed counting every candidate: two paragraphs (12 tokens), then one.
    chunks = plan_chunks("\n".join(paragraphs), joins_cost_extra, 13)
    assert chunks == ["\n".join(paragraphs[0:2]), paragraphs[2], "\n".join(paragraphs[3:5]), paragraphs[5]]
    assert all(joins_cost_extra(chunk) <= 13 for chunk in chunks)


# ---------------------------------------------------------------------------------- presets


def test_the_repo_presets_load_and_the_default_follows_the_xlsum_model_card():
    catalog = PresetCatalog.load(ROOT / "prompts", "summary-xlsum")
    assert {"summary-xlsum", "summary-brief"} <= set(catalog.names())
    xlsum = catalog.get(None)
    assert xlsum.name == "summary-xlsum" and xlsum.task == "summarization" and xlsum.prefix == ""
    assert xlsum.max_input_tokens == 512
    assert xlsum.generation.options() == GenerationOptions(num_beams=4, max_new_tokens=83, no_repeat_ngram_size=2,
                                                           length_penalty=0.6)
    assert catalog.get("summary-brief").generation.max_new_tokens < xlsum.generation.max_new_tokens


PRESET = """name: {name}
version: 1
task: summarization
generation:
  num_beams: 4
  max_new_tokens: 40
"""


@pytest.mark.parametrize("content,problem", [
    (PRESET.replace("num_beams: 4", "num_beams: 0"), "generation.num_beams: Input should be greater than 0"),
    (PRESET.replace("num_beams: 4", "beams: 4"), "generation.beams: Extra inputs are not permitted"),
    (PRESET.replace("task: summarization", "task: poetry"), "task: Input should be 'summarization'"),
    (PRESET + "temperature: 0.7\n", "temperature: Extra inputs are not permitted"),
    (PRESET.replace("name: {name}", "name: other"), "name: 'other' must equal the file name"),
    (PRESET + "  min_new_tokens: 50\n", "generation: Value error, min_new_tokens must not exceed max_new_tokens"),
    ("name: [unclosed\n", "not valid YAML"),
    ("- a list\n", "expected a mapping"),
], ids=["beams-zero", "unknown-generation-field", "wrong-task", "unknown-field", "name-mismatch", "min-over-max",
        "bad-yaml", "not-a-mapping"])
def test_a_bad_preset_stops_start_up_naming_file_and_field(tmp_path, content, problem):
    (tmp_path / "summary-xlsum.yaml").write_text(PRESET.format(name="summary-xlsum"), encoding="utf-8")
    bad = tmp_path / "summary-brief.yaml"
    bad.write_text(content.replace("{name}", "summary-brief"), encoding="utf-8")
    # The translation model does not exist: presets are checked first, before any model is loaded.
    settings = tiny_settings(tmp_path / "no-model", summarization_enabled=True, prompts_dir=tmp_path)
    with pytest.raises(ServiceError) as caught:
        Services.load(settings)
    assert caught.value.code == "invalid_preset"
    assert caught.value.message.startswith(f"{bad}: ") and problem in caught.value.message


def test_a_missing_default_preset_or_prompts_dir_is_named(tmp_path):
    (tmp_path / "summary-brief.yaml").write_text(PRESET.format(name="summary-brief"), encoding="utf-8")
    with pytest.raises(ServiceError, match="default_summary_preset 'summary-xlsum' is not a preset.*"
                                           "MODEL_SERVER_DEFAULT_SUMMARY_PRESET"):
        PresetCatalog.load(tmp_path, "summary-xlsum")
    with pytest.raises(ServiceError, match="prompts_dir .* is not a directory"):
        PresetCatalog.load(tmp_path / "missing", "summary-xlsum")


def test_the_command_line_exits_with_the_preset_problem(tmp_path):
    from model_server.cli import main

    bad = PRESET.format(name="summary-xlsum").replace("num_beams: 4", "num_beams: -1")
    (tmp_path / "summary-xlsum.yaml").write_text(bad, encoding="utf-8")
    (tmp_path / "article.txt").write_text("نص.", encoding="utf-8")
    with pytest.raises(SystemExit) as caught:  # `serve` loads services the same way (cli._load_services)
        main(["summarize", str(tmp_path / "article.txt"), "--prompts-dir", str(tmp_path),
              "--translation-model", str(tmp_path / "none")])
    assert str(caught.value) == (f"model-server: {tmp_path / 'summary-xlsum.yaml'}: generation.num_beams: "
                                 "Input should be greater than 0")


# ---------------------------------------------------------------------------------- passes (fake model)


class FakeSummarizer:
    """'Summarizes' by keeping the first `keep` words; counts one token per word plus EOS."""

    def __init__(self, keep: int | None, max_input_tokens: int) -> None:
        self.keep = keep
        self.inputs: list[str] = []
        self.counted: list[str] = []
        self.info = ModelInfo(name="fake", source="fake", task="summarization", architecture="mt5",
                              backend="fake", device="cpu", dtype="float32", max_input_tokens=max_input_tokens)

    def count_tokens(self, text: str) -> int:
        self.counted.append(text)
        return words(text)

    def default_options(self) -> GenerationOptions:
        return GenerationOptions()

    def generate(self, texts, options):
        self.inputs.extend(texts)
        kept = [" ".join(text.split()[:self.keep] if self.keep else text.split()) for text in texts]
        return [Generated(text=k, score=-0.1, num_tokens=words(k), hit_max_length=False) for k in kept]

    def close(self):
        pass


def fake_services(tiny_backend, tmp_path, fake) -> Services:
    (tmp_path / "p.yaml").write_text(PRESET.format(name="p").replace("max_new_tokens: 40", "max_new_tokens: 4"),
                                     encoding="utf-8")
    catalog = PresetCatalog.load(tmp_path, "p")
    return Services.from_backend(tiny_settings("unused", summarization_enabled=True), tiny_backend,
                                 summarization_backend=fake, presets=catalog)


def run_summary(services: Services, text: str):
    return run_with(services, lambda s: s.summarizer.summarize(text))


def test_long_texts_are_summarized_in_passes_until_one_input_holds_them(tiny_backend, tmp_path):
    from tests.ops_helpers import SharedBackend

    fake = FakeSummarizer(keep=4, max_input_tokens=20)
    text = "\n".join(f"فقرة{i} " + paragraph(9) for i in range(12))  # 12 paragraphs of 10 words
    result = run_summary(fake_services(SharedBackend(tiny_backend), tmp_path, fake), text)
    # Pass 1: 12 chunks (two paragraphs never fit in 20 tokens); pass 2: 4-word summaries, four to an input
    # -> 3 chunks; pass 3: 3 summaries -> 1 input; its summary is final.
    assert result.long_article.model_dump() == {"chunked": True, "chunks": 12, "passes": 3}
    assert len(fake.inputs) == 12 + 3 + 1 and max(words(i) for i in fake.inputs) <= 20
    # Each model input is tokenized once: planning's count is reused as its batch cost.
    assert [fake.counted.count(i) for i in fake.inputs] == [1] * len(fake.inputs)
    assert result.summary.text == "فقرة0 كلمة كلمة كلمة" and result.summary.method == "mt5(ar)"


def test_summaries_that_never_get_shorter_fail_instead_of_looping(tiny_backend, tmp_path):
    from tests.ops_helpers import SharedBackend

    fake = FakeSummarizer(keep=None, max_input_tokens=20)  # echoes its input
    with pytest.raises(ServiceError, match="do not fit in fewer chunks") as caught:
        run_summary(fake_services(SharedBackend(tiny_backend), tmp_path, fake), "\n".join([paragraph(15)] * 3))
    assert caught.value.code == "inference_failed"


def test_a_preset_too_long_for_the_input_limit_stops_start_up(tiny_backend, tmp_path):
    from tests.ops_helpers import SharedBackend

    with pytest.raises(ServiceError, match=r"p.yaml: generation.max_new_tokens: 4 is too long for the "
                                           r"summarizer's input limit of 8 tokens \(at most 2"):
        fake_services(SharedBackend(tiny_backend), tmp_path, FakeSummarizer(keep=2, max_input_tokens=8))


# ---------------------------------------------------------------------------------- command line (tiny models)


def cli_flags(tiny_marian_dir, tiny_mt5_dir) -> list[str]:
    return ["--translation-model", str(tiny_marian_dir), "--summarization-model", str(tiny_mt5_dir),
            "--device", "cpu", "--torch-threads", "1", "--num-beams", "1", "--log-level", "warning"]


def test_cli_summarize_reads_stdin(tiny_marian_dir, tiny_mt5_dir, monkeypatch, capsys):
    import io

    from model_server.cli import main

    english, summary = MEMORISED_SUMMARIES[1]
    monkeypatch.setattr("sys.stdin", io.StringIO(english))
    assert main(["summarize", "-", "--lang", "en", *cli_flags(tiny_marian_dir, tiny_mt5_dir)]) == 0
    assert capsys.readouterr().out == summary + "\n"


def test_cli_article_takes_json_and_prints_json(tiny_marian_dir, tiny_mt5_dir, tmp_path, capsys):
    from model_server.cli import main

    body, summary = MEMORISED_SUMMARIES[0]
    path = tmp_path / "article.json"
    path.write_text(json.dumps({"id": "a-1", "title": "اتفاق دفاعي بين الطرفين", "body": body,
                                "metadata": {"section": "world"}}, ensure_ascii=False), encoding="utf-8")
    assert main(["article", str(path), "--preset", "summary-brief", *cli_flags(tiny_marian_dir, tiny_mt5_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["id"] == "a-1" and out["metadata"] == {"section": "world"}
    assert out["title"]["translation"] == "A defence agreement between the two sides"
    assert out["summary"]["ar"]["text"] == summary and out["strategy"] == "translate-summary"
    assert out["preset"] == {"name": "summary-brief", "version": "1"} and out["warning"]


def test_plain_text_article_is_title_line_then_body():
    from model_server.cli_summaries import parse_article

    assert parse_article("\nعنوان\nفقرة أولى.\nفقرة ثانية.\n") == {
        "title": "عنوان", "body": "فقرة أولى.\nفقرة ثانية."}
    with pytest.raises(SystemExit, match="body: Field required"):
        parse_article('{"title": "عنوان"}')
