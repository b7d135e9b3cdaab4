"""Converter cost: G + D + F of the default model (CUT's sizes) torch2ms, with and without verification.

    python bench/convert.py [--repeats 3] [--out bench/convert.json]

Each measurement runs in a fresh subprocess so imports and peak memory do not leak between them. Memory is
the peak resident set (VmHWM) reached *during* the conversion minus the resident set just before it (both
frameworks already imported), next to the size of the checkpoint files converted: the issue's budget is
that increment <= 2x the checkpoint size.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, time, warnings
from pathlib import Path
os.environ.setdefault("GLOG_v", "3")
import torch, mindspore  # noqa: F401  imported before measuring: they are not the converter's cost
from singan_ms.device import setup
setup("CPU", mode="pynative")
from convert.core import convert

def status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0

run, out, verify = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
# Warm every lazy import and kernel on a throwaway conversion of the same files.
convert(run, "torch2ms", out / "warm", verify=verify, force=True, report=lambda s: None)
Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
before = status("VmRSS")
t0 = time.perf_counter()
convert(run, "torch2ms", out / "timed", verify=verify, force=True, report=lambda s: None)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "rss_before": before, "peak": status("VmHWM")}))
"""


def make_checkpoint(folder: Path) -> int:
    """The default model's G, D, F in CUT's format (no train_state: weights only); returns total bytes."""
    import torch

    from singan_common.config import ModelConfig
    from singan_torch.networks import define_D, define_F, define_G

    cfg = ModelConfig()
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for name, define in (("G", define_G), ("D", define_D), ("F", define_F)):
        path = folder / f"latest_net_{name}.pth"
        torch.save(define(cfg, 0).state_dict(), path)
        total += path.stat().st_size
    return total


def measure(run: Path, out: Path, verify: bool) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, str(run), str(out), "1" if verify else "0"],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "convert.json"))
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        ckpt_bytes = make_checkpoint(run)
        results = {}
        for verify in (False, True):
            runs = [measure(run, Path(tmp) / "out", verify) for _ in range(a.repeats)]
            secs = sorted(r["seconds"] for r in runs)
            extra = max(r["peak"] - r["rss_before"] for r in runs)
            results["verify" if verify else "no_verify"] = {
                "median_s": secs[len(secs) // 2], "min_s": secs[0], "max_s": secs[-1],
                "peak_increment_bytes": extra, "peak_increment_over_checkpoint": extra / ckpt_bytes}
    import mindspore
    import torch

    report = {"checkpoint_bytes": ckpt_bytes, "results": results, "torch": torch.__version__,
              "mindspore": mindspore.__version__, "machine": platform.machine(), "processor": platform.processor(),
              "cpus": len(__import__("os").sched_getaffinity(0))}
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    for k, r in results.items():
        print(f"{k:9s}: median {r['median_s']:.3f} s (min {r['min_s']:.3f}, max {r['max_s']:.3f}); peak memory "
              f"+{r['peak_increment_bytes'] / 2**20:.1f} MiB = {r['peak_increment_over_checkpoint']:.2f}x the "
              f"{ckpt_bytes / 2**20:.1f} MiB checkpoint")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
