"""SQL for contacts the creator can correct, cached user profiles, and catch-up bookkeeping.

Functions taking ``conn`` run inside a transaction the caller holds (``Database.tx()``), so a
correction and its change-log row, or recovered events, their ``process_event`` jobs and their
recovered marks, commit together.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from instaset.store import history, jobs
from instaset.store.ai import shown_stage_sql
from instaset.store.db import Database

# -- contacts --------------------------------------------------------------------------------
_CONTACT_SELECT = (
    "SELECT k.account_id, k.id, k.username, k.name, k.first_seen_at, k.updated_at,"
    " c.state, c.last_inbound_at, c.last_message_at, c.paused_until, c.unread,"
    " p.profile_pic, p.follower_count, p.is_user_follow_business, p.is_business_follow_user,"
    " p.fetched_at AS profile_fetched_at, p.error AS profile_error,"
    f" {shown_stage_sql('k.account_id', 'k.id', 'c.state')} AS stage"
    " FROM contacts k"
    " LEFT JOIN conversations c ON c.account_id = k.account_id AND c.contact_id = k.id"
    " LEFT JOIN contact_profiles p ON p.account_id = k.account_id AND p.contact_id = k.id"
)


async def list_contacts(db: Database, account_id: str | None = None) -> list[sqlite3.Row]:
    """Every contact (with its conversation and cached profile), most recently active first."""
    where, params = ("", ()) if account_id is None else (" WHERE k.account_id = ?", (account_id,))
    return await db.fetchall(
        _CONTACT_SELECT + where
        + " ORDER BY coalesce(c.last_message_at, k.first_seen_at) DESC, k.account_id, k.id",
        params,
    )


async def get_contact(db: Database, account_id: str, contact_id: str) -> sqlite3.Row | None:
    return await db.fetchone(
        _CONTACT_SELECT + " WHERE k.account_id = ? AND k.id = ?", (account_id, contact_id),
        quick=True,
    )


async def username_in(conn: aiosqlite.Connection, account_id: str, contact_id: str
                      ) -> str | None:
    """The contact's stored @username (without the @), or None when unknown."""
    rows = list(await conn.execute_fetchall(
        "SELECT username FROM contacts WHERE account_id = ? AND id = ?", (account_id, contact_id)))
    return str(rows[0][0]) if rows and rows[0][0] else None


async def contact_exists(db: Database, account_id: str, contact_id: str) -> bool:
    """Whether the contact is stored (an indexed lookup on the worker's hot path)."""
    return await db.fetchone(
        "SELECT 1 FROM contacts WHERE account_id = ? AND id = ?", (account_id, contact_id),
        quick=True,
    ) is not None


async def known_users(db: Database, account_id: str) -> list[sqlite3.Row]:
    """``id``, ``username`` and ``last_inbound_at`` (None when the contact never wrote) of
    every contact stored for ``account_id``: what a restarted sandbox needs to know its users
    and their messaging windows."""
    return await db.fetchall(
        "SELECT k.id, k.username, c.last_inbound_at FROM contacts k"
        " LEFT JOIN conversations c ON c.account_id = k.account_id AND c.contact_id = k.id"
        " WHERE k.account_id = ?",
        (account_id,),
    )


async def find_contacts(
    db: Database, ref: str, account_id: str | None = None
) -> list[sqlite3.Row]:
    """Contacts whose IGSID is ``ref``, else whose username is ``ref`` (case-insensitive, a
    leading ``@`` ignored). Several rows when the same person wrote to several accounts."""
    acct = "" if account_id is None else " AND account_id = ?"
    extra: tuple[str, ...] = () if account_id is None else (account_id,)
    rows = await db.fetchall(
        "SELECT account_id, id FROM contacts WHERE id = ?" + acct, (ref, *extra)
    )
    if not rows:
        name = ref.removeprefix("@")
        rows = await db.fetchall(
            "SELECT account_id, id FROM contacts WHERE lower(username) = lower(?)" + acct,
            (name, *extra),
        )
    return rows


