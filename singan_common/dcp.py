"""Dark Channel Prior dehazing (He, Sun, Tang, CVPR 2009) with guided-filter refinement (He, Sun, Tang, ECCV 2010).

A classical, training-free baseline: it gives the evaluation scripts and the demo a reference point that needs no
network. Parameters are the papers' (patch 15, omega 0.95, t0 0.1, atmospheric light from the brightest 0.1 % of
the dark channel); the guided filter's radius is the paper's 60 pixels scaled to the image's short side.

    python -m singan_common.dcp -i hazy.png -o out/        # or -i a folder of images
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from singan_common.images import ImageError, list_images, read_rgb, write_image

PATCH = 15
OMEGA = 0.95
T0 = 0.1
BRIGHTEST_FRACTION = 0.001
GUIDED_EPS = 1e-3
# He et al. use r = 60 on photos of roughly 600 x 400; keep that ratio to the short side on other sizes.
GUIDED_RADIUS_AT_400 = 60


def dark_channel(rgb: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """min over the colour channels, then min over a patch x patch window: (H, W)."""
    return ndimage.minimum_filter(rgb.min(axis=2), size=patch, mode="nearest")


def atmospheric_light(rgb: np.ndarray, dark: np.ndarray, fraction: float = BRIGHTEST_FRACTION) -> np.ndarray:
    """Among the brightest `fraction` of dark-channel pixels, the input colour of the one with the highest
    intensity (mean of R, G, B), as in the 2009 paper; (3,) float32."""
    n = max(1, int(round(dark.size * fraction)))
    candidates = np.argpartition(dark.ravel(), dark.size - n)[dark.size - n:]
    flat = rgb.reshape(-1, 3)
    best = candidates[np.argmax(flat[candidates].mean(axis=1))]
    return flat[best].astype(np.float32)


def raw_transmission(rgb: np.ndarray, airlight: np.ndarray, omega: float = OMEGA, patch: int = PATCH) -> np.ndarray:
    """t = 1 - omega * dark_channel(I / A); omega < 1 keeps a little haze so distant objects look distant."""
    normalised = rgb / np.maximum(airlight, 1e-6)[None, None, :]
    return 1.0 - omega * dark_channel(normalised, patch)


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window clipped to the image (the guided-filter paper's N-normalised box sum)."""
    size = 2 * radius + 1
    total = ndimage.uniform_filter(x, size=size, mode="constant", cval=0.0)
    count = ndimage.uniform_filter(np.ones_like(x), size=size, mode="constant", cval=0.0)
    return total / count


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """The grey-guide guided filter of He et al. 2010 (Algorithm 1): edge-preserving smoothing of `src`
    steered by `guide`, both (H, W) float."""
    mean_i = box_mean(guide, radius)
    mean_p = box_mean(src, radius)
    cov_ip = box_mean(guide * src, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def guided_radius(height: int, width: int) -> int:
    return max(2, round(GUIDED_RADIUS_AT_400 * min(height, width) / 400))


def dehaze_dcp(rgb: np.ndarray, patch: int = PATCH, omega: float = OMEGA, t0: float = T0,
               eps: float = GUIDED_EPS, radius: int | None = None) -> np.ndarray:
    """Dehaze a float (H, W, 3) image in [0, 1]; returns float32 (H, W, 3) in [0, 1].

    radius None: the guided filter's radius scales with the image (60 px on a 400 px short side).
    """
    img = np.asarray(rgb, dtype=np.float64)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    if patch < 1 or not 0 < omega <= 1 or not 0 < t0 <= 1 or eps <= 0 or (radius is not None and radius < 1):
        raise ValueError(f"DCP parameters out of range: patch {patch} >= 1, 0 < omega {omega} <= 1, "
                         f"0 < t0 {t0} <= 1, eps {eps} > 0, radius {radius} >= 1")
    airlight = atmospheric_light(img, dark_channel(img, patch))
    t = raw_transmission(img, airlight, omega, patch)
    r = guided_radius(*img.shape[:2]) if radius is None else radius
    t = guided_filter(img.mean(axis=2), t, r, eps)
    # t0 bounds the division where haze is dense; without it noise in the sky explodes.
    t = np.maximum(t, t0)[..., None]
    out = (img - airlight) / t + airlight
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m singan_common.dcp",
                                description="Dark Channel Prior dehazing (He et al. 2009, guided-filter refinement).")
    p.add_argument("-i", "--input", required=True, help="an image file or a folder of images")
    p.add_argument("-o", "--output", required=True, help="output folder; writes <name><suffix>.png")
    p.add_argument("--suffix", default="", help="appended to output file names, e.g. _dcp")
    p.add_argument("--patch", type=int, default=PATCH)
    p.add_argument("--omega", type=float, default=OMEGA)
    p.add_argument("--t0", type=float, default=T0)
    p.add_argument("--eps", type=float, default=GUIDED_EPS, help="guided-filter regularisation")
    p.add_argument("--radius", type=int, default=None, help="guided-filter radius (default: scaled to the image)")
    a = p.parse_args(argv)
    try:
        src = Path(a.input)
        if not src.exists():
            raise ImageError(f"{src}: no such file or folder")
        inputs = [src] if src.is_file() else list_images(src)
        if not inputs:
            raise ImageError(f"{src}: no image files in this folder")
        out_dir = Path(a.output)
        for path in inputs:
            dehazed = dehaze_dcp(read_rgb(path), patch=a.patch, omega=a.omega, t0=a.t0, eps=a.eps, radius=a.radius)
            write_image(out_dir / f"{path.stem}{a.suffix}.png", dehazed)
        print(f"dcp: wrote {len(inputs)} image(s) to {out_dir}")
    except (ValueError, OSError) as exc:  # ImageError is a ValueError
        print(f"dcp: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
