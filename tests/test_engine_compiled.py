"""The compiled, indexed ``decide`` against the plain scan (``decide_scan``), and the fast
paths behind it (fold, templating, time formatting) against straightforward references.

The property tests generate workflow lists (every trigger kind, every match mode, case,
accents, emoji, punctuation, priorities, disabled workflows, conditions, questions) and
events of every kind, and require the two implementations to return equal decisions
(workflow, actions, state and trace)."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instaset.engine.compiled import CompiledWorkflows, compiled
from instaset.engine.conditions import fmt_time
from instaset.engine.decide import decide, decide_scan
from instaset.engine.model import Workflow
from instaset.engine.settings import EngineSettings
from instaset.engine.state import Awaiting, ConversationState, FrozenMap
from instaset.engine.templating import render
from instaset.engine.triggers import fold
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
NOW = 1_717_408_800.0  # 2024-06-03T10:00:00Z, a Monday
SETTINGS = EngineSettings(ACCOUNT, timezone="Europe/Madrid")

# Words that keywords and texts are drawn from: case, accents (composed and decomposed),
# ligatures, emoji with and without variation selectors, punctuation, digits, underscores.
WORDS = (
    "guide", "Guide", "GUIDE", "guía", "Guia", "gui\u0301a", "free", "price", "precio",
    "call", "book", "e-book", "ebook", "order", "#1234", "1234", "_vip", "vip_", "naïve",
    "straße", "STRASSE", "ﬁle", "file", "İstanbul", "istanbul", "🔥", "🔥\ufe0f", "❤️", "❤",
    "hi", "hello", "a", "x", "!", "?", "...", "(", ")", "-", "'", "info", "café", "cafe",
    # scripts written without spaces (word edges only against spaced scripts)
    "价格", "请问价格多少", "买", "吗", "iphone", "価格", "かかく", "ราคา", "ราคาเท่าไหร่",
    "가격",
)
REGEXES = (r"\border\s*#?\d{4}", r"^hi\b", r"gu[íi]a", r"🔥+", r"(?i)PRICE|precio", r"x$")
PAYLOADS = ("BOOK", "PRICES", "YES", "NO", "")
REFS = ("spring", "ad_1", "other")
MEDIA = ("m1", "m2", "m3")
FIELDS = ("email", "goal")

keyword = st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join).filter(
    lambda k: bool(k.strip())
)
text = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=6).flatmap(
        lambda ws: st.lists(st.sampled_from((" ", "", ", ", "!", "\n", "  ")),
                            min_size=len(ws), max_size=len(ws)).map(
            lambda seps: "".join(w + s for w, s in zip(ws, seps, strict=True)))
    ),
    st.text(max_size=20),
)


@st.composite
def keyword_spec(draw: st.DrawFn, *, required: bool) -> dict[str, Any]:
    mode = draw(st.sampled_from(("word", "any_word", "contains", "exact", "regex")))
    if mode == "regex":
        kws = draw(st.lists(st.sampled_from(REGEXES), min_size=1, max_size=2))
    else:
        kws = draw(st.lists(keyword, min_size=0 if not required else 1, max_size=3))
    return {"keywords": kws, "match": mode}


@st.composite
def trigger(draw: st.DrawFn) -> dict[str, Any]:
    kinds = draw(st.sets(st.sampled_from((
        "dm", "comment", "live_comment", "story_reply", "story_mention", "postback",
        "referral", "first_message", "fallback",
    )), min_size=1, max_size=3))
    t: dict[str, Any] = {}
    for kind in kinds:
        if kind == "dm":
            t["dm"] = draw(keyword_spec(required=True))
        elif kind in ("comment", "live_comment"):
            spec = draw(keyword_spec(required=False))
            spec["media"] = draw(st.one_of(st.just("any"),
                                           st.lists(st.sampled_from(MEDIA), min_size=1)))
            spec["replies"] = draw(st.booleans())
            t[kind] = spec
        elif kind == "story_reply":
            t[kind] = draw(keyword_spec(required=False))
        elif kind == "postback":
            t[kind] = {"payload": draw(st.lists(st.sampled_from(PAYLOADS[:4]), min_size=1))}
        elif kind == "referral":
            t[kind] = {"ref": draw(st.lists(st.sampled_from(REFS), max_size=2))}
        else:
            t[kind] = True
    return t


@st.composite
def workflow_list(draw: st.DrawFn) -> list[Workflow]:
    n = draw(st.integers(1, 12))
    wfs: list[Workflow] = []
    for i in range(n):
        when: dict[str, Any] = {}
        if draw(st.booleans()):
            when["cooldown"] = draw(st.sampled_from(("1m", "1h", "1d")))
        if draw(st.integers(0, 3)) == 0:
            when["tags_none"] = ["customer"]
        if draw(st.integers(0, 3)) == 0:
            when["tags_any"] = ["lead"]
        actions: list[dict[str, Any]] = [{"reply": f"hello {{username|there}} from wf{i}"}]
        if draw(st.booleans()):
            actions.append({"ask": {"field": draw(st.sampled_from(FIELDS)), "type": "text",
                                    "prompt": "tell me"}})
            actions.append({"tag": "asked"})
        wfs.append(Workflow.model_validate({
            "name": f"wf{i}",
            "priority": draw(st.integers(-2, 2)),
            "enabled": draw(st.integers(0, 5)) != 0,
            "trigger": draw(trigger()),
            "when": when,
            "actions": actions,
        }))
    return wfs


def _dm(txt: str | None, *, qr: str | None, story: bool, mention: bool, ref: str | None,
        echo: bool, standby: bool) -> MessageEvent:
    sender, recipient = (ACCOUNT, USER) if echo else (USER, ACCOUNT)
    atts = (Attachment("story_mention", "https://cdn.example/s", None, None, "{}"),) if mention \
        else ()
    return MessageEvent(
        kind=EventKind.ECHO if echo else EventKind.MESSAGE, account_id=ACCOUNT,
        dedupe_key="mid.1", occurred_at=NOW, contact_id=USER, standby=standby, raw="{}",
        sender_id=sender, recipient_id=recipient, mid="mid.1", text=txt, attachments=atts,
        is_echo=echo, is_self=False, is_unsupported=False, quick_reply_payload=qr,
        reply_to_mid=None, reply_to_story=StoryRef("st1", "https://cdn.example/st1")
        if story else None, referral=Referral(ref, "ADS", "OPEN_THREAD", None) if ref else None,
    )


@st.composite
def event(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(("dm", "dm", "dm", "comment", "live", "postback", "referral")))
    if kind == "dm":
        return _dm(
            draw(st.one_of(st.none(), text)),
            qr=draw(st.one_of(st.none(), st.sampled_from(PAYLOADS))),
            story=draw(st.integers(0, 4)) == 0, mention=draw(st.integers(0, 4)) == 0,
            ref=draw(st.one_of(st.none(), st.sampled_from(REFS))),
            echo=draw(st.integers(0, 9)) == 0, standby=draw(st.integers(0, 19)) == 0,
        )
    if kind in ("comment", "live"):
        return CommentEvent(
            kind=EventKind.COMMENT if kind == "comment" else EventKind.LIVE_COMMENT,
            account_id=ACCOUNT, dedupe_key="c.1", occurred_at=NOW, contact_id=USER,
            standby=False, raw="{}", comment_id="c1", text=draw(text), from_id=USER,
            from_username=draw(st.one_of(st.none(), st.just("anna"))),
            media_id=draw(st.sampled_from(MEDIA)), media_product_type="FEED",
            parent_id=draw(st.one_of(st.none(), st.just("c0"))),
        )
    if kind == "postback":
        return PostbackEvent(
            kind=EventKind.POSTBACK, account_id=ACCOUNT, dedupe_key="pb.1", occurred_at=NOW,
            contact_id=USER, standby=False, raw="{}", sender_id=USER, recipient_id=ACCOUNT,
            mid="pbmid", title="Tap", payload=draw(st.one_of(st.none(),
                                                             st.sampled_from(PAYLOADS))),
        )
    return ReferralEvent(
        kind=EventKind.REFERRAL, account_id=ACCOUNT, dedupe_key="ref.1", occurred_at=NOW,
        contact_id=USER, standby=False, raw="{}", sender_id=USER, recipient_id=ACCOUNT,
        referral=Referral(draw(st.one_of(st.none(), st.sampled_from(REFS))), "SHORTLINK",
                          "OPEN_THREAD", None),
    )


@st.composite
def conversation(draw: st.DrawFn, names: list[str]) -> ConversationState:
    fired = draw(st.dictionaries(st.sampled_from(names), st.sampled_from(
        (NOW - 30, NOW - 7200, NOW - 3 * 86400)), max_size=3))
    awaiting = None
    if names and draw(st.integers(0, 3)) == 0:
        awaiting = Awaiting(draw(st.sampled_from(names)), draw(st.integers(0, 2)),
                            draw(st.sampled_from(FIELDS)), "text", 0,
                            draw(st.sampled_from((NOW - 60, NOW - 2 * 86400))))
    return ConversationState(
        ACCOUNT, USER, is_new=draw(st.booleans()),
        tags=draw(st.frozensets(st.sampled_from(("customer", "lead")))),
        last_inbound_at=draw(st.one_of(st.none(), st.just(NOW - 3600))),
        paused_until=draw(st.sampled_from((None, None, None, NOW + 60))),
        fired=FrozenMap(fired), awaiting=awaiting,
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_indexed_decide_equals_the_scan(data: st.DataObject) -> None:
    wfs = data.draw(workflow_list())
    names = [wf.name for wf in wfs]
    for _ in range(8):  # several events against the same (cached) compiled form
        ev = data.draw(event())
        before = data.draw(conversation(names))
        assert decide(ev, before, wfs, SETTINGS, NOW) == decide_scan(ev, before, wfs,
                                                                     SETTINGS, NOW)


@settings(max_examples=80, deadline=None)
@given(wfs=workflow_list(), txt=text, is_new=st.booleans())
def test_candidates_include_every_matching_workflow(wfs: list[Workflow], txt: str,
                                                   is_new: bool) -> None:
    """The index is only a filter: whatever a scan of the triggers matches is a candidate,
    and candidates come in the order decide tries them."""
    from instaset.engine.triggers import match_trigger

    cw = compiled(wfs)
    for ev in (
        _dm(txt, qr=None, story=False, mention=False, ref=None, echo=False, standby=False),
        _dm(txt, qr="BOOK", story=True, mention=True, ref="spring", echo=False,
            standby=False),
    ):
        cands = cw.candidates(ev, is_new)
        matching = [wf for wf in cw.ordered if match_trigger(wf.trigger, ev, is_new)]
        assert [wf for wf in cands if wf in matching] == matching
        ranks = [cw.ordered.index(wf) for wf in cands]
        assert ranks == sorted(ranks)


def _many_keyword_workflows(n: int) -> list[Workflow]:
    return [Workflow.model_validate(
        {"name": f"kw{i:02d}", "trigger": {"dm": {"keywords": [f"topic{i:02d}", "shared"]}},
         "actions": [{"reply": f"reply {i}"}]}) for i in range(n)]


def test_a_keyword_dm_tries_only_the_workflows_naming_its_words() -> None:
    wfs = [*_many_keyword_workflows(50), *workflows("""
