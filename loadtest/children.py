"""Our two kinds of child process, the mock and Locust: starting them, knowing they are ready,
reading what they say, and relaying the parent's signals to them.

    mock_server(scenario, log)      the embedded mock on free loopback ports (a context manager)
    locust_command(scenario, …)     Locust's command line, from the settings table
    LocustOutput(proc, log)         drains Locust's stdout into locust.log, a callback per line
    Signals()                       first Ctrl-C/SIGTERM/SIGHUP: Locust's graceful stop; second: kill

`loadtest run`, `loadtest ui`, `loadtest capacity` and `loadtest check` start their children
here, and only here; every child is started with `processes.spawn()` (its life tied to this
process) and ended with `processes.stop()`/`processes.stop_locust()`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any, Callable, Iterator, Sequence, TextIO

import httpx

from loadtest import config, processes, runfolder
from loadtest.inlocust import LOCUSTFILE
from loadtest.progress import PROGRESS_PREFIX, WRITE_FAILED_PREFIX

MOCK_START_TIMEOUT_S = 20.0
MOCK_CA_FILE = "mock-ca.pem"  # the TLS mock's CA certificate, in the run folder
LOCUST_UI_START_TIMEOUT_S = 60.0


class RunFailed(RuntimeError):
    """A child could not be started or did not become ready (exit code 3)."""


def locustfile() -> Path:
    if not LOCUSTFILE.exists():
        raise RunFailed(f"the packaged locustfile is missing at {LOCUSTFILE}; reinstall polyai-loadtest")
    return LOCUSTFILE


# --------------------------------------------------------------------------- the mock


@contextmanager
def mock_server(scenario: config.Scenario, log_path: Path) -> Iterator[dict[str, str]]:
    """Start the embedded mock on free loopback ports; yield region → base URL; stop it on exit.

    With --mock-tls it serves HTTPS; its throwaway CA is written beside the log
    (mock-ca.pem) and becomes the scenario's --ca-bundle unless one was given."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        cmd = [
            sys.executable,
            "-m",
            "loadtest.mock.cli",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--api-version",
            scenario.api_version,
            "--seed",
            str(scenario.mock_seed),
            "--latency-scale",
            str(scenario.mock_latency_scale),
        ]
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
            processes.stop(proc)


def mock_stats(url: str, scenario: config.Scenario) -> dict | None:
    """The mock's /_mock/stats at this base URL (over TLS with the run's policy), or None."""
    try:
        return httpx.get(f"{url}/_mock/stats", timeout=2, verify=config.tls_policy(scenario).context()).json()
    except (httpx.HTTPError, ValueError):
        return None


def open_conversations(base_urls: dict[str, str], scenario: config.Scenario) -> dict[str, int]:
    """Per region, conversations the mock still holds open (should be 0 after a run)."""
    stats = {region: mock_stats(url, scenario) for region, url in base_urls.items()}
    return {region: s["open_conversations"] for region, s in stats.items() if s and "open_conversations" in s}


# --------------------------------------------------------------------------- Locust's command line


