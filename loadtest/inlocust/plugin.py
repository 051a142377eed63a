"""Wires the tool into Locust: options, the run folder, the recorder and live statistics.

A locustfile calls `install(events)` once at import. Then:
- `init_command_line_parser`: every scenario setting becomes a Locust option (web UI form,
  locust.conf, LOADTEST_* environment variables);
- `test_start`: options are parsed into a `RunContext`, a run folder is opened (one per test
  start, so each start in the web UI gets its own), and the recorder starts writing;
- `request`: one row per request, and a sample for the live view;
- `test_stop`: the CSVs are flushed and closed, run.json is finalised.

Distributed (a master and workers, `--processes` or `loadtest worker`): only the master has a
run folder; workers ship their rows to it over Locust's message channel (`loadtest.inlocust.fleet`).

Two ways a test ends early, both without a traceback:
- a file of the run folder cannot be written (a full disk): nothing more could be recorded,
  so the users stop at once, without another request (`on_write_failure`; a master tells its
  workers too); run.json says `failed` and why, the files keep their whole rows, a headless
  Locust exits with code 3;
- the `loadtest` process that started this Locust is gone, however it ended (its lifeline,
  see `loadtest.processes`): the test stops as on Ctrl-C, with a short stop timeout, its
  output going to locust.log (`on_parent_lost`); run.json says `interrupted` and why.
`loadtest`'s stop signal (SIGINT, `processes.stop_locust`) enters Locust's Ctrl-C path from a
gevent callback (`on_stop_signal`), never as a KeyboardInterrupt in the middle of a message to a
worker or of a stop already under way.
`quit`: Locust's own CSVs (`loadtest.inlocust.locust_csv`) get their final numbers.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
import time
from pathlib import Path

import gevent
from gevent.socket import wait_read
from locust.runners import STATE_MISSING, STATE_RUNNING, MasterRunner, WorkerRunner

from analysis import records
from loadtest import config, processes, runfolder, safety, tls
from loadtest.exitcodes import EXIT_RUN_FAILED
from loadtest.inlocust import fleet
from loadtest.inlocust.arrivals import Arrivals
from loadtest.inlocust.chat import RunContext, ssl_context_factory
from loadtest.inlocust.live import LiveStats
from loadtest.inlocust.locust_csv import LocustCsv
from loadtest.inlocust.recorder import Recorder, open_csv
from loadtest.inlocust.shapes import use_shape
from loadtest.progress import PROGRESS_PREFIX, WRITE_FAILED_PREFIX
from loadtest.runfolder import WriteFailed

logger = logging.getLogger("loadtest")

PROGRESS_INTERVAL_S = 2.0
# Youngest-generation GC threshold during a test (CPython's default 700): each request leaves
# a few short-lived containers behind (context, request_meta, reply dicts), so with 700 the
# collector ran every ~100 requests; objects that die by reference count never wait for it.
GC_GEN0_THRESHOLD = 20_000
# When the loadtest process is gone: time for open conversations to close before users are
# stopped (short: nobody is waiting for this run any more, and its mock leaves soon).
PARENT_LOST_STOP_TIMEOUT_S = 1.0
HALT_MESSAGE = "loadtest_halt"  # master → workers: send nothing more, it could not be recorded


def recorded_config(scenario: config.Scenario, options, environ=None) -> dict:
    """The configuration of a test started from Locust itself (its command line or web UI):
    the scenario's options; settings Locust has no option for from LOADTEST_* variables
    (what `loadtest ui` hands over); users, spawn rate, run time and output folder as Locust
    holds them. (`loadtest run` records its own resolved scenario before Locust starts.)"""
    environ = os.environ if environ is None else environ
    values = scenario.raw()
    others = {s.env: environ[s.env] for s in config.SETTINGS if not s.locust and s.env in environ}
    try:
        handed = config.resolve(environ=others).raw()
        values.update({s.name: handed[s.name] for s in config.SETTINGS if not s.locust})
    except config.ConfigError as e:  # checked by whoever set them; record what is known
        logger.warning("loadtest: run.json keeps defaults for LOADTEST_* settings: %s", e)
    values.update(users=options.num_users, spawn_rate=options.spawn_rate, duration=float(options.run_time or 0), out=options.out)
    return values


class Plugin:
    """Holds the state of the current test inside one Locust process."""

    def __init__(self):
        self.environment = None
        self.run: RunContext | None = None
        self.live = LiveStats()
        self._progress = None
        self._watcher = None
        self.lost_workers: set[str] = set()
        self.collector: fleet.Collector | None = None  # master: the workers' rows → run folder
        self.shipper: fleet.Shipper | None = None  # worker: its rows → the master
        self._run_dir_option = ""  # --run-dir as given (the master fills it in for its workers)
        self.write_failure: WriteFailed | None = None
        self.parent_lost = False
        self.interrupted = False  # Locust's Ctrl-C path was entered (`_interrupt`)
        self.quitting = False  # Locust's shutdown has begun
        self.locust_csv: LocustCsv | None = None  # Locust's own CSVs of the current or last test

    # ---- options ----
    def add_options(self, parser) -> None:
        # Locust's own parser (not an argument group): only it knows include_in_web_ui.
        group = parser
        for s in config.SETTINGS:
            if s.locust:
                group.add_argument(s.flag, default=s.default, help=s.help, env_var=s.env, include_in_web_ui=True)
        group.add_argument("--run-dir", default="", include_in_web_ui=False, help="write this run's files here (default: a new folder under --out)")
        group.add_argument("--out", default="reports", include_in_web_ui=False, help="folder for run folders when --run-dir is not given")
        group.add_argument(
            "--progress-lines", action="store_true", include_in_web_ui=False, help="print machine-readable live progress lines (used by loadtest run)"
        )

    # ---- lifecycle ----
    def on_init(self, environment, **_kw) -> None:
        self.environment = environment
        self._register_fleet_messages(environment.runner)
        options = environment.parsed_options
        if options is None:
            return
        self._run_dir_option = options.run_dir
        try:  # fail fast, before any traffic, on a bad command line or locust.conf
            values = {s.name: getattr(options, s.name) for s in config.SETTINGS if s.locust}
            scenario = config.resolve(flags=values, environ={})
            safety.check_target(scenario.target, config.base_urls(scenario), scenario.yes)
            config.load_corpus(options.corpus)
            use_shape(environment, options.shape)
        except ValueError as e:
            sys.stderr.write(f"loadtest: {e}\n")
            raise SystemExit(2) from None
        if isinstance(environment.runner, WorkerRunner):
            environment.runner.register_message(HALT_MESSAGE, self._on_halt)
        lifeline = processes.lifeline_fd()
        if lifeline is not None:  # started by loadtest: stop when it is gone, or when it asks
            gevent.signal_handler(processes.PARENT_LOST_SIGNAL, self.on_parent_lost)
            gevent.signal_handler(processes.LOCUST_STOP_SIGNAL, self.on_stop_signal)
            gevent.spawn(self._watch_lifeline, lifeline)

    def on_test_start(self, environment, **_kw) -> None:
        started = time.time()  # before anything below can yield to users or arrivals
        options = environment.parsed_options
        runner = environment.runner
        is_master, is_worker = isinstance(runner, MasterRunner), isinstance(runner, WorkerRunner)
        self.live.reset()
        run_dir: Path | None = None
        self.write_failure, failure = None, None
        if not is_worker:  # a worker has no run folder: its rows go to the master's
            explicit = self._run_dir_option if is_master else options.run_dir
            try:
                run_dir = Path(explicit) if explicit else runfolder.new_run_dir(options.out)
                run_dir.mkdir(parents=True, exist_ok=True)
            except (WriteFailed, OSError) as e:
                logger.error("loadtest: cannot make the run folder %s: %s — fix it and start again", run_dir or options.out, e)
                environment.loadtest_run = None
                gevent.spawn_later(0, runner.stop)
                return
            if is_master:  # workers receive the master's options with the spawn message
                options.run_dir = str(run_dir)
        try:
            run = RunContext(options, run_dir, None, self.live)
        except ValueError as e:  # a bad value typed into the web UI form
            environment.loadtest_run = None  # users spawned meanwhile stop instead of using the old run
            logger.error("loadtest: %s — fix it and start again", e)
            gevent.spawn_later(0, runner.stop)
            return
        try:
            if is_worker:
                self._start_worker_run(run, runner, options)
            elif is_master:
                assert run_dir is not None  # every process but a worker has a run folder
                self.collector = fleet.Collector(run_dir, open_model=bool(run.scenario.arrival_rate), on_failure=self.on_write_failure)
            else:
                assert run_dir is not None
                run.recorder = Recorder.in_folder(run_dir, "local", run.redact, self.on_write_failure)
                if run.scenario.arrival_rate:
                    # Nothing is planned after --duration.
                    end = started + options.run_time if getattr(options, "run_time", None) else None
                    run.arrivals = Arrivals.for_scenario(
                        run.scenario, open_csv(run_dir / records.ARRIVALS_CSV, records.ARRIVAL_COLUMNS), end=end, on_failure=self.on_write_failure
                    )
        except WriteFailed as e:
            failure = e
        run.forward_live = is_worker
        if run.tls.insecure:
            logger.warning("loadtest: %s", tls.INSECURE_WARNING)
        context_factory = staticmethod(ssl_context_factory(run.tls))
        for user_class in environment.user_classes:  # FastHttpUser reads these at creation
            user_class.network_timeout = user_class.connection_timeout = run.scenario.request_timeout
            user_class.insecure = run.tls.insecure
            user_class.ssl_context_factory = context_factory
        self.run = run
        environment.loadtest_run = run
        gc.freeze()  # what exists now lives for the whole test: keep it out of every collection
        gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
        if not is_worker and run_dir is not None and failure is None:
            # `loadtest run` recorded the whole scenario already (Locust's options hold only part of
            # it); a plain `locust -f` run records what Locust has.
            data = runfolder.read_run_json(run_dir)
            known = {}
            if not data.get("config"):
                config_used = recorded_config(run.scenario, options)
                known = {"config": config_used, "config_hash": runfolder.config_hash(config_used)}
            try:
                if self.locust_csv is not None:  # the last test's, kept for Locust's final numbers
                    self.locust_csv.close()
                self.locust_csv = LocustCsv(environment, run_dir, on_failure=self.on_write_failure)
                runfolder.update_run_json(
                    run_dir,
                    **runfolder.versions(),
                    status="running",
                    started=started,
                    target=run.scenario.target,
                    base_urls=run.base_urls,
                    regions=list(run.scenario.regions),
                    variants=list(run.scenario.variants),
                    tls=run.tls.record(),
                    connections=run.scenario.connections,
                    # the process whose end ends the run: loadtest's, else ours
                    pid=data.get("pid", os.getpid()),
                    **known,
                )
            except WriteFailed as e:
                failure = e
        if failure is not None:
            self.on_write_failure(failure)
        if options.progress_lines and not is_worker:
            self._progress = gevent.spawn(self._print_progress)
        self.lost_workers = set()
        if is_master:
            self._watcher = gevent.spawn(self._watch_workers, runner)

    def on_spawning_complete(self, user_count, **_kw) -> None:
        """The open model's pool is spawned: its schedule may start (k6 pre-allocates VUs)."""
        if self.run is not None and self.run.arrivals:
            self.run.arrivals.start(user_count)

    @staticmethod
    def _start_arrivals_when_spawned(runner, arrivals: Arrivals) -> None:
        while runner.worker_state != STATE_RUNNING and not arrivals.stopped:
            gevent.sleep(0.01)
        arrivals.start(runner.user_count)

    def on_test_stopping(self, **_kw) -> None:
        """Plan no more conversations; users waiting for one leave at once."""
        if self.run is not None and self.run.arrivals:
            self.run.arrivals.stop()

    def on_request(self, request_type, name, response_time, response_length, response=None, context=None, exception=None, start_time=None, **_kw) -> None:
        """Locust `request` event: a row of requests.csv and a live sample (the hot path:
        arguments passed on as they came, no keyword dicts rebuilt)."""
        run = self.run
        if run is None:
            return
        if context is None:
            context = {}
        if run.recorder:
            run.recorder.row(name, response_time, response_length, response, context, exception, start_time)
        self.live.add_request(
            context.get("region", ""), context.get("variant", ""), context.get("endpoint", ""), response_time, exception is None, start_time, run.forward_live
        )

    def on_test_stop(self, environment, **_kw) -> None:
        run, self.run = self.run, None
        if self._progress:
            self._progress.kill(block=False)
        self._progress = None
        if run is None:
            self._stop_watching_workers()
            return
        if run.recorder:
            run.recorder.close()
        if run.arrivals:
            run.arrivals.close()
        if self.shipper:
            self._report_stats_now(environment)
            self.shipper.finish()
        if run.run_dir is not None:
            # The watcher runs on while the master waits for its workers' last rows.
            worker_rows = self._finish_master_run(environment.runner) if self.collector else None
            self._stop_watching_workers()
            data = runfolder.read_run_json(run.run_dir)
            if self.lost_workers:
                logger.warning("loadtest: lost worker(s) during the run: %s", ", ".join(sorted(self.lost_workers)))
            extra = {"workers": sorted(worker_rows), "worker_rows": worker_rows} if worker_rows is not None else {}
            try:
                runfolder.update_run_json(
                    run.run_dir,
                    ended=time.time(),
                    lost_workers=sorted(self.lost_workers),
                    status="completed" if data.get("status") == "running" else data.get("status", "completed"),
                    **extra,
                )
            except WriteFailed as e:
                if self.write_failure is None:
                    self.on_write_failure(e)

    # ---- ending early ----
    def on_write_failure(self, failure: WriteFailed) -> None:
        """A file of the run folder could not be written: nothing more could be recorded, so
        nothing more is sent. Users stop at once (no closes: they would go unrecorded), every
        writer keeps its whole rows, run.json says failed (when it still can)."""
        if self.write_failure is not None:
            return
        self.write_failure = failure
        environment, run = self.environment, self.run
        if run is not None:
            run.halted = True
        if environment.parsed_options.progress_lines:  # first: loadtest names this file
            sys.stdout.write(WRITE_FAILED_PREFIX + failure.to_json() + "\n")
            sys.stdout.flush()
        logger.error("loadtest: %s; the load was stopped", failure)
        if isinstance(environment.runner, MasterRunner):
            environment.runner.send_message(HALT_MESSAGE)  # every worker, at once
        # The rest in a greenlet of its own: this may run in a writer's greenlet, which the
        # writers' close() kills.
        gevent.spawn(self._stop_after_write_failure, environment, run, failure)

    def _stop_after_write_failure(self, environment, run: RunContext | None, failure: WriteFailed) -> None:
        if run is not None:
            for writer in (run.recorder, run.arrivals, self.locust_csv):
                if writer:
                    writer.close()
            if run.run_dir is not None:
                try:
                    runfolder.update_run_json(run.run_dir, status="failed", ended=time.time(), reason=f"{failure}; the load was stopped")
                except WriteFailed:
                    pass
        stop_timeout, environment.stop_timeout = environment.stop_timeout, 0  # whatever users would send is lost
        if environment.web_ui is not None and not environment.parsed_options.headless:
            environment.runner.stop()  # the UI stays up: free some space, start again
            environment.stop_timeout = stop_timeout
        else:
            environment.process_exit_code = EXIT_RUN_FAILED
            environment.runner.quit()

    def on_quitting(self, **_kw) -> None:
        self.quitting = True

    def on_quit(self, **_kw) -> None:
        """Locust is quitting, its final numbers known: the last write of its CSVs."""
        if self.locust_csv is not None:
            self.locust_csv.close()

    def _on_halt(self, environment, msg, **_kw) -> None:
        if self.run is not None:
            self.run.halted = True

    def _watch_lifeline(self, fd: int) -> None:
        wait_read(fd)  # readable only at end of file: the loadtest process is gone
        self.on_parent_lost()

    def on_parent_lost(self) -> None:
        """The loadtest process that started this Locust is gone: stop as on Ctrl-C, quickly."""
        if self.parent_lost:
            return
        self.parent_lost = True
        run = self.run
        _detach_output(run.run_dir / "locust.log" if run and run.run_dir else None)
        parent = os.environ.get(processes.LIFELINE_ENV, "").partition(":")[0]
        logger.warning("loadtest: the loadtest process (pid %s) that started this Locust is gone; stopping the test", parent)
        if run is not None and run.run_dir is not None:
            try:
                runfolder.update_run_json(
                    run.run_dir, status="interrupted", reason=f"the loadtest process (pid {parent}) ended during the run; Locust stopped the load by itself"
                )
            except WriteFailed:
                pass
        environment = self.environment
        environment.stop_timeout = min(environment.stop_timeout or 0.0, PARENT_LOST_STOP_TIMEOUT_S)
        self._interrupt()  # Locust's own graceful path, as loadtest would have asked

    def on_stop_signal(self) -> None:
        """`loadtest` asks for Locust's graceful stop (SIGINT: a first Ctrl-C, a live SLO abort,
        locust.log unwritable), handled here as a gevent callback rather than by Python's own
        handler, which raises KeyboardInterrupt in whatever code runs at that instant: in the
        middle of a ZMQ message to a worker (that worker then reads garbage, its receive loop
        dies, and it runs its users until Locust's 60 s heartbeat timeout), or of the stop after
        a failed write (which then never happens). A stop after a failed write, or Locust's
        shutdown, already under way is left to finish."""
        if self.write_failure is None and not self.quitting:
            self._interrupt()

    def _interrupt(self) -> None:
        """Locust's Ctrl-C, once: KeyboardInterrupt in its main greenlet, parked where Locust waits
        for the test to end and catches it (then stops the users within --stop-timeout, fires
        test_stop, writes its statistics and exits)."""
        if self.interrupted:
            return
        self.interrupted = True
        hub = gevent.get_hub()
        hub.loop.run_callback(hub.parent.throw, KeyboardInterrupt)

    # ---- distributed: rows travel from the workers to the master's run folder (fleet.py) ----
    def _register_fleet_messages(self, runner) -> None:
        if isinstance(runner, MasterRunner):
            runner.register_message(fleet.ROWS, self._on_rows_message)
            runner.register_message(fleet.DONE, self._on_done_message)
        elif isinstance(runner, WorkerRunner):
            runner.register_message(fleet.ACK, self._on_ack_message)

    def _start_worker_run(self, run: RunContext, runner, options) -> None:
        """A worker's test: its recorder and arrivals write into the outbox of a new shipper."""
        if self.shipper:
            self.shipper.stop()  # the previous test's unacknowledged batches are not this test's
        run_id = Path(options.run_dir).name if options.run_dir else ""
        self.shipper = shipper = fleet.Shipper(runner.send_message, run_id)
        outbox = shipper.outbox
        run.recorder = Recorder(
            outbox.stream("requests"), outbox.stream("conversations"), outbox.stream("connections"), fleet.worker_name(runner.worker_index), run.redact
        )
        if run.scenario.arrival_rate:
            # Each of N workers offers 1/N of the rate.
            share = 1.0 / max(getattr(options, "expect_workers", 1) or 1, 1)
            run.arrivals = Arrivals.for_scenario(run.scenario, outbox.stream("arrivals"), share)
            # A worker is stopped by its master, and does not fire spawning_complete locally.
            gevent.spawn(self._start_arrivals_when_spawned, runner, run.arrivals)

    @staticmethod
    def _report_stats_now(environment) -> None:
        """Send Locust's statistics to the master now, as its worker does on "quit" (and
        before our accounting, so the master has both when it sees "done"): a worker that
        stopped sleeps --stop-timeout before it handles "quit", past the master's exit, and
        the master's locust_stats.csv would miss the last seconds."""
        runner = environment.runner
        data: dict = {}
        environment.events.report_to_master.fire(client_id=runner.client_id, data=data)
        runner.send_message("stats", data)

    def _worker_of(self, msg) -> str:
        return fleet.worker_name(self.environment.runner.get_worker_index(msg.node_id))

    def _on_rows_message(self, environment, msg, **_kw) -> None:
        collector = self.collector
        if collector is None or not collector.on_rows(self._worker_of(msg), msg.node_id, msg.data):
            logger.warning("loadtest: rows from %s arrived for another test than the current one; not written", self._worker_of(msg))
        environment.runner.send_message(fleet.ACK, {"run": msg.data.get("run"), "seq": msg.data.get("seq")}, client_id=msg.node_id)

    def _on_done_message(self, environment, msg, **_kw) -> None:
        if self.collector:
            self.collector.on_done(self._worker_of(msg), msg.node_id, msg.data)

    def _on_ack_message(self, environment, msg, **_kw) -> None:
        if self.shipper:
            self.shipper.on_ack(msg.data)

    def _finish_master_run(self, runner) -> dict[str, dict]:
        """Wait for the workers' last rows and accounting; close the files.

        Locust's headless end (`MasterRunner.quit`, also on Ctrl-C) fires test_stop here
        before telling the workers anything, then sends them "quit" and exits within half a
        second: the rows of their last second and of the conversations they close while
        stopping would never arrive. So workers still connected that have not said done are
        sent Locust's "quit" now (a worker stops its users within --stop-timeout, closing
        their conversations; its test_stop ships the last rows, its statistics and the
        accounting; then it exits) and waited for. Not "stop": a stopped worker sleeps
        --stop-timeout before it handles the "quit" that follows, keeping the run alive for
        nothing. After a web UI Stop the workers have stopped and said done already.
        """
        collector = self.collector
        assert collector is not None

        def pending() -> dict[str, str]:
            names = {node.id: fleet.worker_name(runner.get_worker_index(node.id)) for node in runner.clients.all if node.state != STATE_MISSING}
            return {name: node for node, name in names.items() if not collector.said_done(name)}

        for node in pending().values():
            runner.send_message("quit", client_id=node)
        collector.wait_until_complete(lambda: set(pending()), timeout=self.environment.stop_timeout + fleet.DONE_TIMEOUT_S)
        self.collector = None
        return collector.close()

    # ---- distributed: workers forward live samples to the master ----
    def on_report_to_master(self, client_id, data, **_kw) -> None:
        data["loadtest_live"] = self.live.drain()

    def on_worker_report(self, client_id, data, **_kw) -> None:
        self.live.ingest(data.get("loadtest_live", []))

    def _stop_watching_workers(self) -> None:
        if self._watcher:
            self._watcher.kill(block=False)
        self._watcher = None

    def _watch_workers(self, runner) -> None:
        """A worker that stops sending heartbeats is lost: the run goes on, the report names it."""
        while True:
            gevent.sleep(1.0)
            for node in runner.clients.missing:
                name = fleet.worker_name(runner.get_worker_index(node.id))
                if name not in self.lost_workers:
                    logger.warning("loadtest: %s (%s) stopped responding; the run goes on", name, node.id)
                    self.lost_workers.add(name)
                    if self.collector:
                        self.collector.lost(name, node.id)

    def _print_progress(self) -> None:
        runner = self.environment.runner
        while True:
            gevent.sleep(PROGRESS_INTERVAL_S)
            snap = self.live.snapshot()
            snap["users"] = runner.user_count
            shape = self.environment.shape_class
            if shape is not None:  # a shape decides the run time (the parent cannot import shapes)
                snap["duration_s"] = shape.total_s
            sys.stdout.write(PROGRESS_PREFIX + json.dumps(snap) + "\n")
            sys.stdout.flush()


