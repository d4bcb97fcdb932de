"""Table-driven tests of decide(): triggers and match modes, priority, conditions, and the
rules that stop automation (echoes, own comments, pauses, standby)."""

# Table rows read best one per line, so long lines are allowed here.
# ruff: noqa: E501

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from instaset.engine.actions import SendText
from instaset.engine.decide import Decision, decide
from instaset.engine.model import Workflow
from instaset.engine.settings import EngineSettings
from instaset.engine.state import ConversationState
from instaset.events import (
    Attachment,
    CommentEvent,
    Event,
    EventKind,
    MessageEvent,
    PostbackEvent,
    Referral,
    ReferralEvent,
    StoryRef,
)

ACCOUNT = "17841400000000001"
USER = "5260000000000001"
TZ = ZoneInfo("Europe/Madrid")


def local(y: int, mo: int, d: int, h: int, mi: int = 0) -> float:
    """Unix time of a wall-clock moment in the creator's timezone (Europe/Madrid)."""
    return datetime(y, mo, d, h, mi, tzinfo=TZ).timestamp()


NOW = local(2024, 6, 3, 12)  # Monday 12:00 in Madrid (10:00 UTC)
SETTINGS = EngineSettings(ACCOUNT, timezone="Europe/Madrid")


def dm(
    text: str | None = "hi",
    *,
    key: str = "mid.1",
    at: float = NOW,
    qr: str | None = None,
    story: bool = False,
    attachments: tuple[Attachment, ...] = (),
    ref: str | None = None,
    echo: bool = False,
    standby: bool = False,
) -> MessageEvent:
    sender, recipient = (ACCOUNT, USER) if echo else (USER, ACCOUNT)
    return MessageEvent(
        kind=EventKind.ECHO if echo else EventKind.MESSAGE,
        account_id=ACCOUNT,
        dedupe_key=key,
        occurred_at=at,
        contact_id=USER,
        standby=standby,
        raw="{}",
        sender_id=sender,
        recipient_id=recipient,
        mid=key,
        text=text,
        attachments=attachments,
        is_echo=echo,
        is_self=False,
        is_unsupported=False,
        quick_reply_payload=qr,
        reply_to_mid=None,
        reply_to_story=StoryRef("st1", "https://cdn.example/st1") if story else None,
        referral=Referral(ref, "SHORTLINK", "OPEN_THREAD", None) if ref else None,
    )


def postback(payload: str, *, title: str = "Book a call", key: str = "pb.1") -> PostbackEvent:
    return PostbackEvent(
        kind=EventKind.POSTBACK, account_id=ACCOUNT, dedupe_key=key, occurred_at=NOW,
        contact_id=USER, standby=False, raw="{}", sender_id=USER, recipient_id=ACCOUNT,
        mid="pbmid", title=title, payload=payload,
    )  # fmt: skip


def referral(ref: str) -> ReferralEvent:
    return ReferralEvent(
        kind=EventKind.REFERRAL, account_id=ACCOUNT, dedupe_key="ref.1", occurred_at=NOW,
        contact_id=USER, standby=False, raw="{}", sender_id=USER, recipient_id=ACCOUNT,
        referral=Referral(ref, "SHORTLINK", "OPEN_THREAD", None),
    )  # fmt: skip


def comment(
    text: str = "guide please",
    *,
    media: str = "1789001",
    parent: str | None = None,
    live: bool = False,
    from_id: str = USER,
) -> CommentEvent:
    return CommentEvent(
        kind=EventKind.LIVE_COMMENT if live else EventKind.COMMENT, account_id=ACCOUNT,
        dedupe_key="c.1", occurred_at=NOW, contact_id=from_id, standby=False, raw="{}",
        comment_id="c1", text=text, from_id=from_id, from_username="anna", media_id=media,
        media_product_type="FEED", parent_id=parent,
    )  # fmt: skip


