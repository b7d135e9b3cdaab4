"""singan_ms.native: the compiled CPU kernels build, are cached, fall back cleanly, and compute what they replace
(instance norm as accurately as MindSpore's GroupNorm or better; Adam bit for bit as the MindSpore-operator route)."""

from __future__ import annotations

import warnings

import mindspore as ms
import numpy as np
import pytest
import torch
from mindspore import Parameter, Tensor, mint, nn

from singan_ms import native
from singan_ms.losses import L1Mean
from singan_ms.networks import (
    Conv2dTranspose,
    InstanceNorm2d,
    LeakyReLU,
    MaxPool2d,
    ReflectionPad2d,
    SamplePositions,
    conv2d,
)
from singan_ms.optim import Adam
from tests.ms_tolerances import LAYER_ATOL

MS_MODE = "graph"
# Measured on the inputs below (2026-11-25): kernel forward error against float64 <= 1.2e-7 on unit-scale outputs
# (correctly rounded up to an ulp; GroupNorm the same, torch float32 up to 8.6e-5 on the nearly constant planes).
# The bound allows one more ulp.
FORWARD_ATOL = 2.5e-7
# Backward against float64, relative to the gradient's largest element: kernel <= 4.9e-8 (it sums in double);
# GroupNorm reaches 3.9e-6 and torch float32 2.3e-6 on the nearly constant planes. Twice the kernel's figure.
BACKWARD_RTOL = 1e-7

pytestmark = pytest.mark.skipif(native.library() is None, reason="no C++ compiler: singan_ms runs without kernels")


def torch_reference(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.instance_norm(t)
    y.backward(torch.tensor(g, dtype=torch.float64))
    return y.detach().numpy(), t.grad.numpy()


class TwoCalls(nn.Cell):
    """One layer applied twice in one differentiated graph, as a generator layer is in each train step."""

    def __init__(self, norm: nn.Cell, g1: np.ndarray, g2: np.ndarray) -> None:
        super().__init__()
        self.norm, self.g1, self.g2 = norm, Tensor(g1), Tensor(g2)

    def construct(self, a: Tensor, b: Tensor) -> Tensor:
        return (self.norm(a) * self.g1).sum() + (self.norm(b) * self.g2).sum()


@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (10.0, 3.0), (1e-2, 1.0), (1e-3, 5.0)])
def test_instance_norm_kernel_forward_and_backward_against_float64(scale, offset):
    rs = np.random.RandomState(0)
    shape = (2, 6, 6, 10)
    x1, x2 = ((offset + scale * rs.randn(*shape)).astype(np.float32) for _ in range(2))
    g1, g2 = (rs.randn(*shape).astype(np.float32) for _ in range(2))
    norm = InstanceNorm2d(6)
    assert norm.use_kernel
    norm.set_train(False)
    y = norm(Tensor(x1)).asnumpy()
    y64, _ = torch_reference(x1, g1)
    assert np.abs(y - y64).max() <= FORWARD_ATOL
    d1, d2 = ms.grad(TwoCalls(norm, g1, g2), grad_position=(0, 1))(Tensor(x1), Tensor(x2))
    for got, (x, g) in ((d1, (x1, g1)), (d2, (x2, g2))):
        _, ref = torch_reference(x, g)
        assert np.abs(got.asnumpy() - ref).max() <= BACKWARD_RTOL * np.abs(ref).max()


def test_instance_norm_kernel_runs_in_training_and_inference():
    """The kernel serves both modes (see InstanceNorm2d's docstring) and agrees with GroupNorm to rounding."""
    x = Tensor(np.random.RandomState(1).randn(1, 4, 8, 8).astype(np.float32) * 3 + 1)
    norm = InstanceNorm2d(4)
    assert norm.use_kernel
    norm.set_train(True)
    train = norm(x).asnumpy()
    norm.set_train(False)
    assert np.array_equal(norm(x).asnumpy(), train)
    assert np.abs(train - mint.nn.functional.group_norm(x, 4, eps=1e-5).asnumpy()).max() <= FORWARD_ATOL


