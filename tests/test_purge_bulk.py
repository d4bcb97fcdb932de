"""The bulk purge (keep the few rows, empty the table, put them back): it must leave exactly
the database the batched purge leaves, rowids, foreign keys, triggers and stats included,
and step aside for tables it cannot handle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from instaset import retention
from instaset.store import history
from instaset.store.db import Database, open_database
from instaset.store.retention import Purger, Rule
from tests.test_purge import A1, A2, DAY, NOW, seed

HORIZON = NOW - 90 * DAY


async def history_db(path: Path) -> None:
    """A history where most rows are old, with every case the policy distinguishes: old and
    recent rows per table, unprocessed events and ready jobs (kept whatever their age), an
    unprocessed event whose job is dead (it goes),
    pending sends, a recent message pointing at an old event (SET NULL), recovered events
    (CASCADE), an unsent message, stats rollups written by the triggers."""
    db = await open_database(path)
    try:
        for i in range(12):
            await seed(db, A1 if i % 3 else A2, f"c{i}", NOW - (100 + i) * DAY, n=4)
        for i in range(3):
            await seed(db, A1, f"c{i}", NOW - (2 + i) * DAY, n=2, tag="r")
        async with db.tx() as conn:
            old = NOW - 120 * DAY
            cur = await conn.execute(
                "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
                " received_at, processed_at, raw) VALUES ('msg:late', ?, 'message', 'c1', ?,"
                " ?, NULL, '{}')", (A1, old, old))  # old but never processed: kept
            await conn.execute(
                "INSERT INTO jobs(kind, key, payload, state, run_at, created_at)"
                " VALUES ('process_event', 'event:msg:late', '{}', 'ready', ?, ?)", (old, old))
            # Old, never processed, its job dead-lettered: nothing will process it, it goes.
            await conn.execute(
                "INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at,"
                " received_at, processed_at, raw) VALUES ('msg:poison', ?, 'message', 'c2', ?,"
                " ?, NULL, '{}')", (A1, old, old))
            await conn.execute(
                "INSERT INTO jobs(kind, key, payload, state, run_at, created_at, finished_at)"
                " VALUES ('process_event', 'event:msg:poison', '{}', 'dead', ?, ?, ?)",
                (old, old, NOW - DAY))
            await conn.execute(
                "INSERT INTO sends(key, account_id, contact_id, kind, body, state, created_at,"
                " updated_at) VALUES ('send:pending', ?, 'c1', 'text', '{}', 'pending', ?, ?)",
                (A1, old, old))
            old_event = (await (await conn.execute(
                "SELECT min(id) FROM events")).fetchone())[0]
            await history.insert_message(
                conn, account_id=A1, contact_id="c1", mid="m:recent-old-event",
                direction="in", sent_by="contact", text="hi", attachments=[],
                created_at=NOW - DAY, event_id=old_event)
            recent_event = cur.lastrowid
            await conn.executemany(
                "INSERT INTO recovered_events(event_id, account_id, contact_id, mid,"
                " recovered_at) VALUES (?, ?, 'c1', ?, ?)",
                [(old_event, A1, "m:a", old), (recent_event, A1, "m:b", NOW)])
            await conn.execute("UPDATE messages SET deleted_at = ? WHERE mid = 'm:c0:" +
                               f"{NOW - 2 * DAY}:0r'", (NOW,))
    finally:
        await db.close()


def dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows with their rowids, and the schema (indexes and triggers too)."""
    import sqlite3
    conn = sqlite3.connect(path)
    try:
        out: dict[str, list[tuple[object, ...]]] = {
            "schema": sorted(conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"
                                          " WHERE name NOT LIKE 'sqlite_%'"))}
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                     " AND name NOT LIKE 'sqlite_%'").fetchall():
            out[table] = conn.execute(f"SELECT rowid, * FROM {table} ORDER BY rowid").fetchall()
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return out
    finally:
        conn.close()


