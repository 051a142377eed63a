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
    return (f"{method} {path} {version}\r\nHost: x\r\nContent-Type: application/json\r\n{AUTH}{extra}Content-Length: {len(body)}\r\n\r\n").encode() + body


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
    bad = request("POST", api.path("create"), b'{"variant_id": 7}')  # not a string: 422
    stats = b"GET /_mock/stats HTTP/1.1\r\nHost: x\r\n\r\n"
    got = responses(exchange(fast, create + bad + create + stats))
    assert [s for s, _, _ in got] == [200, 422, 200, 200]
    assert json.loads(got[3][2])["region"] == "uk"


def test_expect_100_continue(fast):
    body = b'{"variant_id": "b"}'
    head = request("POST", api.path("create"), body, extra="Expect: 100-continue\r\n")[: -len(body)]
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
            s.sendall(data[i : i + 1])
        status, _, body = responses(s.recv(65536))[0]
    assert status == 200 and json.loads(body)["conversation_id"]


def test_http10_keep_alive_is_acknowledged(fast):
    one = b"GET /_mock/stats HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    got = responses(exchange(fast, one + one))
    assert [s for s, _, _ in got] == [200, 200]
    assert got[0][1]["connection"] == "keep-alive"


# ---------------------------------------------------------------------------- while a request is in service


@pytest.fixture
def slow():
    """Real latencies, stretched: every create spends a few hundred milliseconds in service."""
    with MockServer(MockConfig(latency_scale=5, seed=1), regions=["uk"]) as server:
        yield server


def read_responses(s: socket.socket, count: int, timeout: float = 10.0) -> bytes:
    """Read until ``count`` responses (headers + Content-Length body) have arrived."""
    raw = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(responses(raw)) >= count:
                return raw
        except (ValueError, IndexError):
            pass  # a partial response so far
        s.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = s.recv(65536)
        if not chunk:
            break
        raw += chunk
    return raw


def test_pipelined_requests_wait_for_the_one_in_service(slow):
    create = request("POST", api.path("create"), b'{"variant_id": "a"}')
    stats = b"GET /_mock/stats HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(address(slow), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(create + create)  # one read
        time.sleep(0.02)
        s.sendall(stats)  # most likely a read of its own, while the first create is in service
        got = responses(read_responses(s, 3))
    assert [status for status, _, _ in got] == [200, 200, 200]
    assert json.loads(got[0][2])["conversation_id"] != json.loads(got[1][2])["conversation_id"]
    assert json.loads(got[2][2])["created"] == 2  # stats answered after both creates, in order


def test_100_continue_only_after_the_answer_before_it(slow):
    """A pipelined request's 100 Continue must not cut into the previous answer."""
    body = b'{"variant_id": "b"}'
    second = request("POST", api.path("create"), body, extra="Expect: 100-continue\r\n")[: -len(body)]
    with socket.create_connection(address(slow), timeout=10) as s:
        s.sendall(request("POST", api.path("create"), b"{}") + second)
        raw = read_responses(s, 2)  # the first answer, then the 100 Continue
        first, interim = responses(raw)[:2]
        assert first[0] == 200 and interim[0] == 100
        s.sendall(body)
        status, _, reply = responses(read_responses(s, 1))[0]
    assert status == 200 and "conversation_id" in json.loads(reply)


@pytest.mark.slow
def test_pipelining_past_the_bound_while_in_service_is_cut_off():
    """Bytes that arrive while a request is in service wait unparsed, up to head + body limits."""
    with MockServer(MockConfig(latency_scale=40, seed=1), regions=["uk"]) as mock:  # ~1-2 s in service
        flood = request("POST", api.path("create"), b" " * 60_000)  # within max_body, but ...
        with socket.create_connection(address(mock), timeout=10) as s:
            s.sendall(request("POST", api.path("create"), b"{}"))
            time.sleep(0.3)  # the first create is in service now
            try:
                for _ in range(3):  # ... three of them exceed what may wait
                    s.sendall(flood)
                raw = read_responses(s, 1, timeout=8)
            except OSError:  # reset
                raw = b""
        assert raw == b""  # cut off: not even the first create is answered
        still_serving(mock)


def test_a_slow_client_does_not_block_others(fast):
    data = request("POST", api.path("create"), b'{"variant_id": "a"}')
    with socket.create_connection(address(fast), timeout=10) as slowpoke:
        slowpoke.sendall(data[:30])  # half a request line, then nothing for a while
        start = time.monotonic()
        with httpx.Client(base_url=fast.base_urls["uk"], headers=HEADERS, timeout=5) as c:
            assert [c.post(api.path("create"), json={}).status_code for _ in range(20)] == [200] * 20
        assert time.monotonic() - start < 5
        slowpoke.sendall(data[30:])
        status, _, body = responses(read_responses(slowpoke, 1))[0]
    assert status == 200 and json.loads(body)["conversation_id"]


def test_a_head_sent_in_pieces_is_still_bounded(fast):
    """A header line that never ends is refused once the head passes 16 KiB across reads."""
    with socket.create_connection(address(fast), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(b"GET / HTTP/1.1\r\nX-Long: ")
        raw = b""
        try:
            for _ in range(40):  # up to 40 KiB, 1 KiB per read
                time.sleep(0.02)
                s.sendall(b"a" * 1024)
        except OSError:
            pass  # refused and closed: later sends fail
        raw = read_responses(s, 1, timeout=5)
    assert responses(raw)[0][0] == 431


def test_unknown_method_and_upgrade(fast):
    status, headers, body = responses(exchange(fast, b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n"))[0]
    assert status == 400 and headers["connection"] == "close" and "error" in json.loads(body)
    # Upgrade: answered as plain HTTP/1.1, then closed (the mock speaks nothing else).
    raw = exchange(fast, b"GET /_mock/stats HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nGET /_mock/stats HTTP/1.1\r\n\r\n")
    got = responses(raw)
    assert [s for s, _, _ in got] == [200] and got[0][1]["connection"] == "close"


def test_idle_keep_alive_connections_are_closed(monkeypatch):
    from loadtest.mock import server as mock_server

    monkeypatch.setattr(mock_server, "KEEPALIVE_S", 0.5)
    with MockServer(MockConfig(latency_scale=0), regions=["uk"]) as mock:
        with socket.create_connection(address(mock), timeout=10) as s:
            s.sendall(b"GET /_mock/stats HTTP/1.1\r\nHost: x\r\n\r\n")
            assert responses(read_responses(s, 1))[0][0] == 200
            start = time.monotonic()
            s.settimeout(10)
            assert s.recv(100) == b""  # the server closed the idle connection
            assert time.monotonic() - start < 8
