"""A small, fast HTTP/1.1 server protocol (asyncio) in front of a RegionService.

Why not aiohttp here: on one core aiohttp's request machinery tops out below the request
rate of a single Locust generator, and the mock must never be the bottleneck. This protocol
does only what the Chat API needs and is several times faster (``benchmarks/bench_mock.py``
measures both). The aiohttp front end (:func:`loadtest.mock.server.make_app`) serves the
same RegionService, for embedding in an aiohttp application.

What it speaks: HTTP/1.0 and 1.1 requests with ``Content-Length`` or ``chunked`` bodies,
keep-alive, pipelining (answered in order), ``Expect: 100-continue``; ``HEAD`` gets headers
only. Everything it refuses, it refuses with a JSON body, then closes the connection:

* 400 an unparsable request line or header, a bad Content-Length, Content-Length together
  with Transfer-Encoding, a transfer coding other than chunked, a bad chunk;
* 505 an HTTP version other than 1.x;
* 431 a request head over 16 KiB or more than 100 header lines;
* 413 a body over ``max_body``, known from Content-Length before reading it or while
  reading a chunked one. The rest of the body is discarded (never buffered) for up to
  2 seconds, so the client sees the 413 rather than a reset.

Memory per connection is bounded by the head limit plus ``max_body`` (a client that
pipelines more while a request is in service is cut off); a client that disconnects cancels
its request in service (freeing its capacity slot, ending a held request); idle keep-alive
connections close after 75 seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate
from functools import partial

from loadtest import api
from loadtest.mock.service import RESET, RegionService

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
KEEPALIVE_S = 75.0
LINGER_S = 2.0
_CHUNK_SLACK = 16 * 1024  # chunk-size lines and trailers on top of max_body

_REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 415: "Unsupported Media Type",
            422: "Unprocessable Entity", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            505: "HTTP Version Not Supported"}
_STATUS = {code: f"HTTP/1.1 {code} {reason}\r\n".encode() for code, reason in _REASONS.items()}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_KEY = api.API_KEY_HEADER.lower()
_TOKEN = api.TOKEN_HEADER.lower()


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
    """A protocol-level refusal: answer ``status`` with ``message`` and close."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class HttpProtocol(asyncio.Protocol):
    """One client connection. Create through :func:`protocol_factory`."""

    __slots__ = ("service", "clock", "connections", "transport", "buf", "task", "last_active",
                 "closing", "discard_left", "continue_sent")

    def __init__(self, service: RegionService, clock: Clock, connections: set) -> None:
        self.service = service
        self.clock = clock
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.task: asyncio.Task | None = None
        self.last_active = clock.now
        self.closing = False
        self.discard_left = -1  # >= 0 while discarding an oversized body
        self.continue_sent = False

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)
        self.closing = True
        self.buf = b""
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
        self.buf = self.buf + data if self.buf else data
        if self.task is None:
            self._process()
        elif len(self.buf) > MAX_HEAD + self.service.max_body + _CHUNK_SLACK:
            self._abort()

    def eof_received(self):
        # The client closed its side. A half-close and a full close look the same, and a
        # client that gives up closes fully: treat both as gone (cancels a request in service).
        return None

    # ------------------------------------------------------------ parsing

    def _process(self) -> None:
        out: list[bytes] = []
        service = self.service
        try:
            while self.buf:
                buf = self.buf
                if buf[:2] == b"\r\n":  # tolerate stray CRLFs between requests
                    self.buf = buf.lstrip(b"\r\n")
                    continue
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    self._check_partial_head(buf)
                    break
                if end > MAX_HEAD:
                    raise _Reject(431, f"request head exceeds {MAX_HEAD} bytes")
                head = buf[:end].decode("latin-1").split("\r\n")
                method, target, keep_alive = self._request_line(head[0])
                length = None
                chunked = False
                content_type = key = token = expect = None
                if len(head) > MAX_HEADERS + 1:
                    raise _Reject(431, f"more than {MAX_HEADERS} header lines")
                for line in head[1:]:
                    name, sep, value = line.partition(":")
                    if not sep or not name or name[-1] in " \t" or name[0] in " \t":
                        raise _Reject(400, "malformed header line")
                    name = name.lower()
                    value = value.strip(" \t")
                    if name == "content-type":
                        content_type = value
                    elif name == "content-length":
                        if not (value.isascii() and value.isdigit()) or (length is not None and int(value) != length):
                            raise _Reject(400, "invalid Content-Length")
                        length = int(value)
                    elif name == _KEY:
                        key = value
                    elif name == _TOKEN:
                        token = value
                    elif name == "connection":
                        v = value.lower()
                        if "close" in v:
                            keep_alive = 0
                        elif "keep-alive" in v and not keep_alive:
                            keep_alive = 2  # HTTP/1.0 keep-alive: say so in the answer
                    elif name == "transfer-encoding":
                        if value.lower() != "chunked":
                            raise _Reject(400, f"unsupported Transfer-Encoding {value[:50]!r}")
                        chunked = True
                    elif name == "expect":
                        expect = value.lower()
                start = end + 4
                if chunked:
                    if length is not None:
                        raise _Reject(400, "both Content-Length and Transfer-Encoding")
                    parsed = self._dechunk(buf, start)
                    if parsed is None:
                        self._maybe_continue(expect)
                        break
                    body, rest = parsed
                elif length:
                    if length > service.max_body:
                        self._flush(out)
                        self._too_large(len(buf) - start, length)
                        return
                    if len(buf) - start < length:
                        self._maybe_continue(expect)
                        break
                    body = buf[start:start + length]
                    rest = start + length
                else:
                    body = b""
                    rest = start
                self.buf = buf[rest:]
                self.continue_sent = False
                head_only = method == "HEAD"
                try:
                    result = service.handle(method, target, content_type, key, token, body)
                except Exception:
                    log.exception("mock: unexpected error")
                    result = service.error(500, "internal error")
                if type(result) is tuple:
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
                    task = self.task = asyncio.ensure_future(result)
                    task.add_done_callback(partial(self._answer_later, keep_alive, head_only))
                    return
        except _Reject as r:
            self._flush(out)
            self._refuse(r.status, r.message)
            return
        self._flush(out)

    @staticmethod
    def _request_line(line: str) -> tuple[str, str, int]:
        """(method, target, keep_alive): 1 HTTP/1.1 default, 0 HTTP/1.0 default (close)."""
        parts = line.split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper() or not parts[1]:
            raise _Reject(400, "malformed request line")
        method, target, version = parts
        if version == "HTTP/1.1":
            keep_alive = 1
        elif version == "HTTP/1.0":
            keep_alive = 0
        elif version.startswith("HTTP/"):
            raise _Reject(505, f"unsupported HTTP version {version[:20]!r}; use HTTP/1.1")
        else:
            raise _Reject(400, "malformed request line")
        if target[0] != "/":
            if target.startswith(("http://", "https://")):  # absolute-form: keep the path
                slash = target.find("/", target.find("//") + 2)
                target = target[slash:] if slash > 0 else "/"
            else:
                raise _Reject(400, "malformed request target")
        return method, target, keep_alive

    def _check_partial_head(self, buf: bytes) -> None:
        """Refuse garbage early instead of waiting for a blank line that never comes."""
        if len(buf) > MAX_HEAD:
            raise _Reject(431, f"request head exceeds {MAX_HEAD} bytes")
        nl = buf.find(b"\r\n")
        if nl >= 0:
            self._request_line(buf[:nl].decode("latin-1"))
            return
        space = buf.find(b" ", 0, 24)
        method = buf[:space] if space >= 0 else buf[:24]
        if not (method.isalpha() and method.isupper()) or (space < 0 and len(buf) >= 24):
            raise _Reject(400, "malformed request line")  # binary, TLS, ... : not an HTTP method
        if len(buf) > 8192:
            raise _Reject(400, "request line too long")

    def _dechunk(self, buf: bytes, pos: int) -> tuple[bytes, int] | None:
        """(body, end offset) of a complete chunked body at ``pos``; None if incomplete."""
        limit = self.service.max_body
        parts = []
        size_total = 0
        n = len(buf)
        while True:
            nl = buf.find(b"\r\n", pos)
            if nl < 0:
                if n - pos > 1024:
                    raise _Reject(400, "bad chunk size line")
                return self._incomplete_chunked(n, pos)
            size_text = buf[pos:nl].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _Reject(400, "bad chunk size") from None
            if size < 0:
                raise _Reject(400, "bad chunk size")
            size_total += size
            if size_total > limit:
                raise _Reject(413, f"request body exceeds {limit} bytes")
            pos = nl + 2
            if size == 0:
                while True:  # trailers, up to the blank line
                    nl = buf.find(b"\r\n", pos)
                    if nl < 0:
                        return self._incomplete_chunked(n, pos)
                    if nl == pos:
                        return b"".join(parts), nl + 2
                    pos = nl + 2
            if n < pos + size + 2:
                return self._incomplete_chunked(n, pos)
            if buf[pos + size:pos + size + 2] != b"\r\n":
                raise _Reject(400, "chunk not followed by CRLF")
            parts.append(buf[pos:pos + size])
            pos += size + 2

    def _incomplete_chunked(self, n: int, pos: int) -> None:
        if n > MAX_HEAD + self.service.max_body + _CHUNK_SLACK:
            raise _Reject(413, f"request body exceeds {self.service.max_body} bytes")
        return None

    def _maybe_continue(self, expect: str | None) -> None:
        if expect == "100-continue" and not self.continue_sent:
            self.continue_sent = True
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
            _STATUS.get(status) or f"HTTP/1.1 {status} Status\r\n".encode(), len(body), self.clock.date,
            extra, b"" if head_only else body)

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
        if self.buf:
            self._process()

    def _refuse(self, status: int, message: str) -> None:
        if self.closing:
            return
        if status == 413:
            self._too_large(0, None)
            return
        self.transport.write(self._serialize(self.service.error(status, message), False))
        self._close()

    def _too_large(self, have: int, length: int | None) -> None:
        """Answer 413 now, then discard (not buffer) the rest of the body before closing."""
        self.transport.write(self._serialize(self.service.too_large(), False))
        self.buf = b""
        self.closing = True
        self.discard_left = (1 << 62) if length is None else length - have
        if self.discard_left <= 0:
            self.transport.close()
            return
        asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)

    def _close(self) -> None:
        self.closing = True
        self.buf = b""
        self.transport.close()

    def _abort(self) -> None:
        self.closing = True
        self.buf = b""
        self.transport.abort()

    def idle_for(self, now: float) -> float:
        return 0.0 if self.task is not None else now - self.last_active


def protocol_factory(service: RegionService, clock: Clock, connections: set):
    """A factory for ``loop.create_server``; ``connections`` collects the live ones."""
    def factory() -> HttpProtocol:
        return HttpProtocol(service, clock, connections)
    return factory
