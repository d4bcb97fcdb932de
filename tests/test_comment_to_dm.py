"""Comment-to-DM end to end: the daemon against the built-in sandbox, Meta's refusals and
lost answers injected as sandbox faults, on a frozen clock (audit s16, findings 1, 3, 4).

The workflow: a private reply, and the public reply that announces it ("Sent it to your
DMs!"), after it or (C2D_ANNOUNCE_FIRST) before it: the order does not matter."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from instaset.sandbox import Fault, build_echo_payload
from tests.sending_harness import ACCT, Clock, Harness, MakeHarness, open_harness

IGSID = "9000000000000931"
MEDIA = "17900000000000001"
DAY = 86400.0
GUIDE = "here is the guide"
ANNOUNCE = "Sent it to your DMs!"
C2D = {"name": "c2d", "trigger": {"comment": {"keywords": ["guide"]}},
       "actions": [{"private_reply": GUIDE}, {"public_reply": ANNOUNCE}]}


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[MakeHarness]:
    async with contextlib.AsyncExitStack() as stack:
        count = 0

        async def make(**options: Any) -> Harness:
            nonlocal count
            count += 1
            options.setdefault("clock", Clock(frozen=True))
            return await stack.enter_async_context(
                open_harness(tmp_path, name=f"c2d{count}", **options))

        yield make


def comment_id_of(payload: dict[str, object]) -> str:
    return str(payload["entry"][0]["changes"][0]["value"]["id"])  # type: ignore[index]


async def sends(h: Harness) -> list[tuple[str, str, str | None]]:
    rows = await h.rt.db.fetchall("SELECT kind, state, reason FROM sends ORDER BY key")
    return [(r["kind"], r["state"], r["reason"]) for r in rows]


async def notices(h: Harness) -> list[str]:
    return [r["text"] for r in await h.rt.db.fetchall("SELECT text FROM notifications")]


def private_reply_posts(h: Harness, comment_id: str) -> int:
    return sum(1 for r in h.sandbox.transcript
               if r.json.get("recipient") == {"comment_id": comment_id})


def public_replies(h: Harness, comment_id: str) -> list[str]:
    return [c.text for c in h.sandbox.comments.values() if c.parent_id == comment_id]


# -- finding 1: no "Sent it to your DMs!" when the DM did not go --------------------------------

@pytest.mark.parametrize(("status", "code", "subcode", "reason"), [
    (400, 551, 1545041, "user_unavailable"),  # the person blocked messages
    (400, 100, None, "invalid_parameter"),  # the comment was deleted meanwhile
    (403, 10, None, "permission_missing"),  # no Advanced Access / Development mode
], ids=["551-unavailable", "100-deleted-comment", "10-no-access"])
async def test_a_private_reply_meta_refuses_keeps_its_public_reply_back(
        make_harness: MakeHarness, status: int, code: int, subcode: int | None,
        reason: str) -> None:
    """The public reply announcing the DM was posted under the comment although Meta had
    refused the DM: a false statement under the creator's post. It is now refused with its
    own reason and recorded; the private reply's notice is the one the creator gets."""
    h = await make_harness(workflows=[C2D])
    h.sandbox.inject(Fault("graph_error", path_contains="/messages", status=status, code=code,
                           subcode=subcode, message="refused"))
    cid = comment_id_of(await h.sandbox.user_comments(IGSID, "guide pls", MEDIA))
    await h.settle()
    assert await sends(h) == [("private_reply", "failed", reason),
                              ("public_reply", "refused", "private_reply_not_sent")]
    assert public_replies(h, cid) == []
    assert [r.path for r in h.graph_posts() if "/replies" in r.path] == []
    (note,) = await notices(h)
    assert f"({reason})" in note


async def test_the_public_reply_goes_when_the_private_reply_did(
        make_harness: MakeHarness) -> None:
    h = await make_harness(workflows=[C2D])
    cid = comment_id_of(await h.sandbox.user_comments(IGSID, "guide pls", MEDIA))
    await h.settle()
    assert await sends(h) == [("private_reply", "sent", None), ("public_reply", "sent", None)]
    assert public_replies(h, cid) == [ANNOUNCE]
    assert await notices(h) == []


