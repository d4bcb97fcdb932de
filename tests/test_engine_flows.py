"""Engine actions and multi-step flows: every step kind, comment-to-DM, ask-and-capture,
delay and resume, handoff, serialisation round trips."""

# Table rows read best one per line, so long lines are allowed here.
# ruff: noqa: E501

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import yaml

from instaset.engine.actions import (
    Action,
    Button,
    GenerateAIReply,
    HandOff,
    Notify,
    OfferBooking,
    PrivateReply,
    PublicReply,
    QuickReplySpec,
    RemoveTag,
    Schedule,
    ScoreLead,
    SendButtons,
    SendMedia,
    SendTemplate,
    SendText,
    SetField,
    SetStage,
    SetTag,
    TemplateCard,
    TypingOn,
    action_from_dict,
    is_message,
)
from instaset.engine.decide import Decision, decide, decide_scan, needs_follower, resume
from instaset.engine.model import Workflow
from instaset.engine.settings import EngineSettings
from instaset.engine.state import Awaiting, ConversationState
from instaset.events import Attachment, CommentEvent, Event, EventKind, MessageEvent

ACCOUNT = "17841400000000001"
USER = "5260000000000001"
NOW = 1_717_408_800.0  # 2024-06-03T10:00:00Z
SETTINGS = EngineSettings(ACCOUNT, timezone="UTC", default_pause_seconds=43200)


def dm(text: str | None, *, key: str = "mid.1", at: float = NOW, qr: str | None = None) -> Event:
    return MessageEvent(
        kind=EventKind.MESSAGE, account_id=ACCOUNT, dedupe_key=key, occurred_at=at,
        contact_id=USER, standby=False, raw="{}", sender_id=USER, recipient_id=ACCOUNT,
        mid=key, text=text, attachments=(), is_echo=False, is_self=False,
        is_unsupported=False, quick_reply_payload=qr, reply_to_mid=None, reply_to_story=None,
        referral=None,
    )  # fmt: skip


def comment(
    text: str = "guide", *, parent: str | None = None, live: bool = False, at: float = NOW
) -> Event:
    return CommentEvent(
        kind=EventKind.LIVE_COMMENT if live else EventKind.COMMENT, account_id=ACCOUNT,
        dedupe_key="c.17900", occurred_at=at, contact_id=USER, standby=False, raw="{}",
        comment_id="17900", text=text, from_id=USER, from_username="anna", media_id="m1",
        media_product_type="REELS", parent_id=parent,
    )  # fmt: skip


def state(**kw: Any) -> ConversationState:
    kw.setdefault("is_new", False)
    return ConversationState(ACCOUNT, USER, **kw)


def workflows(text: str) -> list[Workflow]:
    return [Workflow.model_validate(w) for w in yaml.safe_load(text)]


def steps_wf(steps: str, trigger: str = "{dm: {keywords: [go]}}") -> list[Workflow]:
    return workflows(f"- name: w\n  trigger: {trigger}\n  actions:\n{steps}")


# --- every step kind in a DM --------------------------------------------------------------

STEP_ROWS: list[tuple[str, str, tuple[Action, ...]]] = [
    ("reply", "- reply: 'Hi {username}, {first_name|friend}! {link:guide}'",
     (SendText("Hi anna, friend! {link:guide}"),)),
    ("reply-first-name", "- {set: {name: Anna Smith}}\n- reply: 'Hi {first_name}'",
     (SetField("name", "Anna Smith"), SendText("Hi Anna"))),
    ("reply-echoes-text", "- reply: 'You said: {text}'", (SendText("You said: go now"),)),
    ("reply-quick", "- reply: {text: Pick one, quick_replies: [Yes, {title: Later, payload: LATER}]}",
     (SendText("Pick one", (QuickReplySpec("Yes", "Yes"), QuickReplySpec("Later", "LATER"))),)),
    ("tag", "- tag: [lead, warm]", (SetTag("lead"), SetTag("warm"))),
    ("untag", "- untag: cold", (RemoveTag("cold"),)),
    ("set", "- set: {source: dm, plan: pro}", (SetField("source", "dm"), SetField("plan", "pro"))),
    ("stage", "- stage: engaged", (SetStage("engaged"),)),
    ("ai-auto", "- ai_reply: auto", (GenerateAIReply("auto"),)),
    ("ai-draft", "- ai_reply: {mode: draft}", (GenerateAIReply("draft"),)),
    ("ai-off", "- ai_reply: 'off'", ()),
    ("notify", "- notify: 'Hot lead: {username}'", (Notify("Hot lead: anna"),)),
    ("media", "- media: {type: image, url: 'https://x.example/a.jpg'}",
     (SendMedia("image", "https://x.example/a.jpg"),)),
    ("buttons", "- buttons: {text: 'Book?', buttons: [{title: Book, url: '{link:cal}'}, {title: No, payload: 'NO'}]}",
     (SendButtons("Book?", (Button("Book", "{link:cal}"), Button("No", None, "NO"))),)),
    ("template", "- template: {elements: [{title: 'Guide for {username}', subtitle: Free, image_url: 'https://x.example/g.png', buttons: [{title: Get, payload: GET}]}]}",
     (SendTemplate((TemplateCard("Guide for anna", "Free", "https://x.example/g.png", None,
                                 (Button("Get", None, "GET"),)),)),)),
    ("score", "- score: {points: 10, reason: asked for price}", (ScoreLead(10, "asked for price"),)),
    ("score-short", "- score: 5", (ScoreLead(5, ""),)),
    ("offer-booking", "- offer_booking: true", (OfferBooking(None),)),
    ("offer-booking-text", "- offer_booking: {text: 'Pick a slot, {username}'}", (OfferBooking("Pick a slot, anna"),)),
    ("typing", "- typing: on\n- reply: hi", (TypingOn(), SendText("hi"))),
]  # fmt: skip


