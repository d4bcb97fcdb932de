"""SQL of the AI replies, lead scores and bookings (migration 0004).

Functions taking ``conn`` run inside a transaction the caller holds; the others use the
database's serialised access. Times are unix seconds (UTC).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from instaset.store.db import Database


def shown_stage_sql(account: str, contact: str, state: str) -> str:
    """SQL of the stage every listing shows for a contact (``account``, ``contact`` and
    ``state`` name the columns): the lead stage, as ``instaset leads`` has it (the workflow's
    stage or the one the score and history give, whichever is further along), else the
    workflow's own from the conversation state, else ``new``."""
    return (f"coalesce((SELECT l.stage FROM leads l WHERE l.account_id = {account}"
            f" AND l.contact_id = {contact}), json_extract({state}, '$.stage'), 'new')")


async def _rows(conn: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()
                ) -> list[sqlite3.Row]:
    return list(await conn.execute_fetchall(sql, params))


# -- contacts and context --------------------------------------------------------------------
async def find_contacts(db: Database, ref: str) -> list[sqlite3.Row]:
    """Contacts whose id or username (with or without ``@``) is ``ref``."""
    name = ref.removeprefix("@")
    return await db.fetchall(
        "SELECT * FROM contacts WHERE id = ? OR username = ? COLLATE NOCASE"
        " ORDER BY account_id, id", (ref, name),
    )


async def conversation_row(conn: aiosqlite.Connection, account_id: str, contact_id: str
                           ) -> sqlite3.Row | None:
    rows = await _rows(
        conn,
        "SELECT c.*, k.username FROM conversations c JOIN contacts k"
        " ON k.account_id = c.account_id AND k.id = c.contact_id"
        " WHERE c.account_id = ? AND c.contact_id = ?", (account_id, contact_id),
    )
    return rows[0] if rows else None


# Whether a later message of the thread than the one with mid ?1 (stored after it: a
# greater id) has an AI reply, which read the conversation and so this message too: an
# ai_reply's send (``send:ai:{event}:{n}...``, not refused or failed), an ai_reply draft
# or hand-off of it (``ai:{event}:{n}``), or an ai_reply of it still to run (ready or
# running). A workflow's canned reply to a later message (``send:{event}:{n}``) answers
# that message, not this one (a question, then the keyword "guide": the question still
# gets its answer, see AIReplies.handle). Keys derive
# from the event's dedupe key (automation.py), found through the message's event; an
# ai_reply after a delay has a key of the event that started its workflow too
# (``ai:{event}:{n}:{m}``, see WorkflowAutomation._persist), so it is found the same way; each
# test is a range of a unique index (the unary + keeps the planner off the due-jobs index,
# which would scan every ready job). A typing indicator, a reaction or the fallback
# message (``send:ai-fallback:...``, see AIReplies._give_up) is no reply.
#   Or the message with mid ?1 was unsent since: nothing of theirs is left to answer.
_ANSWERED_LATER = (
    "(EXISTS(SELECT 1 FROM messages u WHERE u.mid = ?1 AND u.deleted_at IS NOT NULL) OR"
    " EXISTS(SELECT 1 FROM messages a JOIN messages m ON m.account_id = a.account_id"
    " AND m.contact_id = a.contact_id AND m.direction = 'in' AND m.id > a.id"
    " JOIN events e ON e.id = m.event_id WHERE a.mid = ?1 AND ("
    " EXISTS(SELECT 1 FROM sends s WHERE s.key > 'send:ai:' || e.dedupe_key || ':'"
    "  AND s.key < 'send:ai:' || e.dedupe_key || ';' AND s.kind NOT IN ('sender_action', 'react')"
    "  AND s.state NOT IN ('refused', 'failed'))"
    " OR EXISTS(SELECT 1 FROM ai_drafts d WHERE d.key > 'ai:' || e.dedupe_key || ':'"
    "  AND d.key < 'ai:' || e.dedupe_key || ';')"
    " OR EXISTS(SELECT 1 FROM jobs j WHERE j.key > 'ai:' || e.dedupe_key || ':'"
    "  AND j.key < 'ai:' || e.dedupe_key || ';' AND j.kind = 'ai_reply'"
    "  AND +j.state IN ('ready', 'running')))))"
)


