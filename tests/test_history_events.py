"""A message's edits and deletion, from signed webhooks to the history rows (found untested
by an audit of issue 2: "a deleted message is marked deleted; an edit updates the text and
keeps the old one")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from instaset.sandbox import build_dm_payload
from tests.sending_harness import ACCT, Clock, Harness, open_harness

IGSID = "5260000000000042"


@pytest.fixture
async def h(tmp_path: object) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path, clock=Clock(frozen=True)) as harness:  # type: ignore[arg-type]
        yield harness


def item(ts: int, **kw: object) -> dict[str, object]:
    return {"object": "instagram", "entry": [{"id": ACCT, "time": ts, "messaging": [{
        "sender": {"id": IGSID}, "recipient": {"id": ACCT}, "timestamp": ts, **kw}]}]}


def edit(mid: str, text: str | None, n: int | None, ts: int) -> dict[str, object]:
    body: dict[str, object] = {"mid": mid}
    if text is not None:
        body["text"] = text
    if n is not None:
        body["num_edit"] = n
    return item(ts, message_edit=body)


def reaction(mid: str, ts: int) -> dict[str, object]:
    return item(ts, reaction={"mid": mid, "action": "react", "reaction": "love",
                              "emoji": "\u2764"})


def deleted(mid: str, ts: int) -> dict[str, object]:
    return build_dm_payload(ACCT, IGSID, None, mid, ts, extras={"is_deleted": True})


async def row(h: Harness, mid: str) -> dict[str, object]:
    found = await h.rt.db.fetchone(
        "SELECT text, edits, deleted_at, reactions FROM messages WHERE mid = ?", (mid,))
    assert found is not None
    return dict(found)


async def deliver(h: Harness, *payloads: dict[str, object]) -> None:
    """Each webhook in turn, processed before the next comes (the order under test)."""
    for payload in payloads:
        assert await h.post(payload) == 200
        await h.settle()


async def test_an_edit_updates_the_text_and_keeps_the_old_ones(h: Harness) -> None:
    ts = int(h.clock() * 1000)
    await deliver(h, build_dm_payload(ACCT, IGSID, "see you at 4", "m-1", ts),
                  edit("m-1", "see you at 5", 1, ts + 1000),
                  edit("m-1", "see you at 6", 2, ts + 2000))
    assert await row(h, "m-1") == {
        "text": "see you at 6", "edits": '["see you at 4","see you at 5"]', "deleted_at": None,
        "reactions": "{}"}


async def test_a_deleted_message_is_marked_deleted(h: Harness) -> None:
    ts = int(h.clock() * 1000)
    assert await h.post(build_dm_payload(ACCT, IGSID, "oops", "m-2", ts)) == 200
    await h.settle()
    assert await h.post(deleted("m-2", ts + 1000)) == 200
    await h.settle()
    assert (await row(h, "m-2"))["deleted_at"] is not None


async def test_a_deletion_processed_before_its_message_still_marks_it(h: Harness) -> None:
    """The two events are processed concurrently: here the deletion first."""
    ts = int(h.clock() * 1000)
    assert await h.post(deleted("m-3", ts + 1000)) == 200
    await h.settle()
    assert await h.post(build_dm_payload(ACCT, IGSID, "unsent at once", "m-3", ts)) == 200
    await h.settle()
    assert (await row(h, "m-3"))["deleted_at"] is not None


# -- events that come before their message, or out of order (session-10 audit) ----------------
async def test_an_edit_and_a_reaction_processed_before_their_message_still_apply(
    h: Harness,
) -> None:
    """After downtime Meta's redeliveries (or catch-up) can bring the message last."""
    ts = int(h.clock() * 1000)
    assert await h.post(edit("m-4", "edited text", 1, ts + 1000)) == 200
    assert await h.post(reaction("m-4", ts + 2000)) == 200
    await h.settle()  # both wait for their message (the clock stands still here)
    waiting = await h.rt.db.fetchall("SELECT run_at FROM jobs WHERE state = 'ready'")
    assert [r[0] for r in waiting] == [h.clock() + 5] * 2
    assert await h.post(build_dm_payload(ACCT, IGSID, "original text", "m-4", ts)) == 200
    await h.settle()  # storing the message made them due: no waiting out their delay
    assert await row(h, "m-4") == {"text": "edited text", "edits": '["original text"]',
                                   "deleted_at": None, "reactions": '{"contact":"❤"}'}
    unprocessed = await h.rt.db.fetchone(
        "SELECT count(*) FROM events WHERE processed_at IS NULL")
    assert unprocessed is not None and unprocessed[0] == 0


async def test_an_older_edit_redelivered_late_does_not_undo_a_newer_one(h: Harness) -> None:
    ts = int(h.clock() * 1000)
    await deliver(h, build_dm_payload(ACCT, IGSID, "v0", "m-5", ts),
                  edit("m-5", "v2", 2, ts + 2000), edit("m-5", "v1", 1, ts + 1000))
    assert await row(h, "m-5") == {"text": "v2", "edits": '["v0","v1"]', "deleted_at": None,
                                   "reactions": "{}"}


async def test_edits_without_a_number_are_each_applied_and_one_without_text_changes_nothing(
    h: Harness,
) -> None:
    ts = int(h.clock() * 1000)
    await deliver(h, build_dm_payload(ACCT, IGSID, "v0", "m-6", ts),
                  edit("m-6", "v1", None, ts + 1000), edit("m-6", "v2", None, ts + 2000),
                  edit("m-6", None, 3, ts + 3000))
    assert await row(h, "m-6") == {"text": "v2", "edits": '["v0","v1"]', "deleted_at": None,
                                   "reactions": "{}"}
    # ... nor does it count as the newest edit: a later-numbered one with text still applies
    assert await h.post(edit("m-6", "v4", 2, ts + 4000)) == 200
    await h.settle()
    assert (await row(h, "m-6"))["text"] == "v4"


