"""SQL for contacts, conversations, events and the message history.

Functions taking ``conn`` run inside a transaction the caller holds (``Database.tx()``), so
that an event's effects and its ``processed_at`` mark commit together: reprocessing an event
after a crash is then a no-op.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from types import EllipsisType
from typing import Any

import aiosqlite

from instaset.store.db import Database


# -- accounts --------------------------------------------------------------------------------
async def upsert_account(
    db: Database, account_id: str, *, username: str | None, now: float,
    app_scoped_id: str | None = None, sandbox: bool = False, state: str = "connected",
    token_expires_at: float | None = None, subscribed_fields: Sequence[str] = (),
) -> None:
    await db.execute(
        "INSERT INTO accounts(id, app_scoped_id, username, state, token_expires_at,"
        " token_issued_at, subscribed_fields, sandbox, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(id) DO UPDATE SET username = coalesce(excluded.username, username),"
        " app_scoped_id = coalesce(excluded.app_scoped_id, app_scoped_id),"
        " state = excluded.state, token_expires_at = excluded.token_expires_at,"
        " token_issued_at = excluded.token_issued_at,"
        " subscribed_fields = excluded.subscribed_fields, sandbox = excluded.sandbox,"
        " updated_at = excluded.updated_at",
        (account_id, app_scoped_id, username, state, token_expires_at, now,
         json.dumps(list(subscribed_fields)), int(sandbox), now, now),
    )


async def get_account(db: Database, account_id: str) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,))


async def account_live(conn: aiosqlite.Connection, account_id: str) -> bool:
    """Whether automation runs for the account: it is stored and not disconnected (a
    deauthorize or `disconnect` stops it, also for the work queued before)."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM accounts WHERE id = ? AND state != 'disconnected'", (account_id,))
    return bool(list(rows))


async def list_accounts(db: Database) -> list[sqlite3.Row]:
    return await db.fetchall("SELECT * FROM accounts ORDER BY created_at, id")


# -- events ----------------------------------------------------------------------------------
async def get_event_in(conn: aiosqlite.Connection, event_id: int) -> sqlite3.Row | None:
    rows = list(await conn.execute_fetchall(
        "SELECT account_id, raw, received_at, processed_at FROM events WHERE id = ?",
        (event_id,)
    ))
    return rows[0] if rows else None


async def mark_processed(conn: aiosqlite.Connection, event_id: int, now: float) -> None:
    await conn.execute("UPDATE events SET processed_at = ? WHERE id = ?", (now, event_id))


# -- contacts and conversations --------------------------------------------------------------
async def touch_contact(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, now: float,
    username: str | None = None,
) -> bool:
    """Create the contact and its conversation if new. Returns True when the contact is new."""
    cur = await conn.execute(
        "INSERT INTO contacts(account_id, id, username, first_seen_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(account_id, id) DO NOTHING",
        (account_id, contact_id, username, now, now),
    )
    new = cur.rowcount == 1
    if not new and username:
        await conn.execute(
            "UPDATE contacts SET username = ?, updated_at = ? WHERE account_id = ? AND id = ?"
            " AND username IS NOT ?",
            (username, now, account_id, contact_id, username),
        )
    await conn.execute(
        "INSERT INTO conversations(account_id, contact_id, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (account_id, contact_id, now),
    )
    return new


async def get_conversation(
    conn: aiosqlite.Connection, account_id: str, contact_id: str
) -> sqlite3.Row | None:
    rows = list(await conn.execute_fetchall(
        "SELECT c.*, k.username, k.name, l.stage AS lead_stage FROM conversations c"
        " JOIN contacts k ON k.account_id = c.account_id AND k.id = c.contact_id"
        " LEFT JOIN leads l ON l.account_id = c.account_id AND l.contact_id = c.contact_id"
        " WHERE c.account_id = ? AND c.contact_id = ?",
        (account_id, contact_id),
    ))
    return rows[0] if rows else None


