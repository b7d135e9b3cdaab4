"""Training-state conversion: PyTorch `train_state.pth` <-> MindSpore `train_state.ckpt`.

A training state is the networks, the three Adam optimisers and the progress counters. The networks go through
the same rules and verification as single files (convert/core.py); the optimiser state is mapped parameter by
parameter *by name*, so a different parameter order on the two sides cannot scramble moments:

| PyTorch (`optimizers[K]`, torch.optim.Adam.state_dict())      | MindSpore (`opt_K/`, singan_ms.optim.Adam)  |
|----------------------------------------------------------------|---------------------------------------------|
| state[i]["exp_avg"], i = index in net.parameters()             | optimizer_K.exp_avg.<MindSpore param name>  |
| state[i]["exp_avg_sq"]                                         | optimizer_K.exp_avg_sq.<name>               |
| state[i]["step"] (float32, equal for every parameter)          | optimizer_K.step (float32)                  |
| param_groups[0]["lr"] (the schedule's current value)           | optimizer_K.lr (float64, as torch's float)  |
| param_groups[0]["betas"], "eps"                                | the run config (refused if they disagree)   |
| (empty state before the first step)                            | zero moments, step 0                        |

MindSpore's Adam here stores no beta powers: like torch it recomputes 1 - beta^step from the step count in
float64, so step is the whole of that state. Progress (epoch, batch, step) is copied; it is also the RNG state,
since every random draw is a function of (seed, step) (singan_common/rng.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convert.formats import ConvertError, contiguous, load_torch_object, read_tensors, torch_to_numpy
from convert.rules import COUNTER, counters_of, ms_rules
from singan_common.config import RunConfig

NETS = ("G", "D", "F")
TORCH_STATE_FILE = "train_state.pth"
MS_STATE_FILE = "train_state.ckpt"
TORCH_FORMAT = "singan_torch.train_state/1"
WORLD_SIZE = "world_size"  # the entry both trainers write (singan_ms.train.WORLD_SIZE_ENTRY)


@dataclass
class AdamState:
    """One optimiser as its file holds it: per-parameter moments keyed by torch's state index (read from
    PyTorch) or by the MindSpore parameter name (read from MindSpore); plan_state maps between them."""

    exp_avg: dict[int | str, np.ndarray]
    exp_avg_sq: dict[int | str, np.ndarray]
    step: float
    lr: float
    hyper: tuple[float, ...] | None = None  # (beta1, beta2, eps) where the file records them (torch)


@dataclass
class TrainState:
    nets: dict[str, dict[str, np.ndarray]]  # source-framework names
    optimizers: dict[str, AdamState]
    progress: dict[str, int]
    path: Path
    counters: dict[str, dict[str, int]]  # BatchNorm num_batches_tracked per net (torch names)

    def check_hyperparameters(self, run_cfg: RunConfig) -> None:
        """MindSpore's state keeps no betas/eps (the run config supplies them): they must agree."""
        want = (run_cfg.train.beta1, run_cfg.train.beta2, 1e-8)
        for k, opt in self.optimizers.items():
            if opt.hyper is not None and tuple(opt.hyper) != want:
                raise ConvertError(f"{self.path}: optimizer {k} has betas/eps {opt.hyper}, the run config {want}")


@dataclass
class PlannedState:
    """The converted state, checked and ready; `write()` writes it atomically."""

    target: Path
    write: Callable[[], None]


@dataclass
class ParamTable:
    """One network's trainable parameters on both sides, built once: torch's order (Adam's state indices),
    their shapes, MindSpore's order (singan_ms.optim.Adam's) and the MindSpore -> torch name map."""

    torch_net: Any
    torch_names: list[str]
    shapes: dict[str, tuple[int, ...]]
    ms_names: list[str]
    to_torch: dict[str, str]


def param_table(network: str, cfg) -> ParamTable:
    from convert.core import build_ms, build_torch

    t_net, m_net = build_torch(network, cfg), build_ms(network, cfg)
    named = list(t_net.named_parameters())
    rule_map = {r.target: r.source for r in ms_rules(m_net)}
    ms_names = [p.name for p in m_net.trainable_params()]
    return ParamTable(t_net, [k for k, _ in named], {k: tuple(v.shape) for k, v in named}, ms_names,
                      {n: rule_map[n] for n in ms_names})


