"""Per-CPU precision defaults: the CPU flags are read, `dtype=auto` / `ct2_compute_type=auto` are chosen from
them (pure functions, tested on the flag sets of real machines), what was chosen and why is logged and
recorded, and torch bfloat16 keeps the tiny model's memorised outputs."""

from __future__ import annotations

import logging

import pytest

from model_server.backends.base import GenerationOptions
from model_server.backends.ctranslate2_backend import choose_compute_type
from model_server.backends.hardware import (REPORTED_FLAGS, CpuFeatures, cpu_features, detect_cpu_features,
                                            flags_from_capabilities, parse_cpuinfo_flags)
from model_server.backends.loading import choose_dtype, dtype_choice
from model_server.errors import ServiceError
from model_server.services import load_summarization_backend, load_translation_backend
from model_server.settings import DType
from model_server.text import normalize_text, segment
from model_server.tiny_models import MEMORISED_PAIRS, MEMORISED_SUMMARIES
from tests.conftest import SAMPLE_AR, tiny_settings

# /proc/cpuinfo excerpts (the first processor's block) of the machines the defaults must get right.
AVX2_EPYC = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm \
constant_tsc rep_good nopl pni pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand \
hypervisor lahf_lm cmp_legacy abm sse4a misalignsse 3dnowprefetch fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed \
adx smap clflushopt clwb sha_ni xsaveopt xsavec xgetbv1 xsaves clzero vaes vpclmulqdq rdpid fsrm
bugs\t\t: sysret_ss_attrs spectre_v1 spectre_v2
"""
ZEN4 = """processor\t: 0
model name\t: AMD EPYC 9R14 96-Core Processor
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c bmi1 avx2 bmi2 avx512f avx512dq avx512ifma avx512cd \
avx512bw avx512vl avx_vnni avx512_bf16 avx512vbmi avx512_vbmi2 gfni vaes avx512_vnni avx512_bitalg \
avx512_vpopcntdq
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512cd avx512bw avx512vl \
avx512ifma avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq avx_vnni avx512_bf16 \
amx_bf16 avx512_fp16 amx_tile amx_int8
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc \
dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 \
i8mm bf16 dgh rng
CPU implementer\t: 0x41
"""
# What torch.cpu.get_capabilities() answers on an Apple M2 (macOS has no /proc/cpuinfo).
APPLE_M2_CAPABILITIES = {"architecture": "arm64", "neon": True, "fp16_arith": True, "bf16": True, "i8mm": True,
                         "dot": True, "sve": False}
# What ctranslate2.get_supported_compute_types("cpu") lists with CTranslate2 4.x (no bfloat16 on CPU).
CT2_CPU_TODAY = frozenset({"int8", "int8_float32", "float32"})


def flags_of(cpuinfo: str) -> frozenset[str]:
    return parse_cpuinfo_flags(cpuinfo)


# --- detection ---------------------------------------------------------------------------------


def test_cpuinfo_flags_are_read_from_the_first_processor_on_x86_and_arm():
    zen4 = flags_of(ZEN4 + ZEN4.replace("avx512_bf16 ", ""))
    assert {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"} <= zen4 and "amx_bf16" not in zen4
    assert "avx512f" not in flags_of(AVX2_EPYC) and "avx2" in flags_of(AVX2_EPYC)
    assert {"bf16", "sve", "asimd"} <= flags_of(GRAVITON3)  # ARM calls them Features
    assert flags_of("processor : 0\nmodel name : something\n") == frozenset()


def test_detection_reads_proc_cpuinfo_first(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(SAPPHIRE_RAPIDS, encoding="utf-8")
    features = detect_cpu_features(cpuinfo, torch_capabilities=lambda: pytest.fail("torch asked needlessly"))
    assert features.source == str(cpuinfo) and features.native_bf16
    assert features.reported() == {"avx2": True, "avx512f": True, "avx512_bf16": True, "avx512_vnni": True,
                                   "amx_bf16": True, "amx_int8": True}


def test_without_proc_the_flags_come_from_torch_in_kernel_spelling(tmp_path):
    torch_names = {"avx2": True, "avx512_f": True, "avx512_bf16": True, "avx512_vnni": False, "l2_cache_size": 1}
    features = detect_cpu_features(tmp_path / "missing", torch_capabilities=lambda: torch_names)
    assert features.source == "torch"
    assert features.reported() == {"avx2": True, "avx512f": True, "avx512_bf16": True, "avx512_vnni": False,
                                   "amx_bf16": False, "amx_int8": False}
    assert flags_from_capabilities(APPLE_M2_CAPABILITIES) == {"neon", "fp16_arith", "bf16", "i8mm", "dot"}


def test_with_neither_the_flags_are_empty_and_auto_is_float32(tmp_path):
    features = detect_cpu_features(tmp_path / "missing", torch_capabilities=lambda: None)
    assert (features.flags, features.source, features.native_bf16) == (frozenset(), "unknown", False)
    assert choose_dtype(features.flags, "cpu")[0] == "float32"
    assert "none of avx2/" in features.summary()


def test_this_machine_is_described_with_every_reported_flag():
    described = cpu_features().describe()
    assert list(described["flags"]) == list(REPORTED_FLAGS)
    assert described["native_bf16"] == bool({"avx512_bf16", "amx_bf16"} & cpu_features().flags)
    assert described["flags_source"] in {"/proc/cpuinfo", "torch", "unknown"}


# --- dtype=auto --------------------------------------------------------------------------------


@pytest.mark.parametrize(("machine", "flags", "want", "because"), [
    ("AVX2-only EPYC", flags_of(AVX2_EPYC), "float32", "no avx512_bf16 or amx_bf16"),
    ("Zen 4", flags_of(ZEN4), "bfloat16", "native bf16 (avx512_bf16)"),
    ("Sapphire Rapids", flags_of(SAPPHIRE_RAPIDS), "bfloat16", "native bf16 (amx_bf16, avx512_bf16)"),
    ("Graviton 3 (ARM bf16: not counted)", flags_of(GRAVITON3), "float32", "no avx512_bf16 or amx_bf16"),
    ("Apple M2, flags from torch", flags_from_capabilities(APPLE_M2_CAPABILITIES), "float32", "no avx512_bf16"),
])
def test_auto_dtype_on_cpu_follows_native_bf16(machine, flags, want, because):
    for task in ("translation", "summarization"):  # the summarizer follows the same detection on CPU
        dtype, reason = choose_dtype(flags, "cpu", task=task)
        assert dtype == want, machine
        assert because in reason


def test_bf16_flags_without_onednn_stay_float32():
    dtype, reason = choose_dtype(flags_of(ZEN4), "cpu", torch_bf16=False)
    assert dtype == "float32" and "avx512_bf16" in reason and "oneDNN" in reason


def test_auto_dtype_on_cuda_is_unchanged_and_ignores_cpu_flags():
    for flags in (flags_of(AVX2_EPYC), flags_of(SAPPHIRE_RAPIDS)):
        assert choose_dtype(flags, "cuda")[0] == "float16"
        # mT5 overflows float16: bfloat16 where the GPU has it, else float32.
        assert choose_dtype(flags, "cuda", task="summarization", cuda_bf16=True)[0] == "bfloat16"
        assert choose_dtype(flags, "cuda", task="summarization", cuda_bf16=False)[0] == "float32"


def test_an_explicit_dtype_wins_over_detection():
    assert dtype_choice(DType.float32, "cpu") == ("float32", "dtype=float32 set explicitly")
    assert dtype_choice(DType.bfloat16, "cpu", task="summarization")[0] == "bfloat16"
    with pytest.raises(ServiceError, match="float16 is only supported on cuda"):
        dtype_choice(DType.float16, "cpu")
    assert dtype_choice(DType.auto, "cpu") == choose_dtype(cpu_features().flags, "cpu")


# --- ct2_compute_type=auto ---------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "supported", "want"), [
    (flags_of(AVX2_EPYC), CT2_CPU_TODAY, "int8"),
    (flags_of(ZEN4), CT2_CPU_TODAY, "int8"),  # native bf16, but CTranslate2 4.x has no bf16 on CPU
    (flags_of(ZEN4), CT2_CPU_TODAY | {"int8_bfloat16", "bfloat16"}, "int8_bfloat16"),
    (flags_of(SAPPHIRE_RAPIDS), CT2_CPU_TODAY | {"int8_bfloat16"}, "int8_bfloat16"),
    (flags_of(AVX2_EPYC), CT2_CPU_TODAY | {"int8_bfloat16"}, "int8"),  # offered, but emulated here
    (flags_of(GRAVITON3), frozenset({"float32"}), "float32"),  # no int8 offered
])
def test_auto_compute_type_on_cpu_picks_among_what_is_offered(flags, supported, want):
    for task in ("translation", "summarization"):
        chosen, reason = choose_compute_type(flags, "cpu", supported, task=task)
        assert chosen == want and chosen in supported
        assert reason


def test_auto_compute_type_reason_says_why_bf16_was_not_used():
    reason = choose_compute_type(flags_of(ZEN4), "cpu", CT2_CPU_TODAY)[1]
    assert "avx512_bf16" in reason and "no bfloat16" in reason


def test_auto_compute_type_on_cuda_is_unchanged():
    cuda = frozenset({"float32", "int8", "int8_float32", "float16", "int8_float16"})
    assert choose_compute_type(frozenset(), "cuda", cuda)[0] == "int8_float16"
    assert choose_compute_type(frozenset(), "cuda", cuda, task="summarization")[0] == "int8_float32"
    ampere = cuda | {"bfloat16", "int8_bfloat16"}
    assert choose_compute_type(frozenset(), "cuda", ampere, task="summarization")[0] == "int8_bfloat16"


# --- recorded and logged -----------------------------------------------------------------------


def test_the_loaded_model_records_and_logs_what_auto_chose(tiny_marian_dir, caplog):
    want, reason = choose_dtype(cpu_features().flags, "cpu")
    with caplog.at_level(logging.INFO, logger="model_server.backends.loading"):
        backend = load_translation_backend(tiny_settings(tiny_marian_dir, dtype="auto"))
    assert backend.info.dtype == want
    assert backend.info.extra["precision"] == {"requested": "auto", "chosen": want, "reason": reason}
    assert str(next(p for p in backend.model.parameters()).dtype) == f"torch.{want}"
    record = next(r for r in caplog.records if "dtype=auto" in r.getMessage())
    line = record.getMessage()
    assert f"-> {want}" in line and reason in line and cpu_features().summary() in line
    assert record.fields == {"precision": backend.info.extra["precision"], "hardware": cpu_features().describe()}


def test_cpu_features_summary_names_present_flags_only():
    features = CpuFeatures(flags_of(ZEN4), "/proc/cpuinfo", "x86_64")
    assert features.summary() == "x86_64, avx2 avx512f avx512_bf16 avx512_vnni (from /proc/cpuinfo)"


def test_every_benchmark_report_states_the_flags_and_the_choices():
    from benchmarks.report import _precision_line

    meta = {"hardware": CpuFeatures(flags_of(ZEN4), "/proc/cpuinfo", "x86_64").describe(),
            "precision": {"torch": {"requested": "auto", "chosen": "bfloat16", "reason": "cpu has native bf16"},
                          "ctranslate2": {"requested": "auto", "chosen": "int8", "reason": "int8 weights"}}}
    assert _precision_line(meta) == (
        "cpu flags avx2 avx512f avx512_bf16 avx512_vnni (x86_64, from /proc/cpuinfo); "
        "torch auto -> bfloat16: cpu has native bf16; ctranslate2 auto -> int8: int8 weights")
    assert _precision_line({}) == "not recorded"  # reports written before the flags were recorded


# --- bfloat16 keeps what the tiny model memorised ---------------------------------------------

SAMPLE_SENTENCES = [s.text for p in segment(normalize_text(SAMPLE_AR)) for s in p.sentences]


@pytest.fixture(scope="module")
def float32_and_bfloat16(tiny_marian_dir):
    backends = [load_translation_backend(tiny_settings(tiny_marian_dir, dtype=dtype))
                for dtype in ("float32", "bfloat16")]
    yield backends
    for backend in backends:
        backend.close()


@pytest.mark.parametrize("num_beams", [1, 4])
def test_bfloat16_gives_the_memorised_outputs_and_reports_its_match_rate(float32_and_bfloat16, num_beams):
    float32, bfloat16 = float32_and_bfloat16
    assert (float32.info.dtype, bfloat16.info.dtype) == ("float32", "bfloat16")
    memorised = GenerationOptions(num_beams=num_beams, max_new_tokens=96)  # room for the longest pair
    sources = [ar for ar, _ in MEMORISED_PAIRS]
    # The memorised sentences win by a wide margin: reduced precision must not flip them.
    assert [r.text for r in bfloat16.generate(sources, memorised)] == [en for _, en in MEMORISED_PAIRS]
    assert [r.text for r in float32.generate(sources, memorised)] == [en for _, en in MEMORISED_PAIRS]
    # Elsewhere the tiny model emits garbage with close choices: the rate is reported, not asserted.
    options = GenerationOptions(num_beams=num_beams, max_new_tokens=32)
    same = sum(a.text == b.text for a, b in zip(float32.generate(SAMPLE_SENTENCES, options),
                                                bfloat16.generate(SAMPLE_SENTENCES, options)))
    print(f"\nbfloat16 == float32 on the sample's sentences, num_beams={num_beams}: "
          f"{same}/{len(SAMPLE_SENTENCES)} (max_new_tokens=32)")


def test_the_summarizer_follows_the_same_detection_and_keeps_its_memorised_summaries(tiny_marian_dir, tiny_mt5_dir):
    settings = tiny_settings(tiny_marian_dir, summarization_enabled=True, summarization_model=str(tiny_mt5_dir),
                             dtype="auto")
    summarizer = load_summarization_backend(settings)
    try:
        want, reason = choose_dtype(cpu_features().flags, "cpu", task="summarization")
        assert (summarizer.info.dtype, summarizer.info.extra["precision"]["reason"]) == (want, reason)
        documents = [document for document, _ in MEMORISED_SUMMARIES]
        # bfloat16 here on a CPU with native bf16 (float32 elsewhere); XLSum's own decoding (beam 4).
        results = summarizer.generate(documents, summarizer.default_options())
        assert [r.text for r in results] == [summary for _, summary in MEMORISED_SUMMARIES]
    finally:
        summarizer.close()


@pytest.mark.parametrize("cores, expected", [(1, (1, 1)), (2, (2, 1)), (4, (4, 1)), (8, (4, 2)), (16, (8, 2)),
                                             (32, (8, 4))])
def test_ct2_auto_layout_on_cpu(cores, expected):
    from model_server.backends.hardware import ct2_thread_layout

    assert ct2_thread_layout("cpu", cores) == expected


def test_ct2_layout_keeps_what_is_set():
    from model_server.backends.hardware import ct2_thread_layout

    assert ct2_thread_layout("cpu", 8, inter_threads=1) == (1, 8)   # one replica gets every core
    assert ct2_thread_layout("cpu", 8, intra_threads=8) == (1, 8)
    assert ct2_thread_layout("cpu", 8, 3, 2) == (3, 2)
    assert ct2_thread_layout("cuda", 8) == (1, 1)
    assert ct2_thread_layout("cuda", 8, inter_threads=2) == (2, 1)
