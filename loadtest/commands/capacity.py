"""`loadtest capacity`: per region, the highest load that stays within SLO (the knee).

    loadtest capacity --regions us,uk --start 8 --step 8 --max 128 --hold 15s

For each region in turn, one Locust run climbs a staircase of concurrent conversations
(users) with the `steps:` load shape: `start`, `start + step`, … up to `max`, each level held
for `hold`. Step boundaries are taken from Locust's own log of each shape change (the shape
ticks once a second, so a step starts up to a second after its nominal time). The first
`settle` part of every step (default 30 %, at least 0.5 s) is ramp-up and is ignored; the
rest is the step's stable window. As soon as a step ends, its window is read from the growing
requests.csv and judged with `loadtest.slo.evaluate`; after `confirm` failing steps in a row
(default 2) that region's Locust is stopped gracefully (SIGINT, see `stop_locust`), so the
search costs one step past the first failure and no more. One mock serves all regions
(started once). Ctrl-C stops the current region gracefully and still writes the outputs.

**By arrival rate** (`--arrival-rate-start/--arrival-rate-step/--arrival-rate-max`, the
open model): the staircase is of conversations/s per region instead of users. Arrivals are
planned whatever the response times (no coordinated omission), from a pool of users large
enough for the highest rate (`--users` to choose it); the step boundaries are the level
changes logged by `loadtest.inlocust.arrivals` (exact epochs). Each step is also judged on delivering
its rate: the share of planned conversations dropped for want of a free user
(`--max-dropped`, default 1 %) and the p95 schedule lag (`--max-lag`, default 1 s), from
arrivals.csv; a step that cannot start its conversations on time did not offer its rate.

The knee of a region is the highest level that passed before that confirmed failure,
reported in users and in conversations per second (successful creates/s measured in that
step's window). Why two failures: a single step's p95 over a few seconds of data can be
knocked over by one GC pause or a noisy neighbour on the load generator; a real capacity
limit fails the next, higher step too. An isolated failure is listed, not taken as the knee.
When the run ends at `max` the trailing failure counts without confirmation.

SLOs: the `--slo` expressions (scoped to other regions are skipped for a region), or by
default, per region:

    error_rate < 1%
    respond.p95 < max(2 × B, B + 50 ms)      B = respond p95 of the region at light load

B is the p95 of the successful respond calls of the first step, pooled with the next steps
(up to 3, while they pass the error SLO and their p95 is within 2 × that of the pool so far:
a step already queueing is not light load) until there are 100 of them: a p95 of a dozen
values would make a noisy threshold. Steps pooled into B are judged live on errors only, and on
everything in the final table.

"Latency doubled since light load" marks the onset of queueing on any service without
knowing its absolute latency; the +50 ms floor keeps millisecond-fast targets from failing
on the load generator's own jitter. This needs the first steps to be a light load (keep
`--start` small).

Windows are defined by request *completion* time (start + latency), so a window is complete
about a second (the recorder's flush) after it ends; the final table is recomputed from the
complete run folders after Locust exits. Latency columns (p50/p95/p99) are of successful
respond calls, the customer-facing turn.

Output, in one capacity folder `<out>/<id>/` (`<out>/latest` points to it): a normal run
folder per region (`<id>/<region>/`, reportable with `loadtest report`), `capacity.csv`
(one row per measured step), `capacity.json` (plan, SLOs, steps, knees), `capacity.md`,
`capacity.png` and a self-contained `capacity.html`.

Exit codes: 0 every region has a knee (or passed up to --max: the knee is at least max),
1 some region failed its SLOs already at --start, 2 usage error, 3 a run failed.
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import math
import re
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from loadtest import children, config, processes, runfolder, slo
from loadtest.commands import run as runner
from loadtest.commands.arguments import add_scenario_arguments, scenario_from_args
from loadtest.exitcodes import EXIT_OK, EXIT_RUN_FAILED, EXIT_SLO_FAILED, EXIT_USAGE
from loadtest.runtail import RunTail


DEFAULT_START, DEFAULT_STEP, DEFAULT_MAX, DEFAULT_HOLD = 8, 8, 128, "15s"
DEFAULT_SETTLE, DEFAULT_CONFIRM = 0.3, 2
#: Each step's users are all started within 0.25 s of the shape's change: never settle for less.
MIN_SETTLE_S = 0.5
MIN_WINDOW_S = 1.0
#: The recorder flushes every second; a window is read this long after it ends.
READ_GRACE_S = 1.3
STARTUP_TIMEOUT_S = 60.0

DEFAULT_ERROR_SLO = "error_rate < 1%"
#: The latency baseline pools the first steps' responds until it has this many (or 3 steps).
MIN_BASELINE_RESPONDS = 100
MAX_BASELINE_STEPS = 3
LATENCY_FACTOR = 2.0
LATENCY_FLOOR_MS = 50.0
LATENCY_ENDPOINT = "respond"
DEFAULT_SLO_TEXT = (f"{DEFAULT_ERROR_SLO}; {LATENCY_ENDPOINT}.p95 < max({LATENCY_FACTOR:g} × B, "
                    f"B + {LATENCY_FLOOR_MS:g} ms) where B is the region's {LATENCY_ENDPOINT} p95 "
                    f"at light load (its first step, pooled with the next up to "
                    f"{MAX_BASELINE_STEPS} steps until {MIN_BASELINE_RESPONDS} responds)")

DEFAULT_MAX_DROPPED, DEFAULT_MAX_LAG = 0.01, "1s"

CSV_COLUMNS = ("region", "level_users", "conversations_per_s", "rps", "p50_ms", "p95_ms",
               "p99_ms", "error_rate", "passed", "step", "users_observed", "requests",
               "knee", "failed_slos", "level_rate", "offered_per_s", "dropped_share", "lag_p95_ms")

CAPACITY_CSV, CAPACITY_JSON = "capacity.csv", "capacity.json"
CAPACITY_MD, CAPACITY_PNG, CAPACITY_HTML = "capacity.md", "capacity.png", "capacity.html"


# --------------------------------------------------------------------------- the plan

@dataclass(frozen=True)
class Plan:
    """The staircase: levels of users (or of conversations/s, `by="rate"`), how long each is
    held, what part is ramp-up, and (by rate) what a step must deliver."""

    start: float = DEFAULT_START
    step: float = DEFAULT_STEP
    max: float = DEFAULT_MAX
    hold_s: float = 15.0
    settle: float = DEFAULT_SETTLE
    confirm: int = DEFAULT_CONFIRM
    by: str = "users"              # users (closed model) | rate (open model, conversations/s)
    max_dropped: float = DEFAULT_MAX_DROPPED
    max_lag_s: float = 1.0

    def __post_init__(self) -> None:
        if self.by == "rate":
            if self.start <= 0 or self.step <= 0:
                raise config.ConfigError("--arrival-rate-start and --arrival-rate-step must be "
                                         "positive (conversations/s)")
            if self.max < self.start:
                raise config.ConfigError(f"--arrival-rate-max ({self.max:g}) is below "
                                         f"--arrival-rate-start ({self.start:g})")
            if not 0 <= self.max_dropped < 1:
                raise config.ConfigError(f"--max-dropped {self.max_dropped:g} must be a fraction "
                                         f"below 1 (e.g. 1% or 0.01)")
        elif self.start < 1 or self.step < 1:
            raise config.ConfigError("--start and --step must be at least 1 user")
        if self.max < self.start:
            raise config.ConfigError(f"--max ({self.max}) is below --start ({self.start})")
        if not 0 <= self.settle < 1:
            raise config.ConfigError(f"--settle {self.settle:g} must be a fraction, 0 <= settle < 1")
        if self.confirm < 1:
            raise config.ConfigError("--confirm must be at least 1 step")
        if self.hold_s - self.settle_s < MIN_WINDOW_S:
            raise config.ConfigError(
                f"--hold {self.hold_s:g}s leaves {max(self.hold_s - self.settle_s, 0):.2g} s to measure "
                f"after {self.settle_s:.2g} s of ramp-up; use --hold "
                f"{math.ceil(max(MIN_SETTLE_S, self.settle * self.hold_s) + MIN_WINDOW_S)}s or more")

    @property
    def levels(self) -> list[float]:
        if self.by == "rate":
            return config.arrival_levels({"*": self.start}, self.arrival_steps())
        out = list(range(int(self.start), int(self.max) + 1, int(self.step)))
        if out[-1] != self.max:
            out.append(int(self.max))
        return out

    @property
    def unit(self) -> str:
        return "conv/s" if self.by == "rate" else "users"

    def arrival_steps(self) -> dict[str, float]:
        return {"step": self.step, "every": self.hold_s, "max": self.max}

    @property
    def settle_s(self) -> float:
        return max(self.settle * self.hold_s, MIN_SETTLE_S)

    @property
    def total_s(self) -> float:
        return len(self.levels) * self.hold_s

    @property
    def spawn_rate(self) -> float:
        """Each step's new users start within ~0.25 s (the window waits for the shape's tick)."""
        return float(4 * max(self.start, self.step))

    def shape_spec(self) -> str:
        return (f"steps:start={self.start},step={self.step},every={self.hold_s:g}s,"
                f"max={self.max},rate={self.spawn_rate:g}")

    def describe(self) -> str:
        if self.by == "rate":
            return (f"{self.start:g} → {self.max:g} conversations/s (open model), +{self.step:g} "
                    f"every {self.hold_s:g} s (first {self.settle_s:.3g} s of each step ignored as "
                    f"ramp-up); a step also fails on over {100 * self.max_dropped:g} % dropped or a "
                    f"p95 schedule lag over {self.max_lag_s * 1000:g} ms; "
                    f"stop after {self.confirm} failing step{'s' if self.confirm > 1 else ''} in a row")
        return (f"{self.start} → {self.max} users, +{self.step} every {self.hold_s:g} s "
                f"(first {self.settle_s:.3g} s of each step ignored as ramp-up); "
                f"stop after {self.confirm} failing step{'s' if self.confirm > 1 else ''} in a row")


# --------------------------------------------------------------------------- SLOs

def default_latency_slo(baseline_ms: float) -> str:
    threshold = max(LATENCY_FACTOR * baseline_ms, baseline_ms + LATENCY_FLOOR_MS)
    return f"{LATENCY_ENDPOINT}.p95 < {math.ceil(round(threshold, 6))}ms"


def region_slos(exprs: Sequence[str], region: str, variants: Sequence[str] | None = None) -> list:
    """The SLOs that apply to one region's run: unscoped ones and those scoped to it."""
    from loadtest import slo

    return [s for s in slo.parse_slos(list(exprs), variants) if s.region in (None, region)]


