"""The workflow language: parsing, shorthands, validation errors, and templating."""

# Table rows read best one per line, so long lines are allowed here.
# ruff: noqa: E501

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from instaset import timefmt
from instaset.engine.actions import SendText
from instaset.engine.decide import decide
from instaset.engine.model import (
    MatchMode,
    TriggerKeywords,
    Workflow,
    check_workflow_names,
    parse_clock,
    parse_days,
    parse_duration,
)
from instaset.engine.settings import EngineSettings
from instaset.engine.state import ConversationState, FrozenMap
from instaset.engine.templating import link_names, placeholders, render
from instaset.engine.triggers import fold, match_keywords
from instaset.engine.values import MAX_DURATION

CREATOR_YAML = """
workflows:
  - name: free-guide
    description: Send the free guide to anyone who asks, in DMs or in comments
    priority: 10
    trigger:
      dm: {keywords: ["guide", "free guide", "guía"], match: word}
      comment: {keywords: [guide], media: ["17890012345"], replies: false}
    when:
      tags_none: [customer]
      cooldown: 24h
    actions:
      - reply: "Hey {first_name|there}! Here's the guide: {link:guide}"
      - public_reply: {variants: ["Check your DMs!", "Sent 📩"]}
      - tag: lead
      - ask: {field: email, prompt: "Want the bonus chapter? What's your email?", type: email,
              retry: "That doesn't look like an email", max_retries: 2}
      - reply: {text: "Done! Want to book a call?", quick_replies: [Yes, No]}
  - name: book
    trigger:
      postback: {payload: ["Yes", BOOK]}
    when: {hours: {days: mon-fri, from: "09:00", to: "18:00"}, quiet_hours: {from: 22:00, to: 08:00}}
    actions:
      - offer_booking: true
      - score: {points: 20, reason: wants a call}
  - name: thanks-for-the-mention
    trigger: {story_mention: true}
    actions:
      - reply: "Thank you for sharing! 🙏"
      - notify: "@{username} mentioned you in a story"
  - name: human
    trigger: {dm: {keywords: [human, agent, person], match: any_word}}
    actions:
      - handoff: {pause_for: 12h, note: asked for a human}
  - name: later
    trigger: {fallback: true}
    when: {quiet_hours: {from: "22:00", to: "08:00"}}
    actions:
      - delay: 30s
      - ai_reply: {mode: auto}
"""


def test_creator_example_parses() -> None:
    wfs = [Workflow.model_validate(w) for w in yaml.safe_load(CREATOR_YAML)["workflows"]]
    assert [w.name for w in wfs] == [
        "free-guide",
        "book",
        "thanks-for-the-mention",
        "human",
        "later",
    ]
    assert check_workflow_names(wfs) == []
    guide = wfs[0]
    assert guide.trigger.kinds() == ("dm", "comment")
    assert guide.when.cooldown == 86400
    assert [s.kind for s in guide.actions] == ["reply", "public_reply", "tag", "ask", "reply"]
    reply = guide.actions[4].reply
    assert reply is not None and [q.title for q in reply.quick_replies] == ["Yes", "No"]
    book = wfs[1]
    assert book.trigger.postback is not None and book.trigger.postback.payload == ("Yes", "BOOK")
    assert book.when.hours is not None and book.when.hours.days == (0, 1, 2, 3, 4)
    assert book.when.quiet_hours is not None
    assert (book.when.quiet_hours.from_, book.when.quiet_hours.to) == (1320, 480)
    assert wfs[4].actions[0].delay == 30


def test_duplicate_names_reported() -> None:
    w = Workflow.model_validate(
        {"name": "a", "trigger": {"fallback": True}, "actions": [{"tag": "x"}]}
    )
    assert check_workflow_names([w, w]) == ["workflow name 'a' is used twice; names must be unique"]


def _wf(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "w",
        "trigger": {"dm": {"keywords": ["go"]}},
        "actions": [{"reply": "hi"}],
    }
    base.update(over)
    return base


