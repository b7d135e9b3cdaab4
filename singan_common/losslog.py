"""The training loss logs both frameworks' trainers write, one row per iteration: the run's `loss_log.csv` and,
in a data-parallel run, each process's own `ranks/rank<r>.csv`."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

from singan_common.fsutil import atomic_path

RANK_LOG_DIR = "ranks"


class LossLog:
    """Append-only CSV; on resume, rows past the resumed step (logged after the last save) are dropped."""

    def __init__(self, path: Path, resume_step: int | None, fields: Sequence[str]) -> None:
        self.path = path
        rows: list[dict] = []
        if resume_step is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(fields))
            writer.writeheader()
            writer.writerows(rows)
        self._file = path.open("a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=list(fields))

    def write(self, row: dict) -> None:
        self._writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def rank_log_path(run_dir: Path, rank: int) -> Path:
    return run_dir / RANK_LOG_DIR / f"rank{rank}.csv"


class RunLogs:
    """The run's loss log (main process only; the global batch's losses) and, in a data-parallel run, this
    process's own log. `mean_over_ranks` is the framework's collective (identity in a single process)."""

    def __init__(self, run_dir: Path, log_file: str, fields: Sequence[str], resume_step: int | None, main: bool,
                 rank: int | None, mean_over_ranks: Callable[[dict[str, float]], dict[str, float]]) -> None:
        self.run = LossLog(run_dir / log_file, resume_step, fields) if main else None
        self.rank = LossLog(rank_log_path(run_dir, rank), resume_step, fields) if rank is not None else None
        self.mean_over_ranks = mean_over_ranks

    def write(self, row: dict, local: dict[str, float], seconds: float) -> dict[str, float]:
        """Log one step; returns the losses of the global batch (equal to `local` in a single process)."""
        if self.rank is not None:
            self.rank.write({**row, **local, "seconds": seconds})
        losses = self.mean_over_ranks(local)  # a collective: every rank calls it
        if self.run is not None:
            self.run.write({**row, **losses, "seconds": seconds})
        return losses

    def close(self) -> None:
        for log in (self.run, self.rank):
            if log is not None:
                log.close()
