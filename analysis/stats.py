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

Everything is computed from the compact columns of `analysis.chunks` with integer group
codes and numpy, never a Python loop over rows: each statistic sorts its groups' latencies
once (`analysis.groups.SortedGroups`) and every roll-up is answered by rank across the
sorted groups, so percentiles stay exact (equal to numpy on the raw rows) and memory stays
a few bytes per row. Latency percentiles are over successful requests only; failed
requests are counted and their latencies reported separately.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Collection, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from analysis.chunks import CompactRequests
from analysis.groups import SortedGroups
from analysis.load import Run
from analysis.percentiles import PERCENTILE_METHOD, PERCENTILES, percentiles  # noqa: F401 (re-exported)
from analysis.records import ENDED_BY, UNFINISHED

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
    "region",
    "variant",
    "endpoint",
    "count",
    "errors",
    "error_rate",
    "rps",
    "mean_ms",
    "min_ms",
    "p50_ms",
    "p75_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
)


def pct_name(q: float) -> str:
    """Column name of a percentile: 50 → 'p50', 99.9 → 'p999'."""
    return "p" + (f"{q:g}").replace(".", "")


# --------------------------------------------------------------------------- grouping


def _small_int(codes: np.ndarray, n: int) -> np.ndarray:
    """Group codes in the narrowest dtype: numpy's stable sort is a radix sort ≤ 16 bits."""
    if n < 2**15:
        return codes.astype(np.int16, copy=False)
    return codes.astype(np.int32 if n < 2**31 else np.int64, copy=False)


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

    def groups(self, keys: np.ndarray | None, ngroups: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
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


def grouped_percentiles(
    keys: np.ndarray,
    ngroups: int,
    values: np.ndarray | None = None,
    qs: Sequence[float] = PERCENTILES,
    sorter: SortedValues | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Percentiles per group (keys in 0..ngroups-1) of the masked rows: (ngroups, len(qs))."""
    if sorter is None:
        if values is None:
            raise ValueError("grouped_percentiles needs the values or a sorter of them")
        sorter = SortedValues(values)
    sv, bounds = sorter.groups(keys, ngroups, mask)
    out = np.full((ngroups, len(qs)), np.nan)
    for g in np.flatnonzero(np.diff(bounds)):
        out[g] = percentiles(sv[bounds[g] : bounds[g + 1]], qs, assume_sorted=True)
    return out


def _describe(
    keys: np.ndarray | None, ngroups: int, sorter: SortedValues, mask: np.ndarray | None = None, qs: Sequence[float] = PERCENTILES
) -> dict[str, np.ndarray]:
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
        sl = sv[bounds[g] : bounds[g + 1]]
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
        kt = np.int32 if total < 2**31 else np.int64
        key: np.ndarray = np.zeros(len(self.ri), dtype=kt)
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
        return pd.DataFrame(
            {d: (idx[d].astype(str).to_numpy() if d in dims else np.full(len(idx), ALL, dtype=object)) for d in ("region", "variant", "endpoint")}
        )


def make_dims(rq: CompactRequests, regions: Sequence[str] = (), variants: Sequence[str] = ()) -> Dims:
    """The group universe (declared regions/variants first, then any seen in the data, in
    name order) and each combo's index into it (`Dims.ri/vi/ei` are per combo of `rq`)."""

    def universe(labels: list[str], used: np.ndarray, declared: Sequence[str], order: Sequence[str] = ()) -> tuple[list[str], np.ndarray]:
        out = [str(x) for x in declared]
        seen = sorted({labels[i] for i in used.tolist()}, key=lambda s: (order.index(s) if s in order else len(order), s))
        out += [x for x in seen if x not in out]
        lut = np.array([out.index(x) if x in out else -1 for x in labels] + [-1], dtype=np.int32)
        return out, lut[used]

    reg, ri = universe(rq.regions, rq.combo_r, regions)
    var, vi = universe(rq.variants, rq.combo_v, variants)
    ep, ei = universe(rq.endpoints, rq.combo_e, [], ENDPOINT_ORDER)
    return Dims(reg, var or [""], ep, ri, vi, ei)


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
    #: the successful requests' latencies, sorted per region × variant × endpoint
    samples: SortedGroups | None = field(default=None, repr=False)

    def level(self, name: str) -> pd.DataFrame:
        return self.requests[self.requests["level"] == name].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """summary.csv: one row per region × variant × endpoint, SUMMARY_COLUMNS."""
        df = self.level(DETAIL)
        return df.loc[:, list(SUMMARY_COLUMNS)].reset_index(drop=True)

    @property
    def has_variants(self) -> bool:
        return self.variants != [""]

    def latencies(self, by: Sequence[str]) -> Mapping[tuple, np.ndarray]:
        """Sorted latencies (ms) of the successful requests per group of the `by` dims.

        by: a subset of ("region", "variant", "endpoint"), e.g. ("region", "endpoint");
        keys are tuples of labels in that order. Groups without successes are left out.
        A group's array is built when it is looked up (one group at a time in memory).
        """
        if self.samples is None or not len(self.samples):
            return {}
        grid = _detail_grid(self.regions, self.variants, self.endpoints)
        dims = [d for d in ("region", "variant", "endpoint") if d in by]
        key, n = grid.level_keys(dims)
        labels = grid.level_labels(dims)
        members = {}
        for g in range(n):
            gs = np.flatnonzero(key == g)
            if self.samples.counts[gs].sum():
                members[tuple(labels.iloc[g][d] for d in by)] = gs
        return _Merged(self.samples, members)


class _Merged(Mapping[tuple, np.ndarray]):
    """group labels → sorted latencies (ms), merged from the detail groups on lookup."""

    def __init__(self, samples: SortedGroups, members: dict[tuple, np.ndarray]) -> None:
        self.samples, self.members = samples, members

    def __getitem__(self, k: tuple) -> np.ndarray:
        return self.samples.merged(self.members[k])

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


def _detail_grid(regions: list[str], variants: list[str], endpoints: list[str]) -> Dims:
    """Dims whose rows are the region × variant × endpoint groups themselves, in detail order."""
    r, v, e = np.meshgrid(np.arange(len(regions)), np.arange(len(variants)), np.arange(len(endpoints)), indexing="ij")
    return Dims(regions, variants, endpoints, r.ravel(), v.ravel(), e.ravel())


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


def _fail_rows(rq: CompactRequests, dims: Dims) -> FailRows:
    c = rq.fail_combo
    return FailRows(
        dims.ri[c],
        dims.vi[c],
        dims.ei[c],
        rq.fail_lat,
        rq.fail_status.astype(np.int64),
        rq.fail_kind,
        np.array(rq.kinds, dtype=object),
        rq.fail_err,
        np.array(rq.messages, dtype=object),
    )


def _combo_lut(values: np.ndarray) -> np.ndarray:
    """A per-combo table of group codes (gathered per row, a slice at a time)."""
    return np.asarray(values).astype(np.int64)


#: Rows handled at once when grouping: bounds the temporaries, not the result.
STEP = 1 << 20


def _slices(
    rq: CompactRequests,
    lut: np.ndarray,
    keep: Callable[[slice], np.ndarray] | None = None,
    add: Callable[[slice, np.ndarray | slice], np.ndarray] | None = None,
) -> Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]:
    """(group codes lut[combo] + add, latencies) of the successful rows where `keep`, a
    slice of STEP rows at a time: what `SortedGroups.from_slices` sorts."""

    def gen() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for i in range(0, len(rq.ok_combo), STEP):
            sl = slice(i, i + STEP)
            rows = keep(sl) if keep is not None else slice(None)
            codes = lut[rq.ok_combo[sl][rows]]
            if add is not None:
                codes = codes + add(sl, rows)
            yield codes, rq.ok_lat[sl][rows]

    return gen


def compute_stats(run: Run, turn_limit: int = 50, max_bins: int = 120, top_errors: int = 25) -> RunStats:
    """Statistics of a loaded run."""
    rq = run.compact
    dims = make_dims(rq, run.meta.get("regions") or [], run.meta.get("variants") or [])
    start, end = run.window
    if not math.isfinite(start):
        start = rq.first_ts if math.isfinite(rq.first_ts) else 0.0
    if not math.isfinite(end):
        end = start
    duration = max(end - start, 1e-9)
    nr, nv, ne = len(dims.regions), len(dims.variants), len(dims.endpoints)

    # The time series (a third of the work) is computed by a second thread meanwhile: numpy
    # leaves the GIL while it sorts, gathers and counts, so both cores work (10 M rows:
    # 2.3 → 1.45 s; its sorted groups, 4 bytes a respond, are held beside the per-turn ones).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="analysis-stats") as pool:
        timeseries = pool.submit(_timeseries, rq, dims, start, end, max_bins)
        detail = _combo_lut((dims.ri * nv + dims.vi) * ne + dims.ei)
        samples = SortedGroups.from_slices(_slices(rq, detail), nr * nv * ne, 1000.0)
        fails = _fail_rows(rq, dims)
        requests = _request_table(samples, fails, dims, duration)
        errs_status, errs_kind = _error_breakdowns(fails, dims)
        top, distinct = _top_errors(fails, dims, top_errors)
        by_turn = _by_turn(rq, dims, turn_limit)
        conv = _conversation_table(run.conversations, dims, requests, _conversation_counts(dims, rq))
        ecdf = _ecdf(samples, dims)
        ts, bin_s = timeseries.result()
    notes = []
    if run.warmup_s:
        notes.append(f"The first {run.warmup_s:g} s of the run (warm-up) are excluded.")
    total_errors = len(rq.fail_lat)
    return RunStats(
        requests=requests,
        conversations=conv,
        by_turn=by_turn,
        timeseries=ts,
        errors_by_status=errs_status,
        errors_by_kind=errs_kind,
        top_errors=top,
        ecdf=ecdf,
        regions=dims.regions,
        variants=dims.variants,
        endpoints=dims.endpoints,
        window=(start, end),
        duration_s=duration if len(rq) else max(end - start, 0.0),
        warmup_s=run.warmup_s,
        total_requests=len(rq),
        total_errors=total_errors,
        distinct_errors=distinct,
        bin_s=bin_s,
        notes=notes,
        samples=samples,
    )


def _level_members(key: np.ndarray, n: int) -> list[np.ndarray]:
    """For each of n level groups, the detail groups (rows of `key`) that roll up into it."""
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(n + 1))
    return [order[bounds[g] : bounds[g + 1]] for g in range(n)]


