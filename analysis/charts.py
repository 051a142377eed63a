"""Charts for the report (matplotlib, Agg backend), returned as inline SVG data URIs; and the
capacity search's PNG (`capacity_chart`).

    from analysis.charts import build_charts
    charts = build_charts(stats, variants=variant_table, history=run.stats_history)
    for c in charts: print(c.title, len(c.uri))

Each region has one fixed colour across every chart (`analysis.colours`, colour-blind safe).
Every chart's size is bounded whatever the run's length: time series are binned, ECDFs are
drawn from a fixed grid of percentiles, tables are not plotted point by point.
"""

from __future__ import annotations

import base64
import io
import math
import os
import pickle
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from analysis.colours import VARIANT_COLOURS, region_colours, variant_colours  # noqa: E402
from analysis.percentiles import PERCENTILES  # noqa: E402
from analysis.stats import ALL, ENDPOINT_ORDER, RunStats, pct_name  # noqa: E402

KIND_COLOURS = {
    "http": "#C0392B",
    "rate_limited": "#E67E22",
    "timeout": "#8E44AD",
    "connection": "#2C3E50",
    "schema": "#16A085",
    "other": "#95A5A6",
}

STYLE: dict[Any, Any] = {  # matplotlib's stubs key rcParams by a Literal of names
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.titley": 1.0,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e5e5e5",
    "grid.linewidth": 0.8,
    "axes.axisbelow": True,
    "legend.frameon": False,
    "legend.fontsize": 9,
    "figure.dpi": 100,
    "svg.hashsalt": "loadtest-report",
}


@dataclass
class Chart:
    id: str
    title: str
    caption: str
    uri: str  # data:image/svg+xml;base64,…


#: "svg" (crisp, small for line charts) or "png".
FORMAT = "svg"


def png_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    if FORMAT == "png":
        fig.savefig(buf, format="png", bbox_inches="tight", dpi=110)
        mime = "image/png"
    else:
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
        mime = "image/svg+xml"
    plt.close(fig)
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _ms(v: float) -> str:
    if v != v:
        return "–"
    if v >= 10_000:
        return f"{v / 1000:,.1f} s"
    if v >= 100:
        return f"{v:,.0f} ms"
    return f"{v:,.1f} ms"


def _ms_axis(ax: Axes, axis: str = "y") -> None:
    fmt = FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 or v == 0 else f"{v:g}")
    (ax.yaxis if axis == "y" else ax.xaxis).set_major_formatter(fmt)


def _endpoints(stats: RunStats) -> list[str]:
    return [e for e in ENDPOINT_ORDER if e in stats.endpoints] + [e for e in stats.endpoints if e not in ENDPOINT_ORDER]


def _legend_below(fig: Figure, handles: list[Artist], labels: list[str], ncol: int | None = None) -> None:
    if not handles:
        return
    fig.legend(handles, labels, loc="lower center", ncol=ncol or min(len(labels), 6), bbox_to_anchor=(0.5, -0.02), frameon=False)


# --------------------------------------------------------------------------- charts


def percentile_bars(stats: RunStats, colours: dict) -> Chart | None:
    """Latency percentiles per region, a panel per endpoint."""
    t = stats.level("region·endpoint")
    eps = [e for e in _endpoints(stats) if (t[t.endpoint == e]["ok_count"] > 0).any()]
    if not eps:
        return None
    regions = [r for r in stats.regions if (t[t.region == r]["ok_count"] > 0).any()]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(eps), figsize=(3.6 * len(eps) + 1, 3.6), squeeze=False)
        qs = PERCENTILES
        x = np.arange(len(qs))
        width = 0.8 / max(len(regions), 1)
        for ax, ep in zip(axes[0], eps):
            sub = t[t.endpoint == ep].set_index("region")
            for i, r in enumerate(regions):
                vals = [float(sub.loc[r, f"{pct_name(q)}_ms"]) if r in sub.index else np.nan for q in qs]
                ax.bar(x - 0.4 + width * (i + 0.5), vals, width * 0.92, color=colours[r], label=r)
            ax.set_xticks(x, [f"p{q:g}" for q in qs])
            ax.set_title(ep)
            ax.set_ylabel("latency (ms)")
            ax.grid(axis="x", visible=False)
            _ms_axis(ax)
        h, lab = axes[0][0].get_legend_handles_labels()
        _legend_below(fig, h, lab)
        fig.tight_layout(rect=(0, 0.06, 1, 1))
        return Chart(
            "percentiles",
            "Latency percentiles by region",
            "Each bar is one percentile of the successful requests' latency: p50 is the typical request, p95 and p99 the slow tail. Lower is better.",
            png_uri(fig),
        )


