"""Guardrails: when the AI hands off instead of sending (pure table tests)."""

from __future__ import annotations

import pytest

from instaset.ai.answer import Answer
from instaset.ai.guardrails import check_reply, prices, urls

FACTS = ["1:1 coaching is $90 per session, packages of 10 for $800",
         "Book at https://maya.fit/book", "My free guide: maya.fit/guide"]


def ans(reply: str = "Sounds great!", **kw: object) -> Answer:
    base: dict[str, object] = dict(reply=reply, intent="question", confidence=0.9,
                                   needs_human=False)
    base.update(kw)
    return Answer(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("incoming", "answer", "reason"),
    [
        ("how much?", ans("It's $90 a session!"), None),
        ("how much for 10?", ans("10 sessions are $800"), None),
        ("how much for 10?", ans("10 sessions are 800 dollars"), None),
        ("link?", ans("Here: https://maya.fit/book"), None),
        ("link?", ans("Here: maya.fit/book/"), None),
        ("guide?", ans("Grab it at https://www.maya.fit/guide!"), None),
        ("hi", ans("Hey! 2 quick questions: what's your goal?"), None),
        ("book?", ans("", offer_booking=True), None),
        # the model makes things up
        ("how much?", ans("It's $75 a session!"), "unverified_price"),
        ("how much?", ans("Only 1,200€ for the year"), "unverified_price"),
        ("link?", ans("Sign up at https://maya.fit/checkout"), "unverified_link"),
        ("link?", ans("See bit.ly/xyz"), "unverified_link"),
        # the contact's own words win over the model's reading
        ("can I talk to a real person?", ans(), "human_requested"),
        ("I want my money back", ans(), "refund"),
        ("I want a REFUND now", ans(), "refund"),
        ("this program is a scam", ans(), "complaint"),
        ("the app is not working and I'm angry", ans(), "complaint"),
        # the model's own doubts
        ("hmm", ans(needs_human=True), "needs_human"),
        ("hmm", ans(confidence=0.3), "low_confidence"),
        ("hmm", ans(intent="complaint"), "complaint"),
        ("hmm", ans(intent="human"), "human_requested"),
        ("hmm", ans("   "), "empty_reply"),
    ],
)
def test_check_reply(incoming: str, answer: Answer, reason: str | None) -> None:
    verdict = check_reply(answer, incoming, FACTS)
    assert verdict.send is (reason is None)
    assert verdict.reason == reason
    if reason is not None:
        assert verdict.detail


def test_min_confidence_is_configurable() -> None:
    assert check_reply(ans(confidence=0.6), "hi", FACTS, min_confidence=0.7).reason == (
        "low_confidence")
    assert check_reply(ans(confidence=0.6), "hi", FACTS).send


def test_extractors() -> None:
    assert prices("$1,200.00 or 90 USD or €50, not 3 sessions") == ["1200", "90", "50"]
    assert urls("go to HTTPS://Maya.fit/Book/. or www.maya.fit") == ["maya.fit/book",
                                                                       "maya.fit"]
