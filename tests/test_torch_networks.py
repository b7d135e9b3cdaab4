"""singan_torch networks: CUT's key names and shapes, output sizes, seeded initialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from singan_common import architecture as arch
from singan_common.checkpoints import infer_generator_config
from singan_common.config import ModelConfig
from singan_torch.networks import (
    GaussianHighPass,
    define_D,
    define_F,
    define_G,
    define_vgg,
)

# CUT's resnet_9blocks / basic D / mlp_sample F (ngf = ndf = 64, instance norm), written out by hand from
# CUT's models/networks.py so that a change in our layer plan cannot silently redefine "CUT's keys".
BLOCK = {"conv_block.1.weight": (256, 256, 3, 3), "conv_block.1.bias": (256,),
         "conv_block.5.weight": (256, 256, 3, 3), "conv_block.5.bias": (256,)}


def _blocks(first: int) -> dict[str, tuple[int, ...]]:
    return {f"model.{first + i}.{k}": v for i in range(9) for k, v in BLOCK.items()}


CUT_G_STRIDE2 = {
    "model.1.weight": (64, 3, 7, 7), "model.1.bias": (64,),
    "model.4.weight": (128, 64, 3, 3), "model.4.bias": (128,),
    "model.7.weight": (256, 128, 3, 3), "model.7.bias": (256,),
    **_blocks(10),
    "model.19.weight": (256, 128, 3, 3), "model.19.bias": (128,),  # ConvTranspose2d: (in, out, kh, kw)
    "model.22.weight": (128, 64, 3, 3), "model.22.bias": (64,),
    "model.26.weight": (3, 64, 7, 7), "model.26.bias": (3,),
}
CUT_G_ANTIALIAS = {
    "model.1.weight": (64, 3, 7, 7), "model.1.bias": (64,),
    "model.4.weight": (128, 64, 3, 3), "model.4.bias": (128,), "model.7.filt": (128, 1, 3, 3),
    "model.8.weight": (256, 128, 3, 3), "model.8.bias": (256,), "model.11.filt": (256, 1, 3, 3),
    **_blocks(12),
    "model.21.filt": (256, 1, 4, 4), "model.22.weight": (128, 256, 3, 3), "model.22.bias": (128,),
    "model.25.filt": (128, 1, 4, 4), "model.26.weight": (64, 128, 3, 3), "model.26.bias": (64,),
    "model.30.weight": (3, 64, 7, 7), "model.30.bias": (3,),
}
CUT_D_STRIDE2 = {
    "model.0.weight": (64, 3, 4, 4), "model.0.bias": (64,),
    "model.2.weight": (128, 64, 4, 4), "model.2.bias": (128,),
    "model.5.weight": (256, 128, 4, 4), "model.5.bias": (256,),
    "model.8.weight": (512, 256, 4, 4), "model.8.bias": (512,),
    "model.11.weight": (1, 512, 4, 4), "model.11.bias": (1,),
}
CUT_D_ANTIALIAS = {
    "model.0.weight": (64, 3, 4, 4), "model.0.bias": (64,), "model.2.filt": (64, 1, 3, 3),
    "model.3.weight": (128, 64, 4, 4), "model.3.bias": (128,), "model.6.filt": (128, 1, 3, 3),
    "model.7.weight": (256, 128, 4, 4), "model.7.bias": (256,), "model.10.filt": (256, 1, 3, 3),
    "model.11.weight": (512, 256, 4, 4), "model.11.bias": (512,),
    "model.14.weight": (1, 512, 4, 4), "model.14.bias": (1,),
}
CUT_F = {f"mlp_{i}.{j}.{p}": shape
         for i, c in enumerate((3, 128, 256, 256, 256))
         for j, p, shape in ((0, "weight", (256, c)), (0, "bias", (256,)), (2, "weight", (256, 256)),
                             (2, "bias", (256,)))}


def shapes(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.mark.parametrize(("variant", "g_keys", "d_keys"), [("stride2", CUT_G_STRIDE2, CUT_D_STRIDE2),
                                                           ("antialias", CUT_G_ANTIALIAS, CUT_D_ANTIALIAS)])
def test_state_dicts_equal_cuts(variant, g_keys, d_keys):
    cfg = ModelConfig(variant=variant)
    assert shapes(define_G(cfg, 0)) == g_keys
    assert shapes(define_D(cfg, 0)) == d_keys
    assert shapes(define_F(cfg, 0)) == CUT_F


@pytest.mark.parametrize("variant", ["stride2", "antialias"])
def test_cut_checkpoint_loads_strict(variant, tmp_path):
    """A file with exactly CUT's keys (including antialias `filt` buffers) loads with strict=True."""
    cfg = ModelConfig(variant=variant)
    g_keys = CUT_G_STRIDE2 if variant == "stride2" else CUT_G_ANTIALIAS
    state = {k: torch.randn(v) for k, v in g_keys.items()}
    torch.save(state, tmp_path / "latest_net_G.pth")
    net = define_G(cfg, 1)
    net.load_state_dict(torch.load(tmp_path / "latest_net_G.pth", weights_only=True), strict=True)
    assert infer_generator_config({k: tuple(v) for k, v in g_keys.items()}, "x") == cfg


