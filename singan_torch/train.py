"""Training loop for singan_torch: data, schedule, CSV loss log, CUT-named checkpoints and exact resume.

Run directory layout (CUT's names, so CUT tooling finds the weights):
  run_config.json          model + training config (rebuilds the networks in either framework)
  latest_net_{G,D,F}.pth   state_dicts after the last finished epoch or stop
  <epoch>_net_{G,D,F}.pth  every save_epoch_freq epochs
  train_state.pth          nets + optimisers + (epoch, batch, step): resuming from it is bit-exact on CPU
  loss_log.csv             one row per iteration (under torchrun: the global batch's losses, averaged over ranks)
  ranks/rank<r>.csv        under torchrun only: each rank's own losses on its shard, written by that rank
Every file is written under a temporary name and renamed, so an interrupted run never leaves a torn file.
Under torchrun (singan_torch.distributed) rank 0 alone writes everything except its ranks/ file.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from singan_common.config import CONFIG_FILE, ConfigError, ModelConfig, RunConfig, TrainConfig
from singan_common.data import UnpairedDataset, resolve_folders
from singan_common.fsutil import atomic_path
from singan_common.losslog import RunLogs
from singan_common.rng import StepDraws, shard_step_draws
from singan_torch import distributed
from singan_torch.model import LOSS_NAMES, SinGANDehazeModel, draws_for

STATE_FILE = "train_state.pth"
LOG_FILE = "loss_log.csv"
LOG_FIELDS = ("step", "epoch", "iter", "lr", *LOSS_NAMES, "seconds")


class ResumeError(ValueError):
    """A run directory that cannot be resumed; the message names the file."""


@dataclass
class Progress:
    """Where training stands: the next batch to run is batch `batch` of `epoch` (1-based); `step` done so far."""

    epoch: int = 1
    batch: int = 0
    step: int = 0


def save_state_dict(state: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def save_networks(model: SinGANDehazeModel, run_dir: Path, label: str) -> None:
    if not distributed.is_main():  # every rank holds the same weights; one writer
        return
    for name, net in model.nets.items():
        save_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()}, run_dir / f"{label}_net_{name}.pth")


def save_train_state(model: SinGANDehazeModel, run_dir: Path, progress: Progress) -> None:
    if not distributed.is_main():
        return
    state = {
        "format": "singan_torch.train_state/1",
        "progress": {"epoch": progress.epoch, "batch": progress.batch, "step": progress.step},
        "nets": {k: net.state_dict() for k, net in model.nets.items()},
        "optimizers": {k: opt.state_dict() for k, opt in model.optimizers.items()},
        # The randomness plan is counter-based: (seed, epoch, batch, step) *is* the RNG state.
        "rng": {"seed": model.train_cfg.seed, "step": progress.step},
        # (epoch, batch) index each rank's shard, which depends on the number of processes.
        "world_size": distributed.world_size(),
    }
    save_state_dict(state, run_dir / STATE_FILE)


def load_train_state(model: SinGANDehazeModel, run_dir: Path) -> Progress:
    path = run_dir / STATE_FILE
    if not path.is_file():
        raise ResumeError(f"{path}: no training state to resume from")
    try:
        state = torch.load(path, map_location=model.device, weights_only=True)
        for k, net in model.nets.items():
            net.load_state_dict(state["nets"][k])
        for k, opt in model.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        p = state["progress"]
        stored_world = int(state.get("world_size", 1))
    except (OSError, RuntimeError, KeyError, EOFError) as exc:
        raise ResumeError(f"{path}: cannot resume from this file ({type(exc).__name__}: {exc})") from None
    if stored_world != distributed.world_size():
        raise ResumeError(f"{path}: this run was trained by {stored_world} process(es) and is resumed by "
                          f"{distributed.world_size()}; resume with the same number (a batch index means a "
                          "different shard otherwise)")
    return Progress(epoch=int(p["epoch"]), batch=int(p["batch"]), step=int(p["step"]))


def train(run_dir: str | Path, hazy: str | Path, clear: str | Path | None, model_cfg: ModelConfig,
          train_cfg: TrainConfig, vgg_weights: str | Path | None = None, resume: bool = False,
          device: str = "cpu", progress_bar: bool = True) -> SinGANDehazeModel:
    """Train (or resume) in `run_dir`; returns the model after the last step.

    On resume the run's stored config is used (model_cfg / train_cfg are ignored) except max_steps.
    Inside singan_torch.distributed.process_group this process trains its rank's shard data-parallel."""
    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise ResumeError(f"{run_dir / CONFIG_FILE}: not found; is {run_dir} a singan_torch run directory?")
        stored = RunConfig.load(run_dir / CONFIG_FILE)
        # The stored config wins, except the step limit: extending a stopped run is what resume is for.
        model_cfg, train_cfg = stored.model, dataclasses.replace(stored.train, max_steps=train_cfg.max_steps)
    elif (run_dir / STATE_FILE).exists():
        raise ConfigError(f"{run_dir}: already holds a run; pass --resume {run_dir} or choose another --out")
    distributed.check_norm(model_cfg, device)
    dataset = UnpairedDataset(*resolve_folders(hazy, clear), load_size=train_cfg.load_size,
                              crop_size=train_cfg.crop_size, flip=train_cfg.flip, seed=train_cfg.seed,
                              rank=distributed.rank(), world_size=distributed.world_size())
    run_dir.mkdir(parents=True, exist_ok=True)
    model = SinGANDehazeModel(model_cfg, train_cfg, vgg_weights=vgg_weights, device=device)
    progress = load_train_state(model, run_dir) if resume else Progress()
    if distributed.is_distributed():
        distributed.wrap_model(model)
    main = distributed.is_main()
    resume_step = progress.step if resume else None
    if main:
        RunConfig(model_cfg, train_cfg).save(run_dir / CONFIG_FILE)
    logs = RunLogs(run_dir, LOG_FILE, LOG_FIELDS, resume_step, main,
                   distributed.rank() if distributed.is_distributed() else None, distributed.mean_over_ranks)
    try:
        _loop(model, dataset, run_dir, progress, logs, progress_bar and main)
    finally:
        logs.close()
    return model


def _loop(model: SinGANDehazeModel, dataset: UnpairedDataset, run_dir: Path, progress: Progress, logs: RunLogs,
          progress_bar: bool) -> None:
    tcfg = model.train_cfg
    n_batches = dataset.num_batches(tcfg.batch_size)
    total = tcfg.total_epochs * n_batches
    if tcfg.max_steps:
        total = min(total, tcfg.max_steps)
    bar = tqdm(total=total, initial=min(progress.step, total), disable=not progress_bar, unit="it",
               desc="singan_torch train")
    try:
        while progress.epoch <= tcfg.total_epochs:
            lr = model.set_epoch_lr(progress.epoch)
            while progress.batch < n_batches:
                if tcfg.max_steps and progress.step >= tcfg.max_steps:
                    save_networks(model, run_dir, "latest")
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
            save_networks(model, run_dir, "latest")
            if progress.epoch % tcfg.save_epoch_freq == 0 or progress.epoch == tcfg.total_epochs:
                save_networks(model, run_dir, str(progress.epoch))
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
