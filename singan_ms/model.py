"""SinGAN-Dehaze in MindSpore: the networks and losses wired into CUT's discriminator and generator steps.

Mirrors singan_torch/model.py. One `SinGANDehazeModel` owns G, D, F, the frozen VGG16, the high-pass filter and
the three torch-exact Adam optimisers. `optimize(batch, draws)` is one training iteration in CUT's order: D step
on the detached fake, then the G + F step on
L = lambda_GAN L_adv + lambda_NCE L_cl + lambda_perceptual L_p + lambda_MMD L_mmd.

The whole iteration (both gradient computations and all three optimiser updates) is one compiled graph
(`TrainStep`, run through mindspore.jit); G's first forward pass is differentiated with mindspore.vjp and reused
by both steps, as torch's autograd reuses it. MindSpore's pullback recomputes that forward unless nothing is
written between the two (it then merges them), so D's update is computed first, handed to the G step as values
(NLayerDiscriminator.construct_with) and written after G's pullback: G runs forward once per iteration in
GRAPH_MODE. With BatchNorm in D (its forward writes running statistics) D is updated in place before the G step
and the forward runs twice; the rerun would move G's BatchNorm running statistics a second time, so the step
keeps them from before the pullback (TrainStep.g_running_stats; tested against torch's). Under msrun
(singan_ms.distributed) the step also averages each network's gradients over the ranks before its update,
inside the same graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from singan_common import architecture as arch
from singan_common.config import ModelConfig, TrainConfig, lr_factor
from singan_common.rng import StepDraws, step_draws
from singan_ms import distributed
from singan_ms.losses import GANLoss, MMDLoss, PatchNCELoss, PerceptualLoss, sample_positions, to_tensor
from singan_ms.networks import GaussianHighPass, define_D, define_F, define_G, define_vgg
from singan_ms.optim import Adam

LOSS_NAMES = ("loss_D", "loss_D_real", "loss_D_fake", "loss_G", "loss_G_GAN", "loss_NCE", "loss_perceptual",
              "loss_MMD")


@dataclass
class GeneratorOutputs:
    fake: Tensor
    loss_G: Tensor
    loss_G_GAN: Tensor
    loss_NCE: Tensor
    loss_perceptual: Tensor
    loss_MMD: Tensor


def draws_for(cfg: ModelConfig, seed: int, step: int, batch_size: int, height: int, width: int) -> StepDraws:
    """The numpy draws of generator step `step` for a batch of height x width crops."""
    return step_draws(seed, step, batch_size, arch.nce_positions(cfg, height, width),
                      arch.encoder_positions(cfg, height, width), cfg.num_patches, cfg.neg_perturb,
                      cfg.neg_perturb_strength, cfg.mmd_num_samples)


class Losses(nn.Cell):
    """The loss functions of both steps over the model's networks (a Cell so graph mode can compile them)."""

    def __init__(self, model: SinGANDehazeModel) -> None:
        # auto_prefix off: holding the networks must not rename their Parameters (checkpoints use the names).
        super().__init__(auto_prefix=False)
        self.cfg = model.cfg
        self.netG, self.netD, self.netF = model.netG, model.netD, model.netF
        self.highpass = model.highpass
        self.criterionGAN = model.criterionGAN
        self.criterionNCE = model.criterionNCE
        self.criterionPerceptual = model.criterionPerceptual
        self.criterionMMD = model.criterionMMD
        self.nce_layers = tuple(model.cfg.nce_layers)
        self.use_noise = model.cfg.neg_perturb != "none"

    def discriminator_loss(self, fake: Tensor, real_B: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        loss_fake = self.criterionGAN(self.netD(ops.stop_gradient(fake)), False)
        loss_real = self.criterionGAN(self.netD(real_B), True)
        return (loss_fake + loss_real) * 0.5, loss_real, loss_fake

    def nce_loss(self, feat_q: list[Tensor], feat_k: list[Tensor], patch_ids: tuple[Tensor, ...],
                 neg_noise: tuple[Tensor, ...], batch_size: int) -> Tensor:
        q_pool = self.netF(feat_q, patch_ids)
        k_pool = self.netF(feat_k, patch_ids)
        total = ops.zeros((), ms.float32)
        for i in range(len(q_pool)):
            noise = neg_noise[i] if self.use_noise else None
            total = total + self.criterionNCE(q_pool[i], k_pool[i], batch_size, noise).mean()
        return total / len(q_pool)

    def mmd_loss(self, fake: Tensor, real_B: Tensor, ids_fake: Tensor, ids_real: Tensor) -> Tensor:
        """MMD per (dehazed, clear) pair of the batch, averaged (a batch of B equals B processes of batch 1)."""
        enc_fake = self.netG.encode(self.highpass(fake))
        enc_real = self.netG.encode(self.highpass(real_B))
        total = ops.zeros((), ms.float32)
        batch = enc_fake.shape[0]
        for b in range(batch):
            total = total + self.criterionMMD(sample_positions(enc_fake[b: b + 1], ids_fake),
                                              sample_positions(enc_real[b: b + 1], ids_real))
        return total / batch

    def generator_loss(self, fake: Tensor, feat_k: list[Tensor], real_A: Tensor, real_B: Tensor,
                       patch_ids: tuple[Tensor, ...], neg_noise: tuple[Tensor, ...], ids_fake: Tensor,
                       ids_real: Tensor, d_weights: tuple[Tensor, ...] | None = None) -> tuple[Tensor, ...]:
        """(total, gan, nce, perceptual, mmd), each weighted; D with `d_weights` in place of its Parameters when
        given (NLayerDiscriminator.construct_with)."""
        cfg = self.cfg
        pred_fake = self.netD(fake) if d_weights is None else self.netD.construct_with(fake, d_weights)
        loss_gan = self.criterionGAN(pred_fake, True) * cfg.lambda_GAN
        feat_q = self.netG.encode_features(fake, self.nce_layers)
        loss_nce = self.nce_loss(feat_q, feat_k, patch_ids, neg_noise, real_A.shape[0]) * cfg.lambda_NCE
        loss_p = self.criterionPerceptual(fake, real_A) * cfg.lambda_perceptual
        loss_mmd = self.mmd_loss(fake, real_B, ids_fake, ids_real) * cfg.lambda_MMD
        total = loss_gan + loss_nce + loss_p + loss_mmd
        return total, loss_gan, loss_nce, loss_p, loss_mmd


class TrainStep(nn.Cell):
    """One CUT iteration as a single graph: forward, D step on the detached fake, then the G + F step."""

    def __init__(self, model: SinGANDehazeModel) -> None:
        # auto_prefix off: holding the networks must not rename their Parameters (checkpoints use the names).
        super().__init__(auto_prefix=False)
        self.losses = Losses(model)
        self.netG = model.netG
        self.optimizer_G, self.optimizer_D, self.optimizer_F = model.optimizer_G, model.optimizer_D, model.optimizer_F
        self.nce_layers = tuple(model.cfg.nce_layers)
        self.n_G = len(self.optimizer_G.parameters)
        self.grad_D = ms.value_and_grad(self.losses.discriminator_loss, None, self.optimizer_D.parameters,
                                        has_aux=True)
        # d(loss)/d(fake) (position 0) and d(loss)/d(G, F params used after the first forward pass).
        self.grad_G = ms.value_and_grad(self.losses.generator_loss, 0,
                                        self.optimizer_G.parameters + self.optimizer_F.parameters, has_aux=True)
        # Under msrun: average each gradient tuple over ranks before its optimiser (singan_ms.distributed). In a
        # single process these are None and `data_parallel` is a compile-time False, so the compiled graph is the
        # one without data parallelism.
        self.reduce_D = distributed.grad_reducer(self.optimizer_D.parameters)
        self.reduce_G = distributed.grad_reducer(self.optimizer_G.parameters)
        self.reduce_F = distributed.grad_reducer(self.optimizer_F.parameters)
        self.data_parallel = self.reduce_D is not None
        self.defer_D = model.netD.stateless
        # When MindSpore reruns G's forward for the pullback (D written in place, see construct; or PyNative's
        # ms.jit), the rerun moves G's BatchNorm running statistics once more: measured, exactly one extra
        # momentum update with G(real_A)'s batch statistics after all of torch's. So they are kept from before
        # the pullback (a no-op when nothing reruns).
        self.g_running_stats = tuple(p for _, cell in self.netG.cells_and_names() if isinstance(cell, nn.BatchNorm2d)
                                     for p in (cell.moving_mean, cell.moving_variance))

    def g_forward(self, real_A: Tensor) -> tuple[Tensor, list[Tensor]]:
        fake, feats = self.netG.forward_with_features(real_A, self.nce_layers)
        return fake, feats

    def construct(self, real_A: Tensor, real_B: Tensor, patch_ids: tuple[Tensor, ...],
                  neg_noise: tuple[Tensor, ...], ids_fake: Tensor, ids_real: Tensor) -> tuple[Tensor, ...]:
        fake, g_vjp, feat_k = ms.vjp(self.g_forward, real_A, weights=self.optimizer_G.parameters, has_aux=True)
        (loss_D, loss_D_real, loss_D_fake), grads_D = self.grad_D(fake, real_B)
        if self.data_parallel:
            grads_D = self.reduce_D(grads_D)
        feat_k = [ops.stop_gradient(f) for f in feat_k]
        if self.defer_D:
            # The G step sees D's updated weights (as torch's does) as values, and D is written only after G's
            # pullback: a write between vjp's forward and its pullback makes MindSpore run G's forward a second
            # time for the pullback (measured: 18 convolutions and 23 norms more per step, ~0.35 s at 256 px).
            d_updates = self.optimizer_D.updates(grads_D)
            d_weights = tuple(ops.stop_gradient(w) for w in d_updates[1])
            fake_g = fake
        else:
            # D's forward writes state (BatchNorm): update D in place before the G step.
            d_weights = None
            fake_g = ops.depend(fake, self.optimizer_D(grads_D))
        (loss_G, loss_gan, loss_nce, loss_p, loss_mmd), (grad_fake, grads_GF) = self.grad_G(
            fake_g, feat_k, real_A, real_B, patch_ids, neg_noise, ids_fake, ids_real, d_weights)
        kept = tuple(ops.deepcopy(p.value()) for p in self.g_running_stats)
        if kept:
            grad_fake = ops.depend(grad_fake, kept)
        _, grads_G_forward = g_vjp(grad_fake)
        grads_G = tuple(a + b for a, b in zip(grads_GF[: self.n_G], grads_G_forward))
        grads_F = grads_GF[self.n_G:]
        if self.data_parallel:
            grads_G, grads_F = self.reduce_G(grads_G), self.reduce_F(grads_F)
        done = ops.depend(self.optimizer_G(grads_G), self.optimizer_F(grads_F))
        if kept:
            restore = tuple(ops.assign(p, ops.depend(k, grads_G_forward))
                            for p, k in zip(self.g_running_stats, kept))
            done = ops.depend(done, restore)
        if self.defer_D:
            done = ops.depend(done, self.optimizer_D.apply(d_updates))
        loss_G = ops.depend(loss_G, done)
        return loss_D, loss_D_real, loss_D_fake, loss_G, loss_gan, loss_nce, loss_p, loss_mmd


class SinGANDehazeModel:
    """G, D, F and the losses; `device` is informational (singan_ms.device.setup() chose the target)."""

    def __init__(self, cfg: ModelConfig, train: TrainConfig, vgg_weights: str | Path | None = None,
                 device: str = "CPU", jit: bool = True) -> None:
        self.cfg, self.train_cfg, self.device = cfg, train, device
        self.netG = define_G(cfg, train.seed)
        self.netD = define_D(cfg, train.seed)
        self.netF = define_F(cfg, train.seed)
        self.vgg = define_vgg(train.seed, vgg_weights)
        self.highpass = GaussianHighPass(cfg.output_nc, cfg.highpass_kernel_size, cfg.highpass_sigma)
        self.criterionGAN = GANLoss()
        self.criterionNCE = PatchNCELoss(cfg)
        self.criterionPerceptual = PerceptualLoss(cfg, self.vgg)
        self.criterionMMD = MMDLoss(cfg)
        betas = (train.beta1, train.beta2)
        self.optimizer_G = Adam(self.netG.trainable_params(), lr=train.lr, betas=betas, name="optimizer_G")
        self.optimizer_D = Adam(self.netD.trainable_params(), lr=train.lr, betas=betas, name="optimizer_D")
        self.optimizer_F = Adam(self.netF.trainable_params(), lr=train.lr, betas=betas, name="optimizer_F")
        self.train_step = TrainStep(self)
        # In GRAPH_MODE calling the cell compiles it (measured 2x faster than ms.jit(construct) under PyNative);
        # under PyNative, jit=True still compiles the step, jit=False runs it op by op (for debugging).
        graph = ms.get_context("mode") == ms.GRAPH_MODE
        self._step_fn = self.train_step if graph or not jit else ms.jit(self.train_step.construct)

    @property
    def optimizers(self) -> dict[str, Adam]:
        return {"G": self.optimizer_G, "D": self.optimizer_D, "F": self.optimizer_F}

    @property
    def nets(self) -> dict[str, nn.Cell]:
        return {"G": self.netG, "D": self.netD, "F": self.netF}

    def set_epoch_lr(self, epoch: int) -> float:
        """CUT's linear schedule for 1-based `epoch`; returns the learning rate set."""
        lr = self.train_cfg.lr * lr_factor(epoch, self.train_cfg)
        for opt in self.optimizers.values():
            opt.set_lr(lr)
        return lr

    def draw_tensors(self, draws: StepDraws) -> tuple:
        noise = tuple(to_tensor(n) for n in draws.neg_noise) if self.cfg.neg_perturb != "none" else ()
        # mutable: graph mode otherwise treats a tuple argument as a constant and recompiles for every new one.
        return (ms.mutable(tuple(to_tensor(i) for i in draws.patch_ids)), ms.mutable(noise) if noise else noise,
                to_tensor(draws.mmd_ids_fake), to_tensor(draws.mmd_ids_real))

    def optimize(self, hazy: np.ndarray, clear: np.ndarray, draws: StepDraws) -> dict[str, float]:
        """One CUT iteration: forward, D step on the detached fake, then the G + F step."""
        for net in self.nets.values():
            net.set_train(True)
        values = self._step_fn(to_tensor(hazy), to_tensor(clear), *self.draw_tensors(draws))
        return {k: float(v.asnumpy()) for k, v in zip(LOSS_NAMES, values, strict=True)}

    def forward(self, real_A: Tensor) -> tuple[Tensor, list[Tensor]]:
        """G(real_A) and the NCE-layer features of real_A (the keys), from one pass."""
        return self.netG.forward_with_features(real_A, tuple(self.cfg.nce_layers))

    def generator_loss(self, fake: Tensor, feat_k: list[Tensor], real_A: Tensor, real_B: Tensor,
                       draws: StepDraws) -> GeneratorOutputs:
        """All four generator losses (weighted) for a forward pass's fake and keys (eager, for inspection)."""
        out = self.train_step.losses.generator_loss(fake, [ops.stop_gradient(f) for f in feat_k], real_A, real_B,
                                                    *self.draw_tensors(draws))
        return GeneratorOutputs(fake, *out)

    def dehaze(self, chw: np.ndarray) -> np.ndarray:
        """G on one (3, H, W) [-1, 1] image whose sides are multiples of 4; returns (3, H, W) [-1, 1]."""
        self.netG.set_train(False)
        return self.netG(to_tensor(chw[None])).asnumpy()[0]
