"""`python -m singan_ms train | dehaze`: the MindSpore side's command line (singan_torch's flags, plus --init).

msrun launches a script path, not a module, so data-parallel training runs this file directly:
`msrun --worker_num N ... singan_ms/__main__.py train ...` (docs/distributed.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

if not __package__:
    # Run as a script (msrun's way): Python put singan_ms/ itself first on sys.path, where its modules would
    # shadow top-level names (train, model, ...) and the project root is missing unless the project is installed.
    # The directory above this package is the project root in a checkout and site-packages in an install.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [str(_here.parent), *(p for p in sys.path if Path(p or ".").resolve() != _here)]

from singan_common import cli  # noqa: E402
from singan_common.dehazing import add_dehaze_args  # noqa: E402

PROG = "python -m singan_ms"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SinGAN-Dehaze in MindSpore")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on unpaired hazy / clear folders")
    t.add_argument("--hazy", help="folder of hazy images, or a dataset root with trainA/ (hazy) and trainB/ (clear)")
    t.add_argument("--clear", help="folder of clear images (omit when --hazy is a trainA/trainB root)")
    t.add_argument("--out", help="run directory for checkpoints and the loss log")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    t.add_argument("--init", metavar="DIR", help="start from latest_net_{G,D,F}.ckpt/.safetensors in DIR "
                                                 "(e.g. converted from PyTorch)")
    t.add_argument("--vgg-weights", metavar="FILE", help="torchvision vgg16 weights as .safetensors or .ckpt")
    t.add_argument("--device", default="CPU", help="CPU, GPU or Ascend (default CPU)")
    t.add_argument("--safetensors", action="store_true", help="write network checkpoints as .safetensors")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    cli.add_model_args(t)
    cli.add_train_args(t)

    add_dehaze_args(sub.add_parser("dehaze", help="dehaze an image or a folder with trained weights"))
    return parser


def cmd_train(a: argparse.Namespace) -> int:
    from singan_ms import distributed
    from singan_ms.train import train

    if a.resume:
        run_dir = Path(a.resume)
        if a.out and Path(a.out) != run_dir:
            raise ValueError("--resume continues in its own run directory; drop --out or make it the same")
    else:
        if not (a.hazy and a.out):
            raise ValueError("train needs --hazy and --out (or --resume RUN_DIR)")
        run_dir = Path(a.out)
    # Under msrun this joins the cluster and trains this rank's shard (docs/distributed.md); in msrun's scheduler
    # process it serves the cluster and exits instead.
    with distributed.process_group(a.device) as device, warnings.catch_warnings():
        warnings.simplefilter("always")
        train(run_dir, a.hazy, a.clear, cli.model_config_from_args(a), cli.train_config_from_args(a),
              vgg_weights=a.vgg_weights, resume=bool(a.resume), device=device, progress_bar=not a.no_progress,
              init=a.init, safetensors=a.safetensors)
        main = distributed.is_main()
    if main:
        print(f"checkpoints, train_state.ckpt and loss_log.csv are in {run_dir}")
    return 0


def cmd_dehaze(a: argparse.Namespace) -> int:
    from singan_ms.dehaze import run_dehaze

    return run_dehaze(a)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_v", "3")
    a = build_parser().parse_args(argv)
    body = {"train": cmd_train, "dehaze": cmd_dehaze}[a.command]
    return cli.run_command(lambda: body(a), PROG)


if __name__ == "__main__":
    raise SystemExit(main())
