"""What the torchrun and msrun tests both check of a data-parallel run's loss logs, and their small helpers."""

from __future__ import annotations

import csv
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from singan_common.losslog import rank_log_path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_log(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@dataclass
class LogComparison:
    rows2: list[dict[str, str]]  # the N-process run's loss_log.csv
    rows1: list[dict[str, str]]  # the single process's
    per_rank: list[list[dict[str, str]]]
    worst_rel: float  # largest relative loss difference among losses of size >= 1e-3
    worst_small: float  # largest absolute difference among the smaller ones


def check_global_batch_logs(two: Path, one: Path, log_file: str, world: int, loss_names: Sequence[str],
                            loss_atol: float, loss_rtol: float, mean_rtol: float) -> LogComparison:
    """The N-process run's log holds the global batch's losses: step by step the single process's within the
    given tolerances, and the mean of the per-rank logs."""
    rows2, rows1 = read_log(two / log_file), read_log(one / log_file)
    assert [(r["step"], r["epoch"], r["iter"], r["lr"]) for r in rows2] == \
           [(r["step"], r["epoch"], r["iter"], r["lr"]) for r in rows1] and len(rows1) == 4
    worst_rel = worst_small = 0.0
    for a, b in zip(rows2, rows1, strict=True):
        for k in loss_names:
            x, y = float(a[k]), float(b[k])
            assert abs(x - y) <= loss_atol + loss_rtol * abs(y), f"step {a['step']} {k}: {x} vs {y}"
            if abs(y) >= 1e-3:
                worst_rel = max(worst_rel, abs(x - y) / abs(y))
            else:
                worst_small = max(worst_small, abs(x - y))
    per_rank = [read_log(rank_log_path(two, r)) for r in range(world)]
    for step, row in enumerate(rows2):
        for k in loss_names:
            mean = sum(float(log[step][k]) for log in per_rank) / world
            assert mean == pytest.approx(float(row[k]), rel=mean_rtol, abs=1e-12)
    return LogComparison(rows2, rows1, per_rank, worst_rel, worst_small)
