"""CI runs the parity harness (`pytest parity/`) through this test, in subprocesses, and checks the golden
record/replay path with torch blocked from import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A prelude that makes `import torch` fail, as on a MindSpore-only (Ascend) host.
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test (MindSpore-only host)")
        return None
sys.meta_path.insert(0, _NoTorch())
import pytest
sys.exit(pytest.main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "GLOG_v": "3", "PYTHONPATH": str(ROOT)}


def test_parity_harness_passes_on_cpu(tmp_path):
    """The whole harness (about 1.5 minutes on 2 cores) must pass and write its report."""
    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "pytest", "parity/", "--device", "CPU", "-q", "-p",
                           "no:cacheprovider", "--report-dir", str(report)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "report written to" in proc.stdout
    data = json.loads((report / "report.json").read_text())
    assert data["passed"] and len(data["cases"]) > 40
    assert (report / "report.md").is_file() and (report / "generator_layers.png").is_file()


def test_unknown_device_fails_not_skips(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "parity/", "--device", "TPU", "-q", "-x", "-p",
                           "no:cacheprovider", "-k", "relu and 16x16", "--report-dir", str(tmp_path)], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "parity set-up failed" in proc.stdout and "TPU" in proc.stdout
    assert " skipped" not in proc.stdout


@pytest.mark.parametrize("select", ["conv_transpose_s2", "patchnce_uniform", "adam"])
def test_golden_record_then_replay_without_torch(tmp_path, select):
    golden = tmp_path / "golden.safetensors"
    rec = subprocess.run([sys.executable, "-m", "parity", "record", "--out", str(golden), "-k", select], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    replay = subprocess.run([sys.executable, "-c", BLOCK_TORCH, "parity/", "--device", "CPU", "-q", "-p",
                             "no:cacheprovider", "--golden", str(golden), "-k", select, "--report-dir",
                             str(tmp_path / "report")], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=300)
    assert replay.returncode == 0, replay.stdout[-4000:] + replay.stderr[-2000:]
    last = replay.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last, last
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["meta"]["reference"].startswith("golden")
