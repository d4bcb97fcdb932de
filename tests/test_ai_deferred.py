"""An ai_reply that runs late (a 429, a back-off, a backlog) and a Gemini outage, end to end:
the real daemon against the Instagram sandbox and the fake Gemini server (s16 audit AI,
findings 6 and 9)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from instaset.queue import NewJob, enqueue_in
from tests import test_ai_feature
from tests.fake_gemini import held, rate_limited, reply
from tests.sending_harness import Clock
from tests.test_ai_feature import AI_AUTO, IGSID, Env, Make

make = test_ai_feature.make  # the fixture: the runtime, the sandbox and the fake Gemini

GUIDE = {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
         "actions": [{"reply": "Here's the free guide: https://maya.fit/guide"}]}


async def _ai_jobs(env: Env) -> list[dict[str, object]]:
    return await env.rows("SELECT key, state, payload FROM jobs WHERE kind = 'ai_reply'"
                          " ORDER BY id")


async def _until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait (at most 10 s, in 20 ms steps) until ``check()`` holds."""
    for _ in range(500):
        if await check():
            return
        await asyncio.sleep(0.02)


async def _now(value: bool) -> bool:
    return value


async def _all_done(env: Env) -> bool:
    jobs = await _ai_jobs(env)
    return bool(jobs) and {j["state"] for j in jobs} == {"done"}


async def _unsent(env: Env) -> bool:
    rows = await env.rows("SELECT deleted_at FROM messages WHERE direction = 'in'")
    return bool(rows) and rows[0]["deleted_at"] is not None


# --- finding 6: a deferred reply does not answer again what a later reply answered ----------

async def test_a_reply_deferred_by_a_429_is_dropped_once_a_later_one_answered(
        make: Make) -> None:
    """The audit's B2: "hi there" waits 7 s for Gemini; "how much is coaching?" is answered
    meanwhile (with "hi there" in its turns). The first job then sends nothing and does not
    call Gemini again: before, it sent the price a second time."""
    clock = Clock(frozen=True)
    env = await make(clock=clock)
    env.fake.script(rate_limited("7s"), reply("Coaching is $90 a session!"),
                    reply("It's $90 per session 💪"))
    await env.h.dm(IGSID, "hi there")
    await env.h.settle()
    await env.h.dm(IGSID, "how much is coaching?")
    await env.h.settle()
    assert env.texts() == ["Coaching is $90 a session!"]
    await env.h.settle(advance_up_to=10)

    assert env.texts() == ["Coaching is $90 a session!"]
    assert [r.turns for r in env.fake.requests] == [
        [("user", "hi there")], [("user", "hi there\nhow much is coaching?")]]
    first, second = await _ai_jobs(env)
    assert first["state"] == second["state"] == "done"
    hi, _how_much = await env.h.messages(IGSID, "in")
    assert json.loads(str(first["payload"]))["mid"] == hi["mid"]
    sends = await env.rows("SELECT key FROM sends WHERE key LIKE 'send:ai:%'")
    assert sends == [{"key": f"send:{second['key']}"}]


async def test_quick_messages_waiting_for_gemini_get_one_reply(make: Make) -> None:
    """Three messages whose replies all wait (a 429 each): the job of the last answers the
    three; the two before it fold into it (before: three answers to the same turns)."""
    clock = Clock(frozen=True)
    env = await make(clock=clock)
    env.fake.script(rate_limited("7s"), rate_limited("7s"), rate_limited("7s"),
                    reply("Hi! Yes, online, $90 a session."), reply("again"), reply("again"))
    for text in ("hi", "do you coach online?", "how much?"):
        await env.h.dm(IGSID, text)
        await env.h.settle()
    assert env.texts() == [] and len(env.fake.requests) == 3
    await env.h.settle(advance_up_to=10)

    assert env.texts() == ["Hi! Yes, online, $90 a session."]
    assert len(env.fake.requests) == 4
    assert env.fake.requests[-1].turns == [("user", "hi\ndo you coach online?\nhow much?")]
    assert {j["state"] for j in await _ai_jobs(env)} == {"done"}


