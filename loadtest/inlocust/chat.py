"""One customer's conversation, sent through a Locust user's HTTP client.

    with client.conversation() as conversation:      # create
        for message in conversation.turns():         # stops on end_conversation / handoff / max turns
            user.wait()                              # think time
            conversation.respond(message)
                                                      # close, always, also when the test stops

Every request carries a Locust `context` {user, region, variant, endpoint, conversation_id, turn,
error_kind} that the recorder turns into a row of requests.csv; every conversation ends as a
row of conversations.csv. Requests go out through `transport` (the user's connection pool,
one `request` event each, as Locust's FastHttpSession reports them).
"""

from __future__ import annotations

import itertools
import json
import random
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Iterator

import gevent
from gevent import GreenletExit
from geventhttpclient import client as _geventhttpclient
from locust.exception import CatchResponseError, StopUser

from loadtest import api, config, safety, tls
from loadtest.config import load_corpus
from loadtest.inlocust import transport
from loadtest.inlocust.arrivals import Stopped

try:  # orjson: about 3x faster JSON on the generator's hot path (a declared dependency)
    from orjson import dumps, loads
except ImportError:  # pragma: no cover - an install without it still works
    dumps, loads = json.dumps, json.loads  # type: ignore[assignment]  # str, not bytes: accepted where used

if TYPE_CHECKING:
    from loadtest.inlocust.arrivals import Arrivals
    from loadtest.inlocust.live import LiveStats
    from loadtest.inlocust.recorder import Recorder


def record_every_try() -> None:
    """Make geventhttpclient send each request once: every try is its own row.

    Below Locust's `max_retries = 0`, geventhttpclient's `HTTPClient.request` silently sends
    an idempotent request again (close is a PUT) when the connection breaks after it was
    sent; only the last try reaches Locust's request event, so a reset close would vanish and
    the retry's latency would pose as the only one. With this, a reset is a `connection`
    failure row whatever the method, as it already was for POST (create, respond).
    The knob is the module's one policy function (RFC 9110 idempotent-retry check).
    """
    if not hasattr(_geventhttpclient, "_may_retry_after_send_error"):
        raise RuntimeError("geventhttpclient changed: cannot turn off its hidden retries of PUT; pin geventhttpclient to a version loadtest supports")
    _geventhttpclient._may_retry_after_send_error = lambda method: False


record_every_try()


def request_name(region: str, variant: str, endpoint: str) -> str:
    """The name in Locust's stats and web UI: region and variant stay separable."""
    return " · ".join(p for p in (region, variant, endpoint) if p)


class Rotation:
    """Smooth weighted round-robin over (region, variant): every combination shows up early
    and in proportion, even with a handful of users (random choice would leave gaps)."""

    def __init__(self, regions: dict[str, float], variants: dict[str, float]):
        variants = variants or {"": 1.0}
        self.items = [(r, v) for r in regions for v in variants]
        self.weights = [regions[r] * variants[v] for r, v in self.items]
        self.current = [0.0] * len(self.items)
        self.total = sum(self.weights)

    def next(self) -> tuple[str, str]:
        if len(self.items) == 1:
            return self.items[0]
        for i, w in enumerate(self.weights):
            self.current[i] += w
        best = max(range(len(self.items)), key=self.current.__getitem__)
        self.current[best] -= self.total
        return self.items[best]