@pytest.mark.parametrize(("steps", "expected"), [pytest.param(*r[1:], id=r[0]) for r in STEP_ROWS])
def test_step_kind(steps: str, expected: tuple[Action, ...]) -> None:
    st = state(username="anna", tags=frozenset({"cold"}))
    decision = decide(dm("go now"), st, steps_wf("    " + steps.replace("\n", "\n    ") + "\n"),
                      SETTINGS, NOW)  # fmt: skip
    assert decision.workflow == "w"
    assert decision.actions == expected


def test_state_changing_steps_update_state() -> None:
    wfs = steps_wf("    - tag: [lead]\n    - untag: cold\n    - set: {plan: pro}\n"
                   "    - stage: engaged\n")  # fmt: skip
    decision = decide(dm("go"), state(tags=frozenset({"cold", "x"})), wfs, SETTINGS, NOW)
    assert decision.state.tags == {"lead", "x"}
    assert decision.state.fields == {"plan": "pro"}
    assert decision.state.stage == "engaged"


def test_window_closed_refuses_sends_but_keeps_bookkeeping() -> None:
    # A continuation two days after the last message: the window is closed.
    wfs = steps_wf("    - delay: 2d\n    - reply: hello\n    - media: {type: image, url: "
                   "'https://x.example/a.jpg'}\n    - tag: followed-up\n    - notify: done\n")  # fmt: skip
    first = decide(dm("go"), state(), wfs, SETTINGS, NOW)
    assert first.actions == (Schedule(NOW + 2 * 86400, "w", 1, text="go"),)
    later = resume(first.state, wfs, SETTINGS, "w", 1, NOW + 2 * 86400)
    assert later.actions == (SetTag("followed-up"), Notify("done"))
    assert sum("24 h window closed" in line for line in later.trace) == 2
    assert [(r.step, r.what, r.reason) for r in later.refused] == [
        (1, "reply", "window_closed"), (2, "media", "window_closed")]


# --- comments -----------------------------------------------------------------------------

_PR = "    - private_reply: Here it is\n"
_REPLY = "    - reply: more\n"
_MEDIA = "    - media: {type: image, url: 'https://x.example/a.jpg'}\n"
REFUSAL_ROWS = [
    # id, comment written at, steps, (step, what, reason) of each refusal the decision marks
    ("fresh-comment", NOW, _PR, []),
    ("comment-8-days-old", NOW - 8 * 86400, _PR, [(0, "private_reply", "private_reply_expired")]),
    ("each-try-8-days-old", NOW - 8 * 86400, _PR + _REPLY, [(0, "private_reply", "private_reply_expired"), (1, "reply", "private_reply_expired")]),
    ("media-first", NOW, _MEDIA + _REPLY, [(0, "media", "private_reply_not_text")]),
    ("dm-after-the-private-reply", NOW, _PR + _REPLY, [(1, "reply", "private_reply_used")]),
]


_PUB = "    - public_reply: Sent it to your DMs!\n"
_AI = "    - ai_reply: auto\n"
_ASK = "    - ask: {field: email, type: email, prompt: 'Your email?'}\n"
OLD = NOW - 8 * 86400
PUBLIC_ROWS = [
    # id, comment written at, steps, the actions (a public reply: "public" if it goes
    # whatever, "public-after-private" if only when the private reply went)
    ("private-then-public", NOW, _PR + _PUB, ["private_reply", "public-after-private"]),
    ("public-only", NOW, _PUB, ["public"]),
    ("public-only-8-days-old", OLD, _PUB, ["public"]),
    ("private-then-public-8-days-old", OLD, _PR + _PUB, []),
    ("public-then-private-8-days-old", OLD, _PUB + _PR, []),
    # Placed before its private reply, a public reply waits for it all the same: it goes
    # right after it, and only if it is sent (the creator put "Sent it to your DMs!" first).
    ("public-then-private", NOW, _PUB + _PR, ["private_reply", "public-after-private"]),
    ("public-then-reply", NOW, _PUB + _REPLY, ["private_reply", "public-after-private"]),
    ("public-then-question", NOW, _PUB + _ASK, ["private_reply", "public-after-private"]),
    ("public-private-public", NOW, _PUB + _PR + _PUB,
     ["private_reply", "public-after-private", "public-after-private"]),
    ("public-public-private", NOW, _PUB + _PUB + _PR,
     ["private_reply", "public-after-private", "public-after-private"]),
    ("public-media-reply", NOW, _PUB + _MEDIA + _REPLY, ["private_reply", "public-after-private"]),
    ("public-then-media-only", NOW, _PUB + _MEDIA, []),
    ("public-tag-private", NOW, _PUB + "    - tag: [lead]\n" + _PR,
     ["set_tag", "private_reply", "public-after-private"]),
    # An AI's private reply is its own job's: no waiting for it, before or after it.
    ("public-then-ai-reply", NOW, _PUB + _AI + _PR, ["public", "generate_ai_reply"]),
    # A handoff ends the workflow: the private reply after it is never sent.
    ("public-handoff-private", NOW, _PUB + "    - handoff: {}\n" + _PR,
     ["public", "handoff", "notify"]),
    ("media-then-public", NOW, _MEDIA + _PUB, []),
    ("media-reply-public", NOW, _MEDIA + _REPLY + _PUB, ["private_reply", "public-after-private"]),
    ("ai-reply-then-public", NOW, _AI + _PUB, ["generate_ai_reply", "public"]),
]


def _kinds(actions: tuple[Action, ...]) -> list[str]:
    return [("public-after-private" if a.after_private else "public")
            if isinstance(a, PublicReply) else a.type for a in actions]


