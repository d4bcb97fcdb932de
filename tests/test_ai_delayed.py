"""An ai_reply after a workflow ``delay`` answers the message that started the workflow,
with the checks of any late reply, and a Gemini outage in draft mode makes one draft and
one notice per contact and day: end to end, the real daemon against the Instagram sandbox
and the fake Gemini server (session 17)."""

from __future__ import annotations

import json

from tests import test_ai_feature
from tests.fake_gemini import rate_limited, reply, server_error
from tests.sending_harness import Clock
from tests.test_ai_feature import AI_DRAFT, IGSID, Env, Make
from tests.test_leads_unsend import unsend

make = test_ai_feature.make  # the fixture: the runtime, the sandbox and the fake Gemini

LATER = {"name": "ai-later", "trigger": {"fallback": True},
         "actions": [{"delay": "1m"}, {"ai_reply": "auto"}]}
COACH_NOW = {"name": "coach", "trigger": {"dm": {"keywords": ["coach"]}},
             "actions": [{"ai_reply": "auto"}]}
SOON = {"name": "ai-soon", "trigger": {"fallback": True},
        "actions": [{"delay": "5s"}, {"ai_reply": "auto"}]}


async def _ai_jobs(env: Env) -> list[dict[str, object]]:
    return await env.rows("SELECT key, state, payload FROM jobs WHERE kind = 'ai_reply'"
                          " ORDER BY id")


async def _handoffs(env: Env) -> list[dict[str, object]]:
    return await env.rows("SELECT text FROM notifications WHERE kind = 'handoff'")


# --- an ai_reply after a delay has its anchor ---------------------------------------------

async def test_two_messages_during_the_delay_get_one_answer_each(make: Make) -> None:
    """Each message starts the workflow; each delayed reply answers the conversation up to
    its own message (what was stored before it: the first reply went out after the question
    came in, so the second turns do not show it). Before, both read the newest turns: the
    question got two answers."""
    clock = Clock(frozen=True)
    env = await make([LATER], clock=clock)
    env.fake.script(reply("Hi! What can I do for you?"), reply("Yes, all online 💪"))
    hi = await env.h.dm(IGSID, "hi")
    await env.h.settle()
    clock.advance(10)
    await env.h.dm(IGSID, "do you coach online?")
    await env.h.settle(advance_up_to=120)

    assert env.texts() == ["Hi! What can I do for you?", "Yes, all online 💪"]
    assert [r.turns for r in env.fake.requests] == [
        [("user", "hi")],
        [("user", "hi\ndo you coach online?")]]
    first, second = await _ai_jobs(env)
    item = hi["entry"][0]["messaging"][0]  # type: ignore[index]
    assert json.loads(str(first["payload"]))["mid"] == item["message"]["mid"]
    assert first["state"] == second["state"] == "done"


async def test_a_message_unsent_during_the_delay_is_not_answered(make: Make) -> None:
    """The contact unsends during the delay: nothing is sent, nobody is told. Before, the
    reply answered the newest message left ("hi", answered already: a second answer), or,
    with none left, handed the contact off for "no text" (12 h of silence)."""
    clock = Clock(frozen=True)
    env = await make([LATER], clock=clock)
    env.fake.script(reply("Hi! What can I do for you?"), reply("Hi again!"))
    await env.h.dm(IGSID, "hi")
    await env.h.settle(advance_up_to=120)
    assert env.texts() == ["Hi! What can I do for you?"]

    dm = await env.h.dm(IGSID, "I'm Dana, +49 176 5550199")
    await env.h.settle()
    clock.advance(20)
    assert await env.h.post(unsend(dm)) == 200
    await env.h.settle(advance_up_to=120)

    assert env.texts() == ["Hi! What can I do for you?"]
    assert len(env.fake.requests) == 1
    assert {j["state"] for j in await _ai_jobs(env)} == {"done"}
    assert await _handoffs(env) == []
    assert await env.rows("SELECT key FROM ai_drafts") == []
    assert (await env.h.conversation(IGSID))["paused_until"] is None


