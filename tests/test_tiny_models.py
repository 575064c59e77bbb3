"""The tiny test models load through the ordinary transformers classes and reproduce what they memorised."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    MarianMTModel,
    MarianTokenizer,
    MT5ForConditionalGeneration,
    T5Tokenizer,
)

from model_server import tiny_models
from model_server.tiny_models import (
    MEMORISED_PAIRS,
    MEMORISED_SUMMARIES,
    TINY_MARKER_FILE,
    build_tiny_marian,
    build_tiny_mt5,
    ensure_tiny_marian,
    ensure_tiny_mt5,
    is_test_model,
)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
              pytest.mark.usefixtures("one_torch_thread")]

DATA = Path(__file__).parent / "data"
# Text the models never saw: characters outside every vocabulary, then the whole article (>512 tokens).
UNSEEN_ARABIC = "你好 🙂 " + (DATA / "libya-russia-ar.txt").read_text(encoding="utf-8").replace("\n", " ")


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_marian(tmp_path_factory.mktemp("tiny") / "marian")


@pytest.fixture(scope="module")
def marian_eos_last_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_marian(tmp_path_factory.mktemp("tiny") / "marian-eos-last", eos_last=True)


@pytest.fixture(scope="module")
def mt5_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_mt5(tmp_path_factory.mktemp("tiny") / "mt5")


def _lines(name: str) -> list[str]:
    return (DATA / name).read_text(encoding="utf-8").splitlines()


def _generate(model, tokenizer, sources: list[str], **kwargs) -> list[str]:
    inputs = tokenizer(sources, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        generated = model.generate(**inputs, do_sample=False, **kwargs)
    return tokenizer.batch_decode(generated, skip_special_tokens=True)


def _snapshot(model_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(model_dir.iterdir())}


# --- memorised text ---------------------------------------------------------------------------


def test_memorised_text_is_taken_verbatim_from_the_sample_article() -> None:
    ar, en = _lines("libya-russia-ar.txt"), _lines("libya-russia-en.txt")
    assert MEMORISED_PAIRS[:4] == tuple((ar[n - 1], en[n - 1]) for n in (9, 16, 20, 21))
    assert MEMORISED_SUMMARIES[0][0] == f"{ar[6]}\n{ar[7]}"
    assert MEMORISED_SUMMARIES[1][0] == f"{en[6]}\n{en[7]}"
    # The builder trains its tokenizers on a packaged copy, so it never needs tests/ at runtime.
    for name in ("libya-russia-ar.txt", "libya-russia-en.txt"):
        assert (Path(tiny_models.__file__).parent / "data" / name).read_bytes() == (DATA / name).read_bytes()


# --- MarianMT ---------------------------------------------------------------------------------


def test_marian_is_saved_like_opus_mt(marian_dir: Path) -> None:
    assert is_test_model(marian_dir)
    for name in ("config.json", "generation_config.json", "model.safetensors", "source.spm", "target.spm",
                 "vocab.json", "tokenizer_config.json"):  # fmt: skip
        assert (marian_dir / name).is_file(), name
    vocab = json.loads((marian_dir / "vocab.json").read_text(encoding="utf-8"))
    assert (vocab["</s>"], vocab["<unk>"], vocab["<pad>"]) == (0, 1, len(vocab) - 1)

    config = json.loads((marian_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "marian" and config["vocab_size"] == len(vocab)
    assert config["pad_token_id"] == config["decoder_start_token_id"] == len(vocab) - 1
    assert config["eos_token_id"] == 0 and config["max_position_embeddings"] == 512
    generation = json.loads((marian_dir / "generation_config.json").read_text(encoding="utf-8"))
    assert generation["num_beams"] == 4 and generation["bad_words_ids"] == [[len(vocab) - 1]]


def test_marian_tokenizer_loads_and_round_trips(marian_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(marian_dir)
    assert isinstance(tokenizer, MarianTokenizer)
    assert tokenizer.model_max_length == 512
    for ar, en in MEMORISED_PAIRS:
        ids = tokenizer(ar)["input_ids"]
        assert ids[-1] == tokenizer.eos_token_id and tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == ar
        labels = tokenizer(text_target=en)["input_ids"]
        assert tokenizer.decode(labels, skip_special_tokens=True) == en


@pytest.mark.parametrize("variant", ["marian_dir", "marian_eos_last_dir"])
@pytest.mark.parametrize("num_beams", [1, 4])
def test_marian_translates_memorised_pairs(request: pytest.FixtureRequest, variant: str, num_beams: int) -> None:
    model_dir = request.getfixturevalue(variant)
    model = MarianMTModel.from_pretrained(model_dir).eval()
    tokenizer = MarianTokenizer.from_pretrained(model_dir)
    sources = [ar for ar, _ in MEMORISED_PAIRS]
    assert _generate(model, tokenizer, sources, num_beams=num_beams) == [en for _, en in MEMORISED_PAIRS]


def test_marian_eos_last_variant_moves_special_ids_consistently(marian_eos_last_dir: Path) -> None:
    tokenizer = MarianTokenizer.from_pretrained(marian_eos_last_dir)
    model = MarianMTModel.from_pretrained(marian_eos_last_dir)
    size = len(tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    assert (eos, pad, tokenizer.unk_token_id) == (size - 2, size - 1, 0)
    assert model.config.eos_token_id == model.config.forced_eos_token_id == eos != 0
    assert model.config.pad_token_id == model.config.decoder_start_token_id == pad
    generation = model.generation_config
    assert (generation.eos_token_id, generation.pad_token_id, generation.decoder_start_token_id) == (eos, pad, pad)
    assert tokenizer(MEMORISED_PAIRS[0][0])["input_ids"][-1] == eos


def test_marian_generation_terminates_on_unseen_input(marian_dir: Path) -> None:
    model = MarianMTModel.from_pretrained(marian_dir).eval()
    tokenizer = MarianTokenizer.from_pretrained(marian_dir)
    inputs = tokenizer([UNSEEN_ARABIC, "؟"], padding=True, truncation=True, max_length=512, return_tensors="pt")
    assert inputs["input_ids"].shape[1] == 512 and tokenizer.unk_token_id in inputs["input_ids"][0]
    with torch.inference_mode():
        generated = model.generate(**inputs)  # the model's own defaults: beam 4, max_length 128
    assert generated.shape[1] <= model.generation_config.max_length
    assert all(isinstance(text, str) for text in tokenizer.batch_decode(generated, skip_special_tokens=True))


# --- mT5 --------------------------------------------------------------------------------------


def test_mt5_is_saved_like_xlsum(mt5_dir: Path) -> None:
    assert is_test_model(mt5_dir)
    assert {p.name for p in mt5_dir.iterdir()} == {
        "config.json", "model.safetensors", "spiece.model", "special_tokens_map.json", "tokenizer_config.json",
        TINY_MARKER_FILE,
    }  # fmt: skip
    config = json.loads((mt5_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "mt5" and config["feed_forward_proj"] == "gated-gelu"
    assert config["tie_word_embeddings"] is False
    # XLSum keeps its generation defaults in config.json; transformers lifts them at load time.
    model = AutoModelForSeq2SeqLM.from_pretrained(mt5_dir)
    assert isinstance(model, MT5ForConditionalGeneration)
    generation = model.generation_config
    assert (generation.num_beams, generation.max_length, generation.no_repeat_ngram_size) == (4, 84, 2)
    assert generation.length_penalty == 0.6
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()  # untied, as mT5


@pytest.mark.parametrize("load", [AutoTokenizer.from_pretrained, T5Tokenizer.from_pretrained])
def test_mt5_tokenizer_loads_and_round_trips(mt5_dir: Path, load) -> None:
    tokenizer = load(mt5_dir)
    assert isinstance(tokenizer, T5Tokenizer)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    for document, summary in MEMORISED_SUMMARIES:
        ids = tokenizer(document)["input_ids"]
        assert ids[-1] == 1 and tokenizer.unk_token_id not in ids
        # Like mT5, the tokenizer folds newlines into spaces.
        assert tokenizer.decode(ids, skip_special_tokens=True) == " ".join(document.split())
        assert tokenizer.decode(tokenizer(summary)["input_ids"], skip_special_tokens=True) == summary


@pytest.mark.parametrize("num_beams", [1, 4])
def test_mt5_summarises_memorised_documents(mt5_dir: Path, num_beams: int) -> None:
    model = AutoModelForSeq2SeqLM.from_pretrained(mt5_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(mt5_dir)
    documents = [document for document, _ in MEMORISED_SUMMARIES]
    assert _generate(model, tokenizer, documents, num_beams=num_beams) == [s for _, s in MEMORISED_SUMMARIES]


def test_mt5_generation_terminates_on_unseen_input(mt5_dir: Path) -> None:
    model = AutoModelForSeq2SeqLM.from_pretrained(mt5_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(mt5_dir)
    inputs = tokenizer([UNSEEN_ARABIC], truncation=True, max_length=512, return_tensors="pt")
    assert inputs["input_ids"].shape[1] == 512 and tokenizer.unk_token_id in inputs["input_ids"][0]
    with torch.inference_mode():
        generated = model.generate(**inputs)
    assert generated.shape[1] <= 84
    assert isinstance(tokenizer.decode(generated[0], skip_special_tokens=True), str)


# --- ensure / atomic builds / determinism -----------------------------------------------------


def test_ensure_keeps_a_complete_model(marian_dir: Path, mt5_dir: Path) -> None:
    for model_dir, ensure in ((marian_dir, ensure_tiny_marian), (mt5_dir, ensure_tiny_mt5)):
        before = {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()}
        assert ensure(model_dir) == model_dir
        assert {p.name: p.stat().st_mtime_ns for p in model_dir.iterdir()} == before


def test_ensure_rebuilds_an_incomplete_model_identically(mt5_dir: Path, tmp_path: Path) -> None:
    # mT5 because it builds fastest; Marian shares the code path.
    broken = tmp_path / "mt5"
    shutil.copytree(mt5_dir, broken)
    (broken / TINY_MARKER_FILE).unlink()  # as if a build had died before finishing
    (broken / "model.safetensors").write_bytes(b"truncated")
    assert not is_test_model(broken)

    ensure_tiny_mt5(broken)

    # Same seed, same bytes: tokenizer, config and weights are deterministic.
    assert _snapshot(broken) == _snapshot(mt5_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["mt5"]  # no temporary dirs left behind


def test_marian_tokenizers_are_deterministic(marian_dir: Path, marian_eos_last_dir: Path) -> None:
    # Two independent builds: identical sentencepiece models, and the same pieces in the same order.
    for name in ("source.spm", "target.spm"):
        assert (marian_dir / name).read_bytes() == (marian_eos_last_dir / name).read_bytes()
    vocabs = [json.loads((d / "vocab.json").read_text(encoding="utf-8")) for d in (marian_dir, marian_eos_last_dir)]
    specials = {"</s>", "<unk>", "<pad>"}
    assert [[t for t in vocab if t not in specials] for vocab in vocabs][0] == [
        t for t in vocabs[1] if t not in specials
    ]


def test_ensure_rebuilds_a_model_of_another_variant(marian_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[bool] = []
    monkeypatch.setattr(tiny_models, "_build_atomically", lambda *args, **kwargs: built.append(True))
    ensure_tiny_marian(marian_dir, eos_last=True)
    ensure_tiny_mt5(marian_dir)
    assert built == [True, True]


def test_failed_build_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(model_dir: Path, *args: object) -> None:
        (model_dir / "config.json").write_text("{}")
        raise RuntimeError("boom")

    monkeypatch.setattr(tiny_models, "_build_marian_into", fail)
    with pytest.raises(RuntimeError, match="boom"):
        ensure_tiny_marian(tmp_path / "marian")
    assert list(tmp_path.iterdir()) == []


def test_build_refuses_to_replace_an_unrelated_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        build_tiny_marian(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "precious"


def test_is_test_model_needs_the_marker(tmp_path: Path) -> None:
    assert not is_test_model(tmp_path)
    (tmp_path / TINY_MARKER_FILE).write_text("{}")
    assert is_test_model(tmp_path)
