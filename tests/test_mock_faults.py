"""Fault injection: spec parsing, and every kind firing at its rate over 1000+ HTTP requests."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from loadtest import api
from loadtest.mock import MockConfig, MockServer, parse_fault, parse_faults
from loadtest.mock.faults import Fault, FaultTable

HEADERS = api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN)
N = 1000
RATE = 0.2
TOLERANCE = 0.05  # 4 standard deviations of a binomial(1000, 0.2) rate
SLOW_RATE, SLOW_TOLERANCE = 0.1, 0.04  # spike and timeout wait 3 s each: fewer of them
SLOW_S = 1.5  # spikes and holds last 3 s, normal answers milliseconds: this tells them apart


# ------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("respond:503:0.05", Fault("respond", "503", 0.05)),
        ("uk.create:429:0.1:retry_after=2", Fault("create", "429", 0.1, "uk", retry_after=2.0)),
        ("*:spike:0.02:2000ms", Fault("*", "spike", 0.02, extra_ms=2000.0)),
        ("*:spike:2%:2s", Fault("*", "spike", 0.02, extra_ms=2000.0)),
        ("close:reset:0.01", Fault("close", "reset", 0.01)),
        ("self-serve.respond:timeout:0.1:5s", Fault("respond", "timeout", 0.1, "self-serve", hold_s=5.0)),
        ("eu.*:malformed:1", Fault("*", "malformed", 1.0, "eu")),
        ("respond:shape:0", Fault("respond", "shape", 0.0)),
    ],
)
def test_parse_fault(spec, expected):
    fault = parse_fault(spec)
    assert fault == expected
    assert parse_fault(fault.spec) == fault


@pytest.mark.parametrize(
    "spec, names",
    [
        ("respond:503", ["3 or 4"]),
        ("talk:503:0.1", ["'talk'", "create", "respond", "close", "*"]),
        ("respond:504:0.1", ["'504'", "500", "spike", "timeout", "reset", "malformed", "shape"]),
        ("mars.respond:503:0.1", ["'mars'", "uk", "self-serve"]),
        ("respond:503:lots", ["'lots'"]),
        ("respond:503:1.5", ["between 0 and 1"]),
        ("respond:503:0.1:retry_after=2", ["no parameter"]),
        ("respond:429:0.1:wait=2", ["'wait'", "retry_after"]),
        ("respond:spike:0.1:soon", ["'soon'", "2000ms"]),
        ("respond:timeout:0.1:9999s", ["hold"]),
        ("", ["empty"]),
    ],
)
def test_parse_errors_name_the_bad_part_and_the_choices(spec, names):
    with pytest.raises(ValueError) as info:
        parse_fault(spec)
    message = str(info.value)
    assert "ENDPOINT:KIND:RATE" in message
    for name in names:
        assert name in message


def test_rates_on_one_endpoint_must_not_exceed_one():
    with pytest.raises(ValueError, match="add up"):
        MockServer(MockConfig(faults=["respond:503:0.6", "*:500:0.5"]))


def test_draw_rates_are_exact_and_exclusive():
    faults = parse_faults(["respond:503:0.1", "*:spike:0.05", "uk.respond:reset:0.02", "us.close:429:0.5"])
    table = FaultTable(faults, "uk", random.Random(3))
    counts: dict[str, int] = {}
    n = 100_000
    for _ in range(n):
        fault = table.draw("respond")
        if fault:
            counts[fault.kind] = counts.get(fault.kind, 0) + 1
    assert abs(counts["503"] / n - 0.1) < 0.005
    assert abs(counts["spike"] / n - 0.05) < 0.004
    assert abs(counts["reset"] / n - 0.02) < 0.003
    assert table.draw("close") is None or table.draw("close").kind == "spike"  # us-only 429 not here


# ------------------------------------------------------------------ over HTTP


@pytest.fixture(autouse=True)
def quick_gil_handoff():
    """Client threads and the in-process mock share the GIL: hand it over every 0.2 ms, not
    every 5 ms, so queueing for the GIL cannot pass for an injected delay."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.0002)
    yield
    sys.setswitchinterval(before)


def classify(outcome) -> str:
    """What a client saw: a status, 'malformed', 'shape', 'spike', 'timeout' or 'reset'.

    Spikes and holds last 3 s; a normal answer takes milliseconds (up to ~0.3 s when 50
    client threads queue for the GIL, more on a loaded machine), and a busy server loop may
    fire a timer a few tens of ms early, so SLOW_S (1.5 s) tells them apart with margin on
    both sides."""
    kind, elapsed, value = outcome
    if kind == "error":
        return "timeout" if elapsed >= SLOW_S else "reset"
    status, headers, text = value
    if status != 200:
        if status == 429:
            assert headers["retry-after"] == "2"
        assert "error" in json.loads(text)
        return str(status)
    try:
        body = json.loads(text)
    except ValueError:
        return "malformed"
    try:
        api.parse_reply("respond", body)
    except api.SchemaError:
        return "shape"
    return "spike" if elapsed >= SLOW_S else "ok"


