"""Integer values (latencies in microseconds; or floats: conversation durations) sorted once
per group, and exact order statistics of any union of groups without concatenating them.

    g = SortedGroups.from_codes(codes, values_us, ngroups, divisor=1000)
    d = SortedGroups.from_floats(codes, durations_s, ngroups)   # codes < 0: left out
    g.describe([[0], [1, 2]], qs=(50, 95, 99))   # group 0 alone; groups 1 and 2 together
    g.merged([1, 2])                              # sorted float values of 1 ∪ 2 (for bootstraps)

Why: a report needs the same percentiles per region × variant × endpoint and per roll-up
(region × endpoint, variant × endpoint, endpoint, overall), per turn and per time bin. With
4-byte integer microseconds and small group codes, a counting sort by group (slice by
slice) and an in-place sort per group give every group's sorted values with no argsort
index over all rows and no float copy. Roll-ups are then answered by rank: the k-th smallest value of a union of sorted groups is found by bisection
on the value (each step counts values ≤ x with a binary search per group), so a roll-up
costs O(groups × log n × 32), not a new sort and not a copy of its rows. `divisor` turns the
integers back into the recorded unit (µs → ms: a division by 1000, correctly rounded, so a
latency written with 3 decimals comes back bit-identical to parsing it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial

import numpy as np

from analysis.percentiles import percentiles_at


class SortedGroups:
    """Values (uint32) sorted ascending within each of `ngroups` groups, stored back to back."""

    def __init__(self, values: np.ndarray, bounds: np.ndarray, divisor: float = 1.0):
        self.values = values
        self.bounds = np.asarray(bounds, dtype=np.int64)
        self.divisor = divisor
        self.counts = np.diff(self.bounds)
        self.floats = values.dtype.kind == "f"
        # exact integer sums per group (int64: 100M values of 2^32 still fit); float sums for floats
        self.sums = np.zeros(len(self.counts), dtype=np.float64 if self.floats else np.int64)
        for g in np.flatnonzero(self.counts):  # per group: a reduceat would cast all values first
            self.sums[g] = self.segment(int(g)).sum(dtype=self.sums.dtype)

    @classmethod
    def from_codes(cls, codes: np.ndarray, values: np.ndarray, ngroups: int, divisor: float = 1.0) -> SortedGroups:
        """Sort uint32 `values` by (group code, value)."""
        return cls.from_slices(lambda: [(codes, values)], ngroups, divisor)

    @classmethod
    def from_floats(cls, codes: np.ndarray, values: np.ndarray, ngroups: int, step: int = 1 << 20) -> SortedGroups:
        """Sort float64 `values` (no NaN) by (group code, value); rows whose code is < 0 are
        left out. Grouped `step` rows at a time (a stable radix sort of the small codes), so
        the only full-size allocation is the result (8 bytes a value)."""
        counts = np.zeros(ngroups, dtype=np.int64)
        for i in range(0, len(codes), step):
            c = codes[i : i + step]
            counts += np.bincount(c[c >= 0], minlength=ngroups)[:ngroups]
        bounds = np.concatenate(([0], np.cumsum(counts)))
        out = np.empty(int(bounds[-1]), dtype=np.float64)
        cursor = bounds[:-1].copy()
        edges = np.arange(ngroups + 1)
        for i in range(0, len(codes), step):
            c, v = codes[i : i + step], values[i : i + step]
            order = np.argsort(c, kind="stable")
            _scatter(out, cursor, v[order], np.searchsorted(c[order], edges))
        return cls._sorted_within(out, bounds, 1.0)

    @classmethod
    def from_slices(cls, slices: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]], ngroups: int, divisor: float = 1.0) -> SortedGroups:
        """Group (code, uint32 value) pairs given slice by slice (`slices()` is called twice),
        then sort each group in place. The only full-size allocation is the result (4 bytes a
        value); temporaries (a packed uint64 key per value) are the size of one slice."""
        counts = np.zeros(ngroups, dtype=np.int64)
        for codes, _ in slices():
            counts += np.bincount(codes, minlength=ngroups)[:ngroups]
        bounds = np.concatenate(([0], np.cumsum(counts)))
        out = np.empty(int(bounds[-1]), dtype=np.uint32)
        cursor = bounds[:-1].copy()
        edges = np.arange(ngroups + 1, dtype=np.uint64) << np.uint64(32)
        for codes, values in slices():
            key = codes.astype(np.uint64)  # one slice of (code << 32 | value), sorted: grouped
            key <<= np.uint64(32)
            key |= values
            key.sort()
            _scatter(out, cursor, key, np.searchsorted(key, edges))  # the low 32 bits: the value
        return cls._sorted_within(out, bounds, divisor)

    @classmethod
    def _sorted_within(cls, out: np.ndarray, bounds: np.ndarray, divisor: float) -> SortedGroups:
        for g in np.flatnonzero(np.diff(bounds)):
            out[bounds[g] : bounds[g + 1]].sort()
        return cls(out, bounds, divisor)

    def __len__(self) -> int:
        return int(self.bounds[-1])

    def segment(self, g: int) -> np.ndarray:
        return self.values[self.bounds[g] : self.bounds[g + 1]]

    def merged(self, groups: Iterable[int]) -> np.ndarray:
        """Sorted float values of the union of `groups` (a copy: for one group at a time)."""
        segs = [self.segment(g) for g in groups if self.counts[g]]
        if not segs:
            return np.zeros(0)
        v = np.concatenate(segs)
        if len(segs) > 1:
            v.sort()  # in place: the copy above is the only one besides the float result
        return v / self.divisor

    def _scaled_kth(self, groups: Sequence[int], ranks: np.ndarray) -> np.ndarray:
        return self.kth(groups, ranks) / self.divisor

    def kth(self, groups: Sequence[int], ranks: np.ndarray) -> np.ndarray:
        """The values at 0-based `ranks` in the sorted union of `groups` (integers)."""
        segs = [self.segment(g) for g in groups if self.counts[g]]
        ranks = np.asarray(ranks, dtype=np.int64)
        if len(segs) == 1:
            return segs[0][ranks] if self.floats else segs[0][ranks].astype(np.int64)
        # bisection on the value, over int64 keys in value order (floats: their bits, made monotonic)
        key, value = (_float_key, _key_float) if self.floats else (_int_key, partial(_key_int, segs[0].dtype))
        lo = np.full(len(ranks), min(key(s[:1])[0] for s in segs), dtype=np.int64)
        hi = np.full(len(ranks), max(key(s[-1:])[0] for s in segs), dtype=np.int64)
        # smallest x with #(values ≤ x) > rank
        while (lo < hi).any():
            mid = lo // 2 + hi // 2 + (lo % 2 + hi % 2) // 2  # floor((lo + hi) / 2) without overflow
            m = value(mid)  # same dtype as the data: searchsorted never converts the array
            le = np.zeros(len(ranks), dtype=np.int64)
            for s in segs:
                le += np.searchsorted(s, m, side="right")
            more = le > ranks
            hi = np.where(more, mid, hi)
            lo = np.where(more, lo, mid + 1)
        return value(lo) if self.floats else lo

    def describe(self, members: Sequence[Iterable[int]], qs: Collection[float]) -> dict[str, np.ndarray]:
        """count, mean, min, max and percentiles (float, in the recorded unit) of each union
        (`members`: one collection of group numbers per union, a list or an index array)."""
        k = len(members)
        out = {
            "n": np.zeros(k, dtype=np.int64),
            "mean": np.full(k, np.nan),
            "min": np.full(k, np.nan),
            "max": np.full(k, np.nan),
            "pct": np.full((k, len(qs)), np.nan),
        }
        for i, union in enumerate(members):
            gs = [g for g in union if self.counts[g]]
            n = int(self.counts[gs].sum()) if gs else 0
            if not n:
                continue
            out["n"][i] = n
            out["mean"][i] = float(self.sums[gs].sum()) / self.divisor / n  # int64 sums: exact up to here
            out["min"][i] = float(min(self.values[self.bounds[g]] for g in gs)) / self.divisor
            out["max"][i] = float(max(self.values[self.bounds[g + 1] - 1] for g in gs)) / self.divisor
            out["pct"][i] = percentiles_at(n, qs, partial(self._scaled_kth, gs))
        return out


def _scatter(out: np.ndarray, cursor: np.ndarray, grouped: np.ndarray, b: np.ndarray) -> None:
    """Append each group's run of `grouped` (group g at b[g]:b[g + 1]) at its cursor in `out`."""
    for g in np.flatnonzero(np.diff(b)):
        n = b[g + 1] - b[g]
        out[cursor[g] : cursor[g] + n] = grouped[b[g] : b[g + 1]]
        cursor[g] += n


_FLIP = np.int64(0x7FFFFFFFFFFFFFFF)


def _float_key(x: np.ndarray) -> np.ndarray:
    """int64 keys in the order of the float64 values (IEEE bits; negatives' bits flipped)."""
    i = np.ascontiguousarray(x, dtype=np.float64).view(np.int64)
    return np.where(i < 0, i ^ _FLIP, i)


def _key_float(k: np.ndarray) -> np.ndarray:
    return np.where(k < 0, k ^ _FLIP, k).view(np.float64)


def _int_key(x: np.ndarray) -> np.ndarray:
    return x.astype(np.int64)


def _key_int(dtype: np.dtype, k: np.ndarray) -> np.ndarray:
    return k.astype(dtype)
