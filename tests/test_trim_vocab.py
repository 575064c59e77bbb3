"""`model-server trim-vocab` and `check-vocab` on the tiny mT5.

The tiny mT5's sentencepiece model is trained on the Arabic/English sample article only, so it has no
pieces of other scripts; `multiscript_mt5` puts some in its embedding's padding rows (ids past the
tokenizer, which training pushed down as never-targets), as the real mT5 has pieces of a hundred
languages its summarizer never emits. Trimming with the sample article as corpus must drop them and keep
what Arabic and English need: the same pieces for the corpus, the same summaries, scores and token
counts (torch greedy and beam), and a CTranslate2 conversion that summarises.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from model_server.backends.base import Generated, GenerationOptions
from model_server.check_vocab import compare, render_text, sample_sentences
from model_server.services import load_summarization_backend
from model_server.tiny_models import MEMORISED_SUMMARIES
from model_server.trim_vocab import MANIFEST_FILE, read_manifest, trim_vocab
from tests.conftest import DATA, LiveServer, tiny_settings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CORPUS = [DATA / "libya-russia-ar.txt", DATA / "libya-russia-en.txt"]
# Cyrillic, Chinese, Devanagari, Greek, Japanese, Korean, Hebrew: none of them Arabic or English.
FOREIGN_PIECES = ("▁Москва", "ство", "▁北京", "市", "▁नई", "दिल्ली", "▁Ελλάδα", "ία", "▁東京", "▁서울", "▁ישראל", "ים")
DOCUMENTS = [document for document, _ in MEMORISED_SUMMARIES]
SUMMARIES = [summary for _, summary in MEMORISED_SUMMARIES]
SCORE_ABS = 1e-5
ROUNDING = 1e-6  # Generated.score is rounded to 6 decimals


def spm_proto(path: Path):
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


@pytest.fixture(scope="module")
def multiscript_mt5(tiny_mt5_dir, tmp_path_factory) -> Path:
    """The tiny mT5 whose padding rows are pieces of other scripts (appended to its spiece.model)."""
    out = Path(shutil.copytree(tiny_mt5_dir, tmp_path_factory.mktemp("multiscript") / "tiny-mt5-multiscript"))
    rows = json.loads((out / "config.json").read_text())["vocab_size"]
    assert rows - len(spm_proto(out / "spiece.model").pieces) == len(FOREIGN_PIECES)  # 500 pieces, 512 rows
    add_pieces(out, FOREIGN_PIECES)
    return out


def add_pieces(model_dir: Path, texts) -> None:
    """Append NORMAL pieces to the model's spiece.model (ids after its own)."""
    proto = spm_proto(model_dir / "spiece.model")
    for text in texts:
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = text, -5.0, piece.NORMAL
    proto.trainer_spec.vocab_size = len(proto.pieces)
    (model_dir / "spiece.model").write_bytes(proto.SerializeToString())


@pytest.fixture(scope="module")
def sentinel_mt5(tiny_mt5_dir, tmp_path_factory) -> Path:
    """The padding rows: six foreign pieces, then six sentinels that the tokenizer adds after the
    sentencepiece vocabulary (`extra_ids`, as t5-small's 100)."""
    out = Path(shutil.copytree(tiny_mt5_dir, tmp_path_factory.mktemp("sentinels") / "tiny-mt5-sentinels"))
    add_pieces(out, FOREIGN_PIECES[:6])
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "extra_ids": 6}))
    return out


@pytest.fixture(scope="module")
def trimmed(multiscript_mt5, tmp_path_factory) -> Path:
    return trim_vocab(str(multiscript_mt5), tmp_path_factory.mktemp("trim") / "tiny-mt5-ar-en",
                      corpus_files=CORPUS).out_dir


def summarizer(model_dir: Path, **overrides):
    return load_summarization_backend(tiny_settings(model_dir, summarization_enabled=True,
                                                    summarization_model=str(model_dir), **overrides))


