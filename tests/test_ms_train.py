"""singan_ms training: torch-exact Adam in the compiled mode it runs in, the compiled train step against
singan_torch's, checkpoints, --init, exact resume and the CLI."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from singan_ms.device import setup

MS_MODE = "pynative"  # tests/conftest.py re-applies it before each test
setup("CPU", MS_MODE)

import mindspore as ms  # noqa: E402
from mindspore import Parameter, Tensor  # noqa: E402

import singan_ms.model as MM  # noqa: E402
import singan_torch.model as TM  # noqa: E402
from singan_common.config import ModelConfig, TrainConfig  # noqa: E402
from singan_ms.networks import define_G, to_numpy_state, torch_name  # noqa: E402
from singan_ms.optim import Adam  # noqa: E402
from singan_ms.train import train  # noqa: E402
from tests.ms_tolerances import ADAM_PARAM_ULPS, LOSS_ATOL  # noqa: E402
from tests.test_common import make_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelConfig(ngf=8, ndf=8, n_blocks=2, nce_layers=(0, 4, 8, 10), netF_nc=16, num_patches=16,
                   mmd_num_samples=16)


@pytest.mark.parametrize("beta1", [0.5, 0.9])
def test_adam_compiled_matches_torch(beta1):
    rs = np.random.RandomState(0)
    shapes = [(16, 3, 7, 7), (64,), (17,)]
    init = [rs.randn(*s).astype(np.float32) for s in shapes]
    tp = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in init]
    opt = torch.optim.Adam(tp, lr=2e-4, betas=(beta1, 0.999))
    mp = [Parameter(Tensor(a.copy()), name=f"p{i}") for i, a in enumerate(init)]
    adam = Adam(mp, 2e-4, (beta1, 0.999), name="A")
    step = ms.jit(adam.construct)
    for k in range(4):
        grads = [(rs.randn(*s) * 10 ** rs.uniform(-6, 1)).astype(np.float32) for s in shapes]
        for p, g in zip(tp, grads, strict=True):
            p.grad = torch.from_numpy(g)
        opt.step()
        step(tuple(Tensor(g) for g in grads))
        if k == 1:  # a schedule change between steps
            opt.param_groups[0]["lr"] = 1.3e-4
            adam.set_lr(1.3e-4)
    for i, p in enumerate(tp):
        st = opt.state[p]
        assert np.array_equal(st["exp_avg"].numpy(), adam.exp_avg[i].asnumpy())
        assert np.array_equal(st["exp_avg_sq"].numpy(), adam.exp_avg_sq[i].asnumpy())
        ref = p.detach().numpy()
        assert np.all(np.abs(ref - mp[i].asnumpy()) <= ADAM_PARAM_ULPS * np.spacing(np.abs(ref)))
    assert float(adam.step.asnumpy()) == 4.0


def train_pair(cfg: ModelConfig) -> tuple:
    """singan_torch's model and the compiled singan_ms one after three identical iterations (seed 3, 32x32
    crops), every logged loss checked against torch's at each step; also the MindSpore G and D states before."""
    tc = TrainConfig(seed=3, crop_size=32, load_size=36)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tm, mm = TM.SinGANDehazeModel(cfg, tc), MM.SinGANDehazeModel(cfg, tc, jit=True)
    before = {"G": to_numpy_state(mm.netG), "D": to_numpy_state(mm.netD)}
    rs = np.random.RandomState(0)
    for step in range(3):
        a, b = rs.uniform(-1, 1, (2, 1, 3, 32, 32)).astype(np.float32)
        draws = TM.draws_for(cfg, 3, step, 1, 32, 32)
        lt, lm = tm.optimize(a, b, draws), mm.optimize(a, b, draws)
        for k in lt:
            assert abs(lt[k] - lm[k]) <= LOSS_ATOL * max(1.0, abs(lt[k])), (step, k, lt[k], lm[k])
    return tm, mm, before