# --------------------------------------------------------------------------- one step

def measure_step(requests, conversations, t0: float, t1: float, slos: Sequence,
                 latencies: list | None = None, arrivals=None,
                 delivery: tuple[float, float] | None = None) -> dict:
    """Metrics and SLO results of the requests that *completed* in [t0, t1).

    `latencies`, when a list, receives the successful respond latencies (ms) of the window.
    `delivery` (max dropped share, max p95 schedule lag in s), open model: the conversations
    *planned* in the window (`arrivals`) are judged too — did the step offer its rate?

    `slos` may be empty (the first step under the default SLOs, where the latency threshold is
    set from it: then only the error SLO is given). Percentiles come from
    `analysis.stats.percentiles`, the project's one percentile function.
    """
    import numpy as np

    from analysis.percentiles import percentiles
    from loadtest import slo

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
    row: dict[str, Any] = {"window_start": t0, "window_end": t1, "window_s": window,
                           "requests": n}
    if n:
        ok = req["ok"].to_numpy() > 0
        endpoint = req["endpoint"].astype(str).to_numpy()
        lat = req["response_time_ms"].to_numpy(dtype=float)[ok & (endpoint == LATENCY_ENDPOINT)]
        p50, p95, p99 = (float(x) for x in percentiles(lat, [50, 95, 99]))
        if latencies is not None:
            latencies.extend(lat.tolist())
        row.update(conversations_per_s=int((ok & (endpoint == "create")).sum()) / window,
                   rps=n / window, p50_ms=p50, p95_ms=p95, p99_ms=p99,
                   error_rate=float((~ok).sum()) / n, responds=int(lat.size))
    else:
        row.update(conversations_per_s=0.0, rps=0.0, p50_ms=math.nan, p95_ms=math.nan,
                   p99_ms=math.nan, error_rate=math.nan, responds=0)
    results = slo.evaluate(list(slos), req, conv, duration_s=window) if slos else []
    row["slo"] = results
    row["passed"] = bool(n) and all(r["passed"] for r in results)
    row["failed_slos"] = [f"{r['expr']} (observed {r['observed_text']})" for r in results
                          if not r["passed"]]
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


