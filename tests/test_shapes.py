"""Load shapes: users over a faked run time, None at the end, spec parsing and its errors."""

import numpy as np
import pytest
from locust import LoadTestShape

from loadtest.inlocust.shapes import RampShape, SoakShape, SpikeShape, StepsShape, parse_duration, shape_class_from_spec, shape_from_spec, use_shape


def ticks(shape, times, monkeypatch):
    """tick() at each faked run time."""
    out = []
    for t in times:
        monkeypatch.setattr(shape, "get_run_time", lambda t=t: t)
        out.append(shape.tick())
    return out


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("30s", 30),
        ("2m", 120),
        ("1h", 3600),
        ("90", 90),
        ("1.5", 1.5),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("1.5m", 90),
        (45, 45),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "abc", "10x", "-5", "1h30", "m"])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_ramp_users_over_time(monkeypatch):
    shape = shape_from_spec("ramp:users=50,ramp=30s,hold=2m")
    assert isinstance(shape, RampShape) and isinstance(shape, LoadTestShape)
    assert shape.total_s == 150
    rate = 50 / 30
    assert ticks(shape, [0, 10, 29.9, 30, 149.9, 150, 500], monkeypatch) == [(50, rate), (50, rate), (50, rate), (50, rate), (50, rate), None, None]
    assert [shape.users_at(t) for t in (0, 15, 30, 100, 150)] == [0, 25, 50, 50, None]


def test_ramp_down(monkeypatch):
    shape = shape_from_spec("ramp:users=40,ramp=20s,hold=1m,down=10s")
    assert shape.total_s == 90
    assert ticks(shape, [5, 79.9, 80, 85, 90], monkeypatch) == [(40, 2.0), (40, 2.0), (0, 4.0), (0, 4.0), None]
    assert shape.users_at(85) == 20


def test_ramp_rate_override_and_instant(monkeypatch):
    assert ticks(shape_from_spec("ramp:users=10,ramp=10s,hold=5s,rate=3"), [0], monkeypatch) == [(10, 3.0)]
    # No ramp: spawn everyone within about a second.
    assert ticks(shape_from_spec("ramp:users=10,hold=5"), [0, 4.9, 5], monkeypatch) == [(10, 10), (10, 10), None]


def test_steps_users_over_time(monkeypatch):
    shape = shape_from_spec("steps:start=10,step=10,every=30s,max=100")
    assert isinstance(shape, StepsShape)
    # 9 steps from 10 to 100, then max is held for one more step.
    assert shape.total_s == 300
    users = [None if r is None else r[0] for r in ticks(shape, [0, 29.9, 30, 60, 119, 240, 270, 299.9, 300], monkeypatch)]
    assert users == [10, 10, 20, 30, 40, 90, 100, 100, None]


def test_steps_caps_at_max_and_duration(monkeypatch):
    shape = shape_from_spec("steps:step=5,every=1m,max=12,duration=10m")
    assert shape.start == 5 and shape.total_s == 600
    users = [None if r is None else r[0] for r in ticks(shape, [0, 60, 120, 599, 600], monkeypatch)]
    assert users == [5, 10, 12, 12, None]


def test_spike_users_over_time(monkeypatch):
    shape = shape_from_spec("spike:base=10,peak=100,at=60s,for=30s,duration=3m")
    assert isinstance(shape, SpikeShape)
    users = [None if r is None else r[0] for r in ticks(shape, [0, 59.9, 60, 89.9, 90, 179.9, 180], monkeypatch)]
    assert users == [10, 10, 100, 100, 10, 10, None]
    # The spike is sharp by default: the jump takes about a second.
    assert shape.tick() is None
    monkeypatch.setattr(shape, "get_run_time", lambda: 60)
    assert shape.tick()[1] == 90


def test_soak(monkeypatch):
    shape = shape_from_spec("soak:users=50,ramp=1m,duration=1h")
    assert isinstance(shape, SoakShape)
    assert shape.total_s == 3600
    assert ticks(shape, [0, 30, 60, 3599, 3600], monkeypatch) == [(50, 50 / 60), (50, 50 / 60), (50, 50 / 60), (50, 50 / 60), None]
    assert shape.users_at(30) == 25


def test_real_clock_starts_at_zero():
    shape = shape_from_spec("ramp:users=5,ramp=10s,hold=10s")
    shape.reset_time()
    assert shape.tick() == (5, 0.5)


@pytest.mark.parametrize(
    "spec,fragments",
    [
        ("wave:users=10", ["unknown shape 'wave'", "ramp, steps, spike, soak"]),
        ("ramp:users=10,hold=1m,speed=3", ["unknown parameter 'speed'", "users, ramp, hold, down, rate"]),
        ("ramp:hold=1m", ["needs users="]),
        ("ramp:users=ten,hold=1m", ["users='ten'", "whole number"]),
        ("ramp:users=10,hold=soon", ["hold='soon'", "duration"]),
        ("ramp:users=10", ["lasts 0 seconds"]),
        ("ramp:users=10,hold", ["'hold' is not key=value"]),
        ("steps:start=10,step=10,every=30s", ["needs max="]),
        ("steps:start=200,step=10,every=30s,max=100", ["above max"]),
        ("spike:base=10,peak=100,at=2m,for=2m,duration=3m", ["past duration"]),
        ("soak:users=5,ramp=2m,duration=1m", ["longer than ramp"]),
        ("ramp:users=5,hold=1m,rate=0", ["rate='0'"]),
    ],
)
def test_bad_specs(spec, fragments):
    with pytest.raises(ValueError) as e:
        shape_from_spec(spec)
    for fragment in fragments:
        assert fragment in str(e.value)


