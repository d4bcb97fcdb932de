"""SQL of acting on AI drafts (the ``ai_drafts`` table of migration 0004): listing them with
their contact, conversation window and the send an approval made, and the conditional state
change that lets exactly one approval, edit or rejection win.

Functions taking ``conn`` run inside a transaction the caller holds; the others use the
database's serialised access. Times are unix seconds (UTC).
"""

from __future__ import annotations

import sqlite3

import aiosqlite

from instaset.store.db import Database


def send_key(draft_key: str) -> str:
    """The idempotency key of the send an approval (or edit) of the draft ``draft_key``
    makes. Derived from the draft's unique ``key`` (its ai_reply job's key), not its rowid:
    retention deletes decided drafts and SQLite may then hand the same id to a new draft,
    whose approval would silently collide with the old send."""
    return f"send:{draft_key}:approved"


# The draft with what the commands show next to it: the contact's username, the window
# (last_inbound_at), the pause, and the send its approval made (if any).
_SELECT = (
    "SELECT d.*, k.username, c.last_inbound_at, c.paused_until,"
    " s.state AS send_state, s.reason AS send_reason, s.body AS send_body,"
    " s.sent_by AS send_sent_by, s.message_id AS send_message_id"
    " FROM ai_drafts d"
    " LEFT JOIN contacts k ON k.account_id = d.account_id AND k.id = d.contact_id"
    " LEFT JOIN conversations c ON c.account_id = d.account_id AND c.contact_id = d.contact_id"
    " LEFT JOIN sends s ON s.key = 'send:' || d.key || ':approved'"
)


async def list_drafts(db: Database, *, include_all: bool, limit: int) -> list[sqlite3.Row]:
    """Pending drafts (all drafts with ``include_all``), newest first."""
    where = "" if include_all else " WHERE d.state = 'pending'"
    return await db.fetchall(
        _SELECT + where + " ORDER BY d.created_at DESC, d.id DESC LIMIT ?", (limit,)
    )


async def count_drafts(db: Database) -> dict[str, int]:
    """How many drafts there are in each state."""
    rows = await db.fetchall("SELECT state, count(*) AS n FROM ai_drafts GROUP BY state")
    return {str(r["state"]): int(r["n"]) for r in rows}


async def get_draft(db: Database, draft_id: int) -> sqlite3.Row | None:
    return await db.fetchone(_SELECT + " WHERE d.id = ?", (draft_id,))


async def job_payload(db: Database, job_key: str) -> str | None:
    """The payload (JSON) of the ai_reply job that wrote the draft, while it is stored."""
    row = await db.fetchone("SELECT payload FROM jobs WHERE key = ?", (job_key,))
    return None if row is None else str(row["payload"])


async def decide_in(
    conn: aiosqlite.Connection, draft_id: int, state: str, now: float
) -> bool:
    """Move a pending draft to ``state`` (sent or discarded). False when it is no longer
    pending: another approval, edit or rejection won (the caller's transaction then must
    not enqueue anything)."""
    cur = await conn.execute(
        "UPDATE ai_drafts SET state = ?, updated_at = ? WHERE id = ? AND state = 'pending'",
        (state, now, draft_id),
    )
    return cur.rowcount == 1


async def state_in(conn: aiosqlite.Connection, draft_id: int) -> str | None:
    rows = list(await conn.execute_fetchall(
        "SELECT state FROM ai_drafts WHERE id = ?", (draft_id,)
    ))
    return None if not rows else str(rows[0]["state"])
