"""Decoding into the target vocabulary only (restrict_output_vocab) changes nothing the tiny Marian emits.

The tiny Marian is built like opus-mt: separate source/target sentencepiece models, one joint vocab.json,
trained on English targets only. With the restriction:
- greedy: token ids and texts equal the unrestricted ones wherever the unrestricted output uses no
  excluded (source-only) piece: the memorised sentences and the sample-article sentences counted below
  (all 26 of 26 here); beam search: the same, except where two hypotheses are so near a tie that the
  renormalisation decides between them (counted; one of the 26, 6e-4 apart, here), never on the memorised;
- scores are log-probs normalised over the target vocabulary. They equal, within 1e-5, those of the full
  model whose excluded logits are set to -inf (the definition of that normalisation), and they are never
  below the unrestricted ones (renormalising over a subset only raises a log-prob);
- no output, anywhere, contains an excluded id.
Both engines, greedy and beam search. The setting off is today's decoding: the model is left untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from model_server.backends.base import GenerationOptions
from model_server.backends.torch_backend import TorchSeq2SeqBackend
from model_server.backends.vocab_restriction import model_target_vocabulary, target_vocabulary_ids
from model_server.services import SUMMARIZATION_ARCHITECTURES, TRANSLATION_ARCHITECTURES, load_translation_backend
from model_server.text import normalize_text, segment
from model_server.tiny_models import MEMORISED_PAIRS
from tests.conftest import SAMPLE_AR, serve_services, tiny_settings

pytestmark = [pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses"),
              pytest.mark.usefixtures("one_torch_thread")]

MEMORISED = [source for source, _ in MEMORISED_PAIRS]
ARTICLE = [s.text for p in segment(normalize_text(SAMPLE_AR)) for s in p.sentences]
SOURCES = MEMORISED + ARTICLE
# 48 tokens: the two longest memorised outputs and most unseen ones are cut (the forced-EOS path is compared).
OPTIONS = {"greedy": GenerationOptions(num_beams=1, max_new_tokens=48),
           "beam4": GenerationOptions(num_beams=4, max_new_tokens=48)}
SCORE_TOLERANCE = 1e-5
# The largest renormalisation of a tiny-Marian output's mean log-prob is 0.0018: a beam hypothesis chosen only
# under restriction scored at most about that much below the unrestricted choice.
NEAR_TIE = 2e-3


def _torch_backend(model_dir: Path, restrict: bool) -> TorchSeq2SeqBackend:
    return TorchSeq2SeqBackend(name=str(model_dir), source=str(model_dir), task="translation",
                               architectures=TRANSLATION_ARCHITECTURES, device="cpu", dtype="float32", threads=1,
                               restrict_output_vocab=restrict)


def _masked_backend(model_dir: Path, kept: list[int]) -> TorchSeq2SeqBackend:
    """The reference: the full model with every excluded logit at -inf (a hook on its output projection)."""
    backend = _torch_backend(model_dir, restrict=False)
    mask = torch.full((backend.model.config.vocab_size,), float("-inf"))
    mask[kept] = 0.0
    backend.model.lm_head.register_forward_hook(lambda module, args, output: output + mask)
    return backend


@pytest.fixture(scope="module")
def kept(tiny_marian_dir) -> list[int]:
    return model_target_vocabulary(tiny_marian_dir)


@pytest.fixture(scope="module")
def full(tiny_marian_dir):
    backend = _torch_backend(tiny_marian_dir, restrict=False)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def restricted(tiny_marian_dir):
    backend = _torch_backend(tiny_marian_dir, restrict=True)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def masked(tiny_marian_dir, kept):
    backend = _masked_backend(tiny_marian_dir, kept)
    yield backend
    backend.close()


def _outputs(backend, options):
    """(Generated results, output ids per source without padding) for SOURCES in one batch."""
    results = backend.generate(SOURCES, options)
    sequences, _ = backend.on_model_thread(backend.generate_tokens, SOURCES, options)
    ids = [row[1:result.num_tokens + 1].tolist() for row, result in zip(sequences, results)]
    return results, ids


def _assert_unchanged_where_clean(want, got, clean, options, differs) -> None:
    """Where the full model used no excluded piece (`clean`): a renormalised (never lower) score and, greedy,
    the same output (the best token is kept, so it stays the best). Beam search ranks whole hypotheses, each
    raised by its own renormalisation: between near-tied ones the restricted search may choose the other."""
    flips = [i for i in clean if differs(i)]
    print(f"beams {options.num_beams}: {len(flips)} clean ones decoded differently (near-ties; scores "
          f"unrestricted/restricted: {[(want[i].score, got[i].score) for i in flips]})")
    for i in clean:
        assert got[i].score >= want[i].score - SCORE_TOLERANCE
        if i not in flips:
            assert (got[i].text, got[i].num_tokens, got[i].hit_max_length) == (
                want[i].text, want[i].num_tokens, want[i].hit_max_length)
    assert not flips if options.num_beams == 1 else all(got[i].score - want[i].score <= NEAR_TIE for i in flips)
    assert not set(flips) & set(range(len(MEMORISED)))


def _target_and_source_pieces(model_dir: Path) -> tuple[list[str], list[str]]:
    def pieces(name):
        sp = spm.SentencePieceProcessor(model_file=str(model_dir / name))
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if not (sp.is_control(i) or sp.is_unknown(i))]

    return pieces("target.spm"), pieces("source.spm")


# --- which ids are kept ---------------------------------------------------------------------------


def test_target_vocabulary_ids_are_the_target_pieces_plus_the_special_ids():
    vocab = {"</s>": 0, "<unk>": 1, "▁ال": 2, "▁the": 3, "s": 4, "<pad>": 5}
    assert target_vocabulary_ids(vocab, ["▁the", "s", "▁missing"], [5, 0, 5]) == [0, 3, 4, 5]
    assert target_vocabulary_ids(vocab, [], [1]) == [1]


def test_the_tiny_marians_kept_ids_exclude_exactly_its_source_only_pieces(tiny_marian_dir, kept):
    vocab = json.loads((tiny_marian_dir / "vocab.json").read_text(encoding="utf-8"))
    target, source = _target_and_source_pieces(tiny_marian_dir)
    specials = {vocab["</s>"], vocab["<unk>"], vocab["<pad>"]}
    assert kept == sorted({vocab[p] for p in target} | specials)
    excluded = set(vocab.values()) - set(kept)
    assert excluded == {vocab[p] for p in source} - {vocab[p] for p in target}
    print(f"\ntiny Marian: {len(kept)} of {len(vocab)} ids kept, {len(excluded)} source-only pieces excluded")
    assert excluded and len(kept) < len(vocab)


def test_no_restriction_without_a_separate_target_vocabulary(tiny_marian_dir, tiny_mt5_dir, tmp_path):
    assert model_target_vocabulary(tiny_mt5_dir) is None  # mT5: one spiece.model
    joint = tmp_path / "joint"
    shutil.copytree(tiny_marian_dir, joint)
    shutil.copyfile(joint / "source.spm", joint / "target.spm")  # a joint sentencepiece model
    assert model_target_vocabulary(joint) is None
    summarizer = TorchSeq2SeqBackend(name=str(tiny_mt5_dir), source=str(tiny_mt5_dir), task="summarization",
                                     architectures=SUMMARIZATION_ARCHITECTURES, device="cpu", dtype="float32",
                                     threads=1, restrict_output_vocab=True)
    try:
        assert summarizer.info.extra["output_vocab_size"] == summarizer.info.extra["vocab_size"]
    finally:
        summarizer.close()


# --- torch ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", OPTIONS)
def test_torch_restricted_decoding_is_the_full_models(full, restricted, masked, kept, mode):
    options = OPTIONS[mode]
    kept_ids = set(kept)
    want, want_ids = _outputs(full, options)
    got, got_ids = _outputs(restricted, options)
    reference, reference_ids = _outputs(masked, options)
    clean = [i for i, ids in enumerate(want_ids) if set(ids) <= kept_ids]
    print(f"\n{mode}: {len(clean) - len(MEMORISED)} of {len(ARTICLE)} sample-article sentences use no excluded "
          f"piece unrestricted (plus the {len(MEMORISED)} memorised ones)")
    assert set(range(len(MEMORISED))) <= set(clean)
    assert all(set(ids) <= kept_ids for ids in got_ids)
    # Every output, clean or not, is the full model's with excluded logits at -inf.
    assert got_ids == reference_ids
    assert [g.text for g in got] == [r.text for r in reference]
    assert [g.hit_max_length for g in got] == [r.hit_max_length for r in reference]
    for g, r in zip(got, reference):
        assert g.score == pytest.approx(r.score, abs=SCORE_TOLERANCE)
    _assert_unchanged_where_clean(want, got, clean, options, differs=lambda i: got_ids[i] != want_ids[i])
    for i, (source, result) in enumerate(zip(MEMORISED, got)):
        expected = dict(MEMORISED_PAIRS)[source]
        assert expected.startswith(result.text) if result.hit_max_length else result.text == expected


def test_eos_last_marian_remaps_its_special_ids(tmp_path):
    """eos near the end of the vocabulary and renormalize_logits (opus-mt-tc-big's layout): the reduced
    generation config's ids are remapped, not assumed, and outputs are the masked full model's."""
    from model_server.tiny_models import ensure_tiny_marian
    from tests.conftest import MODELS_DIR

    source = ensure_tiny_marian(MODELS_DIR / "tiny-marian-ar-en-eos-last", eos_last=True)
    kept = model_target_vocabulary(source)
    restricted, masked = _torch_backend(source, restrict=True), _masked_backend(source, kept)
    try:
        eos = restricted.model.generation_config.eos_token_id
        assert eos != 0 and restricted._reduced.generation_kwargs["eos_token_id"] == kept.index(eos)
        for options in OPTIONS.values():
            got, want = restricted.generate(SOURCES, options), masked.generate(SOURCES, options)
            assert [(g.text, g.num_tokens, g.hit_max_length) for g in got] == [
                (w.text, w.num_tokens, w.hit_max_length) for w in want]
            for g, w in zip(got, want):
                assert g.score == pytest.approx(w.score, abs=SCORE_TOLERANCE)
            assert [g.text for g in got[:len(MEMORISED)] if not g.hit_max_length] == [
                en for (_, en), g in zip(MEMORISED_PAIRS, got) if not g.hit_max_length]
    finally:
        restricted.close()
        masked.close()


def test_restricted_model_reports_its_output_vocabulary(full, restricted, kept):
    assert restricted.info.extra["output_vocab_size"] == len(kept)
    assert restricted.info.extra["vocab_size"] == full.info.extra["vocab_size"] == full.model.config.vocab_size
    assert restricted.model.lm_head.weight.shape[0] == restricted.model.final_logits_bias.shape[1] == len(kept)


def test_the_setting_off_leaves_the_model_as_loaded(tiny_marian_dir, full):
    backend = load_translation_backend(tiny_settings(tiny_marian_dir, restrict_output_vocab=False))
    try:
        model = backend.model
        assert model.lm_head.weight is model.model.shared.weight  # tied, full width, as loaded
        assert model.model.decoder.embed_tokens.weight is model.model.shared.weight
        assert backend.info.extra["output_vocab_size"] == backend.info.extra["vocab_size"]
        for options in OPTIONS.values():
            assert backend.generate(SOURCES, options) == full.generate(SOURCES, options)
    finally:
        backend.close()


def test_models_endpoint_reports_the_output_vocabulary(tiny_marian_dir, kept):
    from model_server.services import Services

    services = Services.load(tiny_settings(tiny_marian_dir))  # the default: restricted
    with serve_services(services) as server, server.client() as client:
        response = client.post("/translate", json={"texts": MEMORISED})
        assert response.status_code == 200, response.text
        assert [r["translation"] for r in response.json()["results"]] == [en for _, en in MEMORISED_PAIRS]
        extra = client.get("/v1/models").json()["models"][0]["extra"]
    vocab = json.loads((tiny_marian_dir / "vocab.json").read_text(encoding="utf-8"))
    assert (extra["output_vocab_size"], extra["vocab_size"]) == (len(kept), len(vocab))


# --- CTranslate2 ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tiny_marian_dir, tmp_path_factory) -> Path:
    pytest.importorskip("ctranslate2")
    from model_server.backends.ct2_convert import convert

    return convert(str(tiny_marian_dir), tmp_path_factory.mktemp("ct2") / "tiny-f32", "float32")


def _ct2_backend(model_dir: Path, tiny_marian_dir: Path, restrict: bool):
    from model_server.backends.ctranslate2_backend import CTranslate2Seq2SeqBackend

    return CTranslate2Seq2SeqBackend(name=str(tiny_marian_dir), model_dir=model_dir, task="translation",
                                     architectures=TRANSLATION_ARCHITECTURES, device="cpu", compute_type="float32",
                                     intra_threads=1, restrict_output_vocab=restrict)


def test_conversion_writes_the_target_vocabulary_as_a_vocabulary_map(converted, tiny_marian_dir, kept):
    from model_server.backends.ct2_convert import VMAP_FILE, read_metadata

    lines = (converted / VMAP_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and lines[0].startswith("\t")  # one always-on entry (empty source key)
    vocab = json.loads((tiny_marian_dir / "vocab.json").read_text(encoding="utf-8"))
    assert [vocab[token] for token in lines[0][1:].split(" ")] == kept
    assert read_metadata(converted)["output_vocab_size"] == len(kept)


@pytest.mark.parametrize("mode", OPTIONS)
def test_ctranslate2_vmap_decoding_equals_unrestricted_and_torch(converted, tiny_marian_dir, full, restricted,
                                                                  kept, mode):
    options = OPTIONS[mode]
    plain = _ct2_backend(converted, tiny_marian_dir, restrict=False)
    vmapped = _ct2_backend(converted, tiny_marian_dir, restrict=True)
    try:
        assert vmapped.info.extra["output_vocab_size"] == len(kept)
        assert plain.info.extra["output_vocab_size"] == plain.info.extra["vocab_size"]
        want, got = plain.generate(SOURCES, options), vmapped.generate(SOURCES, options)
    finally:
        plain.close()
        vmapped.close()
    _, full_ids = _outputs(full, options)
    clean = [i for i, ids in enumerate(full_ids) if set(ids) <= set(kept)]
    outputs = lambda results, i: (results[i].text, results[i].num_tokens)  # noqa: E731
    _assert_unchanged_where_clean(want, got, clean, options, differs=lambda i: outputs(got, i) != outputs(want, i))
    # CTranslate2 with its map is the restricted torch backend: every output, scores to float32 noise.
    torch_results = restricted.generate(SOURCES, options)
    assert [(g.text, g.num_tokens, g.hit_max_length) for g in got] == [
        (t.text, t.num_tokens, t.hit_max_length) for t in torch_results]
    for g, t in zip(got, torch_results):
        assert g.score == pytest.approx(t.score, abs=1e-4)


def test_a_conversion_without_a_map_decodes_unrestricted(converted, tiny_marian_dir, tmp_path, caplog):
    from model_server.backends.ct2_convert import METADATA_FILE, VMAP_FILE

    older = tmp_path / "older"
    shutil.copytree(converted, older)
    (older / VMAP_FILE).unlink()
    metadata = json.loads((older / METADATA_FILE).read_text(encoding="utf-8"))
    del metadata["output_vocab_size"]  # what conversions before restrict_output_vocab recorded
    (older / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")
    with caplog.at_level("INFO", logger="model_server.backends.ctranslate2_backend"):
        backend = _ct2_backend(older, tiny_marian_dir, restrict=True)
    plain = _ct2_backend(converted, tiny_marian_dir, restrict=False)
    try:
        assert backend.info.extra["output_vocab_size"] == backend.info.extra["vocab_size"]
        assert sum("no vocabulary map" in r.getMessage() for r in caplog.records) == 1
        assert backend.generate(SOURCES, OPTIONS["greedy"]) == plain.generate(SOURCES, OPTIONS["greedy"])
    finally:
        backend.close()
        plain.close()


def test_convert_on_start_reconverts_a_cache_entry_without_a_map_once(tiny_marian_dir, tmp_path, kept):
    from model_server.backends.ct2_convert import METADATA_FILE, VMAP_FILE

    settings = tiny_settings(tiny_marian_dir, backend="ctranslate2", ct2_convert_on_start=True,
                             ct2_cache_dir=tmp_path / "cache")
    load_translation_backend(settings).close()
    [entry] = (tmp_path / "cache").iterdir()
    (entry / VMAP_FILE).unlink()  # as an older model-server left it
    metadata = json.loads((entry / METADATA_FILE).read_text(encoding="utf-8"))
    del metadata["output_vocab_size"]
    (entry / METADATA_FILE).write_text(json.dumps(metadata), encoding="utf-8")
    backend = load_translation_backend(settings)
    backend.close()
    assert list((tmp_path / "cache").iterdir()) == [entry] and (entry / VMAP_FILE).is_file()
    assert backend.info.extra["output_vocab_size"] == len(kept)
    stamp = (entry / METADATA_FILE).stat().st_mtime_ns
    load_translation_backend(settings).close()
    assert (entry / METADATA_FILE).stat().st_mtime_ns == stamp