STORY_MENTION = (Attachment("story_mention", "https://cdn.example/s", None, None, "{}"),)
IMAGE = (Attachment("image", "https://cdn.example/i.jpg", None, None, "{}"),)


def state(**kw: Any) -> ConversationState:
    return ConversationState(ACCOUNT, USER, **kw)


def workflows(text: str) -> list[Workflow]:
    return [Workflow.model_validate(w) for w in yaml.safe_load(text)]


def run(wfs: str, event: Event, st: ConversationState | None = None, now: float = NOW) -> Decision:
    st = st or state(is_new=False, last_inbound_at=NOW - 60)
    return decide(event, st, workflows(wfs), SETTINGS, now)


def one(trigger: str, name: str = "w") -> str:
    """A one-workflow YAML list with ``trigger`` (a flow mapping) and a reply step."""
    return f"- {{name: {name}, trigger: {trigger}, actions: [{{reply: hello}}]}}\n"


# --- triggers and match modes -------------------------------------------------------------

TRIGGER_ROWS: list[tuple[str, str, Event, str | None, str]] = [
    # id, trigger, event, expected workflow, trace substring
    (
        "word",
        "{dm: {keywords: [guide]}}",
        dm("Send me the GUIDE please"),
        "w",
        "'guide' matched (word)",
    ),
    ("word-not-inside", "{dm: {keywords: [guide]}}", dm("guidelines?"), None, "no workflow"),
    (
        "contains-inside",
        "{dm: {keywords: [guide], match: contains}}",
        dm("guidelines?"),
        "w",
        "(contains)",
    ),
    ("phrase-word", "{dm: {keywords: [free guide]}}", dm("the FREE  guide!"), "w", "'free guide'"),
    ("accent-kw", "{dm: {keywords: [guía]}}", dm("quiero la guia"), "w", "'guía' matched"),
    ("accent-text", "{dm: {keywords: [guia]}}", dm("Quiero la GUÍA"), "w", "'guia' matched"),
    ("emoji", "{dm: {keywords: ['🔥']}}", dm("I want it🔥🔥"), "w", "'🔥' matched"),
    ("emoji-vs16", "{dm: {keywords: ['❤']}}", dm("❤️ love it"), "w", "matched"),
    ("emoji-absent", "{dm: {keywords: ['🔥']}}", dm("fire"), None, "no workflow"),
    ("exact", "{dm: {keywords: [guide], match: exact}}", dm("  Guide! "), "w", "(exact)"),
    (
        "exact-not-part",
        "{dm: {keywords: [guide], match: exact}}",
        dm("the guide"),
        None,
        "no workflow",
    ),
    (
        "any-word",
        "{dm: {keywords: [free guide], match: any_word}}",
        dm("free stuff?"),
        "w",
        "(any_word)",
    ),
    (
        "any-word-none",
        "{dm: {keywords: [free guide], match: any_word}}",
        dm("freedom"),
        None,
        "no workflow",
    ),
    (
        "regex",
        r"{dm: {keywords: ['\b(price|cost)s?\b'], match: regex}}",
        dm("What's the PRICE?"),
        "w",
        "(regex)",
    ),
    (
        "regex-accent",
        "{dm: {keywords: ['^cuanto'], match: regex}}",
        dm("¿Cuánto cuesta?"),
        None,
        "no workflow",
    ),
    (
        "regex-folded",
        "{dm: {keywords: ['cuanto'], match: regex}}",
        dm("Cuánto cuesta"),
        "w",
        "(regex)",
    ),
    ("dm-on-story-reply", "{dm: {keywords: [guide]}}", dm("guide", story=True), "w", "dm keyword"),
    ("story-reply-any", "{story_reply: {}}", dm("so cool", story=True), "w", "any story reply"),
    (
        "story-reply-kw",
        "{story_reply: {keywords: [cool]}}",
        dm("so cool", story=True),
        "w",
        "story reply keyword",
    ),
    ("story-reply-not-dm", "{story_reply: {}}", dm("so cool"), None, "no workflow"),
    (
        "story-mention",
        "{story_mention: true}",
        dm(None, attachments=STORY_MENTION),
        "w",
        "story mention",
    ),
    (
        "story-mention-null",
        "{story_mention: }",
        dm(None, attachments=STORY_MENTION),
        "w",
        "story mention",
    ),
    ("postback", "{postback: {payload: BOOK}}", postback("BOOK"), "w", "postback 'BOOK'"),
    (
        "ice-breaker",
        "{postback: {payload: [PRICES, BOOK]}}",
        postback("PRICES", title="Prices?"),
        "w",
        "postback 'PRICES'",
    ),
    ("postback-other", "{postback: {payload: BOOK}}", postback("MENU"), None, "no workflow"),
    (
        "quick-reply",
        "{postback: {payload: BOOK}}",
        dm("Book a call", qr="BOOK"),
        "w",
        "quick reply 'BOOK'",
    ),
    ("referral", "{referral: {ref: ig-bio}}", referral("ig-bio"), "w", "referral ref 'ig-bio'"),
    ("referral-other", "{referral: {ref: ig-bio}}", referral("ad-7"), None, "no workflow"),
    ("referral-any", "{referral: {}}", referral("ad-7"), "w", "referral 'ad-7'"),
    ("referral-in-dm", "{referral: {ref: ig-bio}}", dm("hello", ref="ig-bio"), "w", "referral ref"),
    ("comment-any", "{comment: {}}", comment("nice"), "w", "any comment"),
    (
        "comment-kw",
        "{comment: {keywords: [GUIDE]}}",
        comment("Guide 🙏"),
        "w",
        "comment keyword 'GUIDE'",
    ),
    (
        "comment-media",
        "{comment: {media: ['1789001']}}",
        comment(media="1789001"),
        "w",
        "any comment",
    ),
    (
        "comment-other-media",
        "{comment: {media: ['1789001']}}",
        comment(media="999"),
        None,
        "no workflow",
    ),
    ("comment-reply-skipped", "{comment: {}}", comment(parent="c0"), None, "no workflow"),
    ("comment-replies-on", "{comment: {replies: true}}", comment(parent="c0"), "w", "any comment"),
    ("comment-not-live", "{comment: {}}", comment(live=True), None, "no workflow"),
    (
        "live-comment",
        "{live_comment: {keywords: [link]}}",
        comment("link?", live=True),
        "w",
        "live comment keyword",
    ),
    ("dm-not-comment", "{dm: {keywords: [guide]}}", comment("guide"), None, "no workflow"),
    (
        "several-kinds",
        "{dm: {keywords: [x]}, comment: {keywords: [guide]}}",
        comment("guide"),
        "w",
        "comment keyword",
    ),
]