- {name: emoji, trigger: {dm: {keywords: ["🔥"]}}, actions: [{reply: fire}]}
- {name: rx, trigger: {dm: {keywords: ['\\d{4}'], match: regex}}, actions: [{reply: rx}]}
- {name: exact, trigger: {dm: {keywords: [Price!], match: exact}}, actions: [{reply: p}]}
- {name: disabled, enabled: false, trigger: {dm: {keywords: [topic07]}}, actions: [{reply: x}]}
- {name: fb, trigger: {fallback: true}, actions: [{reply: fallback}]}
""")]
    cw = compiled(wfs)

    def names(txt: str) -> list[str]:
        ev = _dm(txt, qr=None, story=False, mention=False, ref=None, echo=False,
                 standby=False)
        return [wf.name for wf in cw.candidates(ev, False)]

    # A regex is tried on every text; an emoji keyword where the emoji is; disabled
    # workflows never are.
    assert names("can I get TOPIC07 please") == ["kw07", "rx"]
    assert names("  price ") == ["rx", "exact"]
    assert names("topic07s") == ["rx"]
    assert names("topic07🔥️") == ["kw07", "emoji", "rx"]
    assert len(names("shared")) == 51
    assert [wf.name for wf in cw.fallbacks] == ["fb"]


def workflows(text_: str) -> list[Workflow]:
    return [Workflow.model_validate(w) for w in yaml.safe_load(text_)]


def test_priority_then_file_order_in_the_compiled_form() -> None:
    wfs = workflows("""
