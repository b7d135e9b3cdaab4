"""Training-step benchmark: MindSpore graph mode vs PyTorch eager, same machine, same config, one run.

One iteration = G forward, D step, G + F step with all four losses and three Adam updates (the full default
model: stride2, 9 blocks, ngf = ndf = 64, 256 patches), at 256x256, batch 1, fp32 on CPU. Each framework runs in
its own subprocess (so neither one's thread pools or oneDNN settings touch the other), does `--warmup` steps
(graph compile included there), then times `--steps` steps. `--variants` chooses what runs (bench/__init__.py:
torch, ms, ms-operators) and `--rounds` repeats them interleaved. Prints a markdown row per variant and each one's
ratio to the first, and writes the JSON to --out.

    python bench/train_step.py --steps 3 --rounds 2 --variants torch ms ms-operators --out bench/train_step.json
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import VARIANTS, machine, variant  # noqa: E402


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


def run_job(name: str, steps: int, warmup: int, size: int) -> dict:
    framework, env = variant(name)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.train_step import measure; "
                f"from pathlib import Path; Path({str(out)!r}).write_text(json.dumps(measure({framework!r}, "
                f"{steps}, {warmup}, {size})))")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
        return {**json.loads(out.read_text()), "variant": name}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=["torch", "ms"])
    # On a shared machine speed drifts over minutes: rounds interleave the variants so drift hits all alike.
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--out", default="bench/train_step.json")
    a = p.parse_args(argv)
    runs = [run_job(v, a.steps, a.warmup, a.size) for _ in range(a.rounds) for v in a.variants]
    results = []
    for v in a.variants:
        mine = [r for r in runs if r["variant"] == v]
        times = [t for r in mine for t in r["times"]]
        results.append({**mine[0], "times": times, "median_s": float(np.median(times)), "min_s": min(times),
                        "warmup_s": [r["warmup_s"] for r in mine]})
    print("| variant | median s/step | min s/step | warm-up (compile) s |")
    print("|---|---|---|---|")
    for r in results:
        warm = ", ".join(f"{w:.1f}" for w in r["warmup_s"])
        print(f"| {r['variant']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {warm} |")
    ratios = {r["variant"]: r["median_s"] / results[0]["median_s"] for r in results[1:]}
    for v, ratio in ratios.items():
        print(f"{v} / {results[0]['variant']} time: {ratio:.2f}x")
    Path(a.out).write_text(json.dumps({"machine": machine(), "results": results, "ratios_to_first": ratios,
                                      "rounds": a.rounds}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
