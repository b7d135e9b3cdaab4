"""Training-step benchmark: MindSpore graph mode vs PyTorch eager, same machine, same config, one run.

One iteration = G forward, D step, G + F step with all four losses and three Adam updates (the full default
model: stride2, 9 blocks, ngf = ndf = 64, 256 patches), at 256x256, batch 1, fp32 on CPU. Each framework runs in
its own subprocess (so neither one's thread pools or oneDNN settings touch the other), does `--warmup` steps
(graph compile included there), then times `--steps` steps. Prints a markdown row per framework and the ratio, and
writes the JSON to --out.

    python bench/train_step.py --steps 5 --out bench/train_step.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(framework: str, steps: int, warmup: int, size: int) -> dict:
    import numpy as np

    from singan_common.config import ModelConfig, TrainConfig

    cfg, tcfg = ModelConfig(), TrainConfig(crop_size=size, load_size=size)
    rs = np.random.RandomState(0)
    hazy = rs.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    clear = rs.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if framework == "torch":
            import torch

            from singan_torch.model import SinGANDehazeModel, draws_for

            model = SinGANDehazeModel(cfg, tcfg)
            threads = torch.get_num_threads()
        else:
            from singan_ms.device import setup

            setup("CPU", "graph")
            from singan_ms.model import SinGANDehazeModel, draws_for

            model = SinGANDehazeModel(cfg, tcfg)
            threads = None
    t0 = time.perf_counter()
    for k in range(warmup):
        model.optimize(hazy, clear, draws_for(cfg, 0, k, 1, size, size))
    warm = time.perf_counter() - t0
    times = []
    for k in range(steps):
        draws = draws_for(cfg, 0, warmup + k, 1, size, size)
        t0 = time.perf_counter()
        model.optimize(hazy, clear, draws)
        times.append(time.perf_counter() - t0)
    return {"framework": framework, "median_s": float(np.median(times)), "min_s": min(times), "times": times,
            "warmup_s": warm, "torch_threads": threads, "onednn_isa_env": os.environ.get("ONEDNN_MAX_CPU_ISA")}


def run_job(framework: str, steps: int, warmup: int, size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.train_step import measure; "
                f"from pathlib import Path; Path({str(out)!r}).write_text(json.dumps(measure({framework!r}, "
                f"{steps}, {warmup}, {size})))")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "GLOG_v": "3"})
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", default="bench/train_step.json")
    a = p.parse_args(argv)
    results = [run_job(fw, a.steps, a.warmup, a.size) for fw in ("torch", "ms")]
    ratio = results[1]["median_s"] / results[0]["median_s"]
    print("| framework | median s/step | min s/step | warm-up (compile) s |")
    print("|---|---|---|---|")
    for r in results:
        print(f"| {r['framework']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['warmup_s']:.1f} |")
    print(f"MindSpore / PyTorch time: {ratio:.2f}x")
    Path(a.out).write_text(json.dumps({"results": results, "ms_over_torch": ratio}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
