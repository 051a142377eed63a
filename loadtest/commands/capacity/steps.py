"""One step of a capacity search judged from its window of rows: latency, rates, errors and
the SLO verdict of the requests that completed in it (`measure_step`), whether an open-model
step delivered its rate (`judge_delivery`); and a region's result (`RegionResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from analysis.percentiles import percentiles
from loadtest import slo
from loadtest.commands.capacity.plan import LATENCY_ENDPOINT, Knee

# --------------------------------------------------------------------------- one step


def measure_step(
    requests: pd.DataFrame | None,
    conversations: pd.DataFrame | None,
    t0: float,
    t1: float,
    slos: Sequence,
    latencies: list[float] | None = None,
    arrivals: pd.DataFrame | None = None,
    delivery: tuple[float, float] | None = None,
) -> dict:
    """Metrics and SLO results of the requests that *completed* in [t0, t1).

    `latencies`, when a list, receives the successful respond latencies (ms) of the window.
    `delivery` (max dropped share, max p95 schedule lag in s), open model: the conversations
    *planned* in the window (`arrivals`) are judged too — did the step offer its rate?

    `slos` may be empty (the first step under the default SLOs, where the latency threshold is
    set from it: then only the error SLO is given). Percentiles come from
    `analysis.percentiles.percentiles`, the project's one percentile function.
    """
    window = t1 - t0
    if requests is None or not len(requests):
        req = None
        n = 0
    else:
        ts = requests["timestamp"].to_numpy(dtype=float)
        end = ts + requests["response_time_ms"].to_numpy(dtype=float) / 1000.0
        req = requests[(end >= t0) & (end < t1)]
        n = len(req)
    conv = None
    if conversations is not None and len(conversations):
        ended = conversations["ended"].to_numpy(dtype=float)
        conv = conversations[(ended >= t0) & (ended < t1)]
    row: dict[str, Any] = {"window_start": t0, "window_end": t1, "window_s": window, "requests": n}
    if req is not None and n:
        ok = req["ok"].to_numpy() > 0
        endpoint = req["endpoint"].astype(str).to_numpy()
        lat = req["response_time_ms"].to_numpy(dtype=float)[ok & (endpoint == LATENCY_ENDPOINT)]
        p50, p95, p99 = (float(x) for x in percentiles(lat, [50, 95, 99]))
        if latencies is not None:
            latencies.extend(lat.tolist())
        row.update(
            conversations_per_s=int((ok & (endpoint == "create")).sum()) / window,
            rps=n / window,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            error_rate=float((~ok).sum()) / n,
            responds=int(lat.size),
        )
    else:
        row.update(conversations_per_s=0.0, rps=0.0, p50_ms=math.nan, p95_ms=math.nan, p99_ms=math.nan, error_rate=math.nan, responds=0)
    results = slo.evaluate(list(slos), req, conv, duration_s=window) if slos else []
    row["slo"] = results
    row["passed"] = bool(n) and all(r["passed"] for r in results)
    row["failed_slos"] = [f"{r['expr']} (observed {r['observed_text']})" for r in results if not r["passed"]]
    if not n:
        row["failed_slos"].insert(0, "no requests completed in the window")
    if delivery is not None:
        row.update(judge_delivery(arrivals, t0, t1, *delivery))
        if row["delivery_failures"]:
            row["passed"] = False
            row["failed_slos"] += row["delivery_failures"]
    for key in ("p50_ms", "p95_ms", "p99_ms", "error_rate"):
        if isinstance(row[key], float) and np.isnan(row[key]):
            row[key] = None
    return row


def judge_delivery(arrivals: pd.DataFrame | None, t0: float, t1: float, max_dropped: float, max_lag_s: float) -> dict:
    """Offered rate, dropped share and p95 schedule lag of the conversations planned in [t0, t1)."""
    out: dict[str, Any] = {"offered_per_s": 0.0, "dropped_share": None, "lag_p95_ms": None, "delivery_failures": []}
    if arrivals is None or not len(arrivals):
        out["delivery_failures"].append("no conversations planned in the window (arrivals.csv)")
        return out
    planned = arrivals["planned"].to_numpy(dtype=float)
    win = arrivals[(planned >= t0) & (planned < t1)]
    if not len(win):
        out["delivery_failures"].append("no conversations planned in the window (arrivals.csv)")
        return out
    dropped = win["dropped"].to_numpy() > 0
    lag = win["lag_ms"].to_numpy(dtype=float)[~dropped]
    lag = lag[~np.isnan(lag)]
    out["offered_per_s"] = len(win) / (t1 - t0)
    out["dropped_share"] = float(dropped.mean())
    if lag.size:
        out["lag_p95_ms"] = float(percentiles(lag, [95])[0])
    if out["dropped_share"] > max_dropped:
        out["delivery_failures"].append(
            f"dropped {100 * out['dropped_share']:.1f}% of planned conversations (max {100 * max_dropped:g}%: no free user; raise --users)"
        )
    if out["lag_p95_ms"] is not None and out["lag_p95_ms"] > max_lag_s * 1000:
        out["delivery_failures"].append(f"schedule lag p95 {out['lag_p95_ms']:.0f} ms (max {max_lag_s * 1000:g} ms: the load generator is late)")
    return out


@dataclass
class RegionResult:
    region: str
    run_dir: Path
    status: str = "failed"
    steps: list | None = None
    knee: Knee | None = None
    slos: list | None = None
    baseline_p95_ms: float | None = None
    baseline_responds: int = 0
    baseline_steps: int = 0
    baseline_note: str = ""
    mock: dict | None = None
    locust_rc: int | None = None
    stopped_early: bool = False
    cpu_warning: bool = False
    message: str = ""

    @property
    def knee_step(self) -> dict | None:
        return self.step(self.knee.knee) if self.knee and self.knee.knee is not None else None

    @property
    def fail_step(self) -> dict | None:
        return self.step(self.knee.first_fail) if self.knee and self.knee.first_fail is not None else None

    def step(self, i: int) -> dict:
        """Step `i` of the search, as a knee's indices name it (a knee is found over the steps)."""
        assert self.steps is not None, "a knee is found only once the steps are measured"
        return self.steps[i]
