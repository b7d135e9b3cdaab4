"""The parity cases: ONE table (`TABLE`), each row a thing to compute in both frameworks, expanded over its
input sizes into `CASES`, which parity/test_parity.py checks with one parametrized test.

A case has two halves that meet only through numpy:
- `reference(case, ctx)` runs PyTorch and returns a Record: the inputs (numpy draws: images, features, patch
  ids, perturbation noise, MMD positions, gradients), the weights, and the reference outputs, all named;
- `port(case, ctx, record)` runs MindSpore on the record's inputs and weights and returns its outputs under the
  same names. It never imports torch, so a stored record (parity/golden.py) replays on a machine without it.
Each output name maps to a tolerance kind (layer / network / loss / grad / optim / train_fn / train_param) or
to a structural-zero check (gradients that are mathematically zero: reported on their own, never widened).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parity.engine import Capture, capture_ms, capture_torch, to_ms
from singan_common import architecture as arch
from singan_common.config import ModelConfig, TrainConfig
from singan_common.rng import StepDraws, draw_patch_ids, step_draws

SEED = 0
# G/D/F/VGG as the paper builds them (ngf 64, 9 blocks): the network cases.
FULL = ModelConfig()
FULL_AA = ModelConfig(variant="antialias")
# A narrow, shallow model with the same layer kinds for the losses, gradients and training trajectory: the
# arithmetic per element is the same, and two cores must finish the whole harness in three minutes.
SMALL = ModelConfig(ngf=16, ndf=16, n_blocks=2, netF_nc=64, num_patches=64, mmd_num_samples=64)
SMALL_GAUSS = ModelConfig(ngf=16, ndf=16, n_blocks=2, netF_nc=64, num_patches=64, mmd_num_samples=64,
                          neg_perturb="gaussian", neg_perturb_strength=0.1)
# A batch-norm generator: the only place BatchNorm momentum shows (running stats after a train forward).
SMALL_BN = ModelConfig(ngf=8, n_blocks=1, norm="batch")
TRAIN = TrainConfig(seed=SEED)
TRAIN_STEPS = 3
LAYER_C = 8  # channels of the single-layer cases


@dataclass
class Record:
    """Everything one case needs and produces; names are flat strings (golden files store them as is)."""

    inputs: Capture = field(default_factory=dict)
    weights: dict[str, Capture] = field(default_factory=dict)  # weight-set name -> torch-named tensors
    outputs: Capture = field(default_factory=dict)


@dataclass(frozen=True)
class Row:
    """One line of the table: what to compute, in which group, at which sizes."""

    name: str
    group: str  # layer | network | loss | optim | train
    runner: str  # key into RUNNERS: how both halves are computed
    sizes: tuple[tuple[int, int], ...] = ((16, 16),)
    kind: str = "layer"  # tolerance kind of the outputs (loss/grad/train runners choose per output)
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    row: Row
    size: tuple[int, int]

    @property
    def id(self) -> str:
        return f"{self.row.group}/{self.row.name}@{self.size[0]}x{self.size[1]}"

    @property
    def p(self) -> dict[str, Any]:
        return self.row.params


@dataclass
class Context:
    """What the runners need to know about the run: torch's device ('cpu' / 'cuda')."""

    torch_device: str = "cpu"


# ---------------------------------------------------------------------------------------------------------
# Helpers shared by the halves
# ---------------------------------------------------------------------------------------------------------


def rng_for(case: Case, purpose: str) -> np.random.Generator:
    # Loss rows share their inputs (same images and draws for every loss at a size and batch), so the
    # per-loss gradients add up to the total's and a difference can be traced to one loss.
    if case.row.runner == "loss":
        return generator_for_loss(case.size, case.p.get("batch", 1), purpose)
    return _generator(f"{case.id}/{purpose}")


def generator_for_loss(size: tuple[int, int], batch: int, purpose: str) -> np.random.Generator:
    return _generator(f"loss@{size}x{batch}/{purpose}")


def _generator(key: str) -> np.random.Generator:
    from singan_common.rng import PROBE, generator, name_key

    return generator(SEED, PROBE, name_key(key))


def randomize_torch(module: Any, rng: np.random.Generator) -> None:
    """Every float parameter and buffer drawn from numpy at a scale that exercises the layer: weights
    ~ N(0, 1/fan_in), biases ~ N(0, 0.1), BatchNorm weight 1 + N(0, 0.1), running var in [0.5, 1.5]."""
    import torch

    with torch.no_grad():
        # state_dict: parameters and persistent buffers only (VGG's ImageNet mean/std are constants)
        for name, t in module.state_dict().items():
            if not t.is_floating_point() or name.endswith("filt"):
                continue
            leaf = name.rpartition(".")[2]
            if leaf == "running_var":
                v = rng.uniform(0.5, 1.5, t.shape)
            elif leaf == "running_mean":
                v = 0.1 * rng.standard_normal(t.shape)
            elif t.dim() == 1 and leaf == "weight":
                v = 1.0 + 0.1 * rng.standard_normal(t.shape)
            elif t.dim() == 1:
                v = 0.1 * rng.standard_normal(t.shape)
            else:
                fan_in = int(np.prod(t.shape[1:]))
                v = rng.standard_normal(t.shape) / np.sqrt(fan_in)
            t.copy_(torch.from_numpy(v.astype(np.float32)))


