"""bench/fidelity.py at toy size: every run, the conversion and both floors complete and write their outputs,
the runs see identical inputs, the first training step of MindSpore and the first MindSpore step after the
conversion agree with PyTorch to float noise; and the bench's step loop feeds exactly the batches, draws and
learning rates that both trainers' own loops feed."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from bench import machine
from bench.fidelity import (
    ARM_RESULT,
    DEHAZED_FILE,
    PROBE_FILE,
    REFERENCE,
    Position,
    Recorder,
    Settings,
    data_dirs,
    dataset_for,
    drive,
    input_digest,
    run_experiment,
)
from parity.tolerances import tolerance
from singan_common.haze import write_benchmark
from tests.ms_tolerances import LOSS_ATOL

# The smallest model with every layer kind (and NCE taps in the encoder, the blocks and the decoder), on 32 px
# crops: 4 steps, converted after 2; about a minute on 2 busy cores, most of it MindSpore's graph compile.
TOY = Settings(steps=4, convert_step=2, image_size=48, crop_size=32, load_size=36, ngf=8, ndf=8, n_blocks=2,
               num_patches=16, floors=("threads", "isa", "fp64"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out = tmp_path_factory.mktemp("fidelity")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run_experiment(TOY, out / "work", json_path=out / "fidelity.json", plots=out / "plots" / "fig",
                                quiet=True, jobs=2)
    return out, report


def scale_tol(kind: str, reference: np.ndarray) -> float:
    """parity's allclose bound for `reference`: atol + rtol * max |reference|."""
    tol = tolerance("CPU", "fp32", kind)
    return tol.atol + tol.rtol * float(np.abs(reference).max())