async def get_state_row(
    conn: aiosqlite.Connection, account_id: str, contact_id: str
) -> sqlite3.Row | None:
    """The conversation row as :func:`instaset.automation.load_state` reads it."""
    return await history.get_conversation(conn, account_id, contact_id)


async def shown_stage_in(conn: aiosqlite.Connection, account_id: str, contact_id: str) -> str:
    """The stage every listing shows for the contact (:func:`~instaset.store.ai.
    shown_stage_sql`), inside the caller's transaction."""
    rows = list(await conn.execute_fetchall(
        f"SELECT {shown_stage_sql('?1', '?2', 'c.state')} FROM conversations c"
        " WHERE c.account_id = ?1 AND c.contact_id = ?2", (account_id, contact_id),
    ))
    return str(rows[0][0]) if rows else "new"


async def ensure_conversation(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, now: float
) -> None:
    await conn.execute(
        "INSERT INTO conversations(account_id, contact_id, updated_at) VALUES (?, ?, ?)"
        " ON CONFLICT DO NOTHING",
        (account_id, contact_id, now),
    )


async def set_state(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, state: str, now: float
) -> None:
    await conn.execute(
        "UPDATE conversations SET state = ?, updated_at = ?"
        " WHERE account_id = ? AND contact_id = ?",
        (state, now, account_id, contact_id),
    )


async def set_contact_columns(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, now: float,
    values: Mapping[str, str | None],
) -> None:
    """Update ``name`` and/or ``username`` of a contact."""
    cols = [c for c in ("name", "username") if c in values]
    if not cols:
        return
    sets = ", ".join(f"{c} = ?" for c in cols)
    await conn.execute(
        f"UPDATE contacts SET {sets}, updated_at = ? WHERE account_id = ? AND id = ?",
        (*(values[c] for c in cols), now, account_id, contact_id),
    )


async def record_change(
    conn: aiosqlite.Connection, *, account_id: str, contact_id: str, field: str, action: str,
    old: str | None, new: str | None, by: str, now: float,
) -> None:
    await conn.execute(
        "INSERT INTO contact_changes(account_id, contact_id, field, action, old_value,"
        " new_value, changed_by, changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (account_id, contact_id, field, action, old, new, by, now),
    )


async def changes(db: Database, account_id: str, contact_id: str) -> list[sqlite3.Row]:
    return await db.fetchall(
        "SELECT * FROM contact_changes WHERE account_id = ? AND contact_id = ?"
        " ORDER BY changed_at, id",
        (account_id, contact_id),
    )


async def corrected_by_creator(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, field: str
) -> bool:
    """Whether the creator ever corrected ``field`` (a profile refresh must not undo it)."""
    rows = list(await conn.execute_fetchall(
        "SELECT 1 FROM contact_changes WHERE account_id = ? AND contact_id = ? AND field = ?"
        " AND changed_by != 'profile' LIMIT 1",
        (account_id, contact_id, field),
    ))
    return bool(rows)


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" for _ in items)


# -- profiles --------------------------------------------------------------------------------
async def profiles_due(
    db: Database, *, now: float, refresh_seconds: float, limit: int
) -> list[sqlite3.Row]:
    """Contacts of connected accounts who messaged the account (so Meta allows a profile
    lookup) and whose profile was never fetched or is older than ``refresh_seconds``."""
    return await db.fetchall(
        "SELECT k.account_id, k.id FROM contacts k"
        " JOIN accounts a ON a.id = k.account_id AND a.state = 'connected'"
        " JOIN conversations c ON c.account_id = k.account_id AND c.contact_id = k.id"
        " LEFT JOIN contact_profiles p ON p.account_id = k.account_id AND p.contact_id = k.id"
        " WHERE c.last_inbound_at IS NOT NULL AND (p.fetched_at IS NULL OR p.fetched_at < ?)"
        " ORDER BY p.fetched_at IS NOT NULL, p.fetched_at, k.first_seen_at LIMIT ?",
        (now - refresh_seconds, limit),
    )


