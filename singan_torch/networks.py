"""SinGAN-Dehaze networks in PyTorch: CUT's ResnetGenerator, NLayerDiscriminator, PatchSampleF, plus the
VGG16 feature extractor and the Gaussian high-pass filter used by the losses.

Every network is built from singan_common.architecture's layer plan, so its `state_dict()` keys and shapes
are CUT's (a `latest_net_*.pth` from any CUT-based training loads with strict=True) and singan_ms builds
the same plan with the same names. Weights are initialised from singan_common.rng's numpy draws.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from singan_common import architecture as arch
from singan_common.config import ModelConfig
from singan_common.filters import binomial_filter, gaussian_kernel1d
from singan_common.rng import ParamSpec, init_tensors


class Downsample(nn.Module):
    """CUT's anti-aliased downsampling: reflect pad 1, fixed 3x3 binomial blur, stride 2 (depthwise)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        # Persistent, as in CUT, so CUT checkpoints (which contain it) load with strict=True.
        self.register_buffer("filt", torch.from_numpy(binomial_filter(3)).repeat(channels, 1, 1, 1))
        self.pad = nn.ReflectionPad2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.pad(x), self.filt, stride=2, groups=self.channels)


class Upsample(nn.Module):
    """CUT's anti-aliased upsampling: replicate pad 1, depthwise transposed 4x4 binomial blur, stride 2, crop."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", torch.from_numpy(binomial_filter(4) * 4.0).repeat(channels, 1, 1, 1))
        self.pad = nn.ReplicationPad2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose2d(self.pad(x), self.filt, stride=2, padding=2, groups=self.channels)
        return out[:, :, 1:-1, 1:-1]


def make_norm(cfg: ModelConfig, channels: int) -> nn.Module:
    if cfg.norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if cfg.norm == "batch":
        return nn.BatchNorm2d(channels, momentum=cfg.bn_momentum, affine=True, track_running_stats=True)
    return nn.Identity()


class ResnetBlock(nn.Module):
    """pad-conv-norm-relu-pad-conv-norm with a skip connection; `conv_block.N` indices as CUT."""

    def __init__(self, cfg: ModelConfig, dim: int, bias: bool) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=bias), make_norm(cfg, dim), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, padding=0, bias=bias), make_norm(cfg, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def build_layer(cfg: ModelConfig, layer: arch.Layer, in_channels: int) -> nn.Module:
    """One plan entry as a torch module. ReLUs are not in-place (CUT's are): see docs/method.md, NCE layers."""
    k = layer.kind
    if k == "reflect_pad":
        return nn.ReflectionPad2d(layer.pad)
    if k == "conv":
        return nn.Conv2d(in_channels, layer.out_channels, layer.kernel, stride=layer.stride, padding=layer.padding,
                         bias=layer.bias)
    if k == "conv_transpose":
        return nn.ConvTranspose2d(in_channels, layer.out_channels, layer.kernel, stride=layer.stride,
                                  padding=layer.padding, output_padding=1, bias=layer.bias)
    if k == "norm":
        return make_norm(cfg, layer.out_channels)
    if k == "relu":
        return nn.ReLU()
    if k == "lrelu":
        return nn.LeakyReLU(0.2)
    if k == "downsample":
        return Downsample(layer.out_channels)
    if k == "upsample":
        return Upsample(layer.out_channels)
    if k == "resblock":
        return ResnetBlock(cfg, layer.out_channels, layer.bias)
    if k == "tanh":
        return nn.Tanh()
    raise ValueError(f"unknown layer kind {k!r}")


def build_sequence(cfg: ModelConfig, plan: list[arch.Layer], in_channels: int) -> nn.Sequential:
    layers, c = [], in_channels
    for layer in plan:
        layers.append(build_layer(cfg, layer, c))
        c = layer.out_channels
    return nn.Sequential(*layers)


class ResnetGenerator(nn.Module):
    """CUT's ResnetGenerator (resnet_9blocks by default), both variants, with feature taps for PatchNCE/MMD."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = build_sequence(cfg, arch.generator_plan(cfg), cfg.input_nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def forward_with_features(self, x: torch.Tensor,
                              layers: tuple[int, ...]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output and the outputs of `layers` in one pass (CUT computes them in two identical passes)."""
        feats = []
        for i, layer in enumerate(self.model):
            x = layer(x)
            if i in layers:
                feats.append(x)
        return x, feats

    def encode_features(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Outputs of `layers`, stopping after the last one (CUT's encode_only)."""
        feats = []
        for i, layer in enumerate(self.model[: max(layers) + 1]):
            x = layer(x)
            if i in layers:
                feats.append(x)
        return feats

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder (layers before the first upsampling): g(.) of the MMD style loss."""
        return self.model[: self.cfg.encoder_end()](x)


class NLayerDiscriminator(nn.Module):
    """CUT's PatchGAN discriminator; antialiased like the generator in the antialias variant (as CUT)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = build_sequence(cfg, arch.discriminator_plan(cfg), cfg.output_nc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Normalize(nn.Module):
    """CUT's L2 normalisation: x / (||x||_2 + 1e-7) over dim 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(1, keepdim=True).pow(0.5)
        return x.div(norm + 1e-7)


class PatchSampleF(nn.Module):
    """CUT's PatchSampleF (mlp_sample) with its MLPs built eagerly from the generator config."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.l2norm = Normalize()
        self.num_mlps = len(cfg.nce_layers)
        for i, c in enumerate(arch.nce_channels(cfg)):
            setattr(self, f"mlp_{i}", nn.Sequential(nn.Linear(c, cfg.netF_nc), nn.ReLU(),
                                                     nn.Linear(cfg.netF_nc, cfg.netF_nc)))

    def forward(self, feats: list[torch.Tensor], patch_ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sample the same positions from every image of the batch: (B * P, netF_nc) per layer."""
        out = []
        for i, (feat, ids) in enumerate(zip(feats, patch_ids, strict=True)):
            # Index the contiguous (B, C, H*W) view, then permute: identical values, but the gradient reaching
            # the feature map is contiguous. A channels-last-strided gradient (permute first) makes torch 2.14's
            # CPU InstanceNorm2d backward wrong for batch size 1 (tests/test_ms_losses.py pins it).
            sample = feat.flatten(2)[:, :, ids].permute(0, 2, 1).flatten(0, 1)
            out.append(self.l2norm(getattr(self, f"mlp_{i}")(sample)))
        return out


class VGG16Features(nn.Module):
    """torchvision's vgg16 `features` up to relu3_3 (index 15), keys `features.N.*` as torchvision's.

    Takes images in [-1, 1] and applies ImageNet normalisation itself."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in arch.VGG16_PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, int(v), kernel_size=3, padding=1), nn.ReLU()]
                c = int(v)
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        x = ((x + 1.0) * 0.5 - self.mean) / self.std
        feats = []
        for i, layer in enumerate(self.features[: max(layers) + 1]):
            x = layer(x)
            if i in layers:
                feats.append(x)
        return feats


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GaussianHighPass(nn.Module):
    """x - GaussianBlur(x): depthwise separable Gaussian with reflect padding (high-frequency 'style')."""

    def __init__(self, channels: int, kernel_size: int, sigma: float) -> None:
        super().__init__()
        self.channels, self.pad_size = channels, kernel_size // 2
        k = torch.from_numpy(gaussian_kernel1d(kernel_size, sigma))
        self.register_buffer("kernel_h", k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), persistent=False)
        self.register_buffer("kernel_v", k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), persistent=False)
        self.pad = nn.ReflectionPad2d(self.pad_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blur = F.conv2d(self.pad(x), self.kernel_h, groups=self.channels)
        blur = F.conv2d(blur, self.kernel_v, groups=self.channels)
        return x - blur


# -------------------------------------------------------------------------------------------------------------
# Initialisation from the numpy randomness plan
# -------------------------------------------------------------------------------------------------------------


def param_specs(net: nn.Module) -> list[ParamSpec]:
    """Every parameter of `net` with its initialisation kind, walked by layer type."""
    specs = []
    for mod_name, mod in net.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(mod, nn.ConvTranspose2d):
            kind = "conv_transpose"
        elif isinstance(mod, nn.Conv2d):
            kind = "conv"
        elif isinstance(mod, nn.Linear):
            kind = "linear"
        elif isinstance(mod, nn.BatchNorm2d):
            specs += [ParamSpec(prefix + "weight", "norm_weight", tuple(mod.weight.shape)),
                      ParamSpec(prefix + "bias", "norm_bias", tuple(mod.bias.shape))]
            continue
        else:
            continue
        specs.append(ParamSpec(prefix + "weight", kind, tuple(mod.weight.shape)))
        if mod.bias is not None:
            specs.append(ParamSpec(prefix + "bias", "bias", tuple(mod.bias.shape)))
    return specs


@torch.no_grad()
def init_weights(net: nn.Module, seed: int, net_name: str, gain: float) -> None:
    """Overwrite every learnable tensor of `net` with singan_common's numpy draws (same seed, same weights
    as singan_ms)."""
    values = init_tensors(seed, net_name, param_specs(net), gain)
    params = dict(net.named_parameters())
    for name, value in values.items():
        params[name].copy_(torch.from_numpy(value))


def define_G(cfg: ModelConfig, seed: int) -> ResnetGenerator:
    net = ResnetGenerator(cfg)
    init_weights(net, seed, "G", cfg.init_gain)
    return net


def define_D(cfg: ModelConfig, seed: int) -> NLayerDiscriminator:
    net = NLayerDiscriminator(cfg)
    init_weights(net, seed, "D", cfg.init_gain)
    return net


def define_F(cfg: ModelConfig, seed: int) -> PatchSampleF:
    net = PatchSampleF(cfg)
    init_weights(net, seed, "F", cfg.init_gain)
    return net


def define_vgg(seed: int, weights: str | Path | None = None) -> VGG16Features:
    """VGG16 features, frozen. Pretrained weights come from a torchvision vgg16 state_dict file; without one
    the network is random (seeded) and a warning says that the perceptual loss is then meaningless."""
    net = VGG16Features()
    if weights is None:
        warnings.warn("no --vgg-weights given: the perceptual loss runs on RANDOM VGG16 weights (seeded). "
                      "Pass torchvision's vgg16 ImageNet state_dict for a meaningful perceptual loss.",
                      stacklevel=2)
        # Kaiming-like scale (xavier with ReLU gain) keeps random features from vanishing through 7 convs.
        init_weights(net, seed, "vgg16", math.sqrt(2.0))
    else:
        net.load_state_dict(load_vgg_state(weights))
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


class WeightsError(ValueError):
    """A weights file that does not hold what it should; the message names the file."""


def load_vgg_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The `features.N` tensors up to relu3_3 from a torchvision vgg16 state_dict (.pth or .safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: VGG16 weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault; say which file
        raise WeightsError(f"{path}: cannot read VGG16 weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state_dict, found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    wanted = VGG16Features().state_dict()
    missing = [k for k in wanted if k not in state]
    if missing:
        raise WeightsError(f"{path}: not a torchvision vgg16 state_dict; missing {', '.join(missing[:4])}")
    bad = [k for k in wanted if tuple(state[k].shape) != tuple(wanted[k].shape)]
    if bad:
        raise WeightsError(f"{path}: shape mismatch for {', '.join(bad[:4])} (not vgg16?)")
    return {k: state[k].float() for k in wanted}


def to_numpy_state(net: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
