"""Compiled CPU kernels for the two places where MindSpore's own CPU operators cost singan_ms its speed:
instance norm (MindSpore's GroupNorm kernel is 4-5x slower than a plain two-pass one) and the exact Adam update
(emulating torch's rounding with MindSpore tensors needs float64 copies of every operand).

The kernels live in `csrc/kernels.cc` and run as MindSpore AOT custom operators (`ops.Custom(func_type="aot")`),
in graph and PyNative mode. They are compiled on first use with the host's C++ compiler (`$CXX`, else `c++`)
into a cache directory, one file per source + compiler + flags, written under a temporary name and renamed, so
concurrent workers (msrun) never load a half-written library.

When they are not used, and what happens then: on GPU / Ascend (the kernels are CPU code), when
`SINGAN_MS_NATIVE=0`, or when no compiler works; singan_ms then falls back to MindSpore operators that compute
the same function (`mint.nn.functional.group_norm`, the float64 Adam of optim.py) and warns once. Results are
the same either way: the Adam kernel is bit-identical to the fallback, and the instance norm agrees within
float32 rounding (both accumulate in float64 and round once; tests/test_ms_native.py).

Environment: `SINGAN_MS_NATIVE=0` disables the kernels; `SINGAN_MS_KERNEL_DIR` chooses the cache directory
(default `$XDG_CACHE_HOME/singan_ms` or `~/.cache/singan_ms`); `OMP_NUM_THREADS` caps the kernels' threads
(default: all CPUs; msrun sets 1 per worker).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

SOURCE = Path(__file__).parent / "csrc" / "kernels.cc"
# -ffp-contract=off: the Adam kernel's rounding must be exactly the one written (no compiler-made FMAs).
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=off", "-fno-math-errno")

_cache: dict[tuple[str, str], str | None] = {}


def cache_dir() -> Path:
    if os.environ.get("SINGAN_MS_KERNEL_DIR"):
        return Path(os.environ["SINGAN_MS_KERNEL_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "singan_ms"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def build(out_dir: Path | None = None) -> Path:
    """Compile csrc/kernels.cc (if not already cached) and return the library's path; RuntimeError says why not."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ / clang++)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{cxx} --version failed: {exc}") from None
    digest = hashlib.sha256(SOURCE.read_bytes() + version.encode() + " ".join(FLAGS).encode()).hexdigest()[:16]
    out_dir = out_dir or cache_dir()
    lib = out_dir / f"singan_ms_kernels-{digest}.so"
    if lib.exists():
        return lib
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=lib.stem + ".", suffix=".so.tmp", dir=out_dir)
        os.close(fd)
    except OSError as exc:
        raise RuntimeError(f"cannot write to the kernel cache {out_dir}: {exc} (set SINGAN_MS_KERNEL_DIR)") from None
    try:
        proc = subprocess.run([cxx, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed on {SOURCE}:\n{proc.stderr.strip()[-2000:]}")
        os.replace(tmp, lib)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{cxx} could not compile {SOURCE}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def library() -> str | None:
    """Path of the compiled kernels if singan_ms should use them in this process, else None (warned once)."""
    import mindspore as ms

    key = (os.environ.get("SINGAN_MS_NATIVE", "1"), ms.get_context("device_target"))
    if key in _cache:
        return _cache[key]  # type: ignore[return-value]

    lib, why = None, None
    if key[0] == "0":
        why = None  # the user's choice: no warning
    elif key[1] != "CPU":
        why = None  # GPU / Ascend: MindSpore's own kernels are the fast path there
    else:
        try:
            lib = str(build())
        except RuntimeError as exc:
            why = str(exc)
    if why:
        warnings.warn(f"singan_ms: compiled CPU kernels unavailable ({why}); using MindSpore operators instead, "
                      "same results, slower training (docs/benchmarks.md)", RuntimeWarning, stacklevel=2)
    _cache[key] = lib
    return lib


def custom(name: str, out_shape, out_dtype, bprop=None):  # noqa: ANN001 - MindSpore's infer callables
    """The AOT custom operator `name` of the compiled kernels (library() must not be None)."""
    from mindspore import ops

    return ops.Custom(f"{library()}:{name}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot",
                      bprop=bprop)
