"""`loadtest run`: one headless run, start to report.

    mock (unless a real target) → Locust headless (a child process) → report → SLO verdict

The mock and Locust run as child processes in their own sessions (`processes.spawn`: they
end when this process ends, however it ends), so a terminal's Ctrl-C reaches only this
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

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from loadtest import abort, config, processes, runfolder, safety, slo, tls
from analysis import records
from loadtest.exitcodes import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED, EXIT_SLO_FAILED, EXIT_USAGE
from loadtest.config import load_corpus
from loadtest.progress import PROGRESS_PREFIX, WRITE_FAILED_PREFIX, ProgressDisplay
from loadtest.inlocust import LOCUSTFILE

MOCK_START_TIMEOUT_S = 20.0
MOCK_CA_FILE = "mock-ca.pem"  # the TLS mock's CA certificate, in the run folder



class RunFailed(RuntimeError):
    pass


def locustfile() -> Path:
    if not LOCUSTFILE.exists():
        raise RunFailed(f"the packaged locustfile is missing at {LOCUSTFILE}; reinstall polyai-loadtest")
    return LOCUSTFILE


@contextmanager
def mock_server(scenario: config.Scenario, log_path: Path) -> Iterator[dict[str, str]]:
    """Start the embedded mock on free loopback ports; yield region → base URL.

    With --mock-tls it serves HTTPS; its throwaway CA is written beside the log
    (mock-ca.pem) and becomes the scenario's --ca-bundle unless one was given."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        cmd = [sys.executable, "-m", "loadtest.mock.cli", "--port", "0", "--ready-file", str(ready),
               "--api-version", scenario.api_version,
               "--seed", str(scenario.mock_seed), "--latency-scale", str(scenario.mock_latency_scale)]
        if scenario.mock_tls:
            cmd += ["--tls", "--tls-ca-file", str(log_path.parent / MOCK_CA_FILE)]
        for spec in scenario.faults:
            cmd += ["--fault", spec]
        if scenario.mock_config:
            cmd += ["--config", scenario.mock_config]
        try:
            log = open(log_path, "ab")
        except OSError as e:
            raise runfolder.WriteFailed(log_path, e) from None
        with log:
            proc = processes.spawn(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + MOCK_START_TIMEOUT_S
            while not ready.exists():
                if proc.poll() is not None:
                    raise RunFailed(f"the mock server exited with code {proc.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    raise RunFailed(f"the mock server did not start within {MOCK_START_TIMEOUT_S:.0f} s; see {log_path}")
                time.sleep(0.05)
            info = json.loads(ready.read_text())
            if info.get("ca_bundle") and not scenario.ca_bundle:
                scenario.values["ca_bundle"] = info["ca_bundle"]
            yield info["regions"]
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def mock_stats(url: str, scenario: config.Scenario) -> dict | None:
    """The mock's /_mock/stats at this base URL (over TLS with the run's policy), or None."""
    try:
        return httpx.get(f"{url}/_mock/stats", timeout=2,
                         verify=config.tls_policy(scenario).context()).json()
    except (httpx.HTTPError, ValueError):
        return None


def open_conversations(base_urls: dict[str, str], scenario: config.Scenario) -> dict[str, int]:
    """Per region, conversations the mock still holds open (should be 0 after a run)."""
    stats = {region: mock_stats(url, scenario) for region, url in base_urls.items()}
    return {region: s["open_conversations"] for region, s in stats.items()
            if s and "open_conversations" in s}


def locust_command(scenario: config.Scenario, run_dir: Path, base_urls: dict[str, str],
                   extra: list[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile()), "--headless"]
    if not scenario.shape:  # a shape decides users and run time itself
        # The open model's pool is spawned at once (idle users cost nothing), ready before
        # the first arrival, as k6 pre-allocates VUs.
        spawn_rate = scenario.users if scenario.arrival_rate else scenario.spawn_rate
        cmd += ["--users", str(scenario.users), "--spawn-rate", str(spawn_rate),
                "--run-time", f"{max(int(round(scenario.duration)), 1)}s"]
    if scenario.processes:
        cmd += ["--processes", str(scenario.processes), *processes.master_port_args()]
    cmd += fleet_master_args(scenario)
    # No --csv: the plugin writes Locust's CSVs into the run folder (loadtest.inlocust.locust_csv).
    cmd += ["--stop-timeout", f"{scenario.stop_timeout:g}",
           "--exit-code-on-error", "0", "--only-summary", "--loglevel", "WARNING",
           "--run-dir", str(run_dir), "--progress-lines"]
    for s in config.SETTINGS:
        if s.locust:
            cmd += [s.flag, flag_value(s.name, scenario.values[s.name], base_urls)]
    return cmd + list(extra)


# ---- a fleet: a master here, workers elsewhere (`loadtest worker`) -------------------------

def fleet_master_args(scenario: config.Scenario) -> list[str]:
    """Locust's master flags for `--workers N`: listen, and start once N workers are in."""
    if not scenario.workers:
        return []
    return ["--master", "--expect-workers", str(scenario.workers),
            "--master-bind-host", scenario.master_bind_host,
            "--master-bind-port", str(scenario.master_bind_port)]


def announce_fleet(scenario: config.Scenario) -> None:
    if scenario.workers:
        print(f"Waiting for {scenario.workers} worker(s) on port {scenario.master_bind_port}; start each "
              f"with: loadtest worker --master-host {socket.gethostname()} "
              f"--master-port {scenario.master_bind_port}", flush=True)


def worker_command(master_host: str, master_port: int, processes: int, extra: list[str] = ()) -> list[str]:
    """A Locust worker with the packaged user: settings come from the master with each start."""
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile()), "--worker",
           "--master-host", master_host, "--master-port", str(master_port)]
    if processes:
        cmd += ["--processes", str(processes)]
    return cmd + list(extra)


