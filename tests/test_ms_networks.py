"""singan_ms networks against singan_torch: names, seeded init, every layer type and whole networks on CPU fp32."""

from __future__ import annotations

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
from mindspore import Tensor  # noqa: E402

import singan_ms.networks as M  # noqa: E402
import singan_torch.networks as T  # noqa: E402
from singan_common.config import ModelConfig  # noqa: E402
from tests.ms_tolerances import LAYER_ATOL, NET_ATOL, VGG_RTOL  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"ngf": 8, "ndf": 8, "n_blocks": 2, "nce_layers": (0, 4, 8, 10), "netF_nc": 16}


def copy_torch_to_ms(tnet: torch.nn.Module, mnet: ms.nn.Cell) -> None:
    M.load_into(mnet, {k: v.detach().numpy() for k, v in tnet.state_dict().items()}, "torch", strict=True)


def err(a: np.ndarray, b: np.ndarray) -> float:
    """Max abs error relative to the reference's scale (fp32 rounding scales with magnitude), floored at 1."""
    assert a.shape == b.shape
    return float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))


def torch_names(net: ms.nn.Cell) -> list[str]:
    return [M.torch_name(k) for k, _ in net.parameters_and_names()]


@pytest.mark.parametrize("variant", ["stride2", "antialias"])
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_names_and_seeded_init_equal_torch(variant, norm):
    """Same keys (norms renamed, no num_batches_tracked) and the same seed gives bit-identical weights."""
    cfg = ModelConfig(variant=variant, norm=norm, **SMALL)
    for d in ("G", "D", "F"):
        t, m = getattr(T, f"define_{d}")(cfg, 5), getattr(M, f"define_{d}")(cfg, 5)
        tstate = {k: v for k, v in T.to_numpy_state(t).items() if not k.endswith("num_batches_tracked")}
        mstate = {M.torch_name(k): v for k, v in M.to_numpy_state(m).items()}
        # MindSpore lists a BatchNorm's moving statistics before gamma/beta; otherwise the order is torch's.
        assert sorted(tstate) == sorted(mstate), d
        if norm != "batch":
            assert list(tstate) == list(mstate), d
        for k in tstate:
            assert np.array_equal(tstate[k], mstate[k]), f"{d}.{k}"
    if norm == "batch":
        bn = M.define_G(cfg, 0).model[2]
        assert [p.name.rsplit(".", 1)[-1] for p in bn.get_parameters()] == ["moving_mean", "moving_variance",
                                                                             "gamma", "beta"]
        # Built with MindSpore's momentum 0.9 (= 1 - torch's 0.1); the cell stores the op's 1 - that.
        assert bn.momentum == pytest.approx(cfg.bn_momentum)


def test_default_networks_have_cuts_keys():
    from tests.test_torch_networks import CUT_D_ANTIALIAS, CUT_F, CUT_G_ANTIALIAS

    cfg = ModelConfig(variant="antialias")
    assert {M.torch_name(k): tuple(p.shape) for k, p in M.define_G(cfg, 0).parameters_and_names()} == CUT_G_ANTIALIAS
    assert {M.torch_name(k): tuple(p.shape) for k, p in M.define_D(cfg, 0).parameters_and_names()} == CUT_D_ANTIALIAS
    assert {k: tuple(p.shape) for k, p in M.define_F(cfg, 0).parameters_and_names()} == CUT_F
    filt = dict(M.define_G(cfg, 0).parameters_and_names())["model.7.filt"]
    assert not filt.requires_grad
    assert all("filt" not in p.name for p in M.define_G(cfg, 0).trainable_params())


