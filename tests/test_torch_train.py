"""singan_torch training: a few real steps write loadable checkpoints; resume is bit-identical; bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from singan_common.config import ModelConfig, TrainConfig
from singan_common.data import DatasetError
from singan_torch.networks import define_G
from singan_torch.train import train
from tests.test_common import make_folder

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(ngf=8, ndf=8, n_blocks=2, nce_layers=(0, 4, 8, 10), netF_nc=16, num_patches=16,
                   mmd_num_samples=16)


def tiny_train(**kw) -> TrainConfig:
    base = {"load_size": 36, "crop_size": 32, "n_epochs": 1, "n_epochs_decay": 2, "seed": 3, "save_epoch_freq": 1}
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_folder(root / "hazy", 3), make_folder(root / "clear", 2, seed=1)


def run(out, data, resume=False, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(out, *data, TINY, tiny_train(**kw), resume=resume, progress_bar=False)


def test_training_writes_cut_checkpoints_and_log(tmp_path, data):
    model = run(tmp_path / "run", data, max_steps=4)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"latest_net_G.pth", "latest_net_D.pth", "latest_net_F.pth", "1_net_G.pth", "train_state.pth",
            "run_config.json", "loss_log.csv"} <= files
    assert not [f for f in files if ".tmp" in f]
    g = define_G(TINY, 99)
    g.load_state_dict(torch.load(tmp_path / "run" / "latest_net_G.pth", weights_only=True), strict=True)
    for k, v in model.netG.state_dict().items():
        assert torch.equal(g.state_dict()[k], v)
    rows = list(csv.DictReader((tmp_path / "run" / "loss_log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["loss_G"]) > 0 for r in rows)
    assert float(rows[3]["lr"]) == pytest.approx(2e-4 * (1 - 1 / 3))  # epoch 2 is the first decay epoch
    initial = define_G(TINY, 3)
    changed = [k for k, v in initial.state_dict().items() if not torch.equal(v, model.netG.state_dict()[k])]
    assert changed, "training did not change G"


def test_resume_is_bit_identical(tmp_path, data):
    straight = run(tmp_path / "a", data, max_steps=5)
    run(tmp_path / "b", data, max_steps=2)
    resumed = run(tmp_path / "b", data, resume=True, max_steps=5)
    for name in ("G", "D", "F"):
        for k, v in straight.nets[name].state_dict().items():
            assert torch.equal(v, resumed.nets[name].state_dict()[k]), f"{name}.{k}"
    for name in ("G", "D", "F"):
        sa = straight.optimizers[name].state_dict()["state"]
        sb = resumed.optimizers[name].state_dict()["state"]
        for idx in sa:
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(sa[idx][key], sb[idx][key])
    rows_a = list(csv.DictReader((tmp_path / "a" / "loss_log.csv").open()))
    rows_b = list(csv.DictReader((tmp_path / "b" / "loss_log.csv").open()))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in rows_a]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in rows_b]


def test_refuses_to_overwrite_a_run(tmp_path, data):
    run(tmp_path / "r", data, max_steps=1)
    with pytest.raises(ValueError, match="--resume"):
        run(tmp_path / "r", data, max_steps=1)


def test_cli_trains_and_reports_bad_input_clearly(tmp_path, data):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "singan_torch", "train", "--ngf", "8", "--ndf", "8", "--n-blocks", "3",
            "--num-patches", "16", "--mmd-num-samples", "16", "--load-size", "36", "--crop-size", "32",
            "--no-progress"]
    ok = subprocess.run([*base, "--hazy", str(data[0]), "--clear", str(data[1]), "--out", str(tmp_path / "o"),
                         "--max-steps", "2"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "o" / "latest_net_G.pth").is_file()
    assert "RANDOM VGG16" in ok.stderr  # loud about the missing perceptual weights
    missing = subprocess.run([*base, "--hazy", str(tmp_path / "nope"), "--clear", str(data[1]), "--out",
                              str(tmp_path / "o2")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "nope" in missing.stderr and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert not (tmp_path / "o2").exists()


def test_dataset_errors_leave_no_run_directory(tmp_path, data):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        run(tmp_path / "never", (empty, data[1]), max_steps=1)
    assert not (tmp_path / "never").exists()
