"""The open model: conversations arrive on a schedule, whatever the response times.

With `--arrival-rate`, new conversations start at planned times (evenly spaced or Poisson,
per region), so slow responses cannot lower the offered load — no coordinated omission.
Users form a pool of at most `--users` concurrent conversations; inside a conversation the
turns stay closed-loop with think time. When a conversation is due and no user is free, it
is dropped and counted (like k6's dropped iterations); when one starts late, its schedule lag
is recorded. Both go to arrivals.csv, one row per planned conversation, with the reason of
a drop.

The schedule lives inside the test's window: it starts once the pool is ready (`start()`,
when Locust has spawned the users and they wait for work; k6 pre-allocates its VUs the same
way), plans nothing at or after the end (`--duration`), and `stop()` (the test is stopping)
ends it and sends idle users home, so a stop only closes what is open.

With `--arrival-steps` the rate climbs a staircase (k6's ramping-arrival-rate in steps): each
level is held `every` seconds, then arrivals stop. Each level change is logged at INFO as
`arrival rate R conversations/s from EPOCH` and the end as `arrival steps done at EPOCH`:
the exact step boundaries for `loadtest capacity --arrival-rate-*` (see ARRIVAL_LEVEL_LOG).
"""

from __future__ import annotations

import csv
import heapq
import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Callable

import gevent
from gevent.queue import Queue

from loadtest import config
from loadtest.inlocust.recorder import LineSink
from loadtest.runfolder import WriteFailed

logger = logging.getLogger("loadtest.inlocust.arrivals")

#: The log lines of a staircase (parsed by loadtest.commands.capacity): total rate and start epoch.
ARRIVAL_LEVEL_LOG = "arrival rate {rate:g} conversations/s from {at:.6f}"
ARRIVAL_DONE_LOG = "arrival steps done at {at:.6f}"


@dataclass(frozen=True)
class Ticket:
    planned: float  # epoch seconds
    region: str
    variant: str


def region_rates(rate: dict[str, float], regions: dict[str, float], share: float = 1.0) -> dict[str, float]:
    """A total ({'*': 5}, split by region weights) or per-region rates → per-region rates,
    times `share` (a worker's part of a distributed run)."""
    if "*" in rate:
        weight = sum(regions.values())
        return {r: rate["*"] * w / weight * share for r, w in regions.items()}
    stray = set(rate) - set(regions)
    if stray:
        raise ValueError(f"--arrival-rate names regions not in the run: {', '.join(sorted(stray))}")
    return {r: x * share for r, x in rate.items()}


# Wait at most this long after spawning for the pool's users to reach take() (normally a few ms).
POOL_READY_TIMEOUT_S = 5.0


class Stopped(Exception):
    """take() after stop(): the test is ending, no conversation will come."""


_STOP = object()  # wakes a user waiting in take() when the test stops