@pytest.mark.parametrize("beta1", [0.5, 0.9])
def test_adam_kernel_is_bit_identical_to_the_operator_route(beta1):
    rs = np.random.RandomState(0)
    shapes = [(16, 3, 7, 7), (64,), (1000, 33)]
    init = [rs.randn(*s).astype(np.float32) for s in shapes]
    routes = []
    for use_kernel in (True, False):
        params = [Parameter(Tensor(a.copy()), name=f"p{i}") for i, a in enumerate(init)]
        adam = Adam(params, 2e-4, (beta1, 0.999), name=f"A{int(use_kernel)}")
        adam.use_kernel = use_kernel
        routes.append((params, adam, ms.jit(adam.construct)))
    for k in range(4):
        grads = tuple(Tensor((rs.randn(*s) * 10 ** rs.uniform(-7, 1)).astype(np.float32)) for s in shapes)
        for _, adam, step in routes:
            step(ms.mutable(grads))
            if k == 1:
                adam.set_lr(1.3e-4)
    (p_k, a_k, _), (p_o, a_o, _) = routes
    for i in range(len(shapes)):
        assert np.array_equal(p_k[i].asnumpy(), p_o[i].asnumpy())
        assert np.array_equal(a_k.exp_avg[i].asnumpy(), a_o.exp_avg[i].asnumpy())
        assert np.array_equal(a_k.exp_avg_sq[i].asnumpy(), a_o.exp_avg_sq[i].asnumpy())


def test_build_is_cached_and_atomic(tmp_path):
    first = native.build(tmp_path)
    mtime = first.stat().st_mtime_ns
    assert native.build(tmp_path) == first and first.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left behind


def test_no_compiler_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setenv("SINGAN_MS_KERNEL_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", "no-such-compiler")
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    monkeypatch.setattr(native, "_cache", {})
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        assert native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None  # decided once per process
        norm = InstanceNorm2d(3)
    assert not norm.use_kernel
    assert conv2d(3, 4, 3).native is None and not native.convolutions()
    x = Tensor(np.ones((1, 3, 4, 4), np.float32))
    assert np.array_equal(norm(x).asnumpy(), np.zeros((1, 3, 4, 4), np.float32))


def test_disabled_by_environment(monkeypatch):
    monkeypatch.setenv("SINGAN_MS_NATIVE", "0")
    monkeypatch.setattr(native, "_cache", {})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None
    adam = Adam([Parameter(Tensor(np.zeros(3, np.float32)), name="q")], 1e-3)
    assert not adam.use_kernel


# (in, out, kernel, stride, padding, bias, input size): every geometry the default model has, plus odd sizes.
CONV_CASES = [(3, 8, 7, 1, 0, True, (22, 21)), (8, 16, 3, 2, 1, True, (16, 15)), (16, 16, 3, 1, 0, False, (10, 10)),
              (3, 8, 4, 2, 1, True, (32, 32)), (16, 32, 4, 1, 1, True, (7, 9)), (8, 8, 3, 1, 1, True, (12, 12))]


class Loss(nn.Cell):
    """sum(layer(x) * g): its gradients are the layer's vector-Jacobian products with g."""

    def __init__(self, layer: nn.Cell, g: np.ndarray) -> None:
        super().__init__()
        self.layer, self.g = layer, Tensor(g)

    def construct(self, x: Tensor) -> Tensor:
        return (self.layer(x) * self.g).sum()


