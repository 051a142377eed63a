"""Comparisons: regions side by side, variants side by side, a run against its baseline.

    from analysis.compare import compare_groups, compare_baseline, compare_runs
    regions = compare_groups(stats, by="region")                  # reference: fastest p50
    variants = compare_groups(stats, by="variant", control="a")   # reference: control / first
    base = compare_baseline(stats, baseline_stats)                # regressions flagged

Every difference in p50/p95/p99 comes with a bootstrap 95% confidence interval, and every
row with a Mann-Whitney U test, so a report can say when a difference is just noise.

How the bootstrap stays cheap on millions of rows (BOOTSTRAP_METHOD, stated in the report):
it uses the exact bootstrap distribution of order statistics instead of materialising
resamples. The k-th smallest value of a size-n resample drawn with replacement is the
sample's value at rank ⌈n·U⌉ with U ~ Beta(k, n − k + 1) (and the next one follows from a
second Beta draw), so each bootstrap replicate of a percentile costs two random numbers and
one lookup in the already-sorted latencies: all rows are used, no subsampling, no binning,
and 2,000 replicates per group take microseconds. The Mann-Whitney test (O(n log n)) runs
on a random subsample of ≤ 20,000 requests per group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from analysis.stats import ENDPOINT_ORDER, RunStats, percentiles

N_BOOT = 2000
MW_SAMPLE = 20_000
ALPHA = 0.05
MIN_SAMPLE = 20  # below this many successes per group, no CI or test
COMPARE_QS = (50, 95, 99)

BOOTSTRAP_METHOD = (
    f"Percentile differences carry 95% bootstrap confidence intervals ({N_BOOT:,} replicates per "
    "group, all rows used): each replicate of a percentile is drawn from the exact bootstrap "
    "distribution of the order statistics (the k-th smallest of a resample is the sample's value "
    "at rank ⌈n·U⌉, U ~ Beta(k, n−k+1)), which costs O(1) per replicate instead of a full resample. "
    f"\"Significant\" / \"noise\": two-sided Mann-Whitney U test at p < {ALPHA:g} on a random "
    f"subsample of ≤ {MW_SAMPLE:,} successful requests per group. Error-rate differences: 95% "
    "Wald interval."
)

#: Default regression thresholds for run-vs-baseline.
P95_THRESHOLD = 0.10   # +10% p95
ERROR_THRESHOLD = 0.01  # +1 percentage point error rate


# --------------------------------------------------------------------------- primitives

@dataclass
class Resampled:
    """Bootstrap replicates of the COMPARE_QS percentiles of one group."""

    exact: np.ndarray     # percentiles from the raw rows, shape (len(qs),)
    boot: np.ndarray      # (n_boot, len(qs))
    n: int


def resample(sorted_values: np.ndarray, rng: np.random.Generator, qs: Sequence[float] = COMPARE_QS,
             n_boot: int = N_BOOT) -> Resampled:
    """Bootstrap replicates of the percentiles `qs` of one group (values sorted ascending).

    Exact bootstrap of numpy's linear percentile: with h = (n − 1)·q/100, k = ⌊h⌋ + 1 and
    f = h − ⌊h⌋, a resample's percentile is X*(k) + f·(X*(k+1) − X*(k)). X*(k) = x[⌈n·U⌉]
    with U ~ Beta(k, n − k + 1) the k-th order statistic of n uniforms, and
    U(k+1) = U(k) + (1 − U(k))·Beta(1, n − k).
    """
    v = np.asarray(sorted_values, dtype=float)
    n = len(v)
    exact = percentiles(v, qs, assume_sorted=True)
    boot = np.full((n_boot, len(qs)), np.nan)
    if n < MIN_SAMPLE:
        return Resampled(exact, boot, n)
    for i, q in enumerate(qs):
        h = (n - 1) * (q / 100.0)
        k = int(math.floor(h)) + 1  # 1-based rank
        f = h - (k - 1)
        u1 = rng.beta(k, n - k + 1, size=n_boot)
        x1 = v[np.clip(np.ceil(n * u1).astype(np.int64) - 1, 0, n - 1)]
        if f > 0 and k < n:
            u2 = u1 + (1 - u1) * rng.beta(1, n - k, size=n_boot)
            x2 = v[np.clip(np.ceil(n * u2).astype(np.int64) - 1, 0, n - 1)]
            boot[:, i] = x1 + f * (x2 - x1)
        else:
            boot[:, i] = x1
    return Resampled(exact, boot, n)


def diff_ci(a: Resampled, b: Resampled, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference a − b in each percentile: (exact diff, CI low, CI high)."""
    diff = a.exact - b.exact
    boot = a.boot - b.boot
    tail = (1 - level) / 2 * 100
    with np.errstate(invalid="ignore"):
        if np.isnan(boot).all():
            nan = np.full(diff.shape, np.nan)
            return diff, nan, nan
        lo, hi = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    return diff, lo, hi


