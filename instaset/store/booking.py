"""SQL of the booking lifecycle (migration 0008): cancel, move, window facts, reminders.

The booking itself and the free-slot queries of migration 0004 stay in
:mod:`instaset.store.ai`. Functions taking ``conn`` run inside a transaction the caller holds;
the others use the database's serialised access. Times are unix seconds (UTC).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import aiosqlite

from instaset.store.db import Database

_BOOKING = ("SELECT b.*, k.username FROM bookings b LEFT JOIN contacts k"
            " ON k.account_id = b.account_id AND k.id = b.contact_id")


async def _rows(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
                ) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))


async def get_booking(conn: aiosqlite.Connection, booking_id: int) -> sqlite3.Row | None:
    """The booking with the contact's username (None if there is no such booking)."""
    rows = await _rows(conn, _BOOKING + " WHERE b.id = ?", (booking_id,))
    return rows[0] if rows else None


async def find_booking(db: Database, booking_id: int) -> sqlite3.Row | None:
    async with db.read() as conn:
        return await get_booking(conn, booking_id)


async def booking_at(conn: aiosqlite.Connection, account_id: str, start_at: float
                     ) -> sqlite3.Row | None:
    """The live booking that starts at ``start_at`` (the slot the unique index guards)."""
    rows = await _rows(conn, "SELECT * FROM bookings WHERE account_id = ? AND start_at = ?"
                       " AND status = 'booked'", (account_id, start_at))
    return rows[0] if rows else None


async def upcoming_booking(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                           now: float) -> sqlite3.Row | None:
    """The contact's earliest live booking that has not started by ``now``, with their
    username (None if they have none)."""
    rows = await _rows(conn, _BOOKING + " WHERE b.account_id = ? AND b.contact_id = ?"
                       " AND b.status = 'booked' AND b.start_at > ? ORDER BY b.start_at, b.id"
                       " LIMIT 1", (account_id, contact_id, now))
    return rows[0] if rows else None


async def busy_except(conn: aiosqlite.Connection, account_id: str, start: float, end: float,
                      exclude_id: int) -> list[tuple[float, float]]:
    """Live bookings overlapping [start, end) other than ``exclude_id`` (a booking being moved
    does not block the slots next to its own)."""
    rows = await _rows(
        conn,
        "SELECT start_at, end_at FROM bookings WHERE account_id = ? AND status = 'booked'"
        " AND id != ? AND end_at > ? AND start_at < ? ORDER BY start_at",
        (account_id, exclude_id, start, end),
    )
    return [(float(r["start_at"]), float(r["end_at"])) for r in rows]


async def move_booking(conn: aiosqlite.Connection, booking_id: int, start_at: float,
                       end_at: float, now: float) -> bool:
    """Move a live booking and bump its SEQUENCE. False when the slot is taken (the partial
    unique index ``bookings_one_per_slot``) or the booking is not live."""
    try:
        cur = await conn.execute(
            "UPDATE bookings SET start_at = ?, end_at = ?, sequence = sequence + 1,"
            " updated_at = ? WHERE id = ? AND status = 'booked'",
            (start_at, end_at, now, booking_id),
        )
    except sqlite3.IntegrityError:
        return False
    return cur.rowcount == 1


async def cancel_booking(conn: aiosqlite.Connection, booking_id: int, *, by: str,
                         reason: str | None, now: float) -> bool:
    """Cancel a live booking (its slot is free again at once: the unique index only covers
    live ones). False when it was not live."""
    cur = await conn.execute(
        "UPDATE bookings SET status = 'cancelled', sequence = sequence + 1, cancelled_at = ?,"
        " cancelled_by = ?, cancel_reason = ?, updated_at = ? WHERE id = ? AND status = 'booked'",
        (now, by, reason, now, booking_id),
    )
    return cur.rowcount == 1


async def reminder_recorded(conn: aiosqlite.Connection, key: str) -> bool:
    return bool(await _rows(conn, "SELECT 1 FROM booking_reminders WHERE key = ?", (key,)))


async def record_reminder(
    conn: aiosqlite.Connection, *, key: str, booking_id: int, account_id: str, contact_id: str,
    start_at: float, offset_seconds: float, outcome: str, reason: str | None, now: float,
) -> None:
    await conn.execute(
        "INSERT INTO booking_reminders(key, booking_id, account_id, contact_id, start_at,"
        " offset_seconds, outcome, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(key) DO NOTHING",
        (key, booking_id, account_id, contact_id, start_at, offset_seconds, outcome, reason, now),
    )


async def reminders(db: Database, booking_id: int | None = None) -> list[sqlite3.Row]:
    """Recorded reminder outcomes, oldest first (of one booking, or all)."""
    if booking_id is None:
        return await db.fetchall("SELECT * FROM booking_reminders ORDER BY created_at, key")
    return await db.fetchall(
        "SELECT * FROM booking_reminders WHERE booking_id = ? ORDER BY created_at, key",
        (booking_id,),
    )