@pytest.mark.parametrize(
    ("trigger", "event", "expected", "trace"),
    [pytest.param(*row[1:], id=row[0]) for row in TRIGGER_ROWS],
)
def test_trigger(trigger: str, event: Event, expected: str | None, trace: str) -> None:
    decision = run(one(trigger), event)
    assert decision.workflow == expected
    assert any(trace in line for line in decision.trace), decision.trace
    assert bool(decision.actions) == (expected is not None)


FIRST_AND_FALLBACK = """
- {name: welcome, trigger: {first_message: true}, actions: [{reply: Welcome!}]}
- name: guide
  trigger: {dm: {keywords: [guide]}}
  when: {cooldown: 24h}
  actions: [{reply: Here}]
- {name: sorry, trigger: {fallback: true}, actions: [{reply: "Didn't get that"}]}
"""


@pytest.mark.parametrize(
    ("event", "st", "expected", "trace"),
    [
        pytest.param(dm("hello"), state(), "welcome", "first message", id="new-contact"),
        pytest.param(dm("hello"), state(is_new=False), "sorry", "fallback", id="fallback"),
        pytest.param(dm("guide"), state(is_new=False), "guide", "keyword", id="keyword"),
        pytest.param(
            dm("guide"), state(is_new=False, fired={"guide": NOW - 60}), None, "cooldown until",
            id="blocked-keyword-no-fallback",
        ),
        pytest.param(dm(None, attachments=IMAGE), state(is_new=False), None, "no workflow",
                     id="image-no-fallback"),
        pytest.param(comment("random"), state(is_new=False), None, "no workflow",
                     id="comment-no-fallback"),
        pytest.param(postback("X"), state(), None, "no workflow", id="postback-not-first-message"),
    ],
)  # fmt: skip
def test_first_message_and_fallback(
    event: Event, st: ConversationState, expected: str | None, trace: str
) -> None:
    decision = decide(event, st, workflows(FIRST_AND_FALLBACK), SETTINGS, NOW)
    assert decision.workflow == expected
    assert any(trace in line for line in decision.trace), decision.trace