class RateLimiter:
    """Caps requests/s across all users of this process (a schedule of evenly spaced slots)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next_slot = time.monotonic()

    def wait(self) -> None:
        now = time.monotonic()
        slot = max(self.next_slot, now)
        self.next_slot = slot + self.interval
        if slot > now:
            gevent.sleep(slot - now)


# Greenlet → TLS handshake time (ms) of the connection it just opened; popped after each request.
_handshakes: dict = {}


def ssl_context_factory(policy: tls.Policy) -> Callable[..., Any]:
    """For FastHttpUser.ssl_context_factory: one context per process for `policy`, whose
    handshakes are timed so that each new TLS connection can be recorded apart."""
    import gevent.ssl  # the patched ssl module of a Locust process

    class TimedContext(gevent.ssl.SSLContext):
        def wrap_socket(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            sock = super().wrap_socket(*args, **kwargs)
            _handshakes[gevent.getcurrent()] = (time.perf_counter() - started) * 1000.0
            return sock

    context = policy.context(TimedContext)
    # geventhttpclient calls it with cafile=… (its own default store): the policy decides instead.
    return lambda *args, **kwargs: context


def root_cause(error: BaseException | None) -> BaseException | None:
    """geventhttpclient wraps socket errors (RetriesExceeded(original=…)); unwrap them."""
    while error is not None:
        original = getattr(error, "original", None)
        if not isinstance(original, BaseException):
            break
        error = original
    return error


def classify_failure(status: int, error: BaseException | None) -> str:
    """error_kind of a failed request (see records.ERROR_KINDS)."""
    error = root_cause(error)
    if status == 429:
        return "rate_limited"
    if status >= 300:  # redirects are not followed (transport)
        return "http"
    if error is None:
        return "schema"
    if isinstance(error, (TimeoutError, socket.timeout, gevent.Timeout)):
        return "timeout"
    if status or isinstance(error, (ConnectionError, OSError)) or "connection" in type(error).__name__.lower():
        return "connection"  # (with a status: the reply broke off after its headers)
    return "other"


def _error_message(body: bytes | None, limit: int = 200) -> str:
    """The message of a JSON error body, or the start of the body."""
    if not body:
        return ""
    try:
        parsed = json.loads(body)
        err = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        text = err.get("message", json.dumps(err)) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        text = body[:limit].decode("utf-8", "replace")
    return text[:limit]


def _retry_after(resp: Any) -> float:
    """Seconds from a Retry-After header (delta-seconds form); 1 s when absent or unreadable."""
    try:
        return max(float(resp.headers.get("Retry-After", 1)), 0.0)
    except (TypeError, ValueError, AttributeError):
        return 1.0


MAX_RETRY_AFTER_S = 30.0


@dataclass
class Outcome:
    ok: bool
    reply: api.Reply | None = None
    kind: str = ""
    failure: CatchResponseError | None = None  # what Locust's request event gets as `exception`


class RunContext:
    """Everything users need for one test: parsed settings, URLs, credentials, recorder."""

    def __init__(self, options: Any, run_dir: Path | None, recorder: Recorder | None, live: LiveStats) -> None:
        values = {s.name: getattr(options, s.name, s.default) for s in config.SETTINGS if s.locust}
        self.scenario = config.resolve(flags=values, environ={})
        s = self.scenario
        self.api_key, self.token = safety.credentials(required=s.target == "real")
        self.redact = safety.redactor(self.api_key, self.token)
        self.run_dir = run_dir
        self.recorder = recorder
        self.live = live
        self.turns = s.turns
        self.retry_429 = s.retry_429
        self.think_time = s.think_time
        self.corpus = load_corpus(s.corpus)
        self.integration_attributes = s.integration_attributes or None
        self.rotation = Rotation(s.regions, s.variants)
        max_rps = s.max_rps or (safety.REAL_TARGET_DEFAULT_MAX_RPS if s.target == "real" else 0)
        self.rate_limiter = RateLimiter(max_rps) if max_rps else None
        self.arrivals: Arrivals | None = None  # set when the open model is on
        self.halted = False  # a write failed: users send nothing more
        self.forward_live = False  # workers forward live samples to the master
        self.base_urls = config.base_urls(s)
        safety.check_target(s.target, self.base_urls, s.yes)
        self.tls = config.tls_policy(s)
        self.new_connection_per_conversation = s.connections == "per-conversation"
        # TLS handshakes are timed and recorded apart (connections.csv) when any host is HTTPS.
        self.time_handshakes = any(url.startswith("https:") for url in self.base_urls.values())
        # (region, variant, endpoint) → (method, absolute URL, name in Locust's stats, parsed URL), made once
        self._requests: dict[tuple[str, str, str], tuple[str, str, str, transport.Target]] = {}
        for r, base in self.base_urls.items():
            for v in s.variants or {"": 1.0}:
                for e in api.ENDPOINTS:
                    url = base + api.path(e, s.api_version, s.account, s.project)
                    self._requests[(r, v, e)] = (api.METHODS[e], url, request_name(r, v, e), transport.target(url))

    def request_line(self, region: str, variant: str, endpoint: str) -> tuple[str, str, str]:
        """Method, absolute URL and Locust stats name of one call."""
        return self.call_line(region, variant, endpoint)[:3]

    def call_line(self, region: str, variant: str, endpoint: str) -> tuple[str, str, str, transport.Target]:
        """request_line and the parsed URL (one dict lookup per request)."""
        return self._requests[(region, variant, endpoint)]

    def connection_opened(self, context: dict, handshake_ms: float) -> None:
        """A request that opened a new TLS connection: its handshake, recorded apart."""
        if self.recorder:
            self.recorder.connection(context, handshake_ms)

    def conversation_ended(self, **row: Any) -> None:
        if self.recorder:
            self.recorder.conversation(**row)
        self.live.add_conversation(row["ended_by"], forward=self.forward_live)


class ChatClient:
    """Per user: URLs, headers and bodies for the three calls, validated replies, tagged rows."""

    def __init__(self, user: Any, run: "RunContext") -> None:
        self.user = user
        self.run = run
        self.session = user.client  # the user's FastHttpSession: its connection pool and request event
        self.headers = transport.with_accept_encoding(api.headers(run.api_key, run.token))
        self.in_conversation = False
        if run.arrivals:
            run.arrivals.join()

    def conversation(self) -> "Conversation":
        """The next conversation: when it is due (open model) or right away (closed model)."""
        if self.run.arrivals:
            try:
                ticket = self.run.arrivals.take()
            except Stopped:  # the test is stopping: no conversation will come
                raise StopUser() from None
            return Conversation(self, ticket.region, ticket.variant)
        region, variant = self.run.rotation.next()
        return Conversation(self, region, variant)

    def think_time(self) -> float:
        """Between turns; between conversations too, unless arrivals are scheduled."""
        if self.run.arrivals and not self.in_conversation:
            return 0.0
        return random.uniform(*self.run.think_time)

    def think(self) -> None:
        """Pause between turns, then end the conversation if the test is stopping.

        Not Locust's `wait()`: a user stopped while waiting is killed asynchronously, and the
        kill can land in the next request, leaving it unrecorded. Sleeping while 'running'
        lets Locust stop the user gracefully (within --stop-timeout) between requests."""
        pause = self.think_time()
        if pause > 0:
            gevent.sleep(pause)
        if self.user._state == "stopping":  # locust.user.task.LOCUST_STATE_STOPPING
            raise StopUser()

    def call(self, endpoint: str, region: str, variant: str, body: dict, conversation_id: str, turn: int) -> Outcome:
        """Send one call; a 429 is retried after its Retry-After when --retry-429 allows.
        Every attempt is its own row: retries are never hidden."""
        retries = self.run.retry_429
        while True:
            outcome, retry_after = self._send(endpoint, region, variant, body, conversation_id, turn)
            if outcome.kind != "rate_limited" or retries <= 0:
                return outcome
            retries -= 1
            gevent.sleep(min(retry_after, MAX_RETRY_AFTER_S))

    def _send(self, endpoint: str, region: str, variant: str, body: dict, conversation_id: str, turn: int) -> tuple[Outcome, float]:
        run = self.run
        if run.halted:  # a write of the run folder failed: nothing more could be recorded
            raise StopUser()
        if run.rate_limiter:
            run.rate_limiter.wait()
        # Locust's merge: a new dict, the user's context() first
        context = dict(self.user.context(), region=region, variant=variant, endpoint=endpoint, conversation_id=conversation_id, turn=turn, error_kind="")
        method, url, name, where = run.call_line(region, variant, endpoint)
        sent = transport.exchange(self.session, method, url, where, dumps(body), self.headers)
        outcome, retry_after = self._judge(sent, endpoint, conversation_id, context)
        transport.report(self.session, sent, method, name, url, context, outcome.failure)
        if run.time_handshakes:
            handshake_ms = _handshakes.pop(gevent.getcurrent(), None)
            if handshake_ms is not None:  # the row's context, with the user and a new id
                run.connection_opened(context, handshake_ms)
        return outcome, retry_after

    def _judge(self, sent: transport.Sent, endpoint: str, conversation_id: str, context: dict) -> tuple[Outcome, float]:
        """The outcome of one exchange: a validated reply, or a failure of its kind (its
        error_kind written into the row's context)."""
        status, error = sent.status, sent.error
        if status == 200 and error is None:
            try:
                reply = api.parse_reply(endpoint, loads(sent.content))
            except ValueError as e:  # SchemaError, or JSON that does not parse
                message = str(e) if isinstance(e, api.SchemaError) else f"{endpoint}: body is not JSON"
                return self._fail(context, "schema", message), 0.0
            if reply is not None and endpoint != "create" and reply.conversation_id != conversation_id:
                return self._fail(context, "schema", f"{endpoint}: conversation_id changed"), 0.0
            if endpoint == "create":  # the row of the create carries the new id
                assert reply is not None  # parse_reply returns a Reply for every endpoint but close
                context["conversation_id"] = reply.conversation_id
            return Outcome(True, reply), 0.0
        kind = classify_failure(status, error)
        if error is None and 300 <= status < 400:
            headers = sent.response.headers
            location = headers.get("location", "?") if headers is not None else "?"
            message = f"HTTP {status}: redirect to {location} (not followed: use that URL in --base-urls)"
        elif error is None:
            message = f"HTTP {status}: {_error_message(sent.content)}"
        else:
            cause = root_cause(error)
            message = tls.explain(cause) if cause else "no response"
        return self._fail(context, kind, message), _retry_after(sent.response)

    def _fail(self, context: dict, kind: str, message: str) -> Outcome:
        context["error_kind"] = kind
        return Outcome(False, kind=kind, failure=CatchResponseError(self.run.redact(message)))


class Conversation:
    """create on enter, close on exit (always, when created), one row in conversations.csv."""

    def __init__(self, client: ChatClient, region: str, variant: str):
        self.client = client
        self.region = region
        self.variant = variant
        self.id = ""
        self.turn = 0
        self.planned_turns = random.randint(*client.run.turns)
        self.ended_by = ""
        self.started = 0.0

    def __enter__(self) -> "Conversation":
        self.client.in_conversation = True
        self.started = time.time()
        attributes = self.client.run.integration_attributes
        outcome = self._call("create", api.create_body(self.variant or None, attributes))
        if outcome.ok:
            assert outcome.reply is not None  # a create that succeeded has its reply
            self.id = outcome.reply.conversation_id
        else:
            self.ended_by = "error"
        return self

    def turns(self) -> Iterator[str]:
        """Messages to send, until the agent or the plan ends the conversation."""
        corpus = self.client.run.corpus
        while not self.ended_by:
            if self.turn >= self.planned_turns:
                self.ended_by = "max_turns"
                return
            yield random.choice(corpus)

    def respond(self, message: str) -> None:
        self.turn += 1
        outcome = self._call("respond", api.respond_body(self.id, message))
        if not outcome.ok:
            self.ended_by = "error"
            return
        assert outcome.reply is not None  # a respond that succeeded has its reply
        if outcome.reply.handoff is not None:
            self.ended_by = "handoff"
        elif outcome.reply.end_conversation:
            self.ended_by = "end_conversation"

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.client.in_conversation = False
        if exc_type is not None and not self.ended_by:
            # The test is stopping (StopUser / GreenletExit) or the user code broke.

            self.ended_by = "stopped" if issubclass(exc_type, (StopUser, GreenletExit)) else "error"
        closed = False
        if self.id:
            closed = self._call("close", api.close_body(self.id)).ok
        if self.client.run.new_connection_per_conversation:
            # The customer leaves: the next one arrives on a new connection (and TLS session).
            self.client.user.client.client.clientpool.close()
        ok = closed and self.ended_by in ("end_conversation", "handoff", "max_turns")
        ended = time.time()
        self.client.run.conversation_ended(
            conversation_id=self.id,
            region=self.region,
            variant=self.variant,
            started=self.started,
            ended=ended,
            turns=self.turn,
            ended_by=self.ended_by or "error",
            ok=ok,
        )

    def _call(self, endpoint: str, body: dict) -> Outcome:
        turn = 0 if endpoint == "create" else self.turn if endpoint == "respond" else self.turn + 1
        return self.client.call(endpoint, self.region, self.variant, body, self.id, turn)


_user_ids = itertools.count(1)


def next_user_id() -> int:
    return next(_user_ids)
