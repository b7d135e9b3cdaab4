"""`python -m convert inspect PATH`: what a checkpoint holds, as a table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from convert import detect
from convert.formats import ConvertError, format_of, read_tensors


def describe(path: Path) -> str:
    tensors, metadata = read_tensors(path)
    tensors = detect.strip_module_prefix(tensors)
    try:
        found = detect.detect(tensors, str(path))
        what = f"{found.network} ({found.naming} names" + (f", {found.variant} variant)" if found.variant else ")")
    except ConvertError as exc:
        what = f"unknown: {exc}"
    n_params = sum(int(np.prod(v.shape)) for v in tensors.values())
    dtypes = Counter(str(v.dtype) for v in tensors.values())
    lines = [f"file      {path}", f"format    {format_of(path)}", f"network   {what}",
             f"tensors   {len(tensors)} ({n_params:,} values; " + ", ".join(f"{d} x{n}" for d, n in dtypes.items())
             + ")"]
    if metadata:
        lines.append("metadata  " + ", ".join(sorted(metadata)))
    width = max((len(k) for k in tensors), default=4)
    lines += ["", f"{'name':<{width}}  {'shape':<20} dtype"]
    lines += [f"{k:<{width}}  {str(tuple(v.shape)):<20} {v.dtype}" for k, v in tensors.items()]
    return "\n".join(lines)
