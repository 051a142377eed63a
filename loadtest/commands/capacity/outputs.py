"""What a capacity search writes into its folder: capacity.csv (one row per measured step),
capacity.json (plan, SLOs, steps, knees), capacity.md, capacity.png (`analysis.charts`) and a
self-contained capacity.html; and the knees table printed at the end."""

from __future__ import annotations

import base64
import csv
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence


from analysis.charts import CapacityPanel, capacity_chart
from analysis.report import templates
from loadtest import config, slo
from loadtest.commands.capacity.plan import DEFAULT_SLO_TEXT, LATENCY_ENDPOINT, Plan
from loadtest.commands.capacity.steps import RegionResult

CSV_COLUMNS = (
    "region",
    "level_users",
    "conversations_per_s",
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "error_rate",
    "passed",
    "step",
    "users_observed",
    "requests",
    "knee",
    "failed_slos",
    "level_rate",
    "offered_per_s",
    "dropped_share",
    "lag_p95_ms",
)

CAPACITY_CSV, CAPACITY_JSON = "capacity.csv", "capacity.json"
CAPACITY_MD, CAPACITY_PNG, CAPACITY_HTML = "capacity.md", "capacity.png", "capacity.html"


def fmt_ms(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"


def fmt_pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def csv_rows(results: Sequence[RegionResult]) -> list[dict]:
    rows = []
    for res in results:
        for i, s in enumerate(res.steps or []):
            rows.append(
                {
                    "region": res.region,
                    "level_users": s["level_users"],
                    "conversations_per_s": round(s["conversations_per_s"], 3),
                    "rps": round(s["rps"], 3),
                    "p50_ms": _round(s["p50_ms"]),
                    "p95_ms": _round(s["p95_ms"]),
                    "p99_ms": _round(s["p99_ms"]),
                    "error_rate": None if s["error_rate"] is None else round(s["error_rate"], 6),
                    "passed": int(s["passed"]),
                    "step": s["step"],
                    "users_observed": s.get("users_observed"),
                    "requests": s["requests"],
                    "knee": int(res.knee is not None and res.knee.knee == i),
                    "failed_slos": "; ".join(s["failed_slos"]),
                    "level_rate": s.get("level_rate"),
                    "offered_per_s": _round(s.get("offered_per_s"), 3),
                    "dropped_share": _round(s.get("dropped_share"), 6),
                    "lag_p95_ms": _round(s.get("lag_p95_ms")),
                }
            )
    return rows


def _round(v: float | None, nd: int = 1) -> float | None:
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
    out: dict[str, object] = {
        "status": res.status,
        "level": None,
        "users": None,
        "level_rate": None,
        "conversations_per_s": None,
        "rps": None,
        "p95_ms": None,
        "p99_ms": None,
        "error_rate": None,
        "first_failing_level": None,
        "first_failing_users": None,
        "first_failing_reason": None,
    }
    if k:
        out.update(
            level=k["level"],
            users=k["level_users"],
            level_rate=k.get("level_rate"),
            conversations_per_s=round(k["conversations_per_s"], 3),
            rps=round(k["rps"], 3),
            p95_ms=_round(k["p95_ms"]),
            p99_ms=_round(k["p99_ms"]),
            error_rate=k["error_rate"],
        )
    if f:
        out.update(first_failing_level=f["level"], first_failing_users=f["level_users"], first_failing_reason="; ".join(f["failed_slos"]))
    if res.knee and res.knee.isolated:
        out["isolated_failures"] = [res.step(i)["level"] for i in res.knee.isolated]
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


def build_json(results: Sequence[RegionResult], plan: Plan, scenario: config.Scenario, folder: Path, slo_source: str, code: int) -> dict:
    regions = {}
    for res in results:
        regions[res.region] = {
            "run_dir": res.run_dir.name,
            "status": res.status,
            "status_text": status_text(res, plan),
            "knee": knee_summary(res),
            "slos": res.slos,
            "baseline_p95_ms": res.baseline_p95_ms,
            "baseline_responds": res.baseline_responds,
            "baseline_steps": res.baseline_steps,
            "baseline_note": res.baseline_note,
            "stopped_early": res.stopped_early,
            "locust_exit_code": res.locust_rc,
            "load_generator_cpu_warning": res.cpu_warning,
            "mock": res.mock,
            "message": res.message,
            "steps": [{k: v for k, v in s.items()} for s in (res.steps or [])],
        }
    return {
        "id": folder.name,
        "created": time.time(),
        "exit_code": code,
        "plan": dict(
            asdict(plan),
            levels=plan.levels,
            settle_s=plan.settle_s,
            unit=plan.unit,
            shape=plan.shape_spec() if plan.by == "users" else None,
            arrival_steps=plan.arrival_steps() if plan.by == "rate" else None,
        ),
        "slo_source": slo_source,
        "slo_rule": DEFAULT_SLO_TEXT if slo_source == "default" else None,
        "latency_endpoint": LATENCY_ENDPOINT,
        "window": "requests completed (start + latency) in [step start + settle, step end)",
        "knees": {
            r.region: {
                "users": knee_summary(r)["users"],
                "level_rate": knee_summary(r)["level_rate"],
                "conversations_per_s": knee_summary(r)["conversations_per_s"],
                "status": r.status,
            }
            for r in results
        },
        "regions": regions,
        "scenario": scenario.raw(),
    }


def knees_table(results: Sequence[RegionResult], plan: Plan) -> list[list[str]]:
    rate = plan.by == "rate"
    rows = [
        [
            "region",
            "knee conv/s offered" if rate else "knee users",
            "conv/s achieved" if rate else "conv/s",
            "req/s",
            "p95 ms",
            "p99 ms",
            "errors",
            "first failing",
            "why",
        ]
    ]
    for res in results:
        k = knee_summary(res)
        prefix = "≥ " if res.status in ("above_max", "incomplete") else ""
        rows.append(
            [
                res.region,
                f"{prefix}{k['level']:g}" if k["level"] is not None else "–",
                f"{prefix}{k['conversations_per_s']:.2f}" if k["conversations_per_s"] is not None else "–",
                f"{k['rps']:.1f}" if k["rps"] is not None else "–",
                fmt_ms(k["p95_ms"]),
                fmt_ms(k["p99_ms"]),
                fmt_pct(k["error_rate"]),
                f"{k['first_failing_level']:g} {plan.unit}" if k["first_failing_level"] else "–",
                k["first_failing_reason"] or status_text(res, plan),
            ]
        )
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
    cells = [
        f"{s['level']:g}",
        f"{s['conversations_per_s']:.2f}",
        f"{s['rps']:.1f}",
        fmt_ms(s["p50_ms"]),
        fmt_ms(s["p95_ms"]),
        fmt_ms(s["p99_ms"]),
        fmt_pct(s["error_rate"]),
    ]
    if plan.by == "rate":
        cells += [fmt_pct(s.get("dropped_share")), fmt_ms(s.get("lag_p95_ms"))]
    return cells


def markdown(data: dict, results: Sequence[RegionResult], plan: Plan) -> str:
    lines = [
        "# Capacity search",
        "",
        f"Plan: {plan.describe()}.",
        "",
        "SLOs: " + (DEFAULT_SLO_TEXT + " (default)" if data["slo_source"] == "default" else "the --slo expressions"),
        "",
        "## Knees (highest load within SLO)",
        "",
    ]
    rows = knees_table(results, plan)
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|" + "---|" * len(rows[0]))
    for r in rows[1:]:
        lines.append("| " + " | ".join(_md(c) for c in r) + " |")
    for res in results:
        lines += [
            "",
            f"## {res.region}",
            "",
            f"Run folder: `{res.run_dir.name}/` · status: {status_text(res, plan)} · SLOs: {', '.join(f'`{s}`' for s in res.slos or [])}",
        ]
        if res.baseline_note:
            lines += ["", f"Default SLO: {res.baseline_note}."]
        if res.mock and res.mock.get("slots"):
            lines += ["", f"Mock capacity: {res.mock['slots']} slots, queue limit {res.mock['queue_limit']}; {res.mock.get('rejected', 0)} requests rejected."]
        if res.cpu_warning:
            lines.append("")
            lines.append("⚠ Locust reported CPU above 90 %: latencies may be the load generator's (use --processes N).")
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
    """capacity.png (`analysis.charts.capacity_chart`)."""
    panels = [CapacityPanel(region=r.region, steps=r.steps or [], knee=r.knee_step, status=r.status, p95_slo_ms=_p95_threshold(r.slos or [])) for r in results]
    return capacity_chart(panels, path, by_rate=plan.by == "rate", unit=plan.unit, endpoint=LATENCY_ENDPOINT)


def _p95_threshold(exprs: Sequence[str]) -> float | None:

    for s in slo.parse_slos(list(exprs)):
        if s.metric == "p95" and s.endpoint == LATENCY_ENDPOINT and s.variant is None and s.op in ("<", "<="):
            return s.threshold
    return None


def html_page(data: dict, results: Sequence[RegionResult], plan: Plan, png: Path | None) -> str:
    """capacity.html (`analysis/templates/capacity.html.j2`, styled like the run report), the
    chart inlined: one file that opens offline."""
    rows = knees_table(results, plan)
    chart_uri = None
    if png and png.exists():
        chart_uri = "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")
    regions = []
    for res in results:
        steps = []
        for i, s in enumerate(res.steps or []):
            steps.append(
                {
                    "cls": "knee" if res.knee and res.knee.knee == i else ("fail" if not s["passed"] else ""),
                    "cells": step_cells(s, plan),
                    "verdict": "pass" if s["passed"] else "; ".join(s["failed_slos"]),
                }
            )
        regions.append(
            {
                "region": res.region,
                "status": status_text(res, plan),
                "slos": res.slos or [],
                "run_dir": res.run_dir.name,
                "baseline_note": res.baseline_note,
                "cpu_warning": res.cpu_warning,
                "mock": (f"{res.mock['slots']} slots, queue limit {res.mock['queue_limit']}" if res.mock and res.mock.get("slots") else ""),
                "steps": steps,
            }
        )
    return (
        templates()
        .get_template("capacity.html.j2")
        .render(
            title=f"Capacity {data['id']}",
            id=data["id"],
            plan=plan.describe(),
            unit=plan.unit,
            slo_default=data["slo_source"] == "default",
            slo_rule=DEFAULT_SLO_TEXT,
            endpoint=LATENCY_ENDPOINT,
            knees={"header": rows[0], "rows": rows[1:]},
            chart=chart_uri,
            regions=regions,
            step_header=step_header(plan),
            generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        )
    )


def write_outputs(results: Sequence[RegionResult], plan: Plan, scenario: config.Scenario, folder: Path, slo_source: str, code: int) -> dict:
    write_csv(results, folder)
    data = build_json(results, plan, scenario, folder, slo_source, code)
    (folder / CAPACITY_JSON).write_text(json.dumps(data, indent=2, default=_json_default) + "\n", encoding="utf-8")
    (folder / CAPACITY_MD).write_text(markdown(data, results, plan), encoding="utf-8")
    png = None
    try:
        png = chart(results, folder / CAPACITY_PNG, plan)
    except Exception as e:  # the numbers are on disk; a chart failure must not lose them
        print(f"loadtest: the capacity chart could not be drawn ({e})", file=sys.stderr)
    (folder / CAPACITY_HTML).write_text(html_page(data, results, plan, png), encoding="utf-8")
    return data


def _json_default(o: object) -> object:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    return str(o)