@pytest.mark.parametrize("decide_fn", [decide, decide_scan])
@pytest.mark.parametrize(("at", "steps", "expected"), [pytest.param(*r[1:], id=r[0]) for r in PUBLIC_ROWS])
def test_a_public_reply_announcing_a_private_reply_waits_for_it(
        decide_fn: Any, at: float, steps: str, expected: list[str]) -> None:
    """A public reply after the comment's private reply ("Sent it to your DMs!") is marked
    to go only if the private reply goes (the outbox checks at delivery); when the engine
    itself refused the private reply (comment over 7 days old, media only), the public
    reply is dropped, wherever it stands. A workflow with no private reply keeps its public
    reply, and so does one whose private reply is an AI's (sent by a job of its own)."""
    wfs = workflows("- name: w\n  trigger: {comment: {keywords: [guide]}}\n  actions:\n" + steps)
    decision = decide_fn(comment("guide", at=at), state(), wfs, SETTINGS, NOW)
    assert _kinds(decision.actions) == expected
    withheld = [line for line in decision.trace if "skipped public_reply" in line]
    assert len(withheld) == (_PUB in steps and "public" not in "".join(expected))


@pytest.mark.parametrize(("at", "expected"), [(NOW, ["public-after-private"]), (OLD, ["public-after-private"])], ids=["fresh", "8-days-old"])
def test_a_public_reply_after_a_delay_waits_for_the_private_reply_before_it(
        at: float, expected: list[str]) -> None:
    """The private reply went (or did not) before the delay: the continuation's public reply
    is marked, and the outbox knows which."""
    wfs = workflows("- name: w\n  trigger: {comment: {keywords: [guide]}}\n  actions:\n"
                    + _PR + "    - delay: 1h\n" + _PUB)
    first = decide(comment("guide", at=at), state(), wfs, SETTINGS, NOW)
    schedule = first.actions[-1]
    assert isinstance(schedule, Schedule)
    later = resume(first.state, wfs, SETTINGS, "w", schedule.step, schedule.run_at,
                   comment_id=schedule.comment_id, comment_at=schedule.comment_at,
                   public_ok=schedule.public_ok)
    assert _kinds(later.actions) == expected


_DELAY = "    - delay: 1h\n"


@pytest.mark.parametrize(("at", "steps", "first_kinds", "later_kinds"), [
    (NOW, _PUB + _DELAY + _PR, ["schedule"], ["private_reply", "public-after-private"]),
    # Seven days pass during the delay: the private reply is refused, its public reply too.
    (NOW - 7 * 86400 + 1800, _PUB + _DELAY + _PR, ["schedule"], []),
    (NOW, _PUB + _DELAY + _PUB + _DELAY + _PR, ["schedule"], ["schedule"]),
    # No private reply after the delay (an AI's is its own job's): it goes at once.
    (NOW, _PUB + _DELAY + _AI, ["public", "schedule"], ["generate_ai_reply"]),
], ids=["fresh", "7-days-during-the-delay", "two-delays", "ai-reply-after-the-delay"])
def test_a_public_reply_before_a_delay_waits_for_the_private_reply_after_it(
        at: float, steps: str, first_kinds: list[str], later_kinds: list[str]) -> None:
    """"Sent it to your DMs!", then an hour's delay, then the DM: the public reply is held
    across the delay and goes right after the private reply, if that one is sent."""
    wfs = workflows("- name: w\n  trigger: {comment: {keywords: [guide]}}\n  actions:\n"
                    + steps)
    first = decide(comment("guide", at=at), state(), wfs, SETTINGS, NOW)
    assert _kinds(first.actions) == first_kinds
    schedule = first.actions[-1]
    assert isinstance(schedule, Schedule)
    later = resume(first.state, wfs, SETTINGS, "w", schedule.step, schedule.run_at,
                   comment_id=schedule.comment_id, comment_at=schedule.comment_at,
                   public_ok=schedule.public_ok)
    assert _kinds(later.actions) == later_kinds
    if later_kinds == ["schedule"]:  # the second delay: both public replies still wait
        again = later.actions[-1]
        assert isinstance(again, Schedule)
        last = resume(later.state, wfs, SETTINGS, "w", again.step, again.run_at,
                      comment_id=again.comment_id, comment_at=again.comment_at,
                      public_ok=again.public_ok)
        assert _kinds(last.actions) == ["private_reply", "public-after-private",
                                        "public-after-private"]


def _resumed(decision: Any, wfs: Any) -> Any:
    """The continuation of ``decision``'s delay, with everything its Schedule carries (as
    the resume_flow job passes it)."""
    schedule = decision.actions[-1]
    assert isinstance(schedule, Schedule)
    return resume(decision.state, wfs, SETTINGS, "w", schedule.step, schedule.run_at,
                  comment_id=schedule.comment_id, comment_at=schedule.comment_at,
                  public_ok=schedule.public_ok, private_used=schedule.private_used,
                  private_made=schedule.private_made, private_missed=schedule.private_missed)


@pytest.mark.parametrize(("at", "known", "steps", "later_kinds"), [
    # The question is skipped (its field is known): it used no private reply, so the one
    # after the delay goes, and the public reply announcing it waits for it. Read from the
    # steps before the delay, the skipped `ask` counted as the private reply.
    (NOW, {"email": "a@b.example"}, _ASK + _DELAY + _PR + _PUB,
     ["private_reply", "public-after-private"]),
    # Media cannot be a private reply (refused): the text after the delay is.
    (NOW, {}, _MEDIA + _DELAY + _PR + _PUB, ["private_reply", "public-after-private"]),
    # The private reply was refused before the delay (comment over 7 days old): the public
    # reply after it is dropped, as it would be without the delay.
    (OLD, {}, _PR + _DELAY + _PUB, []),
], ids=["ask-skipped", "media-refused", "private-refused-8-days"])
def test_a_continuation_knows_what_became_of_the_private_reply_before_its_delay(
        at: float, known: dict[str, str], steps: str, later_kinds: list[str]) -> None:
    wfs = workflows("- name: w\n  trigger: {comment: {keywords: [guide]}}\n  actions:\n"
                    + steps)
    st = ConversationState.from_dict({**state().to_dict(), "fields": known})
    first = decide(comment("guide", at=at), st, wfs, SETTINGS, NOW)
    assert _kinds(_resumed(first, wfs).actions) == later_kinds