def test_first_message_clears_is_new() -> None:
    first = decide(dm("hello"), state(), workflows(FIRST_AND_FALLBACK), SETTINGS, NOW)
    assert first.workflow == "welcome" and first.state.is_new is False
    second = decide(dm("hello", key="mid.2"), first.state, workflows(FIRST_AND_FALLBACK),
                    SETTINGS, NOW + 5)  # fmt: skip
    assert second.workflow == "sorry"


PRIORITY = """
- {name: low, priority: 1, trigger: {dm: {keywords: [guide]}}, actions: [{reply: low}]}
- {name: tie-a, priority: 5, trigger: {dm: {keywords: [guide]}}, actions: [{reply: a}]}
- {name: tie-b, priority: 5, trigger: {dm: {keywords: [guide]}}, actions: [{reply: b}]}
- {name: 'off', priority: 9, enabled: false, trigger: {dm: {keywords: [guide]}}, actions: [{reply: x}]}
"""


def test_priority_then_file_order() -> None:
    wfs = workflows(PRIORITY)
    assert decide(dm("guide"), state(), wfs, SETTINGS, NOW).workflow == "tie-a"
    # Reordering the file flips the tie, and only the tie.
    swapped = [wfs[0], wfs[2], wfs[1], wfs[3]]
    assert decide(dm("guide"), state(), swapped, SETTINGS, NOW).workflow == "tie-b"
    # A higher-priority workflow whose condition fails lets the next one fire.
    blocked = [wfs[0], wfs[1].model_copy(update={"when": wfs[1].when.model_copy(
        update={"tags_any": ("vip",)})})]  # fmt: skip
    decision = decide(dm("guide"), state(), blocked, SETTINGS, NOW)
    assert decision.workflow == "low"
    assert any("skipped tie-a" in line and "vip" in line for line in decision.trace)


# --- conditions ---------------------------------------------------------------------------

