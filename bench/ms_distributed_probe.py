"""Probe: does MindSpore's CPU backend do data-parallel training under msrun? (research for docs/distributed.md)

Run with the project's environment active (msrun starts its workers with the `python` found on PATH):

    . .venv/bin/activate
    msrun --worker_num 2 --local_worker_num 2 --master_addr 127.0.0.1 --master_port 8118 --join True \
          --log_dir /tmp/ms_probe_logs bench/ms_distributed_probe.py --out /tmp/ms_probe

Each worker runs every check below, each in isolation, and writes what happened to OUT/rank<r>.json; after the
run, `python bench/ms_distributed_probe.py --report /tmp/ms_probe` prints one table over all ranks. A check
either matches numpy's expected value (ok), computes something else (WRONG), or raises (ERROR, with the
message). Checks:
  init             mindspore.communication.init() on CPU; rank, group size, backend
  allreduce_pynative   ops.AllReduce(SUM) on rank-dependent data, op by op
  allreduce_graph      the same inside a jit-compiled function (graph mode)
  comm_func_allreduce  mindspore.communication.comm_func.all_reduce (the functional API)
  mint_allreduce       mindspore.mint.distributed.all_reduce (the torch.distributed look-alike)
  allgather / broadcast  ops.AllGather, ops.Broadcast (weight sync at start)
  grad_reducer_pynative  set_auto_parallel_context(DATA_PARALLEL, gradients_mean=True) +
                         nn.DistributedGradReducer(mean=True) on value_and_grad of a conv net: equals the mean
                         of every rank's gradient, computed locally from every rank's data
  grad_reducer_graph     the same with the whole train step (forward, grads, reducer, optimizer) under jit
  train_one_step_pynative / _graph  nn.TrainOneStepCell, which adds the reducer itself in DATA_PARALLEL mode
  params_in_sync         after the steps, every rank holds the same weights
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

TOL = 1e-5  # fp32: a mean of two gradients summed in another order; anything wrong is off by O(1)


def _data(rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank-dependent input and target, reproducible on every rank (each rank computes everyone's gradient)."""
    g = np.random.default_rng(100 + rank)
    return g.standard_normal((2, 3, 8, 8)).astype(np.float32), g.standard_normal((2, 4, 8, 8)).astype(np.float32)


