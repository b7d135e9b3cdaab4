"""Name mapping by rule: walk the *target* network by layer type, one transform per kind of layer.

| layer (torch / MindSpore)                 | transform | what happens                                             |
|-------------------------------------------|-----------|----------------------------------------------------------|
| Conv2d / Conv2d(pad_mode='pad')           | identity  | weight (out, in, kh, kw) and bias copied                 |
| ConvTranspose2d / Conv2dTranspose         | identity  | weight (in, out, kh, kw) in both; bias copied            |
| Linear / Dense                            | identity  | weight (out, in) in both                                 |
| BatchNorm2d / BatchNorm2d                 | rename    | weight<->gamma, bias<->beta, running_mean<->moving_mean,  |
|                                           |           | running_var<->moving_variance                            |
| BatchNorm2d.num_batches_tracked / (none)  | drop      | MindSpore has no counter; torch2ms keeps it in the       |
|                                           |           | sidecar so ms2torch restores it bit for bit              |
| CUT Downsample / Upsample `filt`          | rebuild   | fixed blur taps: rebuilt from the config and the file's  |
|                                           |           | value checked against them, never trusted                |
| InstanceNorm2d (affine off) / GroupNorm   | none      | no state on either side                                  |

BatchNorm momentum is a constructor argument, not a tensor: it travels in the model config (PyTorch's
convention; singan_ms builds nn.BatchNorm2d with 1 - m). A table of literal key names would be the wrong
design: this walks whatever network the config builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convert.formats import ConvertError, contiguous

NORM_RENAME = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
COUNTER = "num_batches_tracked"


@dataclass(frozen=True)
class Slot:
    """A target tensor's shape and dtype, for networks built without allocating their weights."""

    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class Rule:
    target: str
    source: str | None
    transform: str  # identity | rename | rebuild | restore


def ms_rules(net) -> list[Rule]:
    """Rules that fill every parameter of a singan_ms cell from PyTorch-named tensors."""
    from mindspore import nn

    from singan_ms.networks import Downsample, Upsample

    rules = []
    for cell_name, cell in net.cells_and_names():
        prefix = f"{cell_name}." if cell_name else ""
        if isinstance(cell, (nn.Conv2d, nn.Conv2dTranspose, nn.Dense)):
            rules.append(Rule(prefix + "weight", prefix + "weight", "identity"))
            if cell.has_bias:
                rules.append(Rule(prefix + "bias", prefix + "bias", "identity"))
        elif isinstance(cell, nn.BatchNorm2d):
            rules += [Rule(prefix + ms_name, prefix + t_name, "rename") for t_name, ms_name in NORM_RENAME.items()]
        elif isinstance(cell, (Downsample, Upsample)):
            rules.append(Rule(prefix + "filt", prefix + "filt", "rebuild"))
    return rules


def torch_rules(net) -> list[Rule]:
    """Rules that fill every state_dict entry of a singan_torch module from MindSpore-named tensors."""
    from torch import nn

    from singan_torch.networks import Downsample, Upsample

    rules = []
    for mod_name, mod in net.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            rules.append(Rule(prefix + "weight", prefix + "weight", "identity"))
            if mod.bias is not None:
                rules.append(Rule(prefix + "bias", prefix + "bias", "identity"))
        elif isinstance(mod, nn.BatchNorm2d):
            rules += [Rule(prefix + t_name, prefix + ms_name, "rename") for t_name, ms_name in NORM_RENAME.items()]
            rules.append(Rule(prefix + COUNTER, None, "restore"))
        elif isinstance(mod, (Downsample, Upsample)):
            rules.append(Rule(prefix + "filt", prefix + "filt", "rebuild"))
    return rules


def apply_rules(rules: list[Rule], source: dict[str, np.ndarray], built: dict[str, np.ndarray | Slot],
                counters: dict[str, int], source_name: str, ignorable: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Target tensors from `source` by `rules`. `built` holds the target network's shapes and dtypes (a Slot,
    or the value itself) and the values of the tensors the rules rebuild. Every problem is collected and
    reported at once: missing keys, unexpected keys, shape mismatches, blur filters that are not CUT's."""
    out: dict[str, np.ndarray] = {}
    missing, shape_errors, filt_errors = [], [], []
    used = set()
    for rule in rules:
        want = built[rule.target]
        if rule.transform == "restore":
            out[rule.target] = np.asarray(counters.get(rule.target, 0), dtype=want.dtype).reshape(want.shape)
            continue
        if rule.source not in source:
            if rule.transform == "rebuild":  # a file without the fixed filters is fine: they are rebuilt
                out[rule.target] = want
                continue
            missing.append(rule.source)
            continue
        used.add(rule.source)
        value = source[rule.source]
        if tuple(value.shape) != tuple(want.shape):
            shape_errors.append(f"{rule.source} {tuple(value.shape)} -> {rule.target} needs {tuple(want.shape)}")
            continue
        if rule.transform == "rebuild":
            if not np.allclose(value, want, atol=1e-6):
                filt_errors.append(rule.source)
            out[rule.target] = want
            continue
        out[rule.target] = contiguous(np.asarray(value).astype(want.dtype, copy=False))
    unexpected = [k for k in source if k not in used and not k.endswith(COUNTER) and k not in ignorable]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if shape_errors:
        problems.append("shape mismatch: " + "; ".join(shape_errors[:8]))
    if filt_errors:
        problems.append("blur filters differ from CUT's binomial taps: " + ", ".join(filt_errors[:8]))
    if problems:
        raise ConvertError(f"{source_name}: " + " | ".join(problems))
    return out


def counters_of(source: dict[str, np.ndarray]) -> dict[str, int]:
    """BatchNorm num_batches_tracked values, kept aside when converting to MindSpore."""
    return {k: int(np.asarray(v)) for k, v in source.items() if k.endswith(COUNTER)}
