"""RegionService: one region of the mock Chat API, independent of any HTTP library.

The HTTP front ends (:mod:`loadtest.mock.protocol`, :mod:`loadtest.mock.server`) parse a
request and call::

    result = service.handle(method, target, content_type, api_key, token, body)

``result`` is either a finished :data:`Result` tuple ``(status, body, headers, action)`` —
the common case with ``latency_scale`` 0, no allocation of a task — or a coroutine to await
for one (service time, capacity queue, held requests). ``action`` is :data:`SEND` (write the
response) or :data:`RESET` (abort the connection without a response).

The decisions the reference leaves open, checked in this order:

==== =========================================================================================
413  body over ``max_body`` (default 64 KiB): the front ends check Content-Length, or count a
     chunked body while reading it, before anything else — never reading unbounded
404  unknown path (anything but ``/{version}/{account}/{project}/chat/{create|respond|close}``
     and the admin ``GET /_mock/stats``), or a version/account/project not configured
405  wrong method, with ``Allow``
401  missing or wrong ``X-API-KEY`` / ``X-TOKEN`` (header names are case-insensitive, as in
     HTTP; values compared in constant time)
415  ``Content-Type`` is not ``application/json`` (parameters like charset are fine)
400  malformed JSON, a body that is not a JSON object, a missing ``conversation_id``
     (an empty body counts as ``{}``: fine for create)
422  wrong field types (``variant_id``/``conversation_id``/``message`` not a string,
     ``integration_attributes`` not an object), an unknown ``variant_id`` when the config is
     ``strict_variants`` (the message names the known ones; by default an unknown variant is
     served with the base profile, as a real project serves any variant it has), and
     ``variant_id`` on respond or close: **"variant_id is only accepted
     on create"** — a variant is chosen once and cannot change during a conversation
404  unknown, closed, expired or evicted conversation (respond or close after close → 404;
     the message says which when the id was seen recently)
429  injected rate-limit fault (``Retry-After``), or capacity overload when configured so
503  capacity overload (queue full), or an injected fault; 500/502 injected faults
==== =========================================================================================

Every error body is JSON: ``{"error": {"code": "not_found", "message": "..."}}``. Unknown
extra fields in a body are ignored. Faults are drawn after validation and the conversation
lookup (a bad request gets its 4xx, never a fault); see :mod:`loadtest.mock.faults` for
what each kind does. A conversation's state changes when its answer is ready, after the
service time; a respond to a conversation closed meanwhile answers 404.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import random
import time
from collections import deque
from typing import Any, Callable, Coroutine, Generator, Union

import numpy as np

from analysis.percentiles import percentiles
from loadtest import api
from loadtest.mock.agent import Agent
from loadtest.mock.config import MockConfig
from loadtest.mock.faults import Fault, FaultTable
from loadtest.mock.profiles import Capacity, Overloaded, Sampler
from loadtest.mock.state import ConversationStore

SAMPLED_KEEP = 100_000  # service times kept per endpoint for /_mock/stats


def _summary(seconds: deque) -> dict:
    """count and median (ms) of the service times drawn (before faults or queueing)."""
    if not seconds:
        return {"count": 0, "p50": None}
    (p50,) = percentiles(np.fromiter(seconds, dtype=float, count=len(seconds)) * 1000.0, (50,))
    return {"count": len(seconds), "p50": round(float(p50), 3)}


try:  # orjson is ~3x faster; the stdlib is the fallback
    import orjson

    _dumps = orjson.dumps
    _loads = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment

    def _dumps(obj: Any) -> bytes:  # type: ignore[misc]  # orjson's signature, simplified
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads  # type: ignore[assignment]

SEND = 0
RESET = 1

Headers = tuple  # of (name, value) pairs
Result = tuple  # (status: int, body: bytes, headers: Headers, action: int)


class Hold:
    """An injected timeout: awaited until the client gives up (a front end cancels it when the
    client closes its side) or its time runs out. Marked so that front ends can tell it from
    an answer in service, which a half-closed client still gets."""

    __slots__ = ("_coro",)

    def __init__(self, coro: Coroutine[Any, Any, Result]) -> None:
        self._coro = coro

    def __await__(self) -> Generator[Any, None, Result]:
        return self._coro.__await__()


Outcome = Union[Result, Coroutine[Any, Any, Result], Hold]

STATS_PATH = "/_mock/stats"
_JSON_TYPES = {"application/json"}
_EXPECTED_PATH = "/{version}/{account}/{project}/chat/{create|respond|close}"
_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_field",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    505: "http_version_not_supported",
}
_CLOSE_OK = b'{"success":true}'
_RESET_RESULT: Result = (0, b"", (), RESET)


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    return _dumps({"error": {"code": code or _ERROR_CODES.get(status, "error"), "message": message}})


def retry_after(seconds: float) -> str:
    """A Retry-After value: HTTP wants whole seconds, so round up."""
    return str(max(0, math.ceil(seconds)))


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}.get(
        type(value), type(value).__name__
    )


class RegionService:
    """The mock API of one region: routing, validation, state, agent, latency, faults, stats."""

    def __init__(self, region: str, config: MockConfig | None = None) -> None:
        config = config or MockConfig()
        if region not in config.regions:
            raise ValueError(f"unknown region {region!r}; known: {', '.join(config.regions)}")
        self.region = region
        self.config = config
        self.max_body = config.max_body
        seed = config.seed

        def rng(purpose: str) -> random.Random:
            return random.Random(None if seed is None else f"{seed}/{region}/{purpose}")

        profile = config.regions[region]
        self.variants = dict(config.variants)
        self.sampler = Sampler(profile, self.variants, config.latency_scale, config.turn_growth, rng("latency"))
        self.capacity = Capacity(profile.slots, profile.queue_limit)
        self.faults = FaultTable(config.faults, region, rng("faults"))
        self.agent = Agent(rng("agent"), self.variants, config.end_after, config.end_probability, config.handoff_rate)
        self.store = ConversationStore(config.idle_timeout, config.max_conversations)
        self._ids = rng("ids").getrandbits
        key, token = config.credentials()
        self._key, self._token = key.encode(), token.encode()
        self._allowed = (config.versions, config.accounts, config.projects)
        self._restricted = any(x is not None for x in self._allowed)
        self._known_variants = ", ".join(sorted(self.variants)) or "(none)"

        self.started = time.monotonic()
        self.requests = {"create": 0, "respond": 0, "close": 0, "other": 0}
        self.fault_counts: dict[str, dict[str, int]] = {e: {} for e in api.ENDPOINTS}
        self.statuses: dict[int, int] = {}
        self.held = 0
        self.resets = 0
        self.connections = 0  # accepted by the server (counted by its front end)
        # The service times drawn, per endpoint (the newest SAMPLED_KEEP): tests compare what
        # a client measured with what the mock meant to take, instead of with the profile.
        self.sampled: dict[str, deque[float]] = {e: deque(maxlen=SAMPLED_KEEP) for e in api.ENDPOINTS}

        self._overload: Result = self._make_error(
            config.overload_status,
            "region is over capacity; retry later",
            "overloaded",
            (("Retry-After", retry_after(config.overload_retry_after)),) if config.overload_status == 429 else (),
        )
        self._e401_missing = self._make_error(401, f"missing {api.API_KEY_HEADER} or {api.TOKEN_HEADER} header")
        self._e401_wrong = self._make_error(401, f"invalid {api.API_KEY_HEADER} or {api.TOKEN_HEADER}")
        self._e415 = self._make_error(415, f"Content-Type must be {api.CONTENT_TYPE}")
        self._e405 = {op: self._make_error(405, f"{op} takes {m}", headers=(("Allow", m),)) for op, m in api.METHODS.items()}

    # ---------------------------------------------------------------- results

    @staticmethod
    def _make_error(status: int, message: str, code: str | None = None, headers: Headers = ()) -> Result:
        return (status, error_body(status, message, code), headers, SEND)

    def _count(self, result: Result) -> Result:
        status = result[0]
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return result

    def error(self, status: int, message: str, code: str | None = None, headers: Headers = ()) -> Result:
        """A counted JSON error result (front ends use it for 400/413/431 at the HTTP level)."""
        return self._count((status, error_body(status, message, code), headers, SEND))

    def too_large(self) -> Result:
        return self.error(413, f"request body exceeds {self.max_body} bytes")

    # ---------------------------------------------------------------- routing

    def handle(self, method: str, target: str, content_type: str | None, api_key: str | None, token: str | None, body: bytes) -> Outcome:
        """Answer one request: a Result now, or a coroutine that returns one."""
        path = target.partition("?")[0] if "?" in target else target
        parts = path.split("/")
        if len(parts) != 6 or parts[4] != "chat" or parts[0] or parts[5] not in api.METHODS or not (parts[1] and parts[2] and parts[3]):
            return self._other(method, path)
        op = parts[5]
        if self._restricted:
            for segment, allowed, name in zip(parts[1:4], self._allowed, ("version", "account", "project")):
                if allowed is not None and segment not in allowed:
                    self.requests["other"] += 1
                    what = "API version" if name == "version" else name
                    return self.error(404, f"unknown {what} {segment[:100]!r}; this API serves {', '.join(allowed)}")
        self.requests[op] += 1
        if method != api.METHODS[op]:
            return self._count(self._e405[op])
        if api_key is None or token is None:
            return self._count(self._e401_missing)
        if not (
            hmac.compare_digest(api_key.encode("utf-8", "surrogatepass"), self._key)
            and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token)
        ):
            return self._count(self._e401_wrong)
        if content_type != api.CONTENT_TYPE and (content_type is None or content_type.partition(";")[0].strip().lower() not in _JSON_TYPES):
            return self._count(self._e415)
        if len(body) > self.max_body:
            return self.too_large()
        if body:
            try:
                payload = _loads(body)
            except (ValueError, RecursionError):
                return self.error(400, "body is not valid JSON")
            if type(payload) is not dict:
                return self.error(400, f"body must be a JSON object, got {_type_name(payload)}")
        else:
            payload = {}
        if op == "respond":
            return self._respond(payload)
        if op == "create":
            return self._create(payload)
        return self._close(payload)

    def _other(self, method: str, path: str) -> Result:
        self.requests["other"] += 1
        if path == STATS_PATH:
            if method != "GET":
                return self.error(405, "stats takes GET", headers=(("Allow", "GET"),))
            return self._count((200, _dumps(self.stats()), (), SEND))
        return self.error(404, f"no such path {path[:200]!r}; expected {_EXPECTED_PATH}")

    # ---------------------------------------------------------------- endpoints

    def _create(self, payload: dict) -> Outcome:
        variant = payload.get("variant_id")
        if variant is not None:
            if type(variant) is not str:
                return self.error(422, f"variant_id must be a string, got {_type_name(variant)}")
            if variant not in self.variants:
                if self.config.strict_variants:
                    return self.error(422, f"unknown variant_id {variant[:100]!r}; known: {self._known_variants}")
                variant = None  # served with the base profile: latency factor 1, base brand
        attrs = payload.get("integration_attributes")
        if attrs is not None and type(attrs) is not dict:
            return self.error(422, f"integration_attributes must be an object, got {_type_name(attrs)}")
        delay = self.sampler.sample("create", variant)
        return self._serve("create", delay, self._do_create, (variant, attrs))

    def _do_create(self, variant: str | None, attrs: dict | None) -> Result:
        conversation_id = f"{self.region}-{self._ids(96):024x}"
        self.store.open(conversation_id, variant, attrs, time.monotonic())
        return self._count((200, _dumps({"conversation_id": conversation_id, "response": self.agent.greeting(variant)}), (), SEND))

    def _conversation_id(self, payload: dict, op: str) -> str | Result:
        if "variant_id" in payload:
            return self.error(422, "variant_id is only accepted on create")
        conversation_id = payload.get("conversation_id")
        if conversation_id is None:
            return self.error(400, f"{op} needs conversation_id")
        if type(conversation_id) is not str:
            return self.error(422, f"conversation_id must be a string, got {_type_name(conversation_id)}")
        return conversation_id

    def _unknown(self, conversation_id: str) -> Result:
        why = self.store.why_gone(conversation_id)
        shown = conversation_id[:100]
        if why:
            return self.error(404, f"conversation {shown!r} is {why}")
        return self.error(404, f"unknown conversation {shown!r} in region {self.region}")

    def _respond(self, payload: dict) -> Outcome:
        conversation_id = self._conversation_id(payload, "respond")
        if isinstance(conversation_id, tuple):
            return conversation_id
        message = payload.get("message")
        if message is not None and type(message) is not str:
            return self.error(422, f"message must be a string, got {_type_name(message)}")
        conv = self.store.peek(conversation_id, time.monotonic())
        if conv is None:
            return self._unknown(conversation_id)
        delay = self.sampler.sample("respond", conv.variant, conv.turn + 1)
        return self._serve("respond", delay, self._do_respond, (conversation_id, message))

    def _do_respond(self, conversation_id: str, message: str | None) -> Result:
        conv = self.store.get(conversation_id, time.monotonic())
        if conv is None:  # closed or expired while this request was in service
            return self._unknown(conversation_id)
        conv.turn += 1
        text, end, handoff = self.agent.reply(conv.turn, conv.variant, message, conv.ended)
        if end:
            conv.ended = True
        body = {"conversation_id": conversation_id, "response": text, "end_conversation": end}
        if handoff is not None:
            body["handoff"] = handoff
        return self._count((200, _dumps(body), (), SEND))

    def _close(self, payload: dict) -> Outcome:
        conversation_id = self._conversation_id(payload, "close")
        if isinstance(conversation_id, tuple):
            return conversation_id
        conv = self.store.peek(conversation_id, time.monotonic())
        if conv is None:
            return self._unknown(conversation_id)
        delay = self.sampler.sample("close", conv.variant)
        return self._serve("close", delay, self._do_close, (conversation_id,))

    def _do_close(self, conversation_id: str) -> Result:
        if not self.store.close(conversation_id):
            return self._unknown(conversation_id)
        return self._count((200, _CLOSE_OK, (), SEND))

    # ---------------------------------------------------------------- service time and faults

    def _serve(self, op: str, delay: float, then: Callable[..., Result], args: tuple) -> Outcome:
        """A valid request's answer: an injected fault if one is drawn, else `then(*args)`,
        at once when there is no service time (no task allocated), or after it."""
        self.sampled[op].append(delay)
        if self.faults:
            fault = self.faults.draw(op)
            if fault is not None:
                return self._fault(fault, op, delay, then, args)
        if delay == 0.0:
            return then(*args)
        return self._later(delay, then, args)

    async def _later(self, delay: float, then: Callable[..., Result], args: tuple) -> Result:
        """Wait for a capacity slot, hold it for the service time, then answer."""
        try:
            async with self.capacity:
                await asyncio.sleep(delay)
                return then(*args)
        except Overloaded:
            return self._count(self._overload)

    def _fault(self, fault: Fault, op: str, delay: float, then: Callable[..., Result], args: tuple) -> Outcome:
        kind = fault.kind
        counts = self.fault_counts[op]
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "spike":
            return self._later(delay + fault.extra_ms / 1000.0, then, args)
        if kind == "503" or kind == "500" or kind == "502":
            return self.error(int(kind), f"injected fault: {kind} on {op}", None)
        if kind == "429":
            return self.error(429, "rate limited; retry later", None, (("Retry-After", retry_after(fault.retry_after)),))
        if kind == "reset":
            self.resets += 1
            return _RESET_RESULT
        if kind == "timeout":
            return Hold(self._hold(fault.hold_s))
        if kind == "malformed":
            return self._later(delay, self._malformed, (op,)) if delay else self._malformed(op)
        return self._later(delay, self._wrong_shape, (op,)) if delay else self._wrong_shape(op)

    async def _hold(self, seconds: float) -> Result:
        """No response: hold until the client gives up (the front end cancels us) or time runs out."""
        self.held += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self.held -= 1
        self.resets += 1
        return _RESET_RESULT

    def _malformed(self, op: str) -> Result:
        return self._count((200, b'{"conversation_id": "' + op.encode() + b'", "response": "Hel', (), SEND))

    def _wrong_shape(self, op: str) -> Result:
        fake = f"{self.region}-{self._ids(96):024x}"
        body = {
            "create": {"conversation_id": fake},
            "respond": {"conversation_id": fake, "response": "Sorry, could you repeat that?"},
            "close": {"closed": True},
        }[op]
        return self._count((200, _dumps(body), (), SEND))

    # ---------------------------------------------------------------- admin

    def housekeeping(self) -> None:
        """Expire idle conversations (the server calls this about once a second)."""
        self.store.sweep(time.monotonic())

    def stats(self) -> dict:
        """The counters served at ``GET /_mock/stats``."""
        self.housekeeping()
        store, capacity = self.store, self.capacity
        return {
            "region": self.region,
            "open_conversations": len(store),
            "created": store.created,
            "closed": store.closed,
            "expired": store.expired,
            "evicted": store.evicted,
            "integration_attributes": {"conversations": store.with_attributes, "pairs": dict(store.attribute_pairs)},
            "in_flight": capacity.in_flight,
            "active": capacity.active,
            "queued": capacity.queued,
            "held": self.held,
            "rejected": capacity.rejected,
            "resets": self.resets,
            "connections": self.connections,
            "service_ms": {op: _summary(times) for op, times in self.sampled.items()},
            "slots": capacity.slots,
            "queue_limit": capacity.queue_limit,
            "requests": dict(self.requests),
            "faults": {op: dict(kinds) for op, kinds in self.fault_counts.items()},
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "uptime_s": round(time.monotonic() - self.started, 3),
            "latency_scale": self.config.latency_scale,
        }
