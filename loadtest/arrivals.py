"""The open model: conversations arrive on a schedule, whatever the response times.

With `--arrival-rate`, new conversations start at planned times (evenly spaced or Poisson,
per region), so slow responses cannot lower the offered load — no coordinated omission.
Users form a pool of at most `--users` concurrent conversations; inside a conversation the
turns stay closed-loop with think time. When a conversation is due and no user is free, it
is dropped and counted (like k6's dropped iterations); when one starts late, its schedule lag
is recorded. Both go to arrivals.csv, one row per planned conversation.

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
from loadtest.recorder import LineSink
from loadtest.runfolder import WriteFailed

logger = logging.getLogger("loadtest.arrivals")

#: The log lines of a staircase (parsed by loadtest.capacity): total rate and start epoch.
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


class Arrivals:
    def __init__(self, rates: dict[str, float], variants: dict[str, float], poisson: bool,
                 out: LineSink | None, seed: int | None = None,
                 on_failure: Callable[[WriteFailed], None] = lambda e: None,
                 levels: list[float] | None = None, every_s: float = math.inf):
        """`out`: arrivals.csv with its header (`recorder.open_csv`), a worker's outbox
        stream, or None. A failed write stops the file and goes to `on_failure`. `levels`:
        factors of `rates`, each held `every_s` seconds (None: `rates` for ever)."""
        self.rates = {r: x for r, x in rates.items() if x > 0}
        self.levels = levels or [1.0]
        self.every_s = every_s if levels else math.inf
        self.variants = variants or {"": 1.0}
        self.poisson = poisson
        self.rng = random.Random(seed)
        self.queue: Queue = Queue()
        self.idle = 0
        self.offered = self.started = self.dropped = 0
        self._file = out
        self._flushed = time.monotonic()
        self.on_failure = on_failure
        if out is not None:
            self._csv = csv.writer(out, lineterminator="\n")
        self._greenlet = gevent.spawn(self._schedule)

    @classmethod
    def for_scenario(cls, scenario: config.Scenario, out: LineSink | None, share: float = 1.0,
                     on_failure: Callable[[WriteFailed], None] = lambda e: None) -> Arrivals:
        """The open model of a scenario (--arrival-rate, --arrival, --arrival-steps) in this
        process, which offers `share` of the rate (a worker of a distributed run)."""
        steps = scenario.arrival_steps
        levels = config.arrival_levels(scenario.arrival_rate, steps)
        return cls(region_rates(scenario.arrival_rate, scenario.regions, share), scenario.variants,
                   scenario.arrival == "poisson", out, on_failure=on_failure,
                   levels=[x / levels[0] for x in levels] if steps else None,
                   every_s=steps.get("every", math.inf))

    def _gap(self, rate: float) -> float:
        return self.rng.expovariate(rate) if self.poisson else 1.0 / rate

    def _variant(self) -> str:
        names = list(self.variants)
        return self.rng.choices(names, weights=[self.variants[n] for n in names])[0]

    def _schedule(self) -> None:
        start = time.time()
        stepped = math.isfinite(self.every_s)
        for k, factor in enumerate(self.levels):
            begin = start + k * self.every_s if k else start  # (0 × inf is NaN: no steps)
            end = start + (k + 1) * self.every_s
            rates = {r: x * factor for r, x in self.rates.items()}
            if stepped:
                logger.info(ARRIVAL_LEVEL_LOG.format(rate=sum(rates.values()), at=begin))
            self._arrive(rates, begin, end)
        if stepped:
            gevent.sleep(max(start + len(self.levels) * self.every_s - time.time(), 0))
            logger.info(ARRIVAL_DONE_LOG.format(at=start + len(self.levels) * self.every_s))

    def _arrive(self, rates: dict[str, float], begin: float, end: float) -> None:
        """Offer conversations at `rates` from `begin` until `end` (may be inf)."""
        # Stagger the first arrival of each region by a random phase: no synchronised bursts.
        heap = [(begin + self.rng.uniform(0, 1.0 / rate), region) for region, rate in rates.items()]
        heapq.heapify(heap)
        while heap:
            planned, region = heapq.heappop(heap)
            if planned >= end:
                return
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
                self._row(ticket, None)

    def take(self) -> Ticket:
        """Block until a conversation is due; called by a free user."""
        self.idle += 1
        ticket = self.queue.get()
        self.started += 1
        self._row(ticket, time.time())
        return ticket

    def _row(self, ticket: Ticket, started: float | None) -> None:
        if self._file is None or self._file.closed:
            return
        lag = "" if started is None else f"{(started - ticket.planned) * 1000:.3f}"
        self._csv.writerow((f"{ticket.planned:.6f}", ticket.region, ticket.variant,
                            "" if started is None else f"{started:.6f}", lag,
                            int(started is None)))
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
        self._greenlet.kill(block=False)
        if self._file and not self._file.closed:
            try:
                self._file.close()
            except WriteFailed as e:
                self.on_failure(e)
