"""SQL of an unsend (Meta's ``is_deleted``): what the contact took back leaves the store.

Functions run inside the unsend's (or the late message's) transaction (``Database.tx()``).
Contract, for the message with mid ``mid``:

- :func:`scrub_message`: the history row keeps its place, time and ``deleted_at``, and loses
  its text, its earlier (edited) texts and its media URLs, as retention scrubs an unsent
  message (:data:`instaset.store.retention.UNSENT_UNSCRUBBED`), at once.
- :func:`redact_events`: the raw events of the message and of its edits keep their rows and
  dedupe keys (a redelivery of the original is still refused as a duplicate) and lose the
  content (:func:`instaset.event_values.redacted_raw`).
- :func:`forget_fact_values` and :func:`captured_from` / :func:`remove_captured`: the AI
  facts extracted from the message and the fields captured from it (migration 0022 records
  which message each came from) lose their values.
- :func:`contacts_words`: what the contact said in it (its texts), for the copies and the
  lead (:mod:`instaset.unsent_copies`, :func:`instaset.ai.scoring.forget_unsent`).
- :func:`unsend_of` / :func:`is_unsent`: whether (and from which conversation) the unsend of
  ``mid`` was processed, for a message or an edit that arrives after it. An unsend applies
  only in its own conversation (the same account and contact), as an edit does.
- :func:`notification_texts`, :func:`retire_drafts`, :func:`drop_resume_text`: the other
  copies of its words (:mod:`instaset.unsent_copies`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

import aiosqlite

from instaset.event_values import redacted_raw


async def unsend_of(conn: aiosqlite.Connection, mid: str) -> sqlite3.Row | None:
    """The stored unsend of ``mid`` (its ``del:`` event): ``processed_at`` (None while it
    waits), ``account_id`` and ``contact_id`` (the conversation it came from), or None.
    A message applies it only when it is of the same conversation (see
    :func:`instaset.store.history.insert_message`)."""
    rows = list(await conn.execute_fetchall(
        "SELECT processed_at, account_id, contact_id FROM events"
        " WHERE dedupe_key = 'del:' || ?", (mid,)))
    return rows[0] if rows else None


async def is_unsent(conn: aiosqlite.Connection, mid: str, account_id: str,
                    contact_id: str | None) -> bool:
    """Whether message ``mid`` of the conversation of ``account_id`` / ``contact_id`` (None:
    any contact of the account) was unsent: stored deleted, or (not stored yet) an unsend
    of it from that conversation was processed."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM messages WHERE mid = ?1 AND deleted_at IS NOT NULL UNION ALL"
        " SELECT 1 FROM events WHERE dedupe_key = 'del:' || ?1 AND processed_at IS NOT NULL"
        " AND account_id = ?2 AND (?3 IS NULL OR contact_id = ?3) LIMIT 1",
        (mid, account_id, contact_id))
    return bool(list(rows))


async def contacts_words(conn: aiosqlite.Connection, mid: str) -> list[str] | None:
    """What the contact said in message ``mid``: its text and its earlier (edited) texts,
    read before the unsend scrubs them; ``[]`` when it is not stored (not come yet, or taken
    by retention: what was taken from it may still be stored); None when it is the
    account's own message (nothing of the contact's to take back)."""
    rows = list(await conn.execute_fetchall(
        "SELECT direction, text, edits FROM messages WHERE mid = ?", (mid,)))
    if not rows:
        return []
    if rows[0]["direction"] != "in":
        return None
    return [t for t in (rows[0]["text"], *json.loads(rows[0]["edits"] or "[]")) if t]


async def message_thread(conn: aiosqlite.Connection, mid: str) -> sqlite3.Row | None:
    """The conversation message ``mid`` is stored in (``account_id``, ``contact_id``)."""
    rows = list(await conn.execute_fetchall(
        "SELECT account_id, contact_id FROM messages WHERE mid = ?", (mid,)))
    return rows[0] if rows else None


async def scrub_message(conn: aiosqlite.Connection, mid: str) -> None:
    """The unsent message ``mid`` without its text, edits and media (see the module)."""
    await conn.execute(
        "UPDATE messages SET text = NULL, attachments = '[]', edits = '[]'"
        " WHERE mid = ? AND deleted_at IS NOT NULL"
        " AND (text IS NOT NULL OR attachments != '[]' OR edits != '[]')", (mid,))


async def redact_events(conn: aiosqlite.Connection, mid: str, account_id: str,
                        contact_id: str | None) -> int:
    """Redact the raw events of message ``mid`` and its edits in the conversation of
    ``account_id`` / ``contact_id`` (None: any contact of the account); returns how many
    changed. Found by key: ``msg:<mid>`` and the range of ``edit:<mid>:...`` (the unique
    index)."""
    rows = await conn.execute_fetchall(
        "SELECT id, raw FROM events WHERE (dedupe_key = 'msg:' || ?1"
        " OR (dedupe_key > 'edit:' || ?1 || ':' AND dedupe_key < 'edit:' || ?1 || ';'))"
        " AND account_id = ?2 AND (?3 IS NULL OR contact_id = ?3)",
        (mid, account_id, contact_id))
    changed = 0
    for row in rows:
        raw = redacted_raw(str(row[1]))
        if raw != row[1]:
            await conn.execute("UPDATE events SET raw = ? WHERE id = ?", (raw, row[0]))
            changed += 1
    return changed


