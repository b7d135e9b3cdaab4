"""Golden records: the PyTorch half of every parity case stored in one safetensors file, so the MindSpore half
can be checked on a machine without torch (an Ascend host, typically).

Layout: tensors are named `case/<case id>/in/<name>`, `case/<case id>/out/<name>` and `weights/<set>/<name>`
(weight sets are shared between cases: the full generator is stored once). The metadata holds each case's
output order (execution order matters: the first failing layer is the first in it) as JSON. Reading needs
only numpy and the safetensors package; this module never imports torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from parity.cases import Case, Record

FORMAT = "singan-parity-golden/1"


class GoldenError(ValueError):
    """A golden file that cannot serve this run; the message names the file and what is missing."""


def save(path: str | Path, records: dict[str, Record], meta: dict[str, str]) -> Path:
    from safetensors.numpy import save_file

    tensors: dict[str, np.ndarray] = {}
    order: dict[str, dict[str, list[str]]] = {}
    for case_id, rec in records.items():
        for name, a in rec.inputs.items():
            tensors[f"case/{case_id}/in/{name}"] = _c(a)
        for name, a in rec.outputs.items():
            tensors[f"case/{case_id}/out/{name}"] = _c(a)
        for set_name, w in rec.weights.items():
            for name, a in w.items():
                tensors[f"weights/{set_name}/{name}"] = _c(a)
        order[case_id] = {"inputs": list(rec.inputs), "outputs": list(rec.outputs), "weights": list(rec.weights)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"format": FORMAT, "cases": json.dumps(order), **meta})
    return path


class Golden:
    """A golden file opened for replay: `record(case)` gives the stored Record."""

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        if not self.path.is_file():
            raise GoldenError(f"{self.path}: golden file not found (record one with `python -m parity record`)")
        self._f = safe_open(str(self.path), framework="numpy")
        meta = self._f.metadata() or {}
        if meta.get("format") != FORMAT:
            raise GoldenError(f"{self.path}: not a parity golden file (format {meta.get('format')!r})")
        self.meta = {k: v for k, v in meta.items() if k != "cases"}
        self.order: dict[str, dict[str, list[str]]] = json.loads(meta["cases"])

    def has(self, case: Case) -> bool:
        return case.id in self.order

    def record(self, case: Case) -> Record:
        if case.id not in self.order:
            raise GoldenError(f"{self.path}: no record of case {case.id}; record it again with this version")
        o = self.order[case.id]
        get = self._f.get_tensor
        rec = Record(inputs={n: get(f"case/{case.id}/in/{n}") for n in o["inputs"]},
                     outputs={n: get(f"case/{case.id}/out/{n}") for n in o["outputs"]})
        keys = list(self._f.keys())
        for set_name in o["weights"]:
            prefix = f"weights/{set_name}/"
            rec.weights[set_name] = {k[len(prefix):]: get(k) for k in keys if k.startswith(prefix)}
        return rec


def _c(a: np.ndarray) -> np.ndarray:
    """C-contiguous without changing the shape (np.ascontiguousarray turns a 0-d loss into shape (1,))."""
    return np.require(a, requirements="C")