def flag_value(name: str, value, base_urls: dict[str, str]) -> str:
    """A resolved value back in the string form its option parser accepts."""
    if name == "base_urls":
        return ",".join(f"{r}={u}" for r, u in base_urls.items())
    if name == "arrival_rate" and "*" in value:
        return f"{value['*']:g}"
    if name == "arrival_steps":
        return ",".join(f"{k}={v:g}" for k, v in value.items())
    if isinstance(value, dict):
        return json.dumps(value) if name == "integration_attributes" else \
            ",".join(f"{k}:{v:g}" for k, v in value.items())
    if isinstance(value, tuple):
        return f"{value[0]:g}-{value[1]:g}"
    if isinstance(value, list):  # slos, faults
        return ",".join(value)
    return str(value)


def stop_locust(proc: subprocess.Popen) -> None:
    """Ask Locust to stop gracefully: users close their conversations, the CSVs are flushed.

    SIGINT, not SIGTERM: during a headless shape run Locust 2.x waits on the shape before it
    installs its SIGTERM handler, so SIGTERM would kill it at once (open conversations left on
    the target, the last second of rows lost), while SIGINT takes its "Ctrl-C" path: stop the
    users within --stop-timeout, fire test_stop, write the stats, exit 0.
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)


class Signals:
    """First SIGINT/SIGTERM/SIGHUP: graceful stop. Second: kill now.

    SIGHUP (an SSH session dropped, a terminal closed) is a stop like SIGTERM: the run ends
    gracefully, keeps its data and still builds its report. The terminal may be gone, so from
    then on output that cannot be written is dropped rather than failing the run (see
    `forgive_output`)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, stopping_message: str = "closing open conversations and saving data"):
        self.count = 0
        self.first = ""  # the name of the first signal, e.g. "SIGHUP"
        self.proc: subprocess.Popen | None = None
        self.stopping_message = stopping_message

    def __enter__(self):
        self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        self.count += 1
        self.first = self.first or signal.Signals(signum).name
        if signum == signal.SIGHUP:
            forgive_output()
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.count == 1:
            sys.stderr.write(f"\nStopping ({signal.Signals(signum).name}): {self.stopping_message} "
                             "(press Ctrl-C again to stop at once)…\n")
            stop_locust(self.proc)
        else:
            self.proc.kill()