def ratio_ci(a: Resampled, b: Resampled, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative difference a / b − 1 in each percentile: (exact, CI low, CI high)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = a.exact / b.exact - 1
        boot = a.boot / b.boot - 1
        if np.isnan(boot).all():
            nan = np.full(rel.shape, np.nan)
            return rel, nan, nan
        tail = (1 - level) / 2 * 100
        lo, hi = np.nanpercentile(boot, [tail, 100 - tail], axis=0)
    return rel, lo, hi


def mann_whitney(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, max_n: int = MW_SAMPLE) -> float:
    """Two-sided Mann-Whitney U p-value on random subsamples of ≤ max_n per group (NaN if too few)."""
    if len(a) < MIN_SAMPLE or len(b) < MIN_SAMPLE:
        return math.nan
    if len(a) > max_n:
        a = a[rng.choice(len(a), max_n, replace=False)]
    if len(b) > max_n:
        b = b[rng.choice(len(b), max_n, replace=False)]
    if np.array_equal(a, b) or (a.min() == a.max() == b.min() == b.max()):
        return 1.0
    return float(sps.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue)


def error_rate_diff(e1: int, n1: int, e2: int, n2: int) -> tuple[float, float, float]:
    """Error rate 1 − error rate 2 with a 95% Wald interval (NaN if a side has no requests)."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = e1 / n1, e2 / n2
    d = p1 - p2
    se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
    return d, d - 1.96 * se, d + 1.96 * se


def verdict(p: float) -> str:
    if p != p:  # NaN
        return "too few"
    return "significant" if p < ALPHA else "noise"


# --------------------------------------------------------------------------- tables

def _endpoints(stats: RunStats) -> list[str]:
    return [e for e in ENDPOINT_ORDER if e in stats.endpoints] + [e for e in stats.endpoints if e not in ENDPOINT_ORDER]


def compare_groups(stats: RunStats, by: str = "region", reference: str | None = None,
                   control: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Groups side by side per endpoint with differences against a reference group.

    by="region": reference = the fastest region by p50 (per endpoint), unless `reference`.
    by="variant": reference = `control` (or `reference`), else the first variant.
    Columns: endpoint, group, is_reference, reference, count, errors, error_rate, p50_ms,
    p95_ms, p99_ms, then for each q in (50, 95, 99): d_p{q}_ms, d_p{q}_lo, d_p{q}_hi,
    d_p{q}_pct, d_p{q}_pct_lo, d_p{q}_pct_hi, d_p{q}_significant; then d_error_rate,
    d_error_lo, d_error_hi, mw_p, verdict.
    """
    if by not in ("region", "variant"):
        raise ValueError("by must be 'region' or 'variant'")
    rng = np.random.default_rng(seed)
    level = "region·endpoint" if by == "region" else "variant·endpoint"
    table = stats.level(level)
    samples = stats.latencies((by, "endpoint"))
    order = stats.regions if by == "region" else stats.variants
    ref_name = control or reference
    rows = []
    for ep in _endpoints(stats):
        t = table[table["endpoint"] == ep].set_index(by)
        present = [g for g in order if g in t.index and t.loc[g, "count"] > 0]
        if not present:
            continue
        if ref_name and ref_name in present:
            ref = ref_name
        elif by == "region":
            p50 = t.loc[present, "p50_ms"].astype(float)
            ref = p50.idxmin() if p50.notna().any() else present[0]
        else:
            ref = present[0]
        ref_vals = samples.get((ref, ep), np.array([]))
        ref_rs = resample(ref_vals, rng)
        for g in present:
            r = t.loc[g]
            row = {"endpoint": ep, "group": g, "is_reference": g == ref, "reference": ref,
                   "count": int(r["count"]), "errors": int(r["errors"]), "error_rate": float(r["error_rate"]),
                   "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"], "p99_ms": r["p99_ms"]}
            vals = samples.get((g, ep), np.array([]))
            rs = ref_rs if g == ref else resample(vals, rng)
            d, lo, hi = diff_ci(rs, ref_rs)
            rel, rlo, rhi = ratio_ci(rs, ref_rs)
            for i, q in enumerate(COMPARE_QS):
                row[f"d_p{q}_ms"] = d[i]
                row[f"d_p{q}_lo"] = lo[i]
                row[f"d_p{q}_hi"] = hi[i]
                row[f"d_p{q}_pct"] = rel[i]
                row[f"d_p{q}_pct_lo"] = rlo[i]
                row[f"d_p{q}_pct_hi"] = rhi[i]
                row[f"d_p{q}_significant"] = bool(g != ref and lo[i] == lo[i] and (lo[i] > 0 or hi[i] < 0))
            ref_row = t.loc[ref]
            de, delo, dehi = error_rate_diff(int(r["errors"]), int(r["count"]), int(ref_row["errors"]), int(ref_row["count"]))
            row.update(d_error_rate=de, d_error_lo=delo, d_error_hi=dehi)
            if g == ref:
                row.update(mw_p=math.nan, verdict="reference")
            else:
                p = mann_whitney(vals, ref_vals, rng)
                row.update(mw_p=p, verdict=verdict(p))
            rows.append(row)
    return pd.DataFrame(rows)