async def test_a_canned_reply_to_a_later_keyword_does_not_answer_the_question(
        make: Make) -> None:
    """A question, then the keyword "guide": the workflow's canned link answers the keyword,
    not the question. The deferred AI reply still answers the question, from the
    conversation up to it (it does not answer "guide" again). It was dropped silently
    (review s16 A, finding 1)."""
    clock = Clock(frozen=True)
    env = await make([GUIDE, AI_AUTO], clock=clock)
    env.fake.script(rate_limited("7s"), reply("Yes! I also do nutrition plans 🥗"))
    await env.h.dm(IGSID, "do you also do nutrition plans?")
    await env.h.settle()
    await env.h.dm(IGSID, "and send me the guide pls")
    await env.h.settle(advance_up_to=10)
    assert env.texts() == ["Here's the free guide: https://maya.fit/guide",
                           "Yes! I also do nutrition plans 🥗"]
    assert env.fake.requests[-1].turns == [("user", "do you also do nutrition plans?")]


async def test_a_reply_that_was_in_flight_when_a_later_one_went_out_is_not_sent(
        make: Make) -> None:
    """The check again in the transaction that would send: the first reply's Gemini call
    is slow; the second message is answered meanwhile (its turns have both messages)."""
    env = await make()
    env.fake.script(held(reply("Hi! How can I help?")), reply("Yes, I coach online!"))
    stop = asyncio.Event()
    worker = asyncio.create_task(env.h.rt.worker.run(stop))
    try:
        await env.h.dm(IGSID, "hi")
        await _until(lambda: _now(bool(env.fake.requests)))
        await env.h.dm(IGSID, "do you coach online?")
        await _until(lambda: _now(bool(env.texts())))
        assert env.texts() == ["Yes, I coach online!"]
        env.fake.release()
        await _until(lambda: _all_done(env))
    finally:
        stop.set()
        await worker
    await env.h.settle()
    assert env.texts() == ["Yes, I coach online!"]
    assert env.fake.requests[1].turns == [("user", "hi\ndo you coach online?")]
    # its call is recorded all the same
    assert [c["outcome"] for c in await env.rows("SELECT outcome FROM ai_calls")] == ["ok"] * 2


async def test_a_human_reply_meanwhile_still_stops_a_deferred_reply(make: Make) -> None:
    clock = Clock(frozen=True)
    env = await make(clock=clock)
    env.fake.script(rate_limited("7s"), reply("Here you go!"))
    await env.h.dm(IGSID, "what do you offer?")
    await env.h.settle()
    await env.h.creator_types(IGSID, "Hey! Coaching and a free guide.")
    await env.h.settle(advance_up_to=10)
    assert env.texts() == [] and len(env.fake.requests) == 1
    assert {j["state"] for j in await _ai_jobs(env)} == {"done"}


async def test_a_job_queued_before_the_anchor_existed_still_answers(make: Make) -> None:
    """An ai_reply queued by an older version (no ``mid`` in its payload) answers the
    conversation as before."""
    env = await make([])
    await env.h.dm(IGSID, "do you coach online?")
    await env.h.settle()
    env.fake.script(reply("Yes, all online!"))
    async with env.h.rt.db.tx() as conn:
        await enqueue_in(conn, [NewJob("ai_reply", "ai:legacy:0", {
            "account_id": env.h.account_id, "contact_id": IGSID, "mode": "auto",
            "comment_id": None, "comment_at": None, "workflow": "ai"},
            run_at=env.h.clock(), max_attempts=4)], env.h.clock())
    await env.h.settle()
    assert env.texts() == ["Yes, all online!"]


# --- finding 9: a Gemini outage sends the fallback once a day, not once per message ----------

FALLBACK = "Thanks! I'll get back to you very soon."


