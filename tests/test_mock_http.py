"""The mock's HTTP layer on raw sockets: garbage never crashes it, limits hold, HTTP/1.1 works.

Every refusal is a JSON body (never a traceback or HTML page) or a closed connection, and
the server keeps serving afterwards.
"""

from __future__ import annotations

import json
import random
import socket
import time

import httpx
import pytest

from loadtest import api
from loadtest.mock import MockConfig, MockServer

HEADERS = api.headers(api.DUMMY_API_KEY, api.DUMMY_TOKEN)
AUTH = f"{api.API_KEY_HEADER}: {api.DUMMY_API_KEY}\r\n{api.TOKEN_HEADER}: {api.DUMMY_TOKEN}\r\n"


@pytest.fixture(scope="module", params=["fast", "aiohttp"])
def mock(request):
    with MockServer(MockConfig(latency_scale=0, engine=request.param), regions=["uk"]) as server:
        yield server


@pytest.fixture
def fast():
    with MockServer(MockConfig(latency_scale=0), regions=["uk"]) as server:
        yield server


def address(mock) -> tuple[str, int]:
    return "127.0.0.1", mock.ports["uk"]


def exchange(mock, data: bytes, wait: float = 2.0) -> bytes:
    """Send raw bytes, return everything the server sends until it closes or goes quiet."""
    with socket.create_connection(address(mock), timeout=wait) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        chunks = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:  # reset
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                s.settimeout(0.3)  # a response arrived: collect what follows briefly
        return b"".join(chunks)


def responses(raw: bytes) -> list[tuple[int, dict, bytes]]:
    """Split raw bytes into (status, headers, body) using Content-Length."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if status == 100:
            out.append((status, headers, b""))
            raw = rest
            continue
        n = int(headers.get("content-length", 0))
        out.append((status, headers, rest[:n]))
        raw = rest[n:]
    return out


def still_serving(mock) -> None:
    r = httpx.post(mock.base_urls["uk"] + api.path("create"), json={}, headers=HEADERS, timeout=5)
    assert r.status_code == 200


def request(method: str, path: str, body: bytes = b"", extra: str = "", version: str = "HTTP/1.1") -> bytes:
    return (f"{method} {path} {version}\r\nHost: x\r\nContent-Type: application/json\r\n{AUTH}{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


GARBAGE = [
    bytes(random.Random(1).getrandbits(8) for _ in range(4096)),
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4,  # a TLS hello
    b"\x00" * 1000 + b"\r\n\r\n",
    b"GET\r\n\r\n",
    b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET / HTTP/1.1\r\n : empty name\r\n\r\n",
    b"POST /v1/a/b/chat/create HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/a/b/chat/create HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    b"POST /v1/a/b/chat/create HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"POST /v1/a/b/chat/create HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST /v1/a/b/chat/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST /v1/a/b/chat/create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 70_000,
    b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
    b"POST /v1/a/b/chat/create HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",  # then hang up
]


@pytest.mark.parametrize("garbage", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_does_not_crash_it(mock, garbage):
    raw = exchange(mock, garbage, wait=0.5)
    if raw:
        assert raw.startswith((b"HTTP/1.1 4", b"HTTP/1.1 5", b"HTTP/1.0 4"))
        for status, headers, body in responses(raw):
            assert 400 <= status < 600
            assert b"Traceback" not in body and b"<html" not in body.lower()
            if mock.config.engine == "fast":  # aiohttp answers HTTP-level errors in text/plain
                assert headers["content-type"] == "application/json"
                assert "error" in json.loads(body)
    still_serving(mock)


def test_fast_engine_refusal_statuses(fast):
    def status_of(data: bytes) -> int:
        return responses(exchange(fast, data))[0][0]
    assert status_of(b"GET / HTTP/9.9\r\n\r\n") == 505
    assert status_of(b"GET / HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n") == 431
    assert status_of(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 200 + b"\r\n") == 431
    assert status_of(b"GARBAGE\r\n") == 400
    assert status_of(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n") == 400


def test_oversized_content_length_answered_without_reading(fast):
    """413 from the Content-Length alone: the client that waits (Expect) sends nothing."""
    data = request("POST", api.path("create"), extra="Expect: 100-continue\r\n")
    data = data.replace(b"Content-Length: 0", b"Content-Length: 1000000000")
    ((status, headers, body),) = responses(exchange(fast, data))
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    assert headers["connection"] == "close"


def test_pipelined_requests_answered_in_order(fast):
    create = request("POST", api.path("create"), b'{"variant_id": "a"}')
    bad = request("POST", api.path("create"), b'{"variant_id": "zz"}')
    stats = b"GET /_mock/stats HTTP/1.1\r\nHost: x\r\n\r\n"
    got = responses(exchange(fast, create + bad + create + stats))
    assert [s for s, _, _ in got] == [200, 422, 200, 200]
    assert json.loads(got[3][2])["region"] == "uk"


def test_expect_100_continue(fast):
    body = b'{"variant_id": "b"}'
    head = request("POST", api.path("create"), body, extra="Expect: 100-continue\r\n")[:-len(body)]
    with socket.create_connection(address(fast), timeout=2) as s:
        s.sendall(head)
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        status, _, reply = responses(s.recv(65536))[0]
    assert status == 200 and "Acme Rentals" in json.loads(reply)["response"]


def test_http10_closes_and_head_has_no_body(fast):
    raw = exchange(fast, b"GET /_mock/stats HTTP/1.0\r\n\r\n")
    status, headers, body = responses(raw)[0]
    assert status == 200 and headers["connection"] == "close" and json.loads(body)["region"] == "uk"
    raw = exchange(fast, b"HEAD /v1/a/b/chat/create HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 405") and raw.endswith(b"\r\n\r\n")


def test_keep_alive_serves_many_requests_on_one_connection(fast):
    with httpx.Client(base_url=fast.base_urls["uk"], headers=HEADERS) as c:
        for _ in range(50):
            assert c.post(api.path("create"), json={}).status_code == 200
    stats = fast.stats("uk")
    assert stats["created"] >= 50


def test_split_request_bytes_one_at_a_time(fast):
    data = request("POST", api.path("create"), b'{"variant_id": "a"}')
    with socket.create_connection(address(fast), timeout=2) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
        status, _, body = responses(s.recv(65536))[0]
    assert status == 200 and json.loads(body)["conversation_id"]


def test_http10_keep_alive_is_acknowledged(fast):
    one = b"GET /_mock/stats HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    got = responses(exchange(fast, one + one))
    assert [s for s, _, _ in got] == [200, 200]
    assert got[0][1]["connection"] == "keep-alive"
