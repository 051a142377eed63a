"""The run report: one self-contained report.html, plus summary.csv and summary.md beside it.

    from analysis.report import build_report
    path = build_report("reports/<run-id>", baseline="reports/<older-run>", warmup_s=10)

report.html opens offline: charts are inline SVG data URIs, CSS is inline, nothing is
fetched. Its size is bounded (≤ 10 MB whatever the run's length or error count): tables
are per group, not per request; errors are grouped and the top ones shown; charts are
binned. All three files are written atomically (temporary file + rename), so a failure
leaves no half-written output behind.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from jinja2 import Environment, FileSystemLoader, select_autoescape

from analysis.charts import ChartDrawing, compare_chart
from analysis.colours import region_colours
from analysis.compare import (
    BOOTSTRAP_METHOD,
    COMPARE_QS,
    SIGNIFICANT,
    BaselineComparison,
    against_baseline,
    compare_runs,
)
from analysis.family import COMPARISONS_CSV, REGIONS, VARIANTS, WITHIN, comparison_family, comparisons_csv_text
from analysis.load import Run, load_run
from analysis.regression import Threshold, failures, offender_text
from analysis.formatting import DASH, flatten, fmt_duration, fmt_ms, fmt_num, fmt_pt, fmt_rate, fmt_signed_ms, fmt_signed_pct, fmt_time, label, redact
from analysis.percentiles import PERCENTILE_METHOD, percentiles
from analysis.stats import ENDPOINT_ORDER, SUMMARY_COLUMNS, RunStats, compute_stats

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
REPORT_HTML = "report.html"
TEMPLATES = Path(__file__).parent / "templates"
MAX_REPORT_BYTES = 10 * 1024 * 1024


def _slo_view(slo: list | None) -> dict:
    if slo is None:
        return {
            "state": "none",
            "title": "No SLOs checked",
            "text": "No service-level objectives were evaluated for this run, so there is no pass/fail verdict.",
            "rows": [],
        }
    rows = []
    failed = 0
    unknown = 0
    for s in slo[:200]:
        passed = s.get("passed")
        if passed is False:
            failed += 1
        elif passed is not True:
            unknown += 1
        unit = str(s.get("unit") or "")

        def val(x: object) -> str:
            if not isinstance(x, (int, float, str)):  # None (not observed) or not a number
                return "–"
            try:
                x = float(x)
            except ValueError:
                return "–"
            if unit == "ms":
                return fmt_ms(x)
            if unit in ("%", "pct", "percent"):
                return f"{x:.2f}%"
            if unit in ("ratio", "rate"):
                return fmt_rate(x, 2)
            return f"{x:,.4g} {unit}".strip()

        rows.append(
            {
                "expr": str(s.get("expr", "?")),
                "scope": str(s.get("scope") or "all"),
                "observed": val(s.get("observed")),
                "threshold": val(s.get("threshold")),
                "passed": passed,
                "state": "pass" if passed is True else "fail" if passed is False else "unknown",
            }
        )
    n = len(slo)
    if not n:
        return {"state": "none", "title": "No SLOs checked", "text": "slo.json lists no objectives.", "rows": []}
    if failed:
        return {"state": "fail", "title": "FAIL", "text": f"{failed} of {n} service-level objective{'s' if n != 1 else ''} not met.", "rows": rows}
    if unknown:
        return {"state": "none", "title": "Incomplete", "text": f"{unknown} of {n} objectives could not be evaluated.", "rows": rows}
    return {"state": "pass", "title": "PASS", "text": f"All {n} service-level objective{'s' if n != 1 else ''} met.", "rows": rows}


def _regression_banner(base: BaselineComparison | None) -> dict | None:
    """The regression verdict beside the SLO banner: "Regression against RUN" and the worst
    offenders, or that every gated metric stayed within its limit."""
    if base is None:
        return None
    bad = failures(base.checks)
    judged = sum(c["passed"] is not None for c in base.checks)
    limits = ", ".join(t.expr for t in base.thresholds)
    if bad:
        return {
            "state": "fail",
            "big": "REGRESSED",
            "title": f"Regression against {base.baseline_id}",
            "text": f"{len(bad)} of {judged} gated metrics regressed beyond their limits ({limits}), "
            "the whole 95% interval of the change beyond the limit. Worst:",
            "worst": [offender_text(c) for c in bad[:5]],
        }
    return {
        "state": "pass",
        "big": "NO REGRESSION",
        "title": f"No regression against {base.baseline_id}",
        "text": f"{judged} gated metrics within their limits ({limits}).",
        "worst": [],
    }


def _main_endpoint(stats: RunStats) -> str:
    return "respond" if "respond" in stats.endpoints else (stats.endpoints[0] if stats.endpoints else "respond")


def _reality(row: Any, q: int) -> str:
    """'a real difference: 95% CI …' / 'within noise: …' from the percentile's own interval."""
    verdict = row[f"d_p{q}_verdict"]
    ci = f"95% CI {fmt_signed_ms(row[f'd_p{q}_lo'])} to {fmt_signed_ms(row[f'd_p{q}_hi'])}"
    if verdict == SIGNIFICANT:
        return f"a real difference: {ci}"
    if verdict == "noise":
        return f"within noise: {ci}"
    return "too few requests to tell"


def _regression_sentence(checks: list[dict], baseline_id: str) -> str:
    bad = failures(checks)
    if not bad:
        judged = sum(c["passed"] is not None for c in checks)
        return f"Against the baseline {baseline_id}: no regression beyond the thresholds ({judged} metric{'s' if judged != 1 else ''} judged)."
    items = "; ".join(offender_text(c) for c in bad[:4])
    more = f"; and {len(bad) - 4} more" if len(bad) > 4 else ""
    return f"Against the baseline {baseline_id}: {len(bad)} regression{'s' if len(bad) != 1 else ''}: {items}{more}."