async def test_an_exhausted_quota_sends_the_fallback_and_tells_the_creator_once_a_day(
        make: Make) -> None:
    """The audit's I_quota: every call is a 429 asking for an hour. Four messages: one
    fallback, one notification (before: four of each). Not paused (see _give_up): once the
    quota is back, the next message gets an AI answer; the next day's outage is told anew."""
    clock = Clock(frozen=True)
    env = await make(clock=clock, ai={"fallback_message": FALLBACK})
    env.fake.default = rate_limited("3600s")
    for text in ("hi!", "do you coach online?", "how much is it?", "hello??"):
        await env.h.dm(IGSID, text)
        await env.h.settle()
        clock.advance(30)

    assert env.texts() == [FALLBACK]
    assert len(env.fake.requests) == 4  # each message still tried Gemini
    notes = await env.rows("SELECT text FROM notifications WHERE kind = 'handoff'")
    assert len(notes) == 1 and "rate_limited" in notes[0]["text"]
    assert '"hi!"' in notes[0]["text"]
    assert (await env.h.conversation(IGSID))["paused_until"] is None
    assert {j["state"] for j in await _ai_jobs(env)} == {"done"}

    # the quota is back: answered, with the outage's messages in the turns
    env.fake.script(reply("Yes! Online, $90 a session."))
    await env.h.dm(IGSID, "anyone there?")
    await env.h.settle()
    assert env.texts() == [FALLBACK, "Yes! Online, $90 a session."]
    assert env.fake.requests[-1].turns == [
        ("user", "hi!"), ("model", FALLBACK),
        ("user", "do you coach online?\nhow much is it?\nhello??\nanyone there?")]

    # the next day, a new outage: the fallback and the notice once more
    clock.advance(86400)
    await env.h.dm(IGSID, "one more question")
    await env.h.settle()
    assert env.texts()[-1] == FALLBACK and env.texts().count(FALLBACK) == 2
    assert len(await env.rows("SELECT 1 FROM notifications WHERE kind = 'handoff'")) == 2


async def test_the_fallback_once_a_day_is_per_contact(make: Make) -> None:
    clock = Clock(frozen=True)
    env = await make(clock=clock, ai={"fallback_message": FALLBACK})
    env.fake.default = rate_limited("3600s")
    other = "2229842642640638"
    for who in (IGSID, other, IGSID, other):
        await env.h.dm(who, "hello?")
        await env.h.settle()
    assert env.texts(IGSID) == [FALLBACK] and env.texts(other) == [FALLBACK]
    notes = await env.rows("SELECT contact_id FROM notifications WHERE kind = 'handoff'")
    assert sorted(n["contact_id"] for n in notes) == sorted([IGSID, other])


async def test_an_unsend_during_the_gemini_call_leaves_no_quote(make: Make) -> None:
    """The contact unsends their message while Gemini answers it: the AI's lead fact must not
    bring the unsent words back (review s16 A, finding 2)."""
    from tests.test_leads_unsend import RULES, unsend

    env = await make(leads=RULES)
    env.fake.script(held(reply("Thanks! Let's find something that fits.", lead_fields=[
        {"name": "budget", "value": "500/month", "evidence": "I could do 500 a month"}])))
    stop = asyncio.Event()
    worker = asyncio.create_task(env.h.rt.worker.run(stop))
    try:
        dm = await env.h.dm(IGSID, "I'm Dana, +49 176 5550199, I could do 500 a month")
        await _until(lambda: _now(bool(env.fake.requests)))
        assert await env.h.post(unsend(dm)) == 200
        await _until(lambda: _unsent(env))
        env.fake.release()
        await _until(lambda: _all_done(env))
    finally:
        stop.set()
        await worker
    await env.h.settle()
    assert {r["state"] for r in await _ai_jobs(env)} == {"done"}
    facts = await env.rows("SELECT name, evidence FROM lead_facts")
    leads = await env.rows("SELECT reasons FROM leads")
    assert "500 a month" not in json.dumps(facts) + json.dumps([r["reasons"] for r in leads])


