"""What a responder (Gemini or the offline one) answers: the reply and what it understood."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LeadFact:
    """A fact about the contact the AI extracted, with the contact's own words behind it."""

    name: str
    value: str
    evidence: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """One responder's answer.

    ``reply`` is what would be sent; ``intent`` a short slug (question, pricing, booking,
    smalltalk, complaint, refund, human, other); ``confidence`` in [0, 1]; ``needs_human``
    whether the responder itself asks for the creator; ``offer_booking`` whether it asked to
    offer appointment slots (a function call)."""

    reply: str
    intent: str
    confidence: float
    needs_human: bool
    lead_facts: tuple[LeadFact, ...] = ()
    offer_booking: bool = False
    backend: str = "offline"
    model: str | None = None
    usage: Usage | None = None
