"""An unsend acts only in its own conversation, and takes the other copies of the message's
words with it: the creator's notifications quoting it (an AI hand-off's or draft's, a
workflow's `notify:`), the AI draft answering it, and the text a workflow continuation
carries through a `delay` for `{text}`. Through the real daemon (webhook -> pipeline ->
store) against the sandbox and the fake Gemini."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from instaset.unsent_copies import UNSENT, quote_forms, unquoted
from tests import test_ai_feature
from tests.fake_gemini import reply
from tests.sending_harness import Clock
from tests.test_ai_feature import AI_AUTO, AI_DRAFT, IGSID, Make
from tests.test_leads_unsend import GUIDE, unsend
from tests.test_unsend_values import everything, mid_of, raws

make = test_ai_feature.make  # the fixture: a daemon with the AI feature and a fake Gemini

OTHER = "2229842642640999"  # another contact of the same account
PRIVATE = "call me at +49 176 5550199"


def unsend_by(dm: dict[str, Any], sender: str) -> dict[str, Any]:
    """Meta's unsend webhook for ``dm``'s mid, sent by ``sender``."""
    p = unsend(dm)
    p["entry"][0]["messaging"][0]["sender"] = {"id": sender}
    return p


async def test_an_unsend_from_another_conversation_is_not_applied(
    make: Make, caplog: pytest.LogCaptureFixture,
) -> None:
    """Another contact's unsend naming this contact's message (before and after it came) is
    stored and processed, logged, and changes nothing. Before, the mid alone decided: the
    message lost its text, and one arriving after such an unsend came deleted and unanswered."""
    env = await make([GUIDE])
    await env.h.dm(OTHER, "hello")  # the other contact exists and has a conversation
    await env.h.settle()
    dm = await env.h.dm(IGSID, PRIVATE)
    await env.h.settle()
    with caplog.at_level(logging.WARNING, logger="instaset"):
        assert await env.h.post(unsend_by(dm, OTHER)) == 200
        await env.h.settle()
    [msg] = await env.h.messages(IGSID, "in")
    assert (msg["text"], msg["deleted_at"]) == (PRIVATE, None)
    assert PRIVATE in "".join(r["raw"] for r in await raws(env, mid_of(dm)))
    assert any("another conversation" in r.getMessage() for r in caplog.records)

    # The other order: the other contact's unsend is processed before the message comes.
    late = await env.h.sandbox.user_sends_dm(IGSID, "and my email is dana@example.com",
                                             deliver=False)
    assert await env.h.post(unsend_by(late, OTHER)) == 200
    await env.h.settle()
    assert await env.h.post(late) == 200
    await env.h.settle()
    [_, msg] = await env.h.messages(IGSID, "in")
    assert (msg["text"], msg["deleted_at"]) == ("and my email is dana@example.com", None)
    assert env.texts() == ["Thanks, noted!", "Thanks, noted!"]  # both were answered
    assert "dana@example.com" in "".join(r["raw"] for r in await raws(env, mid_of(late)))
    assert await env.rows("SELECT id FROM events WHERE processed_at IS NULL") == []
    assert len(await env.rows("SELECT id FROM events WHERE kind = 'message_deleted'")) == 2


async def test_an_unsend_takes_the_ai_notice_and_draft_with_it(make: Make) -> None:
    """The AI holds a draft for the creator (the contact asks for a person) and tells them,
    quoting the message. After the unsend the notice quotes nothing of it (its record and
    the copy of a delivery that still waits), and the draft is discarded without its text:
    approving it would answer a message the contact took back."""
    env = await make([AI_DRAFT])
    env.fake.script(reply("Sure Dana, I'll call +49 176 5550199 today!"))
    dm = await env.h.dm(IGSID, f"can I talk to a real person? {PRIVATE}")
    await env.h.settle()
    [note] = await env.rows("SELECT key, kind, text FROM notifications")
    assert note["kind"] == "draft" and "5550199" in note["text"]
    [draft] = await env.rows("SELECT state, text FROM ai_drafts")
    assert draft["state"] == "pending" and "5550199" in draft["text"]
    # A delivery that waits (a channel was down): its job still holds a copy.
    await env.h.rt.db.execute(
        "UPDATE jobs SET state = 'ready' WHERE kind = 'notify'")

    assert await env.h.post(unsend(dm)) == 200
    await env.h.settle()

    assert "5550199" not in await everything(env)
    [note] = await env.rows("SELECT text FROM notifications")
    assert note["text"].endswith(f': "{UNSENT}"'), note["text"]
    [draft] = await env.rows("SELECT state, text, reason FROM ai_drafts")
    assert (draft["state"], draft["text"], draft["reason"]) == ("discarded", "", "unsent")
    assert env.texts() == []


NOTE_AND_LATER = {"name": "callback", "trigger": {"dm": {"keywords": ["call"]}},
                  "actions": [{"notify": "Callback wanted: {text}"}, {"delay": "1m"},
                              {"reply": "About \"{text|your message}\": we'll be in touch"}]}


async def test_an_unsend_during_a_delay_leaves_the_continuation_no_quote(make: Make) -> None:
    """A workflow tells the creator (quoting the message), waits, then replies quoting it.
    The contact unsends during the delay: the notification loses the quote, the waiting
    continuation the text it carries, and its reply goes with the fallback instead of the
    unsent words."""
    clock = Clock(frozen=True)
    env = await make([NOTE_AND_LATER], clock=clock)
    dm = await env.h.dm(IGSID, PRIVATE)
    await env.h.settle()
    [note] = await env.rows("SELECT text FROM notifications")
    assert note["text"] == f"Callback wanted: {PRIVATE}"
    [job] = await env.rows("SELECT payload FROM jobs WHERE kind = 'resume_flow'")
    assert json.loads(job["payload"])["text"] == PRIVATE

    clock.advance(20)
    assert await env.h.post(unsend(dm)) == 200
    await env.h.settle(advance_up_to=120)

    assert env.texts() == ['About "your message": we\'ll be in touch']
    [note] = await env.rows("SELECT text FROM notifications")
    assert note["text"] == f"Callback wanted: {UNSENT}"
    assert "5550199" not in await everything(env)


def test_a_quote_is_taken_out_where_it_stands_as_words() -> None:
    forms = quote_forms(["hi", "line one\nline two " + "x" * 130])
    assert unquoted('@dana needs you (this): "hi"', forms) == f'@dana needs you (this): "{UNSENT}"'
    cut = ("line one line two " + "x" * 130)[:120]
    assert unquoted(f'needs you: "{cut}"', forms) == f'needs you: "{UNSENT}"'
    assert unquoted("shipping", forms) == "shipping"
    assert forms[0].startswith("line one") and forms[-1] == "hi"  # longest first


async def test_an_unsend_takes_the_contacts_link_out_of_the_ai_notice_detail(
        make: Make) -> None:
    """Review C (s17): the AI reply repeated the contact's private link, the guardrail held
    it and the notice named the link ("the reply has a link (...)"); after the unsend the
    quote went but the link stayed in the notice and its job."""
    secret = "https://dana-private.example/tax-return-2025"
    env = await make([AI_AUTO])
    env.fake.script(reply(f"Got it, I'll look at {secret} today"))
    dm = await env.h.dm(IGSID, f"here is my file {secret}")
    await env.h.settle()
    assert "dana-private" in await everything(env)
    assert await env.h.post(unsend(dm)) == 200
    await env.h.settle()
    left = await everything(env)
    assert "dana-private" not in left, [x for x in left.splitlines() if "dana-private" in x]


async def test_a_pending_draft_goes_with_an_unsend_after_retention_took_its_message(
        make: Make) -> None:
    """Review C (s17): retention keeps pending drafts; the unsend came after it took the
    message, and the draft (repeating the phone number) stayed pending, approvable."""
    from instaset.retention import purge_older_than
    day = 86400.0
    clock = Clock(frozen=True)
    env = await make([AI_DRAFT], clock=clock)
    env.fake.script(reply("Sure Dana, I'll call +49 176 5550199 today!"))
    dm = await env.h.dm(IGSID, "can I talk to a real person? call me at +49 176 5550199")
    await env.h.settle()
    assert [r["state"] for r in await env.rows("SELECT state FROM ai_drafts")] == ["pending"]
    clock.advance(100 * day)
    await purge_older_than(env.h.rt.db, clock() - 90 * day, clock())
    assert await env.rows("SELECT 1 FROM messages") == []
    p = unsend(dm)
    p["entry"][0]["messaging"][0]["timestamp"] = int(clock() * 1000)
    assert await env.h.post(p) == 200
    await env.h.settle()
    assert [(r["state"], r["reason"]) for r in await env.rows(
        "SELECT state, reason FROM ai_drafts")] == [("discarded", "unsent")]
    assert "5550199" not in await everything(env)
