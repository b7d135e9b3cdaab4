"""The parity harness catches real porting faults: each fault below is built into a MindSpore cell here (never
in singan_ms), the case FAILS, and the report names the layer where the frameworks part."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mindspore")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def pynative():
    import mindspore as ms
    import torch

    from singan_ms.device import setup

    before = ms.get_context("mode")
    setup("CPU", mode="pynative")  # forward hooks need PyNative
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see parity/conftest.py: OpenMP pools of both frameworks fight otherwise
    yield
    torch.set_num_threads(threads)
    ms.set_context(mode=before)


def _run_with_cell(case_id: str, cell, tmp_path):
    from parity.cases import Context, _module_port, case_by_id
    from parity.report import write_report
    from parity.runner import judge, reference

    case = case_by_id(case_id)
    ctx = Context()
    record = reference(case, ctx)
    result = judge(case, record, _module_port(case, ctx, record, cell=cell), "CPU", "fp32")
    write_report([result], tmp_path, {"device": "CPU", "fault": "injected"})
    report = json.loads((tmp_path / "report.json").read_text())["cases"][0]
    return result, report, (tmp_path / "report.md").read_text()


def test_wrong_batchnorm_momentum_is_caught(pynative, tmp_path, monkeypatch):
    """torch's momentum 0.1 passed to MindSpore unconverted (MindSpore weighs the running value: 1 - m)."""
    from mindspore import nn

    from parity.cases import build_ms_module, case_by_id
    from singan_ms import networks as mn

    def wrong_norm(cfg, channels):
        return nn.BatchNorm2d(channels, momentum=cfg.bn_momentum, eps=1e-5, affine=True)

    case_id = "network/G_batchnorm_train_then_eval@32x32"
    monkeypatch.setattr(mn, "make_norm", wrong_norm)
    cell = build_ms_module(case_by_id(case_id))
    monkeypatch.undo()
    result, report, md = _run_with_cell(case_id, cell, tmp_path)
    assert not result.passed
    # The train-mode pass agrees (batch statistics); the eval pass parts at the first BatchNorm, model.2.
    assert result.first_failure.name == "model.2#1", result.message()
    assert report["first_failure"]["name"] == "model.2#1" and "model.2#1" in md
    bad_state = {c.name for c in result.comparisons if not c.passed and c.name.startswith("state/")}
    assert "state/model.2.running_mean" in bad_state and "state/model.2.running_var" in bad_state


def test_one_pixel_shifted_transposed_conv_is_caught(pynative, tmp_path, monkeypatch):
    """Padding (0, 1, 0, 1) instead of (1, 0, 1, 0): same output size, content shifted by one pixel."""
    from mindspore import nn

    from parity.cases import build_ms_module, case_by_id
    from singan_ms import networks as mn

    real_build = mn.build_layer

    def shifted(cfg, layer, in_channels):
        if layer.kind == "conv_transpose":
            return nn.Conv2dTranspose(in_channels, layer.out_channels, layer.kernel, stride=layer.stride,
                                      pad_mode="pad", padding=(0, 1, 0, 1), has_bias=layer.bias)
        return real_build(cfg, layer, in_channels)

    case_id = "network/G_stride2@32x32"
    monkeypatch.setattr(mn, "build_layer", shifted)
    cell = build_ms_module(case_by_id(case_id))
    monkeypatch.undo()
    result, report, md = _run_with_cell(case_id, cell, tmp_path)
    assert not result.passed
    assert result.first_failure.name == "model.19", result.message()  # the first transposed conv (9 blocks)
    assert report["first_failure"]["name"] == "model.19" and "| model.19 |" in md


def test_raw_mindspore_tanh_is_caught(pynative, tmp_path):
    """MindSpore's own tanh (errs ~1e-4 for |x| in [4, 6)) instead of singan_ms' accurate one."""
    from mindspore import nn

    result, report, md = _run_with_cell("layer/tanh@16x16", nn.Tanh(), tmp_path)
    assert not result.passed
    assert result.first_failure.name == "output", result.message()
    assert result.first_failure.max_abs > 1e-5  # far beyond the 1e-5 layer tolerance, not a borderline call
    assert "**FAIL**" in md and report["first_failure"]["name"] == "output"


def test_engine_names_first_failing_submodule_in_a_sequence(pynative):
    """The generic engine on a plain Sequential/SequentialCell pair: a wrong activation in the middle is the
    first failure, not the output that inherits it."""
    import numpy as np
    import torch
    from mindspore import nn as mnn

    from parity.engine import compare_modules, copy_torch_weights_to_ms
    from parity.tolerances import tolerance

    t = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 4))
    m = mnn.SequentialCell([mnn.Dense(6, 5), mnn.Sigmoid(), mnn.Dense(5, 4)])
    copy_torch_weights_to_ms(t, m)
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    result = compare_modules(t, m, [x], tolerance("CPU", "fp32", "layer"))
    assert [c.name for c in result.comparisons] == ["0", "1", "2", "output"]
    assert result.comparisons[0].passed and result.first_failure.name == "1"
