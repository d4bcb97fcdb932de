"""The bulk purger's mechanics: foreign keys it applies itself, rows out of time order, the
kept part of a table, tables without rowid, and a write lock held by another connection."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from instaset import retention
from instaset.store import history
from instaset.store.db import Database, open_database
from instaset.store.retention import ChildKey, Purger, Rule, child_keys
from tests.test_purge import base_counts

DAY = 86400.0
NOW = 1_800_000_000.0
OLD = NOW - 100 * DAY
A1 = "17841400000000001"


async def add_event(db: Database, key: str, at: float, *, processed: bool = True) -> int:
    async with db.tx() as conn:
        cur = await conn.execute(
            "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
            " received_at, processed_at, raw) VALUES (?, ?, 'message', 'c1', ?, ?, ?, '{}')",
            (key, A1, at, at, at if processed else None))
        assert cur.lastrowid is not None
        return cur.lastrowid


async def add_message(db: Database, mid: str, at: float, event_id: int | None = None) -> None:
    async with db.tx() as conn:
        await history.insert_message(conn, account_id=A1, contact_id="c1", mid=mid,
                                     direction="in", sent_by="contact", text="hi",
                                     attachments=[], created_at=at, event_id=event_id)


async def scalar(db: Database, sql: str) -> object:
    row = await db.fetchone(sql)
    assert row is not None
    return row[0]


async def test_references_to_deleted_events_follow_their_on_delete(db: Database) -> None:
    """The purger deletes events with SQLite's key enforcement off and applies the ON DELETE
    actions itself: a kept message pointing at an old event loses the link (SET NULL), the
    record of a recovered event goes with it (CASCADE), and the file has no dangling key."""
    await history.upsert_account(db, A1, username="creator", now=1.0)
    old_event = await add_event(db, "msg:old", OLD)
    kept_event = await add_event(db, "msg:kept", NOW - DAY)
    await add_message(db, "m-recent", NOW - DAY, old_event)  # recent row, old event
    await add_message(db, "m-kept", NOW - DAY, kept_event)
    async with db.tx() as conn:
        await conn.executemany(
            "INSERT INTO recovered_events(event_id, account_id, contact_id, mid, recovered_at)"
            " VALUES (?, ?, 'c1', ?, ?)", [(old_event, A1, "m-recent", OLD),
                                          (kept_event, A1, "m-kept", NOW)])
    report = await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
    assert report.counts == {"events": 1}
    rows = await db.fetchall("SELECT mid, event_id FROM messages ORDER BY mid")
    assert [tuple(r) for r in rows] == [("m-kept", kept_event), ("m-recent", None)]
    assert await scalar(db, "SELECT group_concat(event_id) FROM recovered_events") == str(
        kept_event)
    assert await db.fetchall("PRAGMA foreign_key_check") == []


def test_child_keys_only_takes_actions_it_can_apply() -> None:
    fks = {"messages": [(0, "events", "event_id", "id", "SET NULL")],
           "recovered_events": [(0, "events", "event_id", "id", "CASCADE")],
           "events": []}
    pk = {"events": "id", "messages": "id", "recovered_events": "event_id"}
    assert child_keys(fks, pk, "events") == [
        ChildKey("messages", "event_id", "rowid", "SET NULL"),
        ChildKey("recovered_events", "event_id", "rowid", "CASCADE")]
    assert child_keys(fks, pk, "messages") == []  # nothing points at messages
    # RESTRICT / NO ACTION must fail the delete: left to SQLite (None = keys on).
    assert child_keys({**fks, "audit": [(0, "events", "event_id", None, "NO ACTION")]},
                      pk, "events") is None
    # A composite key, and a cascade into a table that has children of its own.
    assert child_keys({"t": [(0, "events", "a", "x", "CASCADE"),
                             (0, "events", "b", "y", "CASCADE")]}, pk, "events") is None
    assert child_keys({**fks, "notes": [(0, "recovered_events", "e", None, "CASCADE")]},
                      pk, "events") is None


async def test_old_rows_after_the_kept_part_are_found(db: Database) -> None:
    """Rowids only roughly follow time: an old row written late (an import, a backfill)
    sits after the recent ones. The walk reaches it (reads across the kept part) and a
    second run finds nothing."""
    await add_message(db, "m-0", OLD)
    for i in range(600):
        await add_message(db, f"r-{i}", NOW - DAY)
    await add_message(db, "m-late", OLD)
    for i in range(50):
        await add_message(db, f"s-{i}", NOW - DAY)
    report = await retention.purge_older_than(db, NOW - 90 * DAY, NOW, batch=100)
    assert base_counts(report.counts) == {"messages": 2}
    assert await scalar(db, "SELECT count(*) FROM messages WHERE mid IN ('m-0', 'm-late')") == 0
    assert await scalar(db, "SELECT count(*) FROM messages") == 650
    assert (await retention.purge_older_than(db, NOW - 90 * DAY, NOW, batch=100)).counts == {}


async def test_a_deadline_stops_between_batches_and_the_next_run_continues(db: Database
                                                                          ) -> None:
    for i in range(3000):
        await add_message(db, f"m-{i}", OLD)
    first = await retention.purge_older_than(db, NOW - 90 * DAY, NOW, batch=1000,
                                             deadline=0.0, clock=lambda: 1.0)
    assert not first.finished and base_counts(first.counts) == {"messages": 1000}
    rest = await retention.purge_older_than(db, NOW - 90 * DAY, NOW)
    assert rest.finished and base_counts(rest.counts) == {"messages": 2000}


async def test_erasure_sweeps_a_table_without_rowid(db: Database) -> None:
    async with db.tx() as conn:
        await conn.execute("CREATE TABLE x_notes (account_id TEXT NOT NULL, contact_id TEXT"
                           " NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (account_id,"
                           " contact_id, n)) WITHOUT ROWID")
        # Rows of a person with no contact row: only the sweep after the contacts sees them.
        await conn.executemany("INSERT INTO x_notes VALUES (?, 'ghost', ?)",
                               [(A1, i) for i in range(30)])
    report = await retention.purge_all(db, batch=7)
    assert report.counts == {"x_notes": 30}
    assert await scalar(db, "SELECT count(*) FROM x_notes") == 0


async def test_a_batch_waits_for_a_lock_held_elsewhere(tmp_path: Path) -> None:
    """Another process holding the write lock: the purger polls for it (its own busy loop)
    and writes as soon as it is free; it never fails with "database is locked"."""
    path = tmp_path / "held.db"
    db = await open_database(path, synchronous="NORMAL")
    other = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        for i in range(20):
            await add_message(db, f"m-{i}", OLD)
        other.execute("BEGIN IMMEDIATE")
        async with Purger(db, cache_kib=1024) as purger:
            rule = Rule("messages", "created_at < ?")
            write = asyncio.ensure_future(purger.write_range(rule, (NOW - 90 * DAY,), 0, 10**6))
            await asyncio.sleep(0.8)  # longer than one BEGIN_WAIT: the retry path runs too
            assert not write.done()
            other.execute("COMMIT")
            n, held = await write
        assert n == 20 and held >= 0.0
    finally:
        other.close()
        await db.close()
