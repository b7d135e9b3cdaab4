"""Array comparison metrics shared by the converter's verification and the parity harness.

Framework-free: both sides arrive as numpy arrays. A comparison reports max abs error, max relative error
(against the reference tensor's largest magnitude, so near-zero elements do not blow it up), cosine
similarity and the allclose verdict under a named tolerance (scale-relative: see `compare`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from parity.tolerances import Tolerance


@dataclass(frozen=True)
class Comparison:
    name: str
    max_abs: float
    max_rel: float
    cosine: float
    passed: bool
    atol: float
    rtol: float
    shape: tuple[int, ...]
    # Fraction of elements beyond float32 rounding (only set by compare_sparse; 0 elsewhere).
    frac_over: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        return (f"{self.name:<28} max_abs {self.max_abs:.2e}  max_rel {self.max_rel:.2e}  "
                f"cosine {self.cosine:.9f}  {verdict} (atol {self.atol:.0e}, rtol {self.rtol:.0e})")


def compare(name: str, ours: np.ndarray, reference: np.ndarray, tol: Tolerance) -> Comparison:
    """`ours` (the port) against `reference` (PyTorch)."""
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        return Comparison(name, float("inf"), float("inf"), float("nan"), False, tol.atol, tol.rtol, tuple(b.shape))
    diff = np.abs(a - b)
    max_abs = float(diff.max(initial=0.0))
    scale = float(np.abs(b).max(initial=0.0))
    max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else float("inf"))
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    cosine = float(np.dot(a.ravel(), b.ravel()) / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    # allclose against the tensor's scale: |a - b| <= atol + rtol * max|b| everywhere. Elementwise rtol would
    # demand ~1e-5 absolute precision from elements that are near zero inside a tensor of magnitude 10, which
    # float32 accumulation cannot give; the error is a property of the computation's scale.
    passed = max_abs <= tol.atol + tol.rtol * scale and bool(np.isfinite(a).all())
    return Comparison(name, max_abs, max_rel, cosine, passed, tol.atol, tol.rtol, tuple(b.shape))


def compare_sparse(name: str, ours: np.ndarray, reference: np.ndarray, rounding: Tolerance, bound: float,
                   max_fraction: float) -> Comparison:
    """For quantities where a few elements may legitimately part by a known amount (Adam's update of a
    gradient element at float-noise level has an arbitrary sign: parity.runner.adam_noise_bound) while the rest must
    agree to rounding: passes when every element is within `bound` AND at most `max_fraction` of the elements
    are beyond `rounding` (atol + rtol * scale). A real fault moves most elements, or one element beyond the
    bound; sign noise does neither. The Comparison's atol is `bound`, frac_over the measured fraction."""
    base = compare(name, ours, reference, rounding)
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        return base
    over = np.abs(a - b) > rounding.atol + rounding.rtol * float(np.abs(b).max(initial=0.0))
    frac = float(over.mean()) if over.size else 0.0
    passed = base.max_abs <= bound and frac <= max_fraction and bool(np.isfinite(a).all())
    return Comparison(name, base.max_abs, base.max_rel, base.cosine, passed, bound, rounding.rtol, base.shape, frac)


def first_failure(comparisons: list[Comparison]) -> Comparison | None:
    return next((c for c in comparisons if not c.passed), None)
