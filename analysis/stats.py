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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from loadtest.records import ENDED_BY

from analysis.percentiles import PERCENTILE_METHOD, PERCENTILES, percentiles  # noqa: F401 (re-exported)

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

    def groups(self, keys: np.ndarray | None, ngroups: int, mask: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """(values of the masked rows sorted by (key, value), group start offsets [ngroups + 1])."""
        if self.order is None:
            k = keys if mask is None or keys is None else keys[mask]
            v = self.values if mask is None else self.values[mask]
        else:
            o = self.order if mask is None else self.order[mask[self.order]]
            k, v = (keys[o] if keys is not None else None), self.values[o]
        if ngroups == 1 or k is None:  # one group: already sorted
            return v, np.array([0, len(v)])
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


def _describe(keys: np.ndarray | None, ngroups: int, sorter: SortedValues, mask: np.ndarray | None = None,
              qs: Sequence[float] = PERCENTILES) -> dict[str, np.ndarray]:
    """count, mean, min, max and percentiles of the sorter's values per group (masked rows)."""
    pct = np.full((ngroups, len(qs)), np.nan)
    mn = np.full(ngroups, np.nan)
    mx = np.full(ngroups, np.nan)
    sv, bounds = sorter.groups(keys, ngroups, mask)
    count = np.diff(bounds).astype(np.int64)
    cs = np.concatenate(([0.0], np.cumsum(sv)))
    sums = cs[bounds[1:]] - cs[bounds[:-1]]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, sums / np.maximum(count, 1), np.nan)
    for g in np.flatnonzero(count):
        sl = sv[bounds[g]:bounds[g + 1]]
        pct[g] = percentiles(sl, qs, assume_sorted=True)
        mn[g], mx[g] = sl[0], sl[-1]
    out = {"n": count, "mean": mean, "min": mn, "max": mx}
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
        total = 1
        for d in dims:
            total *= self.sizes()[d]
        kt = np.int32 if total < 2 ** 31 else np.int64
        key = np.zeros(len(self.ri), dtype=kt)
        n = 1
        for d in dims:
            size = self.sizes()[d]
            key = key * kt(size) + self.index(d).astype(kt)
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
    lut = np.array([universe.index(c) for c in cats] + [-1], dtype=np.int16 if len(universe) < 2 ** 15 else np.int32)
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

    def latencies(self, by: Sequence[str]) -> dict[tuple, np.ndarray]:
        """Sorted latencies of the successful requests per group of the `by` dims.

        by: a subset of ("region", "variant", "endpoint"), e.g. ("region", "endpoint");
        keys are tuples of labels in that order. Groups without successes are left out.
        """
        if self.rows is None or not len(self.rows):
            return {}
        sd = self.rows.dims
        dims = [d for d in ("region", "variant", "endpoint") if d in by]
        key, n = sd.level_keys(dims)
        sv, bounds = SortedValues(self.rows.rt, presorted=True).groups(key, n)
        labels = sd.level_labels(dims)
        out = {}
        for g in np.flatnonzero(np.diff(bounds)):
            out[tuple(labels.iloc[g][d] for d in by)] = sv[bounds[g]:bounds[g + 1]]
        return out


@dataclass
class Rows:
    """The successful requests, as numpy arrays in ascending latency order.

    Group statistics do not depend on row order, and in latency order every group's values
    come out already sorted: one argsort of the latencies serves every table below.
    `dims` (region/variant/endpoint indices) is permuted the same way.
    """

    rt: np.ndarray
    ts: np.ndarray
    turn: np.ndarray
    dims: "Dims"

    def __len__(self) -> int:
        return len(self.rt)


@dataclass
class FailRows:
    """The failed requests only (few), in file order: what the error tables need."""

    ri: np.ndarray
    vi: np.ndarray
    ei: np.ndarray
    rt: np.ndarray
    status: np.ndarray
    kind: np.ndarray
    kind_cats: np.ndarray
    err: np.ndarray
    err_cats: np.ndarray

    def __len__(self) -> int:
        return len(self.ri)