async def test_a_later_messages_reply_during_the_delay_stops_the_delayed_one(
        make: Make) -> None:
    """The later message's reply goes first: "hi" waits out its delay; "do you coach
    online?" is answered at once (with "hi" in its turns). The delayed reply to "hi" then
    sends nothing. Before, it answered the newest turns: the question a second time."""
    clock = Clock(frozen=True)
    env = await make([COACH_NOW, LATER], clock=clock)
    env.fake.script(reply("Hey! Yes, I coach online 💪"), reply("Online, yes!"))
    await env.h.dm(IGSID, "hi")
    await env.h.settle()
    clock.advance(10)
    await env.h.dm(IGSID, "do you coach online?")
    await env.h.settle(advance_up_to=120)

    assert env.texts() == ["Hey! Yes, I coach online 💪"]
    assert [r.turns for r in env.fake.requests] == [[("user", "hi\ndo you coach online?")]]
    assert {j["state"] for j in await _ai_jobs(env)} == {"done"}


async def test_a_delayed_reply_to_a_later_message_stops_an_earlier_deferred_one(
        make: Make) -> None:
    """The other order: the question's reply waits for Gemini (a 429 for 30 s); "hello?"
    starts a delayed reply that comes due first and answers both. The question's reply then
    sends nothing: the delayed reply's key is one of "hello?"'s replies, which the check
    finds (before, under ``ai:resume:...``, it was missed and the question answered twice)."""
    clock = Clock(frozen=True)
    env = await make([COACH_NOW, SOON], clock=clock)
    env.fake.script(rate_limited("30s"), reply("Hey! Yes, I coach online 💪"),
                    reply("Yes, online!"))
    await env.h.dm(IGSID, "do you coach online?")
    await env.h.settle()
    clock.advance(1)
    await env.h.dm(IGSID, "hello?")
    await env.h.settle(advance_up_to=60)

    assert env.texts() == ["Hey! Yes, I coach online 💪"]
    assert [r.turns for r in env.fake.requests] == [
        [("user", "do you coach online?")], [("user", "do you coach online?\nhello?")]]
    assert {j["state"] for j in await _ai_jobs(env)} == {"done"}


async def test_a_continuation_queued_before_the_anchor_still_answers(make: Make) -> None:
    """A resume_flow job of an older version (no ``mid``, no ``ai_base``) runs its
    ai_reply as before: on the newest messages, under its old key."""
    clock = Clock(frozen=True)
    env = await make([LATER], clock=clock)
    env.fake.script(reply("Yes, all online!"))
    await env.h.dm(IGSID, "do you coach online?")
    await env.h.settle()
    [resume] = await env.rows("SELECT key, payload FROM jobs WHERE kind = 'resume_flow'")
    payload = json.loads(str(resume["payload"]))
    del payload["mid"], payload["ai_base"]
    await env.h.rt.db.execute("UPDATE jobs SET payload = ? WHERE key = ?",
                              (json.dumps(payload), resume["key"]))
    await env.h.settle(advance_up_to=120)
    assert env.texts() == ["Yes, all online!"]
    [job] = await _ai_jobs(env)
    assert str(job["key"]).startswith("ai:resume:resume:")
    assert json.loads(str(job["payload"]))["mid"] is None


# --- draft mode during a Gemini outage: one draft and one notice per contact and day --------

