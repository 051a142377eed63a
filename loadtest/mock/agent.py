"""The mock's conversational agent: short, seeded, plausible replies.

The greeting names the variant's brand. A reply picks up the topic of the customer's message
(booking, cancellation, billing, delivery, account, opening hours, complaint) from keywords
and answers in a line or two. Per turn, in this order:

* turn ``end_after`` (default 8) ends the conversation: ``end_conversation: true``;
* with probability ``handoff_rate × variant.handoff_factor`` (default 0.03; variant b 2.5×)
  the agent asks for a transfer: ``handoff {destination, reason}``;
* with probability ``end_probability`` (default 0.05) the agent ends the conversation.

Ending or handing off does not close the conversation: it stays open until the client closes
it (or it idles out). Once ended, further responds still answer 200 with
``end_conversation: true``.
"""

from __future__ import annotations

import random

from loadtest.mock.profiles import BASE_BRAND, Variant

# (topic, keywords, replies, handoff destination). "{brand}" is filled in.
_TOPICS: tuple[tuple[str, tuple[str, ...], tuple[str, ...], str], ...] = (
    (
        "cancellation",
        ("cancel", "cancellation", "call off"),
        (
            "I can help you cancel. Could you give me your booking reference?",
            "Sorry to hear you want to cancel. Which reservation is it?",
            "Let me look at that cancellation for you. What name is it under?",
        ),
        "cancellations_team",
    ),
    (
        "booking",
        ("book", "booking", "reservation", "reserve", "table", "room"),
        (
            "Happy to help with your booking. For which date?",
            "Sure, let's sort out that reservation. How many people is it for?",
            "I can check availability for you. What time suits you best?",
        ),
        "reservations_desk",
    ),
    (
        "billing",
        ("bill", "billing", "refund", "charge", "payment", "invoice", "price", "pay"),
        (
            "I understand this is about a payment. Can you tell me the amount and date?",
            "Let me check your billing details. What's the last four digits of the card?",
            "Refunds usually take 3 to 5 working days. Do you have the order number?",
        ),
        "billing_team",
    ),
    (
        "delivery",
        ("deliver", "delivery", "order", "parcel", "package", "tracking", "shipping"),
        (
            "Let me track that order for you. What's the order number?",
            "Deliveries can run a day late at the moment. Shall I check yours?",
            "I can see your order in our system. Would you like the tracking link by text?",
        ),
        "logistics_team",
    ),
    (
        "account",
        ("account", "password", "login", "log in", "sign in", "email", "address"),
        (
            "I can help with your account. What email address is it registered to?",
            "For security I'll send a verification code. Is your number ending in 42 still current?",
            "I've found your account. What would you like to change?",
        ),
        "account_security",
    ),
    (
        "opening hours",
        ("open", "opening", "hours", "close", "closing", "when"),
        (
            "We're open from 9am to 6pm, Monday to Saturday.",
            "Our opening hours are 9 to 6 on weekdays and 10 to 4 at weekends.",
            "We're open today until 6pm. Anything else I can help with?",
        ),
        "front_desk",
    ),
    (
        "complaint",
        ("complain", "complaint", "unhappy", "terrible", "manager", "angry", "broken"),
        (
            "I'm really sorry about that. Could you tell me a bit more about what happened?",
            "I apologise for the trouble. Let me see what I can do to put this right.",
            "Thank you for letting us know. I'll make sure this gets looked at.",
        ),
        "customer_relations",
    ),
)
_GENERIC = (
    "Sure, I can help with that. Could you tell me a little more?",
    "Got it. Is there anything else you'd like me to check?",
    "Thanks. Let me look into that for you.",
    "Okay. Could you give me a few more details?",
)
_SILENCE = ("Sorry, I didn't catch that. Could you say it again?", "Are you still there?")
_ENDINGS = ("Thanks for contacting {brand}. Have a great day, goodbye!", "Glad I could help. Thank you for choosing {brand}. Goodbye!")
_ALREADY_ENDED = "This conversation has ended. Thank you for contacting {brand}."
_HANDOFFS = ("Let me transfer you to a colleague who can help with your {topic}.", "I'll put you through to our {team} now, one moment please.")
_GREETINGS = (
    "Hello, thanks for contacting {brand}! How can I help you today?",
    "Hi, you're through to {brand}. What can I do for you?",
    "Welcome to {brand}. How can I help?",
)


def topic_of(message: str | None) -> tuple[str, tuple[str, ...], str] | None:
    """(topic, replies, handoff destination) of a customer's message, or None."""
    if not message:
        return None
    text = message.lower()
    for topic, keywords, replies, destination in _TOPICS:
        for word in keywords:
            if word in text:
                return topic, replies, destination
    return None


class Agent:
    """Replies for one region's conversations, drawn from a seeded RNG."""

    def __init__(self, rng: random.Random, variants: dict[str, Variant], end_after: int = 8, end_probability: float = 0.05, handoff_rate: float = 0.03) -> None:
        self._random = rng.random
        self._choice = rng.choice
        self.end_after = end_after
        self.end_probability = end_probability
        self._brands: dict[str | None, str] = {None: BASE_BRAND, **{k: v.brand for k, v in variants.items()}}
        self._handoff: dict[str | None, float] = {None: handoff_rate, **{k: min(1.0, handoff_rate * v.handoff_factor) for k, v in variants.items()}}

    def brand(self, variant: str | None) -> str:
        return self._brands[variant]

    def greeting(self, variant: str | None) -> str:
        return self._choice(_GREETINGS).format(brand=self._brands[variant])

    def reply(self, turn: int, variant: str | None, message: str | None, ended: bool) -> tuple[str, bool, dict | None]:
        """(response, end_conversation, handoff or None) for respond number ``turn`` (1-based)."""
        brand = self._brands[variant]
        if ended:
            return _ALREADY_ENDED.format(brand=brand), True, None
        if self.end_after and turn >= self.end_after:
            return self._choice(_ENDINGS).format(brand=brand), True, None
        found = topic_of(message)
        u = self._random()
        handoff_rate = self._handoff[variant]
        if u < handoff_rate:
            topic, destination = (found[0], found[2]) if found else ("enquiry", "human_agent")
            text = self._choice(_HANDOFFS).format(topic=topic, team=destination.replace("_", " "))
            return text, False, {"destination": destination, "reason": f"customer needs help with {topic}"}
        if u < handoff_rate + self.end_probability:
            return self._choice(_ENDINGS).format(brand=brand), True, None
        if found:
            return self._choice(found[1]), False, None
        return self._choice(_GENERIC if message else _SILENCE), False, None
