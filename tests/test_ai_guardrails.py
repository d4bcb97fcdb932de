"""Guardrails: when the AI hands off instead of sending (pure table tests)."""

from __future__ import annotations

import pytest

from instaset.ai.answer import Answer, LeadFact
from instaset.ai.guardrails import check_reply, grounded, prices, urls

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
        # any domain with a path, and more bare domains (AI audit: these were sent)
        ("link?", ans("Pay at evil.ru/pay"), "unverified_link"),
        ("link?", ans("goo.gl/abc123 has it"), "unverified_link"),
        ("link?", ans("rb.gy/xyz"), "unverified_link"),
        ("link?", ans("visit evil.example"), "unverified_link"),
        ("tech?", ans("I build it with Node.js, e.g. this"), None),
        ("so?", ans("Great question.So glad you asked!"), None),
        # a number of the facts that is not a price there ("per session", "10", "1:1")
        ("how much?", ans("Only $1 to start!"), "unverified_price"),
        ("how much?", ans("It's $10 this week"), "unverified_price"),
        ("how much?", ans("USD 45 per call"), "unverified_price"),
        # an amount per unit without a currency is as often a capacity: not a price
        ("how much?", ans("Group classes take up to 8 per class"), None),
        ("how much?", ans("Max 2 per person, sorry!"), None),
        ("how much?", ans("EUR 90 a session"), None),
        # the contact's own words win over the model's reading
        ("can I talk to a real person?", ans(), "human_requested"),
        ("I want my money back", ans(), "refund"),
        ("I want a REFUND now", ans(), "refund"),
        ("this program is a scam", ans(), "complaint"),
        ("the app is not working and I'm angry", ans(), "complaint"),
        ("the band I got is broken", ans(), "complaint"),
        ("worst service ever", ans(), "complaint"),
        ("honestly your program was terrible", ans(), "complaint"),
        ("can I speak to an agent?", ans(), "human_requested"),
        ("I want an agent", ans(), "human_requested"),
        ("you are the worst", ans(), "complaint"),
        ("you're terrible", ans(), "complaint"),
        ("worst coach ever", ans(), "complaint"),
        ("it's broken", ans(), "complaint"),
        ("this is the worst", ans(), "complaint"),
        ("absolutely terrible", ans(), "complaint"),
        ("I need customer service", ans(), "human_requested"),
        # ordinary sales questions with those words in them (each paused a lead for 12 h)
        ("I had the worst week ever, can you help me get back on track?", ans(), None),
        ("what's the worst mistake ever for beginners?", ans(), None),
        ("is it broken down into weekly modules?", ans(), None),
        ("my diet, honestly it's the worst. can you help?", ans(), None),
        ("this is the worst part of my day lol, how long are sessions?", ans(), None),
        ("do I need a person to spot me?", ans(), None),
        ("I need someone real to keep me accountable", ans(), None),
        ("is coaching ok for a person over 50?", ans(), None),
        ("I'm a real estate agent with little time, do you coach me?", ans(), None),
        ("I had a broken wrist last year, can I still train?", ans(), None),
        ("I'm terrible at sticking to workouts, can you help?", ans(), None),
        ("my old gym was the worst, do you coach online?", ans(), None),
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


@pytest.mark.parametrize(("reply", "comment", "reason"), [
    ("x" * 1000, True, None),  # one private reply: 1000 bytes
    ("x" * 1001, True, "too_long"),
    ("é" * 501, True, "too_long"),  # bytes, not characters
    ("x" * 1001, False, None),  # to a DM: split in two
    ("x" * 2000, False, None),
    ("Yes! " * 6000, False, "too_long"),  # a model running on (30 DMs once)
])
def test_a_reply_longer_than_it_is_sent_in_one_go_goes_to_the_creator(
        reply: str, comment: bool, reason: str | None) -> None:
    verdict = check_reply(ans(reply), "hi", FACTS, comment=comment)
    assert verdict.reason == reason
    assert (str(len(reply.encode())) in verdict.detail) is (reason is not None)


def test_min_confidence_is_configurable() -> None:
    assert check_reply(ans(confidence=0.6), "hi", FACTS, min_confidence=0.7).reason == (
        "low_confidence")
    assert check_reply(ans(confidence=0.6), "hi", FACTS).send


@pytest.mark.parametrize(("reply", "send"), [
    ("Coaching is only $30 per call this week!", False),
    ("Special deal: $7 for a full month!", False),
    ("It's $18 today, or $9 for students", False),
    ("It's $90 for 30 minutes, 9:00 to 18:00", True),
])
def test_only_the_prices_the_facts_state_are_known(reply: str, send: bool) -> None:
    # config.example.yaml's facts: their other numbers (30, 7, 9, 18) are not prices.
    facts = ["1:1 coaching is $90 per 30-minute call.", "My free 7-day guide",
             "I answer DMs from 9:00 to 18:00"]
    assert check_reply(ans(reply), "how much?", facts).send is send


def test_a_price_word_in_the_facts_states_a_price() -> None:
    assert check_reply(ans("It's $120"), "how much?", ["Price: 120 per month"]).send
    assert not check_reply(ans("It's $12"), "how much?", ["Price: 120 per month"]).send


def test_extractors() -> None:
    assert prices("$1,200.00 or 90 USD or €50, not 3 sessions") == ["1200", "90", "50"]
    assert prices("USD 45, 30 per call, 2 calls a week") == ["45"]
    assert urls("go to HTTPS://Maya.fit/Book/. or www.maya.fit") == ["maya.fit/book",
                                                                       "maya.fit"]


SAID = ["Hi! I'm Ana, I know nothing yet", "My budget is about 2k and I want to start in March",
        "I paid 1500 last time"]


@pytest.mark.parametrize(("fact", "kept"), [
    (LeadFact("budget", "2k", "my budget is about 2K"), LeadFact("budget", "2k",
                                                                 "my budget is about 2K")),
    (LeadFact("timeline", "March", '"start in March…"'), LeadFact("timeline", "March",
                                                                  '"start in March…"')),
    # evidence made up, value said: the contact's own message becomes the evidence
    (LeadFact("timeline", "March", "I can start next March"), LeadFact(
        "timeline", "March", SAID[1])),
    (LeadFact("timeline", "in march", "start next march"), LeadFact(
        "timeline", "in march", SAID[1])),
    # neither said: dropped
    (LeadFact("budget", "$5000", "I have $5000 ready"), None),
    # the value only inside another word is not said: "now" in "know", "500" in "1500"
    (LeadFact("timeline", "now", "I can start now"), None),
    (LeadFact("budget", "500", "500 is fine"), None),
    # a value under 3 characters is too short to tell: only its own quote counts
    (LeadFact("budget", "2k", "a budget of 2k"), None),
    (LeadFact("email", "ana@x.example", ""), None),
])
def test_grounded_keeps_only_what_the_contact_said(fact: LeadFact, kept: LeadFact | None
                                                   ) -> None:
    assert grounded([fact], SAID) == ((kept,) if kept else ())
