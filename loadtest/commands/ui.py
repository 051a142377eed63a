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
import webbrowser
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

from loadtest import children, config, processes
from loadtest.commands import run as runner
from loadtest.commands.arguments import add_scenario_arguments, scenario_from_args
from loadtest.exitcodes import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scenario_arguments(parser)
    parser.add_argument("--web-port", type=int, default=0, metavar="PORT", help="port of the web UI on 127.0.0.1 (default: a free port)")
    parser.add_argument("--open", action="store_true", help="open the UI in a web browser")
    parser.add_argument("--ready-file", metavar="PATH", help='write {"url", "base_urls", "mock", "out"} as JSON here once the UI answers')
    parser.add_argument("locust_args", nargs="*", metavar="-- LOCUST_ARGS", help="extra arguments passed to Locust after --")


def stop_timeout(scenario: config.Scenario) -> float:
    """Unless set, long enough for an in-flight respond and the close that follows it."""
    if scenario.sources.get("stop_timeout") != "default":
        return scenario.stop_timeout
    return max(scenario.stop_timeout, 2 * scenario.request_timeout)


def form_base_urls(scenario: config.Scenario, mock_urls: dict[str, str] | None) -> dict[str, str]:
    """Every region the mock serves (so a region added in the form still hits the mock),
    with configured overrides on top."""
    return {**(mock_urls or {}), **scenario.base_urls}


def locust_command(scenario: config.Scenario, base_urls: dict[str, str], web_port: int, extra: Sequence[str] = ()) -> list[str]:
    """Locust's web UI on 127.0.0.1:`web_port` (`children.locust_command`), its stop timeout
    long enough for an in-flight respond unless set."""
    return children.locust_command(scenario, base_urls, web_port=web_port, stop_timeout_s=stop_timeout(scenario), extra=extra)


def ui_command(args: argparse.Namespace) -> int:
    """`loadtest ui`: returns the exit code."""
    scenario = scenario_from_args(args)
    out = Path(scenario.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    runner.preflight(scenario)  # loopback unless --target real --yes (asks on a terminal)
    needs_mock = runner.needs_mock(scenario)
    port = args.web_port or processes.free_port()
    url = f"http://127.0.0.1:{port}"
    with children.Signals() as signals:
        try:
            with children.mock_server(scenario, out / "ui-mock.log") if needs_mock else nullcontext() as mock_urls:
                if signals.count > 0:  # `> 0`, not truthiness: mypy would take count for 0 from here on, but a signal handler raises it
                    return EXIT_OK
                base_urls = form_base_urls(scenario, mock_urls)
                if mock_urls:
                    print("Mock Chat API: " + "  ".join(f"{r}={u}" for r, u in mock_urls.items()))
                env = dict(os.environ)
                for s in config.SETTINGS:  # settings Locust has no option for, so run.json holds them
                    if not s.locust and scenario.sources.get(s.name) != "default":
                        env[s.env] = children.option_value(s.name, scenario.values[s.name], base_urls)
                cmd = locust_command(scenario, base_urls, port, list(args.locust_args or []))
                proc = processes.spawn(cmd, env=env, stdin=subprocess.DEVNULL)
                signals.proc = proc
                if not children.wait_for_http(url, proc, give_up=lambda: signals.count > 0):
                    rc = processes.stop(proc)
                    if signals.count:
                        return EXIT_OK
                    print(
                        f"loadtest: the Locust web UI did not come up (exit code {rc}{'; is port %d in use?' % port if args.web_port else ''})", file=sys.stderr
                    )
                    return EXIT_USAGE if rc == 2 else EXIT_RUN_FAILED
                print(f"Locust web UI: {url}   (fill in the form and press Start; Ctrl-C here stops everything)")
                print(f"Run folders: {out}/<run-id>/ (report and CSVs: the UI's Download Data tab)")
                sys.stdout.flush()
                if args.ready_file:
                    ready = Path(args.ready_file)
                    tmp = ready.with_name(ready.name + ".tmp")
                    tmp.write_text(json.dumps({"url": url, "base_urls": base_urls, "mock": mock_urls or {}, "out": str(out), "locust_pid": proc.pid}))
                    os.replace(tmp, ready)
                if args.open:
                    webbrowser.open(url)
                rc = proc.wait()
                processes.end_process_group(proc.pid)  # --processes: forked workers outliving the master
                if mock_urls:
                    still_open = children.open_conversations(mock_urls, scenario)
                    if any(still_open.values()):
                        print(f"loadtest: the mock still holds open conversations: {still_open}", file=sys.stderr)
        except children.RunFailed as e:
            print(f"loadtest: {e}", file=sys.stderr)
            return EXIT_RUN_FAILED
    if signals.count:
        return EXIT_OK
    return EXIT_OK if rc == 0 else (EXIT_USAGE if rc == 2 else EXIT_RUN_FAILED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadtest ui", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return ui_command(args)
    except config.ConfigError as e:
        print(f"loadtest: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
