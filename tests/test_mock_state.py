"""Conversation state: idle expiry, the size cap, and the agent's per-turn decisions."""

from __future__ import annotations

import random
import time

import httpx
import pytest

from loadtest import api
from loadtest.mock import MockConfig, MockServer
from loadtest.mock.agent import Agent
from loadtest.mock.profiles import default_variants
from loadtest.mock.state import ConversationStore

HEADERS = api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN)


def test_store_expires_idle_conversations_on_lookup_and_sweep():
    store = ConversationStore(idle_timeout=10, max_open=100)
    store.open("a", None, None, now=0)
    store.open("b", None, None, now=5)
    assert store.get("a", now=9) is not None  # touched at 9
    assert store.sweep(now=16) == 1  # b idle since 5
    assert store.why_gone("b") == "expired"
    assert store.get("a", now=18.5) is not None
    assert store.peek("a", now=30) is None and store.why_gone("a") == "expired"
    assert (len(store), store.expired, store.created) == (0, 2, 2)


def test_store_cap_evicts_least_recently_used():
    store = ConversationStore(idle_timeout=100, max_open=3)
    for i, cid in enumerate("abc"):
        store.open(cid, None, None, now=i)
    store.get("a", now=3)  # a is now the most recently used
    store.open("d", None, None, now=4)
    assert "b" not in store and store.why_gone("b") == "evicted"
    assert {"a", "c", "d"} == {cid for cid in "abcd" if cid in store}
    assert store.evicted == 1 and len(store) == 3


def test_store_remembers_a_bounded_number_of_gone_ids():
    store = ConversationStore(idle_timeout=100, max_open=10, remember_gone=5)
    for i in range(20):
        store.open(str(i), None, None, now=0)
        store.close(str(i))
    assert store.why_gone("19") == "closed" and store.why_gone("0") is None
    assert len(store._gone) == 5


@pytest.mark.slow
def test_idle_conversation_expires_over_http():
    # An idle timeout of 1.5 s and a touch every 0.1 s: a loaded machine would have to stall
    # this test for over a second to expire the kept conversation by mistake.
    config = MockConfig(latency_scale=0, idle_timeout=1.5)
    with MockServer(config, regions=["uk"]) as mock, httpx.Client(base_url=mock.base_urls["uk"], headers=HEADERS) as c:
        kept = c.post(api.path("create"), json={}).json()["conversation_id"]
        idle = c.post(api.path("create"), json={}).json()["conversation_id"]
        touched = time.monotonic()
        while time.monotonic() - touched < 1.8:  # keep one alive past the other's timeout
            time.sleep(0.1)
            assert c.post(api.path("respond"), json={"conversation_id": kept}).status_code == 200
        r = c.post(api.path("respond"), json={"conversation_id": idle})
        assert r.status_code == 404 and "expired" in r.json()["error"]["message"]
        stats = mock.stats("uk")
        assert stats["expired"] == 1 and stats["open_conversations"] == 1
        deadline = time.monotonic() + 10
        while mock.stats("uk")["expired"] < 2 and time.monotonic() < deadline:
            time.sleep(0.1)  # swept by housekeeping, without being touched
        stats = mock.stats("uk")
        assert stats["expired"] == 2 and stats["open_conversations"] == 0


def test_cap_over_http_bounds_memory():
    config = MockConfig(latency_scale=0, max_conversations=5)
    with MockServer(config, regions=["eu"]) as mock, httpx.Client(base_url=mock.base_urls["eu"], headers=HEADERS) as c:
        ids = [c.post(api.path("create"), json={}).json()["conversation_id"] for _ in range(8)]
        stats = mock.stats("eu")
        assert stats["open_conversations"] == 5 and stats["evicted"] == 3
        r = c.post(api.path("respond"), json={"conversation_id": ids[0]})
        assert r.status_code == 404 and "evicted" in r.json()["error"]["message"]
        assert c.post(api.path("respond"), json={"conversation_id": ids[-1]}).status_code == 200


# ------------------------------------------------------------------ the agent


def make_agent(**kw) -> Agent:
    return Agent(random.Random(3), default_variants(), **kw)


def test_greeting_names_brand():
    agent = make_agent()
    assert "Acme Support" in agent.greeting(None)
    assert "Acme Hotels" in agent.greeting("a")


def test_turn_count_and_probabilities():
    agent = make_agent(end_after=8, end_probability=0.05, handoff_rate=0.03)
    assert agent.reply(8, None, "hi", False)[1] is True
    assert agent.reply(3, None, "hi", True) == (agent.reply(3, None, "x", True)[0], True, None)
    n = 40_000
    for variant, handoff_rate in ((None, 0.03), ("a", 0.03), ("b", 0.075)):
        results = [agent.reply(1, variant, "my order", False) for _ in range(n)]
        handoffs = sum(1 for _, _, h in results if h)
        ends = sum(1 for _, end, _ in results if end)
        assert handoffs / n == pytest.approx(handoff_rate, abs=0.005)
        assert ends / n == pytest.approx(0.05, abs=0.006)
        assert all(h["destination"] == "logistics_team" for _, _, h in results if h)


def test_end_after_zero_never_ends_by_count():
    agent = make_agent(end_after=0, end_probability=0, handoff_rate=0)
    assert not any(agent.reply(turn, None, "hello", False)[1] for turn in range(1, 200))
