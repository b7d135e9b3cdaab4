"""Tolerances for comparing PyTorch and MindSpore outputs: one place, per device and dtype, each with its why.

A comparison passes when max |ms - torch| <= atol + rtol * max|torch| (allclose against the tensor's scale:
see parity/compare.py). The fp32 CPU
constants are the strict case: honest float32 arithmetic in two different kernel libraries (PyTorch's oneDNN
and MindSpore's bundled oneDNN / Eigen) reorders sums, which costs a few ulps per layer and grows roughly with
depth; measured on this project's CPU (AMD EPYC, 2 cores): 2e-7..1e-6 per layer, 6e-6 through the 9-block
generator end to end (shared/DESIGN.md section 6). The constants leave about 2x headroom over the worst
measured case, no more: a one-pixel shift, a wrong momentum or MindSpore's inaccurate tanh (1e-4 error) all
exceed them by orders of magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    why: str


# Single layers (conv, pad, norm, transposed conv, blur, tanh) on fp32 CPU.
FP32_CPU_LAYER = Tolerance(atol=1e-5, rtol=1e-5, why="a few ulps of reordered float32 sums per layer")
# Whole networks (G with 9 blocks, D, F, VGG16 to relu3_3) on fp32 CPU: error accumulates through depth.
FP32_CPU_NETWORK = Tolerance(atol=2e-5, rtol=1e-5, why="measured 6e-6 end to end through G; 3x headroom")
# Scalar losses on fp32 CPU: sums over 10^5..10^6 terms in different orders.
FP32_CPU_LOSS = Tolerance(atol=1e-5, rtol=1e-5, why="reduction order of large sums")
# Gradients on fp32 CPU: backward doubles the reordered sums; relative to each tensor's scale.
FP32_CPU_GRAD = Tolerance(atol=1e-6, rtol=1e-4, why="gradients are small (init gain 0.02); judged by scale")

TOLERANCES = {
    ("CPU", "fp32", "layer"): FP32_CPU_LAYER,
    ("CPU", "fp32", "network"): FP32_CPU_NETWORK,
    ("CPU", "fp32", "loss"): FP32_CPU_LOSS,
    ("CPU", "fp32", "grad"): FP32_CPU_GRAD,
}


def tolerance(device: str, dtype: str, kind: str) -> Tolerance:
    try:
        return TOLERANCES[(device, dtype, kind)]
    except KeyError:
        known = ", ".join("/".join(k) for k in TOLERANCES)
        raise KeyError(f"no tolerance for {device}/{dtype}/{kind}; known: {known}") from None
