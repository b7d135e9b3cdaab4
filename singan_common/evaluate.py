"""Full-reference evaluation of dehazed images: PSNR, SSIM and CIEDE2000 against ground truth.

All three come from scikit-image, on images quantised to uint8 (what a saved result is), with the conventions
most dehazing papers report (docs/evaluation.md):
- PSNR on RGB with data_range 255, per image, then averaged over images. Identical images give inf, reported
  as inf (and as the string "inf" in JSON); the mean is then inf too and the count of such images is given.
- SSIM as Wang et al. 2004: 11x11 Gaussian window with sigma 1.5, population covariance, K1 0.01, K2 0.03,
  computed per RGB channel and averaged.
- CIEDE2000 between rgb2lab (sRGB, D65) conversions, mean over pixels, then over images.

Predictions are paired with ground truth by file name, with rules per benchmark (--preset): see `pred_key` and
`gt_key`. Sizes must match unless --resize-pred (bicubic, recorded per image); sots-indoor also accepts ground
truth with the 10-pixel white NYU border that some RESIDE downloads keep (cropped, recorded).

    python -m singan_common.evaluate --pred results/ --gt SOTS/indoor/gt --preset sots-indoor --out metrics.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from singan_common.fsutil import atomic_write_text
from singan_common.images import ImageError, list_images, read_rgb, resize, to_uint8

PRESETS = ("generic", "sots-indoor", "sots-outdoor", "ohaze", "dhazy")
DEFAULT_PRED_SUFFIX = "_dehazed"
SOTS_INDOOR_GT_BORDER = 10
SSIM_SIGMA = 1.5
SSIM_MIN_SIDE = 11  # the Gaussian window: 2 * int(3.5 * sigma + 0.5) + 1
MAX_PRINTED_ROWS = 20
METRICS = ("psnr", "ssim", "ciede2000")
CSV_FIELDS = ("name", "pred", "gt", "width", "height", "psnr", "ssim", "ciede2000", "adjustment")

CONVENTIONS = {
    "quantisation": "both images rounded to uint8 before every metric",
    "psnr": "RGB, data_range 255, per image then averaged over images; identical images give inf",
    "ssim": "Wang et al. 2004: Gaussian window sigma 1.5 (11x11), population covariance "
            "(use_sample_covariance=False), K1 0.01, K2 0.03, per RGB channel then averaged, data_range 255",
    "ciede2000": "skimage rgb2lab (sRGB, D65) then deltaE_ciede2000; mean over pixels, then over images",
}

ImageSource = str | Path | np.ndarray


class Pair(NamedTuple):
    """One prediction and its ground truth: file paths or (H, W, 3) arrays (uint8, or float in [0, 1])."""

    name: str
    pred: ImageSource
    gt: ImageSource


@dataclass
class Pairing:
    pairs: list[Pair]
    unpaired_pred: list[Path] = field(default_factory=list)
    unpaired_gt: list[Path] = field(default_factory=list)
    ignored_gt: list[Path] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------------------
# Pairing rules
# ---------------------------------------------------------------------------------------------------------


def strip_end(stem: str, ending: str) -> str:
    """stem without `ending` (case-insensitive) when it ends with it."""
    if ending and stem.lower().endswith(ending.lower()) and len(stem) > len(ending):
        return stem[: -len(ending)]
    return stem


def pred_key(stem: str, preset: str) -> str:
    """The ground-truth id a prediction (output suffix already removed) belongs to.

    generic: the stem. SOTS (RESIDE): the part before the first underscore (1400_1 -> 1400,
    0001_0.8_0.2 -> 0001). ohaze (also I-HAZE, NH-HAZE, Dense-HAZE): without a trailing _hazy
    (01_outdoor_hazy -> 01_outdoor). dhazy: without a trailing _Hazy (1_Hazy -> 1, Adirondack_Hazy -> Adirondack).
    """
    if preset in ("sots-indoor", "sots-outdoor"):
        return stem.split("_", 1)[0]
    if preset in ("ohaze", "dhazy"):
        return strip_end(stem, "_hazy")
    return stem


def gt_key(stem: str, preset: str) -> str | None:
    """The id of a ground-truth file, or None for files in the GT folder that are not ground truth.

    SOTS: before the first underscore (1400 -> 1400). ohaze: without a trailing _GT (01_outdoor_GT -> 01_outdoor).
    dhazy: without a trailing _Image_ (NYU: 1_Image_) or _im0 (Middlebury: Adirondack_im0); depth maps
    (a stem containing 'depth', e.g. 1_Depth_) are ignored.
    """
    if preset in ("sots-indoor", "sots-outdoor"):
        return stem.split("_", 1)[0]
    if preset == "ohaze":
        return strip_end(stem, "_gt")
    if preset == "dhazy":
        if "depth" in stem.lower():
            return None
        return strip_end(strip_end(stem, "_image_"), "_im0")
    return stem


def pair_folders(pred_dir: str | Path, gt_dir: str | Path, preset: str = "generic",
                 pred_suffix: str = DEFAULT_PRED_SUFFIX) -> Pairing:
    """Pair the images of pred_dir with those of gt_dir by the preset's naming rule.

    A prediction's name is its stem without `pred_suffix` (when present); several predictions may share one
    ground truth (SOTS-indoor has ten hazy versions per scene). Two ground-truth files with the same id, or two
    predictions with the same name, are ambiguous and refused.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    preds, gts = list_images(pred_dir), list_images(gt_dir)
    gt_by_id: dict[str, Path] = {}
    ignored: list[Path] = []
    for path in gts:
        key = gt_key(path.stem, preset)
        if key is None:
            ignored.append(path)
            continue
        if key in gt_by_id:
            raise ImageError(f"{path}: ambiguous ground truth, {gt_by_id[key].name} has the same id '{key}'")
        gt_by_id[key] = path
    pairs: list[Pair] = []
    names: dict[str, Path] = {}
    used: set[str] = set()
    unpaired_pred: list[Path] = []
    for path in preds:
        name = strip_end(path.stem, pred_suffix)
        if name in names:
            raise ImageError(f"{path}: ambiguous prediction, {names[name].name} has the same name '{name}'")
        names[name] = path
        key = pred_key(name, preset)
        if key in gt_by_id:
            pairs.append(Pair(name, path, gt_by_id[key]))
            used.add(key)
        else:
            unpaired_pred.append(path)
    unpaired_gt = [p for k, p in gt_by_id.items() if k not in used]
    return Pairing(pairs, unpaired_pred, unpaired_gt, ignored)


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------


