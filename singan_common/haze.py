"""Synthetic haze with the atmospheric scattering model, and a small offline benchmark built from it.

    I = J t + A (1 - t),   t = exp(-beta d)

J is the clear image, A a grey atmospheric light, beta the scattering coefficient and d a depth proxy normalised
to [0, 1]. beta ~ U[0.6, 1.8] and A ~ U[0.7, 1.0] (the ranges RESIDE used for its indoor sets, ITS and
SOTS-indoor) are drawn per image from a numpy Generator keyed by (seed, image index), so an image's haze
depends on neither the order in which images are processed nor on any draw made before it.

Depth proxies:
- ramp: d = 1 on the top row falling linearly to 0 on the bottom row. Landscape photos usually have the far
  scene (sky, horizon) at the top and the ground near the camera at the bottom; for other photos it is only a
  plausible haze gradient, not their depth.
- stereo: d proportional to 1 / disparity (depth = focal * baseline / disparity), min-max normalised; unknown
  disparities (0, negative, inf, nan) take the value of the nearest known pixel. The built-in benchmark uses the
  real disparity of scikit-image's stereo_motorcycle; on the command line, pass one disparity image per input.

    python -m singan_common.haze --clear photos/ --out hazy/ --seed 0
    python -m singan_common.haze --builtin --out bench/ --size 128
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import data as skdata

from singan_common.fsutil import atomic_write_text
from singan_common.images import ImageError, list_images, read_rgb, resize, to_uint8, write_image
from singan_common.rng import generator

BETA_RANGE = (0.6, 1.8)
A_RANGE = (0.7, 1.0)
DEPTH_KINDS = ("ramp", "stereo")
# A purpose id far from singan_common.rng's training streams (0..6), so haze draws never repeat a training draw.
HAZE_STREAM = 1000
METADATA_NAME = "haze_params.json"
MODEL_TEXT = "I = J t + A (1 - t), t = exp(-beta d), d in [0, 1]"

# scikit-image's bundled natural photos, in benchmark order. The camera man is greyscale (replicated to RGB);
# the motorcycle is the left view of a Middlebury stereo pair with its measured disparity.
BUILTIN_PHOTOS = ("motorcycle", "astronaut", "chelsea", "coffee", "rocket", "camera")


@dataclass(frozen=True)
class HazeParams:
    beta: float
    A: float


@dataclass
class HazyScene:
    """One rendered image: clear and hazy are float32 (H, W, 3) in [0, 1] on the uint8 grid (as written)."""

    name: str
    clear: np.ndarray
    hazy: np.ndarray
    depth_kind: str
    params: HazeParams


def draw_haze_params(seed: int, index: int, beta_range: tuple[float, float] = BETA_RANGE,
                     A_range: tuple[float, float] = A_RANGE) -> HazeParams:
    """beta and A of image number `index`, determined by (seed, index) alone."""
    check_range("beta", beta_range, low=0.0, high=None)
    check_range("A", A_range, low=0.0, high=1.0)
    rng = generator(seed, HAZE_STREAM, index)
    beta = float(rng.uniform(*beta_range))
    a = float(rng.uniform(*A_range))
    return HazeParams(beta=beta, A=a)


def check_range(name: str, bounds: tuple[float, float], low: float, high: float | None) -> None:
    lo, hi = bounds
    if not (low <= lo <= hi) or (high is not None and hi > high):
        limit = f" and at most {high}" if high is not None else ""
        raise ValueError(f"{name} range [{lo}, {hi}] must satisfy min <= max, min >= {low}{limit}")


def ramp_depth(height: int, width: int) -> np.ndarray:
    """(H, W) float32: 1 (far) on the top row to 0 (near) on the bottom row."""
    column = np.linspace(1.0, 0.0, height, dtype=np.float32) if height > 1 else np.ones(1, np.float32)
    return np.repeat(column[:, None], width, axis=1)


def disparity_depth(disparity: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1] from a disparity map: 1 / disparity, min-max normalised (scale-free, so any
    disparity unit works); unknown values are filled from the nearest known pixel."""
    disp = np.asarray(disparity, dtype=np.float64)
    if disp.ndim == 3:
        disp = disp[..., 0]
    valid = np.isfinite(disp) & (disp > 0)
    if not valid.any():
        raise ValueError("the disparity map has no positive finite value")
    if not valid.all():
        nearest = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        disp = disp[tuple(nearest)]
    inv = 1.0 / disp
    span = inv.max() - inv.min()
    if span == 0:
        return np.ones(disp.shape, np.float32)
    return ((inv - inv.min()) / span).astype(np.float32)


def resize_depth(depth: np.ndarray, height: int, width: int) -> np.ndarray:
    if depth.shape == (height, width):
        return depth
    img = Image.fromarray(np.asarray(depth, dtype=np.float32), mode="F").resize((width, height), Image.BILINEAR)
    return np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)