@pytest.mark.parametrize("delay", ["", "    - delay: 1m\n"], ids=["no-delay", "delay"])
def test_a_public_reply_after_an_ai_reply_does_not_wait_with_or_without_a_delay(
        delay: str) -> None:
    """An ai_reply's private reply is its own job's: the public reply after it is not
    marked to wait for it, after a delay as without one (review s16 A, finding 4)."""
    wfs = workflows("- name: w\n  trigger: {comment: {keywords: [guide]}}\n  actions:\n"
                    + _AI + delay + _PUB)
    decision = decide(comment("guide"), state(), wfs, SETTINGS, NOW)
    kinds = _kinds(decision.actions)
    schedule = decision.actions[-1]
    if isinstance(schedule, Schedule):
        later = resume(decision.state, wfs, SETTINGS, "w", schedule.step, schedule.run_at,
                       comment_id=schedule.comment_id, comment_at=schedule.comment_at,
                       public_ok=schedule.public_ok)
        kinds = _kinds(later.actions)
    assert kinds[-1] == "public"


def test_a_public_reply_after_a_private_reply_refused_after_a_delay_is_dropped() -> None:
    wfs = workflows("- name: w\n  trigger: {comment: {keywords: [guide]}}\n  actions:\n"
                    "    - delay: 8d\n" + _PR + _PUB)
    first = decide(comment("guide"), state(), wfs, SETTINGS, NOW)
    (schedule,) = first.actions
    assert isinstance(schedule, Schedule)
    later = resume(first.state, wfs, SETTINGS, "w", schedule.step, schedule.run_at,
                   comment_id=schedule.comment_id, comment_at=schedule.comment_at,
                   public_ok=schedule.public_ok)
    assert later.actions == ()
    assert [r.reason for r in later.refused] == ["private_reply_expired"]


@pytest.mark.parametrize("decide_fn", [decide, decide_scan])
@pytest.mark.parametrize(("at", "steps", "expected"), [pytest.param(*r[1:], id=r[0]) for r in REFUSAL_ROWS])
def test_refusals_are_marked_with_the_outboxs_reason(
        decide_fn: Any, at: float, steps: str, expected: list[tuple[int, str, str]]) -> None:
    """Each message the engine refuses carries a marker (step, kind, reason slug) besides its
    trace line: the daemon tells the creator from it, without reading the trace's words."""
    wfs = workflows("- name: w\n  trigger: {comment: {keywords: [guide]}}\n  actions:\n" + steps)
    decision = decide_fn(comment("guide", at=at), state(), wfs, SETTINGS, NOW)
    assert [(r.step, r.what, r.reason) for r in decision.refused] == expected
    assert sum(": refused " in line for line in decision.trace) == len(expected)

COMMENT_WF = """
- name: guide
  trigger: {comment: {keywords: [guide]}, live_comment: {keywords: [guide]}}
  actions:
    - private_reply: "Hey {username}! Here it is: {link:guide}"
    - public_reply: ["Check your DMs!", "Sent 📩", "Done, look in your inbox"]
    - reply: "And one more thing"
    - tag: commenter
"""


def test_comment_private_and_public_reply() -> None:
    decision = decide(comment("GUIDE please"), state(), workflows(COMMENT_WF), SETTINGS, NOW)
    assert decision.workflow == "guide"
    assert decision.actions[0] == PrivateReply("17900", "Hey anna! Here it is: {link:guide}")
    public = decision.actions[1]
    assert isinstance(public, PublicReply) and public.comment_id == "17900"
    assert public.text in ("Check your DMs!", "Sent 📩", "Done, look in your inbox")
    # One private reply per comment; no open window, so the second message is refused.
    assert decision.actions[2:] == (SetTag("commenter"),)
    assert any("one private reply until they answer" in line for line in decision.trace)


def test_comment_with_open_window_allows_a_dm_after_the_private_reply() -> None:
    st = state(last_inbound_at=NOW - 600)
    decision = decide(comment("guide"), st, workflows(COMMENT_WF), SETTINGS, NOW)
    assert decision.actions[2] == SendText("And one more thing")


def test_reply_step_becomes_the_private_reply_on_a_comment() -> None:
    wfs = workflows("""
- name: both
  trigger: {dm: {keywords: [guide]}, comment: {keywords: [guide]}}
  actions: [{reply: "Here: {link:guide}"}]
""")
    on_comment = decide(comment("guide"), state(), wfs, SETTINGS, NOW)
    assert on_comment.actions == (PrivateReply("17900", "Here: {link:guide}"),)
    on_dm = decide(dm("guide"), state(), wfs, SETTINGS, NOW)
    assert on_dm.actions == (SendText("Here: {link:guide}"),)


@pytest.mark.parametrize(
    ("event", "expected_kinds", "trace"),
    [
        (comment("guide", parent="17000"), ("private_reply", "set_tag"), "top-level"),
        (comment("guide", live=True), ("private_reply", "set_tag"), "top-level"),
        (comment("guide", at=NOW - 8 * 86400), ("set_tag",), "older than 7 days"),
    ],
    ids=["reply-comment", "live", "old-comment"],
)
def test_comment_limits(event: Event, expected_kinds: tuple[str, ...], trace: str) -> None:
    wfs = workflows(
        COMMENT_WF.replace(
            "comment: {keywords: [guide]}", "comment: {keywords: [guide], replies: true}"
        )
    )
    decision = decide(event, state(), wfs, SETTINGS, NOW)
    assert tuple(a.type for a in decision.actions) == expected_kinds
    assert any(trace in line for line in decision.trace), decision.trace


def test_public_reply_variants_without_turns_are_picked_by_comment() -> None:
    """A dry run (no count of earlier public replies): a pick per comment, stable."""
    wfs = workflows(COMMENT_WF)
    seen = set()
    for i in range(15):
        ev = comment("guide")
        assert isinstance(ev, CommentEvent)
        ev = replace(ev, dedupe_key=f"c.{i}", comment_id=str(i))
        decision = decide(ev, state(), wfs, SETTINGS, NOW)
        public = decision.actions[1]
        assert isinstance(public, PublicReply)
        seen.add(public.text)
        assert decide(ev, state(), wfs, SETTINGS, NOW) == decision
    assert len(seen) > 1