def judge_delivery(arrivals, t0: float, t1: float, max_dropped: float, max_lag_s: float) -> dict:
    """Offered rate, dropped share and p95 schedule lag of the conversations planned in [t0, t1)."""
    import numpy as np

    from analysis.percentiles import percentiles

    out: dict[str, Any] = {"offered_per_s": 0.0, "dropped_share": None, "lag_p95_ms": None,
                           "delivery_failures": []}
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
            f"dropped {100 * out['dropped_share']:.1f}% of planned conversations (max "
            f"{100 * max_dropped:g}%: no free user; raise --users)")
    if out["lag_p95_ms"] is not None and out["lag_p95_ms"] > max_lag_s * 1000:
        out["delivery_failures"].append(
            f"schedule lag p95 {out['lag_p95_ms']:.0f} ms (max {max_lag_s * 1000:g} ms: the load "
            f"generator is late)")
    return out


# --------------------------------------------------------------------------- the knee

@dataclass
class Knee:
    status: str               # found | above_max | below_start | incomplete | failed
    knee: int | None          # index of the knee step
    first_fail: int | None    # index of the first step of the confirmed failure
    isolated: list[int]       # failing steps before the knee that the next step contradicted


def find_knee(passed: Sequence[bool], confirm: int, reached_max: bool) -> Knee:
    """The knee from the pass/fail of consecutive steps.

    The first failure is the first step of the first run of `confirm` failing steps; when none
    is that long, a run of failures that ends the data (the run stopped or reached max) counts.
    The knee is the last passing step before it. `reached_max`: every planned level was
    measured, so "no failure" means the knee is at least max.
    """
    first_fail, streak = None, 0
    for i, ok in enumerate(passed):
        streak = 0 if ok else streak + 1
        if streak >= confirm:
            first_fail = i - confirm + 1
            break
    else:
        if streak:
            first_fail = len(passed) - streak
    limit = len(passed) if first_fail is None else first_fail
    knee = next((i for i in range(limit - 1, -1, -1) if passed[i]), None)
    isolated = [i for i in range(limit) if not passed[i]]
    if not passed:
        return Knee("failed", None, None, [])
    if first_fail is None:
        return Knee("above_max" if reached_max else "incomplete", knee, None, isolated)
    if knee is None:
        return Knee("below_start", None, first_fail, isolated)
    return Knee("found", knee, first_fail, isolated)


