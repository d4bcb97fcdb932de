"""SQL of tracked links and of the stats funnel.

The funnel is read from rollup tables (migration 0010: ``stats_*``) that triggers keep up to
date on every write, keyed by hour (``CAST(t / 3600 AS INTEGER)``): each query takes the
period's first hour ``hour`` and sums whole hours, so its cost does not grow with the
traffic of the period. The definitions are in :mod:`instaset.stats`.

The ``*_scan`` functions compute the same figures from the rows themselves (``sends``,
``messages``, ``events`` (read receipts, comments with their media id), ``conversations.state``
(stage, tags, and ``fired``: workflow -> last time it fired), ``links``/``clicks``): they are
the reference the rollups are tested against (and what to fall back on to audit a figure).
A decision's sends share the key prefix ``send:{event}:``, its AI replies, their offer of
slots and the AI's fallback are keyed after the AI job (``send:ai:{event}:{n}``,
``...:slots``, ``send:ai-fallback:{account}:{contact}:{day}:ai:{event}:{n}``) and belong to
the same decision (:data:`DECISION_OF_KEY`, migration 0023); a send caused by a comment has
``comment:{id}`` in its key (``live:{id}`` for a live comment), which names the comment event
and so its media. The account's own comments (its public replies come back as comments) are
not counted as comments (migration 0020). A public reply held back because the private reply
it announces did not go (reason ``private_reply_not_sent``) is not a refusal of its own: the
private reply's refusal counts the miss (:data:`REFUSED`, migration 0023).
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


# -- the funnel: rollups ----------------------------------------------------------------------
# Text keys of the rollups use '' for "none" (see the migration); NULL again here.
async def send_groups(db: Database, hour: int) -> list[sqlite3.Row]:
    """Per (workflow, sent_by, media): triggers, sent, read, refused, pending."""
    return await db.fetchall(
        "SELECT nullif(workflow, '') AS workflow, sent_by, nullif(media, '') AS media,"
        " sum(triggers) AS triggers, sum(sent) AS sent, sum(read) AS read,"
        " sum(refused) AS refused, sum(pending) AS pending"
        " FROM stats_sends WHERE hour >= ? GROUP BY workflow, sent_by, media",
        (hour,),
    )


async def clicks_by(db: Database, hour: int) -> list[sqlite3.Row]:
    """Per (workflow, media): clicks."""
    return await db.fetchall(
        "SELECT nullif(workflow, '') AS workflow, nullif(media, '') AS media,"
        " sum(clicks) AS clicks FROM stats_clicks WHERE hour >= ?"
        " GROUP BY workflow, media HAVING sum(clicks) > 0",
        (hour,),
    )


async def leads_by_workflow(db: Database, hour: int) -> list[sqlite3.Row]:
    """Per workflow: contacts it last fired for in the period, and their leads, qualified,
    booked (by their current stage)."""
    return await db.fetchall(
        "SELECT workflow, sum(contacts) AS contacts, sum(leads) AS leads,"
        " sum(qualified) AS qualified, sum(booked) AS booked"
        " FROM stats_fired WHERE hour >= ? GROUP BY workflow HAVING sum(contacts) > 0",
        (hour,),
    )


async def leads_by_media(db: Database, hour: int) -> list[sqlite3.Row]:
    """Per media: comments in the period, and their authors' leads/qualified/booked."""
    return await db.fetchall(
        "SELECT media, sum(comments) AS comments, sum(leads) AS leads,"
        " sum(qualified) AS qualified, sum(booked) AS booked"
        " FROM stats_media WHERE hour >= ? GROUP BY media HAVING sum(comments) > 0",
        (hour,),
    )


async def stage_totals(db: Database, hour: int) -> sqlite3.Row | None:
    """Conversations updated in the period: count, leads, qualified, booked."""
    return await db.fetchone(
        "SELECT coalesce(sum(contacts), 0) AS contacts, coalesce(sum(leads), 0) AS leads,"
        " coalesce(sum(qualified), 0) AS qualified, coalesce(sum(booked), 0) AS booked"
        " FROM stats_conversations WHERE hour >= ?",
        (hour,),
    )