@pytest.fixture
async def twins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Two copies of :func:`history_db`; tables of any size may take the bulk path."""
    monkeypatch.setattr(retention, "BULK_MIN_ROWS", 1)
    first = tmp_path / "bulk.db"
    await history_db(first)
    second = tmp_path / "batched.db"
    shutil.copyfile(first, second)
    return first, second


async def purge(path: Path, *, bulk: bool) -> retention.PurgeReport:
    db = await open_database(path)
    try:
        return await retention.purge_older_than(db, HORIZON, NOW, batch=7, bulk=bulk)
    finally:
        await db.close()


async def test_bulk_and_batched_purges_leave_the_same_database(twins: tuple[Path, Path]
                                                              ) -> None:
    bulk_path, batched_path = twins
    before = dump(bulk_path)
    bulk = await purge(bulk_path, bulk=True)
    batched = await purge(batched_path, bulk=False)
    # The big history tables went through the bulk path, and nothing did in the other run.
    assert {"messages", "events", "jobs", "sends"} <= set(bulk.bulk)
    assert batched.bulk == []
    assert bulk.counts == batched.counts
    # 48 processed events and the one whose job dead-lettered; the one a job still waits
    # for stays.
    assert bulk.counts["messages"] == 48 and bulk.counts["events"] == 49
    after = dump(bulk_path)
    assert [r[2] for r in after["events"] if r[8] is None] == ["msg:late"]
    # Rowids and values included: the kept rows are the same rows, not copies.
    assert after == dump(batched_path)
    assert after["schema"] == before["schema"]  # indexes and triggers as they were
    assert len(after["messages"]) == len(before["messages"]) - 48 > 0


async def test_triggers_work_after_a_bulk_pass_and_kept_rows_are_not_counted_twice(
        twins: tuple[Path, Path]) -> None:
    path, _ = twins
    report = await purge(path, bulk=True)
    assert "messages" in report.bulk
    db = await open_database(path)
    try:
        hour = int((NOW - 2 * DAY) // 3600)
        row = await db.fetchone("SELECT sum(n_in) FROM stats_messages WHERE hour = ?", (hour,))
        assert row is not None and row[0] == 2  # the two kept messages of that hour, once
        async with db.tx() as conn:
            await history.insert_message(
                conn, account_id=A1, contact_id="c9", mid="m:after", direction="in",
                sent_by="contact", text="new", attachments=[], created_at=NOW - 2 * DAY)
        row = await db.fetchone("SELECT sum(n_in) FROM stats_messages WHERE hour = ?", (hour,))
        assert row is not None and row[0] == 3  # stats_messages_in fired for the new row
    finally:
        await db.close()


async def test_a_second_bulk_purge_finds_nothing(twins: tuple[Path, Path]) -> None:
    path, _ = twins
    assert (await purge(path, bulk=True)).total > 0
    again = await purge(path, bulk=True)
    assert again.counts == {}


async def test_the_daily_share_stays_batched(twins: tuple[Path, Path]) -> None:
    """A horizon that takes a small share of the history: no bulk pass."""
    path, _ = twins
    db = await open_database(path)
    try:
        report = await retention.purge_older_than(db, NOW - 110 * DAY, NOW, batch=7)
    finally:
        await db.close()
    assert report.counts["messages"] == 4  # the oldest contact's history
    assert report.bulk == []


async def test_rows_the_rule_cannot_decide_are_kept(db: Database) -> None:
    """A NULL in the rule (an unknown date) keeps the row, as the batched DELETE does."""
    async with db.tx() as conn:
        await conn.execute("CREATE TABLE x_log (at REAL, note TEXT)")
        await conn.executemany("INSERT INTO x_log VALUES (?, ?)",
                               [(1.0, "old"), (None, "undated"), (NOW, "new"), (2.0, "old")])
    async with Purger(db, cache_kib=1024) as purger:
        rule = Rule("x_log", "at < ?")
        assert purger.bulk_ready(rule)
        rows, share = await purger.estimate(rule, (HORIZON,))
        assert rows == 4 and 0.25 <= share <= 0.75  # a sample over the rowids
        deleted, _ = await purger.write_bulk(rule, (HORIZON,))
    assert deleted == 2
    rows_left = await db.fetchall("SELECT rowid, at, note FROM x_log ORDER BY rowid")
    assert [tuple(r) for r in rows_left] == [(2, None, "undated"), (3, NOW, "new")]


async def test_tables_the_bulk_path_cannot_handle_stay_batched(db: Database) -> None:
    """A DELETE trigger (emptying the table would skip it), a key SQLite must enforce
    (RESTRICT), a self-reference, an update rule, a table without rowid."""
    schema = [
        "CREATE TABLE x_audit (n INTEGER)",
        "CREATE TABLE x_watched (at REAL)",
        "CREATE TRIGGER x_watched_gone AFTER DELETE ON x_watched BEGIN"
        " INSERT INTO x_audit VALUES (1); END",
        "CREATE TABLE x_parent (id INTEGER PRIMARY KEY, at REAL)",
        "CREATE TABLE x_child (p INTEGER REFERENCES x_parent(id) ON DELETE RESTRICT)",
        "CREATE TABLE x_tree (id INTEGER PRIMARY KEY, at REAL,"
        " up INTEGER REFERENCES x_tree(id) ON DELETE SET NULL)",
        "CREATE TABLE x_keyed (k TEXT PRIMARY KEY, at REAL) WITHOUT ROWID",
        "CREATE TABLE x_plain (at REAL)",
        "CREATE TRIGGER x_plain_new AFTER INSERT ON x_plain BEGIN"
        " INSERT INTO x_audit VALUES (2); END",
    ]
    async with db.tx() as conn:
        for sql in schema:
            await conn.execute(sql)
    async with Purger(db, cache_kib=1024) as purger:
        for table in ("x_watched", "x_parent", "x_tree", "x_keyed"):
            assert not purger.bulk_ready(Rule(table, "at < ?")), table
        assert not purger.bulk_ready(Rule("x_plain", "at < ?", update="at = NULL"))
        assert purger.bulk_ready(Rule("x_plain", "at < ?"))  # an INSERT trigger is fine
        assert purger.bulk_ready(Rule("messages", "created_at < ?"))


def test_report_json_is_unchanged_by_the_bulk_field() -> None:
    report = retention.PurgeReport(counts={"messages": 3}, bulk=["messages"])
    assert json.loads(json.dumps(report.to_json())) == {
        "dry_run": False, "finished": True, "total": 3, "counts": {"messages": 3},
        "space": ""}
