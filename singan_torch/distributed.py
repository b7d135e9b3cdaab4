"""Data-parallel training for singan_torch under torchrun: process group, rank helpers, DDP wrapping, teardown.

`torchrun --nproc_per_node N -m singan_torch train ...` (or `python -m torch.distributed.run ...`) starts N
processes and sets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT in each.
`process_group(device)` joins the group they describe (gloo on CPU, nccl on CUDA) and leaves it on exit.
Started any other way there is no group, and every helper here answers for a single process (rank 0 of 1),
so the single-process path runs exactly the code it ran before this module existed.

How a run is split (docs/distributed.md): each rank reads its own stride of every epoch
(UnpairedDataset(rank=, world_size=)); `--batch-size` is per process, so the global batch is
world_size x batch_size; the step's random draws are made for the global batch and sliced
(singan_common.rng.shard_step_draws); DistributedDataParallel averages the gradients, which equals the
gradient of the global batch's mean loss because every loss is a mean over (or per-pair average across)
the batch and every rank holds equally many images. Rank 0 alone writes checkpoints and the run's logs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from singan_common.config import ConfigError, ModelConfig
from singan_torch.model import SinGANDehazeModel

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True in a process started by torchrun (or anything else that sets its environment variables)."""
    return all(v in os.environ for v in TORCHRUN_VARS)


def is_distributed() -> bool:
    """True while this process is in a process group (set up by `process_group`)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """The one process that writes checkpoints, the run config and the run's loss log."""
    return rank() == 0


def local_device(device: str) -> torch.device:
    """The device this process trains on. Under torchrun `cuda` means cuda:LOCAL_RANK (one GPU per process);
    an explicit cuda:K would put every local process on one GPU, which nccl refuses, so it is refused here."""
    dev = torch.device(device)
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ConfigError(f"data-parallel training runs on cpu (gloo) or cuda (nccl), not {device!r}")
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if dev.index is not None and local_world > 1:
        raise ConfigError(f"--device {device} under torchrun with {local_world} processes per node: pass "
                          "--device cuda, and each process takes the GPU numbered by its LOCAL_RANK")
    index = int(os.environ["LOCAL_RANK"]) if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK {index} has no GPU: this node has {torch.cuda.device_count()}; "
                          "start at most that many processes per node (--nproc_per_node)")
    return torch.device("cuda", index)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[str]:
    """Join torchrun's process group for `device` and yield the device string this process should train on.

    Without torchrun's environment nothing happens and `device` is yielded as given."""
    if not launched_by_torchrun():
        yield device
        return
    dev = local_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        dist.init_process_group("nccl", device_id=dev)
    else:
        dist.init_process_group("gloo")
    try:
        yield str(dev)
    finally:
        dist.destroy_process_group()


def check_norm(cfg: ModelConfig, device: str) -> None:
    """Refuse BatchNorm across CPU processes: it would normalise each rank's images with that rank's own
    statistics, a different model from one process with the global batch, and torch's SyncBatchNorm (which
    fixes this) runs on GPUs only. Instance norm (the default) is per image and needs nothing."""
    if cfg.norm == "batch" and world_size() > 1 and torch.device(device).type != "cuda":
        raise ConfigError("--norm batch with more than one process needs CUDA (torch's SyncBatchNorm is GPU-only); "
                          "use --norm instance (the default) or train on GPUs")


def data_parallel(module: nn.Module) -> DistributedDataParallel:
    """DDP around a module that already sits on this process's device.

    broadcast_buffers=False: the nets have no buffers that training changes except BatchNorm running stats,
    and under SyncBatchNorm every rank computes those from the same global statistics already."""
    param = next(module.parameters())
    device_ids = [param.device.index] if param.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)


def wrap_model(model: SinGANDehazeModel) -> None:
    """Make `model` train data-parallel: SyncBatchNorm on CUDA for --norm batch, then DDP for G, D and F.

    DDP's constructor broadcasts rank 0's parameters; every rank already holds the same ones (same seed, or the
    same train_state.pth), so this only guards against a rank that loaded something else."""
    if model.cfg.norm == "batch" and model.device.type == "cuda":
        for net in model.nets.values():
            # Converts in place below the top module and reuses the same Parameter objects, so the
            # optimisers and the saved state_dict keys are unchanged.
            nn.SyncBatchNorm.convert_sync_batchnorm(net)
    model.wrap_for_training(data_parallel)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average per-rank scalars (the logged losses) over all ranks: the global batch's losses, what one process
    with the global batch would log. For logging only; gradients are reduced by DDP."""
    if not is_distributed():
        return values
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(values, (t / world_size()).tolist(), strict=True))
