"""Service-level objectives: pass/fail thresholds over a run, like k6 thresholds.

An SLO is one line, ``[SCOPE.]METRIC OP VALUE[UNIT]``::

    respond.p95 < 800ms            95th percentile of successful respond calls, all regions
    uk.create.p99 < 1.5s           99th percentile of successful creates in uk
    uk.a.respond.p99 <= 2s         ...in uk, variant a
    error_rate < 1%                failed / all requests
    b.error_rate < 0.5%            ...of variant b
    rps > 10                       requests per second over the run
    conversation.duration.p95 < 20s
    uk.conversation.success_rate >= 99%

Use::

    results = evaluate(["respond.p95 < 800ms", "error_rate < 1%"], requests, conversations)
    write_reports(results, run_dir)          # slo.json, junit.xml, slo.md (+ $GITHUB_STEP_SUMMARY)
    sys.exit(exit_code(results))             # 0 all passed, 1 any failed

or in one go from a run folder: ``sys.exit(verdict(run_dir, slos))``.

Live abort (k6's ``abortOnFail`` / ``delayAbortEval``): a trailing ``abort-on-fail`` or
``abort-on-fail=GRACE`` marks an SLO that stops the run as soon as it is breached over the
trailing window (see `loadtest.abort`); ``--abort-on-fail`` marks them all::

    error_rate < 1% abort-on-fail              judged live after --abort-grace (default 30 s)
    respond.p95 < 800ms abort-on-fail=1m       ...after its own grace of one minute

Whole-run totals (``count``, ``conversation.count``, ``conversation.orphaned``) are judged only
at the end.

Semantics: latency metrics (pNN, mean, min, max) are over *successful* requests only;
``error_rate`` is failed / all requests in scope; ``rps`` is all requests in scope divided by
the run's duration; ``count`` is all requests in scope. A scope with no data fails with
observed "no data" rather than passing vacuously. Every percentile comes from
`analysis.percentiles.percentiles`, the project's one percentile function.
"""

from __future__ import annotations

import json
import math
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import pandas as pd

from analysis import records, regression
from analysis.scope import parse_scope, scope_text, split_names
from loadtest.api import ENDPOINTS, REGIONS
from loadtest.config import parse_duration

if TYPE_CHECKING:  # for annotations only: loaded when a run is judged (below)
    from analysis.load import Run
    from analysis.stats import RunStats

SLO_JSON = "slo.json"
JUNIT_XML = "junit.xml"
SLO_MD = "slo.md"
REGRESSION_JSON = "regression.json"
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"

OPS = ("<", "<=", ">", ">=", "==")
CONVERSATION = "conversation"

# Normalised units of thresholds and observed values.
UNIT_MS = "ms"  # request latency
UNIT_S = "s"  # conversation duration
UNIT_FRACTION = "fraction"  # rates, 0..1 (written as % or a plain fraction)
UNIT_RPS = "req/s"
UNIT_COUNT = "count"
UNIT_TURNS = "turns"

_STATS = ("mean", "min", "max")
REQUEST_METRICS = ("p50", "p75", "p90", "p95", "p99", "p99.9", "mean", "min", "max", "error_rate", "rps", "count")
CONVERSATION_METRICS = (
    "duration.p95",
    "duration.mean",
    "duration.min",
    "duration.max",
    "turns.p50",
    "turns.mean",
    "turns.min",
    "turns.max",
    "success_rate",
    "error_rate",
    "orphaned",
    "count",
)

#: Totals over the whole run: meaningless on a trailing window, so never judged live.
WHOLE_RUN_METRICS = ("count", "conversation.count", "conversation.orphaned")
ABORT_SUFFIX = "abort-on-fail"

CONVERSATION_METRICS_TEXT = (
    "conversation.duration.<pNN|mean|min|max>, conversation.turns.<pNN|mean|min|max>, "
    "conversation.success_rate, conversation.error_rate, conversation.orphaned, conversation.count"
)
VALID_METRICS = ", ".join(REQUEST_METRICS) + " (any pNN[.N]); " + CONVERSATION_METRICS_TEXT