def _codes(col: pd.Series | None, n: int, rows: np.ndarray | slice = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """Category codes (of the selected rows) and categories (object array of str) of a column."""
    if col is None:
        return np.full(n, -1, dtype=np.int32)[rows], np.array([], dtype=object)
    if col.dtype != "category":
        col = col.astype(str).astype("category")
    return col.cat.codes.to_numpy()[rows], col.cat.categories.to_numpy(dtype=object, na_value="")


def _fail_rows(req: pd.DataFrame, dims: Dims, ok: np.ndarray) -> FailRows:
    fail = np.flatnonzero(~ok)
    kind, kind_cats = _codes(req.get("error_kind"), len(req), fail)
    err, err_cats = _codes(req.get("error"), len(req), fail)
    status = req["status"].to_numpy()[fail].astype(np.int64) if "status" in req else np.zeros(len(fail), np.int64)
    rt = req["response_time_ms"].to_numpy(dtype=float)[fail]
    return FailRows(dims.ri[fail], dims.vi[fail], dims.ei[fail], rt, status, kind, kind_cats, err, err_cats)


def _sorted_rows(req: pd.DataFrame, dims: Dims, ok: np.ndarray) -> Rows:
    """Successful requests (with known region/variant/endpoint), sorted by latency."""
    idx = np.flatnonzero(ok & (dims.ri >= 0) & (dims.vi >= 0) & (dims.ei >= 0))
    rt = req["response_time_ms"].to_numpy(dtype=float)[idx]
    order = np.argsort(rt, kind="quicksort")  # the one O(n log n) sort
    idx = idx[order]
    turn = req["turn"].to_numpy()[idx] if "turn" in req else np.full(len(idx), -1)
    return Rows(rt=rt[order], ts=req["timestamp"].to_numpy(dtype=float)[idx],
                turn=np.clip(turn, -1, 32_000).astype(np.int16),
                dims=Dims(dims.regions, dims.variants, dims.endpoints, dims.ri[idx], dims.vi[idx], dims.ei[idx]))


def _string_hashes(arr) -> np.ndarray | None:
    """64-bit hashes of an Arrow string array whose values all have the same length
    (conversation ids usually do), computed with numpy on the raw bytes; None otherwise.

    Far cheaper than a hash set of millions of Python-level strings; a collision between
    two distinct ids is ~1e-7 likely for 2M ids and would only hide one orphan.
    """
    import pyarrow as pa

    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.null_count or arr.type not in (pa.string(), pa.large_string()):
        return None
    bufs = arr.buffers()
    off_t = np.int64 if arr.type == pa.large_string() else np.int32
    offsets = np.frombuffer(bufs[1], dtype=off_t, count=n + 1, offset=arr.offset * np.dtype(off_t).itemsize)
    width = int(offsets[1] - offsets[0])
    if width == 0 or not (np.diff(offsets) == width).all():
        return None
    data = np.frombuffer(bufs[2], dtype=np.uint8, count=int(offsets[-1] - offsets[0]), offset=int(offsets[0]))
    words = -(-width // 8)
    padded = np.zeros((n, words * 8), dtype=np.uint8)
    padded[:, :width] = data.reshape(n, width)
    w = padded.view(np.uint64)
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for j in range(words):
            h ^= w[:, j]
            h *= prime
            h ^= h >> np.uint64(29)
    return h


def _orphans(req: pd.DataFrame, dims: Dims, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(successful create rows with an id, those without a successful close of that id), file order."""
    n = len(req)
    none = np.zeros(n, dtype=bool)
    if "conversation_id" not in req or not n or "create" not in dims.endpoints:
        return none, none
    create = ok & (dims.ei == dims.endpoints.index("create"))
    close = ok & (dims.ei == dims.endpoints.index("close")) if "close" in dims.endpoints else none
    col = req["conversation_id"]
    ci, xi = np.flatnonzero(create), np.flatnonzero(close)
    if col.dtype == "category":
        codes = col.cat.codes.to_numpy()
        empty = np.asarray(col.cat.categories == "")
        has_id = codes >= 0
        has_id[has_id] = ~empty[codes[has_id]]
        closed = np.zeros(len(empty) + 1, dtype=bool)
        closed[codes[xi][has_id[xi]]] = True
        create_rows = create & has_id
        return create_rows, create_rows & ~closed[codes]
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = pa.array(col.array) if not isinstance(col.array, np.ndarray) else pa.array(col.to_numpy(dtype=object))

    def pick(mask: np.ndarray) -> pa.Array:  # filter is chunk-aware and much cheaper than take
        got = pc.filter(arr, pa.array(mask))
        return got.combine_chunks() if isinstance(got, pa.ChunkedArray) else got

    created_ids = pick(create)
    closed_ids = pick(close)
    has_id = pc.fill_null(pc.not_equal(created_ids, ""), False).to_numpy(zero_copy_only=False)
    ha, hb = _string_hashes(created_ids), _string_hashes(closed_ids)
    if ha is not None and hb is not None and len(hb):
        hb = np.sort(hb)
        order = np.argsort(ha)  # sorted keys make searchsorted cache-friendly (3× faster)
        sa = ha[order]
        closed = np.empty(len(ha), dtype=bool)
        closed[order] = hb[np.minimum(np.searchsorted(hb, sa), len(hb) - 1)] == sa
    else:  # ids of varying length: Arrow's hash set (exact, slower)
        closed = pc.fill_null(pc.is_in(created_ids, value_set=closed_ids), False).to_numpy(zero_copy_only=False)
    create_rows = np.zeros(n, dtype=bool)
    orphan_rows = np.zeros(n, dtype=bool)
    create_rows[ci[has_id]] = True
    orphan_rows[ci[has_id & ~closed]] = True
    return create_rows, orphan_rows


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

    ok = req["ok"].to_numpy() == 1
    # The latency sort (numpy, GIL released) runs on a second core while the orphan
    # detection (Arrow/numpy) runs here.
    with ThreadPoolExecutor(max_workers=1) as pool:
        sorting = pool.submit(_sorted_rows, req, dims, ok)
        fails = _fail_rows(req, dims, ok)
        create_rows, orphan_rows = _orphans(req, dims, ok)
        conv_counts = _conversation_counts(dims, create_rows, orphan_rows)
        succ = sorting.result()
    requests = _request_table(succ, fails, req, duration)
    errs_status, errs_kind = _error_breakdowns(fails, dims)
    top, distinct = _top_errors(fails, dims, top_errors)
    by_turn = _by_turn(succ, turn_limit)
    ts, bin_s = _timeseries(req, dims, ok, succ, start, end, max_bins)
    conv = _conversation_table(run.conversations, dims, requests, conv_counts)
    ecdf = _ecdf(succ)
    notes = []
    if run.warmup_s:
        notes.append(f"The first {run.warmup_s:g} s of the run (warm-up) are excluded.")
    return RunStats(
        requests=requests, conversations=conv, by_turn=by_turn, timeseries=ts,
        errors_by_status=errs_status, errors_by_kind=errs_kind, top_errors=top, ecdf=ecdf,
        regions=dims.regions, variants=dims.variants, endpoints=dims.endpoints,
        window=(start, end), duration_s=duration if len(req) else max(end - start, 0.0),
        warmup_s=run.warmup_s, total_requests=int(len(req)), total_errors=int((~ok).sum()),
        distinct_errors=distinct, bin_s=bin_s, notes=notes, rows=succ, dims=dims,
    )


def _request_table(succ: Rows, fails: FailRows, req: pd.DataFrame, duration: float) -> pd.DataFrame:
    dims = succ.dims
    fvalid = (fails.ri >= 0) & (fails.vi >= 0) & (fails.ei >= 0)
    fdims = Dims(dims.regions, dims.variants, dims.endpoints, fails.ri[fvalid], fails.vi[fvalid], fails.ei[fvalid])
    s_sorter = SortedValues(succ.rt, presorted=True)
    f_sorter = SortedValues(fails.rt[fvalid])
    frames = []
    for level, level_dims in LEVELS.items():
        ks, n = dims.level_keys(level_dims) if level_dims else (None, 1)
        kf, _ = fdims.level_keys(level_dims) if level_dims else (None, 1)
        s = _describe(ks, n, s_sorter)
        f = _describe(kf, n, f_sorter, qs=(50, 95))
        count = s["n"] + f["n"]
        df = dims.level_labels(level_dims)
        df.insert(0, "level", level)
        errors = f["n"]
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


def _error_breakdowns(fails: FailRows, dims: Dims) -> tuple[pd.DataFrame, pd.DataFrame]:
    valid = (fails.ri >= 0) & (fails.vi >= 0) & (fails.ei >= 0)
    labels = dims.level_labels(("region", "variant", "endpoint"))
    n = len(dims.regions) * len(dims.variants) * len(dims.endpoints)
    key = ((fails.ri.astype(np.int64) * len(dims.variants) + fails.vi) * len(dims.endpoints) + fails.ei)[valid]
    fail = valid
    out = []
    for col, values in (("status", fails.status[fail]), ("error_kind", fails.kind[fail])):
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
            cats = np.concatenate([fails.kind_cats, np.array([""], dtype=object)])
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


def _top_errors(fails: FailRows, dims: Dims, limit: int) -> tuple[pd.DataFrame, int]:
    """The most frequent failures: endpoint, status, kind, normalised message, count, regions."""
    cols = ["endpoint", "status", "error_kind", "message", "count", "share", "regions", "example"]
    if not len(fails):
        return pd.DataFrame(columns=cols), 0
    cats = np.concatenate([fails.err_cats, np.array([""], dtype=object)])
    codes = fails.err
    used, inv = np.unique(codes, return_inverse=True)
    # Normalise each distinct message once (bounded: messages beyond 200k distinct share a bucket).
    norm_of_used = np.array([normalise_error(cats[c]) if i < 200_000 else "(other messages)"
                             for i, c in enumerate(used)], dtype=object)
    norm_u, norm_inv = np.unique(norm_of_used, return_inverse=True)
    norm_code = norm_inv[inv]
    kind_cats = np.concatenate([fails.kind_cats, np.array([""], dtype=object)])
    frame = pd.DataFrame({"ep": fails.ei, "status": fails.status, "kind": fails.kind, "msg": norm_code,
                          "ri": fails.ri, "raw": inv})
    g = frame.groupby(["ep", "status", "kind", "msg"], sort=False)
    counts = g.size().sort_values(ascending=False, kind="stable")
    distinct = len(counts)
    top = counts.head(limit)
    rows = []
    total = len(fails)
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


def _by_turn(succ: Rows, turn_limit: int) -> pd.DataFrame:
    """respond p50/p95/p99 per turn number, per region × variant and per region (all variants)."""
    cols = ["region", "variant", "turn", "count", "p50_ms", "p95_ms", "p99_ms"]
    dims = succ.dims
    if "respond" not in dims.endpoints:
        return pd.DataFrame(columns=cols)
    turn = succ.turn
    sel = (dims.ei == dims.endpoints.index("respond")) & (turn >= 1) & (turn <= turn_limit)
    if not sel.any():
        return pd.DataFrame(columns=cols)
    tmax = int(turn[sel].max())
    sorter = SortedValues(succ.rt[sel], presorted=True)
    t0 = turn[sel].astype(np.int32) - 1
    ri, vi = dims.ri[sel].astype(np.int32), dims.vi[sel].astype(np.int32)
    frames = []
    nr, nv = len(dims.regions), len(dims.variants)
    for with_variant in ((True, False) if dims.variants != [""] else (True,)):
        if with_variant:
            key = (ri * nv + vi) * tmax + t0
            n = nr * nv * tmax
        else:
            key = ri * tmax + t0
            n = nr * tmax
        d = _describe(key, n, sorter, qs=(50, 95, 99))
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


def _timeseries(req: pd.DataFrame, dims: Dims, ok: np.ndarray, succ: Rows,
                start: float, end: float, max_bins: int) -> tuple[pd.DataFrame, float]:
    """Per region (and all regions) per time bin: throughput, error rate, respond p50/p95/p99."""
    cols = ["region", "t", "count", "errors", "rps", "error_rate", "p50_ms", "p95_ms", "p99_ms"]
    if not len(req):
        return pd.DataFrame(columns=cols), 1.0
    duration = max(end - start, 1e-9)
    sd = succ.dims
    lat_ep = sd.endpoints.index("respond") if "respond" in sd.endpoints else None
    lat = (sd.ei == lat_ep) if lat_ep is not None else np.ones(len(succ), dtype=bool)
    # Enough requests per bin for a meaningful percentile: on average ≥ ~200 latency
    # samples per region per bin, between 10 and max_bins bins.
    per_region = int(lat.sum()) / max(len(dims.regions), 1)
    max_bins = int(min(max_bins, max(10, per_region // 200)))
    w = bin_width(duration, max_bins)
    nb = max(1, int(math.ceil(duration / w)))

    def bins(ts: np.ndarray) -> np.ndarray:
        b = ((ts - start) * (1.0 / w)).astype(np.int32)  # truncation = floor for ts ≥ start
        np.maximum(b, 0, out=b)
        np.minimum(b, nb - 1, out=b)
        return b

    b_all = bins(req["timestamp"].to_numpy(dtype=float))
    valid = dims.ri >= 0
    lat_sorter = SortedValues(succ.rt[lat], presorted=True)
    b_lat = bins(succ.ts[lat])
    r_lat = sd.ri[lat].astype(np.int32)
    nr = len(dims.regions)
    frames = []
    for per_region in (True, False):
        n_r = nr if per_region else 1
        n = n_r * nb
        key = (dims.ri.astype(np.int32) * nb + b_all) if per_region else b_all
        count = np.bincount(key[valid], minlength=n)[:n]
        errors = np.bincount(key[valid & ~ok], minlength=n)[:n]
        d = _describe((r_lat * nb + b_lat) if per_region else b_lat, n, lat_sorter, qs=(50, 95, 99))
        rr, bb = np.divmod(np.arange(n), nb)
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


def _ecdf(succ: Rows) -> dict:
    """Per endpoint, per region: latency at each q of ECDF_QS (bounded size for the charts)."""
    dims = succ.dims
    out: dict = {}
    nr, ne = len(dims.regions), len(dims.endpoints)
    key = dims.ei.astype(np.int32) * nr + dims.ri
    grid = grouped_percentiles(key, ne * nr, qs=ECDF_QS, sorter=SortedValues(succ.rt, presorted=True))
    counts = np.bincount(key, minlength=ne * nr)
    for e, ep in enumerate(dims.endpoints):
        out[ep] = {dims.regions[r]: (ECDF_QS, grid[e * nr + r]) for r in range(nr) if counts[e * nr + r]}
    return out


_CONV_LEVELS = {"region·variant": ("region", "variant"), "region": ("region",), "variant": ("variant",), "overall": ()}


def _conv_key(dims: Dims, ldims: Sequence[str], ri: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, int]:
    nr, nv = len(dims.regions), len(dims.variants)
    k = np.zeros(len(ri), dtype=np.int64)
    n = 1
    if "region" in ldims:
        k, n = k * nr + ri, n * nr
    if "variant" in ldims:
        k, n = k * nv + vi, n * nv
    return k, n


def _conversation_counts(dims: Dims, create_rows: np.ndarray, orphan_rows: np.ndarray) -> dict:
    """Per conversation level: (created, orphans) counts per group (rows in file order)."""
    valid = (dims.ri >= 0) & (dims.vi >= 0)
    out = {}
    for level, ldims in _CONV_LEVELS.items():
        c = create_rows & valid
        o = orphan_rows & valid
        kc, n = _conv_key(dims, ldims, dims.ri[c], dims.vi[c])
        ko, _ = _conv_key(dims, ldims, dims.ri[o], dims.vi[o])
        out[level] = (np.bincount(kc, minlength=n)[:n], np.bincount(ko, minlength=n)[:n])
    return out


def _conversation_table(conv: pd.DataFrame, dims: Dims, requests: pd.DataFrame, counts: dict) -> pd.DataFrame:
    """Per region × variant (and roll-ups): conversations, success, duration, turns, create
    latency (time to greeting), how they ended, orphans, failed requests by step.

    Orphans: a create succeeded, but there is no successful close for that conversation_id."""
    nr, nv = len(dims.regions), len(dims.variants)
    levels = _CONV_LEVELS
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
    for level, ldims in levels.items():
        def key_of(ri, vi):
            return _conv_key(dims, ldims, ri, vi)

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
        creates, orphans = counts[level]
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