async def test_a_deferred_reply_to_a_question_unsent_since_sends_nothing(make: Make) -> None:
    """A question (its reply deferred by a 429), then "guide" (canned), then the question is
    unsent: nothing of theirs is left to answer, and the job must not answer "guide" a
    second time (the newest messages were read when the question was not among the recent
    texts; review s16 C, finding 1)."""
    from tests.test_leads_unsend import unsend

    clock = Clock(frozen=True)
    env = await make([GUIDE, AI_AUTO], clock=clock)
    env.fake.script(rate_limited("7s"), reply("AI: here is the guide again!"))
    question = await env.h.dm(IGSID, "do you also do nutrition plans?")
    await env.h.settle()
    await env.h.dm(IGSID, "guide")
    await env.h.settle()
    assert await env.h.post(unsend(question)) == 200
    await env.h.settle(advance_up_to=10)
    assert env.texts() == ["Here's the free guide: https://maya.fit/guide"]
    assert len(env.fake.requests) == 1  # the 429 only: no second call
    assert {j["state"] for j in await _ai_jobs(env)} == {"done"}
    # skipped, not handed to the creator as a message with no text
    assert await env.rows("SELECT kind FROM notifications WHERE kind = 'handoff'") == []
    assert await env.rows("SELECT key FROM ai_drafts") == []


async def test_the_reply_reads_the_conversation_up_to_its_message_however_long(
        make: Make) -> None:
    """The message a deferred reply answers is older than the 20 newest texts (a backlog of
    keyword messages and their canned replies): the model still sees up to it, not the
    newest ones."""
    clock = Clock(frozen=True)
    env = await make([GUIDE, AI_AUTO], clock=clock)
    env.fake.script(rate_limited("7s"), reply("Yes, nutrition too!"))
    await env.h.dm(IGSID, "do you also do nutrition plans?")
    await env.h.settle()
    for i in range(12):  # 24 texts after the question
        await env.h.dm(IGSID, f"guide {i}")
        await env.h.settle()
    await env.h.settle(advance_up_to=10)
    assert env.texts()[-1] == "Yes, nutrition too!"
    assert env.fake.requests[-1].turns == [("user", "do you also do nutrition plans?")]


async def test_the_fallback_to_a_comment_is_credited_to_its_media(make: Make) -> None:
    """s17 leftovers 3: keyed per contact and day only, the fallback's send no longer named
    the comment it answered, so `stats` credited it to no media. Its key names the comment
    again (after the day's prefix), and still only one goes per contact and day."""
    from instaset.stats import compute, compute_scan
    from tests.test_ai_feature import AI_COMMENT

    post, reel = "18000000000000071", "18000000000000072"
    clock = Clock(frozen=True)
    env = await make([AI_COMMENT, AI_AUTO], clock=clock, ai={"fallback_message": FALLBACK})
    env.fake.default = rate_limited("3600s")
    await env.h.sandbox.user_comments(IGSID, "price??", post)
    await env.h.settle()
    clock.advance(30)
    await env.h.sandbox.user_comments(IGSID, "and this one?", reel)  # the same day: nothing
    await env.h.settle()
    await env.h.dm(IGSID, "hello??")  # nor for a DM
    await env.h.settle()
    [send] = env.h.graph_sends()
    assert send.json["message"] == {"text": FALLBACK}
    assert "comment_id" in dict(send.json["recipient"])  # type: ignore[call-overload]

    now = clock()
    for doc in (await compute(env.h.rt.db, now - 3600, now),
                await compute_scan(env.h.rt.db, now - 3600, now)):
        media = {m["media_id"]: m for m in doc["media"]}
        assert {k: media[post][k] for k in ("comments", "triggers", "sent")} == {
            "comments": 1, "triggers": 1, "sent": 1}
        assert {k: media[reel][k] for k in ("comments", "triggers", "sent")} == {
            "comments": 1, "triggers": 0, "sent": 0}
        assert doc["totals"]["sent"] == 1

    # The next day, the reel's comment gets the day's fallback, credited to the reel.
    clock.advance(86400)
    await env.h.sandbox.user_comments(IGSID, "still there?", reel)
    await env.h.settle()
    assert [r.json["message"] for r in env.h.graph_sends()] == [{"text": FALLBACK}] * 2
    now = clock()
    for doc in (await compute(env.h.rt.db, now - 3600, now),
                await compute_scan(env.h.rt.db, now - 3600, now)):
        media = {m["media_id"]: m for m in doc["media"]}
        assert (media[reel]["triggers"], media[reel]["sent"]) == (1, 1)