GRAMMAR = f"""\
SLO grammar: [SCOPE.]METRIC OP VALUE[UNIT]
  SCOPE   zero or more dot-separated names: a region ({", ".join(REGIONS)}),
          a variant (any other name), an endpoint ({", ".join(ENDPOINTS)});
          or [region.][variant.]conversation for conversation metrics
  METRIC  requests: p50 p75 p90 p95 p99 p99.9 (any pNN[.N]), mean, min, max,
                    error_rate, rps, count
          conversations: conversation.duration.<pNN|mean|min|max>,
                    conversation.turns.<pNN|mean|min|max>, conversation.success_rate,
                    conversation.error_rate, conversation.orphaned, conversation.count
  OP      < <= > >= ==
  VALUE   a number with a unit: ms, s, m for latencies and durations (plain number:
          ms for latencies, s for conversation durations); % or a fraction 0..1 for rates;
          a plain number for rps, count, turns, orphaned
  e.g.    respond.p95 < 800ms | uk.create.p99 < 1.5s | error_rate < 1% | rps > 10
          uk.a.respond.p99 <= 2s | b.error_rate < 0.5% | conversation.duration.p95 < 20s
  then, optionally, abort-on-fail[=GRACE]: stop the run as soon as it is breached
          (after GRACE, default --abort-grace), e.g. error_rate < 1% abort-on-fail=10s"""


class SLOError(ValueError):
    """An SLO expression that does not follow the grammar. The message says which part."""

    def __init__(self, expr: str, problem: str):
        self.expr = expr
        self.problem = problem
        super().__init__(f"SLO {expr!r}: {problem}\n{GRAMMAR}")


