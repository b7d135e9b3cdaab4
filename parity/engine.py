"""A framework-pair comparison engine: run a PyTorch module and a MindSpore cell with the same weights on the
same inputs, capture every submodule's output on both sides, pair the captures by name and judge each pair.

Not tied to SinGAN: anything whose torch `named_modules()` and MindSpore `cells_and_names()` agree (the same
attribute names, which is how singan_ms is built) can be compared. Typical use:

    from parity.engine import capture_torch, capture_ms, compare_captures
    ref = capture_torch(torch_net, [x])            # {name: array} in execution order, plus "output"
    ours = capture_ms(ms_net, [x])                 # MindSpore must run in PyNative mode (hooks)
    result = compare_captures(ours, ref, tol)      # per-layer Comparisons; result.first_failure names the layer

Captures are plain ordered dicts of numpy arrays, so a reference captured once can be stored (golden replay,
parity/golden.py) and compared on a machine without torch. Names: a submodule's name as torch spells it;
a module called more than once gets `name#1`, `name#2` for the later calls; tuple/list outputs get `name[i]`;
the root's output is `output`; with `state=True` every parameter and buffer after the call is added as
`state/<name>` (MindSpore BatchNorm names mapped to torch's), which is where running statistics show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from parity.compare import Comparison, compare
from parity.tolerances import Tolerance

Capture = dict[str, np.ndarray]
OUTPUT = "output"
STATE_PREFIX = "state/"


# ---------------------------------------------------------------------------------------------------------
# Converting argument trees (arrays, lists/tuples of arrays, anything else passed through)
# ---------------------------------------------------------------------------------------------------------


def to_torch(obj: Any, device: str = "cpu") -> Any:
    """numpy arrays (also inside lists/tuples) to torch tensors on `device`; other values unchanged."""
    import torch

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj)).to(device)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_torch(o, device) for o in obj)
    return obj


def to_ms(obj: Any) -> Any:
    """numpy arrays (also inside lists/tuples) to MindSpore tensors; other values unchanged."""
    from mindspore import Tensor

    if isinstance(obj, np.ndarray):
        return Tensor(np.ascontiguousarray(obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_ms(o) for o in obj)
    return obj


def _flatten(name: str, value: Any, to_numpy: Callable[[Any], np.ndarray], out: Capture) -> None:
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _flatten(f"{name}[{i}]", v, to_numpy, out)
    elif value is not None:
        out[name] = to_numpy(value)


def _unique(name: str, seen: dict[str, int]) -> str:
    n = seen.get(name, 0)
    seen[name] = n + 1
    return name if n == 0 else f"{name}#{n}"


# ---------------------------------------------------------------------------------------------------------
# Capture
# ---------------------------------------------------------------------------------------------------------


def capture_torch(module: Any, args: Sequence[Any], call: Callable[..., Any] | None = None, device: str = "cpu",
                  state: bool = False, grad: bool = False) -> Capture:
    """Every submodule's output (forward hooks, in the order the calls finish) and the result of
    `call(module, *args)` (default: `module(*args)`), as numpy. `args` may hold numpy arrays (converted)."""
    import torch

    def to_numpy(t: Any) -> np.ndarray:
        # copy: numpy() of a CPU tensor shares memory, and buffers (running stats) change in place later
        return t.detach().cpu().numpy().copy() if isinstance(t, torch.Tensor) else np.asarray(t)

    captured: Capture = {}
    seen: dict[str, int] = {}
    handles = []
    for name, mod in module.named_modules():
        if not name:
            continue

        def hook(_mod: Any, _inputs: Any, output: Any, name: str = name) -> None:
            _flatten(_unique(name, seen), output, to_numpy, captured)

        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.set_grad_enabled(grad):
            result = (call or (lambda m, *a: m(*a)))(module, *to_torch(list(args), device))
    finally:
        for h in handles:
            h.remove()
    _flatten(OUTPUT, result, to_numpy, captured)
    if state:
        for name, t in module.state_dict().items():
            if not name.endswith("num_batches_tracked"):
                captured[STATE_PREFIX + name] = to_numpy(t)
    return captured


def capture_ms(cell: Any, args: Sequence[Any], call: Callable[..., Any] | None = None, state: bool = False,
               name_map: Callable[[str], str] | None = None) -> Capture:
    """The MindSpore side of `capture_torch`. Needs PyNative mode: MindSpore ignores forward hooks inside
    graph mode / jit without a word, so a graph-mode call would capture only the output (this raises instead).
    `name_map` turns MindSpore parameter names into torch's for the state (default: singan_ms' BatchNorm map)."""
    import mindspore as ms

    if ms.get_context("mode") != ms.PYNATIVE_MODE:
        raise RuntimeError("parity.engine.capture_ms needs PyNative mode (forward hooks are ignored in graph "
                           "mode); call singan_ms.device.setup(device, mode='pynative') first")
    if name_map is None:
        from singan_ms.networks import torch_name as name_map

    def to_numpy(t: Any) -> np.ndarray:
        return t.asnumpy().copy() if hasattr(t, "asnumpy") else np.asarray(t)

    captured: Capture = {}
    seen: dict[str, int] = {}
    handles = []
    wrapped = []
    for name, c in cell.cells_and_names():
        if not name:
            continue

        def hook(_cell: Any, _inputs: Any, output: Any, name: str = name) -> None:
            _flatten(_unique(name, seen), output, to_numpy, captured)

        if hasattr(type(c), "bprop"):
            # MindSpore 2.10 skips forward hooks of cells with a custom bprop (singan_ms' accurate Tanh):
            # wrap the instance's construct instead; the custom backward is untouched.
            def construct(*a: Any, _orig: Any = c.construct, _hook: Any = hook, _c: Any = c) -> Any:
                out = _orig(*a)
                _hook(_c, a, out)
                return out

            c.construct = construct
            wrapped.append(c)
        else:
            handles.append(c.register_forward_hook(hook))
    try:
        result = (call or (lambda m, *a: m(*a)))(cell, *to_ms(list(args)))
    finally:
        for h in handles:
            h.remove()
        for c in wrapped:
            del c.construct
    _flatten(OUTPUT, result, to_numpy, captured)
    if state:
        for name, p in cell.parameters_and_names():
            captured[STATE_PREFIX + name_map(name)] = p.asnumpy()
    return captured


# ---------------------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------------------


@dataclass
class PairedComparison:
    """All pairs of one run, in the reference's order, and what could not be paired."""

    comparisons: list[Comparison] = field(default_factory=list)
    only_reference: list[str] = field(default_factory=list)
    only_ours: list[str] = field(default_factory=list)

    @property
    def first_failure(self) -> Comparison | None:
        return next((c for c in self.comparisons if not c.passed), None)

    @property
    def passed(self) -> bool:
        return self.first_failure is None and not self.only_reference

    def worst(self) -> Comparison | None:
        return max(self.comparisons, key=lambda c: c.max_rel, default=None)


