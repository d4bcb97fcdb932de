"""SQL of outgoing actions (the ``sends`` table): one row per idempotency key."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import aiosqlite

from instaset.store.db import Database


async def insert_sends(conn: aiosqlite.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """rows: (key, account_id, contact_id, comment_id, kind, body, sent_by, workflow, now)."""
    await conn.executemany(
        "INSERT INTO sends(key, account_id, contact_id, comment_id, kind, body, sent_by,"
        " workflow, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?9, ?9)"
        " ON CONFLICT(key) DO NOTHING",
        rows,
    )


async def insert_refused(conn: aiosqlite.Connection, rows: Sequence[tuple[object, ...]]
                         ) -> None:
    """Sends refused before they were queued (by the engine's rules), for the record:
    rows (key, account_id, contact_id, comment_id, kind, body, sent_by, workflow, reason,
    detail, now); ``detail``: the rules' words (migration 0021). No job: nothing delivers
    them."""
    await conn.executemany(
        "INSERT INTO sends(key, account_id, contact_id, comment_id, kind, body, sent_by,"
        " workflow, state, reason, detail, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'refused', ?, ?, ?11, ?11) ON CONFLICT(key) DO NOTHING",
        rows,
    )


async def recent_private_replies(db: Database, since: float) -> dict[str, list[float]]:
    """Per account, when each private reply to a post or reel comment that reached Meta or
    may have (sent or in flight) since ``since`` started; its last state change, an upper
    bound. Replies to live comments (``live`` in the body) have their own budget: not here."""
    # The literal kind and states are those of the partial index sends_one_private_reply,
    # so SQLite reads that index, not every send (0.44 s on 500,000 sends; 20 ms this way).
    rows = await db.fetchall(
        "SELECT account_id, updated_at FROM sends WHERE kind = 'private_reply'"
        " AND state IN ('in_flight', 'sent') AND updated_at >= ?"
        " AND json_extract(body, '$.live') IS NOT 1", (since,))
    out: dict[str, list[float]] = {}
    for row in rows:
        out.setdefault(str(row[0]), []).append(float(row[1]))
    return out


async def get_send(db: Database, key: str) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM sends WHERE key = ?", (key,), quick=True)


def _facts_sql(comment: str, key: str) -> str:
    """The columns the sending rules read (one definition for both queries below): account
    state and window facts (from ``a`` accounts and ``c`` conversations, joined by the
    query), and whether the comment's one private reply is used by a send other than
    ``key``. The arguments are SQL expressions (columns or parameters)."""
    return (f"a.state AS account_state, c.last_inbound_at, c.paused_until,"
            f" (SELECT count(*) FROM sends p WHERE p.comment_id = {comment}"
            f"   AND p.kind = 'private_reply' AND p.state IN ('in_flight', 'sent')"
            f"   AND p.key != {key}) AS private_reply_used")


_DELIVERY_SQL = (
    f"SELECT s.*, {_facts_sql('s.comment_id', 's.key')},"
    # For a public reply: whether the comment's private reply is still queued (the
    # commenter's sends, by the sends_contact index).
    " CASE WHEN s.kind = 'public_reply' THEN EXISTS (SELECT 1 FROM sends p"
    "   WHERE p.account_id = s.account_id AND p.contact_id = s.contact_id"
    "   AND p.comment_id = s.comment_id AND p.kind = 'private_reply'"
    "   AND p.state = 'pending') ELSE 0 END AS private_reply_pending"
    " FROM sends s LEFT JOIN accounts a ON a.id = s.account_id"
    " LEFT JOIN conversations c ON a.id IS NOT NULL"
    "   AND c.account_id = s.account_id AND c.contact_id = s.contact_id"
    " WHERE s.key = ?"
)
_CONTEXT_SQL = (
    f"SELECT {_facts_sql('?3', '?4')}"
    " FROM accounts a LEFT JOIN conversations c"
    "   ON c.account_id = a.id AND c.contact_id = ?2"
    " WHERE a.id = ?1"
)


async def get_send_for_delivery(db: Database, key: str) -> sqlite3.Row | None:
    """The send row and, in the same read, what :func:`send_context` gives for it
    (``account_state`` NULL when the account is not stored)."""
    return await db.fetchone(_DELIVERY_SQL, (key,), quick=True)


async def send_context(
    db: Database, account_id: str, contact_id: str | None, comment_id: str | None, key: str
) -> sqlite3.Row | None:
    """Account state, window facts and whether the comment's private reply is used."""
    return await db.fetchone(_CONTEXT_SQL, (account_id, contact_id, comment_id, key),
                             quick=True)


async def send_context_in(
    conn: aiosqlite.Connection, account_id: str, contact_id: str | None,
    comment_id: str | None, key: str,
) -> sqlite3.Row | None:
    """:func:`send_context` inside the caller's transaction."""
    rows = list(await conn.execute_fetchall(_CONTEXT_SQL,
                                            (account_id, contact_id, comment_id, key)))
    return rows[0] if rows else None


async def set_state(
    db: Database, key: str, state: str, now: float, *, reason: str | None = None,
    attempt: bool = False, durable: bool = False,
) -> bool:
    """Set a send's state; False when the row is gone or already ``sent`` (nothing changed).
    ``durable``: on disk before this returns (the ``in_flight`` mark before the Graph
    call); otherwise a relaxed commit (see :mod:`instaset.store.db`)."""
    # Never over a 'sent' row: the echo of a send whose answer was an error may have
    # settled it meanwhile (Meta sometimes fails a request it carried out).
    changed = await db.execute(
        "UPDATE sends SET state = ?, reason = coalesce(?, reason), updated_at = ?,"
        " attempts = attempts + ? WHERE key = ? AND state != 'sent'",
        (state, reason, now, int(attempt), key), relaxed=True,
    ) == 1
    if durable and changed:
        await db.barrier()
    return changed


async def set_state_in(
    conn: aiosqlite.Connection, key: str, state: str, now: float, *, reason: str | None = None,
    detail: str | None = None,
) -> None:
    """Set a send's state inside the caller's transaction (never over a ``sent`` row).
    ``detail``: the refusal's words (migration 0021), already scrubbed of secrets by the
    caller; None keeps what the row has."""
    await conn.execute(
        "UPDATE sends SET state = ?, reason = coalesce(?, reason),"
        " detail = coalesce(?, detail), updated_at = ? WHERE key = ? AND state != 'sent'",
        (state, reason, detail, now, key),
    )


async def mark_sent_in(
    conn: aiosqlite.Connection, key: str, message_id: str | None, now: float
) -> None:
    await conn.execute(
        "UPDATE sends SET state = 'sent', message_id = coalesce(?, message_id), updated_at = ?,"
        " reason = NULL, detail = NULL WHERE key = ?",
        (message_id, now, key),
    )


async def send_by_message_id(
    conn: aiosqlite.Connection, message_id: str
) -> sqlite3.Row | None:
    rows = list(await conn.execute_fetchall(
        "SELECT * FROM sends WHERE message_id = ?", (message_id,)
    ))
    return rows[0] if rows else None


async def in_flight_sends(
    conn: aiosqlite.Connection, account_id: str, contact_id: str
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(
        "SELECT * FROM sends WHERE account_id = ? AND contact_id = ? AND state = 'in_flight'"
        " ORDER BY created_at",
        (account_id, contact_id),
    ))


async def unknown_tries(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, since: float
) -> list[sqlite3.Row]:
    """The contact's sends with a try since ``since`` whose outcome stayed unknown
    (``unknown_at``, migration 0016; see ``outbox.Deliverer.echo_origin``)."""
    return list(await conn.execute_fetchall(
        "SELECT * FROM sends WHERE account_id = ? AND contact_id = ? AND unknown_at >= ?"
        " AND state != 'in_flight' ORDER BY created_at",
        (account_id, contact_id, since),
    ))


async def mark_unknown_try(db: Database, key: str) -> None:
    """The last try of ``key`` (marked in flight at ``updated_at``) got no answer and no
    echo within the wait: record when it was made, as its echo may still come, late."""
    await db.execute("UPDATE sends SET unknown_at = updated_at WHERE key = ?"
                     " AND state = 'in_flight'", (key,), relaxed=True)


async def in_flight_public_replies(
    conn: aiosqlite.Connection, comment_id: str
) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(
        "SELECT * FROM sends WHERE comment_id = ? AND kind = 'public_reply'"
        " AND state = 'in_flight' ORDER BY created_at",
        (comment_id,),
    ))


