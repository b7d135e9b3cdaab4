"""Port fidelity: does training in MindSpore give the model that training in PyTorch gives?

From one seed, on the training split of the built-in synthetic haze benchmark (singan_common.haze), runs of the
same number of iterations, each framework in its own process:

  torch          the reference: singan_torch, torch on --ref-threads threads (1); it also saves its full training
                 state at step k (--convert-step)
  torch-<floor>  noise floors: the reference again with one legitimate change of float order (FLOORS below)
  ms             singan_ms from the same seed
  converted      torch's state at step k (networks, Adam moments, progress) converted by `python -m convert
                 torch2ms`, then trained on in singan_ms to the full count (same process and compiled graph as
                 `ms`: the state is loaded into the model's parameters, as resuming does)
  resumed-<floor> torch's state at step k trained on in PyTorch with the floor's change: the converted run's floors

Every run is driven step by step through the public model API (`set_epoch_lr`, `optimize`, `draws_for`,
`UnpairedDataset.batch`) in the order of both trainers' `_loop`, so that G's output on a fixed probe (the first
held-out hazy photo) can be taken after every step. A digest of each step's batch and injected draws is recorded
and the runs must agree on all of them: identical inputs are checked, not assumed. Afterwards each run dehazes
the held-out split; this process scores them with singan_common.evaluate (PSNR / SSIM / CIEDE2000), compares
G(probe) with the reference's after every step (max and mean abs difference), plots losses and divergence, and
writes one JSON with everything.

    python bench/fidelity.py                                                    # CPU defaults, <= 20 minutes
    python bench/fidelity.py --json bench/fidelity.json --plots docs/fidelity   # what docs/fidelity.md shows
    python bench/fidelity.py --device GPU --floors cudnn fp64 --steps 4000 --image-size 256 --crop-size 256 \\
        --load-size 286 --convert-step 2000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from singan_common.config import ModelConfig, TrainConfig
    from singan_common.data import UnpairedDataset
    from singan_common.rng import StepDraws

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import bench  # noqa: E402

REFERENCE = "torch"
# Noise floors: PyTorch against itself, each with one legitimate change of float evaluation order:
#   threads  torch.set_num_threads(floor_threads) instead of ref_threads (oneDNN splits its reductions by thread)
#   isa      torch's oneDNN capped at AVX (ONEDNN_MAX_CPU_ISA): kernels without FMA, as on an older x86 CPU
#   cudnn    (GPU) cuDNN's benchmark-chosen algorithms instead of the deterministic ones
#   fp64     the reference computed in float64: how far float32 arithmetic itself takes PyTorch from the
#            trajectory exact arithmetic would follow (parity's training case uses the same float64 rerun)
FLOORS = ("threads", "isa", "cudnn", "fp64")
CPU_FLOORS = ("threads", "isa")
FLOOR_ISA = "AVX"
LABELS = {"hazy input": "hazy input", "torch": "PyTorch", "ms": "MindSpore",
          "converted": "PyTorch to step k, MindSpore after", "torch-threads": "PyTorch, other thread count",
          "torch-isa": "PyTorch, oneDNN without FMA", "torch-cudnn": "PyTorch, cuDNN benchmark algorithms",
          "resumed-threads": "PyTorch to step k, other thread count after",
          "resumed-isa": "PyTorch to step k, oneDNN without FMA after",
          "resumed-cudnn": "PyTorch to step k, cuDNN benchmark algorithms after", "torch-fp64": "PyTorch in float64",
          "resumed-fp64": "PyTorch to step k, float64 after"}
# The acceptance bounds for MindSpore against PyTorch on the held-out split.
GOAL_PSNR_DB = 0.05
GOAL_SSIM = 0.002
METRICS = ("psnr", "ssim", "ciede2000")
LOSS_KEYS = ("loss_D", "loss_G", "loss_G_GAN", "loss_NCE", "loss_perceptual", "loss_MMD")
CONFIG_NAME = "config.json"
ARM_RESULT = "arm.json"
PROBE_FILE = "probe.npy"
DEHAZED_FILE = "dehazed.npz"
SNAPSHOT_DIR = "snapshot_k"
# At most this fraction of a tensor's elements may differ beyond rounding in parity's sparse judgement (elements
# whose gradient is float noise get an arbitrary Adam sign): parity/cases.py uses the same fraction.
PARAM_MAX_FRACTION = 1e-3


@dataclass(frozen=True)
class Settings:
    """One experiment; saved as config.json, so every worker process reads the same settings."""

    steps: int = 40
    convert_step: int = 20
    seed: int = 0
    image_size: int = 96
    n_test: int = 2
    crop_size: int = 64
    load_size: int = 72
    ngf: int = 64
    ndf: int = 64
    n_blocks: int = 9
    num_patches: int = 256
    device: str = "CPU"
    floors: tuple[str, ...] = ("threads", "isa", "fp64")
    ref_threads: int = 1
    floor_threads: int = 2
    vgg_weights: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "floors", tuple(self.floors))
        unknown = [f for f in self.floors if f not in FLOORS]
        if unknown or not self.floors:
            raise ValueError(f"floors must be a non-empty subset of {', '.join(FLOORS)}; got {self.floors}")
        if "cudnn" in self.floors and self.device != "GPU":
            raise ValueError("the cudnn floor needs --device GPU")
        if self.device == "GPU" and any(f in CPU_FLOORS for f in self.floors):
            raise ValueError("with --device GPU torch's convolutions are cuDNN's: use the cudnn and fp64 floors")
        if not 1 <= self.convert_step < self.steps:
            raise ValueError(f"convert_step must be in 1..{self.steps - 1}, got {self.convert_step}")

    @property
    def arms(self) -> tuple[str, ...]:
        return (REFERENCE, *self.compared)

    @property
    def from_seed(self) -> tuple[str, ...]:
        """The runs that start at the seed, MindSpore first, then its floors."""
        return ("ms", *[f"torch-{f}" for f in self.floors])

    @property
    def from_k(self) -> tuple[str, ...]:
        """The runs that take over the reference's state at step k: converted first, then its floors."""
        return ("converted", *[f"resumed-{f}" for f in self.floors])

    @property
    def compared(self) -> tuple[str, ...]:
        """Every run but the reference, each compared against it."""
        return (*self.from_seed, *self.from_k)

    @property
    def torch_device(self) -> str:
        return "cuda" if self.device == "GPU" else "cpu"

    def model_config(self) -> ModelConfig:
        from singan_common.config import ModelConfig

        return ModelConfig(ngf=self.ngf, ndf=self.ndf, n_blocks=self.n_blocks, num_patches=self.num_patches,
                           mmd_num_samples=self.num_patches)

    def train_config(self, batches_per_epoch: int) -> TrainConfig:
        """CUT's schedule squeezed into `steps`: constant lr for the first half of the epochs, linear decay
        after, so the learning-rate schedule (and its conversion) is part of what is compared."""
        from singan_common.config import TrainConfig

        epochs = -(-self.steps // batches_per_epoch)
        return TrainConfig(seed=self.seed, load_size=self.load_size, crop_size=self.crop_size,
                           n_epochs=max(1, epochs // 2), n_epochs_decay=max(1, epochs - epochs // 2),
                           max_steps=self.steps, save_epoch_freq=10 ** 6)


# ---------------------------------------------------------------------------------------------------------
# Pieces both frameworks' workers share
# ---------------------------------------------------------------------------------------------------------


def input_digest(hazy: np.ndarray, clear: np.ndarray, draws: StepDraws) -> str:
    """sha256 of one step's batch and injected draws (patch ids, negative noise, MMD positions)."""
    h = hashlib.sha256()
    arrays = [hazy, clear, *draws.patch_ids, *[n for n in draws.neg_noise if n is not None], draws.mmd_ids_fake,
              draws.mmd_ids_real]
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def data_dirs(out: Path) -> dict[str, Path]:
    """singan_common.haze.write_benchmark's layout under out/data."""
    root = out / "data"
    return {"root": root, "hazy": root / "train" / "hazy", "clear": root / "train" / "clear",
            "test_hazy": root / "test" / "hazy", "test_gt": root / "test" / "gt"}


def held_out(out: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(name, hazy, clear)] of the test split, float32 (H, W, 3) in [0, 1], read back from the files."""
    from singan_common.images import list_images, read_rgb

    d = data_dirs(out)
    return [(p.stem, read_rgb(p), read_rgb(d["test_gt"] / p.name)) for p in list_images(d["test_hazy"])]


def probe_image(out: Path) -> np.ndarray:
    """(1, 3, h, w) in [-1, 1]: the first held-out hazy photo, cropped to sides the generator keeps."""
    from singan_common.architecture import SIZE_MULTIPLE
    from singan_common.images import to_network

    hazy = held_out(out)[0][1]
    h, w = (s - s % SIZE_MULTIPLE for s in hazy.shape[:2])
    return to_network(hazy[:h, :w])[None]


def dataset_for(s: Settings, out: Path) -> UnpairedDataset:
    from singan_common.data import UnpairedDataset

    d = data_dirs(out)
    return UnpairedDataset(d["hazy"], d["clear"], load_size=s.load_size, crop_size=s.crop_size, flip=True,
                           seed=s.seed)


@dataclass
class Position:
    """As both trainers' Progress: the next batch is batch `batch` (0-based) of `epoch`; `step` done so far."""

    epoch: int = 1
    batch: int = 0
    step: int = 0


@dataclass
class Recorder:
    """Per-step rows and G(probe) of one run; written as arm.json, probe.npy and dehazed.npz."""

    rows: list[dict] = field(default_factory=list)
    probes: list[np.ndarray] = field(default_factory=list)
    probe_steps: list[int] = field(default_factory=list)

    def probe(self, step: int, out: np.ndarray) -> None:
        self.probe_steps.append(step)
        self.probes.append(np.asarray(out, np.float32))

    def write(self, arm_dir: Path, extra: dict, dehazed: dict[str, np.ndarray]) -> None:
        from singan_common.fsutil import atomic_write_text

        arm_dir.mkdir(parents=True, exist_ok=True)
        np.save(arm_dir / PROBE_FILE, np.stack(self.probes))
        np.savez(arm_dir / DEHAZED_FILE, **dehazed)
        atomic_write_text(arm_dir / ARM_RESULT, json.dumps({**extra, "rows": self.rows,
                                                            "probe_steps": self.probe_steps}, indent=1) + "\n")


def drive(model: Any, dataset: UnpairedDataset, draws_fn: Callable, start: Position, stop: int,
          probe_fn: Callable[[], np.ndarray], rec: Recorder,
          after_step: Callable[[Position], None] | None = None) -> None:
    """Steps start.step + 1 .. stop in the trainers' order (`_loop` of singan_torch/train.py and
    singan_ms/train.py): the epoch's lr when an epoch starts (and on resume), batch (epoch, index), the draws of
    the global step, optimize. After each step G(probe) is recorded and `after_step` called."""
    tcfg, cfg = model.train_cfg, model.cfg
    n_batches = dataset.num_batches(tcfg.batch_size)
    pos, lr = Position(start.epoch, start.batch, start.step), None
    while pos.step < stop:
        if pos.batch >= n_batches:
            pos, lr = Position(pos.epoch + 1, 0, pos.step), None
        if lr is None:
            lr = model.set_epoch_lr(pos.epoch)
        t0 = time.perf_counter()
        batch = dataset.batch(pos.epoch, pos.batch, tcfg.batch_size)
        b, _, h, w = batch.hazy.shape
        draws = draws_fn(cfg, tcfg.seed, pos.step, b, h, w)
        losses = model.optimize(batch.hazy, batch.clear, draws)
        seconds = time.perf_counter() - t0
        pos = Position(pos.epoch, pos.batch + 1, pos.step + 1)
        rec.rows.append({"step": pos.step, "epoch": pos.epoch, "iter": pos.batch, "lr": lr, **losses,
                         "seconds": seconds, "digest": input_digest(batch.hazy, batch.clear, draws)})
        rec.probe(pos.step, probe_fn())
        if after_step is not None:
            after_step(pos)


def dehaze_held_out(fn: Callable[[np.ndarray], np.ndarray], out: Path) -> dict[str, np.ndarray]:
    from singan_common.dehazing import DehazeOptions, dehaze_rgb

    return {name: dehaze_rgb(hazy, fn, DehazeOptions()) for name, hazy, _ in held_out(out)}


def param_steps(s: Settings) -> tuple[int, int]:
    """Steps after which parameters are compared with the reference's: the first step from the seed, and the
    first step after the conversion (each run is one step away from identical weights there: the from-seed
    runs at step 1, the converted run and its resumed floors at step k + 1)."""
    return 1, s.convert_step + 1


def ref_params_path(out: Path, step: int) -> Path:
    return out / REFERENCE / f"params_step{step}.npz"


def param_stats(params: dict[str, np.ndarray], ref_path: Path, lr: float, steps_apart: int,
                device: str) -> dict[str, dict]:
    """Per tensor ("G/model.1.weight"), this run's parameters against the reference's, judged as parity's
    training case judges them (parity.compare.compare_sparse): every element within Adam's sign-noise bound
    2 lr per step apart and at most PARAM_MAX_FRACTION of the elements beyond float32 rounding. over_half_lr
    counts elements that moved apart by more than lr / 2: after one step from identical weights, exactly the
    elements whose gradient had the other sign (Adam's first step moves every element by +-lr)."""
    from parity.compare import compare_sparse
    from parity.tolerances import tolerance

    rounding = tolerance("CPU" if device == "CPU" else "GPU", "fp32", "train_param")
    with np.load(ref_path) as ref:
        stats = {}
        for name in ref.files:
            c = compare_sparse(name, params[name], ref[name], rounding, 2 * lr * steps_apart, PARAM_MAX_FRACTION)
            diff = np.abs(params[name].astype(np.float64) - ref[name])
            stats[name] = {"n": int(diff.size), "max_abs": c.max_abs,
                           "beyond_rounding": int(round(c.frac_over * diff.size)),
                           "over_half_lr": int((diff > lr / 2).sum()), "passed": c.passed}
    return stats


# ---------------------------------------------------------------------------------------------------------
# Workers (one process per framework configuration)
# ---------------------------------------------------------------------------------------------------------


class Float64Steps:
    """A singan_torch model whose networks were converted to float64, fed as drive() feeds the others: the batch
    and the perturbation noise are cast on the way in (patch ids and MMD positions are integers)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        for net in (model.netG, model.netD, model.netF, model.vgg, model.highpass):
            net.double()  # parameters convert in place, so the optimisers keep pointing at them

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def optimize(self, hazy: np.ndarray, clear: np.ndarray, draws: StepDraws) -> dict[str, float]:
        from singan_common.rng import StepDraws

        noise = [None if n is None else n.astype(np.float64) for n in draws.neg_noise]
        return self.model.optimize(hazy.astype(np.float64), clear.astype(np.float64),
                                   StepDraws(draws.patch_ids, noise, draws.mmd_ids_fake, draws.mmd_ids_real))


def torch_worker(name: str, s: Settings, out: Path) -> None:
    """`torch`: the reference, which also saves its state at step k and its parameters after param_steps.
    `torch-<floor>`: the floor run from the seed, then `resumed-<floor>`: the reference's step-k state loaded into
    the same model and trained on with the floor's float order (the floor of the converted run)."""
    import torch

    from singan_common.config import CONFIG_FILE, RunConfig
    from singan_torch import train as torch_train
    from singan_torch.dehaze import generator_fn
    from singan_torch.model import SinGANDehazeModel, draws_for

    floor = None if name == REFERENCE else name.removeprefix("torch-")
    if s.torch_device == "cuda":
        # Real fp32 in every run (docs/parity.md); only the cudnn floor lets cuDNN choose its algorithms.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = floor == "cudnn"
        torch.backends.cudnn.deterministic = floor != "cudnn"
    torch.set_num_threads(s.floor_threads if floor == "threads" else s.ref_threads)
    dataset = dataset_for(s, out)
    cfg, tcfg = s.model_config(), s.train_config(dataset.num_batches(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random VGG16 unless --vgg-weights: the same one in every run
        model = SinGANDehazeModel(cfg, tcfg, vgg_weights=s.vgg_weights, device=s.torch_device)
    probe = torch.from_numpy(probe_image(out)).to(s.torch_device)
    stepper = model
    if floor == "fp64":
        stepper, probe = Float64Steps(model), probe.double()
    snap = out / REFERENCE / SNAPSHOT_DIR
    net_fn = generator_fn(model.netG, s.torch_device)
    in_dtype = np.float64 if floor == "fp64" else np.float32

    def dehaze_fn(batch: np.ndarray) -> np.ndarray:
        return net_fn(batch.astype(in_dtype))

    @torch.no_grad()
    def probe_fn() -> np.ndarray:
        model.netG.eval()
        return model.netG(probe).cpu().numpy()

    def save_snapshot(pos: Position) -> None:
        """The reference's state at step k, as singan_torch's trainer writes it when it stops there."""
        snap.mkdir(parents=True, exist_ok=True)
        RunConfig(cfg, tcfg).save(snap / CONFIG_FILE)
        torch_train.save_networks(model, snap, "latest")
        torch_train.save_train_state(model, snap, torch_train.Progress(pos.epoch, pos.batch, pos.step))

    for arm in (REFERENCE,) if floor is None else (f"torch-{floor}", f"resumed-{floor}"):
        start, extra = Position(), {}
        if arm.startswith("resumed-"):
            progress = torch_train.load_train_state(model, snap)
            start = Position(progress.epoch, progress.batch, progress.step)
            extra["resumed_at"] = asdict(start)
        params_seen: dict[str, dict] = {}

        def after_step(pos: Position, arm: str = arm, start: Position = start,
                       params_seen: dict = params_seen) -> None:
            if pos.step in param_steps(s):
                params = {f"{key}/{k}": v.detach().cpu().numpy() for key, net in model.nets.items()
                          for k, v in net.named_parameters()}
                if arm == REFERENCE:
                    np.savez(ref_params_path(out, pos.step), **params)
                else:
                    lr = model.optimizer_G.param_groups[0]["lr"]
                    params_seen[str(pos.step)] = param_stats(params, ref_params_path(out, pos.step), lr,
                                                             pos.step - start.step, s.device)
            if arm == REFERENCE and pos.step == s.convert_step:
                save_snapshot(pos)

        (out / arm).mkdir(parents=True, exist_ok=True)
        rec = Recorder()
        rec.probe(start.step, probe_fn())
        t0 = time.perf_counter()
        drive(stepper, dataset, draws_for, start, s.steps, probe_fn, rec, after_step)
        train_s = time.perf_counter() - t0
        torch_train.save_networks(model, out / arm, "latest")
        model.netG.eval()
        dehazed = dehaze_held_out(dehaze_fn, out)
        rec.write(out / arm, {"arm": arm, "framework": "torch", "version": torch.__version__,
                              "threads": torch.get_num_threads(), "device": s.torch_device,
                              "dtype": str(next(model.netG.parameters()).dtype),
                              "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
                              "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                              "cudnn_benchmark": torch.backends.cudnn.benchmark, "train_seconds": train_s,
                              "params": params_seen, **extra}, dehazed)


def ms_worker(s: Settings, out: Path) -> None:
    """The `ms` run from the seed, then the `converted` run: the converted state is loaded into the same model
    (every parameter and all Adam state are replaced, as a resume does) so the compiled step is reused."""
    from singan_ms.device import setup

    setup(s.device, "graph")
    import mindspore as ms

    from singan_common.config import CONFIG_FILE, RunConfig
    from singan_ms import train as ms_train
    from singan_ms.dehaze import generator_fn
    from singan_ms.losses import to_tensor
    from singan_ms.model import SinGANDehazeModel, draws_for

    dataset = dataset_for(s, out)
    cfg, tcfg = s.model_config(), s.train_config(dataset.num_batches(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SinGANDehazeModel(cfg, tcfg, vgg_weights=s.vgg_weights, device=s.device)
    probe = to_tensor(probe_image(out))

    def probe_fn() -> np.ndarray:
        model.netG.set_train(False)
        return model.netG(probe).asnumpy()

    from parity.cases import structural_zero_biases
    from singan_ms.networks import torch_name

    # Conv biases right before an affine-free instance norm: zero gradient in exact arithmetic, so their Adam
    # steps are float noise (DESIGN.md section 5); a bias whose conv output is an NCE tap gets a real gradient.
    taps = {f"model.{i}.bias" for i in cfg.nce_layers}
    structural = {"G": [n for n in structural_zero_biases(model.netG) if n not in taps],
                  "D": structural_zero_biases(model.netD), "F": []}
    conv_dir = out / "converted"
    if RunConfig.load(conv_dir / CONFIG_FILE) != RunConfig(cfg, tcfg):
        raise RuntimeError(f"{conv_dir / CONFIG_FILE}: the converted run's config is not this experiment's")
    for arm in ("ms", "converted"):
        start, extra = Position(), {}
        if arm == "converted":
            progress = ms_train.load_train_state(model, conv_dir)
            start = Position(progress.epoch, progress.batch, progress.step)
            extra["resumed_at"] = asdict(start)
        rec = Recorder()
        rec.probe(start.step, probe_fn())
        params_seen: dict[str, dict] = {}

        def after_step(pos: Position, start: Position = start, params_seen: dict = params_seen) -> None:
            if pos.step in param_steps(s):
                params = {f"{key}/{torch_name(p.name)}": p.asnumpy() for key, net in model.nets.items()
                          for p in net.trainable_params()}
                lr = float(model.optimizer_G.lr.asnumpy())
                params_seen[str(pos.step)] = param_stats(params, ref_params_path(out, pos.step), lr,
                                                         pos.step - start.step, s.device)

        t0 = time.perf_counter()
        drive(model, dataset, draws_for, start, s.steps, probe_fn, rec, after_step)
        train_s = time.perf_counter() - t0
        ms_train.save_networks(model, out / arm, "latest")
        model.netG.set_train(False)
        dehazed = dehaze_held_out(generator_fn(model.netG), out)
        rec.write(out / arm, {"arm": arm, "framework": "mindspore", "version": ms.__version__, "device": s.device,
                              "mode": "graph", "train_seconds": train_s, "params": params_seen,
                              "structural_zeros": structural, **extra}, dehazed)


def worker(name: str, out: Path) -> None:
    data = json.loads((out / CONFIG_NAME).read_text())
    s = Settings(**data)
    if name == "ms":
        ms_worker(s, out)
    else:
        torch_worker(name, s, out)


# ---------------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------------


class LoadSampler:
    """The 1-minute load average every `period` seconds while the experiment runs (other jobs share the CPU)."""

    def __init__(self, period: float = 10.0) -> None:
        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(period,), daemon=True)

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        return {"min": min(self.samples), "mean": float(np.mean(self.samples)), "max": max(self.samples),
                "samples": len(self.samples)}


SOURCE_PACKAGES = ("singan_common", "singan_torch", "singan_ms", "convert", "parity", "bench")


def source_state(root: Path = ROOT) -> dict:
    """The code the runs execute: sha256 over the packages' .py files, and the git commit when there is one.
    Taken before and after the runs: an edit in between (a shared checkout) would make the runs compare
    different code, and the report says so."""
    h = hashlib.sha256()
    for pkg in SOURCE_PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *SOURCE_PACKAGES], cwd=root,
                               capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = None, []
    return {"sha256": h.hexdigest(), "git_commit": commit, "git_modified": [line for line in dirty if line]}


@dataclass
class Task:
    """One process of the experiment: its command, what must finish first, and extra environment."""

    label: str
    cmd: list[str]
    after: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


def tasks_for(s: Settings, out: Path) -> list[Task]:
    """The reference (which saves its step-k state and the parameters of param_steps), the conversion of that
    state, MindSpore (the ms and the converted run, which needs the conversion) and the floors."""
    me = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--worker"]
    tasks = [Task(REFERENCE, [*me, REFERENCE]),
             Task("convert", [sys.executable, "-m", "convert", "torch2ms", str(out / REFERENCE / SNAPSHOT_DIR),
                              "-o", str(out / "converted"), "--force"], after=(REFERENCE,)),
             Task("ms", [*me, "ms"], after=("convert",))]
    for floor in s.floors:
        # The variable must be in the environment before torch's oneDNN runs its first primitive.
        env = {"ONEDNN_MAX_CPU_ISA": FLOOR_ISA} if floor == "isa" else {}
        if floor == "threads" and "OMP_WAIT_POLICY" not in os.environ:
            # Idle OpenMP threads spin by default: with two threads on a busy 2-core machine each waits out the
            # other's time slice (measured 8x slower than one thread). Passive waiting changes no arithmetic
            # (bitwise-identical runs, measured).
            env["OMP_WAIT_POLICY"] = "PASSIVE"
        # after the reference: they compare their parameters with the reference's saved ones
        tasks.append(Task(f"torch-{floor}", [*me, f"torch-{floor}"], after=(REFERENCE,), env=env))
    return tasks


def run_tasks(tasks: list[Task], logs: Path, jobs: int, quiet: bool) -> dict[str, float]:
    """Run `tasks` (in list order as their dependencies allow, at most `jobs` at once); wall seconds of each.
    With jobs 1 every process has the machine to itself as far as this experiment goes; more jobs only shorten
    the wall time (the numbers do not depend on timing)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, seconds = list(tasks), {}, {}
    try:
        while pending or running:
            ready = [t for t in pending if all(d in seconds for d in t.after)]
            while ready and len(running) < jobs:
                t = ready.pop(0)
                pending.remove(t)
                log = (logs / f"{t.label}.log").open("w")
                env = {**os.environ, "GLOG_v": "3", "PYTHONPATH": path, **t.env}
                proc = subprocess.Popen(t.cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
                running[t.label] = (proc, log, time.perf_counter())
            time.sleep(0.2)
            for label, (proc, log, t0) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[label]
                if proc.returncode != 0:
                    tail = "\n".join((logs / f"{label}.log").read_text(errors="replace").splitlines()[-30:])
                    raise RuntimeError(f"{label} failed (exit {proc.returncode}); end of {logs / label}.log:\n{tail}")
                seconds[label] = time.perf_counter() - t0
                if not quiet:
                    print(f"  {label}: {seconds[label]:.0f} s", flush=True)
    finally:
        for proc, log, _ in running.values():  # only after a failure: stop this experiment's other processes
            proc.kill()
            proc.wait()
            log.close()
    return seconds


def load_arm(out: Path, arm: str) -> tuple[dict, np.ndarray, dict[str, np.ndarray]]:
    result = json.loads((out / arm / ARM_RESULT).read_text())
    with np.load(out / arm / DEHAZED_FILE) as z:
        dehazed = {k: z[k] for k in z.files}
    return result, np.load(out / arm / PROBE_FILE), dehazed


def divergence(ref: tuple[dict, np.ndarray], other: tuple[dict, np.ndarray]) -> list[dict]:
    """Per step both runs recorded: max and mean |G_other(probe) - G_ref(probe)|, and |loss_G difference|."""
    (r_res, r_probe), (o_res, o_probe) = ref, other
    r_index = {step: i for i, step in enumerate(r_res["probe_steps"])}
    r_rows = {row["step"]: row for row in r_res["rows"]}
    o_rows = {row["step"]: row for row in o_res["rows"]}
    rows = []
    for i, step in enumerate(o_res["probe_steps"]):
        d = np.abs(o_probe[i].astype(np.float64) - r_probe[r_index[step]])
        row = {"step": step, "max_abs": float(d.max()), "mean_abs": float(d.mean())}
        if step in o_rows:
            row["loss_G_abs"] = abs(o_rows[step]["loss_G"] - r_rows[step]["loss_G"])
        rows.append(row)
    return rows


def check_inputs(results: dict[str, dict]) -> dict:
    """Every run must have seen the reference's batch and draws at every step it ran."""
    ref = {row["step"]: row["digest"] for row in results[REFERENCE]["rows"]}
    bad = [f"{arm} step {row['step']}" for arm, res in results.items() for row in res["rows"]
           if ref.get(row["step"]) != row["digest"]]
    if bad:
        raise RuntimeError(f"runs saw different batches or draws: {', '.join(bad[:10])}")
    return {"identical": True, "steps_checked": {arm: len(res["rows"]) for arm, res in results.items()}}


def scores(out: Path, dehazed: dict[str, dict[str, np.ndarray]]) -> tuple[dict, dict]:
    """(mean metrics per run, the hazy input included; per-image metrics per run) on the held-out split."""
    from singan_common.evaluate import evaluate_pairs, summarize

    scenes = held_out(out)
    outputs = {"hazy input": {name: hazy for name, hazy, _ in scenes}, **dehazed}
    summaries, per_image = {}, {}
    for arm, images in outputs.items():
        rows = evaluate_pairs([(name, images[name], clear) for name, _, clear in scenes])
        summaries[arm] = {k: summarize(rows)[k] for k in (*METRICS, "count")}
        per_image[arm] = [{k: r[k] for k in ("name", *METRICS)} for r in rows]
    return summaries, per_image


def output_agreement(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict:
    """How far two runs' dehazed held-out images are apart (float, and as the uint8 files they become)."""
    from singan_common.images import to_uint8

    diffs = [np.abs(a[k].astype(np.float64) - b[k]) for k in b]
    return {"max_abs": max(float(d.max()) for d in diffs), "mean_abs": float(np.mean([d.mean() for d in diffs])),
            "uint8_values_differing": int(sum((to_uint8(a[k]) != to_uint8(b[k])).sum() for k in b))}


def against_floor(port: dict[int, dict], floor: dict[int, dict], steps: list[int]) -> dict:
    """A port run's G(probe) divergence from the reference against a floor run's, over `steps`."""
    ratios = [port[t]["max_abs"] / floor[t]["max_abs"] for t in steps if floor[t]["max_abs"] > 0]
    return {"steps_compared": len(steps),
            "steps_port_above": sum(port[t]["max_abs"] > floor[t]["max_abs"] for t in steps),
            "steps_floor_zero": sum(floor[t]["max_abs"] == 0 for t in steps),
            "median_ratio_port_over_floor": float(np.median(ratios)) if ratios else None,
            "first": {"port": port[steps[0]]["max_abs"], "floor": floor[steps[0]]["max_abs"]},
            "final": {"port": port[steps[-1]]["max_abs"], "floor": floor[steps[-1]]["max_abs"]}}


def floor_reading(s: Settings, div: dict[str, list[dict]]) -> dict:
    """MindSpore's divergence from the reference against PyTorch's own, step by step: the ms run against the
    floor runs from the seed (steps 1..N), the converted run against the resumed floor runs (steps k+1..N)."""
    by_step = {arm: {r["step"]: r for r in rows} for arm, rows in div.items()}
    last, k = s.steps, s.convert_step
    return {
        "final_step": last,
        "final": {arm: {key: by_step[arm][last][key] for key in ("max_abs", "mean_abs")} for arm in s.compared},
        "converted_at_k_max_abs": by_step["converted"][k]["max_abs"],
        "from_seed": {f: against_floor(by_step["ms"], by_step[f"torch-{f}"], list(range(1, last + 1)))
                      for f in s.floors},
        "from_k": {f: against_floor(by_step["converted"], by_step[f"resumed-{f}"], list(range(k + 1, last + 1)))
                   for f in s.floors},
    }


def param_reading(s: Settings, results: dict[str, dict]) -> dict:
    """Per compared run and parameter step: how many weights moved apart from the reference's and where,
    the structural zeros (named by the MindSpore worker) counted apart from the rest."""
    structural = {f"{net}/{n}" for net, names in results["ms"]["structural_zeros"].items() for n in names}
    reading: dict = {"structural_zero_tensors": sorted(structural)}
    for arm in s.compared:
        for step, stats in results[arm].get("params", {}).items():
            real = {k: v for k, v in stats.items() if k not in structural}
            zeros = {k: v for k, v in stats.items() if k in structural}
            worst = sorted(real.items(), key=lambda kv: (-kv[1]["over_half_lr"], -kv[1]["max_abs"]))[:5]
            reading.setdefault(arm, {})[step] = {
                "elements": sum(v["n"] for v in real.values()),
                "beyond_rounding": sum(v["beyond_rounding"] for v in real.values()),
                "over_half_lr": sum(v["over_half_lr"] for v in real.values()),
                "over_half_lr_by_net": {net: sum(v["over_half_lr"] for k, v in real.items() if k.startswith(net + "/"))
                                        for net in ("G", "D", "F")},
                "structural_elements": sum(v["n"] for v in zeros.values()),
                "structural_over_half_lr": sum(v["over_half_lr"] for v in zeros.values()),
                "tensors_failing_parity": sorted(k for k, v in real.items() if not v["passed"]),
                "max_abs": max(v["max_abs"] for v in real.values()),
                "worst_tensors": {k: {"over_half_lr": v["over_half_lr"], "max_abs": v["max_abs"]} for k, v in worst},
            }
    return reading


def legend_below(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    rows = -(-len(labels) // 3)
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.045 * rows + 0.02, 1, 1))


def plot(prefix: Path, s: Settings, results: dict[str, dict], div: dict[str, list[dict]]) -> list[Path]:
    """prefix-losses.png (loss_G and loss_D of every run) and prefix-divergence.png (G(probe) vs reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dash_dot = (0, (5, 2, 1, 2))
    styles = {"torch": ("k", "-", 2.2), "ms": ("tab:red", "--", 1.3), "converted": ("tab:blue", "-.", 1.3),
              "torch-threads": ("tab:gray", ":", 1.3), "torch-isa": ("tab:olive", ":", 1.3),
              "torch-cudnn": ("tab:gray", ":", 1.3), "resumed-threads": ("tab:gray", dash_dot, 1.0),
              "resumed-isa": ("tab:olive", dash_dot, 1.0), "resumed-cudnn": ("tab:gray", dash_dot, 1.0),
              "torch-fp64": ("tab:purple", ":", 1.3), "resumed-fp64": ("tab:purple", dash_dot, 1.0)}
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [prefix.with_name(prefix.name + "-losses.png"), prefix.with_name(prefix.name + "-divergence.png")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, key in zip(axes, ("loss_G", "loss_D"), strict=True):
        for arm in s.arms:
            rows = results[arm]["rows"]
            color, ls, lw = styles[arm]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], color=color, ls=ls, lw=lw, label=LABELS[arm])
        ax.axvline(s.convert_step, color="tab:blue", lw=0.6, alpha=0.4)
        ax.set_xlabel("step")
        ax.set_title(key)
    legend_below(fig, axes[0])
    fig.savefig(paths[0], dpi=80)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharey=True)
    for ax, key in zip(axes, ("max_abs", "mean_abs"), strict=True):
        for arm in s.compared:
            rows = [r for r in div[arm] if r["step"] >= 1 and r[key] > 0]  # log axis: exact zeros cannot show
            steps = [r for r in div[arm] if r["step"] >= 1]
            zeros = sum(r[key] == 0 for r in steps)
            label = LABELS[arm] + (f" (identical at {zeros} of {len(steps)} steps)" if zeros else "")
            color, ls, lw = styles[arm]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], color=color, ls=ls, lw=lw, marker=".",
                    ms=3, label=label)
        ax.axvline(s.convert_step, color="tab:blue", lw=0.6, alpha=0.4)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{key.replace('_', ' ')} |G(probe) - G_PyTorch(probe)|")
    legend_below(fig, axes[0])
    fig.savefig(paths[1], dpi=80)
    plt.close(fig)
    return paths


def markdown(report: dict) -> str:
    """The metric table and the divergence summary as markdown."""
    s, g = report["scores"], report["floor"]
    ref = s[REFERENCE]
    lines = ["| run | PSNR (dB) | SSIM | CIEDE2000 | ΔPSNR vs PyTorch | ΔSSIM | ΔCIEDE2000 |",
             "|---|---|---|---|---|---|---|"]
    for arm, m in s.items():
        if arm in ("hazy input", REFERENCE):
            delta = "- | - | -"
        else:
            delta = (f"{m['psnr'] - ref['psnr']:+.4f} | {m['ssim'] - ref['ssim']:+.5f} | "
                     f"{m['ciede2000'] - ref['ciede2000']:+.4f}")
        lines.append(f"| {LABELS[arm]} | {m['psnr']:.3f} | {m['ssim']:.4f} | {m['ciede2000']:.3f} | {delta} |")
    lines += ["", f"| G(probe) vs PyTorch after step {g['final_step']} | max abs | mean abs |", "|---|---|---|"]
    lines += [f"| {LABELS[arm]} | {v['max_abs']:.2e} | {v['mean_abs']:.2e} |" for arm, v in g["final"].items()]
    lines += ["", "| run | step | weights apart by > lr/2 (G, D, F) | beyond rounding | structural zeros > lr/2 | "
              "tensors failing parity |", "|---|---|---|---|---|---|"]
    for arm, steps in report["params"].items():
        if arm == "structural_zero_tensors":
            continue
        for step, p in steps.items():
            by_net = ", ".join(str(p["over_half_lr_by_net"][n]) for n in ("G", "D", "F"))
            lines.append(f"| {LABELS[arm]} | {step} | {p['over_half_lr']} of {p['elements']} ({by_net}) | "
                         f"{p['beyond_rounding']} | {p['structural_over_half_lr']} of {p['structural_elements']} | "
                         f"{len(p['tensors_failing_parity'])} |")
    for group, port in (("from_seed", "MindSpore"), ("from_k", "the converted run")):
        for floor, f in g[group].items():
            lines.append(f"\n{group}: {port} above the {floor} floor at {f['steps_port_above']} of "
                         f"{f['steps_compared']} steps (median ratio {f['median_ratio_port_over_floor']}).")
    return "\n".join(lines)


def run_experiment(s: Settings, out: Path, json_path: Path | None = None, plots: Path | None = None,
                   quiet: bool = False, jobs: int = 1) -> dict:
    """Everything in the module doc; returns the report (also written to `json_path`, default out/fidelity.json)."""
    from singan_common.fsutil import atomic_write_text
    from singan_common.haze import write_benchmark

    out.mkdir(parents=True, exist_ok=True)
    if any((out / arm / ARM_RESULT).exists() for arm in s.arms):
        raise FileExistsError(f"{out}: holds a previous experiment; choose another --out or remove it")
    source = source_state()
    t0 = time.perf_counter()
    with LoadSampler() as load:
        write_benchmark(data_dirs(out)["root"], seed=s.seed, size=s.image_size, n_test=s.n_test)
        atomic_write_text(out / CONFIG_NAME, json.dumps(asdict(s), indent=2) + "\n")
        seconds = run_tasks(tasks_for(s, out), out / "logs", jobs, quiet)
    wall = time.perf_counter() - t0
    source_after = source_state()
    source["changed_during_run"] = source_after["sha256"] != source["sha256"]
    loaded = {arm: load_arm(out, arm) for arm in s.arms}
    results = {arm: v[0] for arm, v in loaded.items()}
    inputs = check_inputs(results)
    div = {arm: divergence((results[REFERENCE], loaded[REFERENCE][1]), (results[arm], loaded[arm][1]))
           for arm in s.compared}
    summaries, per_image = scores(out, {arm: loaded[arm][2] for arm in s.arms})
    deltas = {arm: {k: summaries[arm][k] - summaries[REFERENCE][k] for k in METRICS} for arm in s.compared}
    floor = floor_reading(s, div)
    params = param_reading(s, results)
    for step in param_steps(s):  # ~4 bytes per weight each (60 MB for the paper's model): analysed, not kept
        ref_params_path(out, step).unlink(missing_ok=True)
    report = {
        "settings": asdict(s), "command": " ".join(["python", "bench/fidelity.py", *sys.argv[1:]]),
        "source": source, "machine": bench.machine(), "load_average_1min": load.summary(), "wall_seconds": wall,
        "jobs": jobs, "process_seconds": seconds,
        "held_out": [name for name, _, _ in held_out(out)], "probe": held_out(out)[0][0],
        "inputs": inputs, "scores": summaries, "deltas_vs_torch": deltas, "per_image": per_image,
        "dehazed_agreement": {arm: output_agreement(loaded[arm][2], loaded[REFERENCE][2]) for arm in s.compared},
        "floor": floor, "params": params,
        "goal": {"psnr_bound_db": GOAL_PSNR_DB, "ssim_bound": GOAL_SSIM,
                 **{arm: {"psnr_within": abs(deltas[arm]["psnr"]) <= GOAL_PSNR_DB,
                          "ssim_within": abs(deltas[arm]["ssim"]) <= GOAL_SSIM} for arm in s.compared}},
        "divergence": div,
        "losses": {arm: [{k: r[k] for k in ("step", "lr", *LOSS_KEYS, "seconds")} for r in results[arm]["rows"]]
                   for arm in s.arms},
        # per-tensor parameter statistics stay in each run's arm.json; "params" above holds their reading
        "runs": {arm: {k: v for k, v in results[arm].items()
                       if k not in ("rows", "probe_steps", "params", "structural_zeros")} for arm in s.arms},
    }
    report["plots"] = [str(p) for p in plot(plots or out / "fidelity", s, results, div)]
    json_path = json_path or out / "fidelity.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json_path, json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    atomic_write_text(out / "report.md", table + "\n")
    if source["changed_during_run"]:
        print(f"WARNING: the source under {ROOT} changed while the runs ran; they may have executed different code",
              file=sys.stderr)
    if not quiet:
        print(table)
        print(f"\nwall {wall:.0f} s, 1-minute load average mean {report['load_average_1min']['mean']:.1f} "
              f"(max {report['load_average_1min']['max']:.1f}); wrote {json_path}, {', '.join(report['plots'])}")
    return report


def build_parser() -> argparse.ArgumentParser:
    d = Settings()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=d.steps, help="training iterations of every run")
    p.add_argument("--convert-step", type=int, default=d.convert_step,
                   help="k: the converted run trains k steps in PyTorch, then the rest in MindSpore")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--image-size", type=int, default=d.image_size, help="short side of the benchmark photos")
    p.add_argument("--n-test", type=int, default=d.n_test, help="photos held out for evaluation (of 6)")
    p.add_argument("--crop-size", type=int, default=d.crop_size, help="training crop")
    p.add_argument("--load-size", type=int, default=d.load_size, help="training images are resized to this first")
    p.add_argument("--ngf", type=int, default=d.ngf, help="generator width (paper: 64)")
    p.add_argument("--ndf", type=int, default=d.ndf, help="discriminator width (paper: 64)")
    p.add_argument("--n-blocks", type=int, default=d.n_blocks, help="residual blocks (paper: 9)")
    p.add_argument("--num-patches", type=int, default=d.num_patches, help="PatchNCE patches and MMD samples")
    p.add_argument("--device", choices=("CPU", "GPU", "Ascend"), default=d.device,
                   help="MindSpore's device; PyTorch runs on cuda for GPU, else on the CPU")
    p.add_argument("--floors", nargs="+", choices=FLOORS, default=list(d.floors),
                   help="noise floors: PyTorch against itself with another thread count / oneDNN ISA / cuDNN "
                   "algorithm choice / in float64 (on GPU: cudnn fp64)")
    p.add_argument("--ref-threads", type=int, default=d.ref_threads, help="torch threads of every run but one")
    p.add_argument("--floor-threads", type=int, default=d.floor_threads, help="torch threads of the threads floor")
    p.add_argument("--vgg-weights", help="torchvision vgg16 state_dict for the perceptual loss (default: random)")
    p.add_argument("--out", default="runs/fidelity", help="working folder: data, runs, logs, report")
    p.add_argument("--json", help="results JSON (default OUT/fidelity.json)")
    p.add_argument("--plots", help="path prefix of the PNGs (default OUT/fidelity: OUT/fidelity-losses.png, ...)")
    p.add_argument("--jobs", type=int, default=1, help="processes at once (1: each run has the CPU to itself)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    out = Path(a.out)
    if a.worker:
        worker(a.worker, out)
        return 0
    try:
        s = Settings(steps=a.steps, convert_step=a.convert_step, seed=a.seed, image_size=a.image_size,
                     n_test=a.n_test, crop_size=a.crop_size, load_size=a.load_size, ngf=a.ngf, ndf=a.ndf,
                     n_blocks=a.n_blocks, num_patches=a.num_patches, device=a.device, floors=tuple(a.floors),
                     ref_threads=a.ref_threads, floor_threads=a.floor_threads, vgg_weights=a.vgg_weights)
    except ValueError as exc:
        p.error(str(exc))
    run_experiment(s, out, Path(a.json) if a.json else None, Path(a.plots) if a.plots else None, a.quiet, a.jobs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