@pytest.mark.parametrize(
    ("data", "loc", "message"),
    [
        (_wf(trigger={"dmm": {"keywords": ["go"]}}), "trigger.dmm", "Extra inputs are not permitted"),
        (_wf(trigger={}), "trigger", "trigger needs one of: dm, comment"),
        (_wf(trigger={"dm": {}}), "trigger.dm", "dm needs keywords"),
        (_wf(trigger={"dm": {"keywords": ["("], "match": "regex"}}), "trigger.dm", "invalid regex"),
        (_wf(trigger={"dm": {"keywords": ["go"], "match": "fuzzy"}}), "trigger.dm.match", "'word', 'any_word'"),
        (_wf(actions=[]), "", "actions needs at least one step"),
        (_wf(actions=[{"reply": "x", "tag": "y"}]), "actions.0", "found reply, tag"),
        (_wf(actions=[{"replly": "x"}]), "actions.0.replly", "Extra inputs"),
        (_wf(actions=[{"private_reply": "x"}]), "", "only works on comments"),
        (_wf(actions=[{"delay": "10 minutes"}]), "actions.0.delay", "is not a duration"),
        (_wf(actions=[{"reply": {"text": "x", "quick_replies": [f"q{i}" for i in range(14)]}}]),
         "actions.0.reply.quick_replies", "at most 13"),
        (_wf(actions=[{"reply": {"text": "x", "quick_replies": ["a" * 21]}}]),
         "actions.0.reply.quick_replies.0.title", "at most 20"),
        (_wf(actions=[{"reply": {"text": "x", "variants": ["y"]}}]), "actions.0.reply", "not both"),
        (_wf(actions=[{"ask": {"field": "Email", "prompt": "?"}}]), "actions.0.ask", "must be lowercase"),
        (_wf(actions=[{"ask": {"field": "level", "prompt": "?", "type": "choice"}}]), "actions.0.ask", "needs choices"),
        (_wf(actions=[{"reply": "Hi {First}"}]), "actions.0.reply", "did you mean {first}?"),
        (_wf(actions=[{"buttons": {"text": "x", "buttons": [{"title": "a"}]}}]), "actions.0.buttons.buttons.0", "either url or payload"),
        (_wf(actions=[{"media": {"type": "gif", "url": "https://x"}}]), "actions.0.media.type", "'image'"),
        (_wf(when={"hours": {"from": "25:00"}}), "when.hours.from", "between 00:00 and 24:00"),
        (_wf(when={"hours": {"days": "funday"}}), "when.hours.days", "is not a day"),
        (_wf(when={"cooldwn": "1h"}), "when.cooldwn", "Extra inputs"),
        (_wf(name="has space"), "name", "should match pattern"),
        # durations name the value they refuse
        (_wf(actions=[{"reply": "x"}, {"delay": "0s"}, {"reply": "y"}]), "actions.1.delay", "must be longer than zero (got '0s')"),
        (_wf(when={"cooldown": 0}), "when.cooldown", "must be longer than zero (got 0)"),
        (_wf(actions=[{"handoff": {"pause_for": "1.5x"}}]), "actions.0.handoff.pause_for", "'1.5x' is not a duration (use 30s"),
        (_wf(actions=[{"reply": "x"}, {"delay": "3651d"}, {"reply": "y"}]), "actions.1.delay", "'3651d' is too long: at most 10 years"),
    ],
)  # fmt: skip
def test_validation_errors(data: dict[str, Any], loc: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Workflow.model_validate(data)
    errors = info.value.errors()
    assert any(".".join(str(p) for p in e["loc"]) == loc and message in e["msg"] for e in errors), (
        errors
    )


def test_models_are_frozen() -> None:
    w = Workflow.model_validate(_wf())
    with pytest.raises(ValidationError):
        w.priority = 3  # type: ignore[misc]


# --- durations: timefmt's grammar, whole seconds in 1 s..10 years -------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("15m", 900), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
     ("1h30m", 5400), ("90", 90), (45, 45), (90, 90), (" 1H ", 3600),
     ("1.5h", 5400), ("0.5m", 30), ("2w 3d", 17 * 86400), ("1h 30m", 5400), (" 2W3D ", 17 * 86400),
     # a fraction of a second rounds up, so a positive duration never becomes 0
     ("0.5s", 1), ("1.2s", 2), (1.5, 2), (0.001, 1), ("1.000001s", 2),
     ("3650d", MAX_DURATION), (float(MAX_DURATION), MAX_DURATION), (timedelta(minutes=3), 180)],
)  # fmt: skip
def test_parse_duration(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("bad", "message"),
    [("0s", "^a workflow delay, pause or cooldown must be longer than zero \\(got '0s'\\)$"),
     (0, "must be longer than zero \\(got 0\\)"),
     ("0", "must be longer than zero"), ("0.0h", "must be longer than zero"), (0.0, "must be longer than zero"),
     (-1, "must be longer than zero \\(got -1\\)"), (-0.5, "must be longer than zero"),
     (float("-inf"), "must be longer than zero"), (-(10**400), "must be longer than zero"),
     ("-1", "^'-1' is not a duration \\(use 30s, 15m, 12h, 7d or 1h30m\\)$"),
     (True, "^True is not a duration \\(use 30s"), (False, "^False is not a duration"),
     ("1.5x", "^'1.5x' is not a duration \\(use 30s, 15m, 12h, 7d or 1h30m\\)$"),
     ("", "^'' is not a duration"), ("  ", "is not a duration"), ("10 minutes", "is not a duration"),
     ("h", "is not a duration"), ("1x", "is not a duration"), ("1h-30m", "is not a duration"),
     ("1e3", "is not a duration"), (".5h", "is not a duration"), ("1.5.5h", "is not a duration"),
     (float("nan"), "^nan is not a duration"), (None, "^None is not a duration"), ([1], "is not a duration"),
     ("3651d", "^'3651d' is too long: at most 10 years \\(3650d\\)$"),
     ("3650d 0.5s", "too long: at most 10 years"),  # rounded up past the cap
     ("522w", "too long"), (MAX_DURATION + 1, "too long"), (float("inf"), "too long"),
     ("36501d", "too long: at most 10 years"),  # over timefmt's own 100-year cap too
     (10**400, "^1000000000000000000000000000000000000000\\.\\.\\.\\(401 characters\\) is too long"),
     ("9" * 5000, "too long")],
)  # fmt: skip
def test_parse_duration_rejects(bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(bad)


# Strings people write, right and wrong: the two parsers must agree on every one.
DURATION_SPELLINGS = [
    "30s", "15m", "12h", "7d", "2w", "1h30m", "1h 30m", " 1h  30m ", "2w 3d", "2w3d4h5m6s",
    "1.5h", "0.5m", "0.25d", "1.0s", "10.75 s", "90", " 90 ", "90.5", "007s", "1H", "1 H 30 M",
    "0", "0s", "0.0h", "0h0m", "3650d", "3651d", "36500d", "36501d", "522w", "5215w", "5220w",
    "99999999999d", "1" + "0" * 30 + "s",
    "", " ", "h", "s1", "1x", "1.5x", "10 minutes", "1 hour", "1h-30m", "-1", "-1s", "+1s",
    "1e3", "1e3s", ".5h", "5.h", "1.5.5h", "1,5h", "1_000s", "inf", "nan", "0x10", "½h", "１h",
    "١٢s", "1hh", "h1", "1h30", "30m1", "1 2s", "1d\n2h", "\t45s\n",
]  # fmt: skip


def _timefmt_view(value: object) -> tuple[bool, int | None]:
    """What the workflow parser should answer, derived from timefmt's answer alone."""
    try:
        delta = timefmt.parse_duration(value)
    except ValueError:
        return False, None
    if delta <= timedelta(0) or delta > timedelta(days=3650):  # the workflow-only rules
        return False, None
    return True, math.ceil(delta / timedelta(seconds=1))


def _workflow_view(value: object) -> tuple[bool, int | None]:
    try:
        return True, parse_duration(value)
    except ValueError:
        return False, None


@pytest.mark.parametrize("text", DURATION_SPELLINGS)
def test_workflow_and_config_durations_share_one_grammar(text: str) -> None:
    assert _workflow_view(text) == _timefmt_view(text)


def test_the_spellings_cover_both_answers_and_each_workflow_rule() -> None:
    """The agreement test above is only worth something if the list has right and wrong
    spellings, and values that only the workflow rules (zero, 10 years) refuse."""
    accepted = {t for t in DURATION_SPELLINGS if _workflow_view(t)[0]}
    assert {"1.5h", "2w 3d", "90", "1h30m"} <= accepted
    assert {"1.5x", "", "-1", "10 minutes"}.isdisjoint(accepted)
    only_the_config_reads = {t for t in DURATION_SPELLINGS if _parses(t)} - accepted
    assert {"0", "0s", "3651d", "36500d"} <= only_the_config_reads


def _parses(text: str) -> bool:
    try:
        timefmt.parse_duration(text)
    except ValueError:
        return False
    return True


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.text(alphabet="0123456789.smhdwxH -\t", max_size=12))
def test_any_text_gets_the_same_answer_from_both_parsers(text: str) -> None:
    assert _workflow_view(text) == _timefmt_view(text)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.one_of(st.integers(min_value=-(10**20), max_value=10**20),
                 st.floats(allow_nan=True, allow_infinity=True)))  # fmt: skip
