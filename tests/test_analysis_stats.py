"""analysis.stats: the one percentile function, group tables, roll-ups, warm-up, orphans."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_run
from analysis.stats import (
    ALL,
    PERCENTILES,
    SUMMARY_COLUMNS,
    SortedValues,
    compute_stats,
    grouped_percentiles,
    percentiles,
)
from synthetic import START, make_run

REGIONS = {"uk": (4.9, 0.35), "us": (5.3, 0.5), "eu": (5.0, 0.4)}


# --------------------------------------------------------------------------- percentiles()


def test_percentiles_equal_numpy_on_lognormal():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 10, 999, 100_000):
        v = rng.lognormal(5, 0.5, n)
        np.testing.assert_array_equal(percentiles(v, PERCENTILES), np.percentile(v, PERCENTILES))
        # the presorted fast path gives bit-identical numbers
        np.testing.assert_array_equal(percentiles(np.sort(v), PERCENTILES, assume_sorted=True), np.percentile(v, PERCENTILES))


def test_percentiles_edge_cases():
    assert np.isnan(percentiles([], PERCENTILES)).all()
    assert percentiles([], (50, 95)).shape == (2,)
    np.testing.assert_array_equal(percentiles([42.0], PERCENTILES), np.full(len(PERCENTILES), 42.0))
    np.testing.assert_array_equal(percentiles([1, 2, 3, 4], [0, 100]), [1, 4])
    assert percentiles([1.0, 2.0, 3.0, 4.0], [50])[0] == 2.5
    # NaNs are ignored rather than poisoning the result
    assert percentiles([1.0, np.nan, 3.0], [50])[0] == 2.0
    with pytest.raises(ValueError):
        percentiles([1.0, 2.0], [101], assume_sorted=True)
    assert PERCENTILES == (50, 75, 90, 95, 99, 99.9)


def test_grouped_percentiles_match_per_group_numpy():
    rng = np.random.default_rng(7)
    values = rng.lognormal(4, 1, 50_000)
    keys = rng.integers(0, 7, 50_000)
    keys[keys == 5] = 6  # group 5 empty
    mask = rng.random(50_000) < 0.8
    out = grouped_percentiles(keys, 8, qs=(50, 95, 99.9), sorter=SortedValues(values), mask=mask)
    for g in range(8):
        sel = (keys == g) & mask
        if sel.any():
            np.testing.assert_array_equal(out[g], np.percentile(values[sel], (50, 95, 99.9)))
        else:
            assert np.isnan(out[g]).all()


# --------------------------------------------------------------------------- run statistics


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """Lognormal per region; variant b 20% slower; eu·close all failed; a declared region
    (ap) and variant (c) with no requests at all."""
    path = tmp_path_factory.mktemp("stats") / "run"
    truth = make_run(
        path,
        rows=60_000,
        regions=REGIONS,
        variants=["a", "b"],
        variant_factor={"b": 1.2},
        error_rate=0.02,
        error_rates={("eu", "close"): 1.0},
        orphans=7,
        seed=11,
        declared_regions=["uk", "us", "eu", "ap"],
        declared_variants=["a", "b", "c"],
    )
    return path, truth


@pytest.fixture(scope="module")
def loaded(run_dir):
    path, truth = run_dir
    run = load_run(path, use_cache=False)
    return run, compute_stats(run), truth


def _raw(path) -> pd.DataFrame:
    return pd.read_csv(path / "requests.csv", keep_default_na=False, na_values={"response_time_ms": []})


def test_detail_rows_match_numpy_on_raw_csv(run_dir, loaded):
    path, _ = run_dir
    _, st, _ = loaded
    raw = _raw(path)
    detail = st.level("region·variant·endpoint").set_index(["region", "variant", "endpoint"])
    checked = 0
    for (r, v, e), g in raw.groupby(["region", "variant", "endpoint"]):
        row = detail.loc[(r, v, e)]
        ok = g[g.ok == 1].response_time_ms.to_numpy()
        assert row["count"] == len(g)
        assert row["errors"] == int((g.ok == 0).sum())
        assert row["error_rate"] == pytest.approx((g.ok == 0).mean())
        if len(ok):
            expect = np.percentile(ok, PERCENTILES)
            got = [row[f"p{str(q).replace('.', '')}_ms"] for q in (50, 75, 90, 95, 99)] + [row["p999_ms"]]
            np.testing.assert_allclose(got, expect, rtol=1e-12)
            assert row["min_ms"] == ok.min() and row["max_ms"] == ok.max()
            assert row["mean_ms"] == pytest.approx(ok.mean())
        checked += 1
    assert checked == 3 * 2 * 3


def test_rollups_match_numpy(run_dir, loaded):
    path, _ = run_dir
    _, st, _ = loaded
    raw = _raw(path)
    ok = raw[raw.ok == 1]
    by_region = st.level("region·endpoint").set_index(["region", "endpoint"])
    for (r, e), g in ok.groupby(["region", "endpoint"]):
        assert by_region.loc[(r, e), "p95_ms"] == pytest.approx(np.percentile(g.response_time_ms, 95), rel=1e-12)
        assert by_region.loc[(r, e), "variant"] == ALL
    by_variant = st.level("variant·endpoint").set_index(["variant", "endpoint"])
    for (v, e), g in ok.groupby(["variant", "endpoint"]):
        assert by_variant.loc[(v, e), "p99_ms"] == pytest.approx(np.percentile(g.response_time_ms, 99), rel=1e-12)
    overall = st.level("overall").iloc[0]
    assert overall["count"] == len(raw)
    assert overall["p50_ms"] == pytest.approx(np.percentile(ok.response_time_ms, 50), rel=1e-12)
    assert st.total_requests == len(raw) and st.total_errors == int((raw.ok == 0).sum())


def test_latencies_close_to_the_true_lognormal(loaded):
    _, st, truth = loaded
    t = st.level("region·variant·endpoint").set_index(["region", "variant", "endpoint"])
    for r in REGIONS:
        assert t.loc[(r, "a", "respond"), "p50_ms"] == pytest.approx(truth.lognormal_quantile(r, "respond", 50), rel=0.05)
        assert t.loc[(r, "b", "respond"), "p95_ms"] == pytest.approx(truth.lognormal_quantile(r, "respond", 95, 1.2), rel=0.08)


def test_empty_region_and_variant_are_listed_with_zero_requests(loaded):
    _, st, _ = loaded
    assert st.regions == ["uk", "us", "eu", "ap"]
    assert st.variants == ["a", "b", "c"]
    d = st.level("region·variant·endpoint")
    ap = d[d.region == "ap"]
    c = d[d.variant == "c"]
    assert len(ap) == 3 * 3 and (ap["count"] == 0).all() and ap["p95_ms"].isna().all()
    assert len(c) == 3 * 4 and (c["count"] == 0).all() and c["error_rate"].isna().all()


def test_all_failed_endpoint_keeps_failures_apart(run_dir, loaded):
    path, _ = run_dir
    _, st, _ = loaded
    raw = _raw(path)
    t = st.level("region·endpoint").set_index(["region", "endpoint"])
    row = t.loc[("eu", "close")]
    failed = raw[(raw.region == "eu") & (raw.endpoint == "close")]
    assert row["count"] == len(failed) > 0
    assert row["errors"] == row["count"] and row["error_rate"] == 1.0 and row["ok_count"] == 0
    assert np.isnan(row["p50_ms"]) and np.isnan(row["p999_ms"]) and np.isnan(row["mean_ms"])
    assert row["fail_p50_ms"] == pytest.approx(np.percentile(failed.response_time_ms, 50))
    # errors by kind and status add up to the failures
    ek = st.errors_by_kind
    assert ek[(ek.region == "eu") & (ek.endpoint == "close")]["count"].sum() == len(failed)
    es = st.errors_by_status
    assert es["count"].sum() == st.total_errors
    assert set(ek.error_kind) <= {"http", "rate_limited", "timeout", "connection", "schema", "other"}


def test_single_request_run(tmp_path):
    path = tmp_path / "one"
    make_run(path, rows=1, regions={"uk": (5, 0.3)}, turns=1, error_rate=0.0, stats_history=False)
    # keep exactly one request row
    lines = (path / "requests.csv").read_text().splitlines()
    (path / "requests.csv").write_text("\n".join(lines[:2]) + "\n")
    run = load_run(path, use_cache=False)
    st = compute_stats(run)
    rt = float(lines[1].split(",")[5])
    row = st.summary().iloc[0]
    assert (row["region"], row["endpoint"], row["count"]) == ("uk", "create", 1)
    for c in ("min_ms", "p50_ms", "p95_ms", "p999_ms", "max_ms", "mean_ms"):
        assert row[c] == pytest.approx(rt)
    assert st.summary()["count"].sum() == 1


def test_summary_columns_and_throughput(loaded):
    run, st, _ = loaded
    s = st.summary()
    assert tuple(s.columns) == SUMMARY_COLUMNS
    assert len(s) == 4 * 3 * 3  # region × variant × endpoint (declared ones included)
    dur = run.window[1] - run.window[0]
    assert s["rps"].to_numpy() == pytest.approx(s["count"].to_numpy() / dur)


def test_warmup_excludes_early_requests(run_dir):
    path, _ = run_dir
    raw = _raw(path)
    run = load_run(path, warmup_s=30, use_cache=False)
    assert run.requests["timestamp"].min() >= START + 30
    assert len(run.requests) == int((raw.timestamp >= START + 30).sum())
    st = compute_stats(run)
    kept = raw[(raw.timestamp >= START + 30) & (raw.ok == 1) & (raw.region == "uk") & (raw.endpoint == "respond")]
    t = st.level("region·endpoint").set_index(["region", "endpoint"])
    assert t.loc[("uk", "respond"), "p95_ms"] == pytest.approx(np.percentile(kept.response_time_ms, 95), rel=1e-12)
    assert st.window[0] == pytest.approx(START + 30)
    assert any("warm-up" in n for n in st.notes)
    assert (run.conversations["started"] >= START + 30).all()


def test_orphans_detected(run_dir, loaded):
    path, _ = run_dir
    _, st, truth = loaded
    raw = _raw(path)
    created = set(raw[(raw.endpoint == "create") & (raw.ok == 1) & (raw.conversation_id != "")].conversation_id)
    closed = set(raw[(raw.endpoint == "close") & (raw.ok == 1)].conversation_id)
    expect = len(created - closed)
    conv = st.conversations
    overall = conv[conv.level == "overall"].iloc[0]
    assert overall["orphans"] == expect == truth.orphans
    # eu's closes all failed: every eu conversation that was created is an orphan
    eu = conv[(conv.level == "region") & (conv.region == "eu")].iloc[0]
    assert eu["orphans"] == eu["created"] > 0


def test_orphans_exact_count_without_errors(tmp_path):
    truth = make_run(tmp_path / "o", rows=5_000, error_rate=0.0, orphans=13, seed=4)
    st = compute_stats(load_run(tmp_path / "o", use_cache=False))
    conv = st.conversations
    assert conv[conv.level == "overall"].orphans.iloc[0] == 13 == truth.orphans


def test_conversation_metrics(run_dir, loaded):
    path, _ = run_dir
    _, st, _ = loaded
    c = pd.read_csv(path / "conversations.csv", keep_default_na=False)
    conv = st.conversations
    row = conv[(conv.level == "region·variant") & (conv.region == "uk") & (conv.variant == "a")].iloc[0]
    sub = c[(c.region == "uk") & (c.variant == "a")]
    assert row["conversations"] == len(sub)
    # conversations cut by the end of the test are neither successes nor failures
    finished = sub[sub.ended_by != "stopped"]
    assert len(finished) < len(sub) and row["stopped"] == len(sub) - len(finished)
    assert row["success_rate"] == pytest.approx(finished.ok.sum() / len(finished))
    assert row["duration_p50_s"] == pytest.approx(np.percentile(sub.duration_s, 50))
    assert row["turns_mean"] == pytest.approx(sub.turns.mean())
    shares = sub.ended_by.value_counts(normalize=True)
    for k, v in shares.items():
        assert row[f"ended_by_{k}"] == pytest.approx(v)
    # time to greeting = create latency
    d = st.level("region·variant·endpoint").set_index(["region", "variant", "endpoint"])
    assert row["create_p95_ms"] == d.loc[("uk", "a", "create"), "p95_ms"]
    assert row["errors_respond"] == d.loc[("uk", "a", "respond"), "errors"]


def test_latency_by_turn(run_dir, loaded):
    path, _ = run_dir
    _, st, _ = loaded
    raw = _raw(path)
    bt = st.by_turn
    sel = raw[(raw.region == "us") & (raw.variant == "b") & (raw.endpoint == "respond") & (raw.ok == 1) & (raw.turn == 2)]
    row = bt[(bt.region == "us") & (bt.variant == "b") & (bt.turn == 2)].iloc[0]
    assert row["count"] == len(sel)
    assert row["p95_ms"] == pytest.approx(np.percentile(sel.response_time_ms, 95), rel=1e-12)
    assert set(bt.variant) == {"a", "b", ALL}


def test_timeseries_is_bounded_and_adds_up(loaded):
    _, st, _ = loaded
    ts = st.timeseries
    per_region = ts[ts.region != ALL]
    assert per_region["count"].sum() == st.total_requests
    assert ts[ts.region == ALL]["errors"].sum() == st.total_errors
    assert ts.groupby("region").size().max() <= 120


def test_distributed_worker_files_are_merged(tmp_path):
    one = make_run(tmp_path / "one", rows=8_000, seed=9, workers=1)
    three = make_run(tmp_path / "three", rows=8_000, seed=9, workers=3, split_files=True)
    assert len(three.files) == 3
    a = compute_stats(load_run(tmp_path / "one", use_cache=False)).summary()
    b = compute_stats(load_run(tmp_path / "three", use_cache=False)).summary()
    assert one.rows == three.rows
    pd.testing.assert_frame_equal(a.drop(columns=["rps"]), b.drop(columns=["rps"]))


def test_orphans_with_ids_of_varying_length(tmp_path):
    """Fixed-width ids take the numpy hash path; others Arrow's hash set: same answer."""
    truth = make_run(tmp_path / "v", rows=5_000, error_rate=0.0, orphans=9, seed=12)
    f = tmp_path / "v" / "requests.csv"
    text = f.read_text()
    import re

    f.write_text(re.sub(r"-([0-9a-f]{4})0000([0-9a-f]{4})([0-9a-f]{12})", lambda m: "-" + m.group(1) + m.group(2).lstrip("0") + m.group(3), text))
    ids = pd.read_csv(f, keep_default_na=False).conversation_id
    assert ids[ids != ""].str.len().nunique() > 1
    st = compute_stats(load_run(tmp_path / "v", use_cache=False))
    conv = st.conversations
    assert conv[conv.level == "overall"].orphans.iloc[0] == 9 == truth.orphans
