"""Live statistics while a test runs: per region × variant × endpoint over a sliding window.

Feeds the terminal progress lines of `loadtest run` and the web UI's Regions tab. In a
distributed run, workers forward what they measured since their last report to the master,
which merges it (`drain` / `ingest`), so the master's view covers every worker.
`LiveHistory` keeps the respond p50/p95 of that window over time, per region and per
variant, for the web UI's live chart.
Exact, whole-run numbers come from requests.csv afterwards; these are for watching.

Why a histogram: the live path must cost the same at 100 or 30,000 requests/s. Each
latency goes into a log-linear bucket with 3 significant digits (HdrHistogram's layout:
exact microseconds below 2.048 ms, then 1,024 buckets per power of two, so a bucket is at
most 0.1 % wide and its midpoint is within 0.05 % of every value in it; Locust's own
statistics keep 2 digits). One histogram per key and second, kept for the window: adding a
request is a list append (samples are folded in bulk, see `LiveStats`), a snapshot
concatenates at most `window_s` sparse histograms per key (numpy), whatever the rate, and a
worker forwards histograms (bounded by the number of distinct buckets), not one message per
request. Percentiles of the merged counts go through the
project's one percentile function (`analysis.percentiles.percentiles_at`).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Sequence

import numpy as np

from analysis.percentiles import percentiles_at

WINDOW_S = 10.0
HISTORY_INTERVAL_S = 2.0  # one chart point per 2 s, like Locust's own charts
HISTORY_MAX_POINTS = 1_800  # an hour at 2 s; then every other point goes (bounded memory)
SUB_BUCKETS = 1024  # per power of two: 3 significant digits
_EXACT = 2 * SUB_BUCKETS  # microseconds below this are their own bucket
MAX_US = 2**28  # ~4.5 min: longer latencies share the last bucket (a live view, not the report)
NBUCKETS = _EXACT + (MAX_US.bit_length() - 12) * SUB_BUCKETS
FOLD_EVERY = 4096  # samples held by add_request before they are folded in (bounded memory)


def buckets(ms: np.ndarray) -> np.ndarray:
    """The histogram bucket of each latency in milliseconds (int64)."""
    u = np.clip(np.floor(np.asarray(ms, dtype=np.float64) * 1000.0 + 0.5), 0, MAX_US).astype(np.int64)
    shift = np.frexp(u.astype(np.float64))[1] - 11  # bit_length - 11 (exact: u < 2**53)
    shifted = _EXACT + (shift - 1) * SUB_BUCKETS + (u >> np.maximum(shift, 0)) - SUB_BUCKETS
    return np.where(u < _EXACT, u, np.where(u >= MAX_US, NBUCKETS - 1, shifted))


def bucket(ms: float) -> int:
    """The histogram bucket of one latency in milliseconds."""
    return int(buckets(np.array([ms]))[0])


def bucket_value(idx: np.ndarray) -> np.ndarray:
    """The midpoint (ms) of each bucket: the value a bucket stands for."""
    idx = np.asarray(idx, dtype=np.int64)
    exact = idx < _EXACT
    shift = np.where(exact, 0, (idx - _EXACT) // SUB_BUCKETS + 1)
    top = np.where(exact, idx, (idx - _EXACT) % SUB_BUCKETS + SUB_BUCKETS)
    lo = top << shift
    width = np.int64(1) << shift
    return np.where(exact, idx.astype(float), lo + (width - 1) / 2.0) / 1000.0


def histogram_percentiles(hist: tuple[np.ndarray, np.ndarray], qs: Sequence[float]) -> np.ndarray:
    """Percentiles (ms) of a sparse histogram: (bucket indices, counts), in any order, a
    bucket possibly listed more than once (histograms merge by concatenation)."""
    idx, counts = hist
    if not len(idx) or not counts.sum():
        return np.full(len(qs), np.nan)
    dense = np.bincount(idx, weights=counts, minlength=NBUCKETS)  # no sort: buckets are ordered
    nz = np.flatnonzero(dense)
    values, cum = bucket_value(nz), np.cumsum(dense[nz]).astype(np.int64)
    return percentiles_at(int(cum[-1]), qs, lambda ranks: values[np.searchsorted(cum, ranks, side="right")])


def merge(hists: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    hists = list(hists)
    if not hists:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate([h[0] for h in hists]), np.concatenate([h[1] for h in hists])


def _arrays(counter: Counter) -> tuple[np.ndarray, np.ndarray]:
    return (np.fromiter(counter.keys(), dtype=np.int64, count=len(counter)), np.fromiter(counter.values(), dtype=np.int64, count=len(counter)))


class LiveStats:
    """Counts per key over the run, histograms per key and second over the window.

    `add_request` is on every request's path, so it only appends the sample to a list; samples
    are folded into the histograms in bulk (numpy buckets, C-level counting) by `fold`, which
    every reader calls first (`count`, `failures`, `window`, `snapshot`, `drain`), and every
    `FOLD_EVERY` samples, so memory stays bounded whoever reads."""

    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self.reset()

    def reset(self) -> None:
        self.started = time.time()
        self._count: Counter = Counter()
        self._failures: Counter = Counter()
        #: key → deque of [second, histogram (count per bucket), failures in that second]
        self.seconds: dict[tuple, deque] = defaultdict(deque)
        self.conversations_started = 0
        self.ended_by: Counter = Counter()
        self._outbox: dict = {}  # (key, second) → [histogram, failures] not yet forwarded
        self._outbox_conv: list = []
        self._pending: list = []  # samples not folded in yet: (region, variant, endpoint, ms, ok, at)
        self._keys: list[tuple] = []  # every key seen, and its index (fold's group codes)
        self._key_ids: dict[tuple, int] = {}
        self._pending_forward: list = []  # the same, to be forwarded to the master too

    @property
    def count(self) -> Counter:
        """Requests per key since the test started."""
        self.fold()
        return self._count

    @property
    def failures(self) -> Counter:
        self.fold()
        return self._failures

    # ---- feeding ----
    def add_request(self, region: str, variant: str, endpoint: str, response_time_ms: float, ok: bool, at: float | None = None, forward: bool = False) -> None:
        pending = self._pending_forward if forward else self._pending
        pending.append((region, variant, endpoint, response_time_ms, ok, time.time() if at is None else at))
        if len(pending) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Fold the pending samples into the counts, histograms and (workers) the outbox."""
        for pending, forward in ((self._pending, False), (self._pending_forward, True)):
            if not pending:
                continue
            regions, variants, endpoints, ms, oks, ats = zip(*pending)
            pending.clear()
            keys = list(zip(regions, variants, endpoints))
            for key in set(keys).difference(self._key_ids):
                self._key_ids[key] = len(self._keys)
                self._keys.append(key)
            # Python-level work per (key, second), not per sample: C loops (map, Counter.update) and numpy
            kid = np.fromiter(map(self._key_ids.__getitem__, keys), dtype=np.int64, count=len(keys))
            secs = np.array(ats, dtype=np.float64).astype(np.int64)  # int(): as time's seconds
            ok = np.array(oks, dtype=bool)
            b = buckets(np.array(ms, dtype=np.float64))
            group = kid * (1 << 32) + (secs - secs.min())
            order = np.argsort(group, kind="stable")
            starts = np.flatnonzero(np.diff(group[order], prepend=-1))
            for lo, hi in zip(starts.tolist(), [*starts[1:].tolist(), len(order)]):
                rows = order[lo:hi]
                key, sec = self._keys[int(kid[rows[0]])], int(secs[rows[0]])
                ok_buckets = b[rows][ok[rows]].tolist()
                self._add_second(key, sec, ok_buckets, len(rows) - len(ok_buckets), forward)

    def _add_second(self, key: tuple, sec: int, ok_buckets: list, fails: int, forward: bool) -> None:
        """Requests of `key` in second `sec`: the buckets of the successes, and a failure count."""
        slot = self._slot(self.seconds[key], sec)
        self._count[key] += len(ok_buckets) + fails
        slot[1].update(ok_buckets)  # counted in C
        if key[2] == "create":
            self.conversations_started += len(ok_buckets)
        if fails:
            self._failures[key] += fails
            slot[2] += fails
        if forward:
            out = self._outbox.get((key, sec))
            if out is None:
                out = self._outbox[(key, sec)] = [Counter(), 0]
            out[0].update(ok_buckets)
            out[1] += fails

    def _slot(self, slots: deque, sec: int) -> list:
        """The slot of second `sec` (requests may arrive slightly out of order)."""
        for slot in reversed(slots):
            if slot[0] == sec:
                del slot[3:]  # it changes: drop its converted arrays
                return slot
            if slot[0] < sec:
                break
        slot = [sec, Counter(), 0]
        slots.append(slot)
        if len(slots) > 1 and slots[-2][0] > sec:  # keep seconds in order
            ordered = sorted(slots, key=lambda s: s[0])
            slots.clear()
            slots.extend(ordered)
        while slots and slots[0][0] < sec - self.window_s - 2:
            slots.popleft()
        return slot

    def add_conversation(self, ended_by: str, forward: bool = False) -> None:
        self.ended_by[ended_by] += 1
        if forward:
            self._outbox_conv.append(ended_by)

    def drain(self) -> list:
        """What was measured since the last drain, for the master: histograms, not samples."""
        self.fold()
        out: list = [("h", *key, sec, list(h.keys()), list(h.values()), fails) for (key, sec), (h, fails) in self._outbox.items()]
        out += [("c", e) for e in self._outbox_conv]
        self._outbox, self._outbox_conv = {}, []
        return out

    def ingest(self, items: Iterable) -> None:
        for item in items:
            if item[0] == "h":
                _, region, variant, endpoint, sec, bucket_ids, counts, fails = item
                key, sec = (region, variant, endpoint), int(sec)
                slot = self._slot(self.seconds[key], sec)
                for b, c in zip(bucket_ids, counts):
                    slot[1][int(b)] += int(c)
                n_ok = sum(int(c) for c in counts)
                self._count[key] += n_ok + int(fails)
                if endpoint == "create":
                    self.conversations_started += n_ok
                if fails:
                    self._failures[key] += int(fails)
                    slot[2] += int(fails)
            elif item[0] == "c":
                self.add_conversation(item[1])

    # ---- reading ----
    def window(self, keys: Iterable[tuple], now: float | None = None) -> tuple[tuple[np.ndarray, np.ndarray], int]:
        """The merged latency histogram (sparse) and the failures of `keys` over the window."""
        self.fold()
        now = time.time() if now is None else now
        since = now - self.window_s
        parts, fails = [], 0
        for key in keys:
            for slot in self.seconds.get(key, ()):
                sec, h, f = slot[:3]
                if sec + 1 > since:
                    if len(slot) == 4:  # a past second: converted once
                        parts.append(slot[3])
                    else:
                        arrays = _arrays(h)
                        if sec + 2 < now:  # complete (late rows land within a second): keep
                            slot.append(arrays)
                        parts.append(arrays)
                    fails += f
        return merge(parts), fails

    def window_percentiles(self, keys: list[tuple], qs: Sequence[float], now: float | None = None) -> np.ndarray:
        """Percentiles (ms) of the successful latencies of `keys` merged over the window (NaN
        without any): a p95 of several p95s would be wrong, histograms add up exactly."""
        return histogram_percentiles(self.window(keys, now)[0], qs)

    def snapshot(self, now: float | None = None) -> dict:
        """JSON-able: rows per key and rolled up per region and per variant."""
        self.fold()
        now = time.time() if now is None else now
        span = max(min(self.window_s, now - self.started), 1e-9)
        rows = []
        for key in sorted(self._count):
            hist, errs = self.window([key], now)
            p50, p95, p99 = histogram_percentiles(hist, (50, 95, 99))
            region, variant, endpoint = key
            rows.append(
                {
                    "region": region,
                    "variant": variant,
                    "endpoint": endpoint,
                    "count": self._count[key],
                    "failures": self._failures[key],
                    "error_rate": self._failures[key] / self._count[key],
                    "rps": (int(hist[1].sum()) + errs) / span,
                    "p50": _num(p50),
                    "p95": _num(p95),
                    "p99": _num(p99),
                }
            )
        completed = sum(self.ended_by.values())
        return {
            "time": now,
            "rows": rows,
            "conversations": {"active": max(self.conversations_started - completed, 0), "completed": completed, "ended_by": dict(self.ended_by)},
        }