def should_stop(passed: Sequence[bool], confirm: int) -> bool:
    return len(passed) >= confirm and not any(passed[-confirm:])


# --------------------------------------------------------------------------- one region

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
        return self.steps[self.knee.knee] if self.knee and self.knee.knee is not None else None

    @property
    def fail_step(self) -> dict | None:
        return self.steps[self.knee.first_fail] if self.knee and self.knee.first_fail is not None else None


def region_scenario(scenario: config.Scenario, region: str, plan: Plan) -> config.Scenario:
    values = dict(scenario.values)
    if plan.by == "rate":
        pool = rate_pool(scenario, plan)
        # +2 s: the last level's end is logged before Locust's run time stops the users.
        values.update(regions={region: 1.0}, shape="", arrival_rate={region: plan.start},
                      arrival_steps=plan.arrival_steps(), users=pool, spawn_rate=float(pool),
                      duration=plan.total_s + 2)
    else:
        values.update(regions={region: 1.0}, shape=plan.shape_spec(), arrival_rate={},
                      users=plan.max, duration=plan.total_s)
    return config.Scenario(values=values, sources=dict(scenario.sources))


#: A rate search's pool of users: `--users` when given, else room for 3 × the conversations
#: in flight at the highest rate (Little's law with a generous conversation length), so that
#: drops mean a slow service, not a small pool.
POOL_FACTOR, MIN_POOL, MAX_POOL = 3.0, 20, 5000


def rate_pool(scenario: config.Scenario, plan: Plan) -> int:
    if scenario.sources.get("users") not in (None, "default"):
        return int(scenario.users)
    conversation_s = scenario.turns[1] * (scenario.think_time[1] + 0.5) + 1.0
    return int(min(max(math.ceil(plan.max * conversation_s * POOL_FACTOR), MIN_POOL), MAX_POOL))


_SHAPE_CHANGE = re.compile(r"Shape test updating to (\d+) users")
_RATE_CHANGE = re.compile(r"arrival rate ([\d.eE+-]+) conversations/s from ([\d.]+)")
_RATE_DONE = re.compile(r"arrival steps done at ([\d.]+)")
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\]")


def _log_time(line: str) -> float:
    """Epoch seconds of a Locust log line ("[2024-05-01 10:00:00,123] …"), else now."""
    m = _LOG_TIME.match(line)
    if m:
        try:
            return time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
        except (ValueError, OverflowError):
            pass
    return time.time()


class ShapeLog:
    """The step boundaries, from Locust's log lines (`on_line` of `children.LocustOutput`): when
    the load shape changed the user count (the shape ticks once a second, so a step starts up
    to a second after its nominal time), or the open model's staircase changed its rate (exact
    epochs, logged by `loadtest.inlocust.arrivals`); and whether Locust warned of its CPU."""

    def __init__(self):
        self.cpu_warning = False
        self.changes: list[tuple[float, float]] = []  # (epoch s, users or conversations/s), in order
        self.shape_end: float | None = None

    def __call__(self, line: str) -> None:
        m = _SHAPE_CHANGE.search(line)
        rate = _RATE_CHANGE.search(line)
        done = _RATE_DONE.search(line)
        if m:
            self.changes.append((_log_time(line), int(m.group(1))))
        elif "Shape test stopping" in line:
            self.shape_end = _log_time(line)
        elif rate:  # the open model's staircase logs exact epochs
            self.changes.append((float(rate.group(2)), float(rate.group(1))))
        elif done:
            self.shape_end = float(done.group(1))
        elif "CPU usage above" in line:
            self.cpu_warning = True

    def steps(self) -> list[tuple[float, float, float | None]]:
        """(level, start, end or None while running) of each step so far."""
        changes = list(self.changes)
        out = []
        for i, (t, users) in enumerate(changes):
            end = changes[i + 1][0] if i + 1 < len(changes) else self.shape_end
            out.append((users, t, end))
        return out


def _fmt_ms(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.0f}"


def _fmt_pct(v) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def _step_line(region: str, level: float, row: dict) -> str:
    verdict = "pass" if row["passed"] else "FAIL " + "; ".join(row["failed_slos"])
    return (f"[{region}] {level:>6g}  {row['conversations_per_s']:>7.2f}  {row['rps']:>7.1f}  "
            f"{_fmt_ms(row['p50_ms']):>6}  {_fmt_ms(row['p95_ms']):>6}  {_fmt_ms(row['p99_ms']):>6}  "
            f"{_fmt_pct(row['error_rate']):>7}  {verdict}")


STOP_GRACE_S = 10.0


