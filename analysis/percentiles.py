"""THE percentile function of the project, numpy only.

Used by the report, the SLO verdict, the live web UI tab and the capacity search alike.
Kept apart from `analysis.stats` (pandas) so that the Locust processes, which feed the live
view, do not import pandas: a bigger heap makes every garbage collection on the load
generator's hot path slower.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

#: The percentiles reported everywhere (qs in 0..100).
PERCENTILES: tuple[float, ...] = (50, 75, 90, 95, 99, 99.9)

#: How percentiles are computed, stated in the report.
PERCENTILE_METHOD = (
    "Exact percentiles over the raw latency of every successful request (no histogram "
    "buckets, no sampling), linear interpolation between the two closest ranks "
    "(numpy's default, Hyndman & Fan type 7). Failed requests are counted separately and "
    "their latencies are not mixed into the percentiles."
)


def percentiles(values: Iterable[float], qs: Iterable[float] = PERCENTILES, *, assume_sorted: bool = False) -> np.ndarray:
    """Exact percentiles of `values` at each q in `qs` (0..100), linear interpolation.

    The same numbers as `numpy.percentile(values, qs)` (method "linear"). Returns a float
    array shaped like `qs`; all NaN when `values` is empty. NaNs in `values` are ignored.
    `assume_sorted=True` promises `values` is sorted ascending and NaN-free, and skips the
    O(n) selection (used when many groups are cut from one sorted array).
    """
    q = np.asarray(qs if isinstance(qs, np.ndarray) else list(qs), dtype=float)
    v = np.asarray(values, dtype=float).ravel()
    if not assume_sorted and v.size and np.isnan(v).any():
        v = v[~np.isnan(v)]
    n = v.size
    if n == 0:
        return np.full(q.shape, np.nan)
    if not assume_sorted:
        return np.percentile(v, q)
    return percentiles_at(n, q, lambda i: v[i])


def percentiles_at(n: int, qs: Iterable[float], at: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Percentiles of n sorted values that are only reachable by rank: `at(ranks)` returns
    the values (as floats) at 0-based ranks. numpy's linear method step for step, so the
    result is bit-identical to `numpy.percentile` on the same values: this is how groups
    that are never concatenated (`analysis.groups`) still give exact percentiles."""
    q = np.asarray(qs if isinstance(qs, np.ndarray) else list(qs), dtype=float)
    if n == 0:
        return np.full(q.shape, np.nan)
    if ((q < 0) | (q > 100)).any():
        raise ValueError("Percentiles must be in the range [0, 100]")
    quantiles = np.true_divide(q, 100)
    virtual = (n - 1) * quantiles
    prev = np.floor(virtual)
    above = virtual >= n - 1
    prev_i = np.where(above, n - 1, prev).astype(np.intp)
    next_i = np.where(above, n - 1, prev + 1).astype(np.intp)
    gamma = virtual - prev
    both = np.asarray(at(np.concatenate([prev_i, next_i])), dtype=float)
    a, b = both[: len(q)], both[len(q) :]
    diff = b - a
    out = a + diff * gamma
    hi = gamma >= 0.5
    out[hi] = (b - diff * (1 - gamma))[hi]
    return out
