"""The CTranslate2 backend is the torch backend, faster: same texts, token counts and scores on the tiny
models (greedy and beam search, mixed-length batches), conversions that know their source, and the
same HTTP API on top."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("ctranslate2")

from model_server.backends.base import GenerationOptions  # noqa: E402
from model_server.backends.ct2_convert import METADATA_FILE, convert, read_metadata, verify_converted  # noqa: E402
from model_server.backends.ctranslate2_backend import (  # noqa: E402
    CTranslate2Seq2SeqBackend, choose_compute_type, import_ctranslate2, resolve_compute_type)
from model_server.backends.hardware import cpu_features  # noqa: E402
from model_server.errors import ServiceError  # noqa: E402
from model_server.services import Services, load_summarization_backend, load_translation_backend  # noqa: E402
from model_server.text import normalize_text, segment  # noqa: E402
from model_server.tiny_models import MEMORISED_PAIRS, MEMORISED_SUMMARIES  # noqa: E402
from tests.conftest import MODELS_DIR, SAMPLE_AR, serve_services, tiny_settings  # noqa: E402

MEMORISED = dict(MEMORISED_PAIRS)
# Memorised sentences and unseen ones of very different lengths (padding); with max_new_tokens=48 some
# unseen ones run into the limit, so truncation is compared too.
SENTENCES = [ar for ar, _ in MEMORISED_PAIRS] + [
    s.text for p in segment(normalize_text(SAMPLE_AR)) for s in p.sentences][:14]


def ct2_backend(model_dir: Path, name: Path, compute_type: str = "float32", **kwargs) -> CTranslate2Seq2SeqBackend:
    kwargs.setdefault("architectures", ("marian",))
    kwargs.setdefault("task", "translation")
    kwargs.setdefault("restrict_output_vocab", True)  # as the service loads it, like tiny_backend
    return CTranslate2Seq2SeqBackend(name=str(name), model_dir=model_dir, device="cpu", compute_type=compute_type,
                                     intra_threads=1, **kwargs)


@pytest.fixture(scope="module")
def converted_f32(tiny_marian_dir, tmp_path_factory) -> Path:
    return convert(str(tiny_marian_dir), tmp_path_factory.mktemp("ct2") / "tiny-f32", "float32")


@pytest.fixture(scope="module")
def ct2_f32(converted_f32, tiny_marian_dir) -> CTranslate2Seq2SeqBackend:
    return ct2_backend(converted_f32, tiny_marian_dir)


def assert_same_results(got, want, score_abs=1e-3) -> None:
    assert [g.text for g in got] == [w.text for w in want]
    assert [g.num_tokens for g in got] == [w.num_tokens for w in want]
    assert [g.hit_max_length for g in got] == [w.hit_max_length for w in want]
    for g, w in zip(got, want):
        assert g.score == pytest.approx(w.score, abs=score_abs)


# --- equivalence with the torch backend ---------------------------------------------------------


@pytest.mark.parametrize(("num_beams", "length_penalty"), [(1, 1.0), (4, 1.0), (4, 0.6)])
def test_float32_conversion_reproduces_the_torch_backend(tiny_backend, ct2_f32, num_beams, length_penalty):
    options = GenerationOptions(num_beams=num_beams, max_new_tokens=48, length_penalty=length_penalty)
    want = tiny_backend.generate(SENTENCES, options)
    got = ct2_f32.generate(SENTENCES, options)
    # Scores agree to ~1e-6 here; 1e-3 leaves room for other BLAS kernels.
    assert_same_results(got, want)
    for source, result in zip(SENTENCES, got):
        if source in MEMORISED:  # the two longest are cut at 48 tokens
            assert (MEMORISED[source].startswith(result.text) if result.hit_max_length
                    else result.text == MEMORISED[source])
    assert sum(w.hit_max_length for w in want) >= 2  # the cut-output path (forced EOS emulation) is compared too


@pytest.mark.parametrize("num_beams", [1, 4])
def test_a_batch_split_over_replicas_gives_the_same_results(converted_f32, tiny_marian_dir, ct2_f32, num_beams):
    """inter_threads 2: each batch is split evenly over two replicas that run in parallel (the auto layout
    on small CPUs); every output, in input order, equals the one-replica backend's."""
    split = ct2_backend(converted_f32, tiny_marian_dir, inter_threads=2)
    assert split.split_size(len(SENTENCES)) == -(-len(SENTENCES) // 2)
    assert split.split_size(1) == 1 and ct2_f32.split_size(len(SENTENCES)) == 0
    options = GenerationOptions(num_beams=num_beams, max_new_tokens=48)
    # 2e-6: scores are rounded to 6 decimals, so float noise between the two paddings can show as 1e-6 (it did
    # with the vocabulary map: -0.082395 vs -0.082396).
    assert_same_results(split.generate(SENTENCES, options), ct2_f32.generate(SENTENCES, options), score_abs=2e-6)


def test_parallel_calls_run_one_replica_each_and_give_the_same_results(converted_f32, tiny_marian_dir, ct2_f32):
    """The service runs one batch per replica at once (parallel=True): calls from two threads at the same
    time, each on its own replica, return what one serial replica returns, in order, every time."""
    from concurrent.futures import ThreadPoolExecutor

    split = ct2_backend(converted_f32, tiny_marian_dir, inter_threads=2)
    assert split.parallel_calls == 2 and ct2_f32.parallel_calls == 1
    # CTranslate2 cutting batches itself (ct2_max_batch_size) spreads them over the replicas: one call at a time.
    assert ct2_backend(converted_f32, tiny_marian_dir, inter_threads=2, max_batch_size=4).parallel_calls == 1
    options = GenerationOptions(num_beams=4, max_new_tokens=48)
    halves = [SENTENCES[0::2], SENTENCES[1::2]]
    want = [ct2_f32.generate(half, options) for half in halves]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for _ in range(3):
            got = list(pool.map(lambda half: split.generate(half, options, parallel=True), halves))
            for g, w in zip(got, want):
                assert_same_results(g, w, score_abs=2e-6)


def test_http_clients_at_once_are_served_by_parallel_batches(converted_f32, tiny_marian_dir):
    """Two replicas: the batcher runs two batches at once (/v1/models says so), and 14 clients sending at
    the same time each get their own sentence's translation (the memorised ones, in turn)."""
    from concurrent.futures import ThreadPoolExecutor

    settings = tiny_settings(tiny_marian_dir, backend="ctranslate2", ct2_model_dir=converted_f32,
                             ct2_compute_type="float32", ct2_inter_threads=2, ct2_intra_threads=1)
    services = Services.load(settings)
    sentences = [list(MEMORISED)[i % len(MEMORISED)] for i in range(14)]
    with serve_services(services) as server:
        def translate(text):
            with server.client() as client:
                response = client.post("/translate", json={"texts": [text]})
                assert response.status_code == 200, response.text
                return response.json()["results"][0]["translation"]

        with ThreadPoolExecutor(max_workers=len(sentences)) as pool:
            got = list(pool.map(translate, sentences))
        with server.client() as client:
            batching = client.get("/v1/models").json()["batching"]["translation"]
    assert got == [MEMORISED[text] for text in sentences]
    assert batching["parallel_batches"] == 2 and batching["segments"] == len(sentences)
    assert batching["batches"] >= 2  # with two idle slots the first batch takes at most half of what waits


def test_the_auto_layout_is_loaded_and_reported(tiny_marian_dir, converted_f32):
    """ct2_inter_threads/ct2_intra_threads 0 (the defaults) load the layout ct2_thread_layout picks for the
    usable cores, and /v1/models (ModelInfo.extra) says which."""
    from model_server.backends.hardware import ct2_thread_layout, usable_cpus
    from model_server.services import load_translation_backend

    settings = tiny_settings(tiny_marian_dir, backend="ctranslate2", ct2_model_dir=converted_f32)
    backend = load_translation_backend(settings)
    inter, intra = ct2_thread_layout("cpu", usable_cpus())
    assert (backend.info.extra["inter_threads"], backend.info.extra["intra_threads"]) == (inter, intra)
    assert backend.translator.num_translators == inter


def test_model_facts_match_the_torch_backend(tiny_backend, ct2_f32):
    assert ct2_f32.default_options() == tiny_backend.default_options()
    assert [ct2_f32.count_tokens(s) for s in SENTENCES] == [tiny_backend.count_tokens(s) for s in SENTENCES]
    assert ct2_f32.max_input_tokens == tiny_backend.max_input_tokens
    info = ct2_f32.info
    assert (info.backend, info.dtype, info.architecture, info.test_model) == ("ctranslate2", "float32", "marian", True)
    assert info.extra["eos_token_id"] == tiny_backend.info.extra["eos_token_id"]


def test_int8_outputs_stay_aligned_and_memorised_pairs_exact(converted_f32, tiny_marian_dir, tmp_path):
    int8_dir = convert(str(tiny_marian_dir), tmp_path / "tiny-int8", "int8")
    backend = ct2_backend(int8_dir, tiny_marian_dir, compute_type="int8")
    assert backend.info.dtype == "int8_float32"  # what CTranslate2 runs for int8 on cpu
    assert read_metadata(int8_dir)["quantization"] == backend.info.extra["requested_compute_type"] == "int8"
    options = GenerationOptions(num_beams=1, max_new_tokens=96)  # room for the longest memorised pair
    for order in (SENTENCES, SENTENCES[::-1]):
        results = backend.generate(order, options)
        assert len(results) == len(order)
        for source, result in zip(order, results):
            assert 1 <= result.num_tokens <= 96 and result.score <= 0
            if source in MEMORISED:  # int8 rounding moves scores, not what the model memorised
                assert result.text == MEMORISED[source]
    # float32 weights quantized at load time (what ct2_compute_type=int8 does with any conversion).
    on_load = ct2_backend(converted_f32, tiny_marian_dir, compute_type="int8")
    assert [r.text for r in on_load.generate(list(MEMORISED), options)] == list(MEMORISED.values())


def test_special_ids_come_from_the_model(tmp_path):
    """eos is not id 0 here: any hard-coded special id would break decoding or the EOS checks."""
    from model_server.backends.torch_backend import TorchSeq2SeqBackend
    from model_server.tiny_models import ensure_tiny_marian

    source = ensure_tiny_marian(MODELS_DIR / "tiny-marian-ar-en-eos-last", eos_last=True)
    backend = ct2_backend(convert(str(source), tmp_path / "eos-last", "float32"), source)
    torch_backend = TorchSeq2SeqBackend(name=str(source), source=str(source), task="translation",
                                        architectures=("marian",), device="cpu", dtype="float32",
                                        restrict_output_vocab=True)
    assert backend.info.extra["output_vocab_size"] == torch_backend.info.extra["output_vocab_size"]
    assert backend.info.extra["eos_token_id"] == torch_backend.info.extra["eos_token_id"] != 0
    options = GenerationOptions(num_beams=1, max_new_tokens=48)
    assert_same_results(backend.generate(SENTENCES, options), torch_backend.generate(SENTENCES, options))


def test_mt5_summariser_converts_and_matches_torch(tmp_path):
    from model_server.backends.torch_backend import TorchSeq2SeqBackend
    from model_server.tiny_models import MEMORISED_SUMMARIES, ensure_tiny_mt5

    try:
        source = ensure_tiny_mt5(MODELS_DIR / "tiny-mt5-sum")
    except (RuntimeError, ImportError, NotImplementedError) as exc:  # pragma: no cover - builder unfinished
        pytest.skip(f"tiny mT5 not available: {exc}")
    kwargs = dict(task="summarization", architectures=("mt5",))
    backend = ct2_backend(convert(str(source), tmp_path / "mt5", "float32"), source, **kwargs)
    torch_backend = TorchSeq2SeqBackend(name=str(source), source=str(source), device="cpu", dtype="float32", **kwargs)
    defaults = backend.default_options()  # XLSum's: beam 4, length_penalty 0.6, no_repeat_ngram_size 2
    assert defaults == torch_backend.default_options() and defaults.num_beams == 4
    documents = [document for document, _ in MEMORISED_SUMMARIES]
    for options in (defaults, GenerationOptions(num_beams=1, max_new_tokens=84)):
        got = backend.generate(documents, options)
        assert [g.text for g in got] == [summary for _, summary in MEMORISED_SUMMARIES]
        # 1e-2: with no_repeat_ngram_size, transformers' beam search does not renormalise after banning
        # tokens and CTranslate2 does (about 1e-3 apart here).
        assert_same_results(got, torch_backend.generate(documents, options), score_abs=1e-2)


# --- conversion ---------------------------------------------------------------------------------


def test_conversion_is_self_contained_and_records_its_source(tiny_marian_dir, tmp_path):
    source = Path(shutil.copytree(tiny_marian_dir, tmp_path / "opus-copy"))
    converted = convert(str(source), tmp_path / "converted", "float32")
    metadata = json.loads((converted / METADATA_FILE).read_text())
    assert metadata["source_model"] == str(source) and metadata["architecture"] == "marian"
    assert metadata["quantization"] == "float32" and metadata["ctranslate2_version"] == import_ctranslate2().__version__
    assert len(metadata["source_fingerprint"]) == 64
    assert {"config.json", "tokenizer_config.json", "vocab.json", "source.spm", "target.spm"} <= {
        p.name for p in (converted / "hf").iterdir()}
    # A copied model keeps its fingerprint: the check is about contents, not paths.
    assert verify_converted(converted, str(tiny_marian_dir), MODELS_DIR) == converted
    shutil.rmtree(source)  # only the converted directory is deployed
    backend = ct2_backend(converted, source)
    assert backend.generate(["شكرا جزيلا."], GenerationOptions())[0].text == "Thank you very much."
    # Without the source files the recorded name must match.
    assert verify_converted(converted, str(source), MODELS_DIR) == converted
    with pytest.raises(ServiceError, match="org/another-model"):
        verify_converted(converted, "org/another-model", MODELS_DIR)


def test_server_refuses_a_conversion_of_another_model(tiny_marian_dir, tmp_path):
    other = Path(shutil.copytree(tiny_marian_dir, tmp_path / "retrained"))
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "init_std": 0.03}))  # any change of the files
    converted = convert(str(other), tmp_path / "converted", "float32")
    settings = tiny_settings(tiny_marian_dir, backend="ctranslate2", ct2_model_dir=converted)
    with pytest.raises(ServiceError) as excinfo:
        load_translation_backend(settings)
    assert excinfo.value.code == "model_unavailable"
    assert str(other) in excinfo.value.message and str(tiny_marian_dir) in excinfo.value.message
    assert "model-server convert" in excinfo.value.message