def set_baseline(result: "RegionResult", pool: list[float], steps: int) -> list:
    """The default latency SLO from the respond latencies pooled at light load (or none)."""
    from analysis.percentiles import percentiles

    region = result.region
    if not pool:
        result.baseline_note = (f"no successful {LATENCY_ENDPOINT} in the first step(s): no latency "
                                f"SLO, only {DEFAULT_ERROR_SLO}")
        print(f"[{region}] {result.baseline_note}")
        return []
    b = float(percentiles(pool, [95])[0])
    expr = default_latency_slo(b)
    result.baseline_p95_ms, result.baseline_responds, result.baseline_steps = b, len(pool), steps
    result.slos = result.slos + [expr]
    note = (f"latency SLO {expr}: B = {b:.0f} ms, the p95 of {len(pool)} responds in the first "
            + (f"{steps} steps" if steps > 1 else "step"))
    if len(pool) < MIN_BASELINE_RESPONDS:
        note += (f" (under {MIN_BASELINE_RESPONDS}: a noisy baseline; raise --hold or --start "
                 f"for a steadier one)")
    result.baseline_note = note
    print(f"[{region}] {note}")
    return region_slos([expr], region)


def _p95(values: Sequence[float]) -> float:
    from analysis.percentiles import percentiles

    return float(percentiles(values, [95])[0])


def search_region(scenario: config.Scenario, region: str, base_url: str, plan: Plan,
                  user_slos: list[str], run_dir: Path, signals) -> RegionResult:
    """One region's staircase: run Locust, judge each step as it ends, stop after the knee."""
    result = RegionResult(region=region, run_dir=run_dir)
    rs = region_scenario(scenario, region, plan)
    variants = list(rs.variants) or None
    slos = region_slos(user_slos, region, variants) if user_slos else region_slos([DEFAULT_ERROR_SLO], region)
    result.slos = [s.expr for s in slos]
    run_dir.mkdir(parents=True, exist_ok=True)
    runfolder.update_run_json(run_dir, status="starting", target=rs.target, config=rs.raw(),
                              config_hash=runfolder.config_hash(rs.raw()), users=plan.max,
                              duration_s=plan.total_s, turns=rs.raw()["turns"],
                              think_time=rs.raw()["think_time"], regions=[region],
                              variants=list(rs.variants), base_urls={region: base_url},
                              capacity={"folder": run_dir.parent.name, "plan": asdict(plan),
                                        "levels": plan.levels})
    # INFO: Locust logs each shape change, which gives the true step boundaries.
    cmd = children.locust_command(rs, {region: base_url}, run_dir=run_dir, extra=["--loglevel", "INFO"])
    print(f"\n[{region}] run folder {run_dir}")
    print(f"[{region}] {plan.unit:>6}   conv/s    req/s     p50     p95     p99   errors  SLO "
          f"({LATENCY_ENDPOINT} latency, ms)")
    sys.stdout.flush()
    proc = children.spawn_locust(cmd)
    signals.proc = proc
    shape = ShapeLog()
    output = children.LocustOutput(proc, run_dir / "locust.log", on_line=shape, echo_prefix=f"[{region}] ")
    output.start()
    tail = RunTail(run_dir)
    launched = time.time()
    judged: list[dict] = []  # {level, t0, t1, passed}
    delivery = (plan.max_dropped, plan.max_lag_s) if plan.by == "rate" else None
    pooling, pool = not user_slos, []  # default SLOs: respond latencies at light load
    stop_sent: float | bool = False  # when Locust was asked to stop
    hard_deadline = launched + STARTUP_TIMEOUT_S + plan.total_s + len(plan.levels) + rs.stop_timeout + 30

    def judge_due_steps(now: float, final: bool = False) -> None:
        nonlocal slos, stop_sent, pooling
        for level, begin, end in shape.steps()[len(judged):]:
            if stop_sent or end is None or (now < end + READ_GRACE_S and not final):
                return
            k = len(judged)
            t0, t1 = min(begin + plan.settle_s, end), end
            step_latencies: list[float] = []
            requests, conversations = tail.read()
            row = measure_step(requests, conversations, t0, t1, slos, step_latencies,
                               tail.arrivals, delivery)
            judged.append({"level": level, "t0": t0, "t1": t1, "passed": row["passed"]})
            print(_step_line(region, level, row))
            if pooling:
                # A light-load step passes (only the error SLO so far) and is not already
                # queueing (its p95 within LATENCY_FACTOR of the pool's): pool it.
                light = row["passed"] and not (pool and step_latencies and
                                               _p95(step_latencies) > LATENCY_FACTOR * _p95(pool))
                if light:
                    pool.extend(step_latencies)
                if len(pool) >= MIN_BASELINE_RESPONDS or k + 1 >= MAX_BASELINE_STEPS or not light:
                    pooling = False
                    slos = slos + set_baseline(result, pool, k + 1 if light else k)
            sys.stdout.flush()
            tail.forget_before(t1)
            passed = [j["passed"] for j in judged]
            if should_stop(passed, plan.confirm) and level < plan.max - 1e-9 and proc.poll() is None:
                print(f"[{region}] {plan.confirm} failing step{'s' if plan.confirm > 1 else ''} "
                      f"in a row: stopping this region")
                output.stop()
                stop_sent = time.time()
                result.stopped_early = True

    try:
        while proc.poll() is None:
            time.sleep(0.2)
            now = time.time()
            if not shape.changes:
                if now - launched > STARTUP_TIMEOUT_S:
                    result.message = f"Locust did not start within {STARTUP_TIMEOUT_S:.0f} s"
                    proc.kill()
                    break
                continue
            if signals.count and not stop_sent:
                stop_sent = now  # the first Ctrl-C already asked Locust to stop
                output.stopping = True
            judge_due_steps(now)
            if stop_sent and now > stop_sent + rs.stop_timeout + STOP_GRACE_S:
                result.message = "Locust did not stop within --stop-timeout; killed"
                proc.kill()
                break
            if now > hard_deadline:
                result.message = "Locust did not stop by itself; killed"
                proc.kill()
                break
        result.locust_rc = proc.wait()
    finally:
        processes.stop(proc, sig=signal.SIGKILL)  # and worker processes must not outlive the master
        output.join(timeout=10)
        signals.proc = None
    if output.failure is not None:  # a full disk: what was measured is in the region's folder
        raise output.failure
    result.cpu_warning = shape.cpu_warning
    if signals.count:
        result.message = "interrupted"
    if not shape.changes:
        result.status = "incomplete" if signals.count else "failed"
        result.message = result.message or f"Locust exited with code {result.locust_rc} before the test started"
        return result
    if not signals.count:
        judge_due_steps(time.time(), final=True)  # steps that ended as Locust stopped by itself
    if pooling and judged:  # the search ended before the baseline had its responds
        slos = slos + set_baseline(result, pool, len(judged))
    result.steps = finalize_steps(run_dir, judged, slos, plan)
    reached_max = bool(judged) and judged[-1]["level"] >= plan.max - 1e-9
    result.knee = find_knee([r["passed"] for r in result.steps], plan.confirm, reached_max)
    result.status = result.knee.status
    if result.locust_rc != 0 and not stop_sent and not signals.count:  # Locust itself failed
        result.status = "failed"
        result.message = result.message or (f"Locust exited with code {result.locust_rc}; "
                                             f"see {run_dir / 'locust.log'}")
    return result


