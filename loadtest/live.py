"""Live statistics while a test runs: per region × variant × endpoint over a sliding window.

Feeds the terminal progress lines of `loadtest run` and the web UI's Regions tab. In a
distributed run, workers forward their new samples with each report to the master, which
merges them (`drain` / `ingest`), so the master's view covers every worker.
Exact, whole-run numbers come from requests.csv afterwards; these are for watching.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque

import numpy as np

from analysis.percentiles import percentiles

WINDOW_S = 10.0
MAX_SAMPLES_PER_KEY = 20_000  # bounds memory at very high rates


class LiveStats:
    def __init__(self, window_s: float = WINDOW_S):
        self.window_s = window_s
        self.reset()

    def reset(self) -> None:
        self.started = time.time()
        self.count: Counter = Counter()
        self.failures: Counter = Counter()
        self.samples: dict[tuple, deque] = defaultdict(lambda: deque(maxlen=MAX_SAMPLES_PER_KEY))
        self.errors: dict[tuple, deque] = defaultdict(lambda: deque(maxlen=MAX_SAMPLES_PER_KEY))
        self.conversations_started = 0
        self.ended_by: Counter = Counter()
        self._outbox: list = []  # samples not yet forwarded to the master

    # ---- feeding ----
    def add_request(self, region: str, variant: str, endpoint: str, response_time_ms: float,
                    ok: bool, at: float | None = None, forward: bool = False) -> None:
        key = (region, variant, endpoint)
        at = time.time() if at is None else at
        self.count[key] += 1
        if ok:
            self.samples[key].append((at, response_time_ms))
            if endpoint == "create":
                self.conversations_started += 1
        else:
            self.failures[key] += 1
            self.errors[key].append(at)
        if forward:
            self._outbox.append(("r", region, variant, endpoint, response_time_ms, ok, at))

    def add_conversation(self, ended_by: str, forward: bool = False) -> None:
        self.ended_by[ended_by] += 1
        if forward:
            self._outbox.append(("c", ended_by))

    def drain(self) -> list:
        out, self._outbox = self._outbox, []
        return out

    def ingest(self, items: list) -> None:
        for item in items:
            if item[0] == "r":
                self.add_request(*item[1:])
            else:
                self.add_conversation(item[1])

    # ---- reading ----
    def snapshot(self, now: float | None = None) -> dict:
        """JSON-able: rows per key and rolled up per region and per variant."""
        now = time.time() if now is None else now
        since = now - self.window_s
        span = max(min(self.window_s, now - self.started), 1e-9)
        rows = []
        for key in sorted(self.count):
            window = self.samples[key]
            while window and window[0][0] < since:
                window.popleft()
            errs = self.errors[key]
            while errs and errs[0] < since:
                errs.popleft()
            values = np.fromiter((v for _, v in window), float, len(window))
            p50, p95, p99 = percentiles(values, (50, 95, 99))
            region, variant, endpoint = key
            rows.append({
                "region": region, "variant": variant, "endpoint": endpoint,
                "count": self.count[key], "failures": self.failures[key],
                "error_rate": self.failures[key] / self.count[key],
                "rps": (len(window) + len(errs)) / span,
                "p50": _num(p50), "p95": _num(p95), "p99": _num(p99),
            })
        completed = sum(self.ended_by.values())
        return {
            "time": now, "rows": rows,
            "conversations": {"active": max(self.conversations_started - completed, 0),
                              "completed": completed, "ended_by": dict(self.ended_by)},
        }


def _num(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 3)


def by_region(snapshot: dict) -> dict[str, dict]:
    """Roll rows up per region: count, failures, rps, and the worst endpoint p95."""
    out: dict[str, dict] = {}
    for row in snapshot["rows"]:
        agg = out.setdefault(row["region"], {"count": 0, "failures": 0, "rps": 0.0, "p95": None})
        agg["count"] += row["count"]
        agg["failures"] += row["failures"]
        agg["rps"] += row["rps"]
        if row["endpoint"] == "respond" and row["p95"] is not None:
            agg["p95"] = max(agg["p95"] or 0.0, row["p95"])
    return out