def torch_state(module: Any) -> Capture:
    # .copy(): a CPU tensor's numpy() shares its memory, and BatchNorm updates running stats in place.
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()
            if not k.endswith("num_batches_tracked")}


def load_ms(cell: Any, weights: Capture, source: str) -> None:
    from singan_ms.networks import load_into

    load_into(cell, weights, source)


def structural_zero_biases(cell: Any, prefix: str = "") -> list[str]:
    """Torch names of conv biases directly followed by an affine-free instance norm, found by walking the
    MindSpore cell's sequences (so it works on the golden path too). Their gradient is mathematically zero:
    the norm subtracts the per-channel mean, bias included (shared/DESIGN.md section 5)."""
    from mindspore import nn

    from singan_ms.networks import InstanceNorm2d

    found = []
    for name, c in cell.cells_and_names():
        if not isinstance(c, nn.SequentialCell):
            continue
        children = list(c.cells())
        for i, (a, b) in enumerate(zip(children, children[1:])):
            if isinstance(a, (nn.Conv2d, nn.Conv2dTranspose)) and a.has_bias and isinstance(b, InstanceNorm2d):
                found.append(f"{prefix}{name}.{i}.bias" if name else f"{prefix}{i}.bias")
    return found


# ---------------------------------------------------------------------------------------------------------
# Runner: single layers and whole networks (per-layer capture through parity.engine)
# ---------------------------------------------------------------------------------------------------------


def _layer_spec(case: Case) -> tuple[ModelConfig, arch.Layer | None, int]:
    p = case.p
    cfg = ModelConfig(norm=p.get("norm", "instance"))
    layer = p.get("layer")
    return cfg, layer, p.get("in_channels", LAYER_C)


def _build_torch_module(case: Case) -> Any:
    from torch import nn

    from singan_torch import networks as tn

    p = case.p
    what = p["build"]
    if what == "layer":
        cfg, layer, cin = _layer_spec(case)
        return tn.build_layer(cfg, layer, cin)
    if what == "linear":
        return nn.Linear(p["in_features"], p["out_features"])
    if what == "G":
        return tn.define_G(p["cfg"], SEED)
    if what == "D":
        return tn.define_D(p["cfg"], SEED)
    if what == "F":
        return tn.define_F(p["cfg"], SEED)
    if what == "vgg":
        return tn.VGG16Features()
    if what == "highpass":
        cfg = p["cfg"]
        return tn.GaussianHighPass(cfg.output_nc, cfg.highpass_kernel_size, cfg.highpass_sigma)
    raise ValueError(what)


def build_ms_module(case: Case) -> Any:
    """The MindSpore counterpart of the case's torch module (also used by the fault tests to swap layers)."""
    from mindspore import nn

    from singan_ms import networks as mn

    p = case.p
    what = p["build"]
    if what == "layer":
        cfg, layer, cin = _layer_spec(case)
        return mn.build_layer(cfg, layer, cin)
    if what == "linear":
        return nn.Dense(p["in_features"], p["out_features"])
    if what == "G":
        return mn.ResnetGenerator(p["cfg"])
    if what == "D":
        return mn.NLayerDiscriminator(p["cfg"])
    if what == "F":
        return mn.PatchSampleF(p["cfg"])
    if what == "vgg":
        return mn.VGG16Features()
    if what == "highpass":
        cfg = p["cfg"]
        return mn.GaussianHighPass(cfg.output_nc, cfg.highpass_kernel_size, cfg.highpass_sigma)
    raise ValueError(what)


def _module_inputs(case: Case) -> Capture:
    p, (h, w) = case.p, case.size
    rng = rng_for(case, "inputs")
    what = p["build"]
    if what == "F":
        cfg = p["cfg"]
        ins = {f"feat{i}": rng.standard_normal((2, c, h, w)).astype(np.float32)
               for i, c in enumerate(arch.nce_channels(cfg))}
        for i in range(len(cfg.nce_layers)):
            ins[f"ids{i}"] = draw_patch_ids(rng, h * w, cfg.num_patches)
        return ins
    if what == "linear":
        return {"x": rng.standard_normal((2 * h, p["in_features"])).astype(np.float32)}
    channels = {"G": 3, "D": 3, "vgg": 3, "highpass": 3}.get(what, p.get("in_channels", LAYER_C))
    x = rng.uniform(-1, 1, (p.get("batch", 2), channels, h, w)) * p.get("input_scale", 1.0)
    return {"x": x.astype(np.float32)}


def _module_args(case: Case, ins: Capture) -> list[Any]:
    if case.p["build"] == "F":
        n = len(case.p["cfg"].nce_layers)
        return [[ins[f"feat{i}"] for i in range(n)], [ins[f"ids{i}"] for i in range(n)]]
    if case.p["build"] == "vgg":
        return [ins["x"], tuple(FULL.perceptual_layers)]
    return [ins["x"]]


