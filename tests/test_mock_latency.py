"""Latency profiles (regions, variants, turns) and the capacity model of the mock."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import sys
import time

import aiohttp
import pytest

from loadtest import api
from loadtest.mock import MockConfig, MockServer, config_from_dict, default_regions
from loadtest.mock.profiles import Capacity, LogNormal, Overloaded, Sampler, default_variants

HEADERS = api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN)


@pytest.fixture(autouse=True)
def quick_gil_handoff():
    """Client threads share the GIL with the in-process mock: hand it over quickly."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(before)


# ------------------------------------------------------------------ the distributions


def quantile(values, q):
    values = sorted(values)
    return values[int(q * (len(values) - 1))]


def test_lognormal_sigma_from_median_and_p99():
    dist = LogNormal(100, 300)
    assert dist.sigma == pytest.approx(0.4723, abs=1e-3)
    with pytest.raises(ValueError):
        LogNormal(100, 50)


@pytest.mark.parametrize("region", list(api.REGIONS))
def test_sampler_matches_profile(region):
    profile = default_regions()[region]
    sampler = Sampler(profile, default_variants(), scale=1.0, turn_growth=0.0, rng=random.Random(5))
    for endpoint in api.ENDPOINTS:
        dist = profile.latency(endpoint)
        samples = [sampler.sample(endpoint, None) * 1000 for _ in range(20_000)]
        assert statistics.median(samples) == pytest.approx(dist.median_ms, rel=0.04)
        assert quantile(samples, 0.99) == pytest.approx(dist.p99_ms, rel=0.12)


def test_default_profiles_differ_by_region_in_a_fixed_order():
    regions = default_regions()
    for endpoint in api.ENDPOINTS:
        medians = [regions[r].latency(endpoint).median_ms for r in ("uk", "eu", "us", "self-serve")]
        assert medians == sorted(medians) and len(set(medians)) == 4
    slots = [regions[r].slots for r in ("us", "uk", "eu", "self-serve")]
    assert slots == sorted(slots, reverse=True) and len(set(slots)) == 4


def test_variant_factor_turn_growth_and_scale():
    profile = default_regions()["uk"]
    sampler = Sampler(profile, default_variants(), scale=0.5, turn_growth=0.03, rng=random.Random(1))
    assert sampler.median("respond", "b") == pytest.approx(1.3 * sampler.median("respond", "a"))
    assert sampler.median("create") == pytest.approx(0.045)  # 90 ms × 0.5, in seconds
    turn1 = statistics.median(sampler.sample("respond", "a", 1) for _ in range(20_000))
    turn11 = statistics.median(sampler.sample("respond", "a", 11) for _ in range(20_000))
    assert turn11 / turn1 == pytest.approx(1.30, rel=0.05)
    off = Sampler(profile, default_variants(), scale=0, turn_growth=0.03, rng=random.Random(1))
    assert off.sample("respond", "b", 30) == 0.0


# ------------------------------------------------------------------ over HTTP


async def timed_posts(session: aiohttp.ClientSession, url: str, n: int, body: dict, concurrency: int = 8) -> list[tuple[int, float, dict, bytes]]:
    """n POSTs, ``concurrency`` at a time: (status, seconds, headers, body) each."""
    sem = asyncio.Semaphore(concurrency)

    async def one():
        async with sem:
            start = time.perf_counter()
            async with session.post(url, json=body, headers=HEADERS) as r:
                payload = await r.read()
                return r.status, time.perf_counter() - start, dict(r.headers), payload

    return await asyncio.gather(*(one() for _ in range(n)))


@pytest.mark.slow
def test_regions_and_variants_change_latency_over_http():
    """aiohttp's client in one thread, all regions at once, so a busy machine slows them alike.

    Each region draws from its own seeded RNG, so the 300 service times behind each median
    are the same every run, and the mock reports the median of what it drew: that is checked
    against the profile. The client's medians are only checked as what a shared CPU cannot
    blur: never below the service time, and in the profile's order. Variant b is measured on a
    fresh server, so it gets uk's very draws times 1.3."""
    scale, n = 0.5, 300

    async def measure(base_urls: dict[str, str], body: dict) -> dict:
        async with aiohttp.ClientSession() as session:
            results = await asyncio.gather(*(timed_posts(session, url + api.path("create"), n, body, 16) for url in base_urls.values()))
        for rows in results:
            assert {status for status, *_ in rows} == {200}
        return {region: statistics.median(t for _, t, _, _ in rows) * 1000 for region, rows in zip(base_urls, results)}

    config = MockConfig(latency_scale=scale, seed=1)
    with MockServer(config) as mock:
        medians = asyncio.run(measure(mock.base_urls, {}))
        drawn = {region: mock.stats(region)["service_ms"]["create"] for region in api.REGIONS}
    with MockServer(config, regions=["uk"]) as mock:
        variant_b = asyncio.run(measure(mock.base_urls, {"variant_id": "b"}))["uk"]
        drawn_b = mock.stats("uk")["service_ms"]["create"]
    profile = default_regions()
    for region in api.REGIONS:
        expected = profile[region].create.median_ms * scale
        assert drawn[region]["count"] == n and 0.85 * expected <= drawn[region]["p50"] <= 1.15 * expected, (region, drawn)
        assert medians[region] >= drawn[region]["p50"] - 1, (region, medians, drawn)  # the trip adds, never takes
    assert medians["uk"] < medians["eu"] < medians["us"] < medians["self-serve"], medians
    assert drawn_b["p50"] / drawn["uk"]["p50"] == pytest.approx(1.3, rel=1e-3)  # uk's draws × 1.3
    assert medians["uk"] < variant_b < 1.6 * medians["uk"], (variant_b, medians)


