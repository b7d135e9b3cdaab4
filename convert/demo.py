"""`python -m convert demo`: the whole port, end to end, with no user data or weights.

1. trains a seeded PyTorch SinGAN-Dehaze for a few iterations on a built-in unpaired set (scikit-image's
   photos hazed with the scattering model) and saves it in CUT's format (`latest_net_{G,D,F}.pth`);
2. converts the run to MindSpore (weights and Adam state), verifying layer by layer before writing;
3. runs the parity harness's whole case table (the cases of `pytest parity/ --device CPU`) and writes its
   report (parity-report/: report.md, report.json, generator_layers.png);
4. dehazes the built-in benchmark with both frameworks and checks that they agree pixel for pixel;
5. evaluates hazy input / Dark Channel Prior / PyTorch / MindSpore against the clear photos (PSNR, SSIM,
   CIEDE2000) and writes the table, the per-layer verification report and a before/after grid to one folder.
The demo model is barely trained (seconds of CPU): the point is the port, so torch and MindSpore must score the
same, not well.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np

from singan_common.dcp import dehaze_dcp
from singan_common.dehazing import DehazeOptions, dehaze_rgb
from singan_common.evaluate import evaluate_pairs, summarize
from singan_common.fsutil import atomic_write_text
from singan_common.haze import builtin_benchmark
from singan_common.images import to_uint8, write_image

METHODS = ("hazy input", "DCP", "SinGAN-Dehaze (PyTorch)", "SinGAN-Dehaze (MindSpore)")
BENCH_SIZE = 128


def run_demo(out: Path, steps: int = 20, seed: int = 0, parity_groups: tuple[str, ...] | None = None) -> dict:
    """Everything above into `out`; returns the summary dict (also written as out/metrics.json).
    `parity_groups` limits the parity cases to some groups of parity/cases.py (tests use it; the CLI runs all)."""
    from convert.core import convert
    from singan_torch.demo import train_demo_model

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / "torch_run"
    train_demo_model(run_dir, steps=steps, seed=seed)
    lines: list[str] = []
    result = convert(run_dir, "torch2ms", out / "converted_ms", force=True, report=lines.append)
    verification_md = ["| network | max abs | max rel | cosine | verdict | first layer that parts |",
                       "|---|---|---|---|---|---|"]
    for v in result.verifications:
        o = v.output
        bad = next((c.name for c in v.layers if not c.passed), "-")
        verification_md.append(f"| {v.network} | {o.max_abs:.2e} | {o.max_rel:.2e} | {o.cosine:.9f} | "
                               f"{'ok' if v.passed else 'FAIL'} | {bad} |")
    per_layer = ["| layer | max abs | max rel | cosine | verdict |", "|---|---|---|---|---|"]
    for c in result.verifications[0].layers:
        per_layer.append(f"| {c.name} | {c.max_abs:.2e} | {c.max_rel:.2e} | {c.cosine:.9f} | "
                         f"{'ok' if c.passed else 'FAIL'} |")

    parity_passed, parity_failed, parity_files = run_parity(out / "parity-report", parity_groups)
    scenes = builtin_benchmark(seed=seed, size=BENCH_SIZE)
    outputs = dehaze_both(run_dir, out / "converted_ms", scenes)
    rows_by_method, summaries = {}, {}
    for method in METHODS:
        pairs = [(name, outputs[method][i], clear) for i, (name, clear, _) in enumerate(scenes)]
        rows_by_method[method] = evaluate_pairs(pairs)
        summaries[method] = summarize(rows_by_method[method])
    pairs = list(zip(outputs[METHODS[2]], outputs[METHODS[3]], strict=True))
    float_diff = max(float(np.abs(a - b).max()) for a, b in pairs)
    u8_differing = sum(int((to_uint8(a) != to_uint8(b)).sum()) for a, b in pairs)
    agreement = {"max_abs_float": float_diff, "uint8_pixels_differing": u8_differing,
                 "psnr_difference_db": summaries[METHODS[3]]["psnr"] - summaries[METHODS[2]]["psnr"]}

    table = ["| method | PSNR (dB) | SSIM | CIEDE2000 |", "|---|---|---|---|"]
    for m in METHODS:
        s = summaries[m]
        table.append(f"| {m} | {s['psnr']:.3f} | {s['ssim']:.4f} | {s['ciede2000']:.3f} |")
    grid_path = out / "before_after_grid.png"
    write_grid(grid_path, scenes, outputs)
    elapsed = time.perf_counter() - t0
    report = "\n".join([
        "# SinGAN-Dehaze port demo", "",
        f"{len(scenes)} built-in hazy photos ({BENCH_SIZE} px short side), model trained {steps} iterations in "
        "PyTorch (seeded, random VGG16: barely trained), converted to MindSpore. Finished in "
        f"{elapsed:.0f} s.", "",
        "## Metrics against the clear photos", "", *table, "",
        f"PyTorch vs MindSpore outputs: max |difference| {agreement['max_abs_float']:.2e} (float), "
        f"{agreement['uint8_pixels_differing']} uint8 values differ, PSNR difference "
        f"{agreement['psnr_difference_db']:+.4f} dB.", "",
        "## Parity harness", "",
        f"{parity_passed} cases passed, {len(parity_failed)} failed"
        + (f" ({', '.join(parity_failed[:10])})" if parity_failed else "")
        + f"; full table in `parity-report/{parity_files[1].name}`, per-layer plot in "
        f"`parity-report/{parity_files[-1].name}`.", "",
        "## Conversion verification (both frameworks on one seeded probe)", "", *verification_md, "",
        "### Generator, layer by layer", "", *per_layer, "",
        f"Grid: `{grid_path.name}` (columns: {' | '.join(('hazy', 'DCP', 'PyTorch', 'MindSpore', 'clear'))}).", ""])
    atomic_write_text(out / "report.md", report)
    summary = {"methods": summaries, "torch_vs_ms": agreement, "seconds": elapsed,
               "parity": {"passed": parity_passed, "failed": parity_failed},
               "verification": lines}
    atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2, default=str) + "\n")
    print("\n".join(table))
    print(f"\ntorch vs MindSpore: PSNR difference {agreement['psnr_difference_db']:+.4f} dB, "
          f"max abs {agreement['max_abs_float']:.2e}")
    print(f"demo finished in {elapsed:.0f} s; open {out / 'report.md'} and {grid_path}")
    return summary


def run_parity(report_dir: Path, groups: tuple[str, ...] | None = None) -> tuple[int, list[str], list[Path]]:
    """The cases of parity/cases.py (all, or those of `groups`), set up as `pytest parity/ --device CPU` sets
    them up; returns (passed, failed ids, report files)."""
    import torch

    from parity.cases import CASES
    from parity.report import write_report
    from parity.runner import prepare, run_case

    threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        setup = prepare("CPU")
        cases = [c for c in CASES if groups is None or c.row.group in groups]
        results = [run_case(c, setup.ctx, "CPU", setup.dtype) for c in cases]
    finally:
        torch.set_num_threads(threads)
    meta = {**setup.meta, "wall_seconds": f"{time.perf_counter() - t0:.1f}", "argv": "python -m convert demo",
            "torch_device": setup.ctx.torch_device}
    files = write_report(results, report_dir, meta)
    failed = [r.case_id for r in results if not r.passed]
    return len(results) - len(failed), failed, files


def dehaze_both(torch_run: Path, ms_run: Path, scenes) -> dict[str, list[np.ndarray]]:
    import singan_ms.dehaze as ms_dehaze
    import singan_torch.dehaze as torch_dehaze
    from singan_ms.device import setup

    setup("CPU")
    t_net, _ = torch_dehaze.load_generator(torch_run)
    m_net, _ = ms_dehaze.load_generator(ms_run)
    t_fn, m_fn = torch_dehaze.generator_fn(t_net), ms_dehaze.generator_fn(m_net)
    opts = DehazeOptions()
    outputs: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    for _, _, hazy in scenes:
        outputs[METHODS[0]].append(hazy)
        outputs[METHODS[1]].append(dehaze_dcp(hazy))
        outputs[METHODS[2]].append(dehaze_rgb(hazy, t_fn, opts))
        outputs[METHODS[3]].append(dehaze_rgb(hazy, m_fn, opts))
    return outputs


def write_grid(path: Path, scenes, outputs: dict[str, list[np.ndarray]]) -> None:
    """One row per photo: hazy | DCP | PyTorch | MindSpore | clear, each resized to a common height."""
    from singan_common.images import resize

    rows = []
    for i, (_, clear, _) in enumerate(scenes):
        cells = [outputs[m][i] for m in METHODS] + [clear]
        h = BENCH_SIZE
        cells = [resize(c, (max(1, round(c.shape[1] * h / c.shape[0])), h)) for c in cells]
        gap = np.ones((h, 4, 3), np.float32)
        rows.append(np.concatenate([x for c in cells for x in (c, gap)][:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=1.0) for r in rows]
    write_image(path, np.concatenate(rows, axis=0))


def main_demo(out: str, steps: int) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_demo(Path(out), steps=steps)
    return 0