def run_checks(out: Path) -> None:
    os.environ.setdefault("GLOG_v", "3")
    import mindspore as ms
    from mindspore import Tensor, nn, ops
    from mindspore.communication import get_group_size, get_rank, init

    results: dict[str, dict] = {}

    def check(name: str, fn: Callable[[], tuple[bool, str]]) -> None:
        t0 = time.perf_counter()
        try:
            ok, detail = fn()
            results[name] = {"status": "ok" if ok else "WRONG", "detail": detail}
        except Exception as exc:  # noqa: BLE001 - the probe records every failure and goes on
            results[name] = {"status": "ERROR", "detail": f"{type(exc).__name__}: {exc}".strip()[:600],
                             "traceback": traceback.format_exc()[-2000:]}
        results[name]["seconds"] = round(time.perf_counter() - t0, 3)

    ms.set_context(mode=ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    state: dict = {}

    def do_init() -> tuple[bool, str]:
        init()
        state["rank"], state["world"] = get_rank(), get_group_size()
        from mindspore.communication import GlobalComm

        return state["world"] > 1, (f"rank {state['rank']} of {state['world']}, backend {GlobalComm.BACKEND}, "
                                    f"group {GlobalComm.WORLD_COMM_GROUP}")

    check("init", do_init)
    if results["init"]["status"] != "ok":
        _write(out, -1, results, ms.__version__)
        return
    rank, world = state["rank"], state["world"]
    mine = np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * rank
    expected_sum = sum(np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * r for r in range(world))

    def allreduce_pynative() -> tuple[bool, str]:
        got = ops.AllReduce(ops.ReduceOp.SUM)(Tensor(mine)).asnumpy()
        return bool(np.allclose(got, expected_sum)), f"max err {np.abs(got - expected_sum).max():.3g}"

    def allreduce_graph() -> tuple[bool, str]:
        op = ops.AllReduce(ops.ReduceOp.SUM)

        @ms.jit
        def f(x: Tensor) -> Tensor:
            return op(x * 1.0)

        got = f(Tensor(mine)).asnumpy()
        return bool(np.allclose(got, expected_sum)), f"max err {np.abs(got - expected_sum).max():.3g}"

    def comm_func_allreduce() -> tuple[bool, str]:
        from mindspore.communication import comm_func

        got = comm_func.all_reduce(Tensor(mine))
        got = (got[0] if isinstance(got, tuple) else got).asnumpy()
        return bool(np.allclose(got, expected_sum)), f"max err {np.abs(got - expected_sum).max():.3g}"

    def mint_allreduce() -> tuple[bool, str]:
        from mindspore.mint import distributed as mdist

        t = Tensor(mine)
        mdist.all_reduce(t)  # in place, like torch.distributed.all_reduce
        got = t.asnumpy()
        return bool(np.allclose(got, expected_sum)), f"max err {np.abs(got - expected_sum).max():.3g}"

    def allgather() -> tuple[bool, str]:
        got = ops.AllGather()(Tensor(mine)).asnumpy()
        want = np.concatenate([np.arange(6, dtype=np.float32).reshape(2, 3) + 10 * r for r in range(world)])
        return bool(np.array_equal(got, want)), f"shape {got.shape}"

    def broadcast() -> tuple[bool, str]:
        (got,) = ops.Broadcast(0)((Tensor(mine),))
        want = np.arange(6, dtype=np.float32).reshape(2, 3)
        return bool(np.array_equal(got.asnumpy(), want)), "rank 0's tensor on every rank"

    for name, fn in (("allreduce_pynative", allreduce_pynative), ("allreduce_graph", allreduce_graph),
                     ("comm_func_allreduce", comm_func_allreduce), ("mint_allreduce", mint_allreduce),
                     ("allgather", allgather),
                     ("broadcast", broadcast)):
        check(name, fn)

    # Data parallelism the way MindSpore documents it for hand-written train steps.
    def make_net() -> nn.Cell:
        net = nn.SequentialCell(nn.Conv2d(3, 8, 3, pad_mode="pad", padding=1, has_bias=True), nn.ReLU(),
                                nn.Conv2d(8, 4, 3, pad_mode="pad", padding=1, has_bias=True))
        g = np.random.default_rng(0)  # same initial weights on every rank
        for p in net.trainable_params():
            p.set_data(Tensor((0.1 * g.standard_normal(p.shape)).astype(np.float32)))
        return net

    def set_data_parallel() -> None:
        from mindspore.context import ParallelMode

        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode=ParallelMode.DATA_PARALLEL, gradients_mean=True)

    def local_grads(loss_net: nn.Cell, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        _, grads = ms.value_and_grad(loss_net, None, loss_net.trainable_params())(Tensor(x), Tensor(y))
        return [g.asnumpy() for g in grads]

    def expected_mean_grads(loss_net: nn.Cell) -> tuple[list[np.ndarray], float]:
        """The mean over ranks of every rank's local gradient, computed here from every rank's data; and how far
        this rank's own gradient is from it (what a missing reduction would leave)."""
        per_rank = [local_grads(loss_net, *_data(r)) for r in range(world)]
        expected = [np.mean([g[i] for g in per_rank], axis=0) for i in range(len(per_rank[0]))]
        local_err = max(float(np.abs(g - e).max()) for g, e in zip(per_rank[rank], expected, strict=True))
        return expected, local_err

    def grad_reducer(graph: bool) -> tuple[bool, str]:
        set_data_parallel()
        net = make_net()
        loss_net = nn.WithLossCell(net, nn.MSELoss())
        params = net.trainable_params()
        expected, local_err = expected_mean_grads(loss_net)
        reducer = nn.DistributedGradReducer(params, mean=True, degree=world)
        opt = nn.SGD(params, learning_rate=0.1)
        grad_fn = ms.value_and_grad(loss_net, None, params)

        def step(a: Tensor, b: Tensor) -> tuple[Tensor, tuple]:
            loss, grads = grad_fn(a, b)
            grads = reducer(grads)
            opt(grads)
            return loss, grads

        x, y = _data(rank)
        _, grads = (ms.jit(step) if graph else step)(Tensor(x), Tensor(y))
        errs = [float(np.abs(g.asnumpy() - e).max()) for g, e in zip(grads, expected, strict=True)]
        state.setdefault("nets", []).append(net)
        return max(errs) < TOL, (f"max |reduced - mean of ranks' grads| {max(errs):.3g} (local grad differs from "
                                 f"the mean by {local_err:.3g}, so a missing reduction would show)")

    def train_one_step_cell(graph: bool) -> tuple[bool, str]:
        """nn.TrainOneStepCell inserts the DistributedGradReducer itself when the parallel mode is DATA_PARALLEL."""
        set_data_parallel()
        ms.set_context(mode=ms.GRAPH_MODE if graph else ms.PYNATIVE_MODE)
        try:
            net = make_net()
            loss_net = nn.WithLossCell(net, nn.MSELoss())
            expected, local_err = expected_mean_grads(loss_net)
            before = [p.value().asnumpy().copy() for p in net.trainable_params()]
            lr = 0.1
            step = nn.TrainOneStepCell(loss_net, nn.SGD(net.trainable_params(), learning_rate=lr))
            step(*map(Tensor, _data(rank)))
            # SGD without momentum: w1 = w0 - lr * g, so the gradient it applied is (w0 - w1) / lr.
            applied = [(b - p.value().asnumpy()) / lr for b, p in zip(before, net.trainable_params(), strict=True)]
        finally:
            ms.set_context(mode=ms.PYNATIVE_MODE)
        errs = [float(np.abs(a - e).max()) for a, e in zip(applied, expected, strict=True)]
        state.setdefault("nets", []).append(net)
        return max(errs) < 1e-4, (f"max |applied grad - mean of ranks' grads| {max(errs):.3g} (local grad differs "
                                  f"from the mean by {local_err:.3g}; 1e-4: the gradient is recovered from fp32 "
                                  "weights divided by lr)")

    check("grad_reducer_pynative", lambda: grad_reducer(graph=False))
    check("grad_reducer_graph", lambda: grad_reducer(graph=True))
    check("train_one_step_pynative", lambda: train_one_step_cell(graph=False))
    check("train_one_step_graph", lambda: train_one_step_cell(graph=True))

    def params_in_sync() -> tuple[bool, str]:
        nets = state.get("nets", [])
        if not nets:
            return False, "no train step ran"
        worst = 0.0
        for net in nets:
            for p in net.trainable_params():
                mine_p = p.value().asnumpy()
                gathered = ops.AllGather()(Tensor(mine_p[None])).asnumpy()
                worst = max(worst, float(np.abs(gathered - gathered[:1]).max()))
        return worst == 0.0, f"max weight difference across ranks {worst:.3g} over {len(nets)} net(s)"

    check("params_in_sync", params_in_sync)
    _write(out, rank, results, ms.__version__)


def _write(out: Path, rank: int, results: dict, version: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = {"rank": rank, "mindspore": version, "python": sys.version.split()[0], "results": results}
    (out / f"rank{rank}.json").write_text(json.dumps(report, indent=2) + "\n")
    for name, r in results.items():
        print(f"[rank {rank}] {name:24s} {r['status']:6s} {r['detail'].splitlines()[0]}", flush=True)


def report(out: Path) -> int:
    files = sorted(out.glob("rank*.json"))
    if not files:
        print(f"{out}: no rank*.json; did the msrun workers start? (see msrun's --log_dir)")
        return 1
    reports = [json.loads(f.read_text()) for f in files]
    names = list(reports[0]["results"])
    print(f"MindSpore {reports[0]['mindspore']}, {len(reports)} rank(s)")
    for name in names:
        statuses = [r["results"].get(name, {}).get("status", "-") for r in reports]
        detail = reports[0]["results"][name]["detail"].splitlines()[0]
        print(f"{name:24s} {' '.join(statuses):16s} {detail}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("ms_probe"), help="folder for rank<r>.json")
    p.add_argument("--report", type=Path, help="print the table for a finished run's folder and exit")
    a = p.parse_args()
    if a.report:
        return report(a.report)
    run_checks(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
