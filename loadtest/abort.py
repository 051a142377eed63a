"""Live SLO verdicts that stop a failing run early (k6's abortOnFail with delayAbortEval).

`loadtest run --abort-on-fail` (every SLO), or an SLO marked `abort-on-fail[=GRACE]` (one SLO;
in a scenario file also `{expr = "...", abort_on_fail = true, abort_grace = "10s"}`):

    watcher = Watcher(run_dir, abortable(scenario), grace_s, window_s, stop=...)
    watcher.start()            # while Locust runs
    ...
    watcher.close()
    watcher.breach             # None, or what stopped the run

Every CHECK_INTERVAL_S the watcher reads the rows Locust appended to the run folder
(`loadtest.runtail`) and evaluates the SLOs with `slo.evaluate` — the same code as the final
verdict — on the trailing window: the requests *completed* in the last `window_s` seconds
(and the conversations ended in it), up to READ_GRACE_S ago so the recorder's one-second
flush has landed. An SLO is judged only once the run is `grace` seconds old (its own grace,
else --abort-grace): the first seconds of a run are ramp-up, and a p99 of ten samples would
abort on noise. The first SLO observed outside its threshold calls `stop` (the runner sends
Locust the same SIGINT as a first Ctrl-C: users close their open conversations, the CSVs are
flushed), and the breach is kept for run.json, the exit code (1) and the report's banner.

Not judged live: a scope with no data in the window (nothing to judge yet, e.g. a region with
few conversations), and whole-run totals (`slo.WHOLE_RUN_METRICS`); the final verdict on the
whole run still judges every SLO.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from loadtest import config, runfolder, slo
from loadtest.runtail import RunTail

CHECK_INTERVAL_S = 2.0
#: The recorder flushes every second: rows that completed within this much of now may be missing.
READ_GRACE_S = 1.3


@dataclass
class Breach:
    """The SLO that stopped the run, as recorded in run.json's `abort`."""

    expr: str
    scope: str
    observed: float
    observed_text: str
    threshold_text: str
    at: float  # epoch seconds of the verdict
    after_s: float  # seconds into the run
    window_s: float  # the trailing window it was judged on

    def record(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        return (
            f"SLO {self.expr} breached: observed {self.observed_text} ({self.threshold_text} "
            f"wanted) over the last {self.window_s:g} s, {self.after_s:.0f} s into the run"
        )


def abortable(scenario: config.Scenario) -> list[slo.SLO]:
    """The scenario's SLOs judged live: all with --abort-on-fail, else those marked; never
    whole-run totals."""
    parsed = slo.parse_slos(scenario.slos, variants=list(scenario.variants) or None)
    return [s for s in parsed if (scenario.abort_on_fail or s.abort_on_fail) and s.metric not in slo.WHOLE_RUN_METRICS]


class Watcher(threading.Thread):
    def __init__(
        self,
        run_dir: Path,
        slos: Sequence[slo.SLO],
        grace_s: float,
        window_s: float,
        stop: Callable[[], None],
        warmup_s: float = 0.0,
        interval_s: float = CHECK_INTERVAL_S,
    ):
        super().__init__(name="loadtest-abort", daemon=True)
        self.run_dir, self.slos, self.grace_s, self.window_s = Path(run_dir), list(slos), grace_s, window_s
        self.stop, self.warmup_s, self.interval_s = stop, warmup_s, interval_s
        self.breach: Breach | None = None
        self._done = threading.Event()

    def close(self) -> None:
        self._done.set()
        self.join(timeout=30)

    def run(self) -> None:
        tail = RunTail(self.run_dir)
        self._run_started: float | None = None
        said: set[str] = set()
        while not self._done.wait(self.interval_s):
            try:
                if self._check(tail):
                    return
            except Exception as e:  # a verdict that failed once must not end the watching
                text = f"{type(e).__name__}: {e}"
                if text not in said:
                    said.add(text)
                    sys.stderr.write(f"\nloadtest: live SLO verdict failed ({text}); retrying\n")

    def _check(self, tail: RunTail) -> bool:
        """One live verdict: True when an SLO is breached (the run is being stopped)."""
        requests, _ = tail.read()
        self._run_started = self._run_started or self._test_start(requests)
        started = self._run_started
        if started is None:
            return False
        t1 = time.time() - READ_GRACE_S
        t0 = max(t1 - self.window_s, started + self.warmup_s)
        tail.forget_before(t1 - self.window_s)
        due = [s for s in self.slos if t1 - started >= (self.grace_s if s.abort_grace_s is None else s.abort_grace_s)]
        if not due or t1 <= t0:
            return False
        self.breach = judge(due, tail.requests, tail.conversations, t0, t1, started)
        if not self.breach:
            return False
        sys.stderr.write(f"\nloadtest: {self.breach.message()}; stopping the run (open conversations are being closed)…\n")
        self.stop()
        return True

    def _test_start(self, requests: pd.DataFrame | None) -> float | None:
        """The test's start: run.json's (set by Locust's test_start), else the first request."""
        started = runfolder.read_run_json(self.run_dir).get("started")
        if started:
            return float(started)
        return None if requests is None or not len(requests) else float(requests["timestamp"].min())


def judge(slos: Sequence[slo.SLO], requests: pd.DataFrame | None, conversations: pd.DataFrame | None, t0: float, t1: float, started: float) -> Breach | None:
    """The first SLO outside its threshold on the requests completed (and the conversations
    ended) in [t0, t1), or None. A scope without data in the window is no breach."""
    if requests is None or not len(requests):
        return None
    end = requests["timestamp"].to_numpy(dtype=float) + requests["response_time_ms"].to_numpy(dtype=float) / 1000
    window = requests[(end >= t0) & (end < t1)]
    conv = None
    if conversations is not None and len(conversations):
        ended = conversations["ended"].to_numpy(dtype=float)
        conv = conversations[(ended >= t0) & (ended < t1)]
    for s, r in zip(slos, slo.evaluate(list(slos), window, conv, duration_s=t1 - t0)):
        if not r["passed"] and r["observed"] is not None:
            return Breach(
                expr=s.expr,
                scope=r["scope"],
                observed=r["observed"],
                observed_text=r["observed_text"],
                threshold_text=r["threshold_text"],
                at=t1,
                after_s=t1 - started,
                window_s=round(t1 - t0, 3),
            )
    return None
