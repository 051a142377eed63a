"""The search loop: for each region in turn, one Locust run climbs the plan's staircase (started
through the process layer, `loadtest.children`); each step is judged as soon as its window is
complete, read from the growing run folder (`loadtest.runtail`); after `confirm` failing steps
the region's Locust is stopped gracefully; the final table is recomputed from the complete
run folder (`analysis.load`). `search()` runs every region and writes the outputs."""

from __future__ import annotations

import re
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from analysis.load import load_run
from analysis.percentiles import percentiles
from loadtest import children, config, processes, runfolder, slo
from loadtest.commands import run as runner
from loadtest.commands.capacity.outputs import (
    CAPACITY_HTML,
    fmt_ms,
    fmt_pct,
    knee_summary,
    knees_table,
    text_table,
    write_outputs,
)
from loadtest.commands.capacity.plan import (
    DEFAULT_ERROR_SLO,
    DEFAULT_SLO_TEXT,
    LATENCY_ENDPOINT,
    LATENCY_FACTOR,
    MAX_BASELINE_STEPS,
    MIN_BASELINE_RESPONDS,
    MIN_SETTLE_S,
    Plan,
    default_latency_slo,
    find_knee,
    rate_pool,
    region_scenario,
    region_slos,
    should_stop,
)
from loadtest.commands.capacity.steps import RegionResult, measure_step
from loadtest.exitcodes import EXIT_OK, EXIT_RUN_FAILED, EXIT_SLO_FAILED, EXIT_USAGE
from loadtest.runtail import RunTail

#: The recorder flushes every second; a window is read this long after it ends.
READ_GRACE_S = 1.3
STARTUP_TIMEOUT_S = 60.0


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

    def __init__(self) -> None:
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


def _step_line(region: str, level: float, row: dict) -> str:
    verdict = "pass" if row["passed"] else "FAIL " + "; ".join(row["failed_slos"])
    return (
        f"[{region}] {level:>6g}  {row['conversations_per_s']:>7.2f}  {row['rps']:>7.1f}  "
        f"{fmt_ms(row['p50_ms']):>6}  {fmt_ms(row['p95_ms']):>6}  {fmt_ms(row['p99_ms']):>6}  "
        f"{fmt_pct(row['error_rate']):>7}  {verdict}"
    )


STOP_GRACE_S = 10.0


def set_baseline(result: "RegionResult", pool: list[float], steps: int) -> list:
    """The default latency SLO from the respond latencies pooled at light load (or none)."""
    region = result.region
    if not pool:
        result.baseline_note = f"no successful {LATENCY_ENDPOINT} in the first step(s): no latency SLO, only {DEFAULT_ERROR_SLO}"
        print(f"[{region}] {result.baseline_note}")
        return []
    b = float(percentiles(pool, [95])[0])
    expr = default_latency_slo(b)
    result.baseline_p95_ms, result.baseline_responds, result.baseline_steps = b, len(pool), steps
    assert result.slos is not None, "search_region sets the SLOs before any baseline"
    result.slos = result.slos + [expr]
    note = f"latency SLO {expr}: B = {b:.0f} ms, the p95 of {len(pool)} responds in the first " + (f"{steps} steps" if steps > 1 else "step")
    if len(pool) < MIN_BASELINE_RESPONDS:
        note += f" (under {MIN_BASELINE_RESPONDS}: a noisy baseline; raise --hold or --start for a steadier one)"
    result.baseline_note = note
    print(f"[{region}] {note}")
    return region_slos([expr], region)


def _p95(values: Sequence[float]) -> float:

    return float(percentiles(values, [95])[0])