def test_the_multiscript_variant_is_a_working_model_with_other_scripts(multiscript_mt5):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(multiscript_mt5)
    assert len(tokenizer) == 512 and tokenizer.tokenize("Москва 北京") == ["▁Москва", "▁北京"]
    backend = summarizer(multiscript_mt5)
    try:
        assert [g.text for g in backend.generate(DOCUMENTS, backend.default_options())] == SUMMARIES
    finally:
        backend.close()


def test_the_trimmed_model_keeps_arabic_english_and_the_special_pieces(multiscript_mt5, trimmed):
    before, after = spm_proto(multiscript_mt5 / "spiece.model"), spm_proto(trimmed / "spiece.model")
    pieces = [piece.piece for piece in after.pieces]
    assert [(p.piece, p.type) for p in after.pieces[:3]] == [(p.piece, p.type) for p in before.pieces[:3]] == [
        ("<pad>", after.pieces[0].CONTROL), ("</s>", after.pieces[0].CONTROL), ("<unk>", after.pieces[0].UNKNOWN)]
    assert not set(FOREIGN_PIECES) & set(pieces)
    assert pieces == [piece.piece for piece in before.pieces if piece.piece in set(pieces)]  # the old order
    scores = {piece.piece: piece.score for piece in before.pieces}
    assert all(piece.score == scores[piece.piece] for piece in after.pieces)
    assert after.trainer_spec.vocab_size == len(pieces)
    config = json.loads((trimmed / "config.json").read_text())
    manifest = read_manifest(trimmed)
    assert config["vocab_size"] == len(pieces) == manifest["vocab"]["kept"]
    assert manifest["vocab"]["removed"] == 512 - len(pieces) >= len(FOREIGN_PIECES)
    assert (config["pad_token_id"], config["eos_token_id"], config["decoder_start_token_id"]) == (0, 1, 0)
    assert manifest["source_model"] == str(multiscript_mt5) and len(manifest["source_fingerprint"]) == 64
    assert [entry["path"] for entry in manifest["corpus"]] == [str(path) for path in CORPUS]
    assert manifest["word_lists"]["ar"]["words"] == manifest["word_lists"]["en"]["words"] == 50_000
    # The XLSum layout stays: generation defaults in config.json, no generation_config.json.
    assert (config["num_beams"], config["no_repeat_ngram_size"]) == (4, 2)
    print(f"\ntiny multiscript mT5: kept {len(pieces)} of 512 rows")


