"""Helper for tests/test_torch_distributed.py, run under torchrun: one data-parallel training step, then every
rank saves the gradients it applied and its weights after the step to OUT/rank<r>.pth.

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_grad_probe.py OUT HAZY CLEAR

The step is singan_torch's own: the rank's shard (batch 1), draws for the global batch sliced to the rank,
SinGANDehazeModel.optimize with G, D and F wrapped by singan_torch.distributed.wrap_model. optimize() clears
gradients at the start of a step, not the end, so after it every net still holds the gradient of its last
backward (D's from the D step, G's and F's from the G step), DDP-averaged.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from singan_common.data import UnpairedDataset
from singan_torch import distributed
from singan_torch.model import SinGANDehazeModel
from singan_torch.train import local_draws
from tests.test_torch_train import TINY, tiny_train


def main(out: Path, hazy: Path, clear: Path, batch_size: int = 1) -> None:
    warnings.simplefilter("ignore")  # the random-VGG warning, once per rank
    with distributed.process_group("cpu"):
        train_cfg = tiny_train(batch_size=batch_size)
        dataset = UnpairedDataset(hazy, clear, train_cfg.load_size, train_cfg.crop_size, train_cfg.flip,
                                  train_cfg.seed, rank=distributed.rank(), world_size=distributed.world_size())
        model = SinGANDehazeModel(TINY, train_cfg)
        if distributed.is_distributed():
            distributed.wrap_model(model)
        batch = dataset.batch(1, 0, batch_size)
        model.optimize(batch.hazy, batch.clear, local_draws(model, 0, batch.hazy.shape))
        torch.save(collect(model), out / f"rank{distributed.rank()}.pth")


def collect(model: SinGANDehazeModel) -> dict[str, dict[str, torch.Tensor]]:
    """{'grad' | 'weight': {'G.model.1.weight': tensor, ...}} for G, D and F."""
    out: dict[str, dict[str, torch.Tensor]] = {"grad": {}, "weight": {}}
    for name, net in model.nets.items():
        for key, p in net.named_parameters():
            out["weight"][f"{name}.{key}"] = p.detach().clone()
            if p.grad is not None:
                out["grad"][f"{name}.{key}"] = p.grad.detach().clone()
    return out


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
