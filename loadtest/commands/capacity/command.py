"""`loadtest capacity`'s flags, the plan they make, and the command's entry point."""

from __future__ import annotations

import argparse
from typing import TypeVar

from loadtest import config
from loadtest.commands.arguments import add_scenario_arguments, scenario_from_args
from loadtest.commands.capacity.plan import (
    DEFAULT_CONFIRM,
    DEFAULT_HOLD,
    DEFAULT_MAX,
    DEFAULT_MAX_LAG,
    DEFAULT_SETTLE,
    DEFAULT_START,
    DEFAULT_STEP,
    MIN_SETTLE_S,
    Plan,
)
from loadtest.commands.capacity.search import search


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_scenario_arguments(parser)
    g = parser.add_argument_group("capacity search")
    g.add_argument("--start", type=int, default=None, metavar="N", help=f"users in the first step, a light load (default: {DEFAULT_START})")
    g.add_argument("--step", type=int, default=None, metavar="N", help=f"users added per step (default: {DEFAULT_STEP})")
    g.add_argument("--max", type=int, default=None, metavar="N", help=f"highest level tried (default: {DEFAULT_MAX})")
    g.add_argument(
        "--hold",
        default=DEFAULT_HOLD,
        metavar="DURATION",
        help=f"time each level is held, e.g. 20s; whole seconds, as Locust changes the shape on 1 s ticks (default: {DEFAULT_HOLD})",
    )
    g.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE,
        metavar="FRACTION",
        help=f"part of each step ignored as ramp-up (default: {DEFAULT_SETTLE:g}, at least {MIN_SETTLE_S:g} s)",
    )
    g.add_argument(
        "--confirm", type=int, default=DEFAULT_CONFIRM, metavar="N", help=f"failing steps in a row that end a region's search (default: {DEFAULT_CONFIRM})"
    )
    r = parser.add_argument_group("capacity by arrival rate (open model) instead of users")
    r.add_argument("--arrival-rate-start", type=float, default=None, metavar="RATE", help="conversations/s per region in the first step, a light load")
    r.add_argument("--arrival-rate-step", type=float, default=None, metavar="RATE", help="conversations/s added per step (default: the start rate)")
    r.add_argument("--arrival-rate-max", type=float, default=None, metavar="RATE", help="highest rate tried, conversations/s per region")
    r.add_argument(
        "--max-dropped",
        default="1%",
        metavar="SHARE",
        help="a step fails when more of its planned conversations are dropped for want of a free user (default: 1%%)",
    )
    r.add_argument(
        "--max-lag",
        default=DEFAULT_MAX_LAG,
        metavar="DURATION",
        help=f"a step fails when its p95 schedule lag (start minus plan) is longer (default: {DEFAULT_MAX_LAG})",
    )


def plan_from_args(args: argparse.Namespace) -> Plan:
    try:
        hold = config.parse_duration(args.hold)
    except ValueError as e:
        raise config.ConfigError(f"--hold: {e}") from None
    by_rate = [args.arrival_rate_start, args.arrival_rate_step, args.arrival_rate_max]
    if not any(x is not None for x in by_rate):
        return Plan(
            start=_default(args.start, DEFAULT_START),
            step=_default(args.step, DEFAULT_STEP),
            max=_default(args.max, DEFAULT_MAX),
            hold_s=hold,
            settle=args.settle,
            confirm=args.confirm,
        )
    users_flags = [f for f, v in (("--start", args.start), ("--step", args.step), ("--max", args.max)) if v is not None]
    if users_flags:
        raise config.ConfigError(f"{', '.join(users_flags)} (users) and --arrival-rate-* (conversations/s) are two different searches: choose one")
    if args.arrival_rate_start is None or args.arrival_rate_max is None:
        raise config.ConfigError(
            "a search by arrival rate needs --arrival-rate-start and "
            "--arrival-rate-max (conversations/s per region), e.g. "
            "--arrival-rate-start 1 --arrival-rate-step 1 --arrival-rate-max 10"
        )
    try:
        max_lag = config.parse_duration(args.max_lag)
    except ValueError as e:
        raise config.ConfigError(f"--max-lag: {e}") from None
    return Plan(
        start=args.arrival_rate_start,
        step=_default(args.arrival_rate_step, args.arrival_rate_start),
        max=args.arrival_rate_max,
        hold_s=hold,
        settle=args.settle,
        confirm=args.confirm,
        by="rate",
        max_dropped=parse_share(args.max_dropped),
        max_lag_s=max_lag,
    )


T = TypeVar("T")


def _default(value: T | None, default: T) -> T:
    return default if value is None else value


def parse_share(text: str) -> float:
    """'1%' or '0.01' → 0.01 (--max-dropped)."""
    raw = str(text).strip()
    try:
        return float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise config.ConfigError(f"--max-dropped '{text}' is not a share: use e.g. 1% or 0.01") from None


def capacity_command(args: argparse.Namespace) -> int:
    """`loadtest capacity`: returns the exit code."""
    return search(scenario_from_args(args), plan_from_args(args))
