"""SQL of tracked links and of the stats funnel.

The funnel is computed from what is stored anyway: ``sends`` (workflow, state, reason),
``messages`` (history), ``events`` (read receipts, comments with their media id),
``conversations.state`` (stage, tags, and ``fired``: workflow -> last time it fired) and the
``links``/``clicks`` tables. A decision's sends share the key prefix ``send:{event}:``; a send
caused by a comment has ``comment:{id}`` in its key, which names the comment event and so its
media.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import aiosqlite

from instaset.store.db import Database


# -- links ------------------------------------------------------------------------------------
async def insert_links(conn: aiosqlite.Connection, rows: Sequence[tuple[object, ...]]) -> None:
    """rows: (code, url, account_id, contact_id, send_key, workflow, created_at)."""
    await conn.executemany(
        "INSERT INTO links(code, url, account_id, contact_id, send_key, workflow, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(code) DO NOTHING",
        rows,
    )


async def get_link(db: Database, code: str) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM links WHERE code = ?", (code,))


async def record_click(
    db: Database, code: str, account_id: str, contact_id: str | None, now: float
) -> None:
    await db.execute(
        "INSERT INTO clicks(code, account_id, contact_id, at) VALUES (?, ?, ?, ?)",
        (code, account_id, contact_id, now),
    )


# -- the funnel -------------------------------------------------------------------------------
# The mid a read receipt names, for the three shapes a stored event can have.
_READ_MID = (
    "coalesce(json_extract(e.raw, '$.entry[0].messaging[0].read.mid'),"
    " json_extract(e.raw, '$.entry[0].standby[0].read.mid'),"
    " json_extract(e.raw, '$.entry[0].changes[0].value.read.mid'))"
)
_MEDIA = (
    "coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),"
    " json_extract(e.raw, '$.entry[0].changes[0].value.media_id'))"
)
# 'comment:{id}' of a send key that contains it (resumed flows keep it in their keys).
_COMMENT_OF_KEY = (
    "CASE WHEN instr({k}, 'comment:') > 0 THEN 'comment:' || substr(substr({k},"
    " instr({k}, 'comment:') + 8), 1, instr(substr({k}, instr({k}, 'comment:') + 8) || ':',"
    " ':') - 1) END"
)
MESSAGE_KINDS = "('text', 'media', 'template', 'private_reply', 'public_reply')"

# Only rows of the partial index events_stats: its exact WHERE term must appear in the query.
_STATS_KINDS = "e.kind IN ('comment', 'live_comment', 'read')"

_SENDS_SQL = f"""
WITH r AS (
    SELECT e.account_id, e.contact_id, {_READ_MID} AS mid FROM events e
    WHERE e.account_id IN (SELECT id FROM accounts) AND e.received_at >= ?1
      AND {_STATS_KINDS} AND e.kind = 'read'
), w AS (
    SELECT m.account_id, m.contact_id, max(m.created_at) AS upto
    FROM r JOIN messages m ON m.mid = r.mid GROUP BY m.account_id, m.contact_id
), s AS (
    SELECT s.key, s.account_id, s.contact_id, s.workflow, s.sent_by, s.state, s.kind,
           s.message_id, {_COMMENT_OF_KEY.format(k="s.key")} AS ev
    FROM sends s WHERE s.created_at >= ?1
)
SELECT s.workflow, s.sent_by,
    (SELECT {_MEDIA} FROM events e WHERE e.dedupe_key = s.ev) AS media,
    count(DISTINCT CASE WHEN s.workflow IS NOT NULL AND s.key NOT LIKE 'send:resume:%'
        AND instr(s.key, '#') = 0 THEN rtrim(s.key, '0123456789') END) AS triggers,
    coalesce(sum(s.state = 'sent' AND s.kind IN {MESSAGE_KINDS}), 0) AS sent,
    coalesce(sum(s.state = 'sent' AND w.upto IS NOT NULL
        AND (SELECT m.created_at FROM messages m WHERE m.mid = s.message_id) <= w.upto), 0)
        AS read,
    coalesce(sum(s.state IN ('refused', 'failed')), 0) AS refused,
    coalesce(sum(s.state IN ('pending', 'in_flight')), 0) AS pending
