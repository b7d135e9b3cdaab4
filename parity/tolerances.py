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

# One Adam step: torch-exact arithmetic in singan_ms.optim (float64 bias corrections, fused multiply-adds),
# so parameters after a step agree to float32 rounding of the parameter values themselves.
FP32_CPU_OPTIM = Tolerance(atol=1e-7, rtol=1e-6, why="Adam reproduced op by op; a few ulps of the parameters")
# Training trajectory in function space (per-step losses, G's output on a fixed probe): each step feeds the
# last step's (few-ulp) differences forward, and Adam's first steps turn the sign of gradient elements that
# are below float noise into +-lr, so a few elements move by 2 lr; G's outputs respond smoothly.
FP32_CPU_TRAIN_FN = Tolerance(atol=2e-5, rtol=1e-5, why="N training steps; measured 5e-7 on losses after 3")
# Training trajectory in parameter space, structural zeros excluded (they are reported on their own):
# parameters agree to float32 rounding except gradient elements at float-noise level, whose Adam update
# sign is arbitrary; those are counted and bounded by 2 * lr * steps in the report, not hidden here.
FP32_CPU_TRAIN_PARAM = Tolerance(atol=1e-6, rtol=1e-5, why="Adam amplifies noise-level gradient elements")

TOLERANCES = {
    ("CPU", "fp32", "layer"): FP32_CPU_LAYER,
    ("CPU", "fp32", "network"): FP32_CPU_NETWORK,
    ("CPU", "fp32", "loss"): FP32_CPU_LOSS,
    ("CPU", "fp32", "grad"): FP32_CPU_GRAD,
    ("CPU", "fp32", "optim"): FP32_CPU_OPTIM,
    ("CPU", "fp32", "train_fn"): FP32_CPU_TRAIN_FN,
    ("CPU", "fp32", "train_param"): FP32_CPU_TRAIN_PARAM,
}

# GPU fp32 (TF32 off in torch: conftest sets torch.backends.cuda.matmul.allow_tf32 = False and
# torch.backends.cudnn.allow_tf32 = False; MindSpore's GPU convs are cuDNN fp32). cuDNN picks different
# algorithms in the two frameworks (Winograd / FFT / implicit GEMM), whose float32 rounding differs more than
# two oneDNN kernels on CPU: NVIDIA documents Winograd/FFT errors of ~1e-5 relative for fp32 convs. Hence 5x the
# CPU constants. Not yet measured on hardware in this project: the first GPU run's report is the evidence, and
# these constants must be re-derived from it (docs/parity.md).
_GPU_FACTOR = 5.0
# Ascend: Cube units compute convolutions and matmuls in float16 by default (precision_mode
# "allow_fp32_to_fp16" / "force_fp16" in CANN), i.e. an 11-bit mantissa: a relative error of 2^-11 = 4.9e-4
# per product, averaged over the reduction. torch on the host stays fp32, so the comparison measures the fp16
# rounding: 1e-3 relative per layer and 5e-3 through a network, losses 1e-3, gradients 1e-2 of scale.
# With MindSpore's precision_mode set to "must_keep_origin_dtype" (fp32 Cube) use the GPU constants instead.
# The precision mode of a run is recorded in report.json (conftest).
_ASCEND = {
    "layer": Tolerance(atol=1e-3, rtol=1e-3, why="Ascend Cube fp16 products: 2^-11 relative per layer"),
    "network": Tolerance(atol=5e-3, rtol=5e-3, why="fp16 rounding accumulated through a deep network"),
    "loss": Tolerance(atol=1e-3, rtol=1e-3, why="losses of fp16-rounded features"),
    "grad": Tolerance(atol=1e-4, rtol=1e-2, why="backward through fp16 convs, judged by each tensor's scale"),
    "optim": Tolerance(atol=1e-7, rtol=1e-6, why="Adam is elementwise fp32 on the Vector unit: no fp16 Cube"),
    "train_fn": Tolerance(atol=1e-2, rtol=1e-2, why="N steps of fp16-rounded forward and backward"),
    "train_param": Tolerance(atol=1e-3, rtol=1e-2, why="fp16 gradients flip Adam signs of more small elements"),
}
for (_dev, _dt, _kind), _t in list(TOLERANCES.items()):
    if _kind == "optim":  # elementwise, no kernel-algorithm choice: the CPU constant holds on GPU
        TOLERANCES[("GPU", "fp32", _kind)] = _t
    else:
        TOLERANCES[("GPU", "fp32", _kind)] = Tolerance(_t.atol * _GPU_FACTOR, _t.rtol * _GPU_FACTOR,
                                                       f"GPU fp32, cuDNN algorithm choice: 5x CPU ({_t.why})")
    TOLERANCES[("Ascend", "fp16", _kind)] = _ASCEND[_kind]
    TOLERANCES[("Ascend", "fp32", _kind)] = TOLERANCES[("GPU", "fp32", _kind)]


def structural_zero(gradient_scale: float) -> Tolerance:
    """Bound for a gradient that is mathematically zero (a conv bias right before an affine-free instance
    norm): float noise only, on both sides, judged against the gradient scale of the same network. Not a
    comparison of two values (their signs are random) but a check that both are noise."""
    return Tolerance(atol=1e-4 * gradient_scale, rtol=0.0,
                     why="structurally zero gradient: both sides must be float noise (< 1e-4 of the net's scale)")


def tolerance(device: str, dtype: str, kind: str) -> Tolerance:
    try:
        return TOLERANCES[(device, dtype, kind)]
    except KeyError:
        known = ", ".join("/".join(k) for k in TOLERANCES)
        raise KeyError(f"no tolerance for {device}/{dtype}/{kind}; known: {known}") from None