def test_spec_round_trip():
    for spec in (
        "ramp:users=50,ramp=30s,hold=2m",
        "steps:start=10,step=10,every=30s,max=100",
        "spike:base=10,peak=100,at=1m,for=30s,duration=3m",
        "soak:users=50,ramp=1m,duration=1h",
    ):
        assert shape_from_spec(spec).spec == spec
        assert shape_from_spec(shape_from_spec(spec).spec).spec == spec


def test_classes_not_picked_up_by_locust_but_bound_class_is():
    from locust.util.load_locustfile import is_shape_class

    assert not any(is_shape_class(c) for c in (RampShape, StepsShape, SpikeShape, SoakShape))
    cls = shape_class_from_spec("spike:base=1,peak=5,at=10s,for=5s,duration=30s")
    assert is_shape_class(cls) and issubclass(cls, SpikeShape)
    assert cls().users_at(12) == 5
    with pytest.raises(ValueError):
        shape_class_from_spec("spike:peak=5")


def test_use_shape_sets_environment():
    class Env:
        runner = object()
        shape_class = None

    env = Env()
    shape = use_shape(env, "ramp:users=3,hold=5s")
    assert env.shape_class is shape and shape.runner is Env.runner
    assert use_shape(env, "") is None and env.shape_class is shape


def test_arrival_staircase_offers_each_level_for_its_time_and_logs_the_boundaries(tmp_path, caplog):
    import csv
    import logging
    import re

    import gevent

    from loadtest import config
    from analysis import records
    from loadtest.inlocust.arrivals import Arrivals
    from loadtest.inlocust.recorder import open_csv

    assert config.arrival_levels({"*": 2}, {"step": 2, "every": 5, "max": 7}) == [2, 4, 6, 7]
    assert config.arrival_levels({"uk": 1, "eu": 2}, {}) == [3]
    caplog.set_level(logging.INFO, logger="loadtest.inlocust.arrivals")
    # Constant spacing: planned times are exact, 10 in the first 0.5 s level, 20 in the second.
    out = open_csv(tmp_path / records.ARRIVALS_CSV, records.ARRIVAL_COLUMNS)
    arrivals = Arrivals({"uk": 20.0}, {}, poisson=False, out=out, levels=[1.0, 2.0], every_s=0.5)
    arrivals.start(0)  # an empty pool is ready at once
    gevent.sleep(1.4)
    arrivals.close()
    logged = [r.getMessage() for r in caplog.records]
    levels = [(float(a), float(b)) for m in logged for a, b in re.findall(r"arrival rate ([\d.]+) conversations/s from ([\d.]+)", m)]
    assert [rate for rate, _ in levels] == [20.0, 40.0]
    start = levels[0][1]
    assert levels[1][1] == pytest.approx(start + 0.5)
    done = [float(x) for m in logged for x in re.findall(r"arrival steps done at ([\d.]+)", m)]
    assert done == [pytest.approx(start + 1.0)]
    with open(tmp_path / "arrivals.csv", newline="") as f:
        planned = [float(r["planned"]) for r in csv.DictReader(f)]  # all dropped: no user waits
    assert sum(start <= t < start + 0.5 for t in planned) == 10
    assert sum(start + 0.5 <= t < start + 1.0 for t in planned) == 20
    assert len(planned) == 30  # nothing after the last level


def test_arrivals_without_steps_offer_the_rate_for_ever(tmp_path):
    import csv

    import gevent

    from analysis import records
    from loadtest.inlocust.arrivals import Arrivals
    from loadtest.inlocust.recorder import open_csv

    out = open_csv(tmp_path / records.ARRIVALS_CSV, records.ARRIVAL_COLUMNS)
    arrivals = Arrivals({"uk": 20.0}, {}, poisson=False, out=out)
    arrivals.start(0)  # an empty pool is ready at once
    gevent.sleep(1.3)  # the schedule sleeps between arrivals (and lets this greenlet run)
    arrivals.close()
    with open(tmp_path / records.ARRIVALS_CSV, newline="") as f:
        planned = sorted(float(r["planned"]) for r in csv.DictReader(f))
    assert 20 <= len(planned) <= 27
    assert np.diff(planned) == pytest.approx(np.full(len(planned) - 1, 0.05), abs=1e-5)


def test_open_model_staircase_settings_are_checked():
    from loadtest import config

    with pytest.raises(ValueError, match="set --arrival-rate too"):
        config.resolve(flags={"arrival_steps": "step=1,every=10s,max=5"}, environ={})
    with pytest.raises(ValueError, match="below --arrival-rate"):
        config.resolve(flags={"arrival_rate": "6", "arrival_steps": "step=1,every=10s,max=5"}, environ={})
    with pytest.raises(ValueError, match="step=RATE,every=DURATION,max=RATE"):
        config.resolve(flags={"arrival_rate": "1", "arrival_steps": "step=1,max=5"}, environ={})
    scenario = config.resolve(flags={"arrival_rate": "1", "arrival_steps": "step=0.5,every=1m,max=3"}, environ={})
    assert scenario.arrival_steps == {"step": 0.5, "every": 60.0, "max": 3.0}
