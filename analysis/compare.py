"""Comparisons: regions side by side, variants side by side, a run against its baseline.

    from analysis.compare import compare_groups, compare_baseline, compare_runs
    regions = compare_groups(stats, by="region")                  # reference: fastest p50
    variants = compare_groups(stats, by="variant", control="a")   # reference: control / first
    base = compare_baseline(stats, baseline_stats, thresholds)    # + regression verdicts
    gated = against_baseline(stats, baseline_stats, thresholds, "run-id")  # table + the gate's checks
    runs = compare_runs([stats_a, stats_b])                       # later runs against the first

Every difference carries its own 95% confidence interval and its own verdict from that
interval (`ci_verdict`): "significant" when the interval excludes zero, "noise" when it
contains zero, "too few" when there are too few samples for one. That holds for each of
p50/p95/p99 (bootstrap) and the error rate (Newcombe's score interval), so a difference is
never called real while its interval straddles zero, nor noise while it excludes zero. A
Mann-Whitney U test of the whole distributions is reported apart, as the *distribution
shift* (column `shift`, p-value `mw_p`): it answers a different question ("is one
distribution stochastically larger?") and can disagree with a single percentile.

How the bootstrap stays cheap on millions of rows (BOOTSTRAP_METHOD, stated in the report):
it uses the exact bootstrap distribution of order statistics instead of materialising
resamples. The k-th smallest value of a size-n resample drawn with replacement is the
sample's value at rank ⌈n·U⌉ with U ~ Beta(k, n − k + 1) (and the next one follows from a
second Beta draw), so each bootstrap replicate of a percentile costs two random numbers and
one lookup in the already-sorted latencies: all rows are used, no subsampling, no binning,
and 2,000 replicates per group take microseconds. The interval's ends are replicates
themselves (the 2.5 % "lower" and 97.5 % "higher" order statistics of the replicates), so
the absolute (ms) and relative (%) intervals of a difference always agree on its sign. The
Mann-Whitney test (O(n log n)) runs on a random subsample of ≤ 20,000 requests per group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.percentiles import percentiles
from analysis.regression import Threshold, gate, gated_percentiles, parse_thresholds
from analysis.stats import ENDPOINT_ORDER, RunStats, pct_name

N_BOOT = 2000
MW_SAMPLE = 20_000
ALPHA = 0.05
LEVEL = 0.95
Z = 1.959963984540054  # two-sided 95 % normal quantile
MIN_SAMPLE = 20  # below this many successes per group, no CI or test
COMPARE_QS = (50, 95, 99)

#: Verdicts of one difference, from its own interval.
SIGNIFICANT, NOISE, TOO_FEW, REFERENCE = "significant", "noise", "too few", "reference"

BOOTSTRAP_METHOD = (
    f'Every difference carries a 95% confidence interval and its own verdict: "significant" when '
    'the interval excludes zero, "noise" when it contains zero. Percentile differences: bootstrap '
    f"({N_BOOT:,} replicates per group, all rows used); each replicate of a percentile is drawn from "
    "the exact bootstrap distribution of the order statistics (the k-th smallest of a resample is "
    "the sample's value at rank ⌈n·U⌉, U ~ Beta(k, n−k+1)), which costs O(1) per replicate instead "
    "of a full resample. Error-rate differences: Newcombe's hybrid score interval. \"Distribution "
    f'shift": a separate two-sided Mann-Whitney U test of the whole latency distributions at '
    f"p < {ALPHA:g}, on a random subsample of ≤ {MW_SAMPLE:,} successful requests per group; it can "
    "disagree with a single percentile's verdict, which is why it is shown apart."
)


# --------------------------------------------------------------------------- primitives


@dataclass
class Resampled:
    """Bootstrap replicates of the COMPARE_QS percentiles of one group."""

    exact: np.ndarray  # percentiles from the raw rows, shape (len(qs),)
    boot: np.ndarray  # (n_boot, len(qs))
    n: int


def resample(sorted_values: np.ndarray, rng: np.random.Generator, qs: Sequence[float] = COMPARE_QS, n_boot: int = N_BOOT) -> Resampled:
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


def _interval(boot: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """The (low, high) ends of a percentile interval of bootstrap replicates (per column,
    NaN replicates left out; NaN where a column has none).

    Each end is a replicate itself (numpy's "lower"/"higher" order statistic, no
    interpolation), so the intervals of a − b and of a / b − 1 always agree on the sign of
    the difference."""
    tail = (1 - level) / 2
    s = np.sort(boot, axis=0)  # NaNs last
    valid = (~np.isnan(boot)).sum(axis=0)
    cols = np.arange(boot.shape[1])
    lo_i = np.floor(tail * (valid - 1)).astype(np.int64)
    hi_i = np.ceil((1 - tail) * (valid - 1)).astype(np.int64)
    none = valid == 0
    lo = s[np.maximum(lo_i, 0), cols]
    hi = s[np.maximum(hi_i, 0), cols]
    return np.where(none, np.nan, lo), np.where(none, np.nan, hi)


def diff_ci(a: Resampled, b: Resampled, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Difference a − b in each percentile: (exact diff, CI low, CI high)."""
    lo, hi = _interval(a.boot - b.boot, level)
    return a.exact - b.exact, lo, hi


