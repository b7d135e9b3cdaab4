"""What singan_ms.native's compiled CPU kernels buy, each against the MindSpore operators they replace and against
torch doing the same work: instance norm forward + backward (the kernel vs `mint.nn.functional.group_norm`, both
under `mindspore.jit`, vs `torch.nn.functional.instance_norm` eager) at the generator's three activation shapes of a
256x256 image, and one Adam update over the default generator's 48 parameter tensors (11.4 M elements; the kernel
vs the exact float64 operator route vs `torch.optim.Adam`). Median of --repeats after one warm-up call, one
process (both frameworks import fine together; MindSpore's oneDNN is latched by singan_ms.device first).

    python bench/kernels.py --repeats 10 --out bench/kernels.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import machine  # noqa: E402

NORM_SHAPES = ((1, 64, 256, 256), (1, 128, 128, 128), (1, 256, 64, 64))


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn()` (which must block until its work is done), after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def norm_rows(repeats: int) -> list[dict]:
    import mindspore as ms
    import torch
    from mindspore import Tensor, mint

    from singan_ms.networks import NativeInstanceNorm

    kernel = NativeInstanceNorm()

    def group_norm(x: Tensor) -> Tensor:
        return mint.nn.functional.group_norm(x, x.shape[1], eps=1e-5)

    def fwd_bwd(norm: Callable[[Tensor], Tensor]) -> Callable:
        def loss(x: Tensor, w: Tensor) -> Tensor:
            return (norm(x) * w).sum()
        return ms.jit(ms.grad(loss, grad_position=0))

    rows = []
    rs = np.random.RandomState(0)
    for shape in NORM_SHAPES:
        x, w = rs.standard_normal(shape).astype(np.float32), rs.standard_normal(shape).astype(np.float32)
        row = {"shape": list(shape)}
        for name, norm in (("group_norm", group_norm), ("kernel", kernel)):
            step, xm, wm = fwd_bwd(norm), Tensor(x), Tensor(w)
            row[f"ms_{name}_ms"] = median_ms(lambda step=step, xm=xm, wm=wm: step(xm, wm).asnumpy(), repeats)
        xt, wt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(w)

        def torch_step(xt: torch.Tensor = xt, wt: torch.Tensor = wt) -> None:
            xt.grad = None
            (torch.nn.functional.instance_norm(xt, eps=1e-5) * wt).sum().backward()
        row["torch_ms"] = median_ms(torch_step, repeats)
        rows.append(row)
    return rows


def adam_row(repeats: int) -> dict:
    import mindspore as ms
    import torch
    from mindspore import Tensor

    from singan_common.config import ModelConfig
    from singan_ms.networks import define_G
    from singan_ms.optim import Adam

    params = define_G(ModelConfig(), seed=0).trainable_params()
    rs = np.random.RandomState(1)
    grads = tuple(Tensor(rs.standard_normal(p.shape).astype(np.float32)) for p in params)
    row = {"tensors": len(params), "elements": int(sum(int(np.prod(p.shape)) for p in params))}
    for name, use_kernel in (("kernel", True), ("operators", False)):
        adam = Adam(params, lr=2e-4, betas=(0.5, 0.999), name=f"bench_{name}")
        if use_kernel and not adam.use_kernel:
            row["ms_kernel_ms"] = None  # no compiler here: the kernel route does not exist
            continue
        adam.use_kernel = use_kernel
        step = ms.jit(adam.construct)
        # The step returns a constant (and mindspore.runtime.synchronize refuses CPU): reading the Parameter the
        # step writes last (its writes are chained by ops.depend) waits for the whole update.
        row[f"ms_{name}_ms"] = median_ms(lambda step=step: (step(grads), params[-1].asnumpy()), repeats)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.asnumpy())) for p in params]
    for tp, g in zip(tparams, grads):
        tp.grad = torch.from_numpy(g.asnumpy())
    opt = torch.optim.Adam(tparams, lr=2e-4, betas=(0.5, 0.999))
    row["torch_ms"] = median_ms(opt.step, repeats)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--out", default="bench/kernels.json")
    a = p.parse_args(argv)
    from singan_ms.device import setup

    setup("CPU", "graph")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        norms, adam = norm_rows(a.repeats), adam_row(a.repeats)
    print("| instance norm fwd + bwd, shape | MindSpore GroupNorm ms | kernel ms | torch ms |")
    print("|---|---|---|---|")
    for r in norms:
        print(f"| {tuple(r['shape'])} | {r['ms_group_norm_ms']:.1f} | {r['ms_kernel_ms']:.1f} | {r['torch_ms']:.1f} |")
    kernel = "n/a" if adam["ms_kernel_ms"] is None else f"{adam['ms_kernel_ms']:.0f}"
    print(f"Adam over G ({adam['tensors']} tensors, {adam['elements']} elements): operators "
          f"{adam['ms_operators_ms']:.0f} ms, kernel {kernel} ms, torch {adam['torch_ms']:.0f} ms")
    Path(a.out).write_text(json.dumps({"machine": machine(), "norm": norms, "adam": adam}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
