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
- :func:`unsent_at`: whether (and when) the unsend of ``mid`` was processed, for a message
  that arrives after it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import aiosqlite

from instaset.event_values import redacted_raw


async def unsent_at(conn: aiosqlite.Connection, mid: str) -> float | None:
    """When the unsend of ``mid`` was processed (its ``del:`` event), or None."""
    rows = list(await conn.execute_fetchall(
        "SELECT processed_at FROM events WHERE dedupe_key = 'del:' || ?", (mid,)))
    return float(rows[0][0]) if rows and rows[0][0] is not None else None


async def is_unsent(conn: aiosqlite.Connection, mid: str) -> bool:
    """Whether message ``mid`` was unsent: stored deleted, or (not stored yet) its unsend
    was processed."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM messages WHERE mid = ?1 AND deleted_at IS NOT NULL UNION ALL"
        " SELECT 1 FROM events WHERE dedupe_key = 'del:' || ?1 AND processed_at IS NOT NULL"
        " LIMIT 1", (mid,))
    return bool(list(rows))


async def scrub_message(conn: aiosqlite.Connection, mid: str) -> None:
    """The unsent message ``mid`` without its text, edits and media (see the module)."""
    await conn.execute(
        "UPDATE messages SET text = NULL, attachments = '[]', edits = '[]'"
        " WHERE mid = ? AND deleted_at IS NOT NULL"
        " AND (text IS NOT NULL OR attachments != '[]' OR edits != '[]')", (mid,))


async def redact_events(conn: aiosqlite.Connection, mid: str) -> int:
    """Redact the raw events of message ``mid`` and its edits; returns how many changed.
    Found by key: ``msg:<mid>`` and the range of ``edit:<mid>:...`` (the unique index)."""
    rows = await conn.execute_fetchall(
        "SELECT id, raw FROM events WHERE dedupe_key = 'msg:' || ?1"
        " OR (dedupe_key > 'edit:' || ?1 || ':' AND dedupe_key < 'edit:' || ?1 || ';')",
        (mid,))
    changed = 0
    for row in rows:
        raw = redacted_raw(str(row[1]))
        if raw != row[1]:
            await conn.execute("UPDATE events SET raw = ? WHERE id = ?", (raw, row[0]))
            changed += 1
    return changed


async def forget_fact_values(conn: aiosqlite.Connection, mid: str) -> list[sqlite3.Row]:
    """The AI facts extracted from message ``mid`` lose their value and quote (the fact's
    name and the row stay: its rule's points stay, as an unsent message's keyword's do).
    Returns them as they were (``key``, ``account_id``, ``contact_id``, ``name``,
    ``value``)."""
    rows = list(await conn.execute_fetchall(
        "SELECT key, account_id, contact_id, name, value FROM lead_facts WHERE mid = ?"
        " AND (value IS NOT NULL OR evidence IS NOT NULL)", (mid,)))
    if rows:
        await conn.execute(
            "UPDATE lead_facts SET value = NULL, evidence = NULL WHERE mid = ?", (mid,))
    return rows


async def captured_from(conn: aiosqlite.Connection, mid: str) -> list[sqlite3.Row]:
    """The fields whose value is the contact's answer in message ``mid`` (nothing set them
    since: see :func:`forget_sources`): ``account_id``, ``contact_id``, ``field`` and its
    ``value`` (from the conversation's state)."""
    return list(await conn.execute_fetchall(
        "SELECT f.account_id, f.contact_id, f.field,"
        " json_extract(c.state, '$.fields.' || json_quote(f.field)) AS value"
        " FROM captured_fields f JOIN conversations c"
        " ON c.account_id = f.account_id AND c.contact_id = f.contact_id"
        " WHERE f.mid = ? AND json_valid(c.state)", (mid,)))


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
