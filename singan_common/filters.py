"""Fixed (non-learned) filter taps shared by both frameworks, computed once in numpy.

Both frameworks must use bit-identical taps, so they come from here rather than from each framework's own
blur helpers.
"""

from __future__ import annotations

import numpy as np

_BINOMIAL = {1: [1.0], 2: [1.0, 1.0], 3: [1.0, 2.0, 1.0], 4: [1.0, 3.0, 3.0, 1.0], 5: [1.0, 4.0, 6.0, 4.0, 1.0]}


def binomial_filter(size: int) -> np.ndarray:
    """CUT's get_filter: the normalised 2-D binomial (size, size) blur, float32."""
    a = np.asarray(_BINOMIAL[size], dtype=np.float64)
    filt = a[:, None] * a[None, :]
    return (filt / filt.sum()).astype(np.float32)


def gaussian_kernel1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps (size odd), float32; the 2-D blur is its separable product."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(x**2) / (2.0 * sigma**2))
    return (k / k.sum()).astype(np.float32)