def _headline(run: Run, stats: RunStats, regions: pd.DataFrame, variants: pd.DataFrame | None, base: BaselineComparison | None, slo: dict) -> list[str]:
    """Plain-language sentences: what this report shows."""
    out = []
    meta = run.meta
    target = meta.get("target", "")
    target_txt = {"mock": "the built-in mock API", "real": "the real PolyAI Chat API"}.get(target, "the API")
    n_reg = len([r for r in stats.regions if stats.level("region·endpoint").query("region == @r")["count"].sum() > 0])
    var_txt = ""
    if stats.has_variants:
        var_txt = f" and {len(stats.variants)} variant{'s' if len(stats.variants) != 1 else ''}"
    err = stats.total_errors / stats.total_requests if stats.total_requests else math.nan
    if not stats.total_requests:
        out.append("This run recorded no requests, so there is nothing to measure yet.")
        return out
    out.append(
        f"{stats.total_requests:,} requests over {fmt_duration(stats.duration_s)} against {target_txt} in "
        f"{n_reg} region{'s' if n_reg != 1 else ''}{var_txt}; {fmt_rate(err, 2)} of them failed."
    )
    ep = _main_endpoint(stats)
    reg = regions[regions.endpoint == ep] if len(regions) else regions
    reg = reg[reg["p95_ms"].notna()] if len(reg) else reg
    if len(reg) >= 2 and reg.is_reference.any():
        out.append(regions_sentence(reg, ep))
    elif len(reg) == 1:
        r = reg.iloc[0]
        out.append(f"{r.group}: {ep} p50 {fmt_ms(r.p50_ms)}, p95 {fmt_ms(r.p95_ms)}, p99 {fmt_ms(r.p99_ms)}.")
    if variants is not None and len(variants):
        v = variants[(variants.endpoint == ep) & ~variants.is_reference]
        for _, row in v.head(3).iterrows():
            err_real = "a real difference" if row.d_error_verdict == SIGNIFICANT else "within noise"
            out.append(
                f"Variant {row.group} vs {row.reference}: {ep} p95 {fmt_signed_pct(row.d_p95_pct)} "
                f"({_reality(row, 95)}), error rate {fmt_pt(row.d_error_rate)} "
                f"({err_real if row.d_error_verdict in (SIGNIFICANT, 'noise') else 'too few requests to tell'})."
            )
    if stats.total_errors and len(stats.top_errors):
        t = stats.top_errors.iloc[0]
        out.append(f"Most common failure: “{t.message}” on {t.endpoint} ({t['count']:,} times, {fmt_rate(t.share, 0)} of failures).")
    conv = stats.conversations
    if len(conv):
        overall = conv[conv.level == "overall"]
        if len(overall):
            orphans = int(overall.orphans.iloc[0])
            if orphans:
                out.append(f"{orphans:,} conversation{'s were' if orphans != 1 else ' was'} opened but never closed successfully.")
    if base is not None:
        out.append(_regression_sentence(base.checks, base.baseline_id))
    return out


def _within_headline(within: pd.DataFrame | None, ep: str) -> list[str]:
    """One sentence: where, region by region, a variant differs from that region's control."""
    if within is None or not len(within):
        return []
    rows = within[(within.endpoint == ep) & ~within.is_reference]
    if not len(rows):
        return []
    real = [f"{r.group} {fmt_signed_pct(r.d_p95_pct)} in {label(r.region)}" for _, r in rows.iterrows() if r.d_p95_significant]
    calm = sorted({label(r.region) for _, r in rows.iterrows()} - {label(r.region) for _, r in rows.iterrows() if r.d_p95_significant})
    ref = rows.reference.iloc[0]
    text = f"Within each region, against its own {ref} ({ep} p95): "
    text += ("a real difference for " + ", ".join(real)) if real else "no real difference anywhere"
    if real and calm:
        text += f"; none in {', '.join(calm)}"
    return [text + "."]


def _request_rows(df: pd.DataFrame, colours: dict) -> list[dict]:
    rows = []
    for _, r in df.iterrows():
        rows.append(
            {
                "region": label(r.region),
                "variant": label(r.variant),
                "endpoint": label(r.endpoint),
                "colour": colours.get(r.region, "#999"),
                "count": f"{int(r['count']):,}",
                "errors": f"{int(r['errors']):,}",
                "error_rate": fmt_rate(r.error_rate, 2),
                "error_bad": bool(r.error_rate == r.error_rate and r.error_rate > 0.01),
                "rps": f"{r.rps:,.1f}",
                "mean": fmt_ms(r.mean_ms),
                "min": fmt_ms(r.min_ms),
                "p50": fmt_ms(r.p50_ms),
                "p75": fmt_ms(r.p75_ms),
                "p90": fmt_ms(r.p90_ms),
                "p95": fmt_ms(r.p95_ms),
                "p99": fmt_ms(r.p99_ms),
                "p999": fmt_ms(r.p999_ms),
                "max": fmt_ms(r.max_ms),
                "fail_p50": fmt_ms(r.fail_p50_ms),
                "fail_max": fmt_ms(r.fail_max_ms),
                "empty": int(r["count"]) == 0,
            }
        )
    return rows


def _delta_cell(d: float, lo: float, hi: float, verdict: str, fmt: Any, text: str | None = None) -> dict:
    """One difference as shown: the number, its 95% interval and its own verdict (from that
    interval: the colour says worse/better only when the verdict is significant)."""
    if d != d:
        return {"text": DASH, "ci": "", "cls": "", "verdict": ""}
    ci = f"[{fmt(lo)}, {fmt(hi)}]" if lo == lo else "(too few for a CI)"
    cls = ("worse" if d > 0 else "better") if verdict == SIGNIFICANT else "same"
    return {"text": text or fmt(d), "ci": ci, "cls": cls, "verdict": verdict}


def _shift_text(p: float) -> str:
    return "" if p != p else (f"p = {p:.3f}" if p >= 0.001 else "p < 0.001")


def _p_text(r: pd.Series) -> str:
    """The raw Mann-Whitney p and, beside it, the Holm-adjusted one the shift verdict is from."""
    adj = r.get("mw_p_holm", math.nan)
    return _shift_text(r.mw_p) + (f" · Holm {_shift_text(adj)}" if adj == adj else "")


