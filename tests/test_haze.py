"""singan_common.haze: the scattering model, its depth proxies, seeded parameters and the built-in benchmark."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from skimage import data

from singan_common import haze
from singan_common.images import list_images, read_rgb, write_image


def test_transmission_in_unit_interval_and_one_at_zero_depth():
    depth = np.linspace(0, 1, 101, dtype=np.float32)
    for beta in (haze.BETA_RANGE[0], 1.0, haze.BETA_RANGE[1]):
        t = haze.transmission(depth, beta)
        assert np.all(t > 0) and np.all(t <= 1) and t[0] == 1.0
        assert np.all(np.diff(t) < 0)  # farther is hazier
        np.testing.assert_allclose(t[-1], np.exp(-beta), rtol=1e-6)


def test_ramp_puts_the_far_side_at_the_top_and_hazes_it_more():
    depth = haze.ramp_depth(50, 30)
    assert depth.shape == (50, 30) and depth[0].min() == 1 and depth[-1].max() == 0
    clear = data.astronaut()[::4, ::4].astype(np.float32) / 255.0
    h, w = clear.shape[:2]
    hazy = haze.add_haze(clear, haze.ramp_depth(h, w), haze.HazeParams(beta=1.2, A=0.9))
    assert hazy.dtype == np.float32 and 0 <= hazy.min() and hazy.max() <= 1
    lift = (hazy - clear).mean(axis=(1, 2))  # per row: how much haze brightened it
    top, bottom = lift[: h // 4].mean(), lift[-h // 4:].mean()
    assert top > bottom + 0.1
    grey = np.full((40, 8, 3), 0.2, np.float32)  # a dark flat scene: hazy rows get brighter towards the top
    rows = haze.add_haze(grey, haze.ramp_depth(40, 8), haze.HazeParams(beta=1.0, A=0.8))[:, 0, 0]
    assert np.all(np.diff(rows) < 0)


def test_params_are_seeded_per_image_and_within_range():
    draws = [haze.draw_haze_params(seed, i) for seed in range(5) for i in range(40)]
    assert all(haze.BETA_RANGE[0] <= p.beta <= haze.BETA_RANGE[1] for p in draws)
    assert all(haze.A_RANGE[0] <= p.A <= haze.A_RANGE[1] for p in draws)
    assert len({p.beta for p in draws}) == len(draws)
    # keyed by (seed, index): the same whatever was drawn before, in any order
    assert haze.draw_haze_params(3, 7) == haze.draw_haze_params(3, 7)
    backwards = [haze.draw_haze_params(2, i) for i in reversed(range(40))][::-1]
    assert backwards == draws[80:120]
    custom = haze.draw_haze_params(0, 0, beta_range=(0.1, 0.2), A_range=(0.5, 0.5))
    assert 0.1 <= custom.beta <= 0.2 and custom.A == 0.5
    with pytest.raises(ValueError, match="A range"):
        haze.draw_haze_params(0, 0, A_range=(0.9, 1.2))


def test_disparity_depth_is_inverse_normalised_and_fills_unknowns():
    disp = np.array([[10.0, 20.0], [40.0, np.inf]])
    d = haze.disparity_depth(disp)
    assert d.min() == 0 and d.max() == 1
    assert d[0, 0] == 1 and d[1, 0] == 0 and d[0, 1] > d[1, 0]  # large disparity = near
    assert d[1, 1] in (d[0, 1], d[1, 0])  # unknown takes a neighbour's value
    np.testing.assert_allclose(haze.disparity_depth(disp * 16), d)  # unit-free
    with pytest.raises(ValueError, match="no positive"):
        haze.disparity_depth(np.zeros((3, 3)))


@pytest.fixture(scope="module")
def scenes():
    return haze.builtin_scenes(seed=0, size=64)


def test_builtin_benchmark_is_deterministic_small_and_offline(scenes):
    assert [s.name for s in scenes] == list(haze.BUILTIN_PHOTOS)
    again = haze.builtin_benchmark(seed=0, size=64)
    other = haze.builtin_benchmark(seed=1, size=64)
    for s, (name, clear, hazy), (_, _, hazy1) in zip(scenes, again, other):
        assert s.name == name and min(clear.shape[:2]) == 64 and clear.shape == hazy.shape
        np.testing.assert_array_equal(s.hazy, hazy)
        np.testing.assert_array_equal(s.clear, clear)
        assert not np.array_equal(hazy, hazy1)
        assert hazy.mean() > clear.mean()  # A (>= 0.7) is brighter than these photos on average
    kinds = {s.name: s.depth_kind for s in scenes}
    assert kinds["motorcycle"] == "stereo" and set(kinds.values()) == {"ramp", "stereo"}


def test_write_benchmark_layout_and_metadata(tmp_path, scenes):
    records = haze.write_benchmark(tmp_path, seed=0, size=64, n_test=1)
    names = [s.name for s in scenes]
    for sub in ("hazy", "clear"):
        assert [p.stem for p in list_images(tmp_path / sub)] == sorted(names)
    assert [p.stem for p in list_images(tmp_path / "test" / "hazy")] == ["motorcycle"]
    assert [p.stem for p in list_images(tmp_path / "test" / "gt")] == ["motorcycle"]
    train_hazy = {p.stem for p in list_images(tmp_path / "train" / "hazy")}
    train_clear = {p.stem for p in list_images(tmp_path / "train" / "clear")}
    assert train_hazy and train_clear and not train_hazy & train_clear  # unpaired: disjoint photos
    assert train_hazy | train_clear == set(names) - {"motorcycle"}
    # files equal the in-memory arrays
    np.testing.assert_array_equal(read_rgb(tmp_path / "hazy" / "astronaut.png"), scenes[1].hazy)
    meta = json.loads((tmp_path / haze.METADATA_NAME).read_text())
    assert meta["seed"] == 0 and meta["beta_range"] == list(haze.BETA_RANGE) and meta["images"] == records
    by_name = {r["name"]: r for r in records}
    for s in scenes:
        assert by_name[s.name]["beta"] == s.params.beta and by_name[s.name]["A"] == s.params.A
        assert by_name[s.name]["depth"] == s.depth_kind


def test_cli_hazes_a_folder_with_ramp_or_disparity(tmp_path, scenes, capsys):
    src = tmp_path / "clear"
    for s in scenes[:3]:
        write_image(src / f"{s.name}.png", s.clear)
    assert haze.main(["--clear", str(src), "--out", str(tmp_path / "out"), "--seed", "5"]) == 0
    meta = json.loads((tmp_path / "out" / haze.METADATA_NAME).read_text())
    assert [r["name"] for r in meta["images"]] == sorted(s.name for s in scenes[:3])
    assert all(r["depth"] == "ramp" for r in meta["images"])
    assert meta["images"][1]["beta"] == haze.draw_haze_params(5, 1).beta
    assert len(list_images(tmp_path / "out")) == 3
    # disparity: a single map for a single file
    disp = np.tile(np.linspace(0.1, 1.0, scenes[0].clear.shape[1], dtype=np.float32), (scenes[0].clear.shape[0], 1))
    write_image(tmp_path / "disp.png", np.repeat(disp[..., None], 3, axis=2))
    args = ["--clear", str(src / "motorcycle.png"), "--out", str(tmp_path / "st"), "--depth", "stereo",
            "--disparity", str(tmp_path / "disp.png")]
    assert haze.main(args) == 0
    hazy = read_rgb(tmp_path / "st" / "motorcycle.png")
    lift = (hazy - scenes[0].clear).mean(axis=(0, 2))
    assert lift[:10].mean() > lift[-10:].mean()  # small disparity (left) = far = hazier
    capsys.readouterr()
    assert haze.main(["--clear", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as exc:
        haze.main(["--clear", str(src), "--out", str(tmp_path / "y"), "--depth", "stereo"])
    assert exc.value.code == 2


def test_cli_builtin_as_a_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "singan_common.haze", "--builtin", "--out", str(tmp_path),
                             "--size", "32"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "test" / "gt" / "motorcycle.png").is_file()
    assert min(read_rgb(tmp_path / "clear" / "astronaut.png").shape[:2]) == 32
