"""The mock Chat API's documented behaviour over HTTP, on both front ends.

Happy paths, every error status with its JSON body, variants, regions, credentials, the
agent's end_conversation/handoff, and the admin stats. latency_scale 0: no timing here.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from loadtest import api
from loadtest.mock import MockConfig, MockServer, make_app
from loadtest.mock.profiles import BASE_BRAND

HEADERS = api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN)
CREATE, RESPOND, CLOSE = api.path("create"), api.path("respond"), api.path("close")


@pytest.fixture(scope="module", params=["fast", "aiohttp"])
def mock(request):
    with MockServer(MockConfig(latency_scale=0, engine=request.param)) as server:
        yield server


@pytest.fixture
def client(mock):
    with httpx.Client(base_url=mock.base_urls["uk"], headers=HEADERS, timeout=5) as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    if code:
        assert error["code"] == code
    return error


def create(client, **body) -> str:
    r = client.post(CREATE, json=body)
    assert r.status_code == 200, r.text
    return r.json()["conversation_id"]


# ------------------------------------------------------------------ happy paths


def test_create_respond_close_lifecycle(client, mock):
    before = mock.stats("uk")
    r = client.post(CREATE, json={})
    assert r.status_code == 200
    reply = api.parse_reply("create", r.json())
    assert reply.conversation_id and "Acme" in reply.response

    r = client.post(RESPOND, json=api.respond_body(reply.conversation_id, "hello"))
    assert r.status_code == 200
    turn = api.parse_reply("respond", r.json())
    assert turn.conversation_id == reply.conversation_id and turn.response

    r = client.put(CLOSE, json=api.close_body(reply.conversation_id))
    assert r.status_code == 200 and r.json() == {"success": True}
    after = mock.stats("uk")
    assert after["created"] == before["created"] + 1
    assert after["closed"] == before["closed"] + 1
    assert after["open_conversations"] == before["open_conversations"]


def test_create_accepts_integration_attributes_and_empty_body(client, mock):
    before = mock.stats("uk")["integration_attributes"]
    create(client, integration_attributes={"user_id": "u1", "tier": "gold", "flags": ["x"]})
    create(client, integration_attributes={"tier": "gold", "n": 2})
    r = client.post(CREATE, content=b"")
    assert r.status_code == 200 and r.json()["conversation_id"]
    after = mock.stats("uk")["integration_attributes"]  # the mock counts what it received
    assert after["conversations"] == before["conversations"] + 2
    grown = {k: v - before["pairs"].get(k, 0) for k, v in after["pairs"].items() if v != before["pairs"].get(k, 0)}
    assert grown == {"user_id=u1": 1, "tier=gold": 2, 'flags=["x"]': 1, "n=2": 1}


def test_respond_without_message_is_fine(client):
    cid = create(client)
    r = client.post(RESPOND, json={"conversation_id": cid})
    assert r.status_code == 200 and r.json()["end_conversation"] is False


def test_any_account_project_accepted_but_only_the_documented_version(client, mock):
    path = api.path("create", account="ws-fd112d8f", project="PROJECT-191bfa2a")
    assert client.post(path, json={}).status_code == 200
    for version in ("v2", "0", "V1"):
        error = assert_error(client.post(api.path("create", version=version), json={}), 404, "not_found")
        assert f"unknown API version {version!r}; this API serves v1" in error["message"]
    assert_error(client.post("/0/0/0/chat/create", json={}), 404)
    config = MockConfig(latency_scale=0, engine=mock.config.engine, versions=("v1", "v2"))
    with MockServer(config, regions=["uk"]) as v2, httpx.Client(base_url=v2.base_urls["uk"], headers=HEADERS, timeout=5) as c:
        assert c.post(api.path("create", version="v2"), json={}).status_code == 200


def test_content_type_with_charset_and_query_string(client):
    r = client.post(CREATE + "?x=1", content=b"{}", headers={"Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 200


def test_header_names_are_case_insensitive(mock):
    headers = {"x-api-key": api.DUMMY_API_KEY, "x-token": api.DUMMY_TOKEN, "content-type": "application/json"}
    r = httpx.post(mock.base_urls["uk"] + CREATE, json={}, headers=headers)
    assert r.status_code == 200


# ------------------------------------------------------------------ variants


def test_variant_greeting_names_its_brand(client, mock):
    variants = mock.config.variants
    for name in ("a", "b"):
        r = client.post(CREATE, json={"variant_id": name})
        assert r.status_code == 200
        assert variants[name].brand in r.json()["response"]


def test_unknown_variant_is_422_naming_known_ones_when_strict(mock):
    config = MockConfig(latency_scale=0, engine=mock.config.engine, strict_variants=True)
    with MockServer(config, regions=["uk"]) as strict, httpx.Client(base_url=strict.base_urls["uk"], headers=HEADERS, timeout=5) as client:
        error = assert_error(client.post(CREATE, json={"variant_id": "zz"}), 422)
    assert "zz" in error["message"] and "a, b" in error["message"]


def test_unknown_variant_is_served_with_the_base_profile_by_default(client, mock):
    r = client.post(CREATE, json={"variant_id": "control"})
    assert r.status_code == 200, r.text
    assert BASE_BRAND in r.json()["response"]
    cid = r.json()["conversation_id"]
    assert client.post(RESPOND, json={"conversation_id": cid, "message": "hi"}).status_code == 200
    assert client.put(CLOSE, json={"conversation_id": cid}).status_code == 200


def test_variant_id_on_respond_or_close_is_422(client):
    cid = create(client, variant_id="a")
    error = assert_error(client.post(RESPOND, json={"conversation_id": cid, "variant_id": "b"}), 422)
    assert error["message"] == "variant_id is only accepted on create"
    assert_error(client.put(CLOSE, json={"conversation_id": cid, "variant_id": "a"}), 422)
    assert client.put(CLOSE, json={"conversation_id": cid}).status_code == 200


# ------------------------------------------------------------------ errors


def test_401_missing_or_wrong_credentials(mock):
    url = mock.base_urls["uk"] + CREATE
    assert_error(httpx.post(url, json={}), 401, "unauthorized")
    assert_error(httpx.post(url, json={}, headers={api.API_KEY_HEADER: api.DUMMY_API_KEY}), 401)
    assert_error(httpx.post(url, json={}, headers=api.headers("wrong", api.DUMMY_TOKEN)), 401)
    assert_error(httpx.post(url, json={}, headers=api.headers(api.DUMMY_API_KEY, "wrong")), 401)
    non_ascii = {api.API_KEY_HEADER: "ké".encode(), api.TOKEN_HEADER: b"t\xf8ken", "Content-Type": "application/json"}
    assert_error(httpx.post(url, json={}, headers=non_ascii), 401)


def test_credentials_come_from_env_when_set(monkeypatch):
    monkeypatch.setenv(api.API_KEY_ENV, "env-key")
    monkeypatch.setenv(api.TOKEN_ENV, "env-token")
    with MockServer(MockConfig(latency_scale=0), regions=["eu"]) as mock:
        url = mock.base_urls["eu"] + CREATE
        assert_error(httpx.post(url, json={}, headers=HEADERS), 401)
        assert httpx.post(url, json={}, headers=api.headers("env-key", "env-token")).status_code == 200


def test_415_wrong_or_missing_content_type(client):
    assert_error(client.post(CREATE, content=b"{}", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type")
    r = client.build_request("POST", CREATE, content=b"{}")
    del r.headers["Content-Type"]
    assert_error(client.send(r), 415)


def test_400_malformed_json_and_missing_conversation_id(client):
    assert_error(client.post(CREATE, content=b"{not json"), 400, "bad_request")
    assert_error(client.post(CREATE, content=b"\xff\xfe\x00garbage"), 400)
    assert_error(client.post(CREATE, content=b"[1, 2]"), 400)
    assert_error(client.post(CREATE, content=b"[" * 50_000), 400)
    assert_error(client.post(RESPOND, json={"message": "hi"}), 400)
    assert_error(client.put(CLOSE, json={}), 400)


def test_422_wrong_field_types(client):
    cid = create(client)
    assert_error(client.post(RESPOND, json={"conversation_id": cid, "message": 42}), 422, "invalid_field")
    assert_error(client.post(RESPOND, json={"conversation_id": 42}), 422)
    assert_error(client.post(CREATE, json={"integration_attributes": ["x"]}), 422)
    assert_error(client.post(CREATE, json={"variant_id": 1}), 422)
    assert_error(client.put(CLOSE, json={"conversation_id": ["x"]}), 422)


def test_404_unknown_path_and_unknown_conversation(client):
    assert_error(client.post("/v1/a/b/chat/delete", json={}), 404, "not_found")
    assert_error(client.get("/"), 404)
    assert_error(client.post("/v1/a/chat/create", json={}), 404)
    assert_error(client.post("/v1/a/b/chat/create/extra", json={}), 404)
    assert_error(client.post(RESPOND, json={"conversation_id": "nope"}), 404)
    assert_error(client.put(CLOSE, json={"conversation_id": "nope"}), 404)


def test_404_respond_and_close_after_close(client):
    cid = create(client)
    assert client.put(CLOSE, json={"conversation_id": cid}).status_code == 200
    error = assert_error(client.post(RESPOND, json={"conversation_id": cid, "message": "hi"}), 404)
    assert "closed" in error["message"]
    assert_error(client.put(CLOSE, json={"conversation_id": cid}), 404)


def test_conversations_are_per_region(mock):
    with httpx.Client(headers=HEADERS) as c:
        r = c.post(mock.base_urls["us"] + CREATE, json={})
        cid = r.json()["conversation_id"]
        assert_error(c.post(mock.base_urls["uk"] + RESPOND, json={"conversation_id": cid}), 404)
        assert c.post(mock.base_urls["us"] + RESPOND, json={"conversation_id": cid}).status_code == 200
        assert c.put(mock.base_urls["us"] + CLOSE, json={"conversation_id": cid}).status_code == 200


def test_405_wrong_method_with_allow(client):
    r = client.get(CREATE)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "POST"
    r = client.post(CLOSE, json={"conversation_id": "x"})
    assert_error(r, 405)
    assert r.headers["allow"] == "PUT"
    assert client.delete(RESPOND).headers["allow"] == "POST"
    assert client.post("/_mock/stats").headers["allow"] == "GET"


def test_413_body_over_limit(client, mock):
    limit = mock.config.max_body
    assert_error(client.post(CREATE, content=b" " * (limit + 1)), 413, "payload_too_large")
    big = b'{"integration_attributes": {"x": "' + b"a" * (limit - 60) + b'"}}'
    assert len(big) <= limit
    assert client.post(CREATE, content=big).status_code == 200

    def chunks():  # no Content-Length: a chunked body, cut off while reading
        for _ in range(limit // 1000 + 2):
            yield b" " * 1000

    assert_error(client.post(CREATE, content=chunks()), 413)


def test_chunked_body_within_limit(client):
    def chunks():
        yield b'{"variant_id"'
        yield b': "a"}'

    r = client.post(CREATE, content=chunks())
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ agent behaviour over HTTP


def test_end_after_turns_and_conversation_stays_open():
    with (
        MockServer(MockConfig(latency_scale=0, end_after=3, end_probability=0, handoff_rate=0), regions=["uk"]) as mock,
        httpx.Client(base_url=mock.base_urls["uk"], headers=HEADERS) as c,
    ):
        cid = create(c)
        ends = [c.post(RESPOND, json={"conversation_id": cid, "message": "hi"}).json()["end_conversation"] for _ in range(4)]
        assert ends == [False, False, True, True]
        assert mock.stats("uk")["open_conversations"] == 1  # ended, but open until closed
        assert c.put(CLOSE, json={"conversation_id": cid}).status_code == 200
        assert mock.stats("uk")["open_conversations"] == 0


def test_handoff_shape_and_topic():
    with MockServer(MockConfig(latency_scale=0, handoff_rate=1.0), regions=["uk"]) as mock, httpx.Client(base_url=mock.base_urls["uk"], headers=HEADERS) as c:
        cid = create(c)
        body = c.post(RESPOND, json={"conversation_id": cid, "message": "I need a refund on my bill"}).json()
        reply = api.parse_reply("respond", body)
        assert reply.handoff is not None and reply.handoff.destination == "billing_team"
        assert "billing" in reply.handoff.reason
        assert c.post(RESPOND, json={"conversation_id": cid}).status_code == 200  # still open
        assert c.put(CLOSE, json={"conversation_id": cid}).status_code == 200


def test_replies_pick_up_the_topic(client):
    cid = create(client)
    texts = [client.post(RESPOND, json={"conversation_id": cid, "message": "where is my delivery?"}).json() for _ in range(3)]
    normal = [t["response"].lower() for t in texts if not t["end_conversation"] and "handoff" not in t]
    assert normal and all(("order" in t or "deliver" in t) for t in normal)


def test_same_seed_same_conversation():
    def run():
        with MockServer(MockConfig(latency_scale=0, seed=7), regions=["eu"]) as mock, httpx.Client(base_url=mock.base_urls["eu"], headers=HEADERS) as c:
            r = c.post(CREATE, json={"variant_id": "b"}).json()
            turns = [c.post(RESPOND, json={"conversation_id": r["conversation_id"], "message": "book a room"}).json() for _ in range(5)]
            return r, turns

    assert run() == run()


# ------------------------------------------------------------------ admin and configuration


def test_stats_on_every_port(mock):
    for region, url in mock.base_urls.items():
        stats = httpx.get(url + "/_mock/stats").json()
        assert stats["region"] == region
        for key in ("open_conversations", "created", "closed", "expired", "in_flight", "rejected", "requests", "faults"):
            assert key in stats
        assert set(stats["requests"]) >= set(api.ENDPOINTS)


def test_restricted_account_and_project():
    config = MockConfig(latency_scale=0, accounts=("acme-uk",), projects=("acme-team-4",))
    with MockServer(config, regions=["uk"]) as mock, httpx.Client(base_url=mock.base_urls["uk"], headers=HEADERS) as c:
        assert c.post(api.path("create", account="acme-uk", project="acme-team-4"), json={}).status_code == 200
        assert_error(c.post(api.path("create", account="other", project="acme-team-4"), json={}), 404)
        assert_error(c.post(api.path("create", account="acme-uk", project="other"), json={}), 404)


def test_make_app_serves_with_aiohttp_test_client():
    from aiohttp.test_utils import TestClient, TestServer

    async def main():
        app = make_app(MockConfig(latency_scale=0), region="eu")
        async with TestClient(TestServer(app)) as c:
            r = await c.post(CREATE, json={"variant_id": "a"}, headers=HEADERS)
            assert r.status == 200
            cid = (await r.json())["conversation_id"]
            r = await c.put(CLOSE, json={"conversation_id": cid}, headers=HEADERS)
            assert r.status == 200
            stats = await (await c.get("/_mock/stats")).json()
            assert stats["region"] == "eu" and stats["closed"] == 1

    asyncio.run(main())
