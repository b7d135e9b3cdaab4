"""Configuration dataclasses shared by singan_torch and singan_ms.

Both frameworks build their networks, losses and training loops from these plain dataclasses, so one
config (saved as JSON next to every checkpoint) rebuilds the same model in either framework.
BatchNorm momentum is stored in PyTorch's convention; the MindSpore side converts it (1 - m).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARIANTS = ("stride2", "antialias")
NORMS = ("instance", "batch", "none")
PERTURB_MODES = ("uniform", "gaussian", "none")
# Saved next to every checkpoint set by both frameworks and by the converter.
CONFIG_FILE = "run_config.json"


class ConfigError(ValueError):
    """A configuration value that cannot describe a valid model or run."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the networks and the losses (not the optimisation)."""

    input_nc: int = 3
    output_nc: int = 3
    # stride2 = the paper's strided conv / transposed conv; antialias = CUT's default blur down/up.
    variant: str = "stride2"
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    n_layers_D: int = 3
    norm: str = "instance"
    # PyTorch convention (running = (1 - m) * running + m * batch); MindSpore's is 1 - this.
    bn_momentum: float = 0.1
    init_gain: float = 0.02
    # PatchNCE (local perturbed contrastive loss).
    nce_layers: tuple[int, ...] = (0, 4, 8, 12, 16)
    netF_nc: int = 256
    num_patches: int = 256
    nce_T: float = 0.07
    neg_perturb: str = "uniform"
    neg_perturb_strength: float = 0.3
    # Perceptual loss: torchvision vgg16 `features` indices (relu1_2, relu2_2, relu3_3) and weights.
    perceptual_layers: tuple[int, ...] = (3, 8, 15)
    perceptual_weights: tuple[float, ...] = (1.0, 0.5, 0.25)
    # MMD style loss on high-frequency maps.
    mmd_kernel_mul: float = 2.0
    mmd_kernel_num: int = 5
    mmd_num_samples: int = 256
    highpass_kernel_size: int = 11
    highpass_sigma: float = 2.0
    # Loss weights of Eq. 6.
    lambda_GAN: float = 1.0
    lambda_NCE: float = 1.0
    lambda_perceptual: float = 1.0
    lambda_MMD: float = 1.0

    def __post_init__(self) -> None:
        _choice("variant", self.variant, VARIANTS)
        _choice("norm", self.norm, NORMS)
        _choice("neg_perturb", self.neg_perturb, PERTURB_MODES)
        for name in ("input_nc", "output_nc", "ngf", "ndf", "netF_nc", "num_patches", "mmd_num_samples",
                     "mmd_kernel_num"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_blocks < 0 or self.n_layers_D < 1:
            raise ConfigError("n_blocks must be >= 0 and n_layers_D >= 1")
        if not 0.0 <= self.bn_momentum <= 1.0:
            raise ConfigError(f"bn_momentum must be in [0, 1] (PyTorch convention), got {self.bn_momentum}")
        if len(self.perceptual_layers) != len(self.perceptual_weights):
            raise ConfigError("perceptual_layers and perceptual_weights must have the same length")
        if any(i < 0 or i > 15 for i in self.perceptual_layers):
            raise ConfigError("perceptual_layers must be vgg16 features indices in 0..15 (truncated at relu3_3)")
        n_layers_G = self.generator_length()
        if any(i < 0 or i >= n_layers_G for i in self.nce_layers) or list(self.nce_layers) != sorted(
                set(self.nce_layers)):
            raise ConfigError(f"nce_layers must be increasing generator layer indices in 0..{n_layers_G - 1}")
        if self.highpass_kernel_size % 2 != 1 or self.highpass_sigma <= 0:
            raise ConfigError("highpass_kernel_size must be odd and highpass_sigma positive")
        if self.nce_T <= 0:
            raise ConfigError("nce_T must be positive")

    def generator_length(self) -> int:
        """Number of entries in the generator's flat `model` sequence (CUT's indexing)."""
        down = 3 if self.variant == "stride2" else 4
        up = 3 if self.variant == "stride2" else 4
        return 4 + 2 * down + self.n_blocks + 2 * up + 3

    def encoder_end(self) -> int:
        """Index one past the last residual block: layers [0, encoder_end) form the encoder."""
        down = 3 if self.variant == "stride2" else 4
        return 4 + 2 * down + self.n_blocks


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and data settings (CUT's defaults unless noted in docs/method.md)."""

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_epochs: int = 200
    n_epochs_decay: int = 200
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    batch_size: int = 1
    seed: int = 0
    save_epoch_freq: int = 5
    # Stop after this many iterations in total (0 = no limit); useful for smoke runs and benchmarks.
    max_steps: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0 or not (0 <= self.beta1 < 1) or not (0 <= self.beta2 < 1):
            raise ConfigError("lr must be positive and betas in [0, 1)")
        if self.n_epochs < 0 or self.n_epochs_decay < 0 or self.n_epochs + self.n_epochs_decay < 1:
            raise ConfigError("n_epochs + n_epochs_decay must be at least 1")
        if self.crop_size < 16 or self.load_size < self.crop_size:
            raise ConfigError(f"need 16 <= crop_size <= load_size, got crop {self.crop_size}, load {self.load_size}")
        if self.batch_size < 1 or self.save_epoch_freq < 1 or self.max_steps < 0:
            raise ConfigError("batch_size and save_epoch_freq must be >= 1, max_steps >= 0")

    @property
    def total_epochs(self) -> int:
        return self.n_epochs + self.n_epochs_decay


def lr_factor(epoch: int, cfg: TrainConfig) -> float:
    """CUT's 'linear' policy for 1-based `epoch`: constant for n_epochs, then linear decay towards 0."""
    return 1.0 - max(0, epoch - cfg.n_epochs) / float(cfg.n_epochs_decay + 1)


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass(frozen=True)
class RunConfig:
    """What is saved next to checkpoints: enough to rebuild the networks and continue training."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {"model": dataclasses.asdict(self.model), "train": dataclasses.asdict(self.train)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        return cls(model=model_config_from_dict(data.get("model", {})),
                   train=_from_dict(TrainConfig, data.get("train", {})))

    def save(self, path: str | Path) -> None:
        from singan_common.fsutil import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read run config: {exc}") from None
        return cls.from_dict(data)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    return _from_dict(ModelConfig, data)


def _from_dict(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} keys: {', '.join(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**kwargs)