@dataclass(frozen=True, slots=True)
class Profile:
    """What the User Profile API said about a contact (``None`` where it said nothing)."""

    name: str | None = None
    username: str | None = None
    profile_pic: str | None = None
    follower_count: int | None = None
    is_user_follow_business: bool | None = None
    is_business_follow_user: bool | None = None


async def save_profile(
    conn: aiosqlite.Connection, account_id: str, contact_id: str, profile: Profile | None,
    now: float, error: str | None = None,
) -> None:
    """Store the lookup's outcome: the profile, or ``error`` with the previous profile kept."""
    if profile is None:
        await conn.execute(
            "INSERT INTO contact_profiles(account_id, contact_id, fetched_at, error)"
            " VALUES (?, ?, ?, ?) ON CONFLICT(account_id, contact_id) DO UPDATE SET"
            " fetched_at = excluded.fetched_at, error = excluded.error",
            (account_id, contact_id, now, error),
        )
        return
    await conn.execute(
        "INSERT INTO contact_profiles(account_id, contact_id, name, username, profile_pic,"
        " follower_count, is_user_follow_business, is_business_follow_user, fetched_at, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT(account_id, contact_id) DO UPDATE"
        " SET name = excluded.name, username = excluded.username,"
        " profile_pic = excluded.profile_pic, follower_count = excluded.follower_count,"
        " is_user_follow_business = excluded.is_user_follow_business,"
        " is_business_follow_user = excluded.is_business_follow_user,"
        " fetched_at = excluded.fetched_at, error = NULL",
        (account_id, contact_id, profile.name, profile.username, profile.profile_pic,
         profile.follower_count, _bit(profile.is_user_follow_business),
         _bit(profile.is_business_follow_user), now),
    )


def _bit(value: bool | None) -> int | None:
    return None if value is None else int(value)


# -- catch-up --------------------------------------------------------------------------------
async def connected_accounts(db: Database) -> list[sqlite3.Row]:
    return await db.fetchall(
        "SELECT * FROM accounts WHERE state = 'connected' ORDER BY created_at, id"
    )


async def get_check(db: Database, account_id: str) -> sqlite3.Row | None:
    return await db.fetchone(
        "SELECT * FROM catchup_accounts WHERE account_id = ?", (account_id,)
    )


async def save_check(
    conn: aiosqlite.Connection, account_id: str, *, checked_at: float,
    subscribed_at: float | None = None, resubscribed_at: float | None = None,
) -> None:
    """Record a periodic check; ``subscribed_at``/``resubscribed_at`` only move when given."""
    await conn.execute(
        "INSERT INTO catchup_accounts(account_id, checked_at, subscribed_at, resubscribed_at)"
        " VALUES (?, ?, ?, ?) ON CONFLICT(account_id) DO UPDATE SET"
        " checked_at = max(checked_at, excluded.checked_at),"
        " subscribed_at = coalesce(excluded.subscribed_at, subscribed_at),"
        " resubscribed_at = coalesce(excluded.resubscribed_at, resubscribed_at)",
        (account_id, checked_at, subscribed_at, resubscribed_at),
    )


async def mark_backfilled(conn: aiosqlite.Connection, account_id: str, until: float) -> None:
    await conn.execute(
        "INSERT INTO catchup_accounts(account_id, checked_at, backfilled_at) VALUES (?, ?, ?)"
        " ON CONFLICT(account_id) DO UPDATE SET"
        " backfilled_at = max(coalesce(backfilled_at, 0), excluded.backfilled_at)",
        (account_id, until, until),
    )


async def last_event_at(db: Database, account_id: str) -> float | None:
    row = await db.fetchone(
        "SELECT max(received_at) FROM events WHERE account_id = ?", (account_id,)
    )
    return float(row[0]) if row is not None and row[0] is not None else None


