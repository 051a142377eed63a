"""The `loadtest` command.

    loadtest run [flags]          headless run against the embedded mock (or a real target)
    loadtest ui [flags]           Locust's web UI with live region/variant views (mock by default)
    loadtest capacity [flags]     per-region knee: the most concurrent conversations within SLO
    loadtest check [flags]        one conversation per region against the target, with hints
    loadtest mock [--port P]      serve the mock Chat API on loopback
    loadtest report RUN_DIR       (re)build a run's HTML report, summary.csv and summary.md
    loadtest compare RUN_DIR…     compare runs side by side
    loadtest worker --master-host H   a Locust worker for `loadtest run --workers N` on H
    loadtest locustfile           print the packaged locustfile's path (for `locust -f`)
    loadtest --version            the tool's, Locust's and Python's versions

Exit codes: 0 ok, 1 an SLO failed or a regression against --baseline (with --fail-on-regression),
2 usage or configuration error, 3 the run failed, 4 the run was interrupted (its data and
report are kept).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from importlib import metadata

from loadtest import __version__, config, runfolder
from loadtest.exitcodes import EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE
from loadtest.commands.arguments import add_scenario_arguments, scenario_from_args
from loadtest.inlocust import LOCUSTFILE


def cmd_run(args: argparse.Namespace) -> int:
    from loadtest.commands import run as runner

    scenario = scenario_from_args(args)
    return runner.execute(scenario, args.locust_args)


def cmd_check(args: argparse.Namespace) -> int:
    from loadtest.commands.check import cmd_check as check

    return check(scenario_from_args(args))


def cmd_worker(args: argparse.Namespace) -> int:
    """Become the Locust worker (exec: signals and the exit code are Locust's own)."""
    from loadtest.commands.run import worker_command

    cmd = worker_command(args.master_host, args.master_port, args.processes, args.locust_args)
    print(f"loadtest worker: connecting to the master at {args.master_host}:{args.master_port} "
          "(it waits for its workers; this retries for a few minutes)", flush=True)
    os.execv(cmd[0], cmd)
    return EXIT_RUN_FAILED  # not reached


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--master-host", default=os.environ.get("LOADTEST_MASTER_HOST", "127.0.0.1"),
                        metavar="HOST", help="the machine running `loadtest run --workers N` "
                        "(default: $LOADTEST_MASTER_HOST or 127.0.0.1)")
    parser.add_argument("--master-port", type=int, default=int(os.environ.get("LOADTEST_MASTER_PORT", 5557)),
                        metavar="PORT", help="its --master-bind-port (default: $LOADTEST_MASTER_PORT or 5557)")
    parser.add_argument("--processes", type=int, default=0, metavar="N",
                        help="worker processes on this machine, one per core you give it (default: 1)")
    parser.add_argument("locust_args", nargs="*", metavar="-- LOCUST_ARGS",
                        help="extra arguments passed to Locust after --")


def version_text() -> str:
    # metadata, not `import locust`: that would gevent-monkey-patch this process.
    return (f"polyai-loadtest {__version__} (Locust {metadata.version('locust')}, "
            f"Python {platform.python_version()})")


def cmd_locustfile(_args: argparse.Namespace) -> int:
    print(LOCUSTFILE)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="headless load test (default: the embedded mock, all regions)")
    add_scenario_arguments(run)
    run.add_argument("locust_args", nargs="*", metavar="-- LOCUST_ARGS",
                     help="extra arguments passed to Locust after --")
    run.set_defaults(func=cmd_run)

    from loadtest.commands import ui as ui_cli
    ui = sub.add_parser("ui", help="run tests from Locust's web UI (starts the mock unless a real target)")
    ui_cli.add_arguments(ui)
    ui.set_defaults(func=ui_cli.run)

    check = sub.add_parser("check", help="one create → respond → close per region, with hints on errors")
    add_scenario_arguments(check)
    check.set_defaults(func=cmd_check)

    from loadtest.commands import capacity as capacity_cli
    capacity = sub.add_parser("capacity", help="per region, the highest load within SLO (the knee)")
    capacity_cli.add_arguments(capacity)
    capacity.set_defaults(func=capacity_cli.run)

    from loadtest.mock import cli as mock_cli
    mock = sub.add_parser("mock", help="serve the mock Chat API on loopback")
    mock_cli.add_arguments(mock)
    mock.set_defaults(func=mock_cli.run)

    from loadtest.commands import report as analysis_cli
    report = sub.add_parser("report", help="build a run's HTML report and summaries")
    analysis_cli.add_report_arguments(report)
    report.set_defaults(func=analysis_cli.run_report)
    compare = sub.add_parser("compare", help="compare runs side by side")
    analysis_cli.add_compare_arguments(compare)
    compare.set_defaults(func=analysis_cli.run_compare)

    worker = sub.add_parser("worker", help="a load generator for `loadtest run --workers N` on another machine")
    add_worker_arguments(worker)
    worker.set_defaults(func=cmd_worker)

    locustfile = sub.add_parser("locustfile", help="print the packaged locustfile's path, for locust -f")
    locustfile.set_defaults(func=cmd_locustfile)
    parser.commands = sub.choices  # name → subparser, for errors in the subcommand's own usage
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["run"]  # the default: a short run against the mock, all regions, two variants
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said in the subcommand's usage, not the top level's
        parser.commands.get(getattr(args, "command", None), parser).error(
            f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except config.ConfigError as e:
        print(f"loadtest: {e}", file=sys.stderr)
        return EXIT_USAGE
    except runfolder.WriteFailed as e:  # an environment error, said in one line (no traceback)
        print(f"loadtest: {e}; {e.advice}", file=sys.stderr)
        return EXIT_RUN_FAILED
    except KeyboardInterrupt:
        return 130
