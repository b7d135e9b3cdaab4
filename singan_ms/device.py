"""MindSpore device set-up in one place: target (CPU / GPU / Ascend), execution mode, log level, CPU kernels.

Call `setup()` once, before building networks. It is idempotent for the same arguments.

Why the CPU oneDNN handling looks the way it does (docs/benchmarks.md has the numbers):
MindSpore bundles its own oneDNN (mindspore/lib/libdnnl.so.3); torch links another copy statically. Both read
ONEDNN_MAX_CPU_ISA once, at their first primitive, and keep the value for the life of the process. On AVX-512
hosts MindSpore's copy picks a slow kernel unless the ISA is capped at AVX2, while the same cap slows torch's
copy. So `setup` sets the variable (only if the user has not), runs one tiny MindSpore convolution so that
MindSpore's oneDNN latches it, and then removes the variable again: a torch that starts later in the same
process sees the environment the user gave it, and a torch that already ran is unaffected (it latched before).
"""

from __future__ import annotations

import os

DEVICES = ("CPU", "GPU", "Ascend")
MODES = ("graph", "pynative")
# The ISA cap MindSpore's bundled oneDNN gets unless the user chose one.
MS_ONEDNN_ISA = "AVX2"

_state: dict[str, object] = {}


class DeviceError(RuntimeError):
    """A device that MindSpore cannot use here; the message says what is missing."""


def normalise_device(device: str) -> str:
    """'cpu' / 'gpu' / 'ascend' (any case) -> MindSpore's spelling; anything else is a clear error."""
    for d in DEVICES:
        if device.lower() == d.lower():
            return d
    raise DeviceError(f"singan_ms/device.py: unknown device {device!r}; choose one of {', '.join(DEVICES)}")


def setup(device: str = "CPU", mode: str = "graph", device_id: int = 0) -> str:
    """Configure MindSpore for `device` and `mode` ('graph' compiles whole steps; 'pynative' runs op by op,
    needed for forward hooks). Returns the device name used."""
    device = normalise_device(device)
    if mode not in MODES:
        raise DeviceError(f"singan_ms/device.py: unknown mode {mode!r}; choose graph or pynative")
    # MindSpore's C++ side reads GLOG_v when it loads, so this must precede the import.
    os.environ.setdefault("GLOG_v", "3")
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    try:
        ms.set_device(device, device_id)
    except (RuntimeError, ValueError) as exc:
        raise DeviceError(f"singan_ms/device.py: MindSpore cannot use {device}: {exc}. GPU needs the CUDA 11 "
                          "runtime MindSpore 2.x is built for; Ascend needs Huawei's CANN.") from None
    except Exception:  # noqa: BLE001 - set_device may only be called once per process; same device is fine
        if _state.get("device") not in (None, device):
            raise DeviceError(f"singan_ms/device.py: MindSpore already runs on {_state['device']}; one device "
                              "per process") from None
    if device == "CPU":
        _latch_cpu_isa()
    _state.update(device=device, mode=mode)
    return device


def _latch_cpu_isa() -> None:
    """Make MindSpore's oneDNN read ONEDNN_MAX_CPU_ISA now, then restore the environment (see module doc)."""
    if _state.get("isa_latched"):
        return
    import numpy as np
    from mindspore import Tensor, ops

    user_set = "ONEDNN_MAX_CPU_ISA" in os.environ
    if not user_set:
        os.environ["ONEDNN_MAX_CPU_ISA"] = MS_ONEDNN_ISA
    try:
        x = Tensor(np.zeros((1, 1, 4, 4), np.float32))
        ops.conv2d(x, Tensor(np.ones((1, 1, 3, 3), np.float32))).asnumpy()
    finally:
        if not user_set:
            del os.environ["ONEDNN_MAX_CPU_ISA"]
    _state["isa_latched"] = True


def current() -> dict[str, object]:
    """What setup() chose (empty before the first call)."""
    return dict(_state)