@pytest.mark.parametrize("variant", ["stride2", "antialias"])
@pytest.mark.parametrize(("h", "w"), [(64, 64), (48, 80), (66, 70), (37, 53)])
def test_generator_output_sizes(variant, h, w):
    """Output size follows CUT's arithmetic (equal to the input for multiples of 4), features as planned."""
    cfg = ModelConfig(variant=variant, ngf=8, n_blocks=2, nce_layers=(0, 4, 8))
    net = define_G(cfg, 0)
    x = torch.rand(2, 3, h, w) * 2 - 1
    out, feats = net.forward_with_features(x, cfg.nce_layers)
    assert tuple(out.shape[2:]) == arch.output_size(cfg, h, w)
    if h % 4 == 0 and w % 4 == 0:
        assert tuple(out.shape[2:]) == (h, w)
    planned = arch.feature_shapes(cfg, h, w)
    for i, f in zip(cfg.nce_layers, feats):
        assert tuple(f.shape[1:]) == planned[i]
    assert out.abs().max() <= 1.0
    enc = net.encode(x)
    assert tuple(enc.shape[1:]) == planned[cfg.encoder_end() - 1]
    d = define_D(cfg, 0)(out)
    assert d.shape[0] == 2 and d.shape[1] == 1


def test_same_seed_same_weights_different_seed_different():
    cfg = ModelConfig(ngf=8, n_blocks=2)
    a, b, c = define_G(cfg, 3), define_G(cfg, 3), define_G(cfg, 4)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
        if k.endswith("weight"):
            assert not torch.equal(va, vc), k


def test_init_statistics_follow_cut():
    """xavier-normal gain 0.02 for convs, zero biases, BatchNorm weight N(1, 0.02)."""
    cfg = ModelConfig(norm="batch")
    g = define_G(cfg, 0)
    w = g.model[1].weight.detach().numpy()
    fan = (3 + 64) * 49
    assert np.std(w) == pytest.approx(0.02 * np.sqrt(2.0 / fan), rel=0.05)
    assert g.model[1].bias is None  # batch norm: CUT's convs have no bias
    bn = g.model[2]
    assert np.mean(bn.weight.detach().numpy()) == pytest.approx(1.0, abs=0.01)
    assert np.std(bn.weight.detach().numpy()) == pytest.approx(0.02, rel=0.3)
    assert bn.momentum == 0.1
    assert torch.count_nonzero(bn.bias) == 0


def test_vgg_features_layout_and_frozen():
    with pytest.warns(UserWarning, match="RANDOM VGG16"):
        vgg = define_vgg(0)
    keys = list(vgg.state_dict())
    assert keys == [f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14) for p in ("weight", "bias")]
    feats = vgg(torch.zeros(1, 3, 32, 32), (3, 8, 15))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8)]
    assert not any(p.requires_grad for p in vgg.parameters())


def test_vgg_loads_torchvision_state_dict(tmp_path):
    import torchvision

    full = torchvision.models.vgg16(weights=None).state_dict()
    torch.save(full, tmp_path / "vgg16.pth")
    vgg = define_vgg(0, tmp_path / "vgg16.pth")
    assert torch.equal(vgg.features[14].weight, full["features.14.weight"])


def test_vgg_bad_file_is_named(tmp_path):
    from singan_torch.networks import WeightsError

    bad = tmp_path / "vgg.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="vgg.pth"):
        define_vgg(0, bad)
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match="missing"):
        define_vgg(0, bad)


def test_highpass_removes_constant_and_keeps_edges():
    hp = GaussianHighPass(3, 11, 2.0)
    flat = torch.full((1, 3, 32, 32), 0.3)
    assert hp(flat).abs().max() < 1e-6
    edge = torch.zeros(1, 3, 32, 32)
    edge[..., 16:] = 1.0
    assert hp(edge).abs().max() > 0.2
