"""Latency profiles, variants and the capacity model of the mock Chat API.

Every region × variant × endpoint has a service-time distribution. Service times are
lognormal, given by their median and p99 (what people actually know about a service):

    sigma = ln(p99 / median) / 2.3263        (2.3263 = z of the 99th percentile)
    sample = median * exp(sigma * N(0, 1))

A variant multiplies its region's latencies by its ``latency_factor``, and respond latency
grows with the turn number: ``× (1 + turn_growth × (turn − 1))`` (linear, default +3 % per
turn), so "latency by turn" shows something. ``latency_scale`` (see MockConfig) multiplies
everything; 0 means no injected delay at all.

Default table (median / p99 in ms; variant ``b`` × 1.3):

    region       create     respond    close     slots  queue
    uk           90/300     140/450    30/100    48     96
    eu           100/350    160/500    35/110    32     64
    us           120/400    180/600    40/120    64     128
    self-serve   150/600    250/900    50/180    16     32

Capacity model: each region has ``slots`` concurrent service slots. A request that finds
them all busy waits in a FIFO queue, so latency rises with the number in flight; a request
that finds ``queue_limit`` already waiting is rejected at once with 503 (or 429 +
Retry-After, see ``MockConfig.overload_status``). That gives every region a different knee
for a capacity search. See :class:`Capacity`. ``queue_limit = 0`` rejects as soon as all
slots are busy. With ``latency_scale`` 0 requests take no time, so nothing ever queues.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from dataclasses import dataclass, field

from loadtest import api

Z99 = 2.3263  # standard normal quantile of 0.99


@dataclass(frozen=True)
class LogNormal:
    """A lognormal service time given by its median and 99th percentile, in milliseconds."""

    median_ms: float
    p99_ms: float

    def __post_init__(self) -> None:
        if not (self.median_ms > 0 and self.p99_ms >= self.median_ms):
            raise ValueError(f"latency needs 0 < median_ms <= p99_ms, got median_ms={self.median_ms} p99_ms={self.p99_ms}")

    @property
    def sigma(self) -> float:
        return math.log(self.p99_ms / self.median_ms) / Z99

    def scaled(self, factor: float) -> "LogNormal":
        return LogNormal(self.median_ms * factor, self.p99_ms * factor)


@dataclass(frozen=True)
class RegionProfile:
    """One region's service times per endpoint and its capacity."""

    create: LogNormal
    respond: LogNormal
    close: LogNormal
    slots: int
    queue_limit: int

    def latency(self, endpoint: str) -> LogNormal:
        return getattr(self, endpoint)


@dataclass(frozen=True)
class Variant:
    """A deployment variant (brand, language or site) selected by ``variant_id`` on create.

    ``latency_factor`` multiplies the region's latencies; ``handoff_factor`` multiplies the
    base per-turn handoff rate; ``brand`` is what the agent's greeting names.
    """

    brand: str
    latency_factor: float = 1.0
    handoff_factor: float = 1.0


def _region(create: tuple[float, float], respond: tuple[float, float], close: tuple[float, float], slots: int, queue_limit: int | None = None) -> RegionProfile:
    """A region from its (median, p99) service times in ms per endpoint and its capacity."""
    return RegionProfile(LogNormal(*create), LogNormal(*respond), LogNormal(*close), slots, 2 * slots if queue_limit is None else queue_limit)


_DEFAULT_REGIONS: dict[str, RegionProfile] = {
    "uk": _region((90, 300), (140, 450), (30, 100), 48),
    "eu": _region((100, 350), (160, 500), (35, 110), 32),
    "us": _region((120, 400), (180, 600), (40, 120), 64),
    "self-serve": _region((150, 600), (250, 900), (50, 180), 16),
}
# A region added to api.REGIONS without a profile here gets this one.
FALLBACK_REGION = _DEFAULT_REGIONS["us"]

BASE_BRAND = "Acme Support"  # the agent's brand when create names no variant


def default_regions() -> dict[str, RegionProfile]:
    """One profile for every region in :data:`loadtest.api.REGIONS`."""
    return {name: _DEFAULT_REGIONS.get(name, FALLBACK_REGION) for name in api.REGIONS}


def default_variants() -> dict[str, Variant]:
    return {
        "a": Variant(brand="Acme Hotels", latency_factor=1.0, handoff_factor=1.0),
        "b": Variant(brand="Acme Rentals", latency_factor=1.3, handoff_factor=2.5),
    }


class Sampler:
    """Precomputed lognormal parameters for one region: ``sample(endpoint, variant, turn)``.

    Returns seconds, already multiplied by the variant factor, the turn growth and the global
    latency scale, so the hot path is one dict lookup and one ``gauss``.
    """

    def __init__(self, profile: RegionProfile, variants: dict[str, Variant], scale: float, turn_growth: float, rng: random.Random) -> None:
        self.enabled = scale > 0
        self.turn_growth = turn_growth
        self._gauss = rng.gauss
        # (endpoint, variant or None) → (median seconds, sigma)
        self._params: dict[tuple[str, str | None], tuple[float, float]] = {}
        factors: dict[str | None, float] = {None: 1.0, **{k: v.latency_factor for k, v in variants.items()}}
        for endpoint in api.ENDPOINTS:
            dist = profile.latency(endpoint)
            for name, factor in factors.items():
                self._params[(endpoint, name)] = (dist.median_ms * factor * scale / 1000.0, dist.sigma)

    def sample(self, endpoint: str, variant: str | None, turn: int = 0) -> float:
        if not self.enabled:
            return 0.0
        median, sigma = self._params[(endpoint, variant)]
        t = median * math.exp(sigma * self._gauss(0.0, 1.0))
        if turn > 1 and endpoint == "respond":
            t *= 1.0 + self.turn_growth * (turn - 1)
        return t

    def median(self, endpoint: str, variant: str | None = None) -> float:
        """The configured median in seconds (for tests and reports)."""
        return self._params[(endpoint, variant)][0]


class Overloaded(Exception):
    """The region's queue is full: the request is rejected without service."""


@dataclass
class Capacity:
    """N service slots and a bounded FIFO queue (a counting semaphore that can say no).

    ``async with capacity:`` takes a slot, waiting in line when all are busy; raises
    :class:`Overloaded` at once when ``queue_limit`` requests are already waiting.
    """

    slots: int
    queue_limit: int
    active: int = 0
    rejected: int = 0
    _waiters: deque = field(default_factory=deque)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @property
    def in_flight(self) -> int:
        return self.active + len(self._waiters)

    async def __aenter__(self) -> None:
        if self.active < self.slots and not self._waiters:
            self.active += 1
            return
        if len(self._waiters) >= self.queue_limit:
            self.rejected += 1
            raise Overloaded()
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the releaser hands its slot over: ``active`` is unchanged
        except BaseException:
            if fut.done() and not fut.cancelled():
                self._release()  # we were handed a slot but are giving up: pass it on
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    def _release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.active -= 1
