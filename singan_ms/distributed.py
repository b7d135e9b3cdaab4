"""Data-parallel training for singan_ms under msrun: communication set-up, rank helpers, loss averaging, teardown.

Mirrors singan_torch/distributed.py. `msrun --worker_num N --local_worker_num N ... singan_ms/__main__.py train ...`
starts one scheduler and N worker processes of that script. Measured with MindSpore 2.10 (CPU), each worker gets
MS_ROLE=MS_WORKER, MS_WORKER_NUM=N, MS_NODE_ID, RANK_ID and DEVICE_ID (= the local worker index), RANK_SIZE=N,
MS_SCHED_HOST / MS_SCHED_PORT (the master address and port), MS_TOPO_TIMEOUT, HCCL_CONNECT_TIMEOUT and
OMP_NUM_THREADS=1. The scheduler runs the same script with MS_ROLE=MS_SCHED: everything before
`mindspore.communication.init()` runs there too, and inside init() it serves the cluster and then exits, so
`process_group` calls init() before anything writes a file. Started without that environment there is no group,
and every helper here answers for a single process (rank 0 of 1): the single-process trainer compiles the same
graph it compiled before this module existed.

How a run is split (docs/distributed.md): each rank reads its own stride of every epoch
(UnpairedDataset(rank=, world_size=)); `--batch-size` is per process, so the global batch is
world_size x batch_size; the step's random draws are made for the global batch and sliced
(singan_common.rng.shard_step_draws); `nn.DistributedGradReducer` in the compiled train step (singan_ms.model)
averages the G, D and F gradients over ranks, which equals the gradient of the global batch's mean loss because
every loss is a mean over (or per-pair average across) the batch and every rank holds equally many images.
Rank 0 alone writes checkpoints and the run's logs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore import communication as comm

from singan_common.config import ConfigError, ModelConfig
from singan_ms.device import normalise_device, setup

# What a worker of msrun (or of MindSpore's dynamic-cluster start-up by hand, which sets the same) carries.
MSRUN_VARS = ("MS_ROLE", "MS_WORKER_NUM", "MS_SCHED_HOST", "MS_SCHED_PORT")

# rank and world size of the group joined by `process_group`, while inside it.
_group: dict[str, int] = {}


def launched_by_msrun() -> bool:
    """True in a process started by msrun (a worker or its scheduler)."""
    return all(v in os.environ for v in MSRUN_VARS)


def is_distributed() -> bool:
    """True while this process is in a communication group (set up by `process_group`)."""
    return bool(_group)


def rank() -> int:
    return _group.get("rank", 0)


def world_size() -> int:
    return _group.get("world", 1)


def is_main() -> bool:
    """The one process that writes checkpoints, the run config and the run's loss log."""
    return rank() == 0


def local_device_id(device: str) -> int:
    """The device index this process trains on: under msrun, GPU and Ascend mean the device numbered by DEVICE_ID,
    which msrun sets to the worker's index on its node (one device per process, as torchrun's LOCAL_RANK).
    The CPU backend has one device."""
    if normalise_device(device) == "CPU" or not launched_by_msrun():
        return 0
    return int(os.environ.get("DEVICE_ID", "0"))


@contextlib.contextmanager
def process_group(device: str) -> Iterator[str]:
    """Join msrun's cluster for `device` and yield the device name this process trains on.

    Sets the device first (init() picks its backend from it: mccl on CPU, nccl on GPU, hccl on Ascend), then
    MindSpore's DATA_PARALLEL context, which nn.DistributedGradReducer reads. Without msrun's environment
    nothing happens and `device` is yielded as given."""
    if not launched_by_msrun():
        yield device
        return
    device = setup(device, mode="graph", device_id=local_device_id(device))
    comm.init()  # msrun's scheduler process never returns from here
    world = comm.get_group_size()
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world)
    _group.update(rank=comm.get_rank(), world=world)
    try:
        yield device
    finally:
        _group.clear()
        ms.reset_auto_parallel_context()
        comm.release()


def check_norm(cfg: ModelConfig, device: str) -> None:
    """Refuse BatchNorm across processes: it would normalise each rank's images with that rank's own statistics,
    a different model from one process with the global batch. MindSpore 2.10's nn.SyncBatchNorm (which would fix
    this) cannot even be built on CPU (it has no communication group there: ValueError at construction, measured)
    and is documented for Ascend only; singan_ms does not swap it in on any device. Instance norm (the default) is
    per image and needs nothing."""
    if cfg.norm == "batch" and world_size() > 1:
        raise ConfigError(f"--norm batch with more than one process is not supported by singan_ms on {device} "
                          "(no SyncBatchNorm on MindSpore's CPU backend, and none is swapped in on GPU or Ascend); "
                          "use --norm instance (the default) or train in one process")


def grad_reducer(params: list[Parameter]) -> nn.Cell | None:
    """The cell that averages the gradients of `params` over all ranks inside a compiled train step (an
    all-reduce sum, then a multiplication by 1 / world size), or None in a single process, where the train step
    must compile exactly the graph it compiles without data parallelism."""
    if not is_distributed():
        return None
    return nn.DistributedGradReducer(params, mean=True, degree=world_size())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average per-rank scalars (the logged losses) over all ranks: the global batch's losses, what one process
    with the global batch would log. For logging only; gradients are reduced in the train step.

    Gathered rather than all-reduced: MindSpore's CPU AllReduce takes no float64, and the float32 values
    gathered exactly are then averaged in float64, as singan_torch averages them."""
    if not is_distributed():
        return values
    local = Tensor(np.asarray([list(values.values())], np.float32))
    gathered = ops.AllGather()(local).asnumpy().astype(np.float64)  # (world, n): every rank's row
    return dict(zip(values, gathered.mean(axis=0).tolist(), strict=True))