def _within_view(df: pd.DataFrame | None) -> list[dict]:
    """Variants within regions: per region, the comparison blocks of its endpoints."""
    if df is None or not len(df):
        return []
    out = []
    for region in dict.fromkeys(df.region):
        blocks = _comparison_view(df[df.region == region], None)
        for b in blocks:
            b["endpoint"] = f"{label(region)} · {b['endpoint']}"
        out.append({"region": label(region), "blocks": blocks})
    return out


def _comparison_view(df: pd.DataFrame | None, colours: dict | None) -> list[dict]:
    """Per endpoint: rows of a regions/variants comparison table."""
    if df is None or not len(df):
        return []
    out = []
    for ep in [e for e in ENDPOINT_ORDER if e in set(df.endpoint)] + sorted(set(df.endpoint) - set(ENDPOINT_ORDER)):
        sub = df[df.endpoint == ep]
        rows = []
        for _, r in sub.iterrows():
            row = {
                "group": label(r.group),
                "colour": (colours or {}).get(r.group),
                "ref": bool(r.is_reference),
                "count": f"{int(r['count']):,}",
                "error_rate": fmt_rate(r.error_rate, 2),
                "shift": r["shift"],
                "mw_p": _p_text(r),
            }
            for q in COMPARE_QS:
                row[f"p{q}"] = fmt_ms(r[f"p{q}_ms"])
                row[f"d{q}"] = (
                    None
                    if r.is_reference
                    else _delta_cell(
                        r[f"d_p{q}_ms"],
                        r[f"d_p{q}_lo"],
                        r[f"d_p{q}_hi"],
                        r[f"d_p{q}_verdict"],
                        fmt_signed_ms,
                        f"{fmt_signed_ms(r[f'd_p{q}_ms'])} ({fmt_signed_pct(r[f'd_p{q}_pct'])})",
                    )
                )
            row["d_err"] = None if r.is_reference else _delta_cell(r.d_error_rate, r.d_error_lo, r.d_error_hi, r.d_error_verdict, fmt_pt)
            rows.append(row)
        out.append({"endpoint": ep, "reference": label(sub.reference.iloc[0]), "rows": rows})
    return out


def _baseline_view(df: pd.DataFrame | None, checks: list[dict], colours: dict) -> list[dict]:
    """Rows of the run-vs-baseline table, regressions first; a gated metric that regressed
    is marked on its cell."""
    if df is None or not len(df):
        return []
    failed = {(c["region"], c["variant"], c["endpoint"], c["metric"]) for c in checks if c["state"] == "regression"}
    rows = []
    for _, r in df.iterrows():
        key = (r.region, r.variant, r.endpoint)
        row = {
            "region": label(r.region),
            "variant": label(r.variant),
            "endpoint": r.endpoint,
            "colour": colours.get(r.region, "#999"),
            "count": f"{int(r['count']):,}",
            "base_count": f"{int(r.base_count):,}",
            "err": fmt_rate(r.error_rate, 2),
            "base_err": fmt_rate(r.base_error_rate, 2),
            "d_err": _delta_cell(r.d_error_rate, r.d_error_lo, r.d_error_hi, r.d_error_verdict, fmt_pt),
            "shift": r["shift"],
            "mw_p": _shift_text(r.mw_p),
            "status": r.status,
            "reasons": r.reasons,
        }
        row["d_err"]["regressed"] = (*key, "error_rate") in failed
        for q in COMPARE_QS:
            row[f"p{q}"], row[f"base_p{q}"] = fmt_ms(r[f"p{q}_ms"]), fmt_ms(r[f"base_p{q}_ms"])
            row[f"d{q}"] = _delta_cell(r[f"d_p{q}_pct"], r[f"d_p{q}_pct_lo"], r[f"d_p{q}_pct_hi"], r[f"d_p{q}_verdict"], lambda v: fmt_signed_pct(v, 1))
            row[f"d{q}"]["regressed"] = (*key, f"p{q}") in failed
        rows.append(row)
    order = {"regression": 0, "missing": 1, "new": 2, "improvement": 3, "ok": 4}
    rows.sort(key=lambda x: order.get(x["status"], 9))
    return rows


def regions_sentence(reg: pd.DataFrame, ep: str) -> str:
    """The fastest region (the comparisons' reference: lowest p50) against the region with
    the highest p95 among the others; when the reference itself has the highest p95, say so
    and name the lowest p95 instead, so the sentence never calls a faster tail 'slowest'."""
    ref = reg[reg.is_reference].iloc[0]
    others = reg[~reg.is_reference]
    p95 = others["p95_ms"].astype(float)
    head = f"{ref.group} was fastest by median: {ep} p50 {fmt_ms(ref.p50_ms)} (p95 {fmt_ms(ref.p95_ms)}); "
    other = others.loc[p95.idxmax()]
    if float(other.p95_ms) > float(ref.p95_ms):
        tail = f"{other.group} had the highest p95, {fmt_ms(other.p95_ms)}"
    else:
        other = others.loc[p95.idxmin()]
        head = f"{ref.group} had the lowest {ep} p50 ({fmt_ms(ref.p50_ms)}) but the highest p95 ({fmt_ms(ref.p95_ms)}); "
        tail = f"{other.group} had the lowest p95, {fmt_ms(other.p95_ms)}"
    return f"{head}{tail}, {fmt_signed_pct(other.d_p95_pct)} against {ref.group} ({_reality(other, 95)})."


