"""Which network a flat state dict holds, in either framework's naming, and the config that rebuilds it.

Detection uses keys and shapes only. MindSpore names differ from PyTorch's only in norm layers
(gamma/beta/moving_mean/moving_variance for weight/bias/running_mean/running_var), so keys are first brought
to PyTorch's naming; a file that fits no known network is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from convert.formats import ConvertError
from singan_common import architecture as arch
from singan_common.checkpoints import CheckpointError, infer_generator_config
from singan_common.config import ModelConfig

MS_TO_TORCH_NORM = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                    "moving_variance": "running_var"}
TORCH_TO_MS_NORM = {v: k for k, v in MS_TO_TORCH_NORM.items()}
NETWORKS = ("G", "D", "F", "vgg16")
_MODEL_KEY = re.compile(r"^model\.(\d+)\.")


@dataclass(frozen=True)
class Detected:
    network: str  # G | D | F | vgg16
    naming: str  # torch | ms | either
    variant: str | None


def strip_module_prefix(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """DataParallel / DistributedDataParallel save keys as `module.<name>`."""
    if tensors and all(k.startswith("module.") for k in tensors):
        return {k[len("module."):]: v for k, v in tensors.items()}
    return dict(tensors)


def naming_of(keys: list[str]) -> str:
    """'ms' or 'torch' when norm-layer names tell; 'either' for networks without BatchNorm (names agree)."""
    last = {k.rsplit(".", 1)[-1] for k in keys}
    if last & set(MS_TO_TORCH_NORM):
        return "ms"
    if last & {"running_mean", "running_var", "num_batches_tracked"}:
        return "torch"
    return "either"


def to_torch_names(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in tensors.items():
        head, _, last = k.rpartition(".")
        out[f"{head}.{MS_TO_TORCH_NORM[last]}" if last in MS_TO_TORCH_NORM else k] = v
    return out


def detect(tensors: Mapping[str, np.ndarray], source: str) -> Detected:
    keys = list(tensors)
    if not keys:
        raise ConvertError(f"{source}: holds no tensors")
    naming = naming_of(keys)
    torch_keys = list(to_torch_names(tensors))
    variant = "antialias" if any(k.endswith(".filt") for k in keys) else "stride2"
    if any(k.startswith("mlp_") for k in torch_keys):
        return Detected("F", naming, None)
    if "features.0.weight" in torch_keys:
        return Detected("vgg16", naming, None)
    model_keys = [k for k in torch_keys if _MODEL_KEY.match(k)]
    if model_keys and len(model_keys) == len(torch_keys):
        if any(".conv_block." in k for k in torch_keys) or tensors_shape(tensors, "model.1.weight")[-1:] == (7,):
            return Detected("G", naming, variant)
        if tensors_shape(tensors, "model.0.weight")[-1:] == (4,):
            return Detected("D", naming, variant)
    sample = ", ".join(keys[:4])
    raise ConvertError(f"{source}: does not look like a SinGAN-Dehaze/CUT G, D, F or a torchvision vgg16 "
                       f"state_dict (first keys: {sample})")


def tensors_shape(tensors: Mapping[str, np.ndarray], key: str) -> tuple[int, ...]:
    v = tensors.get(key)
    return tuple(v.shape) if v is not None else ()


def infer_config(nets: Mapping[str, Mapping[str, np.ndarray]], source: str) -> ModelConfig:
    """The ModelConfig of a set of networks {G/D/F: torch-named tensors}, from shapes alone."""
    shapes = {name: {k: tuple(v.shape) for k, v in t.items()} for name, t in nets.items()}
    if "G" in shapes:
        try:
            cfg = infer_generator_config(shapes["G"], source)
        except CheckpointError as exc:
            raise ConvertError(str(exc)) from None
    else:
        cfg = ModelConfig(variant="antialias" if any(k.endswith(".filt") for s in shapes.values() for k in s)
                          else "stride2")
    if "D" in shapes:
        cfg = dataclasses.replace(cfg, **discriminator_fields(shapes["D"], source))
    if "F" in shapes:
        cfg = dataclasses.replace(cfg, **projection_fields(shapes["F"], cfg, source))
    return cfg


def discriminator_fields(shapes: Mapping[str, tuple[int, ...]], source: str) -> dict:
    convs = sorted((int(_MODEL_KEY.match(k).group(1)), v) for k, v in shapes.items()
                   if k.endswith(".weight") and len(v) == 4)
    if len(convs) < 3:
        raise ConvertError(f"{source}: a PatchGAN discriminator has at least 3 convolutions, found {len(convs)}")
    return {"ndf": convs[0][1][0], "n_layers_D": len(convs) - 2}


def projection_fields(shapes: Mapping[str, tuple[int, ...]], cfg: ModelConfig, source: str) -> dict:
    n = sum(1 for k in shapes if re.match(r"^mlp_\d+\.0\.weight$", k))
    channels = [shapes[f"mlp_{i}.0.weight"][1] for i in range(n)]
    fields = {"netF_nc": shapes["mlp_0.0.weight"][0]}
    if channels != arch.nce_channels(cfg):
        # Non-default NCE layers can't be recovered from channel counts alone.
        raise ConvertError(f"{source}: F's MLP input widths {channels} do not fit the NCE layers "
                           f"{list(cfg.nce_layers)} of this generator; give the model config with --config")
    return fields
