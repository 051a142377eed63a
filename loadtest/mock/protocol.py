"""The mock's HTTP/1.1 front end: an asyncio Protocol on httptools, in front of a RegionService.

Why not aiohttp here: on one core aiohttp's request machinery tops out below the request
rate of a single Locust generator, and the mock must never be the bottleneck. This protocol
does only what the Chat API needs and is several times faster (``benchmarks/bench_mock.py``
measures both). The aiohttp front end (:func:`loadtest.mock.server.make_app`) serves the
same RegionService, for embedding in an aiohttp application.

The bytes are parsed by httptools (llhttp, the parser under uvicorn and Node.js): request
line, headers, ``Content-Length`` and ``chunked`` bodies, pipelined requests. This module
adds what a server needs on top: the limits, keep-alive, ``Expect: 100-continue``, answering
pipelined requests in order while one is in service, and JSON refusals.

What it speaks: HTTP/1.0 and 1.1 requests with ``Content-Length`` or ``chunked`` bodies,
keep-alive, pipelining (answered in order), ``Expect: 100-continue``; ``HEAD`` gets headers
only; a request asking to ``Upgrade`` is answered as plain HTTP/1.1, then the connection
closes. Everything it refuses, it refuses with a JSON body, then closes the connection:

* 400 whatever llhttp refuses (an unparsable request line or header, an unknown method, a
  bad Content-Length, Content-Length together with Transfer-Encoding, a bad chunk), a
  transfer coding other than chunked, a request target that is neither a path nor
  absolute-form;
* 505 an HTTP version other than 1.0 and 1.1;
* 431 a request head over 16 KiB or more than 100 header lines;
* 413 a body over ``max_body``, known from Content-Length before reading it or while
  reading a chunked one. The rest of the body is discarded (never buffered) for up to
  2 seconds, so the client sees the 413 rather than a reset.

Memory per connection is bounded by the head limit plus ``max_body`` (a client that
pipelines more while a request is in service is cut off; bytes that arrive then wait
unparsed); a client that disconnects cancels its request in service (freeing its capacity
slot, ending a held request); idle keep-alive connections close after 75 seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from functools import partial
from typing import cast

import httptools

from loadtest import api
from loadtest.mock.service import RESET, Hold, RegionService

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
KEEPALIVE_S = 75.0
LINGER_S = 2.0
_CHUNK_SLACK = 16 * 1024  # chunk-size lines and trailers on top of max_body

_REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_STATUS = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS")}
# The request headers the service reads, by lower-case name.
_CONTENT_TYPE, _KEY, _TOKEN, _LENGTH, _CONNECTION, _TRANSFER, _EXPECT = range(7)
_FIELDS = {
    b"content-type": _CONTENT_TYPE,
    api.API_KEY_HEADER.lower().encode(): _KEY,
    api.TOKEN_HEADER.lower().encode(): _TOKEN,
    b"content-length": _LENGTH,
    b"connection": _CONNECTION,
    b"transfer-encoding": _TRANSFER,
    b"expect": _EXPECT,
}


class Clock:
    """A once-a-second clock shared by the connections: the Date header and idle timestamps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.date = b""
        self.tick()

    def tick(self) -> None:
        self.now = time.monotonic()
        self.date = b"Date: " + formatdate(usegmt=True).encode() + b"\r\nServer: polyai-mock\r\n"


class _Reject(Exception):
    """A protocol-level refusal: answer ``status`` with ``message`` and close.

    ``length``: a 413's declared Content-Length, the bytes to discard before closing.
    """

    def __init__(self, status: int, message: str, length: int | None = None) -> None:
        self.status = status
        self.message = message
        self.length = length


def _refusal(error: httptools.HttpParserError, version: str) -> _Reject:
    """What to answer when httptools stops: our own refusal from a callback, or llhttp's."""
    cause = error.__context__  # httptools chains what a callback raised
    if isinstance(cause, _Reject):
        return cause
    if isinstance(error, httptools.HttpParserCallbackError):
        log.error("mock: unexpected error", exc_info=cause)
        return _Reject(500, "internal error")
    reason = str(error)
    if "HTTP version" in reason:
        return _Reject(505, f"unsupported HTTP version {version}; use HTTP/1.1")
    return _Reject(400, f"malformed request: {reason}")