def test_compiled_train_step_matches_torch_and_changes_weights():
    """Three compiled iterations against singan_torch's: every logged loss agrees, weights move."""
    tm, mm, start = train_pair(TINY)
    before = start["G"]
    after = to_numpy_state(mm.netG)
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    # Weights that are not structural zeros follow torch's closely (those differ by up to 2 lr per step).
    tstate = {k: v.detach().numpy() for k, v in tm.netG.state_dict().items()}
    assert np.abs(tstate["model.19.weight"] - after["model.19.weight"]).max() < 1e-5


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_discriminator_update_matches_torch_in_both_orderings(norm):
    """D is written after G's pullback when its forward has no state (instance norm), in place before the G step
    when it has (BatchNorm); either way the G step must see D's updated weights, as torch's does."""
    tm, mm, start = train_pair(ModelConfig(**{**TINY.__dict__, "norm": norm}))
    assert mm.train_step.defer_D == (norm == "instance")
    before = start["D"]
    after = to_numpy_state(mm.netD)
    tstate = {k: v.detach().numpy() for k, v in tm.netD.state_dict().items()}
    # Convolution weights (not the structurally-zero-gradient biases before a norm): measured <= 6.5e-8 from
    # torch's after three steps; a lost or misordered D update is an Adam step, ~2e-4.
    for k in (k for k in after if k.endswith(".weight") and k in tstate):
        assert np.abs(after[k] - before[k]).max() > 1e-4, k
        assert np.abs(after[k] - tstate[k]).max() < 1e-6, k


def test_batchnorm_running_statistics_follow_torch():
    """With norm='batch' the running statistics of G and D (which dehazing uses) follow torch's. The losses
    agree either way (train-mode BatchNorm uses batch statistics); G's statistics did not until TrainStep kept
    them from before the pullback, whose rerun of G's forward moved them once more (measured: 0.077 of 0.28 on a
    running_var after 3 steps; now 4.6e-8 relative, D 8.7e-11)."""
    setup("CPU", "graph")  # as `python -m singan_ms train` runs; conftest restores PyNative for the next test
    tm, mm, _ = train_pair(ModelConfig(**{**TINY.__dict__, "norm": "batch"}))
    assert mm.train_step.g_running_stats
    for net in ("G", "D"):
        tstate = {k: v.detach().numpy() for k, v in getattr(tm, f"net{net}").state_dict().items()}
        stats = {k: v for k, v in to_numpy_state(getattr(mm, f"net{net}")).items() if "moving_" in k}
        assert stats, net
        for k, v in stats.items():
            ref = tstate[torch_name(k)]
            assert np.abs(v - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max()), (net, k)


def test_generator_runs_forward_once_per_step():
    """The pullback reuses vjp's forward: G's two transposed convolutions run once each per step (counted by the
    compiled kernels). A write between the two (D updated in place) made MindSpore run G's forward twice.
    GRAPH_MODE, as `python -m singan_ms train` runs it: ms.jit under PyNative still runs the forward twice."""
    from singan_ms import native

    setup("CPU", "graph")  # conftest puts this module's PyNative back for the next test
    if not native.convolutions():
        pytest.skip("singan_ms's compiled convolutions are not in use here")
    tc = TrainConfig(seed=3, crop_size=32, load_size=36)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mm = MM.SinGANDehazeModel(TINY, tc, jit=True)
    a, b = np.random.RandomState(0).uniform(-1, 1, (2, 1, 3, 32, 32)).astype(np.float32)
    mm.optimize(a, b, MM.draws_for(TINY, 3, 0, 1, 32, 32))
    native.kernel_timing(True)
    mm.optimize(a, b, MM.draws_for(TINY, 3, 1, 1, 32, 32))
    calls = {k: n for k, (_, n) in native.kernel_timing(False).items()}
    assert calls["ConvTransposeFwd"] == 2, calls


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return make_folder(root / "hazy", 3), make_folder(root / "clear", 2, seed=1)


