"""Conversion of SinGAN-Dehaze / CUT networks between PyTorch and MindSpore, verified before anything is written.

`convert(path, direction, ...)` accepts one network file, a run directory (CUT's or ours: `*_net_{G,D,F}`),
our `train_state.pth` (networks + Adam state + schedule: see convert/optimizer.py), a DataParallel file
(`module.` keys) or a torchvision vgg16 state_dict, each as .pth/.ckpt or .safetensors. The model config
travels with the weights as `run_config.json` beside the outputs, so the other framework rebuilds the exact
network (including BatchNorm momentum, converted 1 - m inside singan_ms).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convert import detect, rules
from convert.formats import ConvertError, format_of, read_tensors, write_tensors
from convert.verify import Verification, verify_network
from singan_common.config import CONFIG_FILE, ModelConfig, RunConfig

DIRECTIONS = ("torch2ms", "ms2torch")
NET_FILE = re.compile(r"^(?P<label>.+)_net_(?P<net>[GDF])\.(?P<ext>pth|pt|ckpt|safetensors)$")
EXTRA_SUFFIX = ".extra.json"  # BatchNorm counters MindSpore has no slot for, kept for the way back


@dataclass
class NetInput:
    network: str
    path: Path
    tensors: dict[str, np.ndarray]  # names as in the file (source framework), `module.` stripped
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class Result:
    outputs: list[Path]
    verifications: list[Verification]


def out_suffix(direction: str, fmt: str | None) -> str:
    if fmt is None:
        fmt = "ckpt" if direction == "torch2ms" else "pth"
    return {"ckpt": ".ckpt", "pth": ".pth", "safetensors": ".safetensors"}[fmt]


def read_net(path: Path, direction: str) -> NetInput:
    raw, _ = read_tensors(path)
    raw = detect.strip_module_prefix(raw)
    found = detect.detect(raw, str(path))
    source = "torch" if direction == "torch2ms" else "ms"
    if found.naming not in (source, "either"):
        other = "ms2torch" if direction == "torch2ms" else "torch2ms"
        raise ConvertError(f"{path}: holds {found.naming} parameter names; use {other} for it")
    counters = {}
    extra = path.with_name(path.name + EXTRA_SUFFIX)
    if direction == "ms2torch" and extra.is_file():
        counters = {k: int(v) for k, v in json.loads(extra.read_text()).get("num_batches_tracked", {}).items()}
    return NetInput(found.network, path, raw, counters)


def find_run_files(run_dir: Path) -> dict[str, Path]:
    """latest_net_{G,D,F} (any supported suffix), else the highest epoch's set."""
    sets: dict[str, dict[str, Path]] = {}
    for p in sorted(run_dir.iterdir()):
        m = NET_FILE.match(p.name)
        if m:
            sets.setdefault(m["label"], {})[m["net"]] = p
    if not sets:
        raise ConvertError(f"{run_dir}: no *_net_G/D/F checkpoint files in this folder")
    if "latest" in sets:
        return sets["latest"]
    epochs = [k for k in sets if k.isdigit()]
    if not epochs:
        raise ConvertError(f"{run_dir}: no latest_net_* or <epoch>_net_* files")
    return sets[max(epochs, key=int)]


def run_config(inputs: list[NetInput], config_file: Path | None, near: Path) -> RunConfig:
    """An explicit --config, else run_config.json beside the input, else the model inferred from the shapes."""
    for candidate in (config_file, near / CONFIG_FILE):
        if candidate is not None and candidate.is_file():
            return RunConfig.load(candidate)
    if config_file is not None:
        raise ConvertError(f"{config_file}: config file not found")
    return RunConfig(model=detect.infer_config({n.network: detect.to_torch_names(n.tensors) for n in inputs
                                                if n.network != "vgg16"}, str(near)))


def build_torch(network: str, cfg: ModelConfig):
    from singan_torch import networks

    if network == "vgg16":
        return networks.VGG16Features()
    return {"G": networks.ResnetGenerator, "D": networks.NLayerDiscriminator, "F": networks.PatchSampleF}[network](cfg)


def build_ms(network: str, cfg: ModelConfig):
    from singan_ms import networks

    if network == "vgg16":
        return networks.VGG16Features()
    return {"G": networks.ResnetGenerator, "D": networks.NLayerDiscriminator, "F": networks.PatchSampleF}[network](cfg)


