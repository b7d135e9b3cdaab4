"""Compiled CPU kernels for the places where MindSpore's own CPU operators cost singan_ms its speed:
convolutions (csrc/conv.cc: oneDNN's fast kernels, as torch calls them), instance norm (MindSpore's GroupNorm
kernel is 4-5x slower than a plain two-pass one), the exact Adam update (emulating torch's rounding with MindSpore
tensors needs float64 copies of every operand), reflection padding (csrc/kernels.cc), and the small layers around
the convolutions whose MindSpore operators cost several times torch's: VGG16's max pooling, LeakyReLU, the
perceptual loss's mean |a - b|, the transposed convolutions' bias and the patch sampler's gather
(csrc/layers.cc). Threads, and the per-instruction-set copies of the summing loops, are in csrc/parallel.h.

The kernels run as MindSpore AOT custom operators (`ops.Custom(func_type="aot")`), in graph and PyNative mode.
They are compiled on first use with the host's C++ compiler (`$CXX`, else `c++`) into a cache directory, one
file per source + compiler + flags, written under a temporary name and renamed, so concurrent workers (msrun)
never load a half-written library. The library is built for generic x86-64 (the cache may be shared between
machines); its compute-bound loops carry AVX2 / AVX-512F copies picked at load time (`target_clones`).

When they are not used, and what happens then: on GPU / Ascend (the kernels are CPU code), when
`SINGAN_MS_NATIVE=0`, or when no compiler works; singan_ms then falls back to MindSpore operators that compute
the same function (`mint.nn.functional.group_norm`, the float64 Adam of optim.py, MindSpore's MaxPool, LeakyReLU,
Gather, ...) and warns once. Results are the same either way up to float32 summation order: the Adam, padding,
max-pooling, LeakyReLU and gather kernels are bit-identical to torch's CPU results or to the fallback, and the
sums (norm statistics, the L1 mean, the bias gradient) accumulate in float64 and round once
(tests/test_ms_native.py).

Environment: `SINGAN_MS_NATIVE=0` disables the kernels; `SINGAN_MS_KERNEL_DIR` chooses the cache directory
(default `$XDG_CACHE_HOME/singan_ms` or `~/.cache/singan_ms`); `OMP_NUM_THREADS` caps the kernels' threads
(default: all CPUs; msrun sets 1 per worker).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

CSRC = Path(__file__).parent / "csrc"
SOURCES = (CSRC / "kernels.cc", CSRC / "layers.cc", CSRC / "conv.cc")
HEADERS = (CSRC / "aot.h", CSRC / "parallel.h", CSRC / "timing.h")
# -ffp-contract=off: the Adam kernel's rounding must be exactly the one written (no compiler-made FMAs).
# -Wno-psabi: csrc/parallel.h's vector types pass between inlined helpers only, so GCC's note that their ABI
# differs between instruction sets does not apply.
FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-pthread", "-ffp-contract=off", "-fno-math-errno", "-Wno-psabi")
LIBS = ("-ldl",)

_cache: dict[tuple[str, str], str | None] = {}
_conv_cache: dict[str | None, bool] = {}


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
    """Compile csrc/*.cc (if not already cached) into one library and return its path; RuntimeError says why not."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ / clang++)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{cxx} --version failed: {exc}") from None
    digest = hashlib.sha256(b"".join(src.read_bytes() for src in SOURCES + HEADERS) + version.encode()
                            + " ".join(FLAGS + LIBS).encode()).hexdigest()[:16]
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
        proc = subprocess.run([cxx, *FLAGS, "-o", tmp, *map(str, SOURCES), *LIBS], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"{cxx} failed on {', '.join(map(str, SOURCES))}:\n{proc.stderr.strip()[-2000:]}")
        os.replace(tmp, lib)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"{cxx} could not compile {', '.join(map(str, SOURCES))}: {exc}") from None
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


def _private_onednn(out_dir: Path) -> Path:
    """A copy of MindSpore's bundled oneDNN in the kernel cache (see csrc/conv.cc for why a copy)."""
    import mindspore as ms

    src = Path(ms.__file__).parent / "lib" / "libdnnl.so.3"
    if not src.exists():
        raise RuntimeError(f"MindSpore's oneDNN is not at {src}")
    stat = src.stat()
    tag = hashlib.sha256(f"{src.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    dst = out_dir / f"libdnnl-{tag}.so"
    if dst.exists():
        return dst
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=dst.stem + ".", suffix=".so.tmp", dir=out_dir)
        os.close(fd)
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        raise RuntimeError(f"cannot copy {src} into the kernel cache {out_dir}: {exc}") from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return dst


def convolutions() -> bool:
    """Whether singan_ms's convolutions run through csrc/conv.cc in this process (warned once when they cannot)."""
    lib = library()
    if lib in _conv_cache:
        return _conv_cache[lib]
    ok = False
    if lib is not None:
        try:
            onednn = _private_onednn(Path(lib).parent)
            threads = int(os.environ.get("OMP_NUM_THREADS") or 0)
            # The same path MindSpore's AOT loader opens, so both see one copy of the library's state.
            rc = ctypes.CDLL(lib).SinganConvInit(str(onednn).encode(), max(threads, 0))
            if rc != 0:
                raise RuntimeError(f"{onednn} could not be loaded (SinganConvInit returned {rc})")
            ok = True
        except (RuntimeError, OSError, ValueError) as exc:
            warnings.warn(f"singan_ms: compiled convolutions unavailable ({exc}); using MindSpore's Conv2D "
                          "instead, same function, slower (docs/benchmarks.md)", RuntimeWarning, stacklevel=2)
    _conv_cache[lib] = ok
    return ok


def kernel_timing(on: bool) -> dict[str, tuple[float, int]]:
    """Start (zeroing) or stop the compiled kernels' own timing (csrc/timing.h, for benchmarks); returns the
    totals so far as {kernel: (milliseconds, calls)}. Empty when the kernels are not in use."""
    lib = library()
    if lib is None:
        return {}
    so = ctypes.CDLL(lib)
    so.SinganKernelTime.restype = ctypes.c_char_p
    out = {}
    ns, calls = ctypes.c_int64(), ctypes.c_int64()
    for k in range(so.SinganKernelCount()):
        name = so.SinganKernelTime(k, ctypes.byref(ns), ctypes.byref(calls))
        out[name.decode()] = (ns.value / 1e6, calls.value)
    so.SinganKernelTiming(int(on))
    return out


def custom(name: str, out_shape, out_dtype, bprop=None, key: str = ""):  # noqa: ANN001 - MindSpore's infer callables
    """The AOT custom operator `name` of the compiled kernels (library() must not be None). `key` must differ
    between operators of one `name` whose out_shape functions differ: MindSpore caches inferred shapes by
    operator name and attributes, not by the Python function (a stride-2 convolution was given the stride-1
    one's output shape).

    Hand Parameters to these operators as `param.value()`: a bare Parameter reaches the kernel as the live
    buffer, unordered against in-place updates in the same graph (the train step's D update raced the G step's
    reads of D: generator gradients 1.5e-4 off, deterministically); value() is MindSpore's ordered Load."""
    from mindspore import ops

    op = ops.Custom(f"{library()}:{name}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot", bprop=bprop)
    if key:
        op.add_prim_attr("singan_ms_key", key)
    return op
