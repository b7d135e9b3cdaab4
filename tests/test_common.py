"""singan_common: configs, image IO, the unpaired dataset and the randomness plan."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from singan_common import architecture as arch
from singan_common.config import ConfigError, ModelConfig, RunConfig, TrainConfig, lr_factor
from singan_common.data import DatasetError, UnpairedDataset, resolve_folders
from singan_common.images import ImageError, read_image, write_image
from singan_common.rng import ParamSpec, init_tensors, step_draws


def test_common_imports_no_framework():
    code = ("import sys, pkgutil, importlib, singan_common\n"
            "for m in pkgutil.iter_modules(singan_common.__path__):\n"
            "    importlib.import_module('singan_common.' + m.name)\n"
            "bad = [m for m in ('torch', 'mindspore') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_round_trip_and_validation(tmp_path):
    cfg = RunConfig(ModelConfig(variant="antialias", nce_layers=(0, 4)), TrainConfig(lr=1e-4))
    cfg.save(tmp_path / "c.json")
    assert RunConfig.load(tmp_path / "c.json") == cfg
    with pytest.raises(ConfigError, match="variant"):
        ModelConfig(variant="bogus")
    with pytest.raises(ConfigError, match="nce_layers"):
        ModelConfig(nce_layers=(0, 99))
    with pytest.raises(ConfigError, match="crop_size"):
        TrainConfig(load_size=100, crop_size=128)
    (tmp_path / "bad.json").write_text('{"model": {"ngf_typo": 3}}')
    with pytest.raises(ConfigError, match="ngf_typo"):
        RunConfig.load(tmp_path / "bad.json")


def test_lr_schedule_is_cuts_linear_policy():
    cfg = TrainConfig(n_epochs=2, n_epochs_decay=3)
    assert [lr_factor(e, cfg) for e in range(1, 6)] == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.25])


def test_generator_plan_lengths_and_nce_channels():
    for variant, n in (("stride2", 28), ("antialias", 32)):
        cfg = ModelConfig(variant=variant)
        assert len(arch.generator_plan(cfg)) == n
        assert arch.nce_channels(cfg) == [3, 128, 256, 256, 256]
    # CUT's default 256 crop: layer 0 is the reflect-padded input (262 x 262)
    assert arch.nce_positions(ModelConfig(), 256, 256) == [262 * 262, 128 * 128, 64 * 64, 64 * 64, 64 * 64]


def test_init_tensors_deterministic_and_order_free():
    specs = [ParamSpec("a.weight", "conv", (8, 4, 3, 3)), ParamSpec("a.bias", "bias", (8,)),
             ParamSpec("bn.weight", "norm_weight", (8,))]
    one = init_tensors(5, "G", specs)
    two = init_tensors(5, "G", list(reversed(specs)))
    for k in one:
        assert np.array_equal(one[k], two[k]) and one[k].dtype == np.float32
    assert not np.array_equal(one["a.weight"], init_tensors(5, "D", specs)["a.weight"])
    assert np.all(one["a.bias"] == 0)


def test_step_draws_deterministic_and_in_range():
    a = step_draws(0, 7, 2, [100, 50], 30, 16, "uniform", 0.3, 20)
    b = step_draws(0, 7, 2, [100, 50], 30, 16, "uniform", 0.3, 20)
    c = step_draws(0, 8, 2, [100, 50], 30, 16, "uniform", 0.3, 20)
    assert all(np.array_equal(x, y) for x, y in zip(a.patch_ids, b.patch_ids))
    assert not np.array_equal(a.patch_ids[0], c.patch_ids[0])
    assert [len(p) for p in a.patch_ids] == [16, 16] and len(set(a.patch_ids[0])) == 16
    assert a.neg_noise[0].shape == (2, 16, 16) and np.abs(a.neg_noise[0]).max() <= 0.3
    assert len(a.mmd_ids_fake) == 20 and a.mmd_ids_fake.max() < 30


# ---------------------------------------------------------------------------------------------------------
# Image IO
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "LA", "P", "I;16", "CMYK"])
def test_read_image_modes(tmp_path, mode):
    rgb = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(rgb, "RGB")
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
        assert img.mode == "I;16"
    elif mode != "RGB":
        img = img.convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    out = read_image(path)
    assert out.rgb.shape == (20, 30, 3) and out.rgb.dtype == np.float32
    assert 0.0 <= out.rgb.min() and out.rgb.max() <= 1.0
    assert (out.alpha is not None) == (mode in ("RGBA", "LA"))
    if mode == "I;16":
        assert out.bit_depth == 16
        np.testing.assert_allclose(out.rgb[..., 0], rgb[..., 0] / 255.0, atol=1e-6)


def test_read_image_respects_exif_orientation(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "o.jpg", exif=exif)
    assert read_image(tmp_path / "o.jpg").rgb.shape == (40, 20, 3)


def test_bad_images_are_named(tmp_path):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageError, match="corrupt.png"):
        read_image(tmp_path / "corrupt.png")
    good = tmp_path / "t.png"
    Image.new("RGB", (64, 64)).save(good)
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:60])
    with pytest.raises(ImageError, match="trunc.png"):
        read_image(tmp_path / "trunc.png")
    with pytest.raises(ImageError, match="smaller than"):
        read_image(good, min_size=100)
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_write_image_is_atomic_and_round_trips(tmp_path):
    rgb = np.random.default_rng(1).random((8, 8, 3)).astype(np.float32)
    write_image(tmp_path / "o.png", rgb)
    back = read_image(tmp_path / "o.png").rgb
    np.testing.assert_allclose(back, np.rint(rgb * 255) / 255, atol=1e-7)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]  # no temporary left behind


# ---------------------------------------------------------------------------------------------------------
# Unpaired dataset
# ---------------------------------------------------------------------------------------------------------


def make_folder(path, n, size=(40, 50), seed=0):
    path.mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray((g.random((*size, 3)) * 255).astype(np.uint8)).save(path / f"{i:03d}.png")
    return path


def test_dataset_batches_are_deterministic_and_shaped(tmp_path):
    a, b = make_folder(tmp_path / "hazy", 3), make_folder(tmp_path / "clear", 2, seed=1)
    ds = UnpairedDataset(a, b, load_size=36, crop_size=32, flip=True, seed=0)
    assert len(ds) == 3 and ds.num_batches(2) == 2
    x = ds.batch(1, 0, 2)
    y = UnpairedDataset(a, b, load_size=36, crop_size=32, flip=True, seed=0).batch(1, 0, 2)
    assert x.hazy.shape == (2, 3, 32, 32) and x.hazy.dtype == np.float32
    assert np.array_equal(x.hazy, y.hazy) and np.array_equal(x.clear, y.clear)
    assert -1.0 <= x.hazy.min() and x.hazy.max() <= 1.0
    z = UnpairedDataset(a, b, load_size=36, crop_size=32, flip=True, seed=1).batch(1, 0, 2)
    assert not np.array_equal(x.hazy, z.hazy)
    assert ds.batch(1, 1, 2).hazy.shape[0] == 1  # last batch keeps the remainder
    hazy_seen = sorted(p.name for k in range(2) for p in ds.batch(2, k, 2).hazy_paths)
    assert hazy_seen == ["000.png", "001.png", "002.png"]  # every hazy image once per epoch


def test_dataset_accepts_cyclegan_layout(tmp_path):
    make_folder(tmp_path / "trainA", 1)
    make_folder(tmp_path / "trainB", 1)
    assert resolve_folders(tmp_path) == (tmp_path / "trainA", tmp_path / "trainB")
    with pytest.raises(DatasetError, match="trainA"):
        resolve_folders(tmp_path / "trainA")


def test_dataset_errors_name_the_problem(tmp_path):
    good = make_folder(tmp_path / "good", 1)
    with pytest.raises(DatasetError, match="does not exist"):
        UnpairedDataset(tmp_path / "nope", good, 36, 32, True, 0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        UnpairedDataset(tmp_path / "empty", good, 36, 32, True, 0)
    bad = make_folder(tmp_path / "bad", 1)
    (bad / "broken.jpg").write_bytes(b"nope")
    with pytest.raises(ImageError, match="broken.jpg"):
        UnpairedDataset(bad, good, 36, 32, True, 0)
    tiny = make_folder(tmp_path / "tiny", 1, size=(6, 6))
    with pytest.raises(DatasetError, match="too small"):
        UnpairedDataset(tiny, good, 286, 256, True, 0)


def test_dataset_shards_are_disjoint_and_cover_the_epoch(tmp_path):
    a, b = make_folder(tmp_path / "h", 7), make_folder(tmp_path / "c", 3, seed=2)
    full = UnpairedDataset(a, b, 36, 32, True, 0).epoch_pairs(1)
    shards = [UnpairedDataset(a, b, 36, 32, True, 0, rank=r, world_size=3).epoch_pairs(1) for r in range(3)]
    assert {len(s) for s in shards} == {3}
    items = [it for s in shards for it in s]
    assert {it[0] for it in items} == {it[0] for it in full}  # coverage
    assert len(items) - len({it[0] for it in items}) == 2  # only the wrap-around padding repeats
    one = UnpairedDataset(a, b, 36, 32, True, 0)
    sharded = UnpairedDataset(a, b, 36, 32, True, 0, rank=1, world_size=3)
    assert np.array_equal(sharded.batch(1, 0, 1).hazy, one.batch(1, 1, 1).hazy)  # same crop as single process