plugin = Plugin()


def _detach_output(log_path: Path | None) -> None:
    """Nobody reads our stdout any more: send it (and stderr) to locust.log, else nowhere."""
    if os.isatty(1):
        return
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if log_path else -1
    except OSError:
        fd = -1
    if fd < 0:
        fd = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def install(events) -> Plugin:
    """Register the listeners once per process (a locustfile may be imported twice)."""
    if not getattr(events, "_loadtest_installed", False):
        events.init_command_line_parser.add_listener(plugin.add_options)
        events.init.add_listener(plugin.on_init)
        events.test_start.add_listener(plugin.on_test_start)
        events.request.add_listener(plugin.on_request)
        events.spawning_complete.add_listener(plugin.on_spawning_complete)
        events.test_stopping.add_listener(plugin.on_test_stopping)
        events.test_stop.add_listener(plugin.on_test_stop)
        events.quitting.add_listener(plugin.on_quitting)
        events.quit.add_listener(plugin.on_quit)
        events.report_to_master.add_listener(plugin.on_report_to_master)
        events.worker_report.add_listener(plugin.on_worker_report)
        from loadtest.inlocust import webui  # the web UI's Regions tab, report and CSV routes

        webui.install(events, plugin)
        events._loadtest_installed = True
    return plugin