@pytest.mark.parametrize("decide_fn", [decide, decide_scan])
def test_public_reply_variants_go_in_turn(decide_fn: Any) -> None:
    """Given how many public replies the workflow made, the next variant in turn: never the
    same twice running under a post (a hash pick repeated one 5 times in 30 comments)."""
    wfs = workflows(COMMENT_WF)
    texts = []
    for i in range(7):
        ev = replace(comment("guide"), dedupe_key=f"c.{i}", comment_id=str(i))
        decision = decide_fn(ev, state(), wfs, SETTINGS, NOW, turns={"guide": i})
        public = decision.actions[1]
        assert isinstance(public, PublicReply)
        texts.append(public.text)
    variants = ["Check your DMs!", "Sent 📩", "Done, look in your inbox"]
    assert texts == [variants[i % 3] for i in range(7)]
    # Another workflow's count does not move this one's turn.
    ev = replace(comment("guide"), dedupe_key="c.x", comment_id="x")
    other = decide_fn(ev, state(), wfs, SETTINGS, NOW, turns={"other": 5})
    assert other.actions[1] == PublicReply("x", variants[0], after_private=True)


# --- ask and capture ----------------------------------------------------------------------

ASK_WF = """
- name: lead
  trigger: {dm: {keywords: [guide]}}
  actions:
    - reply: Sure!
    - ask: {field: email, prompt: "What's your email?", type: email,
            retry: "Hmm, that doesn't look like an email", max_retries: 2, on_fail: %s}
    - reply: "Sent to {email} 📩"
    - tag: lead
"""


def ask_wfs(on_fail: str = "stop") -> list[Workflow]:
    return workflows(ASK_WF % on_fail)


def test_ask_waits_then_captures_and_continues() -> None:
    wfs = ask_wfs()
    first = decide(dm("guide"), state(), wfs, SETTINGS, NOW)
    assert first.actions == (SendText("Sure!"), SendText("What's your email?"))
    assert first.state.awaiting == Awaiting("lead", 1, "email", "email", 0, NOW)
    # The answer is consumed by the question even though it also contains the keyword.
    answer = decide(dm(" Anna@Example.COM ", key="mid.2"), first.state, wfs, SETTINGS, NOW + 30)
    assert answer.workflow == "lead"
    assert answer.actions == (
        SetField("email", "Anna@example.com"),
        SendText("Sent to Anna@example.com 📩"),
        SetTag("lead"),
    )
    assert answer.state.awaiting is None
    assert answer.state.fields["email"] == "Anna@example.com"
    assert "lead" in answer.state.tags


def test_ask_survives_a_restart_through_json() -> None:
    wfs = ask_wfs()
    first = decide(dm("guide"), state(), wfs, SETTINGS, NOW)
    restored = ConversationState.from_json(first.state.to_json())
    assert restored == first.state
    answer = decide(dm("a@b.io", key="mid.2"), restored, wfs, SETTINGS, NOW + 30)
    assert answer.state.fields["email"] == "a@b.io"


@pytest.mark.parametrize(
    ("on_fail", "final_actions", "paused"),
    [
        ("stop", (), False),
        ("continue", (SendText("Sent to  📩"), SetTag("lead")), False),
        ("handoff", (HandOff(43200, "could not capture email"), Notify(
            f"{USER} needs you (lead): could not capture email")), True),
    ],
)  # fmt: skip
def test_ask_reasks_then_gives_up(
    on_fail: str, final_actions: tuple[Action, ...], paused: bool
) -> None:
    wfs = ask_wfs(on_fail)
    st = decide(dm("guide"), state(), wfs, SETTINGS, NOW).state
    for n in (1, 2):
        again = decide(dm("nope", key=f"bad.{n}"), st, wfs, SETTINGS, NOW + n)
        assert again.actions == (SendText("Hmm, that doesn't look like an email"),)
        assert again.state.awaiting is not None and again.state.awaiting.retries == n
        assert any(f"asking again ({n}/2)" in line for line in again.trace)
        st = again.state
    final = decide(dm("still no", key="bad.3"), st, wfs, SETTINGS, NOW + 3)
    assert final.actions == final_actions
    assert final.state.awaiting is None
    assert (final.state.paused_until == NOW + 3 + 43200) == paused
    assert any(f"after 2 retries, {on_fail}" in line for line in final.trace)


