"""Data-parallel singan_ms under msrun: N CPU workers x batch b train what 1 process x batch N*b trains.

The end-to-end test launches `msrun --worker_num 2 ... singan_ms/__main__.py train` (the mccl backend over
127.0.0.1; the script path, as msrun needs, without PYTHONPATH or an install) and, while the workers run, trains
one process on the global batch here; then compares losses, weights and network outputs. The rest checks the
single-writer rules, the world-size record, the sliced draws and the single-process fallbacks.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from singan_ms.device import setup

setup("CPU", "graph")

import mindspore as ms  # noqa: E402
from mindspore import Tensor  # noqa: E402

from parity.cases import structural_zero_biases  # noqa: E402
from singan_common import cli  # noqa: E402
from singan_common.config import ConfigError, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from singan_common.losslog import rank_log_path  # noqa: E402
from singan_common.rng import shard_step_draws  # noqa: E402
from singan_ms import distributed  # noqa: E402
from singan_ms.__main__ import build_parser  # noqa: E402
from singan_ms.model import LOSS_NAMES, SinGANDehazeModel, draws_for  # noqa: E402
from singan_ms.networks import define_D, define_G, load_into, read_weights  # noqa: E402
from singan_ms.train import (  # noqa: E402
    LOG_FILE,
    STATE_FILE,
    WORLD_SIZE_ENTRY,
    Progress,
    ResumeError,
    local_draws,
    save_networks,
    save_train_state,
    train,
)
from tests.distributed_logs import check_global_batch_logs, free_port, read_log  # noqa: E402
from tests.test_common import make_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2

# Tolerances for "2 msrun workers x batch 1" against "1 process x batch 2" in fp32 on CPU. The two compute the
# same sums in different orders (a conv's weight gradient summed over a batch of 2 inside one kernel, versus two
# batch-1 gradients summed by mccl's all-reduce and multiplied by 1/2), so they agree to float32 reordering,
# which the steps then carry forward. Measured on this machine (AMD EPYC, 2 cores, MindSpore 2.10.0), 4 steps over
# 2 epochs: logged losses within 9.7e-7 relative and loss_D_fake (1e-9..1e-5) within 3.3e-11 absolute; weights
# within 1.4e-6 (F's MLP; G 4.5e-7, D 2e-8); D outputs within 4.5e-8, G outputs within 4.7e-6. Real mistakes
# are orders of magnitude larger: with the gradient reduction removed (measured, same run otherwise) the losses
# differ by 5e-4 relative at step 1 and up to 0.5 later, weights by 1.3e-3 and G / D outputs by 6e-2 / 8e-2.
LOSS_RTOL = 1e-5  # relative, per logged loss (the CSV keeps 8 significant digits); singan_torch's test's value
LOSS_ATOL = 1e-8  # absolute floor for loss_D_fake, whose value is 1e-9..1e-5 in these steps
WEIGHT_ATOL = 2e-5  # absolute; weights are O(0.001..0.01) at init gain 0.02; singan_torch's test's value
# G's conv weights (size ~0.005) differ by up to 1e-4 of their size: Adam's normalised step turns reordered
# near-zero gradient elements into weight differences, and G's instance norms carry that relative error to
# the output (size ~0.07), hence 4.7e-6 there against 4.5e-8 for D; 10x headroom over G's.
OUTPUT_ATOL = 5e-5
# A structural-zero bias moves by about lr per Adam step on each side, in a direction float noise picks; Adam's
# m/sqrt(v) can exceed 1 when that noise changes sign, hence 2 (two sides) x 2 (margin) x the summed lr.
STRUCTURAL_BOUND = 4.0
# Mean of the per-rank logs against the run log: both are 8-significant-digit CSV prints of the same numbers.
CSV_RTOL = 1e-6

CLI_MODEL = ["--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--num-patches", "16", "--mmd-num-samples", "16"]
CLI_TRAIN = ["--load-size", "36", "--crop-size", "32", "--seed", "3", "--n-epochs", "1", "--n-epochs-decay", "1",
             "--save-epoch-freq", "1", "--no-progress"]


def msrun_executable() -> str | None:
    # msrun starts its workers with the `python` on PATH, so this interpreter's bin directory goes first.
    return shutil.which("msrun", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))


def cli_configs(args: list[str]) -> tuple[ModelConfig, TrainConfig]:
    """The configs `python -m singan_ms train` builds from these flags."""
    a = build_parser().parse_args(["train", *args])
    return cli.model_config_from_args(a), cli.train_config_from_args(a)


@dataclass
class Runs:
    """The 2-worker msrun run, the single-process run with the global batch (and its model), and their times."""

    two: Path
    one: Path
    model: SinGANDehazeModel
    seconds: float
    first_step_seconds: float


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    exe = msrun_executable()
    if exe is None:
        pytest.skip("no msrun executable next to this python or on PATH (it comes with the mindspore package)")
    root = tmp_path_factory.mktemp("msdp")
    # 4 hazy images: divisible by 2 ranks, so no rank pads its shard by wrapping (docs/distributed.md).
    hazy, clear = make_folder(root / "hazy", 4), make_folder(root / "clear", 3, seed=1)
    two, one, logs = root / "msrun", root / "single", root / "msrun_logs"
    args = [*CLI_MODEL, *CLI_TRAIN, "--hazy", str(hazy), "--clear", str(clear)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script must find the project itself
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]), GLOG_v="3")
    cmd = [exe, "--worker_num", str(WORLD), "--local_worker_num", str(WORLD), "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "--join", "True", "--log_dir", str(logs),
           str(ROOT / "singan_ms" / "__main__.py"), "train", *args, "--batch-size", "1", "--out", str(two)]
    t0 = time.perf_counter()
    # Its own session, so that a failure here can stop msrun and the workers it started, and nothing else.
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        # The reference trains while msrun builds its cluster and compiles: the two overlap on the 2 cores.
        model_cfg, train_cfg = cli_configs([*args, "--batch-size", str(WORLD)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = train(one, hazy, clear, model_cfg, train_cfg, progress_bar=False)
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        tails = "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-3000:] for p in sorted(logs.glob("*.log")))
        pytest.fail(f"msrun exited {proc.returncode}:\n{out[-3000:]}{tails}")
    first_steps = [float(read_log(rank_log_path(two, r))[0]["seconds"]) for r in range(WORLD)]
    return Runs(two, one, model, seconds, max(first_steps))


def test_two_workers_train_what_one_process_with_the_global_batch_trains(runs: Runs):
    """2 msrun workers x batch 1 for 2 epochs (4 steps, a learning-rate change) == 1 process x batch 2."""
    two, one = runs.two, runs.one
    cfg = RunConfig.load(two / "run_config.json")
    assert cfg.train.batch_size == 1  # stored as given: per process

    # Rank 0 alone writes the run's files; each rank adds only its own log.
    assert {p.name for p in two.iterdir()} == {p.name for p in one.iterdir()} | {"ranks"}
    assert {p.name for p in (two / "ranks").iterdir()} == {f"rank{r}.csv" for r in range(WORLD)}

    # Losses: the run log holds the global batch's losses (mean over ranks), step by step.
    logs = check_global_batch_logs(two, one, LOG_FILE, WORLD, LOSS_NAMES, LOSS_ATOL, LOSS_RTOL, CSV_RTOL)
    rows1, per_rank = logs.rows1, logs.per_rank
    assert len({r["lr"] for r in rows1}) == 2  # the decay epoch changed the learning rate
    for step in range(len(rows1)):
        # Each rank trained on its own shard: the ranks' own losses differ (a missing shard would not).
        assert per_rank[0][step]["loss_G"] != per_rank[1][step]["loss_G"]

    # Weights: all within WEIGHT_ATOL except the structural zeros, which stay within Adam's reach of each other.
    lr_total = sum(float(r["lr"]) for r in rows1)
    structural = {f"G.{n}" for n in structural_zero_biases(define_G(cfg.model, 0))
                  if n not in {f"model.{i}.bias" for i in cfg.model.nce_layers}}
    structural |= {f"D.{n}" for n in structural_zero_biases(define_D(cfg.model, 0))}
    assert structural  # the tiny nets have them; an empty set would hide a broken walk
    worst_w = worst_s = 0.0
    states = {}
    for name in ("G", "D", "F"):
        a, b = read_weights(two / f"latest_net_{name}.ckpt"), read_weights(one / f"latest_net_{name}.ckpt")
        assert a.keys() == b.keys()
        states[name] = (a, b)
        for k in a:
            diff = float(np.abs(a[k] - b[k]).max())
            if f"{name}.{k}" in structural:
                worst_s = max(worst_s, diff)
                assert diff <= STRUCTURAL_BOUND * lr_total, f"{name}.{k}: {diff}"
            else:
                worst_w = max(worst_w, diff)
                assert diff <= WEIGHT_ATOL, f"{name}.{k}: {diff}"

    # Function space: the trained G and D compute the same outputs (structural zeros included, they cancel).
    probe = Tensor(np.random.default_rng(5).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32))
    worst_out = 0.0
    for name, build in (("G", define_G), ("D", define_D)):
        outs = []
        for state in states[name]:
            net = build(cfg.model, 0)
            load_into(net, state, name)
            net.set_train(False)
            outs.append(net(probe).asnumpy())
        diff = float(np.abs(outs[0] - outs[1]).max())
        worst_out = max(worst_out, diff)
        assert diff <= OUTPUT_ATOL, f"{name} output differs by {diff}"
    print(f"\n2 msrun workers x 1 vs 1 x 2, {len(rows1)} steps: losses {logs.worst_rel:.2g} rel (small ones "
          f"{logs.worst_small:.2g} abs), weights {worst_w:.2g}, structural-zero biases {worst_s:.2g} (bound "
          f"{STRUCTURAL_BOUND * lr_total:.2g}), G/D outputs {worst_out:.2g}; both runs {runs.seconds:.0f} s "
          f"wall together, the workers' first (compiling) step {runs.first_step_seconds:.0f} s")


def test_world_size_is_recorded_and_resume_with_another_is_refused(runs: Runs, monkeypatch):
    two_state = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(runs.two / STATE_FILE)).items()}
    one_state = {k: v.asnumpy() for k, v in ms.load_checkpoint(str(runs.one / STATE_FILE)).items()}
    assert int(two_state[WORLD_SIZE_ENTRY]) == WORLD and int(one_state[WORLD_SIZE_ENTRY]) == 1
    before = (runs.two / LOG_FILE).read_bytes()
    model_cfg, train_cfg = cli_configs([*CLI_MODEL, *CLI_TRAIN, "--hazy", "x"])
    data = (runs.two.parent / "hazy", runs.two.parent / "clear")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ResumeError, match="trained by 2 process.*resumed by 1"):
            train(runs.two, *data, model_cfg, train_cfg, resume=True, progress_bar=False)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        with pytest.raises(ResumeError, match="trained by 1 process.*resumed by 2"):
            train(runs.one, *data, model_cfg, train_cfg, resume=True, progress_bar=False)
    assert (runs.two / LOG_FILE).read_bytes() == before  # refused before anything was written


def test_only_rank_0_writes_checkpoints(runs: Runs, tmp_path, monkeypatch):
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    save_networks(runs.model, tmp_path, "latest")
    save_train_state(runs.model, tmp_path, Progress(epoch=1, batch=1, step=1))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    save_networks(runs.model, tmp_path, "latest")
    assert {p.name for p in tmp_path.iterdir()} == {"latest_net_G.ckpt", "latest_net_D.ckpt", "latest_net_F.ckpt"}


def test_each_rank_draws_its_rows_of_the_global_batch(runs: Runs, monkeypatch):
    """Rank r's image j is image j * W + r of the global batch, so it gets that row of the negative noise."""
    model = runs.model
    cfg, seed = model.cfg, model.train_cfg.seed
    full = draws_for(cfg, seed, 5, 2 * WORLD, 32, 32)
    monkeypatch.setattr(distributed, "world_size", lambda: WORLD)
    for r in range(WORLD):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        local = local_draws(model, 5, (2, 3, 32, 32))
        want = shard_step_draws(full, r, WORLD)
        for got, exp, whole in zip(local.neg_noise, want.neg_noise, full.neg_noise, strict=True):
            assert got.shape == (2, *whole.shape[1:]) and np.array_equal(got, exp)
            assert np.array_equal(got, whole[[r, r + WORLD]])
        for got, whole in zip(local.patch_ids, full.patch_ids, strict=True):
            assert np.array_equal(got, whole)  # shared by every image
        assert np.array_equal(local.mmd_ids_fake, full.mmd_ids_fake)