def option_value(name: str, value: Any, base_urls: dict[str, str]) -> str:
    """A resolved setting back in the string form its option parser accepts, as a person would
    write it (the web UI's start form shows these): 'us,uk' rather than 'us:1,uk:1', '10s'."""
    if name == "base_urls":
        return ",".join(f"{r}={u}" for r, u in base_urls.items())
    if name == "arrival_rate" and "*" in value:
        return f"{value['*']:g}"
    if name == "arrival_steps":
        return ",".join(f"{k}={v:g}" for k, v in value.items())
    if isinstance(value, dict) and name in ("regions", "variants") and set(value.values()) <= {1.0}:
        return ",".join(value)
    if isinstance(value, dict):
        return json.dumps(value) if name == "integration_attributes" else ",".join(f"{k}:{v:g}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}s" if config.SETTINGS_BY_NAME[name].parse is config.parse_duration else f"{value:g}"
    if isinstance(value, tuple):
        return f"{value[0]:g}-{value[1]:g}"
    if isinstance(value, list):  # slos, faults
        return ",".join(value)
    return str(value)


def locust_command(
    scenario: config.Scenario,
    base_urls: dict[str, str],
    *,
    run_dir: Path | None = None,
    web_port: int | None = None,
    stop_timeout_s: float | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """Locust with the packaged user: headless, writing `run_dir` (`loadtest run`, a capacity
    search's region), or its web UI on 127.0.0.1:`web_port` (`loadtest ui`: each Start opens a
    run folder under --out). Every setting Locust has an option for (`config.SETTINGS`) is
    passed as that option."""
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile())]
    stop_timeout_s = scenario.stop_timeout if stop_timeout_s is None else stop_timeout_s
    run_time = ["--run-time", f"{max(int(round(scenario.duration)), 1)}s"]
    if web_port is None:
        cmd.append("--headless")
        if not scenario.shape:  # a shape decides users and run time itself
            # The open model's pool is spawned at once (idle users cost nothing), ready before
            # the first arrival, as k6 pre-allocates VUs.
            spawn_rate = scenario.users if scenario.arrival_rate else scenario.spawn_rate
            cmd += ["--users", str(scenario.users), "--spawn-rate", f"{spawn_rate:g}", *run_time]
        # No --csv: the plugin writes Locust's CSVs into the run folder (loadtest.inlocust.locust_csv).
        cmd += ["--only-summary", "--loglevel", "WARNING", "--run-dir", str(run_dir), "--progress-lines"]
    else:
        cmd += [
            "--web-host",
            "127.0.0.1",
            "--web-port",
            str(web_port),
            "--users",
            str(scenario.users),
            "--spawn-rate",
            f"{scenario.spawn_rate:g}",
            "--out",
            str(Path(scenario.out).resolve()),
        ]
        if scenario.sources.get("duration") != "default":  # the UI's default: run until Stop
            cmd += run_time
    cmd += ["--stop-timeout", f"{stop_timeout_s:g}", "--exit-code-on-error", "0"]
    if scenario.processes:  # a master and N worker processes on this machine
        cmd += ["--processes", str(scenario.processes), *processes.master_port_args()]
    cmd += fleet_master_args(scenario)  # a master and N `loadtest worker`s elsewhere
    for s in config.SETTINGS:
        if s.locust:
            cmd += [s.flag, option_value(s.name, scenario.values[s.name], base_urls)]
    return cmd + list(extra)


def fleet_master_args(scenario: config.Scenario) -> list[str]:
    """Locust's master flags for `--workers N`: listen, and start once N workers are in."""
    if not scenario.workers:
        return []
    return [
        "--master",
        "--expect-workers",
        str(scenario.workers),
        "--master-bind-host",
        scenario.master_bind_host,
        "--master-bind-port",
        str(scenario.master_bind_port),
    ]


def worker_command(master_host: str, master_port: int, processes: int, extra: Sequence[str] = ()) -> list[str]:
    """A Locust worker with the packaged user: settings come from the master with each start."""
    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile()), "--worker", "--master-host", master_host, "--master-port", str(master_port)]
    if processes:
        cmd += ["--processes", str(processes)]
    return cmd + list(extra)


def spawn_locust(cmd: list[str], **popen_kwargs: Any) -> subprocess.Popen:
    """Start Locust; its output comes as text lines on `proc.stdout` (see `LocustOutput`)."""
    # No stdin: Locust's key listener would switch the terminal's input mode.
    return processes.spawn(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, **popen_kwargs)


