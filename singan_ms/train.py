"""Training loop for singan_ms: data, schedule, CSV loss log, CUT-named checkpoints and exact resume.

Mirrors singan_torch/train.py. Run directory layout:
  run_config.json             model + training config (rebuilds the networks in either framework)
  latest_net_{G,D,F}.ckpt     parameters after the last finished epoch or stop (.safetensors with --safetensors)
  <epoch>_net_{G,D,F}.ckpt    every save_epoch_freq epochs
  train_state.ckpt            nets + Adam state (exp_avg, exp_avg_sq, step, lr) + progress: resume is bit-exact
  loss_log.csv                one row per iteration (same columns as singan_torch's; under msrun: the global
                              batch's losses, averaged over ranks)
  ranks/rank<r>.csv           under msrun only: each rank's own losses on its shard, written by that rank
Every file is written under a temporary name and renamed, so an interrupted run never leaves a torn file.
Under msrun (singan_ms.distributed) rank 0 alone writes everything except its ranks/ file.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Tensor
from tqdm import tqdm

from singan_common.config import CONFIG_FILE, ConfigError, ModelConfig, RunConfig, TrainConfig
from singan_common.data import UnpairedDataset, resolve_folders
from singan_common.fsutil import atomic_path
from singan_common.losslog import RunLogs
from singan_common.rng import StepDraws, shard_step_draws
from singan_ms import distributed
from singan_ms.model import LOSS_NAMES, SinGANDehazeModel, draws_for
from singan_ms.networks import load_into, read_weights

STATE_FILE = "train_state.ckpt"
LOG_FILE = "loss_log.csv"
LOG_FIELDS = ("step", "epoch", "iter", "lr", *LOSS_NAMES, "seconds")
STATE_FORMAT = "singan_ms.train_state/1"
# The train_state entry holding the number of processes that trained the run (absent: 1, as before msrun support).
WORLD_SIZE_ENTRY = "world_size"


class ResumeError(ValueError):
    """A run directory that cannot be resumed; the message names the file."""


@dataclass
class Progress:
    """Where training stands: the next batch to run is batch `batch` of `epoch` (1-based); `step` done so far."""

    epoch: int = 1
    batch: int = 0
    step: int = 0


def save_params(entries: list[dict], path: Path, append: dict | None = None) -> None:
    fmt = "safetensors" if path.suffix == ".safetensors" else "ckpt"
    with atomic_path(path) as tmp:
        ms.save_checkpoint(entries, str(tmp), append_dict=append, format=fmt)


def save_networks(model: SinGANDehazeModel, run_dir: Path, label: str, suffix: str = ".ckpt") -> None:
    if not distributed.is_main():  # every rank holds the same weights; one writer
        return
    for name, net in model.nets.items():
        entries = [{"name": k, "data": Tensor(p.asnumpy())} for k, p in net.parameters_and_names()]
        save_params(entries, run_dir / f"{label}_net_{name}{suffix}")


def save_train_state(model: SinGANDehazeModel, run_dir: Path, progress: Progress) -> None:
    if not distributed.is_main():
        return
    entries = []
    for key, net in model.nets.items():
        entries += [{"name": f"net_{key}/{k}", "data": Tensor(p.asnumpy())} for k, p in net.parameters_and_names()]
    for key, opt in model.optimizers.items():
        entries += [{"name": f"opt_{key}/{p.name}", "data": Tensor(p.asnumpy())}
                    for p in (*opt.exp_avg, *opt.exp_avg_sq, opt.step, opt.lr)]
    # The randomness plan is counter-based: (seed, epoch, batch, step) *is* the RNG state.
    entries += [{"name": f"progress/{k}", "data": Tensor(np.int64(v))}
                for k, v in (("epoch", progress.epoch), ("batch", progress.batch), ("step", progress.step))]
    # (epoch, batch) index each rank's shard, which depends on the number of processes.
    entries.append({"name": WORLD_SIZE_ENTRY, "data": Tensor(np.int64(distributed.world_size()))})
    save_params(entries, run_dir / STATE_FILE)


def load_train_state(model: SinGANDehazeModel, run_dir: Path) -> Progress:
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"{path}: no training state to resume from")
    try:
        state = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}
        for key, net in model.nets.items():
            prefix = f"net_{key}/"
            load_into(net, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, path)
        for key, opt in model.optimizers.items():
            for p in (*opt.exp_avg, *opt.exp_avg_sq, opt.step, opt.lr):
                p.set_data(Tensor(state[f"opt_{key}/{p.name}"]))
        progress = Progress(**{k: int(state[f"progress/{k}"]) for k in ("epoch", "batch", "step")})
        stored_world = int(state.get(WORLD_SIZE_ENTRY, 1))
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise ResumeError(f"{path}: cannot resume from this file ({type(exc).__name__}: {exc})") from None
    if stored_world != distributed.world_size():
        raise ResumeError(f"{path}: this run was trained by {stored_world} process(es) and is resumed by "
                          f"{distributed.world_size()}; resume with the same number (a batch index means a "
                          "different shard otherwise)")
    return progress


def load_init(model: SinGANDehazeModel, init_dir: Path) -> None:
    """Start from converted weights: latest_net_{G,D,F}.ckpt / .safetensors in `init_dir` (D and F optional)."""
    for key, net in model.nets.items():
        for suffix in (".ckpt", ".safetensors"):
            path = init_dir / f"latest_net_{key}{suffix}"
            if path.is_file():
                load_into(net, read_weights(path), path)
                break
        else:
            if key == "G":
                raise ConfigError(f"{init_dir}: --init needs latest_net_G.ckpt or latest_net_G.safetensors")


def train(run_dir: str | Path, hazy: str | Path, clear: str | Path | None, model_cfg: ModelConfig,
          train_cfg: TrainConfig, vgg_weights: str | Path | None = None, resume: bool = False,
          device: str = "CPU", progress_bar: bool = True, init: str | Path | None = None,
          safetensors: bool = False) -> SinGANDehazeModel:
    """Train (or resume) in `run_dir`; returns the model after the last step.

    On resume the run's stored config is used (model_cfg / train_cfg are ignored) except max_steps.
    Inside singan_ms.distributed.process_group this process trains its rank's shard data-parallel."""
    from singan_ms.device import setup

    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise ResumeError(f"{run_dir / CONFIG_FILE}: not found; is {run_dir} a singan_ms run directory?")
        stored = RunConfig.load(run_dir / CONFIG_FILE)
        # The stored config wins, except the step limit: extending a stopped run is what resume is for.
        model_cfg, train_cfg = stored.model, dataclasses.replace(stored.train, max_steps=train_cfg.max_steps)
    elif (run_dir / STATE_FILE).exists():
        raise ConfigError(f"{run_dir}: already holds a run; pass --resume {run_dir} or choose another --out")
    distributed.check_norm(model_cfg, device)
    dataset = UnpairedDataset(*resolve_folders(hazy, clear), load_size=train_cfg.load_size,
                              crop_size=train_cfg.crop_size, flip=train_cfg.flip, seed=train_cfg.seed,
                              rank=distributed.rank(), world_size=distributed.world_size())
    # Under msrun process_group has set the device already; the same index again keeps each rank on its own.
    device = setup(device, mode="graph", device_id=distributed.local_device_id(device))
    run_dir.mkdir(parents=True, exist_ok=True)
    model = SinGANDehazeModel(model_cfg, train_cfg, vgg_weights=vgg_weights, device=device)
    if init is not None and not resume:
        load_init(model, Path(init))
    progress = load_train_state(model, run_dir) if resume else Progress()
    main = distributed.is_main()
    resume_step = progress.step if resume else None
    if main:
        RunConfig(model_cfg, train_cfg).save(run_dir / CONFIG_FILE)
    logs = RunLogs(run_dir, LOG_FILE, LOG_FIELDS, resume_step, main,
                   distributed.rank() if distributed.is_distributed() else None, distributed.mean_over_ranks)
    try:
        _loop(model, dataset, run_dir, progress, logs, progress_bar and main,
              ".safetensors" if safetensors else ".ckpt")
    finally:
        logs.close()
    return model