def test_any_number_gets_the_same_answer_from_both_parsers(number: float) -> None:
    assert _workflow_view(number) == _timefmt_view(number)


def test_workflow_steps_accept_the_whole_grammar() -> None:
    data = yaml.safe_load("""
name: w
trigger: {dm: {keywords: [hi]}}
when: {cooldown: 2w 3d}
actions: [{reply: hi}, {delay: 1.5h}, {reply: later}, {delay: 0.5s}, {handoff: {pause_for: 90}}]
""")
    w = Workflow.model_validate(data)
    assert w.when.cooldown == 17 * 86400
    assert [s.delay for s in w.actions if s.delay is not None] == [5400, 1]
    handoff = w.actions[4].handoff
    assert handoff is not None and handoff.pause_for == 90


def test_the_schema_of_workflow_durations_is_the_config_duration_pattern() -> None:
    schema = Workflow.model_json_schema(mode="validation")
    defs = schema["$defs"]
    fields = [defs["ActionStep"]["properties"]["delay"], defs["Conditions"]["properties"]["cooldown"],
              defs["HandoffSpec"]["properties"]["pause_for"]]  # fmt: skip
    for field in fields:
        [duration] = [branch for branch in field["anyOf"] if branch != {"type": "null"}]
        assert {"type": "string", "pattern": timefmt.DURATION_PATTERN} in duration["anyOf"]
        numbers = [b for b in duration["anyOf"] if b.get("type") == "number"]
        assert numbers == [{"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION}]
    # and the schema's pattern (ASCII digits, as in JSON Schema) accepts what the parser reads
    # (upper case units included) and refuses the rest, but for the caps, which a pattern
    # does not count
    pattern = re.compile(timefmt.DURATION_PATTERN, re.ASCII)
    for text in DURATION_SPELLINGS:
        try:
            timefmt.parse_duration(text)
            readable = True
        except ValueError as e:
            readable = "longer than 100 years" in str(e)
        assert bool(pattern.fullmatch(text)) == readable, text


@pytest.mark.parametrize(
    ("value", "days"),
    [("mon-fri", (0, 1, 2, 3, 4)), (["sat", "sun"], (5, 6)), ("fri-mon", (0, 4, 5, 6)),
     ("weekends", (5, 6)), ("daily", tuple(range(7))), (["Monday", "wed"], (0, 2))],
)  # fmt: skip
def test_parse_days(value: object, days: tuple[int, ...]) -> None:
    assert parse_days(value) == days


@pytest.mark.parametrize(
    ("value", "minutes"), [("09:00", 540), ("24:00", 1440), ("0:05", 5), (1080, 1080)]
)
def test_parse_clock(value: object, minutes: int) -> None:
    assert parse_clock(value) == minutes


def test_yaml_booleans_in_text_positions_become_words() -> None:
    data = yaml.safe_load("""
name: w
trigger: {dm: {keywords: [yes, no]}, postback: {payload: [Yes]}}
actions: [{reply: {text: ok, quick_replies: [Yes, No]}}]
""")
    w = Workflow.model_validate(data)
    assert w.trigger.dm is not None and w.trigger.dm.keywords == ("Yes", "No")
    assert match_keywords(w.trigger.dm, "yes please") == "Yes"
    reply = w.actions[0].reply
    assert reply is not None
    assert [(q.title, q.effective_payload) for q in reply.quick_replies] == [
        ("Yes", "Yes"),
        ("No", "No"),
    ]


@pytest.mark.parametrize(
    ("mode", "keyword", "text", "hit"),
    [
        (MatchMode.WORD, "café", "CAFE time", True),
        (MatchMode.WORD, "cafe", "cafeteria", False),
        (MatchMode.CONTAINS, "cafe", "cafeteria", True),
        (MatchMode.EXACT, "¿precio?", "Precio", True),
        (MatchMode.EXACT, "🔥", " 🔥 ", True),
        (MatchMode.ANY_WORD, "book call", "let's CALL", True),
        (MatchMode.WORD, "ñandú", "NANDU", True),
        (MatchMode.WORD, "straße", "STRASSE", True),
        (MatchMode.REGEX, r"^\d{3}$", "123", True),
        # scripts without spaces between words: no edge to find inside them
        (MatchMode.WORD, "价格", "请问价格多少？", True),
        (MatchMode.WORD, "価格", "この価格はいくらですか", True),
        (MatchMode.WORD, "ราคา", "ราคาเท่าไหร่ครับ", True),
        (MatchMode.WORD, "iphone", "买iPhone吗", True),
        (MatchMode.WORD, "iphone", "买iPhones吗", False),
        (MatchMode.ANY_WORD, "price 价格", "请问价格", True),
        (MatchMode.WORD, "가격", "가격이 얼마예요", False),  # Korean spaces its words
        (MatchMode.WORD, "가격", "가격 얼마예요", True),
    ],
)  # fmt: skip
def test_match_modes(mode: MatchMode, keyword: str, text: str, hit: bool) -> None:
    spec = TriggerKeywords(keywords=(keyword,), match=mode)
    assert (match_keywords(spec, text) == keyword) == hit


def test_fold() -> None:
    assert fold("  Guía\tGRATIS ") == "guia gratis"
    assert fold("❤️") == fold("❤")


# --- templating ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "values", "extra", "out"),
    [
        ("Hi {username}!", {"username": "anna"}, None, "Hi anna!"),
        ("Hi {first_name|there}!", {}, None, "Hi there!"),
        ("Hi {first_name|there}!", {"first_name": "Ana"}, None, "Hi Ana!"),
        ("Your plan: {plan}.", {}, None, "Your plan: ."),
        ("Get it: {link:guide}", {"link": "x"}, None, "Get it: {link:guide}"),
        ("Set {a, b} and {} and {Upper}", {}, None, "Set {a, b} and {} and {Upper}"),
        ("You said {text}", {"text": "old"}, {"text": "new"}, "You said new"),
    ],
)  # fmt: skip
def test_render(
    template: str, values: dict[str, str], extra: dict[str, str] | None, out: str
) -> None:
    assert render(template, values, extra) == out


def test_placeholders_and_links() -> None:
    t = "Hi {username}, {email|no email} {link:guide} {link:call-2}"
    assert placeholders(t) == {"username", "email"}
    assert link_names(t) == {"guide", "call-2"}


def test_engine_renders_fields_in_replies() -> None:
    data = yaml.safe_load("""
name: w
trigger: {fallback: true}
actions: [{reply: "Hi {first_name|there}, your plan is {plan}: {link:plans}"}]
""")
    from instaset.events import EventKind, MessageEvent

    ev = MessageEvent(
        kind=EventKind.MESSAGE, account_id="acc", dedupe_key="m", occurred_at=100.0,
        contact_id="u", standby=False, raw="{}", sender_id="u", recipient_id="acc", mid="m",
        text="hello", attachments=(), is_echo=False, is_self=False, is_unsupported=False,
        quick_reply_payload=None, reply_to_mid=None, reply_to_story=None, referral=None,
    )  # fmt: skip
    st = ConversationState("acc", "u", fields=FrozenMap({"plan": "pro"}), is_new=False)
    decision = decide(ev, st, [Workflow.model_validate(data)], EngineSettings("acc"), 100.0)
    assert decision.actions == (SendText("Hi there, your plan is pro: {link:plans}"),)


def test_settings_reject_unknown_timezone() -> None:
    with pytest.raises(ValueError, match="unknown timezone 'Mars/Base'"):
        EngineSettings("acc", timezone="Mars/Base")
