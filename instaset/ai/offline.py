"""The offline responder: used when no Gemini key is set (the demo, replays, tests).

It answers from the creator's own words only: the best match among ``ai.examples`` (by
message similarity), or else the closest of ``ai.facts`` stated as written. Never from the
past replies retrieved for Gemini: those were written to other people, and sent as they
are they would hand one contact's name, number or appointment to another (Gemini gets
them redacted, as style samples only). When nothing is close enough it hands off
(``needs_human``). Deterministic: the same input always gives the same answer, so demos and
replays reproduce exactly.
"""

from __future__ import annotations

import re

from instaset.ai.answer import Answer, LeadFact
from instaset.ai.prompt import PromptInput
from instaset.ai.similarity import rank
from instaset.engine.triggers import fold

THRESHOLD = 0.35

_INTENTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("refund", re.compile(r"\b(refund\w*|money back)\b")),
    ("complaint", re.compile(r"\b(complain\w*|scam|disappointed|terrible|not working)\b")),
    ("human", re.compile(r"\b(human|real person|agent)\b")),
    ("booking", re.compile(r"\b(book\w*|call|appointment|session|schedule)\b")),
    ("pricing", re.compile(r"\b(price\w*|cost\w*|how much|rates?|pricing)\b")),
    ("smalltalk", re.compile(r"^\W*(hi|hey|hello|thanks?|thank you|ok|cool|love (it|this))\b")),
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")


def intent_of(text: str) -> str:
    folded = fold(text)
    for name, pattern in _INTENTS:
        if pattern.search(folded):
            return name
    return "question" if "?" in text else "other"


def _facts_in(text: str) -> tuple[LeadFact, ...]:
    m = _EMAIL.search(text)
    return (LeadFact("email", m.group(0), m.group(0)),) if m else ()


class OfflineResponder:
    def __init__(self, *, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold

    def answer(self, inp: PromptInput) -> Answer:
        incoming = inp.incoming
        intent = intent_of(incoming)
        facts = _facts_in(incoming)
        pairs = list(inp.examples)  # not inp.past_replies: see the module docstring
        best_pair = rank(incoming, [p.message for p in pairs], k=1, min_score=self.threshold)
        best_fact = rank(incoming, list(inp.facts), k=1, min_score=self.threshold)
        pair_score = best_pair[0].score if best_pair else 0.0
        fact_score = best_fact[0].score if best_fact else 0.0
        if intent == "booking" and inp.booking:
            # Someone who wants to book gets the free slots, with the closest lead-in if any.
            lead_in = pairs[best_pair[0].index].reply.strip() if best_pair else ""
            return Answer(reply=lead_in, intent=intent, confidence=0.9, needs_human=False,
                          lead_facts=facts, offer_booking=True, backend="offline")
        if not best_pair and not best_fact:
            return Answer(reply="", intent=intent, confidence=0.0, needs_human=True,
                          lead_facts=facts, backend="offline")
        if pair_score >= fact_score:
            reply, score = pairs[best_pair[0].index].reply, pair_score
        else:
            reply, score = inp.facts[best_fact[0].index], fact_score
        return Answer(reply=reply.strip(), intent=intent, confidence=round(0.6 + 0.4 * score, 4),
                      needs_human=False, lead_facts=facts, backend="offline")
