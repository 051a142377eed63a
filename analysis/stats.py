"""Statistics over a run's requests and conversations.

`percentiles(values, qs)` is THE percentile function of the project: the report, the SLO
verdict, the live UI and the capacity search all call it, so a "p95" means the same thing
everywhere. Exact percentiles from raw values, numpy's default ("linear") interpolation.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

#: The percentiles reported everywhere (qs in 0..100).
PERCENTILES: tuple[float, ...] = (50, 75, 90, 95, 99, 99.9)

#: How percentiles are computed, stated in the report.
PERCENTILE_METHOD = (
    "exact percentiles over the raw per-request latencies of successful requests "
    "(numpy linear interpolation between closest ranks)"
)


def percentiles(values: Iterable[float], qs: Iterable[float] = PERCENTILES) -> np.ndarray:
    """Exact percentiles of `values` at each q in `qs` (0..100), linear interpolation.

    Returns a float array shaped like `qs`; all NaN when `values` is empty.
    NaN values in the input are ignored.
    """
    q = np.asarray(list(qs) if not isinstance(qs, np.ndarray) else qs, dtype=float)
    v = np.asarray(values, dtype=float).ravel()
    if v.size and np.isnan(v).any():
        v = v[~np.isnan(v)]
    if v.size == 0:
        return np.full(q.shape, np.nan)
    return np.percentile(v, q)
