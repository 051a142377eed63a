"""Command-line plumbing for `loadtest report` and `loadtest compare`.

`loadtest/cli.py` owns the command line; it wires these in:

    p = sub.add_parser("report", help="analyse a run folder and write report.html")
    add_report_arguments(p); p.set_defaults(func=report_command)
    p = sub.add_parser("compare", help="runs side by side")
    add_compare_arguments(p); p.set_defaults(func=compare_command)

Both return a process exit code: 0 done, 1 a regression (`compare --fail-on-regression`), 2
bad input (message on stderr saying what is wrong and what to do). The library entry points
are `analysis.report.build_report` and `analysis.report.format_summary_table`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis import regression
from analysis.load import RunDataError, load_meta
from analysis.report import build_comparison, build_report, format_summary_table  # noqa: F401
from loadtest import config, runfolder, slo
from loadtest.exitcodes import EXIT_OK, EXIT_USAGE


def parse_duration(text: str) -> float:
    """'10s' → 10.0, '2m' → 120.0, '500ms' → 0.5, '15' → 15.0 (seconds): the project's one
    duration syntax (loadtest.config), as an argparse type."""
    try:
        return config.parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_fraction(text: str) -> float:
    """'10%' → 0.10, '0.1' → 0.1, '1pt' → 0.01."""
    t = str(text).strip().lower()
    try:
        if t.endswith("%"):
            return float(t[:-1]) / 100
        if t.endswith("pt"):
            return float(t[:-2]) / 100
        v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or percentage: {text!r} (e.g. 10%, 0.1, 1pt)") from None
    return v


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `loadtest report RUN_DIR [--baseline RUN_DIR] [--warmup 10s] [-o FILE]`."""
    parser.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="the run folder to analyse")
    parser.add_argument("--baseline", metavar="RUN_DIR", type=Path, default=None, help="an earlier run to compare with; regressions are flagged")
    parser.add_argument(
        "--warmup", metavar="DURATION", type=parse_duration, default=0.0, help="ignore requests in the first DURATION of the run (e.g. 10s, 1m)"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        type=Path,
        default=None,
        help="where to write the report (default RUN_DIR/report.html); summary.csv and summary.md go beside it",
    )
    parser.add_argument("--control", metavar="VARIANT", default=None, help="the variant others are compared with (default: the first)")
    add_threshold_arguments(parser)
    parser.add_argument("--regression-p95", metavar="PCT", type=parse_fraction, default=None, help="shorthand for --regression p95:+PCT")
    parser.add_argument("--regression-errors", metavar="PT", type=parse_fraction, default=None, help="shorthand for --regression error_rate:+PT")


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--regression",
        metavar="SPEC",
        action="append",
        default=None,
        help="regression threshold [SCOPE.]METRIC:+LIMIT, e.g. p95:+10%% or uk.respond.p99:+20%% "
        f"(repeatable; default {', '.join(regression.DEFAULT_THRESHOLDS).replace('%', '%%')})",
    )


def thresholds_from_args(args: argparse.Namespace) -> list[regression.Threshold]:
    """--regression SPEC… (or the defaults), then the --regression-p95/-errors shorthands,
    which override the same metric (the later threshold wins on equal scope)."""
    specs = list(args.regression or regression.DEFAULT_THRESHOLDS)
    if getattr(args, "regression_p95", None) is not None:
        specs.append(f"p95:+{args.regression_p95 * 100:g}%")
    if getattr(args, "regression_errors", None) is not None:
        specs.append(f"error_rate:+{args.regression_errors * 100:g}pt")
    return regression.parse_thresholds(specs)


