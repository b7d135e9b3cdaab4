"""`python -m convert demo`, shortened: every artefact a user opens is written and says what it should."""

from __future__ import annotations

import json
import math

from PIL import Image

from convert.demo import BENCH_SIZE, METHODS, run_demo
from singan_common.haze import BUILTIN_PHOTOS

PSNR_AGREEMENT_DB = 0.01  # the requirement for torch vs MindSpore on the same weights


def test_short_demo_writes_everything_and_the_frameworks_agree(tmp_path):
    out = tmp_path / "demo"
    summary = run_demo(out, steps=2, parity_groups=("layer", "optim"))
    for rel in ("report.md", "metrics.json", "before_after_grid.png", "converted_ms/latest_net_G.ckpt",
                "converted_ms/train_state.ckpt", "converted_ms/run_config.json", "torch_run/latest_net_G.pth",
                "parity-report/report.md", "parity-report/report.json"):
        assert (out / rel).is_file(), rel
    on_disk = json.loads((out / "metrics.json").read_text())
    assert set(on_disk["methods"]) == set(METHODS)
    for method in METHODS:
        s = on_disk["methods"][method]
        assert math.isfinite(s["psnr"]) and 0 < s["ssim"] <= 1 and s["ciede2000"] >= 0
    assert abs(summary["torch_vs_ms"]["psnr_difference_db"]) <= PSNR_AGREEMENT_DB
    assert summary["torch_vs_ms"]["max_abs_float"] < 1e-4
    assert on_disk["parity"]["failed"] == [] and on_disk["parity"]["passed"] > 0
    report = (out / "report.md").read_text()
    assert "| SinGAN-Dehaze (MindSpore) |" in report and "FAIL" not in report
    grid = Image.open(out / "before_after_grid.png")
    assert grid.size[1] >= len(BUILTIN_PHOTOS) * BENCH_SIZE  # one row per photo