def torch_vjp(fn, x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fn(x) and its input gradient for the cotangent g (a module's parameter gradients accumulate on it)."""
    t = torch.tensor(x, requires_grad=True)
    y = fn(t)
    y.backward(torch.tensor(g))
    return y.detach().numpy(), t.grad.numpy()


def torch_layer_vjp(layer: torch.nn.Module, x: np.ndarray, g: np.ndarray) -> list[np.ndarray]:
    return [*torch_vjp(layer, x, g)] + [p.grad.numpy() for p in layer.parameters()]


def check_against_torch(layer: nn.Cell, ref: torch.nn.Module, x: np.ndarray) -> None:
    for p, q in zip(layer.trainable_params(), ref.parameters(), strict=True):
        p.set_data(Tensor(q.detach().numpy()))
    y = layer(Tensor(x)).asnumpy()
    g = np.random.RandomState(5).randn(*y.shape).astype(np.float32)
    want = torch_layer_vjp(ref, x, g)
    dx, dparams = ms.grad(Loss(layer, g), 0, layer.trainable_params())(Tensor(x))
    got = [y, dx.asnumpy()] + [t.asnumpy() for t in dparams]
    for name, a, b in zip(["output", "input grad", "weight grad", "bias grad"], got, want):
        # Same oneDNN kernels as torch where both libraries pick the same one (bit-identical on this project's
        # AVX-512 host); LAYER_ATOL, relative to the values' scale, bounds any other summation order.
        assert np.abs(a - b).max() <= LAYER_ATOL * max(1.0, np.abs(b).max()), name


@pytest.mark.parametrize("cin,cout,k,stride,pad,bias,size", CONV_CASES)
def test_native_conv_matches_torch_forward_and_gradients(cin, cout, k, stride, pad, bias, size):
    assert native.convolutions()
    layer = conv2d(cin, cout, k, stride, pad, bias)
    assert layer.native is not None
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(cin, cout, k, stride, pad, bias=bias)
    check_against_torch(layer, ref, np.random.RandomState(1).randn(2, cin, *size).astype(np.float32))


@pytest.mark.parametrize("size", [(8, 8), (5, 7)])
def test_native_transposed_conv_matches_torch_with_output_padding(size):
    layer = Conv2dTranspose(16, 8, 3, 2, 1, output_padding=1, bias=True)
    assert layer.native is not None
    torch.manual_seed(0)
    ref = torch.nn.ConvTranspose2d(16, 8, 3, 2, 1, output_padding=1, bias=True)
    check_against_torch(layer, ref, np.random.RandomState(1).randn(2, 16, *size).astype(np.float32))


def two_call_grads(layer: nn.Cell, x1: np.ndarray, x2: np.ndarray, out_shape: tuple[int, ...]):
    """The layer's input gradients for two inputs when it is applied twice in one differentiated graph (as
    generator, VGG16 and discriminator layers are in each train step), with the cotangents used."""
    rs = np.random.RandomState(7)
    g1, g2 = (rs.randn(*out_shape).astype(np.float32) for _ in range(2))
    d1, d2 = ms.grad(TwoCalls(layer, g1, g2), grad_position=(0, 1))(Tensor(x1), Tensor(x2))
    return ((x1, g1, d1.asnumpy()), (x2, g2, d2.asnumpy()))


@pytest.mark.parametrize("pad,size", [(1, (6, 9)), (3, (5, 4)), (5, (11, 8))])
def test_reflection_pad_kernel_is_bit_identical_to_torch(pad, size):
    """Forward is a copy; the backward adds up to four mirrored gradients per element in torch's order, so both
    equal torch's CPU results exactly. The layer is applied twice in one graph (as generator layers are)."""
    layer = ReflectionPad2d(pad)
    assert layer.kernel is not None
    rs = np.random.RandomState(pad)
    x1, x2 = (rs.randn(2, 3, *size).astype(np.float32) for _ in range(2))
    out = (2, 3, size[0] + 2 * pad, size[1] + 2 * pad)
    for x, g, got in two_call_grads(layer, x1, x2, out):
        y_ref, dx_ref = torch_vjp(torch.nn.ReflectionPad2d(pad), x, g)
        assert np.array_equal(layer(Tensor(x)).asnumpy(), y_ref)
        assert np.array_equal(got, dx_ref)


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_max_pool_kernel_is_bit_identical_to_torch(size):
    """Both directions are copies of torch's choice, ties included: after a ReLU most windows hold several equal
    zeros, so the test feeds quantised values with many ties (and an odd size, whose last row / column torch
    drops)."""
    layer = MaxPool2d(kernel_size=2, stride=2)
    assert layer.kernel is not None
    rs = np.random.RandomState(3)
    x1, x2 = (np.maximum(rs.randint(-2, 3, (2, 3, *size)), 0).astype(np.float32) for _ in range(2))
    out = (2, 3, size[0] // 2, size[1] // 2)
    for x, g, got in two_call_grads(layer, x1, x2, out):
        y_ref, dx_ref = torch_vjp(lambda t: torch.nn.functional.max_pool2d(t, 2, 2), x, g)
        assert np.array_equal(layer(Tensor(x)).asnumpy(), y_ref)
        assert np.array_equal(got, dx_ref)


def test_leaky_relu_kernel_is_bit_identical_to_torch():
    layer = LeakyReLU(0.2)
    assert layer.kernel is not None
    rs = np.random.RandomState(4)
    x1, x2 = (rs.randn(2, 3, 5, 6).astype(np.float32) for _ in range(2))
    x1[0, 0, 0, :3] = 0.0  # torch's gradient at 0 is the negative side's
    for x, g, got in two_call_grads(layer, x1, x2, x1.shape):
        y_ref, dx_ref = torch_vjp(lambda t: torch.nn.functional.leaky_relu(t, 0.2), x, g)
        assert np.array_equal(layer(Tensor(x)).asnumpy(), y_ref)
        assert np.array_equal(got, dx_ref)


class L1Loss(nn.Cell):
    def __init__(self, l1: nn.Cell, target: np.ndarray) -> None:
        super().__init__()
        self.l1, self.target = l1, Tensor(target)

    def construct(self, x: Tensor) -> Tensor:
        return 3.0 * self.l1(x, self.target)


def test_l1_mean_kernel_against_float64_and_torch_gradient():
    """The mean is the float64 mean of torch's float32 differences, rounded once (torch's float32 mean is within
    a few ulps of it); the gradient is torch's sign(d) * dout / n exactly, zero where pred == target."""
    l1 = L1Mean()
    assert l1.kernel is not None
    rs = np.random.RandomState(5)
    pred = rs.randn(1, 4, 33, 35).astype(np.float32)
    target = rs.randn(1, 4, 33, 35).astype(np.float32)
    target[0, 0, 0, :4] = pred[0, 0, 0, :4]
    want = np.abs((pred - target).astype(np.float64)).mean()
    assert l1(Tensor(pred), Tensor(target)).asnumpy() == np.float32(want)
    t = torch.tensor(pred, requires_grad=True)
    (3.0 * (t - torch.tensor(target)).abs().mean()).backward()
    got = ms.grad(L1Loss(l1, target))(Tensor(pred)).asnumpy()
    assert np.array_equal(got, t.grad.numpy())


def test_transposed_conv_bias_kernel_against_float64():
    """The stride-2 transposed convolution's bias by the kernel: forward exactly x + b (one float add, as the
    operator route); bias gradient = dout summed in double, rounded once."""
    layer = Conv2dTranspose(4, 3, 3, 2, 1, output_padding=1, bias=True)
    assert layer.native_bias is not None
    rs = np.random.RandomState(6)
    x = rs.randn(2, 4, 9, 7).astype(np.float32)
    y = layer(Tensor(x)).asnumpy()
    y_nobias = layer.native(Tensor(x), layer.weight).asnumpy()
    assert np.array_equal(y, y_nobias + layer.bias.asnumpy().reshape(1, -1, 1, 1))
    g = rs.randn(*y.shape).astype(np.float32)
    db = ms.grad(Loss(layer, g), None, (layer.bias,))(Tensor(x))[0].asnumpy()
    assert np.array_equal(db, g.astype(np.float64).sum(axis=(0, 2, 3)).astype(np.float32))


def test_sample_positions_kernel_equals_torch_permute_flatten_index():
    """CUT's sampler in torch: feat.permute(0, 2, 3, 1).flatten(1, 2)[:, ids, :].flatten(0, 1); copies both ways,
    so the kernel equals it exactly (int64 ids as drawn, int32 accepted)."""
    sample = SamplePositions()
    assert sample.kernel is not None
    rs = np.random.RandomState(8)
    feat = rs.randn(2, 5, 6, 7).astype(np.float32)
    ids = rs.permutation(42)[:9]
    g = rs.randn(18, 5).astype(np.float32)
    t = torch.tensor(feat, requires_grad=True)
    want = t.permute(0, 2, 3, 1).flatten(1, 2)[:, torch.tensor(ids), :].flatten(0, 1)
    want.backward(torch.tensor(g))

    class Sampled(nn.Cell):
        def __init__(self, ids: Tensor) -> None:
            super().__init__()
            self.sample, self.ids, self.g = sample, ids, Tensor(g)

        def construct(self, x: Tensor) -> Tensor:
            return (self.sample(x, self.ids) * self.g).sum()

    for dtype in (np.int64, np.int32):
        ids_t = Tensor(ids.astype(dtype))
        assert np.array_equal(sample(Tensor(feat), ids_t).asnumpy(), want.detach().numpy())
        assert np.array_equal(ms.grad(Sampled(ids_t))(Tensor(feat)).asnumpy(), t.grad.numpy())


def test_sample_positions_kernel_rejects_an_id_out_of_range():
    sample = SamplePositions()
    with pytest.raises(RuntimeError):
        sample(Tensor(np.zeros((1, 2, 3, 3), np.float32)), Tensor(np.array([0, 9], np.int64))).asnumpy()
