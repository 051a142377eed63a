"""`loadtest run`: one headless run, start to report.

    mock (unless a real target) → Locust headless (a child process) → report → SLO verdict

The mock and Locust run as child processes in their own sessions (`loadtest.children` starts
them with `processes.spawn`: they end when this process ends, however it ends), so a terminal's Ctrl-C reaches only this
process, which then stops them in order: the first Ctrl-C/SIGTERM/SIGHUP asks Locust to stop
gracefully (open conversations are closed within --stop-timeout, CSVs flushed) and the
report is still built; a second one kills at once, keeping the data.

A file of the run folder that cannot be written (a full disk) stops the load at once (Locust
does it, or is asked to), and ends the run with one line and exit code 3, no report.

With --baseline RUN_DIR the run is compared with an earlier run of the same scenario
(refused before any traffic when its config hash differs, unless --baseline-any-config), and
with --fail-on-regression a regression beyond the thresholds (`analysis.regression`) fails it.

With --abort-on-fail (or SLOs marked abort-on-fail) a watcher thread judges the SLOs live
(`loadtest.abort`) and stops Locust the graceful way on the first breach: status `aborted`.

Exit codes: 0 all SLOs pass (or none set) and no gated regression, 1 an SLO failed (or
aborted the run) or a regression, 2 usage or configuration error, 3 the run itself failed,
4 the run was interrupted (Ctrl-C, SIGTERM: the data and the report are kept, but a cancelled
CI job must not look green).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence


from analysis import records, regression
from analysis.compare import against_baseline
from analysis.load import RunDataError, load_run
from analysis.regression import parse_thresholds
from analysis.report import format_stats_table, write_report
from analysis.stats import compute_stats
from loadtest import abort, children, config, processes, runfolder, safety, slo, tls
from loadtest.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, EXIT_SLO_FAILED, EXIT_USAGE
from loadtest.commands.arguments import add_scenario_arguments, scenario_from_args
from loadtest.config import load_corpus
from loadtest.mock.config import MockConfig, load_config
from loadtest.mock.faults import parse_faults
from loadtest.progress import ProgressDisplay


def announce_fleet(scenario: config.Scenario) -> None:
    if scenario.workers:
        print(
            f"Waiting for {scenario.workers} worker(s) on port {scenario.master_bind_port}; start each "
            f"with: loadtest worker --master-host {socket.gethostname()} "
            f"--master-port {scenario.master_bind_port}",
            flush=True,
        )


def run_locust(cmd: list[str], run_dir: Path, signals: children.Signals, display: ProgressDisplay) -> int:
    """Run Locust, showing its progress lines and logging everything else to locust.log.

    Raises runfolder.WriteFailed, once Locust has ended, when a file of the run folder could
    not be written: by Locust (it stops its load at once and says so on a line of its own) or
    here (locust.log; Locust is then asked to stop)."""
    proc = children.spawn_locust(cmd)
    signals.proc = proc
    # After a second Ctrl-C (stop at once) a dying Locust may print a traceback of the
    # interrupt: expected, kept in locust.log, not news for the terminal.
    output = children.LocustOutput(proc, run_dir / "locust.log", on_progress=display.update, quiet=lambda: signals.count > 1)
    output.drain()
    display.close()
    code = proc.wait()
    processes.end_process_group(proc.pid)  # worker processes (--processes) must not outlive the master
    if output.failure is not None:
        raise output.failure
    return code


def needs_mock(scenario: config.Scenario) -> bool:
    return scenario.target == "mock" and any(r not in scenario.base_urls for r in scenario.regions)


def resolve_base_urls(scenario: config.Scenario, mock_urls: dict[str, str] | None) -> dict[str, str]:
    if mock_urls:
        return {r: scenario.base_urls.get(r, mock_urls[r]) for r in scenario.regions}
    return config.base_urls(scenario)


def preflight(scenario: config.Scenario) -> None:
    """Everything checkable before any traffic, each failure a ConfigError (exit code 2):
    SLOs, the corpus, the mock's variants and faults, and the target: loopback unless opted
    in; a real target needs credentials and a yes."""
    try:
        slo.parse_slos(scenario.slos, variants=list(scenario.variants) or None)
        load_corpus(scenario.corpus)
    except ValueError as e:  # SLOError is a ValueError
        raise config.ConfigError(str(e)) from None
    if scenario.baseline:
        check_baseline(scenario)
    urls = scenario.base_urls if needs_mock(scenario) else config.base_urls(scenario)
    if scenario.target == "real" and not scenario.yes and sys.stdin.isatty():
        answer = input(f"Send load to {', '.join(sorted(set(urls.values())))}? [y/N] ")
        if answer.strip().lower() in ("y", "yes"):
            scenario.values["yes"] = True
    safety.check_target(scenario.target, urls, scenario.yes)
    if needs_mock(scenario):
        check_mock_scenario(scenario)
    for note in scenario.notes:  # decisions taken for the user (config.Scenario.notes)
        print(f"Note: {note}")


def check_baseline(scenario: config.Scenario) -> None:
    """The baseline, before any traffic: thresholds that parse, a run folder of the same
    scenario (config hash) unless --baseline-any-config, and data the analysis can read."""
    try:
        parse_thresholds(scenario.regressions, variants=list(scenario.variants) or None)
    except ValueError as e:  # ThresholdError
        raise config.ConfigError(str(e)) from None
    current = {"config": scenario.raw(), "config_hash": runfolder.config_hash(scenario.raw())}
    problem = runfolder.baseline_problem(scenario.baseline, current, scenario.baseline_any_config)
    if problem:
        raise config.ConfigError(problem)
    try:
        load_run(scenario.baseline, warmup_s=scenario.warmup)
    except RunDataError as e:
        raise config.ConfigError(f"cannot analyse the baseline: {e}") from None


def check_mock_scenario(scenario: config.Scenario) -> None:
    """The mock's variants and fault specs, checked before it starts."""
    try:
        mock = load_config(scenario.mock_config) if scenario.mock_config else MockConfig()
        parse_faults(scenario.faults)
    except (OSError, ValueError) as e:
        raise config.ConfigError(f"mock: {e}") from None
    unknown = [v for v in scenario.variants if v not in mock.variants]
    if unknown and mock.strict_variants:
        raise config.ConfigError(
            f"variant(s) {', '.join(unknown)} unknown to the mock; it serves "
            f"{', '.join(mock.variants)} and is strict (strict_variants = true in "
            f"{scenario.mock_config}); declare them there or drop strict_variants"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scenario_arguments(parser)
    parser.add_argument("locust_args", nargs="*", metavar="-- LOCUST_ARGS", help="extra arguments passed to Locust after --")


def run_command(args: argparse.Namespace) -> int:
    """`loadtest run`: returns the exit code."""
    return run_scenario(scenario_from_args(args), args.locust_args)


def run_scenario(scenario: config.Scenario, extra_locust_args: Sequence[str] = ()) -> int:
    """The whole run. Returns the exit code."""
    preflight(scenario)
    if scenario.insecure:
        print(tls.INSECURE_WARNING, file=sys.stderr)
    try:
        run_dir = runfolder.new_run_dir(scenario.out)
        print(f"Run folder: {run_dir}")
        started = time.time()
        runfolder.update_run_json(
            run_dir,
            status="starting",
            started=started,
            target=scenario.target,
            pid=os.getpid(),
            config=scenario.raw(),
            config_hash=runfolder.config_hash(scenario.raw()),
            users=scenario.users,
            spawn_rate=scenario.spawn_rate,
            duration_s=scenario.duration,
            turns=scenario.raw()["turns"],
            think_time=scenario.raw()["think_time"],
            regions=list(scenario.regions),
            variants=list(scenario.variants),
            **runfolder.versions(),
        )
    except runfolder.WriteFailed as e:
        print(f"loadtest: {e}; nothing was sent (free some space, or pick another --out)", file=sys.stderr)
        return EXIT_RUN_FAILED
    status, code, reason = "failed", EXIT_RUN_FAILED, ""
    write_failure: runfolder.WriteFailed | None = None
    display = ProgressDisplay(None if scenario.shape else scenario.duration)
    watcher = None
    with children.Signals() as signals:
        try:
            with children.mock_server(scenario, run_dir / "mock.log") if needs_mock(scenario) else nullcontext() as mock_urls:
                base_urls = resolve_base_urls(scenario, mock_urls)
                runfolder.update_run_json(run_dir, base_urls=base_urls)
                cmd = children.locust_command(scenario, base_urls, run_dir=run_dir, extra=list(extra_locust_args))
                announce_fleet(scenario)
                watcher = start_abort_watcher(scenario, run_dir, signals)
                rc = run_locust(cmd, run_dir, signals, display)
                breach = stop_abort_watcher(watcher)
                if mock_urls:
                    runfolder.update_run_json(run_dir, mock_open_conversations=children.open_conversations(mock_urls, scenario))
            if breach:
                status, code = "aborted", EXIT_SLO_FAILED
                runfolder.update_run_json(run_dir, abort=breach.record())
            elif signals.count:
                status, code = "interrupted", EXIT_INTERRUPTED
                reason = f"stopped by {signals.first}"
            elif rc == 0:
                status, code = "completed", EXIT_OK
            elif rc == 2:
                status, code = "failed", EXIT_USAGE
            else:
                print(f"Locust exited with code {rc}; see {run_dir / 'locust.log'}", file=sys.stderr)
        except runfolder.WriteFailed as e:
            write_failure = e
            print(f"loadtest: {e}; the load was stopped and the rows already written are kept; {e.advice}", file=sys.stderr)
        except children.RunFailed as e:
            print(f"loadtest: {e}", file=sys.stderr)
        finally:
            stop_abort_watcher(watcher)
            end = {"status": status, "ended": time.time(), "exit_code": code}
            if write_failure is not None:
                reason = f"{write_failure}; the load was stopped"
            if reason:
                end["reason"] = reason
            try:
                runfolder.update_run_json(run_dir, **end)
            except runfolder.WriteFailed as e:
                if write_failure is None:  # else said above
                    print(f"loadtest: {e}; its status is out of date", file=sys.stderr)
    if write_failure is not None:
        return code  # no report: there is no room for one (loadtest report builds it later)
    if signals.count > 1:
        print(f"Stopped at once; data kept in {run_dir}. Build the report with: loadtest report {run_dir}", file=sys.stderr)
        return code
    return finish(run_dir, scenario, code)


def start_abort_watcher(scenario: config.Scenario, run_dir: Path, signals: children.Signals) -> abort.Watcher | None:
    """The live SLO watcher (see `loadtest.abort`), when some SLO may abort the run."""
    slos = abort.abortable(scenario)
    if not slos:
        return None

    def stop() -> None:
        if signals.proc is not None:
            processes.stop_locust(signals.proc)  # the graceful path of a first Ctrl-C

    watcher = abort.Watcher(run_dir, slos, scenario.abort_grace, scenario.abort_window, stop, warmup_s=scenario.warmup)
    watcher.start()
    print(
        f"Live SLO verdict every {abort.CHECK_INTERVAL_S:g} s over the last {scenario.abort_window:g} s, "
        f"from {scenario.abort_grace:g} s into the run: {'; '.join(s.expr for s in slos)}"
    )
    return watcher


def stop_abort_watcher(watcher: abort.Watcher | None) -> abort.Breach | None:
    if watcher is None:
        return None
    watcher.close()
    return watcher.breach


def finish(run_dir: Path, scenario: config.Scenario, code: int) -> int:
    """Report, SLO verdict and regression gate on whatever was measured, even after a failure
    or an interrupt."""
    if not any(run_dir.glob(records.REQUESTS_GLOB)):
        print(f"No requests were recorded; nothing to report. Logs: {run_dir}", file=sys.stderr)
        return code if code != EXIT_OK else EXIT_RUN_FAILED
    try:
        run = load_run(run_dir, warmup_s=scenario.warmup)  # once, for the table, SLOs and report
        stats = compute_stats(run)
        print(format_stats_table(stats))
        results = slo.evaluate_loaded(run, scenario.slos, stats=stats) if scenario.slos else []
        base = None
        if scenario.baseline:
            try:
                base_run = load_run(scenario.baseline, warmup_s=scenario.warmup)
            except RunDataError as e:  # checked before the run; changed since
                print(f"loadtest: cannot analyse the baseline: {e}; the report is built without it", file=sys.stderr)
                code = EXIT_USAGE if code == EXIT_OK else code
            else:
                base = against_baseline(stats, compute_stats(base_run), scenario.regressions, base_run.run_id)
        # The gate's checks join the verdict files (junit.xml, slo.md) and the exit code only with
        # --fail-on-regression; a bare --baseline is a comparison in the report.
        checks = base.checks if base and scenario.fail_on_regression else []
        if scenario.slos or checks:  # before the report, which shows the SLO table from slo.json
            slo.write_reports(results, run_dir, checks)
            print(slo.markdown(results, checks))
        elif base:
            print(regression.markdown(base.checks) + "(not gating the exit code: add --fail-on-regression)")
        if scenario.slos:
            run.slo = results  # the report's verdict banner and SLO table
        if code == EXIT_OK:
            code = slo.exit_code(results, checks)
        report = write_report(run, stats, base=base)
        print(f"Report: {report}")
    except Exception as e:  # the data is safe on disk; say so and how to retry
        print(f"loadtest: the report could not be built ({e}); the data is in {run_dir}; retry with: loadtest report {run_dir}", file=sys.stderr)
        return code if code != EXIT_OK else EXIT_RUN_FAILED
    return code