async def wait_histogram(db: Database, hour: int) -> list[tuple[int, int]]:
    """(bucket, answered waits) of the waits that started in the period, by bucket: whole
    days from the day rollup, the hours before the first whole day from the hour rollup."""
    day = -(-hour // 24)
    rows = await db.fetchall(
        "SELECT bucket, sum(n) FROM (SELECT bucket, n FROM stats_waits_day WHERE day >= ?1"
        " UNION ALL SELECT bucket, n FROM stats_waits_hour WHERE hour >= ?2 AND hour < ?1 * 24)"
        " GROUP BY bucket HAVING sum(n) > 0 ORDER BY bucket",
        (day, hour),
    )
    return [(int(r[0]), int(r[1])) for r in rows]


async def messages_per_day(db: Database, hour: int) -> list[sqlite3.Row]:
    """(day number since the epoch (UTC), messages in, messages out)."""
    return await db.fetchall(
        "SELECT hour / 24 AS day, sum(n_in) AS n_in, sum(n_out) AS n_out"
        " FROM stats_messages WHERE hour >= ? GROUP BY day HAVING sum(n_in) + sum(n_out) > 0"
        " ORDER BY day",
        (hour,),
    )


async def refusals(db: Database, hour: int) -> dict[str, int]:
    rows = await db.fetchall(
        "SELECT reason, sum(n) FROM stats_refusals WHERE hour >= ? GROUP BY reason"
        " HAVING sum(n) > 0 ORDER BY 2 DESC, 1",
        (hour,),
    )
    return {r[0]: int(r[1]) for r in rows}


# -- the funnel: the reference scans ----------------------------------------------------------
# The same figures from the rows, for ``since`` = the period's first second. Slow on a large
# database (they read every row of the period, and the waits read the whole history).
# The mid a read receipt names, for the three shapes a stored event can have.
_READ_MID = (
    "coalesce(json_extract(e.raw, '$.entry[0].messaging[0].read.mid'),"
    " json_extract(e.raw, '$.entry[0].standby[0].read.mid'),"
    " json_extract(e.raw, '$.entry[0].changes[0].value.read.mid'))"
)
_MEDIA = (
    "CAST(coalesce(json_extract(e.raw, '$.entry[0].changes[0].value.media.id'),"
    " json_extract(e.raw, '$.entry[0].changes[0].value.media_id')) AS TEXT)"
)
# 'comment:{id}' or 'live:{id}' (the comment event's dedupe key) of a send key that
# contains it (resumed flows keep it in their keys).
_EVENT_OF_KEY = (
    "CASE WHEN instr({k}, 'comment:') > 0 THEN 'comment:' || substr(substr({k},"
    " instr({k}, 'comment:') + 8), 1, instr(substr({k}, instr({k}, 'comment:') + 8) || ':',"
    " ':') - 1)"
    " WHEN instr({k}, ':live:') > 0 THEN 'live:' || substr(substr({k},"
    " instr({k}, ':live:') + 6), 1, instr(substr({k}, instr({k}, ':live:') + 6) || ':',"
    " ':') - 1) END"
)
MESSAGE_KINDS = "('text', 'media', 'template', 'private_reply', 'public_reply')"
# The decision a send key belongs to (the key prefix 'send:{event}:' its first send counts
# as a trigger by): an AI reply, its slots and the AI's fallback are keyed after the AI job,
# 'ai:{event}:{n}', so they join the sends of the decision that asked for them. Migration
# 0023 writes the same expression out in its triggers.
DECISION_OF_KEY = (
    "rtrim(CASE"
    " WHEN {k} LIKE 'send:ai-fallback:%:ai:%'"
    " THEN 'send:' || substr({k}, instr({k}, ':ai:') + 4)"
    " WHEN {k} LIKE 'send:ai:%:slots' THEN 'send:' || substr({k}, 9, length({k}) - 14)"
    " WHEN {k} LIKE 'send:ai:%' THEN 'send:' || substr({k}, 9)"
    " ELSE {k} END, '0123456789')"
)
# A refusal as stats count it (a send of alias s): not the public reply held back because
# the private reply it announces did not go; that one's refusal counts the miss.
REFUSED = ("{s}.state IN ('refused', 'failed')"
           " AND {s}.reason IS NOT 'private_reply_not_sent'")

# Only rows of the partial index events_stats: its exact WHERE term must appear in the query.
_STATS_KINDS = "e.kind IN ('comment', 'live_comment', 'read')"

_SENDS_SQL = f"""
WITH w AS (
    SELECT m.account_id, m.contact_id, max(m.created_at) AS upto
    FROM events e JOIN messages m ON m.mid = {_READ_MID}
    WHERE {_STATS_KINDS} AND e.kind = 'read' AND e.processed_at IS NOT NULL
      AND json_valid(e.raw)
    GROUP BY m.account_id, m.contact_id
), f AS (
    SELECT min(rowid) AS id FROM sends WHERE workflow IS NOT NULL
      AND key NOT LIKE 'send:resume:%' AND instr(key, '#') = 0
    GROUP BY {DECISION_OF_KEY.format(k="key")}
), s AS (
    SELECT s.rowid AS id, s.account_id, s.contact_id, s.workflow, s.sent_by, s.state, s.kind,
           s.message_id, {REFUSED.format(s="s")} AS refused,
           {_EVENT_OF_KEY.format(k="s.key")} AS ev
    FROM sends s WHERE s.created_at >= ?1
)
SELECT s.workflow, s.sent_by,
    (SELECT {_MEDIA} FROM events e WHERE e.dedupe_key = s.ev AND json_valid(e.raw)) AS media,
    coalesce(sum(s.id IN (SELECT id FROM f)), 0) AS triggers,
    coalesce(sum(s.state = 'sent' AND s.kind IN {MESSAGE_KINDS}), 0) AS sent,
    coalesce(sum(s.state = 'sent' AND EXISTS (SELECT 1 FROM messages m
        WHERE m.mid = s.message_id AND m.account_id = s.account_id
          AND m.contact_id = s.contact_id AND m.created_at <= w.upto)), 0) AS read,
    coalesce(sum(s.refused), 0) AS refused,
    coalesce(sum(s.state IN ('pending', 'in_flight')), 0) AS pending
FROM s LEFT JOIN w ON w.account_id = s.account_id AND w.contact_id = s.contact_id
GROUP BY 1, 2, 3
"""


async def send_groups_scan(db: Database, since: float) -> list[sqlite3.Row]:
    return await db.fetchall(_SENDS_SQL, (since,))


async def clicks_by_scan(db: Database, since: float) -> list[sqlite3.Row]:
    return await db.fetchall(
        f"SELECT l.workflow, (SELECT {_MEDIA} FROM events e WHERE json_valid(e.raw) AND"
        f" e.dedupe_key = {_EVENT_OF_KEY.format(k='l.send_key')}) AS media,"
        " count(*) AS clicks"
        " FROM clicks c JOIN links l ON l.code = c.code WHERE c.at >= ? GROUP BY 1, 2",
        (since,),
    )


_LEAD = ("(stage NOT IN ('new') OR EXISTS (SELECT 1 FROM json_each(state, '$.tags')"
         " WHERE value = 'lead'))")
_QUALIFIED = "stage IN ('qualified', 'booked', 'customer')"
_BOOKED = "stage IN ('booked', 'customer')"


async def leads_by_workflow_scan(db: Database, since: float) -> list[sqlite3.Row]:
    return await db.fetchall(
        "SELECT f.key AS workflow, count(*) AS contacts,"
        f" coalesce(sum({_LEAD}), 0) AS leads, coalesce(sum({_QUALIFIED}), 0) AS qualified,"
        f" coalesce(sum({_BOOKED}), 0) AS booked"
        " FROM (SELECT state, coalesce(json_extract(state, '$.stage'), 'new') AS stage"
        "       FROM conversations WHERE updated_at >= ?1) c,"
        " json_each(c.state, '$.fired') f WHERE f.type IN ('integer', 'real')"
        " AND f.value >= ?1 GROUP BY f.key",
        (since,),
    )


async def leads_by_media_scan(db: Database, since: float) -> list[sqlite3.Row]:
    return await db.fetchall(
        "WITH k AS (SELECT e.account_id, e.contact_id, " + _MEDIA + " AS media FROM events e"
        "   WHERE e.received_at >= ? AND e.processed_at IS NOT NULL AND json_valid(e.raw)"
        f"   AND {_STATS_KINDS} AND e.kind != 'read'"
        "   AND e.contact_id IS NOT e.account_id),"  # not the account's own comments
        " c AS (SELECT media, count(*) AS comments FROM k GROUP BY media),"
        " p AS (SELECT DISTINCT media, account_id, contact_id FROM k)"
        " SELECT c.media, c.comments,"
        f" coalesce(sum({_LEAD}), 0) AS leads, coalesce(sum({_QUALIFIED}), 0) AS qualified,"
        f" coalesce(sum({_BOOKED}), 0) AS booked"
        " FROM c JOIN p ON p.media IS c.media"
        " LEFT JOIN (SELECT account_id, contact_id, state,"
        "   coalesce(json_extract(state, '$.stage'), 'new') AS stage FROM conversations) v"
        "   ON v.account_id = p.account_id AND v.contact_id = p.contact_id"
        " WHERE c.media IS NOT NULL GROUP BY c.media, c.comments",
        (since,),
    )


async def stage_totals_scan(db: Database, since: float) -> sqlite3.Row | None:
    return await db.fetchone(
        "SELECT count(*) AS contacts,"
        f" coalesce(sum({_LEAD}), 0) AS leads, coalesce(sum({_QUALIFIED}), 0) AS qualified,"
        f" coalesce(sum({_BOOKED}), 0) AS booked"
        " FROM (SELECT state, coalesce(json_extract(state, '$.stage'), 'new') AS stage"
        "       FROM conversations WHERE updated_at >= ?)",
        (since,),
    )


async def waits_scan(db: Database, since: float) -> list[int]:
    """Answered waits that started at or after ``since``, in tenths of a second: per
    conversation in time order, g counts our messages up to each message; the person's
    messages with the same g are one wait (from the first), answered by our message g + 1."""
    rows = await db.fetchall(
        "WITH o AS (SELECT account_id, contact_id, direction, created_at,"
        "   sum(direction = 'out') OVER (PARTITION BY account_id, contact_id"
        "     ORDER BY created_at, id ROWS UNBOUNDED PRECEDING) AS g FROM messages),"
        " r AS (SELECT account_id, contact_id, g,"
        "   min(created_at) FILTER (WHERE direction = 'in') AS t_in,"
        "   min(created_at) FILTER (WHERE direction = 'out') AS t_out"
        "   FROM o GROUP BY account_id, contact_id, g)"
        " SELECT CAST(round((a.t_out - i.t_in) * 10) AS INTEGER) FROM r i JOIN r a"
        "   ON a.account_id = i.account_id AND a.contact_id = i.contact_id AND a.g = i.g + 1"
        " WHERE i.t_in >= ?",
        (since,),
    )
    return [int(r[0]) for r in rows]


async def messages_per_day_scan(db: Database, since: float) -> list[sqlite3.Row]:
    return await db.fetchall(
        "SELECT CAST(created_at / 86400 AS INTEGER) AS day,"
        " sum(direction = 'in') AS n_in, sum(direction = 'out') AS n_out"
        " FROM messages WHERE created_at >= ? GROUP BY day ORDER BY day",
        (since,),
    )


async def refusals_scan(db: Database, since: float) -> dict[str, int]:
    rows = await db.fetchall(
        "SELECT coalesce(reason, 'unknown'), count(*) FROM sends s"
        f" WHERE {REFUSED.format(s='s')} AND created_at >= ? GROUP BY 1 ORDER BY 2 DESC, 1",
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