async def update_conversation(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, now: float, *,
    state: str | None = None, inbound_at: float | None = None,
    message_at: float | None = None, paused_until: float | EllipsisType | None = ...,
    pause_at_least: float | None = None, unread_delta: int = 0,
) -> None:
    """Set what is given. ``paused_until`` replaces the pause (None ends it);
    ``pause_at_least`` extends it, leaving a longer one as it is."""
    sets = ["updated_at = ?"]
    params: list[Any] = [now]
    if state is not None:
        sets.append("state = ?")
        params.append(state)
    if inbound_at is not None:
        sets.append("last_inbound_at = max(coalesce(last_inbound_at, 0), ?)")
        params.append(inbound_at)
    if message_at is not None:
        sets.append("last_message_at = max(coalesce(last_message_at, 0), ?)")
        params.append(message_at)
    if not isinstance(paused_until, EllipsisType):
        sets.append("paused_until = ?")
        params.append(paused_until)
    elif pause_at_least is not None:
        sets.append("paused_until = max(coalesce(paused_until, 0), ?)")
        params.append(pause_at_least)
    if unread_delta:
        sets.append("unread = max(0, unread + ?)")
        params.append(unread_delta)
    params += [account_id, contact_id]
    await conn.execute(
        f"UPDATE conversations SET {', '.join(sets)} WHERE account_id = ? AND contact_id = ?",
        params,
    )


async def creator_took_over(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, now: float, *,
    until: float, said_at: float | None,
) -> None:
    """The creator answered the thread themselves (in the Instagram app, or with `inbox
    reply`): automation pauses until ``until`` unless a longer pause is set already (a
    workflow's 7-day handoff stands), and the thread counts as read. A pause already over
    (``until`` <= ``now``: an old message, processed late) changes no pause. With
    ``said_at`` (their message is out), :func:`drop_question` too, in the same statement."""
    await conn.execute(
        "UPDATE conversations SET unread = 0, updated_at = ?,"
        " paused_until = CASE WHEN ? > ? THEN max(coalesce(paused_until, 0), ?)"
        " ELSE paused_until END,"
        f" state = {_QUESTION_DROPPED}"
        " WHERE account_id = ? AND contact_id = ?",
        (now, until, now, until, said_at, account_id, contact_id),
    )


# The conversation's state without a question automation asked at or before ?1 (NULL: kept).
_QUESTION_DROPPED = (
    "CASE WHEN json_valid(state) AND json_extract(state, '$.awaiting.asked_at') <= ?"
    " THEN json_set(state, '$.awaiting', json('null')) ELSE state END"
)


async def drop_question(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                        now: float, *, said_at: float) -> None:
    """Forget a question automation asked the contact at or before ``said_at``, when the
    creator answered them then: the contact now talks to the creator, and their next
    message (after the pause) is no answer to it."""
    await conn.execute(
        f"UPDATE conversations SET state = {_QUESTION_DROPPED}, updated_at = ?"
        " WHERE account_id = ? AND contact_id = ?",
        (said_at, now, account_id, contact_id),
    )


async def undo_pause(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, now: float, *,
    paused_until: float, previous_until: float | None, previous_unread: int,
) -> None:
    """Put back the pause and unread count a conversation had before a pause that ended
    up unwarranted (a human reply that was not sent), unless something set another pause
    since (then that one stands). When the reply kept a longer pause that was there
    before (:func:`creator_took_over`), that pause is still the conversation's: only the
    unread count comes back."""
    await conn.execute(
        "UPDATE conversations SET paused_until = CASE WHEN paused_until = ?1 THEN ?2"
        " ELSE paused_until END, unread = max(unread, ?3), updated_at = ?4"
        " WHERE account_id = ?5 AND contact_id = ?6 AND (paused_until = ?1"
        " OR paused_until IS ?2)",
        (paused_until, previous_until, previous_unread, now, account_id, contact_id),
    )


async def wake_contact_events(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, now: float
) -> None:
    """Make the contact's unprocessed events due now (they waited for something of theirs
    that is done now, see ``pipeline``: the first message's profile lookup)."""
    await conn.execute(
        # Found by key (the unary + keeps the planner off the due-jobs index).
        "UPDATE jobs SET run_at = ?3 WHERE +state = 'ready' AND +run_at > ?3 AND key IN ("
        " SELECT 'event:' || dedupe_key FROM events WHERE account_id = ?1"
        " AND contact_id = ?2 AND processed_at IS NULL)",
        (account_id, contact_id, now))