def _loop(model: SinGANDehazeModel, dataset: UnpairedDataset, run_dir: Path, progress: Progress, logs: RunLogs,
          progress_bar: bool, suffix: str) -> None:
    tcfg = model.train_cfg
    n_batches = dataset.num_batches(tcfg.batch_size)
    total = tcfg.total_epochs * n_batches
    if tcfg.max_steps:
        total = min(total, tcfg.max_steps)
    bar = tqdm(total=total, initial=min(progress.step, total), disable=not progress_bar, unit="it",
               desc="singan_ms train")
    try:
        while progress.epoch <= tcfg.total_epochs:
            lr = model.set_epoch_lr(progress.epoch)
            while progress.batch < n_batches:
                if tcfg.max_steps and progress.step >= tcfg.max_steps:
                    save_networks(model, run_dir, "latest", suffix)
                    save_train_state(model, run_dir, progress)
                    return
                t0 = time.perf_counter()
                batch = dataset.batch(progress.epoch, progress.batch, tcfg.batch_size)
                draws = local_draws(model, progress.step, batch.hazy.shape)
                local = model.optimize(batch.hazy, batch.clear, draws)
                progress.step += 1
                progress.batch += 1
                losses = logs.write({"step": progress.step, "epoch": progress.epoch, "iter": progress.batch, "lr": lr},
                                    local, time.perf_counter() - t0)
                bar.update(1)
                bar.set_postfix(epoch=progress.epoch, G=f"{losses['loss_G']:.3f}", D=f"{losses['loss_D']:.3f}")
            save_networks(model, run_dir, "latest", suffix)
            if progress.epoch % tcfg.save_epoch_freq == 0 or progress.epoch == tcfg.total_epochs:
                save_networks(model, run_dir, str(progress.epoch), suffix)
            progress.epoch += 1
            progress.batch = 0
            save_train_state(model, run_dir, progress)
    finally:
        bar.close()


def local_draws(model: SinGANDehazeModel, step: int, shape: tuple[int, ...]) -> StepDraws:
    """This process's draws for `step`: drawn for the global batch (every rank holds equally many images), then
    sliced to this rank's images, so N processes draw the numbers one process with the global batch draws."""
    b, _, h, w = shape
    world = distributed.world_size()
    draws = draws_for(model.cfg, model.train_cfg.seed, step, b * world, h, w)
    return shard_step_draws(draws, distributed.rank(), world)
