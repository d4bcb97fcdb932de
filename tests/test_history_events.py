"""A message's edits and deletion, from signed webhooks to the history rows (found untested
by an audit of issue 2: "a deleted message is marked deleted; an edit updates the text and
keeps the old one")."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from instaset.sandbox import build_dm_payload
from tests.sending_harness import ACCT, Clock, Harness, open_harness

IGSID = "5260000000000042"


@pytest.fixture
async def h(tmp_path: object) -> AsyncIterator[Harness]:
    async with open_harness(tmp_path, clock=Clock(frozen=True)) as harness:  # type: ignore[arg-type]
        yield harness


def edit(mid: str, text: str, n: int, ts: int) -> dict[str, object]:
    return {"object": "instagram", "entry": [{"id": ACCT, "time": ts, "messaging": [{
        "sender": {"id": IGSID}, "recipient": {"id": ACCT}, "timestamp": ts,
        "message_edit": {"mid": mid, "text": text, "num_edit": n}}]}]}


def deleted(mid: str, ts: int) -> dict[str, object]:
    return build_dm_payload(ACCT, IGSID, None, mid, ts, extras={"is_deleted": True})


async def row(h: Harness, mid: str) -> dict[str, object]:
    found = await h.rt.db.fetchone("SELECT text, edits, deleted_at FROM messages WHERE mid = ?",
                                   (mid,))
    assert found is not None
    return dict(found)


async def test_an_edit_updates_the_text_and_keeps_the_old_ones(h: Harness) -> None:
    ts = int(h.clock() * 1000)
    assert await h.post(build_dm_payload(ACCT, IGSID, "see you at 4", "m-1", ts)) == 200
    await h.settle()
    assert await h.post(edit("m-1", "see you at 5", 1, ts + 1000)) == 200
    await h.settle()
    assert await h.post(edit("m-1", "see you at 6", 2, ts + 2000)) == 200
    await h.settle()
    assert await row(h, "m-1") == {
        "text": "see you at 6", "edits": '["see you at 4","see you at 5"]', "deleted_at": None}


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
