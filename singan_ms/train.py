"""Training loop for singan_ms: data, schedule, CSV loss log, CUT-named checkpoints and exact resume.

Mirrors singan_torch/train.py. Run directory layout:
  run_config.json             model + training config (rebuilds the networks in either framework)
  latest_net_{G,D,F}.ckpt     parameters after the last finished epoch or stop (.safetensors with --safetensors)
  <epoch>_net_{G,D,F}.ckpt    every save_epoch_freq epochs
  train_state.ckpt            nets + Adam state (exp_avg, exp_avg_sq, step, lr) + progress: resume is bit-exact
  loss_log.csv                one row per iteration (same columns as singan_torch's)
Every file is written under a temporary name and renamed, so an interrupted run never leaves a torn file.
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
from singan_common.losslog import LossLog
from singan_ms.model import LOSS_NAMES, SinGANDehazeModel, draws_for
from singan_ms.networks import load_into, read_weights

STATE_FILE = "train_state.ckpt"
LOG_FILE = "loss_log.csv"
LOG_FIELDS = ("step", "epoch", "iter", "lr", *LOSS_NAMES, "seconds")
STATE_FORMAT = "singan_ms.train_state/1"


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
    for name, net in model.nets.items():
        entries = [{"name": k, "data": Tensor(p.asnumpy())} for k, p in net.parameters_and_names()]
        save_params(entries, run_dir / f"{label}_net_{name}{suffix}")


def save_train_state(model: SinGANDehazeModel, run_dir: Path, progress: Progress) -> None:
    entries = []
    for key, net in model.nets.items():
        entries += [{"name": f"net_{key}/{k}", "data": Tensor(p.asnumpy())} for k, p in net.parameters_and_names()]
    for key, opt in model.optimizers.items():
        entries += [{"name": f"opt_{key}/{p.name}", "data": Tensor(p.asnumpy())}
                    for p in (*opt.exp_avg, *opt.exp_avg_sq, opt.step, opt.lr)]
    # The randomness plan is counter-based: (seed, epoch, batch, step) *is* the RNG state.
    entries += [{"name": f"progress/{k}", "data": Tensor(np.int64(v))}
                for k, v in (("epoch", progress.epoch), ("batch", progress.batch), ("step", progress.step))]
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
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise ResumeError(f"{path}: cannot resume from this file ({type(exc).__name__}: {exc})") from None
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

    On resume the run's stored config is used (model_cfg / train_cfg are ignored) except max_steps."""
    from singan_ms.device import setup

    run_dir = Path(run_dir)
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise ResumeError(f"{run_dir / CONFIG_FILE}: not found; is {run_dir} a singan_ms run directory?")
        stored = RunConfig.load(run_dir / CONFIG_FILE)
        model_cfg, train_cfg = stored.model, dataclasses.replace(stored.train, max_steps=train_cfg.max_steps)
    elif (run_dir / STATE_FILE).exists():
        raise ConfigError(f"{run_dir}: already holds a run; pass --resume {run_dir} or choose another --out")
    dataset = UnpairedDataset(*resolve_folders(hazy, clear), load_size=train_cfg.load_size,
                              crop_size=train_cfg.crop_size, flip=train_cfg.flip, seed=train_cfg.seed)
    device = setup(device, mode="graph")
    run_dir.mkdir(parents=True, exist_ok=True)
    model = SinGANDehazeModel(model_cfg, train_cfg, vgg_weights=vgg_weights, device=device)
    if init is not None and not resume:
        load_init(model, Path(init))
    progress = load_train_state(model, run_dir) if resume else Progress()
    RunConfig(model_cfg, train_cfg).save(run_dir / CONFIG_FILE)
    log = LossLog(run_dir / LOG_FILE, progress.step if resume else None, LOG_FIELDS)
    try:
        _loop(model, dataset, run_dir, progress, log, progress_bar, ".safetensors" if safetensors else ".ckpt")
    finally:
        log.close()
    return model


def _loop(model: SinGANDehazeModel, dataset: UnpairedDataset, run_dir: Path, progress: Progress, log: LossLog,
          progress_bar: bool, suffix: str) -> None:
    cfg, tcfg = model.cfg, model.train_cfg
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
                b, _, h, w = batch.hazy.shape
                draws = draws_for(cfg, tcfg.seed, progress.step, b, h, w)
                losses = model.optimize(batch.hazy, batch.clear, draws)
                progress.step += 1
                progress.batch += 1
                log.write({"step": progress.step, "epoch": progress.epoch, "iter": progress.batch, "lr": lr, **losses,
                           "seconds": time.perf_counter() - t0})
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