def test_the_rebuilt_tokenizer_gives_the_corpus_the_same_pieces(multiscript_mt5, trimmed):
    import sentencepiece
    from transformers import AutoTokenizer

    lines = [line for path in CORPUS for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    lines += DOCUMENTS + SUMMARIES
    original, rebuilt = AutoTokenizer.from_pretrained(multiscript_mt5), AutoTokenizer.from_pretrained(trimmed)
    new_id = {token: i for i, token in enumerate(rebuilt.convert_ids_to_tokens(list(range(len(rebuilt)))))}
    for line in lines:
        old_ids, new_ids = original(line)["input_ids"], rebuilt(line)["input_ids"]
        assert rebuilt.convert_ids_to_tokens(new_ids) == original.convert_ids_to_tokens(old_ids)
        assert new_ids == [new_id[token] for token in original.convert_ids_to_tokens(old_ids)]
    spm_before = sentencepiece.SentencePieceProcessor(model_file=str(multiscript_mt5 / "spiece.model"))
    spm_after = sentencepiece.SentencePieceProcessor(model_file=str(trimmed / "spiece.model"))
    assert [spm_after.encode(line, out_type=str) for line in lines] == \
           [spm_before.encode(line, out_type=str) for line in lines]
    # Text of other scripts still tokenizes (to <unk>: the tiny model has no byte pieces), without failing.
    assert rebuilt.tokenize("Москва")


def test_sentinels_are_kept_and_every_row_follows_its_token(sentinel_mt5, tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    out = trim_vocab(str(sentinel_mt5), tmp_path / "trimmed", corpus_files=CORPUS, words_per_language=0).out_dir
    original, rebuilt = AutoTokenizer.from_pretrained(sentinel_mt5), AutoTokenizer.from_pretrained(out)
    sentinels = [f"<extra_id_{i}>" for i in range(6)]
    assert len(original) == 512 and min(original.convert_tokens_to_ids(sentinels)) == 506
    assert set(rebuilt.convert_tokens_to_ids(sentinels)) == set(range(len(rebuilt) - 6, len(rebuilt)))
    tokens = rebuilt.convert_ids_to_tokens(list(range(len(rebuilt))))
    assert not set(FOREIGN_PIECES) & set(tokens)
    old_rows = original.convert_tokens_to_ids(tokens)
    before, after = load_file(sentinel_mt5 / "model.safetensors"), load_file(out / "model.safetensors")
    for name in ("shared.weight", "lm_head.weight"):
        assert after[name].shape[0] == len(rebuilt) == read_manifest(out)["vocab"]["kept"]
        assert torch.equal(after[name], before[name][old_rows])
    assert {name: tensor.shape for name, tensor in after.items() if "weight" in name and name not in (
        "shared.weight", "lm_head.weight")} == {name: tensor.shape for name, tensor in before.items() if
                                                "weight" in name and name not in ("shared.weight", "lm_head.weight")}
    print(f"\ncorpus only (no word lists): kept {len(rebuilt)} of 512 rows")


@pytest.mark.parametrize("num_beams", [1, 4], ids=["greedy", "beam"])
def test_trimmed_summaries_equal_the_original(multiscript_mt5, trimmed, num_beams):
    """The memorised documents give the memorised summaries with the same scores; every sample sentence whose
    original output uses no removed piece gives the same text and token count, and a score no lower: removing
    pieces removes their probability mass, so each kept token's log-probability can only rise. On the tiny
    model's garbage outputs for other inputs that mass is large (up to 0.017 per token); on what it learned
    it is below 1e-5, as it should be on a real model's confident outputs (check-vocab measures it)."""
    inputs = DOCUMENTS + sample_sentences("summarization")
    original, cut = summarizer(multiscript_mt5), summarizer(trimmed)
    try:
        defaults = original.default_options()
        options = GenerationOptions(num_beams=num_beams, max_new_tokens=84, length_penalty=defaults.length_penalty,
                                    no_repeat_ngram_size=defaults.no_repeat_ngram_size)
        assert cut.default_options() == defaults
        want, got = original.generate(inputs, options), cut.generate(inputs, options)
        sequences, _ = original.on_model_thread(original.generate_tokens, inputs, options)
        kept = json.loads((trimmed / "config.json").read_text())["vocab_size"]
        removed_pieces = _removed_ids(multiscript_mt5, trimmed)
        comparable = [i for i, sequence in enumerate(sequences) if not set(sequence.tolist()) & removed_pieces]
    finally:
        original.close()
        cut.close()
    assert cut.info.extra["vocab_size"] == kept < 512
    assert [g.text for g in got[:len(DOCUMENTS)]] == SUMMARIES
    assert set(range(len(DOCUMENTS))) <= set(comparable)
    for i in comparable:
        assert (got[i].text, got[i].num_tokens, got[i].hit_max_length) == \
               (want[i].text, want[i].num_tokens, want[i].hit_max_length), inputs[i]
        assert got[i].score >= want[i].score - ROUNDING, inputs[i]
    for i in range(len(DOCUMENTS)):
        assert got[i].score == pytest.approx(want[i].score, abs=SCORE_ABS), inputs[i]
    gains = [got[i].score - want[i].score for i in comparable]
    print(f"\nnum_beams={num_beams}: {len(comparable)} of {len(inputs)} inputs' original outputs use no removed "
          f"piece, all the same text; score gain max {max(gains):.2g}, memorised max "
          f"{max(abs(got[i].score - want[i].score) for i in range(len(DOCUMENTS))):.2g}")


def _removed_ids(original: Path, trimmed: Path) -> set[int]:
    kept = {piece.piece for piece in spm_proto(trimmed / "spiece.model").pieces}
    pieces = spm_proto(original / "spiece.model").pieces
    return {i for i, piece in enumerate(pieces) if piece.piece not in kept}


def test_a_pytorch_model_bin_checkpoint_is_trimmed_too(multiscript_mt5, tmp_path):
    """XLSum's repo ships pytorch_model.bin, with the embedding stored under three tied names."""
    import torch
    from safetensors.torch import load_file

    source = Path(shutil.copytree(multiscript_mt5, tmp_path / "bin-checkpoint"))
    weights = load_file(source / "model.safetensors")
    shared = weights["shared.weight"]
    torch.save({**weights, "encoder.embed_tokens.weight": shared, "decoder.embed_tokens.weight": shared},
               source / "pytorch_model.bin")
    (source / "model.safetensors").unlink()
    # With the word lists: the sample article alone lacks pieces of a memorised summary ("طرابلس").
    out = trim_vocab(str(source), tmp_path / "trimmed", corpus_files=CORPUS).out_dir
    assert set(load_file(out / "model.safetensors")) == set(weights)  # the tied copies are not stored twice
    backend = summarizer(out)
    try:
        assert [g.text for g in backend.generate(DOCUMENTS, backend.default_options())] == SUMMARIES
    finally:
        backend.close()


def test_the_trimmed_model_is_served_like_any_summarizer(tiny_marian_dir, trimmed):
    from model_server.api.app import create_app

    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(trimmed))
    with LiveServer(create_app(settings)) as server, server.client() as client:
        response = client.post("/summarize", json={"text": DOCUMENTS[0]})
        models = client.get("/v1/models").json()
    assert response.status_code == 200, response.text
    assert response.json()["summary"]["text"] == SUMMARIES[0]
    assert response.json()["model"]["source"] == str(trimmed) and response.json()["model"]["test_model"] is True
    assert str(trimmed) in json.dumps(models)


def test_the_trimmed_model_converts_to_ctranslate2_and_summarises(trimmed, tmp_path):
    pytest.importorskip("ctranslate2")
    from model_server.backends.ct2_convert import convert

    converted = convert(str(trimmed), tmp_path / "ct2", "float32")
    backend = summarizer(trimmed, summarization_backend="ctranslate2", ct2_summarization_model_dir=converted,
                         ct2_compute_type="float32")
    try:
        got = backend.generate(DOCUMENTS, backend.default_options())
        greedy = backend.generate(DOCUMENTS, GenerationOptions(num_beams=1, max_new_tokens=84))
    finally:
        backend.close()
    assert backend.info.backend == "ctranslate2" and backend.info.test_model
    assert [g.text for g in got] == [g.text for g in greedy] == SUMMARIES


def test_trim_vocab_refuses_a_model_that_is_not_t5_family(tiny_marian_dir, tmp_path):
    from model_server.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["trim-vocab", str(tiny_marian_dir), str(tmp_path / "out")])
    assert caught.value.code == 1
    assert str(caught.value) == (
        f"model-server: trim-vocab works on mT5/T5-family summarizers (mt5, t5); '{tiny_marian_dir}' is a 'marian' "
        "model: give an mT5 model such as csebuetnlp/mT5_multilingual_XLSum")
    assert not (tmp_path / "out").exists()


