"""analysis.compare: bootstrap CIs, Mann-Whitney verdicts, region/variant tables, baseline."""

from __future__ import annotations

import math
import subprocess
import sys
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
    make_run(
        path,
        rows=80_000,
        regions={"uk": (4.9, 0.35), "us": (5.4, 0.35), "eu": (4.9, 0.35)},
        variants=["a", "b", "c"],
        variant_factor={"b": 1.3},
        seed=21,
        error_rate=0.0,
    )
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
    make_run(
        tmp_path / "cur",
        rows=40_000,
        regions={"uk": (5.0, 0.4), "us": (5.0 + math.log(1.25), 0.4)},
        seed=2,
        error_rate=0.005,
        error_rates={("uk", "respond"): 0.035},
    )
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


def test_mann_whitney_ranks_equal_scipys_on_integer_microseconds_with_many_ties():
    """Recorded latencies are integer microseconds: ties are common. The p-value built from our
    average ranks equals scipy's (its rankdata does the ranking there)."""
    from scipy import stats as sps

    rng = np.random.default_rng(11)
    for n1, n2, hi in ((300, 250, 40), (2_000, 1_500, 900), (40, 45, 3)):
        a, b = rng.integers(0, hi, n1) / 1000, rng.integers(1, hi + 1, n2) / 1000
        expect = sps.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic").pvalue
        assert mann_whitney(a, b, rng, max_n=10**9) == pytest.approx(expect, rel=1e-12)


def test_report_code_does_not_import_scipy():
    """Importing scipy.stats cost more CPU than every comparison of a report (0.7 s of a 1M-row
    report's ~8 s): the report path must not pull it in (the tests may, as a reference)."""
    code = (
        "import sys, analysis.report, analysis.compare, analysis.family, analysis.regression; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --------------------------------------------------------------------------- variants within regions, Holm


def _holm_reference(p):
    """Holm's procedure written out as in the textbook: sort, multiply, make monotone."""
    order = sorted(range(len(p)), key=lambda i: p[i])
    m, out, running = len(p), [0.0] * len(p), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_holm_matches_the_textbook_procedure_and_skips_nan():
    from analysis.family import holm

    rng = np.random.default_rng(3)
    for m in (1, 2, 7, 40):
        p = list(rng.uniform(0, 0.2, m))
        p[0] = p[-1]  # a tie
        assert holm(p) == pytest.approx(_holm_reference(p))
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    got = holm([0.01, math.nan, 0.04])
    assert math.isnan(got[1]) and got[[0, 2]] == pytest.approx([0.02, 0.04])  # m = 2, not 3


@pytest.fixture(scope="module")
def uk_only_slower(tmp_path_factory):
    """Variant b 25 % slower in uk only; us the same for both; us much slower than uk."""
    path = tmp_path_factory.mktemp("within") / "run"
    make_run(path, rows=30_000, regions={"uk": (4.9, 0.35), "us": (5.6, 0.45)}, variants=("a", "b"), variant_factor={("uk", "b"): 1.25}, error_rate=0.0, seed=4)
    run = load_run(path)
    return run, compute_stats(run)


def test_variants_within_regions_flag_uk_and_not_us(uk_only_slower):
    from analysis.family import VARIANTS, WITHIN, comparison_family

    _, stats = uk_only_slower
    family = comparison_family(stats, control="a")
    within = family[WITHIN]
    b = within[(within.group == "b") & (within.endpoint == "respond")].set_index("region")
    assert set(within.region) == {"uk", "us"} and set(within.reference) == {"a"}
    assert b.loc["uk", "d_p95_significant"] and b.loc["uk", "d_p95_pct"] > 0.15
    assert b.loc["uk", "shift"] == "significant" and b.loc["uk", "mw_p_holm"] < 0.05
    assert not b.loc["us", "d_p95_significant"] and b.loc["us", "d_p95_verdict"] == "noise"
    assert b.loc["us", "shift"] == "noise"
    # Each region's numbers are that region's own: the slice's p95 of b in uk is computed
    # from the uk rows only (numpy on the raw latencies).
    lat = stats.latencies(("region", "variant", "endpoint"))
    assert b.loc["uk", "p95_ms"] == pytest.approx(np.percentile(lat[("uk", "b", "respond")], 95))
    assert b.loc["uk", "d_p95_ms"] == pytest.approx(np.percentile(lat[("uk", "b", "respond")], 95) - np.percentile(lat[("uk", "a", "respond")], 95))
    # Holm over the whole family: every p-value of every table, adjusted together.
    tables = [df for df in family.values() if df is not None]
    raw = np.concatenate([df.mw_p.to_numpy() for df in tables])
    adjusted = np.concatenate([df.mw_p_holm.to_numpy() for df in tables])
    keep = ~np.isnan(raw)
    assert keep.sum() >= 8
    assert adjusted[keep] == pytest.approx(_holm_reference(list(raw[keep])))
    assert (adjusted[keep] >= raw[keep]).all()
    pooled = family[VARIANTS]
    assert pooled[(pooled.group == "b") & (pooled.endpoint == "respond")].d_p95_pct.iloc[0] < b.loc["uk", "d_p95_pct"]


def test_comparisons_csv_lists_every_comparison_with_raw_and_adjusted_p(uk_only_slower, tmp_path):
    import csv as csvmod

    from analysis.family import COMPARISONS_COLUMNS, WITHIN, comparison_family, write_comparisons_csv

    _, stats = uk_only_slower
    family = comparison_family(stats, control="a")
    path = write_comparisons_csv(family, tmp_path)
    with open(path, newline="") as f:
        rows = list(csvmod.DictReader(f))
    assert tuple(rows[0]) == COMPARISONS_COLUMNS
    pairs = sum(int((~df.is_reference).sum()) for df in family.values() if df is not None)
    assert len(rows) == pairs * 4  # p50, p95, p99 and error rate of each pair
    assert {r["comparison"] for r in rows} == {"regions", "variants", "variants within region"}
    uk95 = next(r for r in rows if r["comparison"] == WITHIN and r["within"] == "uk" and r["endpoint"] == "respond" and r["metric"] == "p95")
    row = family[WITHIN].query("region == 'uk' and group == 'b' and endpoint == 'respond'").iloc[0]
    assert (uk95["reference"], uk95["subject"]) == ("a", "b")
    assert float(uk95["delta"]) == pytest.approx(row.d_p95_ms, rel=1e-5)
    assert float(uk95["ci_lo"]) == pytest.approx(row.d_p95_lo, rel=1e-5)
    assert float(uk95["p_raw"]) == pytest.approx(row.mw_p, rel=1e-5)
    assert float(uk95["p_holm"]) == pytest.approx(row.mw_p_holm, rel=1e-5)
    assert uk95["verdict"] == "significant" and uk95["shift"] == "significant"


@pytest.mark.slow
def test_report_shows_variants_within_regions_and_writes_comparisons_csv(uk_only_slower):
    from analysis.report import write_report

    run, stats = uk_only_slower
    out = write_report(run, stats)
    html = out.read_text()
    assert 'id="within"' in html and "Variants within regions" in html
    assert "uk · respond" in html and "us · respond" in html
    assert "Holm" in html
    assert (out.parent / "comparisons.csv").is_file()
