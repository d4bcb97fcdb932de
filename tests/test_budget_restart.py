"""The hourly private-reply budget survives a restart (found in review: a restart handed out
a fresh budget, so a busy hour could go over it and into Meta's own limit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from instaset.config import Config
from instaset.daemon import runtime
from instaset.outbox import Outgoing
from instaset.ratelimit import WINDOW_MARGIN, SendClass
from instaset.rules import SendKind
from instaset.store import sends as sendstore
from instaset.store.db import open_database
from instaset.tokens import StaticTokens

ACCT = "17841400000000001"


async def test_the_last_hours_private_replies_count_after_a_restart(tmp_path: Path) -> None:
    db_path = tmp_path / "d.db"
    config = Config.model_validate({"storage": {"path": str(db_path)},
                                    "rate_limits": {"private_replies_per_hour": 3}})
    async with runtime(config, tokens=StaticTokens({}), account_id=ACCT) as rt:
        now = rt.clock()
    db = await open_database(db_path)
    try:
        rows = [(f"pr{i}", ACCT, "c", f"comment{i}", "private_reply", "{}", "automation", None,
                 now - 600) for i in range(4)]
        async with db.tx() as conn:
            await sendstore.insert_sends(conn, rows)
        for i, state in enumerate(("sent", "sent", "in_flight", "refused")):
            await sendstore.set_state(db, f"pr{i}", state, now - 600 + i)
        await sendstore.set_state(db, "pr1", "sent", now - 4000)  # over an hour ago: free
        async with db.tx() as conn:  # set_state never rewrites a sent row: age it directly
            await conn.execute("UPDATE sends SET updated_at = ? WHERE key = 'pr1'",
                               (now - 4000,))
    finally:
        await db.close()
    async with runtime(config, tokens=StaticTokens({}), account_id=ACCT) as rt:
        # pr0 (sent) and pr2 (in flight) count; pr1 is too old, pr3 was refused: 2 of 3.
        assert rt.budgets.reserve(ACCT, SendClass.PRIVATE_REPLY, "a") == 0.0
        wait = rt.budgets.reserve(ACCT, SendClass.PRIVATE_REPLY, "b")
        # The oldest counted one (10 min ago) frees its slot an hour after it started.
        assert wait == pytest.approx(3600 * WINDOW_MARGIN - 600, abs=5)
        assert rt.budgets.reserve("another-account", SendClass.PRIVATE_REPLY, "c") == 0.0


async def test_live_comments_private_replies_do_not_count_against_the_hour(
        tmp_path: Path) -> None:
    """A private reply to a live comment has its own budget (per second): after a restart
    it takes nothing from the hourly one of post and reel replies (audit s16 finding 2)."""
    db_path = tmp_path / "d.db"
    config = Config.model_validate({"storage": {"path": str(db_path)}, "rate_limits": {
        "private_replies_per_hour": 2, "live_private_replies_per_second": 1}})
    async with runtime(config, tokens=StaticTokens({}), account_id=ACCT) as rt:
        now = rt.clock()
    db = await open_database(db_path)
    try:
        outs = [Outgoing(key=key, kind=SendKind.PRIVATE_REPLY, account_id=ACCT, contact_id=c,
                         comment_id=cid, comment_at=now - 700, text="hi", live=live)
                for key, c, cid, live in (("send:live:1:0", "c1", "1", True),
                                          ("send:live:2:0", "c2", "2", True),
                                          ("send:comment:3:0", "c3", "3", False))]
        async with db.tx() as conn:
            await sendstore.insert_sends(conn, [
                (o.key, ACCT, o.contact_id, o.comment_id, "private_reply", o.to_json(),
                 "automation", None, now - 600) for o in outs])
        for o in outs:
            await sendstore.set_state(db, o.key, "sent", now - 600)
    finally:
        await db.close()
    async with runtime(config, tokens=StaticTokens({}), account_id=ACCT) as rt:
        # Only the post reply counts: one of the two left for this hour.
        assert rt.budgets.reserve(ACCT, SendClass.PRIVATE_REPLY, "a") == 0.0
        assert rt.budgets.reserve(ACCT, SendClass.PRIVATE_REPLY, "b") > 0
        # The live budget is the configured one, per second.
        assert rt.budgets.reserve(ACCT, SendClass.LIVE_PRIVATE_REPLY, "c") == 0.0
        wait = rt.budgets.reserve(ACCT, SendClass.LIVE_PRIVATE_REPLY, "d")
        assert 0 < wait <= WINDOW_MARGIN
