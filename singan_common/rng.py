"""The randomness plan: every draw that changes a weight or a loss comes from numpy, here.

Draws are counter-based: each is made by a fresh numpy Generator seeded from (seed, purpose, counters...),
never from a long-lived stream. Consequences that the rest of the project relies on:
- singan_torch and singan_ms receive bit-identical numbers for the same seed (framework RNGs are unused);
- resuming at step k needs only (seed, epoch, step), so resume is exact by construction;
- a draw does not depend on how many draws came before it (changing batch size or the loss set does
  not shift the crop offsets of the next image).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Stream identifiers: distinct purposes never share a generator.
WEIGHTS, EPOCH_ORDER, AUGMENT, PATCH_IDS, NEG_NOISE, MMD_IDS, PROBE = range(7)


def generator(seed: int, purpose: int, *counters: int) -> np.random.Generator:
    """A Generator determined only by (seed, purpose, counters)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(purpose), *map(int, counters)])))


def name_key(name: str) -> int:
    """Stable 32-bit key of a string (Python's hash() is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


# ---------------------------------------------------------------------------------------------------------
# Initial weights
# ---------------------------------------------------------------------------------------------------------

KINDS = ("conv", "conv_transpose", "linear", "bias", "norm_weight", "norm_bias", "buffer")


@dataclass(frozen=True)
class ParamSpec:
    """One tensor to initialise, named as PyTorch names it (MindSpore maps its norm names onto these)."""

    name: str
    kind: str
    shape: tuple[int, ...]


def xavier_normal_std(shape: tuple[int, ...], gain: float) -> float:
    """torch.nn.init.xavier_normal_'s std for a weight of `shape` in PyTorch's layout."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    # torch computes fans from dims 0 and 1 whatever the layer; for a transposed conv (in, out, kh, kw)
    # that swaps fan_in and fan_out, which leaves their sum (all that xavier uses) unchanged.
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    return gain * float(np.sqrt(2.0 / (fan_in + fan_out)))


def init_tensors(seed: int, net_name: str, specs: Iterable[ParamSpec], gain: float = 0.02) -> dict[str, np.ndarray]:
    """CUT's xavier init (gain 0.02) drawn in numpy: conv / linear weights xavier-normal, biases 0,
    BatchNorm weight N(1, gain) and bias 0. Each tensor has its own stream keyed by (net_name, name), so the
    result does not depend on the order in which a framework lists its parameters."""
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.kind not in KINDS:
            raise ValueError(f"unknown parameter kind {spec.kind!r} for {spec.name}")
        if spec.kind in ("bias", "norm_bias"):
            out[spec.name] = np.zeros(spec.shape, np.float32)
            continue
        if spec.kind == "buffer":
            continue
        rng = generator(seed, WEIGHTS, name_key(f"{net_name}/{spec.name}"))
        noise = rng.standard_normal(spec.shape)
        if spec.kind == "norm_weight":
            out[spec.name] = (1.0 + gain * noise).astype(np.float32)
        else:
            out[spec.name] = (xavier_normal_std(spec.shape, gain) * noise).astype(np.float32)
    return out


# ---------------------------------------------------------------------------------------------------------
# Per-step draws for the losses
# ---------------------------------------------------------------------------------------------------------


@dataclass
class StepDraws:
    """Everything random in one generator step, handed to whichever framework computes the losses.

    patch_ids[i]: int64 (num_patches_i,) positions into the flattened H*W of NCE layer i (shared by query
    and key, as CUT). neg_noise[i]: float32 (B, P_i, P_i) noise for the negative logits of layer i (or None
    when perturbation is off). mmd_ids_fake / mmd_ids_real: int64 positions into the encoder feature map.
    """

    patch_ids: list[np.ndarray]
    neg_noise: list[np.ndarray | None]
    mmd_ids_fake: np.ndarray
    mmd_ids_real: np.ndarray


def draw_patch_ids(rng: np.random.Generator, n_positions: int, num_patches: int) -> np.ndarray:
    """CUT's sampling: a random permutation of all positions, truncated to num_patches."""
    return rng.permutation(n_positions)[: min(num_patches, n_positions)].astype(np.int64)


def draw_neg_noise(rng: np.random.Generator, mode: str, strength: float, shape: tuple[int, ...]) -> np.ndarray | None:
    if mode == "none":
        return None
    if mode == "uniform":
        return rng.uniform(-strength, strength, size=shape).astype(np.float32)
    if mode == "gaussian":
        return (strength * rng.standard_normal(shape)).astype(np.float32)
    raise ValueError(f"unknown perturbation mode {mode!r}")


def step_draws(seed: int, step: int, batch_size: int, nce_positions: list[int], enc_positions: int,
               num_patches: int, neg_mode: str, neg_strength: float, mmd_num_samples: int) -> StepDraws:
    """All draws of global generator step `step`.

    nce_positions[i] is H*W of NCE layer i's feature map; enc_positions is H*W of the encoder output.
    """
    patch_ids, noise = [], []
    for i, n_pos in enumerate(nce_positions):
        ids = draw_patch_ids(generator(seed, PATCH_IDS, step, i), n_pos, num_patches)
        patch_ids.append(ids)
        p = len(ids)
        noise.append(draw_neg_noise(generator(seed, NEG_NOISE, step, i), neg_mode, neg_strength, (batch_size, p, p)))
    n_mmd = min(mmd_num_samples, enc_positions)
    mmd_fake = generator(seed, MMD_IDS, step, 0).choice(enc_positions, size=n_mmd, replace=False).astype(np.int64)
    mmd_real = generator(seed, MMD_IDS, step, 1).choice(enc_positions, size=n_mmd, replace=False).astype(np.int64)
    return StepDraws(patch_ids=patch_ids, neg_noise=noise, mmd_ids_fake=mmd_fake, mmd_ids_real=mmd_real)


def shard_step_draws(draws: StepDraws, rank: int, world_size: int) -> StepDraws:
    """Rank `rank`'s part of the draws made for a data-parallel step's GLOBAL batch.

    Patch ids and MMD positions are shared by every image, so every rank keeps them whole; the negative noise
    has a batch dimension. singan_common.data shards by striding (rank r holds items r, r + W, ...), so local
    image j of rank r is image j * W + r of the batch one process would draw with the global batch size, and
    its noise is row j * W + r: then W processes with batch b compute what one process with batch W * b does.
    """
    if world_size == 1:
        return draws
    noise = [None if n is None else np.ascontiguousarray(n[rank::world_size]) for n in draws.neg_noise]
    return StepDraws(patch_ids=draws.patch_ids, neg_noise=noise, mmd_ids_fake=draws.mmd_ids_fake,
                     mmd_ids_real=draws.mmd_ids_real)