def turn_chart(stats: RunStats, colours: dict) -> Chart | None:
    """respond p95 (solid) and p50 (dashed) by turn number, per region; a panel per variant."""
    bt = stats.by_turn
    if bt is None or not len(bt):
        return None
    variants = [v for v in stats.variants if v and (bt.variant == v).any()] if stats.has_variants else [""]
    panels = ([ALL] + variants) if len(variants) > 1 else variants
    panels = panels[:5]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(max(4.2 * len(panels), 7), 3.6), squeeze=False)
        for ax, v in zip(axes[0], panels):
            sub = bt[bt.variant == v] if v != "" or ALL not in set(bt.variant) else bt[bt.variant == v]
            for r in stats.regions:
                s = sub[(sub.region == r) & (sub["count"] >= 5)].sort_values("turn")
                if not len(s):
                    continue
                ax.plot(s.turn, s.p95_ms, color=colours[r], lw=2, marker="o", ms=3, label=f"{r} p95")
                ax.plot(s.turn, s.p50_ms, color=colours[r], lw=1.2, ls="--", alpha=0.8, label=f"{r} p50")
            ax.set_title("all variants" if v == ALL else (f"variant {v}" if v else "respond"))
            ax.set_xlabel("turn number in the conversation")
            ax.xaxis.get_major_locator().set_params(integer=True)
            _ms_axis(ax)
        top = float(np.nanmax(bt[bt["count"] >= 5].p95_ms.to_numpy(dtype=float))) if (bt["count"] >= 5).any() else 1.0
        for ax in axes.flat:  # one y range and outer labels, as sharey=True gave (without its cost)
            ax.set_ylim(0, top * 1.08)
            ax.label_outer()
        axes[0][0].set_ylabel("respond latency (ms)")
        h, lab = axes[0][0].get_legend_handles_labels()
        _legend_below(fig, h, lab, ncol=min(len(lab), 8))
        fig.suptitle("respond latency by turn number (solid p95, dashed p50)", fontweight="bold", y=1.02)
        fig.tight_layout(rect=(0, 0.08, 1, 1))
        return Chart(
            "turns",
            "Does latency grow as a conversation goes on?",
            "respond latency per turn of the conversation (turn 1 is the first message after the "
            "greeting). A rising line means later turns are slower. Turns with fewer than 5 "
            "requests are not drawn.",
            png_uri(fig),
        )