def _module_weight_set(case: Case) -> str:
    p = case.p
    if p["build"] in ("G", "D", "F"):
        c = p["cfg"]
        return f"{p['build']}-{c.variant}-{c.norm}-ngf{c.ngf}-b{c.n_blocks}"
    # Layers and VGG get numpy-random weights per case (randomize_torch), so each case has its own set; G/D/F
    # come from define_* with the fixed seed and are shared (the full generator is stored once).
    return case.id


def _module_reference(case: Case, ctx: Context) -> Record:
    module = _build_torch_module(case)
    if case.p["build"] in ("layer", "linear", "vgg"):
        randomize_torch(module, rng_for(case, "weights"))
    module = module.to(ctx.torch_device)
    ins = _module_inputs(case)
    weights = torch_state(module)
    train = case.p.get("train", False)
    module.train(train)
    call = None
    if case.p.get("train_then_eval"):
        def call(m: Any, x: Any) -> Any:
            m.train()
            m(x)
            m.eval()
            return m(x)
    out = capture_torch(module, _module_args(case, ins), call, device=ctx.torch_device, state=case.p.get("state"))
    return Record(inputs=ins, weights={_module_weight_set(case): weights}, outputs=out)


def _module_port(case: Case, ctx: Context, record: Record, cell: Any = None) -> Capture:
    cell = cell if cell is not None else build_ms_module(case)
    load_ms(cell, record.weights[_module_weight_set(case)], case.id)
    cell.set_train(case.p.get("train", False))
    call = None
    if case.p.get("train_then_eval"):
        def call(c: Any, x: Any) -> Any:
            c.set_train(True)
            c(x)
            c.set_train(False)
            return c(x)
    return capture_ms(cell, _module_args(case, record.inputs), call, state=case.p.get("state"))


# ---------------------------------------------------------------------------------------------------------
# Runner: the losses, each on its own, with their gradients
# ---------------------------------------------------------------------------------------------------------

LOSS_OUTPUTS = {  # loss row -> (nets whose gradients are compared, uses the NCE feature taps)
    "lsgan_G": (("G",), False),
    "lsgan_D": (("D",), False),
    "patchnce": (("G", "F"), True),
    "perceptual": (("G",), False),
    "mmd": (("G",), False),
    "total": (("G", "F"), True),
}


def _draws(cfg: ModelConfig, h: int, w: int, batch: int, step: int = 0) -> StepDraws:
    return step_draws(SEED, step, batch, arch.nce_positions(cfg, h, w), arch.encoder_positions(cfg, h, w),
                      cfg.num_patches, cfg.neg_perturb, cfg.neg_perturb_strength, cfg.mmd_num_samples)


def draws_to_inputs(d: StepDraws, prefix: str = "draw/") -> Capture:
    out = {f"{prefix}patch_ids{i}": a for i, a in enumerate(d.patch_ids)}
    out.update({f"{prefix}neg_noise{i}": a for i, a in enumerate(d.neg_noise) if a is not None})
    out[f"{prefix}mmd_ids_fake"], out[f"{prefix}mmd_ids_real"] = d.mmd_ids_fake, d.mmd_ids_real
    return out


def draws_from_inputs(ins: Capture, cfg: ModelConfig, prefix: str = "draw/") -> StepDraws:
    n = len(cfg.nce_layers)
    return StepDraws(patch_ids=[ins[f"{prefix}patch_ids{i}"] for i in range(n)],
                     neg_noise=[ins.get(f"{prefix}neg_noise{i}") for i in range(n)],
                     mmd_ids_fake=ins[f"{prefix}mmd_ids_fake"], mmd_ids_real=ins[f"{prefix}mmd_ids_real"])


# Kinks. The perceptual loss passes G's output through VGG's ReLUs and max-pools and then |p - t|: functions
# whose derivative jumps at 0 (ReLU, abs) or at a tie (max-pool). Where the reference puts an activation within
# float noise of such a point, the port's few-ulp different forward can land on the other side, and that one
# element's gradient changes by a whole step: measured once (2026-12-01, Zen 5 host) as a relu3_3 pre-activation
# of -6.1e-8 in torch (-6.5e-8 in float64) and +9.8e-9 in MindSpore, which moved every G gradient of
# loss/perceptual@32x32 by 1e-3 of its scale, 600x torch's own float32 error. That is float noise deciding a
# discontinuity, not a porting error, so the loss rows' images are chosen to keep every VGG kink at least
# KINK_MARGIN away, measured in float64 torch (the same choice on every host): the first of the candidates
# "images", "images#1", ... that does. KINK_MARGIN is the largest deviation of the port's VGG activations from
# torch's at any element of any layer, measured at both loss sizes (2e-7..3e-7); a wider margin leaves too few
# candidates (at 24x40, batch 2: 3 of 64 pass 3e-7, none pass 1e-6), since every stage holds 10^4..10^5
# values. G's and F's own ReLUs are not screened; their cases pass on both hosts measured so far.
KINK_MARGIN = 3e-7
KINK_CANDIDATES = 64


