"""The scenario's command-line flags, one per setting of `loadtest.config.SETTINGS`, shared by
`run`, `check`, `ui` and `capacity`; and the Scenario they resolve to."""

from __future__ import annotations

import argparse

from loadtest import config

# Repeatable flags whose setting holds a list (also spelled like the setting: --faults).
_REPEATABLE_FLAGS = {"slos": ("--slo", "EXPR"), "faults": ("--fault", "SPEC"), "regressions": ("--regression", "SPEC")}


def add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="scenario file (TOML); layering: defaults < file < LOADTEST_* env < flags")
    for s in config.SETTINGS:
        if s.name in _REPEATABLE_FLAGS:
            flag, metavar = _REPEATABLE_FLAGS[s.name]
            parser.add_argument(
                flag, s.flag, dest=s.name, action="append", metavar=metavar, help=f"{s.help} (repeatable{', or comma-separated' if s.name == 'faults' else ''})"
            )
            continue
        help_text = s.help if "default" in s.help else f"{s.help} (default: {s.default or 'none'})"
        if s.parse is config.parse_bool:  # `--yes` alone means true
            parser.add_argument(s.flag, dest=s.name, nargs="?", const="true", metavar="BOOL", help=help_text)
            continue
        last = s.name.split("_")[-1]
        parser.add_argument(s.flag, dest=s.name, metavar="N" if last.isdigit() else last.upper(), help=help_text)


def scenario_from_args(args: argparse.Namespace) -> config.Scenario:
    file_values = config.load_file(args.config) if args.config else None
    flags = {s.name: getattr(args, s.name, None) for s in config.SETTINGS}
    for name in _REPEATABLE_FLAGS:
        given = flags[name]
        if given is not None:
            flags[name] = list(given)
    return config.resolve(file_values, flags)
