"""singan_torch losses on inputs whose answer is known, and the generator step's gradients."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from singan_common.config import ModelConfig, TrainConfig
from singan_common.rng import draw_neg_noise, generator
from singan_torch.losses import GANLoss, MMDLoss, PatchNCELoss, PerceptualLoss, gaussian_kernel_sum
from singan_torch.model import SinGANDehazeModel, draws_for
from singan_torch.networks import define_vgg

SMALL = ModelConfig(ngf=8, ndf=8, n_blocks=2, nce_layers=(0, 4, 8, 10), netF_nc=32, num_patches=32,
                    mmd_num_samples=32)


def quiet_vgg():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return define_vgg(0)


def test_lsgan_values():
    crit = GANLoss()
    pred = torch.tensor([[0.0, 0.5], [1.0, 2.0]])
    assert crit(pred, True).item() == pytest.approx((1 + 0.25 + 0 + 1) / 4)
    assert crit(pred, False).item() == pytest.approx((0 + 0.25 + 1 + 4) / 4)


def test_mmd_zero_for_identical_sets_and_grows_with_shift():
    x = torch.from_numpy(generator(0, 99, 0).standard_normal((64, 16)).astype(np.float32))
    crit = MMDLoss(ModelConfig())
    assert abs(crit(x, x.clone()).item()) < 1e-6
    values = [crit(x, x + s).item() for s in (0.1, 0.5, 1.0, 2.0)]
    assert all(b > a for a, b in zip(values, values[1:])), values
    assert values[0] > 0


def test_mmd_kernel_bandwidths():
    """Five bandwidths base * 2**(i - 2) around the mean off-diagonal squared distance (checked by hand)."""
    a, b = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # d = 1 off the diagonal, base = 2 * 1 / 2 = 1 -> bandwidths 1/4, 1/2, 1, 2, 4
    k = gaussian_kernel_sum(a, b, 2.0, 5)
    expected = sum(np.exp(-1.0 / bw) for bw in (0.25, 0.5, 1.0, 2.0, 4.0))
    assert k[0, 1].item() == pytest.approx(expected, rel=1e-6)
    assert k[0, 0].item() == pytest.approx(5.0)


def test_mmd_carries_gradient_through_bandwidth():
    x = torch.randn(8, 4, requires_grad=True)
    y = torch.randn(8, 4) + 1.0
    MMDLoss(ModelConfig())(x, y).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def _nce_inputs(shuffle: bool, batch: int = 2, patches: int = 16, dim: int = 8):
    g = generator(0, 98, 0)
    k = F.normalize(torch.from_numpy(g.standard_normal((batch * patches, dim)).astype(np.float32)), dim=1)
    q = k.clone()
    if shuffle:
        q = q[torch.from_numpy(g.permutation(batch * patches))]
    return q, k


@pytest.mark.parametrize("mode", ["none", "uniform", "gaussian"])
def test_patchnce_lower_for_matched_patches(mode):
    cfg = ModelConfig(neg_perturb=mode)
    crit = PatchNCELoss(cfg)
    noise = draw_neg_noise(generator(0, 97, 0), mode, 0.3, (2, 16, 16))
    noise_t = None if noise is None else torch.from_numpy(noise)
    matched = crit(*_nce_inputs(False), 2, noise_t).mean().item()
    shuffled = crit(*_nce_inputs(True), 2, noise_t).mean().item()
    assert matched < shuffled
    assert matched > 0


def test_patchnce_matches_cross_entropy_by_hand():
    """One image, two patches, no perturbation: logits [q.k+, q.k-] / T with the diagonal masked to -10."""
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    loss = PatchNCELoss(ModelConfig(neg_perturb="none"))(q, k, 1, None)
    t = 0.07
    row0 = np.array([1.0, -10.0, 0.6]) / t  # pos, masked self, q0.k1
    row1 = np.array([0.8, 0.0, -10.0]) / t
    expected = [np.log(np.exp(r).sum()) - r[0] for r in (row0, row1)]
    # atol: fp32 log-sum-exp of logits near 14 rounds at ~1e-7 absolute, the size of the second loss.
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_patchnce_uniform_perturbation_scales_negatives():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    noise = torch.full((1, 2, 2), 0.5)
    loss = PatchNCELoss(ModelConfig(neg_perturb="uniform"))(q, k, 1, noise)
    t = 0.07
    row0 = np.array([1.0, -10.0, 0.6 * 1.5]) / t
    assert loss[0].item() == pytest.approx(np.log(np.exp(row0).sum()) - row0[0], rel=1e-5)


def test_perceptual_zero_for_identical_images_positive_otherwise():
    crit = PerceptualLoss(ModelConfig(), quiet_vgg())
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert crit(x, x.clone()).item() == 0.0
    assert crit(x, x.flip(3)).item() > 0.0


def test_every_g_and_f_parameter_gets_a_gradient():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SinGANDehazeModel(SMALL, TrainConfig(seed=0))
    g = generator(0, 96, 0)
    real_a = torch.from_numpy(g.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    real_b = torch.from_numpy(g.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32))
    draws = draws_for(SMALL, 0, 0, 1, 32, 32)
    fake, feat_k = model.forward(real_a)
    out = model.generator_loss(fake, feat_k, real_a, real_b, draws)
    out.loss_G.backward()
    for name, net in (("G", model.netG), ("F", model.netF)):
        for pname, p in net.named_parameters():
            assert p.grad is not None, f"{name}.{pname} has no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname}"
            assert p.grad.abs().sum() > 0, f"{name}.{pname} gradient is exactly zero"
    for loss in (out.loss_G_GAN, out.loss_NCE, out.loss_perceptual, out.loss_MMD):
        assert torch.isfinite(loss) and loss.item() > 0