def ecdf_chart(stats: RunStats, colours: dict) -> Chart | None:
    """Latency ECDF per region (log x), p50/p95/p99 marked; a panel per endpoint."""
    eps = [e for e in _endpoints(stats) if stats.ecdf.get(e)]
    if not eps:
        return None
    marks = {50: "o", 95: "s", 99: "^"}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(eps), figsize=(3.8 * len(eps) + 1, 3.8), squeeze=False)
        for ax, ep in zip(axes[0], eps):
            for r in stats.regions:
                if r not in stats.ecdf[ep]:
                    continue
                qs, vals = stats.ecdf[ep][r]
                v = np.maximum(vals, 1e-3)
                ax.plot(v, qs / 100, color=colours[r], lw=1.8, label=r)
                for q, m in marks.items():
                    x = float(np.interp(q, qs, v))
                    ax.plot([x], [q / 100], marker=m, color=colours[r], ms=6, mec="white", mew=0.8, ls="none")
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
            ax.xaxis.set_minor_formatter(NullFormatter())
            _ms_axis(ax, "x")
            ax.set_ylim(0, 1.01)
            ax.set_yticks([0, 0.25, 0.5, 0.75, 0.9, 1], ["0%", "25%", "50%", "75%", "90%", "100%"])
            ax.set_xlabel("latency (ms, log scale)")
            ax.set_title(ep)
            ax.label_outer()  # the y labels of the first panel only, as sharey=True would
        axes[0][0].set_ylabel("share of requests at least this fast")
        h, lab = axes[0][0].get_legend_handles_labels()
        for q, m in marks.items():
            h.append(Line2D([], [], marker=m, color="#555", ls="none", ms=6))
            lab.append(f"p{q}")
        _legend_below(fig, h, lab, ncol=len(lab))
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        return Chart(
            "ecdf",
            "The whole latency distribution",
            "How many requests finished within a given time. A curve further left is faster; the markers show p50 (●), p95 (■) and p99 (▲).",
            png_uri(fig),
        )


def timeseries_chart(stats: RunStats, colours: dict, history: pd.DataFrame | None = None) -> Chart | None:
    """Per region: respond p50/p95/p99 over time, and throughput + error rate over time."""
    ts = stats.timeseries
    if ts is None or not len(ts) or not ts["count"].sum():
        return None
    regions = [r for r in stats.regions if ts[ts.region == r]["count"].sum() > 0]
    if not regions:
        return None
    t_end = float(ts.t.max() + stats.bin_s)
    minutes = t_end > 300
    scale = 60.0 if minutes else 1.0
    unit = "min" if minutes else "s"
    rows = regions[:8]
    with plt.rc_context(STYLE):
        # One x range for every panel, as sharex=True would give (the union of the data and
        # matplotlib's default margin), without sharing: a shared axis lays out every
        # sibling's tick labels for each one (quadratic in panels, 12 here with the twins).
        series = [ts[ts.region == r].sort_values("t") for r in rows]
        xs = [(s.t + stats.bin_s / 2) / scale for s in series]
        lo, hi = min(float(x.min()) for x in xs), max(float(x.max()) for x in xs)
        pad = (hi - lo) * plt.rcParams["axes.xmargin"]
        fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.3 * len(rows) + 0.6), squeeze=False)
        for i, (r, s, x) in enumerate(zip(rows, series, xs)):
            c = colours[r]
            ax = axes[i][0]
            # A percentile of a handful of requests is noise: draw it only with enough data.
            n_ok = (s["count"] - s["errors"]).to_numpy()
            for col, lw, ls, alpha, min_n in (("p50_ms", 1.2, "-", 0.6, 5), ("p95_ms", 2, "-", 1, 20), ("p99_ms", 1.2, ":", 1, 100)):
                ax.plot(x, s[col].where(n_ok >= min_n), color=c, lw=lw, ls=ls, alpha=alpha)
            ax.set_ylabel(f"{r}\nlatency (ms)")
            ax.set_ylim(bottom=0)
            _ms_axis(ax)
            if i == 0:
                ax.set_title("respond latency over time: p50 (thin), p95 (thick), p99 (dotted)", fontsize=10)
            ax2 = axes[i][1]
            ax2.fill_between(x, s.rps, step="mid", color=c, alpha=0.25, lw=0)
            ax2.plot(x, s.rps, drawstyle="steps-mid", color=c, lw=1.2)
            ax2.set_ylabel("requests / s")
            ax2.set_ylim(bottom=0)
            er = ax2.twinx()
            rate = (s.error_rate * 100).where(s["count"].to_numpy() >= 20)
            er.plot(x, rate, color="#C0392B", lw=1.4, label="error rate")
            top = float(np.nanmax(rate.to_numpy(dtype=float))) if rate.notna().any() else 0.0
            er.set_ylim(0, max(5.0, top * 1.15))
            er.set_ylabel("errors (%)", color="#C0392B")
            er.tick_params(axis="y", colors="#C0392B")
            er.spines["right"].set_visible(True)
            er.grid(False)
            if i == 0:
                ax2.set_title("requests per second (area) and error rate (red line)", fontsize=10)
        for ax in axes.flat:
            ax.set_xlim(lo - pad, hi + pad)
        for ax in axes[:-1].flat:
            ax.tick_params(axis="x", which="both", labelbottom=False)
        for ax in axes[-1]:
            ax.set_xlabel(f"time since start ({unit}), {stats.bin_s:g} s bins")
        fig.tight_layout()
        return Chart(
            "timeseries",
            "How things changed during the run",
            f"Left: respond latency percentiles in {stats.bin_s:g}-second bins. Right: requests per "
            "second and the share of failed requests. Spikes show when problems happened.",
            png_uri(fig),
        )