def _conversation_view(stats: RunStats, colours: dict) -> dict:
    conv = stats.conversations
    if conv is None or not len(conv):
        return {"rows": [], "ended_by": []}
    levels = ["region·variant", "region", "variant", "overall"] if stats.has_variants else ["region", "overall"]
    if len(stats.regions) == 1:
        levels = [lv for lv in levels if lv not in ("region",)] if stats.has_variants else ["overall"]
    sub = conv[conv.level.isin(levels)]
    sub = sub[(sub.conversations > 0) | (sub.created > 0)]
    ended_cols = [c for c in conv.columns if c.startswith("ended_by_")]
    ended = [c[len("ended_by_") :] for c in ended_cols if conv[c].fillna(0).astype(float).sum() > 0]
    rows = []
    for _, r in sub.iterrows():
        rows.append(
            {
                "region": label(r.region),
                "variant": label(r.variant),
                "colour": colours.get(r.region, "#999"),
                "total": r.level == "overall",
                "conversations": f"{int(r.conversations):,}",
                "success": fmt_rate(r.success_rate, 1),
                "stopped": f"{int(r.stopped):,}" if r.stopped == r.stopped else "–",
                "dur50": fmt_duration(r.duration_p50_s) if r.duration_p50_s == r.duration_p50_s else "–",
                "dur95": fmt_duration(r.duration_p95_s) if r.duration_p95_s == r.duration_p95_s else "–",
                "turns": f"{r.turns_mean:.1f}" if r.turns_mean == r.turns_mean else "–",
                "greet50": fmt_ms(r.create_p50_ms),
                "greet95": fmt_ms(r.create_p95_ms),
                "ended": " · ".join(
                    f"{e.replace('_', ' ')} {fmt_rate(r.get(f'ended_by_{e}', math.nan), 0)}" for e in ended if (r.get(f"ended_by_{e}", 0) or 0) > 0
                ),
                "orphans": f"{int(r.orphans):,}",
                "failed_steps": " · ".join(
                    f"{step} {int(r[f'errors_{step}']):,}" for step in ENDPOINT_ORDER if f"errors_{step}" in r and int(r[f"errors_{step}"])
                )
                or "none",
            }
        )
    return {"rows": rows, "ended_by": [e.replace("_", " ") for e in ended]}


def _error_view(stats: RunStats) -> list[dict]:
    rows = []
    for _, r in stats.top_errors.iterrows():
        rows.append(
            {
                "count": f"{int(r['count']):,}",
                "share": fmt_rate(r.share, 1),
                "endpoint": r.endpoint,
                "status": "no response" if int(r.status) == 0 else str(int(r.status)),
                "kind": r.error_kind,
                "message": r.message,
                "example": r.example if r.example != r.message else "",
                "regions": r.regions,
            }
        )
    return rows


def _run_facts(run: Run, stats: RunStats) -> list[tuple[str, str]]:
    m = run.meta
    facts: list[tuple[str, str]] = []

    def add(k: str, v: object) -> None:
        if v not in (None, "", [], {}):
            facts.append((k, v if isinstance(v, str) else str(v)))

    add("Run", run.run_id)
    add("Target", {"mock": "mock (built-in simulated API)", "real": "real PolyAI Chat API"}.get(m.get("target", ""), m.get("target")))
    add("Host", m.get("host"))
    base_urls = m.get("base_urls")
    if isinstance(base_urls, dict) and base_urls:
        add("Regions", ", ".join(f"{k} → {v}" for k, v in base_urls.items()))
    else:
        add("Regions", ", ".join(stats.regions))
    if stats.has_variants:
        add("Variants", ", ".join(stats.variants))
    add("Simulated users", m.get("users"))
    add("Spawn rate", f"{m['spawn_rate']} users/s" if m.get("spawn_rate") not in (None, "") else None)
    planned = m.get("duration_s")
    add("Duration", f"{fmt_duration(stats.duration_s)} measured" + (f" (planned {fmt_duration(planned)})" if planned else ""))
    if stats.warmup_s:
        add("Warm-up excluded", f"first {fmt_duration(stats.warmup_s)}")
    add("Turns per conversation", m.get("turns"))
    tt = m.get("think_time")
    if isinstance(tt, (list, tuple)) and len(tt) == 2:
        add("Think time", f"{tt[0]}–{tt[1]} s")
    else:
        add("Think time", f"{tt} s" if tt not in (None, "") else None)
    add("Connections", CONNECTION_POLICIES.get(m.get("connections", ""), m.get("connections")))
    tls = m.get("tls")
    if isinstance(tls, dict) and any(str(u).startswith("https:") for u in (base_urls or {}).values()):
        add(
            "TLS",
            "certificates NOT verified (--insecure)"
            if tls.get("verify") is False
            else "certificates verified against " + (str(tls.get("ca_bundle")) if tls.get("ca_bundle") else "the system trust store"),
        )
    add("Started", fmt_time(m.get("started")) if m.get("started") else fmt_time(stats.window[0]))
    add("Ended", fmt_time(m.get("ended")) if m.get("ended") else None)
    add("Status", m.get("status"))
    versions = ", ".join(f"{k} {m[v]}" for k, v in (("tool", "tool_version"), ("Locust", "locust_version"), ("Python", "python_version")) if m.get(v))
    add("Versions", versions)
    add("Git commit", m.get("git_sha"))
    workers = m.get("workers")
    if isinstance(workers, list) and workers:
        add("Workers", f"{len(workers)}: " + ", ".join(map(str, workers[:20])) + (" …" if len(workers) > 20 else ""))
    add("Lost workers", ", ".join(map(str, m.get("lost_workers") or [])))
    add("Rows per worker (received / produced)", _worker_rows_fact(m.get("worker_rows")))
    add("Data files", ", ".join(f.name for f in run.files[:20]) + (" …" if len(run.files) > 20 else ""))
    add("Incomplete last line skipped", ", ".join(run.incomplete) + " (cut by a crash or a full disk)" if run.incomplete else None)
    add("Config hash", m.get("config_hash"))
    return facts


CONNECTION_POLICIES = {
    "per-conversation": "a new connection per conversation (create latency includes connecting)",
    "per-user": "each simulated user keeps its connection across conversations",
}


