"""Statistics over a run's requests and conversations.

`percentiles(values, qs)` is THE percentile function of the project: the report, the SLO
verdict, the live UI and the capacity search all call it, so a "p95" means the same thing
everywhere. Exact percentiles from raw values, numpy's default ("linear") interpolation.

    from analysis.load import load_run
    from analysis.stats import compute_stats
    st = compute_stats(load_run(run_dir, warmup_s=10))
    st.requests          # per region × variant × endpoint, plus roll-ups (level column)
    st.summary()         # the summary.csv rows
    st.conversations     # per region × variant, plus roll-ups
    st.by_turn, st.timeseries, st.errors_by_status, st.errors_by_kind, st.top_errors

Everything is computed with integer group codes and numpy (one sort of the latencies, a
radix sort of small group codes per roll-up level), never a Python loop over rows, so 10M
rows take seconds. Latency percentiles are over successful requests only; failed requests
are counted and their latencies reported separately.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from loadtest.records import ENDED_BY

#: The percentiles reported everywhere (qs in 0..100).
PERCENTILES: tuple[float, ...] = (50, 75, 90, 95, 99, 99.9)

#: How percentiles are computed, stated in the report.
PERCENTILE_METHOD = (
    "Exact percentiles over the raw latency of every successful request (no histogram "
    "buckets, no sampling), linear interpolation between the two closest ranks "
    "(numpy's default, Hyndman & Fan type 7). Failed requests are counted separately and "
    "their latencies are not mixed into the percentiles."
)

#: Label of a rolled-up dimension ("all regions", "all variants", "all endpoints").
ALL = "(all)"

#: Endpoint order in tables (unknown endpoints follow, alphabetically).
ENDPOINT_ORDER = ("create", "respond", "close")

#: Roll-up levels of the request table: the dimensions kept at each level.
LEVELS: dict[str, tuple[str, ...]] = {
    "region·variant·endpoint": ("region", "variant", "endpoint"),
    "region·endpoint": ("region", "endpoint"),
    "variant·endpoint": ("variant", "endpoint"),
    "endpoint": ("endpoint",),
    "overall": (),
}
DETAIL = "region·variant·endpoint"

#: The columns of summary.csv, in order.
SUMMARY_COLUMNS = (
    "region", "variant", "endpoint", "count", "errors", "error_rate", "rps", "mean_ms",
    "min_ms", "p50_ms", "p75_ms", "p90_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms",
)


def pct_name(q: float) -> str:
    """Column name of a percentile: 50 → 'p50', 99.9 → 'p999'."""
    return "p" + (f"{q:g}").replace(".", "")


def percentiles(values: Iterable[float], qs: Iterable[float] = PERCENTILES, *,
                assume_sorted: bool = False) -> np.ndarray:
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
    if ((q < 0) | (q > 100)).any():
        raise ValueError("Percentiles must be in the range [0, 100]")
    # numpy's linear method, step for step (so results are bit-identical).
    quantiles = np.true_divide(q, 100)
    virtual = (n - 1) * quantiles
    prev = np.floor(virtual)
    above = virtual >= n - 1
    prev_i = np.where(above, n - 1, prev).astype(np.intp)
    next_i = np.where(above, n - 1, prev + 1).astype(np.intp)
    gamma = virtual - prev
    a, b = v[prev_i], v[next_i]
    diff = b - a
    out = a + diff * gamma
    hi = gamma >= 0.5
    out[hi] = (b - diff * (1 - gamma))[hi]
    return out


# --------------------------------------------------------------------------- grouping

def _small_int(codes: np.ndarray, n: int) -> np.ndarray:
    """Group codes in the narrowest dtype: numpy's stable sort is a radix sort ≤ 16 bits."""
    if n < 2 ** 15:
        return codes.astype(np.int16, copy=False)
    return codes.astype(np.int32 if n < 2 ** 31 else np.int64, copy=False)


