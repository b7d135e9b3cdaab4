"""`python -m singan_torch dehaze`: load a generator (ours or any CUT-trained one) and dehaze files.

Everything but loading the weights and running G lives in singan_common.dehazing, shared with singan_ms.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from singan_common.checkpoints import CheckpointError, generator_source, infer_generator_config
from singan_common.config import ModelConfig
from singan_common.dehazing import collect_inputs, dehaze_files, options_from_args
from singan_torch.networks import ResnetGenerator


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from .pth (weights_only: a pickle that would run code is refused) or .safetensors."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to decode is reported against the file
        raise CheckpointError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_generator(weights: str | Path, device: str = "cpu") -> tuple[ResnetGenerator, ModelConfig]:
    """G in eval mode from a run directory or a weights file, with the config it was built from."""
    path, cfg = generator_source(weights, (".pth", ".safetensors"))
    state = read_state_dict(path)
    if cfg is None:
        cfg = infer_generator_config({k: tuple(v.shape) for k, v in state.items()}, path)
    net = ResnetGenerator(cfg)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the generator config: {exc}") from None
    return net.to(device).eval(), cfg


def generator_fn(net: ResnetGenerator, device: str = "cpu"):
    """numpy (1, 3, h, w) -> numpy (1, 3, h, w) through G, without autograd."""

    @torch.no_grad()
    def fn(batch: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(np.ascontiguousarray(batch)).to(device)).cpu().numpy()

    return fn


def run_dehaze(a: argparse.Namespace) -> int:
    opts = options_from_args(a)
    inputs = collect_inputs(a.input)
    device = a.device or "cpu"
    net, _ = load_generator(a.weights, device)
    written, skipped = dehaze_files(inputs, Path(a.output), generator_fn(net, device), opts,
                                    progress=not a.no_progress)
    note = f", {skipped} skipped (exist; --overwrite replaces them)" if skipped else ""
    print(f"dehazed {written} image(s) into {a.output}{note}")
    return 0
