"""Padding and overlapping-tile inference shared by both frameworks' `dehaze` commands.

The generator needs sides that are multiples of its total stride, and a large photo may not fit in memory in
one piece. `run_tiled` handles both in numpy, so PyTorch and MindSpore cut, pad and blend identically and only
supply `fn`, the network call on one (1, C, h, w) float32 batch.

Blending: along every side of a tile that touches a neighbouring tile, the tile's weight is 0 for the outer
quarter of the overlap, rises with a raised-cosine ramp over the middle half, and is 1 beyond. The zero margin
throws away the pixels that saw the tile's artificial border, the ramp hides what seam remains. Consequence:
for an `fn` whose output pixel depends only on inputs within `r` pixels, the tiled result equals the untiled
one wherever `r <= overlap // 4`; for a deep generator (whose receptive field is larger than any sensible
overlap) the blend is what keeps the seams invisible.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

NetworkFn = Callable[[np.ndarray], np.ndarray]
CropBox = tuple[int, int, int, int]


def padded_size(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_to_multiple(chw: np.ndarray, multiple: int, mode: str = "reflect") -> tuple[np.ndarray, CropBox]:
    """Pad a (C, H, W) array at the bottom and right so H and W are multiples of `multiple`.

    Returns (padded, crop_box) with crop_box = (top, left, bottom, right) such that
    padded[:, top:bottom, left:right] is the input. numpy's 'reflect' reflects repeatedly when the pad is
    longer than the side; a side of one pixel (which has nothing to reflect) is padded by repetition.
    """
    if chw.ndim != 3:
        raise ValueError(f"expected a (C, H, W) array, got shape {chw.shape}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    _, h, w = chw.shape
    pad_h, pad_w = padded_size(h, multiple) - h, padded_size(w, multiple) - w
    box = (0, 0, h, w)
    if pad_h == 0 and pad_w == 0:
        return chw, box
    if mode == "reflect" and min(h, w) == 1:
        mode = "edge"
    return np.pad(chw, ((0, 0), (0, pad_h), (0, pad_w)), mode=mode), box


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile offsets along one axis: step tile - overlap, the last tile flush with the end (so every tile is
    `tile` long and consecutive tiles overlap by at least `overlap`); one tile when length <= tile."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def edge_ramp(n: int, overlap: int) -> np.ndarray:
    """Weights for the first `n` pixels of a tile whose leading side touches a neighbour (see module doc)."""
    if overlap == 0:
        return np.ones(n, np.float32)
    margin = overlap // 4
    width = max(1, overlap - 2 * margin)
    x = np.clip((np.arange(n, dtype=np.float64) - margin + 0.5) / width, 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * x)).astype(np.float32)


def axis_weights(n: int, overlap: int, lead: bool, trail: bool) -> np.ndarray:
    w = np.ones(n, np.float32)
    ramp = edge_ramp(n, overlap)
    if lead:
        w *= ramp
    if trail:
        w *= ramp[::-1]
    return w


def run_padded(chw: np.ndarray, fn: NetworkFn, multiple: int) -> np.ndarray:
    """fn on one (C, h, w) piece: reflect-pad to the multiple, add the batch axis, call, crop back."""
    padded, (top, left, bottom, right) = pad_to_multiple(chw, multiple)
    batch = np.ascontiguousarray(padded[None], dtype=np.float32)
    out = np.asarray(fn(batch))
    if out.ndim != 4 or out.shape[0] != 1 or out.shape[2:] != batch.shape[2:]:
        raise ValueError(f"the network returned shape {out.shape} for input {batch.shape}; "
                         "expected (1, C, h, w) with the input's h and w")
    return out[0, :, top:bottom, left:right]


def run_tiled(image_chw: np.ndarray, fn: NetworkFn, tile: int, overlap: int, multiple: int) -> np.ndarray:
    """Apply `fn` to a (C, H, W) float32 image in overlapping tiles of `tile` pixels and blend them.

    tile = 0 (or an image no larger than one tile) runs the whole image once. Each call of `fn` receives one
    reflect-padded (1, C, h, w) tile, so at most one tile's network input exists at a time; the output and
    a (H, W) weight map are allocated once, when the first tile returns (the output may have another channel
    count than the input).
    """
    if image_chw.ndim != 3:
        raise ValueError(f"expected a (C, H, W) image, got shape {image_chw.shape}")
    if tile < 0 or overlap < 0:
        raise ValueError(f"tile ({tile}) and overlap ({overlap}) must be >= 0")
    _, h, w = image_chw.shape
    if tile == 0 or (h <= tile and w <= tile):
        return run_padded(image_chw, fn, multiple).astype(np.float32, copy=False)
    if tile <= 2 * overlap:
        raise ValueError(f"tile {tile} must be larger than twice the overlap {overlap}")
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out: np.ndarray | None = None
    weight = np.zeros((h, w), np.float32)
    for iy, y in enumerate(ys):
        th = min(tile, h)
        wy = axis_weights(th, overlap, lead=iy > 0, trail=iy < len(ys) - 1)
        for ix, x in enumerate(xs):
            tw = min(tile, w)
            wx = axis_weights(tw, overlap, lead=ix > 0, trail=ix < len(xs) - 1)
            result = run_padded(image_chw[:, y:y + th, x:x + tw], fn, multiple)
            if out is None:
                out = np.zeros((result.shape[0], h, w), np.float32)
            tile_weight = wy[:, None] * wx[None, :]
            out[:, y:y + th, x:x + tw] += result * tile_weight
            weight[y:y + th, x:x + tw] += tile_weight
    assert out is not None  # at least one tile always runs
    out /= weight
    return out