def finalize_steps(run_dir: Path, judged: list[dict], slos, plan: Plan) -> list[dict]:
    """Each judged step again, from the complete run folder (validated by analysis.load)."""
    from analysis.load import load_run

    try:
        run = load_run(run_dir)
        requests, conversations, history = run.requests, run.conversations, run.stats_history
        arrivals = run.arrivals
    except Exception as e:  # e.g. no requests at all: every step fails with "no requests"
        print(f"loadtest: {run_dir}: {e}", file=sys.stderr)
        requests = conversations = history = arrivals = None
    delivery = (plan.max_dropped, plan.max_lag_s) if plan.by == "rate" else None
    rows = []
    for k, j in enumerate(judged):
        row = measure_step(requests, conversations, j["t0"], j["t1"], slos, None, arrivals, delivery)
        row.update(level=j["level"], step=k, users_observed=None,
                   level_users=j["level"] if plan.by == "users" else None,
                   level_rate=j["level"] if plan.by == "rate" else None)
        if history is not None and len(history):
            seen = history[(history["timestamp"] >= j["t0"]) & (history["timestamp"] < j["t1"])]["users"]
            if len(seen):
                row["users_observed"] = int(seen.min())
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- outputs

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
            _fmt_ms(k["p95_ms"]), _fmt_ms(k["p99_ms"]), _fmt_pct(k["error_rate"]),
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
             _fmt_ms(s["p50_ms"]), _fmt_ms(s["p95_ms"]), _fmt_ms(s["p99_ms"]), _fmt_pct(s["error_rate"])]
    if plan.by == "rate":
        cells += [_fmt_pct(s.get("dropped_share")), _fmt_ms(s.get("lag_p95_ms"))]
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
    from loadtest import slo

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
    import base64

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


# --------------------------------------------------------------------------- the command