def error_chart(stats: RunStats, colours: dict) -> Chart | None:
    """Failed requests per region × endpoint, stacked by error kind."""
    ek = stats.errors_by_kind
    if ek is None or not len(ek) or not ek["count"].sum():
        return None
    g = ek.groupby(["region", "endpoint", "error_kind"], as_index=False)["count"].sum()
    g["row"] = g.region + " · " + g.endpoint
    order = []
    for r in stats.regions:
        for e in _endpoints(stats):
            lab = f"{r} · {e}"
            if (g.row == lab).any():
                order.append(lab)
    kinds = [k for k in KIND_COLOURS if (g.error_kind == k).any()] + sorted(set(g.error_kind) - set(KIND_COLOURS))
    piv = g.pivot_table(index="row", columns="error_kind", values="count", aggfunc="sum", fill_value=0).reindex(order)
    rt = stats.level("region·endpoint")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(10, 0.38 * len(order) + 1.5))
        left = np.zeros(len(order))
        y = np.arange(len(order))
        for k in kinds:
            vals = piv[k].to_numpy(dtype=float) if k in piv else np.zeros(len(order))
            ax.barh(y, vals, left=left, color=KIND_COLOURS.get(k, "#999"), label=k, height=0.7)
            left += vals
        for yi, lab in enumerate(order):
            r, e = lab.split(" · ", 1)
            row = rt[(rt.region == r) & (rt.endpoint == e)]
            rate = float(row.error_rate.iloc[0]) if len(row) else float("nan")
            ax.text(left[yi], yi, f"  {int(left[yi]):,} ({rate:.1%})", va="center", fontsize=9)
        ax.set_yticks(y, order)
        ax.invert_yaxis()
        ax.set_xlabel("failed requests")
        ax.set_xlim(0, left.max() * 1.25)
        ax.grid(axis="y", visible=False)
        for tick in ax.get_yticklabels():
            tick.set_color(colours.get(tick.get_text().split(" · ")[0], "#333"))
        ax.set_title("Failed requests by region, endpoint and kind of error")
        handles, labels = ax.get_legend_handles_labels()
        _legend_below(fig, handles, labels)
        fig.tight_layout(rect=(0, 0.35 / (0.38 * len(order) + 1.5), 1, 1))
        return Chart(
            "errors",
            "What failed, and how",
            "Failed requests per region and endpoint, split by kind: http (an error status), "
            "rate_limited (429), timeout, connection (refused/reset), schema (a 200 with a "
            "malformed body), other. The label gives the count and the share of that endpoint's "
            "requests.",
            png_uri(fig),
        )


