"""Benchmarks (results recorded in docs/benchmarks.md). The variants every benchmark can run, each in its own
subprocess: `torch`, `ms` (singan_ms as installed: compiled CPU kernels when a compiler is present) and
`ms-operators` (singan_ms with SINGAN_MS_NATIVE=0: MindSpore operators only, to show what the kernels buy) and
`torch-avx2` (torch with its oneDNN capped at AVX2, the ISA singan_ms.device gives MindSpore's oneDNN on AVX-512
hosts, to separate the ISA's share of a gap from the frameworks')."""

from __future__ import annotations

import os
import platform
from pathlib import Path

VARIANTS = {"torch": ("torch", {}), "ms": ("ms", {}), "ms-operators": ("ms", {"SINGAN_MS_NATIVE": "0"}),
            "torch-avx2": ("torch", {"ONEDNN_MAX_CPU_ISA": "AVX2"})}


def variant(name: str) -> tuple[str, dict[str, str]]:
    """(framework, environment for its subprocess) of a variant name."""
    framework, extra = VARIANTS[name]
    return framework, {**os.environ, "GLOG_v": "3", **extra}


def machine() -> dict[str, object]:
    """The host a result was measured on. Hosts of the same name differ between sessions (a Zen 3 without AVX-512,
    a Zen 5 with it), and the ISA decides which oneDNN kernels each framework gets, so every result records it."""
    info: dict[str, object] = {"platform": platform.platform(), "python": platform.python_version(),
                               "cpus": os.cpu_count()}
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return info

    def field(name: str) -> str:
        return next((line.split(":", 1)[1].strip() for line in lines if line.split(":", 1)[0].strip() == name), "")

    flags = field("flags").split()
    info.update(cpu_model=field("model name"), cpu_family=field("cpu family"), cpu_model_number=field("model"),
                avx2="avx2" in flags, fma="fma" in flags, avx512f="avx512f" in flags,
                hypervisor="hypervisor" in flags)
    return info