@pytest.mark.parametrize(
    ("ask", "text", "qr", "stored"),
    [
        ("{field: phone, prompt: 'Phone?', type: phone}", "+34 600-123 456", None, "+34600123456"),
        ("{field: phone, prompt: 'Phone?', type: phone}", "call me", None, None),
        ("{field: phone, prompt: 'Phone?', type: phone}", "12345", None, None),
        ("{field: email, prompt: 'Email?', type: email}", "a@b", None, None),
        # the one address in a sentence, without its punctuation
        ("{field: email, prompt: 'Email?', type: email}", "sure, my email is Anna@X.COM.", None, "Anna@x.com"),
        ("{field: email, prompt: 'Email?', type: email}", "<anna@x.com>", None, "anna@x.com"),
        ("{field: email, prompt: 'Email?', type: email}", "a@x.com or b@y.com", None, None),
        ("{field: email, prompt: 'Email?', type: email}", "email me @ anna", None, None),
        ("{field: email, prompt: 'Email?', type: email}", "I'm @anna_fit, email anna@x.com", None, "anna@x.com"),
        ("{field: goal, prompt: 'Goal?'}", "  Lose weight ", None, "Lose weight"),
        ("{field: level, prompt: 'Level?', type: choice, choices: [Beginner, Pro]}", "pro", None, "Pro"),
        ("{field: level, prompt: 'Level?', type: choice, choices: [Beginner, Pro]}", "x", "Beginner", "Beginner"),
        ("{field: level, prompt: 'Level?', type: choice, choices: [Beginner, Pro]}", "expert", None, None),
        # Found by the s11 audit: what phones and people glue to an answer.
        ("{field: email, prompt: 'Email?', type: email}", "anna@example.com🙏", None, "anna@example.com"),
        ("{field: email, prompt: 'Email?', type: email}", "anna@example.com…", None, "anna@example.com"),
        ("{field: email, prompt: 'Email?', type: email}", "anna@example.com。", None, "anna@example.com"),
        ("{field: email, prompt: 'Email?', type: email}", "anna@example..com", None, None),
        ("{field: email, prompt: 'Email?', type: email}", "anna@example.c0m", None, None),
        ("{field: phone, prompt: 'Phone?', type: phone}", "1234567²", None, None),
        ("{field: phone, prompt: 'Phone?', type: phone}", "０１５１２３４５６７８", None, "01512345678"),
        ("{field: phone, prompt: 'Phone?', type: phone}", "0151–2345678", None, "01512345678"),
        ("{field: level, prompt: 'Level?', type: choice, choices: [Beginner, Pro]}", "Pro!", None, "Pro"),
        ("{field: level, prompt: 'Level?', type: choice, choices: [Beginner, Pro]}", "beginner.", None, "Beginner"),
        ("{field: ok, prompt: 'OK?', type: choice, choices: [\"I'm in\", Later]}", "I’m in", None, "I'm in"),
    ],
)  # fmt: skip
def test_answer_validation(ask: str, text: str, qr: str | None, stored: str | None) -> None:
    wfs = steps_wf(f"    - ask: {ask}\n    - tag: answered\n")
    first = decide(dm("go"), state(), wfs, SETTINGS, NOW)
    aw = first.state.awaiting
    assert aw is not None
    answer = decide(dm(text, key="mid.2", qr=qr), first.state, wfs, SETTINGS, NOW + 5)
    if stored is None:
        assert answer.state.awaiting is not None and answer.state.awaiting.retries == 1
        assert aw.field not in answer.state.fields
    else:
        assert answer.state.fields[aw.field] == stored
        assert answer.actions == (SetField(aw.field, stored), SetTag("answered"))


def test_a_message_without_text_leaves_the_question_pending_and_runs_the_triggers() -> None:
    """Found by the s11 audit: a story mention (or a photo) while a question waited was
    taken as a wrong answer: the retry text went out and the story_mention workflow never
    ran."""
    wfs = workflows(ASK_WF % "stop" + """
- name: mention
  priority: 50
  trigger: {story_mention: true}
  actions:
    - reply: "Thanks for the shoutout!"
""")
    st = decide(dm("guide"), state(), wfs, SETTINGS, NOW).state
    assert st.awaiting is not None
    mention = replace(dm(None, key="mid.2"), attachments=(
        Attachment("story_mention", "https://cdn.example/s.jpg", None, None, "null"),))
    decision = decide(mention, st, wfs, SETTINGS, NOW + 5)
    assert decision.workflow == "mention"
    assert decision.actions == (SendText("Thanks for the shoutout!"),)
    assert decision.state.awaiting == st.awaiting
    assert any("a message without text is no answer" in line for line in decision.trace)


def test_choice_question_offers_quick_replies() -> None:
    wfs = steps_wf(
        "    - ask: {field: level, prompt: 'Level?', type: choice, choices: [Beginner, Pro]}\n"
    )
    decision = decide(dm("go"), state(), wfs, SETTINGS, NOW)
    assert decision.actions == (
        SendText("Level?", (QuickReplySpec("Beginner", "Beginner"), QuickReplySpec("Pro", "Pro"))),
    )


def test_ask_skipped_when_field_known() -> None:
    decision = decide(dm("guide"), state(fields={"email": "a@b.io"}), ask_wfs(), SETTINGS, NOW)
    assert decision.actions == (SendText("Sure!"), SendText("Sent to a@b.io 📩"), SetTag("lead"))
    assert decision.state.awaiting is None


def test_stale_question_is_dropped_and_triggers_run() -> None:
    wfs = ask_wfs()
    st = decide(dm("guide"), state(), wfs, SETTINGS, NOW).state
    later = NOW + 2 * 86400
    decision = decide(dm("guide", key="mid.9", at=later), st, wfs, SETTINGS, later)
    assert any("dropped stale question" in line for line in decision.trace)
    assert decision.actions == (SendText("Sure!"), SendText("What's your email?"))
    assert decision.state.awaiting == Awaiting("lead", 1, "email", "email", 0, later)


TAP_WFS = ASK_WF % "stop" + """
- name: book
  trigger: {postback: {payload: [BOOK_YES]}}
  actions:
    - reply: "Here are my free times"
"""


@pytest.mark.parametrize("decide_fn", [decide, decide_scan])
def test_a_tap_a_postback_workflow_answers_leaves_a_pending_question_pending(
    decide_fn: Any,
) -> None:
    """A chip from an earlier message ("Yes please" -> BOOK_YES) tapped while a question
    waits: the booking workflow answers it; the email question is still pending."""
    wfs = workflows(TAP_WFS)
    st = decide_fn(dm("guide"), state(), wfs, SETTINGS, NOW).state
    tap = decide_fn(dm("Yes please", key="mid.2", qr="BOOK_YES"), st, wfs, SETTINGS, NOW + 5)
    assert tap.workflow == "book"
    assert tap.actions == (SendText("Here are my free times"),)
    assert tap.state.awaiting == st.awaiting
    assert any("still pending" in line for line in tap.trace)
    # A tap no workflow answers is still read as the answer (and re-asked here).
    other = decide_fn(dm("Maybe", key="mid.3", qr="MAYBE"), st, wfs, SETTINGS, NOW + 6)
    assert other.workflow == "lead"
    assert other.actions == (SendText("Hmm, that doesn't look like an email"),)


