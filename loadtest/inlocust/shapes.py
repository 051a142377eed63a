"""Load shapes: how many users run over time, chosen by a one-line spec.

    ramp:users=50,ramp=30s,hold=2m[,down=30s]        0 → users over `ramp`, hold, ramp down
    steps:start=10,step=10,every=30s,max=100[,duration=10m]
                                                     +step users every `every` up to `max`
    spike:base=10,peak=100,at=60s,for=30s,duration=3m
                                                     base, jump to peak at `at` for `for`, back
    soak:users=50,ramp=1m,duration=1h                ramp up, then hold until `duration`

Every shape also takes `rate=N`, the spawn rate in users/s (defaults: a ramp's users/ramp;
otherwise fast enough that each change completes within about a second). Durations are
`30s`, `2m`, `1h`, `1h30m`, `250ms` or plain seconds. Each shape returns None after its end,
so the test stops by itself.

Use from a locustfile (e.g. in an `init` event listener, once options are parsed)::

    from loadtest.inlocust.shapes import use_shape
    use_shape(environment, environment.parsed_options.shape)   # sets environment.shape_class

or `environment.shape_class = shape_from_spec("ramp:users=50,ramp=30s,hold=2m")`.

The classes are marked ``abstract = True`` so that importing them into a locustfile does not
make Locust pick one up and instantiate it without parameters; `shape_class_from_spec` gives
a concrete, parameter-bound subclass when a class (not an instance) is needed.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from locust import LoadTestShape

from loadtest.config import parse_duration

__all__ = ["RampShape", "StepsShape", "SpikeShape", "SoakShape", "SHAPES", "parse_duration", "shape_from_spec", "shape_class_from_spec", "use_shape"]


# Parameter kinds.
INT, DURATION, RATE = "int", "duration", "rate"
REQUIRED = object()


def _fmt_duration(seconds: float) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


class SpecShape(LoadTestShape):
    """A load shape built from named parameters; subclasses declare `name`, `PARAMS`, `users_at`.

    `users_at(t)` is the planned user count t seconds into the test (the curve a chart would
    draw), or None after the end. `tick()` returns the current phase's target user count and
    spawn rate, so Locust ramps between phases at that rate; the tuple stays the same within a
    phase, so Locust is not restarted every second.
    """

    abstract: ClassVar[bool] = True
    name: ClassVar[str] = ""
    #: name → (kind, default or REQUIRED)
    PARAMS: ClassVar[dict[str, tuple[str, Any]]] = {}
    USAGE: ClassVar[str] = ""

    def __init__(self, **params: Any):
        super().__init__()
        unknown = [k for k in params if k not in self.PARAMS]
        if unknown:
            raise ValueError(f"unknown parameter {unknown[0]!r} for shape {self.name!r}; valid: {', '.join(self.PARAMS)} (usage: {self.USAGE})")
        values: dict[str, Any] = {}
        for key, (kind, default) in self.PARAMS.items():
            raw = params.get(key, default)
            if raw is REQUIRED:
                raise ValueError(f"shape {self.name!r} needs {key}=...; usage: {self.USAGE}")
            values[key] = None if raw is None else self._convert(key, kind, raw)
        self.params = values
        self._validate()

    def _convert(self, key: str, kind: str, raw: Any) -> float | int:
        try:
            if kind == DURATION:
                return parse_duration(raw)
            if kind == INT:
                value = float(raw)
                if not value.is_integer() or value < 0:
                    raise ValueError
                return int(value)
            value = float(raw)
            if not value > 0 or math.isinf(value):
                raise ValueError
            return value
        except (TypeError, ValueError) as e:
            what = {INT: "a whole number >= 0", RATE: "a number > 0 (users per second)", DURATION: "a duration like 30s, 2m, 1h or plain seconds"}[kind]
            raise ValueError(f"shape {self.name!r}: {key}={raw!r} is not {what}") from e

    def _validate(self) -> None:
        if self.total_s <= 0:
            raise ValueError(f"shape {self.name!r} lasts 0 seconds; usage: {self.USAGE}")

    def __getattr__(self, item: str) -> Any:
        params = self.__dict__.get("params")
        if params is not None and item in params:
            return params[item]
        raise AttributeError(item)

    # -- the shape ---------------------------------------------------------------------------
    @property
    def total_s(self) -> float:
        """When the shape ends (tick() returns None from then on), in seconds."""
        raise NotImplementedError

    def users_at(self, t: float) -> int | None:
        raise NotImplementedError

    def target_at(self, t: float) -> tuple[int, float] | None:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        return self.target_at(self.get_run_time())

    @property
    def spec(self) -> str:
        parts = []
        for key, (kind, default) in self.PARAMS.items():
            v = self.params[key]
            if v is None or (default is not REQUIRED and default is not None and self._convert(key, kind, default) == v):
                continue
            parts.append(f"{key}={_fmt_duration(v) if kind == DURATION else f'{v:g}'}")
        return f"{self.name}:{','.join(parts)}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


class RampShape(SpecShape):
    """0 → `users` over `ramp`, hold for `hold`, then optionally ramp down to 0 over `down`."""

    abstract = True
    name = "ramp"
    PARAMS = {"users": (INT, REQUIRED), "ramp": (DURATION, 0), "hold": (DURATION, 0), "down": (DURATION, 0), "rate": (RATE, None)}
    USAGE = "ramp:users=N,ramp=30s,hold=2m[,down=30s][,rate=N]"

    @property
    def _up_rate(self) -> float:
        if self.rate:
            return self.rate
        return self.users / self.ramp if self.ramp else max(self.users, 1)

    @property
    def _down_rate(self) -> float:
        if self.rate:
            return self.rate
        return self.users / self.down if self.down else max(self.users, 1)

    @property
    def _hold_s(self) -> float:
        return self.hold

    @property
    def total_s(self) -> float:
        return self.ramp + self._hold_s + self.down

    def users_at(self, t: float) -> int | None:
        if t < 0 or t >= self.total_s:
            return None
        if t < self.ramp:
            return min(self.users, math.ceil(self.users * t / self.ramp))
        if t < self.ramp + self._hold_s:
            return self.users
        left = self.total_s - t
        return min(self.users, math.ceil(self.users * left / self.down))

    def target_at(self, t: float) -> tuple[int, float] | None:
        if t < 0 or t >= self.total_s:
            return None
        if t < self.ramp + self._hold_s:
            return self.users, self._up_rate
        return 0, self._down_rate


class SoakShape(RampShape):
    """Ramp up to `users` over `ramp`, then hold until `duration` (total, ramp included)."""

    abstract = True
    name = "soak"
    PARAMS = {"users": (INT, REQUIRED), "ramp": (DURATION, 0), "duration": (DURATION, REQUIRED), "rate": (RATE, None)}
    USAGE = "soak:users=N,ramp=1m,duration=1h[,rate=N]"
    down = 0.0

    def _validate(self) -> None:
        if self.duration <= self.ramp:
            raise ValueError(f"shape 'soak': duration ({_fmt_duration(self.duration)}) must be longer than ramp ({_fmt_duration(self.ramp)})")

    @property
    def _hold_s(self) -> float:
        return self.duration - self.ramp


class StepsShape(SpecShape):
    """`start` users, then `step` more every `every` up to `max`; held until `duration`
    (default: one more `every` after reaching `max`)."""

    abstract = True
    name = "steps"
    PARAMS = {
        "start": (INT, None),
        "step": (INT, REQUIRED),
        "every": (DURATION, REQUIRED),
        "max": (INT, REQUIRED),
        "duration": (DURATION, None),
        "rate": (RATE, None),
    }
    USAGE = "steps:start=10,step=10,every=30s,max=100[,duration=10m][,rate=N]"

    def _validate(self) -> None:
        if self.start is None:
            self.params["start"] = self.step
        if self.every <= 0:
            raise ValueError("shape 'steps': every must be > 0")
        if self.step <= 0 and self.start < self.max:
            raise ValueError("shape 'steps': step must be > 0 to reach max")
        if self.start > self.max:
            raise ValueError(f"shape 'steps': start ({self.start}) is above max ({self.max})")
        super()._validate()

    @property
    def n_steps(self) -> int:
        """Steps after the start until `max` is reached."""
        return math.ceil((self.max - self.start) / self.step) if self.max > self.start else 0

    @property
    def total_s(self) -> float:
        if self.duration is not None:
            return self.duration
        return (self.n_steps + 1) * self.every

    @property
    def _rate(self) -> float:
        return self.rate or float(max(self.start, self.step, 1))

    def users_at(self, t: float) -> int | None:
        if t < 0 or t >= self.total_s:
            return None
        return min(self.start + self.step * int(t // self.every), self.max)

    def target_at(self, t: float) -> tuple[int, float] | None:
        users = self.users_at(t)
        return None if users is None else (users, self._rate)

    @property
    def spec(self) -> str:  # start defaults to step: always show it
        s = super().spec
        return s if "start=" in s else s.replace(":", f":start={self.start},", 1)


class SpikeShape(SpecShape):
    """`base` users; at `at`, jump to `peak` for `for`; back to `base` until `duration`."""

    abstract = True
    name = "spike"
    PARAMS = {
        "base": (INT, 0),
        "peak": (INT, REQUIRED),
        "at": (DURATION, REQUIRED),
        "for": (DURATION, REQUIRED),
        "duration": (DURATION, REQUIRED),
        "rate": (RATE, None),
    }
    USAGE = "spike:base=10,peak=100,at=60s,for=30s,duration=3m[,rate=N]"

    def _validate(self) -> None:
        p = self.params
        if p["at"] + p["for"] > p["duration"]:
            raise ValueError(f"shape 'spike': at + for ({_fmt_duration(p['at'] + p['for'])}) is past duration ({_fmt_duration(p['duration'])})")
        if p["for"] <= 0:
            raise ValueError("shape 'spike': for must be > 0")
        super()._validate()

    @property
    def total_s(self) -> float:
        return self.duration

    @property
    def _rate(self) -> float:
        return self.rate or float(max(abs(self.peak - self.base), self.base, 1))

    def users_at(self, t: float) -> int | None:
        if t < 0 or t >= self.total_s:
            return None
        start = self.params["at"]
        return self.peak if start <= t < start + self.params["for"] else self.base

    def target_at(self, t: float) -> tuple[int, float] | None:
        users = self.users_at(t)
        return None if users is None else (users, self._rate)


SHAPES: dict[str, type[SpecShape]] = {c.name: c for c in (RampShape, StepsShape, SpikeShape, SoakShape)}


def _split_spec(spec: str) -> tuple[type[SpecShape], dict[str, str]]:
    valid = ", ".join(f"{c.USAGE}" for c in SHAPES.values())
    name, _, rest = str(spec).strip().partition(":")
    name = name.strip().lower()
    cls = SHAPES.get(name)
    if cls is None:
        raise ValueError(f"unknown shape {name!r}; valid shapes: {', '.join(SHAPES)} (e.g. {valid})")
    params: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or not key or not value.strip():
            raise ValueError(f"shape {name!r}: {item!r} is not key=value; usage: {cls.USAGE}")
        if key in params:
            raise ValueError(f"shape {name!r}: {key} given twice")
        params[key] = value.strip()
    return cls, params


def shape_from_spec(spec: str) -> SpecShape:
    """A shape instance from a spec like ``ramp:users=50,ramp=30s,hold=2m``, ready for
    Locust's ``environment.shape_class``. Raises ValueError naming the bad part."""
    cls, params = _split_spec(spec)
    return cls(**params)


def shape_class_from_spec(spec: str) -> type[SpecShape]:
    """A concrete LoadTestShape subclass with the spec's parameters bound, instantiable with
    no arguments (what Locust does with shape classes it finds in a locustfile)."""
    cls, params = _split_spec(spec)
    cls(**params)  # validate now, not at Locust's instantiation

    def __init__(self: SpecShape) -> None:
        cls.__init__(self, **params)

    return type(cls.__name__, (cls,), {"abstract": False, "__init__": __init__, "__module__": __name__, "__doc__": f"{cls.__doc__} ({spec})"})


def use_shape(environment: Any, spec: str | None) -> SpecShape | None:
    """Set `environment.shape_class` from a spec (no-op for an empty spec); returns the shape."""
    if not spec:
        return None
    shape = shape_from_spec(spec)
    shape.runner = getattr(environment, "runner", None)
    environment.shape_class = shape
    return shape
