"""`python -m singan_torch train | dehaze | demo`: the PyTorch side's command line."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from singan_common import cli
from singan_common.dehazing import add_dehaze_args

PROG = "python -m singan_torch"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SinGAN-Dehaze in PyTorch")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train on unpaired hazy / clear folders")
    t.add_argument("--hazy", help="folder of hazy images, or a dataset root with trainA/ (hazy) and trainB/ (clear)")
    t.add_argument("--clear", help="folder of clear images (omit when --hazy is a trainA/trainB root)")
    t.add_argument("--out", help="run directory for checkpoints and the loss log")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR exactly where it stopped")
    t.add_argument("--vgg-weights", metavar="FILE", help="torchvision vgg16 state_dict (.pth or .safetensors)")
    t.add_argument("--device", default="cpu",
                   help="torch device: cpu, cuda, cuda:1 (default cpu); under torchrun cuda means cuda:LOCAL_RANK")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    cli.add_model_args(t)
    cli.add_train_args(t)

    add_dehaze_args(sub.add_parser("dehaze", help="dehaze an image or a folder with trained weights"))

    d = sub.add_parser("demo", help="short real training run on a built-in hazy set, then dehaze a sample")
    d.add_argument("--out", default="runs/torch_demo", help="output folder (default runs/torch_demo)")
    d.add_argument("--steps", type=int, default=30)
    d.add_argument("--device", default="cpu")
    return parser


def cmd_train(a: argparse.Namespace) -> int:
    from singan_torch import distributed
    from singan_torch.train import train

    if a.resume:
        run_dir = Path(a.resume)
        if a.out and Path(a.out) != run_dir:
            raise ValueError("--resume continues in its own run directory; drop --out or make it the same")
    else:
        if not (a.hazy and a.out):
            raise ValueError("train needs --hazy and --out (or --resume RUN_DIR)")
        run_dir = Path(a.out)
    # Under torchrun this joins the process group and trains this rank's shard (docs/distributed.md).
    with distributed.process_group(a.device) as device, warnings.catch_warnings():
        warnings.simplefilter("always")
        train(run_dir, a.hazy, a.clear, cli.model_config_from_args(a), cli.train_config_from_args(a),
              vgg_weights=a.vgg_weights, resume=bool(a.resume), device=device, progress_bar=not a.no_progress)
        main = distributed.is_main()
    if main:
        print(f"checkpoints, train_state.pth and loss_log.csv are in {run_dir}")
    return 0


def cmd_dehaze(a: argparse.Namespace) -> int:
    from singan_torch.dehaze import run_dehaze

    return run_dehaze(a)


def cmd_demo(a: argparse.Namespace) -> int:
    from singan_torch.demo import run_demo

    run_demo(Path(a.out), steps=a.steps, device=a.device)
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    body = {"train": cmd_train, "dehaze": cmd_dehaze, "demo": cmd_demo}[a.command]
    return cli.run_command(lambda: body(a), PROG)


if __name__ == "__main__":
    raise SystemExit(main())
