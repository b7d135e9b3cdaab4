"""Reading and writing checkpoint files as flat {name: numpy array} dicts, safely and atomically.

Formats: PyTorch `.pth` / `.pt` (read with `weights_only=True`: a pickle that would construct arbitrary
objects or run code is refused, never executed), `.safetensors` (either framework's; metadata kept), and
MindSpore `.ckpt`. torch and mindspore are imported only when a file of theirs is touched.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from singan_common.fsutil import atomic_path

TORCH_SUFFIXES = (".pth", ".pt", ".bin")
FORMATS = ("pth", "ckpt", "safetensors")


class ConvertError(ValueError):
    """Anything wrong with an input or output of the converter; the message names the file."""


def format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return "pth"
    if suffix == ".ckpt":
        return "ckpt"
    if suffix == ".safetensors":
        return "safetensors"
    raise ConvertError(f"{path}: unknown checkpoint format {suffix!r} (expected .pth, .pt, .ckpt or .safetensors)")


def load_torch_object(path: Path) -> Any:
    """torch.load with weights_only=True, mapping every failure to one clear error naming the file."""
    import torch

    if not path.is_file():
        raise ConvertError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(f"{path}: refused: this pickle holds more than tensors and plain containers, and "
                           f"loading it could run code ({first}). Re-save it as a state_dict or safetensors.") from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
        raise ConvertError(f"{path}: not a readable PyTorch file, truncated or corrupt "
                           f"({type(exc).__name__}: {exc})") from None


def torch_to_numpy(obj: Any) -> Any:
    """Recursively turn torch tensors inside dicts/lists into numpy arrays (other leaves unchanged)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, dict):
        return {k: torch_to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(torch_to_numpy(v) for v in obj)
    return obj


def read_tensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """A flat state dict from any supported file, and its metadata (safetensors header; else empty)."""
    fmt = format_of(path)
    if not path.is_file():
        raise ConvertError(f"{path}: file not found")
    if fmt == "pth":
        obj = load_torch_object(path)
        if not isinstance(obj, dict):
            raise ConvertError(f"{path}: expected a state_dict (a dict of tensors), found {type(obj).__name__}")
        tensors = torch_to_numpy(obj)
        bad = [k for k, v in tensors.items() if not isinstance(v, np.ndarray)]
        if bad:
            raise ConvertError(f"{path}: not a flat state_dict; non-tensor entries: {', '.join(map(str, bad[:5]))}")
        return tensors, {}
    if fmt == "safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConvertError(f"{path}: not a readable safetensors file ({exc})") from None
    return read_ckpt(path), {}


def read_ckpt(path: Path) -> dict[str, np.ndarray]:
    import mindspore as ms

    try:
        params = ms.load_checkpoint(str(path))
    except (RuntimeError, ValueError, OSError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConvertError(f"{path}: not a readable MindSpore checkpoint, truncated or corrupt ({first})") from None
    return {k: v.asnumpy() for k, v in params.items()}


def write_tensors(path: Path, tensors: dict[str, np.ndarray], fmt: str, metadata: dict[str, str] | None = None,
                  force: bool = False) -> None:
    """Write atomically; refuse to replace an existing file unless `force`."""
    if path.exists() and not force:
        raise ConvertError(f"{path}: exists; pass --force to overwrite")
    if fmt == "pth":
        import torch

        with atomic_path(path) as tmp:
            torch.save({k: torch.from_numpy(contiguous(v)) for k, v in tensors.items()}, tmp)
    elif fmt == "safetensors":
        from safetensors.numpy import save_file

        with atomic_path(path) as tmp:
            save_file({k: contiguous(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)
    elif fmt == "ckpt":
        import mindspore as ms

        with atomic_path(path) as tmp:
            ms.save_checkpoint([{"name": k, "data": ms.Tensor(contiguous(v))} for k, v in tensors.items()],
                               str(tmp))
    else:
        raise ConvertError(f"unknown output format {fmt!r}; choose one of {', '.join(FORMATS)}")


def contiguous(v: np.ndarray) -> np.ndarray:
    """C-contiguous without promoting 0-d arrays to 1-d (np.ascontiguousarray does, which would change a
    scalar such as num_batches_tracked from shape () to (1,))."""
    v = np.asarray(v)
    return v if v.flags.c_contiguous else v.copy(order="C")
