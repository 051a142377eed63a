"""The regression gate: this run against a baseline run, judged by confidence intervals.

A threshold is one line, ``[SCOPE.]METRIC:+LIMIT``, the scope as in the SLO grammar
(`analysis.scope`: region, variant and/or endpoint names in any order)::

    p95:+10%              p95 may grow by up to 10 % in every region × variant × endpoint
    uk.respond.p99:+20%   ...its own limit for uk respond
    create.p95:+50ms      an absolute limit (ms, s)
    error_rate:+1pt       the error rate may grow by up to 1 percentage point
    close.p99:off         not gated

The most specific threshold of a metric wins (more scope names; the later one on a tie), so
`p95:+10%` with `uk.respond.p95:+25%` gates uk respond at 25 % and every other group at 10 %.

A region × variant × endpoint *regresses* on a metric only when the lower bound of the 95 %
confidence interval of its change (bootstrap for percentiles, Newcombe for error rates, from
`analysis.compare.compare_baseline`) exceeds the limit: the data must show the regression
beyond the limit, so sampling noise never fails a pipeline. The mirror image (upper bound
below −limit) is an `improvement`. With too few samples for an interval — fewer than
`MIN_TAIL` requests beyond the percentile in either run — the metric is `too few` and not
judged. A group with requests in the baseline and none now is `missing` and fails; a group
new in this run is `new` and not judged.

    thresholds = parse_thresholds(["p95:+10%", "error_rate:+1pt"])
    table = compare_baseline(stats, base_stats, thresholds)    # analysis.compare
    checks = gate(table, thresholds, baseline="20240501-…")    # one dict per group × metric

Each check has the keys of an SLO result (`loadtest.slo`: expr, scope, metric, threshold,
unit, observed, passed, detail, observed_text, threshold_text), so the same writers put them
in junit.xml and slo.md; `passed` is None when the metric was not judged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.scope import parse_scope, scope_text, split_names
from analysis.stats import pct_name

#: Thresholds of `--fail-on-regression` when none are given.
DEFAULT_THRESHOLDS = ("p95:+10%", "p99:+15%", "error_rate:+1pt")

#: A percentile is judged only with at least this many samples beyond it in both runs
#: (p99 needs 1,000 successful requests): bootstrap intervals of extreme order statistics
#: are too narrow below that.
MIN_TAIL = 10
MIN_SAMPLE = 20

ERROR_RATE = "error_rate"
UNIT_REL, UNIT_MS, UNIT_PT, UNIT_OFF = "%", "ms", "pt", "off"

GRAMMAR = """\
Regression threshold grammar: [SCOPE.]METRIC:+LIMIT
  SCOPE   zero or more dot-separated names: a region, a variant, an endpoint (as in SLOs)
  METRIC  a percentile p50 p95 p99 p99.9 (any pNN[.N]) or error_rate
  LIMIT   how much worse is tolerated: +10% (relative) or +50ms / +0.2s (absolute) for
          percentiles; +1pt (percentage points) for error_rate; off: not gated
  e.g.    p95:+10% | uk.respond.p99:+20% | create.p95:+50ms | error_rate:+1pt | close.p99:off"""


class ThresholdError(ValueError):
    """A regression threshold that does not follow the grammar. The message says which part."""

    def __init__(self, expr: str, problem: str):
        self.expr, self.problem = expr, problem
        super().__init__(f"regression threshold {expr!r}: {problem}\n{GRAMMAR}")


@dataclass(frozen=True)
class Threshold:
    """One parsed threshold. `limit` is a fraction (unit %: relative; pt: points) or ms."""

    expr: str
    metric: str  # "p95", "p99.9", "error_rate"
    limit: float
    unit: str  # UNIT_REL | UNIT_MS | UNIT_PT | UNIT_OFF
    region: str | None = None
    variant: str | None = None
    endpoint: str | None = None

    @property
    def q(self) -> float | None:
        """The percentile (0..100) of a latency metric, None for error_rate."""
        return None if self.metric == ERROR_RATE else float(self.metric[1:])

    @property
    def specificity(self) -> int:
        return sum(x is not None for x in (self.region, self.variant, self.endpoint))

    def matches(self, region: str, variant: str, endpoint: str) -> bool:
        return all(want is None or want == got for want, got in ((self.region, region), (self.variant, variant), (self.endpoint, endpoint)))

    @property
    def limit_text(self) -> str:
        if self.unit == UNIT_OFF:
            return "off"
        if self.unit == UNIT_REL:
            return f"+{self.limit * 100:g}%"
        if self.unit == UNIT_PT:
            return f"+{self.limit * 100:g} pt"
        return f"+{self.limit:g} ms"


_SPEC_RE = re.compile(r"^(?P<lhs>[^:]+):(?P<limit>[^:]+)$")
_LIMIT_RE = re.compile(r"^\+?(?P<num>(?:\d+(?:\.\d*)?|\.\d+))(?P<unit>%|pt|ms|s)?$")
_PERCENTILE_RE = re.compile(r"^p(\d+(?:\.\d+)?)$")


def parse_threshold(expr: str, variants: Iterable[str] | None = None) -> Threshold:
    """Parse one threshold, raising `ThresholdError` that names the bad part."""
    text = str(expr).strip()
    m = _SPEC_RE.match(text.replace(" ", ""))
    if not m:
        raise ThresholdError(text, "expected METRIC:+LIMIT with one ':' (e.g. p95:+10%)")
    names = split_names(m.group("lhs"))
    if "" in names:
        raise ThresholdError(text, f"empty name in {m.group('lhs')!r} (stray '.')")
    metric = names[-1]
    pm = _PERCENTILE_RE.match(metric)
    if metric != ERROR_RATE and not (pm and 0 < float(pm.group(1)) < 100):
        raise ThresholdError(text, f"unknown metric {metric!r}: use a percentile (p50, p95, p99, p99.9) or error_rate")
    try:
        scope = parse_scope(names[:-1], variants)
    except ValueError as e:
        raise ThresholdError(text, str(e)) from None
    raw = m.group("limit").lower()
    if raw == "off":
        limit, unit = 0.0, UNIT_OFF
    else:
        lm = _LIMIT_RE.match(raw)
        if not lm:
            raise ThresholdError(text, f"limit {m.group('limit')!r} is not a non-negative number with a unit (+10%, +50ms, +1pt) or off")
        num, u = float(lm.group("num")), lm.group("unit")
        if metric == ERROR_RATE:
            if u != "pt":
                raise ThresholdError(text, "error_rate limits are in percentage points: write e.g. +1pt (the error rate may grow from 0.5% to 1.5%)")
            limit, unit = num / 100, UNIT_PT
        elif u == "%":
            limit, unit = num / 100, UNIT_REL
        elif u in ("ms", "s"):
            limit, unit = num * (1000.0 if u == "s" else 1.0), UNIT_MS
        else:
            raise ThresholdError(text, f"a percentile's limit is relative (+10%) or a time (+50ms), not {m.group('limit')!r}")
    return Threshold(text, metric, limit, unit, scope.get("region"), scope.get("variant"), scope.get("endpoint"))


def parse_thresholds(exprs: str | Iterable[str | Threshold] | None, variants: Iterable[str] | None = None) -> list[Threshold]:
    """Many thresholds: a list, or one string separated by ',' ';' or new lines.
    None or an empty list gives DEFAULT_THRESHOLDS."""
    if isinstance(exprs, str):
        exprs = re.split(r"[,;\n]", exprs)
    variants = None if variants is None else list(variants)
    out = [
        e if isinstance(e, Threshold) else parse_threshold(e, variants)
        for e in (exprs or [])
        if isinstance(e, Threshold) or (e.strip() and not e.strip().startswith("#"))
    ]
    return out or [parse_threshold(e) for e in DEFAULT_THRESHOLDS]


def resolve(thresholds: Sequence[Threshold], region: str, variant: str, endpoint: str) -> list[Threshold]:
    """The threshold of each metric that applies to one group (most specific wins; off drops)."""
    best: dict[str, Threshold] = {}
    for t in thresholds:
        if t.matches(region, variant, endpoint) and (t.metric not in best or t.specificity >= best[t.metric].specificity):
            best[t.metric] = t
    return [t for t in best.values() if t.unit != UNIT_OFF]


def gated_percentiles(thresholds: Sequence[Threshold]) -> list[float]:
    """The percentiles some threshold gates (the intervals compare_baseline must compute)."""
    return sorted({t.q for t in thresholds if t.q is not None and t.unit != UNIT_OFF})


# --------------------------------------------------------------------------- verdicts


def fmt_change(v: float, unit: str) -> str:
    """A change in a threshold's unit: '+12.5%', '+3.0 ms', '+0.40 pt'."""
    if math.isnan(v):
        return "–"
    if unit == UNIT_MS:
        return f"{v:+,.1f} ms"
    if unit == UNIT_PT:
        return f"{v * 100:+.2f} pt"
    return f"{v * 100:+.1f}%"