def search_region(
    scenario: config.Scenario, region: str, base_url: str, plan: Plan, user_slos: list[str], run_dir: Path, signals: children.Signals
) -> RegionResult:
    """One region's staircase: run Locust, judge each step as it ends, stop after the knee."""
    result = RegionResult(region=region, run_dir=run_dir)
    rs = region_scenario(scenario, region, plan)
    variants = list(rs.variants) or None
    slos = region_slos(user_slos, region, variants) if user_slos else region_slos([DEFAULT_ERROR_SLO], region)
    result.slos = [s.expr for s in slos]
    run_dir.mkdir(parents=True, exist_ok=True)
    runfolder.update_run_json(
        run_dir,
        status="starting",
        target=rs.target,
        config=rs.raw(),
        config_hash=runfolder.config_hash(rs.raw()),
        users=plan.max,
        duration_s=plan.total_s,
        turns=rs.raw()["turns"],
        think_time=rs.raw()["think_time"],
        regions=[region],
        variants=list(rs.variants),
        base_urls={region: base_url},
        capacity={"folder": run_dir.parent.name, "plan": asdict(plan), "levels": plan.levels},
    )
    # INFO: Locust logs each shape change, which gives the true step boundaries.
    cmd = children.locust_command(rs, {region: base_url}, run_dir=run_dir, extra=["--loglevel", "INFO"])
    print(f"\n[{region}] run folder {run_dir}")
    print(f"[{region}] {plan.unit:>6}   conv/s    req/s     p50     p95     p99   errors  SLO ({LATENCY_ENDPOINT} latency, ms)")
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
    pooling = not user_slos  # default SLOs: respond latencies at light load
    pool: list[float] = []
    stop_sent: float | bool = False  # when Locust was asked to stop
    hard_deadline = launched + STARTUP_TIMEOUT_S + plan.total_s + len(plan.levels) + rs.stop_timeout + 30

    def judge_due_steps(now: float, final: bool = False) -> None:
        nonlocal slos, stop_sent, pooling
        for level, begin, end in shape.steps()[len(judged) :]:
            if stop_sent or end is None or (now < end + READ_GRACE_S and not final):
                return
            k = len(judged)
            t0, t1 = min(begin + plan.settle_s, end), end
            step_latencies: list[float] = []
            requests, conversations = tail.read()
            row = measure_step(requests, conversations, t0, t1, slos, step_latencies, tail.arrivals, delivery)
            judged.append({"level": level, "t0": t0, "t1": t1, "passed": row["passed"]})
            print(_step_line(region, level, row))
            if pooling:
                # A light-load step passes (only the error SLO so far) and is not already
                # queueing (its p95 within LATENCY_FACTOR of the pool's): pool it.
                light = row["passed"] and not (pool and step_latencies and _p95(step_latencies) > LATENCY_FACTOR * _p95(pool))
                if light:
                    pool.extend(step_latencies)
                if len(pool) >= MIN_BASELINE_RESPONDS or k + 1 >= MAX_BASELINE_STEPS or not light:
                    pooling = False
                    slos = slos + set_baseline(result, pool, k + 1 if light else k)
            sys.stdout.flush()
            tail.forget_before(t1)
            passed = [j["passed"] for j in judged]
            if should_stop(passed, plan.confirm) and level < plan.max - 1e-9 and proc.poll() is None:
                print(f"[{region}] {plan.confirm} failing step{'s' if plan.confirm > 1 else ''} in a row: stopping this region")
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
        result.message = result.message or (f"Locust exited with code {result.locust_rc}; see {run_dir / 'locust.log'}")
    return result


def finalize_steps(run_dir: Path, judged: list[dict], slos: Sequence, plan: Plan) -> list[dict]:
    """Each judged step again, from the complete run folder (validated by analysis.load)."""
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
        row.update(
            level=j["level"],
            step=k,
            users_observed=None,
            level_users=j["level"] if plan.by == "users" else None,
            level_rate=j["level"] if plan.by == "rate" else None,
        )
        if history is not None and len(history):
            seen = history[(history["timestamp"] >= j["t0"]) & (history["timestamp"] < j["t1"])]["users"]
            if len(seen):
                row["users_observed"] = int(seen.min())
        rows.append(row)
    return rows