def test_trim_vocab_replaces_only_its_own_output(multiscript_mt5, trimmed, tmp_path):
    with pytest.raises(ValueError, match="already exists; pass --force"):
        trim_vocab(str(multiscript_mt5), trimmed, words_per_language=0)
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="is not a trim-vocab output"):
        trim_vocab(str(multiscript_mt5), tmp_path / "other", force=True, words_per_language=0)
    assert (trimmed / MANIFEST_FILE).is_file()


def test_check_vocab_cli_reports_that_every_output_matches(multiscript_mt5, trimmed, tmp_path, capsys):
    from model_server.cli import main

    corpus = tmp_path / "documents.txt"
    corpus.write_text("\n".join(line for document in DOCUMENTS for line in document.splitlines()), encoding="utf-8")
    common = ["--summarization-model", str(multiscript_mt5), "--against", str(trimmed), "--device", "cpu",
              "--dtype", "float32", "--torch-threads", "1", "--models-dir", str(tmp_path), "--max-new-tokens", "84"]
    assert main(["check-vocab", str(corpus), "--json", *common]) == 0
    report = json.loads(capsys.readouterr().out)
    lines = corpus.read_text(encoding="utf-8").splitlines()
    assert (report["inputs"], report["exact_matches"], report["exact_match_rate"]) == (len(lines), len(lines), 1.0)
    assert report["differing"] == [] and report["token_count_diffs"] == 0
    assert report["score_abs_diff"]["max"] <= SCORE_ABS
    assert report["a"]["model"]["vocab_size"] == 512 > report["b"]["model"]["vocab_size"]
    assert report["options"]["num_beams"] == 4  # the model's own beam
    assert main(["check-vocab", str(corpus), "--num-beams", "1", *common]) == 0
    text = capsys.readouterr().out
    assert f"exact matches: {len(lines)}/{len(lines)} (100.0%)" in text and "--- input" not in text