def ratio_ci(a: Resampled, b: Resampled, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relative difference a / b − 1 in each percentile: (exact, CI low, CI high)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = a.exact / b.exact - 1
        lo, hi = _interval(a.boot / b.boot - 1, level)
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
    # scipy.stats.mannwhitneyu(a, b, method="asymptotic") (tie and continuity corrected), without
    # its per-call overhead, which dominated a baseline comparison of a few hundred groups.
    n1, n2 = len(a), len(b)
    n = n1 + n2
    # Average ranks (scipy.stats.rankdata's default) from the distinct values: a run of k tied
    # values starting at 1-based rank s ranks s + (k - 1) / 2 each. (No scipy: importing
    # scipy.stats cost more CPU than all of a report's comparisons.)
    _, inverse, counts = np.unique(np.concatenate([a, b]), return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    u = max(u1, n1 * n2 - u1)
    ties = counts[counts > 1].astype(float)
    var = n1 * n2 / 12 * ((n + 1) - (ties**3 - ties).sum() / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(var)
    return min(1.0, math.erfc(z / math.sqrt(2)))


def _wilson(e: int, n: int) -> tuple[float, float]:
    p = e / n
    centre = (p + Z * Z / (2 * n)) / (1 + Z * Z / n)
    half = Z / (1 + Z * Z / n) * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def error_rate_diff(e1: int, n1: int, e2: int, n2: int) -> tuple[float, float, float]:
    """Error rate 1 − error rate 2 with a 95% interval (NaN if a side has no requests).

    Newcombe's hybrid score interval (his method 10, from two Wilson intervals): unlike the
    Wald interval it stays honest at error rates near zero, where load tests live (a Wald
    interval around 0 errors of 500 has width zero)."""
    if n1 <= 0 or n2 <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = e1 / n1, e2 / n2
    (l1, u1), (l2, u2) = _wilson(e1, n1), _wilson(e2, n2)
    d = p1 - p2
    return d, d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def ci_verdict(lo: float, hi: float) -> str:
    """The verdict of one difference from its own interval: SIGNIFICANT when the interval
    excludes zero, NOISE when it contains zero, TOO_FEW when there is none."""
    if math.isnan(lo) or math.isnan(hi):
        return TOO_FEW
    return SIGNIFICANT if lo > 0 or hi < 0 else NOISE


def verdict(p: float) -> str:
    """The distribution-shift verdict of a Mann-Whitney p-value (not of any one percentile)."""
    if math.isnan(p):
        return TOO_FEW
    return SIGNIFICANT if p < ALPHA else NOISE


def differences(a: Resampled, b: Resampled, qs: Sequence[float], errors: tuple[int, int, int, int]) -> dict:
    """Columns of a − b for one pair of groups: per q in `qs` the difference in ms and in %,
    each with its interval, and its verdict; the same for the error rate (errors =
    (errors a, requests a, errors b, requests b)).

    Keys: d_pNN_ms, d_pNN_lo, d_pNN_hi, d_pNN_pct, d_pNN_pct_lo, d_pNN_pct_hi, d_pNN_verdict,
    d_pNN_significant; d_error_rate, d_error_lo, d_error_hi, d_error_verdict."""
    d, lo, hi = diff_ci(a, b)
    rel, rlo, rhi = ratio_ci(a, b)
    row: dict = {}
    for i, q in enumerate(qs):
        name = pct_name(q)
        v = ci_verdict(lo[i], hi[i])
        row.update(
            {
                f"d_{name}_ms": d[i],
                f"d_{name}_lo": lo[i],
                f"d_{name}_hi": hi[i],
                f"d_{name}_pct": rel[i],
                f"d_{name}_pct_lo": rlo[i],
                f"d_{name}_pct_hi": rhi[i],
                f"d_{name}_verdict": v,
                f"d_{name}_significant": v == SIGNIFICANT,
            }
        )
    de, delo, dehi = error_rate_diff(*errors)
    row.update(d_error_rate=de, d_error_lo=delo, d_error_hi=dehi, d_error_verdict=ci_verdict(delo, dehi))
    return row


def _reference_columns(qs: Sequence[float]) -> dict:
    """The difference columns of a reference row: no difference, verdict "reference"."""
    row: dict = {}
    for q in qs:
        name = pct_name(q)
        row.update({f"d_{name}_{k}": math.nan for k in ("ms", "lo", "hi", "pct", "pct_lo", "pct_hi")})
        row.update({f"d_{name}_verdict": REFERENCE, f"d_{name}_significant": False})
    row.update(d_error_rate=math.nan, d_error_lo=math.nan, d_error_hi=math.nan, d_error_verdict=REFERENCE, mw_p=math.nan, shift=REFERENCE)
    return row


# --------------------------------------------------------------------------- tables


def _endpoints(stats: RunStats) -> list[str]:
    return [e for e in ENDPOINT_ORDER if e in stats.endpoints] + [e for e in stats.endpoints if e not in ENDPOINT_ORDER]


def compare_groups(stats: RunStats, by: str = "region", reference: str | None = None, control: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Groups side by side per endpoint with differences against a reference group.

    by="region": reference = the fastest region by p50 (per endpoint), unless `reference`.
    by="variant": reference = `control` (or `reference`), else the first variant.
    Columns: endpoint, group, is_reference, reference, count, errors, error_rate, p50_ms,
    p95_ms, p99_ms, then the `differences` columns for (50, 95, 99) and the error rate
    (verdict "reference" on the reference row), then mw_p and shift (Mann-Whitney).
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
        ref_row = t.loc[ref]
        for g in present:
            r = t.loc[g]
            row = {
                "endpoint": ep,
                "group": g,
                "is_reference": g == ref,
                "reference": ref,
                "count": int(r["count"]),
                "errors": int(r["errors"]),
                "error_rate": float(r["error_rate"]),
                "p50_ms": r["p50_ms"],
                "p95_ms": r["p95_ms"],
                "p99_ms": r["p99_ms"],
            }
            if g == ref:
                row.update(_reference_columns(COMPARE_QS))
            else:
                vals = samples.get((g, ep), np.array([]))
                row.update(
                    differences(resample(vals, rng), ref_rs, COMPARE_QS, (int(r["errors"]), int(r["count"]), int(ref_row["errors"]), int(ref_row["count"])))
                )
                p = mann_whitney(vals, ref_vals, rng)
                row.update(mw_p=p, shift=verdict(p))
            rows.append(row)
    return pd.DataFrame(rows)


def compare_baseline(
    current: RunStats, baseline: RunStats, thresholds: Sequence[Threshold | str] | None = None, seed: int = 0, baseline_name: str = "the baseline"
) -> pd.DataFrame:
    """This run against a baseline run, per region × variant × endpoint, with regression verdicts.

    thresholds: `analysis.regression` thresholds (parsed or as text; None: its defaults).
    Columns: region, variant, endpoint, count, base_count, successes, base_successes; per q in
    COMPARE_QS and every gated percentile: pNN_ms, base_pNN_ms and the `differences`
    columns (now − before); error_rate, base_error_rate and the error-rate differences;
    mw_p, shift; status (regression|missing|improvement|ok|new), regression (bool), reasons
    (the failed checks, worst first, as text).
    """
    thresholds = parse_thresholds(thresholds)
    qs = sorted(set(COMPARE_QS) | set(gated_percentiles(thresholds)))
    rng = np.random.default_rng(seed)
    keys = ["region", "variant", "endpoint"]
    cur = current.summary().set_index(keys).to_dict("index")
    base = baseline.summary().set_index(keys).to_dict("index")
    cur_s = current.latencies(tuple(keys))
    base_s = baseline.latencies(tuple(keys))
    index = list(cur) + [k for k in base if k not in cur]
    empty = np.array([])
    rows = []
    for k in index:
        c, b = cur.get(k), base.get(k)
        row: dict = dict(zip(keys, k))
        a_vals, b_vals = cur_s.get(k, empty), base_s.get(k, empty)
        a_rs, b_rs = resample(a_vals, rng, qs), resample(b_vals, rng, qs)
        row.update(count=int(c["count"]) if c is not None else 0, base_count=int(b["count"]) if b is not None else 0, successes=a_rs.n, base_successes=b_rs.n)
        for i, q in enumerate(qs):
            row[f"{pct_name(q)}_ms"], row[f"base_{pct_name(q)}_ms"] = a_rs.exact[i], b_rs.exact[i]
        row["error_rate"] = float(c["error_rate"]) if c is not None else math.nan
        row["base_error_rate"] = float(b["error_rate"]) if b is not None else math.nan
        errors = (int(c["errors"]) if c is not None else 0, row["count"], int(b["errors"]) if b is not None else 0, row["base_count"])
        row.update(differences(a_rs, b_rs, qs, errors))
        p = mann_whitney(a_vals, b_vals, rng)
        row.update(mw_p=p, shift=verdict(p))
        rows.append(row)
    table = pd.DataFrame(rows)
    checks = gate(table, thresholds, baseline_name) if len(table) else []
    per_group: dict[tuple, list[dict]] = {}
    for c in checks:
        per_group.setdefault((c["region"], c["variant"], c["endpoint"]), []).append(c)
    status, reasons = [], []
    for row in table.to_dict("records"):
        mine = per_group.get((row["region"], row["variant"], row["endpoint"]), [])
        failed = [c for c in mine if c["passed"] is False]
        if row["base_count"] and not row["count"]:
            status.append("missing")
        elif not row["base_count"]:
            status.append("new")
        elif failed:
            status.append("regression")
        elif any(c["state"] == "improvement" for c in mine):
            status.append("improvement")
        else:
            status.append("ok")
        reasons.append(
            ", ".join(f"{c['metric'].replace('_', ' ')} {c['observed_text']} (limit {c['threshold_text'][2:]})" for c in failed if c["state"] == "regression")
        )
    if len(table):
        table["status"] = status
        table["regression"] = [s in ("regression", "missing") for s in status]
        table["reasons"] = reasons
    return table


@dataclass
class BaselineComparison:
    """A run against a baseline run: the per-group table and the regression checks."""

    baseline_id: str
    table: pd.DataFrame  # compare_baseline's table
    checks: list[dict]  # analysis.regression.gate: one per group × gated metric
    thresholds: list[Threshold]


def against_baseline(
    current: RunStats, baseline: RunStats, thresholds: Sequence[Threshold | str] | None = None, baseline_id: str = "the baseline", seed: int = 0
) -> BaselineComparison:
    """compare_baseline and the gate's checks in one: what the report and the verdict show."""
    thresholds = parse_thresholds(thresholds)
    table = compare_baseline(current, baseline, thresholds, seed, baseline_id)
    checks = gate(table, thresholds, baseline_id) if len(table) else []
    return BaselineComparison(baseline_id, table, checks, thresholds)


def compare_runs(runs: Sequence[RunStats], names: Sequence[str] | None = None, seed: int = 0) -> pd.DataFrame:
    """Several runs side by side per region × variant × endpoint, against the first run.

    Long format: one row per (region, variant, endpoint, run) with count, errors, error_rate,
    p50/p95/p99, the `differences` columns against the first run's same group (verdict
    "reference" on the first run's rows), mw_p and shift.
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
    empty = np.array([])
    rows = []
    for k in all_keys:
        first_vals = samples[0].get(k, empty)
        first_rs = resample(first_vals, rng)
        first = summaries[0].loc[k] if k in summaries[0].index else None
        for i, (s, name) in enumerate(zip(summaries, names)):
            row = dict(zip(keys, k))
            row["run"] = name
            r = s.loc[k] if k in s.index else None
            if r is not None:
                row.update(
                    count=int(r["count"]),
                    errors=int(r["errors"]),
                    error_rate=float(r["error_rate"]),
                    p50_ms=float(r["p50_ms"]),
                    p95_ms=float(r["p95_ms"]),
                    p99_ms=float(r["p99_ms"]),
                )
            else:
                row.update(count=0, errors=0, error_rate=math.nan, p50_ms=math.nan, p95_ms=math.nan, p99_ms=math.nan)
            if i == 0:
                row.update(_reference_columns(COMPARE_QS))
            else:
                vals = samples[i].get(k, empty)
                row.update(
                    differences(
                        resample(vals, rng),
                        first_rs,
                        COMPARE_QS,
                        (row["errors"], row["count"], int(first["errors"]) if first is not None else 0, int(first["count"]) if first is not None else 0),
                    )
                )
                p = mann_whitney(vals, first_vals, rng)
                row.update(mw_p=p, shift=verdict(p))
            rows.append(row)
    return pd.DataFrame(rows)
