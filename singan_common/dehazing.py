"""The framework-independent half of `dehaze`: inputs, output names, resizing, tiling, alpha, progress.

A framework supplies only `fn`: a (1, 3, h, w) float32 [-1, 1] batch -> the generator's output of the same
shape (h and w are multiples of the generator's stride). Conventions follow Real-ESRGAN / SwinIR's inference
scripts: sorted folder input, `<name><suffix>.<ext>` outputs, existing outputs skipped unless --overwrite.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from singan_common.architecture import SIZE_MULTIPLE
from singan_common.images import ImageError, from_network, list_images, read_image, resize, to_network, write_image
from singan_common.tiling import run_tiled

NetworkFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class DehazeOptions:
    tile: int = 0  # 0: whole image at once
    tile_overlap: int = 32
    max_side: int = 0  # 0: no downscaling
    suffix: str = ""
    ext: str = "auto"  # auto keeps the input's extension
    overwrite: bool = False


def add_dehaze_args(p: argparse.ArgumentParser) -> None:
    d = DehazeOptions()
    p.add_argument("-i", "--input", required=True, help="an image file or a folder of images")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--weights", required=True,
                   help="a run directory (latest_net_G + run_config.json) or a generator weights file")
    p.add_argument("--tile", type=int, default=d.tile, help="tile size in pixels for large images (0: no tiling)")
    p.add_argument("--tile-overlap", type=int, default=d.tile_overlap, help="overlap between tiles, blended")
    p.add_argument("--max-side", type=int, default=d.max_side, help="downscale inputs whose longer side exceeds N")
    p.add_argument("--suffix", default=d.suffix, help="appended to output file names, e.g. _dehazed")
    p.add_argument("--ext", choices=("auto", "png", "jpg"), default=d.ext)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping them")
    p.add_argument("--device", default=None, help="device to run on (framework-specific names)")
    p.add_argument("--no-progress", action="store_true")


def options_from_args(a: argparse.Namespace) -> DehazeOptions:
    if a.tile < 0 or a.tile_overlap < 0 or a.max_side < 0:
        raise ValueError("--tile, --tile-overlap and --max-side must be >= 0")
    if a.tile and a.tile <= 2 * a.tile_overlap:
        raise ValueError(f"--tile {a.tile} must be larger than twice --tile-overlap {a.tile_overlap}")
    return DehazeOptions(tile=a.tile, tile_overlap=a.tile_overlap, max_side=a.max_side, suffix=a.suffix, ext=a.ext,
                         overwrite=a.overwrite)


def collect_inputs(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    files = list_images(path)
    if not files:
        raise ImageError(f"{path}: no image files in this folder")
    return files


def output_path(src: Path, out_dir: Path, opts: DehazeOptions) -> Path:
    ext = src.suffix.lower() if opts.ext == "auto" else f".{opts.ext}"
    if ext not in (".png", ".jpg", ".jpeg"):
        ext = ".png"  # keep lossless for inputs like .bmp / .tif
    return out_dir / f"{src.stem}{opts.suffix}{ext}"


def dehaze_rgb(rgb: np.ndarray, fn: NetworkFn, opts: DehazeOptions) -> np.ndarray:
    """(H, W, 3) [0, 1] -> dehazed (H', W', 3) [0, 1]; H', W' = H, W unless --max-side shrank the image."""
    h, w = rgb.shape[:2]
    if opts.max_side and max(h, w) > opts.max_side:
        scale = opts.max_side / max(h, w)
        rgb = resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
    out = run_tiled(to_network(rgb), fn, tile=opts.tile, overlap=opts.tile_overlap, multiple=SIZE_MULTIPLE)
    return from_network(out)


def dehaze_files(inputs: list[Path], out_dir: Path, fn: NetworkFn, opts: DehazeOptions,
                 progress: bool = True) -> tuple[int, int]:
    """Dehaze `inputs` into `out_dir`; returns (written, skipped). Alpha is carried over unchanged."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    for src in tqdm(inputs, desc="dehaze", unit="img", disable=not progress):
        dst = output_path(src, out_dir, opts)
        if dst.exists() and not opts.overwrite:
            skipped += 1
            continue
        img = read_image(src)
        out = dehaze_rgb(img.rgb, fn, opts)
        alpha = img.alpha
        if alpha is not None and alpha.shape != out.shape[:2]:
            alpha = resize(np.repeat(alpha[..., None], 3, axis=2), (out.shape[1], out.shape[0]))[..., 0]
        write_image(dst, out, alpha=alpha if dst.suffix == ".png" else None)
        written += 1
    return written, skipped