def compare_baseline(current: RunStats, baseline: RunStats, p95_threshold: float = P95_THRESHOLD,
                     error_threshold: float = ERROR_THRESHOLD, seed: int = 0) -> pd.DataFrame:
    """This run against a baseline run, per region × variant × endpoint.

    A row is flagged `regression` when p95 grew by more than `p95_threshold` (relative) or
    the error rate by more than `error_threshold` (absolute); `improvement` for the mirror
    image. Columns: region, variant, endpoint, count, base_count, p50/p95/p99 (_ms and
    base_…_ms), d_p50_pct, d_p95_pct, d_p99_pct, d_p95_lo, d_p95_hi (relative CI), error_rate,
    base_error_rate, d_error_rate, mw_p, verdict, status (regression|improvement|ok|new|missing),
    regression (bool), reasons.
    """
    rng = np.random.default_rng(seed)
    keys = ["region", "variant", "endpoint"]
    cur = current.summary().set_index(keys)
    base = baseline.summary().set_index(keys)
    cur_s = current.latencies(tuple(keys))
    base_s = baseline.latencies(tuple(keys))
    index = list(cur.index) + [k for k in base.index if k not in cur.index]
    rows = []
    for k in index:
        c = cur.loc[k] if k in cur.index else None
        b = base.loc[k] if k in base.index else None
        row = dict(zip(keys, k))
        row["count"] = int(c["count"]) if c is not None else 0
        row["base_count"] = int(b["count"]) if b is not None else 0
        for q in COMPARE_QS:
            row[f"p{q}_ms"] = float(c[f"p{q}_ms"]) if c is not None else math.nan
            row[f"base_p{q}_ms"] = float(b[f"p{q}_ms"]) if b is not None else math.nan
            with np.errstate(invalid="ignore", divide="ignore"):
                row[f"d_p{q}_pct"] = row[f"p{q}_ms"] / row[f"base_p{q}_ms"] - 1 if row[f"base_p{q}_ms"] else math.nan
        row["error_rate"] = float(c["error_rate"]) if c is not None else math.nan
        row["base_error_rate"] = float(b["error_rate"]) if b is not None else math.nan
        row["d_error_rate"] = row["error_rate"] - row["base_error_rate"]
        a_vals = cur_s.get(k, np.array([]))
        b_vals = base_s.get(k, np.array([]))
        if row["count"] and row["base_count"]:
            rel, lo, hi = ratio_ci(resample(a_vals, rng), resample(b_vals, rng))
            row["d_p95_lo"], row["d_p95_hi"] = lo[1], hi[1]
            p = mann_whitney(a_vals, b_vals, rng)
        else:
            row["d_p95_lo"] = row["d_p95_hi"] = p = math.nan
        row["mw_p"] = p
        row["verdict"] = verdict(p)
        reasons = []
        if not row["base_count"] and row["count"]:
            status = "new"
        elif row["base_count"] and not row["count"]:
            status = "missing"
        else:
            d95 = row["d_p95_pct"]
            der = row["d_error_rate"]
            if d95 == d95 and d95 > p95_threshold:
                reasons.append(f"p95 {d95:+.0%}")
            if der == der and der > error_threshold:
                reasons.append(f"error rate {der * 100:+.1f} pt")
            if reasons:
                status = "regression"
            elif (d95 == d95 and d95 < -p95_threshold) or (der == der and der < -error_threshold):
                status = "improvement"
            else:
                status = "ok"
        row["status"] = status
        row["regression"] = status == "regression"
        row["reasons"] = ", ".join(reasons)
        rows.append(row)
    return pd.DataFrame(rows)


