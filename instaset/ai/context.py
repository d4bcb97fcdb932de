"""What an ``ai_reply`` job reads before it calls the model: the conversation up to the
message it answers, the comment it answers, and the creator's own past replies most like it
(local retrieval). See :mod:`instaset.ai.feature` for the job's contract.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

import aiosqlite

from instaset.ai.prompt import Example, Turn
from instaset.ai.similarity import rank
from instaset.events import CommentEvent, parse_stored
from instaset.store import ai as aistore
from instaset.store.db import Database

log = logging.getLogger("instaset.ai")

HISTORY_TURNS = 20
PAST_REPLIES = 3
PAST_REPLY_MIN_SCORE = 0.2


@dataclass(frozen=True, slots=True)
class Context:
    """What the prompt of one ai_reply needs from the store."""

    username: str | None
    paused_until: float | None
    turns: tuple[Turn, ...]
    past_replies: tuple[Example, ...]


async def _comment_text(conn: aiosqlite.Connection, acct: str, contact: str,
                        comment_id: str) -> str | None:
    for raw in await aistore.comment_events(conn, acct, contact):
        for ev in parse_stored(raw):
            if isinstance(ev, CommentEvent) and ev.comment_id == comment_id:
                return ev.text
    return None


async def load_context(conn: aiosqlite.Connection, acct: str, contact: str,
                       comment_id: str | None) -> Context | None:
    """What the prompt needs; None when the conversation does not exist (purged)."""
    conv = await aistore.conversation_row(conn, acct, contact)
    if conv is None:
        return None
    rows = await aistore.recent_texts(conn, acct, contact, HISTORY_TURNS)
    return await _context(conn, conv, rows, acct, contact, comment_id)


async def load_reply_context(db: Database, key: str, acct: str, contact: str,
                             comment_id: str | None, *, past_replies: bool = True,
                             anchor: str | None = None) -> Context | None:
    """:func:`load_context` for the ai_reply job ``key``; None also when the job already
    left its effects (a rerun), or when a later message than ``anchor`` (the mid the job
    answers) has its reply (see :meth:`instaset.ai.feature.AIReplies.handle`). The job's
    hot path: the checks share one statement, and it and the recent messages (indexed
    lookups) are read on the loop-thread connection; only the past replies (a scan of the
    account's replies) go to the database thread."""
    conv = await aistore.reply_context(db, key, acct, contact, anchor)
    if conv is None or conv["answered"]:
        return None
    if conv["answered_later"]:
        log.info("ai_reply %s skipped: a later message has its reply, or this one was "
                 "unsent", key)
        return None
    # The conversation up to the message this job answers (see
    # instaset.ai.feature.AIReplies.handle).
    rows = await aistore.recent_texts_quick(db, acct, contact, HISTORY_TURNS, until=anchor)
    async with db.read() as conn:
        return await _context(conn, conv, rows, acct, contact, comment_id, past_replies)


async def _context(conn: aiosqlite.Connection, conv: sqlite3.Row, rows: list[sqlite3.Row],
                   acct: str, contact: str, comment_id: str | None,
                   past_replies: bool = True) -> Context:
    turns = [Turn("contact" if r["direction"] == "in" else "creator", r["text"]) for r in rows]
    if comment_id:
        text = await _comment_text(conn, acct, contact, comment_id)
        turns.append(Turn("contact", text or ""))
    incoming = next((t.text for t in reversed(turns) if t.role == "contact"), "")
    if not past_replies:  # ai.past_replies: false: nothing of other conversations is sent
        return Context(conv["username"], conv["paused_until"], tuple(turns), ())
    pairs = await aistore.human_reply_pairs(conn, acct)
    best = rank(incoming, [m for m, _r in pairs], k=PAST_REPLIES,
                min_score=PAST_REPLY_MIN_SCORE) if incoming else []
    past = tuple(Example(pairs[b.index][0], pairs[b.index][1], "history") for b in best)
    return Context(conv["username"], conv["paused_until"], tuple(turns), past)


__all__ = ["HISTORY_TURNS", "Context", "load_context", "load_reply_context"]
