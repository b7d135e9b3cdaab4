"""singan_ms.device's oneDNN handling, observed through oneDNN's own verbose log in a fresh process: MindSpore's
copy is capped at AVX2 and runs its optimised convolutions, torch's copy in the same process keeps the host's ISA,
and a user's own ONEDNN_MAX_CPU_ISA wins. (On an AVX-512 host MindSpore's uncapped oneDNN dispatches f32
convolutions to a nested reference kernel, 46x slower: docs/benchmarks.md.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench import machine

ROOT = Path(__file__).resolve().parents[1]

# MindSpore convolves first, then torch: each oneDNN prints its `info,cpu,isa:` line at its first primitive,
# so the first such line is MindSpore's and the second torch's.
SCRIPT = """
import os
import numpy as np
from singan_ms.device import setup
setup("CPU", "graph")
from mindspore import Tensor, ops
ops.conv2d(Tensor(np.ones((1, 64, 32, 32), np.float32)), Tensor(np.ones((64, 64, 3, 3), np.float32)),
           pad_mode="pad", padding=1).asnumpy()
print("ENV_AFTER_SETUP", os.environ.get("ONEDNN_MAX_CPU_ISA"), flush=True)
import torch
with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
    torch.nn.functional.conv2d(torch.ones(1, 64, 32, 32), torch.ones(64, 64, 3, 3), padding=1)
"""


def run(extra_env: dict[str, str]) -> tuple[list[str], list[str], str]:
    """(isa lines in order, MindSpore's convolution exec lines, the env value printed after setup)."""
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    env.update(PYTHONPATH=str(ROOT), GLOG_v="3", ONEDNN_VERBOSE="1", **extra_env)
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    isa = [line.split("isa:", 1)[1] for line in lines if ",info,cpu,isa:" in line]
    marker = next(i for i, line in enumerate(lines) if line.startswith("ENV_AFTER_SETUP"))
    ms_convs = [line for line in lines[:marker] if ",exec," in line and ",convolution," in line]
    return isa, ms_convs, lines[marker].split(" ", 1)[1]


def test_mindspore_capped_at_avx2_torch_not_and_environment_restored():
    isa, ms_convs, env_after = run({})
    assert len(isa) == 2, isa
    ms_isa, torch_isa = isa
    assert ms_isa.strip() == "Intel AVX2", ms_isa
    # The nested reference convolution shows up as "jit_uni_ncsp:conv+ref:any"; the capped copy uses gemm.
    assert ms_convs and not any("ncsp" in c or "ref" in c.split(",")[6] for c in ms_convs), ms_convs
    assert env_after == "None"
    if machine().get("avx512f"):
        assert "AVX-512" in torch_isa, torch_isa


def test_user_choice_of_isa_wins():
    isa, _, env_after = run({"ONEDNN_MAX_CPU_ISA": "SSE41"})
    assert "SSE4.1" in isa[0], isa
    assert env_after == "SSE41"
