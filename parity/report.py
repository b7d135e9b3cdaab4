"""The parity report: report.json (everything), report.md (one row per case) and a PNG of the per-layer error
through the generator, written to one folder (default `parity-report/`).
"""

from __future__ import annotations

import json
import math
import platform
import re
from pathlib import Path
from typing import Any

from parity.runner import CaseResult


def _fmt(x: float) -> str:
    return "inf" if math.isinf(x) else ("nan" if math.isnan(x) else f"{x:.2e}")


def case_summary(r: CaseResult) -> dict[str, Any]:
    worst = r.worst()
    bad = r.first_failure
    struct = max(r.structural, key=lambda c: c.max_abs, default=None)
    return {
        "case": r.case_id, "group": r.group, "passed": r.passed, "seconds": round(r.seconds, 3),
        "compared": len(r.comparisons), "worst": worst.as_dict() if worst else None,
        "max_abs": worst.max_abs if worst else 0.0,
        "max_rel": max((c.max_rel for c in r.comparisons), default=0.0),
        "min_cosine": min((c.cosine for c in r.comparisons), default=1.0),
        "first_failure": bad.as_dict() if bad else None,
        "structural_zeros": len(r.structural), "structural_max_abs": struct.max_abs if struct else None,
        "only_reference": r.only_reference, "tolerance_kind": r.tolerance_kind,
        "comparisons": [c.as_dict() for c in r.comparisons],
        "structural": [c.as_dict() for c in r.structural],
    }


def write_report(results: list[CaseResult], out_dir: str | Path, meta: dict[str, Any]) -> list[Path]:
    """Write report.json, report.md and generator_layers.png; returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {**meta, "python": platform.python_version(), "machine": platform.machine()}
    summaries = [case_summary(r) for r in results]
    data = {"meta": meta, "passed": all(r.passed for r in results), "cases": summaries}
    paths = [out / "report.json", out / "report.md"]
    paths[0].write_text(json.dumps(data, indent=1, default=str) + "\n")
    paths[1].write_text(_markdown(summaries, meta))
    png = _plot(results, out / "generator_layers.png", meta)
    if png is not None:
        paths.append(png)
    return paths


def _markdown(summaries: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Parity report", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    n_pass = sum(s["passed"] for s in summaries)
    lines += [f"- cases: {len(summaries)}, passed: {n_pass}, failed: {len(summaries) - n_pass}", ""]
    lines += ["| case | verdict | compared | worst tensor | max abs | max rel | min cosine | tolerance (atol, rtol) "
              "| structural zeros (max abs) | first failure | s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        w = s["worst"] or {}
        tol = f"{s['tolerance_kind']} ({_fmt(w.get('atol', 0))}, {_fmt(w.get('rtol', 0))})" if w else "-"
        struct = f"{s['structural_zeros']} ({_fmt(s['structural_max_abs'])})" if s["structural_zeros"] else "-"
        ff = s["first_failure"]["name"] if s["first_failure"] else ("missing: " + ", ".join(s["only_reference"][:3])
                                                                      if s["only_reference"] else "-")
        lines.append(f"| {s['case']} | {'ok' if s['passed'] else '**FAIL**'} | {s['compared']} | {w.get('name', '-')} "
                     f"| {_fmt(s['max_abs'])} | {_fmt(s['max_rel'])} | {s['min_cosine']:.9f} | {tol} | {struct} "
                     f"| {ff} | {s['seconds']:.1f} |")
    lines += ["", "max rel is max |ours - reference| / max |reference| of a tensor; the verdict is "
              "max |ours - reference| <= atol + rtol * max |reference| (parity/compare.py). Loss and gradient "
              "tolerances add twice torch's own float32 error against float64 where that is larger (see the "
              "`why` of each comparison in report.json). Structural zeros: gradients that are mathematically zero "
              "(conv bias before an affine-free instance norm), checked to be float noise, not compared.", ""]
    return "\n".join(lines)


_LAYER = re.compile(r"^model\.(\d+)$")


def _plot(results: list[CaseResult], path: Path, meta: dict[str, Any]) -> Path | None:
    """Per-layer max relative error through G (each flat `model.N` layer), one line per G case."""
    g_results = [r for r in results if r.case_id.startswith("network/G_")]
    if not g_results:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for r in g_results:
        pts = [(int(m.group(1)), c.max_rel) for c in r.comparisons if (m := _LAYER.match(c.name))]
        if pts:
            xs, ys = zip(*pts)
            ax.semilogy(xs, [max(y, 1e-9) for y in ys], marker="o", ms=3, label=r.case_id.split("/", 1)[1])
    ax.set_xlabel("generator layer (model.N)")
    ax.set_ylabel("max |ms - torch| / max |torch|")
    ax.set_title(f"Per-layer error through G, MindSpore {meta.get('device', '')} vs PyTorch "
                 f"{meta.get('torch_device', '')}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
