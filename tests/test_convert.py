"""convert: every input kind both ways from the command line, verified; bad inputs refused with no output."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convert.__main__ import main
from singan_common.config import ModelConfig, RunConfig
from singan_torch.networks import VGG16Features, define_D, define_F, define_G

ROOT = Path(__file__).resolve().parents[1]
SMALL = ModelConfig(ngf=8, ndf=8, n_blocks=2)


def save_run(folder: Path, cfg: ModelConfig, with_config: bool = False, prefix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, define in (("G", define_G), ("D", define_D), ("F", define_F)):
        state = {prefix + k: v for k, v in define(cfg, 7).state_dict().items()}
        torch.save(state, folder / f"latest_net_{name}.pth")
    if with_config:
        RunConfig(model=cfg).save(folder / "run_config.json")
    return folder


def load_pth(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_same_state(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("variant", ["stride2", "antialias"])
def test_cut_run_directory_round_trip_is_bit_identical(tmp_path, variant, capsys):
    """A CUT run directory (no config: variant and sizes read off the keys) -> MindSpore -> PyTorch."""
    cfg = ModelConfig(ngf=8, ndf=8, n_blocks=2, variant=variant)
    run = save_run(tmp_path / "cut_run", cfg)
    assert main(["torch2ms", str(run)]) == 0
    out = capsys.readouterr().out
    assert "G output" in out and "ok" in out and "FAIL" not in out
    ms_dir = tmp_path / "cut_run_ms"
    assert {p.name for p in ms_dir.iterdir()} == {"latest_net_G.ckpt", "latest_net_D.ckpt", "latest_net_F.ckpt",
                                                  "run_config.json"}
    assert RunConfig.load(ms_dir / "run_config.json").model.variant == variant
    assert main(["ms2torch", str(ms_dir), "-o", str(tmp_path / "back")]) == 0
    for name in "GDF":
        assert_same_state(load_pth(run / f"latest_net_{name}.pth"),
                          load_pth(tmp_path / "back" / f"latest_net_{name}.pth"))


def test_ms_to_torch_to_ms_is_bit_identical(tmp_path):
    import mindspore as ms

    run = save_run(tmp_path / "run", SMALL, with_config=True)
    assert main(["torch2ms", str(run), "-o", str(tmp_path / "ms1")]) == 0
    assert main(["ms2torch", str(tmp_path / "ms1"), "-o", str(tmp_path / "pt")]) == 0
    assert main(["torch2ms", str(tmp_path / "pt"), "-o", str(tmp_path / "ms2")]) == 0
    for name in "GDF":
        a = ms.load_checkpoint(str(tmp_path / "ms1" / f"latest_net_{name}.ckpt"))
        b = ms.load_checkpoint(str(tmp_path / "ms2" / f"latest_net_{name}.ckpt"))
        assert list(a) == list(b)
        for k in a:
            assert np.array_equal(a[k].asnumpy(), b[k].asnumpy()), k


def test_batchnorm_momentum_and_counter_survive(tmp_path):
    """norm=batch: gamma/beta/moving_* renamed, momentum converted to 1 - m inside singan_ms, and
    num_batches_tracked (which MindSpore has no slot for) restored on the way back."""
    cfg = ModelConfig(ngf=8, ndf=8, n_blocks=2, norm="batch", bn_momentum=0.3)
    run = tmp_path / "run"
    run.mkdir()
    g = define_G(cfg, 1)
    g.train()
    with torch.no_grad():
        g(torch.rand(2, 3, 32, 32))  # move running stats and the counter away from their initial values
    torch.save(g.state_dict(), run / "latest_net_G.pth")
    RunConfig(model=cfg).save(run / "run_config.json")
    assert main(["torch2ms", str(run / "latest_net_G.pth"), "-o", str(tmp_path / "ms")]) == 0
    import mindspore as ms

    ck = ms.load_checkpoint(str(tmp_path / "ms" / "latest_net_G.ckpt"))
    assert "model.2.gamma" in ck and "model.2.moving_variance" in ck and "model.2.weight" not in ck
    np.testing.assert_array_equal(ck["model.2.moving_mean"].asnumpy(), g.model[2].running_mean.numpy())
    # The momentum travels in the config; singan_ms must update running stats as torch does with it.
    from mindspore import Tensor

    from singan_ms.networks import define_G as ms_define_G

    x = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    t_net, m_net = define_G(cfg, 1).train(), ms_define_G(cfg, 1)
    m_net.set_train(True)
    with torch.no_grad():
        t_net(torch.from_numpy(x))
    m_net(Tensor(x))
    np.testing.assert_allclose(m_net.model[2].moving_mean.asnumpy(), t_net.model[2].running_mean.numpy(),
                               atol=1e-7)
    np.testing.assert_allclose(m_net.model[2].moving_variance.asnumpy(), t_net.model[2].running_var.numpy(),
                               rtol=1e-6)
    assert (tmp_path / "ms" / "latest_net_G.ckpt.extra.json").is_file()
    assert main(["ms2torch", str(tmp_path / "ms" / "latest_net_G.ckpt"), "-o", str(tmp_path / "pt")]) == 0
    assert_same_state(g.state_dict(), load_pth(tmp_path / "pt" / "latest_net_G.pth"))


def test_dataparallel_safetensors_and_vgg_inputs(tmp_path):
    from safetensors.torch import save_file

    dp = save_run(tmp_path / "dp", SMALL, prefix="module.")
    assert main(["torch2ms", str(dp / "latest_net_G.pth"), "-o", str(tmp_path / "o1"), "--format",
                 "safetensors"]) == 0
    from safetensors import safe_open

    with safe_open(str(tmp_path / "o1" / "latest_net_G.safetensors"), "np") as f:
        assert "model.1.weight" in f.keys() and json.loads(f.metadata()["singan_run_config"])["model"]["ngf"] == 8
    st = tmp_path / "st"
    st.mkdir()
    save_file(define_D(SMALL, 2).state_dict(), str(st / "net_D.safetensors"))
    assert main(["torch2ms", str(st / "net_D.safetensors"), "-o", str(tmp_path / "o2")]) == 0
    assert (tmp_path / "o2" / "net_D.ckpt").is_file()
    import torchvision

    full = torchvision.models.vgg16(weights=None).state_dict()  # classifier and deep features are dropped
    torch.save(full, tmp_path / "vgg16.pth")
    assert main(["torch2ms", str(tmp_path / "vgg16.pth"), "-o", str(tmp_path / "o3")]) == 0
    import mindspore as ms

    ck = ms.load_checkpoint(str(tmp_path / "o3" / "vgg16.ckpt"))
    assert set(ck) == set(VGG16Features().state_dict())


def test_variant_flag_must_agree(tmp_path, capsys):
    run = save_run(tmp_path / "r", SMALL)
    assert main(["torch2ms", str(run), "--variant", "antialias"]) == 2
    assert "stride2" in capsys.readouterr().err
    assert not (tmp_path / "r_ms").exists()


def test_malicious_pickle_is_refused_not_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    with (tmp_path / "latest_net_G.pth").open("wb") as f:
        pickle.dump({"model.1.weight": Evil()}, f)
    assert main(["torch2ms", str(tmp_path / "latest_net_G.pth"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "latest_net_G.pth" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = define_G(SMALL, 0).state_dict()
    cases = {}
    d = tmp_path / "truncated"
    d.mkdir()
    torch.save(good, d / "latest_net_G.pth")
    raw = (d / "latest_net_G.pth").read_bytes()
    (d / "latest_net_G.pth").write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = (d / "latest_net_G.pth", "truncated or corrupt")
    for name, state, msg in (
            ("missing", {k: v for k, v in good.items() if k != "model.4.bias"}, "missing keys: model.4.bias"),
            ("unexpected", {**good, "model.99.weight": torch.zeros(1)}, "unexpected keys: model.99.weight"),
            ("shape", {**good, "model.4.weight": torch.zeros(16, 8, 5, 5)}, "shape mismatch: model.4.weight")):
        d = tmp_path / name
        d.mkdir()
        torch.save(state, d / "latest_net_G.pth")
        RunConfig(model=SMALL).save(d / "run_config.json")
        cases[name] = (d / "latest_net_G.pth", msg)
    d = tmp_path / "alien"
    d.mkdir()
    torch.save({"encoder.weight": torch.zeros(3, 3)}, d / "thing.pth")
    cases["alien"] = (d / "thing.pth", "does not look like")
    return cases


@pytest.mark.parametrize("case", ["truncated", "missing", "unexpected", "shape", "alien"])
def test_bad_inputs_give_one_clear_error_and_no_file(tmp_path, case, capsys):
    path, message = bad_inputs(tmp_path)[case]
    out = tmp_path / "out"
    assert main(["torch2ms", str(path), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_no_overwrite_without_force(tmp_path, capsys):
    run = save_run(tmp_path / "r", SMALL)
    assert main(["torch2ms", str(run / "latest_net_G.pth"), "-o", str(tmp_path / "o")]) == 0
    before = (tmp_path / "o" / "latest_net_G.ckpt").stat().st_mtime_ns
    assert main(["torch2ms", str(run / "latest_net_G.pth"), "-o", str(tmp_path / "o")]) == 2
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "o" / "latest_net_G.ckpt").stat().st_mtime_ns == before
    assert main(["torch2ms", str(run / "latest_net_G.pth"), "-o", str(tmp_path / "o"), "--force",
                 "--no-verify"]) == 0


def test_inspect_and_console_entry(tmp_path):
    run = save_run(tmp_path / "r", SMALL)
    result = subprocess.run([sys.executable, "-m", "convert", "inspect", str(run / "latest_net_D.pth")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "D (either names, stride2 variant)" in result.stdout
    assert "model.0.weight" in result.stdout and "(8, 3, 4, 4)" in result.stdout


def test_failed_verification_writes_nothing_and_names_the_layer(tmp_path, capsys, monkeypatch):
    """A port fault (here a tanh that is 0.1% off, standing in for any wrong layer) stops the conversion before
    anything is written, naming the first layer that parts."""
    from mindspore import ops

    import singan_ms.networks as msn

    monkeypatch.setattr(msn.Tanh, "construct", lambda self, x: ops.tanh(x) * 1.001)
    run = save_run(tmp_path / "r", SMALL)
    assert main(["torch2ms", str(run), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "verification failed" in err and "latest_net_G.pth" in err and "(tanh)" in err, err
    assert not (tmp_path / "o").exists()


def read_any(path: Path) -> dict[str, np.ndarray]:
    from convert.formats import read_tensors

    return read_tensors(path)[0]


@pytest.mark.parametrize("kind", ["antialias", "batch", "vgg16"])
def test_unverified_conversion_writes_what_the_verified_one_writes(tmp_path, kind):
    """--no-verify builds neither network's weights (MindSpore no_init_parameters, torch meta device); its
    files must still be the verified path's, bit for bit, both ways (filters rebuilt, counters restored,
    vgg16's classifier dropped), and a bad file must still be refused."""
    if kind == "vgg16":
        import torchvision

        src = tmp_path / "src" / "vgg16.pth"
        src.parent.mkdir()
        torch.save(torchvision.models.vgg16(weights=None).state_dict(), src)
    else:
        cfg = ModelConfig(ngf=8, ndf=8, n_blocks=2, variant="antialias") if kind == "antialias" else \
            ModelConfig(ngf=8, ndf=8, n_blocks=2, norm="batch", bn_momentum=0.3)
        src = save_run(tmp_path / "src", cfg, with_config=True)
    for flag, out in (([], "v_ms"), (["--no-verify"], "nv_ms")):
        assert main(["torch2ms", str(src), "-o", str(tmp_path / out), *flag]) == 0
    for flag, back in (([], "v_pt"), (["--no-verify"], "nv_pt")):
        ms_in = tmp_path / "v_ms" / "vgg16.ckpt" if kind == "vgg16" else tmp_path / "v_ms"
        assert main(["ms2torch", str(ms_in), "-o", str(tmp_path / back), *flag]) == 0
    for a_dir, b_dir in (("v_ms", "nv_ms"), ("v_pt", "nv_pt")):
        names = sorted(p.name for p in (tmp_path / a_dir).iterdir() if p.suffix in (".ckpt", ".pth"))
        assert names and names == sorted(p.name for p in (tmp_path / b_dir).iterdir() if p.suffix in (".ckpt", ".pth"))
        for name in names:
            a, b = read_any(tmp_path / a_dir / name), read_any(tmp_path / b_dir / name)
            assert list(a) == list(b), name
            for k in a:
                assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), (name, k)
    if kind == "vgg16":
        return
    bad = load_pth(src / "latest_net_G.pth")
    bad["model.1.weight"] = bad["model.1.weight"][:, :2]
    torch.save(bad, tmp_path / "bad_G.pth")
    with pytest.raises(Exception, match="shape mismatch"):
        from convert.core import convert

        convert(tmp_path / "bad_G.pth", "torch2ms", tmp_path / "bad_out", verify=False, config=src / "run_config.json")
    assert not (tmp_path / "bad_out").exists()
