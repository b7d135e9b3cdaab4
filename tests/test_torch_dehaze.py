"""`python -m singan_torch dehaze`: folders, CUT weights, tiling, skipping, alpha, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from singan_common.config import ModelConfig, RunConfig
from singan_torch.__main__ import main
from singan_torch.dehaze import load_generator
from singan_torch.networks import define_G

CFG = ModelConfig(ngf=8, n_blocks=2, nce_layers=(0, 4, 8))


@pytest.fixture()
def weights(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    torch.save(define_G(CFG, 0).state_dict(), run / "latest_net_G.pth")
    RunConfig(model=CFG).save(run / "run_config.json")
    return run


def photos(folder, sizes=((30, 41), (64, 64))):
    folder.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray((g.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_folder_dehaze_keeps_sizes_and_skips_existing(tmp_path, weights, capsys):
    src = photos(tmp_path / "in")
    assert main(["dehaze", "-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--suffix", "_dh", "--no-progress"]) == 0
    for i, (h, w) in enumerate(((30, 41), (64, 64))):
        assert Image.open(tmp_path / "out" / f"img{i}_dh.png").size == (w, h)
    assert main(["dehaze", "-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--suffix", "_dh", "--no-progress"]) == 0
    assert "2 skipped" in capsys.readouterr().out


def test_matches_direct_generator_and_accepts_a_bare_cut_file(tmp_path, weights):
    src = photos(tmp_path / "in", ((32, 48),))
    cut_file = tmp_path / "cut" / "latest_net_G.pth"
    cut_file.parent.mkdir()
    torch.save(torch.load(weights / "latest_net_G.pth", weights_only=True), cut_file)  # no run_config.json
    net, cfg = load_generator(cut_file)
    assert cfg == ModelConfig(ngf=8, n_blocks=2)  # read off the keys
    assert main(["dehaze", "-i", str(src / "img0.png"), "-o", str(tmp_path / "out"), "--weights", str(cut_file),
                 "--no-progress"]) == 0
    x = np.asarray(Image.open(src / "img0.png"), dtype=np.float32) / 255.0
    with torch.no_grad():
        y = net(torch.from_numpy((x.transpose(2, 0, 1)[None] - 0.5) / 0.5))[0].numpy()
    expected = np.clip(np.rint((y.transpose(1, 2, 0) + 1) / 2 * 255), 0, 255)
    got = np.asarray(Image.open(tmp_path / "out" / "img0.png"), dtype=np.float32)
    assert np.abs(got - expected).max() <= 1.0


def test_alpha_is_carried_through(tmp_path, weights):
    (tmp_path / "in").mkdir()
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[..., 3] = np.arange(24, dtype=np.uint8)[None] * 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in" / "a.png")
    assert main(["dehaze", "-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--no-progress"]) == 0
    out = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert out.shape == (20, 24, 4) and np.array_equal(out[..., 3], rgba[..., 3])


def test_tiled_runs_and_keeps_size(tmp_path, weights):
    src = photos(tmp_path / "in", ((90, 130),))
    assert main(["dehaze", "-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(weights), "--tile", "64",
                 "--tile-overlap", "16", "--ext", "jpg", "--no-progress"]) == 0
    assert Image.open(tmp_path / "out" / "img0.jpg").size == (130, 90)


def test_bad_inputs_give_one_clear_line(tmp_path, weights, capsys):
    src = photos(tmp_path / "in", ((32, 32),))
    (src / "zz_broken.png").write_bytes(b"nope")
    assert main(["dehaze", "-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(tmp_path / "none"),
                 "--no-progress"]) == 2
    assert "none" in capsys.readouterr().err
    assert main(["dehaze", "-i", str(src), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "zz_broken.png" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0.png"]  # nothing half-written
    garbage = tmp_path / "g.pth"
    garbage.write_bytes(b"\x00" * 10)
    assert main(["dehaze", "-i", str(src), "-o", str(tmp_path / "o2"), "--weights", str(garbage),
                 "--no-progress"]) == 2
    assert "g.pth" in capsys.readouterr().err
