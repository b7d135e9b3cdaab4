"""pytest set-up of the parity harness: `pytest parity/ --device CPU|GPU|Ascend [--golden FILE]
[--report-dir DIR]`.

PyTorch is the reference (CPU, or CUDA with --device GPU, TF32 off); MindSpore runs on --device in PyNative
mode (forward hooks need it; the training step still compiles with jit as in training). A device that is not
there FAILS the run with a message, never skips. With --golden, the reference comes from a recorded file and
torch is never imported (the Ascend path). Every run writes a report (parity/report.py) and says where.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from parity.cases import Context


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("parity")
    group.addoption("--device", default="CPU", help="MindSpore device: CPU (default), GPU or Ascend")
    group.addoption("--golden", default=None, help="replay a golden file recorded by `python -m parity record` "
                                                   "instead of running PyTorch (torch is not imported)")
    group.addoption("--report-dir", default="parity-report", help="where report.json/.md/.png go")


class Session:
    """Per-run state: the device set-up (done once, first) and the collected results."""

    def __init__(self, config: pytest.Config) -> None:
        self.device_arg = config.getoption("--device")
        self.golden_path = config.getoption("--golden")
        self.report_dir = Path(config.getoption("--report-dir"))
        self.results: list = []
        self.error: str | None = None
        self.meta: dict[str, str] = {}
        self.ctx = Context()
        self.golden = None
        self.dtype = "fp32"
        self.start = time.perf_counter()
        self.written: list[Path] = []

    def prepare(self) -> None:
        from parity.runner import prepare

        setup = prepare(self.device_arg, self.golden_path)
        self.ctx, self.dtype, self.golden = setup.ctx, setup.dtype, setup.golden
        self.meta.update(setup.meta)


_SESSION: Session | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _SESSION
    os.environ.setdefault("GLOG_v", "3")
    _SESSION = Session(config)
    config.parity_session = _SESSION  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def parity_session() -> Session:
    assert _SESSION is not None
    if _SESSION.error is None and not _SESSION.meta:
        try:
            _SESSION.prepare()
        except Exception as exc:  # noqa: BLE001 - every set-up failure must fail the tests, with its message
            _SESSION.error = f"{type(exc).__name__}: {exc}"
    if _SESSION.error is not None:
        pytest.fail(f"parity set-up failed: {_SESSION.error}", pytrace=False)
    return _SESSION


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    s = _SESSION
    if s is None or (not s.results and s.error is None):
        return
    from parity.report import write_report

    meta = {**s.meta, "wall_seconds": f"{time.perf_counter() - s.start:.1f}",
            "argv": " ".join(sys.argv[1:])}
    if s.error:
        meta["setup_error"] = s.error
    meta.setdefault("torch_device", s.ctx.torch_device)
    s.written = write_report(s.results, s.report_dir, meta)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    s = _SESSION
    if s is None or not s.written:
        return
    failed = [r for r in s.results if not r.passed]
    terminalreporter.section("parity report")
    terminalreporter.write_line(f"{len(s.results)} cases, {len(failed)} failed; report written to "
                                f"{', '.join(str(p) for p in s.written)}")
    for r in failed[:20]:
        terminalreporter.write_line(r.message())
