"""Serving the mock: the aiohttp app factory, the async server, and the in-thread server.

Three ways in, smallest first::

    # 1. an aiohttp Application for one region (embed it, or use aiohttp's TestClient)
    app = make_app(MockConfig(latency_scale=0), region="uk")

    # 2. async: every region on its own port, in the running loop
    async with AsyncMockServer(MockConfig(latency_scale=0)) as mock:
        mock.base_urls["uk"]        # "http://127.0.0.1:40123"

    # 3. sync (tests, scripts): the same, its loop in a background thread
    with MockServer(MockConfig(latency_scale=0)) as mock:
        httpx.post(mock.base_urls["uk"] + api.path("create"), ...)
        mock.stats("uk")["open_conversations"]

Regions are served on ``port, port+1, ...`` in the order given (default: the order of
:data:`loadtest.api.REGIONS`: us, uk, eu, self-serve); ``port=0`` gives each a free port.
The HTTP front end is ``config.engine``: "fast" (:mod:`loadtest.mock.protocol`, default)
or "aiohttp" (:func:`make_app`); both serve the same :class:`RegionService`. Every port also
answers ``GET /_mock/stats``. Binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from ssl import SSLContext
from typing import AsyncIterator, Callable, Iterable, TypeVar

from aiohttp import web

try:
    import uvloop
except ImportError:  # pragma: no cover - not on Windows; asyncio's loop then
    uvloop = None  # type: ignore[assignment]  # the module is absent

from loadtest import api
from loadtest.mock.config import MockConfig
from loadtest.mock.protocol import KEEPALIVE_S, Clock, protocol_factory
from loadtest.mock.service import RESET, RegionService

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_KEY = web.AppKey("mock_service", RegionService)
HOUSEKEEPING_S = 1.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A uvloop loop (measured faster for the mock, ``benchmarks/bench_mock.py --loop``) when
    uvloop is installed (not on Windows), else asyncio's default."""
    return asyncio.new_event_loop() if uvloop is None else uvloop.new_event_loop()


# ---------------------------------------------------------------------------- aiohttp front end


async def _read_bounded(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds ``limit`` bytes (never reads more than limit + 64 KiB)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(65536)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)


async def _aiohttp_handler(request: web.Request) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    length = request.content_length
    body = None if length is not None and length > service.max_body else await _read_bounded(request, service.max_body)
    if body is None:
        result = service.too_large()
    else:
        headers = request.headers
        outcome = service.handle(
            request.method, request.raw_path, headers.get("Content-Type"), headers.get(api.API_KEY_HEADER), headers.get(api.TOKEN_HEADER), body
        )
        result = outcome if isinstance(outcome, tuple) else await outcome
    status, payload, extra, action = result
    if action == RESET:
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError()  # nothing more to write; aiohttp drops the request
    response = web.Response(status=status, body=payload, content_type="application/json")
    for name, value in extra:
        response.headers[name] = value
    if body is None:
        response.force_close()
    return response