def _connections_view(run: Run) -> list[dict]:
    """HTTPS: per region, new TLS connections and their handshake times (apart from, and
    included in, the latency of the request that opened them)."""
    c = run.connections
    if c is None or not len(c):
        return []
    start, _ = run.window
    if run.warmup_s > 0 and math.isfinite(start):
        c = c[c["timestamp"] >= start]
    rows = []
    for region, g in [*c.groupby("region", sort=False), ("all", c)]:
        p50, p95, p99 = percentiles(g["tls_handshake_ms"].to_numpy(dtype=float), (50, 95, 99))
        rows.append({"region": region, "total": region == "all", "count": f"{len(g):,}", "handshake": f"{fmt_ms(p50)} / {fmt_ms(p95)} / {fmt_ms(p99)}"})
    return rows


def _arrivals_view(run: Run) -> list[dict]:
    """Open model: per region, the offered rate (planned) against the achieved one (started),
    dropped conversations and schedule lag."""
    a = run.arrivals
    if a is None or not len(a):
        return []
    start, _ = run.window
    if run.warmup_s > 0 and math.isfinite(start):  # the same warm-up cut as the requests
        a = a[a["planned"] >= start]
    span = max(float(a["planned"].max() - a["planned"].min()), 1e-9) if len(a) > 1 else math.nan
    rows = []
    for region, g in [*a.groupby("region", sort=False), ("all", a)]:
        started = g[g["dropped"] == 0]
        p50, p95, p99 = percentiles(started["lag_ms"].to_numpy(dtype=float), (50, 95, 99))
        rows.append(
            {
                "region": region,
                "total": region == "all",
                "planned": f"{len(g):,}",
                "offered": fmt_num(len(g) / span) if span == span else "–",
                "achieved": fmt_num(len(started) / span) if span == span else "–",
                "dropped": f"{len(g) - len(started):,}" + (f" ({fmt_rate((len(g) - len(started)) / len(g), 1)})" if len(g) > len(started) else ""),
                "lag": f"{fmt_ms(p50)} / {fmt_ms(p95)} / {fmt_ms(p99)}",
            }
        )
    return rows


def _worker_rows_fact(worker_rows: object) -> str | None:
    """run.json's per-worker accounting of a distributed run, in one line."""
    if not isinstance(worker_rows, dict) or not worker_rows:
        return None

    def total(counts: object) -> int | None:
        return sum(counts.values()) if isinstance(counts, dict) else None

    parts = []
    for name, acc in list(worker_rows.items())[:20]:
        received, produced, dropped = total(acc.get("received")), total(acc.get("produced")), total(acc.get("dropped"))
        text = f"{name} {received or 0:,} / " + (f"{produced:,}" if produced is not None else "unknown")
        if dropped:
            text += f" ({dropped:,} dropped)"
        parts.append(text)
    return "; ".join(parts) + (" …" if len(worker_rows) > 20 else "")


def _lost_workers_text(meta: dict) -> str:
    started = meta.get("started")
    worker_rows = meta.get("worker_rows")
    rows = worker_rows if isinstance(worker_rows, dict) else {}
    texts = []
    for name in meta.get("lost_workers") or []:
        acc = rows.get(name) or {}
        lost_at, last = acc.get("lost_at"), acc.get("last_rows_at")
        when = ""
        if isinstance(lost_at, (int, float)):
            when = f" at {fmt_time(lost_at)}"
            if isinstance(started, (int, float)):
                when += f" ({fmt_duration(lost_at - started)} into the run)"
        received = sum((acc.get("received") or {}).values())
        last_text = f", the last at {fmt_time(last)}" if isinstance(last, (int, float)) else ""
        texts.append(
            f"{name} stopped responding{when}; {received:,} of its rows reached the master{last_text}, "
            "and its last rows (about the second before it was lost) may be missing."
        )
    return " ".join(texts)


def _status_banner(run: Run, stats: RunStats) -> dict | None:
    lost = run.meta.get("lost_workers") or []
    if lost:
        return {
            "cls": "warn",
            "title": "Workers lost during the run",
            "text": f" {_lost_workers_text(run.meta)} The run went on without "
            f"{'it' if len(lost) == 1 else 'them'}, so "
            f"{'its' if len(lost) == 1 else 'their'} share of the load is missing from the "
            "moment it was lost.",
        }
    dropped = {name: sum((acc.get("dropped") or {}).values()) for name, acc in (run.meta.get("worker_rows") or {}).items()}
    if any(dropped.values()):
        return {
            "cls": "warn",
            "title": "Rows dropped on workers",
            "text": " "
            + ", ".join(f"{name} dropped {n:,} rows" for name, n in dropped.items() if n)
            + " because the master could not take them fast enough (each worker holds a bounded "
            "backlog); the numbers below are without them.",
        }
    status = str(run.meta.get("status") or "")
    planned = run.meta.get("duration_s")
    done = fmt_duration(stats.duration_s)
    reason = str(run.meta.get("reason") or "")  # run.json: why it did not complete
    if status == "interrupted":
        try:
            shorter = planned is not None and float(planned) > stats.duration_s
        except (TypeError, ValueError):
            shorter = False
        extra = f" of a planned {fmt_duration(planned)}" if shorter else ""
        why = f" ({reason})" if reason else ""
        return {"cls": "warn", "title": "Interrupted run", "text": f"This run was stopped early{why}, after {done}{extra}. The numbers cover only that part."}
    if status == "aborted":
        breach = run.meta.get("abort") or {}
        extra = f" of a planned {fmt_duration(planned)}" if planned else ""
        return {
            "cls": "bad",
            "title": f"Aborted by SLO {breach.get('expr', '?')}",
            "text": f" {fmt_duration(breach.get('after_s'))} into the run ({fmt_time(breach.get('at'))}) "
            f"it was observed at {breach.get('observed_text', '?')} over the last "
            f"{fmt_duration(breach.get('window_s'))} (wanted {breach.get('threshold_text', '?')}), "
            f"so the run was stopped early, after {done}{extra} (open conversations were "
            "closed). The numbers cover only that part.",
        }
    if status == "failed":
        why = f": {reason}" if reason else ""
        return {"cls": "bad", "title": "Failed run", "text": f"The run ended with an error{why}. The data below is what was recorded before it stopped."}
    if status == "did not finish":
        return {"cls": "bad", "title": "Run did not finish", "text": f"{run.meta.get('status_note', '')}. The numbers cover {done} of it."}
    if status == "running":
        return {"cls": "warn", "title": "Run still in progress", "text": f"This report was made while the run was still going ({done} so far)."}
    if status and status != "completed":
        return {"cls": "warn", "title": f"Run status: {status}", "text": ""}
    return None


