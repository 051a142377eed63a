"""The generator's HTTP exchange (`loadtest.inlocust.transport`): our calls skip Locust's
`FastHttpSession.request` wrapper, so these tests hold them to what that wrapper sends on the
wire and fires as Locust's `request` event, and pin down the cases where they differ on purpose
(redirects are not followed; a body that breaks off is a failure, not an exception).

A scripted HTTP server in a real thread (the test process is not monkey-patched) answers
every request with the next canned reply and keeps the raw requests it read.
"""

from __future__ import annotations

import gzip
import socket
import threading
import time

import pytest
from locust.contrib.fasthttp import ErrorResponse, FastHttpSession, FastResponse
from locust.env import Environment

from loadtest import api
from loadtest.inlocust import transport
from loadtest.inlocust.chat import ChatClient, classify_failure
from test_chat_units import _run_context

BODY = b'{"conversation_id":"c1","response":"hi","end_conversation":false}'


def reply(body: bytes = BODY, status: str = "200 OK", headers: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n{headers}\r\n".encode() + body


class Server:
    """Answers requests in order with `replies` (any connection, kept alive); `requests`
    holds what it received."""

    def __init__(self, replies: list[bytes], close: bool = False):
        self.replies = list(replies)
        self.close = close  # hang up after each reply
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn) -> None:
        with conn:
            while (request := self._read_request(conn)) is not None:
                self.requests.append(request)
                conn.sendall(self.replies.pop(0))
                if self.close:
                    break

    @staticmethod
    def _read_request(conn) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += conn.recv(65536)
        return data


def session(fired: list | None = None) -> FastHttpSession:
    env = Environment()
    if fired is not None:
        env.events.request.add_listener(lambda **kw: fired.append(kw))
    return FastHttpSession(None, env.events.request, None, max_retries=0, insecure=False)


HEADERS = api.headers("key", "token")
PATH = "/v1/acct/proj/chat/respond"


def send(s: FastHttpSession, url: str, body: bytes = b'{"a":1}') -> transport.Sent:
    return transport.exchange(s, "POST", url, transport.target(url), body, transport.with_accept_encoding(HEADERS))


def test_same_bytes_on_the_wire_and_the_same_request_event_as_fasthttpsession_request():
    server = Server([reply(), reply()])
    url = server.url + PATH
    theirs: list[dict] = []
    before = time.time()
    response = session(theirs).request("POST", url, data=b'{"a":1}', headers=HEADERS, name="uk · respond", context={"turn": 1})
    assert response.content == BODY
    ours: list[dict] = []
    s = session(ours)
    sent = send(s, url)
    transport.report(s, sent, "POST", "uk · respond", url, {"turn": 1}, None)
    after = time.time()

    assert server.requests[0] == server.requests[1]  # Accept-Encoding, User-Agent, Host, Content-Length, body
    assert len(theirs) == len(ours) == 1
    theirs_kw, ours_kw = theirs[0], ours[0]
    assert set(ours_kw) == set(theirs_kw)
    for key in ("request_type", "name", "context", "exception", "url", "response_length"):
        assert ours_kw[key] == theirs_kw[key], key
    assert ours_kw["response_length"] == len(BODY)
    assert before <= theirs_kw["start_time"] <= ours_kw["start_time"] <= after
    assert 0 < ours_kw["response_time"] < (after - before) * 1000
    assert isinstance(ours_kw["response"], FastResponse) and ours_kw["response"].status_code == 200
    assert (sent.status, sent.content, sent.error) == (200, BODY, None)


def test_cookies_the_server_sets_are_sent_back_as_locust_would():
    server = Server([reply(headers="Set-Cookie: lb=node-7; Path=/\r\n"), reply(), reply()])
    s = session()
    send(s, server.url + PATH)
    send(s, server.url + PATH)
    assert b"cookie" not in server.requests[0].lower()
    assert b"\r\nCookie: lb=node-7\r\n" in server.requests[1]
    theirs = session()
    theirs.cookiejar = s.cookiejar  # the same jar through Locust's own path: the same request
    theirs.client.cookiejar = s.cookiejar
    assert theirs.request("POST", server.url + PATH, data=b'{"a":1}', headers=HEADERS).content == BODY
    assert server.requests[2] == server.requests[1]


def test_gzip_replies_are_measured_decompressed_like_locust():
    server = Server([reply(gzip.compress(BODY), headers="Content-Encoding: gzip\r\n")])
    sent = send(session(), server.url + PATH)
    assert sent.content == BODY
    assert sent.response_length == len(BODY)


def test_a_redirect_is_not_followed_and_counts_as_an_http_failure():
    server = Server([reply(b"", "307 Temporary Redirect", "Location: https://elsewhere.example/v1\r\n"), reply()])
    sent = send(session(), server.url + PATH)
    assert sent.status == 307 and sent.error is None
    assert len(server.requests) == 1  # nothing sent to the Location
    assert classify_failure(sent.status, sent.error) == "http"


def test_a_body_that_breaks_off_is_a_connection_failure_with_its_status():
    server = Server([b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10], close=True)
    sent = send(session(), server.url + PATH)  # the server hangs up after 10 of the 100 bytes
    assert sent.status == 200
    assert sent.error is not None
    assert classify_failure(sent.status, sent.error) == "connection"
    assert sent.response_time > 0


def test_no_server_is_a_connection_failure_without_a_response():
    sock = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}"
    sock.close()  # nothing listens there now
    sent = send(session(), url)
    assert sent.status == 0 and sent.content == b"" and sent.response_length == 0
    assert isinstance(sent.response, ErrorResponse) and sent.response.error is sent.error
    assert classify_failure(sent.status, sent.error) == "connection"


@pytest.mark.parametrize(
    "status,body,kind,message",
    [
        ("200 OK", BODY, "", ""),
        ("503 Service Unavailable", b'{"error":{"message":"busy"}}', "http", "HTTP 503: busy"),
        ("301 Moved Permanently", b"", "http", "HTTP 301: redirect to https://new.example/v1 (not followed: use that URL in --base-urls)"),
        ("200 OK", b"not json", "schema", "respond: body is not JSON"),
    ],
)
def test_a_chat_call_fires_one_event_with_the_rows_context_and_its_failure(tmp_path, status, body, kind, message):
    server = Server([reply(body, status, "Location: https://new.example/v1\r\n")])
    run = _run_context(tmp_path, regions="uk", variants="", base_urls=f"uk={server.url}")
    fired: list[dict] = []

    class User:
        client = session(fired)
        _state = "running"

        def context(self):
            return {"user": 9}

    outcome = ChatClient(User(), run).call("respond", "uk", "", api.respond_body("c1", "hello"), "c1", 2)
    assert len(fired) == 1
    event = fired[0]
    assert event["name"] == "uk · respond" and event["request_type"] == "POST"
    assert event["context"] == {"user": 9, "region": "uk", "variant": "", "endpoint": "respond", "conversation_id": "c1", "turn": 2, "error_kind": kind}
    assert outcome.ok is (kind == "")
    if kind:
        assert str(event["exception"]) == message
        assert type(event["exception"]).__name__ == "CatchResponseError"  # as response.failure() made it
    else:
        assert event["exception"] is None and outcome.reply.conversation_id == "c1"
