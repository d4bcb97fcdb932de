"""A quick-reply tap fires the workflow waiting for its payload, not a keyword in its title
(found in review: a chip "Yes, book a call" re-fired the "book" workflow that offered it)."""

from __future__ import annotations

import pytest

from instaset.engine.decide import decide, decide_scan
from tests.test_engine_flows import NOW, SETTINGS, dm, state, workflows

WFS = workflows("""
- name: book-a-call
  priority: 10
  trigger: {dm: {keywords: [book]}}
  actions:
    - reply:
        text: "Want to book a call?"
        quick_replies: [{title: "Yes, book a call", payload: BOOK_YES}]
- name: booking-slots
  trigger: {postback: {payload: [BOOK_YES]}}
  actions: [{reply: "Here are the slots"}]
- name: other-tap
  priority: 20
  trigger: {postback: {payload: [SOMETHING_ELSE]}}
  actions: [{reply: "not this one"}]
""")


@pytest.mark.parametrize(("text", "qr", "fired"), [
    ("Yes, book a call", "BOOK_YES", "booking-slots"),  # the payload wins over the title
    ("I want to book", None, "book-a-call"),  # typed text: the keyword
    ("Yes, book a call", "UNKNOWN", "book-a-call"),  # no workflow for the payload: title
])
@pytest.mark.parametrize("engine", [decide, decide_scan])
def test_a_tap_fires_its_payload_workflow_first(text: str, qr: str | None, fired: str,
                                                engine: object) -> None:
    decision = engine(dm(text, qr=qr), state(), WFS, SETTINGS, NOW)  # type: ignore[operator]
    assert decision.workflow == fired


@pytest.mark.parametrize("engine", [decide, decide_scan])
def test_an_empty_payload_falls_back_to_the_title_as_a_buttons_does(engine: object) -> None:
    """Found by the s18 config audit: a button with `payload: ""` sent its title, but a quick
    reply with `payload: ""` sent "" and Meta refused every send ("payload is required")."""
    wfs = workflows("""
- name: ask
  trigger: {dm: {keywords: [hi]}}
  actions:
    - reply:
        text: "Pick one"
        quick_replies: [{title: "Yes", payload: ""}, {title: "No", payload: NO_TAP}, Maybe]
""")
    decision = engine(dm("hi"), state(), wfs, SETTINGS, NOW)  # type: ignore[operator]
    (send,) = decision.actions
    assert [(q.title, q.payload) for q in send.quick_replies] == [
        ("Yes", "Yes"), ("No", "NO_TAP"), ("Maybe", "Maybe")]
