"""What this machine's CPU can do: the instruction-set flags that decide the precision defaults.

Whether bfloat16 pays off on a CPU depends on native bf16 instructions: with `avx512_bf16` (Zen 4,
Cooper Lake) or `amx_bf16` (Sapphire Rapids and later) torch's bfloat16 ran 2.3-2.8x float32 here,
while on AVX2-only machines bfloat16 is emulated and 4-5x *slower*. So `dtype=auto` and
`ct2_compute_type=auto` look at the flags, never at a hard-coded list of machines.

The flags come from the kernel (/proc/cpuinfo, Linux) or, where there is no /proc (macOS, Windows),
from torch's own cpuinfo-based capability table; when neither answers the set is empty and every
choice falls back to float32 / int8_float32, which are correct everywhere.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

CPUINFO = Path("/proc/cpuinfo")
# The flags reported in /v1/models, the start-up log and benchmark reports (the kernel's spelling).
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
# Native bf16 arithmetic: with these bfloat16 matmuls run in hardware; without them oneDNN emulates them.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# torch.cpu.get_capabilities() spells a few flags differently from the kernel.
_TORCH_SPELLING = {"avx512_f": "avx512f", "avx512_bw": "avx512bw", "avx512_dq": "avx512dq",
                   "avx512_vl": "avx512vl", "avx512_cd": "avx512cd"}


def has_native_bf16(flags: frozenset[str]) -> bool:
    return not NATIVE_BF16_FLAGS.isdisjoint(flags)


@dataclass(frozen=True)
class CpuFeatures:
    flags: frozenset[str]
    source: str  # "/proc/cpuinfo", "torch" or "unknown"
    machine: str = ""  # platform.machine(): x86_64, arm64, aarch64, ...

    @property
    def native_bf16(self) -> bool:
        return has_native_bf16(self.flags)

    def reported(self) -> dict[str, bool]:
        return {name: name in self.flags for name in REPORTED_FLAGS}

    def describe(self) -> dict[str, Any]:
        """The JSON form of /v1/models and benchmark reports."""
        return {"machine": self.machine, "flags_source": self.source, "flags": self.reported(),
                "native_bf16": self.native_bf16}

    def summary(self) -> str:
        """One line for logs: 'x86_64, avx2 avx512f avx512_bf16 (from /proc/cpuinfo)'."""
        present = " ".join(name for name in REPORTED_FLAGS if name in self.flags) or "none of " + "/".join(
            REPORTED_FLAGS)
        return f"{self.machine or '?'}, {present} (from {self.source})"


def parse_cpuinfo_flags(text: str) -> frozenset[str]:
    """The first CPU's flags: the `flags` line on x86, the `Features` line on ARM."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in {"flags", "Features"}:
            return frozenset(value.split())
    return frozenset()


def flags_from_capabilities(capabilities: Mapping[str, Any]) -> frozenset[str]:
    """torch.cpu.get_capabilities() -> kernel-style flag names (the features it reports as True)."""
    return frozenset(_TORCH_SPELLING.get(name, name) for name, value in capabilities.items() if value is True)


def detect_cpu_features(cpuinfo: Path = CPUINFO,
                        torch_capabilities: Callable[[], Mapping[str, Any] | None] | None = None) -> CpuFeatures:
    """Read the flags: /proc/cpuinfo first (the kernel's word), then torch's capability table."""
    machine = platform.machine()
    try:
        flags = parse_cpuinfo_flags(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        flags = frozenset()
    if flags:
        return CpuFeatures(flags, str(cpuinfo), machine)
    capabilities = (torch_capabilities or _torch_capabilities)()
    if capabilities:
        return CpuFeatures(flags_from_capabilities(capabilities), "torch", machine)
    return CpuFeatures(frozenset(), "unknown", machine)


@functools.cache
def cpu_features() -> CpuFeatures:
    """This machine's features, detected once per process."""
    return detect_cpu_features()


def _torch_capabilities() -> Mapping[str, Any] | None:
    """torch.cpu.get_capabilities() (recent torch), else its older per-feature probes, else None."""
    import torch

    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        try:
            return get_capabilities()
        except RuntimeError:
            return None
    probes = {"avx2": "_is_avx2_supported", "avx512_f": "_is_avx512_supported",
              "avx512_bf16": "_is_avx512_bf16_supported", "avx512_vnni": "_is_vnni_supported"}
    found = {name: getattr(torch.cpu, probe)() for name, probe in probes.items() if hasattr(torch.cpu, probe)}
    return found or None


@functools.cache
def torch_runs_bf16_on_cpu() -> bool:
    """torch can run bfloat16 through oneDNN on this CPU (it answers True on AVX512 without native bf16
    too, where it emulates: a veto, not a reason to choose bfloat16)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else True
    except RuntimeError:
        return False


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask: a container's CPU set, taskset), else all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ct2_thread_layout(device: str, cores: int, inter_threads: int = 0, intra_threads: int = 0) -> tuple[int, int]:
    """CTranslate2's (inter_threads, intra_threads): replicas that run sub-batches in parallel (sharing one
    copy of the weights), and threads per replica. A value set (> 0) is kept; 0 is chosen here.

    On CPU, several one-thread replicas beat one replica with every thread: measured on a 2-core Zen 4,
    int8 opus-mt, beam 4, a batch split evenly over 2 one-thread replicas against one 2-thread call:
    1 sentence 248 vs 569 ms, 8: 430 vs 886 ms, 32: 1.25 vs 1.78 s, 64: 3.41 vs 4.95 s. Intra-op threads
    pay off on wider machines, where a replica per core would split batches into slivers: up to 4 cores one
    thread per replica, then 2 (up to 16 cores), then 4. On CUDA one replica per device."""
    if device != "cpu":
        return inter_threads or 1, intra_threads or 1
    cores = max(cores, 1)
    if not intra_threads:
        per_replica = 1 if cores <= 4 else 2 if cores <= 16 else 4
        intra_threads = per_replica if not inter_threads else max(1, cores // inter_threads)
    if not inter_threads:
        inter_threads = max(1, cores // intra_threads)
    return inter_threads, intra_threads


# transformers' attention implementation for a torch model when `model-server tune` recorded none: sdpa
# (transformers' own default) on every device; tune measures eager too and records it where it is faster.
# Which is faster depends on the machine and the run: before cross-attention was grouped by sentence
# (beam_attention.py) eager decoded beam 4 up to 1.4x faster on a 2-core Zen 4 (one query per hypothesis and
# step); since, headline tunes on that CPU chose sdpa in 2 of 7 runs, eager in 5 (README, Tuning). Eager
# also materialises every encoder attention matrix (batch x heads x source tokens squared, in float32): a
# soak run of the tiny model with inputs up to its 512-token limit grew 241 MB with eager against 111 MB.
DEFAULT_TORCH_ATTENTION = "sdpa"
