"""Data-parallel singan_torch under torchrun: N CPU processes x batch b train what 1 process x batch N*b trains.

The end-to-end tests launch `python -m torch.distributed.run --nproc_per_node 2` (gloo, 127.0.0.1 only) and
compare with a single process on the global batch: losses, gradients, weights and network outputs. The rest
checks the pieces that make the two equal (data shards, sliced draws) and the single-writer rules.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from parity.compare import compare_sparse
from parity.runner import MAX_NOISE_FRACTION
from parity.tolerances import Tolerance
from singan_common.config import ConfigError, ModelConfig, RunConfig
from singan_common.data import UnpairedDataset
from singan_common.rng import shard_step_draws, step_draws
from singan_torch import distributed
from singan_torch.model import LOSS_NAMES, SinGANDehazeModel
from singan_torch.networks import define_D, define_G
from singan_torch.train import (
    LOG_FILE,
    Progress,
    ResumeError,
    local_draws,
    save_networks,
    save_train_state,
    train,
)
from tests.ddp_grad_probe import collect
from tests.distributed_logs import check_global_batch_logs, free_port
from tests.test_common import make_folder
from tests.test_torch_train import TINY, tiny_train

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2

# Tolerances for "2 processes x batch 1" against "1 process x batch 2" in fp32 on CPU. The two compute the same
# sums in different orders (a conv's weight gradient summed over a batch of 2 inside one kernel, versus two
# batch-1 gradients averaged by DDP's all-reduce), so they agree to float32 reordering, which the steps then
# carry forward. The CLI run uses --init-gain 0.2 rather than CUT's 0.02: at 0.02 F's outputs have norms next to
# the 1e-7 of PatchNCE's x / (||x|| + 1e-7), whose gradient amplifies float32 rounding (docs/parity.md), and on a
# Zen 5 (AVX-512) host that alone moved loss_MMD at step 4 by 9.3e-5 relative, 40x the Zen 3 host's figure; with
# --lambda-nce 0 or with gain 0.2 the same comparison falls back to 1e-6, the noise of merely changing torch's
# thread count. Measured at gain 0.2 (Zen 5, 2 cores, torch 2.14.1), 4 steps over 2 epochs: losses within
# 2e-6 relative; weights within 1.5e-5 except 2 of F.mlp_4.2.weight's 65536 elements (1.6e-4: Adam's update of a
# gradient element at float-noise level has an arbitrary sign, up to 2 lr per step, the parity harness's
# compare_sparse rule, which the weights are judged by here: at most MAX_NOISE_FRACTION of a tensor's elements
# beyond WEIGHT_ATOL, none beyond that bound). Every real mistake is orders of magnitude larger: a rank that
# skips the all-reduce or a mis-sliced noise row changes the losses by 1e-3..1e-1 and moves Adam's first update
# by about lr = 2e-4 on most weights.
LOSS_RTOL = 1e-5  # relative, per logged loss (the CSV keeps 8 significant digits)
LOSS_ATOL = 1e-8  # absolute floor for loss_D_fake, whose value is 1e-9..1e-5 in these steps
GRAD_RTOL = 1e-4  # relative to the tensor's largest gradient (parity's FP32_CPU_GRAD convention)
WEIGHT_ATOL = 2e-5  # absolute; weights are O(0.01..1) (TINY at gain 0.02, the CLI run at 0.2)
WEIGHT_ROUNDING = Tolerance(WEIGHT_ATOL, 0.0, "float32 reordering carried through 4 steps")
OUTPUT_ATOL = 1e-5  # G(x) in [-1, 1] and D(x) on a probe image
# A structural-zero bias moves by about lr per Adam step on each side, in a direction float noise picks; Adam's
# m/sqrt(v) can exceed 1 when that noise changes sign, hence 2 (two sides) x 2 (margin) x the summed lr.
STRUCTURAL_BOUND = 4.0


def torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # gloo talks over loopback only
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def structural_zero_biases(net: nn.Module, taps: tuple[int, ...] = ()) -> set[str]:
    """Conv biases that the affine-free InstanceNorm right after them removes. Their gradient is zero in exact
    arithmetic, so float noise picks its sign and Adam moves each by about lr per step either way (DESIGN.md
    section 5): they are compared by their bound, not by the tolerance. `taps`: indices of `net.model` whose
    output is read directly (G's NCE layers), whose biases therefore matter."""
    found = set()
    for name, seq in net.named_modules():
        if not isinstance(seq, nn.Sequential):
            continue
        children = list(seq.named_children())
        for (idx, a), (_, b) in zip(children, children[1:]):
            tapped = name == "model" and int(idx) in taps
            if (isinstance(a, nn.Conv2d | nn.ConvTranspose2d) and a.bias is not None
                    and isinstance(b, nn.InstanceNorm2d) and not b.affine and not tapped):
                found.add(f"{name}.{idx}.bias")
    return found


def structural_names(cfg: ModelConfig) -> set[str]:
    g = {f"G.{k}" for k in structural_zero_biases(define_G(cfg, 0), tuple(cfg.nce_layers))}
    return g | {f"D.{k}" for k in structural_zero_biases(define_D(cfg, 0))}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 4 hazy images: divisible by 2 ranks, so no rank pads its shard by wrapping (docs/distributed.md).
    root = tmp_path_factory.mktemp("data")
    return make_folder(root / "hazy", 4), make_folder(root / "clear", 3, seed=1)


CLI_MODEL = ["--ngf", "8", "--ndf", "8", "--n-blocks", "2", "--num-patches", "16", "--mmd-num-samples", "16",
             "--init-gain", "0.2"]
CLI_TRAIN = ["--load-size", "36", "--crop-size", "32", "--seed", "3", "--n-epochs", "1", "--n-epochs-decay", "1",
             "--save-epoch-freq", "1", "--no-progress"]


def test_two_processes_train_what_one_process_with_the_global_batch_trains(tmp_path, data):
    """2 ranks x batch 1 for 2 epochs (4 steps) == 1 process x batch 2, through the real CLI."""
    run2, run1 = tmp_path / "ddp", tmp_path / "single"
    torchrun(["-m", "singan_torch", "train", *CLI_MODEL, *CLI_TRAIN, "--batch-size", "1",
              "--hazy", str(data[0]), "--clear", str(data[1]), "--out", str(run2)], cwd=tmp_path)
    cfg = RunConfig.load(run2 / "run_config.json")
    assert cfg.train.batch_size == 1  # stored as given: per process
    assert cfg.model.init_gain == 0.2  # --init-gain reached the model (and the single run below)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(run1, *data, cfg.model, dataclasses.replace(cfg.train, batch_size=WORLD), progress_bar=False)

    # Rank 0 alone writes the run's files; each rank adds only its own log.
    single_files = {p.name for p in run1.iterdir()}
    assert {p.name for p in run2.iterdir()} == single_files | {"ranks"}
    assert {p.name for p in (run2 / "ranks").iterdir()} == {f"rank{r}.csv" for r in range(WORLD)}

    # Losses: the run log holds the global batch's losses (mean over ranks), step by step.
    logs = check_global_batch_logs(run2, run1, LOG_FILE, WORLD, LOSS_NAMES, LOSS_ATOL, LOSS_RTOL, 1e-6)
    rows1 = logs.rows1

    # Weights: all within WEIGHT_ATOL except the structural zeros, which stay within Adam's reach of each other.
    lr_total = sum(float(r["lr"]) for r in rows1)
    structural = structural_names(cfg.model)
    worst_w = worst_s = 0.0
    noise = 0  # elements beyond WEIGHT_ATOL (Adam sign noise), all tensors together
    states = {}
    for name in ("G", "D", "F"):
        a = torch.load(run2 / f"latest_net_{name}.pth", weights_only=True)
        b = torch.load(run1 / f"latest_net_{name}.pth", weights_only=True)
        assert a.keys() == b.keys()
        states[name] = (a, b)
        for k in a:
            diff = (a[k].float() - b[k].float()).abs().max().item()
            if f"{name}.{k}" in structural:
                worst_s = max(worst_s, diff)
                assert diff <= STRUCTURAL_BOUND * lr_total, f"{name}.{k}: {diff}"
            else:
                # Adam's sign noise: a few elements may part by up to 2 lr per step (parity's trajectory rule).
                c = compare_sparse(f"{name}.{k}", a[k].float().numpy(), b[k].float().numpy(), WEIGHT_ROUNDING,
                                   2.0 * lr_total, MAX_NOISE_FRACTION)
                assert c.passed, f"{name}.{k}: max {c.max_abs:.3g}, {c.frac_over:.3g} of the elements beyond rounding"
                noise += round(c.frac_over * a[k].numel())
                if c.frac_over == 0:
                    worst_w = max(worst_w, c.max_abs)

    # Function space: the trained G and D compute the same outputs (structural zeros included, they cancel).
    probe = torch.from_numpy(np.random.default_rng(5).uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32))
    worst_out = 0.0
    for name, build in (("G", define_G), ("D", define_D)):
        nets = []
        for state in states[name]:
            net = build(cfg.model, 0)
            net.load_state_dict(state)
            nets.append(net.eval())
        with torch.no_grad():
            diff = (nets[0](probe) - nets[1](probe)).abs().max().item()
        worst_out = max(worst_out, diff)
        assert diff <= OUTPUT_ATOL, f"{name} output differs by {diff}"
    print(f"\n2 ranks x 1 vs 1 x 2, {len(rows1)} steps: losses {logs.worst_rel:.2g} rel "
          f"(small ones {logs.worst_small:.2g} abs), "
          f"weights {worst_w:.2g} ({noise} sign-noise elements), "
          f"structural-zero biases {worst_s:.2g} (bound {STRUCTURAL_BOUND * lr_total:.2g}), "
          f"G/D outputs {worst_out:.2g}")


