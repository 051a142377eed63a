"""The users' building blocks: API shape validation, rotation, corpus, error kinds."""

import socket
from collections import Counter

import pytest

from loadtest import api
from loadtest.inlocust.chat import Rotation, classify_failure, load_corpus, request_name


def test_parse_reply_accepts_documented_shapes():
    r = api.parse_reply(
        "respond", {"conversation_id": "c1", "response": "hi", "end_conversation": False, "handoff": {"destination": "agent", "reason": "asked"}}
    )
    assert r.handoff == api.Handoff("agent", "asked") and r.end_conversation is False
    assert api.parse_reply("create", {"conversation_id": "c1", "response": "hello"}).response == "hello"
    assert api.parse_reply("close", {"success": True}) is None


@pytest.mark.parametrize(
    "endpoint,body,fragment",
    [
        ("create", {"response": "x"}, "missing field 'conversation_id'"),
        ("respond", {"conversation_id": "c", "response": "x"}, "missing field 'end_conversation'"),
        ("respond", {"conversation_id": "c", "response": 3, "end_conversation": False}, "'response' is int"),
        ("close", {"success": False}, "'success' is false"),
        ("close", [], "expected a JSON object"),
    ],
)
def test_parse_reply_names_the_broken_field(endpoint, body, fragment):
    with pytest.raises(api.SchemaError, match=fragment):
        api.parse_reply(endpoint, body)


def test_rotation_is_balanced_and_weighted():
    rot = Rotation({"us": 1, "uk": 1}, {"a": 3, "b": 1})
    seen = Counter(rot.next() for _ in range(80))
    assert seen == {("us", "a"): 30, ("uk", "a"): 30, ("us", "b"): 10, ("uk", "b"): 10}
    first = {rot.next() for _ in range(8)}
    assert len(first) == 4  # every combination shows up early
    assert Rotation({"eu": 1}, {}).next() == ("eu", "")


def test_request_names_keep_region_and_variant_apart():
    assert request_name("uk", "a", "respond") == "uk · a · respond"
    assert request_name("uk", "", "close") == "uk · close"


def test_corpus_skips_comments_and_rejects_empty(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("# comment\n\nHello\n  Bye  \n")
    assert load_corpus(p) == ["Hello", "Bye"]
    p.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no messages"):
        load_corpus(p)
    with pytest.raises(ValueError, match="cannot read corpus"):
        load_corpus(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    "status,error,kind",
    [
        (429, None, "rate_limited"),
        (503, None, "http"),
        (404, None, "http"),
        (200, None, "schema"),
        (0, socket.timeout("timed out"), "timeout"),
        (0, ConnectionResetError(), "connection"),
        (0, ConnectionRefusedError(), "connection"),
        (0, RuntimeError("x"), "other"),
        (301, None, "http"),  # redirects are not followed
        (200, RuntimeError("Incomplete response."), "connection"),  # the body broke off
    ],
)
def test_failure_kinds(status, error, kind):
    assert classify_failure(status, error) == kind


def test_wrapped_client_errors_are_classified_by_their_cause():
    class RetriesExceeded(Exception):  # how geventhttpclient wraps socket errors
        def __init__(self, original):
            super().__init__("retries exceeded")
            self.original = original

    assert classify_failure(0, RetriesExceeded(socket.timeout("timed out"))) == "timeout"
    assert classify_failure(0, RetriesExceeded(ConnectionResetError())) == "connection"


def _run_context(tmp_path, **settings):
    import types

    from loadtest import config
    from loadtest.inlocust.chat import RunContext
    from loadtest.inlocust.live import LiveStats

    values = {s.name: s.default for s in config.SETTINGS if s.locust}
    values.update(target="mock", yes="false", **settings)
    return RunContext(types.SimpleNamespace(**values), tmp_path, None, LiveStats())


def test_request_line_is_method_url_and_stats_name_of_every_combination(tmp_path):
    run = _run_context(tmp_path, regions="uk,us", variants="a,b", base_urls="uk=http://127.0.0.1:1,us=http://127.0.0.1:2")
    for region, port in (("uk", 1), ("us", 2)):
        for variant in ("a", "b"):
            for endpoint in api.ENDPOINTS:
                method, url, name = run.request_line(region, variant, endpoint)
                assert method == api.METHODS[endpoint]
                assert url == f"http://127.0.0.1:{port}" + api.path(endpoint)
                assert name == request_name(region, variant, endpoint)
    assert run.request_line("uk", "a", "respond")[2] == "uk · a · respond"


def test_request_line_without_variants(tmp_path):
    run = _run_context(tmp_path, regions="uk", variants="", base_urls="uk=http://127.0.0.1:1")
    assert run.request_line("uk", "", "close") == ("PUT", "http://127.0.0.1:1" + api.path("close"), "uk · close")