def test_conversion_errors_are_clear(tiny_marian_dir, tmp_path):
    with pytest.raises(ServiceError, match="does not exist"):
        convert(str(tmp_path / "missing"), tmp_path / "out", "int8")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ServiceError, match="architecture 'bert' is not supported"):
        convert(str(bert), tmp_path / "out", "int8")
    with pytest.raises(ServiceError, match="unknown quantization"):
        convert(str(tiny_marian_dir), tmp_path / "out", "int4")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ServiceError, match="--force"):
        convert(str(tiny_marian_dir), tmp_path / "taken", "float32")
    with pytest.raises(ServiceError, match="refusing to replace"):
        convert(str(tiny_marian_dir), tmp_path / "taken", "float32", force=True)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".*converting*"))  # failed conversions leave nothing behind
    with pytest.raises(ServiceError, match="not a model-server conversion"):
        read_metadata(tmp_path / "taken")
    with pytest.raises(ServiceError) as excinfo:
        load_translation_backend(tiny_settings(tiny_marian_dir, backend="ctranslate2", ct2_model_dir=tmp_path / "no"))
    assert excinfo.value.code == "model_unavailable" and "does not exist" in excinfo.value.message


def test_cli_convert(tiny_marian_dir, tmp_path, capsys):
    from model_server.cli import main

    assert main(["convert", str(tiny_marian_dir), str(tmp_path / "out"), "--quantization", "float32"]) == 0
    assert read_metadata(tmp_path / "out")["quantization"] == "float32"
    assert "MODEL_SERVER_CT2_MODEL_DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="already exists"):
        main(["convert", str(tiny_marian_dir), str(tmp_path / "out")])


