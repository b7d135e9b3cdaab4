"""Dehazing benchmark: images per second at 512x512 and peak RSS of a tiled 12-megapixel photo.

Each measurement runs in a fresh subprocess so peak RSS belongs to that job alone. The generator is the
default SinGAN-Dehaze G (stride2, 9 blocks) with seeded weights; the photo is scikit-image's astronaut,
resized to 4000x3000. Results go to stdout as markdown rows for docs/benchmarks.md.

    python bench/dehaze.py --framework torch ms [ms-operators] --tile 512 --overlap 32 [--jobs tiled_12mp throughput]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import VARIANTS, variant  # noqa: E402


def worker(framework: str, job: str, tile: int, overlap: int, workdir: Path) -> dict:
    """Runs inside the subprocess; reports its own peak RSS (the whole process: framework runtime included)."""
    result = measure(framework, job, tile, overlap, workdir)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def measure(framework: str, job: str, tile: int, overlap: int, workdir: Path) -> dict:
    import numpy as np

    from singan_common.config import ModelConfig, RunConfig
    from singan_common.dehazing import DehazeOptions, dehaze_files
    from singan_common.images import resize, write_image

    run = workdir / "run"
    if framework == "torch":
        import torch

        from singan_torch.dehaze import generator_fn, load_generator
        from singan_torch.networks import define_G

        run.mkdir(exist_ok=True)
        torch.save(define_G(ModelConfig(), 0).state_dict(), run / "latest_net_G.pth")
    else:
        import mindspore as ms

        from singan_ms.dehaze import generator_fn, load_generator
        from singan_ms.device import setup
        from singan_ms.networks import define_G

        setup("CPU")
        run.mkdir(exist_ok=True)
        ms.save_checkpoint(define_G(ModelConfig(), 0), str(run / "latest_net_G.ckpt"))
    RunConfig(model=ModelConfig()).save(run / "run_config.json")
    net, _ = load_generator(run)
    fn = generator_fn(net)
    import skimage.data

    photo = skimage.data.astronaut().astype(np.float32) / 255.0
    if job == "throughput":
        x = ((resize(photo, (512, 512)).transpose(2, 0, 1)[None] - 0.5) / 0.5).astype(np.float32)
        fn(x)  # warm-up (graph compile / allocator)
        n, t0 = 5, time.perf_counter()
        for _ in range(n):
            fn(x)
        return {"images_per_s": n / (time.perf_counter() - t0)}
    big = resize(photo, (4000, 3000))
    src = workdir / "in"
    write_image(src / "photo12mp.png", big)
    del big
    t0 = time.perf_counter()
    dehaze_files([src / "photo12mp.png"], workdir / "out", fn,
                 DehazeOptions(tile=tile, tile_overlap=overlap), progress=False)
    return {"seconds": time.perf_counter() - t0}


def run_job(name: str, job: str, tile: int, overlap: int) -> dict:
    framework, env = variant(name)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        code = (f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.dehaze import worker; "
                f"from pathlib import Path; r = worker({framework!r}, {job!r}, {tile}, {overlap}, Path({tmp!r})); "
                f"Path({str(out)!r}).write_text(json.dumps(r))")
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env)
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", nargs="+", choices=tuple(VARIANTS), default=["torch", "ms"])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--jobs", nargs="+", choices=("tiled_12mp", "throughput"), default=["tiled_12mp", "throughput"])
    a = p.parse_args(argv)
    print("| framework | job | result | peak RSS (MiB) |")
    print("|---|---|---|---|")
    for fw in a.framework:
        for job in a.jobs:
            r = run_job(fw, job, a.tile, a.overlap)
            value = (f"{r['images_per_s']:.2f} img/s at 512x512" if job == "throughput"
                     else f"{r['seconds']:.1f} s for 4000x3000, tile {a.tile}, overlap {a.overlap}")
            print(f"| {fw} | {job} | {value} | {r['peak_rss_mib']:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