@dataclass(frozen=True)
class SLO:
    """One parsed SLO. `threshold` is normalised to `unit` (ms, s, fraction, ...)."""

    expr: str
    metric: str  # "p95", "error_rate", "conversation.duration.p95", ...
    op: str
    threshold: float
    unit: str
    region: str | None = None
    variant: str | None = None
    endpoint: str | None = None
    abort_on_fail: bool = False  # judged live; a breach stops the run
    abort_grace_s: float | None = None  # its own grace (None: --abort-grace)

    @property
    def is_conversation(self) -> bool:
        return self.metric.startswith(CONVERSATION + ".")

    @property
    def scope(self) -> str:
        """The scope as dotted names in region.variant.endpoint order; "all" when none."""
        return scope_text(self.region, self.variant, self.endpoint)

    def compare(self, observed: float) -> bool:
        t = self.threshold
        if self.op == "<":
            return observed < t
        if self.op == "<=":
            return observed <= t or math.isclose(observed, t, rel_tol=1e-9)
        if self.op == ">":
            return observed > t
        if self.op == ">=":
            return observed >= t or math.isclose(observed, t, rel_tol=1e-9)
        return math.isclose(observed, t, rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------- parsing

_EXPR_RE = re.compile(r"^\s*(?P<lhs>[^<>=!]*?)\s*(?P<op>[<>=!]+)\s*(?P<value>.*?)\s*$")
_NUMBER_RE = re.compile(r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>ms|s|m|%)?$")
_PERCENTILE_RE = re.compile(r"^p(\d+(?:\.\d+)?)$")
_ABORT_RE = re.compile(r"\s+" + ABORT_SUFFIX + r"(?:=(?P<grace>\S*))?\s*$")
_TIME_FACTOR_MS = {"ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _is_percentile(name: str) -> bool:
    m = _PERCENTILE_RE.match(name)
    return m is not None and 0.0 <= float(m.group(1)) <= 100.0


def _metric_kind(metric: str) -> str:
    """The unit a metric is measured in (before a threshold is given)."""
    if metric.startswith(CONVERSATION + "."):
        rest = metric[len(CONVERSATION) + 1 :]
        if rest.startswith("duration."):
            return UNIT_S
        if rest.startswith("turns."):
            return UNIT_TURNS
        return {"success_rate": UNIT_FRACTION, "error_rate": UNIT_FRACTION, "orphaned": UNIT_COUNT, "count": UNIT_COUNT}[rest]
    if metric == "error_rate":
        return UNIT_FRACTION
    if metric == "rps":
        return UNIT_RPS
    if metric == "count":
        return UNIT_COUNT
    return UNIT_MS


def _valid_conversation_metric(rest: str) -> bool:
    if rest in ("success_rate", "error_rate", "orphaned", "count"):
        return True
    base, _, stat = rest.partition(".")
    return base in ("duration", "turns") and (stat in _STATS or _is_percentile(stat))


def _parse_value(expr: str, metric: str, raw: str) -> tuple[float, str]:
    m = _NUMBER_RE.match(raw)
    if not m:
        shown = raw if raw else "(nothing)"
        raise SLOError(expr, f"value {shown!r} is not a number with a unit (ms, s, %)")
    num, unit = float(m.group("num")), m.group("unit")
    kind = _metric_kind(metric)
    if kind in (UNIT_MS, UNIT_S):
        if unit == "%":
            raise SLOError(expr, f"{metric} is a {'latency' if kind == UNIT_MS else 'duration'}: give a time (ms, s, m), not a percentage")
        ms = num * _TIME_FACTOR_MS[unit] if unit else (num if kind == UNIT_MS else num * 1000.0)
        return (ms if kind == UNIT_MS else ms / 1000.0), kind
    if kind == UNIT_FRACTION:
        if unit in _TIME_FACTOR_MS:
            raise SLOError(expr, f"{metric} is a rate: give a percentage (1%) or a fraction (0.01), not a time in {unit!r}")
        if unit == "%":
            value = num / 100.0
        elif 0.0 <= num <= 1.0:
            value = num
        else:
            raise SLOError(expr, f"{metric} is a rate: {raw!r} is not a fraction 0..1; did you mean {raw}%?")
        return value, kind
    if unit:
        raise SLOError(expr, f"{metric} is a plain number ({kind}): drop the unit {unit!r}")
    return num, kind


def parse_slo(expr: str, variants: Iterable[str] | None = None) -> SLO:
    """Parse one SLO expression, raising `SLOError` that names the bad part.

    `variants`, when given, is the run's variant list: a scope name that is not a region, an
    endpoint or one of these is an error. When None, any other name is taken as a variant.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise SLOError(str(expr), "empty expression")
    text = expr.strip()
    abort, grace = _ABORT_RE.search(text), None
    if abort:
        text = text[: abort.start()].strip()
        if abort.group("grace") is not None:
            try:
                grace = parse_duration(abort.group("grace"))
            except ValueError as e:
                raise SLOError(expr.strip(), f"{ABORT_SUFFIX}={abort.group('grace')}: {e}") from None
    m = _EXPR_RE.match(text)
    if not m:
        raise SLOError(text, "no comparison operator (one of < <= > >= ==)")
    lhs, op, raw_value = m.group("lhs"), m.group("op"), m.group("value")
    if op not in OPS:
        hint = " (use == for equality)" if op == "=" else ""
        raise SLOError(text, f"operator {op!r} is not one of < <= > >= =={hint}")
    if not lhs:
        raise SLOError(text, "no metric before the operator")
    if any(c in raw_value for c in "<>="):
        raise SLOError(text, "more than one comparison operator")

    tokens = split_names(lhs)
    if "" in tokens:
        raise SLOError(text, f"empty name in {lhs!r} (stray '.')")

    if CONVERSATION in tokens:
        i = tokens.index(CONVERSATION)
        scope_tokens, rest = tokens[:i], ".".join(tokens[i + 1 :])
        if not _valid_conversation_metric(rest):
            shown = f"{CONVERSATION}.{rest}" if rest else CONVERSATION
            raise SLOError(text, f"unknown conversation metric {shown!r}; valid: {CONVERSATION_METRICS_TEXT}")
        metric = f"{CONVERSATION}.{rest}"
    else:
        scope_tokens, metric = tokens[:-1], tokens[-1]
        if not (metric in REQUEST_METRICS or _is_percentile(metric)):
            if metric in REGIONS or metric in ENDPOINTS:
                problem = f"{metric!r} is a scope, not a metric; add one, e.g. {lhs}.p95"
            elif metric in ("duration", "turns", "success_rate", "orphaned"):
                problem = f"{metric!r} is a conversation metric: write {CONVERSATION}.{metric}..."
            else:
                problem = f"unknown metric {metric!r}"
            raise SLOError(text, f"{problem}; valid metrics: {VALID_METRICS}")

    try:
        scope = parse_scope(scope_tokens, variants)
    except ValueError as e:
        raise SLOError(text, str(e)) from None
    if metric.startswith(CONVERSATION + ".") and "endpoint" in scope:
        raise SLOError(text, f"endpoint {scope['endpoint']!r} cannot scope a conversation metric; scope conversations by region and variant")

    threshold, unit = _parse_value(text, metric, raw_value)
    if abort and metric in WHOLE_RUN_METRICS:
        raise SLOError(expr.strip(), f"{metric} is a whole-run total, judged only at the end: drop {ABORT_SUFFIX}")
    return SLO(
        expr=text,
        metric=metric,
        op=op,
        threshold=threshold,
        unit=unit,
        region=scope.get("region"),
        variant=scope.get("variant"),
        endpoint=scope.get("endpoint"),
        abort_on_fail=bool(abort),
        abort_grace_s=grace,
    )


def parse_slos(exprs: str | Iterable[str | SLO], variants: Iterable[str] | None = None) -> list[SLO]:
    """Parse many SLOs: a list, or one string with one SLO per line or separated by ';'."""
    if isinstance(exprs, str):
        exprs = [e for e in re.split(r"[;\n]", exprs)]
    variants = None if variants is None else list(variants)
    out = []
    for e in exprs:
        if isinstance(e, SLO):
            out.append(e)
        elif e.strip() and not e.strip().startswith("#"):
            out.append(parse_slo(e, variants))
    return out


# --------------------------------------------------------------------------- evaluation


def _fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "no data"
    if unit == UNIT_FRACTION:
        return f"{value * 100:.4g}%"
    if unit in (UNIT_MS, UNIT_S):
        return f"{value:.4g} {unit}" if abs(value) < 1e4 else f"{value:.0f} {unit}"
    if unit == UNIT_COUNT:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.4g}"
    if unit == UNIT_RPS:
        return f"{value:.4g} req/s"
    return f"{value:.4g}"


def _ok_mask(df: pd.DataFrame) -> pd.Series:
    ok = df["ok"]
    if pd.api.types.is_bool_dtype(ok) or pd.api.types.is_numeric_dtype(ok):
        return ok.fillna(0).astype(float) > 0
    return ok.astype(str).str.strip().str.lower().isin(("1", "true", "1.0"))


def _equals(col: pd.Series, want: str) -> np.ndarray:
    """col == want without materialising strings for categorical/string columns (10M rows)."""
    if isinstance(col.dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(col) or col.dtype == object:
        return (col == want).fillna(False).to_numpy(dtype=bool)
    return (col.astype(str) == want).to_numpy(dtype=bool)


def _ids(col: pd.Series) -> set[str]:
    return {str(x) for x in col.unique() if isinstance(x, str) and x and x != "nan"}


def _filter(df: pd.DataFrame | None, slo: SLO, with_endpoint: bool = True) -> pd.DataFrame | None:
    if df is None or len(df) == 0:
        return df
    mask = np.ones(len(df), dtype=bool)
    for col, want in (("region", slo.region), ("variant", slo.variant), ("endpoint", slo.endpoint if with_endpoint else None)):
        if want is not None:
            if col not in df.columns:
                return df.iloc[0:0]
            mask &= _equals(df[col], want)
    return df[mask]


def _run_window(requests: pd.DataFrame | None) -> float | None:
    if requests is None or len(requests) == 0:
        return None
    ts = requests["timestamp"].astype(float)
    end = ts + requests["response_time_ms"].astype(float).fillna(0) / 1000.0
    span = float(end.max() - ts.min())
    return span if span > 0 else None


def _stat(values: np.ndarray, stat: str) -> float:
    from analysis.percentiles import percentiles  # the project's one percentile function

    if stat == "mean":
        return float(np.mean(values))
    if stat == "min":
        return float(np.min(values))
    if stat == "max":
        return float(np.max(values))
    return float(percentiles(values, [float(stat[1:])])[0])


def _count_metric(slo: SLO, n: int, n_ok: int, where: str, duration_s: float | None) -> tuple[float | None, str] | None:
    """count, error_rate and rps of n requests (n_ok successful), or None for other metrics."""
    if slo.metric == "count":
        return float(n), f"{n} requests {where}"
    if slo.metric == "error_rate":
        return (n - n_ok) / n, f"{n - n_ok} failed of {n} requests {where}"
    if slo.metric == "rps":
        if not duration_s:
            return None, "no data: run duration unknown"
        return n / duration_s, f"{n} requests {where} over {duration_s:.4g} s"
    return None


def _observe_requests(slo: SLO, requests: pd.DataFrame | None, duration_s: float | None) -> tuple[float | None, str]:
    """(observed, detail) of a request metric; observed None means no data."""
    df = _filter(requests, slo)
    where = f"in scope {slo.scope}" if slo.region or slo.variant or slo.endpoint else "overall"
    if df is None or len(df) == 0:
        return None, f"no data: no requests {where}"
    n = len(df)
    ok = _ok_mask(df).to_numpy()
    n_ok = int(ok.sum())
    counted = _count_metric(slo, n, n_ok, where, duration_s)
    if counted is not None:
        return counted
    values = df["response_time_ms"].to_numpy(dtype=float)[ok]
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None, f"no data: no successful requests {where} ({n - n_ok} failed)"
    return _stat(values, slo.metric), f"over {values.size} successful requests {where}"


def _observe_conversations(slo: SLO, conversations: pd.DataFrame | None, requests: pd.DataFrame | None) -> tuple[float | None, str]:
    rest = slo.metric[len(CONVERSATION) + 1 :]
    where = f"in scope {slo.scope}" if slo.region or slo.variant or slo.endpoint else "overall"
    if rest == "orphaned":
        df = _filter(requests, slo, with_endpoint=False)
        if df is None or len(df) == 0 or "conversation_id" not in df.columns:
            return None, f"no data: no requests {where}"
        ok = _ok_mask(df).to_numpy()
        is_create = _equals(df["endpoint"], "create")
        if not is_create.any():
            return None, f"no data: no create requests {where}"
        created = _ids(df["conversation_id"][is_create & ok])
        closed = _ids(df["conversation_id"][_equals(df["endpoint"], "close") & ok])
        orphaned = len(created - closed)
        return float(orphaned), (f"{orphaned} of {len(created)} created conversations never closed successfully {where}")
    df = _filter(conversations, slo, with_endpoint=False)
    if df is None or len(df) == 0:
        return None, f"no data: no conversations {where}"
    n = len(df)
    if rest == "count":
        return float(n), f"{n} conversations {where}"
    if rest in ("success_rate", "error_rate"):  # over finished conversations (records.UNFINISHED)
        finished = ~_equals(df["ended_by"], records.UNFINISHED)
        n_fin, n_ok = int(finished.sum()), int((_ok_mask(df).to_numpy() & finished).sum())
        cut = f" ({n - n_fin} cut by the end of the test left out)" if n > n_fin else ""
        if not n_fin:
            return None, f"no data: no finished conversations {where}{cut}"
        if rest == "success_rate":
            return n_ok / n_fin, f"{n_ok} of {n_fin} finished conversations succeeded {where}{cut}"
        return (n_fin - n_ok) / n_fin, f"{n_fin - n_ok} of {n_fin} finished conversations failed {where}{cut}"
    base, _, stat = rest.partition(".")
    col = "duration_s" if base == "duration" else "turns"
    values = df[col].to_numpy(dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None, f"no data: no conversation {base} values {where}"
    return _stat(values, stat), f"over {values.size} conversations {where}"


def _apply_warmup(
    requests: pd.DataFrame | None, conversations: pd.DataFrame | None, warmup_s: float, start: float | None
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    if not warmup_s:
        return requests, conversations
    if start is None and requests is not None and len(requests):
        start = float(requests["timestamp"].astype(float).min())
    if start is None:
        return requests, conversations
    cutoff = start + warmup_s
    if requests is not None and len(requests):
        requests = requests[requests["timestamp"].astype(float) >= cutoff]
    if conversations is not None and len(conversations) and "started" in conversations.columns:
        started = conversations["started"]
        if not pd.api.types.is_numeric_dtype(started):
            parsed = pd.to_numeric(started, errors="coerce")
            if parsed.isna().all():
                parsed = pd.to_datetime(started, errors="coerce", utc=True).map(lambda t: t.timestamp() if t is not None and not pd.isna(t) else np.nan)
            started = parsed
        conversations = conversations[started.astype(float).to_numpy() >= cutoff]
    return requests, conversations


def _stats_scope(stats: RunStats, slo: SLO, with_endpoint: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of the stats' detail table (region × variant × endpoint) in the SLO's scope."""
    detail = stats.level("region·variant·endpoint")
    mask = np.ones(len(detail), dtype=bool)
    for col, want in (("region", slo.region), ("variant", slo.variant), ("endpoint", slo.endpoint if with_endpoint else None)):
        if want is not None:
            mask &= (detail[col] == want).to_numpy()
    return detail, np.flatnonzero(mask)


def _observe_stats(slo: SLO, stats: RunStats, duration_s: float | None) -> tuple[float | None, str]:
    """`_observe_requests` from computed statistics (`analysis.stats.RunStats`): counts from
    the detail table, exact percentiles of the union of the scope's groups by rank, so a
    run of any size is judged without its rows in memory."""
    where = f"in scope {slo.scope}" if slo.region or slo.variant or slo.endpoint else "overall"
    detail, rows = _stats_scope(stats, slo)
    n = int(detail["count"].to_numpy()[rows].sum())
    if n == 0:
        return None, f"no data: no requests {where}"
    n_ok = int(detail["ok_count"].to_numpy()[rows].sum())
    counted = _count_metric(slo, n, n_ok, where, duration_s)
    if counted is not None:
        return counted
    if n_ok == 0:
        return None, f"no data: no successful requests {where} ({n - n_ok} failed)"
    q = [float(slo.metric[1:])] if slo.metric not in _STATS else [50.0]
    assert stats.samples is not None, "compute_stats keeps the sorted latencies"
    d = stats.samples.describe([rows], q)
    value = float(d[slo.metric][0]) if slo.metric in _STATS else float(d["pct"][0][0])
    return value, f"over {n_ok} successful requests {where}"


def _orphans_from_stats(slo: SLO, stats: RunStats) -> tuple[float | None, str]:
    where = f"in scope {slo.scope}" if slo.region or slo.variant else "overall"
    level = {(True, True): "region·variant", (True, False): "region", (False, True): "variant", (False, False): "overall"}[
        (slo.region is not None, slo.variant is not None)
    ]
    conv = stats.conversations
    sel = conv[
        (conv["level"] == level) & ((conv["region"] == slo.region) if slo.region else True) & ((conv["variant"] == slo.variant) if slo.variant else True)
    ]
    created = int(sel["created"].sum()) if len(sel) else 0
    if not created:
        return None, f"no data: no create requests {where}"
    orphaned = int(sel["orphans"].sum())
    return float(orphaned), f"{orphaned} of {created} created conversations never closed successfully {where}"


def evaluate(
    slos: str | Iterable[str | SLO],
    requests: pd.DataFrame | None,
    conversations: pd.DataFrame | None = None,
    *,
    warmup_s: float = 0.0,
    duration_s: float | None = None,
    start: float | None = None,
    variants: Iterable[str] | None = None,
    stats: RunStats | None = None,
) -> list[dict]:
    """Evaluate SLOs against a run's DataFrames.

    requests: columns of `records.REQUEST_COLUMNS`; conversations: `records.CONVERSATION_COLUMNS`
    (may be None). warmup_s drops requests (and conversations) that started in the first
    warmup_s seconds after `start` (default: the first request's timestamp). duration_s is the
    denominator of rps (default: first request start to last request end, after warmup).
    variants: the run's variant list, to reject unknown scope names while parsing.
    stats: the run's `analysis.stats.RunStats`; when given, request metrics and orphans come
    from it (exact, bounded memory) and `requests` may be None.

    Returns one dict per SLO: {expr, scope, metric, op, threshold, unit, observed, passed,
    detail, observed_text, threshold_text}. observed is None when the scope has no data
    (then passed is False and detail starts with "no data").
    """
    parsed = parse_slos(slos, variants)
    requests, conversations = _apply_warmup(requests, conversations, warmup_s, start)
    if duration_s is None and stats is None:
        duration_s = _run_window(requests)
    results = []
    for slo in parsed:
        if stats is not None and slo.metric == f"{CONVERSATION}.orphaned":
            observed, detail = _orphans_from_stats(slo, stats)
        elif slo.is_conversation:
            observed, detail = _observe_conversations(slo, conversations, requests)
        elif stats is not None:
            observed, detail = _observe_stats(slo, stats, duration_s)
        else:
            observed, detail = _observe_requests(slo, requests, duration_s)
        passed = observed is not None and not math.isnan(observed) and slo.compare(observed)
        if observed is not None and math.isnan(observed):
            observed = None
        results.append(
            {
                "expr": slo.expr,
                "scope": slo.scope,
                "metric": slo.metric,
                "op": slo.op,
                "threshold": slo.threshold,
                "unit": slo.unit,
                "observed": observed,
                "passed": bool(passed),
                "detail": detail,
                "observed_text": _fmt(observed, slo.unit),
                "threshold_text": f"{slo.op} {_fmt(slo.threshold, slo.unit)}",
            }
        )
    return results


def evaluate_run(run_dir: str | Path, slos: str | Iterable[str | SLO], warmup_s: float = 0.0, check_variants: bool = True) -> list[dict]:
    """Load a run folder with `analysis.load.load_run` and evaluate `slos` against it.

    The warm-up is cut by the loader (from run.json's start); rps uses the run's measured
    window. With check_variants, a scope name that is not a region, an endpoint or one of the
    run's variants (declared in run.json or seen in the data) raises SLOError.
    """
    from analysis.load import load_run  # pandas: only when a run is judged

    return evaluate_loaded(load_run(run_dir, warmup_s=warmup_s), slos, check_variants)


def evaluate_loaded(run: Run, slos: str | Iterable[str | SLO], check_variants: bool = True, stats: RunStats | None = None) -> list[dict]:
    """`evaluate_run` on a run already loaded by `analysis.load.load_run` (warm-up cut),
    judged on its statistics (`stats`, computed here when not given): the rows are never
    all in memory, whatever the run's size."""
    from analysis.stats import compute_stats  # pandas: only when a run is judged

    variants = [v for v in run.variants() if v] if check_variants else None
    parse_slos(slos, variants)  # a bad SLO fails before any statistics are computed
    return evaluate(
        slos, None, run.conversations, duration_s=run.duration_s or None, variants=variants, stats=stats if stats is not None else compute_stats(run)
    )


# --------------------------------------------------------------------------- writers


def exit_code(results: Sequence[dict], regressions: Sequence[dict] = ()) -> int:
    """0 when every SLO passed and no gated metric regressed, 1 otherwise."""
    return 0 if all(r["passed"] for r in results) and all(c["passed"] is not False for c in regressions) else 1


def _failure_message(r: dict) -> str:
    return (
        f"{r['expr']}: observed {r.get('observed_text') or _fmt(r['observed'], r['unit'])}, "
        f"threshold {r.get('threshold_text') or r['op'] + ' ' + _fmt(r['threshold'], r['unit'])}"
    )


def write_json(results: Sequence[dict], run_dir: str | os.PathLike) -> Path:
    """slo.json in the run folder: the results list, read by the HTML report."""
    path = Path(run_dir) / SLO_JSON
    path.write_text(json.dumps(list(results), indent=2) + "\n", encoding="utf-8")
    return path


def _regression_suite(root: ET.Element, checks: Sequence[dict]) -> None:
    """testsuite "regression": one testcase per gated metric of a region × variant × endpoint
    (classname regression.<scope>), failed when it regressed, skipped when not judged."""
    failed = sum(c["passed"] is False for c in checks)
    skipped = sum(c["passed"] is None for c in checks)
    suite = ET.SubElement(root, "testsuite", name="regression", tests=str(len(checks)), failures=str(failed), errors="0", skipped=str(skipped), time="0")
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"regression.{c['scope']}", name=c["expr"], time="0")
        if c["passed"] is False:
            fail = ET.SubElement(case, "failure", type="Regression", message=f"{c['expr']}: {c['state']} against {c['baseline']}")
            fail.text = c["detail"]
        elif c["passed"] is None:
            ET.SubElement(case, "skipped", message=c["detail"])
        else:
            ET.SubElement(case, "system-out").text = f"{c['state']}: {c['detail']}"


def junit_xml(results: Sequence[dict], regressions: Sequence[dict] = ()) -> str:
    """A JUnit XML document: testsuite "slo", one testcase per SLO, and with a baseline the
    testsuite "regression", one testcase per gated metric (`analysis.regression.gate`)."""
    failures = sum(not r["passed"] for r in results) + sum(c["passed"] is False for c in regressions)
    root = ET.Element("testsuites", name="slo", tests=str(len(results) + len(regressions)), failures=str(failures), errors="0")
    if results or not regressions:
        slo_failures = sum(not r["passed"] for r in results)
        suite = ET.SubElement(root, "testsuite", name="slo", tests=str(len(results)), failures=str(slo_failures), errors="0", skipped="0", time="0")
        for r in results:
            case = ET.SubElement(suite, "testcase", classname="slo", name=r["expr"], time="0")
            if not r["passed"]:
                fail = ET.SubElement(case, "failure", type="SLOFailed", message=_failure_message(r))
                fail.text = r.get("detail", "")
            else:
                out = ET.SubElement(case, "system-out")
                out.text = f"observed {r.get('observed_text')}; {r.get('detail', '')}"
    if regressions:
        _regression_suite(root, regressions)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(results: Sequence[dict], path: str | os.PathLike, regressions: Sequence[dict] = ()) -> Path:
    """Write junit.xml to `path` (a file, or a folder to hold junit.xml)."""
    path = Path(path)
    if path.is_dir():
        path = path / JUNIT_XML
    path.write_text(junit_xml(results, regressions), encoding="utf-8")
    return path


def _md_cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results: Sequence[dict], regressions: Sequence[dict] = ()) -> str:
    """The verdict as Markdown: a headline and a table with ✅/❌ per SLO, then the regression
    verdict when there was a baseline."""
    failed = sum(not r["passed"] for r in results)
    if not results:
        head = "No SLOs were defined."
    elif failed:
        head = f"❌ {failed} of {len(results)} SLOs failed"
    else:
        head = f"✅ All {len(results)} SLOs passed"
    lines = ["## SLO verdict", "", head, ""] if results or not regressions else []
    if results:
        lines += ["| | SLO | observed | threshold | detail |", "|---|---|---|---|---|"]
        for r in results:
            lines.append(
                "| {} | `{}` | {} | {} | {} |".format(
                    "✅" if r["passed"] else "❌",
                    _md_cell(r["expr"]).replace("`", "'"),
                    _md_cell(r.get("observed_text") or _fmt(r["observed"], r["unit"])),
                    _md_cell(r.get("threshold_text") or f"{r['op']} {_fmt(r['threshold'], r['unit'])}"),
                    _md_cell(r.get("detail", "")),
                )
            )
    text = "\n".join(lines) + "\n" if lines else ""
    if regressions:
        text += ("\n" if text else "") + regression.markdown(regressions)
    return text