COND_ROWS: list[tuple[str, str, dict[str, Any], float, bool, str]] = [
    # id, when, state kwargs, now, fires, trace substring when skipped
    ("tags-any", "{tags_any: [lead, vip]}", {"tags": {"vip"}}, NOW, True, ""),
    ("tags-any-miss", "{tags_any: [lead, vip]}", {"tags": {"x"}}, NOW, False, "none of the tags"),
    ("tags-all", "{tags_all: [a, b]}", {"tags": {"a"}}, NOW, False, "missing tags ['b']"),
    ("tags-none", "{tags_none: customer}", {"tags": {"customer"}}, NOW, False, "excluded tags"),
    ("tags-none-ok", "{tags_none: customer}", {}, NOW, True, ""),
    (
        "field-exists",
        "{fields: {email: {exists: true}}}",
        {"fields": {"email": "a@b.co"}},
        NOW,
        True,
        "",
    ),
    ("field-missing", "{fields: {email: {exists: true}}}", {}, NOW, False, "email is not set"),
    (
        "field-absent",
        "{fields: {email: {exists: false}}}",
        {"fields": {"email": "a@b.co"}},
        NOW,
        False,
        "already set",
    ),
    ("field-equals", "{fields: {plan: PRO}}", {"fields": {"plan": "pro"}}, NOW, True, ""),
    (
        "field-one-of",
        "{fields: {plan: [basic, pro]}}",
        {"fields": {"plan": "vip"}},
        NOW,
        False,
        "not one of",
    ),
    ("stage", "{stage: [new, engaged]}", {"stage": "engaged"}, NOW, True, ""),
    (
        "stage-miss",
        "{stage: [new, engaged]}",
        {"stage": "customer"},
        NOW,
        False,
        "stage is 'customer'",
    ),
    # The lead stage scoring stored (qualified, booked...) is what the condition tests; the
    # workflow-set stage only when the contact was never scored (found by the s11 audit:
    # a qualified lead matched `stage: [new]`).
    ("stage-lead", "{stage: [qualified]}", {"lead_stage": "qualified"}, NOW, True, ""),
    (
        "stage-lead-miss",
        "{stage: [new]}",
        {"stage": "new", "lead_stage": "qualified"},
        NOW,
        False,
        "stage is 'qualified'",
    ),
    # A stage of the creator's own (scoring ranks only its stages, so the lead row holds
    # engaged or the like): still seen (found by the s11 review).
    ("stage-own", "{stage: [vip]}", {"stage": "vip", "lead_stage": "engaged"}, NOW, True, ""),
    (
        "stage-own-miss",
        "{stage: [new]}",
        {"stage": "vip", "lead_stage": "engaged"},
        NOW,
        False,
        "stage is 'engaged' and 'vip'",
    ),
    ("follower", "{follower: true}", {"follower": True}, NOW, True, ""),
    ("follower-not", "{follower: true}", {"follower": False}, NOW, False, "is not a follower"),
    ("follower-unknown", "{follower: true}", {}, NOW, False, "follower status unknown"),
    ("non-follower", "{follower: false}", {"follower": False}, NOW, True, ""),
    (
        "cooldown-active",
        "{cooldown: 24h}",
        {"fired": {"w": NOW - 3600}},
        NOW,
        False,
        "cooldown until 2024-06-04T09:00:00Z",
    ),
    ("cooldown-over", "{cooldown: 24h}", {"fired": {"w": NOW - 86401}}, NOW, True, ""),
    ("cooldown-other-wf", "{cooldown: 24h}", {"fired": {"other": NOW}}, NOW, True, ""),
    (
        "hours-in",
        "{hours: {days: mon-fri, from: '09:00', to: '18:00'}}",
        {},
        local(2024, 6, 3, 9, 30),
        True,
        "",
    ),
    (
        "hours-unquoted-yaml",
        "{hours: {days: mon-fri, from: 9:00, to: 18:00}}",
        {},
        local(2024, 6, 3, 17, 59),
        True,
        "",
    ),
    (
        "hours-end-excluded",
        "{hours: {days: mon-fri, from: '09:00', to: '18:00'}}",
        {},
        local(2024, 6, 3, 18),
        False,
        "outside hours",
    ),
    (
        "hours-weekend",
        "{hours: {days: mon-fri, from: '09:00', to: '18:00'}}",
        {},
        local(2024, 6, 8, 10),
        False,
        "now Sat 10:00 Europe/Madrid",
    ),
    # 07:30 UTC is 09:30 in Madrid: in hours only because the creator's timezone is used.
    (
        "hours-timezone",
        "{hours: {from: '09:00', to: '10:00'}}",
        {},
        datetime(2024, 6, 3, 7, 30, tzinfo=ZoneInfo("UTC")).timestamp(),
        True,
        "",
    ),
    (
        "quiet-late",
        "{quiet_hours: {from: '22:00', to: '08:00'}}",
        {},
        local(2024, 6, 3, 23, 30),
        False,
        "quiet hours",
    ),
    (
        "quiet-early",
        "{quiet_hours: {from: '22:00', to: '08:00'}}",
        {},
        local(2024, 6, 4, 3),
        False,
        "quiet hours",
    ),
    (
        "quiet-day",
        "{quiet_hours: {from: '22:00', to: '08:00'}}",
        {},
        local(2024, 6, 4, 12),
        True,
        "",
    ),
    # An overnight span belongs to the day it starts: Friday night covers Saturday 01:00 ...
    (
        "quiet-fri-night",
        "{quiet_hours: {days: fri, from: '22:00', to: '02:00'}}",
        {},
        local(2024, 6, 8, 1),
        False,
        "quiet hours",
    ),
    # ... but Friday 01:00 is Thursday night, which is not quiet.
    (
        "quiet-thu-night",
        "{quiet_hours: {days: fri, from: '22:00', to: '02:00'}}",
        {},
        local(2024, 6, 7, 1),
        True,
        "",
    ),
    ("weekends-alias", "{hours: {days: weekends}}", {}, local(2024, 6, 9, 20), True, ""),
]