class SortedValues:
    """Values sorted once, then cut into groups for any grouping and any subset of rows.

    Each cut costs O(n) plus a radix sort of small integer group codes, instead of a new
    O(n log n) sort: this is what keeps a dozen roll-ups over 10M rows cheap. With
    `presorted=True` the values (and the keys and masks given later) are already in
    ascending value order, which also keeps every cut a sequential scan.
    """

    def __init__(self, values: np.ndarray, presorted: bool = False):
        self.values = np.asarray(values, dtype=float)
        self.order = None if presorted else np.argsort(self.values, kind="quicksort")

    def groups(self, keys: np.ndarray, ngroups: int, mask: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(values of the masked rows sorted by (key, value), group start offsets [ngroups + 1])."""
        if self.order is None:
            k = keys if mask is None else keys[mask]
            v = self.values if mask is None else self.values[mask]
        else:
            o = self.order if mask is None else self.order[mask[self.order]]
            k, v = keys[o], self.values[o]
        k = _small_int(k, ngroups)
        o2 = np.argsort(k, kind="stable")
        counts = np.bincount(k, minlength=ngroups)[:ngroups]
        bounds = np.concatenate(([0], np.cumsum(counts)))
        return v[o2], bounds


def grouped_percentiles(keys: np.ndarray, ngroups: int, values: np.ndarray | None = None,
                        qs: Sequence[float] = PERCENTILES, sorter: SortedValues | None = None,
                        mask: np.ndarray | None = None) -> np.ndarray:
    """Percentiles per group (keys in 0..ngroups-1) of the masked rows: (ngroups, len(qs))."""
    sorter = sorter or SortedValues(values)
    sv, bounds = sorter.groups(keys, ngroups, mask)
    out = np.full((ngroups, len(qs)), np.nan)
    for g in np.flatnonzero(np.diff(bounds)):
        out[g] = percentiles(sv[bounds[g]:bounds[g + 1]], qs, assume_sorted=True)
    return out


def _describe(keys: np.ndarray, ngroups: int, sorter: SortedValues, mask: np.ndarray | None = None,
              qs: Sequence[float] = PERCENTILES) -> dict[str, np.ndarray]:
    """count, mean, min, max and percentiles of the sorter's values per group (masked rows)."""
    k = keys if mask is None else keys[mask]
    v = sorter.values if mask is None else sorter.values[mask]
    count = np.bincount(k, minlength=ngroups)[:ngroups].astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(k, weights=v, minlength=ngroups)[:ngroups] / count
    out = {"n": count, "mean": mean}
    pct = np.full((ngroups, len(qs)), np.nan)
    mn = np.full(ngroups, np.nan)
    mx = np.full(ngroups, np.nan)
    if len(k):
        sv, bounds = sorter.groups(keys, ngroups, mask)
        for g in np.flatnonzero(count):
            sl = sv[bounds[g]:bounds[g + 1]]
            pct[g] = percentiles(sl, qs, assume_sorted=True)
            mn[g], mx[g] = sl[0], sl[-1]
    out["min"], out["max"] = mn, mx
    for i, q in enumerate(qs):
        out[pct_name(q)] = pct[:, i]
    return out


@dataclass
class Dims:
    """Universe of regions, variants and endpoints, and each row's index into it."""

    regions: list[str]
    variants: list[str]
    endpoints: list[str]
    ri: np.ndarray
    vi: np.ndarray
    ei: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"region": len(self.regions), "variant": len(self.variants), "endpoint": len(self.endpoints)}

    def labels(self, dim: str) -> list[str]:
        return {"region": self.regions, "variant": self.variants, "endpoint": self.endpoints}[dim]

    def index(self, dim: str) -> np.ndarray:
        return {"region": self.ri, "variant": self.vi, "endpoint": self.ei}[dim]

    def level_keys(self, dims: Sequence[str]) -> tuple[np.ndarray, int]:
        """Group code of every row at a roll-up level (negative where a dimension is unknown)."""
        key = np.zeros(len(self.ri), dtype=np.int64)
        n = 1
        for d in dims:
            size = self.sizes()[d]
            key = key * size + self.index(d)
            n *= size
        if dims:
            bad = np.zeros(len(self.ri), dtype=bool)
            for d in dims:
                bad |= self.index(d) < 0
            key[bad] = -1
        return key, n

    def level_labels(self, dims: Sequence[str]) -> pd.DataFrame:
        """Label columns (region, variant, endpoint) of every group of a level, ALL elsewhere."""
        grids = [self.labels(d) for d in dims]
        if grids:
            idx = pd.MultiIndex.from_product(grids, names=list(dims)).to_frame(index=False)
        else:
            idx = pd.DataFrame(index=[0])
        return pd.DataFrame({d: (idx[d].astype(str).to_numpy() if d in dims else np.full(len(idx), ALL, dtype=object))
                             for d in ("region", "variant", "endpoint")})


