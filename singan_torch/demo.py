"""`python -m singan_torch demo`: a short real training run that needs no user data or weights.

Builds a tiny unpaired hazy/clear set from scikit-image's bundled photos (hazed with the atmospheric
scattering model by singan_common.haze), trains the default SinGAN-Dehaze model for a few iterations on small
crops, writes CUT-named checkpoints, and dehazes one held-out photo into a before/after PNG.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from singan_common.config import ModelConfig, TrainConfig
from singan_common.dehazing import DehazeOptions, dehaze_rgb
from singan_common.haze import builtin_benchmark
from singan_common.images import write_image
from singan_torch.dehaze import generator_fn
from singan_torch.train import train

DEMO_IMAGE_SIZE = 96
DEMO_TRAIN = {"load_size": 72, "crop_size": 64, "n_epochs": 5, "n_epochs_decay": 5, "save_epoch_freq": 5}


def write_unpaired_set(root: Path, seed: int) -> tuple[Path, Path, list[tuple[str, np.ndarray, np.ndarray]]]:
    """hazy/ and clear/ folders from disjoint photos (so the set is truly unpaired); the rest is held out."""
    items = builtin_benchmark(seed=seed, size=DEMO_IMAGE_SIZE)
    held_out, train_items = items[:1], items[1:]
    half = len(train_items) // 2
    for name, _, hazy in train_items[:half]:
        write_image(root / "hazy" / f"{name}.png", hazy)
    for name, clear, _ in train_items[half:]:
        write_image(root / "clear" / f"{name}.png", clear)
    return root / "hazy", root / "clear", held_out


def train_demo_model(run_dir: Path, steps: int = 30, device: str = "cpu", seed: int = 0):
    """Train the default model for `steps` iterations on the built-in set; returns (model, held-out scene)."""
    hazy_dir, clear_dir, held_out = write_unpaired_set(run_dir.parent / "data", seed)
    if (run_dir / "train_state.pth").exists():
        raise ValueError(f"{run_dir}: a previous demo run is there; remove it or pass another --out")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random-VGG warning: the demo has no ImageNet weights by design
        model = train(run_dir, hazy_dir, clear_dir, ModelConfig(),
                      TrainConfig(seed=seed, max_steps=steps, **DEMO_TRAIN), device=device)
    return model, held_out[0]


def run_demo(out: Path, steps: int = 30, device: str = "cpu", seed: int = 0) -> Path:
    """Train for `steps` iterations in out/run and write out/sample_before_after.png; returns the PNG path."""
    t0 = time.perf_counter()
    run_dir = out / "run"
    model, (name, clear, hazy) = train_demo_model(run_dir, steps, device, seed)
    dehazed = dehaze_rgb(hazy, generator_fn(model.netG.eval(), device), DehazeOptions())
    grid = np.concatenate([hazy, dehazed, clear], axis=1)
    write_image(out / "sample_dehazed.png", dehazed)
    write_image(out / "sample_before_after.png", grid)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s: {steps} iterations of the default model on "
          f"{DEMO_TRAIN['crop_size']}px crops (random VGG16: this shows the pipeline, not a trained dehazer)")
    print(f"  checkpoints and loss_log.csv: {run_dir}")
    print(f"  hazy | dehazed | clear for held-out photo '{name}': {out / 'sample_before_after.png'}")
    return out / "sample_before_after.png"