def make_app(config: MockConfig | None = None, region: str = "us", service: RegionService | None = None) -> web.Application:
    """An aiohttp Application serving one region of the mock (catch-all route)."""
    service = service or RegionService(region, config or MockConfig())
    app = web.Application(client_max_size=service.max_body + 1)
    app[SERVICE_KEY] = service
    app.router.add_route("*", "/{tail:.*}", _aiohttp_handler)

    async def housekeeping(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(HOUSEKEEPING_S)
                service.housekeeping()

        task = asyncio.ensure_future(loop())
        yield
        task.cancel()

    app.cleanup_ctx.append(housekeeping)
    return app


def _counting(service: RegionService, factory: Callable[[], asyncio.BaseProtocol]) -> Callable[[], asyncio.BaseProtocol]:
    """A protocol factory that counts accepted connections (over TLS: before the handshake)."""

    def counted() -> asyncio.BaseProtocol:
        service.connections += 1
        return factory()

    return counted


# ---------------------------------------------------------------------------- async server


class AsyncMockServer:
    """Serve regions of the mock on loopback ports, in the running event loop."""

    def __init__(
        self, config: MockConfig | None = None, regions: Iterable[str] | None = None, host: str = "127.0.0.1", port: int = 0, ssl: SSLContext | None = None
    ) -> None:
        self.config = config or MockConfig()
        self.ssl = ssl  # HTTPS when given (see loadtest.mock.tls)
        self.regions = list(regions) if regions is not None else list(api.REGIONS)
        unknown = [r for r in self.regions if r not in self.config.regions]
        if unknown or not self.regions:
            raise ValueError(f"unknown region(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(api.REGIONS)}")
        self.host = host
        self.port = port
        self.services: dict[str, RegionService] = {r: RegionService(r, self.config) for r in self.regions}
        self.base_urls: dict[str, str] = {}
        self.ports: dict[str, int] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._runners: list[web.AppRunner] = []
        self._connections: set = set()
        self._clock = Clock()
        self._tick: asyncio.TimerHandle | None = None

    async def start(self) -> "AsyncMockServer":
        loop = asyncio.get_running_loop()
        try:
            for i, region in enumerate(self.regions):
                port = self.port + i if self.port else 0
                service = self.services[region]
                if self.config.engine == "aiohttp":
                    runner = web.AppRunner(make_app(service=service), access_log=None, handle_signals=False, handler_cancellation=True)
                    await runner.setup()
                    self._runners.append(runner)
                    assert runner.server is not None, "set by runner.setup()"
                    factory = _counting(service, runner.server)
                else:
                    factory = _counting(service, protocol_factory(service, self._clock, self._connections))
                server = await loop.create_server(factory, self.host, port, backlog=2048, reuse_address=True, ssl=self.ssl)
                self._servers.append(server)
                bound = server.sockets[0].getsockname()[1]
                self.ports[region] = bound
                host = f"[{self.host}]" if ":" in self.host else self.host
                scheme = "https" if self.ssl is not None else "http"
                self.base_urls[region] = f"{scheme}://{host}:{bound}"
        except BaseException:
            await self.stop()
            raise
        self._tick = loop.call_later(HOUSEKEEPING_S, self._housekeeping)
        return self

    def _housekeeping(self) -> None:
        clock = self._clock
        clock.tick()
        for service in self.services.values():
            service.housekeeping()
        for conn in list(self._connections):
            if conn.idle_for(clock.now) > KEEPALIVE_S:
                conn._close()
        self._tick = asyncio.get_running_loop().call_later(HOUSEKEEPING_S, self._housekeeping)

    async def stop(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        for server in self._servers:
            server.close()
        for conn in list(self._connections):
            conn._abort()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()

    @property
    def open_connections(self) -> int:
        """Client connections open right now, over every region."""
        return len(self._connections) + sum(len(r.server.connections) for r in self._runners if r.server)

    def stats(self, region: str | None = None) -> dict:
        """One region's stats, or {region: stats} for all (call in the server's loop)."""
        if region is not None:
            return self.services[region].stats()
        return {r: s.stats() for r, s in self.services.items()}

    async def __aenter__(self) -> "AsyncMockServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ---------------------------------------------------------------------------- in-thread server


class MockServer:
    """The async server with its own event loop (uvloop when available) in a daemon thread.

    ``with MockServer(config) as mock:`` starts it and waits until every port listens;
    ``mock.base_urls``/``mock.ports`` say where; ``mock.stats(region)`` reads counters safely
    from the calling thread.

    Not for a gevent-patched process (a Locust process): its "thread" would be a greenlet
    and the loop would starve the hub. There, run ``loadtest mock --ready-file`` as a child
    process instead, as the runner does.
    """

    def __init__(
        self, config: MockConfig | None = None, regions: Iterable[str] | None = None, host: str = "127.0.0.1", port: int = 0, ssl: SSLContext | None = None
    ) -> None:
        self._server = AsyncMockServer(config, regions, host, port, ssl)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> MockConfig:
        return self._server.config

    @property
    def base_urls(self) -> dict[str, str]:
        return self._server.base_urls

    @property
    def ports(self) -> dict[str, int]:
        return self._server.ports

    @property
    def services(self) -> dict[str, RegionService]:
        """The live services (touch only from the server thread, e.g. via call())."""
        return self._server.services

    def start(self, timeout: float = 10.0) -> "MockServer":
        if self._thread is not None:
            raise RuntimeError("MockServer already started")
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = self._loop = new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._server.start())
            except BaseException as e:  # noqa: BLE001 - handed to the starting thread
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._server.stop())
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name="mock-chat-api", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError(f"mock server did not start within {timeout}s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def call(self, fn: Callable[..., T], *args: object, timeout: float = 10.0) -> T:
        """Run ``fn(*args)`` in the server's loop thread and return its result."""

        async def wrapped() -> T:
            return fn(*args)

        if self._loop is None:
            raise RuntimeError("the mock server is not running")
        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result(timeout)

    def stats(self, region: str | None = None) -> dict:
        """Like GET /_mock/stats: one region's counters, or {region: counters} for all."""
        return self.call(self._server.stats, region)

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> "MockServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
