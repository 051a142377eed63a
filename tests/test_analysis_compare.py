"""analysis.compare: bootstrap CIs, Mann-Whitney verdicts, region/variant tables, baseline."""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from analysis.compare import compare_baseline, compare_groups, diff_ci, error_rate_diff, mann_whitney, resample, verdict
from analysis.load import load_run
from analysis.stats import compute_stats
from synthetic import make_run

Z95 = NormalDist().inv_cdf(0.95)


def test_bootstrap_replicates_match_a_brute_force_bootstrap():
    """The order-statistic shortcut has the same distribution as resampling rows."""
    rng = np.random.default_rng(1)
    v = np.sort(rng.lognormal(5, 0.5, 2_000))
    fast = resample(v, np.random.default_rng(2), qs=(50, 95), n_boot=4000).boot
    brute = np.percentile(v[rng.integers(0, len(v), size=(4000, len(v)))], (50, 95), axis=1).T
    for i in range(2):
        assert fast[:, i].mean() == pytest.approx(brute[:, i].mean(), rel=0.01)
        assert fast[:, i].std() == pytest.approx(brute[:, i].std(), rel=0.12)


def test_bootstrap_ci_contains_true_difference():
    rng = np.random.default_rng(5)
    covered = 0
    trials = 60
    for _ in range(trials):
        a = np.sort(rng.lognormal(5.2, 0.4, 20_000))
        b = np.sort(rng.lognormal(5.0, 0.4, 20_000))
        d, lo, hi = diff_ci(resample(a, rng), resample(b, rng))
        true95 = math.exp(5.2 + 0.4 * Z95) - math.exp(5.0 + 0.4 * Z95)
        covered += lo[1] <= true95 <= hi[1]
        assert lo[1] > 0  # a real +22% shift is always detected
    assert covered >= 0.88 * trials


def test_mann_whitney_says_noise_for_identical_distributions():
    rng = np.random.default_rng(8)
    a = rng.lognormal(5, 0.4, 50_000)
    b = rng.lognormal(5, 0.4, 50_000)
    assert verdict(mann_whitney(a, b, rng)) == "noise"
    c = rng.lognormal(5.05, 0.4, 50_000)
    assert verdict(mann_whitney(a, c, rng)) == "significant"
    assert verdict(mann_whitney(a[:5], c[:5], rng)) == "too few"


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    path = tmp_path_factory.mktemp("cmp") / "run"
    make_run(path, rows=80_000, regions={"uk": (4.9, 0.35), "us": (5.4, 0.35), "eu": (4.9, 0.35)},
             variants=["a", "b", "c"], variant_factor={"b": 1.3}, seed=21, error_rate=0.0)
    return compute_stats(load_run(path, use_cache=False))


def test_regions_side_by_side(stats):
    t = compare_groups(stats, "region")
    resp = t[t.endpoint == "respond"].set_index("group")
    ref = resp[resp.is_reference].index[0]
    assert ref in ("uk", "eu")  # the fastest by p50
    assert resp.loc["us", "shift"] == "significant"
    assert resp.loc["us", "d_p95_lo"] > 0 and resp.loc["us", "d_p95_significant"]
    other = "eu" if ref == "uk" else "uk"
    assert resp.loc[other, "shift"] in ("noise", "significant")
    assert resp.loc[other, "d_p50_lo"] <= 0.05 * resp.loc[other, "p50_ms"]
    # the difference reported is exactly the difference of the table's percentiles
    assert resp.loc["us", "d_p95_ms"] == pytest.approx(resp.loc["us", "p95_ms"] - resp.loc[ref, "p95_ms"])


def test_variants_against_control(stats):
    t = compare_groups(stats, "variant")
    resp = t[t.endpoint == "respond"].set_index("group")
    assert resp.loc["a", "is_reference"]
    assert resp.loc["b", "shift"] == "significant"
    assert resp.loc["b", "d_p95_pct"] == pytest.approx(0.3, abs=0.06)
    assert 0.15 < resp.loc["b", "d_p95_pct_lo"] < resp.loc["b", "d_p95_pct"] < resp.loc["b", "d_p95_pct_hi"] < 0.45
    assert resp.loc["c", "shift"] == "noise"
    assert resp.loc["c", "d_p95_lo"] < 0 < resp.loc["c", "d_p95_hi"]
    named = compare_groups(stats, "variant", control="c")
    assert named[named.is_reference].group.unique().tolist() == ["c"]


def test_baseline_regression_flagged(tmp_path):
    regions = {"uk": (5.0, 0.4), "us": (5.0, 0.4)}
    make_run(tmp_path / "base", rows=40_000, regions=regions, seed=1, error_rate=0.005)
    # us 25% slower, uk 3 points more errors on respond
    make_run(tmp_path / "cur", rows=40_000, regions={"uk": (5.0, 0.4), "us": (5.0 + math.log(1.25), 0.4)},
             seed=2, error_rate=0.005, error_rates={("uk", "respond"): 0.035})
    cur = compute_stats(load_run(tmp_path / "cur", use_cache=False))
    base = compute_stats(load_run(tmp_path / "base", use_cache=False))
    t = compare_baseline(cur, base).set_index(["region", "endpoint"])
    assert t.loc[("us", "respond"), "regression"] and "p95" in t.loc[("us", "respond"), "reasons"]
    assert t.loc[("us", "respond"), "d_p95_pct"] == pytest.approx(0.25, abs=0.06)
    assert t.loc[("uk", "respond"), "regression"] and "error rate" in t.loc[("uk", "respond"), "reasons"]
    assert not t.loc[("uk", "create"), "regression"] and t.loc[("uk", "create"), "status"] == "ok"
    # thresholds are honoured
    loose = compare_baseline(cur, base, ["p95:+50%", "error_rate:+10pt"]).set_index(["region", "endpoint"])
    assert not loose.regression.any()
    # identical runs: no regression
    same = compare_baseline(base, base)
    assert not same.regression.any() and set(same.status) == {"ok"}


def test_error_rate_interval_is_newcombes_and_honest_at_zero_errors():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10
    d, lo, hi = error_rate_diff(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339) and d == pytest.approx(0.2)
    _, lo, hi = error_rate_diff(9, 10, 3, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.1705, 0.8090)
    _, lo, hi = error_rate_diff(0, 500, 0, 500)  # a Wald interval would be [0, 0]
    assert lo < 0 < hi and hi == pytest.approx(0.0076, abs=1e-4)


def test_mann_whitney_matches_scipy():
    from scipy import stats as sps

    rng = np.random.default_rng(3)
    for n1, n2, shift, digits in ((100, 200, 0.0, None), (1_000, 1_300, 0.05, None), (50, 60, 0.2, -1)):
        a, b = rng.lognormal(5 + shift, 0.4, n1), rng.lognormal(5, 0.4, n2)
        if digits is not None:  # ties
            a, b = np.round(a, digits), np.round(b, digits)
        expect = sps.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue
        assert mann_whitney(a, b, rng, max_n=10**9) == pytest.approx(expect, rel=1e-9)