async def test_a_public_reply_after_a_delay_waits_for_the_private_reply_before_it(
        make_harness: MakeHarness) -> None:
    """The public reply comes an hour later, in a decision of its own: it still knows the
    private reply did not go."""
    delayed = {**C2D, "actions": [{"private_reply": GUIDE}, {"delay": "1h"},
                                  {"public_reply": ANNOUNCE}]}
    h = await make_harness(workflows=[delayed])
    h.sandbox.inject(Fault("graph_error", path_contains="/messages", status=400, code=551,
                           subcode=1545041, message="This person isn't available right now."))
    cid = comment_id_of(await h.sandbox.user_comments(IGSID, "guide pls", MEDIA))
    await h.settle(advance_up_to=3600)
    assert await sends(h) == [("private_reply", "failed", "user_unavailable"),
                              ("public_reply", "refused", "private_reply_not_sent")]
    assert public_replies(h, cid) == []
    assert len(await notices(h)) == 1


async def test_a_private_reply_after_a_delay_goes_when_the_steps_before_used_none(
        make_harness: MakeHarness) -> None:
    """An image first (a private reply can only be text: refused), an hour's delay, then
    the guide and "Sent it to your DMs!": the continuation knows the comment's private
    reply is still unused (carried by the delay's job). It counted the image as the private
    reply and refused the guide (`private_reply_used`), so the commenter got nothing."""
    steps: list[dict[str, object]] = [
        {"media": {"type": "image", "url": "https://x.example/a.jpg"}}, {"delay": "1h"},
        {"private_reply": GUIDE}, {"public_reply": ANNOUNCE}]
    h = await make_harness(workflows=[{**C2D, "actions": steps}])
    cid = comment_id_of(await h.sandbox.user_comments(IGSID, "guide pls", MEDIA))
    await h.settle(advance_up_to=3600)
    assert await sends(h) == [("media", "refused", "private_reply_not_text"),
                              ("private_reply", "sent", None), ("public_reply", "sent", None)]
    assert public_replies(h, cid) == [ANNOUNCE]


C2D_ANNOUNCE_FIRST = {**C2D, "actions": [{"public_reply": ANNOUNCE}, {"private_reply": GUIDE}]}


@pytest.mark.parametrize("refused", [False, True], ids=["sent", "551-unavailable"])
@pytest.mark.parametrize("delay", [False, True], ids=["at-once", "delay-between"])
async def test_a_public_reply_placed_before_the_private_reply_waits_for_it(
        make_harness: MakeHarness, refused: bool, delay: bool) -> None:
    """"Sent it to your DMs!" placed first in the workflow was posted at once, so when
    Meta then refused the DM it stood under the post, false. It now waits for the private
    reply wherever it stands (across a delay too), and is posted only if that one is
    sent."""
    steps: list[dict[str, object]] = [{"public_reply": ANNOUNCE}]
    steps += [{"delay": "1h"}] if delay else []
    steps += [{"private_reply": GUIDE}]
    h = await make_harness(workflows=[{**C2D_ANNOUNCE_FIRST, "actions": steps}])
    if refused:
        h.sandbox.inject(Fault("graph_error", path_contains="/messages", status=400, code=551,
                               subcode=1545041, message="This person isn't available."))
    cid = comment_id_of(await h.sandbox.user_comments(IGSID, "guide pls", MEDIA))
    await h.settle()
    if delay:  # nothing posted before the delay is over
        assert public_replies(h, cid) == [] and await sends(h) == []
        await h.settle(advance_up_to=3600)
    if refused:
        assert await sends(h) == [("private_reply", "failed", "user_unavailable"),
                                  ("public_reply", "refused", "private_reply_not_sent")]
        assert public_replies(h, cid) == []
        assert [r.path for r in h.graph_posts() if "/replies" in r.path] == []
        (note,) = await notices(h)
        assert "(user_unavailable)" in note
    else:
        assert await sends(h) == [("private_reply", "sent", None),
                                  ("public_reply", "sent", None)]
        assert public_replies(h, cid) == [ANNOUNCE]
        # The DM first, then the public reply that announces it.
        paths = [r.path for r in h.graph_posts() if "/messages" in r.path or "/replies" in r.path]
        assert ["/replies" in p for p in paths] == [False, True]
        assert await notices(h) == []