@pytest.mark.parametrize(
    ("when", "st", "now", "fires", "trace"),
    [pytest.param(*row[1:], id=row[0]) for row in COND_ROWS],
)
def test_condition(when: str, st: dict[str, Any], now: float, fires: bool, trace: str) -> None:
    wfs = f"- {{name: w, trigger: {{dm: {{keywords: [go]}}}}, when: {when}, actions: [{{reply: ok}}]}}"
    decision = run(wfs, dm("go", at=now), state(is_new=False, **st), now)
    assert (decision.workflow == "w") == fires, decision.trace
    if fires:
        assert decision.state.fired["w"] == now
    else:
        assert decision.actions == ()
        assert any(trace in line for line in decision.trace), decision.trace


@pytest.mark.parametrize(
    ("last_inbound", "when", "fires"),
    [
        (NOW - 3600, "{window_open: true}", True),
        (NOW - 90000, "{window_open: true}", False),
        (NOW - 90000, "{window_open: false}", True),
        (None, "{window_open: false}", True),
    ],
)
def test_window_condition(last_inbound: float | None, when: str, fires: bool) -> None:
    # A comment does not open the window, so the contact's DM history decides.
    wfs = f"- {{name: w, trigger: {{comment: {{}}}}, when: {when}, actions: [{{tag: seen}}]}}"
    decision = run(wfs, comment(), state(last_inbound_at=last_inbound), NOW)
    assert (decision.workflow == "w") == fires, decision.trace
    assert decision.state.last_inbound_at == last_inbound


# --- rules that stop automation -----------------------------------------------------------

ANY = one("{dm: {keywords: [guide]}, comment: {}, postback: {payload: BOOK}}")


def test_echo_never_triggers() -> None:
    st = state(is_new=False, last_inbound_at=NOW - 100)
    decision = run(ANY, dm("guide", echo=True), st)
    assert decision == Decision(None, (), st, decision.trace)
    assert "sent by the business" in decision.trace[0]


def test_own_comment_never_triggers() -> None:
    st = state()
    decision = run(ANY, comment("guide", from_id=ACCOUNT), st)
    assert decision.workflow is None and decision.actions == () and decision.state == st


def test_paused_conversation_does_bookkeeping_only() -> None:
    st = state(is_new=True, paused_until=NOW + 600, last_inbound_at=NOW - 5000)
    decision = run(ANY, dm("guide", at=NOW - 2), st)
    assert decision.workflow is None and decision.actions == ()
    assert decision.state == replace(st, last_inbound_at=NOW - 2, is_new=False)
    assert "paused until" in decision.trace[0]
    # Once the pause is over, the same message fires.
    later = run(ANY, dm("guide", at=NOW + 601), decision.state, NOW + 601)
    assert later.workflow == "w"


def test_standby_event_does_bookkeeping_only() -> None:
    decision = run(ANY, dm("guide", standby=True), state())
    assert decision.workflow is None and decision.actions == ()
    assert decision.state.last_inbound_at == NOW and "standby" in decision.trace[0]