def _fmt_value(v: float, metric: str) -> str:
    if math.isnan(v):
        return "–"
    return f"{v * 100:.2f}%" if metric == ERROR_RATE else f"{v:,.1f} ms"


def judge(row: dict | pd.Series, t: Threshold, baseline: str = "the baseline") -> dict:
    """One group × metric of a compare_baseline row against its threshold: a check."""
    where = scope_text(row["region"], row["variant"] or None, row["endpoint"])
    if t.metric == ERROR_RATE:
        d, lo, hi = row["d_error_rate"], row["d_error_lo"], row["d_error_hi"]
        now, before = row["error_rate"], row["base_error_rate"]
        enough = row["count"] > 0 and row["base_count"] > 0
    else:
        q = float(t.metric[1:])
        name = pct_name(q)
        suffix = "_pct" if t.unit == UNIT_REL else "_ms"
        d = row[f"d_{name}{suffix}"]
        lo, hi = (row[f"d_{name}_pct_lo"], row[f"d_{name}_pct_hi"]) if t.unit == UNIT_REL else (row[f"d_{name}_lo"], row[f"d_{name}_hi"])
        now, before = row[f"{name}_ms"], row[f"base_{name}_ms"]
        need = max(MIN_SAMPLE, math.ceil(MIN_TAIL / (1 - q / 100)))
        enough = min(row["successes"], row["base_successes"]) >= need and not math.isnan(lo)
    check = {
        "kind": "regression",
        "expr": f"{where}.{t.metric} {t.limit_text} vs baseline",
        "scope": where,
        "metric": t.metric,
        "op": "<=",
        "threshold": t.limit,
        "unit": t.unit,
        "spec": t.expr,
        "region": row["region"],
        "variant": row["variant"],
        "endpoint": row["endpoint"],
        "baseline": baseline,
        "observed": None if math.isnan(d) else float(d),
        "lo": float(lo),
        "hi": float(hi),
        "now": float(now),
        "before": float(before),
        "excess": math.nan,
        "observed_text": fmt_change(d, t.unit),
        "threshold_text": f"≤ {t.limit_text}",
    }
    ci = f"95% CI {fmt_change(lo, t.unit)} … {fmt_change(hi, t.unit)}"
    values = f"{_fmt_value(now, t.metric)} now, {_fmt_value(before, t.metric)} in {baseline}"
    if row["base_count"] > 0 and row["count"] == 0:
        state, passed = "missing", False
        detail = f"no requests in this run; {int(row['base_count']):,} in {baseline}"
    elif row["base_count"] == 0:
        state, passed = "new", None
        detail = f"no requests in {baseline}: nothing to compare with"
    elif not enough:
        state, passed = "too few", None
        detail = f"too few successful requests to judge {t.metric} ({int(row['successes']):,} now, {int(row['base_successes']):,} before; {values})"
    else:
        baseline_value = before if t.unit == UNIT_MS else 1.0
        check["excess"] = float((lo - t.limit) / baseline_value) if baseline_value else math.nan
        if lo > t.limit:
            state, passed = "regression", False
            detail = f"{t.metric} {fmt_change(d, t.unit)} ({ci}): worse than {t.limit_text} even at the interval's low end; {values}"
        elif hi < -t.limit:
            state, passed = "improvement", True
            detail = f"{t.metric} {fmt_change(d, t.unit)} ({ci}): better; {values}"
        else:
            state, passed = "ok", True
            beyond = d > t.limit
            detail = (
                f"{t.metric} {fmt_change(d, t.unit)} ({ci})"
                + (f": beyond {t.limit_text} but the interval does not exclude noise" if beyond else "")
                + f"; {values}"
            )
    check.update(state=state, passed=passed, detail=detail)
    return check