def _layer_cases():
    rs = np.random.RandomState(0)
    return [
        ("reflect_pad", T.nn.ReflectionPad2d(3), M.nn.ReflectionPad2d(3), (2, 4, 9, 11)),
        ("conv_k7", T.nn.Conv2d(4, 6, 7, bias=True), M.conv2d(4, 6, 7, bias=True), (2, 4, 15, 13)),
        ("conv_s2p1", T.nn.Conv2d(4, 6, 3, stride=2, padding=1), M.conv2d(4, 6, 3, 2, 1), (2, 4, 16, 14)),
        ("conv_k4s2p1", T.nn.Conv2d(4, 6, 4, stride=2, padding=1), M.conv2d(4, 6, 4, 2, 1), (2, 4, 17, 16)),
        ("conv_transpose", T.nn.ConvTranspose2d(6, 4, 3, 2, 1, output_padding=1),
         M.build_layer(ModelConfig(), M.arch.Layer("conv_transpose", 4, kernel=3, stride=2, padding=1, bias=True),
                       6), (2, 6, 8, 7)),
        ("instance_norm", T.nn.InstanceNorm2d(6), M.InstanceNorm2d(6), (2, 6, 9, 9)),
        ("downsample", T.Downsample(5), M.Downsample(5), (2, 5, 9, 12)),
        ("upsample", T.Upsample(5), M.Upsample(5), (2, 5, 7, 6)),
        ("tanh", T.nn.Tanh(), M.Tanh(), (3, 4, 8, 8)),
        ("dense", T.nn.Linear(12, 7), M.nn.Dense(12, 7), (10, 12)),
        ("lrelu", T.nn.LeakyReLU(0.2), M.nn.LeakyReLU(0.2), (2, 3, 5, 5)),
        ("highpass", T.GaussianHighPass(3, 11, 2.0), M.GaussianHighPass(3, 11, 2.0), (1, 3, 20, 24)),
    ], rs


@pytest.mark.parametrize("case", range(12))
def test_layer_forward_and_input_gradient_match_torch(case):
    cases, rs = _layer_cases()
    name, tl, ml, shape = cases[case]
    with torch.no_grad():
        for p in tl.parameters():
            p.copy_(torch.from_numpy(rs.randn(*p.shape).astype(np.float32) * 0.3))
    if list(tl.parameters()):
        copy_torch_to_ms(tl, ml)
    scale = 6.0 if name == "tanh" else 2.0  # tanh: cover |x| in [4, 6), where MindSpore's own tanh errs 1e-4
    x = (rs.uniform(-1, 1, shape) * scale).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = tl(xt)
    cot = rs.randn(*yt.shape).astype(np.float32)
    (yt * torch.from_numpy(cot)).sum().backward()

    def f(v):
        return (ml(v) * Tensor(cot)).sum()

    ym = ml(Tensor(x)).asnumpy()
    gm = ms.grad(f)(Tensor(x)).asnumpy()
    assert err(ym, yt.detach().numpy()) <= LAYER_ATOL, name
    assert err(gm, xt.grad.numpy()) <= LAYER_ATOL, name
    if name == "tanh":
        assert np.abs(ym).max() <= 1.0


def test_batchnorm_train_and_eval_match_torch():
    cfg = ModelConfig(norm="batch", bn_momentum=0.1)
    tl, ml = T.make_norm(cfg, 6), M.make_norm(cfg, 6)
    rs = np.random.RandomState(1)
    x = rs.randn(3, 6, 5, 5).astype(np.float32) * 2 + 1
    ml.set_train(True)
    tl.train()
    for _ in range(2):
        assert err(ml(Tensor(x)).asnumpy(), tl(torch.from_numpy(x)).detach().numpy()) <= LAYER_ATOL
    assert err(ml.moving_mean.asnumpy(), tl.running_mean.numpy()) <= LAYER_ATOL
    assert err(ml.moving_variance.asnumpy(), tl.running_var.numpy()) <= LAYER_ATOL
    ml.set_train(False)
    tl.eval()
    assert err(ml(Tensor(x)).asnumpy(), tl(torch.from_numpy(x)).detach().numpy()) <= LAYER_ATOL


@pytest.mark.parametrize("variant", ["stride2", "antialias"])
def test_generator_discriminator_match_torch_small(variant):
    cfg = ModelConfig(variant=variant, **SMALL)
    rs = np.random.RandomState(2)
    x = rs.uniform(-1, 1, (2, 3, 32, 36)).astype(np.float32)
    tg, mg = T.define_G(cfg, 1), M.define_G(cfg, 1)
    out_t, feats_t = tg.forward_with_features(torch.from_numpy(x), cfg.nce_layers)
    out_m, feats_m = mg.forward_with_features(Tensor(x), cfg.nce_layers)
    assert err(out_m.asnumpy(), out_t.detach().numpy()) <= NET_ATOL
    for a, b in zip(feats_m, feats_t, strict=True):
        assert err(a.asnumpy(), b.detach().numpy()) <= NET_ATOL
    assert err(mg.encode(Tensor(x)).asnumpy(), tg.encode(torch.from_numpy(x)).detach().numpy()) <= NET_ATOL
    td, md = T.define_D(cfg, 1), M.define_D(cfg, 1)
    assert err(md(out_m).asnumpy(), td(out_t).detach().numpy()) <= NET_ATOL