def drive(base_url: str, conversation_id: str, n: int, concurrency: int = 16) -> list:
    """n responds from a thread pool, each thread with its own keep-alive client: (kind,
    elapsed, value). Not one client shared by the threads: its pool, used from several threads,
    now and then closed a connection under another thread's read (a client-side
    `ReadError: [Errno 9] Bad file descriptor` on a reply the mock had sent whole)."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def client() -> httpx.Client:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=base_url, headers=HEADERS, timeout=10)
            clients.append(local.client)
        return local.client

    def one(_):
        start = time.perf_counter()
        try:
            r = client().post(api.path("respond"), json=api.respond_body(conversation_id, "hello"))
        except httpx.TransportError as e:
            return "error", time.perf_counter() - start, e
        return "ok", time.perf_counter() - start, (r.status_code, r.headers, r.text)

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for c in clients:
            c.close()


# Each kind drives hundreds of requests over HTTP: a status and a broken body stay in the quick
# suite, the rest (and the 3 s waits of spike and timeout) are `slow`.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "kind, param",
    [
        ("503", ""),
        ("malformed", ""),
        pytest.param("500", "", marks=_SLOW),
        pytest.param("502", "", marks=_SLOW),
        pytest.param("429", ":retry_after=2", marks=_SLOW),
        pytest.param("spike", ":3000ms", marks=_SLOW),
        pytest.param("timeout", ":3s", marks=_SLOW),
        pytest.param("reset", "", marks=_SLOW),
        pytest.param("shape", "", marks=_SLOW),
    ],
)
def test_each_fault_kind_fires_at_its_rate(kind, param):
    slow = kind in ("spike", "timeout")
    rate, tolerance = (SLOW_RATE, SLOW_TOLERANCE) if slow else (RATE, TOLERANCE)
    config = MockConfig(
        latency_scale=0, end_after=0, end_probability=0, handoff_rate=0, seed=11, faults=[f"uk.respond:{kind}:{rate}{param}", "us.respond:500:1"]
    )
    with MockServer(config, regions=["uk"]) as mock:
        base = mock.base_urls["uk"]
        cid = httpx.post(base + api.path("create"), json={}, headers=HEADERS).json()["conversation_id"]
        raw = drive(base, cid, N, concurrency=50 if slow else 8)
        outcomes = [classify(o) for o in raw]
        stats = mock.stats("uk")
    seen = {k: outcomes.count(k) for k in set(outcomes)}
    # what a transport error was, when one was not injected (the mock's own view beside it)
    errors = sorted({f"{type(v).__name__}: {v} after {t:.3f}s" for k, t, v in raw if k == "error"}) if kind not in ("reset", "timeout") else []
    assert set(seen) == {"ok", kind}, (seen, errors, {k: stats[k] for k in ("resets", "connections", "statuses")})
    assert abs(seen[kind] / N - rate) < tolerance, seen
    assert stats["faults"]["respond"][kind] == seen[kind]
    assert stats["faults"]["create"] == {}


def test_region_and_endpoint_scoping():
    config = MockConfig(latency_scale=0, faults=["uk.create:503:1", "close:502:1"])
    with MockServer(config, regions=["uk", "us"]) as mock, httpx.Client(headers=HEADERS) as c:
        assert c.post(mock.base_urls["uk"] + api.path("create"), json={}).status_code == 503
        r = c.post(mock.base_urls["us"] + api.path("create"), json={})
        assert r.status_code == 200
        cid = r.json()["conversation_id"]
        assert c.post(mock.base_urls["us"] + api.path("respond"), json={"conversation_id": cid}).status_code == 200
        assert c.put(mock.base_urls["us"] + api.path("close"), json={"conversation_id": cid}).status_code == 502
        stats = mock.stats("us")
    # a faulted close closes nothing; a faulted create creates nothing
    assert stats["open_conversations"] == 1 and stats["closed"] == 0


def test_held_request_ends_when_client_gives_up():
    config = MockConfig(latency_scale=0, faults=["create:timeout:1:30s"])
    with MockServer(config, regions=["eu"]) as mock:
        start = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(mock.base_urls["eu"] + api.path("create"), json={}, headers=HEADERS, timeout=0.3)
        assert time.monotonic() - start < 2
        deadline = time.monotonic() + 2
        while mock.stats("eu")["held"] and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = mock.stats("eu")
    assert stats["held"] == 0 and stats["created"] == 0


@pytest.mark.parametrize("engine", ["fast", "aiohttp"])
def test_reset_and_malformed_on_both_engines(engine):
    config = MockConfig(latency_scale=0, engine=engine, faults=["respond:reset:1", "close:malformed:1"])
    with MockServer(config, regions=["uk"]) as mock, httpx.Client(base_url=mock.base_urls["uk"], headers=HEADERS) as c:
        created = c.post(api.path("create"), json={})
        assert created.status_code == 200  # no fault on create
        cid = created.json()["conversation_id"]
        with pytest.raises(httpx.TransportError):
            c.post(api.path("respond"), json={"conversation_id": cid, "message": "hi"})
        r = c.put(api.path("close"), json={"conversation_id": cid})
        assert r.status_code == 200
        with pytest.raises(ValueError):
            json.loads(r.content)  # a 200 whose body is not JSON
        unknown = c.put(api.path("close"), json={"conversation_id": "x"})
        assert unknown.status_code == 404  # validation first: unknown conversation, no fault
        faults = mock.stats("uk")["faults"]
    assert faults["respond"] == {"reset": 1} and faults["close"] == {"malformed": 1}