def run(out, data, resume=False, init=None, **kw):
    base = {"load_size": 36, "crop_size": 32, "n_epochs": 1, "n_epochs_decay": 2, "seed": 3, "save_epoch_freq": 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train(out, *data, TINY, TrainConfig(**{**base, **kw}), resume=resume, progress_bar=False, init=init)


def test_resume_is_bit_identical_and_checkpoints_load(tmp_path, data):
    straight = run(tmp_path / "a", data, max_steps=5)
    run(tmp_path / "b", data, max_steps=2)
    resumed = run(tmp_path / "b", data, resume=True, max_steps=5)
    for name in ("G", "D", "F"):
        sa, sb = to_numpy_state(straight.nets[name]), to_numpy_state(resumed.nets[name])
        for k in sa:
            assert np.array_equal(sa[k], sb[k]), f"{name}.{k}"
        for pa, pb in zip(straight.optimizers[name].exp_avg_sq, resumed.optimizers[name].exp_avg_sq, strict=True):
            assert np.array_equal(pa.asnumpy(), pb.asnumpy())
    strip = [{k: v for k, v in r.items() if k != "seconds"}
             for r in csv.DictReader((tmp_path / "a" / "loss_log.csv").open())]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in csv.DictReader((tmp_path / "b" / "loss_log.csv").open())]
    files = {p.name for p in (tmp_path / "a").iterdir()}
    assert {"latest_net_G.ckpt", "latest_net_D.ckpt", "latest_net_F.ckpt", "1_net_G.ckpt", "train_state.ckpt",
            "run_config.json", "loss_log.csv"} <= files
    assert not [f for f in files if ".tmp" in f]
    saved = ms.load_checkpoint(str(tmp_path / "a" / "latest_net_G.ckpt"))
    assert sorted(saved) == sorted(to_numpy_state(define_G(TINY, 0)))


def test_init_from_torch_weights(tmp_path, data):
    """--init DIR: weights copied from a singan_torch G (stand-in for the converter) start the run."""
    from singan_ms.networks import load_into
    from singan_torch.networks import define_G as torch_G

    tg = torch_G(TINY, 11)
    g = define_G(TINY, 0)
    load_into(g, {k: v.numpy() for k, v in tg.state_dict().items()}, "torch")
    ms.save_checkpoint(g, str(tmp_path / "latest_net_G.ckpt"))
    from singan_ms.train import load_init

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MM.SinGANDehazeModel(TINY, TrainConfig(seed=3, crop_size=32, load_size=36))
    load_init(model, tmp_path)
    got = {torch_name(k): v for k, v in to_numpy_state(model.netG).items()}
    for k, v in tg.state_dict().items():
        assert np.array_equal(got[k], v.numpy()), k
    trained = run(tmp_path / "r", data, init=tmp_path, max_steps=1)  # and a run starts from them
    assert trained.optimizer_G.step.asnumpy() == 1.0


def test_cli_trains_and_reports_bad_input_clearly(tmp_path, data):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GLOG_v": "3"}
    base = [sys.executable, "-m", "singan_ms", "train", "--ngf", "8", "--ndf", "8", "--n-blocks", "2",
            "--num-patches", "16", "--mmd-num-samples", "16", "--load-size", "36", "--crop-size", "32",
            "--no-progress"]
    ok = subprocess.run([*base, "--hazy", str(data[0]), "--clear", str(data[1]), "--out", str(tmp_path / "o"),
                         "--max-steps", "2", "--safetensors"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert (tmp_path / "o" / "latest_net_G.safetensors").is_file()
    assert "RANDOM VGG16" in ok.stderr
    missing = subprocess.run([*base, "--hazy", str(tmp_path / "nope"), "--clear", str(data[1]), "--out",
                              str(tmp_path / "o2")], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "nope" in missing.stderr and "Traceback" not in missing.stderr
    out = tmp_path / "dh"
    dh = subprocess.run([sys.executable, "-m", "singan_ms", "dehaze", "-i", str(data[0]), "-o", str(out),
                         "--weights", str(tmp_path / "o"), "--no-progress"], capture_output=True, text=True,
                        env=env, cwd=tmp_path)
    assert dh.returncode == 0, dh.stderr[-3000:]
    assert len(list(out.iterdir())) == 3