def _cards(stats: RunStats) -> list[dict[str, object]]:
    ep = _main_endpoint(stats)
    e = stats.level("endpoint")
    main = e[e.endpoint == ep]
    overall = stats.level("overall")
    conv = stats.conversations
    conv_n = int(conv[conv.level == "overall"].conversations.iloc[0]) if len(conv) and (conv.level == "overall").any() else 0
    err = stats.total_errors / stats.total_requests if stats.total_requests else math.nan
    cards: list[dict[str, object]] = [
        {"label": "requests", "value": f"{stats.total_requests:,}"},
        {"label": "failed", "value": fmt_rate(err, 2), "bad": bool(err == err and err > 0.01)},
        {"label": "requests / second", "value": f"{float(overall.rps.iloc[0]):,.1f}" if len(overall) else "–"},
        {"label": "conversations", "value": f"{conv_n:,}"},
    ]
    if len(main):
        cards.append({"label": f"{ep} p50", "value": fmt_ms(main.p50_ms.iloc[0])})
        cards.append({"label": f"{ep} p95", "value": fmt_ms(main.p95_ms.iloc[0])})
        cards.append({"label": f"{ep} p99", "value": fmt_ms(main.p99_ms.iloc[0])})
    return cards


# --------------------------------------------------------------------------- outputs


@functools.cache
def templates() -> Environment:
    """The tool's HTML pages (`analysis/templates/`: report, compare, capacity), one set of settings."""
    return Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)


def summary_csv_text(stats: RunStats) -> str:
    """summary.csv: exactly SUMMARY_COLUMNS, one row per region × variant × endpoint."""
    df = stats.summary().copy()
    for c in df.columns:
        if c.endswith("_ms"):
            df[c] = df[c].astype(float).round(3)
    df["error_rate"] = df["error_rate"].astype(float).round(6)
    df["rps"] = df["rps"].astype(float).round(3)
    buf = io.StringIO()
    df.loc[:, list(SUMMARY_COLUMNS)].to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def summary_md_text(run: Run, stats: RunStats, slo: dict, base: BaselineComparison | None = None) -> str:
    """A Markdown summary to paste into a pull request."""
    m = run.meta
    verdict = {"pass": "✅ PASS", "fail": "❌ FAIL"}.get(slo["state"], "no SLOs")
    lines = [f"### Load test `{run.run_id}`: {verdict}", ""]
    bits = [
        f"target **{m.get('target', '?')}**",
        f"{stats.total_requests:,} requests",
        f"{fmt_rate(stats.total_errors / stats.total_requests if stats.total_requests else math.nan, 2)} failed",
        fmt_duration(stats.duration_s),
    ]
    if m.get("users"):
        bits.append(f"{m['users']} users")
    if m.get("status") and m.get("status") != "completed":
        bits.append(f"**status: {m['status']}**")
    lines.append(" · ".join(bits))
    lines.append("")
    if m.get("status") == "aborted" and m.get("abort"):
        b = m["abort"]
        lines += [
            f"**Aborted** {fmt_duration(b.get('after_s'))} into the run by SLO `{b.get('expr')}`: "
            f"observed {b.get('observed_text')} over the last {fmt_duration(b.get('window_s'))} "
            f"(wanted {b.get('threshold_text')}).",
            "",
        ]
    if slo["rows"]:
        lines += ["| SLO | scope | observed | threshold | result |", "|---|---|---:|---:|---|"]
        for r in slo["rows"]:
            res = {"pass": "✅ pass", "fail": "❌ fail"}.get(r["state"], "?")
            lines.append(f"| `{r['expr']}` | {r['scope']} | {r['observed']} | {r['threshold']} | {res} |")
        lines.append("")
    with_var = stats.has_variants
    head = ["region"] + (["variant"] if with_var else []) + ["endpoint", "requests", "failed", "req/s", "p50", "p95", "p99", "max"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * (3 if with_var else 2) + ["---:"] * 7) + "|")
    for _, r in stats.summary().iterrows():
        if not r["count"]:
            continue
        cells = (
            [r.region]
            + ([label(r.variant)] if with_var else [])
            + [
                r.endpoint,
                f"{int(r['count']):,}",
                f"{int(r.errors):,} ({fmt_rate(r.error_rate, 2)})",
                f"{r.rps:,.1f}",
                fmt_ms(r.p50_ms),
                fmt_ms(r.p95_ms),
                fmt_ms(r.p99_ms),
                fmt_ms(r.max_ms),
            ]
        )
        lines.append("| " + " | ".join(cells) + " |")
    if base is not None:
        lines += ["", _regression_sentence(base.checks, base.baseline_id)]
    lines += ["", f"<sub>Latency percentiles over successful requests (exact). Config hash: `{m.get('config_hash', '–')}`.</sub>", ""]
    return "\n".join(lines)


