"""Verification before writing: run both frameworks on the same seeded input and compare layer by layer.

G, D and VGG16 are flat sequences on both sides, so each layer is compared in turn (each side feeding its own
previous output, as in real use) and the first layer beyond the fp32 tolerance is named; F is compared per
MLP on random features. MindSpore runs in PyNative mode here so single cells can be called.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from parity.compare import Comparison, compare, first_failure
from parity.tolerances import tolerance
from singan_common import architecture as arch
from singan_common.config import ModelConfig
from singan_common.rng import PROBE, draw_patch_ids, generator

VERIFY_SIZE = 64


@dataclass
class Verification:
    network: str
    layers: list[Comparison]
    output: Comparison

    @property
    def passed(self) -> bool:
        return self.output.passed and first_failure(self.layers) is None

    def summary(self) -> str:
        bad = first_failure(self.layers)
        where = f"; first layer that parts: {bad.name}" if bad else ""
        return f"{self.network}: {self.output.line()}{where}"


def _seq_compare(prefix: str, torch_seq, ms_seq, x: np.ndarray, kinds: list[str]) -> list[Comparison]:
    import torch
    from mindspore import Tensor

    layer_tol = tolerance("CPU", "fp32", "layer")
    net_tol = tolerance("CPU", "fp32", "network")
    out, xt, xm = [], torch.from_numpy(x), Tensor(x)
    with torch.no_grad():
        for i, kind in enumerate(kinds):
            xt, xm = torch_seq[i](xt), ms_seq[i](xm)
            # Each side feeds its own output forward, so later layers see accumulated error: judge them by the
            # whole-network constant, the first layers by the single-layer one.
            tol = layer_tol if i == 0 else net_tol
            out.append(compare(f"{prefix}.{i} ({kind})", xm.asnumpy(), xt.numpy(), tol))
    return out


def verify_network(network: str, cfg: ModelConfig, torch_net, ms_net, seed: int = 0) -> Verification:
    """Compare a loaded torch network with a loaded MindSpore one on a seeded probe input."""
    g = generator(seed, PROBE, 0)
    if network in ("G", "D"):
        plan = arch.generator_plan(cfg) if network == "G" else arch.discriminator_plan(cfg)
        x = g.uniform(-1, 1, (1, cfg.input_nc, VERIFY_SIZE, VERIFY_SIZE)).astype(np.float32)
        layers = _seq_compare(f"{network}.model", torch_net.model, ms_net.model, x, [layer.kind for layer in plan])
        return Verification(network, layers, _as_output(layers[-1], network))
    if network == "vgg16":
        from singan_torch.networks import IMAGENET_MEAN, IMAGENET_STD

        x = g.uniform(-1, 1, (1, 3, VERIFY_SIZE, VERIFY_SIZE)).astype(np.float32)
        mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
        x = (((x + 1.0) * 0.5 - mean) / std).astype(np.float32)
        kinds = [k for v in arch.VGG16_PLAN for k in (("pool",) if v == "M" else ("conv", "relu"))]
        layers = _seq_compare("vgg16.features", torch_net.features, ms_net.features, x, kinds)
        return Verification(network, layers, _as_output(layers[-1], network))
    return _verify_f(cfg, torch_net, ms_net, g)


def _verify_f(cfg: ModelConfig, torch_net, ms_net, g: np.random.Generator) -> Verification:
    import torch
    from mindspore import Tensor

    feats = [g.standard_normal((1, c, 8, 8)).astype(np.float32) for c in arch.nce_channels(cfg)]
    ids = [draw_patch_ids(g, 64, min(cfg.num_patches, 64)) for _ in feats]
    with torch.no_grad():
        ref = torch_net([torch.from_numpy(f) for f in feats], [torch.from_numpy(i) for i in ids])
    ours = ms_net([Tensor(f) for f in feats], [Tensor(i) for i in ids])
    tol = tolerance("CPU", "fp32", "network")
    layers = [compare(f"F.mlp_{i}", o.asnumpy(), r.numpy(), tol) for i, (o, r) in enumerate(zip(ours, ref))]
    worst = max(layers, key=lambda c: c.max_abs)
    return Verification("F", layers, _as_output(worst, "F"))


def _as_output(c: Comparison, network: str) -> Comparison:
    return Comparison(f"{network} output", c.max_abs, c.max_rel, c.cosine, c.passed, c.atol, c.rtol, c.shape)