async def start_run(
    conn: aiosqlite.Connection, account_id: str, reason: str, since: float, now: float
) -> int:
    cur = await conn.execute(
        "INSERT INTO catchup_runs(account_id, reason, since, started_at, progressed_at)"
        " VALUES (?, ?, ?, ?, ?)",
        (account_id, reason, since, now, now),
    )
    assert cur.lastrowid is not None
    return int(cur.lastrowid)


async def active_run(conn: aiosqlite.Connection, account_id: str) -> sqlite3.Row | None:
    """The account's unfinished run (the newest, should an older database hold several)."""
    rows = await conn.execute_fetchall(
        "SELECT * FROM catchup_runs WHERE account_id = ? AND finished_at IS NULL"
        " ORDER BY started_at DESC, id DESC LIMIT 1",
        (account_id,),
    )
    return next(iter(rows), None)


async def restart_run(
    conn: aiosqlite.Connection, run_id: int, *, reason: str, since: float, now: float
) -> None:
    """Give an unfinished run a new generation: ``started_at`` becomes ``now`` (the jobs of
    the previous generation, fenced on it, stop), ``since`` and ``reason`` are the union of
    the old and the new gap. Its counters keep what was recovered so far."""
    await conn.execute(
        "UPDATE catchup_runs SET reason = ?, since = min(since, ?), started_at = ?,"
        " progressed_at = ? WHERE id = ? AND finished_at IS NULL",
        (reason, since, now, now, run_id),
    )


async def close_stale_runs(conn: aiosqlite.Connection, account_id: str, keep: int,
                           now: float) -> float | None:
    """Finish every other unfinished run of the account (left by versions that stacked
    them) as replaced by ``keep``; returns the earliest ``since`` among them (None when there
    were none), for ``keep`` to cover."""
    rows = await conn.execute_fetchall(
        "UPDATE catchup_runs SET finished_at = ?, error = 'replaced by run ' || ?"
        " WHERE account_id = ? AND finished_at IS NULL AND id != ? RETURNING since",
        (now, keep, account_id, keep),
    )
    await conn.execute(
        "DELETE FROM catchup_walked WHERE run_id IN (SELECT id FROM catchup_runs"
        " WHERE account_id = ? AND finished_at IS NOT NULL)", (account_id,))
    found = [float(r[0]) for r in rows]
    return min(found) if found else None


async def has_live_job(conn: aiosqlite.Connection, run_id: int) -> bool:
    """Whether a ``catchup_backfill`` job of the run is still ready or running (its keys are
    ``catchup:{run_id}:...``)."""
    return await jobs.pending_under(conn, f"catchup:{run_id}:", "catchup_backfill")


async def failures_since_success(db: Database, account_id: str) -> sqlite3.Row:
    """The account's failed runs that started after its last successful one: ``n`` (0 when
    none), ``since`` (the earliest gap they left) and ``last_at`` (when the latest ended).
    Runs closed as replaced are not failures (their replacement covers them)."""
    row = await db.fetchone(
        "SELECT count(*) AS n, min(since) AS since, max(finished_at) AS last_at"
        " FROM catchup_runs WHERE account_id = ?1 AND finished_at IS NOT NULL"
        " AND error IS NOT NULL AND error NOT LIKE 'replaced by run %'"
        " AND started_at > coalesce((SELECT max(started_at) FROM catchup_runs"
        "  WHERE account_id = ?1 AND finished_at IS NOT NULL AND error IS NULL), 0)",
        (account_id,),
    )
    assert row is not None
    return row


async def latest_runs(db: Database) -> list[sqlite3.Row]:
    """The newest run of every account that has one (with the account's username)."""
    return await db.fetchall(
        "SELECT r.*, a.username FROM catchup_runs r LEFT JOIN accounts a ON a.id = r.account_id"
        " WHERE r.id = (SELECT id FROM catchup_runs r2 WHERE r2.account_id = r.account_id"
        "  ORDER BY r2.started_at DESC, r2.id DESC LIMIT 1)"
        " ORDER BY r.account_id"
    )


