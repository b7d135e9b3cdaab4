"""Training state across frameworks: k PyTorch steps, convert (networks + Adam + progress), k MindSpore steps,
against 2k PyTorch steps; and the state's round trip torch -> ms -> torch bit for bit."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch

from singan_ms.device import setup

MS_MODE = "pynative"  # tests/conftest.py re-applies it before each test
setup("CPU", MS_MODE)

import mindspore as ms  # noqa: E402

from convert.__main__ import main  # noqa: E402
from convert.formats import ConvertError  # noqa: E402
from parity.cases import structural_zero_biases  # noqa: E402
from singan_common.config import ModelConfig, TrainConfig  # noqa: E402
from singan_ms.networks import torch_name  # noqa: E402
from singan_ms.train import train as ms_train  # noqa: E402
from singan_torch.model import LOSS_NAMES  # noqa: E402
from singan_torch.train import train as torch_train  # noqa: E402
from tests.ms_tolerances import LOSS_ATOL  # noqa: E402
from tests.test_common import make_folder  # noqa: E402

TINY = ModelConfig(ngf=8, ndf=8, n_blocks=2, nce_layers=(0, 4, 8, 10), netF_nc=16, num_patches=16,
                   mmd_num_samples=16)
# 3 images, batch 1: 3 steps per epoch; 1 constant + 2 decaying epochs, so step 4 runs at a decayed lr and
# the schedule's value must survive the conversion too.
BASE = {"load_size": 36, "crop_size": 32, "n_epochs": 1, "n_epochs_decay": 2, "seed": 3, "save_epoch_freq": 1}
K = 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_folder(root / "hazy", 3), make_folder(root / "clear", 2, seed=1)


def run(fn, out, data, resume=False, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(out, *data, TINY, TrainConfig(**{**BASE, **kw}), resume=resume, progress_bar=False)


def losses(run_dir):
    with (run_dir / "loss_log.csv").open(newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_torch_k_steps_then_mindspore_k_steps_equals_torch_2k(tmp_path, data):
    straight = run(torch_train, tmp_path / "torch2k", data, max_steps=2 * K)
    run(torch_train, tmp_path / "torchk", data, max_steps=K)
    assert main(["torch2ms", str(tmp_path / "torchk"), "-o", str(tmp_path / "ms")]) == 0
    assert (tmp_path / "ms" / "train_state.ckpt").is_file()
    continued = run(ms_train, tmp_path / "ms", data, resume=True, max_steps=2 * K)

    ref, got = losses(tmp_path / "torch2k"), losses(tmp_path / "ms")
    assert sorted(got) == list(range(K + 1, 2 * K + 1))  # MindSpore logged exactly the steps it ran
    for step in got:
        assert float(got[step]["lr"]) == pytest.approx(float(ref[step]["lr"]), rel=1e-12)
        for name in LOSS_NAMES:
            a, b = float(ref[step][name]), float(got[step][name])
            assert abs(a - b) <= LOSS_ATOL * max(1.0, abs(a)), (step, name, a, b)
    # Parameter space: every weight follows torch's to float noise, except elements whose gradient is itself
    # noise, where Adam's normalised step has an arbitrary sign (at most 2 lr per step apart): above all the
    # conv biases before an affine-free instance norm, whose gradient is mathematically zero.
    lr = TrainConfig().lr
    for key in ("G", "D", "F"):
        structural = set(structural_zero_biases(continued.nets[key]))
        t = {k: v.detach().numpy() for k, v in straight.nets[key].named_parameters()}
        m = {torch_name(p.name): p.asnumpy() for p in continued.nets[key].trainable_params()}
        assert sorted(t) == sorted(m)
        for k in t:
            diff = np.abs(t[k] - m[k])
            assert diff.max() <= 2 * lr * K, (key, k, diff.max())
            if k not in structural:
                assert (diff > 1e-5 * max(1.0, np.abs(t[k]).max())).mean() <= 1e-2, (key, k)
        # Adam's moments carried over: after K more steps they still track torch's.
        opt_t = straight.optimizers[key]
        for p_t, (name, _) in zip(opt_t.param_groups[0]["params"], straight.nets[key].named_parameters(),
                                  strict=True):
            if name in structural:  # second moments of float noise: nothing to match
                continue
            i = [torch_name(p.name) for p in continued.nets[key].trainable_params()].index(name)
            mt = opt_t.state[p_t]["exp_avg_sq"].numpy()
            mm = continued.optimizers[key].exp_avg_sq[i].asnumpy()
            assert np.abs(mt - mm).max() <= 1e-4 * max(1e-12, np.abs(mt).max()) + 1e-30, (key, name)
    assert float(continued.optimizers["G"].step.asnumpy()) == 2 * K


def test_train_state_round_trip_is_bit_identical(tmp_path, data):
    run(torch_train, tmp_path / "t", data, max_steps=K)
    assert main(["torch2ms", str(tmp_path / "t" / "train_state.pth"), "-o", str(tmp_path / "ms")]) == 0
    flat = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(tmp_path / "ms" / "train_state.ckpt")).items()}
    assert float(flat["opt_G/optimizer_G.step"]) == K and flat["opt_G/optimizer_G.lr"].dtype == np.float64
    assert int(flat["progress/step"]) == K
    assert main(["ms2torch", str(tmp_path / "ms" / "train_state.ckpt"), "-o", str(tmp_path / "back")]) == 0
    a = torch.load(tmp_path / "t" / "train_state.pth", weights_only=True)
    b = torch.load(tmp_path / "back" / "train_state.pth", weights_only=True)
    assert a["progress"] == b["progress"] and a["world_size"] == b["world_size"]
    for key in ("G", "D", "F"):
        assert a["nets"][key].keys() == b["nets"][key].keys()
        for k, v in a["nets"][key].items():
            assert torch.equal(v, b["nets"][key][k]), (key, k)
        sa, sb = a["optimizers"][key], b["optimizers"][key]
        assert sa["param_groups"] == sb["param_groups"]
        assert sa["state"].keys() == sb["state"].keys()
        for i, st in sa["state"].items():
            for slot in ("step", "exp_avg", "exp_avg_sq"):
                assert st[slot].dtype == sb["state"][i][slot].dtype
                assert torch.equal(st[slot], sb["state"][i][slot]), (key, i, slot)
    # and the converted-back state resumes in singan_torch
    (tmp_path / "back" / "run_config.json").write_text((tmp_path / "t" / "run_config.json").read_text())
    run(torch_train, tmp_path / "back", data, resume=True, max_steps=K + 1)


def test_state_from_a_multi_process_run_is_refused(tmp_path, data):
    run(torch_train, tmp_path / "t", data, max_steps=1)
    state = torch.load(tmp_path / "t" / "train_state.pth", weights_only=True)
    state["world_size"] = 2
    torch.save(state, tmp_path / "t" / "train_state.pth")
    with pytest.raises(ConvertError, match="2-process run"):
        from convert.core import convert

        convert(tmp_path / "t", "torch2ms", tmp_path / "ms", report=lambda s: None)
    assert not (tmp_path / "ms").exists()
    # the MindSpore side: a state written by a 2-worker msrun run is refused the same way
    state["world_size"] = 1
    torch.save(state, tmp_path / "t" / "train_state.pth")
    assert main(["torch2ms", str(tmp_path / "t" / "train_state.pth"), "-o", str(tmp_path / "ms1")]) == 0
    ck = ms.load_checkpoint(str(tmp_path / "ms1" / "train_state.ckpt"))
    assert int(ck["world_size"].asnumpy()) == 1  # what singan_ms.train writes and checks on resume
    entries = [{"name": k, "data": v} for k, v in ck.items() if k != "world_size"]
    entries.append({"name": "world_size", "data": ms.Tensor(np.int64(2))})
    ms.save_checkpoint(entries, str(tmp_path / "ms1" / "train_state.ckpt"))
    with pytest.raises(ConvertError, match="2-process run"):
        from convert.core import convert

        convert(tmp_path / "ms1" / "train_state.ckpt", "ms2torch", tmp_path / "pt", report=lambda s: None)
    assert not (tmp_path / "pt").exists()