def test_ddp_gradients_are_the_global_batch_gradients(tmp_path, data):
    """One step: both ranks hold bit-identical averaged gradients and weights, equal to batch 2's gradients."""
    out = tmp_path / "probe"
    out.mkdir()
    torchrun([str(ROOT / "tests" / "ddp_grad_probe.py"), str(out), str(data[0]), str(data[1])], cwd=tmp_path)
    ranks = [torch.load(out / f"rank{r}.pth", weights_only=True) for r in range(WORLD)]
    for kind in ("grad", "weight"):
        for k, v in ranks[0][kind].items():
            assert torch.equal(v, ranks[1][kind][k]), f"ranks disagree on {kind} {k}"

    dataset = UnpairedDataset(*data, 36, 32, True, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        single = SinGANDehazeModel(TINY, tiny_train(batch_size=WORLD))
    batch = dataset.batch(1, 0, WORLD)
    single.optimize(batch.hazy, batch.clear, local_draws(single, 0, batch.hazy.shape))
    expected = collect(single)["grad"]
    assert ranks[0]["grad"].keys() == expected.keys() and len(expected) == sum(
        len(list(n.parameters())) for n in single.nets.values())
    structural = structural_names(TINY)
    worst = 0.0
    for k, want in expected.items():
        got = ranks[0]["grad"][k]
        scale = want.abs().max().item()
        err = (got - want).abs().max().item()
        if k in structural:
            # Zero in exact arithmetic: both sides must be float noise next to the net's real gradients.
            net_scale = max(v.abs().max().item() for n, v in expected.items() if n[0] == k[0])
            assert max(got.abs().max().item(), scale) <= 1e-4 * net_scale, k
            continue
        worst = max(worst, err / scale)
        assert err <= GRAD_RTOL * scale, f"{k}: max err {err:.3g} at scale {scale:.3g}"
    print(f"\nDDP gradient vs batch-2 gradient: worst {worst:.2g} of the tensor's scale")


def test_step_draws_are_sliced_from_the_global_batch():
    """Local image j of rank r is image j * W + r of the global batch, so it gets that row of the noise."""
    full = step_draws(3, 7, 6, [64, 16], 16, 8, "uniform", 0.3, 8)
    for rank in range(3):
        local = shard_step_draws(full, rank, 3)
        for got, want in zip(local.neg_noise, full.neg_noise, strict=True):
            assert got.shape == (2, *want.shape[1:]) and got.flags.c_contiguous
            assert np.array_equal(got, want[[rank, rank + 3]])
        assert all(a is b for a, b in zip(local.patch_ids, full.patch_ids, strict=True))  # shared by all images
        assert local.mmd_ids_fake is full.mmd_ids_fake and local.mmd_ids_real is full.mmd_ids_real
    assert shard_step_draws(full, 0, 1) is full
    none = step_draws(3, 7, 4, [16], 16, 8, "none", 0.3, 8)
    assert shard_step_draws(none, 1, 2).neg_noise == [None]


@pytest.mark.parametrize(("world", "batch"), [(2, 1), (2, 2), (3, 2)])
def test_rank_batches_interleave_into_the_global_batch(tmp_path, world, batch):
    """Every step, the ranks' batches together are exactly one process's batch of world x batch images, with
    rank r's image j at position j * world + r: the order shard_step_draws assumes."""
    a, b = make_folder(tmp_path / "h", 12), make_folder(tmp_path / "c", 5, seed=2)
    one = UnpairedDataset(a, b, 36, 32, True, 0)
    shards = [UnpairedDataset(a, b, 36, 32, True, 0, rank=r, world_size=world) for r in range(world)]
    assert {s.num_batches(batch) for s in shards} == {one.num_batches(world * batch)}
    for epoch in (1, 2):
        for k in range(one.num_batches(world * batch)):
            glob = one.batch(epoch, k, world * batch)
            for r, shard in enumerate(shards):
                mine = shard.batch(epoch, k, batch)
                assert np.array_equal(mine.hazy, glob.hazy[r::world])
                assert np.array_equal(mine.clear, glob.clear[r::world])
                assert mine.hazy_paths == glob.hazy_paths[r::world]


def test_single_process_without_torchrun(monkeypatch):
    for var in distributed.TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    assert not distributed.launched_by_torchrun()
    with distributed.process_group("cpu") as device:
        assert device == "cpu"
        assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
        assert not distributed.is_distributed()
    assert distributed.mean_over_ranks({"a": 1.5}) == {"a": 1.5}


def test_only_rank_0_writes_checkpoints(tmp_path, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SinGANDehazeModel(TINY, tiny_train())
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    save_networks(model, tmp_path, "latest")
    save_train_state(model, tmp_path, Progress(epoch=1, batch=1, step=1))
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(distributed, "rank", lambda: 0)
    save_networks(model, tmp_path, "latest")
    assert {p.name for p in tmp_path.iterdir()} == {"latest_net_G.pth", "latest_net_D.pth", "latest_net_F.pth"}


def test_resume_needs_the_same_number_of_processes(tmp_path, data, monkeypatch):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(tmp_path / "r", *data, TINY, tiny_train(max_steps=1), progress_bar=False)
        monkeypatch.setattr(distributed, "world_size", lambda: 2)
        with pytest.raises(ResumeError, match="trained by 1 process.*resumed by 2"):
            train(tmp_path / "r", *data, TINY, tiny_train(max_steps=2), resume=True, progress_bar=False)


def test_batch_norm_across_cpu_processes_is_refused(monkeypatch):
    cfg = dataclasses.replace(TINY, norm="batch")
    distributed.check_norm(cfg, "cpu")  # one process: plain BatchNorm is the single-process model
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    with pytest.raises(ConfigError, match="SyncBatchNorm"):
        distributed.check_norm(cfg, "cpu")
    distributed.check_norm(TINY, "cpu")  # instance norm is per image: fine at any world size