_CURRENT = ("EXISTS (SELECT 1 FROM catchup_runs WHERE id = ?1 AND started_at = ?2"
            " AND finished_at IS NULL)")


async def is_current(conn: aiosqlite.Connection, run_id: int, generation: float) -> bool:
    """Whether the run is unfinished and still at this generation (not restarted since)."""
    rows = await conn.execute_fetchall(f"SELECT {_CURRENT}", (run_id, generation))
    return bool(next(iter(rows))[0])


async def walk_state(db: Database, run_id: int, generation: float, conversation_id: str
                     ) -> tuple[bool, bool]:
    """Before a conversation's calls, in one read: whether the run is still at this
    generation (:func:`is_current`), and whether this generation has walked the
    conversation to its end."""
    row = await db.fetchone(
        f"SELECT {_CURRENT}, EXISTS (SELECT 1 FROM catchup_walked WHERE run_id = ?1"
        " AND conversation_id = ?3 AND generation = ?2)", (run_id, generation, conversation_id))
    assert row is not None
    return bool(row[0]), bool(row[1])


async def touch_run(db: Database, run_id: int, now: float) -> None:
    """Record that the run is being walked (``progressed_at``) while it makes no progress
    (a wait for ingest)."""
    async with db.tx() as conn:
        await conn.execute("UPDATE catchup_runs SET progressed_at = ? WHERE id = ?"
                           " AND finished_at IS NULL", (now, run_id))


async def add_progress(
    conn: aiosqlite.Connection, run_id: int, *, now: float, calls: int = 0,
    conversations: int = 0, recovered: int = 0, unavailable: int = 0,
) -> None:
    await conn.execute(
        "UPDATE catchup_runs SET api_calls = api_calls + ?, conversations = conversations + ?,"
        " recovered = recovered + ?, unavailable = unavailable + ?, progressed_at = ?"
        " WHERE id = ? AND finished_at IS NULL",
        (calls, conversations, recovered, unavailable, now, run_id),
    )


async def finish_run(
    conn: aiosqlite.Connection, run_id: int, now: float, error: str | None = None, *,
    generation: float | None = None,
) -> bool:
    """Mark the run finished; False when it already was (a redelivered job) or, with
    ``generation``, when the run was restarted since (a newer generation owns it)."""
    fence, params = ("", ()) if generation is None else (" AND started_at = ?", (generation,))
    cur = await conn.execute(
        "UPDATE catchup_runs SET finished_at = ?, error = ? WHERE id = ? AND finished_at IS NULL"
        + fence,
        (now, error, run_id, *params),
    )
    if cur.rowcount != 1:
        return False
    await conn.execute("DELETE FROM catchup_walked WHERE run_id = ?", (run_id,))
    return True


async def mark_walked(conn: aiosqlite.Connection, run_id: int, generation: float,
                      conversation_id: str, unavailable: int) -> tuple[int, int]:
    """Record that this generation of the run walked the conversation to its end, with
    ``unavailable`` missed messages it could not read back. Returns what the run's counters
    gain: (1, ``unavailable``) the first time the run walks it; after a restart in place,
    (0, what is unreadable beyond what was counted then)."""
    rows = await conn.execute_fetchall(
        "SELECT unavailable FROM catchup_walked WHERE run_id = ? AND conversation_id = ?",
        (run_id, conversation_id))
    counted = next((int(r[0]) for r in rows), None)
    await conn.execute(
        "INSERT INTO catchup_walked(run_id, conversation_id, generation, unavailable)"
        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT(run_id, conversation_id) DO UPDATE SET"
        " generation = ?3, unavailable = max(unavailable, ?4)",
        (run_id, conversation_id, generation, unavailable))
    if counted is None:
        return 1, unavailable
    return 0, max(0, unavailable - counted)