def variant_chart(stats: RunStats, variants: pd.DataFrame | None) -> Chart | None:
    """p50/p95/p99 per variant, a panel per endpoint, Δ vs the reference marked."""
    if not stats.has_variants or variants is None or not len(variants):
        return None
    names = [v for v in stats.variants if (variants.group == v).any()]
    if len(names) < 2:
        return None
    eps = [e for e in _endpoints(stats) if (variants.endpoint == e).any()]
    colours = variant_colours(names)
    qs = (50, 95, 99)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(eps), figsize=(3.6 * len(eps) + 1, 3.8), squeeze=False)
        width = 0.8 / len(names)
        x = np.arange(len(qs))
        for ax, ep in zip(axes[0], eps):
            sub = variants[variants.endpoint == ep].set_index("group")
            top = 0.0
            for i, v in enumerate(names):
                if v not in sub.index:
                    continue
                row = sub.loc[v]
                vals = np.array([float(row[f"p{q}_ms"]) for q in qs])
                xs = x - 0.4 + width * (i + 0.5)
                ax.bar(xs, vals, width * 0.92, color=colours[v], label=f"variant {v}")
                if not row["is_reference"]:
                    lo = np.array([float(row[f"d_p{q}_lo"]) for q in qs])
                    hi = np.array([float(row[f"d_p{q}_hi"]) for q in qs])
                    refv = vals - np.array([float(row[f"d_p{q}_ms"]) for q in qs])
                    ok = ~np.isnan(lo)
                    ax.errorbar(xs[ok], (refv + (lo + hi) / 2)[ok], yerr=((hi - lo) / 2)[ok], fmt="none", ecolor="#333", capsize=3, lw=1)
                    tops = np.where(ok, refv + hi, vals)
                    for j, q in enumerate(qs):
                        pct = float(row[f"d_p{q}_pct"])
                        sig = bool(row[f"d_p{q}_significant"])
                        if pct == pct:
                            ax.text(
                                xs[j],
                                max(vals[j], tops[j]),
                                f"{pct:+.0%}{'*' if sig else ''}",
                                ha="center",
                                va="bottom",
                                fontsize=8,
                                color="#222" if sig else "#888",
                            )
                if np.isfinite(vals).any():  # a group whose requests all failed has no latency
                    top = max(top, np.nanmax(vals))
            ax.set_ylim(0, top * 1.18 if top > 0 else 1)
            ax.set_xticks(x, [f"p{q}" for q in qs])
            ax.set_title(ep)
            ax.grid(axis="x", visible=False)
            _ms_axis(ax)
        axes[0][0].set_ylabel("latency (ms)")
        h, lab = axes[0][0].get_legend_handles_labels()
        _legend_below(fig, h, lab)
        ref = variants["reference"].iloc[0]
        fig.suptitle(f"Variants side by side (difference vs variant {ref}; * = outside the 95% CI of no change)", fontweight="bold", y=1.02)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        return Chart(
            "variants",
            "Variants compared",
            f"Latency percentiles per variant, all regions together. The labels give the difference "
            f"from variant {ref}; black whiskers its 95% confidence interval; * marks a difference "
            "that is not explained by chance.",
            png_uri(fig),
        )


def build_charts(stats: RunStats, variants: pd.DataFrame | None = None, history: pd.DataFrame | None = None) -> list[Chart]:
    """All report charts that have data, in reading order."""
    with ChartDrawing(stats, history) as drawing:
        return drawing.finish(variants)


#: Draw half of the charts in a forked child process (`ChartDrawing`); False: all in this one.
FORK = True


