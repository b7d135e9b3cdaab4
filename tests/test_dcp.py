"""singan_common.dcp: the Dark Channel Prior baseline and its guided filter."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio

from singan_common import dcp
from singan_common.haze import HazeParams, add_haze, builtin_benchmark, ramp_depth
from singan_common.images import read_rgb, write_image


@pytest.fixture(scope="module")
def scenes():
    return builtin_benchmark(seed=0, size=128)


def test_dcp_restores_synthetic_haze_on_real_photos(scenes):
    for name, clear, hazy in scenes:
        out = dcp.dehaze_dcp(hazy)
        assert out.dtype == np.float32 and out.shape == clear.shape
        assert 0.0 <= out.min() and out.max() <= 1.0
        before = peak_signal_noise_ratio(clear, hazy, data_range=1.0)
        after = peak_signal_noise_ratio(clear, out, data_range=1.0)
        assert after > before + 1.0, f"{name}: PSNR {before:.2f} -> {after:.2f}"


def test_dark_channel_and_atmospheric_light():
    rgb = np.full((40, 40, 3), 0.5, np.float32)
    rgb[10, 10] = (0.0, 0.9, 0.9)  # one dark pixel darkens its whole 15x15 window
    dark = dcp.dark_channel(rgb, 15)
    assert dark[10, 10] == 0 and dark[3, 3] == 0 and dark[17, 17] == 0 and dark[30, 30] == 0.5
    # the brightest dark-channel pixels are in the far corner; among them the most intense input wins
    rgb[39, 39] = (0.95, 0.9, 0.85)
    airlight = dcp.atmospheric_light(rgb, dcp.dark_channel(rgb, 1), fraction=0.01)
    np.testing.assert_allclose(airlight, (0.95, 0.9, 0.85))


def test_guided_filter_smooths_flat_regions_and_keeps_edges():
    guide = np.zeros((64, 64))
    guide[:, 32:] = 1.0
    noisy = guide + np.random.default_rng(0).normal(0, 0.05, guide.shape)
    out = dcp.guided_filter(guide, noisy, radius=8, eps=1e-3)
    assert np.abs(out[:, 34:] - 1).mean() < np.abs(noisy[:, 34:] - 1).mean() / 3  # noise removed
    assert out[:, 28:31].mean() < 0.1 and out[:, 33:36].mean() > 0.9  # edge kept
    np.testing.assert_allclose(dcp.guided_filter(guide, np.full_like(guide, 0.3), 8, 1e-3), 0.3, atol=1e-12)


def test_known_transmission_is_recovered_roughly():
    """With A known and the haze model exact, DCP's transmission follows the true one."""
    clear = np.random.default_rng(1).uniform(0.0, 0.3, (96, 96, 3)).astype(np.float32)  # dark: prior holds
    depth = ramp_depth(96, 96)
    hazy = add_haze(clear, depth, HazeParams(beta=1.2, A=0.9))
    t = dcp.raw_transmission(hazy.astype(np.float64), np.full(3, 0.9), omega=1.0, patch=7)
    assert np.abs(t - np.exp(-1.2 * depth)).mean() < 0.05


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="out of range"):
        dcp.dehaze_dcp(np.zeros((16, 16, 3), np.float32), omega=1.5)
    with pytest.raises(ValueError, match="H, W, 3"):
        dcp.dehaze_dcp(np.zeros((16, 16), np.float32))


def test_cli_writes_outputs_and_refuses_bad_input(tmp_path, scenes, capsys):
    src = tmp_path / "hazy"
    for name, _, hazy in scenes[:2]:
        write_image(src / f"{name}.png", hazy)
    assert dcp.main(["-i", str(src), "-o", str(tmp_path / "out"), "--suffix", "_dcp"]) == 0
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == sorted(f"{n}_dcp.png" for n, _, _ in scenes[:2])
    assert read_rgb(tmp_path / "out" / f"{scenes[0][0]}_dcp.png").shape == scenes[0][1].shape
    (src / "broken.png").write_bytes(b"not a png")
    assert dcp.main(["-i", str(src), "-o", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "broken.png" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert dcp.main(["-i", str(tmp_path / "missing"), "-o", str(tmp_path / "out3")]) == 2