async def test_a_comment_too_old_for_its_private_reply_gets_no_public_reply_either(
        make_harness: MakeHarness) -> None:
    """The engine refused the DM (comment over 7 days old) and still posted "Sent it to
    your DMs!". A workflow with only a public reply still answers such a comment."""
    public_only = {"name": "thanks", "trigger": {"comment": {"keywords": ["love"]}},
                   "actions": [{"public_reply": "Thank you!"}]}
    h = await make_harness(workflows=[C2D, public_only])
    late = [await h.sandbox.user_comments(IGSID, text, MEDIA, deliver=False)
            for text in ("guide pls", "love it")]
    h.clock.advance(8 * DAY)
    for payload in late:
        assert await h.post(payload) == 200
    await h.settle()
    guide_cid, love_cid = (comment_id_of(p) for p in late)
    assert public_replies(h, guide_cid) == []
    assert public_replies(h, love_cid) == ["Thank you!"]
    assert await sends(h) == [("private_reply", "refused", "private_reply_expired"),
                              ("public_reply", "sent", None)]
    # The refused send keeps the rules' words (sends.detail), as the outbox's refusals do.
    (row,) = await h.rt.db.fetchall("SELECT detail FROM sends WHERE state = 'refused'")
    assert row["detail"] == "comment is older than 7 days"
    (note,) = await notices(h)
    assert "(private_reply_expired)" in note


# -- finding 3: a private reply delivered whose answer was lost ---------------------------------

async def deliver_then_lose_the_answer(h: Harness) -> str:
    """The commenter comments the keyword; Meta delivers the private reply, then the
    connection drops before its answer, and its echo is lost. Returns the comment id."""
    payload = await h.sandbox.user_comments(IGSID, "guide please", MEDIA)
    h.sandbox.webhook_url, hook = None, h.sandbox.webhook_url  # echoes from now on are lost
    h.sandbox.inject(Fault("drop_after_send", path_contains="/messages", times=1))
    await h.settle(advance_up_to=h.rt.deliverer.echo_wait + 60)
    h.sandbox.webhook_url = hook
    return comment_id_of(payload)


async def test_a_private_reply_whose_answer_was_lost_is_recorded_sent_on_metas_10900(
        make_harness: MakeHarness) -> None:
    """The retry gets Meta's 10900 "Activity already replied to": proof that the first try
    was delivered. It was recorded failed, counted refused, and the creator was told "was
    not sent" although the commenter had the DM."""
    h = await make_harness(workflows=[C2D])
    cid = await deliver_then_lose_the_answer(h)

    assert [m.text for m in h.sandbox.thread(IGSID) if m.direction == "out"] == [GUIDE]
    assert private_reply_posts(h, cid) == 2  # the try, and the retry Meta refused
    assert await sends(h) == [("private_reply", "sent", None), ("public_reply", "sent", None)]
    row = await h.rt.db.fetchone("SELECT message_id FROM sends WHERE kind = 'private_reply'")
    assert row is not None and row["message_id"] is None  # Meta's id for it is unknown
    assert await notices(h) == []
    out = await h.messages(IGSID, "out")
    assert [(r["text"], r["sent_by"], r["mid"]) for r in out] == [(GUIDE, "automation", None)]
    assert public_replies(h, cid) == [ANNOUNCE]