class _ForgivingStream:
    """A text stream whose writes stop failing once its terminal or pipe is gone."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # EIO from a hung-up terminal, EPIPE, a closed stream
            self._stream = open(os.devnull, "w", encoding="utf-8")
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            self._stream = open(os.devnull, "w", encoding="utf-8")

    def __getattr__(self, name):
        return getattr(self._stream, name)


def forgive_output() -> None:
    """After a hangup: stdout and stderr drop what they can no longer deliver."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, _ForgivingStream):
            setattr(sys, name, _ForgivingStream(stream))


def run_locust(cmd: list[str], run_dir: Path, signals: Signals, display: ProgressDisplay) -> int:
    """Run Locust, showing its progress lines and logging everything else to locust.log.

    Raises runfolder.WriteFailed, once Locust has ended, when a file of the run folder could
    not be written: by Locust (it stops its load at once and says so on a line of its own) or
    here (locust.log; Locust is then asked to stop)."""
    log_path = run_dir / "locust.log"
    failure: runfolder.WriteFailed | None = None
    try:
        log = open(log_path, "w", encoding="utf-8", buffering=1)  # line by line: a full disk shows at once
    except OSError as e:
        raise runfolder.WriteFailed(log_path, e) from None
    # No stdin: Locust's key listener would switch the terminal's input mode.
    proc = processes.spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, bufsize=1)
    signals.proc = proc
    for line in proc.stdout:
        if line.startswith(PROGRESS_PREFIX):
            display.update(json.loads(line[len(PROGRESS_PREFIX):]))
            continue
        if line.startswith(WRITE_FAILED_PREFIX):
            failure = failure or runfolder.WriteFailed.from_json(line[len(WRITE_FAILED_PREFIX):])
            continue
        if log is not None:
            try:
                log.write(line)
            except OSError as e:
                failure = failure or runfolder.WriteFailed(log_path, e)
                _close_quietly(log)
                log = None
                stop_locust(proc)
        # After a second Ctrl-C (stop at once) a dying Locust may print a traceback of the
        # interrupt: expected, kept in locust.log, not news for the terminal.
        if (line.startswith("loadtest:") or "Traceback" in line) and failure is None and signals.count < 2:
            sys.stderr.write(line)
    display.close()
    code = proc.wait()
    processes.end_process_group(proc.pid)  # worker processes (--processes) must not outlive the master
    if log is not None:
        try:
            log.close()
        except OSError as e:
            failure = failure or runfolder.WriteFailed(log_path, e)
    if failure is not None:
        raise failure
    return code


def _close_quietly(f) -> None:
    try:
        f.close()
    except OSError:  # its buffered tail could not be written either
        pass


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
    # Deferred: pandas and the analysis cost a second to import; only a baseline needs them here.
    from analysis.load import RunDataError, load_run
    from analysis.regression import parse_thresholds

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
    from loadtest.mock.config import MockConfig, load_config
    from loadtest.mock.faults import parse_faults

    try:
        mock = load_config(scenario.mock_config) if scenario.mock_config else MockConfig()
        parse_faults(scenario.faults)
    except (OSError, ValueError) as e:
        raise config.ConfigError(f"mock: {e}") from None
    unknown = [v for v in scenario.variants if v not in mock.variants]
    if unknown and mock.strict_variants:
        raise config.ConfigError(f"variant(s) {', '.join(unknown)} unknown to the mock; it serves "
                                 f"{', '.join(mock.variants)} and is strict (strict_variants = true in "
                                 f"{scenario.mock_config}); declare them there or drop strict_variants")