def test_a_choice_of_the_question_itself_is_its_answer_even_if_a_workflow_names_it() -> None:
    wfs = workflows("""
- name: level
  trigger: {dm: {keywords: [go]}}
  actions:
    - ask: {field: level, prompt: "Level?", type: choice, choices: [Beginner, Pro]}
- name: pro-tap
  trigger: {postback: {payload: [Pro]}}
  actions:
    - reply: "tapped"
""")
    st = decide(dm("go"), state(), wfs, SETTINGS, NOW).state
    answer = decide(dm("Pro", key="mid.2", qr="Pro"), st, wfs, SETTINGS, NOW + 5)
    assert answer.workflow == "level" and answer.state.fields["level"] == "Pro"


def test_a_question_whose_step_was_edited_since_is_dropped() -> None:
    """Asked "Which city?" (field city); the creator then put another question at that
    step: the answer must not land in the new question's field."""
    before = steps_wf("    - ask: {field: city, prompt: 'Which city?'}\n    - reply: ok\n")
    after = steps_wf("    - ask: {field: goal, prompt: 'Your goal?'}\n    - reply: ok\n")
    st = decide(dm("go"), state(), before, SETTINGS, NOW).state
    answer = decide(dm("Berlin", key="mid.2"), st, after, SETTINGS, NOW + 5)
    assert "goal" not in answer.state.fields and answer.state.awaiting is None
    assert any("dropped question" in line for line in answer.trace)


def test_ask_on_a_comment_uses_the_private_reply_then_continues_in_dms() -> None:
    wfs = workflows("""
- name: c
  trigger: {comment: {keywords: [guide]}}
  actions:
    - ask: {field: email, prompt: "Where should I send it?", type: email}
    - reply: "Sent to {email}"
""")
    first = decide(comment("guide"), state(), wfs, SETTINGS, NOW)
    assert first.actions == (PrivateReply("17900", "Where should I send it?"),)
    answer = decide(dm("a@b.io", key="mid.2"), first.state, wfs, SETTINGS, NOW + 60)
    assert answer.actions == (SetField("email", "a@b.io"), SendText("Sent to a@b.io"))


# --- delay, resume, handoff ---------------------------------------------------------------

DELAY_WF = """
- name: drip
  trigger: {dm: {keywords: [guide]}, comment: {keywords: [guide]}}
  actions:
    - reply: Here you go
    - delay: 10m
    - reply: ["Did you read it?", "Any questions?"]
    - delay: 1h
    - tag: nurtured
"""


def test_delay_schedules_and_resume_continues() -> None:
    wfs = workflows(DELAY_WF)
    first = decide(dm("guide"), state(), wfs, SETTINGS, NOW)
    assert first.actions == (SendText("Here you go"), Schedule(NOW + 600, "drip", 2, text="guide"))
    second = resume(first.state, wfs, SETTINGS, "drip", 2, NOW + 600)
    assert second.workflow == "drip"
    text = second.actions[0]
    assert isinstance(text, SendText) and text.text in ("Did you read it?", "Any questions?")
    assert second.actions[1:] == (Schedule(NOW + 600 + 3600, "drip", 4),)
    assert resume(first.state, wfs, SETTINGS, "drip", 2, NOW + 600) == second
    third = resume(second.state, wfs, SETTINGS, "drip", 4, NOW + 4200)
    assert third.actions == (SetTag("nurtured"),)
    assert Schedule.type in {a.type for a in first.actions}


def test_delay_after_a_comment_keeps_the_comment() -> None:
    wfs = workflows(DELAY_WF)
    first = decide(comment("guide"), state(), wfs, SETTINGS, NOW)
    assert first.actions == (
        PrivateReply("17900", "Here you go"),
        # The continuation carries what became of the comment's private reply: made.
        Schedule(NOW + 600, "drip", 2, "17900", public_ok=True, comment_at=NOW, text="guide",
                 private_used=True, private_made=True),
    )
    # The private reply was used before the delay and the contact never answered.
    later = resume(first.state, wfs, SETTINGS, "drip", 2, NOW + 600, comment_id="17900",
                   comment_at=NOW, public_ok=True, private_used=True, private_made=True)
    assert later.actions == (
        Schedule(NOW + 4200, "drip", 4, "17900", public_ok=True, comment_at=NOW,
                 private_used=True, private_made=True),
    )
    assert any("one private reply" in line for line in later.trace)
    # Had they answered in DMs meanwhile, the follow-up goes as a DM.
    answered = ConversationState.from_dict({**first.state.to_dict(), "last_inbound_at": NOW + 300})
    dm_later = resume(answered, wfs, SETTINGS, "drip", 2, NOW + 600, comment_id="17900")
    assert isinstance(dm_later.actions[0], SendText)


PUBLIC_AFTER_DELAY = """
- name: c2dm
  trigger: {comment: {keywords: [guide], replies: true}}
  actions:
    - private_reply: Sent you the guide!
    - delay: 1m
    - public_reply: ["Check your DMs", "Sent!"]
"""


@pytest.mark.parametrize(
    ("parent", "public"),
    [(None, True), ("17800", False)],
    ids=["top-level comment", "reply to a comment"],
)
def test_public_reply_after_a_delay_answers_the_comment(parent: str | None, public: bool) -> None:
    """Found by the session-11 crash audit: the continuation had no comment, so a
    ``public_reply`` after a ``delay`` was always skipped ("only top-level post comments")."""
    wfs = workflows(PUBLIC_AFTER_DELAY)
    first = decide(comment("guide", parent=parent), state(), wfs, SETTINGS, NOW)
    (private, schedule) = first.actions
    assert private == PrivateReply("17900", "Sent you the guide!")
    assert isinstance(schedule, Schedule) and schedule.public_ok is public
    later = resume(first.state, wfs, SETTINGS, "c2dm", schedule.step, schedule.run_at,
                   comment_id=schedule.comment_id, comment_at=schedule.comment_at,
                   public_ok=schedule.public_ok)
    if public:
        (reply,) = later.actions
        assert isinstance(reply, PublicReply) and reply.comment_id == "17900"
        assert reply.text in ("Check your DMs", "Sent!")
    else:
        assert later.actions == ()
        assert any("skipped public_reply" in line for line in later.trace)


