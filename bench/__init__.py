"""Benchmarks (results recorded in docs/benchmarks.md). The variants every benchmark can run, each in its own
subprocess: `torch`, `ms` (singan_ms as installed: compiled CPU kernels when a compiler is present) and
`ms-operators` (singan_ms with SINGAN_MS_NATIVE=0: MindSpore operators only, to show what the kernels buy)."""

from __future__ import annotations

import os

VARIANTS = {"torch": ("torch", {}), "ms": ("ms", {}), "ms-operators": ("ms", {"SINGAN_MS_NATIVE": "0"})}


def variant(name: str) -> tuple[str, dict[str, str]]:
    """(framework, environment for its subprocess) of a variant name."""
    framework, extra = VARIANTS[name]
    return framework, {**os.environ, "GLOG_v": "3", **extra}