async def reply_context(db: Database, key: str, account_id: str, contact_id: str,
                        anchor: str | None = None) -> sqlite3.Row | None:
    """:func:`conversation_row` (its ``username`` and ``paused_until``), as ``answered``
    :func:`already_answered` for the ai_reply job ``key``, and as ``answered_later``
    :func:`answered_later` of the message with mid ``anchor`` (0 without one), in one indexed
    statement on the loop-thread connection (``quick``: no thread hand-off); None when the
    conversation does not exist, or its account is disconnected (nothing of it goes to
    Gemini then)."""
    return await db.fetchone(
        "SELECT k.username, c.paused_until, (EXISTS(SELECT 1 FROM sends WHERE key = ?2 OR"
        " key = ?3) OR EXISTS(SELECT 1 FROM ai_drafts WHERE key = ?4)) AS answered,"
        f" (?1 IS NOT NULL AND {_ANSWERED_LATER}) AS answered_later"
        " FROM conversations c JOIN contacts k"
        " ON k.account_id = c.account_id AND k.id = c.contact_id"
        " JOIN accounts a ON a.id = c.account_id AND a.state != 'disconnected'"
        " WHERE c.account_id = ?5 AND c.contact_id = ?6",
        (anchor, f"send:{key}", f"send:{key}:fallback", key, account_id, contact_id),
        quick=True,
    )


async def answered_later(conn: aiosqlite.Connection, anchor: str) -> bool:
    """Whether a later message of the thread of the message with mid ``anchor`` has its
    reply (sent, queued, drafted or handed off), or an ai_reply job of it still to run: a
    reply to ``anchor`` now would answer what that reply answers (see
    :meth:`instaset.ai.feature.AIReplies.handle`)."""
    rows = await _rows(conn, f"SELECT {_ANSWERED_LATER} AS later", (anchor,))
    return bool(rows[0]["later"])


_RECENT_TEXTS = (
    "SELECT * FROM (SELECT id, mid, direction, sent_by, text, created_at FROM messages"
    " WHERE account_id = ? AND contact_id = ? AND text IS NOT NULL AND text != ''"
    " AND deleted_at IS NULL ORDER BY created_at DESC, id DESC LIMIT ?)"
    " ORDER BY created_at, id"
)
_RECENT_TEXTS_UNTIL = (
    "SELECT * FROM (SELECT id, mid, direction, sent_by, text, created_at FROM messages"
    " WHERE account_id = ?1 AND contact_id = ?2 AND text IS NOT NULL AND text != ''"
    " AND deleted_at IS NULL AND id <= coalesce((SELECT id FROM messages WHERE mid = ?3"
    " AND account_id = ?1 AND contact_id = ?2), 9223372036854775807)"
    " ORDER BY created_at DESC, id DESC LIMIT ?4) ORDER BY created_at, id"
)


async def recent_texts(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                       limit: int) -> list[sqlite3.Row]:
    """The last ``limit`` messages with text (not deleted), oldest first."""
    return await _rows(conn, _RECENT_TEXTS, (account_id, contact_id, limit))


async def recent_texts_quick(db: Database, account_id: str, contact_id: str, limit: int,
                             *, until: str | None = None) -> list[sqlite3.Row]:
    """:func:`recent_texts` on the loop-thread connection (an indexed read of ``limit``
    rows of one thread: short enough for the loop); with ``until`` (a mid), the last
    ``limit`` up to that message (all of them when it is not stored)."""
    if until is None:
        return await db.fetchall(_RECENT_TEXTS, (account_id, contact_id, limit), quick=True)
    return await db.fetchall(_RECENT_TEXTS_UNTIL, (account_id, contact_id, until, limit),
                             quick=True)


# Newest first through messages_human_replies (migration 0013): no sort of the history.
HUMAN_REPLY_PAIRS = (
    "SELECT h.text AS reply, (SELECT i.text FROM messages i WHERE"
    " i.account_id = h.account_id AND i.contact_id = h.contact_id AND i.direction = 'in'"
    " AND i.text IS NOT NULL AND i.deleted_at IS NULL AND i.created_at <= h.created_at"
    " ORDER BY i.created_at DESC, i.id DESC LIMIT 1) AS message"
    " FROM messages h WHERE h.account_id = ? AND h.sent_by = 'human'"
    " AND h.text IS NOT NULL AND h.deleted_at IS NULL"
    " ORDER BY h.created_at DESC, h.id DESC LIMIT ?"
)