class Arrivals:
    def __init__(
        self,
        rates: dict[str, float],
        variants: dict[str, float],
        poisson: bool,
        out: LineSink | None,
        seed: int | None = None,
        end: float | None = None,
        on_failure: Callable[[WriteFailed], None] = lambda e: None,
        levels: list[float] | None = None,
        every_s: float = math.inf,
    ):
        """`out`: arrivals.csv with its header (`recorder.open_csv`), a worker's outbox
        stream, or None. A failed write stops the file and goes to `on_failure`. `end`
        (epoch s): nothing is planned at or after it (None: until stopped). `levels`:
        factors of `rates`, each held `every_s` seconds (None: `rates` for ever)."""
        self.rates = {r: x for r, x in rates.items() if x > 0}
        self.levels = levels or [1.0]
        self.every_s = every_s if levels else math.inf
        self.variants = variants or {"": 1.0}
        self.poisson = poisson
        self.rng = random.Random(seed)
        self.queue: Queue = Queue()
        self.idle = 0
        self.end = end
        self.pool = 0  # users the pool should hold (set by start())
        self.joined = 0  # users that have started
        self.stopped = False
        self.offered = self.started = self.dropped = 0
        self._file = out
        self._flushed = time.monotonic()
        self.on_failure = on_failure
        if out is not None:
            self._csv = csv.writer(out, lineterminator="\n")
        self._greenlet: gevent.Greenlet | None = None

    @classmethod
    def for_scenario(
        cls,
        scenario: config.Scenario,
        out: LineSink | None,
        share: float = 1.0,
        end: float | None = None,
        on_failure: Callable[[WriteFailed], None] = lambda e: None,
    ) -> Arrivals:
        """The open model of a scenario (--arrival-rate, --arrival, --arrival-steps) in this
        process, which offers `share` of the rate (a worker of a distributed run)."""
        steps = scenario.arrival_steps
        levels = config.arrival_levels(scenario.arrival_rate, steps)
        return cls(
            region_rates(scenario.arrival_rate, scenario.regions, share),
            scenario.variants,
            scenario.arrival == "poisson",
            out,
            end=end,
            on_failure=on_failure,
            levels=[x / levels[0] for x in levels] if steps else None,
            every_s=steps.get("every", math.inf),
        )

    def start(self, pool: int) -> None:
        """The pool of `pool` users is spawned: plan conversations once they wait for work."""
        self.pool = pool
        if self._greenlet is None and not self.stopped:
            self._greenlet = gevent.spawn(self._schedule)

    def stop(self) -> None:
        """The test is stopping: plan nothing more; users waiting for a conversation leave."""
        self.stopped = True
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
        for _ in range(self.idle):
            self.queue.put(_STOP)
        self.idle = 0

    def join(self) -> None:
        """A user of the pool has started (it will take() conversations)."""
        self.joined += 1

    def _gap(self, rate: float) -> float:
        return self.rng.expovariate(rate) if self.poisson else 1.0 / rate

    def _variant(self) -> str:
        names = list(self.variants)
        return self.rng.choices(names, weights=[self.variants[n] for n in names])[0]

    def _schedule(self) -> None:
        deadline = time.monotonic() + POOL_READY_TIMEOUT_S
        while self.idle < self.pool and time.monotonic() < deadline:
            gevent.sleep(0.01)
        start = time.time()
        stepped = math.isfinite(self.every_s)
        for k, factor in enumerate(self.levels):
            begin = start + k * self.every_s if k else start  # (0 × inf is NaN: no steps)
            end = start + (k + 1) * self.every_s
            rates = {r: x * factor for r, x in self.rates.items()}
            if stepped:
                logger.info(ARRIVAL_LEVEL_LOG.format(rate=sum(rates.values()), at=begin))
            if not self._arrive(rates, begin, end):
                return  # the test's end came first
        if stepped:
            gevent.sleep(max(start + len(self.levels) * self.every_s - time.time(), 0))
            logger.info(ARRIVAL_DONE_LOG.format(at=start + len(self.levels) * self.every_s))

    def _arrive(self, rates: dict[str, float], begin: float, end: float) -> bool:
        """Offer conversations at `rates` from `begin` until `end` (may be inf); False when
        the test's end (`self.end`) came first."""
        # Stagger the first arrival of each region by a random phase: no synchronised bursts.
        heap = [(begin + self.rng.uniform(0, 1.0 / rate), region) for region, rate in rates.items()]
        heapq.heapify(heap)
        while heap:
            planned, region = heapq.heappop(heap)
            if self.end is not None and planned >= self.end:
                return False
            if planned >= end:
                return True
            heapq.heappush(heap, (planned + self._gap(rates[region]), region))
            delay = planned - time.time()
            if delay > 0:
                gevent.sleep(delay)
            self.offered += 1
            ticket = Ticket(planned, region, self._variant())
            if self.idle > 0:
                self.idle -= 1
                self.queue.put(ticket)
            else:
                self.dropped += 1
                self._row(
                    ticket,
                    None,
                    f"all {self.joined} users busy" if self.joined >= self.pool else f"pool not ready: {self.joined} of {self.pool} users spawned, all busy",
                )
        return True

    def take(self) -> Ticket:
        """Block until a conversation is due; called by a free user. Raises Stopped when the
        test is stopping."""
        if self.stopped:
            raise Stopped()
        self.idle += 1
        ticket = self.queue.get()
        if ticket is _STOP:
            raise Stopped()
        self.started += 1
        self._row(ticket, time.time())
        return ticket

    def _row(self, ticket: Ticket, started: float | None, reason: str = "") -> None:
        if self._file is None or self._file.closed:
            return
        lag = "" if started is None else f"{(started - ticket.planned) * 1000:.3f}"
        self._csv.writerow(
            (f"{ticket.planned:.6f}", ticket.region, ticket.variant, "" if started is None else f"{started:.6f}", lag, int(started is None), reason)
        )
        if time.monotonic() - self._flushed > 1.0:  # lose at most about a second on a kill
            self.flush()

    def flush(self) -> None:
        self._flushed = time.monotonic()
        if self._file and not self._file.closed:
            try:
                self._file.flush()
            except WriteFailed as e:
                self.on_failure(e)

    def close(self) -> None:
        self.stop()
        if self._file and not self._file.closed:
            try:
                self._file.close()
            except WriteFailed as e:
                self.on_failure(e)