def describe(src: ImageSource, name: str, role: str) -> str:
    return str(src) if isinstance(src, (str, Path)) else f"{name} ({role} array)"


def load_uint8(src: ImageSource, label: str) -> np.ndarray:
    """(H, W, 3) uint8 from a file (alpha dropped, greyscale replicated) or an array."""
    if isinstance(src, (str, Path)):
        return to_uint8(read_rgb(src))
    arr = np.asarray(src)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"{label}: expected an (H, W, 3) image, got shape {arr.shape}")
    return arr if arr.dtype == np.uint8 else to_uint8(arr)


def align(pred: np.ndarray, gt: np.ndarray, pred_label: str, gt_label: str, resize_pred: bool,
          gt_border: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Make the two the same size or refuse; returns (pred, gt, what was done, '' if nothing)."""
    (ph, pw), (gh, gw) = pred.shape[:2], gt.shape[:2]
    if (ph, pw) == (gh, gw):
        return pred, gt, ""
    b = gt_border
    if b and (gh, gw) == (ph + 2 * b, pw + 2 * b):
        return pred, gt[b:-b, b:-b], f"gt border of {b} px cropped ({gw}x{gh} -> {pw}x{ph})"
    if resize_pred:
        resized = to_uint8(resize(pred.astype(np.float32) / 255.0, (gw, gh)))
        return resized, gt, f"pred resized bicubic {pw}x{ph} -> {gw}x{gh}"
    raise ImageError(f"{pred_label} is {pw}x{ph} but its ground truth {gt_label} is {gw}x{gh}; "
                     "pass --resize-pred to resize predictions to the ground truth (bicubic)")


def image_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """PSNR, SSIM and CIEDE2000 of two same-size (H, W, 3) uint8 images (conventions in the module doc)."""
    if min(gt.shape[:2]) < SSIM_MIN_SIDE:
        raise ValueError(f"image is {gt.shape[1]}x{gt.shape[0]}; SSIM's Gaussian window needs at least "
                         f"{SSIM_MIN_SIDE} pixels per side")
    with np.errstate(divide="ignore"):  # identical images: MSE 0, PSNR inf by definition
        psnr = float(peak_signal_noise_ratio(gt, pred, data_range=255))
    ssim = float(structural_similarity(gt, pred, channel_axis=2, gaussian_weights=True, sigma=SSIM_SIGMA,
                                       use_sample_covariance=False, data_range=255))
    ciede = float(np.mean(deltaE_ciede2000(rgb2lab(gt), rgb2lab(pred))))
    return {"psnr": psnr, "ssim": ssim, "ciede2000": ciede}


def evaluate_pairs(pairs: Iterable[Pair | tuple[str, ImageSource, ImageSource]], resize_pred: bool = False,
                   gt_border: int = 0) -> list[dict]:
    """One row per (name, pred, gt): name, pred, gt, width, height, psnr, ssim, ciede2000, adjustment.

    Sizes must match; otherwise the ground truth loses `gt_border` pixels per side if that makes them match,
    else the prediction is resized to the ground truth when `resize_pred`, else ImageError naming both.
    """
    rows = []
    for name, pred_src, gt_src in pairs:
        pred_label, gt_label = describe(pred_src, name, "pred"), describe(gt_src, name, "gt")
        pred = load_uint8(pred_src, pred_label)
        gt = load_uint8(gt_src, gt_label)
        pred, gt, adjustment = align(pred, gt, pred_label, gt_label, resize_pred, gt_border)
        try:
            metrics = image_metrics(pred, gt)
        except ValueError as exc:
            raise ImageError(f"{pred_label} vs {gt_label}: {exc}") from None
        rows.append({"name": name, "pred": pred_label, "gt": gt_label, "width": gt.shape[1], "height": gt.shape[0],
                     **metrics, "adjustment": adjustment})
    return rows


def summarize(rows: list[dict]) -> dict:
    """Means over images of each metric, the image count, how many PSNRs are inf and how many were adjusted."""
    if not rows:
        raise ValueError("nothing to summarise: no image pairs were evaluated")
    summary: dict = {"count": len(rows)}
    for metric in METRICS:
        summary[metric] = float(np.mean([r[metric] for r in rows]))
    summary["psnr_inf_count"] = sum(math.isinf(r["psnr"]) for r in rows)
    summary["adjusted_count"] = sum(bool(r["adjustment"]) for r in rows)
    return summary


# ---------------------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------------------


def fmt(value: float, digits: int) -> str:
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def format_table(rows: list[dict], summary: dict) -> str:
    """A plain-text table: per-image rows when there are few, then the mean row."""
    width = max([len("mean"), *(len(r["name"]) for r in rows)]) if len(rows) <= MAX_PRINTED_ROWS else 12
    lines = [f"{'image':<{width}}  {'PSNR':>8}  {'SSIM':>7}  {'CIEDE2000':>9}  note"]
    if len(rows) <= MAX_PRINTED_ROWS:
        for r in rows:
            lines.append(f"{r['name']:<{width}}  {fmt(r['psnr'], 3):>8}  {fmt(r['ssim'], 4):>7}  "
                         f"{fmt(r['ciede2000'], 3):>9}  {r['adjustment']}".rstrip())
    else:
        lines.append(f"({len(rows)} per-image rows in the CSV)")
    note = f"{summary['psnr_inf_count']} identical image(s): PSNR inf" if summary["psnr_inf_count"] else ""
    lines.append(f"{'mean':<{width}}  {fmt(summary['psnr'], 3):>8}  {fmt(summary['ssim'], 4):>7}  "
                 f"{fmt(summary['ciede2000'], 3):>9}  n={summary['count']} {note}".rstrip())
    return "\n".join(lines)


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "psnr": fmt(r["psnr"], 6), "ssim": fmt(r["ssim"], 6),
                         "ciede2000": fmt(r["ciede2000"], 6)})
    return buf.getvalue()


def json_safe(value: object) -> object:
    """inf is not JSON; write it as the string "inf"."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """(per-image CSV, summary JSON): out.csv -> out.csv + out_summary.json; a folder -> metrics.csv + ...json."""
    out = Path(out)
    if out.suffix.lower() == ".csv":
        return out, out.with_name(f"{out.stem}_summary.json")
    return out / "metrics.csv", out / "metrics_summary.json"


def write_report(csv_path: Path, json_path: Path, rows: list[dict], report: dict) -> None:
    atomic_write_text(csv_path, rows_to_csv(rows))
    atomic_write_text(json_path, json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")


def build_report(args: argparse.Namespace, pairing: Pairing, rows: list[dict], summary: dict,
                 gt_border: int, csv_path: Path) -> dict:
    return {
        "preset": args.preset, "pred_dir": str(args.pred), "gt_dir": str(args.gt), "pred_suffix": args.pred_suffix,
        "summary": summary, "conventions": CONVENTIONS,
        "size_policy": "pred resized to GT, bicubic" if args.resize_pred else "sizes must match",
        "gt_border_crop_px": gt_border,
        "adjusted": {r["name"]: r["adjustment"] for r in rows if r["adjustment"]},
        "unpaired_pred": [str(p) for p in pairing.unpaired_pred],
        "unpaired_gt": [str(p) for p in pairing.unpaired_gt],
        "ignored_gt": [str(p) for p in pairing.ignored_gt],
        "per_image_csv": str(csv_path),
    }


def warn_unpaired(pairing: Pairing) -> None:
    for label, paths in (("prediction(s) without ground truth", pairing.unpaired_pred),
                         ("ground-truth image(s) without prediction", pairing.unpaired_gt)):
        if paths:
            shown = ", ".join(p.name for p in paths[:10]) + (", ..." if len(paths) > 10 else "")
            print(f"evaluate: warning: {len(paths)} {label}: {shown}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m singan_common.evaluate",
                                description="PSNR / SSIM / CIEDE2000 of dehazed images against ground truth.")
    p.add_argument("--pred", required=True, help="folder of dehazed images")
    p.add_argument("--gt", required=True, help="folder of ground-truth (clear) images")
    p.add_argument("--preset", choices=PRESETS, default="generic", help="file-naming rule of the benchmark")
    p.add_argument("--pred-suffix", default=DEFAULT_PRED_SUFFIX,
                   help="removed from prediction names before pairing, when present (default: _dehazed)")
    p.add_argument("--out", default=None,
                   help="a .csv path (summary beside it as <name>_summary.json) or a folder "
                        "(metrics.csv, metrics_summary.json); default: the --pred folder")
    p.add_argument("--resize-pred", action="store_true",
                   help="resize predictions to the ground truth's size (bicubic) instead of refusing")
    p.add_argument("--gt-border", type=int, default=None,
                   help="crop this many pixels per side from ground truth that is exactly that much larger "
                        f"(default: {SOTS_INDOOR_GT_BORDER} for sots-indoor, else 0)")
    return p


def run(args: argparse.Namespace) -> int:
    pairing = pair_folders(args.pred, args.gt, args.preset, args.pred_suffix)
    if not pairing.pairs:
        raise ImageError(f"no prediction in {args.pred} matches a ground truth in {args.gt} under preset "
                         f"'{args.preset}' ({len(pairing.unpaired_pred)} predictions, "
                         f"{len(pairing.unpaired_gt)} ground truths); check --preset and --pred-suffix")
    gt_border = args.gt_border if args.gt_border is not None else (
        SOTS_INDOOR_GT_BORDER if args.preset == "sots-indoor" else 0)
    rows = evaluate_pairs(pairing.pairs, resize_pred=args.resize_pred, gt_border=gt_border)
    summary = summarize(rows)
    csv_path, json_path = output_paths(args.out if args.out is not None else args.pred)
    write_report(csv_path, json_path, rows, build_report(args, pairing, rows, summary, gt_border, csv_path))
    warn_unpaired(pairing)
    print(format_table(rows, summary))
    print(f"SSIM: {CONVENTIONS['ssim']}")
    if summary["adjusted_count"]:
        print(f"{summary['adjusted_count']} image(s) adjusted to match sizes (see the adjustment column)")
    print(f"per-image: {csv_path}\nsummary: {json_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.gt_border is not None and args.gt_border < 0:
        p.error("--gt-border must be >= 0")
    try:
        return run(args)
    except (ValueError, OSError) as exc:  # ImageError is a ValueError
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