class ChartDrawing:
    """The report's charts, started now and finished with `finish(variants)` (the variant
    comparison is known later), which gives all that have data, in reading order.

    matplotlib draws on one core, and charts are most of a report's fixed cost (~2.5 s), so
    on Linux the three that need only the statistics (time series, per turn, errors) are
    drawn by a forked child process while this one goes on (the comparisons, the other three
    charts): ~1.2 s less per report, the same bytes. The child gets the statistics for free
    (fork), hands back only the SVG text through a pipe, and leaves with `os._exit` (nothing
    of this process runs at its exit). Without fork (not Linux, or inside gevent's
    monkey-patched Locust), or if the child fails, the charts are drawn here. Use it as a
    context manager: leaving it unfinished stops the child."""

    def __init__(self, stats: RunStats, history: pd.DataFrame | None = None):
        self.stats, self.colours = stats, region_colours(stats.regions)
        self.later: dict[str, Callable[[], Chart | None]] = {
            "timeseries": lambda: timeseries_chart(stats, self.colours, history),
            "turns": lambda: turn_chart(stats, self.colours),
            "errors": lambda: error_chart(stats, self.colours),
        }
        self.child = _fork_drawing(self.later) if FORK and _can_fork() else None

    def finish(self, variants: pd.DataFrame | None) -> list[Chart]:
        first = [percentile_bars(self.stats, self.colours), ecdf_chart(self.stats, self.colours)]
        middle = variant_chart(self.stats, variants)
        drawn = self._collect()
        if drawn is None:
            drawn = {k: fn() for k, fn in self.later.items()}
        ordered = [*first, drawn["timeseries"], drawn["turns"], middle, drawn["errors"]]
        return [c for c in ordered if c is not None]

    def _collect(self) -> dict[str, Chart | None] | None:
        """The child's charts, or None if there is none or it failed."""
        if self.child is None:
            return None
        pid, r = self.child
        self.child = None
        with os.fdopen(r, "rb") as inp:
            data = inp.read()  # before waiting: a full pipe would block the child
        _, status = os.waitpid(pid, 0)
        if status != 0:
            return None
        try:
            drawn = pickle.loads(data)
        except Exception:
            return None
        return drawn if isinstance(drawn, dict) else None

    def close(self) -> None:
        """Stop and reap a child whose charts were never collected (an error on the way)."""
        if self.child is not None:
            pid, r = self.child
            self.child = None
            os.close(r)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)

    def __enter__(self) -> ChartDrawing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _can_fork() -> bool:
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    monkey = sys.modules.get("gevent.monkey")
    return not (monkey is not None and monkey.is_module_patched("os"))


def _fork_drawing(todo: dict[str, Callable[[], Chart | None]]) -> tuple[int, int] | None:
    """(pid, read end of a pipe) of a child drawing `todo`, or None if it cannot start."""
    try:
        r, w = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the child: draw, send the pickled charts, leave at once
        code = 1
        try:
            os.close(r)
            data = pickle.dumps({k: fn() for k, fn in todo.items()})
            with os.fdopen(w, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)  # never return into the parent's code (atexit handlers, pytest, …)
    os.close(w)
    return pid, r


