"""singan_common.tiling: padding to the generator's stride and blended overlapping tiles."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from singan_common.tiling import edge_ramp, pad_to_multiple, run_tiled, tile_starts


def image(c: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (c, h, w)).astype(np.float32)


def box_blur(batch: np.ndarray, radius: int) -> np.ndarray:
    """A (2r+1)^2 mean with numpy reflect padding: a purely local operation of radius r."""
    size = 2 * radius + 1
    _, _, h, w = batch.shape
    padded = np.pad(batch, ((0, 0), (0, 0), (radius, radius), (radius, radius)), mode="reflect")
    out = np.zeros_like(batch)
    for dy in range(size):
        for dx in range(size):
            out += padded[:, :, dy:dy + h, dx:dx + w]
    return out / size**2


class Recorder:
    """Identity that checks and records what run_tiled hands the network."""

    def __init__(self, multiple: int):
        self.multiple = multiple
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32 and batch.flags.c_contiguous
        assert batch.ndim == 4 and batch.shape[0] == 1
        assert batch.shape[2] % self.multiple == 0 and batch.shape[3] % self.multiple == 0
        self.shapes.append(batch.shape)
        return batch.copy()


def test_pad_to_multiple_shapes_crop_box_and_reflection():
    x = image(3, 5, 7)
    padded, (top, left, bottom, right) = pad_to_multiple(x, 4)
    assert padded.shape == (3, 8, 8)
    np.testing.assert_array_equal(padded[:, top:bottom, left:right], x)
    np.testing.assert_array_equal(padded[:, 5, :7], x[:, 3])  # reflect without repeating the edge row
    same, box = pad_to_multiple(x, 1)
    assert same is x and box == (0, 0, 5, 7)
    one, _ = pad_to_multiple(image(3, 1, 1), 4)  # nothing to reflect: repeated
    assert one.shape == (3, 4, 4) and np.all(one == one[:, :1, :1])
    long, _ = pad_to_multiple(image(3, 2, 3), 8)  # pad longer than the side
    assert long.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="C, H, W"):
        pad_to_multiple(np.zeros((4, 4)), 4)


def test_tile_starts_cover_the_axis_with_at_least_the_overlap():
    for length in (1, 31, 32, 33, 64, 100, 257):
        for tile, overlap in ((32, 0), (32, 8), (32, 15), (48, 16)):
            starts = tile_starts(length, tile, overlap)
            assert starts[0] == 0 and min(length, tile) + starts[-1] == length
            for a, b in zip(starts, starts[1:]):
                assert 0 < b - a <= tile - overlap


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 5, 7), (3, 31, 33), (3, 64, 64), (3, 97, 130), (1, 70, 20)])
@pytest.mark.parametrize("multiple", [1, 4, 8])
def test_identity_is_exact_for_any_tiling(shape, multiple):
    x = image(*shape)
    for tile, overlap in ((0, 0), (16, 0), (16, 4), (24, 7), (32, 8), (40, 16), (200, 32)):
        fn = Recorder(multiple)
        out = run_tiled(x, fn, tile=tile, overlap=overlap, multiple=multiple)
        assert out.dtype == np.float32 and out.shape == x.shape
        np.testing.assert_allclose(out, x, rtol=0, atol=2e-6, err_msg=f"tile {tile} overlap {overlap}")
        if tile:
            padded_tile = -(-tile // multiple) * multiple
            assert all(s[2] <= padded_tile and s[3] <= padded_tile for s in fn.shapes)


@pytest.mark.parametrize("radius, overlap", [(1, 4), (1, 7), (2, 8), (3, 16)])
def test_local_operation_tiled_equals_untiled_away_from_the_border(radius, overlap):
    x = image(3, 101, 87, seed=radius)

    def fn(b):
        return box_blur(b, radius)

    whole = run_tiled(x, fn, tile=0, overlap=0, multiple=4)
    for tile in (3 * overlap, 4 * overlap + 5):
        tiled = run_tiled(x, fn, tile=tile, overlap=overlap, multiple=4)
        r = radius
        np.testing.assert_allclose(tiled[:, r:-r, r:-r], whole[:, r:-r, r:-r], rtol=0, atol=1e-5)


def test_blend_has_no_seams():
    """Tiles that disagree (alternating constants -1 / +1) are blended smoothly, not cut."""
    calls = []

    def fn(b):
        calls.append(1)
        return np.full_like(b, 1.0 if len(calls) % 2 else -1.0)

    out = run_tiled(np.zeros((1, 96, 96), np.float32), fn, tile=48, overlap=16, multiple=4)
    assert len(calls) > 4
    jump = max(np.abs(np.diff(out, axis=1)).max(), np.abs(np.diff(out, axis=2)).max())
    assert jump < 0.6  # a hard seam would jump by 2
    ramp = edge_ramp(16, 16)
    assert ramp[0] == 0 and ramp[-1] == 1 and np.all(np.diff(ramp) >= 0)


def test_output_channels_may_differ_and_bad_network_output_is_refused():
    x = image(3, 40, 50)
    out = run_tiled(x, lambda b: b[:, :1] * 2, tile=24, overlap=4, multiple=4)
    np.testing.assert_allclose(out, x[:1] * 2, atol=2e-6)
    with pytest.raises(ValueError, match="returned shape"):
        run_tiled(x, lambda b: b[:, :, :-1], tile=0, overlap=0, multiple=4)
    with pytest.raises(ValueError, match="twice the overlap"):
        run_tiled(x, lambda b: b, tile=16, overlap=8, multiple=4)


def test_output_is_allocated_once_and_one_tile_at_a_time():
    x = image(3, 512, 512)
    image_bytes = x.nbytes
    tracemalloc.start()
    try:
        run_tiled(x, lambda b: b * 1.0, tile=128, overlap=16, multiple=4)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # output (3 MB) + weight map (1 MB) + a few tile-sized temporaries (~200 kB each)
    assert peak < image_bytes * 4 / 3 + 2_000_000, peak
