"""Run one parity case end to end and judge it: reference (live PyTorch or a golden record), port
(MindSpore), then every output compared under its tolerance, structural zeros checked on their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parity.cases import FP64_PREFIX, RUNNERS, TRAIN, Case, Context, Record, loss_structural_zeros
from parity.compare import Comparison, compare, compare_sparse
from parity.engine import compare_captures
from parity.tolerances import Tolerance, structural_zero, tolerance


def adam_noise_bound(lr: float, betas: tuple[float, float], steps: int) -> float:
    """How far two Adam runs can part on a parameter whose gradient is float noise (arbitrary values each
    step): each moves by lr * |m_hat_t / sqrt(v_hat_t)| at step t, and with m_hat_t = sum a_i g_i,
    v_hat_t = sum b_i g_i^2 (bias-corrected EMA weights), Cauchy-Schwarz gives the exact supremum
    sqrt(sum a_i^2 / b_i) over all gradient histories: 1 at step 1, 1.054 and 1.133 at steps 2 and 3 for CUT's
    betas (0.5, 0.999). (Until 2026-12-02 this was 2 lr per step, which a legitimate run exceeded: 1.21e-3 vs
    1.20e-3 after 3 steps, under this bound's 1.27e-3.)"""
    b1, b2 = betas
    total = 0.0
    for t in range(1, steps + 1):
        i = np.arange(1, t + 1)
        a = (1 - b1) * b1 ** (t - i) / (1 - b1 ** t)
        b = (1 - b2) * b2 ** (t - i) / (1 - b2 ** t)
        total += float(np.sqrt((a * a / b).sum()))
    return 2.0 * lr * total
# In parameter space, at most this fraction of a tensor's elements may be beyond rounding (sign noise of
# noise-level gradient elements; measured: under 1e-5). A real fault moves most elements.
MAX_NOISE_FRACTION = 1e-3


DEVICES = ("CPU", "GPU", "Ascend")


@dataclass
class Setup:
    """What a parity run needs before its first case: the reference's context, the tolerance dtype, the
    golden file (when replaying) and the report's metadata."""

    ctx: Context
    dtype: str
    meta: dict[str, str]
    golden: Any = None


def prepare(device: str, golden_path: str | None = None) -> Setup:
    """Set MindSpore up before torch runs anything (singan_ms.device latches the CPU oneDNN ISA for
    MindSpore's copy only; see singan_ms/device.py), then torch, unless a golden file replaces it.
    Used by parity/conftest.py and by `python -m convert demo`; raises RuntimeError with a clear message.
    On CPU it leaves torch at one thread: callers that go on to other work restore their own count."""
    if device not in DEVICES:
        raise RuntimeError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    from singan_ms.device import DeviceError, setup

    try:
        setup(device, mode="pynative")
    except DeviceError as exc:
        raise RuntimeError(f"--device {device}: MindSpore cannot run here: {exc}") from None
    import mindspore as ms

    meta = {"device": device, "mindspore": ms.__version__, "mode": "pynative (+jit train step)"}
    dtype = "fp32"
    if device == "Ascend":
        # Cube units compute convs/matmuls in fp16 unless told otherwise: record what this run used.
        try:
            mode = (ms.get_context("ascend_config") or {}).get("precision_mode", "default (force_fp16)")
        except Exception:  # noqa: BLE001 - older/newer MindSpore spell it differently; record that we could not
            mode = "unknown"
        meta["ascend_precision_mode"] = str(mode)
        dtype = "fp32" if "must_keep_origin_dtype" in str(mode) else "fp16"
    meta["tolerance_dtype"] = dtype
    if golden_path:
        from parity.golden import Golden

        golden = Golden(golden_path)
        meta.update(reference=f"golden {golden_path}", **{f"golden_{k}": v for k, v in golden.meta.items()})
        return Setup(Context(), dtype, meta, golden)
    import torch

    ctx = Context()
    if device == "GPU":
        if not torch.cuda.is_available():
            raise RuntimeError("--device GPU: torch sees no CUDA device for the reference")
        # TF32 would make the reference itself a 1e-3 approximation.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        ctx = Context(torch_device="cuda")
    else:
        # torch's and MindSpore's OpenMP pools spin against each other on a small CPU: torch with its
        # default threads ran 10-70x slower once MindSpore had started (measured on 2 cores).
        torch.set_num_threads(1)
    meta.update(reference=f"torch {torch.__version__} on {ctx.torch_device}",
                tf32=str(torch.backends.cuda.matmul.allow_tf32))
    return Setup(ctx, dtype, meta)


@dataclass
class CaseResult:
    case_id: str
    group: str
    comparisons: list[Comparison]
    structural: list[Comparison] = field(default_factory=list)
    only_reference: list[str] = field(default_factory=list)
    seconds: float = 0.0
    tolerance_kind: str = ""

    @property
    def first_failure(self) -> Comparison | None:
        return next((c for c in self.comparisons + self.structural if not c.passed), None)

    @property
    def passed(self) -> bool:
        return self.first_failure is None and not self.only_reference

    def worst(self) -> Comparison | None:
        return max(self.comparisons, key=lambda c: c.max_abs, default=None)

    def message(self) -> str:
        if self.only_reference:
            return f"{self.case_id}: the port produced no {', '.join(self.only_reference[:5])}"
        bad = self.first_failure
        if bad is None:
            return f"{self.case_id}: ok"
        return f"{self.case_id}: first failure at {bad.name}: {bad.line()}"


def reference(case: Case, ctx: Context) -> Record:
    return RUNNERS[case.row.runner][0](case, ctx)


def port(case: Case, ctx: Context, record: Record) -> dict[str, np.ndarray]:
    return RUNNERS[case.row.runner][1](case, ctx, record)


def judge(case: Case, record: Record, ours: dict[str, np.ndarray], device: str, dtype: str) -> CaseResult:
    """Compare the port's outputs with the record's under the tolerances of (device, dtype)."""
    runner = case.row.runner

    def tol(kind: str) -> Tolerance:
        return tolerance(device, dtype, kind)

    ref = record.outputs
    result = CaseResult(case.id, case.row.group, [], tolerance_kind=case.row.kind)
    if runner == "module":
        paired = compare_captures(ours, ref, tol(case.row.kind))
        result.comparisons, result.only_reference = paired.comparisons, paired.only_reference
        return result
    if runner == "optim":
        paired = compare_captures(ours, ref, tol("optim"))
        result.comparisons, result.only_reference = paired.comparisons, paired.only_reference
        return result
    zeros = loss_structural_zeros(case)
    scales: dict[str, float] = {}
    for name, value in ref.items():
        if name.startswith(("grad/", "param/")) and name.split("/", 1)[1] not in zeros:
            net = name.split("/")[1]
            scales[net] = max(scales.get(net, 0.0), float(np.abs(value).max(initial=0.0)))
    for name, value in ref.items():
        if name.startswith(FP64_PREFIX):
            continue
        if name not in ours:
            result.only_reference.append(name)
            continue
        key = name.split("/", 1)[1] if "/" in name else name
        if runner == "loss":
            if name.startswith("grad/") and key in zeros:
                # Both sides must be float noise; compare each against zero, report the larger.
                net = key.split("/")[0]
                bound = structural_zero(scales.get(net, 0.0))
                a = compare(name, ours[name], np.zeros_like(value), bound)
                b = compare(name, value, np.zeros_like(value), bound)
                result.structural.append(max(a, b, key=lambda c: c.max_abs))
            else:
                base = tol("grad" if name.startswith("grad/") else "loss")
                ref64 = ref.get(FP64_PREFIX + name)
                if ref64 is not None:
                    # The reference is itself float32: allow the port twice torch's own measured float32 error
                    # (against torch in float64) on top of the constant. Zero where the loss is well conditioned.
                    own = float(np.abs(value.astype(np.float64) - ref64).max(initial=0.0))
                    base = Tolerance(base.atol + 2.0 * own, base.rtol,
                                     f"{base.why}; + 2 x torch's own fp32 error {own:.1e}")
                result.comparisons.append(compare(name, ours[name], value, base))
        else:  # train
            steps = case.p["steps"]
            if name.startswith("param/"):
                bound = adam_noise_bound(TRAIN.lr, (TRAIN.beta1, TRAIN.beta2), steps)
                if key in zeros:
                    # Mathematically zero gradient: Adam turns its noise into about +-lr per step on each side.
                    result.structural.append(compare(name, ours[name], value, Tolerance(bound, 0.0, "Adam bound")))
                else:
                    rounding = tol("train_param")
                    ref64 = ref.get(FP64_PREFIX + name)
                    if ref64 is not None:
                        own = float(np.abs(value.astype(np.float64) - ref64).max(initial=0.0))
                        rounding = Tolerance(rounding.atol + 2.0 * own, rounding.rtol,
                                             f"{rounding.why}; + 2 x torch's own fp32 drift {own:.1e}")
                    result.comparisons.append(compare_sparse(name, ours[name], value, rounding, bound,
                                                             MAX_NOISE_FRACTION))
            else:
                base = tol("train_fn")
                ref64 = ref.get(FP64_PREFIX + name)
                if ref64 is not None:
                    own = float(np.abs(value.astype(np.float64) - ref64).max(initial=0.0))
                    base = Tolerance(base.atol + 2.0 * own, base.rtol,
                                     f"{base.why}; + 2 x torch's own fp32 drift {own:.1e}")
                result.comparisons.append(compare(name, ours[name], value, base))
    return result


def run_case(case: Case, ctx: Context, device: str, dtype: str, record: Record | None = None) -> CaseResult:
    """Reference (unless a golden record is given), port, judge; times the whole case."""
    start = time.perf_counter()
    if record is None:
        record = reference(case, ctx)
    ours = port(case, ctx, record)
    result = judge(case, record, ours, device, dtype)
    result.seconds = time.perf_counter() - start
    return result
