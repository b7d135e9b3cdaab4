"""The four SinGAN-Dehaze losses in MindSpore: LSGAN, perturbed PatchNCE, weighted-L1 perceptual, MMD.

Mirrors singan_torch/losses.py. Random draws (patch ids, negative perturbation noise, MMD sample positions) are
arguments, never drawn here, so both frameworks compute the same numbers from singan_common.rng's draws.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from singan_common.config import ModelConfig
from singan_ms import native
from singan_ms.networks import VGG16Features


class GANLoss(nn.Cell):
    """LSGAN: mean squared error to 1 (real) or 0 (fake)."""

    def construct(self, prediction: Tensor, target_is_real: bool) -> Tensor:
        target = 1.0 if target_is_real else 0.0
        return ops.square(prediction - target).mean()


class PatchNCELoss(nn.Cell):
    """CUT's PatchNCE with negatives from the same image, their logits perturbed (Eq. 2 of the paper).

    'uniform' multiplies each negative logit by (1 + u), u ~ U(-s, s) (the thesis port); 'gaussian' adds
    s * N(0, 1) to it (the paper's wording); the masked diagonal is never perturbed."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.nce_T, self.neg_perturb = cfg.nce_T, cfg.neg_perturb

    def construct(self, feat_q: Tensor, feat_k: Tensor, batch_size: int, neg_noise: Tensor | None) -> Tensor:
        """Per-patch loss, shape (B * P,). feat_q / feat_k: (B * P, C), L2-normalised; keys are detached."""
        dim = feat_q.shape[1]
        feat_k = ops.stop_gradient(feat_k)
        l_pos = (feat_q * feat_k).sum(axis=1, keepdims=True)
        q = feat_q.reshape(batch_size, -1, dim)
        k = feat_k.reshape(batch_size, -1, dim)
        npatches = q.shape[1]
        l_neg = ops.bmm(q, k.transpose(0, 2, 1))
        if neg_noise is not None:
            if self.neg_perturb == "uniform":
                l_neg = l_neg * (1.0 + neg_noise)
            else:
                l_neg = l_neg + neg_noise
        diagonal = ops.eye(npatches, npatches, ms.bool_).expand_dims(0)
        l_neg = ops.masked_fill(l_neg, diagonal, -10.0).reshape(-1, npatches)
        logits = ops.cat((l_pos, l_neg), axis=1) / self.nce_T
        # Cross-entropy against class 0, written as torch computes it: logsumexp over the row minus logit 0.
        return -ops.log_softmax(logits, axis=1)[:, 0]


class L1Mean(nn.Cell):
    """mean |pred - target|, differentiated for pred only (the target is a detached feature map). On CPU by
    NativeL1Mean when singan_ms.native's kernels are available: MindSpore's ReduceMean and its Abs gradient's Sign
    took 50 ms of the train step on VGG16's feature maps, torch 3."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = NativeL1Mean() if native.library() is not None else None

    def construct(self, pred: Tensor, target: Tensor) -> Tensor:
        if self.kernel is None:
            return ops.abs(pred - target).mean()
        return self.kernel(pred, target)


class NativeL1Mean(nn.Cell):
    """mean |pred - target| by singan_ms.native's kernels: the differences in float as torch's, their sum in
    double, rounded once; the gradient is torch's sign(pred - target) * (dout / n) exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.forward_kernel = native.custom("L1MeanFwd", out_shape=lambda a, b: [], out_dtype=lambda a, b: a)
        self.backward_kernel = native.custom("L1MeanBwd", out_shape=lambda a, b, g: a, out_dtype=lambda a, b, g: a)

    def construct(self, pred: Tensor, target: Tensor) -> Tensor:
        return self.forward_kernel(pred, target)

    def bprop(self, pred: Tensor, target: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor, Tensor]:
        return self.backward_kernel(pred, target, dout), ops.zeros_like(target)


class PerceptualLoss(nn.Cell):
    """Eq. 3: sum_i w_i * mean |phi_i(fake) - phi_i(real)| over VGG16 relu1_2, relu2_2, relu3_3."""

    def __init__(self, cfg: ModelConfig, vgg: VGG16Features) -> None:
        super().__init__()
        self.vgg = vgg
        self.layers, self.weights = tuple(cfg.perceptual_layers), tuple(cfg.perceptual_weights)
        self.l1 = L1Mean()

    def construct(self, fake: Tensor, real: Tensor) -> Tensor:
        target = self.vgg(ops.stop_gradient(real), self.layers)
        pred = self.vgg(fake, self.layers)
        loss = ops.zeros((), fake.dtype)
        for i in range(len(self.weights)):
            loss = loss + self.weights[i] * self.l1(pred[i], ops.stop_gradient(target[i]))
        return loss


def sample_positions(feat: Tensor, ids: Tensor) -> Tensor:
    """(B, C, H, W) -> (B * len(ids), C): feature vectors at flattened spatial positions `ids`."""
    b, c, h, w = feat.shape
    return ops.gather(feat.reshape(b, c, h * w), ids, 2).transpose(0, 2, 1).reshape(-1, c)


def gaussian_kernel_sum(source: Tensor, target: Tensor, kernel_mul: float, kernel_num: int) -> Tensor:
    """Sum of kernel_num Gaussian kernels over all pairs of [source; target], bandwidths
    base * kernel_mul**(i - kernel_num // 2) with base the mean off-diagonal squared distance (not detached)."""
    total = ops.cat((source, target), axis=0)
    n = total.shape[0]
    sq = (total * total).sum(axis=1, keepdims=True)
    dist = ops.clamp(sq + sq.T - 2.0 * ops.matmul(total, total.T), min=0.0)
    bandwidth = dist.sum() / (n * n - n)
    bandwidth = bandwidth / (kernel_mul ** (kernel_num // 2))
    k = ops.exp(-dist / (bandwidth * kernel_mul**0))
    for i in range(1, kernel_num):
        k = k + ops.exp(-dist / (bandwidth * kernel_mul**i))
    return k


class MMDLoss(nn.Cell):
    """Eq. 4 with a multi-bandwidth Gaussian kernel; source and target have the same sample count."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.kernel_mul, self.kernel_num = cfg.mmd_kernel_mul, cfg.mmd_kernel_num

    def construct(self, source: Tensor, target: Tensor) -> Tensor:
        n = source.shape[0]
        if target.shape[0] != n:
            raise ValueError(f"MMD needs equal sample counts, got {n} and {target.shape[0]}")
        k = gaussian_kernel_sum(source, target, self.kernel_mul, self.kernel_num)
        return (k[:n, :n] + k[n:, n:] - k[:n, n:] - k[n:, :n]).mean()


def to_tensor(array: np.ndarray) -> Tensor:
    return Tensor(np.ascontiguousarray(array))
