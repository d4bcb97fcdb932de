"""The ai_reply job end to end: the real daemon against the Instagram sandbox and the fake
Gemini server (real google-genai SDK), plus lead rescoring and booking on tap."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from instaset.ai.feature import AIFeature, install_feature
from instaset.booking import booking_link, parse_payload
from instaset.config import AIConfig, BookingConfig, LeadsConfig
from instaset.store import jobs as jobstore
from instaset.store.jobs import Job
from tests.fake_gemini import (
    DEADLINE_MS,
    FakeGemini,
    function_call,
    held,
    rate_limited,
    reply,
    server_error,
)
from tests.sending_harness import Clock, Harness, open_harness

IGSID = "1129842642640637"
PERSONA = "I'm Maya, a strength coach. Warm, short, one emoji max."
FACTS = ["1:1 coaching is $90 per session", "Book a call at https://maya.fit/book"]
EXAMPLES = [{"message": "do you do online coaching?",
             "reply": "Yes! All my coaching is online 💪"}]
AI_AUTO = {"name": "ai", "trigger": {"fallback": True}, "actions": [{"ai_reply": "auto"}]}
AI_DRAFT = {"name": "ai-draft", "trigger": {"fallback": True}, "actions": [{"ai_reply": "draft"}]}
AI_COMMENT = {"name": "ai-comment", "trigger": {"comment": {"keywords": []}},
              "actions": [{"ai_reply": "auto"}]}


class Env:
    def __init__(self, h: Harness, feature: AIFeature, fake: FakeGemini) -> None:
        self.h, self.feature, self.fake = h, feature, fake

    def texts(self, igsid: str = IGSID) -> list[str]:
        return [str(dict(r.json["message"]).get("text"))  # type: ignore[call-overload]
                for r in self.h.graph_sends(igsid)]

    async def rows(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.h.rt.db.fetchall(sql, params)]


Make = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Make]:
    monkeypatch.setenv("TEST_GEMINI_KEY", "test-key")
    async with contextlib.AsyncExitStack() as stack:
        fake = await stack.enter_async_context(FakeGemini())
        count = 0

        async def build(workflows: Sequence[Mapping[str, Any]] = (AI_AUTO,), *,
                        ai: Mapping[str, Any] | None = None,
                        booking: Mapping[str, Any] | None = None,
                        leads: Mapping[str, Any] | None = None, key: bool = True,
                        clock: Clock | None = None, typing_after: float = 30.0,
                        notify: Mapping[str, Any] | None = None) -> Env:
            nonlocal count
            count += 1
            # The booking, notify and leads sections from the start too: the runtime's own
            # features (the workflows' offer_booking hook, the notifier, its own lead scoring,
            # which the feature installed below wraps) are built with the config it starts
            # with; lead scores under two sets of rules would undo each other's reasons.
            extra = {k: v for k, v in (("booking", booking), ("notify", notify),
                                       ("leads", leads)) if v is not None}
            h = await stack.enter_async_context(open_harness(
                tmp_path, name=f"ai{count}", workflows=workflows, clock=clock,
                extra=extra or None))
            ai_cfg = {"persona": PERSONA, "facts": FACTS, "examples": EXAMPLES,
                      "base_url": fake.url, "timeout_ms": DEADLINE_MS,
                      "api_key_env": "TEST_GEMINI_KEY" if key else "NO_SUCH_KEY_VAR",
                      **(ai or {})}
            update: dict[str, Any] = {"ai": AIConfig.model_validate(ai_cfg)}
            if booking is not None:
                update["booking"] = BookingConfig.model_validate(booking)
            if leads is not None:
                update["leads"] = LeadsConfig.model_validate(leads)
            h.rt.config = h.rt.config.model_copy(update=update)
            return Env(h, install_feature(h.rt, typing_after=typing_after), fake)

        yield build


async def test_auto_reply_sends_in_the_creators_voice(make: Make) -> None:
    env = await make()
    env.fake.script(reply("It's $90 a session! Want to book a call? 💪", intent="pricing",
                          lead_fields=[{"name": "goal", "value": "get stronger",
                                        "evidence": "I want to get stronger"}]))
    await env.h.dm(IGSID, "hey! I want to get stronger. how much is coaching?")
    await env.h.settle()

    assert env.texts() == ["It's $90 a session! Want to book a call? 💪"]
    [req] = env.fake.requests
    assert PERSONA in req.system and "- 1:1 coaching is $90 per session" in req.system
    assert "Reply: Yes! All my coaching is online 💪" in req.system
    assert req.turns == [("user", "hey! I want to get stronger. how much is coaching?")]
    [call] = await env.rows("SELECT * FROM ai_calls")
    assert (call["backend"], call["outcome"], call["total_tokens"]) == ("gemini", "ok", 150)
    # the AI's extracted fact and the keyword rule both explain the lead's score
    [lead] = await env.rows("SELECT * FROM leads")
    reasons = {r["rule"]: r["evidence"] for r in json.loads(lead["reasons"])}
    said = "hey! I want to get stronger. how much is coaching?"
    assert reasons == {"asked_price": said, "wants_a_call": said,
                       "goal": "I want to get stronger"}
    assert lead["score"] == 45 and lead["stage"] == "engaged"


async def test_a_lead_fact_on_words_the_contact_never_wrote_scores_nothing(make: Make) -> None:
    env = await make()
    env.fake.script(reply("Hey! What brings you here?", intent="smalltalk", lead_fields=[
        {"name": "budget", "value": "$5000", "evidence": "I have $5000 ready to spend"},
        {"name": "goal", "value": "just looking around", "evidence": "browsing for now"},
    ]))
    await env.h.dm(IGSID, "hi, just looking around")
    await env.h.settle()
    facts = await env.rows("SELECT name, value, evidence FROM lead_facts")
    # The invented budget is gone; the goal is kept with the words the contact did write.
    assert [(f["name"], f["value"], f["evidence"]) for f in facts] == [
        ("goal", "just looking around", "hi, just looking around")]
    leads = await env.rows("SELECT reasons FROM leads")
    assert all("5000" not in lead["reasons"] for lead in leads)


async def test_markup_from_the_model_reaches_the_contact_as_plain_text(make: Make) -> None:
    env = await make()
    env.fake.script(reply("**Yes!** <b>I coach</b> online, see [my site](https://maya.fit/book)"))
    await env.h.dm(IGSID, "do you coach online?")
    await env.h.settle()
    assert env.texts() == ["Yes! I coach online, see my site https://maya.fit/book"]


async def answered_by_hand_elsewhere(env: Env) -> None:
    """Another contact asks about Zoom (the AI answers) and the creator replies by hand."""
    env.fake.script(reply("first answer"), reply("second answer"))
    other = "2229842642640638"
    await env.h.dm(other, "is coaching on zoom or in person?")
    await env.h.settle()
    await env.h.creator_types(other, "Zoom only for now, from anywhere!")
    await env.h.settle()


async def test_history_and_the_creators_past_replies_reach_the_prompt(make: Make) -> None:
    env = await make()
    await answered_by_hand_elsewhere(env)
    await env.h.dm(IGSID, "hi")
    await env.h.settle()
    await env.h.dm(IGSID, "are sessions on zoom?")
    await env.h.settle()
    req = env.fake.requests[-1]
    assert req.turns == [("user", "hi"), ("model", "second answer"),
                         ("user", "are sessions on zoom?")]
    assert 'Message: "is coaching on zoom or in person?"' in req.system
    assert 'Reply: "Zoom only for now, from anywhere!"' in req.system


async def test_draft_mode_stores_and_sends_nothing(make: Make) -> None:
    env = await make([AI_DRAFT])
    env.fake.script(reply("Yes, I coach online!", confidence=0.8))
    await env.h.dm(IGSID, "do you coach online?")
    await env.h.settle()
    assert env.texts() == []
    [draft] = await env.rows("SELECT * FROM ai_drafts")
    assert (draft["text"], draft["reason"], draft["state"]) == (
        "Yes, I coach online!", "draft", "pending")
    assert (await env.h.conversation(IGSID))["paused_until"] is None


@pytest.mark.parametrize(
    ("incoming", "scripted", "reason"),
    [
        ("how much?", reply("Only $75 this week!"), "unverified_price"),
        ("I want a refund", reply("Sure, refunded!"), "refund"),
        ("hmm", reply("Maybe?", confidence=0.2), "low_confidence"),
    ],
)
async def test_guardrail_hands_off_and_notifies(make: Make, incoming: str, scripted: Any,
                                                reason: str) -> None:
    env = await make()
    env.fake.script(scripted)
    await env.h.dm(IGSID, incoming)
    await env.h.settle()
    assert env.texts() == []
    conv = await env.h.conversation(IGSID)
    assert conv["paused_until"] is not None and conv["paused_until"] > env.h.clock()
    [draft] = await env.rows("SELECT * FROM ai_drafts")
    assert draft["reason"] == reason
    notes = await env.rows("SELECT * FROM notifications WHERE kind = 'handoff'")
    assert len(notes) == 1 and incoming in notes[0]["text"]


async def test_429_is_answered_later_once(make: Make) -> None:
    clock = Clock(frozen=True)
    env = await make(clock=clock)
    env.fake.script(rate_limited("7s"), reply("Here you go!"))
    await env.h.dm(IGSID, "what do you offer?")
    await env.h.settle()  # the 429 defers the job by its retryDelay: nothing due now
    assert env.texts() == [] and len(env.fake.requests) == 1
    [job] = await env.rows("SELECT * FROM jobs WHERE kind = 'ai_reply'")
    assert job["state"] == "ready" and job["run_at"] == clock() + 7
    assert "429" in job["last_error"]
    await env.h.settle(advance_up_to=7)
    assert env.texts() == ["Here you go!"] and len(env.fake.requests) == 2
    outcomes = [r["outcome"] for r in await env.rows("SELECT * FROM ai_calls ORDER BY id")]
    assert outcomes == ["rate_limited", "ok"]


async def test_a_429_asking_for_no_wait_still_backs_off(make: Make) -> None:
    clock = Clock(frozen=True)
    env = await make(clock=clock)
    env.fake.script(rate_limited("0s"), reply("Here you go!"))
    await env.h.dm(IGSID, "what do you offer?")
    await env.h.settle()
    [job] = await env.rows("SELECT * FROM jobs WHERE kind = 'ai_reply'")
    # worker.backoff_base 2 after the first try: 1-2 s, not a retry at once.
    assert job["state"] == "ready" and clock() + 1 <= job["run_at"] <= clock() + 2
    await env.h.settle(advance_up_to=2)
    assert env.texts() == ["Here you go!"]


async def test_a_429_asking_for_hours_hands_off_now(make: Make) -> None:
    """A retryDelay of ~14 h would land the reply outside the conversation's moment (or its
    window): the creator gets it now instead."""
    clock = Clock(frozen=True)
    env = await make(clock=clock)
    env.fake.script(rate_limited("50000s"))
    await env.h.dm(IGSID, "what do you offer?")
    await env.h.settle()
    [job] = await env.rows("SELECT * FROM jobs WHERE kind = 'ai_reply'")
    assert job["state"] == "done" and len(env.fake.requests) == 1
    [draft] = await env.rows("SELECT * FROM ai_drafts")
    assert draft["reason"] == "ai_rate_limited"
    notes = await env.rows("SELECT * FROM notifications WHERE kind = 'handoff'")
    assert len(notes) == 1


async def test_the_call_record_commits_with_the_job_and_a_rerun_does_nothing(
    make: Make
) -> None:
    """The handler completes its job itself, with the reply's send and the call's record
    (one commit); run again with the same job, it finds its effects and does nothing."""
    env = await make()
    env.fake.script(reply("See you there!"))
    await env.h.dm(IGSID, "are you on zoom?")
    await env.h.settle()
    [row] = await env.h.rt.db.fetchall("SELECT * FROM jobs WHERE kind = 'ai_reply'")
    [call] = await env.rows("SELECT * FROM ai_calls")
    assert row["state"] == "done"
    assert (call["job_key"], call["attempt"], call["outcome"]) == (row["key"], 1, "ok")
    sends = await env.rows("SELECT key FROM sends WHERE key LIKE 'send:ai%'")
    assert sends == [{"key": f"send:{row['key']}"}]

    assert await env.feature.replies.handle(Job.from_row(row)) is None  # answered already
    assert len(env.fake.requests) == 1 and env.texts() == ["See you there!"]
    assert len(await env.rows("SELECT * FROM ai_calls")) == 1


async def test_500s_end_in_the_fallback_message(make: Make) -> None:
    env = await make(ai={"max_attempts": 3,
                         "fallback_message": "Thanks! I'll get back to you very soon."})
    env.fake.default = server_error(500)
    await env.h.dm(IGSID, "what do you offer?")
    await env.h.settle(advance_up_to=60)
    assert len(env.fake.requests) == 3
    assert env.texts() == ["Thanks! I'll get back to you very soon."]
    notes = await env.rows("SELECT * FROM notifications WHERE kind = 'handoff'")
    assert len(notes) == 1 and "server_error" in notes[0]["text"]
    [job] = await env.rows("SELECT * FROM jobs WHERE kind = 'ai_reply'")
    assert job["state"] == "done"


async def test_500s_without_fallback_hand_off(make: Make) -> None:
    env = await make(ai={"max_attempts": 2})
    env.fake.default = server_error(503)
    await env.h.dm(IGSID, "what do you offer?")
    await env.h.settle(advance_up_to=60)
    assert len(env.fake.requests) == 2 and env.texts() == []
    assert (await env.h.conversation(IGSID))["paused_until"] is not None
    [draft] = await env.rows("SELECT * FROM ai_drafts")
    assert draft["reason"] == "ai_server_error"


async def test_slow_call_shows_typing_first(make: Make) -> None:
    env = await make(typing_after=0.01)
    env.fake.script(held(reply("Sorry for the wait!")))
    stop = asyncio.Event()
    worker = asyncio.create_task(env.h.rt.worker.run(stop))
    try:
        await env.h.dm(IGSID, "you there?")

        def actions() -> list[object]:
            return [r.json.get("sender_action") for r in env.h.graph_posts()
                    if "sender_action" in r.json]

        for _ in range(500):
            if actions():
                break
            await asyncio.sleep(0.02)
        assert actions() == ["typing_on"] and env.texts() == []
        env.fake.release()
        for _ in range(500):
            if env.texts():
                break
            await asyncio.sleep(0.02)
        assert env.texts() == ["Sorry for the wait!"]
    finally:
        stop.set()
        await worker


async def test_comment_gets_an_ai_private_reply(make: Make) -> None:
    env = await make([AI_COMMENT])
    env.fake.script(reply("Thanks for the comment! It's $90 a session."))
    await env.h.sandbox.user_comments(IGSID, "price??", "media-1")
    await env.h.settle()
    [send] = env.h.graph_sends()
    assert send.json["message"] == {"text": "Thanks for the comment! It's $90 a session."}
    assert "comment_id" in dict(send.json["recipient"])  # type: ignore[call-overload]
    req = env.fake.requests[0]
    assert req.turns[-1] == ("user", "price??") and "public comment" in req.system


async def test_an_ai_reply_too_long_for_one_private_reply_goes_to_the_creator(
        make: Make) -> None:
    """Only the first 1000 bytes of a private reply reach the commenter (the rest would
    wait for a DM of theirs): a longer answer is not cut in half, the creator is told."""
    env = await make([AI_COMMENT])
    long = ("Thanks for the comment! " + "Here is everything about coaching. " * 40).strip()
    env.fake.script(reply(long))
    await env.h.sandbox.user_comments(IGSID, "price??", "media-1")
    await env.h.settle()
    assert env.h.graph_sends() == []
    [note] = await env.rows("SELECT * FROM notifications WHERE kind = 'handoff'")
    assert f"{len(long.encode())} bytes" in note["text"]


async def test_offline_responder_without_a_key(make: Make) -> None:
    env = await make(key=False)
    await env.h.dm(IGSID, "Do you do online coaching?")
    await env.h.settle()
    assert env.texts() == ["Yes! All my coaching is online 💪"]
    await env.h.dm("3339842642640639", "my dog ate my shoes")
    await env.h.settle()
    assert env.texts("3339842642640639") == []
    assert env.fake.requests == []
    calls = await env.rows("SELECT backend, outcome FROM ai_calls")
    assert calls == [{"backend": "offline", "outcome": "ok"}] * 2
    [draft] = await env.rows("SELECT * FROM ai_drafts")
    assert draft["reason"] == "needs_human"


async def test_booking_through_a_function_call_and_a_tap(make: Make) -> None:
    env = await make(booking={"enabled": True, "min_notice": 0, "offer": 3,
                              "availability": [{"days": "daily", "from": "00:00",
                                                "to": "24:00"}]},
                     leads={"qualified_at": 100})
    env.fake.script(function_call("offer_booking", text="Let's find a time!"))
    await env.h.dm(IGSID, "can I book a call?")
    await env.h.settle()
    assert "functionDeclarations" in json.dumps(env.fake.requests[0].body)
    first, offer = env.h.graph_sends(IGSID)
    assert first.json["message"] == {"text": "Let's find a time!"}
    quick = dict(offer.json["message"])["quick_replies"]  # type: ignore[call-overload]
    assert len(quick) == 3
    title, payload = quick[0]["title"], quick[0]["payload"]
    start = parse_payload(payload)
    assert start is not None

    await env.h.sandbox.user_sends_dm(IGSID, title, quick_reply={"payload": payload})
    await env.h.settle()
    [booking] = await env.rows("SELECT * FROM bookings")
    assert booking["start_at"] == start and booking["contact_id"] == IGSID
    assert env.texts()[-1].startswith("You're booked for ")
    assert len(env.fake.requests) == 1  # the tap was not sent to the AI
    notes = await env.rows("SELECT * FROM notifications WHERE kind = 'booking'")
    assert len(notes) == 1
    [lead] = await env.rows("SELECT * FROM leads")
    assert lead["stage"] == "booked"
    # The booking ranks above "qualified", but the score (wants_a_call +20) is under
    # qualified_at: the booking's notice tells it, no "qualified lead (score 20)" beside it.
    assert lead["score"] < 100 and lead["qualified_at"] is not None
    assert await env.rows("SELECT * FROM notifications WHERE kind = 'lead'") == []


async def test_an_ai_booking_offer_with_no_free_slot_tells_the_contact_and_the_creator(
        make: Make) -> None:
    monday = datetime(2025, 6, 2, 6, 0, tzinfo=UTC).timestamp()
    env = await make(booking={"enabled": True, "min_notice": 0, "horizon": "1d",
                              "availability": [{"days": "sun", "from": "09:00",
                                                "to": "10:00"}]},
                     clock=Clock(monday, frozen=True))
    env.fake.script(function_call("offer_booking", text="Let's find a time!"))
    await env.h.dm(IGSID, "can I book a call?")
    await env.h.settle()
    assert env.texts() == ["Let's find a time!", "Sorry, I have no free time to offer right"
                           " now. I'll get back to you soon."]
    # named by the id: the reply job runs before the new contact's profile is stored
    [note] = await env.rows("SELECT text FROM notifications WHERE kind = 'booking'")
    assert note["text"] == (
        f"{IGSID} wants to book, but no slot is free within booking.horizon (1d) (see"
        " booking.availability); they get booking.no_slots")


async def test_every_inbound_message_rescores_the_lead(make: Make) -> None:
    guide = {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
             "actions": [{"reply": "Here's the guide!"}]}
    env = await make([guide], leads={"qualified_at": 30, "rules": [
        {"name": "asked_price", "points": 15, "keywords": ["price"]},
        {"name": "wants_guide", "points": 20, "keywords": ["guide"]}]})
    await env.h.dm(IGSID, "what's the price?")
    await env.h.settle()
    [lead] = await env.rows("SELECT * FROM leads")
    assert (lead["score"], lead["stage"]) == (15, "engaged")
    await env.h.dm(IGSID, "and the guide please")
    await env.h.settle()
    [lead] = await env.rows("SELECT * FROM leads")
    assert (lead["score"], lead["stage"]) == (35, "qualified")
    assert env.texts() == ["Here's the guide!"]  # the workflows still run
    notes = await env.rows("SELECT * FROM notifications WHERE kind = 'lead'")
    assert len(notes) == 1 and "asked_price +15" in notes[0]["text"]


async def test_workflow_score_and_offer_booking_steps(make: Make) -> None:
    wf = {"name": "book", "trigger": {"dm": {"keywords": ["call"]}}, "actions": [
        {"reply": "Great, let's talk!"}, {"score": {"points": 25, "reason": "wants a call"}},
        {"offer_booking": {"text": "Pick a time:"}}]}
    env = await make([wf], booking={"min_notice": 0, "availability": [
        {"days": "daily", "from": "00:00", "to": "24:00"}]})
    await env.h.dm(IGSID, "can we do a call?")
    await env.h.settle()
    first, offer = [
        dict(r.json["message"]) for r in env.h.graph_sends(IGSID)  # type: ignore[call-overload]
    ]
    assert first == {"text": "Great, let's talk!"}
    assert offer["text"] == "Pick a time:" and len(offer["quick_replies"]) == 5
    [lead] = await env.rows("SELECT * FROM leads")
    assert {"rule": "workflow", "points": 25, "matched": "wants a call"}.items() <= next(
        r for r in json.loads(lead["reasons"]) if r["rule"] == "workflow").items()


async def test_booking_link_is_offered_instead_of_slots(make: Make) -> None:
    """With ``booking.link``, an offer (the AI's function call, or a workflow step) is the
    scheduling page's link carrying the contact's id; no slot is offered or booked."""
    wf = {"name": "book", "trigger": {"dm": {"keywords": ["call"]}}, "actions": [
        {"offer_booking": {"text": "Pick a time:"}}]}
    env = await make([wf, AI_AUTO], booking={
        "enabled": True, "link": "https://cal.com/jess/30min?metadata[contact]={contact_id}",
        "link_text": "Book here: {link}"})
    await env.h.dm(IGSID, "can we do a call?")
    await env.h.settle()
    [offer] = [dict(r.json["message"]) for r in env.h.graph_sends(IGSID)]  # type: ignore[call-overload]
    assert offer == {"text": f"Book here: https://cal.com/jess/30min?metadata[contact]={IGSID}"}

    env.fake.script(function_call("offer_booking", text="Let's find a time!"))
    other = "4449842642640640"
    await env.h.dm(other, "I'd like to book something")
    await env.h.settle()
    assert env.texts(other) == [
        "Let's find a time!", f"Book here: https://cal.com/jess/30min?metadata[contact]={other}"]
    assert await env.rows("SELECT * FROM bookings") == []


@pytest.mark.parametrize(("template", "url"), [
    ("https://calendly.com/jess/call", "https://calendly.com/jess/call?utm_content=17%2B8"),
    ("https://calendly.com/jess/call?month=2026-12&utm_content=old",
     "https://calendly.com/jess/call?month=2026-12&utm_content=17%2B8"),
    ("https://cal.com/jess?metadata[who]={contact_id}", "https://cal.com/jess?metadata[who]=17%2B8"),
])
def test_booking_link_carries_the_contact_id(template: str, url: str) -> None:
    assert booking_link(template, "17+8") == url


async def test_past_replies_off_sends_nothing_of_other_conversations(make: Make) -> None:
    """ai.past_replies: false: no other contact's words, not even redacted, reach Gemini."""
    env = await make(ai={"past_replies": False})
    await answered_by_hand_elsewhere(env)
    await env.h.dm(IGSID, "are sessions on zoom?")
    await env.h.settle()
    req = env.fake.requests[-1]
    assert "zoom or in person" not in req.system and "Zoom only" not in req.system
    assert "past replies" not in req.system


# --- a disconnected account: nothing more goes to Gemini (privacy review, session 15) --------

async def _disconnect(env: Env) -> None:
    """What a deauthorize callback or `instaset disconnect` does to the account's row."""
    from instaset.store.accounts import set_disconnected

    await set_disconnected(env.h.rt.db, env.h.account_id, env.h.clock())


async def test_a_dm_acknowledged_before_a_deauthorize_is_history_not_automation(
        make: Make) -> None:
    env = await make([{"name": "hi", "trigger": {"fallback": True},
                       "actions": [{"reply": "Hi! What can I do for you?"}, {"tag": "asked"}]}])
    await env.h.dm(IGSID, "my phone is 555-0100")  # stored (200), not processed yet
    await _disconnect(env)
    await env.h.settle()

    # no workflow decided anything: no send (not even a refused one), no tag
    assert env.texts() == [] and await env.rows("SELECT * FROM sends") == []
    [conv] = await env.rows("SELECT state FROM conversations")
    assert "asked" not in json.loads(conv["state"] or "{}").get("tags", [])
    assert [m["text"] for m in await env.h.messages(IGSID)] == ["my phone is 555-0100"]
    assert await env.rows("SELECT * FROM events WHERE processed_at IS NULL") == []


async def test_an_ai_reply_queued_before_a_deauthorize_does_not_call_gemini(
        make: Make) -> None:
    env = await make([{"name": "later", "trigger": {"fallback": True},
                       "actions": [{"delay": "1h"}, {"ai_reply": "auto"}]}])
    env.fake.script(reply("Sure thing!"))
    await env.h.dm(IGSID, "tell me more")
    await env.h.settle()  # decided; the AI step waits an hour
    await _disconnect(env)
    await env.h.settle(advance_up_to=2 * 3600)

    assert env.fake.requests == []
    assert env.texts() == []


async def test_a_delayed_step_due_after_a_deauthorize_decides_nothing(make: Make) -> None:
    """Found by the session-15 fix review: the `resume_flow` job of a delay queued before
    the deauthorize still ran the rest of the workflow (a tag, a handoff, a notification)."""
    env = await make([{"name": "later", "trigger": {"fallback": True},
                       "actions": [{"delay": "1h"}, {"reply": "Hello again"}, {"tag": "late"},
                                   {"handoff": {"note": "call them"}}]}])
    await env.h.dm(IGSID, "tell me more")
    await env.h.settle()
    await _disconnect(env)
    await env.h.settle(advance_up_to=2 * 3600)
    assert await env.rows("SELECT * FROM sends") == []
    [conv] = await env.rows("SELECT state, paused_until FROM conversations")
    assert "late" not in json.loads(conv["state"] or "{}").get("tags", [])
    assert conv["paused_until"] is None
    assert await env.rows("SELECT * FROM notifications") == []


async def test_a_first_message_waiting_for_its_profile_decides_nothing_once_disconnected(
        make: Make) -> None:
    """The same for `first_plan` (a new contact's first message whose workflow needs their
    profile): no profile lookup at Meta, no workflow, after the deauthorize."""
    env = await make([{"name": "hello", "trigger": {"fallback": True},
                       "actions": [{"reply": "Hey {first_name|there}!"}, {"tag": "greeted"}]}])
    await env.h.dm(IGSID, "hi")
    [row] = await env.rows("SELECT key FROM jobs WHERE kind = 'process_event'")
    job = await jobstore.claim_key(env.h.rt.db, row["key"], "t", env.h.clock(), 60)
    assert job is not None
    await env.h.rt.handlers["process_event"](job)  # defers to first_plan
    assert [r["state"] for r in await env.rows(
        "SELECT state FROM jobs WHERE kind = 'first_plan'")] == ["ready"]
    calls = len(env.h.sandbox.transcript)
    await _disconnect(env)
    await env.h.settle()
    assert await env.rows("SELECT * FROM sends") == []
    assert len(env.h.sandbox.transcript) == calls  # no profile lookup
    [conv] = await env.rows("SELECT state FROM conversations")
    assert "greeted" not in json.loads(conv["state"] or "{}").get("tags", [])


async def test_a_deauthorize_during_the_first_messages_profile_lookup_stops_it(
        make: Make) -> None:
    """Fix review 2: the first_plan job checked the account before the profile lookup only;
    a deauthorize that came during the lookup still let the workflow run."""
    env = await make([{"name": "hello", "trigger": {"fallback": True},
                       "actions": [{"reply": "Hey {first_name|there}!"}, {"tag": "greeted"}]}])
    pipeline = env.h.rt.pipeline
    lookup = pipeline.profile_first
    assert lookup is not None

    async def lookup_then_deauthorized(acct: str, contact: str) -> None:
        await lookup(acct, contact)
        await _disconnect(env)

    pipeline.profile_first = lookup_then_deauthorized
    await env.h.dm(IGSID, "hi")
    await env.h.settle()
    assert await env.rows("SELECT * FROM sends") == []
    [conv] = await env.rows("SELECT state FROM conversations")
    assert "greeted" not in json.loads(conv["state"] or "{}").get("tags", [])