def test_convert_on_start_converts_once_into_the_cache(tiny_marian_dir, tmp_path):
    settings = tiny_settings(tiny_marian_dir, backend="ctranslate2", ct2_convert_on_start=True,
                             ct2_cache_dir=tmp_path / "cache")
    first = load_translation_backend(settings)
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("tiny-marian-ar-en-int8-")
    assert (first.info.extra["requested_compute_type"], first.info.extra["quantization"]) == ("int8", "int8")
    stamp = (entries[0] / METADATA_FILE).stat().st_mtime_ns
    load_translation_backend(settings)
    assert list((tmp_path / "cache").iterdir()) == entries
    assert (entries[0] / METADATA_FILE).stat().st_mtime_ns == stamp


def test_convert_on_start_converts_the_summarizer_too(tiny_marian_dir, tiny_mt5_dir, tmp_path):
    """backend=torch, summarization_backend=ctranslate2: only mT5 lands in the cache, int8 on cpu (auto)."""
    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(tiny_mt5_dir),
                             summarization_backend="ctranslate2", ct2_convert_on_start=True,
                             ct2_cache_dir=tmp_path / "cache", summary_max_input_tokens=256)
    services = Services.load(settings)
    try:
        translation, summarization = services.translation.backend.info, services.summarization.backend.info
    finally:
        asyncio.run(services.close())
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("tiny-mt5-sum-int8-")
    assert read_metadata(entries[0])["architecture"] == "mt5"
    assert translation.backend == "torch"
    assert (summarization.backend, summarization.task, summarization.dtype) == ("ctranslate2", "summarization",
                                                                                "int8_float32")
    assert summarization.extra["quantization"] == "int8" and summarization.source == str(entries[0])
    assert summarization.max_input_tokens == 256  # summary_max_input_tokens, not max_input_tokens
    stamp = (entries[0] / METADATA_FILE).stat().st_mtime_ns
    again = load_summarization_backend(settings)  # the next start reuses the conversion
    try:
        assert list((tmp_path / "cache").iterdir()) == entries
        assert (entries[0] / METADATA_FILE).stat().st_mtime_ns == stamp
        documents = [document for document, _ in MEMORISED_SUMMARIES]
        results = again.generate(documents, again.default_options())
        # int8 moves the tiny mT5's numbers enough to change a token here and there (one summary repeats a
        # word), so only the shape is checked; float32 equality is tested over HTTP below.
        assert len(results) == len(documents)
        assert all(r.text and not r.hit_max_length and r.score <= 0 for r in results)
    finally:
        again.close()