def _describe_groups(samples: SortedGroups, members: Sequence[Iterable[int]], qs: Collection[float]) -> dict[str, np.ndarray]:
    d = samples.describe(members, qs)
    out = {"n": d["n"], "mean": d["mean"], "min": d["min"], "max": d["max"]}
    for i, q in enumerate(qs):
        out[pct_name(q)] = d["pct"][:, i]
    return out


def _request_table(samples: SortedGroups, fails: FailRows, dims: Dims, duration: float) -> pd.DataFrame:
    grid = _detail_grid(dims.regions, dims.variants, dims.endpoints)
    fvalid = (fails.ri >= 0) & (fails.vi >= 0) & (fails.ei >= 0)
    fdims = Dims(dims.regions, dims.variants, dims.endpoints, fails.ri[fvalid], fails.vi[fvalid], fails.ei[fvalid])
    f_sorter = SortedValues(fails.rt[fvalid])
    frames = []
    for level, level_dims in LEVELS.items():
        ks, n = grid.level_keys(level_dims) if level_dims else (np.zeros(len(grid.ri), dtype=np.int64), 1)
        kf, _ = fdims.level_keys(level_dims) if level_dims else (None, 1)
        s = _describe_groups(samples, _level_members(ks, n), PERCENTILES)
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
    norm_of_used = np.array([normalise_error(cats[c]) if i < 200_000 else "(other messages)" for i, c in enumerate(used)], dtype=object)
    norm_u, norm_inv = np.unique(norm_of_used, return_inverse=True)
    norm_code = norm_inv[inv]
    kind_cats = np.concatenate([fails.kind_cats, np.array([""], dtype=object)])
    frame = pd.DataFrame({"ep": fails.ei, "status": fails.status, "kind": fails.kind, "msg": norm_code, "ri": fails.ri, "raw": inv})
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
        rows.append(
            {
                "endpoint": dims.endpoints[e] if e >= 0 else "",
                "status": int(st),
                "error_kind": (kind_cats[k] or "other") if k >= 0 else "other",
                "message": str(norm_u[m]) or "(no message)",
                "count": int(c),
                "share": c / total,
                "regions": regions,
                "example": example[:300],
            }
        )
    return pd.DataFrame(rows, columns=cols), distinct


