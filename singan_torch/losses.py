"""The four SinGAN-Dehaze losses in PyTorch: LSGAN, perturbed PatchNCE, weighted-L1 perceptual, MMD.

Random draws (patch ids, negative perturbation noise, MMD sample positions) are arguments, never drawn here,
so singan_ms computes the same numbers from the same draws (see singan_common.rng).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from singan_common.config import ModelConfig
from singan_torch.networks import VGG16Features


class GANLoss(nn.Module):
    """LSGAN: mean squared error to 1 (real) or 0 (fake)."""

    def forward(self, prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
        return F.mse_loss(prediction, target)


class PatchNCELoss(nn.Module):
    """CUT's PatchNCE with negatives from the same image, their logits perturbed (Eq. 2 of the paper).

    'uniform' multiplies each negative logit by (1 + u), u ~ U(-s, s) (the thesis port); 'gaussian' adds
    s * N(0, 1) to it (the paper's wording); the masked diagonal is never perturbed."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.nce_T, self.neg_perturb = cfg.nce_T, cfg.neg_perturb

    def forward(self, feat_q: torch.Tensor, feat_k: torch.Tensor, batch_size: int,
                neg_noise: torch.Tensor | None) -> torch.Tensor:
        """Per-patch loss, shape (B * P,). feat_q / feat_k: (B * P, C), L2-normalised; keys are detached."""
        dim = feat_q.shape[1]
        feat_k = feat_k.detach()
        l_pos = (feat_q * feat_k).sum(dim=1, keepdim=True)
        q = feat_q.view(batch_size, -1, dim)
        k = feat_k.view(batch_size, -1, dim)
        npatches = q.shape[1]
        l_neg = torch.bmm(q, k.transpose(2, 1))
        if neg_noise is not None:
            l_neg = l_neg * (1.0 + neg_noise) if self.neg_perturb == "uniform" else l_neg + neg_noise
        diagonal = torch.eye(npatches, dtype=torch.bool, device=q.device)[None]
        l_neg = l_neg.masked_fill(diagonal, -10.0).view(-1, npatches)
        logits = torch.cat((l_pos, l_neg), dim=1) / self.nce_T
        target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, target, reduction="none")


class PerceptualLoss(nn.Module):
    """Eq. 3: sum_i w_i * mean |phi_i(fake) - phi_i(real)| over VGG16 relu1_2, relu2_2, relu3_3."""

    def __init__(self, cfg: ModelConfig, vgg: VGG16Features) -> None:
        super().__init__()
        self.vgg = vgg
        self.layers, self.weights = tuple(cfg.perceptual_layers), tuple(cfg.perceptual_weights)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.vgg(real, self.layers)
        pred = self.vgg(fake, self.layers)
        loss = fake.new_zeros(())
        for w, p, t in zip(self.weights, pred, target, strict=True):
            loss = loss + w * (p - t).abs().mean()
        return loss


def sample_positions(feat: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B * len(ids), C): feature vectors at flattened spatial positions `ids`."""
    # Index before permuting so the gradient is contiguous (see networks.PatchSampleF.forward).
    return feat.flatten(2)[:, :, ids].permute(0, 2, 1).flatten(0, 1)


def gaussian_kernel_sum(source: torch.Tensor, target: torch.Tensor, kernel_mul: float,
                        kernel_num: int) -> torch.Tensor:
    """Sum of kernel_num Gaussian kernels over all pairs of [source; target], bandwidths
    base * kernel_mul**(i - kernel_num // 2) with base the mean off-diagonal squared distance.

    Unlike the widely copied transfer-learning code, the bandwidth is not detached: the loss is
    differentiated as written (docs/method.md)."""
    total = torch.cat([source, target], dim=0)
    n = total.shape[0]
    sq = (total * total).sum(dim=1, keepdim=True)
    # ||a||^2 + ||b||^2 - 2ab avoids the (n, n, C) difference tensor; clamp the rounding below zero.
    dist = (sq + sq.t() - 2.0 * total @ total.t()).clamp_min(0.0)
    bandwidth = dist.sum() / (n * n - n)
    bandwidth = bandwidth / (kernel_mul ** (kernel_num // 2))
    return sum(torch.exp(-dist / (bandwidth * kernel_mul**i)) for i in range(kernel_num))


class MMDLoss(nn.Module):
    """Eq. 4 with a multi-bandwidth Gaussian kernel; source and target have the same sample count."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kernel_mul, self.kernel_num = cfg.mmd_kernel_mul, cfg.mmd_kernel_num

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = source.shape[0]
        if target.shape[0] != n:
            raise ValueError(f"MMD needs equal sample counts, got {n} and {target.shape[0]}")
        k = gaussian_kernel_sum(source, target, self.kernel_mul, self.kernel_num)
        return (k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n]).mean()