@pytest.mark.slow
def test_respond_latency_grows_with_turn_over_http():
    # Full-scale latencies (uk respond median 140 ms) so that client and scheduling overhead in
    # this shared process stays small against them; turn 8 is × 3.1 the first turn. 40
    # conversations (within uk's 48 slots): medians of 12 lognormal samples were too noisy.
    config = MockConfig(latency_scale=1.0, turn_growth=0.3, end_after=0)

    async def conversations(base: str, n: int = 40) -> list[list[float]]:
        async with aiohttp.ClientSession(base_url=base, headers=HEADERS) as session:

            async def one() -> list[float]:
                async with session.post(api.path("create"), json={}) as r:
                    cid = (await r.json())["conversation_id"]
                times = []
                for _ in range(8):
                    start = time.perf_counter()
                    async with session.post(api.path("respond"), json={"conversation_id": cid}) as r:
                        assert r.status == 200
                        await r.read()
                    times.append(time.perf_counter() - start)
                async with session.put(api.path("close"), json={"conversation_id": cid}) as r:
                    assert r.status == 200
                return times

            return await asyncio.gather(*(one() for _ in range(n)))

    with MockServer(config, regions=["uk"]) as mock:
        runs = asyncio.run(conversations(mock.base_urls["uk"]))
        sampled = mock.stats("uk")["service_ms"]["respond"]  # what the mock meant to take, turns 1-8
    first = statistics.median(r[0] for r in runs)
    last = statistics.median(r[7] for r in runs)
    assert 1.8 < last / first < 4.5, (first, last)
    assert first > 0.10, first  # ≈ 140 ms: never faster than the mock's sleep (no upper bound: a busy CPU adds)
    # the mock's median over all 8 turns lies between what the client saw at the first and the last
    assert sampled["count"] == 8 * 40 and first < sampled["p50"] / 1000 < last, (first, sampled, last)


# ------------------------------------------------------------------ capacity


def capacity_config(service_ms: float = 300, **extra) -> MockConfig:
    return config_from_dict({"regions": {"uk": {"slots": 2, "queue_limit": 2, "create": {"median_ms": service_ms, "p99_ms": service_ms}}}, **extra})


@pytest.mark.parametrize("overload_status", [503, pytest.param(429, marks=pytest.mark.slow)])  # 2 s each
def test_capacity_queues_then_rejects(overload_status):
    # A service time of 1 s: all 10 requests arrive well within it even on a busy machine, so
    # the counters are polled (not read after a fixed sleep) and timings compared as ratios.
    config = capacity_config(1000, overload_status=overload_status)

    async def burst(mock) -> tuple[list, dict]:
        async with aiohttp.ClientSession() as session:
            task = asyncio.ensure_future(timed_posts(session, mock.base_urls["uk"] + api.path("create"), 10, {}, concurrency=10))
            during: dict = {}
            for _ in range(400):  # until every request has arrived: 6 rejected, 4 held
                during = await (await session.get(mock.base_urls["uk"] + "/_mock/stats")).json()
                if during["rejected"] + during["in_flight"] >= 10 or task.done():
                    break
                await asyncio.sleep(0.005)
            return await task, during

    with MockServer(config, regions=["uk"]) as mock:
        results, during = asyncio.run(burst(mock))
        after = mock.stats("uk")
    ok = sorted(t for status, t, _, _ in results if status == 200)
    rejected = [(t, headers, body) for status, t, headers, body in results if status == overload_status]
    assert len(ok) == 4 and len(rejected) == 6
    assert during["in_flight"] == 4 and during["active"] == 2 and during["queued"] == 2
    assert after["rejected"] == 6 and after["in_flight"] == 0 and after["created"] == 4
    assert ok[0] >= 0.95  # at least the service time (timers may fire a little early)
    assert 1.6 < ok[-1] / ok[0] < 2.6  # the queued pair waits for a slot: about twice as long
    assert ok[-2] / ok[1] > 1.6
    for t, headers, body in rejected:
        assert t < ok[0] and json.loads(body)["error"]["code"] == "overloaded"  # at once, not after a wait
        assert ("Retry-After" in headers) == (overload_status == 429)


def test_capacity_semaphore_handles_cancellation():
    async def main():
        cap = Capacity(slots=1, queue_limit=2)
        release = asyncio.Event()

        async def user():
            async with cap:
                await release.wait()

        holder = asyncio.ensure_future(user())
        await asyncio.sleep(0)
        waiter1 = asyncio.ensure_future(user())
        waiter2 = asyncio.ensure_future(user())
        await asyncio.sleep(0)
        assert (cap.active, cap.queued) == (1, 2)
        with pytest.raises(Overloaded):
            async with cap:
                pass
        waiter1.cancel()
        await asyncio.sleep(0)
        assert cap.queued == 1
        release.set()
        await asyncio.gather(holder, waiter2)
        assert (cap.active, cap.queued, cap.rejected) == (0, 0, 1)

    asyncio.run(main())
