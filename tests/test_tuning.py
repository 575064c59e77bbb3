"""`model-server tune` and the tuning file: the choice rule and the fingerprint (pure), the file format,
the CLI end to end on the tiny model (a real subprocess, real generate), and the server applying the entry
(/v1/models over loopback) unless a limit is set explicitly or the fingerprint differs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from model_server.backends.beam_attention import base_implementation
from model_server.tuning import (batch_of, sample_sentences, LIMIT_NAMES, Measurement, TuningFileError, choose_batch_size, fingerprint,
                                 limits_for, read_entries, resolve_limits, write_entry)
from tests.conftest import ROOT, serve_services, tiny_settings

# What the CLI is given and the in-process settings repeat, so both fingerprints agree.
TUNED = dict(device="cpu", dtype="float32", torch_threads=1, num_beams=1)


def measured(*rows: tuple[int, float, float]) -> list[Measurement]:
    return [Measurement(size, seconds, tokens_per_s) for size, seconds, tokens_per_s in rows]


# --- the choice rule --------------------------------------------------------------------------------------

def test_the_smallest_batch_within_tolerance_of_the_best_is_chosen():
    rows = measured((1, 0.1, 100), (8, 0.3, 500), (16, 0.5, 640), (32, 0.9, 660), (64, 2.0, 600))
    assert choose_batch_size(rows, max_latency_s=5, tolerance=0.05) == 16  # 640 >= 0.95 x 660
    assert choose_batch_size(rows, max_latency_s=5, tolerance=0.0) == 32


def test_the_latency_bound_excludes_slow_batches_even_when_fastest():
    rows = measured((1, 0.1, 100), (8, 0.3, 500), (16, 0.5, 640), (32, 6.0, 900))
    assert choose_batch_size(rows, max_latency_s=5) == 16
    assert choose_batch_size(rows, max_latency_s=0.4) == 8


def test_without_any_batch_under_the_bound_the_smallest_is_chosen():
    assert choose_batch_size(measured((4, 7.0, 50), (1, 6.0, 20)), max_latency_s=5) == 1
    with pytest.raises(ValueError):
        choose_batch_size([], max_latency_s=5)


def test_limits_count_hypotheses_and_padded_tokens_with_headroom():
    assert limits_for(16, 4, 50) == {"max_batch_size": 16, "max_batch_hypotheses": 64, "max_batch_tokens": 6400}
    assert limits_for(8, 1, 30, headroom=1.5) == {"max_batch_size": 8, "max_batch_hypotheses": 8,
                                                  "max_batch_tokens": 360}
    assert limits_for(1, 1, 3)["max_batch_tokens"] == 64  # never below what one segment can be


# --- the fingerprint --------------------------------------------------------------------------------------

COMPONENTS = {"model": "Helsinki-NLP/opus-mt-ar-en", "model_files": "0123abcd", "engine": "torch",
              "precision": "float32", "num_beams": 4, "threads": "2", "device": "cpu", "output_vocab_size": 31419,
              "hardware": "cpu: AMD EPYC 9R14; flags avx2 avx512f avx512_bf16; 2 cpus"}


def test_the_fingerprint_is_stable_and_ignores_key_order():
    assert fingerprint(COMPONENTS) == fingerprint(dict(reversed(list(COMPONENTS.items()))))
    assert fingerprint(COMPONENTS) == fingerprint(json.loads(json.dumps(COMPONENTS)))


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_the_fingerprint_changes_with_each_component(name):
    changed = {**COMPONENTS, name: 2 if name == "num_beams" else f"{COMPONENTS[name]}-other"}
    assert fingerprint(changed) != fingerprint(COMPONENTS)


def test_the_model_files_digest_changes_with_a_file_size(tmp_path):
    from model_server.tuning import files_digest

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    before = files_digest(str(tmp_path))
    assert files_digest(str(tmp_path)) == before
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    assert files_digest(str(tmp_path)) != before
    assert files_digest("Helsinki-NLP/opus-mt-ar-en") == "hub:Helsinki-NLP/opus-mt-ar-en"


def test_the_cpu_model_name_is_read_from_cpuinfo():
    from model_server.tuning import parse_cpu_model

    assert parse_cpu_model("processor\t: 0\nmodel name\t: AMD EPYC  9R14 96-Core\nflags: avx2\n") == \
        "AMD EPYC 9R14 96-Core"
    assert parse_cpu_model("processor : 0\nFeatures : fp asimd\n") == ""


# --- resolving the limits (pure) -------------------------------------------------------------------------

DEFAULTS = {"max_batch_size": 64, "max_batch_hypotheses": 128, "max_batch_tokens": 16384}
ENTRY = {"limits": {"max_batch_size": 8, "max_batch_hypotheses": 32, "max_batch_tokens": 2000},
         "measured_at": "2026-12-01T10:00:00+00:00"}


def test_tuned_limits_replace_defaults_but_not_explicit_settings():
    limits = resolve_limits({**DEFAULTS, "max_batch_size": 3}, {"max_batch_size"}, ENTRY, file=Path("t.json"), key="k")
    assert (limits.max_batch_size, limits.max_batch_hypotheses, limits.max_batch_tokens) == (3, 32, 2000)
    assert limits.sources == {"max_batch_size": "settings", "max_batch_hypotheses": "tuning",
                              "max_batch_tokens": "tuning"}
    assert limits.tuning == {"file": "t.json", "fingerprint": "k", "measured_at": ENTRY["measured_at"]}
    assert limits.describe().startswith("batching limits from t.json (tuned 2026-12-01T10:00:00+00:00)")


def test_without_an_entry_the_settings_apply_and_say_defaults():
    limits = resolve_limits(DEFAULTS, set(), None)
    assert limits.sources == dict.fromkeys(LIMIT_NAMES, "defaults") and limits.tuning is None
    assert limits.max_batch_size == 64
    assert "defaults (no tuning entry for this model/machine)" in limits.describe()


# --- the file ---------------------------------------------------------------------------------------------

def test_entries_coexist_and_the_write_is_atomic(tmp_path):
    path = tmp_path / "sub" / "tuning.json"
    assert read_entries(path) == {}
    write_entry(path, "a", ENTRY)
    write_entry(path, "b", {**ENTRY, "limits": {**ENTRY["limits"], "max_batch_size": 4}})
    write_entry(path, "a", {**ENTRY, "measured_at": "later"})
    entries = read_entries(path)
    assert set(entries) == {"a", "b"} and entries["a"]["measured_at"] == "later"
    assert entries["b"]["limits"]["max_batch_size"] == 4
    assert [p.name for p in path.parent.iterdir()] == ["tuning.json"]  # no temporary left behind


@pytest.mark.parametrize(("content", "reason"), [
    ("{not json", "not JSON"),
    ('["a"]', 'expected a JSON object with "entries"'),
    ('{"format": 99, "entries": {}}', "format 99"),
    ('{"format": 1, "entries": {"k": {"limits": {"max_batch_size": 0}}}}', "entry 'k' needs integer limits"),
])
def test_a_corrupt_file_is_refused_naming_it(tmp_path, content, reason):
    path = tmp_path / "tuning.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TuningFileError) as caught:
        read_entries(path)
    assert f"{path} is not a valid tuning file" in str(caught.value) and reason in str(caught.value)
    assert "model-server tune" in str(caught.value)


# --- end to end on the tiny model -------------------------------------------------------------------------

def run_cli(args: list[str], tmp_path: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MODEL_SERVER_MODELS_DIR": str(tmp_path / "models"),
           "MODEL_SERVER_LOG_LEVEL": "warning"}
    return subprocess.run([sys.executable, "-m", "model_server.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def tuned_flags() -> list[str]:
    return [arg for name, value in TUNED.items() for arg in (f"--{name.replace('_', '-')}", str(value))]


@pytest.fixture(scope="module")
def tuned_file(tiny_marian_dir, tmp_path_factory) -> Path:
    """A tuning file with another machine's entry, then `model-server tune` on the tiny model (2 sizes, 1 repeat)."""
    tmp_path = tmp_path_factory.mktemp("tune")
    path = tmp_path / "tuning.json"
    write_entry(path, "another-machine", {**ENTRY, "fingerprint": {**COMPONENTS, "hardware": "cuda: H200"}})
    done = run_cli(["tune", "--translation-model", str(tiny_marian_dir), *tuned_flags(), "--tuning-file", str(path),
                    "--batch-sizes", "1,4", "--repeats", "1", "--warmup", "0", "--new-tokens", "8"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| 1 |" in done.stdout and "| 4 |" in done.stdout and "<- chosen" in done.stdout, done.stdout
    assert f"to {path}" in done.stdout
    return path


def tuned_key_and_entry(path: Path) -> tuple[str, dict]:
    """The tiny Marian's entry (and its key) for the attention implementation `tune` recorded as the faster."""
    from model_server.tuning import read_layouts

    (layout,) = read_layouts(path).values()
    return next((k, e) for k, e in read_entries(path).items()
                if k != "another-machine" and e["fingerprint"]["attention"] == layout["attention"])


def tuned_entry(path: Path) -> dict:
    return tuned_key_and_entry(path)[1]


def test_tune_writes_its_entries_beside_the_others(tuned_file, tiny_marian_dir):
    """One entry per attention implementation (torch_attention=auto), beside the other machine's."""
    entries = read_entries(tuned_file)
    assert "another-machine" in entries and len(entries) == 3
    assert {e["fingerprint"].get("attention") for k, e in entries.items() if k != "another-machine"} == \
        {"eager", "sdpa"}
    key, entry = tuned_key_and_entry(tuned_file)
    assert key == fingerprint(entry["fingerprint"])
    assert entry["fingerprint"]["model"] == str(tiny_marian_dir)
    assert {k: entry["fingerprint"][k] for k in ("engine", "precision", "num_beams", "threads", "device")} == \
        {"engine": "torch", "precision": "float32", "num_beams": 1, "threads": "1", "device": "cpu"}
    assert entry["fingerprint"]["hardware"].startswith("cpu: ")
    assert [m["batch_size"] for m in entry["measurements"]] == [1, 4]
    assert all(m["tokens_per_s"] > 0 and len(m["samples_s"]) == 1 for m in entry["measurements"])
    assert entry["batch_size"] in (1, 4) and entry["limits"]["max_batch_size"] == entry["batch_size"]
    assert entry["limits"]["max_batch_hypotheses"] == entry["batch_size"]  # greedy: one hypothesis a segment
    assert entry["measured_at"] and entry["host"] and entry["method"]["new_tokens"] == 8


@pytest.fixture(scope="module")
def tuned_backend(tiny_marian_dir):
    from model_server.services import load_translation_backend

    backend = load_translation_backend(tiny_settings(tiny_marian_dir, **TUNED))
    yield backend
    backend.close()


def services_for(tiny_marian_dir, backend, **overrides):
    from model_server.services import Services

    return Services.from_backend(tiny_settings(tiny_marian_dir, **{**TUNED, **overrides}), backend)


def test_the_server_reports_the_tuned_limits_and_their_source(tuned_file, tiny_marian_dir):
    """Over loopback: /v1/models shows the entry's limits, the file and the date; the batcher uses them."""
    from model_server.services import Services, load_translation_backend

    settings = tiny_settings(tiny_marian_dir, **TUNED, tuning_file=tuned_file)
    services = Services.from_backend(settings, load_translation_backend(settings))
    entry = tuned_entry(tuned_file)
    with serve_services(services) as server:
        batching = httpx.get(f"{server.base_url}/v1/models").json()["batching"]["translation"]
    assert {name: batching[name] for name in LIMIT_NAMES} == entry["limits"]
    assert batching["limits_source"] == dict.fromkeys(LIMIT_NAMES, "tuning")
    assert batching["tuning"]["file"] == str(tuned_file) and batching["tuning"]["measured_at"] == entry["measured_at"]


def test_explicit_settings_win_over_the_entry(tuned_file, tiny_marian_dir, tuned_backend):
    services = services_for(tiny_marian_dir, tuned_backend, tuning_file=tuned_file, max_batch_tokens=777)
    batching = services.translation.describe_batching()
    entry = tuned_entry(tuned_file)
    assert batching["max_batch_tokens"] == 777 and batching["limits_source"]["max_batch_tokens"] == "settings"
    assert batching["max_batch_size"] == entry["limits"]["max_batch_size"]
    assert batching["limits_source"]["max_batch_size"] == "tuning"


def test_an_entry_for_other_decoding_is_not_used(tuned_file, tiny_marian_dir, tuned_backend):
    services = services_for(tiny_marian_dir, tuned_backend, tuning_file=tuned_file, num_beams=2)
    batching = services.translation.describe_batching()
    assert batching["limits_source"] == dict.fromkeys(LIMIT_NAMES, "defaults") and batching["tuning"] is None
    assert batching["max_batch_size"] == 64


def test_an_entry_tuned_with_the_output_vocabulary_restricted_is_not_used_without_it(tuned_file, tiny_marian_dir):
    """The CLI tuned the tiny Marian restricted (the default: it has a separate target.spm); the same model loaded
    with restrict_output_vocab=false decodes over its whole vocabulary, so it must not take those limits."""
    from model_server.services import load_translation_backend

    entry = tuned_entry(tuned_file)
    settings = tiny_settings(tiny_marian_dir, **TUNED, tuning_file=tuned_file, restrict_output_vocab=False)
    backend = load_translation_backend(settings)
    try:
        assert entry["fingerprint"]["output_vocab_size"] < backend.info.extra["output_vocab_size"]
        batching = services_for(tiny_marian_dir, backend, tuning_file=tuned_file,
                                restrict_output_vocab=False).translation.describe_batching()
    finally:
        backend.close()
    assert batching["limits_source"] == dict.fromkeys(LIMIT_NAMES, "defaults") and batching["tuning"] is None


def test_autotune_measures_at_start_up_once_and_writes_the_entry(tmp_path, tiny_marian_dir, tuned_backend):
    path = tmp_path / "tuning.json"
    services = services_for(tiny_marian_dir, tuned_backend, tuning_file=path, autotune=True)
    assert services.translation.describe_batching()["limits_source"] == dict.fromkeys(LIMIT_NAMES, "tuning")
    written = path.stat().st_mtime_ns
    again = services_for(tiny_marian_dir, tuned_backend, tuning_file=path, autotune=True)  # found: no new run
    assert again.translation.limits == services.translation.limits and path.stat().st_mtime_ns == written


def test_serve_with_a_corrupt_tuning_file_fails_in_one_line_naming_it(tmp_path, tiny_marian_dir):
    path = tmp_path / "tuning.json"
    path.write_text('{"format": 1, "entries": ', encoding="utf-8")
    done = run_cli(["serve", "--translation-model", str(tiny_marian_dir), *tuned_flags(), "--tuning-file", str(path)],
                   tmp_path)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [f"model-server: {path} is not a valid tuning file (not JSON: Expecting value: line 1 column 26 "
                     "(char 25)); remove it and run `model-server tune` again, or point MODEL_SERVER_TUNING_FILE "
                     "elsewhere"], done.stderr


def test_ctranslate2_threads_are_both_thread_counts():
    from model_server.backends.base import ModelInfo
    from model_server.tuning import threads_of

    info = ModelInfo(name="m", source="m", task="translation", architecture="marian", backend="ctranslate2",
                     device="cpu", dtype="int8_float32", max_input_tokens=512,
                     extra={"intra_threads": 2, "inter_threads": 1})
    assert threads_of(info) == "intra 2 inter 1"
    assert threads_of(info.model_copy(update={"backend": "torch", "extra": {"threads": 2}})) == "2"


def test_start_up_logs_where_the_limits_came_from(tuned_file, tiny_marian_dir, tuned_backend, tmp_path, caplog):
    with caplog.at_level("INFO", logger="model_server.services"):
        services_for(tiny_marian_dir, tuned_backend, tuning_file=tuned_file)
        services_for(tiny_marian_dir, tuned_backend, tuning_file=tmp_path / "none.json")
    messages = [r.getMessage() for r in caplog.records if "batching limits" in r.getMessage()]
    assert messages[0].startswith(f"translation batching limits from {tuned_file} (tuned 20")
    assert messages[1].startswith("translation batching limits: defaults (no tuning entry for this model/machine): "
                                  "max_batch_size 64, max_batch_hypotheses 128, max_batch_tokens 16384")


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs /proc: a directory even root cannot write")
def test_autotune_that_cannot_write_serves_with_what_it_measured(tiny_marian_dir, tuned_backend, caplog):
    unwritable = Path("/proc/model-server-tuning.json")
    with caplog.at_level("WARNING", logger="model_server.services"):
        services = services_for(tiny_marian_dir, tuned_backend, tuning_file=unwritable, autotune=True)
    assert f"autotune: cannot write {unwritable}" in caplog.text
    assert services.translation.describe_batching()["limits_source"] == dict.fromkeys(LIMIT_NAMES, "tuning")


def test_the_hardware_is_the_gpu_on_cuda_and_the_cpu_with_its_flags_elsewhere():
    from model_server.tuning import describe_hardware

    flags = frozenset({"avx2", "avx512f", "avx512_bf16", "sse4_2"})
    assert describe_hardware("cpu", cpu_name="AMD EPYC 9R14", flags=flags, cpus=2) == \
        "cpu: AMD EPYC 9R14; flags avx2 avx512f avx512_bf16; 2 cpus"  # only the flags that decide precision
    assert describe_hardware("cpu", cpu_name="AMD EPYC 9R14", flags=flags, cpus=4) != \
        describe_hardware("cpu", cpu_name="AMD EPYC 9R14", flags=flags, cpus=2)
    assert describe_hardware("cpu", cpu_name="", flags=frozenset(), cpus=1) == "cpu: ?; flags -; 1 cpus"
    assert describe_hardware("cuda", cpu_name="AMD EPYC", flags=flags, cpus=2, gpu_name="NVIDIA H200") == \
        "cuda: NVIDIA H200"


def test_tune_records_the_faster_attention_and_the_server_loads_it(tuned_file, tiny_marian_dir):
    """torch with torch_attention=auto: `tune` measured eager and sdpa and recorded one; loading the model then
    uses the recorded one and says where it came from; an explicit setting wins; without a record, the rule."""
    from model_server.backends.hardware import DEFAULT_TORCH_ATTENTION
    from model_server.services import load_translation_backend
    from model_server.settings import TorchAttention
    from model_server.tuning import read_layouts, write_layout

    (key, layout), = read_layouts(tuned_file).items()
    assert layout["attention"] in ("eager", "sdpa") and set(layout["tokens_per_s"]) == {"eager", "sdpa"}
    other = "sdpa" if layout["attention"] == "eager" else "eager"
    path = tuned_file.parent / "attention.json"
    write_layout(path, key, {**layout, "attention": other})  # the one the measurement did not pick
    settings = tiny_settings(tiny_marian_dir, **TUNED, tuning_file=path)
    backend = load_translation_backend(settings)
    try:
        assert backend.info.extra["attention"] == other
        assert backend.info.extra["attention_source"] == f"tuning file {path}"
        assert base_implementation(backend.model.config._attn_implementation) == other
    finally:
        backend.close()
    explicit = load_translation_backend(settings.model_copy(update={"torch_attention": TorchAttention.sdpa}))
    assert (explicit.info.extra["attention"], explicit.info.extra["attention_source"]) == ("sdpa", "settings")
    explicit.close()
    untuned = load_translation_backend(tiny_settings(tiny_marian_dir, **TUNED, tuning_file=path.with_name("none.json")))
    assert untuned.info.extra["attention"] == DEFAULT_TORCH_ATTENTION == "sdpa"
    assert untuned.info.extra["attention_source"] == "auto rule"
    untuned.close()


def test_attention_layout_records_are_checked(tmp_path):
    from model_server.tuning import attention_candidates, write_layout

    assert attention_candidates() == ["sdpa", "eager"]
    with pytest.raises(TuningFileError, match="needs attention set to one of eager, sdpa"):
        write_layout(tmp_path / "tuning.json", "layout-x", {"attention": "flash"})


# --- CTranslate2 thread layouts ---------------------------------------------------------------------------

def test_layout_candidates_start_with_the_auto_rule():
    from model_server.tuning import layout_candidates

    assert layout_candidates(1) == [(1, 1)]
    assert layout_candidates(2) == [(2, 1), (1, 2)]
    assert layout_candidates(8) == [(4, 2), (8, 1), (1, 8), (2, 4)]


def test_the_rule_layout_stays_unless_another_is_clearly_faster():
    from model_server.tuning import choose_layout

    assert choose_layout({(2, 1): 98.0, (1, 2): 100.0}, preferred=(2, 1)) == (2, 1)  # within 3 %: noise
    assert choose_layout({(2, 1): 90.0, (1, 2): 100.0}, preferred=(2, 1)) == (1, 2)
    assert choose_layout({(1, 2): 100.0}, preferred=(2, 1)) == (1, 2)


def test_layouts_and_entries_share_the_file(tmp_path):
    from model_server.tuning import read_layouts, write_layout

    path = tmp_path / "tuning.json"
    write_entry(path, "limits", ENTRY)
    write_layout(path, "layout-x", {"inter_threads": 2, "intra_threads": 1})
    assert read_entries(path) == {"limits": ENTRY}
    assert read_layouts(path) == {"layout-x": {"inter_threads": 2, "intra_threads": 1}}
    with pytest.raises(TuningFileError, match="layout 'bad' needs integer inter_threads"):
        write_layout(path, "bad", {"inter_threads": 0, "intra_threads": 1})
    data = json.loads(path.read_text())
    data["layouts"]["broken"] = {"inter_threads": "2"}
    path.write_text(json.dumps(data))
    with pytest.raises(TuningFileError, match="remove it and run `model-server tune`"):
        read_entries(path)


def test_tune_measures_each_ctranslate2_layout_and_the_server_loads_the_recorded_one(tiny_marian_dir, tmp_path):
    """`model-server tune` on CTranslate2 (CPU, layout left to the service): an entry per candidate layout
    and one layout record; loading the model then uses the recorded layout, and says where it came from."""
    from model_server.backends.ct2_convert import convert
    from model_server.backends.hardware import usable_cpus
    from model_server.services import load_translation_backend
    from model_server.tuning import layout_candidates, read_layouts, write_layout

    converted = convert(str(tiny_marian_dir), tmp_path / "tiny-ct2", "int8")
    path = tmp_path / "tuning.json"
    done = run_cli(["tune", "--translation-model", str(tiny_marian_dir), "--backend", "ctranslate2",
                    "--ct2-model-dir", str(converted), "--device", "cpu", "--num-beams", "1", "--tuning-file",
                    str(path), "--batch-sizes", "1,4", "--repeats", "1", "--warmup", "0", "--new-tokens", "8"],
                   tmp_path)
    assert done.returncode == 0, done.stderr
    candidates = layout_candidates(usable_cpus())
    assert len(read_entries(path)) == len(candidates)  # the batch limits of every layout measured
    layouts = read_layouts(path)
    assert len(layouts) == 1 and "thread layout:" in done.stdout, done.stdout
    (key, layout), = layouts.items()
    assert (layout["inter_threads"], layout["intra_threads"]) in candidates

    settings = tiny_settings(tiny_marian_dir, backend="ctranslate2", ct2_model_dir=converted, tuning_file=path)
    write_layout(path, key, {**layout, "inter_threads": 3, "intra_threads": 1})  # a layout no rule picks
    backend = load_translation_backend(settings)
    assert (backend.info.extra["inter_threads"], backend.info.extra["intra_threads"]) == (3, 1)
    assert backend.info.extra["thread_layout_source"] == f"tuning file {path}"
    explicit = load_translation_backend(settings.model_copy(update={"ct2_inter_threads": 1}))
    assert explicit.info.extra["inter_threads"] == 1 and explicit.info.extra["thread_layout_source"] == "settings"


def test_timed_batches_stand_for_the_whole_article_not_its_head():
    """Tuning and the benchmarks time batch_of(sentences, n). The article opens with a title and datelines (a
    fifth of its mean length), so the first n sentences would make small batches look cheap and tune
    max_batch_size on traffic that never comes: every batch size must have about the article's mean length."""
    sentences = sample_sentences()
    mean = sum(map(len, sentences)) / len(sentences)
    head = sum(map(len, sentences[:8])) / 8
    assert head < 0.5 * mean  # the reason for the rule: the article's head is short
    by_length = sorted(sentences, key=len)
    assert batch_of(sentences, 1) == [by_length[len(sentences) // 2]]  # the median sentence
    for size in (4, 8, 16, 32, 64, 100):
        batch = batch_of(sentences, size)
        assert len(batch) == size and set(batch) <= set(sentences)
        assert abs(sum(map(len, batch)) / size - mean) < 0.2 * mean, size
        if size >= len(sentences):
            assert set(batch) == set(sentences)  # every sentence in each whole pass
    assert batch_of(sentences, 8) == batch_of(list(sentences), 8)  # deterministic
    with pytest.raises(ValueError):
        batch_of([], 4)