def _by_turn(rq: CompactRequests, dims: Dims, turn_limit: int) -> pd.DataFrame:
    """respond p50/p95/p99 per turn number, per region × variant and per region (all variants)."""
    cols = ["region", "variant", "turn", "count", "p50_ms", "p95_ms", "p99_ms"]
    if "respond" not in dims.endpoints or not len(rq.ok_lat):
        return pd.DataFrame(columns=cols)
    turn = rq.ok_turn
    respond = dims.ei == dims.endpoints.index("respond")

    def keep(sl: slice) -> np.ndarray:
        t = turn[sl]
        return respond[rq.ok_combo[sl]] & (t >= 1) & (t <= turn_limit)

    # an upper bound of the respond turns kept (turns of every endpoint): one cheap pass;
    # turns above the respond rows' own maximum only make empty groups, which are dropped
    tmax = min(int(turn.max(initial=0)), turn_limit)
    if not tmax:
        return pd.DataFrame(columns=cols)
    nr, nv = len(dims.regions), len(dims.variants)
    groups = SortedGroups.from_slices(
        _slices(rq, _combo_lut((dims.ri * nv + dims.vi) * tmax), keep, lambda sl, rows: turn[sl][rows].astype(np.int64) - 1), nr * nv * tmax, 1000.0
    )
    if not len(groups):
        return pd.DataFrame(columns=cols)
    frames = []
    for with_variant in (True, False) if dims.variants != [""] else (True,):
        if with_variant:
            members = [[g] for g in range(nr * nv * tmax)]
        else:
            members = [[(r * nv + v) * tmax + t for v in range(nv)] for r in range(nr) for t in range(tmax)]
        d = _describe_groups(groups, members, (50, 95, 99))
        nz = np.flatnonzero(d["n"])
        if with_variant:
            rv, tt = np.divmod(nz, tmax)
            r, v = np.divmod(rv, nv)
            var = np.array(dims.variants, dtype=object)[v]
        else:
            r, tt = np.divmod(nz, tmax)
            var = np.full(len(nz), ALL, dtype=object)
        frames.append(
            pd.DataFrame(
                {
                    "region": np.array(dims.regions, dtype=object)[r],
                    "variant": var,
                    "turn": tt + 1,
                    "count": d["n"][nz],
                    "p50_ms": d["p50"][nz],
                    "p95_ms": d["p95"][nz],
                    "p99_ms": d["p99"][nz],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


_NICE_BINS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)


def bin_width(duration_s: float, max_bins: int = 120) -> float:
    """A round time-bin width giving at most `max_bins` bins over `duration_s`."""
    for w in _NICE_BINS:
        if duration_s / w <= max_bins:
            return float(w)
    return float(math.ceil(duration_s / max_bins))


def _bins(sec: np.ndarray, w: int, nb: int) -> np.ndarray:
    """Time bin of whole seconds since the window start (bins are whole seconds wide)."""
    b = sec // sec.dtype.type(w)
    np.minimum(b, nb - 1, out=b)
    return b


def _bincount_rows(lut: np.ndarray, combo: np.ndarray, sec: np.ndarray | None, w: int, nb: int, n: int) -> np.ndarray:
    """Counts per lut[combo] (+ time bin), a slice at a time (bincount copies its input to int64)."""
    out = np.zeros(n, dtype=np.int64)
    for i in range(0, len(combo), STEP):
        k = lut[combo[i : i + STEP]]
        if sec is not None:
            k = k + _bins(sec[i : i + STEP], w, nb)
        out += np.bincount(k, minlength=n)[:n]
    return out


def _timeseries(rq: CompactRequests, dims: Dims, start: float, end: float, max_bins: int) -> tuple[pd.DataFrame, float]:
    """Per region (and all regions) per time bin: throughput, error rate, respond p50/p95/p99."""
    cols = ["region", "t", "count", "errors", "rps", "error_rate", "p50_ms", "p95_ms", "p99_ms"]
    if not len(rq):
        return pd.DataFrame(columns=cols), 1.0
    duration = max(end - start, 1e-9)
    lat_combo = (dims.ei == dims.endpoints.index("respond")) if "respond" in dims.endpoints else np.ones(len(dims.ei), dtype=bool)
    per_combo = _bincount_rows(np.arange(len(dims.ei)), rq.ok_combo, None, 1, 1, len(dims.ei))
    # Enough requests per bin for a meaningful percentile: on average ≥ ~200 latency
    # samples per region per bin, between 10 and max_bins bins.
    per_region = int(per_combo[lat_combo].sum()) / max(len(dims.regions), 1)
    max_bins = int(min(max_bins, max(10, per_region // 200)))
    w = bin_width(duration, max_bins)
    nb = max(1, int(math.ceil(duration / w)))
    nr = len(dims.regions)
    lat = SortedGroups.from_slices(
        _slices(rq, _combo_lut(dims.ri * nb), lambda sl: lat_combo[rq.ok_combo[sl]], lambda sl, rows: _bins(rq.ok_sec[sl][rows], int(w), nb)), nr * nb, 1000.0
    )
    lut = (dims.ri * nb).astype(np.int64)  # counted per region and bin once; all regions: their sums
    region_errors = _bincount_rows(lut, rq.fail_combo, rq.fail_sec, int(w), nb, nr * nb)
    region_count = _bincount_rows(lut, rq.ok_combo, rq.ok_sec, int(w), nb, nr * nb) + region_errors
    frames = []
    for per_region in (True, False):
        n_r = nr if per_region else 1
        n = n_r * nb
        errors = region_errors if per_region else region_errors.reshape(nr, nb).sum(axis=0)
        count = region_count if per_region else region_count.reshape(nr, nb).sum(axis=0)
        members = [[g] for g in range(n)] if per_region else [[r * nb + b for r in range(nr)] for b in range(nb)]
        d = _describe_groups(lat, members, (50, 95, 99))
        rr, bb = np.divmod(np.arange(n), nb)
        width = np.minimum(w, duration - bb * w)
        width = np.where(width > 0, width, w)
        with np.errstate(invalid="ignore", divide="ignore"):
            frames.append(
                pd.DataFrame(
                    {
                        "region": np.array(dims.regions, dtype=object)[rr] if per_region else np.full(n, ALL, dtype=object),
                        "t": bb * w,
                        "count": count,
                        "errors": errors,
                        "rps": count / width,
                        "error_rate": np.where(count > 0, errors / np.maximum(count, 1), np.nan),
                        "p50_ms": d["p50"],
                        "p95_ms": d["p95"],
                        "p99_ms": d["p99"],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True), w


#: Quantile grid of the ECDF curves (dense in the tail).
ECDF_QS = np.unique(np.concatenate([np.linspace(0, 90, 181), np.linspace(90, 99, 91), np.linspace(99, 99.9, 46), np.linspace(99.9, 100, 11)]))


def _ecdf(samples: SortedGroups, dims: Dims) -> dict:
    """Per endpoint, per region: latency at each q of ECDF_QS (bounded size for the charts)."""
    out: dict = {}
    nr = len(dims.regions)
    key, n = _detail_grid(dims.regions, dims.variants, dims.endpoints).level_keys(("endpoint", "region"))
    d = samples.describe(_level_members(key, n), ECDF_QS)
    for e, ep in enumerate(dims.endpoints):
        out[ep] = {dims.regions[r]: (ECDF_QS, d["pct"][e * nr + r]) for r in range(nr) if d["n"][e * nr + r]}
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


def _conversation_counts(dims: Dims, rq: CompactRequests) -> dict:
    """Per conversation level: (created, orphans) counts per group, from the per-combo counts."""
    out = {}
    for level, ldims in _CONV_LEVELS.items():
        k, n = _conv_key(dims, ldims, dims.ri, dims.vi)
        out[level] = (
            np.bincount(k, weights=rq.created, minlength=n)[:n].astype(np.int64),
            np.bincount(k, weights=rq.orphans, minlength=n)[:n].astype(np.int64),
        )
    return out


def _conversation_table(conv: pd.DataFrame, dims: Dims, requests: pd.DataFrame, counts: dict) -> pd.DataFrame:
    """Per region × variant (and roll-ups): conversations, success, duration, turns, create
    latency (time to greeting), how they ended, orphans, failed requests by step.

    Success rate: succeeded / finished, where finished leaves out the conversations the end
    of the test cut (`stopped`, counted in their own column): neither success nor failure.

    Orphans: a create succeeded, but there is no successful close for that conversation_id."""
    nr, nv = len(dims.regions), len(dims.variants)
    levels = _CONV_LEVELS
    # Conversation rows (conversations.csv) mapped to the same region/variant universe, then
    # counted per region × variant a slice at a time; levels are sums of those groups, and
    # durations are sorted once per region × variant (roll-ups by rank): no per-level or
    # full-size temporaries (18 M conversations cost ~1.5 GiB of them before).
    have_conv = len(conv) > 0
    if have_conv:
        nd = nr * nv
        conv_g = _conv_groups(conv, dims)
        eb_col = conv["ended_by"] if conv["ended_by"].dtype == "category" else conv["ended_by"].astype("category")
        eb_names = [str(c) for c in eb_col.cat.categories]
        eb_codes = eb_col.cat.codes.to_numpy()
        ncat = len(eb_names) + 1
        stopped_code = eb_names.index(UNFINISHED) if UNFINISHED in eb_names else -2
        ok, turns = conv["ok"].to_numpy(), conv["turns"].to_numpy()
        cnt, okn, stop = (np.zeros(nd, dtype=np.int64) for _ in range(3))
        tsum, ebc = np.zeros(nd), np.zeros(nd * ncat, dtype=np.int64)
        for i in range(0, len(conv_g), STEP):
            sl = slice(i, i + STEP)
            valid = conv_g[sl] >= 0
            gv = conv_g[sl][valid].astype(np.int64)
            eb = eb_codes[sl][valid].astype(np.int64)
            cnt += np.bincount(gv, minlength=nd)[:nd]
            okn += np.bincount(gv[ok[sl][valid] == 1], minlength=nd)[:nd]
            stop += np.bincount(gv[eb == stopped_code], minlength=nd)[:nd]
            tsum += np.bincount(gv, weights=turns[sl][valid], minlength=nd)[:nd]
            eb[eb < 0] = ncat - 1
            ebc += np.bincount(gv * ncat + eb, minlength=nd * ncat)[: nd * ncat]
        dur = conv["duration_s"].to_numpy(dtype=float)
        durations = SortedGroups.from_floats(conv_g, np.nan_to_num(dur) if np.isnan(dur).any() else dur, nd, STEP)
        del conv_g
        detail_r, detail_v = np.divmod(np.arange(nd), nv)
    rows = []
    for level, ldims in levels.items():

        def key_of(ri: np.ndarray, vi: np.ndarray) -> tuple[np.ndarray, int]:
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
            lk, _ = key_of(detail_r, detail_v)  # level group of each region × variant group

            def roll(x: np.ndarray) -> np.ndarray:
                out = np.zeros((n, *x.shape[1:]), dtype=x.dtype)
                np.add.at(out, lk, x)
                return out

            c_count = roll(cnt)
            c_okn = roll(okn)
            c_finished = c_count - roll(stop)
            d = _describe_groups(durations, _level_members(lk, n), (50, 95))
            with np.errstate(invalid="ignore", divide="ignore"):
                t_mean = roll(tsum) / c_count
            eb_counts = roll(ebc.reshape(nd, ncat))
            shares = {}
            for name in list(ENDED_BY) + sorted(set(eb_names) - set(ENDED_BY)):
                col = eb_counts[:, eb_names.index(name)] if name in eb_names else np.zeros(n)
                with np.errstate(invalid="ignore", divide="ignore"):
                    shares[name] = col / c_count
        for g in range(n):
            lab = labels[g]
            row: dict[str, object] = dict(level=level, region=lab["region"], variant=lab["variant"])
            if have_conv:
                row.update(
                    conversations=int(c_count[g]),
                    succeeded=int(c_okn[g]),
                    stopped=int(c_count[g] - c_finished[g]),
                    success_rate=(c_okn[g] / c_finished[g]) if c_finished[g] else np.nan,
                    duration_p50_s=d["p50"][g],
                    duration_p95_s=d["p95"][g],
                    turns_mean=t_mean[g],
                )
                for name, arr in shares.items():
                    if name in ENDED_BY or (np.nan_to_num(arr).sum() > 0):
                        row[f"ended_by_{name}"] = arr[g]
            else:
                row.update(
                    conversations=int(creates[g]),
                    succeeded=np.nan,
                    stopped=np.nan,
                    success_rate=np.nan,
                    duration_p50_s=np.nan,
                    duration_p95_s=np.nan,
                    turns_mean=np.nan,
                )
            row["created"] = int(creates[g])
            row["orphans"] = int(orphans[g])
            # create latency (time to greeting) and failures by step from the request table
            rlevel = {"region·variant": "region·variant·endpoint", "region": "region·endpoint", "variant": "variant·endpoint", "overall": "endpoint"}[level]
            sub = requests[(requests["level"] == rlevel) & (requests["region"] == lab["region"]) & (requests["variant"] == lab["variant"])]
            cr = sub[sub["endpoint"] == "create"]
            row["create_p50_ms"] = float(cr["p50_ms"].iloc[0]) if len(cr) else np.nan
            row["create_p95_ms"] = float(cr["p95_ms"].iloc[0]) if len(cr) else np.nan
            for step in ENDPOINT_ORDER:
                s = sub[sub["endpoint"] == step]
                row[f"errors_{step}"] = int(s["errors"].iloc[0]) if len(s) else 0
            rows.append(row)
    return pd.DataFrame(rows)


def _conv_groups(conv: pd.DataFrame, dims: Dims) -> np.ndarray:
    """Region × variant group of each conversation (int32), -1 outside the universe."""
    nv = len(dims.variants)
    (r_lut, r_codes), (v_lut, v_codes) = _universe_lut(conv["region"], dims.regions), _universe_lut(conv["variant"], dims.variants)
    g = np.empty(len(conv), dtype=np.int32)
    for i in range(0, len(g), STEP):
        ri, vi = r_lut[r_codes[i : i + STEP]], v_lut[v_codes[i : i + STEP]]
        g[i : i + STEP] = np.where((ri >= 0) & (vi >= 0), ri * nv + vi, -1)
    return g


def _universe_lut(col: pd.Series, universe: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(index into `universe` per category, -1 if absent and last for missing values;
    the column's category codes)."""
    if col.dtype != "category":
        col = col.astype(str).astype("category")
    cats = [str(c) for c in col.cat.categories]
    lut = np.array([universe.index(c) if c in universe else -1 for c in cats] + [-1], dtype=np.int64)
    return lut, col.cat.codes.to_numpy()