def wait_for_http(url: str, proc: subprocess.Popen, give_up: Callable[[], bool] = lambda: False, timeout: float = LOCUST_UI_START_TIMEOUT_S) -> bool:
    """Until `url` answers 200 (True), or the child ends, `give_up()` or the timeout (False)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:  # one client: each new one loads the CA bundle (~40 ms)
        while time.monotonic() < deadline:
            if proc.poll() is not None or give_up():
                return False
            try:
                if client.get(url).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    return False


# --------------------------------------------------------------------------- Locust's output


class LocustOutput:
    """Drains a Locust child's stdout: its progress lines to `on_progress`, every other line
    into locust.log and to `on_line`, its errors (lines from `loadtest:`, tracebacks) echoed to
    stderr unless we asked it to stop (`stop()`, or `quiet()` says so: its dying traceback is
    expected then).

    A file of the run folder that cannot be written ends in `failure` (a WriteFailed, raised by
    the caller once Locust has ended): Locust says so on a line of its own and stops its load;
    when locust.log itself fails first, Locust is asked to stop here. `drain()` runs until Locust
    closes its output, inline or in a thread (`start()`, `join()`).
    """

    def __init__(
        self,
        proc: subprocess.Popen,
        log_path: Path,
        *,
        on_line: Callable[[str], None] | None = None,
        on_progress: Callable[[dict], None] | None = None,
        quiet: Callable[[], bool] = lambda: False,
        echo_prefix: str = "",
    ):
        self.proc, self.log_path = proc, log_path
        self.on_line, self.on_progress, self.quiet, self.echo_prefix = on_line, on_progress, quiet, echo_prefix
        self.stopping = False  # we asked Locust to stop
        self.failure: runfolder.WriteFailed | None = None
        self._thread: threading.Thread | None = None

    def stop(self) -> None:
        """Locust's graceful stop (`processes.stop_locust`), noting that we asked."""
        self.stopping = True
        processes.stop_locust(self.proc)

    def drain(self) -> None:
        try:
            log = open(self.log_path, "w", encoding="utf-8", buffering=1)  # line by line: a full disk shows at once
        except OSError as e:
            log = None
            self._failed(runfolder.WriteFailed(self.log_path, e))
        assert self.proc.stdout is not None, "start Locust with spawn_locust(): its output is read here"
        for line in self.proc.stdout:
            if line.startswith(PROGRESS_PREFIX):
                if self.on_progress is not None:
                    self.on_progress(json.loads(line[len(PROGRESS_PREFIX) :]))
                continue
            if line.startswith(WRITE_FAILED_PREFIX):  # Locust stopped its load itself
                self.failure = self.failure or runfolder.WriteFailed.from_json(line[len(WRITE_FAILED_PREFIX) :])
                continue
            if log is not None:
                try:
                    log.write(line)
                except OSError as e:
                    _close_quietly(log)
                    log = None
                    self._failed(runfolder.WriteFailed(self.log_path, e))
            if self.on_line is not None:
                self.on_line(line)
            if (line.startswith("loadtest:") or "Traceback" in line) and self.failure is None and not self.stopping and not self.quiet():
                sys.stderr.write(self.echo_prefix + line)
        if log is not None:
            try:
                log.close()
            except OSError as e:
                self.failure = self.failure or runfolder.WriteFailed(self.log_path, e)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.drain, daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _failed(self, failure: runfolder.WriteFailed) -> None:
        """locust.log cannot be written: nothing more will be; ask Locust to stop, unless it
        said first that it could not write (it is stopping its load already)."""
        if self.failure is None and self.proc.poll() is None and not self.stopping:
            self.stop()
        self.failure = self.failure or failure


def _close_quietly(f: IO[str]) -> None:
    try:
        f.close()
    except OSError:  # its buffered tail could not be written either
        pass


# --------------------------------------------------------------------------- the parent's signals


class Signals:
    """First SIGINT/SIGTERM/SIGHUP: Locust's graceful stop (`proc`, when set). Second: kill now.

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

    def __enter__(self) -> Signals:
        self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.first = self.first or signal.Signals(signum).name
        if signum == signal.SIGHUP:
            forgive_output()
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.count == 1:
            sys.stderr.write(f"\nStopping ({signal.Signals(signum).name}): {self.stopping_message} (press Ctrl-C again to stop at once)…\n")
            processes.stop_locust(self.proc)
        else:
            self.proc.kill()


class _ForgivingStream:
    """A text stream whose writes stop failing once its terminal or pipe is gone."""

    def __init__(self, stream: TextIO) -> None:
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

    def __getattr__(self, name: str) -> Any:  # the rest of the stream's interface, as it is
        return getattr(self._stream, name)


def forgive_output() -> None:
    """After a hangup: stdout and stderr drop what they can no longer deliver."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, _ForgivingStream):
            setattr(sys, name, _ForgivingStream(stream))