def _atomic_write_all(files: dict[Path, str]) -> None:
    """Write every file to a temporary sibling first, then rename them all into place."""
    temps: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temps.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
        for tmp, path in temps:
            os.replace(tmp, path)
        temps = []
    finally:
        for tmp, _ in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def render_report(
    run: Run,
    stats: RunStats,
    base: BaselineComparison | None = None,
    control: str | None = None,
    family: dict | None = None,
    charts: ChartDrawing | None = None,
) -> tuple[str, dict, BaselineComparison | None]:
    """The report HTML (and the SLO view and the baseline comparison, for summary.md).
    `family`: the comparisons (`analysis.family.comparison_family`), computed here when not
    given; `charts`: charts already started (`analysis.charts.ChartDrawing`)."""
    colours = region_colours(stats.regions)
    with charts if charts is not None else ChartDrawing(stats, run.stats_history) as drawing:
        family = family if family is not None else comparison_family(stats, control)
        regions, variants = family[REGIONS], family[VARIANTS]
        slo = _slo_view(run.slo)
        drawn = drawing.finish(variants)
    detail = stats.level("region·variant·endpoint")
    by_region = stats.level("region·endpoint")
    by_variant = stats.level("variant·endpoint")
    ctx = {
        "title": f"Load test report · {run.run_id}",
        "run_id": run.run_id,
        "meta": run.meta,
        "target": run.meta.get("target"),
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "started": fmt_time(run.meta.get("started") or stats.window[0]),
        "duration": fmt_duration(stats.duration_s),
        "slo": slo,
        "regression": _regression_banner(base),
        "status": _status_banner(run, stats),
        "headline": _headline(run, stats, regions, variants, base, slo) + _within_headline(family[WITHIN], _main_endpoint(stats)),
        "cards": _cards(stats),
        "facts": _run_facts(run, stats),
        "colours": colours,
        "regions": stats.regions,
        "variants": stats.variants if stats.has_variants else [],
        "by_region": _request_rows(by_region[by_region["count"] > 0], colours),
        "by_variant": _request_rows(by_variant[by_variant["count"] > 0], colours) if stats.has_variants else [],
        "detail": _request_rows(detail, colours) if stats.has_variants else [],
        "empty_groups": [
            f"{label(r.region)} · {label(r.variant)}"
            for _, r in detail.groupby(["region", "variant"], as_index=False)["count"].sum().iterrows()
            if r["count"] == 0
        ],
        "totals": _request_rows(stats.level("endpoint"), colours) if len(by_region.region.unique()) > 1 else [],
        "cmp_regions": _comparison_view(regions, colours) if len(stats.regions) > 1 else [],
        "cmp_variants": _comparison_view(variants, None),
        "cmp_within": _within_view(family[WITHIN]),
        "baseline": _baseline_view(base.table, base.checks, colours) if base else [],
        "baseline_id": base.baseline_id if base else None,
        "baseline_regressions": len(failures(base.checks)) if base else 0,
        "thresholds": ", ".join(t.expr for t in base.thresholds) if base else "",
        "charts": drawn,
        "conv": _conversation_view(stats, colours),
        "arrivals": _arrivals_view(run),
        "connections": _connections_view(run),
        "connection_policy": run.meta.get("connections"),
        "errors": _error_view(stats),
        "distinct_errors": stats.distinct_errors,
        "total_errors": stats.total_errors,
        "config": flatten(redact(run.meta.get("config") or {})),
        "config_hash": run.meta.get("config_hash"),
        "method": PERCENTILE_METHOD,
        "bootstrap": BOOTSTRAP_METHOD,
        "notes": stats.notes,
        "bin_s": stats.bin_s,
        "tool_version": run.meta.get("tool_version"),
        "has_variants": stats.has_variants,
    }
    text = templates().get_template("report.html.j2").render(**ctx)
    return text, slo, base


def build_report(
    run_dir: Path | str,
    baseline: Path | str | None = None,
    warmup_s: float = 0.0,
    output: Path | str | None = None,
    *,
    control: str | None = None,
    thresholds: Sequence[Threshold | str] | None = None,
) -> Path:
    """Analyse a run folder and write report.html, summary.csv and summary.md.

    baseline: an earlier run folder, compared per region × variant × endpoint and judged
    against `thresholds` (analysis.regression; None: its defaults). output: the report's path
    (default RUN_DIR/report.html); summary.csv and summary.md go beside it. Returns the
    report's path. Raises RunDataError on unusable input, in which case nothing is written.
    """
    run = load_run(run_dir, warmup_s=warmup_s)
    stats = compute_stats(run)
    base = None
    if baseline is not None:
        base_run = load_run(baseline, warmup_s=warmup_s)
        base = against_baseline(stats, compute_stats(base_run), thresholds, base_run.run_id)
    return write_report(run, stats, output, base, control=control)


def write_report(run: Run, stats: RunStats, output: Path | str | None = None, base: BaselineComparison | None = None, *, control: str | None = None) -> Path:
    """`build_report` for a run already loaded and analysed (no second pass over the CSVs)."""
    with ChartDrawing(stats, run.stats_history) as charts:  # drawn meanwhile, half by a child process
        family = comparison_family(stats, control)
        text, slo, base = render_report(run, stats, base, control, family, charts)
    out = Path(output) if output is not None else run.path / REPORT_HTML
    if out.is_dir():
        out = out / REPORT_HTML
    if len(text.encode("utf-8")) > MAX_REPORT_BYTES:  # cannot happen by design; never write a giant file
        raise RuntimeError(f"report would be {len(text) / 1e6:.1f} MB, over the 10 MB bound")
    _atomic_write_all(
        {
            out: text,
            out.parent / SUMMARY_CSV: summary_csv_text(stats),
            out.parent / SUMMARY_MD: summary_md_text(run, stats, slo, base),
            out.parent / COMPARISONS_CSV: comparisons_csv_text(family),
        }
    )
    return out


def format_summary_table(run_dir: Path | str, warmup_s: float = 0.0) -> str:
    """A compact plain-text table per region × endpoint for the terminal."""
    run = load_run(run_dir, warmup_s=warmup_s)
    stats = compute_stats(run)
    return format_stats_table(stats)


