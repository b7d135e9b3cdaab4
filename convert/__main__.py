"""`python -m convert torch2ms | ms2torch | inspect`: checkpoints across frameworks, verified before written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from singan_common.cli import run_command

PROG = "python -m convert"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Convert SinGAN-Dehaze / CUT checkpoints between PyTorch "
                                "and MindSpore, verifying both sides compute the same function before writing.")
    sub = p.add_subparsers(dest="command", required=True)
    for direction, default_fmt in (("torch2ms", "ckpt"), ("ms2torch", "pth")):
        c = sub.add_parser(direction, help=f"convert {'to MindSpore' if direction == 'torch2ms' else 'to PyTorch'}")
        c.add_argument("path", help="a *_net_G/D/F file, a run directory, train_state.*, or a vgg16 state_dict")
        c.add_argument("-o", "--out", help="output folder (default: beside the input; <dir>_ms / <dir>_torch "
                       "for a run directory)")
        c.add_argument("--format", choices=("ckpt", "safetensors") if direction == "torch2ms" else ("pth",
                       "safetensors"), default=default_fmt)
        c.add_argument("--variant", choices=("stride2", "antialias", "auto"), default="auto",
                       help="generator variant; auto reads it off the keys (it must agree when given)")
        c.add_argument("--config", help="run_config.json describing the model (default: beside the input, "
                       "else inferred from shapes)")
        c.add_argument("--verify", action=argparse.BooleanOptionalAction, default=True,
                       help="run both frameworks on a probe input and refuse to write if they differ")
        c.add_argument("--force", action="store_true", help="overwrite existing outputs")
    i = sub.add_parser("inspect", help="what a checkpoint file holds")
    i.add_argument("path")
    d = sub.add_parser("demo", help="train briefly in PyTorch, convert, verify, dehaze with both, evaluate")
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--steps", type=int, default=20, help="PyTorch training iterations before converting")
    return p


def cmd_convert(a: argparse.Namespace) -> int:
    from convert.core import convert

    result = convert(a.path, a.command, a.out, a.format, verify=a.verify, force=a.force, config=a.config,
                     variant=a.variant)
    for p in result.outputs:
        print(f"wrote {p}")
    return 0


def cmd_inspect(a: argparse.Namespace) -> int:
    from convert.inspect import describe

    print(describe(Path(a.path)))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from convert.demo import main_demo

    return main_demo(a.out, a.steps)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    body = {"inspect": cmd_inspect, "demo": cmd_demo}.get(a.command, cmd_convert)
    return run_command(lambda: body(a), PROG)


if __name__ == "__main__":
    sys.exit(main())