def read_torch_state(path: Path) -> TrainState:
    obj = load_torch_object(path)
    if not isinstance(obj, dict) or obj.get("format") != TORCH_FORMAT:
        found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
        raise ConvertError(f"{path}: not a singan_torch training state (format {found!r}, expected {TORCH_FORMAT})")
    try:
        nets = {k: torch_to_numpy(dict(obj["nets"][k])) for k in NETS}
        raw_opts = {k: obj["optimizers"][k] for k in NETS}
        progress = {k: int(obj["progress"][k]) for k in ("epoch", "batch", "step")}
    except (KeyError, TypeError) as exc:
        raise ConvertError(f"{path}: training state lacks {exc}") from None
    check_single_process(path, int(obj.get("world_size", 1)))
    counters = {k: counters_of(v) for k, v in nets.items()}
    return TrainState(nets, {k: _torch_adam(path, k, v) for k, v in raw_opts.items()}, progress, path, counters)


def check_single_process(path: Path, world: int) -> None:
    """A data-parallel run's (epoch, batch) names each rank's shard for its world size: converted as a
    one-process state it would resume on other data, so it is refused (its weights convert fine)."""
    if world != 1:
        raise ConvertError(f"{path}: written by a {world}-process run; its data position means a different shard "
                           "in one process. Convert a single-process state (or its latest_net_* files for weights).")


def _torch_adam(path: Path, key: str, sd: dict) -> AdamState:
    groups = sd.get("param_groups", []) if isinstance(sd, dict) else []
    if len(groups) != 1:
        raise ConvertError(f"{path}: optimizer {key} has {len(groups)} parameter groups; expected 1")
    group = groups[0]
    hyper = (*(float(b) for b in group["betas"]), float(group["eps"]))
    state = torch_to_numpy(sd.get("state", {}))
    steps = {float(np.asarray(s["step"])) for s in state.values()}
    if len(steps) > 1:
        raise ConvertError(f"{path}: optimizer {key} holds different step counts per parameter {sorted(steps)}")
    by_index = {int(i): s for i, s in state.items()}
    return AdamState({i: s["exp_avg"] for i, s in by_index.items()}, {i: s["exp_avg_sq"] for i, s in by_index.items()},
                     steps.pop() if steps else 0.0, float(group["lr"]), hyper)


def read_ms_state(path: Path) -> TrainState:
    flat = read_tensors(path)[0]
    nets = {k: {n[len(f"net_{k}/"):]: v for n, v in flat.items() if n.startswith(f"net_{k}/")} for k in NETS}
    if not all(nets.values()) or "progress/step" not in flat:
        raise ConvertError(f"{path}: not a singan_ms training state (needs net_G/, net_D/, net_F/, opt_*/, progress/)")
    opts = {}
    for k in NETS:
        p = f"opt_{k}/optimizer_{k}."
        try:
            opts[k] = AdamState({n[len(p + "exp_avg."):]: v for n, v in flat.items() if n.startswith(p + "exp_avg.")},
                                {n[len(p + "exp_avg_sq."):]: v for n, v in flat.items()
                                 if n.startswith(p + "exp_avg_sq.")},
                                float(flat[p + "step"]), float(flat[p + "lr"]))
        except KeyError as exc:
            raise ConvertError(f"{path}: training state lacks {exc}") from None
    check_single_process(path, int(flat.get(WORLD_SIZE, 1)))
    progress = {k: int(flat[f"progress/{k}"]) for k in ("epoch", "batch", "step")}
    counters = {k: {n[len(f"{COUNTER}/net_{k}/"):]: int(v) for n, v in flat.items()
                    if n.startswith(f"{COUNTER}/net_{k}/")} for k in NETS}
    return TrainState(nets, opts, progress, path, counters)


def read_state(path: Path, direction: str) -> TrainState:
    return read_torch_state(path) if direction == "torch2ms" else read_ms_state(path)


def plan_state(state: TrainState, direction: str, run_cfg: RunConfig, converted_nets: dict[str, dict[str, np.ndarray]],
               out_dir: Path) -> PlannedState:
    """Map the optimisers (nets arrive already converted and verified) and prepare the target file."""
    cfg = run_cfg.model
    if direction == "torch2ms":
        entries: dict[str, np.ndarray] = {}
        for k in NETS:
            entries.update({f"net_{k}/{n}": v for n, v in converted_nets[k].items()})
        for k in NETS:
            entries.update(_ms_adam_entries(state, k, cfg))
        entries.update({f"progress/{k}": np.asarray(v, np.int64) for k, v in state.progress.items()})
        entries[WORLD_SIZE] = np.asarray(1, np.int64)
        # singan_ms ignores these; they let ms2torch restore BatchNorm counters bit for bit.
        entries.update({f"{COUNTER}/net_{k}/{n}": np.asarray(v, np.int64)
                        for k in NETS for n, v in state.counters[k].items()})
        target = out_dir / MS_STATE_FILE

        def write() -> None:
            from convert.formats import write_tensors

            write_tensors(target, entries, "ckpt", force=True)

        return PlannedState(target, write)

    obj = {"format": TORCH_FORMAT, "progress": dict(state.progress),
           "nets": {k: converted_nets[k] for k in NETS},
           "optimizers": {k: _torch_adam_dict(state, k, run_cfg) for k in NETS},
           "rng": {"seed": run_cfg.train.seed, "step": state.progress["step"]}, "world_size": 1}
    target = out_dir / TORCH_STATE_FILE

    def write_torch() -> None:
        import torch

        from singan_common.fsutil import atomic_path

        with atomic_path(target) as tmp:
            torch.save(_to_torch(obj), tmp)

    return PlannedState(target, write_torch)