async def earlier_message_waiting(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, event_id: int,
    due_by: float,
) -> bool:
    """Whether a message or tap of the contact stored before event ``event_id`` is about to
    be processed: its job running, or ready and due by ``due_by``. One retried later after
    a failure, or dead, holds nothing up."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM events e JOIN jobs j ON j.key = 'event:' || e.dedupe_key"
        " WHERE e.account_id = ? AND e.contact_id = ? AND e.kind IN ('message', 'postback')"
        " AND e.processed_at IS NULL AND e.id < ? AND (j.state = 'running'"
        " OR (j.state = 'ready' AND j.run_at <= ?)) LIMIT 1",
        (account_id, contact_id, event_id, due_by))
    return bool(list(rows))


# -- messages --------------------------------------------------------------------------------
async def identify_message(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, text: str | None, mid: str,
    *, since: float,
) -> bool:
    """Give ``mid`` to the oldest message out to the contact since ``since`` with ``text``
    and no id yet (a send recorded before Meta's id for it was known); False if none."""
    cur = await conn.execute(
        "UPDATE messages SET mid = ?1 WHERE id = (SELECT id FROM messages"
        " WHERE account_id = ?2 AND contact_id = ?3 AND created_at >= ?4 AND mid IS NULL"
        " AND direction = 'out' AND text IS ?5 ORDER BY created_at, id LIMIT 1)",
        (mid, account_id, contact_id, since, text),
    )
    return cur.rowcount == 1


async def insert_message(
    conn: aiosqlite.Connection, *, account_id: str, contact_id: str, mid: str | None,
    direction: str, sent_by: str, text: str | None, attachments: list[dict[str, Any]],
    created_at: float, event_id: int | None = None, reply_to: str | None = None,
) -> bool:
    """Insert one history row; a ``mid`` already stored is left alone (returns False).
    A message whose deletion was processed first (events are processed concurrently, and
    someone who unsends at once can have the deletion handled before the message) is stored
    deleted, when that unsend came from the message's conversation (the same account and
    contact: an unsend naming the mid from another thread is not applied)."""
    cur = await conn.execute(
        "INSERT INTO messages(account_id, contact_id, mid, direction, sent_by, text,"
        " attachments, reply_to, event_id, created_at, deleted_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
        " (SELECT processed_at FROM events WHERE dedupe_key = 'del:' || ?3"
        "  AND account_id = ?1 AND contact_id = ?2))"
        " ON CONFLICT(mid) DO NOTHING",
        (account_id, contact_id, mid, direction, sent_by, text,
         json.dumps(attachments, ensure_ascii=False), reply_to, event_id, created_at),
    )
    if cur.rowcount == 1 and mid is not None:
        # Its edits and reactions that came first wait for it (pipeline: RetryLater): due
        # now. Their keys start with the mid (a range of the unique index on the key).
        await conn.execute(
            # Found by key (the unary + keeps the planner off the due-jobs index, which
            # would scan every job scheduled for later).
            "UPDATE jobs SET run_at = ?2 WHERE +state = 'ready' AND +run_at > ?2 AND key IN ("
            " SELECT 'event:' || dedupe_key FROM events WHERE processed_at IS NULL AND ("
            "  (dedupe_key > 'edit:' || ?1 || ':' AND dedupe_key < 'edit:' || ?1 || ';')"
            "  OR (dedupe_key > 'react:' || ?1 || ':' AND dedupe_key < 'react:' || ?1 || ';')))",
            (mid, created_at))
    return cur.rowcount == 1


async def mark_message_deleted(conn: aiosqlite.Connection, mid: str, now: float, *,
                               account_id: str | None = None,
                               contact_id: str | None = None) -> int:
    """Mark message ``mid`` unsent (its first unsend's time stays); 0 when it is not stored
    (yet), or is not in the conversation of ``account_id`` / ``contact_id`` (when given: as
    for an edit, only the thread's own people take back a message of that thread)."""
    cur = await conn.execute(
        "UPDATE messages SET deleted_at = coalesce(deleted_at, ?1) WHERE mid = ?2"
        " AND (?3 IS NULL OR account_id = ?3) AND (?4 IS NULL OR contact_id = ?4)",
        (now, mid, account_id, contact_id)
    )
    return cur.rowcount


async def edit_message(conn: aiosqlite.Connection, mid: str, text: str | None,
                       num_edit: int = 0, *, account_id: str | None = None,
                       contact_id: str | None = None) -> bool:
    """Apply an edit; False when the message is not stored (yet), or is not in the
    conversation of ``account_id`` / ``contact_id`` (when given: an edit names its mid, and
    only the thread's own people may change a message of that thread).

    The previous text is appended to ``edits`` (oldest first). An edit older than one
    already applied (a lower ``num_edit``: a late redelivery) only joins ``edits``; an edit
    without a number (0) is applied as it comes; one without text changes nothing."""
    cur = await conn.execute(
        "UPDATE messages SET"
        " edits = CASE WHEN ?1 IS NULL OR ?1 IS text THEN edits"
        "  ELSE json_insert(edits, '$[#]',"
        "   CASE WHEN ?3 = 0 OR ?3 > edit_num THEN text ELSE ?1 END) END,"
        " text = CASE WHEN ?1 IS NOT NULL AND (?3 = 0 OR ?3 > edit_num) THEN ?1 ELSE text END,"
        " edit_num = CASE WHEN ?1 IS NULL THEN edit_num ELSE max(edit_num, ?3) END"
        " WHERE mid = ?2 AND (?4 IS NULL OR account_id = ?4) AND (?5 IS NULL OR contact_id = ?5)",
        (text, mid, num_edit, account_id, contact_id),
    )
    return cur.rowcount > 0


async def set_reaction(
    conn: aiosqlite.Connection, mid: str, who: str, reaction: str | None, *,
    account_id: str | None = None, contact_id: str | None = None,
) -> int:
    """Set (or with None remove) ``who``'s reaction; 0 when the message is not stored, or
    not in the conversation of ``account_id`` / ``contact_id`` (when given)."""
    mine = " AND (? IS NULL OR account_id = ?) AND (? IS NULL OR contact_id = ?)"
    where = (account_id, account_id, contact_id, contact_id)
    if reaction is None:
        sql = "UPDATE messages SET reactions = json_remove(reactions, ?) WHERE mid = ?" + mine
        cur = await conn.execute(sql, (f'$."{who}"', mid, *where))
    else:
        sql = ("UPDATE messages SET reactions = json_set(reactions, ?, ?) WHERE mid = ?"
               + mine)
        cur = await conn.execute(sql, (f'$."{who}"', reaction, mid, *where))
    return cur.rowcount


async def contact_comments(db: Database, account_id: str, contact_id: str, limit: int = 50
                           ) -> list[sqlite3.Row]:
    """The contact's comments (and live comments) on the account's media, newest first: the
    stored events (``raw``, ``occurred_at``, ``received_at``)."""
    return await db.fetchall(
        "SELECT raw, occurred_at, received_at FROM events WHERE account_id = ?"
        " AND contact_id = ? AND kind IN ('comment', 'live_comment') ORDER BY id DESC LIMIT ?",
        (account_id, contact_id, limit),
    )


async def thread(db: Database, account_id: str, contact_id: str, limit: int = 200
                 ) -> list[sqlite3.Row]:
    return await db.fetchall(
        "SELECT * FROM (SELECT * FROM messages WHERE account_id = ? AND contact_id = ?"
        " ORDER BY created_at DESC, id DESC LIMIT ?) ORDER BY created_at, id",
        (account_id, contact_id, limit),
    )


# -- notifications ---------------------------------------------------------------------------
async def add_notification(
    db: Database, *, key: str, account_id: str | None, contact_id: str | None, kind: str,
    text: str, now: float,
) -> bool:
    """Record a notification once per key. Returns False when it was already recorded."""
    return (
        await db.execute(
            "INSERT INTO notifications(key, account_id, contact_id, kind, text, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING",
            (key, account_id, contact_id, kind, text, now),
        )
        == 1
    )


async def unquote_notification(conn: aiosqlite.Connection, key: str,
                               quotes: Iterable[str]) -> None:
    """Take each of ``quotes`` out of the text of notification ``key``: the recorded one
    (what ``instaset inbox`` shows) and its ``notify`` job's copy, so a job that waits (not
    run yet, or between retries of a channel that failed) delivers it without them. A
    delivery already made, or running now, is not called back."""
    for quote in quotes:
        await conn.execute(
            "UPDATE notifications SET text = replace(text, ?1, '')"
            " WHERE key = ?2 AND instr(text, ?1) > 0", (quote, key))
        await conn.execute(
            "UPDATE jobs SET payload = json_set(payload, '$.text',"
            " replace(json_extract(payload, '$.text'), ?1, ''))"
            " WHERE key = 'notify:' || ?2 AND instr(json_extract(payload, '$.text'), ?1) > 0",
            (quote, key))


async def rewrite_notification(conn: aiosqlite.Connection, key: str, before: str,
                               after: str) -> None:
    """Notification ``key`` says ``after`` where it said ``before``: the recorded one and its
    ``notify`` job's copy, as :func:`unquote_notification` (for a rewrite a plain
    replacement cannot make: words taken out only where they stand as words)."""
    await conn.execute("UPDATE notifications SET text = ?3 WHERE key = ?1 AND text = ?2",
                       (key, before, after))
    await conn.execute(
        "UPDATE jobs SET payload = json_set(payload, '$.text', ?3)"
        " WHERE key = 'notify:' || ?1 AND json_extract(payload, '$.text') = ?2",
        (key, before, after))


async def mark_notification_delivered(db: Database, key: str, now: float) -> None:
    await db.execute("UPDATE notifications SET delivered_at = ? WHERE key = ?", (now, key))


async def undelivered_notifications(db: Database, before: float) -> list[sqlite3.Row]:
    """Every notification recorded before ``before`` and not delivered, with its job's
    ``state`` and ``run_at`` (None when the job is gone: purged, or given up and aged out)."""
    return await db.fetchall(
        "SELECT j.state, j.run_at FROM notifications n"
        " LEFT JOIN jobs j ON j.key = 'notify:' || n.key"
        " WHERE n.delivered_at IS NULL AND n.created_at < ?", (before,))


async def failing_notifications(db: Database) -> list[sqlite3.Row]:
    """Every notification not delivered whose ``notify`` job has failed at least once (its
    ``last_error`` is set), newest first: ``key``, ``kind``, ``created_at`` and the job's
    ``state``, ``attempts``, ``max_attempts``, ``run_at``, ``last_error``."""
    return await db.fetchall(
        "SELECT n.key, n.kind, n.created_at, j.state, j.attempts, j.max_attempts, j.run_at,"
        " j.last_error FROM notifications n JOIN jobs j ON j.key = 'notify:' || n.key"
        " WHERE n.delivered_at IS NULL AND j.last_error IS NOT NULL"
        " ORDER BY n.created_at DESC, n.id DESC")


async def recent_notifications(db: Database, limit: int = 50, *,
                               undelivered: bool = False) -> list[sqlite3.Row]:
    """The newest ``limit`` notifications, newest first; with ``undelivered``, only those
    not delivered (yet, or given up)."""
    where = " WHERE delivered_at IS NULL" if undelivered else ""
    return await db.fetchall(
        f"SELECT * FROM notifications{where} ORDER BY created_at DESC, id DESC LIMIT ?",
        (limit,))


async def count_notifications(db: Database) -> tuple[int, int]:
    """How many notifications are stored, and how many of them are not delivered."""
    row = await db.fetchone("SELECT count(*), count(*) - count(delivered_at) FROM notifications")
    return (int(row[0]), int(row[1])) if row is not None else (0, 0)
