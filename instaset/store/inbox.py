"""SQL of the creator's inbox: the conversation list, contact lookup, read marks, pauses,
and claiming one particular job (``inbox reply`` delivers its own send right away)."""

from __future__ import annotations

import sqlite3

from instaset.store.ai import shown_stage_sql
from instaset.store.db import Database

# Per account, so that conversations_recent (account_id, last_message_at DESC) gives the
# newest rows without sorting every conversation (NULLs sort last in DESC: never-messaged
# conversations come after the rest).
_LIST_SQL = f"""
SELECT c.account_id, c.contact_id, c.username, c.name, c.stage, c.unread,
       c.last_inbound_at, c.last_message_at, c.paused_until, c.updated_at,
       (SELECT json_object('text', m.text, 'attachments', json(m.attachments),
                           'direction', m.direction, 'sent_by', m.sent_by,
                           'deleted', m.deleted_at IS NOT NULL)
          FROM messages m WHERE m.account_id = c.account_id AND m.contact_id = c.contact_id
          ORDER BY m.created_at DESC, m.id DESC LIMIT 1) AS last_message
FROM (
    SELECT v.account_id, v.contact_id, k.username, k.name,
           {shown_stage_sql("v.account_id", "v.contact_id", "v.state")} AS stage, v.unread,
           v.last_inbound_at, v.last_message_at, v.paused_until, v.updated_at
    FROM conversations v JOIN contacts k ON k.account_id = v.account_id AND k.id = v.contact_id
    WHERE v.account_id = ?1 AND (?2 = 0 OR v.unread > 0)
    ORDER BY v.last_message_at DESC
    LIMIT ?3
) c
"""


async def list_conversations(
    db: Database, *, limit: int, account_id: str | None = None, unread_only: bool = False
) -> list[sqlite3.Row]:
    """Newest first (conversations that never had a message last). The latest message is
    computed only for the rows returned, so the cost does not grow with the history."""
    if account_id is not None:
        accounts = [account_id]
    else:
        # contacts.account_id references accounts(id): every conversation has its account.
        accounts = [r[0] for r in await db.fetchall("SELECT id FROM accounts")]
    rows: list[sqlite3.Row] = []
    for acct in accounts:
        rows += await db.fetchall(_LIST_SQL, (acct, int(unread_only), limit))
    rows.sort(key=lambda r: (r["last_message_at"] is None, -(r["last_message_at"] or 0),
                             -r["updated_at"]))
    return rows[:limit]


async def totals(db: Database) -> tuple[int, int]:
    """(conversations, conversations with unread messages)."""
    # Two index-only counts (the second reads the partial index conversations_unread).
    row = await db.fetchone(
        "SELECT (SELECT count(*) FROM conversations),"
        " (SELECT count(*) FROM conversations WHERE unread > 0)"
    )
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def find_contacts(db: Database, ident: str) -> list[sqlite3.Row]:
    """Contacts whose IGSID is ``ident`` or whose username is ``ident`` (case-insensitive,
    a leading ``@`` ignored), with their conversation columns."""
    name = ident.removeprefix("@")
    return await db.fetchall(
        "SELECT k.account_id, k.id AS contact_id, k.username, k.name, k.first_seen_at,"
        " v.state, v.last_inbound_at, v.last_message_at, v.paused_until, v.unread,"
        f" {shown_stage_sql('k.account_id', 'k.id', 'v.state')} AS stage"
        " FROM contacts k LEFT JOIN conversations v"
        "   ON v.account_id = k.account_id AND v.contact_id = k.id"
        " WHERE k.id = ?1 OR lower(k.username) = lower(?2)"
        " ORDER BY k.id = ?1 DESC, k.account_id",
        (ident, name),
    )


async def mark_read(db: Database, account_id: str, contact_id: str, now: float) -> None:
    await db.execute(
        "UPDATE conversations SET unread = 0, updated_at = ?"
        " WHERE account_id = ? AND contact_id = ? AND unread != 0",
        (now, account_id, contact_id),
    )


async def set_paused(
    db: Database, account_id: str, contact_id: str, until: float | None, now: float
) -> int:
    """Pause automation for the contact until ``until`` (None resumes). The column is what
    the automation reads (``load_state`` takes it over the state JSON)."""
    return await db.execute(
        "UPDATE conversations SET paused_until = ?, updated_at = ?"
        " WHERE account_id = ? AND contact_id = ?",
        (until, now, account_id, contact_id),
    )


async def contact_sends(
    db: Database, account_id: str, contact_id: str, limit: int = 50
) -> list[sqlite3.Row]:
    """The contact's latest sends that did not go out (refused, failed, pending), newest
    last: the thread shows them so the creator sees what was held back and why."""
    return await db.fetchall(
        "SELECT * FROM (SELECT rowid AS n, key, kind, body, state, sent_by, reason, detail,"
        " workflow, created_at, updated_at FROM sends WHERE account_id = ? AND contact_id = ?"
        " AND state != 'sent'"
        # One decision's sends have one created_at: in the order they were written.
        " ORDER BY created_at DESC, n DESC LIMIT ?) ORDER BY created_at, n",
        (account_id, contact_id, limit),
    )


async def public_replies_sent(
    db: Database, account_id: str, contact_id: str, limit: int = 50
) -> list[sqlite3.Row]:
    """The public replies that went out under the contact's comments (the latest ``limit``),
    oldest first; ``updated_at`` is when each went (its last state change: sent)."""
    return await db.fetchall(
        "SELECT * FROM (SELECT rowid AS n, key, comment_id, body, sent_by, workflow,"
        " message_id, created_at, updated_at FROM sends WHERE account_id = ?"
        " AND contact_id = ? AND kind = 'public_reply' AND state = 'sent'"
        " ORDER BY created_at DESC, n DESC LIMIT ?) ORDER BY updated_at, n",
        (account_id, contact_id, limit),
    )