def test_summarizer_auto_compute_type_never_runs_float16():
    assert resolve_compute_type("auto", "cpu", "summarization") == "int8"  # int8 weights, float32 activations
    assert resolve_compute_type("auto", "cpu", "translation") == "int8"
    if import_ctranslate2().get_cuda_device_count() == 0:
        pytest.skip("no CUDA device for the cuda half")
    supported = import_ctranslate2().get_supported_compute_types("cuda")
    want = "int8_bfloat16" if "int8_bfloat16" in supported else "int8_float32"
    assert resolve_compute_type("auto", "cuda", "summarization") == want
    assert resolve_compute_type("auto", "cuda", "translation") == "int8_float16"


def test_a_conversion_of_the_translation_model_is_refused_as_summarizer(tiny_marian_dir, tiny_mt5_dir,
                                                                        converted_f32):
    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(tiny_mt5_dir),
                             summarization_backend="ctranslate2", ct2_summarization_model_dir=converted_f32)
    with pytest.raises(ServiceError) as excinfo:
        load_summarization_backend(settings)
    assert excinfo.value.message.startswith("summarization model: ")
    assert str(tiny_marian_dir) in excinfo.value.message and str(tiny_mt5_dir) in excinfo.value.message


# --- settings and installation ------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "message"), [
    ({"device": "cpu", "ct2_compute_type": "float16"}, "needs device=cuda"),
    ({"device": "cpu", "ct2_compute_type": "int8_float16"}, "needs device=cuda"),
    ({"backend": "ctranslate2"}, "needs ct2_model_dir"),
    ({"summarization_backend": "ctranslate2"},
     r"summarization_backend=ctranslate2 needs ct2_summarization_model_dir .* or ct2_convert_on_start"),
    ({"summarization_backend": "ctranslate2", "backend": "ctranslate2", "ct2_model_dir": "x"},
     "summarization_backend=ctranslate2 needs ct2_summarization_model_dir"),  # the translation dir is not mT5's
])
def test_contradictory_ct2_settings_fail_at_start(overrides, message):
    from pydantic import ValidationError

    from model_server.settings import Settings

    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)


