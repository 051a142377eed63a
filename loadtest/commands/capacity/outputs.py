"""What a capacity search writes into its folder: capacity.csv (one row per measured step),
capacity.json (plan, SLOs, steps, knees), capacity.md, capacity.png (`analysis.charts`) and a
self-contained capacity.html; and the knees table printed at the end."""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from loadtest import config, slo
from loadtest.commands.capacity.plan import DEFAULT_SLO_TEXT, LATENCY_ENDPOINT, Plan
from loadtest.commands.capacity.steps import RegionResult

CSV_COLUMNS = ("region", "level_users", "conversations_per_s", "rps", "p50_ms", "p95_ms",
               "p99_ms", "error_rate", "passed", "step", "users_observed", "requests",
               "knee", "failed_slos", "level_rate", "offered_per_s", "dropped_share", "lag_p95_ms")

CAPACITY_CSV, CAPACITY_JSON = "capacity.csv", "capacity.json"
CAPACITY_MD, CAPACITY_PNG, CAPACITY_HTML = "capacity.md", "capacity.png", "capacity.html"


def fmt_ms(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"


def fmt_pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"



def csv_rows(results: Sequence[RegionResult]) -> list[dict]:
    rows = []
    for res in results:
        for i, s in enumerate(res.steps or []):
            rows.append({
                "region": res.region, "level_users": s["level_users"],
                "conversations_per_s": round(s["conversations_per_s"], 3),
                "rps": round(s["rps"], 3),
                "p50_ms": _round(s["p50_ms"]), "p95_ms": _round(s["p95_ms"]),
                "p99_ms": _round(s["p99_ms"]),
                "error_rate": None if s["error_rate"] is None else round(s["error_rate"], 6),
                "passed": int(s["passed"]), "step": s["step"],
                "users_observed": s.get("users_observed"), "requests": s["requests"],
                "knee": int(res.knee is not None and res.knee.knee == i),
                "failed_slos": "; ".join(s["failed_slos"]),
                "level_rate": s.get("level_rate"),
                "offered_per_s": _round(s.get("offered_per_s"), 3),
                "dropped_share": _round(s.get("dropped_share"), 6),
                "lag_p95_ms": _round(s.get("lag_p95_ms")),
            })
    return rows


def _round(v, nd=1):
    return None if v is None else round(v, nd)


def write_csv(results: Sequence[RegionResult], folder: Path) -> Path:
    path = folder / CAPACITY_CSV
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in csv_rows(results):
            w.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def knee_summary(res: RegionResult) -> dict:
    k, f = res.knee_step, res.fail_step
    out = {"status": res.status, "level": None, "users": None, "level_rate": None,
           "conversations_per_s": None, "rps": None,
           "p95_ms": None, "p99_ms": None, "error_rate": None, "first_failing_level": None,
           "first_failing_users": None, "first_failing_reason": None}
    if k:
        out.update(level=k["level"], users=k["level_users"], level_rate=k.get("level_rate"),
                   conversations_per_s=round(k["conversations_per_s"], 3),
                   rps=round(k["rps"], 3), p95_ms=_round(k["p95_ms"]), p99_ms=_round(k["p99_ms"]),
                   error_rate=k["error_rate"])
    if f:
        out.update(first_failing_level=f["level"], first_failing_users=f["level_users"],
                   first_failing_reason="; ".join(f["failed_slos"]))
    if res.knee and res.knee.isolated:
        out["isolated_failures"] = [res.steps[i]["level"] for i in res.knee.isolated]
    return out


def status_text(res: RegionResult, plan: Plan) -> str:
    flag = "--arrival-rate-" if plan.by == "rate" else "--"
    return {
        "found": "knee found",
        "above_max": f"within SLO up to {flag}max {plan.max:g}: the knee is higher (raise {flag}max)",
        "below_start": f"failed already at {flag}start {plan.start:g} {plan.unit} (lower {flag}start)",
        "incomplete": "interrupted before a failing step" if res.steps else "interrupted before any step ended",
        "failed": f"run failed: {res.message}",
    }[res.status]


def build_json(results: Sequence[RegionResult], plan: Plan, scenario: config.Scenario,
               folder: Path, slo_source: str, code: int) -> dict:
    regions = {}
    for res in results:
        regions[res.region] = {
            "run_dir": res.run_dir.name, "status": res.status, "status_text": status_text(res, plan),
            "knee": knee_summary(res), "slos": res.slos, "baseline_p95_ms": res.baseline_p95_ms,
            "baseline_responds": res.baseline_responds, "baseline_steps": res.baseline_steps,
            "baseline_note": res.baseline_note,
            "stopped_early": res.stopped_early, "locust_exit_code": res.locust_rc,
            "load_generator_cpu_warning": res.cpu_warning, "mock": res.mock, "message": res.message,
            "steps": [{k: v for k, v in s.items()} for s in (res.steps or [])],
        }
    return {
        "id": folder.name, "created": time.time(), "exit_code": code,
        "plan": dict(asdict(plan), levels=plan.levels, settle_s=plan.settle_s, unit=plan.unit,
                     shape=plan.shape_spec() if plan.by == "users" else None,
                     arrival_steps=plan.arrival_steps() if plan.by == "rate" else None),
        "slo_source": slo_source,
        "slo_rule": DEFAULT_SLO_TEXT if slo_source == "default" else None,
        "latency_endpoint": LATENCY_ENDPOINT,
        "window": "requests completed (start + latency) in [step start + settle, step end)",
        "knees": {r.region: {"users": knee_summary(r)["users"],
                             "level_rate": knee_summary(r)["level_rate"],
                             "conversations_per_s": knee_summary(r)["conversations_per_s"],
                             "status": r.status} for r in results},
        "regions": regions,
        "scenario": scenario.raw(),
    }


def knees_table(results: Sequence[RegionResult], plan: Plan) -> list[list[str]]:
    rate = plan.by == "rate"
    rows = [["region", "knee conv/s offered" if rate else "knee users",
             "conv/s achieved" if rate else "conv/s", "req/s", "p95 ms", "p99 ms", "errors",
             "first failing", "why"]]
    for res in results:
        k = knee_summary(res)
        prefix = "≥ " if res.status in ("above_max", "incomplete") else ""
        rows.append([
            res.region,
            f"{prefix}{k['level']:g}" if k["level"] is not None else "–",
            f"{prefix}{k['conversations_per_s']:.2f}" if k["conversations_per_s"] is not None else "–",
            f"{k['rps']:.1f}" if k["rps"] is not None else "–",
            fmt_ms(k["p95_ms"]), fmt_ms(k["p99_ms"]), fmt_pct(k["error_rate"]),
            f"{k['first_failing_level']:g} {plan.unit}" if k["first_failing_level"] else "–",
            k["first_failing_reason"] or status_text(res, plan),
        ])
    return rows


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for r in rows:
        out.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return "\n".join(out)


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def step_header(plan: Plan) -> list[str]:
    """Columns of a region's step table (markdown and HTML); the SLO verdict comes last."""
    extra = ["dropped", "lag p95 ms"] if plan.by == "rate" else []
    level = ["offered conv/s", "achieved conv/s"] if plan.by == "rate" else ["users", "conv/s"]
    return [*level, "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", *extra, "SLO"]


def step_cells(s: dict, plan: Plan) -> list[str]:
    """The cells of one step, without the SLO verdict."""
    cells = [f"{s['level']:g}", f"{s['conversations_per_s']:.2f}", f"{s['rps']:.1f}",
             fmt_ms(s["p50_ms"]), fmt_ms(s["p95_ms"]), fmt_ms(s["p99_ms"]), fmt_pct(s["error_rate"])]
    if plan.by == "rate":
        cells += [fmt_pct(s.get("dropped_share")), fmt_ms(s.get("lag_p95_ms"))]
    return cells


def markdown(data: dict, results: Sequence[RegionResult], plan: Plan) -> str:
    lines = ["# Capacity search", "",
             f"Plan: {plan.describe()}.", "",
             "SLOs: " + (DEFAULT_SLO_TEXT + " (default)" if data["slo_source"] == "default"
                         else "the --slo expressions"),
             "", "## Knees (highest load within SLO)", ""]
    rows = knees_table(results, plan)
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|" + "---|" * len(rows[0]))
    for r in rows[1:]:
        lines.append("| " + " | ".join(_md(c) for c in r) + " |")
    for res in results:
        lines += ["", f"## {res.region}", "",
                  f"Run folder: `{res.run_dir.name}/` · status: {status_text(res, plan)} · "
                  f"SLOs: {', '.join(f'`{s}`' for s in res.slos or [])}"]
        if res.baseline_note:
            lines += ["", f"Default SLO: {res.baseline_note}."]
        if res.mock and res.mock.get("slots"):
            lines += ["", f"Mock capacity: {res.mock['slots']} slots, queue limit "
                          f"{res.mock['queue_limit']}; {res.mock.get('rejected', 0)} requests rejected."]
        if res.cpu_warning:
            lines.append("")
            lines.append("⚠ Locust reported CPU above 90 %: latencies may be the load generator's "
                         "(use --processes N).")
        header = step_header(plan)
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for i, s in enumerate(res.steps or []):
            cells = step_cells(s, plan)
            if res.knee and res.knee.knee == i:
                cells[0] += " **knee**"
            verdict = "✅" if s["passed"] else "❌ " + _md("; ".join(s["failed_slos"]))
            lines.append("| " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def chart(results: Sequence[RegionResult], path: Path, plan: Plan) -> Path | None:
    """p95/p99 against the level (users or conv/s) per region, error rate on a second axis,
    the knee marked."""
    shown = [r for r in results if r.steps]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.charts import STYLE, region_colours

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
            threshold = _p95_threshold(res.slos or [])
            if threshold:
                ax.axhline(threshold, color="#7F7F7F", ls=(0, (1, 2)), lw=1.4)
                ax.annotate(f"p95 SLO {threshold:.0f} ms", (x[0], threshold), xytext=(0, 3),
                            textcoords="offset points", fontsize=8, color="#555555")
                top = max(top, threshold)
            ax.set_ylim(0, top * 1.15)
            ax.set_xlabel("offered conversations/s (open model)" if plan.by == "rate"
                          else "concurrent conversations (users)")
            ax.set_ylabel(f"{LATENCY_ENDPOINT} latency (ms)")
            ax2 = ax.twinx()
            ax2.plot(x, err, ":^", color=c, lw=1.3, ms=5, alpha=0.9)
            ax2.set_ylabel("error rate (%)")
            ax2.set_ylim(0, max(5.0, max((e for e in err if e == e), default=0) * 1.15))
            ax2.grid(False)
            ax2.spines["right"].set_visible(True)
            k = res.knee_step
            title = res.region
            if k:
                ax.axvline(k["level"], color=c, lw=1, alpha=0.5)
                ax.annotate(f"knee {k['level']:g} {plan.unit}\n{k['conversations_per_s']:.2f} conv/s",
                            (k["level"], k["p95_ms"] or 0), xytext=(6, -28),
                            textcoords="offset points", fontsize=8, color=c,
                            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": c, "lw": 0.8})
                ge = "≥ " if res.status in ("above_max", "incomplete") else ""
                title += (f" — knee {ge}{k['level']:g} {plan.unit}" if plan.by == "rate" else
                          f" — knee {ge}{k['level']:g} users, {ge}{k['conversations_per_s']:.2f} conv/s")
            else:
                title += f" — {res.status.replace('_', ' ')}"
            ax.set_title(title, loc="left")
        from matplotlib.lines import Line2D

        grey = "#444444"
        handles = [Line2D([], [], color=grey, ls="-", marker="o", ms=5, lw=2),
                   Line2D([], [], color=grey, ls="--", marker="s", ms=4, lw=1.4),
                   Line2D([], [], color=grey, ls=":", marker="^", ms=5, lw=1.3),
                   Line2D([], [], color="#7F7F7F", ls=(0, (1, 2)), lw=1.4),
                   Line2D([], [], color="#C0392B", ls="", marker="x", ms=8, mew=2)]
        labels = [f"p95 {LATENCY_ENDPOINT} (left)", f"p99 {LATENCY_ENDPOINT} (left)",
                  "error rate (right)", "p95 SLO threshold", "step outside SLO"]
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8.5,
                   bbox_to_anchor=(0.5, 0.0))
        fig.tight_layout(rect=(0, 0.06 if rows == 1 else 0.035, 1, 1))
        fig.savefig(path, format="png", dpi=110)
        plt.close(fig)
    return path


def _p95_threshold(exprs: Sequence[str]) -> float | None:

    for s in slo.parse_slos(list(exprs)):
        if s.metric == "p95" and s.endpoint == LATENCY_ENDPOINT and s.variant is None and s.op in ("<", "<="):
            return s.threshold
    return None


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem}h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border-bottom:1px solid #ddd;
padding:.3rem .6rem;text-align:right}th:first-child,td:first-child{text-align:left}
td.why{text-align:left;color:#555}tr.knee{background:#eef6ee;font-weight:600}tr.fail td{color:#a33}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:.9rem}code{background:#f4f4f4;
padding:0 .2rem}
"""


def html_page(data: dict, results: Sequence[RegionResult], plan: Plan, png: Path | None) -> str:

    e = html.escape
    rows = knees_table(results, plan)
    head = "".join(f"<th>{e(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td{' class=why' if i == len(r) - 1 else ''}>{e(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows[1:])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>Capacity {e(data['id'])}</title>"
             f"<style>{_CSS}</style></head><body>",
             f"<h1>Capacity search <small>{e(data['id'])}</small></h1>",
             f"<p class=note>Plan: {e(plan.describe())}.<br>SLOs: "
             + (e(DEFAULT_SLO_TEXT) + " (default)" if data["slo_source"] == "default"
                else "the <code>--slo</code> expressions")
             + f". Latency: successful {LATENCY_ENDPOINT} calls. conv/s: successful creates per second "
               "in the step's stable window.</p>",
             "<h2>Knees: highest load within SLO</h2>",
             f"<table><tr>{head}</tr>{body}</table>"]
    if png and png.exists():
        uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
        parts.append(f"<img alt='p95/p99 and error rate against {plan.unit} per region' src='{uri}'>")
    for res in results:
        slos = ", ".join(f"<code>{e(s)}</code>" for s in res.slos or [])
        parts.append(f"<h2>{e(res.region)}</h2><p class=note>{e(status_text(res, plan))} · SLOs: {slos}"
                     f" · run folder <a href='{e(res.run_dir.name)}/'>{e(res.run_dir.name)}/</a>"
                     f" (<code>loadtest report</code> it for the full report)"
                     + (f" · mock capacity {res.mock['slots']} slots, queue limit {res.mock['queue_limit']}"
                        if res.mock and res.mock.get("slots") else "") + "</p>")
        if res.baseline_note:
            parts.append(f"<p class=note>Default SLO: {e(res.baseline_note)}.</p>")
        if res.cpu_warning:
            parts.append("<p class=note>⚠ Locust reported CPU above 90 %: latencies may be the load "
                         "generator's (use <code>--processes N</code>).</p>")
        trs = []
        for i, s in enumerate(res.steps or []):
            cls = "knee" if res.knee and res.knee.knee == i else ("fail" if not s["passed"] else "")
            cells = "".join(f"<td>{e(c)}</td>" for c in step_cells(s, plan))
            verdict = "pass" if s["passed"] else "; ".join(s["failed_slos"])
            trs.append(f"<tr class='{cls}'>{cells}<td class=why>{e(verdict)}</td></tr>")
        head = "".join(f"<th>{e(c)}</th>" for c in step_header(plan))
        parts.append(f"<table><tr>{head}</tr>" + "".join(trs) + "</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_outputs(results: Sequence[RegionResult], plan: Plan, scenario: config.Scenario,
                  folder: Path, slo_source: str, code: int) -> dict:
    write_csv(results, folder)
    data = build_json(results, plan, scenario, folder, slo_source, code)
    (folder / CAPACITY_JSON).write_text(json.dumps(data, indent=2, default=_json_default) + "\n",
                                        encoding="utf-8")
    (folder / CAPACITY_MD).write_text(markdown(data, results, plan), encoding="utf-8")
    png = None
    try:
        png = chart(results, folder / CAPACITY_PNG, plan)
    except Exception as e:  # the numbers are on disk; a chart failure must not lose them
        print(f"loadtest: the capacity chart could not be drawn ({e})", file=sys.stderr)
    (folder / CAPACITY_HTML).write_text(html_page(data, results, plan, png), encoding="utf-8")
    return data


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)
