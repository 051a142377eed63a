"""analysis.charts: the panels drawn without matplotlib's axis sharing (for its layout cost)
still show one range per chart and tick labels only on the outer panels, as sharing did.
(That every chart is built, variants included, is checked on the report that
tests/test_report.py builds, where it is rendered too.)"""

from __future__ import annotations

import os

import matplotlib.pyplot as plt
import numpy as np
import pytest

import analysis.charts as charts
from analysis.load import load_run
from analysis.stats import compute_stats
from synthetic import make_run


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    run = tmp_path_factory.mktemp("charts") / "run"
    make_run(run, rows=30_000, variants=["a", "b"], duration_s=600, regions={"uk": (4.9, 0.3), "us": (5.2, 0.4), "eu": (5.0, 0.35)})
    return compute_stats(load_run(run))


@pytest.fixture
def figures(monkeypatch):
    """The figures each chart function builds, inspected as drawn and then closed unrendered
    (rendering them to SVG is the report test's: it would double these tests' time)."""
    seen = []

    def capture(fig):
        fig.canvas.draw()  # the limits and labels as drawn
        seen.append(
            [
                (
                    ax,
                    ax.get_xlim(),
                    ax.get_ylim(),
                    [t.get_visible() and bool(t.get_text()) for t in ax.get_xticklabels()],
                    [t.get_visible() and bool(t.get_text()) for t in ax.get_yticklabels()],
                )
                for ax in fig.axes
            ]
        )
        plt.close(fig)
        return "data:image/svg+xml;base64,"

    monkeypatch.setattr(charts, "png_uri", capture)
    return seen


def test_timeseries_panels_share_one_time_range_and_only_the_bottom_row_labels_it(stats, figures):
    ts = stats.timeseries
    # "us" stops at half time: its panels must still span the whole run, as with sharex=True
    half = ts.t.max() / 2
    stats.timeseries = ts[~((ts.region == "us") & (ts.t > half))].reset_index(drop=True)
    try:
        assert charts.timeseries_chart(stats, charts.region_colours(stats.regions)) is not None
    finally:
        stats.timeseries = ts
    axes = figures[-1]
    assert len(axes) == 3 * 3  # 3 rows × (latency, throughput, its error-rate twin)
    scale = 60.0 if ts.t.max() + stats.bin_s > 300 else 1.0
    x = (ts.t + stats.bin_s / 2) / scale
    lo, hi = float(x.min()), float(x.max())
    want = (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    for _, xlim, _, _, _ in axes:
        assert xlim == pytest.approx(want, rel=1e-12)
    main = axes[:6]  # the 3 × 2 grid, in row order; the twins come after
    for i, (_, _, _, xlabels, _) in enumerate(main):
        assert any(xlabels) == (i >= 4), f"panel {i}: x tick labels only on the bottom row"


@pytest.mark.parametrize("chart", ["ecdf", "turns"])
def test_side_by_side_panels_share_one_latency_range_and_only_the_first_labels_it(stats, figures, chart):
    colours = charts.region_colours(stats.regions)
    fn = {"ecdf": lambda: charts.ecdf_chart(stats, colours), "turns": lambda: charts.turn_chart(stats, colours)}
    assert fn[chart]() is not None
    axes = figures[-1]
    assert len(axes) == 3  # ecdf: 3 endpoints; turns: all variants, a, b
    ylims = {ylim for _, _, ylim, _, _ in axes}
    assert len(ylims) == 1
    if chart == "turns":  # the highest p95 of turns with ≥ 5 requests, plus 8 %
        bt = stats.by_turn
        top = float(np.nanmax(bt[bt["count"] >= 5].p95_ms.to_numpy(dtype=float)))
        assert ylims.pop() == pytest.approx((0, top * 1.08))
    for i, (_, _, _, _, ylabels) in enumerate(axes):
        assert any(ylabels) == (i == 0), f"panel {i}: y tick labels only on the first panel"


def _drawn_by_parent(monkeypatch) -> list[str]:
    """Names of the chart functions that ran in this process (a forked child's calls do not
    show here: it has its own copy of the list)."""
    calls: list[str] = []
    for name in ("percentile_bars", "ecdf_chart", "timeseries_chart", "turn_chart", "variant_chart", "error_chart"):
        fn = getattr(charts, name)
        monkeypatch.setattr(charts, name, lambda *a, _fn=fn, _name=name, **k: calls.append(_name) or _fn(*a, **k))
    return calls


def test_charts_drawn_by_a_forked_child_are_the_same_bytes_and_a_failed_child_changes_nothing(stats, monkeypatch):
    if not charts._can_fork():
        pytest.skip("no fork here: every chart is drawn in-process")
    monkeypatch.setattr(charts, "FORK", False)
    alone = charts.build_charts(stats)
    assert [c.id for c in alone] == ["percentiles", "ecdf", "timeseries", "turns", "errors"]
    monkeypatch.setattr(charts, "FORK", True)
    with monkeypatch.context() as m:
        calls = _drawn_by_parent(m)
        forked = charts.build_charts(stats)
        assert sorted(calls) == ["ecdf_chart", "percentile_bars", "variant_chart"]  # the other three: the child's
    assert [(c.id, c.uri) for c in forked] == [(c.id, c.uri) for c in alone]
    # A child that fails (here: its error chart raises) or cannot start: all drawn here, same bytes.
    parent, error_chart = os.getpid(), charts.error_chart

    def fails_in_child(*a, **k):
        if os.getpid() != parent:
            raise RuntimeError("the child's drawing fails")
        return error_chart(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(charts, "error_chart", fails_in_child)
        calls = _drawn_by_parent(m)
        assert [(c.id, c.uri) for c in charts.build_charts(stats)] == [(c.id, c.uri) for c in alone]
        assert sorted(calls) == sorted(["percentile_bars", "ecdf_chart", "timeseries_chart", "turn_chart", "variant_chart", "error_chart"])

    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")

    with monkeypatch.context() as m:
        m.setattr(os, "fork", no_fork)
        assert [(c.id, c.uri) for c in charts.build_charts(stats)] == [(c.id, c.uri) for c in alone]


def test_charts_left_unfinished_stop_their_child(stats, monkeypatch):
    """An error between starting the charts and finishing them (say, in the comparisons)
    leaves no child process behind, running or unreaped."""
    if not charts._can_fork():
        pytest.skip("no fork here")
    monkeypatch.setattr(charts, "FORK", True)
    with pytest.raises(RuntimeError, match="comparisons failed"):
        with charts.ChartDrawing(stats) as drawing:
            assert drawing.child is not None
            pid = drawing.child[0]
            raise RuntimeError("comparisons failed")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