def write_markdown(results: Sequence[dict], run_dir: str | os.PathLike, regressions: Sequence[dict] = ()) -> Path:
    """slo.md in the run folder; also appended to $GITHUB_STEP_SUMMARY when that is set."""
    text = markdown(results, regressions)
    path = Path(run_dir) / SLO_MD
    path.write_text(text, encoding="utf-8")
    append_step_summary(text)
    return path


def append_step_summary(text: str) -> None:
    """Append Markdown to GitHub's job summary ($GITHUB_STEP_SUMMARY) when it is set."""
    summary = os.environ.get(STEP_SUMMARY_ENV)
    if summary:
        with open(summary, "a", encoding="utf-8") as f:
            f.write(text + "\n")


def write_reports(results: Sequence[dict], run_dir: str | os.PathLike, regressions: Sequence[dict] = ()) -> dict[str, Path]:
    """slo.json, junit.xml and slo.md into the run folder (+ $GITHUB_STEP_SUMMARY); with a
    baseline's regression checks also regression.json, and both verdicts in junit.xml/slo.md."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": write_json(results, run_dir),
        "junit": write_junit(results, run_dir / JUNIT_XML, regressions),
        "markdown": write_markdown(results, run_dir, regressions),
    }
    if regressions:
        paths["regression"] = run_dir / REGRESSION_JSON
        paths["regression"].write_text(json.dumps(list(regressions), indent=2, default=str) + "\n", encoding="utf-8")
    return paths


def verdict(run_dir: str | Path, slos: str | Iterable[str | SLO], warmup_s: float = 0.0, check_variants: bool = True) -> int:
    """Evaluate a run folder, write the reports into it, and return the exit code."""
    results = evaluate_run(run_dir, slos, warmup_s=warmup_s, check_variants=check_variants)
    write_reports(results, run_dir)
    return exit_code(results)