def test_summarization_backend_settings_that_start():
    from model_server.settings import Backend, Settings

    assert Settings().summarization_backend is Backend.torch  # existing deployments keep torch
    # Translation only: the summarizer's engine is never loaded, so it needs no conversion.
    assert not Settings(summarization_backend="ctranslate2", summarization_enabled=False).summarization_enabled
    both = Settings(backend="ctranslate2", summarization_backend="ctranslate2", ct2_convert_on_start=True)
    assert both.ct2_model_dir is None and both.ct2_summarization_model_dir is None
    # A converted directory wins for its model; convert-on-start covers the model without one.
    mixed = Settings(backend="ctranslate2", ct2_model_dir="opus-ct2", summarization_backend="ctranslate2",
                     ct2_convert_on_start=True)
    assert mixed.ct2_model_dir is not None and mixed.ct2_summarization_model_dir is None


def test_loading_a_ctranslate2_summarizer_without_a_conversion_says_which_settings_are_missing():
    """CLI summary commands load the summarizer even with summarization disabled (which skips validation)."""
    from model_server.errors import ServiceError
    from model_server.settings import Settings

    settings = Settings(summarization_backend="ctranslate2", summarization_enabled=False)
    with pytest.raises(ServiceError, match="ct2_summarization_model_dir .* or ct2_convert_on_start") as raised:
        load_summarization_backend(settings)
    assert raised.value.code == "model_unavailable"


