"""`python -m singan_ms dehaze`: load a generator (.ckpt / .safetensors) and dehaze files.

Mirrors singan_torch/dehaze.py; everything but loading the weights and running G lives in
singan_common.dehazing, shared with singan_torch.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from mindspore import Tensor

from singan_common.checkpoints import CheckpointError, generator_source, infer_generator_config
from singan_common.config import ModelConfig
from singan_common.dehazing import collect_inputs, dehaze_files, options_from_args
from singan_ms.networks import ResnetGenerator, WeightsError, load_into, read_weights


def load_generator(weights: str | Path, device: str | None = None) -> tuple[ResnetGenerator, ModelConfig]:
    """G in eval mode from a run directory or a weights file, with the config it was built from."""
    from singan_ms.device import current, setup

    if device is not None or not current():
        setup(device or "CPU", mode="graph")
    path, cfg = generator_source(weights, (".ckpt", ".safetensors"))
    try:
        state = read_weights(path)
    except WeightsError as exc:
        raise CheckpointError(str(exc)) from None
    if cfg is None:
        from singan_ms.networks import torch_name

        cfg = infer_generator_config({torch_name(k): tuple(v.shape) for k, v in state.items()}, path)
    net = ResnetGenerator(cfg)
    try:
        load_into(net, state, path, strict=True)
    except WeightsError as exc:
        raise CheckpointError(str(exc)) from None
    net.set_train(False)
    return net, cfg


def generator_fn(net: ResnetGenerator, device: str | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """numpy (1, 3, h, w) -> numpy (1, 3, h, w) through G (no gradients are built outside value_and_grad)."""

    def fn(batch: np.ndarray) -> np.ndarray:
        return net(Tensor(np.ascontiguousarray(batch, np.float32))).asnumpy()

    return fn


def run_dehaze(a: argparse.Namespace) -> int:
    opts = options_from_args(a)
    inputs = collect_inputs(a.input)
    net, _ = load_generator(a.weights, a.device)
    written, skipped = dehaze_files(inputs, Path(a.output), generator_fn(net), opts, progress=not a.no_progress)
    note = f", {skipped} skipped (exist; --overwrite replaces them)" if skipped else ""
    print(f"dehazed {written} image(s) into {a.output}{note}")
    return 0