def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scenario_arguments(parser)
    g = parser.add_argument_group("capacity search")
    g.add_argument("--start", type=int, default=None, metavar="N",
                   help=f"users in the first step, a light load (default: {DEFAULT_START})")
    g.add_argument("--step", type=int, default=None, metavar="N",
                   help=f"users added per step (default: {DEFAULT_STEP})")
    g.add_argument("--max", type=int, default=None, metavar="N",
                   help=f"highest level tried (default: {DEFAULT_MAX})")
    g.add_argument("--hold", default=DEFAULT_HOLD, metavar="DURATION",
                   help=f"time each level is held, e.g. 20s; whole seconds, as Locust changes the "
                        f"shape on 1 s ticks (default: {DEFAULT_HOLD})")
    g.add_argument("--settle", type=float, default=DEFAULT_SETTLE, metavar="FRACTION",
                   help=f"part of each step ignored as ramp-up (default: {DEFAULT_SETTLE:g}, "
                        f"at least {MIN_SETTLE_S:g} s)")
    g.add_argument("--confirm", type=int, default=DEFAULT_CONFIRM, metavar="N",
                   help=f"failing steps in a row that end a region's search (default: {DEFAULT_CONFIRM})")
    r = parser.add_argument_group("capacity by arrival rate (open model) instead of users")
    r.add_argument("--arrival-rate-start", type=float, default=None, metavar="RATE",
                   help="conversations/s per region in the first step, a light load")
    r.add_argument("--arrival-rate-step", type=float, default=None, metavar="RATE",
                   help="conversations/s added per step (default: the start rate)")
    r.add_argument("--arrival-rate-max", type=float, default=None, metavar="RATE",
                   help="highest rate tried, conversations/s per region")
    r.add_argument("--max-dropped", default="1%", metavar="SHARE",
                   help="a step fails when more of its planned conversations are dropped for want "
                        "of a free user (default: 1%%)")
    r.add_argument("--max-lag", default=DEFAULT_MAX_LAG, metavar="DURATION",
                   help=f"a step fails when its p95 schedule lag (start minus plan) is longer "
                        f"(default: {DEFAULT_MAX_LAG})")


def plan_from_args(args: argparse.Namespace) -> Plan:
    try:
        hold = config.parse_duration(args.hold)
    except ValueError as e:
        raise config.ConfigError(f"--hold: {e}") from None
    by_rate = [args.arrival_rate_start, args.arrival_rate_step, args.arrival_rate_max]
    if not any(x is not None for x in by_rate):
        return Plan(start=_default(args.start, DEFAULT_START), step=_default(args.step, DEFAULT_STEP),
                    max=_default(args.max, DEFAULT_MAX), hold_s=hold, settle=args.settle,
                    confirm=args.confirm)
    users_flags = [f for f, v in (("--start", args.start), ("--step", args.step), ("--max", args.max))
                   if v is not None]
    if users_flags:
        raise config.ConfigError(f"{', '.join(users_flags)} (users) and --arrival-rate-* (conversations/s) "
                                 f"are two different searches: choose one")
    if args.arrival_rate_start is None or args.arrival_rate_max is None:
        raise config.ConfigError("a search by arrival rate needs --arrival-rate-start and "
                                 "--arrival-rate-max (conversations/s per region), e.g. "
                                 "--arrival-rate-start 1 --arrival-rate-step 1 --arrival-rate-max 10")
    try:
        max_lag = config.parse_duration(args.max_lag)
    except ValueError as e:
        raise config.ConfigError(f"--max-lag: {e}") from None
    return Plan(start=args.arrival_rate_start, step=_default(args.arrival_rate_step, args.arrival_rate_start),
                max=args.arrival_rate_max, hold_s=hold, settle=args.settle, confirm=args.confirm,
                by="rate", max_dropped=parse_share(args.max_dropped), max_lag_s=max_lag)


def _default(value, default):
    return default if value is None else value


def parse_share(text: str) -> float:
    """'1%' or '0.01' → 0.01 (--max-dropped)."""
    raw = str(text).strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise config.ConfigError(f"--max-dropped '{text}' is not a share: use e.g. 1% or 0.01") from None


def capacity_command(args: argparse.Namespace) -> int:
    """`loadtest capacity`: returns the exit code."""
    return search(scenario_from_args(args), plan_from_args(args))