def test_single_process_without_msrun(monkeypatch):
    for var in distributed.MSRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched_by_msrun()
    with distributed.process_group("CPU") as device:
        assert device == "CPU"
        assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
        assert not distributed.is_distributed()
        assert distributed.local_device_id("GPU") == 0
    assert distributed.mean_over_ranks({"a": 1.5}) == {"a": 1.5}
    assert distributed.grad_reducer(define_D(ModelConfig(ndf=8), 0).trainable_params()) is None
    assert ms.get_auto_parallel_context("parallel_mode") == "stand_alone"


def test_msrun_worker_environment_is_recognised(monkeypatch):
    """What msrun 2.10 sets in a worker (measured): the device index is the worker's index on its node."""
    for k, v in {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "MS_SCHED_HOST": "127.0.0.1", "MS_SCHED_PORT": "8118",
                 "MS_NODE_ID": "1", "RANK_ID": "1", "RANK_SIZE": "2", "DEVICE_ID": "1"}.items():
        monkeypatch.setenv(k, v)
    assert distributed.launched_by_msrun()
    assert distributed.local_device_id("Ascend") == 1 and distributed.local_device_id("gpu") == 1
    assert distributed.local_device_id("CPU") == 0
    assert not distributed.is_distributed()  # recognised, but not joined until process_group


def test_batch_norm_across_processes_is_refused(monkeypatch):
    cfg = ModelConfig(ngf=8, ndf=8, n_blocks=2, norm="batch")
    distributed.check_norm(cfg, "CPU")  # one process: plain BatchNorm is the single-process model
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="SyncBatchNorm"):
        distributed.check_norm(cfg, "CPU")
    distributed.check_norm(ModelConfig(ngf=8, ndf=8, n_blocks=2), "CPU")  # instance norm is per image