@pytest.mark.parametrize(
    ("event", "opens_window", "is_new"),
    [
        (dm("x"), True, False),
        (postback("MENU"), True, False),
        (comment("x"), False, True),
        # An ig.me link opening an existing thread resets the window (Meta's m.me-link
        # docs; found by the s11 audit: a referral workflow could never reply to a contact
        # who last wrote more than 24 h before). It is no message: a new contact stays new.
        (referral("a"), True, True),
    ],
)
def test_inbound_bookkeeping(event: Event, opens_window: bool, is_new: bool) -> None:
    decision = run(ANY, event, state(last_inbound_at=NOW - 10 * 86400, is_new=True))
    assert (decision.state.last_inbound_at == NOW) == opens_window
    assert decision.state.is_new == is_new


def test_a_referral_workflow_replies_to_a_contact_whose_window_had_closed() -> None:
    decision = run(one("{referral: {ref: [ig-bio]}}"), referral("ig-bio"),
                   state(last_inbound_at=NOW - 2 * 86400))
    assert decision.actions == (SendText("hello"),)


def test_comment_records_username() -> None:
    assert run(ANY, comment("hey"), state()).state.username == "anna"
    assert run(ANY, comment("hey"), state(username="kept")).state.username == "kept"


def test_decision_is_deterministic() -> None:
    wfs = """
- name: w
  trigger: {dm: {keywords: [guide]}}
  actions:
    - reply: [one, two, three, four, five]
    - tag: lead
"""
    a = run(wfs, dm("guide", key="mid.A"))
    b = run(wfs, dm("guide", key="mid.A"))
    assert a == b
    assert isinstance(a.actions[0], SendText)
    # The variant depends only on the event key: across keys, several variants appear.
    texts = set()
    for i in range(20):
        action = run(wfs, dm("guide", key=f"mid.{i}")).actions[0]
        assert isinstance(action, SendText)
        texts.add(action.text)
    assert len(texts) > 1
    assert texts <= {"one", "two", "three", "four", "five"}


@pytest.mark.parametrize("text", ["What’s the price?", "what's the price", "WHAT‘S THE PRICE"])
def test_curly_apostrophes_match_a_keyword_with_the_ascii_one(text: str) -> None:
    """Found by the s11 audit: iPhones type ’ (smart punctuation), so a keyword such as
    "what's the price" missed iPhone users."""
    decision = run(one("""{dm: {keywords: ["what's the price"]}}"""), dm(text))
    assert decision.workflow == "w"


def test_a_first_message_held_back_by_its_conditions_leaves_it_to_the_fallback() -> None:
    """Found by the s11 audit: a new contact writing outside a `first_message` workflow's
    hours got nothing, where a returning contact got the fallback."""
    wfs = """
- name: welcome
  priority: 1
  trigger: {first_message: true}
  when: {hours: {days: sat, from: '09:00', to: '18:00'}}
  actions: [{reply: welcome}]
- name: guide
  trigger: {dm: {keywords: [guide]}}
  when: {hours: {days: sat, from: '09:00', to: '18:00'}}
  actions: [{reply: guide}]
- name: fb
  trigger: {fallback: true}
  actions: [{reply: "thanks, I'll answer soon"}]
"""
    new = state(is_new=True)
    assert run(wfs, dm("hello"), new).actions == (SendText("thanks, I'll answer soon"),)
    # A keyword held back by its conditions still blocks it: they asked for the guide.
    assert run(wfs, dm("guide please"), new).actions == ()


@pytest.mark.parametrize("text", ["KAYIT", "kayıt", "Kayit olmak istiyorum"])
def test_turkish_dotless_i_folds_like_its_upper_case(text: str) -> None:
    """Found by the s11 audit: casefold makes "KAYIT" "kayit", so the keyword "kayıt"
    (register) missed it."""
    assert run(one("{dm: {keywords: [kayıt]}}"), dm(text)).workflow == "w"