def test_full_default_networks_match_torch():
    """The default G (both variants), D, F and VGG16 once, at a small input."""
    rs = np.random.RandomState(3)
    x = rs.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    for variant in ("stride2", "antialias"):
        cfg = ModelConfig(variant=variant)
        tg, mg = T.define_G(cfg, 0), M.define_G(cfg, 0)
        out_t, feats_t = tg.forward_with_features(torch.from_numpy(x), cfg.nce_layers)
        out_m, feats_m = mg.forward_with_features(Tensor(x), cfg.nce_layers)
        assert err(out_m.asnumpy(), out_t.detach().numpy()) <= NET_ATOL, variant
        td, md = T.define_D(cfg, 0), M.define_D(cfg, 0)
        assert err(md(out_m).asnumpy(), td(out_t).detach().numpy()) <= NET_ATOL, variant
    tf, mf = T.define_F(cfg, 0), M.define_F(cfg, 0)
    ids = [rs.permutation(f.shape[2] * f.shape[3])[:64].astype(np.int64) for f in feats_t]
    pt = tf([f.detach() for f in feats_t], [torch.from_numpy(i) for i in ids])
    pm = mf(feats_m, [Tensor(i) for i in ids])
    for a, b in zip(pm, pt, strict=True):
        assert err(a.asnumpy(), b.detach().numpy()) <= NET_ATOL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tv, mv = T.define_vgg(0), M.define_vgg(0)
    for a, b in zip(mv(Tensor(x), (3, 8, 15)), tv(torch.from_numpy(x), (3, 8, 15)), strict=True):
        assert err(a.asnumpy(), b.detach().numpy()) <= VGG_RTOL


def test_vgg_reads_torchvision_weights_as_safetensors(tmp_path):
    from safetensors.torch import save_file

    tv = T.VGG16Features()
    save_file({k: v.contiguous() for k, v in tv.state_dict().items()}, str(tmp_path / "vgg.safetensors"))
    mv = M.define_vgg(0, tmp_path / "vgg.safetensors")
    assert np.array_equal(dict(mv.parameters_and_names())["features.14.weight"].asnumpy(),
                          tv.features[14].weight.detach().numpy())
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(M.WeightsError, match="bad.safetensors"):
        M.define_vgg(0, tmp_path / "bad.safetensors")


def test_singan_ms_never_imports_torch(tmp_path):
    """Build, run and train-step singan_ms in a process where `import torch` raises."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.') or name == 'torchvision':\n"
        "            raise ImportError('torch is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import warnings; warnings.simplefilter('ignore')\n"
        "import numpy as np\n"
        "from singan_ms.device import setup; setup('CPU', 'graph')\n"
        "import singan_ms, singan_ms.networks, singan_ms.losses, singan_ms.model, singan_ms.train\n"
        "import singan_ms.dehaze, singan_ms.__main__\n"
        "from singan_common.config import ModelConfig, TrainConfig\n"
        "cfg = ModelConfig(ngf=8, ndf=8, n_blocks=1, nce_layers=(0, 4), netF_nc=8, num_patches=8,"
        " mmd_num_samples=8)\n"
        "m = singan_ms.model.SinGANDehazeModel(cfg, TrainConfig(crop_size=32, load_size=32))\n"
        "x = np.zeros((1, 3, 32, 32), np.float32)\n"
        "print(m.optimize(x, x, singan_ms.model.draws_for(cfg, 0, 0, 1, 32, 32))['loss_G'])\n"
        "assert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "GLOG_v": "3"})
    assert r.returncode == 0, r.stderr[-3000:]


def test_device_setup_restores_onednn_env(monkeypatch):
    """setup() latches MindSpore's ISA cap and leaves the environment as the user had it."""
    assert "ONEDNN_MAX_CPU_ISA" not in os.environ or os.environ["ONEDNN_MAX_CPU_ISA"]
    from singan_ms import device

    with pytest.raises(device.DeviceError, match="device.py"):
        device.setup("TPU")
    assert device.normalise_device("ascend") == "Ascend"