async def test_an_outage_in_draft_mode_makes_one_draft_and_one_notice_a_day(
        make: Make) -> None:
    """Every call is a 500 (each message's tries run out). Three messages: one empty draft
    and one "draft waiting" notice (before: three of each). Gemini back: a normal draft.
    The next day's outage makes its own."""
    clock = Clock(frozen=True)
    env = await make([AI_DRAFT], clock=clock)
    env.fake.default = server_error()
    for text in ("hi!", "do you coach online?", "how much is it?"):
        await env.h.dm(IGSID, text)
        await env.h.settle(advance_up_to=60)
        clock.advance(30)

    assert len(env.fake.requests) == 9  # 3 tries each (ai.max_attempts)
    drafts = await env.rows("SELECT key, text, reason, state FROM ai_drafts")
    assert [(d["text"], d["reason"], d["state"]) for d in drafts] == [
        ("", "ai_server_error", "pending")]
    notes = await env.rows("SELECT text FROM notifications WHERE kind = 'draft'")
    assert len(notes) == 1 and "server_error" in str(notes[0]["text"])
    assert '"hi!"' in str(notes[0]["text"])
    assert env.texts() == [] and await _handoffs(env) == []
    assert (await env.h.conversation(IGSID))["paused_until"] is None
    assert {j["state"] for j in await _ai_jobs(env)} == {"done"}

    env.fake.default = reply("Yes! Online, $90 a session.")
    await env.h.dm(IGSID, "anyone there?")
    await env.h.settle()
    drafts = await env.rows("SELECT text, reason FROM ai_drafts ORDER BY id")
    assert drafts[-1] == {"text": "Yes! Online, $90 a session.", "reason": "draft"}

    clock.advance(86400)
    env.fake.default = server_error()
    await env.h.dm(IGSID, "one more question")
    await env.h.settle(advance_up_to=60)
    reasons = [d["reason"] for d in await env.rows("SELECT reason FROM ai_drafts ORDER BY id")]
    assert reasons == ["ai_server_error", "draft", "ai_server_error"]
    assert len(await env.rows("SELECT 1 FROM notifications WHERE kind = 'draft'")) == 2


async def test_the_outage_draft_once_a_day_is_per_contact(make: Make) -> None:
    clock = Clock(frozen=True)
    env = await make([AI_DRAFT], clock=clock)
    env.fake.default = rate_limited("3600s")  # a final error: no tries after the first
    other = "2229842642640638"
    for who in (IGSID, other, IGSID, other):
        await env.h.dm(who, "hello?")
        await env.h.settle()
    drafts = await env.rows("SELECT contact_id, reason FROM ai_drafts")
    assert sorted((d["contact_id"], d["reason"]) for d in drafts) == sorted(
        [(IGSID, "ai_rate_limited"), (other, "ai_rate_limited")])
    notes = await env.rows("SELECT contact_id FROM notifications WHERE kind = 'draft'")
    assert sorted(n["contact_id"] for n in notes) == sorted([IGSID, other])


PRICE_AUTO = {"name": "price", "trigger": {"dm": {"keywords": ["price"]}},
              "actions": [{"ai_reply": "auto"}]}


async def test_an_outage_day_with_both_modes_tells_of_the_fallback_and_the_draft(
        make: Make) -> None:
    """Review A (s17): the draft-mode notice shared the fallback's notice key, so a contact
    whose workflows use both modes got one of the two notices: a draft waited unannounced,
    or the fallback went out and the creator was not told. Both orders."""
    for first, second in (("what's the price?", "hello, anyone?"),
                          ("hello, anyone?", "what's the price?")):
        clock = Clock(frozen=True)
        env = await make([PRICE_AUTO, AI_DRAFT], clock=clock,
                         ai={"fallback_message": "Back to you soon!"})
        env.fake.default = rate_limited("3600s")  # a final error: gives up at once
        await env.h.dm(IGSID, first)
        await env.h.settle()
        clock.advance(60)
        await env.h.dm(IGSID, second)
        await env.h.settle()
        assert env.texts() == ["Back to you soon!"]
        assert [d["state"] for d in await env.rows("SELECT state FROM ai_drafts")] == [
            "pending"]
        kinds = sorted(n["kind"] for n in await env.rows("SELECT kind FROM notifications"))
        assert kinds == ["draft", "handoff"], (first, kinds)