def vgg_kink_margins(model: Any, hazy: np.ndarray) -> dict[str, float]:
    """Smallest distance to a kink per VGG stage, in float64: |pre-activation| at each ReLU up to the last
    perceptual layer, the gap between the two largest inputs of each 2x2 max-pool window whose maximum is
    positive (a zero maximum passes no gradient), and the smallest nonzero |p - t| at each perceptual layer
    (p: features of G(hazy), t: features of hazy, the perceptual loss's target)."""
    import copy

    import torch

    layers = tuple(model.cfg.perceptual_layers)
    netG, vgg = copy.deepcopy(model.netG).double().train(), copy.deepcopy(model.vgg).double()
    x = torch.from_numpy(hazy).double()

    def walk(img: Any, margins: dict[str, float] | None) -> dict[int, Any]:
        h, out = ((img + 1.0) * 0.5 - vgg.mean) / vgg.std, {}
        for i, module in enumerate(vgg.features[: max(layers) + 1]):
            if margins is not None and isinstance(module, torch.nn.ReLU):
                margins[f"relu{i}"] = h.abs().min().item()
            if margins is not None and isinstance(module, torch.nn.MaxPool2d):
                b, c, hh, ww = h.shape
                win = h[:, :, : hh - hh % 2, : ww - ww % 2].reshape(b, c, hh // 2, 2, ww // 2, 2)
                top = win.permute(0, 1, 2, 4, 3, 5).reshape(b, c, hh // 2, ww // 2, 4).sort(-1, descending=True)
                gap = (top.values[..., 0] - top.values[..., 1])[top.values[..., 0] > 0]
                margins[f"pool{i}"] = gap.min().item() if gap.numel() else float("inf")
            h = module(h)
            out[i] = h
        return out

    margins: dict[str, float] = {}
    with torch.no_grad():
        p, t = walk(netG(x), margins), walk(x, None)
    for i in layers:
        d = (p[i] - t[i]).abs()
        margins[f"l1_{i}"] = d[d > 0].min().item() if bool((d > 0).any()) else float("inf")
    return margins


@functools.lru_cache(maxsize=8)
def _loss_image_purpose(size: tuple[int, int], batch: int) -> str:
    """The first candidate purpose whose images keep every VGG kink KINK_MARGIN away (see KINK_MARGIN)."""
    model = _torch_model(SMALL, "cpu")  # every loss row's G and VGG: seeded alike, the NCE options aside
    for k in range(KINK_CANDIDATES):
        purpose = "images" if k == 0 else f"images#{k}"
        rng = generator_for_loss(size, batch, purpose)
        if min(vgg_kink_margins(model, _smooth_images(rng, size, batch)["hazy"]).values()) >= KINK_MARGIN:
            return purpose
    raise RuntimeError(f"parity/cases.py: none of {KINK_CANDIDATES} image candidates for the loss rows at "
                       f"{size} keeps VGG's kinks {KINK_MARGIN:g} away; lower KINK_MARGIN only with a "
                       "measurement of the port's VGG deviation")


def _loss_images(case: Case, batch: int) -> Capture:
    """The images every loss row at this size and batch shares, screened for kinks (see KINK_MARGIN)."""
    return _smooth_images(generator_for_loss(case.size, batch, _loss_image_purpose(case.size, batch)),
                          case.size, batch)


def _images(case: Case, batch: int, purpose: str = "images") -> Capture:
    return _smooth_images(rng_for(case, purpose), case.size, batch)


def _smooth_images(rng: np.random.Generator, size: tuple[int, int], batch: int) -> Capture:
    # Smooth-ish images in [-1, 1]: a low-frequency field plus noise, so the high-pass and the perceptual
    # features see structure rather than white noise.
    h, w = size
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = {}
    for key in ("hazy", "clear"):
        phase = rng.uniform(0, 2 * np.pi, (batch, 3, 1, 1))
        base = 0.6 * np.sin(2 * np.pi * (xx + yy)[None, None] + phase)
        out[key] = np.clip(base + 0.3 * rng.standard_normal((batch, 3, h, w)), -1, 1).astype(np.float32)
    return out


@functools.lru_cache(maxsize=4)
def _torch_model(cfg: ModelConfig, device: str) -> Any:
    import warnings

    from singan_torch.model import SinGANDehazeModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random VGG weights are the point here, not a user mistake
        return SinGANDehazeModel(cfg, TRAIN, device=device)


@functools.lru_cache(maxsize=4)
def _ms_model(cfg: ModelConfig) -> Any:
    import warnings

    from singan_ms.model import SinGANDehazeModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SinGANDehazeModel(cfg, TRAIN, jit=False)


def _model_weights(model: Any, cfg: ModelConfig, tag: str) -> dict[str, Capture]:
    sets = {}
    for net_name, net in (("G", model.netG), ("D", model.netD), ("F", model.netF), ("vgg16", model.vgg)):
        sets[f"{tag}/{net_name}"] = torch_state(net)
    return sets


def _load_model_weights(model: Any, record: Record, tag: str) -> None:
    for net_name, net in (("G", model.netG), ("D", model.netD), ("F", model.netF), ("vgg16", model.vgg)):
        load_ms(net, record.weights[f"{tag}/{net_name}"], f"{tag}/{net_name}")


def _cfg_tag(cfg: ModelConfig) -> str:
    return f"model-{cfg.variant}-ngf{cfg.ngf}-b{cfg.n_blocks}-{cfg.neg_perturb}"


FP64_PREFIX = "fp64/"


def _loss_reference(case: Case, ctx: Context) -> Record:
    """The loss and its gradients in float32 (the reference) and again in float64 (`fp64/...`): the
    difference is the reference's own float32 error, which the judge allows the port as well. It matters
    for PatchNCE at initialisation, where F's outputs have norms near the 1e-7 of CUT's L2 normalisation and
    the gradient through x / (||x|| + 1e-7) amplifies float32 rounding (docs/parity.md)."""
    import copy

    cfg = case.p["cfg"]
    model = _torch_model(cfg, ctx.torch_device)
    batch, (h, w) = case.p.get("batch", 1), case.size
    ins = _loss_images(case, batch)
    d = _draws(cfg, h, w, batch)
    ins.update(draws_to_inputs(d))
    outputs = _loss_outputs(case, model, ins, d, None)
    model64 = copy.deepcopy(model)
    for net in (model64.netG, model64.netD, model64.netF, model64.vgg, model64.highpass):
        net.double()
    outputs.update({FP64_PREFIX + k: v for k, v in _loss_outputs(case, model64, ins, d, "float64").items()})
    return Record(inputs=ins, weights=_model_weights(model, cfg, _cfg_tag(cfg)), outputs=outputs)


def _loss_outputs(case: Case, model: Any, ins: Capture, d: StepDraws, dtype: str | None) -> Capture:
    import torch

    loss = case.p["loss"]
    if dtype is not None:
        ins = {k: v.astype(dtype) for k, v in ins.items() if k in ("hazy", "clear")}
        d = StepDraws(d.patch_ids, [None if n is None else n.astype(dtype) for n in d.neg_noise], d.mmd_ids_fake,
                      d.mmd_ids_real)
    real_A, real_B = model._tensor(ins["hazy"]), model._tensor(ins["clear"])
    for net in model.nets.values():
        net.train()
        net.zero_grad(set_to_none=True)
    nets, _ = LOSS_OUTPUTS[loss]
    if loss == "lsgan_D":
        model.netD.requires_grad_(True)
        with torch.no_grad():
            fake = model.netG(real_A)
        value, real, fake_l = model.discriminator_loss(fake, real_B)
        out = {"loss": value, "loss/real": real, "loss/fake": fake_l}
        value.backward()
    else:
        model.netD.requires_grad_(False)
        fake, feat_k = model.forward(real_A)
        g = model.generator_loss(fake, feat_k, real_A, real_B, d)
        value = {"lsgan_G": g.loss_G_GAN, "patchnce": g.loss_NCE, "perceptual": g.loss_perceptual,
                 "mmd": g.loss_MMD, "total": g.loss_G}[loss]
        out = {"loss": value}
        if loss == "total":
            out.update({"loss/G_GAN": g.loss_G_GAN, "loss/NCE": g.loss_NCE, "loss/perceptual": g.loss_perceptual,
                        "loss/MMD": g.loss_MMD})
        value.backward()
    outputs = {k: v.detach().cpu().numpy().copy() for k, v in out.items()}
    for net_name in nets:
        for pname, prm in model.nets[net_name].named_parameters():
            grad = prm.grad if prm.grad is not None else torch.zeros_like(prm)
            outputs[f"grad/{net_name}/{pname}"] = grad.detach().cpu().numpy().copy()
    model.netD.requires_grad_(True)
    for net in model.nets.values():
        net.zero_grad(set_to_none=True)
    return outputs


def _loss_port(case: Case, ctx: Context, record: Record) -> Capture:
    import mindspore as ms
    from mindspore import ops

    from singan_ms.networks import torch_name

    cfg, loss = case.p["cfg"], case.p["loss"]
    model = _ms_model(cfg)
    _load_model_weights(model, record, _cfg_tag(cfg))
    ins = record.inputs
    d = draws_from_inputs(ins, cfg)
    patch_ids, noise, ids_fake, ids_real = model.draw_tensors(d)
    losses = model.train_step.losses
    real_A, real_B = to_ms(ins["hazy"]), to_ms(ins["clear"])
    for net in model.nets.values():
        net.set_train(True)
    nets, _ = LOSS_OUTPUTS[loss]
    params = [p for n in nets for p in model.nets[n].trainable_params()]
    names = [f"grad/{n}/{torch_name(p.name)}" for n in nets for p in model.nets[n].trainable_params()]
    if loss == "lsgan_D":
        fake = ops.stop_gradient(model.netG(real_A))
        (value, real, fake_l), grads = ms.value_and_grad(losses.discriminator_loss, None, params, has_aux=True)(
            fake, real_B)
        out = {"loss": value, "loss/real": real, "loss/fake": fake_l}
    else:
        index = {"total": 0, "lsgan_G": 1, "patchnce": 2, "perceptual": 3, "mmd": 4}[loss]

        def fn(a: Any, b: Any) -> Any:
            fake, feat_k = model.netG.forward_with_features(a, tuple(cfg.nce_layers))
            feat_k = [ops.stop_gradient(f) for f in feat_k]
            parts = losses.generator_loss(fake, feat_k, a, b, patch_ids, noise, ids_fake, ids_real)
            return parts[index], parts

        (value, parts), grads = ms.value_and_grad(fn, None, params, has_aux=True)(real_A, real_B)
        out = {"loss": value}
        if loss == "total":
            out.update({"loss/G_GAN": parts[1], "loss/NCE": parts[2], "loss/perceptual": parts[3],
                        "loss/MMD": parts[4]})
    result = {k: v.asnumpy() for k, v in out.items()}
    result.update({n: g.asnumpy() for n, g in zip(names, grads, strict=True)})
    return result


def loss_structural_zeros(case: Case) -> set[str]:
    """Gradient names that are mathematically zero for this loss (see structural_zero_biases); conv biases
    whose output is also an NCE feature tap get a gradient through F when the loss uses the taps."""
    cfg, loss = case.p["cfg"], case.p.get("loss", "train")
    nets, uses_taps = LOSS_OUTPUTS.get(loss, (("G", "D", "F"), True))
    zeros = set()
    if "G" in nets:
        taps = {f"model.{i}.bias" for i in cfg.nce_layers} if uses_taps else set()
        zeros |= {f"G/{n}" for n in structural_zero_biases(_ms_skeleton("G", cfg)) if n not in taps}
    if "D" in nets:
        zeros |= {f"D/{n}" for n in structural_zero_biases(_ms_skeleton("D", cfg))}
    return zeros


@functools.lru_cache(maxsize=8)
def _ms_skeleton(net: str, cfg: ModelConfig) -> Any:
    from singan_ms import networks as mn

    return mn.ResnetGenerator(cfg) if net == "G" else mn.NLayerDiscriminator(cfg)


# ---------------------------------------------------------------------------------------------------------
# Runner: one optimiser step (three, so the bias corrections move)
# ---------------------------------------------------------------------------------------------------------

OPTIM_SHAPES = {"conv.weight": (16, 8, 3, 3), "conv.bias": (16,), "linear.weight": (32, 64)}


def _optim_inputs(case: Case) -> Capture:
    rng = rng_for(case, "optim")
    ins = {}
    for name, shape in OPTIM_SHAPES.items():
        ins[f"param/{name}"] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
        for step in range(case.p["steps"]):
            # Gradients over eight decades, including ones at Adam's eps, where its arithmetic is most fragile.
            scale = 10.0 ** rng.uniform(-9, -1, shape)
            ins[f"grad{step}/{name}"] = (scale * rng.standard_normal(shape)).astype(np.float32)
    return ins


def _optim_reference(case: Case, ctx: Context) -> Record:
    import torch

    ins = _optim_inputs(case)
    params = {n: torch.nn.Parameter(torch.from_numpy(ins[f"param/{n}"].copy()).to(ctx.torch_device))
              for n in OPTIM_SHAPES}
    opt = torch.optim.Adam(params.values(), lr=TRAIN.lr, betas=(TRAIN.beta1, TRAIN.beta2))
    out = {}
    for step in range(case.p["steps"]):
        for n, prm in params.items():
            prm.grad = torch.from_numpy(ins[f"grad{step}/{n}"]).to(ctx.torch_device)
        opt.step()
        for n, prm in params.items():
            out[f"step{step}/{n}"] = prm.detach().cpu().numpy().copy()
    for n, prm in params.items():
        st = opt.state[prm]
        out[f"exp_avg/{n}"] = st["exp_avg"].cpu().numpy()
        out[f"exp_avg_sq/{n}"] = st["exp_avg_sq"].cpu().numpy()
    return Record(inputs=ins, outputs=out)


def _optim_port(case: Case, ctx: Context, record: Record) -> Capture:
    import mindspore as ms
    from mindspore import Parameter

    from singan_ms.optim import Adam

    ins = record.inputs
    params = [Parameter(to_ms(ins[f"param/{n}"].copy()), name=n) for n in OPTIM_SHAPES]
    opt = Adam(params, lr=TRAIN.lr, betas=(TRAIN.beta1, TRAIN.beta2), name="adam")
    # As singan_ms.model uses it: inside a compiled (jit) graph. mutable: a tuple of tensors is otherwise a
    # compile-time constant and every step would recompile.
    step_fn = ms.jit(opt.construct)
    out = {}
    for step in range(case.p["steps"]):
        step_fn(ms.mutable(tuple(to_ms(ins[f"grad{step}/{n}"]) for n in OPTIM_SHAPES)))
        for n, prm in zip(OPTIM_SHAPES, params, strict=True):
            out[f"step{step}/{n}"] = prm.asnumpy().copy()
    for n, m, v in zip(OPTIM_SHAPES, opt.exp_avg, opt.exp_avg_sq, strict=True):
        out[f"exp_avg/{n}"], out[f"exp_avg_sq/{n}"] = m.asnumpy(), v.asnumpy()
    return out


# ---------------------------------------------------------------------------------------------------------
# Runner: a training trajectory (both SinGANDehazeModel.optimize on identical batches and draws)
# ---------------------------------------------------------------------------------------------------------


def _train_inputs(case: Case) -> Capture:
    cfg, (h, w), batch = case.p["cfg"], case.size, case.p.get("batch", 1)
    ins = {}
    for step in range(case.p["steps"]):
        imgs = _images(case, batch, f"images{step}")
        ins[f"step{step}/hazy"], ins[f"step{step}/clear"] = imgs["hazy"], imgs["clear"]
        ins.update(draws_to_inputs(_draws(cfg, h, w, batch, step), f"step{step}/draw/"))
    ins["probe"] = _images(case, 1, "probe")["hazy"]
    return ins


def _train_reference(case: Case, ctx: Context) -> Record:
    import warnings

    import torch

    from singan_torch.model import SinGANDehazeModel

    cfg = case.p["cfg"]
    ins = _train_inputs(case)
    out, weights = {}, {}
    # Twice: in float32 (the reference) and in float64 (`fp64/...`), whose difference is how far float32
    # rounding alone moves the trajectory; the judge allows the port twice that (docs/parity.md).
    for dtype, prefix in ((np.float32, ""), (np.float64, FP64_PREFIX)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = SinGANDehazeModel(cfg, TRAIN, device=ctx.torch_device)
        if dtype is np.float32:
            weights = _model_weights(model, cfg, "train/" + _cfg_tag(cfg))
        else:
            for net in (model.netG, model.netD, model.netF, model.vgg, model.highpass):
                net.double()  # Parameters convert in place, so the optimisers keep pointing at them
        for step in range(case.p["steps"]):
            d = draws_from_inputs(ins, cfg, f"step{step}/draw/")
            d = StepDraws(d.patch_ids, [None if n is None else n.astype(dtype) for n in d.neg_noise],
                          d.mmd_ids_fake, d.mmd_ids_real)
            losses = model.optimize(ins[f"step{step}/hazy"].astype(dtype), ins[f"step{step}/clear"].astype(dtype), d)
            out.update({f"{prefix}step{step}/{k}": np.asarray(v, dtype) for k, v in losses.items()})
            model.netG.eval()
            with torch.no_grad():
                probe = model.netG(model._tensor(ins["probe"].astype(dtype))).cpu().numpy()
            out[f"{prefix}step{step}/probe"] = probe
        for net_name, net in model.nets.items():
            out.update({f"{prefix}param/{net_name}/{k}": v.detach().cpu().numpy().copy()
                        for k, v in net.named_parameters()})
    return Record(inputs=ins, weights=weights, outputs=out)


def _train_port(case: Case, ctx: Context, record: Record) -> Capture:
    import warnings

    from singan_ms.model import SinGANDehazeModel
    from singan_ms.networks import torch_name

    cfg = case.p["cfg"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SinGANDehazeModel(cfg, TRAIN, jit=True)  # graph-compiled step, as training runs it
    _load_model_weights(model, record, "train/" + _cfg_tag(cfg))
    ins = record.inputs
    out = {}
    for step in range(case.p["steps"]):
        d = draws_from_inputs(ins, cfg, f"step{step}/draw/")
        losses = model.optimize(ins[f"step{step}/hazy"], ins[f"step{step}/clear"], d)
        out.update({f"step{step}/{k}": np.asarray(v, np.float32) for k, v in losses.items()})
        out[f"step{step}/probe"] = model.dehaze(ins["probe"][0])[None]
    for net_name, net in model.nets.items():
        out.update({f"param/{net_name}/{torch_name(k)}": p.asnumpy() for k, p in net.parameters_and_names()
                    if p.requires_grad})
    return out


# ---------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------

RUNNERS: dict[str, tuple[Callable[..., Record], Callable[..., Capture]]] = {
    "module": (_module_reference, _module_port),
    "loss": (_loss_reference, _loss_port),
    "optim": (_optim_reference, _optim_port),
    "train": (_train_reference, _train_port),
}

L = arch.Layer
_LAYER_SIZES = ((16, 16), (9, 14))
_NET_SIZES = ((32, 32), (36, 44))

TABLE: list[Row] = [
    # single layers, as each framework's build_layer makes them for the networks
    Row("conv3x3", "layer", "module", _LAYER_SIZES, params=dict(build="layer", layer=L("conv", 16, kernel=3,
                                                                                     padding=1, bias=True))),
    Row("conv3x3_stride2", "layer", "module", _LAYER_SIZES,
        params=dict(build="layer", layer=L("conv", 16, kernel=3, stride=2, padding=1, bias=True))),
    Row("conv4x4_stride2_nobias", "layer", "module", _LAYER_SIZES,
        params=dict(build="layer", layer=L("conv", 16, kernel=4, stride=2, padding=1, bias=False))),
    Row("conv7x7", "layer", "module", _LAYER_SIZES, params=dict(build="layer", layer=L("conv", 3, kernel=7,
                                                                                     bias=True))),
    Row("reflection_pad3", "layer", "module", _LAYER_SIZES, params=dict(build="layer", layer=L("reflect_pad",
                                                                                             LAYER_C, pad=3))),
    Row("instance_norm", "layer", "module", _LAYER_SIZES, params=dict(build="layer", layer=L("norm", LAYER_C))),
    Row("batch_norm_train", "layer", "module", _LAYER_SIZES,
        params=dict(build="layer", layer=L("norm", LAYER_C), norm="batch", train=True, state=True, batch=4)),
    Row("batch_norm_eval", "layer", "module", _LAYER_SIZES,
        params=dict(build="layer", layer=L("norm", LAYER_C), norm="batch", train=False, state=True)),
    Row("conv_transpose_s2", "layer", "module", _LAYER_SIZES,
        params=dict(build="layer", layer=L("conv_transpose", 4, kernel=3, stride=2, padding=1, bias=True))),
    Row("resblock", "layer", "module", _LAYER_SIZES, params=dict(build="layer", layer=L("resblock", LAYER_C,
                                                                                      bias=True))),
    Row("downsample_blur", "layer", "module", _LAYER_SIZES, params=dict(build="layer",
                                                                        layer=L("downsample", LAYER_C))),
    Row("upsample_blur", "layer", "module", _LAYER_SIZES, params=dict(build="layer", layer=L("upsample", LAYER_C))),
    # inputs up to +-8: MindSpore's own tanh errs 1e-4 for |x| in [4, 6)
    Row("tanh", "layer", "module", _LAYER_SIZES, params=dict(build="layer", layer=L("tanh", LAYER_C),
                                                             input_scale=8.0)),
    Row("leaky_relu", "layer", "module", _LAYER_SIZES, params=dict(build="layer", layer=L("lrelu", LAYER_C))),
    Row("relu", "layer", "module", _LAYER_SIZES, params=dict(build="layer", layer=L("relu", LAYER_C))),
    Row("linear", "layer", "module", ((16, 16),), params=dict(build="linear", in_features=256, out_features=64)),
    # whole networks with their own initialisation, every layer captured
    Row("G_stride2", "network", "module", _NET_SIZES, "network", dict(build="G", cfg=FULL, batch=1)),
    Row("G_antialias", "network", "module", ((32, 32), (28, 36)), "network", dict(build="G", cfg=FULL_AA,
                                                                                  batch=1)),
    Row("G_batchnorm_train_then_eval", "network", "module", ((32, 32),), "network",
        dict(build="G", cfg=SMALL_BN, batch=2, train_then_eval=True, state=True)),
    Row("D_stride2", "network", "module", ((32, 32), (48, 40)), "network", dict(build="D", cfg=FULL, batch=1)),
    Row("D_antialias", "network", "module", ((32, 32),), "network", dict(build="D", cfg=FULL_AA, batch=1)),
    Row("F", "network", "module", ((8, 8), (16, 12)), "network", dict(build="F", cfg=FULL)),
    Row("vgg16_features", "network", "module", ((32, 32), (24, 40)), "network", dict(build="vgg", batch=1)),
    Row("gaussian_highpass", "network", "module", ((32, 32), (20, 28)), "layer", dict(build="highpass", cfg=FULL)),
    # the four losses on their own, the D loss, the total; each with its parameter gradients
    Row("lsgan_G", "loss", "loss", ((32, 32),), "loss", dict(cfg=SMALL, loss="lsgan_G")),
    Row("lsgan_D", "loss", "loss", ((32, 32),), "loss", dict(cfg=SMALL, loss="lsgan_D")),
    Row("patchnce_uniform", "loss", "loss", ((32, 32),), "loss", dict(cfg=SMALL, loss="patchnce")),
    Row("patchnce_gaussian", "loss", "loss", ((32, 32),), "loss", dict(cfg=SMALL_GAUSS, loss="patchnce")),
    Row("perceptual", "loss", "loss", ((32, 32),), "loss", dict(cfg=SMALL, loss="perceptual")),
    Row("mmd", "loss", "loss", ((32, 32),), "loss", dict(cfg=SMALL, loss="mmd")),
    Row("total", "loss", "loss", ((32, 32), (24, 40)), "loss", dict(cfg=SMALL, loss="total", batch=2)),
    # torch.optim.Adam vs singan_ms.optim.Adam under jit
    Row("adam", "optim", "optim", ((1, 1),), "optim", dict(steps=3)),
    # both frameworks' SinGANDehazeModel.optimize, TRAIN_STEPS iterations
    Row("trajectory", "train", "train", ((32, 32),), "train_fn", dict(cfg=SMALL, steps=TRAIN_STEPS)),
]

CASES: list[Case] = [Case(row, size) for row in TABLE for size in row.sizes]


def case_by_id(case_id: str) -> Case:
    for c in CASES:
        if c.id == case_id:
            return c
    raise KeyError(case_id)
