"""SQL of the Accounts feature: OAuth states, token times, deletion receipts, and deleting an
account's or a contact's data.

Deletion contract (:func:`delete_account_data`, :func:`delete_contact_data`): runs inside the
caller's transaction, so it is all or nothing. Besides the spine's tables it finds every other
table that has an ``account_id`` (and ``contact_id``) column by reading the schema, so data
that later features store per account or per contact (leads, bookings, links...) goes too.
Jobs are matched by their payload: an ``account_id``/``contact_id`` field, a
``process_event`` job's event, a ``send`` job's send row; a ``first_plan`` job by its key
(a contact's: :data:`instaset.store.jobs.JOBS_OF_CONTACT`, shared with ``purge
--contact``). An account's ``oauth_states`` rows (its connect attempts, which name it by id
and @username) go with it. Returns ``{table: rows deleted}``.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence

import aiosqlite

from instaset.store.db import Database
from instaset.store.jobs import JOBS_OF_CONTACT

# Tables handled explicitly, or that hold no per-account data to delete.
_SPECIAL = frozenset(
    {"accounts", "contacts", "jobs", "schema_migrations", "oauth_states", "deletion_receipts"}
)


# -- OAuth states ----------------------------------------------------------------------------
async def create_state(
    db: Database, state: str, redirect_uri: str, now: float, ttl: float
) -> None:
    async with db.tx() as conn:
        # Old attempts are worthless after they expire; keep the table small.
        await conn.execute("DELETE FROM oauth_states WHERE expires_at < ?", (now - 86400,))
        await conn.execute(
            "INSERT INTO oauth_states(state, redirect_uri, created_at, expires_at)"
            " VALUES (?, ?, ?, ?)",
            (state, redirect_uri, now, now + ttl),
        )


async def claim_state(db: Database, state: str, now: float) -> sqlite3.Row | None:
    """Mark ``state`` used, once. None when it is unknown, already used or expired."""
    async with db.tx() as conn:
        rows = list(await conn.execute_fetchall(
            "UPDATE oauth_states SET used_at = ? WHERE state = ? AND used_at IS NULL"
            " AND expires_at > ? RETURNING *",
            (now, state, now),
        ))
    return rows[0] if rows else None


async def get_state(db: Database, state: str) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM oauth_states WHERE state = ?", (state,))


async def finish_state(
    db: Database, state: str, outcome: str, account_id: str | None, detail: str
) -> None:
    await db.execute(
        "UPDATE oauth_states SET outcome = ?, account_id = ?, detail = ? WHERE state = ?",
        (outcome, account_id, detail, state),
    )


# -- accounts --------------------------------------------------------------------------------
async def set_token_times(
    db: Database, account_id: str, issued_at: float, expires_at: float | None, now: float
) -> None:
    await db.execute(
        "UPDATE accounts SET token_issued_at = ?, token_expires_at = ?, updated_at = ?"
        " WHERE id = ?",
        (issued_at, expires_at, now, account_id),
    )


async def mark_reconnect_needed(db: Database, account_id: str, now: float) -> bool:
    """``connected`` -> ``reconnect_needed``; False when the account was not connected (a
    disconnected one stays so, one already marked is not marked again)."""
    return bool(await db.execute(
        "UPDATE accounts SET state = 'reconnect_needed', updated_at = ?"
        " WHERE id = ? AND state = 'connected'", (now, account_id)))


async def set_disconnected(db: Database, account_id: str, now: float) -> int:
    return await db.execute(
        "UPDATE accounts SET state = 'disconnected', subscribed_fields = '[]', updated_at = ?"
        " WHERE id = ?",
        (now, account_id),
    )


async def set_subscribed_fields(
    db: Database, account_id: str, fields: Sequence[str], now: float
) -> None:
    await db.execute(
        "UPDATE accounts SET subscribed_fields = ?, updated_at = ? WHERE id = ?",
        (json.dumps(list(fields)), now, account_id),
    )


async def find_account(db: Database, ref: str) -> list[sqlite3.Row]:
    """Accounts whose id, app-scoped id or username (with or without ``@``) is ``ref``."""
    name = ref.removeprefix("@")
    return await db.fetchall(
        "SELECT * FROM accounts WHERE id = ?1 OR app_scoped_id = ?1 OR username = ?2"
        " ORDER BY created_at, id",
        (ref, name),
    )


async def accounts_for_user(db: Database, user_id: str) -> list[str]:
    """Ids of the accounts a signed ``user_id`` names (professional or app-scoped id)."""
    rows = await db.fetchall(
        "SELECT id FROM accounts WHERE id = ?1 OR app_scoped_id = ?1 ORDER BY id", (user_id,)
    )
    return [str(r["id"]) for r in rows]


async def connected_after(db: Database, account_ids: list[str], at: float) -> list[str]:
    """Those of ``account_ids`` whose current token was issued after ``at``."""
    if not account_ids:
        return []
    marks = ",".join("?" * len(account_ids))
    rows = await db.fetchall(
        f"SELECT id FROM accounts WHERE id IN ({marks}) AND token_issued_at > ? ORDER BY id",
        (*account_ids, at),
    )
    return [str(r["id"]) for r in rows]


async def contacts_for_user(db: Database, user_id: str) -> list[tuple[str, str]]:
    """``(account_id, contact_id)`` of every contact with that Instagram-scoped id."""
    rows = await db.fetchall(
        "SELECT account_id, id FROM contacts WHERE id = ? ORDER BY account_id", (user_id,)
    )
    return [(str(r[0]), str(r[1])) for r in rows]


# -- deletion --------------------------------------------------------------------------------
async def _scoped_tables(conn: aiosqlite.Connection) -> list[tuple[str, bool]]:
    """Ordinary tables with an ``account_id`` column, and whether they have ``contact_id``."""
    names = [
        str(r[0])
        for r in await conn.execute_fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name"
        )
    ]
    out: list[tuple[str, bool]] = []
    for name in names:
        if name in _SPECIAL:
            continue
        cols = {str(r[1]) for r in await conn.execute_fetchall(f'PRAGMA table_info("{name}")')}
        if "account_id" in cols:
            out.append((name, "contact_id" in cols))
    return out


async def _delete(
    conn: aiosqlite.Connection, counts: dict[str, int], table: str, sql: str,
    params: Sequence[object],
) -> None:
    cur = await conn.execute(sql, params)
    if cur.rowcount:
        counts[table] = counts.get(table, 0) + cur.rowcount


async def delete_account_data(
    conn: aiosqlite.Connection, account_id: str, *, keep_account_row: bool = False
) -> dict[str, int]:
    """Delete everything stored for ``account_id`` (see the module docstring)."""
    counts: dict[str, int] = {}
    # Later features may reference contacts without ON DELETE CASCADE: check at COMMIT.
    await conn.execute("PRAGMA defer_foreign_keys = ON")
    # Its connect attempts: the row names it by id, and its summary by @username and id.
    name = [str(r[0]) for r in await conn.execute_fetchall(
        "SELECT username FROM accounts WHERE id = ? AND username IS NOT NULL", (account_id,))]
    await _delete(
        conn, counts, "oauth_states",
        "DELETE FROM oauth_states WHERE account_id = ?1"
        " OR instr(detail, '(' || ?1 || ')') > 0"
        " OR (?2 IS NOT NULL AND instr(detail, '@' || ?2 || ' (') > 0)",
        (account_id, name[0] if name else None),
    )
    await _delete(
        conn, counts, "jobs",
        "DELETE FROM jobs WHERE json_extract(payload, '$.account_id') = ?1"
        " OR (kind = 'process_event' AND json_extract(payload, '$.event_id') IN"
        "     (SELECT id FROM events WHERE account_id = ?1))"
        " OR (kind = 'send' AND json_extract(payload, '$.key') IN"
        "     (SELECT key FROM sends WHERE account_id = ?1))"
        " OR (kind = 'first_plan' AND key > 'first_plan:' || ?1 || ':'"
        "     AND key < 'first_plan:' || ?1 || ';')",
        (account_id,),
    )
    for table, _has_contact in await _scoped_tables(conn):
        await _delete(
            conn, counts, table, f'DELETE FROM "{table}" WHERE account_id = ?', (account_id,)
        )
    await _delete(conn, counts, "contacts", "DELETE FROM contacts WHERE account_id = ?",
                  (account_id,))
    if not keep_account_row:
        await _delete(conn, counts, "accounts", "DELETE FROM accounts WHERE id = ?",
                      (account_id,))
    return counts


# Events of the account filed under no contact, or under the account itself (its own
# comments and public replies, items of kinds instaset does not know), that may name a
# person: their id as a JSON string, or their @username (checked again below).
_UNFILED_NAMING = (
    "SELECT id, raw FROM {table} WHERE account_id = ?1 AND (contact_id IS NULL"
    " OR contact_id = ?1) AND (instr(raw, '\"' || ?2 || '\"') > 0"
    " OR (?3 IS NOT NULL AND instr(lower(raw), '@' || lower(?3)) > 0))"
)


async def delete_mentions(conn: aiosqlite.Connection, account_id: str, contact_id: str
                          ) -> int:
    """Delete the events (stored or staged) filed under no contact that name ``contact_id``
    or the contact's @username: the account's reply "Thanks @leo, check your DMs!" under
    his comment, an unknown item he sent. Erasing a person (Meta's data deletion, `purge
    --contact`) takes these too; call it before the contact row goes (its username)."""
    row = list(await conn.execute_fetchall(
        "SELECT username FROM contacts WHERE account_id = ? AND id = ?", (account_id, contact_id)))
    username = str(row[0][0]) if row and row[0][0] else None
    # "@leo" must not match "@leo_lifts" or "@leo.fit": what follows the name is no
    # username character (a period only ends a sentence: no username ends with one).
    # Usernames are case-insensitive.
    named = (re.compile(rf"@{re.escape(username)}(?![A-Za-z0-9_]|\.[A-Za-z0-9_])",
                        re.IGNORECASE) if username else None)
    deleted = 0
    for table in ("events", "staged_events"):
        rows = await conn.execute_fetchall(_UNFILED_NAMING.format(table=table),
                                           (account_id, contact_id, username))
        ids = [int(r[0]) for r in rows
               if f'"{contact_id}"' in r[1] or (named is not None and named.search(r[1]))]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            await conn.execute(f"DELETE FROM {table} WHERE id IN ({marks})", chunk)
        deleted += len(ids)
    return deleted


async def delete_contact_data(
    conn: aiosqlite.Connection, account_id: str, contact_id: str
) -> dict[str, int]:
    """Delete everything stored about one contact of one account, including the events
    filed under no contact that name them (:func:`delete_mentions`)."""
    counts: dict[str, int] = {}
    await conn.execute("PRAGMA defer_foreign_keys = ON")
    await _delete(conn, counts, "jobs", f"DELETE FROM jobs WHERE {JOBS_OF_CONTACT}",
                  (account_id, contact_id))
    mentions = await delete_mentions(conn, account_id, contact_id)
    if mentions:
        counts["events naming them"] = mentions
    for table, has_contact in await _scoped_tables(conn):
        if has_contact:
            await _delete(
                conn, counts, table,
                f'DELETE FROM "{table}" WHERE account_id = ? AND contact_id = ?',
                (account_id, contact_id),
            )
    await _delete(conn, counts, "contacts",
                  "DELETE FROM contacts WHERE account_id = ? AND id = ?", (account_id, contact_id))
    return counts


# -- deletion receipts -----------------------------------------------------------------------
async def add_receipt(
    conn: aiosqlite.Connection, code: str, matched: str, summary: dict[str, int], now: float
) -> None:
    await conn.execute(
        "INSERT INTO deletion_receipts(code, matched, status, summary, requested_at,"
        " completed_at) VALUES (?, ?, 'completed', ?, ?, ?)",
        (code, matched, json.dumps(summary, sort_keys=True), now, now),
    )


async def get_receipt(db: Database, code: str) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM deletion_receipts WHERE code = ?", (code,))
