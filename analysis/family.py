"""The report's family of comparisons: variants within regions, Holm-adjusted p, comparisons.csv.

    family = comparison_family(stats, control="a")   # {REGIONS: …, VARIANTS: …, WITHIN: …}, Holm-adjusted
    write_comparisons_csv(family, run_dir)            # every comparison, long format

**Why within regions.** When regions differ in speed, a pooled a-vs-b comparison mixes
region with variant (Simpson's paradox: a variant served more from a slow region looks slow),
and a variant slower in one region only is diluted by the others. So beside the pooled view,
each region's variants are compared against that region's own control — the same
`compare_groups` table, on a one-region slice of the statistics (`RegionSlice`).

**Why Holm.** One report holds dozens of Mann-Whitney tests (every region, every variant,
every region × variant, per endpoint); at p < 0.05 each, some come out "significant" by
chance alone. `adjust` takes every p-value of the family (every non-reference row of those
tables) and Holm-adjusts them together (step-down Bonferroni: the i-th smallest of m is
multiplied by m − i + 1, then made monotone, capped at 1). Holm controls the family-wise
error rate whatever the dependence between the tests and is uniformly more powerful than
plain Bonferroni. The distribution-shift verdict then comes from the adjusted p; the raw p
stays beside it (`mw_p`, `mw_p_holm`). Comparisons against a baseline run are a separate
question (this run vs another) and are not part of the family.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.compare import COMPARE_QS, compare_groups, verdict
from analysis.stats import DETAIL, RunStats

COMPARISONS_CSV = "comparisons.csv"
COMPARISONS_COLUMNS = (
    "comparison",
    "within",
    "endpoint",
    "reference",
    "subject",
    "metric",
    "reference_value",
    "subject_value",
    "delta",
    "delta_pct",
    "ci_lo",
    "ci_hi",
    "verdict",
    "p_raw",
    "p_holm",
    "shift",
)
#: The distribution-shift verdict column of `compare_groups` tables.
SHIFT = "shift"
#: The family's tables: regions per endpoint, variants pooled, variants within each region.
REGIONS, VARIANTS, WITHIN = "regions", "variants", "variants within region"


def comparison_family(stats: RunStats, control: str | None = None, seed: int = 0) -> dict[str, pd.DataFrame | None]:
    """Every comparison the report shows, Holm-adjusted together (see `adjust`). Within
    regions only when there are several regions (with one, it is the pooled view again)."""
    family = {
        REGIONS: compare_groups(stats, "region", seed=seed),
        VARIANTS: compare_groups(stats, "variant", control=control, seed=seed) if stats.has_variants else None,
        WITHIN: compare_within_regions(stats, control, seed) if len(stats.regions) > 1 else None,
    }
    adjust(family)
    return family


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values, in the input's order (NaN stays NaN and does not count in m)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


class RegionSlice:
    """One region of a `RunStats`, read the way `compare_groups(by="variant")` reads a run:
    its variant × endpoint table and its successful latencies per (variant, endpoint)."""

    def __init__(self, stats: RunStats, region: str, latencies: Mapping[tuple, np.ndarray]):
        self.region = region
        self.regions = [region]
        self.variants = stats.variants
        self.endpoints = stats.endpoints
        detail = stats.level(DETAIL)
        self._table = detail[detail["region"] == region].reset_index(drop=True)
        self._latencies = {(v, e): vals for (r, v, e), vals in latencies.items() if r == region}

    def level(self, name: str) -> pd.DataFrame:
        if name != "variant·endpoint":
            raise ValueError(f"a region slice has only the variant·endpoint level, not {name!r}")
        return self._table

    def latencies(self, by: Sequence[str]) -> dict[tuple, np.ndarray]:
        if tuple(by) != ("variant", "endpoint"):
            raise ValueError(f"a region slice groups latencies by variant and endpoint, not {by}")
        return self._latencies

    @property
    def variants_present(self) -> list[str]:
        seen = set(self._table.loc[self._table["count"] > 0, "variant"])
        return [v for v in self.variants if v in seen]


def compare_within_regions(stats: RunStats, control: str | None = None, seed: int = 0) -> pd.DataFrame | None:
    """Per region, its variants against its own control (or its first variant), per endpoint:
    `compare_groups` columns with `region` first. None when no region has two variants."""
    if not stats.has_variants:
        return None
    latencies = stats.latencies(("region", "variant", "endpoint"))
    frames = []
    for region in stats.regions:
        view = RegionSlice(stats, region, latencies)
        if len(view.variants_present) < 2:
            continue
        df = compare_groups(view, "variant", control=control, seed=seed)  # type: ignore[arg-type]
        if len(df):
            df.insert(0, "region", region)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else None


def adjust(tables: Mapping[str, pd.DataFrame | None]) -> int:
    """Holm-adjust the Mann-Whitney p-values of every table together, in place: adds
    `mw_p_holm` and sets the shift verdict from it (reference rows keep theirs). Returns m,
    the number of p-values in the family."""
    present = [df for df in tables.values() if df is not None and len(df)]
    if not present:
        return 0
    raw = np.concatenate([df["mw_p"].to_numpy(dtype=float) for df in present])
    adjusted = holm(raw)
    start = 0
    for df in present:
        part = adjusted[start : start + len(df)]
        start += len(df)
        df["mw_p_holm"] = part
        df[SHIFT] = [v if ref else verdict(p) for v, ref, p in zip(df[SHIFT], df["is_reference"], part)]
    return int((~np.isnan(raw)).sum())


def comparisons_long(tables: Mapping[str, pd.DataFrame | None]) -> pd.DataFrame:
    """Every comparison of the family, one row per (pair of groups, endpoint, metric):
    p50/p95/p99 differences (ms, with their 95% interval and the verdict from it) and the
    error-rate difference (fraction); the raw and Holm p of the pair's Mann-Whitney test
    (the distribution shift) on the latency rows."""
    rows = []
    for name, df in tables.items():
        if df is None or not len(df):
            continue
        for r in df[~df["is_reference"]].to_dict("records"):
            base = {"comparison": name, "within": r.get("region", ""), "endpoint": r["endpoint"], "reference": r["reference"], "subject": r["group"]}
            ref = df[(df["endpoint"] == r["endpoint"]) & (df["group"] == r["reference"]) & (df["region"] == r["region"] if "region" in df else True)].iloc[0]
            p, p_adj = r["mw_p"], r.get("mw_p_holm", math.nan)
            for q in COMPARE_QS:
                rows.append(
                    {
                        **base,
                        "metric": f"p{q}",
                        "reference_value": ref[f"p{q}_ms"],
                        "subject_value": r[f"p{q}_ms"],
                        "delta": r[f"d_p{q}_ms"],
                        "delta_pct": r[f"d_p{q}_pct"],
                        "ci_lo": r[f"d_p{q}_lo"],
                        "ci_hi": r[f"d_p{q}_hi"],
                        "verdict": r[f"d_p{q}_verdict"],
                        "p_raw": p,
                        "p_holm": p_adj,
                        "shift": r[SHIFT],
                    }
                )
            rows.append(
                {
                    **base,
                    "metric": "error_rate",
                    "reference_value": ref["error_rate"],
                    "subject_value": r["error_rate"],
                    "delta": r["d_error_rate"],
                    "delta_pct": math.nan,
                    "ci_lo": r["d_error_lo"],
                    "ci_hi": r["d_error_hi"],
                    "verdict": r["d_error_verdict"],
                    "p_raw": math.nan,
                    "p_holm": math.nan,
                    "shift": "",
                }
            )
    return pd.DataFrame(rows, columns=list(COMPARISONS_COLUMNS))


def comparisons_csv_text(tables: Mapping[str, pd.DataFrame | None]) -> str:
    return comparisons_long(tables).to_csv(index=False, float_format="%.6g")


def write_comparisons_csv(tables: Mapping[str, pd.DataFrame | None], run_dir: Path | str) -> Path:
    path = Path(run_dir) / COMPARISONS_CSV
    path.write_text(comparisons_csv_text(tables), encoding="utf-8")
    return path