def transmission(depth: np.ndarray, beta: float) -> np.ndarray:
    """t = exp(-beta d): in [exp(-beta), 1] for d in [0, 1], so always in (0, 1]."""
    return np.exp(-beta * np.asarray(depth, dtype=np.float64)).astype(np.float32)


def add_haze(clear: np.ndarray, depth: np.ndarray, params: HazeParams) -> np.ndarray:
    """The scattering model on a float (H, W, 3) [0, 1] image; returns float32 (H, W, 3) in [0, 1]."""
    if clear.ndim != 3 or clear.shape[2] != 3 or depth.shape != clear.shape[:2]:
        raise ValueError(f"image {clear.shape} and depth {depth.shape} do not match as (H, W, 3) and (H, W)")
    t = transmission(depth, params.beta)[..., None].astype(np.float64)
    hazy = np.asarray(clear, dtype=np.float64) * t + params.A * (1.0 - t)
    return np.clip(hazy, 0.0, 1.0).astype(np.float32)


def on_uint8_grid(rgb: np.ndarray) -> np.ndarray:
    """What writing to an 8-bit file and reading back gives, so in-memory images equal the files."""
    return to_uint8(rgb).astype(np.float32) / 255.0


def short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(width, height) scaled so the short side is `short` pixels."""
    scale = short / min(height, width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def builtin_photo(name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 (H, W, 3) photo, disparity or None) for one of BUILTIN_PHOTOS; all bundled with scikit-image."""
    if name == "motorcycle":
        left, _, disparity = skdata.stereo_motorcycle()
        return left, disparity
    if name not in BUILTIN_PHOTOS:
        raise ValueError(f"unknown built-in photo {name!r}; choose from {', '.join(BUILTIN_PHOTOS)}")
    img = getattr(skdata, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img, None


def builtin_scenes(seed: int = 0, size: int = 128) -> list[HazyScene]:
    """Every built-in photo resized to a `size`-pixel short side and hazed (image index = position in
    BUILTIN_PHOTOS)."""
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    scenes = []
    for index, name in enumerate(BUILTIN_PHOTOS):
        photo, disparity = builtin_photo(name)
        w, h = short_side_size(*photo.shape[:2], size)
        clear = resize(photo.astype(np.float32) / 255.0, (w, h))
        if disparity is None:
            kind, depth = "ramp", ramp_depth(h, w)
        else:
            kind, depth = "stereo", resize_depth(disparity_depth(disparity), h, w)
        params = draw_haze_params(seed, index)
        scenes.append(HazyScene(name, clear, on_uint8_grid(add_haze(clear, depth, params)), kind, params))
    return scenes


def builtin_benchmark(seed: int = 0, size: int = 128) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name, clear, hazy)] for BUILTIN_PHOTOS: float32 (H, W, 3) in [0, 1], short side `size`. Offline."""
    return [(s.name, s.clear, s.hazy) for s in builtin_scenes(seed, size)]


def scene_record(scene: HazyScene, split: str) -> dict:
    return {"name": scene.name, "split": split, "depth": scene.depth_kind, **asdict(scene.params),
            "height": scene.clear.shape[0], "width": scene.clear.shape[1]}


def write_benchmark(root: str | Path, seed: int = 0, size: int = 128, n_test: int = 1) -> list[dict]:
    """Write the built-in benchmark under `root` and return its per-image records.

    root/hazy, root/clear        every photo, paired by file name (<name>.png), SOTS-like
    root/test/hazy, root/test/gt the first n_test photos, held out
    root/train/hazy, train/clear the other photos split into two disjoint halves: hazy versions of one half,
                                 clear versions of the other, so the training set is truly unpaired
    root/haze_params.json        seed, ranges, model and per image beta, A, depth kind, split
    """
    scenes = builtin_scenes(seed, size)
    if not 1 <= n_test <= len(scenes) - 2:
        raise ValueError(f"n_test must be between 1 and {len(scenes) - 2} (two photos are needed for training)")
    root = Path(root)
    test, train = scenes[:n_test], scenes[n_test:]
    half = len(train) // 2
    records = []
    for scene in scenes:
        write_image(root / "hazy" / f"{scene.name}.png", scene.hazy)
        write_image(root / "clear" / f"{scene.name}.png", scene.clear)
    for scene in test:
        write_image(root / "test" / "hazy" / f"{scene.name}.png", scene.hazy)
        write_image(root / "test" / "gt" / f"{scene.name}.png", scene.clear)
        records.append(scene_record(scene, "test"))
    for scene in train[:half]:
        write_image(root / "train" / "hazy" / f"{scene.name}.png", scene.hazy)
        records.append(scene_record(scene, "train-hazy"))
    for scene in train[half:]:
        write_image(root / "train" / "clear" / f"{scene.name}.png", scene.clear)
        records.append(scene_record(scene, "train-clear"))
    write_metadata(root, seed, BETA_RANGE, A_RANGE, records, size=size)
    return records


def write_metadata(out_dir: Path, seed: int, beta_range: tuple[float, float], A_range: tuple[float, float],
                   records: list[dict], size: int | None = None) -> Path:
    meta = {"model": MODEL_TEXT, "seed": seed, "beta_range": list(beta_range), "A_range": list(A_range),
            "depth_ramp": "d = 1 at the top row, 0 at the bottom row",
            "depth_stereo": "d = 1/disparity, min-max normalised, unknown disparities filled from the nearest",
            "short_side": size, "images": records}
    path = out_dir / METADATA_NAME
    atomic_write_text(path, json.dumps(meta, indent=2) + "\n")
    return path


def collect(path: Path) -> list[Path]:
    if not path.exists():
        raise ImageError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = list_images(path)
    if not files:
        raise ImageError(f"{path}: no image files in this folder")
    return files


def find_disparity(disparity: Path, image: Path) -> Path:
    """The disparity file for `image`: `disparity` itself if a file, else the image in it with the same stem."""
    if disparity.is_file():
        return disparity
    matches = [p for p in list_images(disparity) if p.stem == image.stem]
    if not matches:
        raise ImageError(f"{image}: no disparity image with stem '{image.stem}' in {disparity}")
    return matches[0]


def read_disparity(path: Path) -> np.ndarray:
    """Any single-channel image Pillow reads (8/16-bit PNG, TIFF, float TIFF); 0 means unknown. Its scale
    does not matter, because the depth is normalised."""
    return read_rgb(path)[..., 0]


def haze_files(inputs: list[Path], out_dir: Path, seed: int, beta_range: tuple[float, float],
               A_range: tuple[float, float], disparity: Path | None) -> list[dict]:
    """Haze each input into out_dir/<stem>.png (index = position in `inputs`); ramp depth unless
    `disparity` is given. Returns the per-image records (also written to out_dir/haze_params.json)."""
    check_range("beta", beta_range, low=0.0, high=None)
    check_range("A", A_range, low=0.0, high=1.0)
    records = []
    for index, path in enumerate(inputs):
        clear = read_rgb(path)
        h, w = clear.shape[:2]
        if disparity is None:
            kind, depth = "ramp", ramp_depth(h, w)
        else:
            disp_path = find_disparity(disparity, path)
            disp = read_disparity(disp_path)
            if disp.shape != (h, w):
                raise ImageError(f"{disp_path}: disparity is {disp.shape[1]}x{disp.shape[0]}, "
                                 f"but {path} is {w}x{h}")
            kind, depth = "stereo", disparity_depth(disp)
        params = draw_haze_params(seed, index, beta_range, A_range)
        write_image(out_dir / f"{path.stem}.png", add_haze(clear, depth, params))
        records.append({"name": path.stem, "source": str(path), "depth": kind, **asdict(params)})
    write_metadata(out_dir, seed, beta_range, A_range, records)
    return records


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m singan_common.haze",
                                description=f"Render synthetic haze: {MODEL_TEXT}.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--clear", help="a clear image or a folder of them")
    src.add_argument("--builtin", action="store_true",
                     help="write the built-in benchmark (scikit-image photos) in a SOTS-like layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--beta-min", type=float, default=BETA_RANGE[0])
    p.add_argument("--beta-max", type=float, default=BETA_RANGE[1])
    p.add_argument("--A-min", type=float, default=A_RANGE[0])
    p.add_argument("--A-max", type=float, default=A_RANGE[1])
    p.add_argument("--depth", choices=DEPTH_KINDS, default="ramp",
                   help="ramp: top far, bottom near; stereo: from --disparity (with --clear)")
    p.add_argument("--disparity", help="with --depth stereo: a disparity image, or a folder of them named like "
                                       "the clear images; 0 marks unknown")
    p.add_argument("--size", type=int, default=128, help="with --builtin: short side in pixels")
    p.add_argument("--n-test", type=int, default=1, help="with --builtin: photos held out as the test split")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if a.seed < 0:
        p.error("--seed must be >= 0")
    if a.builtin and (a.depth != "ramp" or a.disparity or (a.beta_min, a.beta_max) != BETA_RANGE
                      or (a.A_min, a.A_max) != A_RANGE):
        p.error("--builtin uses the default ranges and its own depths; --depth, --disparity and the ranges "
                "apply to --clear")
    if not a.builtin and (a.depth == "stereo") != (a.disparity is not None):
        p.error("--depth stereo needs --disparity, and --disparity needs --depth stereo")
    try:
        out = Path(a.out)
        if a.builtin:
            records = write_benchmark(out, seed=a.seed, size=a.size, n_test=a.n_test)
        else:
            disparity = Path(a.disparity) if a.disparity else None
            if disparity is not None and not disparity.exists():
                raise ImageError(f"{disparity}: no such file or folder")
            records = haze_files(collect(Path(a.clear)), out, a.seed, (a.beta_min, a.beta_max),
                                 (a.A_min, a.A_max), disparity)
    except (ValueError, OSError) as exc:  # ImageError is a ValueError
        print(f"haze: error: {exc}", file=sys.stderr)
        return 2
    print(f"haze: wrote {len(records)} image(s) to {out} (parameters in {out / METADATA_NAME})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
