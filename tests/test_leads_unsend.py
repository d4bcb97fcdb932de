"""A message the contact unsent takes its words out of their lead (Meta's rule: honour an
unsend): the lead's reasons, its lead facts and the "qualified" notification, through the
real daemon (webhook -> pipeline), while the points stay."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from instaset.leads import Reason, unquoted
from tests import test_ai_feature
from tests.fake_gemini import reply
from tests.test_ai_feature import IGSID, Env, Make

make = test_ai_feature.make  # the fixture: a daemon with the AI feature and a fake Gemini

RULES = {"qualified_at": 30, "rules": [
    {"name": "asked_price", "points": 15, "keywords": ["price"]},
    {"name": "wants_call", "points": 20, "keywords": ["call"]},
    {"name": "phone", "points": 5, "regex": r"\+?\d[\d ]{7,}\d"},
    {"name": "budget", "points": 20, "ai_fact": "budget"},
]}
FIRST = "hi, can we do a call?"
UNSENT = "what's the price? I'm Dana Smith, +49 176 5550199, I could do 500 a month"
GUIDE = {"name": "guide", "trigger": {"fallback": True},
         "actions": [{"reply": "Thanks, noted!"}]}
PRIVATE = ("price?", "Dana", "5550199", "could do 500", "500/month")


def unsend(dm: dict[str, Any]) -> dict[str, Any]:
    """Meta's unsend webhook for ``dm`` (fixtures/meta/chatwoot_dm_deleted_unsend.json)."""
    p = copy.deepcopy(dm)
    item = p["entry"][0]["messaging"][0]
    item["message"] = {"mid": item["message"]["mid"], "is_deleted": True}
    return p


async def stored_words(env: Env) -> str:
    """Everything of the lead that may quote the contact, as one string."""
    rows = await env.rows(
        "SELECT reasons AS t FROM leads UNION ALL SELECT evidence FROM lead_facts"
        " UNION ALL SELECT value FROM lead_facts"
        " UNION ALL SELECT text FROM notifications UNION ALL"
        " SELECT payload FROM jobs WHERE kind = 'notify'")
    return "\n".join(str(r["t"]) for r in rows)


async def test_an_unsent_message_leaves_the_lead_its_points_not_its_words(
    make: Make, tmp_path: Path,
) -> None:
    # The notification channel is down at first: the "qualified" notification waits.
    ok, out = tmp_path / "channel-up", tmp_path / "delivered.txt"
    env = await make(leads=RULES, notify={"command": f"test -e {ok} && cat > {out}"})
    env.fake.script(reply("Sure, when suits you?"), reply("It's $90 a session!", lead_fields=[
        {"name": "budget", "value": "500/month", "evidence": "I could do 500 a month"}]))
    await env.h.dm(IGSID, FIRST)
    await env.h.settle()
    dm = await env.h.dm(IGSID, UNSENT)
    await env.h.settle()
    [lead] = await env.rows("SELECT score, stage, reasons FROM leads")
    assert (lead["score"], lead["stage"]) == (60, "qualified")
    before = await stored_words(env)
    assert all(w in before for w in PRIVATE)  # quoted in reasons, facts and notification
    [job] = await env.rows("SELECT state, payload FROM jobs WHERE kind = 'notify'")
    assert job["state"] == "ready" and "5550199" in json.loads(job["payload"])["text"]

    assert await env.h.post(unsend(dm)) == 200
    await env.h.settle()

    after = await stored_words(env)
    assert not [w for w in PRIVATE if w in after], after
    [lead] = await env.rows("SELECT score, stage, reasons FROM leads")
    assert (lead["score"], lead["stage"]) == (60, "qualified")  # the points stay
    assert [(r["rule"], r["points"], r["matched"], r.get("evidence"))
            for r in json.loads(lead["reasons"])] == [
        ("asked_price", 15, "keyword 'price'", None),
        ("wants_call", 20, "keyword 'call'", FIRST),  # another message: quoted still
        ("phone", 5, "pattern '\\\\+?\\\\d[\\\\d ]{7,}\\\\d'", None),
        ("budget", 20, "AI: budget", None),  # the fact's value was in the message too
    ]
    assert await env.rows("SELECT name, value, evidence FROM lead_facts") == [
        {"name": "budget", "value": None, "evidence": None}]
    [note] = await env.rows("SELECT text FROM notifications WHERE kind = 'lead'")
    assert note["text"] == (f"@user_{IGSID} is a qualified lead (score 40): asked_price +15;"
                            f' wants_call +20 ("{FIRST}"); phone +5')
    # The channel comes back: what it is handed is the notification without the words.
    ok.touch()
    await env.h.settle(advance_up_to=120.0)
    assert out.read_text() == note["text"]


async def test_a_full_rescore_after_the_unsend_quotes_nothing_again(make: Make) -> None:
    """The rescore a new AI fact triggers keeps the unsent message's points, unquoted."""
    env = await make(leads=RULES)
    env.fake.script(reply("Sure!"), reply("Noted!", lead_fields=[
        {"name": "budget", "value": "600", "evidence": "600 works"}]))
    dm = await env.h.dm(IGSID, UNSENT)
    await env.h.settle()
    assert await env.h.post(unsend(dm)) == 200
    await env.h.settle()
    await env.h.dm(IGSID, "ok 600 works")
    await env.h.settle()
    [lead] = await env.rows("SELECT score, stage, reasons FROM leads")
    reasons = json.loads(lead["reasons"])
    assert [(r["rule"], r.get("evidence")) for r in reasons] == [
        ("asked_price", None), ("phone", None), ("budget", "600 works")]
    assert (lead["score"], lead["stage"]) == (40, "qualified")
    assert not [w for w in PRIVATE if w in await stored_words(env)]


async def test_the_words_of_an_edited_message_go_with_its_unsend(make: Make) -> None:
    """The lead was scored on the text before the edit: that text is the message's too."""
    env = await make([GUIDE], leads=RULES)
    dm = await env.h.dm(IGSID, "what's the price? call me on +49 176 5550199")
    await env.h.settle()
    edited = copy.deepcopy(dm)
    item = edited["entry"][0]["messaging"][0]
    item["message_edit"] = {"mid": item.pop("message")["mid"], "text": "hello",
                            "num_edit": 1}
    assert await env.h.post(edited) == 200
    await env.h.settle()
    assert [m["text"] for m in await env.h.messages(IGSID, "in")] == ["hello"]
    assert "5550199" in await stored_words(env)  # scored before the edit
    assert await env.h.post(unsend(dm)) == 200
    await env.h.settle()
    [lead] = await env.rows("SELECT score, reasons FROM leads")
    assert lead["score"] == 40 and "5550199" not in await stored_words(env)
    assert all(r.get("evidence") is None for r in json.loads(lead["reasons"]))


def test_unquoted_cuts_the_words_a_pattern_found() -> None:
    r = Reason("phone", 5, "pattern '\\\\d+ \\\\(x' ('12 (x')", "call 12 (x", 3.0)
    assert unquoted(r) == Reason("phone", 5, "pattern '\\\\d+ \\\\(x'", None, 3.0)
    tricky = Reason("q", 1, "pattern \"it's (a)\" ('it's (a)')", "it's (a)", 1.0)
    assert unquoted(tricky).matched == "pattern \"it's (a)\""
    kw = Reason("asked_price", 15, "keyword 'price'", "price?", 1.0)
    assert unquoted(kw) == Reason("asked_price", 15, "keyword 'price'", None, 1.0)
