"""A capacity search's plan and rules: the staircase of levels (`Plan`), the default SLOs and
how a region's SLOs are chosen, the knee rule (`find_knee`: the last passing step before
`confirm` failing steps in a row), and each region's scenario (its Locust shape or arrival
staircase, a rate search's pool of users). Pure functions of their inputs: no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from loadtest import config, slo

DEFAULT_START, DEFAULT_STEP, DEFAULT_MAX, DEFAULT_HOLD = 8, 8, 128, "15s"
DEFAULT_SETTLE, DEFAULT_CONFIRM = 0.3, 2
#: Each step's users are all started within 0.25 s of the shape's change: never settle for less.
MIN_SETTLE_S = 0.5
MIN_WINDOW_S = 1.0

DEFAULT_ERROR_SLO = "error_rate < 1%"
#: The latency baseline pools the first steps' responds until it has this many (or 3 steps).
MIN_BASELINE_RESPONDS = 100
MAX_BASELINE_STEPS = 3
LATENCY_FACTOR = 2.0
LATENCY_FLOOR_MS = 50.0
LATENCY_ENDPOINT = "respond"
DEFAULT_SLO_TEXT = (
    f"{DEFAULT_ERROR_SLO}; {LATENCY_ENDPOINT}.p95 < max({LATENCY_FACTOR:g} × B, "
    f"B + {LATENCY_FLOOR_MS:g} ms) where B is the region's {LATENCY_ENDPOINT} p95 "
    f"at light load (its first step, pooled with the next up to "
    f"{MAX_BASELINE_STEPS} steps until {MIN_BASELINE_RESPONDS} responds)"
)

DEFAULT_MAX_DROPPED, DEFAULT_MAX_LAG = 0.01, "1s"


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    """The staircase: levels of users (or of conversations/s, `by="rate"`), how long each is
    held, what part is ramp-up, and (by rate) what a step must deliver."""

    start: float = DEFAULT_START
    step: float = DEFAULT_STEP
    max: float = DEFAULT_MAX
    hold_s: float = 15.0
    settle: float = DEFAULT_SETTLE
    confirm: int = DEFAULT_CONFIRM
    by: str = "users"  # users (closed model) | rate (open model, conversations/s)
    max_dropped: float = DEFAULT_MAX_DROPPED
    max_lag_s: float = 1.0

    def __post_init__(self) -> None:
        if self.by == "rate":
            if self.start <= 0 or self.step <= 0:
                raise config.ConfigError("--arrival-rate-start and --arrival-rate-step must be positive (conversations/s)")
            if self.max < self.start:
                raise config.ConfigError(f"--arrival-rate-max ({self.max:g}) is below --arrival-rate-start ({self.start:g})")
            if not 0 <= self.max_dropped < 1:
                raise config.ConfigError(f"--max-dropped {self.max_dropped:g} must be a fraction below 1 (e.g. 1% or 0.01)")
        elif self.start < 1 or self.step < 1:
            raise config.ConfigError("--start and --step must be at least 1 user")
        if self.max < self.start:
            raise config.ConfigError(f"--max ({self.max}) is below --start ({self.start})")
        if not 0 <= self.settle < 1:
            raise config.ConfigError(f"--settle {self.settle:g} must be a fraction, 0 <= settle < 1")
        if self.confirm < 1:
            raise config.ConfigError("--confirm must be at least 1 step")
        if self.hold_s - self.settle_s < MIN_WINDOW_S:
            raise config.ConfigError(
                f"--hold {self.hold_s:g}s leaves {max(self.hold_s - self.settle_s, 0):.2g} s to measure "
                f"after {self.settle_s:.2g} s of ramp-up; use --hold "
                f"{math.ceil(max(MIN_SETTLE_S, self.settle * self.hold_s) + MIN_WINDOW_S)}s or more"
            )

    @property
    def levels(self) -> list[float]:
        if self.by == "rate":
            return config.arrival_levels({"*": self.start}, self.arrival_steps())
        out: list[float] = list(range(int(self.start), int(self.max) + 1, int(self.step)))
        if out[-1] != self.max:
            out.append(int(self.max))
        return out

    @property
    def unit(self) -> str:
        return "conv/s" if self.by == "rate" else "users"

    def arrival_steps(self) -> dict[str, float]:
        return {"step": self.step, "every": self.hold_s, "max": self.max}

    @property
    def settle_s(self) -> float:
        return max(self.settle * self.hold_s, MIN_SETTLE_S)

    @property
    def total_s(self) -> float:
        return len(self.levels) * self.hold_s

    @property
    def spawn_rate(self) -> float:
        """Each step's new users start within ~0.25 s (the window waits for the shape's tick)."""
        return float(4 * max(self.start, self.step))

    def shape_spec(self) -> str:
        return f"steps:start={self.start},step={self.step},every={self.hold_s:g}s,max={self.max},rate={self.spawn_rate:g}"

    def describe(self) -> str:
        if self.by == "rate":
            return (
                f"{self.start:g} → {self.max:g} conversations/s (open model), +{self.step:g} "
                f"every {self.hold_s:g} s (first {self.settle_s:.3g} s of each step ignored as "
                f"ramp-up); a step also fails on over {100 * self.max_dropped:g} % dropped or a "
                f"p95 schedule lag over {self.max_lag_s * 1000:g} ms; "
                f"stop after {self.confirm} failing step{'s' if self.confirm > 1 else ''} in a row"
            )
        return (
            f"{self.start} → {self.max} users, +{self.step} every {self.hold_s:g} s "
            f"(first {self.settle_s:.3g} s of each step ignored as ramp-up); "
            f"stop after {self.confirm} failing step{'s' if self.confirm > 1 else ''} in a row"
        )


# --------------------------------------------------------------------------- SLOs


def default_latency_slo(baseline_ms: float) -> str:
    threshold = max(LATENCY_FACTOR * baseline_ms, baseline_ms + LATENCY_FLOOR_MS)
    return f"{LATENCY_ENDPOINT}.p95 < {math.ceil(round(threshold, 6))}ms"


def region_slos(exprs: Sequence[str], region: str, variants: Sequence[str] | None = None) -> list:
    """The SLOs that apply to one region's run: unscoped ones and those scoped to it."""
    return [s for s in slo.parse_slos(list(exprs), variants) if s.region in (None, region)]