def gate(table: pd.DataFrame, thresholds: Sequence[Threshold], baseline: str = "the baseline") -> list[dict]:
    """Every group × gated metric of a compare_baseline table, judged: a list of checks."""
    out = []
    for row in table.to_dict("records"):
        for t in resolve(thresholds, row["region"], row["variant"], row["endpoint"]):
            out.append(judge(row, t, baseline))
    return out


def failures(checks: Sequence[dict]) -> list[dict]:
    """The failed checks, worst first (how far the interval's low end is beyond the limit)."""
    bad = [c for c in checks if c["passed"] is False]
    return sorted(bad, key=lambda c: (c["state"] != "missing", -(c["excess"] if c["excess"] == c["excess"] else 0)))


def exit_code(checks: Sequence[dict]) -> int:
    """0 when no check failed, 1 otherwise."""
    return 1 if any(c["passed"] is False for c in checks) else 0


def offender_text(c: dict) -> str:
    """'uk · respond p95 +25.1% (95% CI +19.0% … +31.2%)': one failed check, for a sentence."""
    where = " · ".join(x for x in (c["region"], c["variant"], c["endpoint"]) if x)
    if c["state"] == "missing":
        return f"{where}: no requests now"
    return (
        f"{where} {c['metric'].replace('_', ' ')} {c['observed_text']} (95% CI {fmt_change(c['lo'], c['unit'])} … "
        f"{fmt_change(c['hi'], c['unit'])}, limit {c['threshold_text'][2:]})"
    )