async def test_the_late_echo_of_a_private_reply_settled_by_10900_gives_it_its_id(
        make_harness: MakeHarness) -> None:
    """The echo of the delivered try comes after all: it is the same message (one row in
    the thread, with Meta's id), automation's, and no handoff pause."""
    h = await make_harness(workflows=[C2D])
    await deliver_then_lose_the_answer(h)
    (sent,) = [m for m in h.sandbox.thread(IGSID) if m.direction == "out"]
    echo = build_echo_payload(ACCT, IGSID, {"text": GUIDE}, sent.mid, int(sent.at * 1000))
    assert await h.post(echo) == 200
    await h.settle()

    out = await h.messages(IGSID, "out")
    assert [(r["text"], r["sent_by"], r["mid"]) for r in out] == [(GUIDE, "automation", sent.mid)]
    row = await h.rt.db.fetchone("SELECT message_id FROM sends WHERE kind = 'private_reply'")
    assert row is not None and row["message_id"] == sent.mid
    assert (await h.conversation(IGSID))["paused_until"] is None


async def answered_elsewhere(h: Harness, text: str) -> str:
    """The commenter comments the keyword; another tool on the account answers the comment
    privately before our daemon does (its echo not yet with us). Returns the comment id."""
    payload = await h.sandbox.user_comments(IGSID, text, MEDIA, deliver=False)
    cid = comment_id_of(payload)
    h.sandbox.webhook_url, hook = None, h.sandbox.webhook_url
    await h.rt.graph.private_reply(ACCT, cid, "from the other tool", token=h.sandbox.token)
    h.sandbox.webhook_url = hook
    assert await h.post(payload) == 200
    return cid


async def test_10900_on_a_first_try_is_a_comment_answered_elsewhere_and_told_once(
        make_harness: MakeHarness) -> None:
    """No try of ours reached Meta before: the comment's private reply came from elsewhere
    (another tool, the creator in the app). It was recorded as `private_reply_used`, which
    nobody is told of, so two tools answering the same comments went unnoticed. Now: failed,
    `already_answered`, with words; its public reply is not posted ("Sent it to your DMs!"
    would announce a DM we did not send, and the other tool likely posts its own); and the
    creator is told, once per account and day however many comments it happens to."""
    h = await make_harness(workflows=[C2D_ANNOUNCE_FIRST])
    first = await answered_elsewhere(h, "guide please")
    await h.settle()
    assert await sends(h) == [("private_reply", "failed", "already_answered"),
                              ("public_reply", "refused", "private_reply_not_sent")]
    row = await h.rt.db.fetchone("SELECT detail FROM sends WHERE kind = 'private_reply'")
    assert row is not None and "answered privately from elsewhere" in row["detail"]
    assert "10900" in row["detail"]
    assert [m.text for m in h.sandbox.thread(IGSID) if m.direction == "out"] == [
        "from the other tool"]
    assert public_replies(h, first) == []
    (note,) = await notices(h)
    assert "(already_answered)" in note and "workflow c2d" in note and IGSID in note
    # Another comment answered elsewhere the same day: counted, not told again.
    await answered_elsewhere(h, "guide again")
    await h.settle()
    assert [r[2] for r in await sends(h)].count("already_answered") == 2
    assert len(await notices(h)) == 1


async def test_10900_after_an_error_meta_answered_for_a_delivered_try_is_ours(
        make_harness: MakeHarness) -> None:
    """Meta delivered the private reply and answered an error anyway (its "unexpected
    error"), and the echo was lost: the retry's 10900 is our first try's delivery, not a
    comment answered elsewhere (a server error's outcome counts as unknown), so it is sent
    and its public reply goes. Guards the line between the two verdicts of 10900."""
    h = await make_harness(workflows=[C2D])
    cid = comment_id_of(await h.sandbox.user_comments(IGSID, "guide please", MEDIA))
    h.sandbox.webhook_url, hook = None, h.sandbox.webhook_url  # its echo is lost
    h.sandbox.inject(Fault("error_after_send", path_contains="/messages", status=500, code=2,
                           times=1))
    await h.settle(advance_up_to=600)
    h.sandbox.webhook_url = hook
    assert [m.text for m in h.sandbox.thread(IGSID) if m.direction == "out"] == [GUIDE]
    assert private_reply_posts(h, cid) == 2
    assert await sends(h) == [("private_reply", "sent", None), ("public_reply", "sent", None)]
    assert public_replies(h, cid) == [ANNOUNCE]
    assert await notices(h) == []