async def human_reply_pairs(conn: aiosqlite.Connection, account_id: str, limit: int = 500
                            ) -> list[tuple[str, str]]:
    """(message, the creator's own reply) pairs, newest first: each reply the creator typed
    with the contact's last message before it."""
    rows = await _rows(conn, HUMAN_REPLY_PAIRS, (account_id, limit))
    return [(r["message"], r["reply"]) for r in rows if r["message"]]


async def comment_events(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                         limit: int = 50) -> list[str]:
    """Raw envelopes of the contact's latest comments, newest first."""
    rows = await _rows(
        conn,
        "SELECT raw FROM events WHERE account_id = ? AND contact_id = ?"
        " AND kind IN ('comment', 'live_comment') ORDER BY id DESC LIMIT ?",
        (account_id, contact_id, limit),
    )
    return [r["raw"] for r in rows]


async def has_inbound_text(conn: aiosqlite.Connection, account_id: str, contact_id: str, *,
                           other_than: str | None = None) -> bool:
    """Whether the contact has a scored message (as :func:`inbound_messages` lists them)
    other than the one with mid ``other_than``."""
    rows = await _rows(
        conn,
        "SELECT 1 FROM messages WHERE account_id = ? AND contact_id = ? AND direction = 'in'"
        " AND text IS NOT NULL AND deleted_at IS NULL AND mid IS NOT ? LIMIT 1",
        (account_id, contact_id, other_than),
    )
    return bool(rows)


async def inbound_messages(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                           limit: int = 1000) -> list[sqlite3.Row]:
    """The contact's messages (DMs and button taps) with text, oldest first."""
    return await _rows(
        conn,
        "SELECT * FROM (SELECT mid, text, created_at, id FROM messages WHERE account_id = ?"
        " AND contact_id = ? AND direction = 'in' AND text IS NOT NULL AND deleted_at IS NULL"
        " ORDER BY created_at DESC, id DESC LIMIT ?) ORDER BY created_at, id",
        (account_id, contact_id, limit),
    )


# -- drafts and calls ------------------------------------------------------------------------
async def insert_draft(
    conn: aiosqlite.Connection, *, key: str, account_id: str, contact_id: str,
    comment_id: str | None, text: str, intent: str | None, confidence: float | None,
    reason: str, now: float,
) -> bool:
    cur = await conn.execute(
        "INSERT INTO ai_drafts(key, account_id, contact_id, comment_id, text, intent,"
        " confidence, reason, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(key) DO NOTHING",
        (key, account_id, contact_id, comment_id, text, intent, confidence, reason, now, now),
    )
    return cur.rowcount == 1


async def drafts(db: Database, state: str | None = "pending") -> list[sqlite3.Row]:
    if state is None:
        return await db.fetchall("SELECT * FROM ai_drafts ORDER BY created_at, id")
    return await db.fetchall(
        "SELECT * FROM ai_drafts WHERE state = ? ORDER BY created_at, id", (state,)
    )


async def already_answered(conn: aiosqlite.Connection, key: str) -> bool:
    """Whether an ai_reply job with this key already left its effects (a send or a draft)."""
    rows = await _rows(
        conn,
        "SELECT 1 FROM sends WHERE key = ? OR key = ? UNION ALL"
        " SELECT 1 FROM ai_drafts WHERE key = ?", (f"send:{key}", f"send:{key}:fallback", key),
    )
    return bool(rows)


async def fallback_given(conn: aiosqlite.Connection, prefix: str) -> bool:
    """Whether a send keyed ``prefix`` or ``prefix:...`` exists: the AI fallback of one
    contact and day (``send:ai-fallback:{account}:{contact}:{day}``, then the ai_reply job
    it answers: see AIReplies._give_up). A range of the primary key; read in the write
    transaction that would add one, so two failures cannot both send it."""
    rows = await _rows(
        conn,
        "SELECT 1 FROM sends WHERE key = ?1 OR (key >= ?1 || ':' AND key < ?1 || ';') LIMIT 1",
        (prefix,),
    )
    return bool(rows)


