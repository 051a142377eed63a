"""Conversation state of one mock region: open conversations, bounded in time and number.

A conversation is open from create until close; closed conversations are forgotten (a later
respond or close answers 404). Memory stays bounded two ways:

* idle expiry: a conversation with no request for ``idle_timeout`` seconds (default 300) is
  expired — checked exactly when it is next looked up, and swept periodically;
* a hard cap: creating one beyond ``max_open`` (default 200 000) evicts the least recently
  used.

Conversations are kept in an OrderedDict in least-recently-used order, so the sweep and the
eviction only ever look at the front. A bounded memory of why recent ids went away
("closed", "expired", "evicted") lets 404 messages say so.
"""

from __future__ import annotations

import json
from collections import OrderedDict

# Distinct integration attribute pairs counted per region (a run's attributes are a handful;
# per-customer ids would be many): the rest are counted together under OTHER_ATTRIBUTES.
ATTRIBUTE_PAIRS_KEEP = 1000
OTHER_ATTRIBUTES = "(other)"


class Conversation:
    """One open conversation. ``turn`` counts responds so far (create is turn 0)."""

    __slots__ = ("id", "variant", "turn", "last_seen", "started", "ended", "integration_attributes")

    def __init__(self, conversation_id: str, variant: str | None, integration_attributes: dict | None, now: float) -> None:
        self.id = conversation_id
        self.variant = variant
        self.integration_attributes = integration_attributes
        self.turn = 0
        self.started = now
        self.last_seen = now
        self.ended = False


class ConversationStore:
    """The open conversations of one region, with idle expiry and a size cap."""

    def __init__(self, idle_timeout: float = 300.0, max_open: int = 200_000, remember_gone: int = 10_000) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.idle_timeout = idle_timeout
        self.max_open = max_open
        self._open: OrderedDict[str, Conversation] = OrderedDict()
        self._gone: OrderedDict[str, str] = OrderedDict()
        self._remember_gone = remember_gone
        self.created = 0
        self.closed = 0
        self.expired = 0
        self.evicted = 0
        # What clients sent as integration_attributes: conversations that carried any, and
        # how many carried each "key=value" (value as JSON unless a string).
        self.with_attributes = 0
        self.attribute_pairs: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._open

    def open(self, conversation_id: str, variant: str | None, integration_attributes: dict | None, now: float) -> Conversation:
        while len(self._open) >= self.max_open:
            old_id, _ = self._open.popitem(last=False)
            self.evicted += 1
            self._forget(old_id, "evicted")
        conv = Conversation(conversation_id, variant, integration_attributes, now)
        self._open[conversation_id] = conv
        self.created += 1
        if integration_attributes:
            self._count_attributes(integration_attributes)
        return conv

    def _count_attributes(self, attributes: dict) -> None:
        self.with_attributes += 1
        pairs = self.attribute_pairs
        for key, value in attributes.items():
            pair = f"{key}={value if type(value) is str else json.dumps(value, sort_keys=True)}"
            if pair not in pairs and len(pairs) >= ATTRIBUTE_PAIRS_KEEP:
                pair = OTHER_ATTRIBUTES
            pairs[pair] = pairs.get(pair, 0) + 1

    def get(self, conversation_id: str, now: float) -> Conversation | None:
        """The open conversation, touched (now most recently used), or None if gone or idled out."""
        conv = self.peek(conversation_id, now)
        if conv is not None:
            conv.last_seen = now
            self._open.move_to_end(conversation_id)
        return conv

    def peek(self, conversation_id: str, now: float) -> Conversation | None:
        """Like get, without touching it (an idled-out conversation is expired here too)."""
        conv = self._open.get(conversation_id)
        if conv is None:
            return None
        if now - conv.last_seen > self.idle_timeout:
            del self._open[conversation_id]
            self.expired += 1
            self._forget(conversation_id, "expired")
            return None
        return conv

    def close(self, conversation_id: str) -> bool:
        conv = self._open.pop(conversation_id, None)
        if conv is None:
            return False
        self.closed += 1
        self._forget(conversation_id, "closed")
        return True

    def why_gone(self, conversation_id: str) -> str | None:
        """ "closed", "expired" or "evicted" for a recently forgotten id, else None."""
        return self._gone.get(conversation_id)

    def sweep(self, now: float) -> int:
        """Expire every conversation idle for longer than idle_timeout; returns how many."""
        n = 0
        limit = now - self.idle_timeout
        while self._open:
            conversation_id, conv = next(iter(self._open.items()))
            if conv.last_seen >= limit:
                break
            del self._open[conversation_id]
            self._forget(conversation_id, "expired")
            n += 1
        self.expired += n
        return n

    def _forget(self, conversation_id: str, why: str) -> None:
        gone = self._gone
        gone[conversation_id] = why
        if len(gone) > self._remember_gone:
            gone.popitem(last=False)