def add_compare_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `loadtest compare RUN_DIR RUN_DIR… [-o FILE] [--warmup 10s] [--fail-on-regression]`."""
    parser.add_argument("run_dirs", metavar="RUN_DIR", type=Path, nargs="+", help="two or more run folders; differences are against the first")
    parser.add_argument("-o", "--output", metavar="FILE", type=Path, default=Path("compare.html"), help="where to write the HTML page (default ./compare.html)")
    parser.add_argument("--warmup", metavar="DURATION", type=parse_duration, default=0.0, help="ignore requests in the first DURATION of each run")
    parser.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="gate every later run against the first (the baseline): exit 1 when a region × "
        "variant × endpoint regressed beyond a threshold; writes FILE's -junit.xml and .md "
        "beside the page",
    )
    add_threshold_arguments(parser)
    parser.add_argument("--baseline-any-config", action="store_true", help="gate even when the runs' scenarios differ (config hash)")


def _fail(message: str) -> int:
    print(f"loadtest: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _check_output(path: Path | None) -> str | None:
    if path is None:
        return None
    parent = path if path.is_dir() else path.parent
    if not parent.exists():
        return f"cannot write {path}: folder {parent} does not exist (create it, or pick another -o)"
    return None


def report_command(args: argparse.Namespace) -> int:
    """`loadtest report`: write report.html, summary.csv, summary.md; print where and a summary."""
    problem = _check_output(getattr(args, "output", None))
    if problem:
        return _fail(problem)
    try:
        note = load_meta(Path(args.run_dir)).get("status_note")
        if note:
            print(f"loadtest: note: {args.run_dir}: {note}", file=sys.stderr)
        path = build_report(
            args.run_dir,
            baseline=args.baseline,
            warmup_s=args.warmup,
            output=args.output,
            control=getattr(args, "control", None),
            thresholds=thresholds_from_args(args),
        )
    except regression.ThresholdError as e:
        return _fail(str(e))
    except RunDataError as e:
        which = "baseline" if args.baseline is not None and e.file is not None and Path(args.baseline) in (e.file, *e.file.parents) else "run"
        what = "" if e.hint else "\n  Fix or remove the file named above, or point at a complete run folder."
        return _fail(f"cannot analyse the {which}: {e}{what}")
    except PermissionError as e:
        return _fail(f"cannot write the report: {e}. Pick a writable place with -o FILE.")
    print(f"Report: {path}")
    print(f"        {path.parent / 'summary.csv'}, {path.parent / 'summary.md'}")
    if args.baseline is not None:  # compared all the same (a report is for reading, not a gate): say so
        mismatch = runfolder.scenario_mismatch(args.baseline, runfolder.read_run_json(args.run_dir))
        if mismatch:
            print(f"note: {mismatch}; read the comparison with that in mind")
    return EXIT_OK


def compare_command(args: argparse.Namespace) -> int:
    """`loadtest compare`: runs side by side, as a table on stdout and an HTML page; with
    --fail-on-regression, the regression gate of each later run against the first."""
    if len(args.run_dirs) < 2:
        return _fail("compare needs at least two run folders, e.g. loadtest compare reports/A reports/B")
    problem = _check_output(args.output)
    if problem:
        return _fail(problem)
    thresholds = None
    if args.fail_on_regression:
        try:
            thresholds = thresholds_from_args(args)
        except regression.ThresholdError as e:
            return _fail(str(e))
        base = args.run_dirs[0]
        for d in args.run_dirs[1:]:
            problem = runfolder.baseline_problem(base, runfolder.read_run_json(d), args.baseline_any_config)
            if problem:
                return _fail(problem)
    elif args.regression:
        return _fail("--regression thresholds judge a gate: add --fail-on-regression")
    try:
        path, table, gated = build_comparison(args.run_dirs, args.output, warmup_s=args.warmup, thresholds=thresholds)
    except RunDataError as e:
        what = "" if e.hint else "\n  Fix or remove the file named above, or leave that run out."
        return _fail(f"cannot analyse {e}{what}")
    except PermissionError as e:
        return _fail(f"cannot write the comparison: {e}. Pick a writable place with -o FILE.")
    print(table)
    print(f"\nComparison: {path}")
    if thresholds is None:
        return EXIT_OK
    checks = [c for g in gated for c in g.checks]
    junit = path.with_name(path.stem + "-junit.xml")
    md_path = path.with_suffix(".md")
    text = slo.markdown([], checks)
    try:
        slo.write_junit([], junit, checks)
        md_path.write_text(text, encoding="utf-8")
    except PermissionError as e:
        return _fail(f"cannot write the gate's results: {e}. Pick a writable place with -o FILE.")
    slo.append_step_summary(text)
    print(f"\n{text}\nGate: {junit}, {md_path}")
    return regression.exit_code(checks)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (python -m loadtest.commands.report report|compare …), for use without loadtest."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.commands.report")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="analyse a run folder and write report.html")
    add_report_arguments(p)
    p.set_defaults(func=report_command)
    p = sub.add_parser("compare", help="runs side by side")
    add_compare_arguments(p)
    p.set_defaults(func=compare_command)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