def compare_captures(ours: Capture, reference: Capture, tol: Tolerance | Callable[[str], Tolerance],
                     skip: Callable[[str], bool] | None = None) -> PairedComparison:
    """Pair two captures by name and judge each pair; `tol` is one Tolerance or name -> Tolerance.

    Order is the reference's (execution order: a layer comes before the block that contains it), so the
    first failing entry is the first layer where the frameworks part. A name only in the reference fails
    the run (the port lost a layer or an output); a name only in ours is listed (e.g. a helper cell)."""
    tol_of = tol if callable(tol) else (lambda _name: tol)
    result = PairedComparison()
    for name, ref in reference.items():
        if skip is not None and skip(name):
            continue
        if name not in ours:
            result.only_reference.append(name)
            continue
        result.comparisons.append(compare(name, ours[name], ref, tol_of(name)))
    result.only_ours = [n for n in ours if n not in reference and not (skip is not None and skip(n))]
    return result


def compare_modules(torch_module: Any, ms_cell: Any, args: Sequence[Any], tol: Tolerance,
                    call_torch: Callable[..., Any] | None = None, call_ms: Callable[..., Any] | None = None,
                    device: str = "cpu", state: bool = False) -> PairedComparison:
    """capture_torch + capture_ms + compare_captures in one call (weights must already be equal)."""
    ref = capture_torch(torch_module, args, call_torch, device=device, state=state)
    ours = capture_ms(ms_cell, args, call_ms, state=state)
    return compare_captures(ours, ref, tol)


def copy_torch_weights_to_ms(torch_module: Any, ms_cell: Any) -> None:
    """Give `ms_cell` the torch module's parameters and buffers (names mapped as singan_ms.networks.load_into
    does: BatchNorm renamed, CUT's blur filters checked rather than copied)."""
    from singan_ms.networks import load_into

    state = {k: v.detach().cpu().numpy() for k, v in torch_module.state_dict().items()}
    load_into(ms_cell, state, type(torch_module).__name__)
