"""Training-step benchmark: MindSpore graph mode vs PyTorch eager, same machine, same config, one run.

One iteration = G forward, D step, G + F step with all four losses and three Adam updates (the full default
model: stride2, 9 blocks, ngf = ndf = 64, 256 patches), at 256x256, batch 1, fp32 on CPU. Each framework runs in
its own subprocess (so neither one's thread pools or oneDNN settings touch the other), does `--warmup` steps
(graph compile included there), then times `--steps` steps. `--variants` chooses what runs (bench/__init__.py:
torch, ms, ms-operators) and `--rounds` repeats them interleaved. Prints a markdown row per variant and each one's
ratio to the first, and writes the JSON to --out.

`--paired N` instead keeps one live process per variant and alternates single steps between them, N steps
each: on a shared host whose speed drifts by 20% within minutes (the one of docs/benchmarks.md), neighbouring
steps see the same conditions, so the median of the per-pair ratios is the figure to quote; the waiting process
blocks on its pipe and uses no CPU.

    python bench/train_step.py --steps 3 --rounds 2 --variants torch ms ms-operators --out bench/train_step.json
    python bench/train_step.py --paired 20 --variants torch ms --out bench/train_step.json
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
    step = build(framework, size)
    t0 = time.perf_counter()
    for k in range(warmup):
        step(k)
    warm = time.perf_counter() - t0
    times = []
    for k in range(warmup, warmup + steps):
        t0 = time.perf_counter()
        step(k)
        times.append(time.perf_counter() - t0)
    threads = None
    if framework == "torch":
        import torch

        threads = torch.get_num_threads()
    return {"framework": framework, "median_s": float(np.median(times)), "min_s": min(times), "times": times,
            "warmup_s": warm, "torch_threads": threads, "onednn_isa_env": os.environ.get("ONEDNN_MAX_CPU_ISA")}


def build(framework: str, size: int):
    """(model, step function of the step index) for one framework, as measure() runs it."""
    import numpy as np

    from singan_common.config import ModelConfig, TrainConfig

    cfg, tcfg = ModelConfig(), TrainConfig(crop_size=size, load_size=size)
    rs = np.random.RandomState(0)
    hazy = rs.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    clear = rs.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if framework == "torch":
            from singan_torch.model import SinGANDehazeModel, draws_for
        else:
            from singan_ms.device import setup

            setup("CPU", "graph")
            from singan_ms.model import SinGANDehazeModel, draws_for
        model = SinGANDehazeModel(cfg, tcfg)
    return lambda k: model.optimize(hazy, clear, draws_for(cfg, 0, k, 1, size, size))


def serve(framework: str, warmup: int, size: int) -> None:
    """Worker of --paired: warm up, say so, then time one step per line read from stdin ("k"), replying seconds."""
    step = build(framework, size)
    for k in range(warmup):
        step(k)
    print("ready", flush=True)
    for line in sys.stdin:
        k = int(line)
        t0 = time.perf_counter()
        step(k)
        print(time.perf_counter() - t0, flush=True)


def run_paired(names: list[str], pairs: int, warmup: int, size: int) -> list[dict]:
    procs = []
    for name in names:
        framework, env = variant(name)
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from bench.train_step import serve; "
                f"serve({framework!r}, {warmup}, {size})")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {name} worker failed while warming up")
        procs.append((name, framework, proc, time.perf_counter() - t0))
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for k in range(warmup, warmup + pairs):
            for name, _, proc, _ in procs:
                proc.stdin.write(f"{k}\n")
                proc.stdin.flush()
                times[name].append(float(proc.stdout.readline()))
    finally:
        for _, _, proc, _ in procs:
            proc.stdin.close()
            proc.wait()
    return [{"framework": framework, "variant": name, "times": times[name], "median_s": float(np.median(times[name])),
             "min_s": min(times[name]), "warmup_s": [warm], "torch_threads": None,
             "onednn_isa_env": os.environ.get("ONEDNN_MAX_CPU_ISA")} for name, framework, _, warm in procs]


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
    p.add_argument("--paired", type=int, default=0, metavar="N",
                   help="alternate single steps between live processes, N each (ignores --steps / --rounds)")
    a = p.parse_args(argv)
    if a.paired:
        results = run_paired(a.variants, a.paired, a.warmup, a.size)
    else:
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
        print(f"{v} / {results[0]['variant']} time: {ratio:.2f}x (ratio of medians)")
    summary = {"machine": machine(), "results": results, "ratios_to_first": ratios, "rounds": a.rounds}
    if a.paired:
        base = np.asarray(results[0]["times"])
        paired = {r["variant"]: float(np.median(np.asarray(r["times"]) / base)) for r in results[1:]}
        for v, ratio in paired.items():
            print(f"{v} / {results[0]['variant']} time: {ratio:.2f}x (median of {a.paired} paired steps)")
        summary = {**summary, "rounds": None, "paired_steps": a.paired, "paired_ratios_to_first": paired}
    Path(a.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