def test_check_vocab_compares_two_dtypes_of_one_model(tiny_mt5_dir, tmp_path, capsys):
    from model_server.cli import main

    corpus = tmp_path / "documents.txt"
    corpus.write_text("\n".join(DOCUMENTS[2:]), encoding="utf-8")  # one line each
    status = main(["check-vocab", str(corpus), "--summarization-model", str(tiny_mt5_dir), "--dtype-a", "float32",
                   "--dtype-b", "bfloat16", "--device", "cpu", "--torch-threads", "1", "--models-dir", str(tmp_path),
                   "--num-beams", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert (report["a"]["model"]["dtype"], report["b"]["model"]["dtype"]) == ("float32", "bfloat16")
    assert report["a"]["model"]["name"] == report["b"]["model"]["name"] == str(tiny_mt5_dir)
    assert report["inputs"] == 2 and status == (0 if not report["differing"] else 1)
    assert report["b"]["label"] == "dtype bfloat16" and report["b"]["overrides"] == {"dtype": "bfloat16"}


def test_check_vocab_reports_every_differing_output():
    inputs = ["one", "two", "three"]
    a = [Generated("x", -0.5, 2, False), Generated("y", -0.25, 3, False), Generated("z", -1.0, 4, False)]
    b = [Generated("x", -0.5, 2, False), Generated("Y", -0.5, 3, False), Generated("z", -0.75, 5, False)]
    report = compare(inputs, a, b)
    assert (report["inputs"], report["exact_matches"], report["token_count_diffs"]) == (3, 1, 1)
    assert report["score_abs_diff"] == {"max": 0.25, "mean": pytest.approx(0.5 / 3)}
    assert [(d["index"], d["input"], d["a"]["text"], d["b"]["text"]) for d in report["differing"]] == [
        (1, "two", "y", "Y"), (2, "three", "z", "z")]
    full = {"task": "summarization", "options": {"num_beams": 1},
            "a": {"label": "A", "model": {"name": "m", "backend": "torch", "dtype": "float32", "vocab_size": 9}},
            "b": {"label": "B", "model": {"name": "t", "backend": "torch", "dtype": "float32", "vocab_size": 5}},
            **report}
    text = render_text(full)
    assert "exact matches: 1/3 (33.3%)" in text and "--- input 1: two" in text and "--- input 2: three" in text