def search(scenario: config.Scenario, plan: Plan) -> int:
    """The whole search, every region in turn, and its outputs. Returns the exit code."""
    if scenario.arrival_rate or scenario.arrival_steps:
        raise config.ConfigError(
            "--arrival-rate/--arrival-steps are set by the capacity search; to "
            "search by arrival rate use --arrival-rate-start/--arrival-rate-step/"
            "--arrival-rate-max instead"
        )
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
            raise config.ConfigError(f"no --slo applies to region {region}: add an unscoped SLO or one scoped to {region}")
    if scenario.baseline:
        raise config.ConfigError("--baseline and --fail-on-regression gate `loadtest run` against an earlier run; a capacity search has no baseline: drop them")
    runner.preflight(scenario)  # SLOs, corpus, target safety, the mock's variants and faults
    set_by_search = ("spawn_rate", "duration", "warmup") if plan.by == "rate" else ("users", "spawn_rate", "duration", "warmup")
    ignored = [config.SETTINGS_BY_NAME[n].flag for n in set_by_search if scenario.sources.get(n) not in (None, "default")]
    if ignored:
        print(
            f"note: {', '.join(ignored)} not used: the search sets users and time from --start/--step/--max/--hold and ignores each step's first --settle part",
            file=sys.stderr,
        )
    if scenario.abort_on_fail or any(s.abort_on_fail for s in slo.parse_slos(user_slos)):
        print(
            "note: abort-on-fail not used: the capacity search judges every step against the SLOs as it ends and stops a region after --confirm failing steps",
            file=sys.stderr,
        )
    if scenario.target == "real" and not scenario.max_rps:
        print("note: a real target is capped at the default --max-rps; the knee found may be that cap. Set --max-rps to what you may send.", file=sys.stderr)
    think_max = scenario.think_time[1]
    if plan.settle_s < think_max + MIN_SETTLE_S:
        print(
            f"note: the ramp-up part of each step ({plan.settle_s:.3g} s) is short for think times "
            f"up to {think_max:g} s; raise --hold or --settle for steadier steps",
            file=sys.stderr,
        )

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
            mock_cm = children.mock_server(scenario, folder / "mock.log") if runner.needs_mock(scenario) else nullcontext()
            with mock_cm as mock_urls:
                base_urls = runner.resolve_base_urls(scenario, mock_urls)
                for region in regions:
                    res = search_region(scenario, region, base_urls[region], plan, user_slos, folder / region, signals)
                    if mock_urls:
                        res.mock = _mock_stats(mock_urls[region], scenario)
                    runfolder.update_run_json(
                        res.run_dir,
                        ended=time.time(),
                        status=(
                            "interrupted" if signals.count else "stopped at knee" if res.stopped_early else "completed" if res.status != "failed" else "failed"
                        ),
                        exit_code=res.locust_rc,
                        mock_open_conversations=(res.mock or {}).get("open_conversations"),
                        capacity={
                            "folder": folder.name,
                            "plan": asdict(plan),
                            "levels": plan.levels,
                            "status": res.status,
                            "knee": knee_summary(res),
                            "slos": res.slos,
                        },
                    )
                    results.append(res)
                    if res.status == "failed" and res.locust_rc == 2:
                        print(f"loadtest: Locust rejected its options; see {res.run_dir / 'locust.log'}", file=sys.stderr)
                        code = EXIT_USAGE
                        break
                    if signals.count:
                        print("Interrupted: writing what was measured.", file=sys.stderr)
                        break
        except runfolder.WriteFailed as e:
            print(
                f"loadtest: {e}; the load was stopped and the rows already written are kept; "
                f"free some space (or pick another --out), then build a region's report with: "
                f"loadtest report {e.path.parent}",
                file=sys.stderr,
            )
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
        print(
            f"loadtest: cannot write the capacity report in {folder}: {e.strerror or e}; the "
            f"per-region run folders are kept (loadtest report {folder}/<region>)",
            file=sys.stderr,
        )
        return EXIT_RUN_FAILED
    print("\nCapacity knees (highest load within SLO):")
    print(text_table(knees_table(results, plan)))
    for res in results:
        if res.cpu_warning:
            print(
                f"warning: {res.region}: Locust reported CPU above 90 %; its latencies may be the load generator's, not the service's (use --processes N)",
                file=sys.stderr,
            )
    print(f"\nCapacity report: {folder / CAPACITY_HTML}")
    print(f"Per-region reports: loadtest report {folder}/<region>")
    return code


def _mock_stats(url: str, scenario: config.Scenario) -> dict | None:
    s = children.mock_stats(url, scenario)
    if s is None:
        return None
    return {k: s.get(k) for k in ("slots", "queue_limit", "rejected", "created", "open_conversations")}