class HttpProtocol(asyncio.Protocol):
    """One client connection. Create through :func:`protocol_factory`.

    httptools calls the ``on_*`` methods while parsing; a complete request joins ``queue``
    and is served in order. While one is in service (``task``), received bytes wait in
    ``pending``, unparsed, so a pipelining client cannot make the mock buffer without bound.
    """

    __slots__ = (
        "service",
        "max_body",
        "clock",
        "connections",
        "transport",
        "parser",
        "queue",
        "pending",
        "pending_size",
        "task",
        "last_active",
        "closing",
        "failed",
        "discard_left",
        # the request being parsed
        "in_head",
        "in_body",
        "url",
        "target",
        "head_size",
        "head_bytes",
        "headers",
        "content_type",
        "key",
        "token",
        "length",
        "connection",
        "expect",
        "continue_sent",
        "body",
        "body_size",
        "keep_alive",
        # the request in service is an injected timeout; the client half-closed
        "holding",
        "peer_done",
    )

    transport: asyncio.Transport  # set by connection_made, which asyncio calls before any other callback

    def __init__(self, service: RegionService, clock: Clock, connections: set) -> None:
        self.service = service
        self.clock = clock
        self.connections = connections
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque = deque()  # parsed requests (and at most one final refusal)
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.task: asyncio.Task | None = None
        self.last_active = clock.now
        self.closing = False
        self.failed = False  # the parser stopped: a refusal is queued, later bytes are dropped
        self.discard_left = -1  # >= 0 while discarding an oversized body
        self.max_body = service.max_body
        self.holding = False  # the request in service is an injected timeout (service.Hold)
        self.peer_done = False  # the client half-closed after a whole request
        self._next_request()

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server's (asyncio's or uvloop's)
        self.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closing = True
        self.queue.clear()
        self.pending.clear()
        if self.task is not None:
            self.task.cancel()  # the client gave up: stop serving (frees slot, ends holds)
            self.task = None

    def data_received(self, data: bytes) -> None:
        self.last_active = self.clock.now
        if self.closing:
            if self.discard_left >= 0:
                self.discard_left -= len(data)
                if self.discard_left <= 0:
                    self.transport.close()
            return
        if self.failed:
            return
        if self.task is not None:
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > MAX_HEAD + self.max_body + _CHUNK_SLACK:
                self._abort()
            return
        self._feed(data)
        self._serve()

    def eof_received(self) -> bool | None:
        """The client closed its sending side. A half-close after a whole request is allowed
        by HTTP: the request in service is still answered (and those pipelined behind it),
        then the connection closes (had the client closed fully, that write just fails). An
        injected timeout ends here, since a client that gives up and one that half-closes look
        the same; with nothing in service (earlier answers written), it closes now."""
        if self.task is not None and not self.holding:
            self.peer_done = True
            return True  # keep the transport open for writing
        return None

    # ------------------------------------------------------------ parsing (httptools callbacks)

    def _feed(self, data: bytes) -> None:
        was_in_head = self.in_head
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Upgrade or CONNECT: llhttp hands over what follows the head. The mock speaks
            # only HTTP/1.1, so it answers the request as such and closes.
            if self.queue:
                self.queue[-1] = self.queue[-1][:-1] + (0,)
            self.failed = True
            return
        except httptools.HttpParserError as e:
            self.failed = True
            self.queue.append(_refusal(e, self.parser.get_http_version()))
            return
        if was_in_head and self.in_head:  # a whole read inside one head: count it
            self.head_bytes += len(data)  # (a header line is handed over only once complete)
            if self.head_bytes > MAX_HEAD:
                self.failed = True
                self.queue.append(_Reject(431, f"request head exceeds {MAX_HEAD} bytes"))

    def _next_request(self) -> None:
        """Forget the request just parsed (called at the start and after each request)."""
        self.in_head = self.in_body = self.expect = self.continue_sent = self.connection = False
        self.url = b""
        self.head_size = self.head_bytes = self.headers = self.body_size = 0
        self.content_type: str | None = None
        self.key: str | None = None
        self.token: str | None = None
        self.length = -1
        self.body: list[bytes] = []

    def on_url(self, url: bytes) -> None:  # a request's first callback (a long URL: several)
        self.in_head = True
        self.url += url
        self.head_size += len(url)
        if self.head_size > MAX_HEAD:
            raise _Reject(431, f"request head exceeds {MAX_HEAD} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body:
            return  # a trailer of a chunked body: not read
        self.headers += 1
        self.head_size += len(name) + len(value)  # limits checked once the head is complete
        field = _FIELDS.get(name.lower())
        if field is None:
            return
        if field == _KEY:
            self.key = value.decode("latin-1")
        elif field == _TOKEN:
            self.token = value.decode("latin-1")
        elif field == _CONTENT_TYPE:
            self.content_type = value.decode("latin-1")
        elif field == _LENGTH:
            self.length = int(value)  # llhttp has checked the digits
        elif field == _CONNECTION:
            self.connection = True
        elif field == _TRANSFER:
            if value.lower() != b"chunked":
                raise _Reject(400, f"unsupported Transfer-Encoding {value[:50].decode('latin-1')!r}")
        elif value.lower() == b"100-continue":
            self.expect = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_size > MAX_HEAD:
            raise _Reject(431, f"request head exceeds {MAX_HEAD} bytes")
        if self.headers > MAX_HEADERS:
            raise _Reject(431, f"more than {MAX_HEADERS} header lines")
        parser = self.parser
        if not self.connection and parser.should_keep_alive():
            self.keep_alive = 1  # without a Connection header only HTTP/1.1 keeps alive
        else:
            version = parser.get_http_version()
            if version == "1.1":
                self.keep_alive = 1 if parser.should_keep_alive() else 0
            elif version == "1.0":
                self.keep_alive = 2 if parser.should_keep_alive() else 0  # 2: say keep-alive
            else:
                raise _Reject(505, f"unsupported HTTP version {version}; use HTTP/1.1")
        target = self.url.decode("latin-1")
        if target[:1] != "/":
            if not target.startswith(("http://", "https://")):
                raise _Reject(400, "malformed request target")
            slash = target.find("/", target.find("//") + 2)  # absolute-form: keep the path
            target = target[slash:] if slash > 0 else "/"
        self.target = target
        if self.length > self.max_body:
            raise _Reject(413, f"request body exceeds {self.max_body} bytes", self.length)
        self.in_body = True

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.max_body:
            raise _Reject(413, f"request body exceeds {self.max_body} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = self.body
        method = self.parser.get_method()
        self.queue.append(
            (
                _METHODS.get(method) or method.decode("ascii"),
                self.target,
                self.content_type,
                self.key,
                self.token,
                body[0] if len(body) == 1 else b"".join(body),
                self.keep_alive,
            )
        )
        self._next_request()

    # ------------------------------------------------------------ serving, in order

    def _serve(self) -> None:
        """Answer the parsed requests in order until one needs time; then parse what waited."""
        out: list[bytes] = []
        service = self.service
        queue = self.queue
        while True:
            while queue:
                request = queue.popleft()
                if type(request) is _Reject:
                    self._flush(out)
                    self._refuse(request)
                    return
                method, target, content_type, key, token, body, keep_alive = request
                head_only = method == "HEAD"
                try:
                    result = service.handle(method, target, content_type, key, token, body)
                except Exception:
                    log.exception("mock: unexpected error")
                    result = service.error(500, "internal error")
                if isinstance(result, tuple):
                    if result[3] == RESET:
                        self._flush(out)
                        self._abort()
                        return
                    out.append(self._serialize(result, keep_alive, head_only))
                    if not keep_alive:
                        self._flush(out)
                        self._close()
                        return
                else:
                    self._flush(out)
                    self.holding = type(result) is Hold
                    task = self.task = asyncio.ensure_future(result)
                    task.add_done_callback(partial(self._answer_later, keep_alive, head_only))
                    return
            if not self.pending or self.failed:
                break
            data = b"".join(self.pending)
            self.pending.clear()
            self.pending_size = 0
            self._feed(data)
        self._flush(out)
        if self.in_body and self.expect and not self.continue_sent:
            self.continue_sent = True  # its turn has come and its body is still to be sent
            self.transport.write(_CONTINUE)

    # ------------------------------------------------------------ writing

    def _serialize(self, result: tuple, keep_alive: int, head_only: bool = False) -> bytes:
        status, body, headers, _ = result
        extra = b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in headers) if headers else b""
        if not keep_alive:
            extra += b"Connection: close\r\n"
        elif keep_alive == 2:
            extra += b"Connection: keep-alive\r\n"
        return b"%bContent-Type: application/json\r\nContent-Length: %d\r\n%b%b\r\n%b" % (
            _STATUS.get(status) or f"HTTP/1.1 {status} Status\r\n".encode(),
            len(body),
            self.clock.date,
            extra,
            b"" if head_only else body,
        )

    def _flush(self, out: list[bytes]) -> None:
        if out:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    def _answer_later(self, keep_alive: int, head_only: bool, task: asyncio.Task) -> None:
        """Done callback of a request served asynchronously (service time, queue, hold)."""
        if task.cancelled():  # the client went away
            return
        self.task = None
        exc = task.exception()
        if exc is not None:
            log.error("mock: unexpected error", exc_info=exc)
            result = self.service.error(500, "internal error")
        else:
            result = task.result()
        if self.closing:
            return
        if result[3] == RESET:
            self._abort()
            return
        self.transport.write(self._serialize(result, keep_alive, head_only))
        if not keep_alive:
            self._close()
            return
        self._serve()
        if self.peer_done and self.task is None and not self.closing:
            self._close()  # every request of the half-closed client is answered

    def _refuse(self, refusal: _Reject) -> None:
        if self.closing:
            return
        if refusal.status == 413:
            self._too_large(refusal.length)
            return
        self.transport.write(self._serialize(self.service.error(refusal.status, refusal.message), False))
        self._close()

    def _too_large(self, length: int | None) -> None:
        """Answer 413 now, then discard (not buffer) the rest of the body before closing.

        ``length``: the declared Content-Length (some of it may have arrived already); the
        connection closes once that much more has come, or after LINGER_S.
        """
        self.transport.write(self._serialize(self.service.too_large(), False))
        self.closing = True
        self.discard_left = (1 << 62) if length is None else length
        asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)

    def _close(self) -> None:
        self.closing = True
        self.pending.clear()
        self.transport.close()

    def _abort(self) -> None:
        self.closing = True
        self.pending.clear()
        self.transport.abort()

    def idle_for(self, now: float) -> float:
        return 0.0 if self.task is not None else now - self.last_active


def protocol_factory(service: RegionService, clock: Clock, connections: set) -> Callable[[], HttpProtocol]:
    """A factory for ``loop.create_server``; ``connections`` collects the live ones."""

    def factory() -> HttpProtocol:
        return HttpProtocol(service, clock, connections)

    return factory
