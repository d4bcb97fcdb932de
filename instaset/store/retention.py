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

import re
from collections.abc import Sequence
from dataclasses import dataclass

import aiosqlite

from instaset.store.db import Database

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Tables that erasure never touches: bookkeeping, and the connection itself.
_NEVER = frozenset({"schema_migrations", "accounts", "contacts"})


@dataclass(frozen=True, slots=True)
class Rule:
    """Rows of ``table`` matching ``where`` (one ``?`` parameter: the horizon) are deleted,
    or, with ``update``, rewritten by that SET clause instead."""

    table: str
    where: str
    update: str | None = None
    label: str = ""

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
