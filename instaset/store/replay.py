"""Read-only SQL for ``instaset workflows replay`` and ``workflows test``.

Every function here only reads (through :meth:`Database.fetchall`/``read()``), so replay can
run beside a live daemon: SQLite's WAL lets readers proceed while the daemon writes.
"""

from __future__ import annotations

import sqlite3

from instaset.store.db import Database

__all__ = [
    "accounts",
    "conversation_row",
    "conversation_rows",
    "events_between",
    "find_contact",
    "human_reply_event_ids",
]


async def events_between(
    db: Database, since: float | None, until: float
) -> list[tuple[int, str, float]]:
    """``(id, raw, received_at)`` of the stored events with ``since <= occurred_at <= until``
    (all when ``since`` is None), in the order they happened, in one query. Within one
    second they keep their arrival order: comment times are whole seconds while DM times have
    milliseconds, so a comment made after a DM in the same second would otherwise sort
    first. Plain tuples: a replay reads every row once, and ``sqlite3.Row`` costs more per
    row for nothing."""
    rows = await db.fetchall(
        "SELECT id, raw, received_at FROM events WHERE occurred_at >= ? AND occurred_at <= ?"
        " ORDER BY CAST(occurred_at AS INTEGER), id",
        (since if since is not None else float("-inf"), until),
    )
    return [(int(r[0]), str(r[1]), float(r[2])) for r in rows]


# The creator's own replies, by the id of their echo event: "app" for a message typed in the
# Instagram app (the pipeline recorded its echo as sent_by 'human'; not a send of ours), and
# "inbox" for one sent with `instaset inbox reply` (a send keyed human:..., whose echo is
# stored under msg:<its message id>; the message row is the send's, without an event). An
# edited draft (`inbox edit`, also sent as the human) is keyed send:...:approved and does not
# pause automation, in the daemon or here.
_HUMAN_REPLIES = """
SELECT m.event_id, 'app' FROM messages m
WHERE m.sent_by = 'human' AND m.direction = 'out' AND m.event_id IS NOT NULL
  AND m.created_at >= ?1
  AND NOT EXISTS (SELECT 1 FROM sends s WHERE s.message_id = m.mid)
UNION ALL
SELECT e.id, 'inbox' FROM sends s JOIN events e ON e.dedupe_key = 'msg:' || s.message_id
WHERE s.key >= 'human:' AND s.key < 'human;' AND s.state = 'sent' AND s.created_at >= ?1
"""


async def human_reply_event_ids(db: Database, since: float | None) -> dict[int, str]:
    """Ids of the echo events that were the creator's own replies, each with how it was
    sent: ``"app"`` (typed in the Instagram app) or ``"inbox"`` (``instaset inbox reply``).
    Replay pauses automation there, like the daemon."""
    rows = await db.fetchall(
        _HUMAN_REPLIES, (since if since is not None else float("-inf"),)
    )
    return {int(r[0]): str(r[1]) for r in rows}


async def conversation_rows(db: Database) -> list[sqlite3.Row]:
    """Every conversation with its contact's username (the shape
    :func:`instaset.automation.load_state` reads). No lead stage: a replay starts before
    today's scores, so ``stage`` conditions test the workflow-set stage there."""
    return await db.fetchall(
        "SELECT c.*, k.username, NULL AS lead_stage FROM conversations c JOIN contacts k"
        " ON k.account_id = c.account_id AND k.id = c.contact_id"
    )


async def conversation_row(
    db: Database, account_id: str, contact_id: str
) -> sqlite3.Row | None:
    """One conversation (with the contact's username and lead stage), or None."""
    return await db.fetchone(
        "SELECT c.*, k.username, l.stage AS lead_stage FROM conversations c"
        " JOIN contacts k ON k.account_id = c.account_id AND k.id = c.contact_id"
        " LEFT JOIN leads l ON l.account_id = c.account_id AND l.contact_id = c.contact_id"
        " WHERE c.account_id = ? AND c.contact_id = ?",
        (account_id, contact_id),
    )


async def find_contact(db: Database, who: str, account_id: str | None) -> sqlite3.Row | None:
    """The contact whose Instagram-scoped id or username (without ``@``) is ``who``, in
    ``account_id`` when given; the most recently updated one when several match."""
    name = who.lstrip("@")
    sql = "SELECT account_id, id, username FROM contacts WHERE (id = ? OR username = ?)"
    params: list[object] = [name, name]
    if account_id is not None:
        sql += " AND account_id = ?"
        params.append(account_id)
    return await db.fetchone(sql + " ORDER BY updated_at DESC LIMIT 1", params)


async def accounts(db: Database) -> list[sqlite3.Row]:
    """Connected accounts (id, username), oldest first."""
    return await db.fetchall(
        "SELECT id, username FROM accounts WHERE state = 'connected' ORDER BY created_at, id"
    )