def _map_categories(col: pd.Series, universe: list[str]) -> np.ndarray:
    """Row index into `universe` for a categorical column."""
    cats = [str(c) for c in col.cat.categories]
    lut = np.array([universe.index(c) for c in cats] + [-1], dtype=np.int64)
    codes = col.cat.codes.to_numpy()
    return lut[codes]  # code -1 (missing) → last entry → -1


def make_dims(requests: pd.DataFrame, regions: Sequence[str] = (), variants: Sequence[str] = ()) -> Dims:
    """The group universe: declared regions/variants first, then any seen in the data."""
    def universe(col: pd.Series, declared: Sequence[str], order: Sequence[str] = ()) -> list[str]:
        out = [str(x) for x in declared]
        if len(col):
            codes = col.cat.codes.to_numpy()
            seen = [str(c) for c in col.cat.categories[np.unique(codes[codes >= 0])]]
        else:
            seen = []
        for s in sorted(seen, key=lambda s: (order.index(s) if s in order else len(order), s)):
            if s not in out:
                out.append(s)
        return out

    for c in ("region", "variant", "endpoint"):
        if requests[c].isna().any():
            requests[c] = requests[c].cat.add_categories([""]).fillna("") if "" not in requests[c].cat.categories else requests[c].fillna("")
    reg = universe(requests["region"], regions)
    var = universe(requests["variant"], variants) or [""]
    ep = universe(requests["endpoint"], [], ENDPOINT_ORDER)
    return Dims(reg, var, ep,
                _map_categories(requests["region"], reg),
                _map_categories(requests["variant"], var),
                _map_categories(requests["endpoint"], ep))


# --------------------------------------------------------------------------- results

@dataclass
class RunStats:
    """All statistics of one run (what the report, summary.csv and comparisons show)."""

    requests: pd.DataFrame
    conversations: pd.DataFrame
    by_turn: pd.DataFrame
    timeseries: pd.DataFrame
    errors_by_status: pd.DataFrame
    errors_by_kind: pd.DataFrame
    top_errors: pd.DataFrame
    ecdf: dict
    regions: list[str]
    variants: list[str]
    endpoints: list[str]
    window: tuple[float, float]
    duration_s: float
    warmup_s: float
    total_requests: int
    total_errors: int
    distinct_errors: int = 0
    bin_s: float = 0.0
    method: str = PERCENTILE_METHOD
    notes: list[str] = field(default_factory=list)
    rows: Rows | None = field(default=None, repr=False)
    dims: Dims | None = field(default=None, repr=False)

    def level(self, name: str) -> pd.DataFrame:
        return self.requests[self.requests["level"] == name].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """summary.csv: one row per region × variant × endpoint, SUMMARY_COLUMNS."""
        df = self.level(DETAIL)
        return df.loc[:, list(SUMMARY_COLUMNS)].reset_index(drop=True)

    @property
    def has_variants(self) -> bool:
        return self.variants != [""]

    def latencies(self, by: Sequence[str], ok: bool = True) -> dict[tuple, np.ndarray]:
        """Sorted latencies of successful (or failed) requests per group of the `by` dims.

        by: a subset of ("region", "variant", "endpoint"), e.g. ("region", "endpoint");
        keys are tuples of labels in that order. Groups without requests are left out.
        """
        if self.rows is None or self.dims is None or not len(self.rows):
            return {}
        dims = [d for d in ("region", "variant", "endpoint") if d in by]
        key, n = self.dims.level_keys(dims)
        mask = (self.rows.ok if ok else ~self.rows.ok) & (key >= 0)
        sv, bounds = SortedValues(self.rows.rt, presorted=True).groups(key, n, mask)
        labels = self.dims.level_labels(dims)
        out = {}
        for g in np.flatnonzero(np.diff(bounds)):
            out[tuple(labels.iloc[g][d] for d in by)] = sv[bounds[g]:bounds[g + 1]]
        return out


@dataclass
class Rows:
    """The request columns as numpy arrays, permuted into ascending latency order.

    Group statistics do not depend on row order, and in latency order every group's
    values come out already sorted: one argsort of the latencies serves every table.
    """

    rt: np.ndarray
    ok: np.ndarray
    ts: np.ndarray
    turn: np.ndarray
    status: np.ndarray
    kind: np.ndarray
    kind_cats: np.ndarray
    err: np.ndarray
    err_cats: np.ndarray
    cid: np.ndarray
    cid_empty: np.ndarray  # per conversation_id category: is it the empty string

    def __len__(self) -> int:
        return len(self.rt)


