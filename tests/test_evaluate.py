"""singan_common.evaluate: metric conventions, pairing rules per benchmark, reports and bad inputs."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from singan_common import evaluate as ev
from singan_common.images import ImageError, write_image


def photo(name: str, step: int = 4) -> np.ndarray:
    return getattr(data, name)()[::step, ::step].copy()


def degrade(img: np.ndarray, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 12, img.shape)
    return np.clip(img.astype(np.float64) * 0.8 + 30 + noise, 0, 255).round().astype(np.uint8)


def test_metrics_match_scikit_image_with_the_documented_conventions():
    for name in ("astronaut", "coffee", "chelsea"):
        gt = photo(name)
        pred = degrade(gt)
        m = ev.image_metrics(pred, gt)
        mse = np.mean((gt.astype(np.float64) - pred) ** 2)
        assert m["psnr"] == pytest.approx(10 * np.log10(255.0**2 / mse), rel=1e-12)
        per_channel = [structural_similarity(gt[..., c], pred[..., c], gaussian_weights=True, sigma=1.5,
                                             use_sample_covariance=False, data_range=255) for c in range(3)]
        assert m["ssim"] == pytest.approx(np.mean(per_channel), rel=1e-12)
        default_ssim = structural_similarity(gt, pred, channel_axis=2, data_range=255)  # 7x7 uniform window
        assert abs(m["ssim"] - default_ssim) > 1e-4  # the variant matters, hence it is recorded
        lab = deltaE_ciede2000(rgb2lab(gt), rgb2lab(pred))
        assert m["ciede2000"] == pytest.approx(lab.mean(), rel=1e-12)
        assert 5 < m["psnr"] < 40 and 0 < m["ssim"] < 1 and m["ciede2000"] > 0


def test_identical_images_give_inf_one_zero():
    gt = photo("rocket")
    with np.errstate(all="raise"):  # no divide-by-zero warning escapes either
        rows = ev.evaluate_pairs([("same", gt, gt), ("other", degrade(gt), gt)])
    assert math.isinf(rows[0]["psnr"]) and rows[0]["ssim"] == pytest.approx(1.0) and rows[0]["ciede2000"] == 0
    summary = ev.summarize(rows)
    assert summary["count"] == 2 and math.isinf(summary["psnr"]) and summary["psnr_inf_count"] == 1
    assert summary["ssim"] == pytest.approx((1 + rows[1]["ssim"]) / 2)
    assert "inf" in ev.format_table(rows, summary)
    with pytest.raises(ValueError, match="nothing to summarise"):
        ev.summarize([])


def test_float_inputs_are_quantised_like_saved_files(tmp_path):
    gt = photo("astronaut")
    pred_float = degrade(gt).astype(np.float32) / 255.0 + 0.001  # rounds back to the same uint8
    write_image(tmp_path / "p.png", pred_float)
    from_array = ev.evaluate_pairs([("a", pred_float, gt)])[0]
    from_file = ev.evaluate_pairs([ev.Pair("a", tmp_path / "p.png", gt)])[0]
    for key in ev.METRICS:
        assert from_array[key] == from_file[key]
    assert from_file["pred"] == str(tmp_path / "p.png") and from_array["pred"] == "a (pred array)"


def test_size_mismatch_refused_resized_or_border_cropped():
    gt = photo("chelsea", step=2)  # 150 x 226
    small = gt[10:-10, 10:-10]
    with pytest.raises(ImageError, match=r"pred array\) is 206x130 but its ground truth .* is 226x150.*--resize-pred"):
        ev.evaluate_pairs([("x", small, gt)])
    row = ev.evaluate_pairs([("x", small, gt)], resize_pred=True)[0]
    assert row["adjustment"] == "pred resized bicubic 206x130 -> 226x150"
    assert (row["width"], row["height"]) == (226, 150)
    cropped = ev.evaluate_pairs([("x", small, gt)], gt_border=10)[0]
    assert "border of 10 px" in cropped["adjustment"] and math.isinf(cropped["psnr"])
    with pytest.raises(ImageError, match="needs at least 11"):
        ev.evaluate_pairs([("tiny", gt[:8, :8], gt[:8, :8])])


# ---------------------------------------------------------------------------------------------------------
# Pairing on look-alike folders
# ---------------------------------------------------------------------------------------------------------


def make(folder: Path, names: list[str], size: int = 16) -> None:
    img = np.random.default_rng(len(names)).uniform(0, 1, (size, size, 3)).astype(np.float32)
    for n in names:
        write_image(folder / n, img)


def names_of(pairing: ev.Pairing) -> tuple[list[tuple[str, str, str]], list[str], list[str]]:
    pairs = sorted((p.name, Path(p.pred).name, Path(p.gt).name) for p in pairing.pairs)
    return pairs, sorted(p.name for p in pairing.unpaired_pred), sorted(p.name for p in pairing.unpaired_gt)


def test_pairing_sots_indoor_and_outdoor(tmp_path):
    make(tmp_path / "gt", ["1400.png", "1401.png", "1402.png"])
    make(tmp_path / "pred", ["1400_1.png", "1400_10.png", "1401_3_dehazed.png", "9999_1.png"])
    pairs, no_gt, no_pred = names_of(ev.pair_folders(tmp_path / "pred", tmp_path / "gt", "sots-indoor"))
    assert pairs == [("1400_1", "1400_1.png", "1400.png"), ("1400_10", "1400_10.png", "1400.png"),
                     ("1401_3", "1401_3_dehazed.png", "1401.png")]
    assert no_gt == ["9999_1.png"] and no_pred == ["1402.png"]
    make(tmp_path / "ogt", ["0001.png", "0002.png"])
    make(tmp_path / "opred", ["0001_0.8_0.2.jpg", "0002_1_0.16.png"])
    pairs, no_gt, no_pred = names_of(ev.pair_folders(tmp_path / "opred", tmp_path / "ogt", "sots-outdoor"))
    assert [(p[1], p[2]) for p in pairs] == [("0001_0.8_0.2.jpg", "0001.png"), ("0002_1_0.16.png", "0002.png")]
    assert no_gt == no_pred == []
    # the generic rule does not know SOTS names
    pairs, no_gt, no_pred = names_of(ev.pair_folders(tmp_path / "opred", tmp_path / "ogt", "generic"))
    assert pairs == [] and len(no_gt) == 2 and len(no_pred) == 2


def test_pairing_ohaze_and_dhazy(tmp_path):
    make(tmp_path / "ogt", ["01_outdoor_GT.jpg", "02_outdoor_GT.jpg", "03_outdoor_GT.jpg"])
    make(tmp_path / "opred", ["01_outdoor_hazy.jpg", "02_outdoor_hazy_dehazed.png", "03_outdoor.png"])
    pairs, no_gt, no_pred = names_of(ev.pair_folders(tmp_path / "opred", tmp_path / "ogt", "ohaze"))
    assert [(p[1], p[2]) for p in pairs] == [("01_outdoor_hazy.jpg", "01_outdoor_GT.jpg"),
                                             ("02_outdoor_hazy_dehazed.png", "02_outdoor_GT.jpg"),
                                             ("03_outdoor.png", "03_outdoor_GT.jpg")]
    # D-HAZY as distributed: NYU_GT holds <i>_Image_.bmp and <i>_Depth_.bmp, NYU_Hazy <i>_Hazy.bmp;
    # Middlebury_GT <scene>_im0.png, Middlebury_Hazy <scene>_Hazy.bmp
    make(tmp_path / "dgt", ["1_Image_.bmp", "1_Depth_.bmp", "2_Image_.bmp", "Adirondack_im0.png", "same.png"])
    make(tmp_path / "dpred", ["1_Hazy.png", "7_Hazy.png", "Adirondack_Hazy.png", "same.png"])
    pairing = ev.pair_folders(tmp_path / "dpred", tmp_path / "dgt", "dhazy")
    pairs, no_gt, no_pred = names_of(pairing)
    assert [(p[1], p[2]) for p in pairs] == [("1_Hazy.png", "1_Image_.bmp"),
                                             ("Adirondack_Hazy.png", "Adirondack_im0.png"), ("same.png", "same.png")]
    assert no_gt == ["7_Hazy.png"] and no_pred == ["2_Image_.bmp"]
    assert [p.name for p in pairing.ignored_gt] == ["1_Depth_.bmp"]


def test_pairing_generic_suffix_and_ambiguity(tmp_path):
    make(tmp_path / "gt", ["a.png", "b.jpg", "c.png"])
    make(tmp_path / "pred", ["a_dehazed.png", "b.png", "c_out.png"])
    pairs, no_gt, no_pred = names_of(ev.pair_folders(tmp_path / "pred", tmp_path / "gt"))
    assert [p[0] for p in pairs] == ["a", "b"] and no_gt == ["c_out.png"] and no_pred == ["c.png"]
    pairs, _, _ = names_of(ev.pair_folders(tmp_path / "pred", tmp_path / "gt", pred_suffix="_out"))
    assert [p[0] for p in pairs] == ["b", "c"]  # a_dehazed keeps its suffix now, so it has no GT
    make(tmp_path / "gt", ["b.png"])
    with pytest.raises(ImageError, match="ambiguous ground truth"):
        ev.pair_folders(tmp_path / "pred", tmp_path / "gt")
    make(tmp_path / "pred2", ["a.png", "a_dehazed.jpg"])
    with pytest.raises(ImageError, match="ambiguous prediction"):
        ev.pair_folders(tmp_path / "pred2", tmp_path / "pred2")
    with pytest.raises(ValueError, match="unknown preset"):
        ev.pair_folders(tmp_path / "pred", tmp_path / "gt", "reside")


# ---------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture()
def sots_like(tmp_path):
    """A SOTS-indoor look-alike from real photos: 2 scenes, GT with the 10 px border, one stray file each side."""
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for i, name in enumerate(("astronaut", "coffee", "rocket")):
        gt = photo(name)
        write_image(gt_dir / f"{1400 + i}.png", np.pad(gt, ((10, 10), (10, 10), (0, 0))).astype(np.float32) / 255)
        if i < 2:
            write_image(pred_dir / f"{1400 + i}_1.png", degrade(gt, i).astype(np.float32) / 255)
            write_image(pred_dir / f"{1400 + i}_2_dehazed.png", gt.astype(np.float32) / 255)
    write_image(pred_dir / "2000_1.png", photo("coffee").astype(np.float32) / 255)
    return pred_dir, gt_dir


def test_cli_end_to_end(sots_like, tmp_path, capsys):
    pred_dir, gt_dir = sots_like
    out = tmp_path / "report" / "sots.csv"
    code = ev.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--preset", "sots-indoor", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2000_1.png" in captured.err and "1402.png" in captured.err and "warning" in captured.err
    assert "mean" in captured.out and "inf" in captured.out and "sigma 1.5" in captured.out
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["1400_1", "1400_2", "1401_1", "1401_2"]
    assert rows[1]["psnr"] == "inf" and float(rows[0]["psnr"]) < 40
    assert all("border of 10 px" in r["adjustment"] for r in rows)
    report = json.loads((tmp_path / "report" / "sots_summary.json").read_text())
    assert report["summary"]["count"] == 4 and report["summary"]["psnr"] == "inf"
    assert report["summary"]["psnr_inf_count"] == 2 and report["gt_border_crop_px"] == 10
    assert report["unpaired_pred"] == [str(pred_dir / "2000_1.png")]
    assert report["unpaired_gt"] == [str(gt_dir / "1402.png")]
    assert "sigma 1.5" in report["conventions"]["ssim"] and report["size_policy"] == "sizes must match"
    assert len(report["adjusted"]) == 4
    # without the border rule the sizes differ: refused, naming both files, nothing written
    code = ev.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--preset", "sots-outdoor",
                    "--out", str(tmp_path / "refused")])
    err = capsys.readouterr().err
    assert code == 2 and "1400_1.png" in err and "1400.png" in err and not (tmp_path / "refused").exists()
    # --resize-pred accepts it and says so; a folder --out gets metrics.csv and metrics_summary.json
    code = ev.main(["--pred", str(pred_dir), "--gt", str(gt_dir), "--preset", "sots-outdoor", "--resize-pred",
                    "--out", str(tmp_path / "resized")])
    assert code == 0
    report = json.loads((tmp_path / "resized" / "metrics_summary.json").read_text())
    assert report["size_policy"] == "pred resized to GT, bicubic" and report["summary"]["adjusted_count"] == 4
    assert (tmp_path / "resized" / "metrics.csv").is_file()


def test_cli_bad_inputs_exit_2_with_one_line_and_no_output(tmp_path, sots_like, capsys):
    pred_dir, gt_dir = sots_like
    out = tmp_path / "o"
    cases = [
        (["--pred", str(tmp_path / "missing"), "--gt", str(gt_dir)], "missing"),
        (["--pred", str(pred_dir), "--gt", str(gt_dir)], "no prediction"),  # generic rule: nothing pairs
    ]
    (pred_dir / "1401_9.png").write_bytes(b"\x89PNG truncated")
    cases.append((["--pred", str(pred_dir), "--gt", str(gt_dir), "--preset", "sots-indoor"], "1401_9.png"))
    for args, needle in cases:
        assert ev.main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert not out.exists()
    result = subprocess.run([sys.executable, "-m", "singan_common.evaluate", "--pred", str(pred_dir), "--gt",
                             str(gt_dir), "--preset", "sots-indoor", "--out", str(out)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "1401_9.png" in result.stderr
    assert not out.exists()


def test_evaluate_pairs_on_the_builtin_benchmark():
    """What a demo does: evaluate in-memory results without files."""
    from singan_common.haze import builtin_benchmark

    items = builtin_benchmark(seed=0, size=48)
    rows = ev.evaluate_pairs([(name, hazy, clear) for name, clear, hazy in items])
    summary = ev.summarize(rows)
    assert summary["count"] == len(items) and 5 < summary["psnr"] < 30 and summary["ciede2000"] > 1