def test_every_run_writes_its_outputs(experiment):
    out, report = experiment
    assert json.loads((out / "fidelity.json").read_text())["settings"]["steps"] == TOY.steps
    assert len(report["source"]["sha256"]) == 64 and "changed_during_run" in report["source"]
    for name in ("fig-losses.png", "fig-divergence.png"):
        data = (out / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    work = out / "work"
    assert (work / "converted" / "train_state.ckpt").is_file()
    for arm in TOY.arms:
        for name in (ARM_RESULT, PROBE_FILE, DEHAZED_FILE):
            assert (work / arm / name).is_file(), (arm, name)
    # every run saw the reference's batch and draws at every step it ran (the report refuses otherwise)
    k = TOY.convert_step
    assert report["inputs"]["steps_checked"] == {**{a: TOY.steps for a in (REFERENCE, *TOY.from_seed)},
                                                 **{a: TOY.steps - k for a in TOY.from_k}}
    for arm in TOY.from_k:
        assert report["runs"][arm]["resumed_at"]["step"] == k
    held_out = report["held_out"]
    assert len(held_out) == TOY.n_test
    for arm in ("hazy input", *TOY.arms):
        s = report["scores"][arm]
        assert s["count"] == TOY.n_test and all(np.isfinite(s[m]) for m in ("psnr", "ssim", "ciede2000")), arm
    for arm in TOY.compared:
        assert report["deltas_vs_torch"][arm]["psnr"] == pytest.approx(
            report["scores"][arm]["psnr"] - report["scores"][REFERENCE]["psnr"])
    # the learning-rate schedule decays within the run, identically everywhere
    lrs = {arm: [r["lr"] for r in report["losses"][arm]] for arm in TOY.arms}
    assert lrs["torch"][0] > lrs["torch"][-1]
    assert all(lrs[a] == lrs["torch"] for a in TOY.from_seed)
    assert all(lrs[a] == lrs["torch"][k:] for a in TOY.from_k)


def test_mindspore_starts_and_first_step_at_float_noise(experiment):
    _, report = experiment
    out = experiment[0] / "work"
    ref = np.load(out / REFERENCE / PROBE_FILE)
    ms = np.load(out / "ms" / PROBE_FILE)
    # Step 0: the same seeded weights, forward only; step 1: one whole training step from identical inputs.
    assert np.abs(ms[0] - ref[0]).max() <= scale_tol("network", ref[0])
    assert np.abs(ms[1] - ref[1]).max() <= scale_tol("train_fn", ref[1])
    first = report["losses"]
    for key in ("loss_D", "loss_G", "loss_NCE", "loss_perceptual", "loss_MMD"):
        a, b = first[REFERENCE][0][key], first["ms"][0][key]
        assert abs(a - b) <= LOSS_ATOL * max(1.0, abs(a)), (key, a, b)
    div = {r["step"]: r for r in report["divergence"]["ms"]}
    assert div[1]["max_abs"] == pytest.approx(float(np.abs(ms[1].astype(np.float64) - ref[1]).max()))


def test_converted_run_continues_torch(experiment):
    out, report = experiment
    work, k = out / "work", TOY.convert_step
    ref = np.load(work / REFERENCE / PROBE_FILE)
    conv = np.load(work / "converted" / PROBE_FILE)
    # conv[0]: G converted at step k (the converter's own verification tolerance); conv[1]: after the first
    # MindSpore step on torch's Adam state
    assert np.abs(conv[0] - ref[k]).max() <= scale_tol("network", ref[k])
    assert np.abs(conv[1] - ref[k + 1]).max() <= scale_tol("train_fn", ref[k + 1])
    torch_row, ms_row = report["losses"][REFERENCE][k], report["losses"]["converted"][0]
    assert torch_row["step"] == ms_row["step"] == k + 1
    for key in ("loss_D", "loss_G", "loss_NCE", "loss_perceptual", "loss_MMD"):
        a, b = torch_row[key], ms_row[key]
        assert abs(a - b) <= LOSS_ATOL * max(1.0, abs(a)), (key, a, b)
    assert report["floor"]["converted_at_k_max_abs"] == pytest.approx(float(np.abs(conv[0] - ref[k]).max()),
                                                                      rel=1e-6)


def test_floors_are_pytorch_against_itself(experiment):
    out, report = experiment
    runs = report["runs"]
    assert runs["torch"]["threads"] == TOY.ref_threads and runs["torch-threads"]["threads"] == TOY.floor_threads
    assert runs["torch-isa"]["onednn_max_cpu_isa"] == "AVX"
    assert runs["torch"]["onednn_max_cpu_isa"] == os.environ.get("ONEDNN_MAX_CPU_ISA")
    work = out / "work"
    ref = np.load(work / REFERENCE / PROBE_FILE)
    isa = np.load(work / "torch-isa" / PROBE_FILE)
    assert np.abs(isa[0] - ref[0]).max() <= scale_tol("network", ref[0])  # same weights, other kernels
    if machine().get("fma"):
        # oneDNN without FMA rounds differently where the reference used FMA: the floor is real, not zero.
        assert max(r["max_abs"] for r in report["divergence"]["torch-isa"]) > 0
    for floor in TOY.floors:
        f = report["floor"]["from_seed"][floor]
        assert f["steps_compared"] == TOY.steps and 0 <= f["steps_port_above"] <= TOY.steps
        f = report["floor"]["from_k"][floor]
        assert f["steps_compared"] == TOY.steps - TOY.convert_step
    # the resumed floors start from the reference's own step-k weights: G(probe) there differs by one forward
    # pass's rounding at most
    k = TOY.convert_step
    for floor in TOY.floors:
        resumed = np.load(work / f"resumed-{floor}" / PROBE_FILE)
        assert np.abs(resumed[0] - ref[k]).max() <= scale_tol("network", ref[k]), floor
    # the float64 floor: the same weights computed in float64 differ from float32 by its rounding, never by more
    fp64 = {r["step"]: r["max_abs"] for r in report["divergence"]["torch-fp64"]}
    assert 0 < fp64[0] <= scale_tol("network", ref[0])
    assert report["runs"]["torch-fp64"]["dtype"] == "torch.float64"


def digests_of_trainer(framework: str, tmp_path, s: Settings, root) -> list[tuple[str, float]]:
    """(input digest, G's learning rate) of every step the framework's own train() runs; optimize is replaced
    by a recorder, so the loop, the dataset and the draws are the trainer's and nothing is computed."""
    d = data_dirs(root)
    seen: list[tuple[str, float]] = []
    if framework == "torch":
        from singan_torch import model as mod
        from singan_torch.train import train
    else:
        from singan_ms import model as mod
        from singan_ms.train import train

    def record(self, hazy, clear, draws):
        lr = self.optimizer_G.param_groups[0]["lr"] if framework == "torch" else float(self.optimizer_G.lr.asnumpy())
        seen.append((input_digest(hazy, clear, draws), lr))
        return {k: 0.0 for k in mod.LOSS_NAMES}

    cls = mod.SinGANDehazeModel
    original = cls.optimize
    cls.optimize = record
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            train(tmp_path / framework, d["hazy"], d["clear"], s.model_config(), s.train_config(2),
                  progress_bar=False)
    finally:
        cls.optimize = original
    return seen


def test_bench_loop_feeds_what_both_trainers_feed(tmp_path):
    import mindspore as ms

    from singan_torch.model import SinGANDehazeModel, draws_for

    s = Settings(steps=5, convert_step=2, image_size=40, crop_size=32, load_size=36, ngf=4, ndf=4, n_blocks=1,
                 num_patches=8)
    root = tmp_path / "bench"
    # n_test 2 leaves 2 hazy and 2 clear photos: 2 batches per epoch, so 5 steps cross epochs and the decay
    write_benchmark(data_dirs(root)["root"], seed=s.seed, size=s.image_size, n_test=s.n_test)
    dataset = dataset_for(s, root)
    assert dataset.num_batches(1) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SinGANDehazeModel(s.model_config(), s.train_config(2))
    bench: list[tuple[str, float]] = []
    model.optimize = lambda hazy, clear, draws: bench.append((input_digest(hazy, clear, draws),
                                                              model.optimizer_G.param_groups[0]["lr"])) or {}
    drive(model, dataset, draws_for, Position(), s.steps, lambda: np.zeros(1), Recorder())
    assert len(bench) == s.steps and len({d for d, _ in bench}) == s.steps
    assert len({lr for _, lr in bench}) > 1  # the decay is inside the run
    mode = ms.get_context("mode")
    try:
        assert digests_of_trainer("torch", tmp_path, s, root) == bench
        assert digests_of_trainer("ms", tmp_path, s, root) == bench
    finally:
        ms.set_context(mode=mode)  # singan_ms.train switches to graph mode; later tests in this process expect theirs
