"""SQL of retention and erasure: bounded batches, one transaction per group of contacts.

Contract:
- Every write here is a short ``BEGIN IMMEDIATE`` transaction (``Database.tx``) touching at
  most ``limit`` rows, so a running daemon's ingest writer (busy_timeout 10 s) waits
  milliseconds, never fails with "database is locked".
- :func:`delete_contacts` removes everything about the given contacts in ONE transaction:
  a contact is never half deleted. "Everything" is every table that has both an
  ``account_id`` and a ``contact_id`` column (found by introspection, so tables that other
  features add are covered), the contact row itself (its conversation cascades), and the
  jobs whose payload names the contact.
- Nothing here deletes an unprocessed event or a ready/running job of the time-based policy:
  work acknowledged to Meta is never lost to a purge.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiosqlite

from instaset.store.db import Database

LOCKED_PATIENCE = 120.0  # seconds a purge batch keeps trying while the daemon holds the lock
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Unsent messages that still hold content. The partial index messages_unsent (0007) has
# exactly this WHERE, so the scrub finds them without scanning the history.
UNSENT_UNSCRUBBED = ("deleted_at IS NOT NULL AND (text IS NOT NULL OR attachments != '[]'"
                     " OR edits != '[]')")

# Tables that erasure never touches: bookkeeping, and the connection itself.
_NEVER = frozenset({"schema_migrations", "accounts", "contacts"})


@dataclass(frozen=True, slots=True)
class Rule:
    """Rows of ``table`` matching ``where`` (one ``?`` parameter: the horizon) are deleted,
    or, with ``update``, rewritten by that SET clause instead. ``indexed``: an index holds
    exactly the matching rows (a partial index with the same WHERE), so batches are found
    through it; otherwise the table is walked once in rowid order (:func:`next_range`)."""

    table: str
    where: str
    update: str | None = None
    label: str = ""
    indexed: bool = False

    @property
    def name(self) -> str:
        return self.label or self.table


async def columns(db: Database) -> dict[str, set[str]]:
    """Every user table and its columns."""
    tables = [r[0] for r in await db.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )]
    out: dict[str, set[str]] = {}
    for t in tables:
        if _IDENT.match(t):
            out[t] = {r["name"] for r in await db.fetchall(f"PRAGMA table_info({t})")}
    return out


def contact_tables(cols: dict[str, set[str]]) -> list[str]:
    """Tables holding rows about one contact (both columns), children before parents."""
    found = [t for t, c in cols.items()
             if t not in _NEVER and {"account_id", "contact_id"} <= c]
    # Children first (clicks before links), and messages before the events they point at
    # (deleting an event first would make SQLite rewrite each message's event_id to NULL).
    order = {"clicks": 0, "messages": 0, "events": 2, "links": 2, "conversations": 3}
    return sorted(found, key=lambda t: (order.get(t, 1), t))


async def count(db: Database, table: str, where: str, params: Sequence[object]) -> int:
    row = await db.fetchone(f"SELECT count(*) FROM {table} WHERE {where}", params)
    return int(row[0]) if row else 0


async def delete_batch(
    db: Database, table: str, where: str, params: Sequence[object], limit: int
) -> int:
    """Delete up to ``limit`` matching rows in one short transaction. No ORDER BY: the
    planner then walks whichever index fits ``where`` and stops after ``limit`` rows, where
    an ORDER BY rowid would sort every match first, inside the write lock."""
    async with db.tx() as conn:
        cur = await conn.execute(
            f"DELETE FROM {table} WHERE rowid IN"
            f" (SELECT rowid FROM {table} WHERE {where} LIMIT ?)",
            (*params, limit),
        )
        return max(cur.rowcount, 0)


async def next_range(
    db: Database, table: str, where: str, params: Sequence[object], after: int, limit: int
) -> int | None:
    """The rowid of the ``limit``-th row matching ``where`` after rowid ``after`` (or of the
    last one when fewer match); None when none does. A read: it takes no lock.

    Batches of the time policy are rowid ranges ``(after, upto]``: the table is walked once
    in rowid order (its own b-tree, NOT INDEXED), instead of re-running ``WHERE ... LIMIT``,
    which starts again from the first row at every batch and so re-reads every row that is
    kept (unprocessed events, pending jobs, recent sends) once per batch."""
    row = await db.fetchone(
        f"SELECT max(rowid) FROM (SELECT rowid FROM {table} NOT INDEXED"
        f" WHERE rowid > ? AND ({where}) ORDER BY rowid LIMIT ?)",
        (after, *params, limit),
    )
    return int(row[0]) if row and row[0] is not None else None


async def _write_range(db: Database, sql: str, params: Sequence[object]) -> tuple[int, float]:
    """One statement in its own short transaction; (rows, seconds the write lock was held:
    waiting for it is not counted, so a busy daemon does not make the caller shrink its
    batches). A purge is the least urgent writer there is: when the daemon keeps the lock
    busy past ``busy_timeout`` (SQLite's busy handler is unfair to a process that sleeps
    100 ms between tries), it waits and tries again instead of failing, for up to
    :data:`LOCKED_PATIENCE` seconds."""
    give_up = time.monotonic() + LOCKED_PATIENCE
    while True:
        try:
            async with db.tx() as conn:
                started = time.perf_counter()
                cur = await conn.execute(sql, params)
                n = max(cur.rowcount, 0)
            return n, time.perf_counter() - started
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= give_up:
                raise
            await asyncio.sleep(0.05)


async def delete_range(
    db: Database, table: str, where: str, params: Sequence[object], after: int, upto: int
) -> tuple[int, float]:
    """Delete the rows matching ``where`` with ``after < rowid <= upto`` in one short
    transaction (the range comes from :func:`next_range`; rows that stopped matching since
    are left alone, as the WHERE is evaluated again here). See :func:`_write_range`."""
    return await _write_range(
        db, f"DELETE FROM {table} NOT INDEXED WHERE rowid > ? AND rowid <= ? AND ({where})",
        (after, upto, *params))


async def update_range(
    db: Database, table: str, set_clause: str, where: str, params: Sequence[object],
    after: int, upto: int,
) -> tuple[int, float]:
    """:func:`delete_range`, rewriting the rows with ``set_clause`` instead."""
    return await _write_range(
        db, f"UPDATE {table} NOT INDEXED SET {set_clause}"
            f" WHERE rowid > ? AND rowid <= ? AND ({where})", (after, upto, *params))


@contextlib.asynccontextmanager
async def bulk_mode(db: Database, cache_kib: int) -> AsyncIterator[None]:
    """Settings of this connection for a bulk delete, put back afterwards:

    - a page cache of ``cache_kib`` KiB: with SQLite's default (2 MiB) every index page of a
      million-row delete is evicted and read again many times (the delete walks several
      indexes in different orders);
    - ``synchronous=NORMAL``: no fsync per batch commit. A batch lost to a power cut is
      harmless (the purge is idempotent: the next run deletes it again), and in WAL mode
      NORMAL never corrupts the file;
    - ``wal_autocheckpoint`` x10: an index page that successive batches touch is copied back
      to the database once instead of once per batch. (The daemon's own connections still
      checkpoint at their usual threshold.)"""
    names = ("cache_size", "synchronous", "wal_autocheckpoint")
    before = {n: await pragma_int(db, n) for n in names}
    await db.execute(f"PRAGMA cache_size={-abs(int(cache_kib))}")
    await db.execute("PRAGMA synchronous=NORMAL")
    await db.execute(f"PRAGMA wal_autocheckpoint={max(before['wal_autocheckpoint'], 1) * 10}")
    try:
        yield
    finally:
        for n in names:
            await db.execute(f"PRAGMA {n}={before[n]}")


async def update_batch(
    db: Database, table: str, set_clause: str, where: str, params: Sequence[object], limit: int
) -> int:
    async with db.tx() as conn:
        cur = await conn.execute(
            f"UPDATE {table} SET {set_clause} WHERE rowid IN"
            f" (SELECT rowid FROM {table} WHERE {where} LIMIT ?)",
            (*params, limit),
        )
        return max(cur.rowcount, 0)


# -- contacts ---------------------------------------------------------------------------------
async def contacts_page(
    db: Database, account_id: str | None, after: tuple[str, str], limit: int
) -> list[tuple[str, str]]:
    """The next ``limit`` contacts after ``after`` in (account_id, id) order (keyset paging:
    stable while rows are deleted behind the cursor)."""
    rows = await db.fetchall(
        "SELECT account_id, id FROM contacts WHERE (?1 IS NULL OR account_id = ?1)"
        " AND (account_id, id) > (?2, ?3) ORDER BY account_id, id LIMIT ?4",
        (account_id, after[0], after[1], limit),
    )
    return [(r[0], r[1]) for r in rows]


_JOB_OF_CONTACT = (
    "json_extract(payload, '$.account_id') = ? AND json_extract(payload, '$.contact_id') = ?"
)


async def _delete_contact_in(
    conn: aiosqlite.Connection, tables: Sequence[str], account_id: str, contact_id: str,
    totals: dict[str, int], *, jobs: str,
) -> None:
    for t in tables:
        cur = await conn.execute(
            f"DELETE FROM {t} WHERE account_id = ? AND contact_id = ?", (account_id, contact_id)
        )
        totals[t] = totals.get(t, 0) + max(cur.rowcount, 0)
    if jobs != "none":
        # "ready" only: the jobs_due index finds them without a scan. "all" also scans the
        # finished ones (fine for one contact; account-wide erasure sweeps them afterwards).
        state = "state = 'ready'" if jobs == "ready" else "state != 'running'"
        cur = await conn.execute(
            f"DELETE FROM jobs WHERE {state} AND {_JOB_OF_CONTACT}", (account_id, contact_id)
        )
        totals["jobs"] = totals.get("jobs", 0) + max(cur.rowcount, 0)
    cur = await conn.execute(
        "DELETE FROM contacts WHERE account_id = ? AND id = ?", (account_id, contact_id)
    )
    totals["contacts"] = totals.get("contacts", 0) + max(cur.rowcount, 0)


async def delete_contacts(
    db: Database, tables: Sequence[str], contacts: Sequence[tuple[str, str]], *,
    jobs: str = "all",
) -> dict[str, int]:
    """Erase ``contacts`` ((account_id, contact_id) pairs) in ONE transaction. ``jobs``:
    ``all`` (every job naming the contact that is not running), ``ready`` or ``none``."""
    totals: dict[str, int] = {}
    async with db.tx() as conn:
        for acct, contact in contacts:
            await _delete_contact_in(conn, tables, acct, contact, totals, jobs=jobs)
    return totals


async def count_contact(
    db: Database, tables: Sequence[str], account_id: str, contact_id: str
) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tables:
        out[t] = await count(db, t, "account_id = ? AND contact_id = ?", (account_id, contact_id))
    out["jobs"] = await count(db, "jobs", f"state != 'running' AND {_JOB_OF_CONTACT}",
                              (account_id, contact_id))
    out["contacts"] = await count(db, "contacts", "account_id = ? AND id = ?",
                                  (account_id, contact_id))
    return out


# -- space ------------------------------------------------------------------------------------
async def pragma_int(db: Database, name: str) -> int:
    row = await db.fetchone(f"PRAGMA {name}")
    return int(row[0]) if row and row[0] is not None else 0


async def incremental_vacuum(db: Database, pages: int) -> None:
    """Return up to ``pages`` free pages to the OS (needs ``auto_vacuum=INCREMENTAL``). A
    write, so it goes through a short transaction like every other write."""
    async with db.tx() as conn:
        # The pragma yields a row per step: read them all, or COMMIT finds it still running.
        await conn.execute_fetchall(f"PRAGMA incremental_vacuum({int(pages)})")


async def vacuum_into_incremental(db: Database) -> None:
    """Rebuild the file (VACUUM) and switch it to ``auto_vacuum=INCREMENTAL``, so that later
    purges can return space while the daemon runs. Only when nothing else uses the file."""
    async with db.read() as conn:
        await conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        await conn.execute("VACUUM")


async def checkpoint(db: Database, *, truncate: bool) -> tuple[int, int, int]:
    """``wal_checkpoint``: TRUNCATE (also shrinks the WAL file) when nothing else uses the
    database, else PASSIVE (never waits for the daemon's writers). Returns (busy, wal pages,
    checkpointed pages)."""
    mode = "TRUNCATE" if truncate else "PASSIVE"
    row = await db.fetchone(f"PRAGMA wal_checkpoint({mode})")
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)
