"""A message the contact unsent takes with it what was taken from it (Meta's rule: honour an
unsend): its text (and its edits') in the history and in the stored raw events (their rows
stay as dedupe keys), the AI facts extracted from it and the fields an `ask:` step captured
from it, and the lead is rescored. An unsend that arrives before its message makes that
message arrive deleted, and nothing answers it. Through the real daemon (webhook ->
pipeline -> store) against the sandbox and the fake Gemini."""

from __future__ import annotations

import copy
import json
from typing import Any

from instaset.event_values import redacted_raw
from instaset.events import MessageEvent, parse_stored
from tests import test_ai_feature
from tests.fake_gemini import reply
from tests.test_ai_feature import AI_AUTO, IGSID, Env, Make
from tests.test_leads_unsend import GUIDE, unsend

make = test_ai_feature.make  # the fixture: a daemon with the AI feature and a fake Gemini

RULES = {"qualified_at": 100, "rules": [
    {"name": "wants_call", "points": 20, "keywords": ["call"]},
    {"name": "has_phone", "points": 10, "field": "phone"},
    {"name": "budget", "points": 20, "ai_fact": "budget"},
]}
CALLBACK = {"name": "callback", "trigger": {"dm": {"keywords": ["call"]}},
            "actions": [{"ask": {"field": "phone", "prompt": "Your number?", "type": "phone"}},
                        {"reply": "Thanks, we'll call you"}]}
PHONE = "+49 176 5550199"
BUDGET = "I could do 500 a month"