def _md_cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(checks: Sequence[dict]) -> str:
    """The regression verdict as Markdown (slo.md, $GITHUB_STEP_SUMMARY): a headline, the
    failed metrics worst first, and how many were within their limits or not judged."""
    if not checks:
        return ""
    bad = failures(checks)
    judged = sum(c["passed"] is not None for c in checks)
    skipped = len(checks) - judged
    specs = ", ".join(dict.fromkeys(c["spec"] for c in checks))
    lines = [f"## Regression against `{checks[0]['baseline']}`", ""]
    if bad:
        lines.append(f"❌ {len(bad)} of {judged} gated metrics regressed beyond their limits")
    else:
        lines.append(f"✅ No regression: all {judged} gated metrics within their limits")
    lines += ["", f"Thresholds {specs}; a metric regresses only when the low end of the 95% confidence interval of its change is beyond its limit.", ""]
    if bad:
        lines += ["| | metric | change | 95% CI | limit | detail |", "|---|---|---|---|---|---|"]
        for c in bad:
            ci = "–" if c["state"] == "missing" else f"{fmt_change(c['lo'], c['unit'])} … {fmt_change(c['hi'], c['unit'])}"
            lines.append(
                f"| ❌ | `{_md_cell(c['scope'])}.{c['metric']}` | {_md_cell(c['observed_text'])} | {ci} | "
                f"{_md_cell(c['threshold_text'])} | {_md_cell(c['detail'])} |"
            )
        lines.append("")
    rest = [f"{judged - len(bad)} within their limits"]
    if skipped:
        rest.append(f"{skipped} not judged (too few samples, or new)")
    lines.append("; ".join(rest) + ".")
    return "\n".join(lines) + "\n"