def compare_runs(runs: Sequence[RunStats], names: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """Several runs side by side per region × variant × endpoint, against the first run.

    Long format: one row per (region, variant, endpoint, run) with count, error_rate,
    p50/p95/p99, d_p95_pct and mw_p/verdict against the first run's same group.
    """
    rng = np.random.default_rng(seed)
    names = list(names) if names else [f"run {i + 1}" for i in range(len(runs))]
    keys = ["region", "variant", "endpoint"]
    summaries = [st.summary().set_index(keys) for st in runs]
    samples = [st.latencies(tuple(keys)) for st in runs]
    all_keys: list = []
    for s in summaries:
        for k in s.index:
            if k not in all_keys:
                all_keys.append(k)
    rows = []
    for k in all_keys:
        for i, (s, name) in enumerate(zip(summaries, names)):
            row = dict(zip(keys, k))
            row["run"] = name
            if k in s.index:
                r = s.loc[k]
                row.update(count=int(r["count"]), errors=int(r["errors"]), error_rate=float(r["error_rate"]),
                           p50_ms=float(r["p50_ms"]), p95_ms=float(r["p95_ms"]), p99_ms=float(r["p99_ms"]))
            else:
                row.update(count=0, errors=0, error_rate=math.nan, p50_ms=math.nan, p95_ms=math.nan, p99_ms=math.nan)
            if i == 0:
                row.update(d_p95_pct=math.nan, mw_p=math.nan, verdict="reference")
            else:
                b95 = float(summaries[0].loc[k, "p95_ms"]) if k in summaries[0].index else math.nan
                with np.errstate(invalid="ignore", divide="ignore"):
                    row["d_p95_pct"] = row["p95_ms"] / b95 - 1 if b95 else math.nan
                p = mann_whitney(samples[i].get(k, np.array([])), samples[0].get(k, np.array([])), rng)
                row.update(mw_p=p, verdict=verdict(p))
            rows.append(row)
    return pd.DataFrame(rows)