# --------------------------------------------------------------------------- the knee


@dataclass
class Knee:
    status: str  # found | above_max | below_start | incomplete | failed
    knee: int | None  # index of the knee step
    first_fail: int | None  # index of the first step of the confirmed failure
    isolated: list[int]  # failing steps before the knee that the next step contradicted


def find_knee(passed: Sequence[bool], confirm: int, reached_max: bool) -> Knee:
    """The knee from the pass/fail of consecutive steps.

    The first failure is the first step of the first run of `confirm` failing steps; when none
    is that long, a run of failures that ends the data (the run stopped or reached max) counts.
    The knee is the last passing step before it. `reached_max`: every planned level was
    measured, so "no failure" means the knee is at least max.
    """
    first_fail, streak = None, 0
    for i, ok in enumerate(passed):
        streak = 0 if ok else streak + 1
        if streak >= confirm:
            first_fail = i - confirm + 1
            break
    else:
        if streak:
            first_fail = len(passed) - streak
    limit = len(passed) if first_fail is None else first_fail
    knee = next((i for i in range(limit - 1, -1, -1) if passed[i]), None)
    isolated = [i for i in range(limit) if not passed[i]]
    if not passed:
        return Knee("failed", None, None, [])
    if first_fail is None:
        return Knee("above_max" if reached_max else "incomplete", knee, None, isolated)
    if knee is None:
        return Knee("below_start", None, first_fail, isolated)
    return Knee("found", knee, first_fail, isolated)


def should_stop(passed: Sequence[bool], confirm: int) -> bool:
    return len(passed) >= confirm and not any(passed[-confirm:])


def region_scenario(scenario: config.Scenario, region: str, plan: Plan) -> config.Scenario:
    values = dict(scenario.values)
    if plan.by == "rate":
        pool = rate_pool(scenario, plan)
        # +2 s: the last level's end is logged before Locust's run time stops the users.
        values.update(
            regions={region: 1.0},
            shape="",
            arrival_rate={region: plan.start},
            arrival_steps=plan.arrival_steps(),
            users=pool,
            spawn_rate=float(pool),
            duration=plan.total_s + 2,
        )
    else:
        values.update(regions={region: 1.0}, shape=plan.shape_spec(), arrival_rate={}, users=plan.max, duration=plan.total_s)
    return config.Scenario(values=values, sources=dict(scenario.sources))


#: A rate search's pool of users: `--users` when given, else room for 3 × the conversations
#: in flight at the highest rate (Little's law with a generous conversation length), so that
#: drops mean a slow service, not a small pool.
POOL_FACTOR, MIN_POOL, MAX_POOL = 3.0, 20, 5000


def rate_pool(scenario: config.Scenario, plan: Plan) -> int:
    if scenario.sources.get("users") not in (None, "default"):
        return int(scenario.users)
    conversation_s = scenario.turns[1] * (scenario.think_time[1] + 0.5) + 1.0
    return int(min(max(math.ceil(plan.max * conversation_s * POOL_FACTOR), MIN_POOL), MAX_POOL))
