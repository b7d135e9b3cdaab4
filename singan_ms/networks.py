"""SinGAN-Dehaze networks in MindSpore: CUT's ResnetGenerator, NLayerDiscriminator, PatchSampleF, plus the
VGG16 feature extractor and the Gaussian high-pass filter used by the losses.

Mirrors singan_torch/networks.py class by class, built from the same singan_common.architecture plan, so
parameter names are PyTorch's (`model.1.weight`, `mlp_0.0.weight`, `features.0.weight`) except MindSpore's
BatchNorm names (gamma / beta / moving_mean / moving_variance). Every layer computes the same function as its
torch counterpart; docs/porting.md ("singan_ms layer by layer") lists each difference handled and its test.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops

from singan_common import architecture as arch
from singan_common.config import ModelConfig
from singan_common.filters import binomial_filter, gaussian_kernel1d
from singan_common.rng import ParamSpec, init_tensors
from singan_ms import native


def fixed_filter(value: np.ndarray, name: str) -> Parameter:
    """A non-trainable Parameter: part of the state (so CUT's `...filt` keys line up), never optimised."""
    return Parameter(Tensor(np.ascontiguousarray(value, np.float32)), name=name, requires_grad=False)


class Downsample(nn.Cell):
    """CUT's anti-aliased downsampling: reflect pad 1, fixed 3x3 binomial blur, stride 2 (depthwise)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        # Kept as a Parameter named `filt` (requires_grad False) like CUT's persistent buffer, so converted CUT
        # checkpoints load with every key accounted for; the value is rebuilt here, never trusted from a file.
        self.filt = fixed_filter(np.tile(binomial_filter(3)[None, None], (channels, 1, 1, 1)), "filt")
        self.pad = ReflectionPad2d(1)

    def construct(self, x: Tensor) -> Tensor:
        return ops.conv2d(self.pad(x), self.filt, stride=2, groups=self.channels)


class Upsample(nn.Cell):
    """CUT's anti-aliased upsampling: replicate pad 1, depthwise transposed 4x4 binomial blur, stride 2, crop."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.filt = fixed_filter(np.tile(binomial_filter(4)[None, None] * 4.0, (channels, 1, 1, 1)), "filt")
        self.pad = nn.ReplicationPad2d(1)
        # The primitive, not nn.Conv2dTranspose, so the only state is `filt` (no extra `weight` key).
        self.conv_t = ops.Conv2DTranspose(out_channel=channels, kernel_size=4, mode=1, pad_mode="pad", pad=2,
                                          stride=2, group=channels)

    def construct(self, x: Tensor) -> Tensor:
        x = self.pad(x)
        n, _, h, w = x.shape
        # torch's conv_transpose2d size for k4 s2 p2: (h - 1) * 2 - 4 + 4 = 2h - 2
        out = self.conv_t(x, self.filt, (n, self.channels, 2 * h - 2, 2 * w - 2))
        return out[:, :, 1:-1, 1:-1]


class InstanceNorm2d(nn.Cell):
    """torch.nn.InstanceNorm2d(affine=False, track_running_stats=False), eps 1e-5. No parameters, so the state dict
    stays torch's.

    On CPU with singan_ms.native's compiled kernels: NativeInstanceNorm, in training and inference (4-5x faster
    than MindSpore's GroupNorm and at least as accurate: statistics in float64, one rounding). Otherwise
    GroupNorm with one group per channel, the same normalisation (per sample, per channel, biased variance);
    nn.InstanceNorm2d is unsupported on CPU. The kernel was kept out of training until 2026-12-01 because tests
    comparing with torch failed with it; the failures were float32 kinks (ReLU / LeakyReLU inputs within 1e-8 of
    zero, whose side flips with any one-ulp change elsewhere), not the kernel: docs/benchmarks.md has the
    measurements."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features, self.eps = num_features, eps
        # The kernel has torch's default eps built in.
        self.use_kernel = eps == 1e-5 and native.library() is not None
        self.kernel = NativeInstanceNorm() if self.use_kernel else None

    def construct(self, x: Tensor) -> Tensor:
        if self.use_kernel:
            return self.kernel(x)
        return mint.nn.functional.group_norm(x, self.num_features, eps=self.eps)


class NativeInstanceNorm(nn.Cell):
    """Instance norm (eps 1e-5, float32) by singan_ms.native's compiled kernels. The forward kernel also returns
    each plane's mean and 1/std (float64), which the backward reuses: two passes over the data instead of five
    (the backward took 155 ms of the 256 px train step where torch's takes 42). The statistics reach the backward
    through StatsInstanceNorm's cell-level bprop, whose `out` is the output of the call being differentiated; an
    AOT op's own bprop is handed the outputs of the op's latest call instead (wrong once a layer runs twice a
    step)."""

    def __init__(self) -> None:
        super().__init__()
        self.with_stats = StatsInstanceNorm()

    def construct(self, x: Tensor) -> Tensor:
        return self.with_stats(x)[0]


class StatsInstanceNorm(nn.Cell):
    """x -> (instance norm of x, (N * C, 2) float64 mean and 1/std); its bprop differentiates the first output.
    Defined on the class, because PyNative ignores a bprop attached to an instance."""

    def __init__(self) -> None:
        super().__init__()
        self.forward_kernel = native.custom("InstanceNormFwd", out_shape=lambda x: (x, [x[0] * x[1], 2]),
                                            out_dtype=lambda x: (x, ms.float64))
        self.backward_kernel = native.custom("InstanceNormBwd", out_shape=lambda x, dy, s: x,
                                             out_dtype=lambda x, dy, s: x)

    def construct(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_kernel(x)

    def bprop(self, x: Tensor, out: tuple[Tensor, Tensor], dout: tuple[Tensor, Tensor]) -> tuple[Tensor]:
        return (self.backward_kernel(x, dout[0], out[1]),)


class ReflectionPad2d(nn.ReflectionPad2d):
    """nn.ReflectionPad2d by `padding` on every side (torch's ReflectionPad2d(int)); on CPU, of 4-D inputs, by
    NativeReflectionPad when singan_ms.native's kernels are available: MindSpore's MirrorPadGrad took 200 ms of
    the 256 px train step where torch's backward takes 60 (docs/benchmarks.md)."""

    def __init__(self, padding: int) -> None:
        super().__init__(padding)
        self.kernel = NativeReflectionPad(padding) if native.library() is not None else None

    def construct(self, x: Tensor) -> Tensor:
        if self.kernel is None or x.ndim != 4:
            return super().construct(x)
        return self.kernel(x)


class NativeReflectionPad(nn.Cell):
    """Reflection padding of (N, C, H, W) by singan_ms.native's kernels; the backward adds the mirrored gradients
    in torch's order (bit-identical to torch's CPU backward). Cell-level bprop, as NativeInstanceNorm."""

    def __init__(self, padding: int) -> None:
        super().__init__()
        self.forward_kernel = native.custom(
            "ReflectionPadFwd", out_shape=lambda x: [x[0], x[1], x[2] + 2 * padding, x[3] + 2 * padding],
            out_dtype=lambda x: x, key=f"pad {padding}")
        self.backward_kernel = native.custom("ReflectionPadBwd", out_shape=lambda dy, x: x,
                                             out_dtype=lambda dy, x: x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_kernel(x)

    def bprop(self, x: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor]:
        return (self.backward_kernel(dout, x),)


class MaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (torchvision VGG16's 2x2, stride 2); on CPU, of 4-D inputs, by NativeMaxPool2d when
    singan_ms.native's kernels are available: MindSpore's MaxPoolGrad took 41 ms of the 256 px train step where
    torch's backward takes 2 (docs/benchmarks.md)."""

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__(kernel_size=kernel_size, stride=stride)
        fits = kernel_size == 2 and stride == 2
        self.kernel = NativeMaxPool2d() if fits and native.library() is not None else None

    def construct(self, x: Tensor) -> Tensor:
        if self.kernel is None or x.ndim != 4:
            return super().construct(x)
        return self.kernel(x)


class NativeMaxPool2d(nn.Cell):
    """2x2 stride-2 max pooling (floor mode) of (N, C, H, W) by singan_ms.native's kernels; the backward sends each
    window's gradient to the element torch's CPU kernel picks (first maximum in scan order, NaN wins), so both
    directions equal torch's bit for bit. Cell-level bprop, as NativeInstanceNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.forward_kernel = native.custom("MaxPoolFwd", out_shape=lambda x: [x[0], x[1], x[2] // 2, x[3] // 2],
                                            out_dtype=lambda x: x)
        self.backward_kernel = native.custom("MaxPoolBwd", out_shape=lambda x, dy: x, out_dtype=lambda x, dy: x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_kernel(x)

    def bprop(self, x: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor]:
        return (self.backward_kernel(x, dout),)


class LeakyReLU(nn.LeakyReLU):
    """nn.LeakyReLU; on CPU by NativeLeakyReLU when singan_ms.native's kernels are available: MindSpore computes
    it as Maximum(x, alpha x), whose gradient is two Selects (37 ms of the train step; torch's backward: 2)."""

    def __init__(self, alpha: float) -> None:
        super().__init__(alpha)
        self.kernel = NativeLeakyReLU(alpha) if native.library() is not None else None

    def construct(self, x: Tensor) -> Tensor:
        if self.kernel is None:
            return super().construct(x)
        return self.kernel(x)


class NativeLeakyReLU(nn.Cell):
    """torch's leaky_relu and its backward (x > 0 ? x : alpha x; x > 0 ? dy : alpha dy) by singan_ms.native's
    kernels, bit-identical to torch's CPU results. Cell-level bprop, as NativeInstanceNorm."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.slope = Tensor(np.array([alpha], np.float32))
        self.forward_kernel = native.custom("LeakyReluFwd", out_shape=lambda x, s: x, out_dtype=lambda x, s: x)
        self.backward_kernel = native.custom("LeakyReluBwd", out_shape=lambda x, dy, s: x,
                                             out_dtype=lambda x, dy, s: x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_kernel(x, self.slope)

    def bprop(self, x: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor]:
        return (self.backward_kernel(x, dout, self.slope),)


class NativeBiasAdd(nn.Cell):
    """x + bias[c] over axis 1 by singan_ms.native's kernels; the bias gradient sums dout in double. MindSpore's
    broadcast add and its ReduceSum gradient took 28 ms of the train step for the two transposed convolutions'
    biases. Cell-level bprop, as NativeInstanceNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.forward_kernel = native.custom("BiasAddFwd", out_shape=lambda x, b: x, out_dtype=lambda x, b: x)
        self.backward_kernel = native.custom("BiasAddBwd", out_shape=lambda dy: [dy[1]], out_dtype=lambda dy: dy)

    def construct(self, x: Tensor, bias: Tensor) -> Tensor:
        return self.forward_kernel(x, bias)

    def bprop(self, x: Tensor, bias: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor, Tensor]:
        return dout, self.backward_kernel(dout)


class Identity(nn.Cell):
    def construct(self, x: Tensor) -> Tensor:
        return x


class Tanh(nn.Cell):
    """Accurate tanh: MindSpore's CPU tanh errs up to 1e-4 for |x| in [4, 6) and can exceed 1.

    tanh(|x|) = -m / (2 + m) with m = expm1(-2|x|) keeps full float32 precision (1.5e-7 against torch); the
    backward is torch's, 1 - y^2, so gradients match too."""

    def construct(self, x: Tensor) -> Tensor:
        m = ops.expm1(-2.0 * ops.abs(x))
        return ops.sign(x) * (-m / (2.0 + m))

    def bprop(self, x: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor]:
        return (dout * (1.0 - out * out),)


def make_norm(cfg: ModelConfig, channels: int) -> nn.Cell:
    if cfg.norm == "instance":
        return InstanceNorm2d(channels)
    if cfg.norm == "batch":
        # MindSpore's momentum weighs the running value: 1 - torch's.
        return nn.BatchNorm2d(channels, momentum=1.0 - cfg.bn_momentum, eps=1e-5, affine=True)
    return Identity()


def conv_attrs(stride: tuple[int, int], padding: tuple[int, int, int, int]) -> tuple[Tensor, str, Callable]:
    """For csrc/conv.cc: the attrs tensor it reads (stride h, w; padding top, left, bottom, right), the key that
    tells MindSpore's shape cache this geometry from others (native.custom), and the convolution's out_shape."""
    (sh, sw), (top, bottom, left, right) = stride, padding

    def out_shape(x: list[int], w: list[int], *_: list[int]) -> list[int]:
        return [x[0], w[0], (x[2] + top + bottom - w[2]) // sh + 1, (x[3] + left + right - w[3]) // sw + 1]

    attrs = Tensor(np.array([sh, sw, top, left, bottom, right], np.int64))
    return attrs, f"stride {sh} {sw} padding {top} {bottom} {left} {right}", out_shape


class NativeConv2d(nn.Cell):
    """A bias-free 2-D convolution (groups 1, dilation 1) by singan_ms.native's oneDNN route (csrc/conv.cc): the
    kernels torch runs, instead of MindSpore's Conv2D, which on CPU is 2-3x slower (docs/benchmarks.md). Called
    with the weight as an argument, so the owning layer keeps its Parameters and their names; a cell-level bprop
    (defined on the class, as NativeInstanceNorm's) returns the data and weight gradients."""

    def __init__(self, stride: tuple[int, int], padding: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.attrs, key, out_shape = conv_attrs(stride, padding)
        self.forward_kernel = native.custom("ConvFwd", out_shape=out_shape, out_dtype=lambda x, w, a: x, key=key)
        self.data_kernel = native.custom("ConvBwdData", out_shape=lambda dy, w, x, a: x,
                                         out_dtype=lambda dy, w, x, a: dy)
        self.weight_kernel = native.custom("ConvBwdWeights", out_shape=lambda x, dy, w, a: w,
                                           out_dtype=lambda x, dy, w, a: w)

    def construct(self, x: Tensor, weight: Tensor) -> Tensor:
        return self.forward_kernel(x, weight, self.attrs)

    def bprop(self, x: Tensor, weight: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor, Tensor]:
        return (self.data_kernel(dout, weight, x, self.attrs), self.weight_kernel(x, dout, weight, self.attrs))


class NativeConv2dBias(NativeConv2d):
    """NativeConv2d with the bias added inside the primitive (as torch's oneDNN call does) and its gradient."""

    def __init__(self, stride: tuple[int, int], padding: tuple[int, int, int, int]) -> None:
        super().__init__(stride, padding)
        _, key, out_shape = conv_attrs(stride, padding)
        self.forward_kernel = native.custom("ConvFwdBias", out_shape=out_shape, out_dtype=lambda x, w, b, a: x,
                                            key=key)
        self.weight_kernel = native.custom("ConvBwdWeightsBias", out_shape=lambda x, dy, w, a: (w, [w[0]]),
                                           out_dtype=lambda x, dy, w, a: (w, w))

    def construct(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        return self.forward_kernel(x, weight, bias, self.attrs)

    def bprop(self, x: Tensor, weight: Tensor, bias: Tensor, out: Tensor,
              dout: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        dw, db = self.weight_kernel(x, dout, weight, self.attrs)
        return self.data_kernel(dout, weight, x, self.attrs), dw, db


class NativeConvTranspose2d(nn.Cell):
    """A bias-free stride-s transposed convolution by the oneDNN route: the data gradient of the convolution with
    the same (in, out, kh, kw) weight, `padding` (top, bottom, left, right) being that convolution's
    (torch's padding, and padding - output_padding at the bottom / right)."""

    def __init__(self, stride: tuple[int, int], padding: tuple[int, int, int, int]) -> None:
        super().__init__()
        (sh, sw), (top, bottom, left, right) = stride, padding
        self.attrs, key, conv_shape = conv_attrs(stride, padding)

        def out_shape(x: list[int], w: list[int], *_: list[int]) -> list[int]:
            return [x[0], w[1], (x[2] - 1) * sh - top - bottom + w[2], (x[3] - 1) * sw - left - right + w[3]]

        self.forward_kernel = native.custom("ConvTransposeFwd", out_shape=out_shape, out_dtype=lambda x, w, a: x,
                                            key=key)
        self.data_kernel = native.custom("ConvFwd", out_shape=conv_shape, out_dtype=lambda dy, w, a: dy, key=key)
        self.weight_kernel = native.custom("ConvBwdWeights", out_shape=lambda dy, x, w, a: w,
                                           out_dtype=lambda dy, x, w, a: w)

    def construct(self, x: Tensor, weight: Tensor) -> Tensor:
        return self.forward_kernel(x, weight, self.attrs)

    def bprop(self, x: Tensor, weight: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor, Tensor]:
        return self.data_kernel(dout, weight, self.attrs), self.weight_kernel(dout, x, weight, self.attrs)


class Conv2d(nn.Conv2d):
    """nn.Conv2d with torch.nn.Conv2d's semantics (explicit zero padding, since MindSpore's default is 'same'; a
    bias), computed on CPU by NativeConv2d when singan_ms.native's convolutions are available."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel, stride=stride, pad_mode="pad", padding=padding,
                         has_bias=bias)
        self.native = None
        if native.convolutions():
            pads = (padding,) * 4
            self.native = NativeConv2dBias((stride, stride), pads) if bias else NativeConv2d((stride, stride), pads)

    def construct(self, x: Tensor) -> Tensor:
        if self.native is None:
            return super().construct(x)
        # value(): see native.custom. Without it the parity case train/trajectory fails (checked).
        return self.conv(x, self.weight.value(), self.bias.value() if self.has_bias else None)

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        """This layer's convolution with `weight` and `bias` in place of its Parameters (same shapes), for
        NLayerDiscriminator.construct_with."""
        if self.native is None:
            y = self.conv2d(x, weight)
            return y if bias is None else self.bias_add(y, bias)
        if bias is None:
            return self.native(x, weight)
        return self.native(x, weight, bias)


class Conv2dTranspose(nn.Conv2dTranspose):
    """torch.nn.ConvTranspose2d semantics including output_padding, which adds rows / columns at the bottom /
    right: MindSpore has no true output_padding, but padding (top p, bottom p - output_padding, left p,
    right p - output_padding) yields exactly torch's output.
    On CPU, computed by NativeConvTranspose2d when singan_ms.native's convolutions are available."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, padding: int,
                 output_padding: int, bias: bool = True) -> None:
        pads = (padding, padding - output_padding, padding, padding - output_padding)
        super().__init__(in_channels, out_channels, kernel, stride=stride, pad_mode="pad", padding=pads,
                         has_bias=bias)
        self.native = NativeConvTranspose2d((stride, stride), pads) if native.convolutions() else None
        self.native_bias = NativeBiasAdd() if self.native is not None and bias else None

    def construct(self, x: Tensor) -> Tensor:
        if self.native is None:
            return super().construct(x)
        y = self.native(x, self.weight.value())
        if self.has_bias:
            y = self.native_bias(y, self.bias.value())
        return y


def conv2d(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
           bias: bool = True) -> Conv2d:
    """torch.nn.Conv2d semantics (see Conv2d)."""
    return Conv2d(in_channels, out_channels, kernel, stride, padding, bias)


class ResnetBlock(nn.Cell):
    """pad-conv-norm-relu-pad-conv-norm with a skip connection; `conv_block.N` indices as CUT."""

    def __init__(self, cfg: ModelConfig, dim: int, bias: bool) -> None:
        super().__init__()
        self.conv_block = nn.SequentialCell(
            ReflectionPad2d(1), conv2d(dim, dim, 3, bias=bias), make_norm(cfg, dim), nn.ReLU(),
            ReflectionPad2d(1), conv2d(dim, dim, 3, bias=bias), make_norm(cfg, dim))

    def construct(self, x: Tensor) -> Tensor:
        return x + self.conv_block(x)


def build_layer(cfg: ModelConfig, layer: arch.Layer, in_channels: int) -> nn.Cell:
    """One plan entry as a MindSpore cell (the same function as singan_torch's module for that entry)."""
    k = layer.kind
    if k == "reflect_pad":
        return ReflectionPad2d(layer.pad)
    if k == "conv":
        return conv2d(in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding, layer.bias)
    if k == "conv_transpose":
        return Conv2dTranspose(in_channels, layer.out_channels, layer.kernel, layer.stride, layer.padding,
                               output_padding=1, bias=layer.bias)
    if k == "norm":
        return make_norm(cfg, layer.out_channels)
    if k == "relu":
        return nn.ReLU()
    if k == "lrelu":
        return LeakyReLU(0.2)
    if k == "downsample":
        return Downsample(layer.out_channels)
    if k == "upsample":
        return Upsample(layer.out_channels)
    if k == "resblock":
        return ResnetBlock(cfg, layer.out_channels, layer.bias)
    if k == "tanh":
        return Tanh()
    raise ValueError(f"unknown layer kind {k!r}")


def build_sequence(cfg: ModelConfig, plan: list[arch.Layer], in_channels: int) -> nn.SequentialCell:
    layers, c = [], in_channels
    for layer in plan:
        layers.append(build_layer(cfg, layer, c))
        c = layer.out_channels
    return nn.SequentialCell(layers)


class ResnetGenerator(nn.Cell):
    """CUT's ResnetGenerator (resnet_9blocks by default), both variants, with feature taps for PatchNCE/MMD."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = build_sequence(cfg, arch.generator_plan(cfg), cfg.input_nc)
        self.n_layers = len(self.model)
        self.encoder_end = cfg.encoder_end()

    def construct(self, x: Tensor) -> Tensor:
        return self.model(x)

    def forward_with_features(self, x: Tensor, layers: tuple[int, ...]) -> tuple[Tensor, list[Tensor]]:
        """Output and the outputs of `layers` in one pass (CUT computes them in two identical passes)."""
        feats = []
        for i in range(self.n_layers):
            x = self.model[i](x)
            if i in layers:
                feats.append(x)
        return x, feats

    def encode_features(self, x: Tensor, layers: tuple[int, ...]) -> list[Tensor]:
        """Outputs of `layers`, stopping after the last one (CUT's encode_only)."""
        feats = []
        for i in range(max(layers) + 1):
            x = self.model[i](x)
            if i in layers:
                feats.append(x)
        return feats

    def encode(self, x: Tensor) -> Tensor:
        """The encoder (layers before the first upsampling): g(.) of the MMD style loss."""
        for i in range(self.encoder_end):
            x = self.model[i](x)
        return x


class NLayerDiscriminator(nn.Cell):
    """CUT's PatchGAN discriminator; antialiased like the generator in the antialias variant (as CUT)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = build_sequence(cfg, arch.discriminator_plan(cfg), cfg.output_nc)
        # Parameters per layer that construct_with supplies: a convolution's weight (and bias), else none.
        self._conv_params = tuple((2 if c.has_bias else 1) if isinstance(c, Conv2d) else 0 for c in self.model)

    def construct(self, x: Tensor) -> Tensor:
        return self.model(x)

    @property
    def stateless(self) -> bool:
        """True when every trainable Parameter is a convolution's weight or bias and no layer is a BatchNorm (whose
        forward writes running statistics): then construct_with can stand in for construct with other weights."""
        stateful = any(isinstance(c, nn.BatchNorm2d) for c in self.model)
        return not stateful and sum(self._conv_params) == len(self.trainable_params())

    def construct_with(self, x: Tensor, weights: tuple[Tensor, ...]) -> Tensor:
        """construct(x) with `weights` (in trainable_params() order) in place of the Parameters; only when
        `stateless`. The train step evaluates the generator's GAN loss against D's updated weights this way,
        before writing them (singan_ms.model.TrainStep says why)."""
        k = 0
        for i in range(len(self.model)):
            n = self._conv_params[i]
            if n == 2:
                x = self.model[i].conv(x, weights[k], weights[k + 1])
            elif n == 1:
                x = self.model[i].conv(x, weights[k])
            else:
                x = self.model[i](x)
            k += n
        return x


class Normalize(nn.Cell):
    """CUT's L2 normalisation: x / (||x||_2 + 1e-7) over dim 1."""

    def construct(self, x: Tensor) -> Tensor:
        norm = ops.pow(ops.pow(x, 2).sum(1, keepdims=True), 0.5)
        return x / (norm + 1e-7)


class SamplePositions(nn.Cell):
    """(B, C, H, W) features and (K,) flattened spatial positions -> (B * K, C) feature vectors (CUT's
    permute-flatten-index). On CPU by NativeGatherPositions when singan_ms.native's kernels are available:
    MindSpore's Gather gradient along an inner axis transposes whole feature maps (30 ms of the train step)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = NativeGatherPositions() if native.library() is not None else None

    def construct(self, feat: Tensor, ids: Tensor) -> Tensor:
        b, c, h, w = feat.shape
        flat = feat.reshape(b, c, h * w)
        if self.kernel is None:
            return ops.gather(flat, ids, 2).transpose(0, 2, 1).reshape(-1, c)
        return self.kernel(flat, ids).reshape(-1, c)


class NativeGatherPositions(nn.Cell):
    """(B, C, P), (K,) ids -> (B, K, C), out[b, k, c] = feat[b, c, ids[k]], by singan_ms.native's kernels (copies
    both ways, so equal to the operator route); the backward scatters the rows back. Cell-level bprop, as
    NativeInstanceNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.forward_kernel = native.custom("GatherPositionsFwd", out_shape=lambda f, ids: [f[0], ids[0], f[1]],
                                            out_dtype=lambda f, ids: f)
        self.backward_kernel = native.custom("GatherPositionsBwd", out_shape=lambda dy, ids, f: f,
                                             out_dtype=lambda dy, ids, f: f)

    def construct(self, feat: Tensor, ids: Tensor) -> Tensor:
        return self.forward_kernel(feat, ids)

    def bprop(self, feat: Tensor, ids: Tensor, out: Tensor, dout: Tensor) -> tuple[Tensor, Tensor]:
        return self.backward_kernel(dout, ids, feat), ops.zeros_like(ids)


class PatchSampleF(nn.Cell):
    """CUT's PatchSampleF (mlp_sample) with its MLPs built eagerly from the generator config."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.l2norm = Normalize()
        self.num_mlps = len(cfg.nce_layers)
        mlps = []
        for i, c in enumerate(arch.nce_channels(cfg)):
            mlp = nn.SequentialCell(nn.Dense(c, cfg.netF_nc), nn.ReLU(), nn.Dense(cfg.netF_nc, cfg.netF_nc))
            setattr(self, f"mlp_{i}", mlp)
            mlps.append(mlp)
        # Graph mode cannot getattr by a computed name; a CellList would rename the parameters, so keep a plain
        # tuple of the already-registered cells (it adds no names).
        self._mlps = tuple(mlps)
        self.sample = SamplePositions()

    def construct(self, feats: list[Tensor], patch_ids: list[Tensor]) -> list[Tensor]:
        """Sample the same positions from every image of the batch: (B * P, netF_nc) per layer."""
        out = []
        for i in range(self.num_mlps):
            out.append(self.l2norm(self._mlps[i](self.sample(feats[i], patch_ids[i]))))
        return out


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG16Features(nn.Cell):
    """torchvision's vgg16 `features` up to relu3_3 (index 15), names `features.N.*` as torchvision's.

    Takes images in [-1, 1] and applies ImageNet normalisation itself."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Cell] = []
        c = 3
        for v in arch.VGG16_PLAN:
            if v == "M":
                layers.append(MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [conv2d(c, int(v), 3, padding=1), nn.ReLU()]
                c = int(v)
        self.features = nn.SequentialCell(layers)
        # Constants, not Parameters: torch registers them non-persistent, so they are in no state dict.
        self.mean = Tensor(np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1))
        self.std = Tensor(np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1))

    def construct(self, x: Tensor, layers: tuple[int, ...]) -> list[Tensor]:
        x = ((x + 1.0) * 0.5 - self.mean) / self.std
        feats = []
        for i in range(max(layers) + 1):
            x = self.features[i](x)
            if i in layers:
                feats.append(x)
        return feats


class GaussianHighPass(nn.Cell):
    """x - GaussianBlur(x): depthwise separable Gaussian with reflect padding (high-frequency 'style')."""

    def __init__(self, channels: int, kernel_size: int, sigma: float) -> None:
        super().__init__()
        self.channels, self.pad_size = channels, kernel_size // 2
        k = gaussian_kernel1d(kernel_size, sigma)
        self.kernel_h = Tensor(np.tile(k.reshape(1, 1, 1, -1), (channels, 1, 1, 1)))
        self.kernel_v = Tensor(np.tile(k.reshape(1, 1, -1, 1), (channels, 1, 1, 1)))
        self.pad = ReflectionPad2d(self.pad_size)

    def construct(self, x: Tensor) -> Tensor:
        blur = ops.conv2d(self.pad(x), self.kernel_h, groups=self.channels)
        blur = ops.conv2d(blur, self.kernel_v, groups=self.channels)
        return x - blur


# -------------------------------------------------------------------------------------------------------------
# Initialisation from the numpy randomness plan
# -------------------------------------------------------------------------------------------------------------

# MindSpore's BatchNorm names -> PyTorch's (the randomness plan and the converter speak PyTorch's).
NORM_TO_TORCH = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                 "moving_variance": "running_var"}


def torch_name(ms_name: str) -> str:
    """The PyTorch key of a MindSpore parameter name (differs only for BatchNorm)."""
    head, _, leaf = ms_name.rpartition(".")
    leaf = NORM_TO_TORCH.get(leaf, leaf)
    return f"{head}.{leaf}" if head else leaf


def param_specs(net: nn.Cell) -> list[ParamSpec]:
    """Every learnable parameter of `net` with its initialisation kind, walked by layer type, named as PyTorch."""
    specs = []
    for cell_name, cell in net.cells_and_names():
        prefix = f"{cell_name}." if cell_name else ""
        if isinstance(cell, nn.Conv2dTranspose):
            kind = "conv_transpose"
        elif isinstance(cell, nn.Conv2d):
            kind = "conv"
        elif isinstance(cell, nn.Dense):
            kind = "linear"
        elif isinstance(cell, nn.BatchNorm2d):
            specs += [ParamSpec(prefix + "weight", "norm_weight", tuple(cell.gamma.shape)),
                      ParamSpec(prefix + "bias", "norm_bias", tuple(cell.beta.shape))]
            continue
        else:
            continue
        specs.append(ParamSpec(prefix + "weight", kind, tuple(cell.weight.shape)))
        if cell.has_bias:
            specs.append(ParamSpec(prefix + "bias", "bias", tuple(cell.bias.shape)))
    return specs


def init_weights(net: nn.Cell, seed: int, net_name: str, gain: float) -> None:
    """Overwrite every learnable tensor of `net` with singan_common's numpy draws (same seed, same weights
    as singan_torch, bit for bit)."""
    values = init_tensors(seed, net_name, param_specs(net), gain)
    params = {torch_name(name): p for name, p in net.parameters_and_names()}
    for name, value in values.items():
        params[name].set_data(Tensor(value))


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
    """VGG16 features, frozen. Pretrained weights come from a torchvision vgg16 state_dict saved as
    .safetensors or a MindSpore .ckpt (singan_ms cannot read .pth: that would need torch); without one the
    network is random (seeded) and a warning says that the perceptual loss is then meaningless."""
    net = VGG16Features()
    if weights is None:
        warnings.warn("no --vgg-weights given: the perceptual loss runs on RANDOM VGG16 weights (seeded). "
                      "Pass torchvision's vgg16 ImageNet weights (.safetensors) for a meaningful perceptual loss.",
                      stacklevel=2)
        init_weights(net, seed, "vgg16", math.sqrt(2.0))
    else:
        load_into(net, load_vgg_state(weights), Path(weights))
    net.set_train(False)
    for p in net.get_parameters():
        p.requires_grad = False
    return net


class WeightsError(ValueError):
    """A weights file that does not hold what it should; the message names the file."""


def read_weights(path: str | Path) -> dict[str, np.ndarray]:
    """name -> float32 array from a .safetensors or MindSpore .ckpt file (names as stored)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            state = load_file(str(path))
        elif path.suffix == ".ckpt":
            state = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}
        else:
            raise WeightsError(f"{path}: singan_ms reads .ckpt or .safetensors (convert .pth files first)")
    except WeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault; say which file
        raise WeightsError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    return {k.removeprefix("module."): np.asarray(v) for k, v in state.items()}


def load_vgg_state(path: str | Path) -> dict[str, np.ndarray]:
    """The `features.N` tensors up to relu3_3 from a torchvision vgg16 state_dict file."""
    state = read_weights(path)
    wanted = {name: tuple(p.shape) for name, p in VGG16Features().parameters_and_names()}
    missing = [k for k in wanted if k not in state]
    if missing:
        raise WeightsError(f"{path}: not a torchvision vgg16 state_dict; missing {', '.join(missing[:4])}")
    bad = [k for k in wanted if tuple(state[k].shape) != wanted[k]]
    if bad:
        raise WeightsError(f"{path}: shape mismatch for {', '.join(bad[:4])} (not vgg16?)")
    return {k: state[k].astype(np.float32) for k in wanted}


def load_into(net: nn.Cell, state: dict[str, np.ndarray], source: str | Path, strict: bool = True) -> None:
    """Copy `state` (MindSpore or PyTorch names) into `net`; with strict, every parameter must be given and
    nothing else. `filt` blur filters are rebuilt, not loaded: a value that differs from CUT's is an error."""
    params = dict(net.parameters_and_names())
    by_torch = {torch_name(k): k for k in params}
    state = {by_torch.get(k, k): v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in params if k not in state]
    unexpected = [k for k in state if k not in params]
    if strict and (missing or unexpected):
        raise WeightsError(f"{source}: weights do not fit the network: missing {missing[:4]}, "
                           f"unexpected {unexpected[:4]}")
    for name, value in state.items():
        if name not in params:
            continue
        p = params[name]
        if tuple(value.shape) != tuple(p.shape):
            raise WeightsError(f"{source}: {name} has shape {tuple(value.shape)}, the network needs "
                               f"{tuple(p.shape)}")
        if name.endswith("filt"):
            if not np.allclose(value, p.asnumpy(), atol=1e-6):
                raise WeightsError(f"{source}: {name} is not CUT's binomial blur filter")
            continue
        p.set_data(Tensor(np.ascontiguousarray(value, np.float32)))


def to_numpy_state(net: nn.Cell) -> dict[str, np.ndarray]:
    """MindSpore name -> array (a copy: asnumpy() may share the parameter's memory) for every parameter."""
    return {k: p.asnumpy().copy() for k, p in net.parameters_and_names()}