async def test_an_edit_of_a_message_that_never_comes_is_let_go_after_36_hours(
    h: Harness,
) -> None:
    """A message from before instaset was connected: the edit waits, then is done with."""
    ts = int(h.clock() * 1000)
    assert await h.post(edit("m-7", "edited", 1, ts)) == 200
    await h.settle()
    pending = await h.rt.db.fetchone(
        "SELECT state, attempts, run_at FROM jobs WHERE kind = 'process_event'")
    assert pending is not None and pending["state"] == "ready" and pending["attempts"] == 0
    assert pending["run_at"] == h.clock() + 5  # fresh: checked again soon
    start = h.clock()
    await h.settle(advance_up_to=6 * 3600)  # each later check is at most 6 h after the last
    assert 36 * 3600 <= h.clock() - start <= 42 * 3600
    done = await h.rt.db.fetchone(
        "SELECT j.state, e.processed_at FROM jobs j JOIN events e"
        " ON j.key = 'event:' || e.dedupe_key WHERE j.kind = 'process_event'")
    assert done is not None and done["state"] == "done" and done["processed_at"] is not None
    stored = await h.rt.db.fetchone("SELECT count(*) FROM messages WHERE mid = 'm-7'")
    assert stored is not None and stored[0] == 0


async def test_a_reply_to_a_story_keeps_the_story_in_the_history(h: Harness) -> None:
    """The inbox showed only "🔥🔥": the story it answers is part of the message."""
    from instaset.inbox import message_json
    from tests.conftest import DATA

    payload = json.loads((DATA / "events" / "reply_to_story.json").read_text("utf-8"))
    item = payload["entry"][0]["messaging"][0]
    item["sender"]["id"] = IGSID
    item["timestamp"] = int(h.clock() * 1000)
    assert await h.post(payload) == 200
    await h.settle()
    found = await h.rt.db.fetchone("SELECT * FROM messages WHERE mid = ?",
                                   (item["message"]["mid"],))
    assert found is not None
    shown = message_json(found)
    assert shown["attachments"] == [{
        "type": "story_reply", "title": None,
        "url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=17900000000000001"
               "&signature=AbCd"}]
    assert shown["preview"] == "🔥🔥 [reply to your story]"


async def test_a_message_to_itself_makes_no_conversation(h: Harness) -> None:
    """Meta's is_self echo (the account messaging itself) was stored as a conversation with
    the account's own id, and paused its automation (issue-2 audit)."""
    ts = int(h.clock() * 1000)
    payload = {"object": "instagram", "entry": [{"id": ACCT, "time": ts, "messaging": [{
        "sender": {"id": ACCT}, "recipient": {"id": ACCT}, "timestamp": ts,
        "message": {"mid": "m-self", "text": "note to self", "is_echo": True,
                    "is_self": True}}]}]}
    assert await h.post(payload) == 200
    await h.settle()
    for table in ("messages", "conversations"):
        row = await h.rt.db.fetchone(f"SELECT count(*) FROM {table}")
        assert row is not None and row[0] == 0, table
    done = await h.rt.db.fetchone("SELECT count(*) FROM events WHERE processed_at IS NULL")
    assert done is not None and done[0] == 0


async def test_only_the_threads_own_contact_edits_or_reacts_to_its_messages(h: Harness) -> None:
    """Found by the s11 input audit: an edit or a reaction naming another thread's mid was
    applied whatever its sender ("hacked (edited)" in someone else's history)."""
    ts = int(h.clock() * 1000)
    await deliver(h, build_dm_payload(ACCT, IGSID, "my own words", "m-9", ts))
    intruder = "5260000000000099"
    for payload in (edit("m-9", "hacked", 1, ts + 1000), reaction("m-9", ts + 2000)):
        messaging = payload["entry"][0]["messaging"][0]  # type: ignore[index]
        messaging["sender"] = {"id": intruder}
        assert await h.post(payload) == 200
    await h.settle()
    assert await row(h, "m-9") == {"text": "my own words", "edits": "[]", "deleted_at": None,
                                   "reactions": "{}"}
    # The thread's own contact still can.
    await deliver(h, edit("m-9", "my better words", 2, ts + 3000), reaction("m-9", ts + 4000))
    assert await row(h, "m-9") == {"text": "my better words", "edits": '["my own words"]',
                                   "deleted_at": None, "reactions": '{"contact":"\u2764"}'}


async def test_the_business_reaction_is_the_business_s_and_leaves_the_contact_s(
    h: Harness,
) -> None:
    """Found by the s11 second review: the contact id of a reaction is the other person
    either way, so the business's own reaction was stored as the contact's (over theirs)."""
    ts = int(h.clock() * 1000)
    await deliver(h, build_dm_payload(ACCT, IGSID, "thanks!", "m-10", ts),
                  reaction("m-10", ts + 1000))
    mine = reaction("m-10", ts + 2000)
    messaging = mine["entry"][0]["messaging"][0]  # type: ignore[index]
    messaging["sender"], messaging["recipient"] = {"id": ACCT}, {"id": IGSID}
    messaging["reaction"]["emoji"] = "\U0001f44d"
    await deliver(h, mine)
    assert json.loads(str((await row(h, "m-10"))["reactions"])) == {
        "contact": "\u2764", "business": "\U0001f44d"}