async def forget_fact_values(conn: aiosqlite.Connection, mid: str, account_id: str,
                             contact_id: str) -> list[sqlite3.Row]:
    """The AI facts of that conversation extracted from message ``mid`` lose their value and
    quote (the fact's name and the row stay: its rule's points stay, as an unsent message's
    keyword's do). Returns them as they were (``key``, ``account_id``, ``contact_id``,
    ``name``, ``value``)."""
    where = ("mid = ?1 AND account_id = ?2 AND contact_id = ?3"
             " AND (value IS NOT NULL OR evidence IS NOT NULL)")
    args = (mid, account_id, contact_id)
    rows = list(await conn.execute_fetchall(
        f"SELECT key, account_id, contact_id, name, value FROM lead_facts WHERE {where}", args))
    if rows:
        await conn.execute(f"UPDATE lead_facts SET value = NULL, evidence = NULL WHERE {where}",
                           args)
    return rows


async def captured_from(conn: aiosqlite.Connection, mid: str, account_id: str,
                        contact_id: str) -> list[sqlite3.Row]:
    """The fields of that conversation whose value is the contact's answer in message
    ``mid`` (nothing set them since: see :func:`forget_sources`): ``account_id``,
    ``contact_id``, ``field`` and its ``value`` (from the conversation's state)."""
    return list(await conn.execute_fetchall(
        "SELECT f.account_id, f.contact_id, f.field,"
        " json_extract(c.state, '$.fields.' || json_quote(f.field)) AS value"
        " FROM captured_fields f JOIN conversations c"
        " ON c.account_id = f.account_id AND c.contact_id = f.contact_id"
        " WHERE f.mid = ?1 AND f.account_id = ?2 AND f.contact_id = ?3"
        " AND json_valid(c.state)", (mid, account_id, contact_id)))


async def remove_captured(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                          fields: Sequence[str], now: float) -> None:
    """Take ``fields`` out of the conversation's state (an ``ask:`` step asks for them
    again) and forget where they came from."""
    for name in fields:
        await conn.execute(
            "UPDATE conversations SET state = json_remove(state, '$.fields.' || json_quote(?3)),"
            " updated_at = ?4 WHERE account_id = ?1 AND contact_id = ?2 AND json_valid(state)",
            (account_id, contact_id, name, now))
    await forget_sources(conn, account_id, contact_id, fields)


async def record_capture(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                         field: str, mid: str, now: float) -> None:
    """Field ``field`` now holds the contact's answer in message ``mid``."""
    await conn.execute(
        "INSERT INTO captured_fields(account_id, contact_id, field, mid, captured_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT(account_id, contact_id, field)"
        " DO UPDATE SET mid = excluded.mid, captured_at = excluded.captured_at",
        (account_id, contact_id, field, mid, now))


async def forget_sources(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                         fields: Sequence[str]) -> None:
    """``fields`` were set (or removed) by something other than a captured answer (a
    ``set:`` step, ``contacts set``, a profile refresh): no message of the contact is
    behind their values any more."""
    for name in fields:
        await conn.execute(
            "DELETE FROM captured_fields WHERE account_id = ? AND contact_id = ? AND field = ?",
            (account_id, contact_id, name))


# -- other copies of its words (see instaset.unsent_copies) ----------------------------------
async def notification_texts(conn: aiosqlite.Connection, account_id: str, contact_id: str
                             ) -> list[sqlite3.Row]:
    """The texts of the contact's notifications: ``key`` and ``text`` of each recorded one
    and of each ``notify`` job's copy (a job not run yet has no record). The jobs are found
    by their payload (no index: a scan of the queue, once per unsend)."""
    return list(await conn.execute_fetchall(
        "SELECT key, text FROM notifications WHERE account_id = ?1 AND contact_id = ?2"
        " UNION SELECT json_extract(payload, '$.key'), json_extract(payload, '$.text')"
        " FROM jobs WHERE kind = 'notify' AND json_extract(payload, '$.account_id') = ?1"
        " AND json_extract(payload, '$.contact_id') = ?2", (account_id, contact_id)))


async def retire_drafts(conn: aiosqlite.Connection, mid: str, account_id: str,
                        contact_id: str, now: float) -> int:
    """The AI drafts of that conversation answering message ``mid`` (their ai_reply job's
    key is one of the message's: ``ai:msg:<mid>:...``, a range of the unique index) lose
    their text, and a pending one is discarded with reason ``unsent`` (approving it would
    answer a message the contact took back). A draft already sent stays: its text is the
    reply in the history. Returns how many changed."""
    cur = await conn.execute(
        "UPDATE ai_drafts SET text = '', updated_at = ?2,"
        " reason = CASE WHEN state = 'pending' THEN 'unsent' ELSE reason END,"
        " state = CASE WHEN state = 'pending' THEN 'discarded' ELSE state END"
        " WHERE key > 'ai:msg:' || ?1 || ':' AND key < 'ai:msg:' || ?1 || ';'"
        " AND account_id = ?3 AND contact_id = ?4"
        " AND state != 'sent' AND (text != '' OR state = 'pending')",
        (mid, now, account_id, contact_id))
    return cur.rowcount


async def drop_resume_text(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                           mid: str) -> int:
    """The workflow continuations (``resume_flow`` jobs, waiting out a ``delay``) that
    answer message ``mid`` lose the copy of its text they carry for ``{text}``. Found by
    their payload (a scan of the queue, once per unsend). Returns how many changed."""
    cur = await conn.execute(
        "UPDATE jobs SET payload = json_remove(payload, '$.text')"
        " WHERE kind = 'resume_flow' AND json_extract(payload, '$.mid') = ?1"
        " AND json_extract(payload, '$.account_id') = ?2"
        " AND json_extract(payload, '$.contact_id') = ?3"
        " AND json_extract(payload, '$.text') IS NOT NULL", (mid, account_id, contact_id))
    return cur.rowcount
