"""Fault injection for the mock Chat API: spec strings, parsing, and the seeded draw.

A fault spec says which requests misbehave, how, and how often::

    [REGION.]ENDPOINT:KIND:RATE[:PARAM]

    respond:503:0.05                 5 % of responds (every region) answer 503
    uk.create:429:0.1:retry_after=2  10 % of uk creates answer 429 with Retry-After: 2
    *:spike:0.02:2000ms              2 % of all requests take 2000 ms longer
    close:reset:0.01                 1 % of closes: connection aborted, no response

ENDPOINT is create, respond, close or ``*``; REGION one of :data:`loadtest.api.REGIONS`;
RATE a probability (``0.05``) or a percentage (``5%``). KIND is one of:

* ``500`` / ``502`` / ``503``: that status at once, JSON error body.
* ``429``: 429 at once with ``Retry-After`` (whole seconds, rounded up) and a JSON error
  body. PARAM ``retry_after=SECONDS`` (default 1).
* ``spike``: a normal answer, ``extra`` ms later (not scaled by latency_scale). PARAM
  ``2000ms``, ``2s`` or ``extra=2000`` (plain numbers are ms; default 1000 ms).
* ``timeout``: no answer. The request is held until the client gives up (disconnects), at
  most ``hold`` seconds, then the connection is dropped. PARAM ``30s`` or ``hold=30``
  (plain numbers are seconds; default 60 s, at most 600 s).
* ``reset``: the connection is aborted (TCP RST) without a response.
* ``malformed``: 200 after the normal service time; the body is invalid JSON.
* ``shape``: 200 after the normal service time; valid JSON missing a documented field
  (create: ``response``; respond: ``end_conversation``; close: ``success``).

Faults replace the backend: a faulted request never changes conversation state (a faulted
create creates nothing, a faulted close closes nothing), so a client that handles the fault
correctly still leaves no conversation open. ``spike`` is the exception: it only delays.
Faults are drawn only for well-formed requests (to a known conversation, for respond and
close): a bad request gets its 4xx.

Several faults on one endpoint are mutually exclusive outcomes of one uniform draw, so each
fires at exactly its own rate (their rates must add up to at most 1).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Iterable

from loadtest import api

KINDS = ("500", "502", "503", "429", "spike", "timeout", "reset", "malformed", "shape")
ERROR_KINDS = ("500", "502", "503", "429")
ENDPOINT_CHOICES = (*api.ENDPOINTS, "*")
MAX_HOLD_S = 600.0

SYNTAX = "[REGION.]ENDPOINT:KIND:RATE[:PARAM]"


@dataclass(frozen=True)
class Fault:
    """One parsed fault spec. ``region`` None means every region."""

    endpoint: str
    kind: str
    rate: float
    region: str | None = None
    retry_after: float = 1.0  # 429: seconds in Retry-After
    extra_ms: float = 1000.0  # spike: added latency
    hold_s: float = 60.0  # timeout: longest hold before the connection is dropped

    @property
    def spec(self) -> str:
        """The canonical spec string (parses back to an equal Fault)."""
        where = f"{self.region}.{self.endpoint}" if self.region else self.endpoint
        param = {"429": f":retry_after={self.retry_after:g}", "spike": f":{self.extra_ms:g}ms", "timeout": f":{self.hold_s:g}s"}.get(self.kind, "")
        return f"{where}:{self.kind}:{self.rate:g}{param}"

    def applies(self, region: str, endpoint: str) -> bool:
        return (self.region is None or self.region == region) and self.endpoint in ("*", endpoint)


def _bad(spec: str, what: str) -> ValueError:
    return ValueError(f"fault spec {spec!r}: {what} (syntax {SYNTAX}, e.g. respond:503:0.05)")


def _duration(spec: str, text: str, default_unit: str, name: str) -> float:
    """'2000ms', '2s', '2' (in default_unit), optionally 'name=...'; returns default_unit."""
    raw = text
    if "=" in text:
        key, _, text = text.partition("=")
        if key.strip() != name:
            raise _bad(spec, f"unknown parameter {key.strip()!r}; this kind takes {name}=")
    text = text.strip().lower()
    try:
        if text.endswith("ms"):
            value_ms = float(text[:-2])
        elif text.endswith("s"):
            value_ms = float(text[:-1]) * 1000.0
        else:
            value_ms = float(text) * (1.0 if default_unit == "ms" else 1000.0)
    except ValueError:
        raise _bad(spec, f"parameter {raw!r} is not a duration like 2000ms or 2s") from None
    if not value_ms >= 0:
        raise _bad(spec, f"parameter {raw!r} must not be negative")
    return value_ms if default_unit == "ms" else value_ms / 1000.0


def parse_fault(spec: str) -> Fault:
    """Parse ``[REGION.]ENDPOINT:KIND:RATE[:PARAM]``; ValueError names the bad part."""
    if not isinstance(spec, str) or not spec.strip():
        raise _bad(str(spec), "empty spec")
    parts = [p.strip() for p in spec.strip().split(":")]
    if len(parts) not in (3, 4):
        raise _bad(spec, f"expected 3 or 4 ':'-separated parts, got {len(parts)}")
    where, kind, rate_text = parts[:3]
    param = parts[3] if len(parts) == 4 else None

    region = None
    endpoint = where
    if "." in where:
        region, _, endpoint = where.rpartition(".")
        if region not in api.REGIONS:
            raise _bad(spec, f"unknown region {region!r}; choose one of {', '.join(api.REGIONS)}")
    if endpoint not in ENDPOINT_CHOICES:
        raise _bad(spec, f"unknown endpoint {endpoint!r}; choose one of {', '.join(ENDPOINT_CHOICES)}")
    if kind not in KINDS:
        raise _bad(spec, f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    try:
        rate = float(rate_text[:-1]) / 100.0 if rate_text.endswith("%") else float(rate_text)
    except ValueError:
        raise _bad(spec, f"rate {rate_text!r} is not a number like 0.05 or 5%") from None
    if not 0.0 <= rate <= 1.0:
        raise _bad(spec, f"rate {rate_text!r} must be between 0 and 1")

    fault = Fault(endpoint=endpoint, kind=kind, rate=rate, region=region)
    if param is None or param == "":
        return fault
    if kind == "429":
        return replace(fault, retry_after=_duration(spec, param, "s", "retry_after"))
    if kind == "spike":
        return replace(fault, extra_ms=_duration(spec, param, "ms", "extra"))
    if kind == "timeout":
        hold = _duration(spec, param, "s", "hold")
        if not 0 < hold <= MAX_HOLD_S:
            raise _bad(spec, f"hold {param!r} must be between 0 and {MAX_HOLD_S:g}s")
        return replace(fault, hold_s=hold)
    raise _bad(spec, f"kind {kind!r} takes no parameter (got {param!r}); only 429, spike and timeout do")


def parse_faults(specs: Iterable[str | Fault] | str | None) -> tuple[Fault, ...]:
    """Parse many specs (strings or Faults; a single string may hold several, comma-separated)."""
    if specs is None:
        return ()
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    out = []
    for s in specs:
        out.append(s if isinstance(s, Fault) else parse_fault(s))
    return tuple(out)


class FaultTable:
    """The faults of one region, ready for a one-draw-per-request pick.

    ``draw(endpoint)`` returns the Fault that fires for this request, or None.
    """

    def __init__(self, faults: Iterable[Fault], region: str, rng: random.Random) -> None:
        self._random = rng.random
        self._tables: dict[str, tuple[tuple[float, Fault], ...]] = {}
        for endpoint in api.ENDPOINTS:
            cumulative, rows = 0.0, []
            for fault in faults:
                if fault.applies(region, endpoint) and fault.rate > 0:
                    cumulative += fault.rate
                    rows.append((cumulative, fault))
            if cumulative > 1.0 + 1e-9:
                raise ValueError(f"faults on {region}.{endpoint} add up to rate {cumulative:g} > 1: " + ", ".join(f.spec for _, f in rows))
            if rows:
                self._tables[endpoint] = tuple(rows)

    def __bool__(self) -> bool:
        return bool(self._tables)

    def draw(self, endpoint: str) -> Fault | None:
        rows = self._tables.get(endpoint)
        if rows is None:
            return None
        u = self._random()
        for threshold, fault in rows:
            if u < threshold:
                return fault
        return None
