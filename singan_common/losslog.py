"""The training loss log (`loss_log.csv`) both frameworks' trainers write, one row per iteration."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from singan_common.fsutil import atomic_path


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
