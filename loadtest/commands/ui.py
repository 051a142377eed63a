"""`loadtest ui`: run load tests from Locust's web UI.

    mock (unless a real target) → Locust's web UI on 127.0.0.1 → you start/stop tests in the browser

The mock serves every region on loopback; its base URLs are passed to Locust as
`--base-urls`, so the start form shows them next to every other setting (regions and
weights, variants, turns, think time, corpus, target, account, project, …; defaults come
from the same layering as `loadtest run`: defaults < --config file < LOADTEST_* < flags).
Credentials (POLYAI_API_KEY / POLYAI_TOKEN) are read from the environment only: they are
never options, never in the form.

Each Start opens a new run folder under --out; Stop closes the open conversations (within
--stop-timeout) and finalises the CSVs. The UI's Regions and Conversations tabs, the report
and the CSV downloads come from `loadtest.inlocust.webui`.

Ctrl-C (or SIGTERM, or SIGHUP) stops everything: Locust stops its users gracefully, then the mock
stops. A second Ctrl-C kills Locust at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import webbrowser
from contextlib import contextmanager
from pathlib import Path

from loadtest import config, processes
from loadtest.exitcodes import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE

UI_START_TIMEOUT_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from loadtest.commands.arguments import add_scenario_arguments

    add_scenario_arguments(parser)
    parser.add_argument("--web-port", type=int, default=0, metavar="PORT",
                        help="port of the web UI on 127.0.0.1 (default: a free port)")
    parser.add_argument("--open", action="store_true", help="open the UI in a web browser")
    parser.add_argument("--ready-file", metavar="PATH",
                        help='write {"url", "base_urls", "mock", "out"} as JSON here once the UI answers')
    parser.add_argument("locust_args", nargs="*", metavar="-- LOCUST_ARGS",
                        help="extra arguments passed to Locust after --")


def stop_timeout(scenario: config.Scenario) -> float:
    """Unless set, long enough for an in-flight respond and the close that follows it."""
    if scenario.sources.get("stop_timeout") != "default":
        return scenario.stop_timeout
    return max(scenario.stop_timeout, 2 * scenario.request_timeout)


def form_value(name: str, value, base_urls: dict[str, str]) -> str:
    """A setting as the start form should show it: 'us,uk' rather than 'us:1,uk:1'."""
    from loadtest.commands.run import flag_value

    if isinstance(value, dict) and name in ("regions", "variants") and set(value.values()) <= {1.0}:
        return ",".join(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}s" if config.SETTINGS_BY_NAME[name].parse is config.parse_duration else f"{value:g}"
    return flag_value(name, value, base_urls)


def form_base_urls(scenario: config.Scenario, mock_urls: dict[str, str] | None) -> dict[str, str]:
    """Every region the mock serves (so a region added in the form still hits the mock),
    with configured overrides on top."""
    return {**(mock_urls or {}), **scenario.base_urls}


def locust_command(scenario: config.Scenario, base_urls: dict[str, str], web_port: int,
                   extra: list[str] = ()) -> list[str]:
    from loadtest.commands.run import fleet_master_args, locustfile

    cmd = [sys.executable, "-m", "locust", "-f", str(locustfile()),
           "--web-host", "127.0.0.1", "--web-port", str(web_port),
           "--users", str(scenario.users), "--spawn-rate", f"{scenario.spawn_rate:g}",
           "--stop-timeout", f"{stop_timeout(scenario):g}",
           "--out", str(Path(scenario.out).resolve()), "--exit-code-on-error", "0"]
    if scenario.processes:  # a master with the web UI and N worker processes
        cmd += ["--processes", str(scenario.processes), *processes.master_port_args()]
    cmd += fleet_master_args(scenario)  # a master with the web UI and N `loadtest worker`s
    if scenario.sources.get("duration") != "default":  # the UI's default: run until Stop
        cmd += ["--run-time", f"{max(int(round(scenario.duration)), 1)}s"]
    for s in config.SETTINGS:
        if s.locust:
            cmd += [s.flag, form_value(s.name, scenario.values[s.name], base_urls)]
    return cmd + list(extra)


def wait_until_up(url: str, proc: subprocess.Popen, signals, timeout: float = UI_START_TIMEOUT_S) -> bool:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None or signals.count:
            return False
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


@contextmanager
def _nothing():
    yield None


def run(args: argparse.Namespace) -> int:
    from loadtest.commands import run as runner
    from loadtest.commands.arguments import scenario_from_args

    scenario = scenario_from_args(args)
    out = Path(scenario.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runner.preflight(scenario)  # loopback unless --target real --yes (asks on a terminal)
    needs_mock = runner.needs_mock(scenario)
    port = args.web_port or processes.free_port()
    url = f"http://127.0.0.1:{port}"
    with runner.Signals() as signals:
        try:
            with (runner.mock_server(scenario, out / "ui-mock.log") if needs_mock else _nothing()) as mock_urls:
                if signals.count:
                    return EXIT_OK
                base_urls = form_base_urls(scenario, mock_urls)
                if mock_urls:
                    print("Mock Chat API: " + "  ".join(f"{r}={u}" for r, u in mock_urls.items()))
                env = dict(os.environ)
                for s in config.SETTINGS:  # settings Locust has no option for, so run.json holds them
                    if not s.locust and scenario.sources.get(s.name) != "default":
                        env[s.env] = form_value(s.name, scenario.values[s.name], base_urls)
                cmd = locust_command(scenario, base_urls, port, list(args.locust_args or []))
                proc = processes.spawn(cmd, env=env, stdin=subprocess.DEVNULL)
                signals.proc = proc
                if not wait_until_up(url, proc, signals):
                    if proc.poll() is None:
                        proc.terminate()
                    rc = proc.wait()
                    if signals.count:
                        return EXIT_OK
                    print(f"loadtest: the Locust web UI did not come up (exit code {rc}"
                          f"{'; is port %d in use?' % port if args.web_port else ''})", file=sys.stderr)
                    return EXIT_USAGE if rc == 2 else EXIT_RUN_FAILED
                print(f"Locust web UI: {url}   (fill in the form and press Start; "
                      f"Ctrl-C here stops everything)")
                print(f"Run folders: {out}/<run-id>/ (report and CSVs: the UI's Download Data tab)")
                sys.stdout.flush()
                if args.ready_file:
                    ready = Path(args.ready_file)
                    tmp = ready.with_name(ready.name + ".tmp")
                    tmp.write_text(json.dumps({"url": url, "base_urls": base_urls,
                                               "mock": mock_urls or {}, "out": str(out),
                                               "locust_pid": proc.pid}))
                    os.replace(tmp, ready)
                if args.open:
                    webbrowser.open(url)
                rc = proc.wait()
                processes.end_process_group(proc.pid)  # --processes: forked workers outliving the master
                if mock_urls:
                    still_open = runner.open_conversations(mock_urls, scenario)
                    if any(still_open.values()):
                        print(f"loadtest: the mock still holds open conversations: {still_open}",
                              file=sys.stderr)
        except runner.RunFailed as e:
            print(f"loadtest: {e}", file=sys.stderr)
            return EXIT_RUN_FAILED
    if signals.count:
        return EXIT_OK
    return EXIT_OK if rc == 0 else (EXIT_USAGE if rc == 2 else EXIT_RUN_FAILED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest ui", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except config.ConfigError as e:
        print(f"loadtest: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
