"""dehaze (both frameworks) then evaluate, on small look-alikes of SOTS-indoor, SOTS-outdoor, O-HAZE and D-HAZY.

Each folder copies its dataset's file naming and formats (SOTS-indoor's 10 px GT border and several hazy
versions per scene, SOTS-outdoor's `id_A_beta.jpg`, O-HAZE's `_hazy` / `_GT` JPEGs, D-HAZY's NYU `_Hazy` /
`_Image_` / `_Depth_` BMPs), filled with real photos hazed by singan_common.haze. The same seeded generator
dehazes with singan_torch and singan_ms; every hazy file must be dehazed, paired with its ground truth by the
preset, and both frameworks must score the same (the issue's 0.01 dB).
"""

from __future__ import annotations

import csv
import json

import mindspore as ms
import numpy as np
import pytest
import torch

from singan_common import evaluate as ev
from singan_common.config import ModelConfig, RunConfig
from singan_common.haze import builtin_benchmark
from singan_common.images import write_image
from singan_ms.__main__ import main as ms_main
from singan_ms.networks import define_G as ms_define_G
from singan_torch.__main__ import main as torch_main
from singan_torch.networks import define_G as torch_define_G

CFG = ModelConfig(ngf=8, n_blocks=2, nce_layers=(0, 4, 8))
PSNR_AGREEMENT_DB = 0.01  # the requirement for torch vs MindSpore on the same weights
SSIM_AGREEMENT = 1e-4  # outputs differ in at most a few uint8 values by one; SSIM moves far less than this


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    ms.save_checkpoint(ms_define_G(CFG, 3), str(run / "latest_net_G.ckpt"))
    torch.save(torch_define_G(CFG, 3).state_dict(), run / "latest_net_G.pth")
    RunConfig(model=CFG).save(run / "run_config.json")
    return run


def make_layout(root, preset: str) -> tuple[int, int]:
    """Writes root/hazy and root/gt in the dataset's naming; returns (hazy files, ground-truth images)."""
    scenes = builtin_benchmark(seed=1, size=40)[:2]
    second = builtin_benchmark(seed=2, size=40)[:2]  # another haze draw: SOTS-indoor has ten per scene
    hazy, gt = root / "hazy", root / "gt"
    for i, ((_, clear, haze), (_, _, haze2)) in enumerate(zip(scenes, second)):
        if preset == "sots-indoor":
            write_image(gt / f"{1400 + i}.png", np.pad(clear, ((10, 10), (10, 10), (0, 0)), constant_values=1.0))
            write_image(hazy / f"{1400 + i}_1.png", haze)
            write_image(hazy / f"{1400 + i}_2.png", haze2)
        elif preset == "sots-outdoor":
            write_image(gt / f"{i + 1:04d}.png", clear)
            write_image(hazy / f"{i + 1:04d}_0.8_0.2.jpg", haze)
        elif preset == "ohaze":
            write_image(gt / f"{i + 1:02d}_outdoor_GT.jpg", clear)
            write_image(hazy / f"{i + 1:02d}_outdoor_hazy.jpg", haze)
        else:  # dhazy, NYU part: the depth maps sit beside the ground truth and must be ignored
            write_image(gt / f"{i + 1}_Image_.bmp", clear)
            write_image(gt / f"{i + 1}_Depth_.bmp", np.repeat(clear.mean(axis=2, keepdims=True), 3, axis=2))
            write_image(hazy / f"{i + 1}_Hazy.bmp", haze)
    return len(list(hazy.iterdir())), len(scenes)


@pytest.mark.parametrize("preset", ["sots-indoor", "sots-outdoor", "ohaze", "dhazy"])
def test_dehaze_then_evaluate_on_dataset_layout(tmp_path, weights, preset, capsys):
    n_hazy, n_gt = make_layout(tmp_path / "data", preset)
    summaries = {}
    for name, main in (("torch", torch_main), ("ms", ms_main)):
        out = tmp_path / f"dehazed_{name}"
        assert main(["dehaze", "-i", str(tmp_path / "data" / "hazy"), "-o", str(out), "--weights", str(weights),
                     "--suffix", "_dehazed", "--ext", "png", "--no-progress"]) == 0
        assert len(list(out.glob("*_dehazed.png"))) == n_hazy
        report = tmp_path / f"metrics_{name}.csv"
        code = ev.main(["--pred", str(out), "--gt", str(tmp_path / "data" / "gt"), "--preset", preset,
                        "--out", str(report)])
        assert code == 0, capsys.readouterr().err
        summaries[name] = json.loads((tmp_path / f"metrics_{name}_summary.json").read_text())
        with report.open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == n_hazy and len({r["gt"] for r in rows}) == n_gt  # every scene's GT found
    for s in summaries.values():
        assert s["summary"]["count"] == n_hazy and s["unpaired_pred"] == [] and s["unpaired_gt"] == []
        assert s["gt_border_crop_px"] == (10 if preset == "sots-indoor" else 0)
    t, m = summaries["torch"]["summary"], summaries["ms"]["summary"]
    assert abs(t["psnr"] - m["psnr"]) <= PSNR_AGREEMENT_DB
    assert abs(t["ssim"] - m["ssim"]) <= SSIM_AGREEMENT