_RECORD_CALL = (
    "INSERT INTO ai_calls(job_key, attempt, account_id, contact_id, backend, model, outcome,"
    " prompt_tokens, output_tokens, total_tokens, latency_ms, error, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One model call (a row of ``ai_calls``; one per job key and attempt)."""

    job_key: str
    attempt: int
    account_id: str
    contact_id: str | None
    backend: str
    model: str | None
    outcome: str
    prompt_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None
    latency_ms: float
    error: str | None
    created_at: float

    def params(self) -> tuple[object, ...]:
        return (self.job_key, self.attempt, self.account_id, self.contact_id, self.backend,
                self.model, self.outcome, self.prompt_tokens, self.output_tokens,
                self.total_tokens, self.latency_ms, self.error, self.created_at)


async def insert_call(conn: aiosqlite.Connection, call: CallRecord) -> None:
    """Record ``call`` inside the caller's transaction (with the job's other effects, so a
    finishing job pays for one commit, not two)."""
    await conn.execute(_RECORD_CALL, call.params())


async def save_call(db: Database, call: CallRecord) -> None:
    """Record ``call`` in a write of its own (a call whose job commits nothing now)."""
    await db.execute(_RECORD_CALL, call.params())


async def record_call(
    db: Database, *, job_key: str, attempt: int, account_id: str, contact_id: str | None,
    backend: str, model: str | None, outcome: str, prompt_tokens: int | None,
    output_tokens: int | None, total_tokens: int | None, latency_ms: float,
    error: str | None, now: float,
) -> None:
    """Record a call in a write of its own."""
    await db.execute(
        _RECORD_CALL,
        (job_key, attempt, account_id, contact_id, backend, model, outcome, prompt_tokens,
         output_tokens, total_tokens, latency_ms, error, now),
    )


async def call_stats(db: Database, since: float) -> dict[str, Any]:
    """AI calls since ``since``: count per outcome, tokens, mean latency."""
    rows = await db.fetchall(
        "SELECT outcome, count(*) AS n, coalesce(sum(total_tokens), 0) AS tokens,"
        " avg(latency_ms) AS latency FROM ai_calls WHERE created_at >= ? GROUP BY outcome",
        (since,),
    )
    return {
        "calls": sum(int(r["n"]) for r in rows),
        "tokens": sum(int(r["tokens"]) for r in rows),
        "by_outcome": {r["outcome"]: int(r["n"]) for r in rows},
    }


# -- leads -----------------------------------------------------------------------------------
async def add_lead_fact(
    conn: aiosqlite.Connection, *, key: str, account_id: str, contact_id: str, source: str,
    name: str, value: str | None, evidence: str | None, points: int | None, now: float,
    mid: str | None = None,
) -> None:
    """``mid``: the contact's message the fact was taken from (its unsend takes the value
    back: :func:`instaset.store.unsend.forget_fact_values`)."""
    await conn.execute(
        "INSERT INTO lead_facts(key, account_id, contact_id, source, name, value, evidence,"
        " points, created_at, mid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(key) DO NOTHING",
        (key, account_id, contact_id, source, name, value, evidence, points, now, mid),
    )


async def lead_facts(conn: aiosqlite.Connection, account_id: str, contact_id: str
                     ) -> list[sqlite3.Row]:
    return await _rows(
        conn,
        "SELECT * FROM lead_facts WHERE account_id = ? AND contact_id = ?"
        " ORDER BY created_at, key", (account_id, contact_id),
    )


async def forget_fact_quotes(conn: aiosqlite.Connection, keys: Sequence[str]) -> None:
    """The lead facts ``keys`` lose their evidence (the quote), as retention's rule for
    lead_facts does at the horizon; the fact and its points stay."""
    await conn.execute(
        "UPDATE lead_facts SET evidence = NULL WHERE key IN (SELECT value FROM json_each(?))"
        " AND evidence IS NOT NULL", (json.dumps(list(keys)),),
    )


async def set_lead_reasons(conn: aiosqlite.Connection, account_id: str, contact_id: str,
                           reasons: list[dict[str, Any]]) -> None:
    """Replace a lead's reasons only (a quote taken out): its score, stage, rules and times
    stay, as retention's rule for leads leaves them."""
    await conn.execute(
        "UPDATE leads SET reasons = ? WHERE account_id = ? AND contact_id = ?",
        (json.dumps(reasons, ensure_ascii=False), account_id, contact_id),
    )


async def get_lead(conn: aiosqlite.Connection, account_id: str, contact_id: str
                   ) -> sqlite3.Row | None:
    rows = await _rows(conn, "SELECT * FROM leads WHERE account_id = ? AND contact_id = ?",
                       (account_id, contact_id))
    return rows[0] if rows else None


async def upsert_lead(
    conn: aiosqlite.Connection, *, account_id: str, contact_id: str, score: int, stage: str,
    reasons: list[dict[str, Any]], rules_hash: str, qualified_at: float | None, now: float,
) -> None:
    await conn.execute(
        "INSERT INTO leads(account_id, contact_id, score, stage, reasons, rules_hash,"
        " qualified_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT(account_id, contact_id) DO UPDATE SET score = excluded.score,"
        " stage = excluded.stage, reasons = excluded.reasons, rules_hash = excluded.rules_hash,"
        " qualified_at = coalesce(leads.qualified_at, excluded.qualified_at),"
        " updated_at = excluded.updated_at",
        (account_id, contact_id, score, stage, json.dumps(reasons, ensure_ascii=False),
         rules_hash, qualified_at, now),
    )


async def list_leads(db: Database, stage: str | None = None) -> list[sqlite3.Row]:
    sql = ("SELECT l.*, k.username FROM leads l JOIN contacts k"
           " ON k.account_id = l.account_id AND k.id = l.contact_id")
    if stage is None:
        return await db.fetchall(sql + " ORDER BY l.score DESC, l.updated_at DESC")
    return await db.fetchall(sql + " WHERE l.stage = ? ORDER BY l.score DESC, l.updated_at DESC",
                             (stage,))


async def contacts_to_rescore(db: Database, rules_hash: str | None) -> list[sqlite3.Row]:
    """Contacts who wrote to an account or have a score: all of them (``rules_hash``
    None), or only those without a score under ``rules_hash`` (scored under other rules, or
    never). A scored contact whose messages all left the history (retention) is one of
    them: a rule removed since must lose its points there too."""
    sql = ("SELECT m.account_id, m.contact_id FROM messages m"
           " LEFT JOIN leads l ON l.account_id = m.account_id AND l.contact_id = m.contact_id"
           " WHERE m.direction = 'in'")
    if rules_hash is None:
        return await db.fetchall(sql + " UNION SELECT account_id, contact_id FROM leads"
                                 " ORDER BY 1, 2")
    return await db.fetchall(
        sql + " AND (l.rules_hash IS NULL OR l.rules_hash != ?1) UNION SELECT account_id,"
        " contact_id FROM leads WHERE rules_hash != ?1 ORDER BY 1, 2", (rules_hash,),
    )


# -- bookings --------------------------------------------------------------------------------
async def busy_between(conn: aiosqlite.Connection, account_id: str, start: float, end: float
                       ) -> list[tuple[float, float]]:
    rows = await _rows(
        conn,
        "SELECT start_at, end_at FROM bookings WHERE account_id = ? AND status = 'booked'"
        " AND end_at > ? AND start_at < ? ORDER BY start_at", (account_id, start, end),
    )
    return [(float(r["start_at"]), float(r["end_at"])) for r in rows]


async def booking_by_key(conn: aiosqlite.Connection, key: str) -> sqlite3.Row | None:
    rows = await _rows(conn, "SELECT * FROM bookings WHERE key = ?", (key,))
    return rows[0] if rows else None


async def insert_booking(
    conn: aiosqlite.Connection, *, key: str, account_id: str, contact_id: str, start_at: float,
    end_at: float, title: str, now: float,
) -> bool:
    """Book the slot; False when it is taken (the unique index) or the key was used."""
    try:
        cur = await conn.execute(
            "INSERT INTO bookings(key, account_id, contact_id, start_at, end_at, title,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, account_id, contact_id, start_at, end_at, title, now, now),
        )
    except sqlite3.IntegrityError:
        return False
    return cur.rowcount == 1


async def has_booking(conn: aiosqlite.Connection, account_id: str, contact_id: str) -> bool:
    rows = await _rows(
        conn, "SELECT 1 FROM bookings WHERE account_id = ? AND contact_id = ?"
        " AND status = 'booked' LIMIT 1", (account_id, contact_id),
    )
    return bool(rows)


async def list_bookings(db: Database, *, since: float | None = None) -> list[sqlite3.Row]:
    sql = ("SELECT b.*, k.username FROM bookings b LEFT JOIN contacts k"
           " ON k.account_id = b.account_id AND k.id = b.contact_id")
    if since is None:
        return await db.fetchall(sql + " ORDER BY b.start_at, b.id")
    return await db.fetchall(sql + " WHERE b.end_at >= ? ORDER BY b.start_at, b.id", (since,))
