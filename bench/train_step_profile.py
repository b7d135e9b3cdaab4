"""Where a training step's time goes, in each framework: per-operator-category totals from each one's profiler.

The same step as bench/train_step.py (full default model, batch 1, all four losses, three Adam updates),
profiled over --steps steps after --warmup unprofiled ones, each framework in its own subprocess. Operators are
grouped into categories that exist in both (convolution forward / backward, normalisation, padding, matrix
products, everything else: elementwise maths, Adam, copies) so a reader sees which kind of kernel makes the
difference between the two frameworks' step times.

    python bench/train_step_profile.py --size 256 --steps 2 --out bench/train_step_profile.json
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import machine, variant  # noqa: E402

CATEGORIES = ("conv forward", "conv backward", "norm", "padding", "matmul", "other")
TORCH_OPS = {
    "aten::mkldnn_convolution": "conv forward", "aten::convolution_backward": "conv backward",
    "aten::native_batch_norm": "norm", "aten::native_batch_norm_backward": "norm",
    "aten::reflection_pad2d": "padding", "aten::reflection_pad2d_backward": "padding",
    "aten::native_group_norm": "norm", "aten::native_group_norm_backward": "norm",
    "aten::mm": "matmul", "aten::bmm": "matmul", "aten::addmm": "matmul",
}
MS_OPS = {
    "Conv2D": "conv forward", "Conv2DTranspose": "conv forward", "Conv2DBackpropInput": "conv backward",
    "Conv2DBackpropFilter": "conv backward", "GroupNorm": "norm", "GroupNormGrad": "norm",
    "BatchNorm": "norm", "BatchNormGrad": "norm", "MirrorPad": "padding", "MirrorPadGrad": "padding",
    "MatMul": "matmul", "BatchMatMul": "matmul",
}
# singan_ms's compiled kernels (singan_ms/native.py), timed by themselves: torch's categories for the same work.
NATIVE_KERNELS = {
    "ConvFwd": "conv forward", "ConvFwdBias": "conv forward", "ConvTransposeFwd": "conv forward",
    "ConvBwdData": "conv backward", "ConvBwdWeights": "conv backward", "ConvBwdWeightsBias": "conv backward",
    "InstanceNormFwd": "norm", "InstanceNormBwd": "norm", "AdamStep": "other",
    "ReflectionPadFwd": "padding", "ReflectionPadBwd": "padding",
    # torch adds a transposed convolution's bias inside the convolution and sums its gradient in the backward
    "BiasAddFwd": "conv forward", "BiasAddBwd": "conv backward",
    "MaxPoolFwd": "other", "MaxPoolBwd": "other", "LeakyReluFwd": "other", "LeakyReluBwd": "other",
    "L1MeanFwd": "other", "L1MeanBwd": "other", "GatherPositionsFwd": "other", "GatherPositionsBwd": "other",
}


def inputs(size: int):
    import numpy as np

    from singan_common.config import ModelConfig, TrainConfig

    cfg, tcfg = ModelConfig(), TrainConfig(crop_size=size, load_size=size)
    rs = np.random.RandomState(0)
    hazy = rs.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    clear = rs.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    return cfg, tcfg, hazy, clear


def profile_torch(size: int, steps: int, warmup: int) -> dict:
    from torch.profiler import ProfilerActivity, profile

    from singan_torch.model import SinGANDehazeModel, draws_for

    cfg, tcfg, hazy, clear = inputs(size)
    model = SinGANDehazeModel(cfg, tcfg)
    for k in range(warmup):
        model.optimize(hazy, clear, draws_for(cfg, 0, k, 1, size, size))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for k in range(warmup, warmup + steps):
            model.optimize(hazy, clear, draws_for(cfg, 0, k, 1, size, size))
        wall = time.perf_counter() - t0
    totals = dict.fromkeys(CATEGORIES, 0.0)
    ops: dict[str, float] = {}
    for e in prof.key_averages():
        ms_self = e.self_cpu_time_total / 1e3
        if ms_self <= 0:
            continue
        ops[e.key] = ms_self / steps
        totals[TORCH_OPS.get(e.key, "other")] += ms_self / steps
    return {"wall_ms_per_step": wall * 1e3 / steps, "categories_ms": totals, "top_ops_ms": top(ops)}


def profile_ms(size: int, steps: int, warmup: int, workdir: Path) -> dict:
    from mindspore import Profiler

    from singan_ms.device import setup

    setup("CPU", "graph")
    from singan_ms import native
    from singan_ms.model import SinGANDehazeModel, draws_for

    cfg, tcfg, hazy, clear = inputs(size)
    model = SinGANDehazeModel(cfg, tcfg)
    for k in range(warmup):
        model.optimize(hazy, clear, draws_for(cfg, 0, k, 1, size, size))
    native.kernel_timing(True)
    prof = Profiler(output_path=str(workdir))
    t0 = time.perf_counter()
    for k in range(warmup, warmup + steps):
        model.optimize(hazy, clear, draws_for(cfg, 0, k, 1, size, size))
    wall = time.perf_counter() - t0
    kernels = native.kernel_timing(False)
    prof.analyse()
    files = glob.glob(str(workdir / "**" / "cpu_op_type_info_*.csv"), recursive=True)
    if not files:
        raise RuntimeError(f"{workdir}: MindSpore's profiler wrote no cpu_op_type_info csv")
    totals = dict.fromkeys(CATEGORIES, 0.0)
    ops = {}
    with open(files[0]) as f:
        for row in csv.DictReader(f):
            t = float(row["total_compute_time"]) / steps
            ops[row["op_type"]] = t
            totals[MS_OPS.get(row["op_type"], "other")] += t
    # MindSpore's profiler has one "Custom" row for every compiled kernel; their own timing splits it. What the
    # row holds beyond the kernels' own time (launch) stays in "other".
    for name, (ms_total, _) in kernels.items():
        t = ms_total / steps
        ops[f"Custom:{name}"] = t
        category = NATIVE_KERNELS.get(name, "other")
        totals[category] += t
        totals["other"] -= t
    return {"wall_ms_per_step": wall * 1e3 / steps, "categories_ms": totals, "top_ops_ms": top(ops),
            "kernel_calls_per_step": {k: calls / steps for k, (_, calls) in kernels.items()}}


def top(ops: dict[str, float], n: int = 12) -> dict[str, float]:
    return dict(sorted(ops.items(), key=lambda kv: -kv[1])[:n])


def worker(framework: str, size: int, steps: int, warmup: int, out: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if framework == "torch":
            result = profile_torch(size, steps, warmup)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result = profile_ms(size, steps, warmup, Path(tmp))
    Path(out).write_text(json.dumps(result))


def run(framework: str, size: int, steps: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.train_step_profile import worker; "
                f"worker({framework!r}, {size}, {steps}, {warmup}, {str(out)!r})")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=variant(framework)[1],
                       stdout=subprocess.DEVNULL)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--out", default="bench/train_step_profile.json")
    a = p.parse_args(argv)
    res = {fw: run(fw, a.size, a.steps, a.warmup) for fw in ("torch", "ms")}
    print(f"| category (ms per step, {a.size}x{a.size}) | torch | MindSpore | MindSpore / torch |")
    print("|---|---|---|---|")
    for c in CATEGORIES:
        t, m = res["torch"]["categories_ms"][c], res["ms"]["categories_ms"][c]
        print(f"| {c} | {t:.0f} | {m:.0f} | {m / t if t else float('nan'):.2f}x |")
    t, m = (sum(res[f]["categories_ms"].values()) for f in ("torch", "ms"))
    print(f"| sum of operators | {t:.0f} | {m:.0f} | {m / t:.2f}x |")
    t, m = res["torch"]["wall_ms_per_step"], res["ms"]["wall_ms_per_step"]
    print(f"| wall, profiled | {t:.0f} | {m:.0f} | {m / t:.2f}x |")
    Path(a.out).write_text(json.dumps({"machine": machine(), "size": a.size, "steps": a.steps, **res}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
