"""One HTTP exchange of a chat call, sent on the Locust user's own connection pool and
reported to Locust's `request` event once, with the arguments `FastHttpSession.request` fires.

    sent = exchange(user.client, method, url, target, body, headers)   # never raises on HTTP/socket errors
    ... judge sent.status / sent.content / sent.error ...
    report(user.client, sent, method, name, url, context, exception)   # Locust's stats, our rows, live view

Why not `FastHttpSession.request(..., catch_response=True)`: per request it builds a
`CompatRequest` (a URL parse), asks the cookie jar twice, copies the headers twice, builds a
`ResponseContextManager` (a copy of the response's attributes) and a `request_meta` dict —
with geventhttpclient's `UserAgent.urlopen` about 75 µs of CPU per request on the generator's
core, a quarter of what a request cost (benchmarks/RESULTS.md, "Generator efficiency"). Here the URL is parsed once per
(region, variant, endpoint) and the call goes straight to geventhttpclient's `HTTPClient` of
that host, in the same `HTTPClientPool` (same connections, timeouts, TLS context, and the
handshake timing of `chat.ssl_context_factory`).

What is measured and reported is what Locust measures and reports: `start_time` (epoch
seconds) taken before sending, `response_time` in ms from just before sending until the body
is read (and decompressed), `response_length` the body's length, `exception` None or the
failure, `context` and `url`; the event is fired by the session's own `request_event`.
Differences from the wrapper, on purpose:
- redirects (3xx) are not followed: a redirect is recorded as an `http` failure naming its
  Location (following it would add a hop to every measured latency; fix --base-urls instead);
- a connection that breaks while the body is read is a recorded failure, not an exception
  that ends the user's task without a row.
Cookies work as in Locust (the session's cookie jar), at no cost while the jar is empty.
"""

from __future__ import annotations

import time
from typing import Mapping, NamedTuple

from geventhttpclient.header import Headers
from geventhttpclient.url import URL
from geventhttpclient.useragent import CompatRequest, UserAgent, _make_request
from locust.contrib.fasthttp import FAILURE_EXCEPTIONS, ErrorResponse, FastHttpSession, FastResponse

# Sent by FastHttpSession.request unless the caller set it: the same bytes on the wire.
ACCEPT_ENCODING = "gzip, deflate, br"


class Target(NamedTuple):
    """A URL parsed once: geventhttpclient's URL (the pool's key) and the request line's URI."""

    url: URL
    uri: str


def target(url: str) -> Target:
    parsed = URL(url)
    # quoted_uri (percent-encoded, as Locust's user agent sends it) since geventhttpclient 2.3.4
    return Target(parsed, getattr(parsed, "quoted_uri", parsed.request_uri))


def with_accept_encoding(headers: dict[str, str]) -> dict[str, str]:
    """The request headers as FastHttpSession.request completes them (built once per user)."""
    if any(h.lower() == "accept-encoding" for h in headers):
        return dict(headers)
    return {**headers, "Accept-Encoding": ACCEPT_ENCODING}


class Sent(NamedTuple):
    """What came back: `response` is Locust's FastResponse (or ErrorResponse: no response)."""

    response: FastResponse
    status: int  # 0: no response
    content: bytes  # b"" when there is none
    error: BaseException | None  # the transport failure, if any
    start_time: float
    response_time: float  # ms
    response_length: int


def exchange(session: FastHttpSession, method: str, url: str, where: Target, body: bytes, headers: Mapping[str, str]) -> Sent:
    """Send one request on `session`'s connection pool and read the whole reply."""
    agent = session.client
    jar = agent.cookiejar
    request = None
    on_wire: Mapping[str, str] | Headers = headers
    if jar is not None and len(jar):  # a cookie to send: the jar needs a urllib-style request
        request = _urllib_request(agent, method, url, body, headers)
        jar.add_cookie_header(request)
        on_wire = request.headers
    start_time = time.time()
    started = time.perf_counter()
    response: FastResponse | None = None
    content = b""
    error: Exception | None = None
    try:
        raw = agent.clientpool.get_client(where.url).request(method, where.uri, body=body, headers=on_wire)
        response = FastResponse(raw, sent_request=raw._sent_request)
        content = response.content or b""  # read (and decompressed) within the measured time
    except FAILURE_EXCEPTIONS as e:
        error = e
    response_time = (time.perf_counter() - started) * 1000.0
    if response is None:  # no response at all: Locust's stand-in, as its session makes it
        assert error is not None
        response = ErrorResponse(request or _urllib_request(agent, method, url, body, headers), error)
        return Sent(response, 0, b"", error, start_time, response_time, 0)
    if error is None and jar is not None and response.headers is not None and "set-cookie" in response.headers:
        # duck-typed for the jar (info() gives the headers), as geventhttpclient's urlopen does
        jar.extract_cookies(response, request or _urllib_request(agent, method, url, body, headers))  # type: ignore[arg-type]
    return Sent(response, response.status_code, content, error, start_time, response_time, len(content))


def _urllib_request(agent: UserAgent, method: str, url: str, body: bytes, headers: Mapping[str, str]) -> CompatRequest:
    """The request as the cookie jar wants it (what the user agent's urlopen builds)."""
    merged = agent.default_headers.copy()
    merged.update(headers)
    return _make_request(url, method, headers=merged, payload=body, request_type=agent.request_type)


def report(session: FastHttpSession, sent: Sent, method: str, name: str, url: str, context: dict, exception: BaseException | None) -> None:
    """Fire Locust's `request` event once, with FastHttpSession.request's arguments."""
    session.request_event.fire(
        request_type=method,
        name=name,
        context=context,
        response=sent.response,
        exception=exception,
        start_time=sent.start_time,
        url=url,
        response_length=sent.response_length,
        response_time=sent.response_time,
    )