def compare_chart(df: pd.DataFrame, names: list[str]) -> str | None:
    """`loadtest compare`'s chart: p95 per region · variant · endpoint, one bar per run (a data URI)."""
    main = df[df.endpoint == "respond"] if (df.endpoint == "respond").any() else df
    groups = list(dict.fromkeys(zip(main.region, main.variant, main.endpoint)))[:24]
    if not groups:
        return None
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) * max(len(names), 1) / 2 + 3), 3.8))
        width = 0.8 / len(names)
        x = np.arange(len(groups))
        for i, n in enumerate(names):
            vals = []
            for g in groups:
                r = main[(main.region == g[0]) & (main.variant == g[1]) & (main.endpoint == g[2]) & (main.run == n)]
                vals.append(float(r.p95_ms.iloc[0]) if len(r) else np.nan)
            ax.bar(x - 0.4 + width * (i + 0.5), vals, width * 0.92, label=n, color=VARIANT_COLOURS[i % len(VARIANT_COLOURS)])
        ax.set_xticks(x, [" · ".join(p for p in g if p) for g in groups], rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
        ax.set_ylabel("p95 latency (ms)")
        ax.set_title("p95 latency per run (successful requests)")
        ax.grid(axis="x", visible=False)
        ax.legend(ncol=min(len(names), 4))
        fig.tight_layout()
        return png_uri(fig)


@dataclass
class CapacityPanel:
    """One region of a capacity search, for `capacity_chart`."""

    region: str
    steps: list[dict]  # in order: level, p95_ms, p99_ms, error_rate (None: not measured), passed,
    # conversations_per_s
    knee: dict | None  # the knee step, one of `steps`
    status: str  # found | above_max | below_start | incomplete | failed
    p95_slo_ms: float | None  # the p95 threshold drawn as a line


def capacity_chart(panels: Sequence[CapacityPanel], path: Path, *, by_rate: bool, unit: str, endpoint: str = "respond") -> Path | None:
    """A capacity search's PNG: per region, p95/p99 against the level (users, or conversations/s
    when `by_rate`), the error rate on a second axis, failing steps crossed, the knee marked."""
    shown = [r for r in panels if r.steps]
    if not shown:
        return None
    colours = region_colours([r.region for r in shown])
    n = len(shown)
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.9 * rows), squeeze=False)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        for ax, res in zip(axes.flat, shown):
            c = colours[res.region]
            x = [s["level"] for s in res.steps]
            p95 = [s["p95_ms"] if s["p95_ms"] is not None else math.nan for s in res.steps]
            p99 = [s["p99_ms"] if s["p99_ms"] is not None else math.nan for s in res.steps]
            err = [100 * s["error_rate"] if s["error_rate"] is not None else math.nan for s in res.steps]
            ax.plot(x, p95, "-o", color=c, lw=2, ms=5)
            ax.plot(x, p99, "--s", color=c, lw=1.4, ms=4, alpha=0.8)
            bad = [(xi, yi) for xi, yi, s in zip(x, p95, res.steps) if not s["passed"] and yi == yi]
            if bad:
                ax.plot(*zip(*bad), "x", color="#C0392B", ms=9, mew=2, zorder=5)
            top = max([v for v in p95 + p99 if v == v] or [1.0])
            threshold = res.p95_slo_ms
            if threshold:
                ax.axhline(threshold, color="#7F7F7F", ls=(0, (1, 2)), lw=1.4)
                ax.annotate(f"p95 SLO {threshold:.0f} ms", (x[0], threshold), xytext=(0, 3), textcoords="offset points", fontsize=8, color="#555555")
                top = max(top, threshold)
            ax.set_ylim(0, top * 1.15)
            ax.set_xlabel("offered conversations/s (open model)" if by_rate else "concurrent conversations (users)")
            ax.set_ylabel(f"{endpoint} latency (ms)")
            ax2 = ax.twinx()
            ax2.plot(x, err, ":^", color=c, lw=1.3, ms=5, alpha=0.9)
            ax2.set_ylabel("error rate (%)")
            ax2.set_ylim(0, max(5.0, max((e for e in err if e == e), default=0) * 1.15))
            ax2.grid(False)
            ax2.spines["right"].set_visible(True)
            k = res.knee
            title = res.region
            if k:
                ax.axvline(k["level"], color=c, lw=1, alpha=0.5)
                ax.annotate(
                    f"knee {k['level']:g} {unit}\n{k['conversations_per_s']:.2f} conv/s",
                    (k["level"], k["p95_ms"] or 0),
                    xytext=(6, -28),
                    textcoords="offset points",
                    fontsize=8,
                    color=c,
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": c, "lw": 0.8},
                )
                ge = "≥ " if res.status in ("above_max", "incomplete") else ""
                title += f" — knee {ge}{k['level']:g} {unit}" if by_rate else f" — knee {ge}{k['level']:g} users, {ge}{k['conversations_per_s']:.2f} conv/s"
            else:
                title += f" — {res.status.replace('_', ' ')}"
            ax.set_title(title, loc="left")
        grey = "#444444"
        handles = [
            Line2D([], [], color=grey, ls="-", marker="o", ms=5, lw=2),
            Line2D([], [], color=grey, ls="--", marker="s", ms=4, lw=1.4),
            Line2D([], [], color=grey, ls=":", marker="^", ms=5, lw=1.3),
            Line2D([], [], color="#7F7F7F", ls=(0, (1, 2)), lw=1.4),
            Line2D([], [], color="#C0392B", ls="", marker="x", ms=8, mew=2),
        ]
        labels = [f"p95 {endpoint} (left)", f"p99 {endpoint} (left)", "error rate (right)", "p95 SLO threshold", "step outside SLO"]
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8.5, bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.06 if rows == 1 else 0.035, 1, 1))
        fig.savefig(path, format="png", dpi=110)
        plt.close(fig)
    return path