FROM s LEFT JOIN w ON w.account_id = s.account_id AND w.contact_id = s.contact_id
GROUP BY 1, 2, 3
"""


async def send_groups(db: Database, since: float) -> list[sqlite3.Row]:
    """Per (workflow, sent_by, media): triggers, sent, read, refused, pending."""
    return await db.fetchall(_SENDS_SQL, (since,))


async def clicks_by(db: Database, since: float) -> list[sqlite3.Row]:
    """Per (workflow, media): clicks and distinct clickers."""
    return await db.fetchall(
        f"SELECT l.workflow, (SELECT {_MEDIA} FROM events e WHERE e.dedupe_key ="
        f" {_COMMENT_OF_KEY.format(k='l.send_key')}) AS media,"
        " count(*) AS clicks, count(DISTINCT c.account_id || ':' || c.contact_id) AS clickers"
        " FROM clicks c JOIN links l ON l.code = c.code WHERE c.at >= ? GROUP BY 1, 2",
        (since,),
    )


_LEAD = ("(stage NOT IN ('new') OR EXISTS (SELECT 1 FROM json_each(state, '$.tags')"
         " WHERE value = 'lead'))")
_QUALIFIED = "stage IN ('qualified', 'booked', 'customer')"
_BOOKED = "stage IN ('booked', 'customer')"


async def leads_by_workflow(db: Database, since: float) -> list[sqlite3.Row]:
    """Per workflow that fired for a contact since ``since``: contacts, leads, qualified,
    booked (by the contact's current stage)."""
    return await db.fetchall(
        "SELECT f.key AS workflow, count(*) AS contacts,"
        f" coalesce(sum({_LEAD}), 0) AS leads, coalesce(sum({_QUALIFIED}), 0) AS qualified,"
        f" coalesce(sum({_BOOKED}), 0) AS booked"
        " FROM (SELECT state, coalesce(json_extract(state, '$.stage'), 'new') AS stage"
        "       FROM conversations WHERE updated_at >= ?1) c,"
        " json_each(c.state, '$.fired') f WHERE f.value >= ?1 GROUP BY f.key",
        (since,),
    )


async def leads_by_media(db: Database, since: float) -> list[sqlite3.Row]:
    """Per media: comments since ``since``, and the commenters' leads/qualified/booked."""
    return await db.fetchall(
        "WITH k AS (SELECT e.account_id, e.contact_id, " + _MEDIA + " AS media FROM events e"
        "   WHERE e.account_id IN (SELECT id FROM accounts) AND e.received_at >= ?"
        f"   AND {_STATS_KINDS} AND e.kind != 'read'),"
        " c AS (SELECT media, count(*) AS comments FROM k GROUP BY media),"
        " p AS (SELECT DISTINCT media, account_id, contact_id FROM k)"
        " SELECT c.media, c.comments,"
        f" coalesce(sum({_LEAD}), 0) AS leads, coalesce(sum({_QUALIFIED}), 0) AS qualified,"
        f" coalesce(sum({_BOOKED}), 0) AS booked"
        " FROM c JOIN p ON p.media IS c.media"
        " LEFT JOIN (SELECT account_id, contact_id, state,"
        "   coalesce(json_extract(state, '$.stage'), 'new') AS stage FROM conversations) v"
        "   ON v.account_id = p.account_id AND v.contact_id = p.contact_id"
        " GROUP BY c.media, c.comments",
        (since,),
    )


async def stage_totals(db: Database, since: float) -> sqlite3.Row | None:
    """Conversations active since ``since``: count, leads, qualified, booked."""
    return await db.fetchone(
        "SELECT count(*) AS contacts,"
        f" coalesce(sum({_LEAD}), 0) AS leads, coalesce(sum({_QUALIFIED}), 0) AS qualified,"
        f" coalesce(sum({_BOOKED}), 0) AS booked"
        " FROM (SELECT state, coalesce(json_extract(state, '$.stage'), 'new') AS stage"
        "       FROM conversations WHERE updated_at >= ?)",
        (since,),
    )


async def first_responses(db: Database, since: float) -> list[float]:
    """For each conversation whose first message since ``since`` came from the person: the
    seconds until the first answer (automation or human). Unanswered ones are left out."""
    # Both passes read only the covering index messages_time. CROSS JOIN keeps the answers
    # as the outer loop (each looks its conversation up in an automatic index on f); the
    # other order would rescan the window once per conversation. INDEXED BY: left alone,
    # the planner may walk messages_thread (every message ever) instead of the window.
    rows = await db.fetchall(
        "WITH f AS MATERIALIZED (SELECT account_id, contact_id, min(created_at) AS t_in"
        "   FROM messages INDEXED BY messages_time WHERE created_at >= ?1 AND direction = 'in'"
        "   GROUP BY account_id, contact_id)"
        " SELECT min(o.created_at) - f.t_in FROM messages AS o INDEXED BY messages_time"
        " CROSS JOIN f ON f.account_id = o.account_id AND f.contact_id = o.contact_id"
        " WHERE o.created_at >= ?1 AND o.direction = 'out' AND o.created_at >= f.t_in"
        " GROUP BY o.account_id, o.contact_id",
        (since,),
    )
    return [float(r[0]) for r in rows if r[0] is not None]


async def messages_per_day(db: Database, since: float) -> list[sqlite3.Row]:
    """(day number since the epoch (UTC), messages in, messages out)."""
    return await db.fetchall(
        "SELECT CAST(created_at / 86400 AS INTEGER) AS day,"
        " sum(direction = 'in') AS n_in, sum(direction = 'out') AS n_out"
        " FROM messages WHERE created_at >= ? GROUP BY day ORDER BY day",
        (since,),
    )


async def refusals(db: Database, since: float) -> dict[str, int]:
    rows = await db.fetchall(
        "SELECT coalesce(reason, 'unknown'), count(*) FROM sends"
        " WHERE state IN ('refused', 'failed') AND created_at >= ? GROUP BY 1 ORDER BY 2 DESC",
        (since,),
    )
    return {r[0]: int(r[1]) for r in rows}


async def table_columns(db: Database, table: str) -> set[str]:
    """Columns of ``table``, empty when it does not exist (tables other features own)."""
    if not table.isidentifier():
        return set()
    return {r["name"] for r in await db.fetchall(f"PRAGMA table_info({table})")}


async def ai_usage(db: Database, since: float) -> tuple[int, int, int] | None:
    """(calls, tokens, failures) from the AI feature's ``ai_calls`` table; None when that
    table does not exist. Tolerant of its exact columns: ``created_at`` (required),
    ``input_tokens``/``output_tokens``, ``total_tokens`` or ``tokens``; ``outcome`` ('ok'),
    ``error`` or ``ok``."""
    cols = await table_columns(db, "ai_calls")
    if "created_at" not in cols:
        return None
    if {"input_tokens", "output_tokens"} <= cols:
        tokens = "coalesce(input_tokens, 0) + coalesce(output_tokens, 0)"
    elif "total_tokens" in cols:
        tokens = "coalesce(total_tokens, 0)"
    elif "tokens" in cols:
        tokens = "coalesce(tokens, 0)"
    else:
        tokens = "0"
    failed = ("outcome != 'ok'" if "outcome" in cols
              else "error IS NOT NULL" if "error" in cols
              else "ok = 0" if "ok" in cols else "0")
    row = await db.fetchone(
        f"SELECT count(*), coalesce(sum({tokens}), 0), coalesce(sum({failed}), 0)"
        " FROM ai_calls WHERE created_at >= ?",
        (since,),
    )
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)