def format_stats_table(stats: RunStats) -> str:
    df = stats.level("region·endpoint")
    df = df[df["count"] > 0]
    head = ("region", "endpoint", "requests", "failed", "p50", "p95", "p99")
    rows = [head]
    for _, r in df.iterrows():
        failed = f"{int(r.errors):,}" + (f" ({fmt_rate(r.error_rate, 1)})" if r.errors else "")
        rows.append((r.region, r.endpoint, f"{int(r['count']):,}", failed, fmt_ms(r.p50_ms), fmt_ms(r.p95_ms), fmt_ms(r.p99_ms)))
    if len(rows) == 1:
        return "no requests recorded"
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [str(c).ljust(widths[i]) if i < 2 else str(c).rjust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --------------------------------------------------------------------------- run comparison


def build_comparison(
    run_dirs: Sequence[Path | str], output: Path | str, warmup_s: float = 0.0, thresholds: Sequence[Threshold | str] | None = None
) -> tuple[Path, str, list[BaselineComparison]]:
    """Several runs side by side: an HTML page at `output` and a plain-text table (returned).

    With `thresholds`, each later run is also gated against the first (the baseline): the
    page shows each gate's verdict and the comparisons are returned (else an empty list)."""
    runs = [load_run(d, warmup_s=warmup_s) for d in run_dirs]
    stats = [compute_stats(r) for r in runs]
    names = []
    for r in runs:
        n = r.run_id
        while n in names:
            n += "′"
        names.append(n)
    df = compare_runs(stats, names)
    text = format_compare_table(df, names)
    gated = [] if thresholds is None else [against_baseline(s, stats[0], thresholds, names[0]) for s in stats[1:]]
    gates = [{"name": n, "verdict": _regression_banner(g)} for n, g in zip(names[1:], gated)]
    all_regions: list[str] = []
    for s in stats:
        all_regions += [r for r in s.regions if r not in all_regions]
    colours = region_colours(all_regions)
    runs_view = []
    for r, s, n in zip(runs, stats, names):
        runs_view.append(
            {
                "name": n,
                "started": fmt_time(r.meta.get("started") or s.window[0]),
                "target": r.meta.get("target", "–"),
                "status": r.meta.get("status", "–"),
                "users": r.meta.get("users", "–"),
                "duration": fmt_duration(s.duration_s),
                "requests": f"{s.total_requests:,}",
                "failed": fmt_rate(s.total_errors / s.total_requests if s.total_requests else math.nan, 2),
                "config_hash": r.meta.get("config_hash", "–"),
                "slo": _slo_view(r.slo)["title"],
            }
        )
    groups = []
    for (reg, var, ep), g in df.groupby(["region", "variant", "endpoint"], sort=False):
        rows = []
        for i, (_, r) in enumerate(g.iterrows()):
            row = {
                "run": r.run,
                "count": f"{int(r['count']):,}",
                "err": fmt_rate(r.error_rate, 2),
                "p50": fmt_ms(r.p50_ms),
                "p95": fmt_ms(r.p95_ms),
                "p99": fmt_ms(r.p99_ms),
                "ref": i == 0,
                "shift": r["shift"],
                "mw_p": _shift_text(r.mw_p),
            }
            for q in COMPARE_QS:
                row[f"d{q}"] = (
                    None
                    if i == 0
                    else _delta_cell(
                        r[f"d_p{q}_ms"],
                        r[f"d_p{q}_lo"],
                        r[f"d_p{q}_hi"],
                        r[f"d_p{q}_verdict"],
                        fmt_signed_ms,
                        f"{fmt_signed_ms(r[f'd_p{q}_ms'])} ({fmt_signed_pct(r[f'd_p{q}_pct'])})",
                    )
                )
            row["d_err"] = None if i == 0 else _delta_cell(r.d_error_rate, r.d_error_lo, r.d_error_hi, r.d_error_verdict, fmt_pt)
            rows.append(row)
        groups.append({"region": reg, "variant": label(var) if var else "", "endpoint": ep, "colour": colours.get(reg, "#999"), "rows": rows})
    chart = compare_chart(df, names)
    html_text = (
        templates()
        .get_template("compare.html.j2")
        .render(
            title="Runs compared: " + " vs ".join(names),
            runs=runs_view,
            groups=groups,
            chart=chart,
            gates=gates,
            bootstrap=BOOTSTRAP_METHOD,
            method=PERCENTILE_METHOD,
            generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        )
    )
    out = Path(output)
    if out.is_dir():
        out = out / "compare.html"
    _atomic_write_all({out: html_text})
    return out, text, gated


def format_compare_table(df: pd.DataFrame, names: Sequence[str]) -> str:
    """Runs side by side for the terminal: p95 and error rate per run, then the last run
    against the first: Δ p95 with its 95% interval and its own verdict, the verdicts of
    Δ p50, Δ p99 and Δ error rate, and the distribution shift (Mann-Whitney)."""
    head = ["region", "variant", "endpoint"]
    for n in names:
        head += [f"{n} p95", f"{n} err"]
    head += ["Δp95 (last vs first)", "95% CI", "p95 verdict", "p50 verdict", "p99 verdict", "errors verdict", "shift"]
    rows = [head]
    for (reg, var, ep), g in df.groupby(["region", "variant", "endpoint"], sort=False):
        row = [reg, var or "–", ep]
        for n in names:
            r = g[g.run == n]
            row += [fmt_ms(r.p95_ms.iloc[0]) if len(r) else "–", fmt_rate(r.error_rate.iloc[0], 2) if len(r) else "–"]
        last = g[g.run == names[-1]]
        if len(last):
            x = last.iloc[0]
            ci = f"[{fmt_signed_ms(x.d_p95_lo)}, {fmt_signed_ms(x.d_p95_hi)}]" if x.d_p95_lo == x.d_p95_lo else "–"
            row += [
                f"{fmt_signed_ms(x.d_p95_ms)} ({fmt_signed_pct(x.d_p95_pct)})",
                ci,
                x.d_p95_verdict,
                x.d_p50_verdict,
                x.d_p99_verdict,
                x.d_error_verdict,
                x["shift"],
            ]
        else:
            row += ["–"] * 7
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(str(c).ljust(widths[i]) if i < 3 else str(c).rjust(widths[i]) for i, c in enumerate(row)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(
        "Verdicts from each difference's own 95% interval: significant = the interval excludes zero. shift: Mann-Whitney test of the whole distributions."
    )
    return "\n".join(lines)
