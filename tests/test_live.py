"""loadtest.inlocust.live: 3-significant-digit mergeable histograms, a sliding window, cost per request."""

from __future__ import annotations

import time

import numpy as np
import pytest

from loadtest.inlocust.live import (
    FOLD_EVERY,
    MAX_US,
    NBUCKETS,
    LiveStats,
    bucket,
    bucket_value,
    buckets,
    histogram_percentiles,
)


def reference_bucket(ms: float) -> int:
    """HdrHistogram's layout in plain integers: the definition `buckets` vectorises."""
    u = int(ms * 1000.0 + 0.5)
    if u < 2048:
        return max(0, u)
    if u >= MAX_US:
        return NBUCKETS - 1
    shift = u.bit_length() - 11
    return 2048 + (shift - 1) * 1024 + (u >> shift) - 1024


def test_buckets_keep_three_significant_digits():
    rng = np.random.default_rng(1)
    ms = np.round(np.concatenate([rng.lognormal(5, 1.5, 20_000), rng.uniform(0, 3, 2_000), [0.0, 0.001, 2.047, 2.048, MAX_US / 1000 - 0.001]]), 3)
    b = np.array([bucket(v) for v in ms])
    mid = bucket_value(b)
    rel = np.abs(mid - ms) / np.maximum(ms, 1e-9)
    assert (rel[ms >= 2.048] <= 0.5 / 1024).all()  # ≤ 0.05 %: three significant digits
    assert (mid[ms < 2.048] == ms[ms < 2.048]).all()  # exact microseconds below 2.048 ms
    # buckets are ordered like the values; beyond MAX_US, one last bucket
    assert (np.diff(b[np.argsort(ms, kind="stable")]) >= 0).all()
    assert bucket(MAX_US / 1000 - 0.001) == NBUCKETS - 1 == bucket(1e9)


def test_vectorised_buckets_equal_the_integer_layout_at_every_edge():
    rng = np.random.default_rng(4)
    edges = [x / 1000 for k in range(11, 29) for x in (2**k - 1, 2**k, 2**k + 1)]
    ms = np.concatenate([rng.lognormal(3, 2.5, 100_000), rng.uniform(0, 5, 10_000), edges, [0.0, 0.0004, 0.0005, 2.0475, 1e9, -1.0, -0.0004]])
    assert buckets(ms).tolist() == [reference_bucket(float(v)) for v in ms]
    assert bucket(12.5) == reference_bucket(12.5)


def test_samples_are_folded_in_when_read_and_every_fold_every_samples():
    live, now = LiveStats(), time.time()
    for i in range(FOLD_EVERY - 1):
        live.add_request("uk", "", "respond", 10.0, i % 10 != 0, now - 1)
    assert len(live._pending) == FOLD_EVERY - 1  # held: adding is an append
    assert live.count[("uk", "", "respond")] == FOLD_EVERY - 1 and not live._pending  # a reader folds
    assert live.failures[("uk", "", "respond")] == (FOLD_EVERY - 1 + 9) // 10
    for _ in range(FOLD_EVERY):
        live.add_request("uk", "", "create", 10.0, True, now - 1)
    assert len(live._pending) == 0  # bounded: folded at FOLD_EVERY without a reader
    assert live.conversations_started == FOLD_EVERY


def test_window_percentiles_within_0_1_percent_of_exact():
    rng = np.random.default_rng(2)
    live, now = LiveStats(), time.time()
    values = np.round(rng.lognormal(5, 0.6, 50_000), 3)
    for v in values:
        live.add_request("uk", "a", "respond", float(v), True, now - 1)
    row = live.snapshot(now)["rows"][0]
    for q in (50, 95, 99):
        assert row[f"p{q}"] == pytest.approx(np.percentile(values, q), rel=1e-3)
    assert row["count"] == 50_000


def test_workers_histograms_merge_into_the_masters_view():
    rng = np.random.default_rng(3)
    now = time.time()
    single, master = LiveStats(), LiveStats()
    workers = [LiveStats(), LiveStats()]
    for i, v in enumerate(np.round(rng.lognormal(4, 1, 6_000), 3)):
        ok = i % 50 != 0
        at = now - 5 + (i % 5)
        single.add_request("eu", "b", "create" if i % 3 == 0 else "respond", float(v), ok, at)
        workers[i % 2].add_request("eu", "b", "create" if i % 3 == 0 else "respond", float(v), ok, at, forward=True)
    workers[0].add_conversation("handoff", forward=True)
    single.add_conversation("handoff")
    for w in workers:
        master.ingest(w.drain())
        assert w.drain() == []  # drained once
    a, b = single.snapshot(now), master.snapshot(now)
    assert a["rows"] == b["rows"] and a["conversations"] == b["conversations"]
    assert sum(r["failures"] for r in b["rows"]) == 6_000 // 50


def test_old_seconds_leave_the_window():
    live, now = LiveStats(window_s=10), time.time()
    live.add_request("us", "", "respond", 500.0, True, now - 30)  # long gone
    live.add_request("us", "", "respond", 400.0, True, now - 12)  # kept a moment, outside the window
    live.add_request("us", "", "respond", 10.0, True, now - 1)
    row = live.snapshot(now)["rows"][0]
    assert row["count"] == 3 and row["p99"] == pytest.approx(10.0, rel=1e-3)
    assert histogram_percentiles(live.window([("us", "", "respond")], now)[0], [50])[0] == pytest.approx(10.0, rel=1e-3)


def _snapshot_seconds(n: int) -> float:
    rng = np.random.default_rng(4)
    live, now = LiveStats(), time.time()
    for v in np.round(rng.lognormal(5, 0.8, n), 3):
        live.add_request("uk", "a", "respond", float(v), True, now - 2)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        live.snapshot(now)
        best = min(best, time.perf_counter() - t)
    return best


def test_snapshot_cost_does_not_grow_with_the_rate():
    """100× more requests in the window: the snapshot (progress line, Regions tab) costs
    about the same (bounded by distinct buckets); a list of samples would cost ~100×."""
    small, big = _snapshot_seconds(2_000), _snapshot_seconds(200_000)
    assert big < 10 * small + 0.005, (small, big)


def test_a_late_worker_report_updates_a_second_already_shown():
    live, now = LiveStats(), time.time()
    live.add_request("uk", "a", "respond", 100.0, True, now - 5)
    assert live.snapshot(now)["rows"][0]["p50"] == pytest.approx(100.0, rel=1e-3)  # second now-5 converted
    worker = LiveStats()
    for _ in range(3):
        worker.add_request("uk", "a", "respond", 300.0, True, now - 5, forward=True)
    live.ingest(worker.drain())
    assert live.snapshot(now)["rows"][0]["p50"] == pytest.approx(300.0, rel=1e-3)
