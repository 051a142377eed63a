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

from loadtest import __version__, children, config, runfolder
from loadtest.commands import capacity as capacity_cmd
from loadtest.commands import check as check_cmd
from loadtest.commands import report as report_cmd
from loadtest.commands import run as run_cmd
from loadtest.commands import ui as ui_cmd
from loadtest.exitcodes import EXIT_CTRL_C, EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE
from loadtest.inlocust import LOCUSTFILE
from loadtest.mock import cli as mock_cli


def worker_command(args: argparse.Namespace) -> int:
    """`loadtest worker`: become the Locust worker (exec: signals and the exit code are Locust's own)."""
    cmd = children.worker_command(args.master_host, args.master_port, args.processes, args.locust_args)
    print(
        f"loadtest worker: connecting to the master at {args.master_host}:{args.master_port} (it waits for its workers; this retries for a few minutes)",
        flush=True,
    )
    os.execv(cmd[0], cmd)  # never returns (an OSError if it cannot exec)


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--master-host",
        default=os.environ.get("LOADTEST_MASTER_HOST", "127.0.0.1"),
        metavar="HOST",
        help="the machine running `loadtest run --workers N` (default: $LOADTEST_MASTER_HOST or 127.0.0.1)",
    )
    parser.add_argument(
        "--master-port",
        type=int,
        default=int(os.environ.get("LOADTEST_MASTER_PORT", 5557)),
        metavar="PORT",
        help="its --master-bind-port (default: $LOADTEST_MASTER_PORT or 5557)",
    )
    parser.add_argument("--processes", type=int, default=0, metavar="N", help="worker processes on this machine, one per core you give it (default: 1)")
    parser.add_argument("locust_args", nargs="*", metavar="-- LOCUST_ARGS", help="extra arguments passed to Locust after --")


def version_text() -> str:
    # metadata, not `import locust`: that would gevent-monkey-patch this process.
    return f"polyai-loadtest {__version__} (Locust {metadata.version('locust')}, Python {platform.python_version()})"


def locustfile_command(_args: argparse.Namespace) -> int:
    print(LOCUSTFILE)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # Each command module: add_arguments(parser) and one entry, <command>_command(args) -> exit code.
    run = sub.add_parser("run", help="headless load test (default: the embedded mock, all regions)")
    run_cmd.add_arguments(run)
    run.set_defaults(func=run_cmd.run_command)

    ui = sub.add_parser("ui", help="run tests from Locust's web UI (starts the mock unless a real target)")
    ui_cmd.add_arguments(ui)
    ui.set_defaults(func=ui_cmd.ui_command)

    check = sub.add_parser("check", help="one create → respond → close per region, with hints on errors")
    check_cmd.add_arguments(check)
    check.set_defaults(func=check_cmd.check_command)

    capacity = sub.add_parser("capacity", help="per region, the highest load within SLO (the knee)")
    capacity_cmd.add_arguments(capacity)
    capacity.set_defaults(func=capacity_cmd.capacity_command)

    mock = sub.add_parser("mock", help="serve the mock Chat API on loopback")
    mock_cli.add_arguments(mock)
    mock.set_defaults(func=mock_cli.run)

    report = sub.add_parser("report", help="build a run's HTML report and summaries")
    report_cmd.add_report_arguments(report)
    report.set_defaults(func=report_cmd.report_command)
    compare = sub.add_parser("compare", help="compare runs side by side")
    report_cmd.add_compare_arguments(compare)
    compare.set_defaults(func=report_cmd.compare_command)

    worker = sub.add_parser("worker", help="a load generator for `loadtest run --workers N` on another machine")
    add_worker_arguments(worker)
    worker.set_defaults(func=worker_command)

    locustfile = sub.add_parser("locustfile", help="print the packaged locustfile's path, for locust -f")
    locustfile.set_defaults(func=locustfile_command)
    return parser


def _command_parser(parser: argparse.ArgumentParser, name: str | None) -> argparse.ArgumentParser:
    """The subcommand's own parser (its errors are said in its usage), else the top level's."""
    for action in parser._actions:  # argparse has no public accessor for its subparsers
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            return action.choices[name]
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["run"]  # the default: a short run against the mock, all regions, two variants
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said in the subcommand's usage, not the top level's
        _command_parser(parser, getattr(args, "command", None)).error(f"unrecognized arguments: {' '.join(unknown)}")
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
        return EXIT_CTRL_C