def _ms_adam_entries(state: TrainState, key: str, cfg) -> dict[str, np.ndarray]:
    opt = state.optimizers[key]
    table = param_table(key, cfg)
    t_names, shapes, to_torch = table.torch_names, table.shapes, table.to_torch
    t_index = {n: i for i, n in enumerate(t_names)}
    if opt.exp_avg and set(opt.exp_avg) != set(range(len(t_names))):
        raise ConvertError(f"{state.path}: optimizer {key} has state for {len(opt.exp_avg)} of {len(t_names)} "
                           "parameters; torch would restart the others' step counts, which MindSpore's Adam cannot")
    out = {}
    p = f"opt_{key}/optimizer_{key}."
    for n in table.ms_names:
        i = t_index[to_torch[n]]
        for slot, moments in (("exp_avg", opt.exp_avg), ("exp_avg_sq", opt.exp_avg_sq)):
            v = moments.get(i)
            if v is None:
                v = np.zeros(shapes[to_torch[n]], np.float32)
            elif tuple(v.shape) != shapes[to_torch[n]]:
                raise ConvertError(f"{state.path}: optimizer {key} {slot} of {to_torch[n]} has shape "
                                   f"{tuple(v.shape)}, the parameter {shapes[to_torch[n]]}")
            out[f"{p}{slot}.{n}"] = contiguous(np.asarray(v, np.float32))
    out[f"{p}step"] = np.asarray(opt.step, np.float32)
    out[f"{p}lr"] = np.asarray(opt.lr, np.float64)
    return out


def _torch_adam_dict(state: TrainState, key: str, run_cfg: RunConfig) -> dict:
    """torch.optim.Adam.state_dict() as singan_torch's optimiser would hold it after `step` steps."""
    import torch

    opt = state.optimizers[key]
    table = param_table(key, run_cfg.model)
    betas = (run_cfg.train.beta1, run_cfg.train.beta2)
    reference = torch.optim.Adam(table.torch_net.parameters(), lr=opt.lr, betas=betas).state_dict()
    ms_names, names, shapes = table.ms_names, table.torch_names, table.shapes
    from_torch = {t: m for m, t in table.to_torch.items()}
    missing = [from_torch[n] for n in names if from_torch[n] not in opt.exp_avg or from_torch[n] not in opt.exp_avg_sq]
    if missing:
        raise ConvertError(f"{state.path}: optimizer {key} lacks moments for {', '.join(missing[:5])}")
    unexpected = sorted(set(opt.exp_avg) - set(ms_names))
    if unexpected:
        raise ConvertError(f"{state.path}: optimizer {key} has moments for unknown parameters "
                           f"{', '.join(unexpected[:5])}")
    per_param = {}
    if opt.step > 0:  # before its first step torch's Adam holds no state at all
        for i, n in enumerate(names):
            m, v = opt.exp_avg[from_torch[n]], opt.exp_avg_sq[from_torch[n]]
            if tuple(m.shape) != shapes[n] or tuple(v.shape) != shapes[n]:
                raise ConvertError(f"{state.path}: optimizer {key} moments of {n} have shape {tuple(m.shape)}, "
                                   f"the parameter {shapes[n]}")
            per_param[i] = {"step": np.asarray(opt.step, np.float32), "exp_avg": np.asarray(m, np.float32),
                            "exp_avg_sq": np.asarray(v, np.float32)}
    return {"state": per_param, "param_groups": reference["param_groups"]}


def _to_torch(obj):
    import torch

    if isinstance(obj, np.ndarray):
        return torch.from_numpy(contiguous(obj))
    if isinstance(obj, dict):
        return {k: _to_torch(v) for k, v in obj.items()}
    return obj