class LiveHistory:
    """Respond p50/p95 of the sliding window over time: one series per region and per variant.

    `sample(live)` appends one point in time: for each region (all variants pooled) and each
    variant (all regions pooled), `live.window_percentiles` — the numbers the Regions table
    showed at that moment. A series that has no sample in the window
    gets None (a gap, not a zero). Past `max_points` every other point is dropped, so a long
    test keeps its whole span at a coarser step and memory stays bounded.
    """

    VIEWS = ("region", "variant")

    def __init__(self, endpoint: str = "respond", max_points: int = HISTORY_MAX_POINTS):
        self.endpoint = endpoint
        self.max_points = max_points
        self.reset()

    def reset(self) -> None:
        self.times: list[float] = []
        self.series: dict[str, dict[str, dict[str, list]]] = {view: {} for view in self.VIEWS}

    def sample(self, live: LiveStats, now: float | None = None) -> None:
        now = time.time() if now is None else now
        keys: dict[str, dict[str, list[tuple]]] = {view: defaultdict(list) for view in self.VIEWS}
        for key in [k for k in live.count if k[2] == self.endpoint]:
            region, variant, _ = key
            keys["region"][region].append(key)
            if variant:
                keys["variant"][variant].append(key)
        before = len(self.times)
        self.times.append(now)
        for view, groups in keys.items():
            for name in groups:
                self.series[view].setdefault(name, {"p50": [None] * before, "p95": [None] * before})
            for name, series in self.series[view].items():
                p50, p95 = live.window_percentiles(groups.get(name, []), (50, 95), now)
                series["p50"].append(_num(p50))
                series["p95"].append(_num(p95))
        if len(self.times) > self.max_points:
            self._thin()

    def _thin(self) -> None:
        keep = slice((len(self.times) - 1) % 2, None, 2)  # the newest point always stays
        self.times = self.times[keep]
        for view in self.series.values():
            for series in view.values():
                for q in series:
                    series[q] = series[q][keep]

    def to_json(self) -> dict:
        return {"endpoint": self.endpoint, "times": self.times, **self.series}


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 3)