async def get_run(db: Database, run_id: int) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM catchup_runs WHERE id = ?", (run_id,))


async def recent_runs(db: Database, limit: int = 20) -> list[sqlite3.Row]:
    return await db.fetchall(
        "SELECT * FROM catchup_runs ORDER BY started_at DESC, id DESC LIMIT ?", (limit,)
    )


async def known_mids(db: Database, mids: Sequence[str]) -> set[str]:
    """The message ids among ``mids`` that instaset already has: in the history, as a
    stored event (or one still in the staging table), or as the answer to one of its own
    sends."""
    found: set[str] = set()
    for chunk in _chunks(list(mids)):
        marks = _marks(chunk)
        rows = await db.fetchall(
            f"SELECT mid FROM messages WHERE mid IN ({marks})"
            f" UNION SELECT substr(dedupe_key, 5) FROM events WHERE dedupe_key IN ({marks})"
            f" UNION SELECT substr(dedupe_key, 5) FROM staged_events WHERE dedupe_key IN ({marks})"
            f" UNION SELECT message_id FROM sends WHERE message_id IN ({marks})",
            [*chunk, *(f"msg:{m}" for m in chunk), *(f"msg:{m}" for m in chunk), *chunk],
        )
        found.update(str(r[0]) for r in rows)
    return found


@dataclass(frozen=True, slots=True)
class RecoveredRow:
    """One recovered event, shaped like an ingested webhook item."""

    dedupe_key: str
    account_id: str
    kind: str
    contact_id: str | None
    occurred_at: float
    raw: str
    mid: str
    username: str | None = None  # from the conversation's participants


_INSERT_EVENT = (
    "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at, received_at, raw)"
    " SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7"
    " WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?2 AND state != 'disconnected')"
    " ON CONFLICT(dedupe_key) DO NOTHING"
)


async def insert_recovered(
    conn: aiosqlite.Connection, rows: Sequence[RecoveredRow], *, run_id: int | None,
    now: float, max_attempts: int,
) -> int:
    """Store recovered events exactly as webhook ingest does (same dedupe key, same
    ``process_event`` job key), each with its recovered mark. A key already stored (the
    webhook arrived after all) inserts nothing. Returns how many events were new.
    The caller moves staged events first, in the same transaction (``ingest.move_staged``):
    a staged webhook is not in ``events`` yet, so its key would be recovered again (a
    poorer copy, counted as recovered) and take an ``events.id`` before messages that
    arrived earlier."""
    new = 0
    for r in rows:
        cur = await conn.execute(
            _INSERT_EVENT,
            (r.dedupe_key, r.account_id, r.kind, r.contact_id, r.occurred_at, now, r.raw),
        )
        if cur.rowcount != 1 or cur.lastrowid is None:
            continue
        new += 1
        event_id = int(cur.lastrowid)
        await conn.execute(
            "INSERT INTO jobs(kind, key, payload, run_at, max_attempts, created_at)"
            " VALUES ('process_event', ?, json_object('event_id', ?), ?, ?, ?)"
            " ON CONFLICT(key) DO NOTHING",
            (f"event:{r.dedupe_key}", event_id, now, max_attempts, now),
        )
        await conn.execute(
            "INSERT INTO recovered_events(event_id, run_id, account_id, contact_id, mid,"
            " username, recovered_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event_id, run_id, r.account_id, r.contact_id, r.mid, r.username, now),
        )
    return new


async def recovered_by_contact(db: Database, run_id: int) -> list[sqlite3.Row]:
    """Per contact of a run: how many events were recovered, and a username if known."""
    return await db.fetchall(
        "SELECT r.contact_id, max(r.username) AS username, count(*) AS n"
        " FROM recovered_events r WHERE r.run_id = ? GROUP BY r.contact_id"
        " ORDER BY min(r.event_id)",
        (run_id,),
    )