async def public_reply_turns(conn: aiosqlite.Connection, account_id: str) -> dict[str, int]:
    """How many public replies each workflow of the account has made: the turn its next
    variant takes (``decide(turns=...)``)."""
    rows = await conn.execute_fetchall(
        "SELECT workflow, turns FROM public_reply_turns WHERE account_id = ?", (account_id,))
    return {str(r[0]): int(r[1]) for r in rows}


async def count_public_replies(conn: aiosqlite.Connection, account_id: str, workflow: str,
                               n: int) -> None:
    """Add ``n`` public replies of ``workflow`` (in the transaction that enqueues them)."""
    await conn.execute(
        "INSERT INTO public_reply_turns(account_id, workflow, turns) VALUES (?, ?, ?)"
        " ON CONFLICT(account_id, workflow) DO UPDATE SET turns = turns + excluded.turns",
        (account_id, workflow, n))


async def refusals_by_reason(db: Database, since: float) -> dict[str, int]:
    rows = await db.fetchall(
        "SELECT reason, count(*) FROM sends WHERE state IN ('refused', 'failed')"
        " AND updated_at >= ? GROUP BY reason",
        (since,),
    )
    return {r[0] or "unknown": int(r[1]) for r in rows}


async def unprocessed_events(
    db: Database, account_id: str, contact_id: str, kind: str, since: float
) -> list[sqlite3.Row]:
    """Stored events of ``kind`` about ``contact_id`` received since ``since`` that the
    worker has not processed yet (raw JSON), oldest first: echoes of our messages to a
    contact, or (contact = the account) the account's own comments. Events that ingest
    acknowledged under load and has not moved into ``events`` yet (``staged_events``, see
    store/ingest.py) count too, after the others: in any process (the CLI's sends too), an
    echo that arrived is never missed for being staged."""
    return await db.fetchall(
        "SELECT id, raw, received_at FROM (SELECT id, raw, received_at, 0 AS staged, id AS n"
        " FROM events WHERE account_id = ?1 AND contact_id = ?2 AND kind = ?3"
        " AND processed_at IS NULL AND received_at >= ?4"
        " UNION ALL SELECT NULL, raw, received_at, 1, id FROM staged_events WHERE account_id = ?1"
        " AND contact_id = ?2 AND kind = ?3 AND received_at >= ?4) ORDER BY staged, n",
        # Not quick (the loop's connection): staged rows have no index but the dedupe key,
        # so a large burst's are scanned, in aiosqlite's thread. A rare path: a send whose
        # outcome was unknown.
        (account_id, contact_id, kind, since),
    )


async def get_send_by_mid(db: Database, message_id: str) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM sends WHERE message_id = ?", (message_id,),
                             quick=True)
