"""Image reading and writing with Pillow, and conversion to the networks' [-1, 1] CHW layout.

Accepts RGB, grayscale, grayscale+alpha, RGBA, palette, CMYK and 16-bit / 32-bit integer or float files,
applies the EXIF orientation, and refuses unreadable, truncated or too-small files with an ImageError that
names the file. Pixel data is returned as float32 in [0, 1]; alpha, when present, is returned separately so
callers can carry it through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from singan_common.fsutil import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# Pillow refuses images above ~179 Mpx as a decompression bomb; a 12-Mpx photo must pass, a 1-Gpx one not.
Image.MAX_IMAGE_PIXELS = 400_000_000


class ImageError(ValueError):
    """An image file that cannot be used; the message names the file and the problem."""


@dataclass
class LoadedImage:
    """Decoded pixels: rgb float32 (H, W, 3) in [0, 1], optional alpha float32 (H, W), source bit depth."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int


def is_image_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside `folder` (hidden files skipped)."""
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"{folder}: folder does not exist")
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def read_image(path: str | Path, min_size: int = 1) -> LoadedImage:
    """Decode `path` fully; raise ImageError naming the file if it is missing, corrupt or smaller than min_size."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb, alpha, depth = _to_float(img)
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file Pillow can read (corrupt or unknown format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{path}: cannot decode image ({exc})") from None
    h, w = rgb.shape[:2]
    if min(h, w) < min_size:
        raise ImageError(f"{path}: image is {w}x{h}, smaller than the required {min_size} pixels per side")
    return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=depth)


def read_rgb(path: str | Path, min_size: int = 1) -> np.ndarray:
    """float32 (H, W, 3) in [0, 1]; alpha is dropped."""
    return read_image(path, min_size).rgb


def _to_float(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None, int]:
    mode = img.mode
    alpha = None
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        return _gray(arr), None, 16
    if mode == "I":
        raw = np.asarray(img)
        # Pillow decodes 16-bit PNG/TIFF grayscale to mode I; its values still span 0..65535.
        scale = 65535.0 if raw.max(initial=0) <= 65535 and raw.min(initial=0) >= 0 else float(np.iinfo(np.int32).max)
        return _gray(np.clip(raw.astype(np.float32) / scale, 0, 1)), None, 16 if scale == 65535.0 else 32
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return _gray(np.clip(arr, 0, 1)), None, 32
    if mode in ("1", "L"):
        return _gray(np.asarray(img.convert("L"), dtype=np.float32) / 255.0), None, 8
    if mode == "LA":
        arr = np.asarray(img, dtype=np.float32) / 255.0
        return _gray(arr[..., 0]), arr[..., 1], 8
    if mode in ("RGBA", "RGBa", "PA"):
        arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        return np.ascontiguousarray(arr[..., :3]), arr[..., 3].copy(), 8
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return arr, alpha, 8


def _gray(arr: np.ndarray) -> np.ndarray:
    return np.repeat(arr[..., None], 3, axis=2).astype(np.float32)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8 with rounding (the convention of CUT's tensor2im, minus its truncation)."""
    return np.clip(np.rint(np.asarray(rgb, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def write_image(path: str | Path, rgb: np.ndarray, alpha: np.ndarray | None = None, quality: int = 95) -> None:
    """Write float [0, 1] (H, W, 3) as 8 bits per channel, atomically; the format follows the suffix."""
    path = Path(path)
    img = Image.fromarray(to_uint8(rgb), "RGB")
    if alpha is not None:
        img.putalpha(Image.fromarray(to_uint8(alpha), "L"))
    save_kwargs: dict = {}
    if path.suffix.lower() in (".jpg", ".jpeg"):
        if img.mode == "RGBA":
            img = img.convert("RGB")
        save_kwargs = {"quality": quality}
    with atomic_path(path) as tmp:
        img.save(tmp, format=Image.registered_extensions().get(path.suffix.lower()), **save_kwargs)


def resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of float (H, W, 3) [0, 1] to (width, height), as torchvision's Resize on PIL images."""
    w, h = size
    img = Image.fromarray(to_uint8(rgb), "RGB").resize((w, h), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def to_network(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) [0, 1] -> (3, H, W) float32 in [-1, 1]."""
    return np.ascontiguousarray((np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) - 0.5) / 0.5)


def from_network(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) float32 in [0, 1]."""
    return np.clip((np.asarray(chw, dtype=np.float32).transpose(1, 2, 0) + 1.0) / 2.0, 0.0, 1.0)