def test_summarization_backend_is_a_cli_flag(tmp_path):
    from model_server.cli import _settings_from, build_parser

    args = build_parser().parse_args(["serve", "--summarization-backend", "ctranslate2",
                                      "--ct2-summarization-model-dir", str(tmp_path)])
    settings = _settings_from(args)
    assert (settings.summarization_backend.value, settings.ct2_summarization_model_dir) == ("ctranslate2", tmp_path)
    with pytest.raises(SystemExit, match="summarization_backend=ctranslate2 needs ct2_summarization_model_dir"):
        _settings_from(build_parser().parse_args(["serve", "--summarization-backend", "ctranslate2"]))


def test_missing_ctranslate2_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import now raises ImportError
    with pytest.raises(ServiceError, match=r"pip install 'model-server\[ct2\]'"):
        import_ctranslate2()


# --- HTTP ---------------------------------------------------------------------------------------


def test_http_translate_and_models_on_ctranslate2(tiny_marian_dir, converted_f32):
    settings = tiny_settings(tiny_marian_dir, backend="ctranslate2", ct2_model_dir=converted_f32)
    services = Services.load(settings)  # ct2_compute_type auto: int8 on cpu, quantized at load time
    with serve_services(services) as server, server.client() as client:
        response = client.post("/translate", json={"texts": list(MEMORISED)})
        assert response.status_code == 200, response.text
        assert [r["translation"] for r in response.json()["results"]] == list(MEMORISED.values())
        listing = client.get("/v1/models").json()
    models = listing["models"]
    assert [(m["backend"], m["dtype"], m["extra"]["requested_compute_type"]) for m in models] == [
        ("ctranslate2", "int8_float32", "int8")]
    # What auto chose and why, and the CPU flags it was chosen from (CTranslate2 4.x offers no bf16 on cpu).
    precision = models[0]["extra"]["precision"]
    assert (precision["requested"], precision["chosen"]) == ("auto", "int8_float32")
    assert precision["reason"] == choose_compute_type(cpu_features().flags, "cpu",
                                                      import_ctranslate2().get_supported_compute_types("cpu"))[1]
    assert precision["reason"].startswith("int8 weights, float32 activations")
    assert listing["hardware"] == cpu_features().describe()


