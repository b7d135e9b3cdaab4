"""Framework-free facts about checkpoint files: which generator config a set of tensor shapes describes.

A CUT `latest_net_G.pth` carries no config; the variant, width, depth and norm follow from its keys and
shapes. Both frameworks' `dehaze --weights FILE` and the converter use this when no run_config.json is given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from singan_common.config import CONFIG_FILE, ModelConfig, RunConfig

_BLOCK = re.compile(r"^model\.(\d+)\.conv_block\.1\.weight$")


class CheckpointError(ValueError):
    """A weights file or run directory that does not hold what it should; the message names it."""


def infer_generator_config(shapes: Mapping[str, tuple[int, ...]], source: str | Path) -> ModelConfig:
    """The ModelConfig whose generator has these parameter shapes (CUT / PyTorch key names)."""
    shapes = {k.removeprefix("module."): v for k, v in shapes.items()}
    if "model.1.weight" not in shapes or len(shapes["model.1.weight"]) != 4:
        raise CheckpointError(f"{source}: does not look like a ResnetGenerator state_dict (no model.1.weight)")
    ngf, input_nc = shapes["model.1.weight"][:2]
    n_blocks = sum(1 for k in shapes if _BLOCK.match(k))
    variant = "antialias" if any(k.endswith(".filt") for k in shapes) else "stride2"
    if any(k.endswith("running_mean") or k.endswith("moving_mean") for k in shapes):
        norm = "batch"
    elif "model.1.bias" in shapes:
        norm = "instance"
    else:
        norm = "none"
    last = max(int(k.split(".")[1]) for k in shapes if k.startswith("model.") and k.endswith(".weight"))
    output_nc = shapes[f"model.{last}.weight"][0]
    return ModelConfig(input_nc=input_nc, output_nc=output_nc, ngf=ngf, n_blocks=n_blocks, variant=variant, norm=norm)


def generator_source(weights: str | Path, suffixes: tuple[str, ...]) -> tuple[Path, ModelConfig | None]:
    """(generator weights file, stored config or None) for a run directory or a weights file.

    A directory must hold latest_net_G with one of `suffixes`; a file may have run_config.json beside it."""
    weights = Path(weights)
    if weights.is_dir():
        for suffix in suffixes:
            candidate = weights / f"latest_net_G{suffix}"
            if candidate.is_file():
                break
        else:
            raise CheckpointError(f"{weights}: no latest_net_G{'/'.join(suffixes)} in this run directory")
        weights_file = candidate
    elif weights.is_file():
        weights_file = weights
    else:
        raise CheckpointError(f"{weights}: weights file or run directory not found")
    cfg_path = weights_file.parent / CONFIG_FILE
    return weights_file, RunConfig.load(cfg_path).model if cfg_path.is_file() else None