def search(scenario: config.Scenario, plan: Plan) -> int:
    """The whole search, every region in turn, and its outputs. Returns the exit code."""
    if scenario.arrival_rate or scenario.arrival_steps:
        raise config.ConfigError("--arrival-rate/--arrival-steps are set by the capacity search; to "
                                 "search by arrival rate use --arrival-rate-start/--arrival-rate-step/"
                                 "--arrival-rate-max instead")
    if scenario.shape:
        raise config.ConfigError("--shape is set by the capacity search (--start/--step/--max/--hold); drop it")
    if scenario.processes or scenario.workers:
        raise config.ConfigError("--processes and --workers are not supported by the capacity search yet")
    user_slos = list(scenario.slos)
    try:
        slo.parse_slos(user_slos, variants=list(scenario.variants) or None)
    except slo.SLOError as e:
        raise config.ConfigError(str(e)) from None
    regions = list(scenario.regions)
    for region in regions:  # a region no --slo applies to is a usage error, before any traffic
        if user_slos and not region_slos(user_slos, region, list(scenario.variants) or None):
            raise config.ConfigError(f"no --slo applies to region {region}: add an unscoped SLO "
                                     f"or one scoped to {region}")
    if scenario.baseline:
        raise config.ConfigError("--baseline and --fail-on-regression gate `loadtest run` against an earlier "
                                 "run; a capacity search has no baseline: drop them")
    runner.preflight(scenario)  # SLOs, corpus, target safety, the mock's variants and faults
    set_by_search = ("spawn_rate", "duration", "warmup") if plan.by == "rate" else \
        ("users", "spawn_rate", "duration", "warmup")
    ignored = [config.SETTINGS_BY_NAME[n].flag for n in set_by_search
               if scenario.sources.get(n) not in (None, "default")]
    if ignored:
        print(f"note: {', '.join(ignored)} not used: the search sets users and time from "
              f"--start/--step/--max/--hold and ignores each step's first --settle part", file=sys.stderr)
    if scenario.abort_on_fail or any(s.abort_on_fail for s in slo.parse_slos(user_slos)):
        print("note: abort-on-fail not used: the capacity search judges every step against the SLOs "
              "as it ends and stops a region after --confirm failing steps", file=sys.stderr)
    if scenario.target == "real" and not scenario.max_rps:
        print("note: a real target is capped at the default --max-rps; the knee found may be that "
              "cap. Set --max-rps to what you may send.", file=sys.stderr)
    think_max = scenario.think_time[1]
    if plan.settle_s < think_max + MIN_SETTLE_S:
        print(f"note: the ramp-up part of each step ({plan.settle_s:.3g} s) is short for think times "
              f"up to {think_max:g} s; raise --hold or --settle for steadier steps", file=sys.stderr)

    try:
        folder = runfolder.new_run_dir(scenario.out)
    except runfolder.WriteFailed as e:
        print(f"loadtest: {e}; nothing was sent (free some space, or pick another --out)", file=sys.stderr)
        return EXIT_RUN_FAILED
    slo_source = "flags" if user_slos else "default"
    print(f"Capacity search, regions {', '.join(regions)}: {plan.describe()}")
    if plan.by == "rate":
        print(f"Pool: {rate_pool(scenario, plan)} users per region (set with --users)")
    print("SLOs: " + ("; ".join(user_slos) if user_slos else DEFAULT_SLO_TEXT + " (default; set your own with --slo)"))
    print(f"Capacity folder: {folder}")
    results: list[RegionResult] = []
    code = EXIT_OK
    with children.Signals("closing open conversations, saving data and writing the capacity report") as signals:
        try:
            mock_cm = (children.mock_server(scenario, folder / "mock.log") if runner.needs_mock(scenario)
                       else nullcontext())
            with mock_cm as mock_urls:
                base_urls = runner.resolve_base_urls(scenario, mock_urls)
                for region in regions:
                    res = search_region(scenario, region, base_urls[region], plan, user_slos,
                                        folder / region, signals)
                    if mock_urls:
                        res.mock = _mock_stats(mock_urls[region], scenario)
                    runfolder.update_run_json(
                        res.run_dir, ended=time.time(),
                        status=("interrupted" if signals.count else
                                "stopped at knee" if res.stopped_early else
                                "completed" if res.status != "failed" else "failed"),
                        exit_code=res.locust_rc, mock_open_conversations=(res.mock or {}).get("open_conversations"),
                        capacity={"folder": folder.name, "plan": asdict(plan), "levels": plan.levels,
                                  "status": res.status, "knee": knee_summary(res), "slos": res.slos})
                    results.append(res)
                    if res.status == "failed" and res.locust_rc == 2:
                        print(f"loadtest: Locust rejected its options; see {res.run_dir / 'locust.log'}",
                              file=sys.stderr)
                        code = EXIT_USAGE
                        break
                    if signals.count:
                        print("Interrupted: writing what was measured.", file=sys.stderr)
                        break
        except runfolder.WriteFailed as e:
            print(f"loadtest: {e}; the load was stopped and the rows already written are kept; "
                  f"free some space (or pick another --out), then build a region's report with: "
                  f"loadtest report {e.path.parent}", file=sys.stderr)
            return EXIT_RUN_FAILED  # no room for the capacity report
        except children.RunFailed as e:
            print(f"loadtest: {e}", file=sys.stderr)
            code = EXIT_RUN_FAILED
    if code == EXIT_OK:
        if any(r.status == "failed" for r in results) or not results:
            code = EXIT_RUN_FAILED
        elif any(r.status == "below_start" for r in results):
            code = EXIT_SLO_FAILED
    try:
        write_outputs(results, plan, scenario, folder, slo_source, code)
    except OSError as e:  # the disk filled while writing the summary: the region folders are kept
        print(f"loadtest: cannot write the capacity report in {folder}: {e.strerror or e}; the "
              f"per-region run folders are kept (loadtest report {folder}/<region>)", file=sys.stderr)
        return EXIT_RUN_FAILED
    print("\nCapacity knees (highest load within SLO):")
    print(text_table(knees_table(results, plan)))
    for res in results:
        if res.cpu_warning:
            print(f"warning: {res.region}: Locust reported CPU above 90 %; its latencies may be the "
                  f"load generator's, not the service's (use --processes N)", file=sys.stderr)
    print(f"\nCapacity report: {folder / CAPACITY_HTML}")
    print(f"Per-region reports: loadtest report {folder}/<region>")
    return code


def _mock_stats(url: str, scenario: config.Scenario) -> dict | None:
    s = children.mock_stats(url, scenario)
    if s is None:
        return None
    return {k: s.get(k) for k in ("slots", "queue_limit", "rejected", "created", "open_conversations")}