def _codes(col: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Category codes and categories (object array of str) of a column."""
    if col is None:
        return np.full(n, -1, dtype=np.int32), np.array([], dtype=object)
    if col.dtype != "category":
        col = col.astype(str).astype("category")
    return col.cat.codes.to_numpy(), col.cat.categories.to_numpy(dtype=object, na_value="")


def _sorted_rows(req: pd.DataFrame, dims: Dims) -> tuple[Rows, Dims]:
    rt = req["response_time_ms"].to_numpy(dtype=float)
    order = np.argsort(rt, kind="quicksort")  # the one O(n log n) sort

    def col(name: str, dtype=None, default=0) -> np.ndarray:
        if name not in req:
            return np.full(len(order), default, dtype=dtype or np.int32)
        return req[name].to_numpy(dtype=dtype)[order]

    n = len(req)
    kind, kind_cats = _codes(req.get("error_kind"), n)
    err, err_cats = _codes(req.get("error"), n)
    cid, cid_cats = _codes(req.get("conversation_id"), n)
    rows = Rows(
        rt=rt[order], ok=(req["ok"].to_numpy() == 1)[order], ts=col("timestamp", float),
        turn=col("turn", np.int64, -1), status=col("status", np.int64, 0),
        kind=kind[order], kind_cats=kind_cats, err=err[order], err_cats=err_cats,
        cid=cid[order], cid_empty=(cid_cats == ""),
    )
    small = lambda a: a.astype(np.int32)[order]  # noqa: E731
    pdims = Dims(dims.regions, dims.variants, dims.endpoints, small(dims.ri), small(dims.vi), small(dims.ei))
    return rows, pdims


def compute_stats(run, turn_limit: int = 50, max_bins: int = 120, top_errors: int = 25) -> RunStats:
    """Statistics of a loaded run (`analysis.load.Run`)."""
    req = run.requests
    dims = make_dims(req, run.meta.get("regions") or [], run.meta.get("variants") or [])
    start, end = run.window
    if not math.isfinite(start):
        start = float(req["timestamp"].min()) if len(req) else 0.0
    if not math.isfinite(end):
        end = start
    duration = max(end - start, 1e-9)

    rows, dims = _sorted_rows(req, dims)
    sorter = SortedValues(rows.rt, presorted=True)
    requests = _request_table(dims, rows.ok, duration, sorter)
    errs_status, errs_kind = _error_breakdowns(rows, dims)
    top, distinct = _top_errors(rows, dims, top_errors)
    by_turn = _by_turn(rows, dims, sorter, turn_limit)
    ts, bin_s = _timeseries(rows, dims, sorter, start, end, max_bins)
    conv = _conversation_table(run.conversations, rows, dims, requests)
    ecdf = _ecdf(dims, rows.ok, sorter)
    notes = []
    if run.warmup_s:
        notes.append(f"The first {run.warmup_s:g} s of the run (warm-up) are excluded.")
    return RunStats(
        requests=requests, conversations=conv, by_turn=by_turn, timeseries=ts,
        errors_by_status=errs_status, errors_by_kind=errs_kind, top_errors=top, ecdf=ecdf,
        regions=dims.regions, variants=dims.variants, endpoints=dims.endpoints,
        window=(start, end), duration_s=duration if len(req) else max(end - start, 0.0),
        warmup_s=run.warmup_s, total_requests=int(len(req)), total_errors=int((~rows.ok).sum()),
        distinct_errors=distinct, bin_s=bin_s, notes=notes, rows=rows, dims=dims,
    )


def _request_table(dims: Dims, ok: np.ndarray, duration: float, sorter: SortedValues) -> pd.DataFrame:
    valid = (dims.ri >= 0) & (dims.vi >= 0) & (dims.ei >= 0)
    succ = ok & valid
    fail = ~ok & valid
    frames = []
    for level, level_dims in LEVELS.items():
        key, n = dims.level_keys(level_dims)
        count = np.bincount(key[valid], minlength=n)[:n]
        s = _describe(key, n, sorter, succ)
        f = _describe(key, n, sorter, fail, qs=(50, 95))
        df = dims.level_labels(level_dims)
        df.insert(0, "level", level)
        errors = count - s["n"]
        with np.errstate(invalid="ignore", divide="ignore"):
            df["count"] = count
            df["ok_count"] = s["n"]
            df["errors"] = errors
            df["error_rate"] = np.where(count > 0, errors / np.maximum(count, 1), np.nan)
        df["rps"] = count / duration
        df["mean_ms"] = s["mean"]
        df["min_ms"] = s["min"]
        for q in PERCENTILES:
            df[f"{pct_name(q)}_ms"] = s[pct_name(q)]
        df["max_ms"] = s["max"]
        df["fail_mean_ms"] = f["mean"]
        df["fail_p50_ms"] = f["p50"]
        df["fail_p95_ms"] = f["p95"]
        df["fail_max_ms"] = f["max"]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def _error_breakdowns(rows: Rows, dims: Dims) -> tuple[pd.DataFrame, pd.DataFrame]:
    fail = ~rows.ok & (dims.ri >= 0) & (dims.vi >= 0) & (dims.ei >= 0)
    labels = dims.level_labels(("region", "variant", "endpoint"))
    key, n = dims.level_keys(("region", "variant", "endpoint"))
    key = key[fail]
    out = []
    for col, values in (("status", rows.status[fail]), ("error_kind", rows.kind[fail])):
        if not fail.any():
            out.append(pd.DataFrame(columns=["region", "variant", "endpoint", col, "count"]))
            continue
        uniq, inv = np.unique(values, return_inverse=True)
        combo = key * len(uniq) + inv
        cnt = np.bincount(combo, minlength=n * len(uniq))
        nz = np.flatnonzero(cnt)
        g, u = np.divmod(nz, len(uniq))
        df = labels.iloc[g].reset_index(drop=True)
        if col == "error_kind":
            cats = np.concatenate([rows.kind_cats, np.array([""], dtype=object)])
            vals = cats[uniq[u]]
            vals = np.where(vals == "", "other", vals)
        else:
            vals = uniq[u].astype(int)
        df[col] = vals
        df["count"] = cnt[nz]
        if col == "error_kind":
            df = df.groupby(["region", "variant", "endpoint", col], as_index=False, sort=False)["count"].sum()
        out.append(df.sort_values("count", ascending=False, kind="stable").reset_index(drop=True))
    return out[0], out[1]


_NORMALISE = [
    (re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}"), "<id>"),
    (re.compile(r"\b[0-9a-fA-F]{12,}\b"), "<id>"),
    (re.compile(r"\b\d{4,}\b"), "<n>"),
]


def normalise_error(msg: str, limit: int = 200) -> str:
    """An error message with ids and numbers replaced, so similar errors group together."""
    s = str(msg)
    for rx, rep in _NORMALISE:
        s = rx.sub(rep, s)
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _top_errors(rows: Rows, dims: Dims, limit: int) -> tuple[pd.DataFrame, int]:
    """The most frequent failures: endpoint, status, kind, normalised message, count, regions."""
    cols = ["endpoint", "status", "error_kind", "message", "count", "share", "regions", "example"]
    fail = ~rows.ok
    if not fail.any():
        return pd.DataFrame(columns=cols), 0
    cats = np.concatenate([rows.err_cats, np.array([""], dtype=object)])
    codes = rows.err[fail]
    used, inv = np.unique(codes, return_inverse=True)
    # Normalise each distinct message once (bounded: messages beyond 200k distinct share a bucket).
    norm_of_used = np.array([normalise_error(cats[c]) if i < 200_000 else "(other messages)"
                             for i, c in enumerate(used)], dtype=object)
    norm_u, norm_inv = np.unique(norm_of_used, return_inverse=True)
    norm_code = norm_inv[inv]
    status = rows.status[fail]
    kind_cats = np.concatenate([rows.kind_cats, np.array([""], dtype=object)])
    kind = rows.kind[fail]
    ep = dims.ei[fail]
    frame = pd.DataFrame({"ep": ep, "status": status, "kind": kind, "msg": norm_code, "ri": dims.ri[fail],
                          "raw": inv})
    g = frame.groupby(["ep", "status", "kind", "msg"], sort=False)
    counts = g.size().sort_values(ascending=False, kind="stable")
    distinct = len(counts)
    top = counts.head(limit)
    rows = []
    total = int(fail.sum())
    for (e, st, k, m), c in top.items():
        sel = frame[(frame.ep == e) & (frame.status == st) & (frame.kind == k) & (frame.msg == m)]
        reg_counts = np.bincount(sel.ri[sel.ri >= 0], minlength=len(dims.regions))
        regions = ", ".join(f"{dims.regions[i]} ({reg_counts[i]:,})" for i in np.argsort(-reg_counts) if reg_counts[i])
        example = str(cats[used[int(sel.raw.iloc[0])]])
        rows.append({
            "endpoint": dims.endpoints[e] if e >= 0 else "",
            "status": int(st),
            "error_kind": (kind_cats[k] or "other") if k >= 0 else "other",
            "message": str(norm_u[m]) or "(no message)",
            "count": int(c),
            "share": c / total,
            "regions": regions,
            "example": example[:300],
        })
    return pd.DataFrame(rows, columns=cols), distinct


def _by_turn(rows: Rows, dims: Dims, sorter: SortedValues, turn_limit: int) -> pd.DataFrame:
    """respond p50/p95/p99 per turn number, per region × variant and per region (all variants)."""
    cols = ["region", "variant", "turn", "count", "p50_ms", "p95_ms", "p99_ms"]
    if "respond" not in dims.endpoints:
        return pd.DataFrame(columns=cols)
    turn = rows.turn
    sel = (rows.ok & (dims.ei == dims.endpoints.index("respond")) & (turn >= 1) & (turn <= turn_limit)
           & (dims.ri >= 0) & (dims.vi >= 0))
    if not sel.any():
        return pd.DataFrame(columns=cols)
    tmax = int(turn[sel].max())
    t0 = np.clip(turn.astype(np.int64) - 1, 0, tmax - 1)
    frames = []
    nr, nv = len(dims.regions), len(dims.variants)
    for with_variant in ((True, False) if dims.variants != [""] else (True,)):
        if with_variant:
            key = (dims.ri * nv + dims.vi) * tmax + t0
            n = nr * nv * tmax
        else:
            key = dims.ri * tmax + t0
            n = nr * tmax
        d = _describe(key, n, sorter, sel, qs=(50, 95, 99))
        nz = np.flatnonzero(d["n"])
        if with_variant:
            rv, tt = np.divmod(nz, tmax)
            r, v = np.divmod(rv, nv)
            var = np.array(dims.variants, dtype=object)[v]
        else:
            r, tt = np.divmod(nz, tmax)
            var = np.full(len(nz), ALL, dtype=object)
        frames.append(pd.DataFrame({
            "region": np.array(dims.regions, dtype=object)[r], "variant": var, "turn": tt + 1,
            "count": d["n"][nz], "p50_ms": d["p50"][nz], "p95_ms": d["p95"][nz], "p99_ms": d["p99"][nz],
        }))
    return pd.concat(frames, ignore_index=True)


_NICE_BINS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)


def bin_width(duration_s: float, max_bins: int = 120) -> float:
    """A round time-bin width giving at most `max_bins` bins over `duration_s`."""
    for w in _NICE_BINS:
        if duration_s / w <= max_bins:
            return float(w)
    return float(math.ceil(duration_s / max_bins))


def _timeseries(rows: Rows, dims: Dims, sorter: SortedValues,
                start: float, end: float, max_bins: int) -> tuple[pd.DataFrame, float]:
    """Per region (and all regions) per time bin: throughput, error rate, respond p50/p95/p99."""
    cols = ["region", "t", "count", "errors", "rps", "error_rate", "p50_ms", "p95_ms", "p99_ms"]
    if not len(rows):
        return pd.DataFrame(columns=cols), 1.0
    ok = rows.ok
    duration = max(end - start, 1e-9)
    # Enough requests per bin for a meaningful percentile: on average ≥ ~200 latency
    # samples per region per bin, between 10 and max_bins bins.
    lat_ep0 = dims.endpoints.index("respond") if "respond" in dims.endpoints else None
    n_lat = int((rows.ok & (dims.ei == lat_ep0)).sum()) if lat_ep0 is not None else int(rows.ok.sum())
    per_region = n_lat / max(len(dims.regions), 1)
    max_bins = int(min(max_bins, max(10, per_region // 200)))
    w = bin_width(duration, max_bins)
    nb = max(1, int(math.ceil(duration / w)))
    ts = rows.ts
    b = np.clip(((ts - start) // w).astype(np.int64), 0, nb - 1)
    valid = dims.ri >= 0
    nr = len(dims.regions)
    lat_ep = dims.endpoints.index("respond") if "respond" in dims.endpoints else None
    frames = []
    for per_region in (True, False):
        r = dims.ri if per_region else np.zeros(len(ts), dtype=np.int64)
        n_r = nr if per_region else 1
        key = r * nb + b
        n = n_r * nb
        count = np.bincount(key[valid], minlength=n)[:n]
        errors = np.bincount(key[valid & ~ok], minlength=n)[:n]
        lat = valid & ok if lat_ep is None else valid & ok & (dims.ei == lat_ep)
        d = _describe(key, n, sorter, lat, qs=(50, 95, 99))
        gi = np.arange(n)
        rr, bb = np.divmod(gi, nb)
        width = np.minimum(w, duration - bb * w)
        width = np.where(width > 0, width, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            frames.append(pd.DataFrame({
                "region": np.array(dims.regions, dtype=object)[rr] if per_region else np.full(n, ALL, dtype=object),
                "t": bb * w, "count": count, "errors": errors, "rps": count / width,
                "error_rate": np.where(count > 0, errors / np.maximum(count, 1), np.nan),
                "p50_ms": d["p50"], "p95_ms": d["p95"], "p99_ms": d["p99"],
            }))
    return pd.concat(frames, ignore_index=True), w


#: Quantile grid of the ECDF curves (dense in the tail).
ECDF_QS = np.unique(np.concatenate([np.linspace(0, 90, 181), np.linspace(90, 99, 91),
                                    np.linspace(99, 99.9, 46), np.linspace(99.9, 100, 11)]))


def _ecdf(dims: Dims, ok: np.ndarray, sorter: SortedValues) -> dict:
    """Per endpoint, per region: latency at each q of ECDF_QS (bounded size for the charts)."""
    out: dict = {}
    valid = ok & (dims.ri >= 0) & (dims.ei >= 0)
    nr, ne = len(dims.regions), len(dims.endpoints)
    key = dims.ei * nr + dims.ri
    grid = grouped_percentiles(key, ne * nr, qs=ECDF_QS, sorter=sorter, mask=valid)
    counts = np.bincount(key[valid], minlength=ne * nr)
    for e, ep in enumerate(dims.endpoints):
        out[ep] = {dims.regions[r]: (ECDF_QS, grid[e * nr + r]) for r in range(nr) if counts[e * nr + r]}
    return out


def _conversation_table(conv: pd.DataFrame, rows: Rows, dims: Dims, requests: pd.DataFrame) -> pd.DataFrame:
    """Per region × variant (and roll-ups): conversations, success, duration, turns, create
    latency (time to greeting), how they ended, orphans, failed requests by step."""
    nr, nv = len(dims.regions), len(dims.variants)
    levels = {"region·variant": ("region", "variant"), "region": ("region",), "variant": ("variant",), "overall": ()}
    # Orphans: a create succeeded, but no successful close for that conversation_id.
    ok = rows.ok
    orphan_rows = np.zeros(len(rows), dtype=bool)
    create_rows = np.zeros(len(rows), dtype=bool)
    if len(rows) and len(rows.cid_empty):
        codes = rows.cid
        has_id = codes >= 0
        has_id[has_id] = ~rows.cid_empty[codes[has_id]]
        ep_create = dims.endpoints.index("create") if "create" in dims.endpoints else -9
        ep_close = dims.endpoints.index("close") if "close" in dims.endpoints else -9
        create_rows = ok & (dims.ei == ep_create) & has_id
        closed = np.zeros(len(rows.cid_empty) + 1, dtype=bool)
        closed[codes[ok & (dims.ei == ep_close) & has_id]] = True
        orphan_rows = create_rows & ~closed[codes]

    # Conversation rows (conversations.csv) mapped to the same region/variant universe.
    have_conv = len(conv) > 0
    if have_conv:
        c_vi = _map_universe_lenient(conv["variant"], dims.variants)
        c_ri = _map_universe_lenient(conv["region"], dims.regions)
        c_ok = conv["ok"].to_numpy() == 1
        dur = conv["duration_s"].to_numpy(dtype=float)
        turns = conv["turns"].to_numpy(dtype=float)
        eb_col = conv["ended_by"] if conv["ended_by"].dtype == "category" else conv["ended_by"].astype("category")
        eb_names = [str(c) for c in eb_col.cat.categories]
        eb_codes = eb_col.cat.codes.to_numpy()
        c_valid = (c_ri >= 0) & (c_vi >= 0)
        dur_sorter = SortedValues(np.nan_to_num(dur[c_valid]))
    rows = []
    rv_valid = (dims.ri >= 0) & (dims.vi >= 0)
    for level, ldims in levels.items():
        def key_of(ri, vi):
            k = np.zeros(len(ri), dtype=np.int64)
            n = 1
            if "region" in ldims:
                k, n = k * nr + ri, n * nr
            if "variant" in ldims:
                k, n = k * nv + vi, n * nv
            return k, n

        _, n = key_of(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        labels = []
        for g in range(n):
            rest, lab = g, {}
            if "variant" in ldims:
                rest, v = divmod(rest, nv)
                lab["variant"] = dims.variants[v]
            else:
                lab["variant"] = ALL
            if "region" in ldims:
                rest, r = divmod(rest, nr)
                lab["region"] = dims.regions[r]
            else:
                lab["region"] = ALL
            labels.append(lab)
        rk, _ = key_of(dims.ri[rv_valid], dims.vi[rv_valid])
        creates = np.bincount(rk[create_rows[rv_valid]], minlength=n)[:n]
        orphans = np.bincount(rk[orphan_rows[rv_valid]], minlength=n)[:n]
        if have_conv:
            ck, _ = key_of(c_ri[c_valid], c_vi[c_valid])
            c_count = np.bincount(ck, minlength=n)[:n]
            c_okn = np.bincount(ck[c_ok[c_valid]], minlength=n)[:n]
            d = _describe(ck, n, dur_sorter, None, qs=(50, 95))
            with np.errstate(invalid="ignore", divide="ignore"):
                t_mean = np.bincount(ck, weights=turns[c_valid], minlength=n)[:n] / c_count
            eb = eb_codes[c_valid]
            ncat = len(eb_names) + 1
            eb_counts = np.bincount(ck * ncat + np.where(eb >= 0, eb, ncat - 1), minlength=n * ncat)[: n * ncat].reshape(n, ncat)
            shares = {}
            for name in list(ENDED_BY) + sorted(set(eb_names) - set(ENDED_BY)):
                col = eb_counts[:, eb_names.index(name)] if name in eb_names else np.zeros(n)
                with np.errstate(invalid="ignore", divide="ignore"):
                    shares[name] = col / c_count
        for g in range(n):
            lab = labels[g]
            row = dict(level=level, region=lab["region"], variant=lab["variant"])
            if have_conv:
                row.update(conversations=int(c_count[g]), succeeded=int(c_okn[g]),
                           success_rate=(c_okn[g] / c_count[g]) if c_count[g] else np.nan,
                           duration_p50_s=d["p50"][g], duration_p95_s=d["p95"][g],
                           turns_mean=t_mean[g])
                for name, arr in shares.items():
                    if name in ENDED_BY or (np.nan_to_num(arr).sum() > 0):
                        row[f"ended_by_{name}"] = arr[g]
            else:
                row.update(conversations=int(creates[g]), succeeded=np.nan, success_rate=np.nan,
                           duration_p50_s=np.nan, duration_p95_s=np.nan, turns_mean=np.nan)
            row["created"] = int(creates[g])
            row["orphans"] = int(orphans[g])
            # create latency (time to greeting) and failures by step from the request table
            rlevel = {"region·variant": "region·variant·endpoint", "region": "region·endpoint",
                      "variant": "variant·endpoint", "overall": "endpoint"}[level]
            sub = requests[(requests["level"] == rlevel) & (requests["region"] == lab["region"]) &
                           (requests["variant"] == lab["variant"])]
            cr = sub[sub["endpoint"] == "create"]
            row["create_p50_ms"] = float(cr["p50_ms"].iloc[0]) if len(cr) else np.nan
            row["create_p95_ms"] = float(cr["p95_ms"].iloc[0]) if len(cr) else np.nan
            for step in ENDPOINT_ORDER:
                s = sub[sub["endpoint"] == step]
                row[f"errors_{step}"] = int(s["errors"].iloc[0]) if len(s) else 0
            rows.append(row)
    return pd.DataFrame(rows)


def _map_universe_lenient(col: pd.Series, universe: list[str]) -> np.ndarray:
    """Index into `universe` per row of a (categorical or string) column; -1 if absent."""
    if col.dtype != "category":
        col = col.astype(str).astype("category")
    cats = [str(c) for c in col.cat.categories]
    lut = np.array([universe.index(c) if c in universe else -1 for c in cats] + [-1], dtype=np.int64)
    codes = col.cat.codes.to_numpy()
    return lut[codes]