async def everything(env: Env) -> str:
    """Every value of every row of every table, as one string."""
    tables = [r["name"] for r in await env.rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    out = []
    for t in tables:
        out += [json.dumps(r, ensure_ascii=False) for r in await env.rows(f"SELECT * FROM {t}")]
    return "\n".join(out)


async def raws(env: Env, mid: str) -> list[dict[str, Any]]:
    return await env.rows(
        "SELECT dedupe_key, raw FROM events WHERE dedupe_key IN (?, ?) OR dedupe_key LIKE ?"
        " ORDER BY id", (f"msg:{mid}", f"del:{mid}", f"edit:{mid}:%"))


def mid_of(dm: dict[str, Any]) -> str:
    return str(dm["entry"][0]["messaging"][0]["message"]["mid"])


def edit_of(dm: dict[str, Any], text: str, num: int = 1) -> dict[str, Any]:
    p = copy.deepcopy(dm)
    item = p["entry"][0]["messaging"][0]
    item["message_edit"] = {"mid": item.pop("message")["mid"], "text": text, "num_edit": num}
    return p


async def state_fields(env: Env) -> dict[str, str]:
    [conv] = await env.rows("SELECT state FROM conversations")
    return dict(json.loads(conv["state"]).get("fields") or {})


async def test_an_unsend_takes_back_the_values_taken_from_the_message(make: Make) -> None:
    env = await make([CALLBACK, AI_AUTO], leads=RULES)
    env.fake.script(reply("Noted!", lead_fields=[
        {"name": "budget", "value": "500/month", "evidence": BUDGET}]))
    await env.h.dm(IGSID, "can we do a call?")
    await env.h.settle()
    phone = await env.h.dm(IGSID, PHONE)  # the answer to "Your number?"
    await env.h.settle()
    assert await env.h.post(edit_of(phone, "+49 176 5550199 (mobile)")) == 200
    budget = await env.h.dm(IGSID, BUDGET)  # the AI's budget fact
    await env.h.settle()
    assert env.texts() == ["Your number?", "Thanks, we'll call you", "Noted!"]
    assert (await state_fields(env))["phone"].endswith("5550199")
    [lead] = await env.rows("SELECT score, reasons FROM leads")
    assert lead["score"] == 50 and "5550199" in lead["reasons"]
    assert "5550199" in "".join(r["raw"] for r in await raws(env, mid_of(phone)))

    assert await env.h.post(unsend(phone)) == 200
    await env.h.settle()

    # Nothing of the phone number is left anywhere: history (text and edits), raw events of
    # the message and its edit, the captured field, the lead's reasons.
    assert "5550199" not in await everything(env)
    [msg] = [m for m in await env.h.messages(IGSID, "in") if m["mid"] == mid_of(phone)]
    assert msg["deleted_at"] is not None
    assert (msg["text"], msg["edits"], msg["attachments"]) == (None, "[]", "[]")
    events = await raws(env, mid_of(phone))
    assert [e["dedupe_key"].split(":")[0] for e in events] == ["msg", "edit", "del"]
    assert all(json.loads(e["raw"])["entry"][0]["messaging"][0].get("sender")
               for e in events)  # the rows stay, with who and when
    assert "phone" not in await state_fields(env)  # the step would ask again
    assert await env.rows("SELECT * FROM captured_fields") == []
    # Rescored: the field no longer holds; the keyword's points stay; the budget fact came
    # from another message and keeps its value.
    [lead] = await env.rows("SELECT score, reasons FROM leads")
    assert [(r["rule"], r["matched"]) for r in json.loads(lead["reasons"])] == [
        ("wants_call", "keyword 'call'"), ("budget", "AI: budget = '500/month'")]
    assert lead["score"] == 40

    # Meta redelivers the original: still a duplicate (no new event, no reply, no text).
    sent = len(env.texts())
    assert await env.h.post(phone) == 200
    await env.h.settle()
    assert len(await raws(env, mid_of(phone))) == 3 and len(env.texts()) == sent
    assert "5550199" not in await everything(env)

    assert await env.h.post(unsend(budget)) == 200
    await env.h.settle()
    left = await everything(env)
    assert "500/month" not in left and "do 500" not in left
    assert await env.rows("SELECT name, value, evidence FROM lead_facts") == [
        {"name": "budget", "value": None, "evidence": None}]
    [lead] = await env.rows("SELECT score, reasons FROM leads")
    assert [(r["rule"], r["matched"], r["evidence"]) for r in json.loads(lead["reasons"])] == [
        ("wants_call", "keyword 'call'", "can we do a call?"), ("budget", "AI: budget", None)]
    assert lead["score"] == 40  # the points of what they said stay, as a keyword's do


async def test_a_value_given_again_in_another_message_stays(make: Make) -> None:
    """Only the values whose source is the unsent message go: the phone answered again
    later (the step asked again) is that later message's."""
    env = await make([CALLBACK], leads=RULES)
    await env.h.dm(IGSID, "call?")
    await env.h.settle()
    first = await env.h.dm(IGSID, "+49 176 5550100")
    await env.h.settle()
    await env.h.dm(IGSID, "call me again?")  # the field is there: no question this time
    await env.h.settle()
    assert await env.h.post(unsend(first)) == 200
    await env.h.settle()
    assert "phone" not in await state_fields(env)
    await env.h.dm(IGSID, "call please")
    await env.h.settle()
    second = await env.h.dm(IGSID, "+49 176 5550111")
    await env.h.settle()
    assert (await state_fields(env))["phone"].endswith("5550111")
    assert await env.h.post(unsend(first)) == 200  # a redelivered unsend of the first one
    await env.h.settle()
    assert (await state_fields(env))["phone"].endswith("5550111")
    [row] = await env.rows("SELECT mid FROM captured_fields")
    assert row["mid"] == mid_of(second)


async def test_an_unsend_before_its_message_leaves_it_deleted_and_unanswered(
    make: Make,
) -> None:
    """Webhooks come out of order: the unsend is processed first, then its message (and an
    edit of it) comes. The message is stored deleted without its text, its raw event is
    redacted, and no workflow, AI reply or lead score runs for it."""
    env = await make([GUIDE], leads=RULES)
    dm = await env.h.sandbox.user_sends_dm(IGSID, "call me on +49 176 5550199",
                                           deliver=False)
    assert await env.h.post(unsend(dm)) == 200
    await env.h.settle()
    assert await env.h.post(dm) == 200
    await env.h.settle()
    assert await env.h.post(edit_of(dm, "call me on +49 176 5550198")) == 200
    await env.h.settle()

    [msg] = await env.h.messages(IGSID, "in")
    assert msg["mid"] == mid_of(dm) and msg["deleted_at"] is not None
    assert (msg["text"], msg["edits"]) == (None, "[]")
    assert env.texts() == []  # the fallback workflow did not answer it
    assert await env.rows("SELECT * FROM sends") == []
    assert await env.rows("SELECT key FROM jobs WHERE kind NOT IN ('process_event')") == []
    assert await env.rows("SELECT * FROM leads") == []
    assert "555019" not in await everything(env)
    assert [e["dedupe_key"].split(":")[0] for e in await raws(env, mid_of(dm))] == [
        "del", "msg", "edit"]
    # Every event was processed (none waits for a message that came deleted).
    assert await env.rows("SELECT id FROM events WHERE processed_at IS NULL") == []


def test_a_redacted_raw_keeps_the_event_without_the_content() -> None:
    raw = json.dumps({"object": "instagram", "entry": [{"id": "1", "time": 5, "messaging": [{
        "sender": {"id": "2"}, "recipient": {"id": "1"}, "timestamp": 5,
        "message": {"mid": "m1", "text": "my number", "attachments": [
            {"type": "image", "payload": {"url": "https://cdn/x.jpg"}}],
            "reply_to": {"story": {"id": "s1", "url": "https://cdn/story"}}}}]}]})
    out = redacted_raw(raw)
    [event] = parse_stored(out)
    assert isinstance(event, MessageEvent) and event.dedupe_key == "msg:m1"
    assert event.text is None and "cdn" not in out and "my number" not in out
    assert [a.type for a in event.attachments] == ["image"]
    assert redacted_raw(out) == out  # nothing left to take
    deleted = unsend({"entry": [{"messaging": [{"message": {"mid": "m1"}}]}]})
    assert redacted_raw(json.dumps(deleted)) == json.dumps(deleted)  # no content: as it is


async def test_an_unsend_after_retention_took_the_message_takes_its_values_too(
        make: Make) -> None:
    """Review A (s17): retention (90 days) took the messages; the field captured from one
    and the AI fact from another are kept until the contact is erased. The contact unsends
    both: the values go as they would have with the messages there (they stayed, quoted in
    the lead's reasons)."""
    from instaset.retention import purge_older_than
    from tests.sending_harness import Clock
    day = 86400.0
    clock = Clock(frozen=True)
    env = await make([CALLBACK, AI_AUTO], leads=RULES, clock=clock)
    env.fake.script(reply("Noted!", lead_fields=[
        {"name": "budget", "value": "500/month", "evidence": BUDGET}]))
    await env.h.dm(IGSID, "can we do a call?")
    await env.h.settle()
    phone = await env.h.dm(IGSID, PHONE)
    await env.h.settle()
    budget = await env.h.dm(IGSID, BUDGET)
    await env.h.settle()
    assert (await state_fields(env))["phone"].endswith("5550199")
    assert "500/month" in await everything(env)
    clock.advance(100 * day)
    await purge_older_than(env.h.rt.db, clock() - 90 * day, clock())
    assert await env.rows("SELECT 1 FROM messages") == []
    for dm in (phone, budget):
        p = unsend(dm)
        p["entry"][0]["messaging"][0]["timestamp"] = int(clock() * 1000)
        assert await env.h.post(p) == 200
        await env.h.settle()
    assert "phone" not in await state_fields(env)
    left = await everything(env)
    assert "500/month" not in left and "5550199" not in left