def ms_slots(network: str, cfg: ModelConfig) -> tuple[object, dict[str, rules.Slot | np.ndarray]]:
    """The MindSpore network with its weights left unallocated, and its parameters' shapes and dtypes (the
    fixed blur filters, which the rules rebuild, as values): all the rules need when nothing is verified."""
    from mindspore import dtype_to_nptype
    from mindspore.nn.utils import no_init_parameters

    with no_init_parameters():
        net = build_ms(network, cfg)
    slots = {k: p.asnumpy() if k.endswith("filt") else rules.Slot(tuple(p.shape), np.dtype(dtype_to_nptype(p.dtype)))
             for k, p in net.parameters_and_names()}
    return net, slots


def torch_slots(network: str, cfg: ModelConfig) -> tuple[object, dict[str, rules.Slot | np.ndarray]]:
    """The same for PyTorch: the module on the meta device (shapes, no storage); filters rebuilt on the CPU."""
    import torch

    with torch.device("meta"):
        net = build_torch(network, cfg)
    slots: dict[str, rules.Slot | np.ndarray] = {}
    for k, v in net.state_dict().items():
        slots[k] = rules.Slot(tuple(v.shape), torch.empty((), dtype=v.dtype).numpy().dtype)
    for name, mod in net.named_modules():
        if hasattr(mod, "filt"):
            with torch.device("cpu"):
                slots[f"{name}.filt"] = type(mod)(mod.channels).filt.numpy()
    return net, slots


def unconverted_keys(net: NetInput, rule_list: list[rules.Rule]) -> tuple[str, ...]:
    """torchvision's full vgg16 holds the classifier and the features past relu3_3: expected, not converted."""
    if net.network != "vgg16":
        return ()
    sources = {r.source for r in rule_list}
    return tuple(k for k in net.tensors if k not in sources)


def convert_net(net: NetInput, direction: str, cfg: ModelConfig, verify: bool) -> tuple[dict, Verification | None]:
    """Target-named tensors for one network; with `verify`, both sides loaded and compared on one input.

    Unverified, neither network's weights are allocated (MindSpore's no_init_parameters, torch's meta device)
    and the converted tensors are the source arrays themselves wherever dtype and layout already agree: the
    converter's memory is then the source file's tensors plus what the writer needs (docs/benchmarks.md)."""
    import torch
    from mindspore import Tensor

    from singan_ms.networks import load_into, to_numpy_state

    if direction == "torch2ms":
        if not verify:
            m_net, built = ms_slots(net.network, cfg)
        else:
            m_net = build_ms(net.network, cfg)
            built = to_numpy_state(m_net)
        rule_list = rules.ms_rules(m_net)
        ignorable = unconverted_keys(net, rule_list)
        out = rules.apply_rules(rule_list, net.tensors, built, {}, str(net.path), ignorable)
        if not verify:
            return out, None
        t_net = build_torch(net.network, cfg)
        t_net.load_state_dict({k: torch.from_numpy(v) for k, v in net.tensors.items() if k not in ignorable},
                              strict=True)
        params = dict(m_net.parameters_and_names())
        for k, v in out.items():
            params[k].set_data(Tensor(v))
    else:
        if not verify:
            t_net, built = torch_slots(net.network, cfg)
        else:
            t_net = build_torch(net.network, cfg)
            built = {k: v.numpy() for k, v in t_net.state_dict().items()}
        rule_list = rules.torch_rules(t_net)
        ignorable = unconverted_keys(net, rule_list)
        out = rules.apply_rules(rule_list, net.tensors, built, net.counters, str(net.path), ignorable)
        if not verify:
            return out, None
        t_net.load_state_dict({k: torch.from_numpy(v) for k, v in out.items()}, strict=True)
        m_net = build_ms(net.network, cfg)
        load_into(m_net, {k: v for k, v in net.tensors.items() if k not in ignorable}, net.path)
    return out, verify_network(net.network, cfg, t_net.eval(), m_net)


def gather_inputs(path: Path, direction: str) -> tuple[list[NetInput], Path | None]:
    """The networks to convert, and a training-state file if the input is or holds one."""
    if path.is_dir():
        files = find_run_files(path)
        state = path / ("train_state.pth" if direction == "torch2ms" else "train_state.ckpt")
        state = state if state.is_file() else None
        return [read_net(files[k], direction) for k in ("G", "D", "F") if k in files], state
    if not path.exists():
        raise ConvertError(f"{path}: no such file or directory")
    if path.name.startswith("train_state."):
        return [], path
    return [read_net(path, direction)], None