def execute(scenario: config.Scenario, extra_locust_args: list[str] = ()) -> int:
    """The whole run. Returns the exit code."""
    preflight(scenario)
    if scenario.insecure:
        print(tls.INSECURE_WARNING, file=sys.stderr)
    try:
        run_dir = runfolder.new_run_dir(scenario.out)
        print(f"Run folder: {run_dir}")
        started = time.time()
        runfolder.update_run_json(run_dir, status="starting", started=started, target=scenario.target,
                                  pid=os.getpid(), config=scenario.raw(),
                                  config_hash=runfolder.config_hash(scenario.raw()),
                                  users=scenario.users, spawn_rate=scenario.spawn_rate,
                                  duration_s=scenario.duration, turns=scenario.raw()["turns"],
                                  think_time=scenario.raw()["think_time"],
                                  regions=list(scenario.regions), variants=list(scenario.variants),
                                  **runfolder.versions())
    except runfolder.WriteFailed as e:
        print(f"loadtest: {e}; nothing was sent (free some space, or pick another --out)",
              file=sys.stderr)
        return EXIT_RUN_FAILED
    status, code, reason = "failed", EXIT_RUN_FAILED, ""
    write_failure: runfolder.WriteFailed | None = None
    display = ProgressDisplay(None if scenario.shape else scenario.duration)
    watcher = None
    with Signals() as signals:
        try:
            with (mock_server(scenario, run_dir / "mock.log") if needs_mock(scenario) else _nothing()) as mock_urls:
                base_urls = resolve_base_urls(scenario, mock_urls)
                runfolder.update_run_json(run_dir, base_urls=base_urls)
                cmd = locust_command(scenario, run_dir, base_urls, list(extra_locust_args))
                announce_fleet(scenario)
                watcher = start_abort_watcher(scenario, run_dir, signals)
                rc = run_locust(cmd, run_dir, signals, display)
                breach = stop_abort_watcher(watcher)
                if mock_urls:
                    runfolder.update_run_json(run_dir, mock_open_conversations=open_conversations(mock_urls, scenario))
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
            print(f"loadtest: {e}; the load was stopped and the rows already written are kept; "
                  f"{e.advice}", file=sys.stderr)
        except RunFailed as e:
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
        print(f"Stopped at once; data kept in {run_dir}. Build the report with: "
              f"loadtest report {run_dir}", file=sys.stderr)
        return code
    return finish(run_dir, scenario, code)


def start_abort_watcher(scenario: config.Scenario, run_dir: Path, signals: Signals) -> abort.Watcher | None:
    """The live SLO watcher (see `loadtest.abort`), when some SLO may abort the run."""
    slos = abort.abortable(scenario)
    if not slos:
        return None

    def stop() -> None:
        if signals.proc is not None:
            stop_locust(signals.proc)  # the graceful path of a first Ctrl-C

    watcher = abort.Watcher(run_dir, slos, scenario.abort_grace, scenario.abort_window, stop,
                            warmup_s=scenario.warmup)
    watcher.start()
    print(f"Live SLO verdict every {abort.CHECK_INTERVAL_S:g} s over the last {scenario.abort_window:g} s, "
          f"from {scenario.abort_grace:g} s into the run: {'; '.join(s.expr for s in slos)}")
    return watcher


def stop_abort_watcher(watcher: abort.Watcher | None) -> abort.Breach | None:
    if watcher is None:
        return None
    watcher.close()
    return watcher.breach


@contextmanager
def _nothing():
    yield None


def finish(run_dir: Path, scenario: config.Scenario, code: int) -> int:
    """Report, SLO verdict and regression gate on whatever was measured, even after a failure
    or an interrupt."""
    if not any(run_dir.glob(records.REQUESTS_GLOB)):
        print(f"No requests were recorded; nothing to report. Logs: {run_dir}", file=sys.stderr)
        return code if code != EXIT_OK else EXIT_RUN_FAILED
    from analysis import regression
    from analysis.compare import against_baseline
    from analysis.load import RunDataError, load_run
    from analysis.report import format_stats_table, write_report
    from analysis.stats import compute_stats

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
                print(f"loadtest: cannot analyse the baseline: {e}; the report is built without it",
                      file=sys.stderr)
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
        print(f"loadtest: the report could not be built ({e}); the data is in {run_dir}; "
              f"retry with: loadtest report {run_dir}", file=sys.stderr)
        return code if code != EXIT_OK else EXIT_RUN_FAILED
    return code