def test_http_summarize_on_ctranslate2_matches_torch(tiny_marian_dir, tiny_mt5_dir, tmp_path, capsys):
    from model_server.cli import main

    assert main(["convert", str(tiny_mt5_dir), str(tmp_path / "mt5-f32"), "--quantization", "float32"]) == 0
    assert f"MODEL_SERVER_CT2_SUMMARIZATION_MODEL_DIR={tmp_path / 'mt5-f32'}" in capsys.readouterr().err
    common = dict(summarization_enabled=True, summarization_model=str(tiny_mt5_dir), summary_max_input_tokens=256,
                  max_input_tokens=64, max_body_bytes=200_000, max_text_chars=20_000)
    requests = [{"text": MEMORISED_SUMMARIES[0][0]}, {"text": MEMORISED_SUMMARIES[1][0], "lang": "en"},
                {"text": SAMPLE_AR}]  # the sample article needs several chunks of at most 256 tokens
    answers = {}
    for backend, extra in [("torch", {}), ("ctranslate2", {"ct2_summarization_model_dir": tmp_path / "mt5-f32",
                                                           "ct2_compute_type": "float32"})]:
        settings = tiny_settings(tiny_marian_dir, summarization_backend=backend, **common, **extra)
        with serve_services(Services.load(settings)) as server, server.client() as client:
            bodies = []
            for request in requests:
                response = client.post("/summarize", json=request)
                assert response.status_code == 200, response.text
                bodies.append(response.json())
            models = client.get("/v1/models").json()["models"]
        answers[backend] = bodies
        assert [(m["task"], m["backend"]) for m in models] == [("translation", "torch"), ("summarization", backend)]
        assert [m["max_input_tokens"] for m in models] == [64, 256]
        assert [b["model"]["backend"] for b in bodies] == [backend] * len(requests)
    torch_bodies, ct2_bodies = answers["torch"], answers["ctranslate2"]
    assert [b["summary"]["text"] for b in ct2_bodies[:2]] == [summary for _, summary in MEMORISED_SUMMARIES[:2]]
    assert ct2_bodies[2]["long_article"]["chunked"] and ct2_bodies[2]["long_article"]["chunks"] > 1
    assert [b["summary"] for b in ct2_bodies] == [b["summary"] for b in torch_bodies]
    assert ct2_bodies[0]["model"]["dtype"] == "float32"
