"""`python -m singan_ms dehaze`: folders, tiling, skipping, alpha, clear errors, and agreement with singan_torch."""

from __future__ import annotations

import mindspore as ms
import numpy as np
import pytest
import torch
from PIL import Image

from singan_common.config import ModelConfig, RunConfig
from singan_ms.__main__ import main
from singan_ms.networks import define_G
from singan_torch.__main__ import main as torch_main
from singan_torch.networks import define_G as torch_define_G
from tests.test_torch_dehaze import photos

CFG = ModelConfig(ngf=8, n_blocks=2, nce_layers=(0, 4, 8))


@pytest.fixture()
def weights(tmp_path):
    """The same seeded G saved by both frameworks (the randomness plan makes their initial weights equal)."""
    run = tmp_path / "run"
    run.mkdir()
    ms.save_checkpoint(define_G(CFG, 0), str(run / "latest_net_G.ckpt"))
    torch.save(torch_define_G(CFG, 0).state_dict(), run / "latest_net_G.pth")
    RunConfig(model=CFG).save(run / "run_config.json")
    return run


def test_folder_dehaze_keeps_sizes_skips_existing_and_equals_torch(tmp_path, weights, capsys):
    src = photos(tmp_path / "in")
    args = ["dehaze", "-i", str(src), "--weights", str(weights), "--suffix", "_dh", "--no-progress"]
    assert main([*args, "-o", str(tmp_path / "ms")]) == 0
    assert torch_main([*args, "-o", str(tmp_path / "pt")]) == 0
    for i, (h, w) in enumerate(((30, 41), (64, 64))):
        assert Image.open(tmp_path / "ms" / f"img{i}_dh.png").size == (w, h)
        assert_same_uint8(tmp_path / "ms" / f"img{i}_dh.png", tmp_path / "pt" / f"img{i}_dh.png")
    assert main([*args, "-o", str(tmp_path / "ms")]) == 0
    assert "2 skipped" in capsys.readouterr().out


def assert_same_uint8(a_path, b_path) -> None:
    a = np.asarray(Image.open(a_path), dtype=np.int16)
    b = np.asarray(Image.open(b_path), dtype=np.int16)
    assert a.shape == b.shape
    # The generators agree to ~1e-6, so only a value sitting on a rounding boundary may differ, by one.
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3


def test_tiled_equals_torch_tiled_and_alpha_is_carried(tmp_path, weights):
    """Tiling and blending live once in singan_common: the MindSpore tiles blend into torch's image."""
    src = photos(tmp_path / "in", ((90, 130),))
    base = ["dehaze", "-i", str(src), "--weights", str(weights), "--no-progress", "--tile", "64",
            "--tile-overlap", "16"]
    assert main([*base, "-o", str(tmp_path / "ms")]) == 0
    assert torch_main([*base, "-o", str(tmp_path / "pt")]) == 0
    assert Image.open(tmp_path / "ms" / "img0.png").size == (130, 90)
    assert_same_uint8(tmp_path / "ms" / "img0.png", tmp_path / "pt" / "img0.png")
    (tmp_path / "rgba").mkdir()
    rgba = np.zeros((20, 24, 4), np.uint8)
    rgba[..., 3] = np.arange(24, dtype=np.uint8)[None] * 10
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba" / "a.png")
    assert main(["dehaze", "-i", str(tmp_path / "rgba"), "-o", str(tmp_path / "out"), "--weights", str(weights),
                 "--no-progress"]) == 0
    out = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    assert out.shape == (20, 24, 4) and np.array_equal(out[..., 3], rgba[..., 3])


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
    garbage = tmp_path / "g" / "latest_net_G.ckpt"
    garbage.parent.mkdir()
    garbage.write_bytes(b"\x00" * 10)
    assert main(["dehaze", "-i", str(src), "-o", str(tmp_path / "o2"), "--weights", str(garbage),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "latest_net_G.ckpt" in err and "Traceback" not in err
    assert not (tmp_path / "o2").exists() or not any((tmp_path / "o2").iterdir())
