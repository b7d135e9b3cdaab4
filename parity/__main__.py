"""`python -m parity record --out golden.safetensors [-k SUBSTRING]`: run the PyTorch half of every parity case
(or those whose id contains SUBSTRING) and store inputs, weights, injected draws and reference outputs for
replay with `pytest parity/ --device Ascend --golden golden.safetensors` on a machine without torch.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parity")
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record the PyTorch reference of the parity cases")
    rec.add_argument("--out", required=True, help="golden file to write (.safetensors)")
    rec.add_argument("-k", dest="select", default="", help="only cases whose id contains this")
    rec.add_argument("--torch-device", default="cpu", help="cpu (default) or cuda (TF32 off)")
    args = parser.parse_args(argv)

    os.environ.setdefault("GLOG_v", "3")
    import torch

    import parity
    from parity.cases import CASES, Context
    from parity.golden import save
    from parity.runner import reference

    if args.torch_device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    ctx = Context(torch_device=args.torch_device)
    cases = [c for c in CASES if args.select in c.id]
    if not cases:
        print(f"no case id contains {args.select!r}", file=sys.stderr)
        return 2
    records = {}
    for c in cases:
        records[c.id] = reference(c, ctx)
        print(f"recorded {c.id}")
    meta = {"torch": torch.__version__, "torch_device": args.torch_device, "harness": parity.__name__}
    path = save(args.out, records, meta)
    print(f"wrote {len(records)} cases to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