def test_text_is_the_answered_message_after_a_delay_too() -> None:
    """Found by the s11 workflow audit: {text} was empty in every step after a delay."""
    wfs = steps_wf("    - reply: 'you said: {text}'\n    - delay: 2h\n"
                   "    - reply: 'following up on {text}'\n")
    first = decide(dm("go for it"), state(), wfs, SETTINGS, NOW)
    (said, schedule) = first.actions
    assert said == SendText("you said: go for it")
    assert isinstance(schedule, Schedule) and schedule.text == "go for it"
    later = resume(first.state, wfs, SETTINGS, "w", schedule.step, schedule.run_at,
                   text=schedule.text)
    assert later.actions == (SendText("following up on go for it"),)


def test_private_reply_after_a_delay_keeps_the_seven_days() -> None:
    """A delay that ends more than 7 days after the comment: Meta refuses a private reply
    then, so the engine refuses it as it does without a delay."""
    wfs = workflows("""
- name: late
  trigger: {comment: {keywords: [guide]}}
  actions:
    - delay: 8d
    - private_reply: Here it is
""")
    first = decide(comment("guide"), state(), wfs, SETTINGS, NOW)
    (schedule,) = first.actions
    assert isinstance(schedule, Schedule) and schedule.comment_at == NOW
    later = resume(first.state, wfs, SETTINGS, "late", schedule.step, schedule.run_at,
                   comment_id=schedule.comment_id, comment_at=schedule.comment_at)
    assert later.actions == ()
    assert any("older than 7 days" in line for line in later.trace)


@pytest.mark.parametrize(
    ("st", "name", "step", "trace"),
    [
        (state(paused_until=NOW + 1000), "drip", 2, "paused until"),
        (state(), "gone", 2, "no longer exists"),
        (state(), "drip", 9, "no longer exists"),
    ],
)
def test_resume_dropped(st: ConversationState, name: str, step: int, trace: str) -> None:
    decision = resume(st, workflows(DELAY_WF), SETTINGS, name, step, NOW)
    assert decision == Decision(None, (), st, decision.trace)
    assert trace in decision.trace[0]


def test_handoff_pauses_and_notifies_then_stops() -> None:
    wfs = steps_wf(
        "    - handoff: {pause_for: 2h, note: 'wants {plan|a call}'}\n    - reply: never\n"
    )
    decision = decide(dm("go"), state(username="anna"), wfs, SETTINGS, NOW)
    assert decision.actions == (
        HandOff(7200, "wants a call"),
        Notify("@anna needs you (w): wants a call"),
    )
    assert decision.state.paused_until == NOW + 7200
    # While paused, the same keyword fires nothing.
    again = decide(dm("go", key="mid.2"), decision.state, wfs, SETTINGS, NOW + 60)
    assert again.actions == () and again.workflow is None


def test_handoff_default_pause() -> None:
    decision = decide(dm("go"), state(), steps_wf("    - handoff:\n"), SETTINGS, NOW)
    assert decision.actions[0] == HandOff(43200, "")
    assert decision.state.paused_until == NOW + 43200


# --- serialisation ------------------------------------------------------------------------

ALL_ACTIONS: list[Action] = [
    SendText("hi {link:x}", (QuickReplySpec("Yes", "Y"),)),
    SendMedia("video", "https://x.example/v.mp4"),
    SendButtons("Book?", (Button("Go", url="https://x.example"), Button("No", payload="N"))),
    SendTemplate((TemplateCard("T", "S", "https://x.example/i.png", "https://x.example",
                               (Button("B", payload="P"),)), TemplateCard("Bare"))),
    PrivateReply("c1", "hey"),
    PublicReply("c1", "thanks"),
    PublicReply("c1", "Sent it to your DMs!", after_private=True),
    GenerateAIReply("auto", "c1"),
    GenerateAIReply("draft"),
    SetTag("lead"),
    RemoveTag("cold"),
    SetField("email", "a@b.io"),
    SetStage("engaged"),
    ScoreLead(10, "price"),
    OfferBooking("Pick one"),
    OfferBooking(),
    HandOff(3600, "note"),
    Notify("text"),
    Schedule(1717408800.5, "drip", 3, "c1"),
    Schedule(1717408800.5, "drip", 3, "c1", public_ok=True, comment_at=1717400000.25),
    Schedule(1.0, "drip", 1),
    TypingOn(),
]  # fmt: skip


@pytest.mark.parametrize("action", ALL_ACTIONS, ids=lambda a: a.type)
def test_action_round_trip(action: Action) -> None:
    payload = json.loads(json.dumps(action.to_dict()))
    assert payload["type"] == action.type
    assert action_from_dict(payload) == action


def test_action_from_dict_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown action type 'explode'"):
        action_from_dict({"type": "explode"})
    with pytest.raises(ValueError, match="bad set_tag action"):
        action_from_dict({"type": "set_tag"})


def test_state_json_round_trip() -> None:
    st = state(
        username="anna", tags=frozenset({"lead", "vip"}), fields={"email": "a@b.io", "plan": "ñ"},
        stage="engaged", last_inbound_at=NOW, paused_until=NOW + 5, is_new=False,
        awaiting=Awaiting("lead", 2, "email", "email", 1, NOW), fired={"lead": NOW - 1.5},
        follower=True,
    )  # fmt: skip
    text = st.to_json()
    assert ConversationState.from_json(text) == st
    assert hash(ConversationState.from_json(text)) == hash(st)
    assert ConversationState.from_json(state().to_json()) == state()


def test_is_message_marks_what_needs_the_window() -> None:
    sends = {a.type for a in ALL_ACTIONS if is_message(a)}
    assert sends == {"send_text", "send_media", "send_buttons", "send_template",
                     "generate_ai_reply", "offer_booking", "typing_on"}  # fmt: skip
    assert not is_message(GenerateAIReply("draft"))


def test_needs_follower() -> None:
    plain = steps_wf("    - tag: x\n")
    gated = workflows("- {name: f, trigger: {fallback: true}, when: {follower: true}, actions: [{tag: x}]}")
    assert not needs_follower(plain)
    assert needs_follower(plain + gated)
