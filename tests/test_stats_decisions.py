"""`stats` counts a workflow's decision once and a missed private reply once, end to end:
the real daemon against the Instagram sandbox and the fake Gemini server (s17 review B,
findings 1 and 4; migration 0023). The rollups (`compute`) and the row-by-row reference
(`compute_scan`) must agree on each figure."""

from __future__ import annotations

from typing import Any

import pytest

from instaset.sandbox import Fault
from instaset.stats import compute, compute_scan
from tests import test_ai_feature
from tests.fake_gemini import rate_limited, reply
from tests.sending_harness import Clock, Harness
from tests.test_ai_feature import IGSID, Make
from tests.test_comment_to_dm import ANNOUNCE, GUIDE, MEDIA, MakeHarness, make_harness, sends

make = test_ai_feature.make  # the fixtures: AI (runtime, sandbox, fake Gemini) and sandbox
__all__ = ["make", "make_harness"]

POST = "18000000000000071"
FALLBACK = "Thanks! I'll get back to you shortly."
HELLO_AI = {"name": "hello-ai", "trigger": {"dm": {"keywords": ["hello"]}},
            "actions": [{"reply": "Hi! One moment"}, {"ai_reply": "auto"}]}
PRICE_AI = {"name": "price-ai", "trigger": {"comment": {"keywords": ["price"]}},
            "actions": [{"public_reply": "Check your DMs"}, {"ai_reply": "auto"}]}


async def both(h: Harness, since: float) -> list[dict[str, Any]]:
    """The rollups' document and the reference's, which must be the same."""
    now = h.clock()
    docs = [await compute(h.rt.db, since, now), await compute_scan(h.rt.db, since, now)]
    assert docs[0] == docs[1]
    return docs


def figures(row: dict[str, Any]) -> dict[str, int]:
    return {k: row[k] for k in ("triggers", "sent", "refused")}


async def test_a_message_and_an_ai_reply_are_one_trigger(make: Make) -> None:
    """The workflow's greeting (``send:{event}:0``) and its AI answer
    (``send:ai:{event}:1``) are one decision: one trigger, two sends. Before, two."""
    clock = Clock(frozen=True)
    env = await make([HELLO_AI], clock=clock)
    env.fake.script(reply("Coaching is $90 a session!"))
    await env.h.dm(IGSID, "hello, price?")
    await env.h.settle()
    assert env.texts() == ["Hi! One moment", "Coaching is $90 a session!"]
    for doc in await both(env.h, clock() - 3600):
        assert figures(doc["totals"]) == {"triggers": 1, "sent": 2, "refused": 0}
        [wf] = doc["workflows"]
        assert (wf["workflow"], figures(wf)) == ("hello-ai", figures(doc["totals"]))


async def test_the_ai_fallback_to_a_comment_adds_no_trigger(make: Make) -> None:
    """A comment's public reply and, Gemini out of quota, the AI's fallback as its private
    reply: one decision per workflow and per media. Before, two (the fallback's key,
    ``send:ai-fallback:...:ai:{event}:1``, was a decision of its own)."""
    clock = Clock(frozen=True)
    env = await make([PRICE_AI], clock=clock, ai={"fallback_message": FALLBACK})
    env.fake.default = rate_limited("3600s")
    await env.h.sandbox.user_comments(IGSID, "price?", POST)
    await env.h.settle()
    rows = await env.rows("SELECT key, kind, state FROM sends ORDER BY rowid")
    assert [(r["kind"], r["state"]) for r in rows] == [("public_reply", "sent"),
                                                        ("private_reply", "sent")]
    assert rows[1]["key"].startswith("send:ai-fallback:")
    for doc in await both(env.h, clock() - 3600):
        assert figures(doc["totals"]) == {"triggers": 1, "sent": 2, "refused": 0}
        [wf] = doc["workflows"]
        [media] = [m for m in doc["media"] if m["media_id"] == POST]
        assert figures(wf) == figures(media) == figures(doc["totals"])


# -- a missed private reply: one refusal, whichever layer caught it -------------------------

@pytest.mark.parametrize("caught_by", ["engine", "outbox"])
async def test_a_missed_private_reply_is_one_refusal(make_harness: MakeHarness,
                                                     caught_by: str) -> None:
    """The engine refuses a private reply that is media only, and drops the public reply
    announcing it (no row); Meta refuses a text one (551) in the outbox, which stores the
    public reply refused, ``private_reply_not_sent``. Both are one missed DM: one refusal,
    under the private reply's reason. Before, the outbox's counted two."""
    if caught_by == "engine":
        first: dict[str, Any] = {"media": {"type": "image", "url": "https://x.example/a.jpg"}}
        reason, rows = "private_reply_not_text", [("media", "refused", "private_reply_not_text")]
    else:
        first, reason = {"private_reply": GUIDE}, "user_unavailable"
        rows = [("private_reply", "failed", reason),
                ("public_reply", "refused", "private_reply_not_sent")]
    h = await make_harness(workflows=[{"name": "c2d", "trigger": {"comment": {
        "keywords": ["guide"]}}, "actions": [first, {"public_reply": ANNOUNCE}]}])
    h.sandbox.inject(Fault("graph_error", path_contains="/messages", status=400, code=551,
                           subcode=1545041, message="This person isn't available."))
    await h.sandbox.user_comments(IGSID, "guide pls", MEDIA)
    await h.settle()
    assert await sends(h) == rows
    for doc in await both(h, h.clock() - 3600):
        assert figures(doc["totals"]) == {"triggers": 1, "sent": 0, "refused": 1}
        assert doc["refused_by_reason"] == {reason: 1}
        [media] = [m for m in doc["media"] if m["media_id"] == MEDIA]
        assert media["refused"] == 1
