"""SinGAN-Dehaze in PyTorch: the networks and losses wired into CUT's discriminator and generator steps.

One `SinGANDehazeModel` owns G, D, F, the frozen VGG16, the high-pass filter and the three Adam optimisers.
`optimize(batch, draws)` is one training iteration in CUT's order: D step on the detached fake, then the
G + F step on L = lambda_GAN L_adv + lambda_NCE L_cl + lambda_perceptual L_p + lambda_MMD L_mmd.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from singan_common import architecture as arch
from singan_common.config import ModelConfig, TrainConfig, lr_factor
from singan_common.rng import StepDraws, step_draws
from singan_torch.losses import GANLoss, MMDLoss, PatchNCELoss, PerceptualLoss, sample_positions
from singan_torch.networks import GaussianHighPass, define_D, define_F, define_G, define_vgg

LOSS_NAMES = ("loss_D", "loss_D_real", "loss_D_fake", "loss_G", "loss_G_GAN", "loss_NCE", "loss_perceptual",
              "loss_MMD")


@dataclass
class GeneratorOutputs:
    fake: torch.Tensor
    loss_G: torch.Tensor
    loss_G_GAN: torch.Tensor
    loss_NCE: torch.Tensor
    loss_perceptual: torch.Tensor
    loss_MMD: torch.Tensor


def draws_for(cfg: ModelConfig, seed: int, step: int, batch_size: int, height: int, width: int) -> StepDraws:
    """The numpy draws of generator step `step` for a batch of height x width crops."""
    return step_draws(seed, step, batch_size, arch.nce_positions(cfg, height, width),
                      arch.encoder_positions(cfg, height, width), cfg.num_patches, cfg.neg_perturb,
                      cfg.neg_perturb_strength, cfg.mmd_num_samples)


class ForwardWithFeatures(nn.Module):
    """G.forward_with_features as a module's forward: DistributedDataParallel only intercepts forward()."""

    def __init__(self, netG: nn.Module, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.netG, self.layers = netG, layers

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.netG.forward_with_features(x, self.layers)


class SinGANDehazeModel:
    """G, D, F and the losses; `device` is a torch device string ('cpu', 'cuda')."""

    def __init__(self, cfg: ModelConfig, train: TrainConfig, vgg_weights: str | Path | None = None,
                 device: str = "cpu") -> None:
        self.cfg, self.train_cfg, self.device = cfg, train, torch.device(device)
        self.netG = define_G(cfg, train.seed).to(self.device)
        self.netD = define_D(cfg, train.seed).to(self.device)
        self.netF = define_F(cfg, train.seed).to(self.device)
        self.vgg = define_vgg(train.seed, vgg_weights).to(self.device)
        self.highpass = GaussianHighPass(cfg.output_nc, cfg.highpass_kernel_size, cfg.highpass_sigma).to(self.device)
        self.criterionGAN = GANLoss()
        self.criterionNCE = PatchNCELoss(cfg)
        self.criterionPerceptual = PerceptualLoss(cfg, self.vgg)
        self.criterionMMD = MMDLoss(cfg)
        betas = (train.beta1, train.beta2)
        self.optimizer_G = torch.optim.Adam(self.netG.parameters(), lr=train.lr, betas=betas)
        self.optimizer_D = torch.optim.Adam(self.netD.parameters(), lr=train.lr, betas=betas)
        self.optimizer_F = torch.optim.Adam(self.netF.parameters(), lr=train.lr, betas=betas)
        # The one call per backward of each net that a data-parallel wrapper carries (wrap_for_training);
        # in a single process they run the bare nets.
        self.step_G: nn.Module = ForwardWithFeatures(self.netG, tuple(cfg.nce_layers))
        self.step_D: nn.Module = self.netD
        self.step_F: nn.Module = self.netF

    def wrap_for_training(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Route one forward per backward of G, D and F through `wrap` (DistributedDataParallel).

        DDP arms its gradient all-reduce in the wrapped forward for the next backward. G, D and F are each
        called more than once per backward; every other call uses the bare module, whose parameters are the
        same tensors, so autograd sums all contributions into one .grad before DDP's hook reduces it:
        G's training pass goes through DDP, its encoders on the fake and on the high-pass maps do not; D on the
        fake goes through DDP in the D step, D on the real image does not, and neither does the G step's call
        (D is frozen there); F on the queries goes through DDP, F on the keys (detached later) does not."""
        self.step_G = wrap(self.step_G)
        self.step_D = wrap(self.netD)
        self.step_F = wrap(self.netF)

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.optimizer_G, "D": self.optimizer_D, "F": self.optimizer_F}

    @property
    def nets(self) -> dict[str, torch.nn.Module]:
        return {"G": self.netG, "D": self.netD, "F": self.netF}

    def set_epoch_lr(self, epoch: int) -> float:
        """CUT's linear schedule for 1-based `epoch`; returns the learning rate set."""
        lr = self.train_cfg.lr * lr_factor(epoch, self.train_cfg)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        return lr

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def discriminator_loss(self, fake: torch.Tensor, real_B: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loss_fake = self.criterionGAN(self.step_D(fake.detach()), False)
        loss_real = self.criterionGAN(self.netD(real_B), True)
        return (loss_fake + loss_real) * 0.5, loss_real, loss_fake

    def nce_loss(self, feat_q: list[torch.Tensor], feat_k: list[torch.Tensor], draws: StepDraws,
                 batch_size: int) -> torch.Tensor:
        ids = [self._tensor(i) for i in draws.patch_ids]
        q_pool = self.step_F(feat_q, ids)
        k_pool = self.netF(feat_k, ids)
        total = q_pool[0].new_zeros(())
        for q, k, noise in zip(q_pool, k_pool, draws.neg_noise, strict=True):
            noise_t = None if noise is None else self._tensor(noise)
            total = total + self.criterionNCE(q, k, batch_size, noise_t).mean()
        return total / len(q_pool)

    def mmd_loss(self, fake: torch.Tensor, real_B: torch.Tensor, draws: StepDraws) -> torch.Tensor:
        """MMD per (dehazed, clear) pair of the batch, averaged: a batch of B then equals B data-parallel
        processes with batch 1 (pooling samples across the batch would couple the images)."""
        enc_fake = self.netG.encode(self.highpass(fake))
        enc_real = self.netG.encode(self.highpass(real_B))
        ids_fake, ids_real = self._tensor(draws.mmd_ids_fake), self._tensor(draws.mmd_ids_real)
        total = enc_fake.new_zeros(())
        for b in range(enc_fake.shape[0]):
            total = total + self.criterionMMD(sample_positions(enc_fake[b: b + 1], ids_fake),
                                              sample_positions(enc_real[b: b + 1], ids_real))
        return total / enc_fake.shape[0]

    def forward(self, real_A: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """G(real_A) and the NCE-layer features of real_A (the keys), from one pass."""
        return self.step_G(real_A)

    def generator_loss(self, fake: torch.Tensor, feat_k: list[torch.Tensor], real_A: torch.Tensor,
                       real_B: torch.Tensor, draws: StepDraws) -> GeneratorOutputs:
        """All four generator losses (weighted) for a forward pass's fake and keys."""
        cfg = self.cfg
        loss_gan = self.criterionGAN(self.netD(fake), True) * cfg.lambda_GAN
        feat_q = self.netG.encode_features(fake, tuple(cfg.nce_layers))
        loss_nce = self.nce_loss(feat_q, feat_k, draws, real_A.shape[0]) * cfg.lambda_NCE
        loss_p = self.criterionPerceptual(fake, real_A) * cfg.lambda_perceptual
        loss_mmd = self.mmd_loss(fake, real_B, draws) * cfg.lambda_MMD
        total = loss_gan + loss_nce + loss_p + loss_mmd
        return GeneratorOutputs(fake, total, loss_gan, loss_nce, loss_p, loss_mmd)

    def optimize(self, hazy: np.ndarray, clear: np.ndarray, draws: StepDraws) -> dict[str, float]:
        """One CUT iteration: forward, D step on the detached fake, then the G + F step."""
        for net in self.nets.values():
            net.train()
        real_A, real_B = self._tensor(hazy), self._tensor(clear)
        fake, feat_k = self.forward(real_A)
        self.netD.requires_grad_(True)
        self.optimizer_D.zero_grad(set_to_none=True)
        loss_D, loss_D_real, loss_D_fake = self.discriminator_loss(fake, real_B)
        loss_D.backward()
        self.optimizer_D.step()

        self.netD.requires_grad_(False)
        self.optimizer_G.zero_grad(set_to_none=True)
        self.optimizer_F.zero_grad(set_to_none=True)
        out = self.generator_loss(fake, feat_k, real_A, real_B, draws)
        out.loss_G.backward()
        self.optimizer_G.step()
        self.optimizer_F.step()
        values = {"loss_D": loss_D, "loss_D_real": loss_D_real, "loss_D_fake": loss_D_fake, "loss_G": out.loss_G,
                  "loss_G_GAN": out.loss_G_GAN, "loss_NCE": out.loss_NCE, "loss_perceptual": out.loss_perceptual,
                  "loss_MMD": out.loss_MMD}
        return {k: float(v.detach()) for k, v in values.items()}

    @torch.no_grad()
    def dehaze(self, chw: np.ndarray) -> np.ndarray:
        """G on one (3, H, W) [-1, 1] image whose sides are multiples of 4; returns (3, H, W) [-1, 1]."""
        self.netG.eval()
        return self.netG(self._tensor(chw[None]))[0].cpu().numpy()