- {name: low, priority: -1, trigger: {dm: {keywords: [guide]}}, actions: [{reply: low}]}
- {name: a, trigger: {dm: {keywords: [guide]}}, actions: [{reply: a}]}
- {name: high, priority: 5, trigger: {dm: {keywords: [guide]}}, actions: [{reply: high}]}
- {name: b, trigger: {dm: {keywords: [guide]}}, actions: [{reply: b}]}
""")
    cw = compiled(wfs)
    assert [wf.name for wf in cw.ordered] == ["high", "a", "b", "low"]
    assert list(cw) == wfs  # as a sequence: the original order
    ev = _dm("guide", qr=None, story=False, mention=False, ref=None, echo=False, standby=False)
    d = decide(ev, ConversationState(ACCOUNT, USER), cw, SETTINGS, NOW)
    assert d.workflow == "high"


def test_compiled_form_is_cached_per_list_and_follows_in_place_edits() -> None:
    wfs = _many_keyword_workflows(3)
    first = compiled(wfs)
    assert compiled(wfs) is first
    assert compiled(first) is first
    ev = _dm("topic02", qr=None, story=False, mention=False, ref=None, echo=False,
             standby=False)
    assert decide(ev, ConversationState(ACCOUNT, USER), wfs, SETTINGS, NOW).workflow == "kw02"
    # The same list object edited in place is recompiled, not served stale.
    wfs[2] = Workflow.model_validate({"name": "renamed", "trigger": {"dm": {"keywords": [
        "other"]}}, "actions": [{"reply": "x"}]})
    assert compiled(wfs) is not first
    assert decide(ev, ConversationState(ACCOUNT, USER), wfs, SETTINGS, NOW).workflow is None
    assert isinstance(compiled(wfs), CompiledWorkflows)


# --- fast paths against their references ------------------------------------------------


def _fold_reference(s: str) -> str:
    # Curly apostrophes are the ASCII one and Turkish ı is i (session 11), then NFKD.
    for typographic, plain in (("\u2019", "'"), ("\u2018", "'"), ("\u02bc", "'"),
                               ("\u0131", "i")):
        s = s.replace(typographic, plain)
    decomposed = unicodedata.normalize("NFKD", s)
    kept = "".join(ch for ch in decomposed if unicodedata.category(ch) != "Mn")
    return " ".join(unicodedata.normalize("NFC", kept.casefold()).split())


@given(st.one_of(st.text(alphabet=st.characters(max_codepoint=127)), st.text()))
def test_fold_matches_the_unicode_reference(s: str) -> None:
    assert fold(s) == _fold_reference(s)


_PLACEHOLDER_RE = re.compile(r"\{([a-z_][a-z0-9_]*)(?:\|([^{}]*))?\}")


def _render_reference(template: str, values: dict[str, str], extra: dict[str, str] | None
                      ) -> str:
    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if extra is not None and extra.get(name):
            return extra[name]
        value = values.get(name)
        if value:
            return value
        return default if default is not None else ""

    return _PLACEHOLDER_RE.sub(sub, template)


@given(
    template=st.lists(st.sampled_from((
        "Hi ", "{username}", "{first_name|there}", "{email|}", "{text}", "{link:guide}",
        "{ 1, 2 }", "{}", "{Bad}", "{", "}", "!", "{plan|a|b}", "{x}", "é",
    )), max_size=8).map("".join),
    values=st.dictionaries(st.sampled_from(("username", "first_name", "email", "x")),
                           st.sampled_from(("", "ana", "b@c.d"))),
    extra=st.one_of(st.none(), st.dictionaries(st.just("text"), st.sampled_from(("", "hi")))),
)
def test_render_matches_the_regex_reference(template: str, values: dict[str, str],
                                            extra: dict[str, str] | None) -> None:
    assert render(template, values, extra) == _render_reference(template, values, extra)


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False))
def test_fmt_time_matches_datetime(ts: float) -> None:
    assert fmt_time(ts) == datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("ts", [0.0, -0.5, 59.9999996, 59.9999994, 1717400000.9999995])
def test_fmt_time_rounds_like_datetime_at_the_edges(ts: float) -> None:
    assert fmt_time(ts) == datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_state_copies_equal_dataclasses_replace() -> None:
    from dataclasses import fields, replace

    full = ConversationState(
        ACCOUNT, USER, username="anna", tags=frozenset({"lead"}),
        fields=FrozenMap({"email": "a@b.cd"}),
        stage="engaged", last_inbound_at=NOW - 5, paused_until=NOW - 1, is_new=True,
        awaiting=Awaiting("wf0", 1, "email", "email", 1, NOW - 9),
        fired=FrozenMap({"wf0": NOW - 99}),
        follower=True, lead_stage="qualified",
    )
    # Every field is set to a non-default above; a new field must be added here and to the
    # with_* copies (which list the fields in order).
    assert len(fields(ConversationState)) == 13
    assert full.with_inbound(NOW) == replace(full, last_inbound_at=NOW, is_new=False)
    assert full.with_fired("wf1", NOW) == replace(
        full, fired=FrozenMap({"wf0": NOW - 99, "wf1": NOW}))