def default_output(path: Path, direction: str) -> Path:
    tag = "ms" if direction == "torch2ms" else "torch"
    return path.with_name(f"{path.name}_{tag}") if path.is_dir() else path.parent


def convert(path: str | Path, direction: str, out: str | Path | None = None, fmt: str | None = None,
            verify: bool = True, force: bool = False, config: str | Path | None = None, variant: str = "auto",
            report=print) -> Result:
    """Convert `path`; nothing is written unless every network converts (and verifies, when asked)."""
    if direction not in DIRECTIONS:
        raise ConvertError(f"unknown direction {direction!r}; choose torch2ms or ms2torch")
    path = Path(path)
    from singan_ms.device import setup

    setup("CPU", mode="pynative")  # verification calls single cells, which graph mode cannot
    inputs, state_file = gather_inputs(path, direction)
    state = None
    if state_file is not None:
        from convert.optimizer import read_state

        state = read_state(state_file, direction)
    out_dir = Path(out) if out is not None else default_output(path, direction)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConvertError(f"{out_dir}: -o must be a folder")
    near = path if path.is_dir() else path.parent
    state_nets = [NetInput(k, state_file, t, state.counters.get(k, {})) for k, t in state.nets.items()] if state else []
    run_cfg = run_config(inputs or state_nets, Path(config) if config else None, near)
    cfg = run_cfg.model
    if variant != "auto" and variant != cfg.variant:
        raise ConvertError(f"{path}: --variant {variant} given, but the weights are the {cfg.variant} variant")
    suffix = out_suffix(direction, fmt)
    planned: list[tuple[Path, dict[str, np.ndarray], dict[str, int]]] = []
    verifications = []

    def convert_checked(net: NetInput) -> dict[str, np.ndarray]:
        tensors, verification = convert_net(net, direction, cfg, verify)
        if verification is not None:
            verifications.append(verification)
            report(verification.summary())
            if not verification.passed:
                raise ConvertError(f"{net.path}: verification failed, nothing written ({verification.summary()})")
        return tensors

    for net in inputs:
        tensors = convert_checked(net)
        stem = net.path.name[: -len(net.path.suffix)]
        counters = rules.counters_of(net.tensors) if direction == "torch2ms" else {}
        planned.append((out_dir / f"{stem}{suffix}", tensors, counters))
    planned_state = None
    if state is not None:
        from convert.optimizer import plan_state

        state.check_hyperparameters(run_cfg)
        # The networks inside a run's state are the latest_net_* files again: verified once is enough.
        converted = {}
        for net in state_nets:
            if inputs:
                converted[net.network] = convert_net(net, direction, cfg, False)[0]
            else:
                converted[net.network] = convert_checked(net)
        planned_state = plan_state(state, direction, run_cfg, converted, out_dir)
        if planned_state.target.exists() and not force:
            raise ConvertError(f"{planned_state.target}: exists; pass --force to overwrite")
    outputs = write_outputs(planned, out_dir, run_cfg, suffix, force)
    if planned_state is not None:
        planned_state.write()
        outputs.append(planned_state.target)
    return Result(outputs, verifications)


def write_outputs(planned, out_dir: Path, run_cfg: RunConfig, suffix: str, force: bool) -> list[Path]:
    """Check every target first, then write each atomically: a refusal leaves no file behind."""
    from singan_common.fsutil import atomic_write_text

    cfg_path = out_dir / CONFIG_FILE
    if not force:
        for target, _, _ in planned:
            if target.exists():
                raise ConvertError(f"{target}: exists; pass --force to overwrite")
        if cfg_path.is_file() and RunConfig.load(cfg_path).model != run_cfg.model:
            raise ConvertError(f"{cfg_path}: holds a different model config; pass --force to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = format_of(Path("x" + suffix))
    meta = {"format": "pt" if fmt == "pth" else "ms", "singan_run_config": json.dumps(run_cfg.to_dict())}
    written = []
    for target, tensors, counters in planned:
        write_tensors(target, tensors, fmt, meta if fmt == "safetensors" else None, force=True)
        written.append(target)
        if counters:
            extra = target.with_name(target.name + EXTRA_SUFFIX)
            atomic_write_text(extra, json.dumps({"num_batches_tracked": counters}, indent=2) + "\n")
            written.append(extra)
    run_cfg.save(cfg_path)
    written.append(cfg_path)
    return written