# -- finding 4: a private reply the engine refuses as over 7 days old is told ------------------

REPLY_ONLY = {"name": "reply-only", "trigger": {"comment": {"keywords": ["oldtest"]}},
              "actions": [{"private_reply": GUIDE}]}


async def test_a_private_reply_the_engine_refuses_as_over_7_days_old_is_told_once_a_day(
        make_harness: MakeHarness) -> None:
    """Two comments the daemon gets 8 days late (stopped for a week, or Meta's retries):
    nothing was sent and nothing said so (no notification, no send row, only a trace line
    in the log). Now the creator is told, as for the outbox's refusal of the same reason:
    once per contact, reason and day. And each is a refused send (s17 leftovers 4: without
    a send row, `stats` counted none of them among the refused private replies)."""
    from instaset.stats import compute, compute_scan

    h = await make_harness(workflows=[REPLY_ONLY])
    late = [await h.sandbox.user_comments(IGSID, text, MEDIA, deliver=False)
            for text in ("oldtest", "oldtest again")]
    h.clock.advance(8 * DAY)
    for payload in late:
        assert await h.post(payload) == 200
        await h.settle()
        h.clock.advance(3600)
    assert h.graph_sends() == []
    assert await sends(h) == [("private_reply", "refused", "private_reply_expired")] * 2
    now = h.clock()
    for doc in (await compute(h.rt.db, now - DAY, now),
                await compute_scan(h.rt.db, now - DAY, now)):
        assert doc["refused_by_reason"] == {"private_reply_expired": 2}
        [wf] = doc["workflows"]
        assert (wf["workflow"], wf["refused"], wf["sent"], wf["pending"]) == (
            "reply-only", 2, 0, 0)
        [media] = doc["media"]
        assert (media["media_id"], media["refused"], media["comments"]) == (MEDIA, 2, 2)
        assert doc["totals"]["refused"] == 2
    (note,) = await notices(h)
    assert "workflow reply-only" in note and IGSID in note
    assert "(private_reply_expired)" in note and "older than 7 days" in note
    # A comment answered in time still gets its private reply: the refusal is about age.
    await h.sandbox.user_comments(IGSID, "oldtest", MEDIA)
    await h.settle()
    assert [m.text for m in h.sandbox.thread(IGSID) if m.direction == "out"] == [GUIDE]
    assert len(await notices(h)) == 1


async def test_a_delayed_public_reply_waits_for_a_private_reply_still_queued(
        make_harness: MakeHarness) -> None:
    """The private reply waits for the hourly budget (a busy post) longer than the workflow's
    delay: the public reply after the delay waits for it instead of being refused, and both
    go, in order."""
    delayed = {**C2D, "actions": [{"private_reply": GUIDE}, {"delay": "2m"},
                                  {"public_reply": ANNOUNCE}]}
    h = await make_harness(workflows=[delayed], rate_limits={"private_replies_per_hour": 1})
    await h.sandbox.user_comments("9000000000000001", "guide", MEDIA)  # takes the budget
    await h.settle()
    cid = comment_id_of(await h.sandbox.user_comments(IGSID, "guide pls", MEDIA))
    await h.settle()
    h.clock.advance(180)  # the delay is over; the private reply still waits for the budget
    await h.rt.worker.run_burst()
    mine = await h.rt.db.fetchall(
        "SELECT kind, state, reason FROM sends WHERE contact_id = ? ORDER BY key", (IGSID,))
    assert [tuple(r) for r in mine] == [("private_reply", "pending", None),
                                        ("public_reply", "pending", None)]
    await h.settle(advance_up_to=3600)
    mine = await h.rt.db.fetchall(
        "SELECT kind, state, reason FROM sends WHERE contact_id = ? ORDER BY key", (IGSID,))
    assert [tuple(r) for r in mine] == [("private_reply", "sent", None),
                                        ("public_reply", "sent", None)]
    assert public_replies(h, cid) == [ANNOUNCE]
