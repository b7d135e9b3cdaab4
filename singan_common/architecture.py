"""The networks' layer plan, computed without a framework.

Both framework packages, the converter and the randomness plan need to know, before running anything, the
kind of every generator layer, its output channels and its spatial size for an input size (to draw patch
ids, size the F MLPs eagerly, and check checkpoints). This module is the single source of that knowledge;
it follows CUT's ResnetGenerator / NLayerDiscriminator indexing exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from singan_common.config import ModelConfig

# Generator stride-2 stages: CUT hard-codes two downsamplings and two upsamplings.
N_DOWNSAMPLING = 2
# Inputs whose sides are multiples of this come out of the generator at the same size (both variants).
SIZE_MULTIPLE = 2 ** N_DOWNSAMPLING
VGG16_PLAN = (64, 64, "M", 128, 128, "M", 256, 256, 256)  # torchvision cfg "D" up to relu3_3


@dataclass(frozen=True)
class Layer:
    """One entry of a flat `model` sequence: kind, output channels, and how it changes spatial size."""

    kind: str  # reflect_pad | conv | conv_transpose | norm | relu | lrelu | downsample | upsample | resblock | tanh
    out_channels: int
    pad: int = 0  # reflect_pad: added on each side
    kernel: int = 0
    stride: int = 1
    padding: int = 0
    bias: bool = False


def use_bias(cfg: ModelConfig) -> bool:
    """CUT gives convs a bias only when followed by an (affine-free) instance norm."""
    return cfg.norm == "instance"


def generator_plan(cfg: ModelConfig) -> list[Layer]:
    """CUT's ResnetGenerator as a flat list; index i is `model.i`."""
    b, ngf = use_bias(cfg), cfg.ngf
    plan = [Layer("reflect_pad", cfg.input_nc, pad=3), Layer("conv", ngf, kernel=7, bias=b), Layer("norm", ngf),
            Layer("relu", ngf)]
    for i in range(N_DOWNSAMPLING):
        c = ngf * 2 ** (i + 1)
        if cfg.variant == "stride2":
            plan += [Layer("conv", c, kernel=3, stride=2, padding=1, bias=b), Layer("norm", c), Layer("relu", c)]
        else:
            plan += [Layer("conv", c, kernel=3, padding=1, bias=b), Layer("norm", c), Layer("relu", c),
                     Layer("downsample", c)]
    c = ngf * 2 ** N_DOWNSAMPLING
    plan += [Layer("resblock", c, bias=b) for _ in range(cfg.n_blocks)]
    for i in range(N_DOWNSAMPLING):
        c = ngf * 2 ** (N_DOWNSAMPLING - i - 1)
        if cfg.variant == "stride2":
            plan += [Layer("conv_transpose", c, kernel=3, stride=2, padding=1, bias=b), Layer("norm", c),
                     Layer("relu", c)]
        else:
            plan += [Layer("upsample", 2 * c), Layer("conv", c, kernel=3, padding=1, bias=b), Layer("norm", c),
                     Layer("relu", c)]
    plan += [Layer("reflect_pad", ngf, pad=3), Layer("conv", cfg.output_nc, kernel=7, bias=True),
             Layer("tanh", cfg.output_nc)]
    assert len(plan) == cfg.generator_length()
    return plan


def discriminator_plan(cfg: ModelConfig) -> list[Layer]:
    """CUT's NLayerDiscriminator (PatchGAN) as a flat list; index i is `model.i`."""
    b, ndf, aa = use_bias(cfg), cfg.ndf, cfg.variant == "antialias"
    plan = [Layer("conv", ndf, kernel=4, stride=1 if aa else 2, padding=1, bias=True), Layer("lrelu", ndf)]
    if aa:
        plan.append(Layer("downsample", ndf))
    mult = 1
    for n in range(1, cfg.n_layers_D):
        mult = min(2 ** n, 8)
        c = ndf * mult
        plan += [Layer("conv", c, kernel=4, stride=1 if aa else 2, padding=1, bias=b), Layer("norm", c),
                 Layer("lrelu", c)]
        if aa:
            plan.append(Layer("downsample", c))
    c = ndf * min(2 ** cfg.n_layers_D, 8)
    plan += [Layer("conv", c, kernel=4, padding=1, bias=b), Layer("norm", c), Layer("lrelu", c),
             Layer("conv", 1, kernel=4, padding=1, bias=True)]
    return plan


def feature_shapes(cfg: ModelConfig, height: int, width: int) -> list[tuple[int, int, int]]:
    """(C, H, W) after each generator layer for an input of height x width."""
    shapes, h, w = [], height, width
    for layer in generator_plan(cfg):
        if layer.kind == "reflect_pad":
            h, w = h + 2 * layer.pad, w + 2 * layer.pad
        elif layer.kind in ("conv", "conv_transpose"):
            if layer.kind == "conv":
                h = (h + 2 * layer.padding - layer.kernel) // layer.stride + 1
                w = (w + 2 * layer.padding - layer.kernel) // layer.stride + 1
            else:  # output_padding 1 doubles the size exactly
                h, w = h * layer.stride, w * layer.stride
        elif layer.kind == "downsample":
            h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        elif layer.kind == "upsample":
            h, w = 2 * h, 2 * w
        if h < 1 or w < 1:
            raise ValueError(f"input {width}x{height} is too small for the generator")
        shapes.append((layer.out_channels, h, w))
    return shapes


def nce_channels(cfg: ModelConfig) -> list[int]:
    """Input width of each PatchSampleF MLP (channels of the generator at each NCE layer)."""
    plan = generator_plan(cfg)
    return [plan[i].out_channels for i in cfg.nce_layers]


def nce_positions(cfg: ModelConfig, height: int, width: int) -> list[int]:
    """H*W of each NCE layer's feature map: the range patch ids are drawn from."""
    shapes = feature_shapes(cfg, height, width)
    return [shapes[i][1] * shapes[i][2] for i in cfg.nce_layers]


def encoder_positions(cfg: ModelConfig, height: int, width: int) -> int:
    """H*W of the encoder output (after the last residual block): the range MMD samples are drawn from."""
    _, h, w = feature_shapes(cfg, height, width)[cfg.encoder_end() - 1]
    return h * w


def output_size(cfg: ModelConfig, height: int, width: int) -> tuple[int, int]:
    """Generator output (H, W); equal to the input only when both are multiples of size_multiple()."""
    _, h, w = feature_shapes(cfg, height, width)[-1]
    return h, w
