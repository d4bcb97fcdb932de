"""The schema after all migrations, the pragmas, and migration safety."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from instaset.errors import StoreError
from instaset.store.db import Database, open_database
from instaset.store.migrate import migrations
from instaset.store.retention import Purger
from tests.sending_harness import open_harness

EXPECTED_SCHEMA: dict[str, list[str]] = {
    "schema_migrations": ["version", "name", "applied_at"],
    "public_reply_turns": ["account_id", "workflow", "turns"],
    "accounts": [
        "id", "app_scoped_id", "username", "state", "token_expires_at", "token_issued_at",
        "subscribed_fields", "sandbox", "created_at", "updated_at",
    ],
    "contacts": ["account_id", "id", "username", "name", "first_seen_at", "updated_at"],
    "conversations": [
        "account_id", "contact_id", "state", "last_inbound_at", "last_message_at",
        "paused_until", "unread", "updated_at",
    ],
    "events": [
        "id", "dedupe_key", "account_id", "kind", "contact_id", "occurred_at", "received_at",
        "processed_at", "raw",
    ],
    "messages": [
        "id", "account_id", "contact_id", "mid", "direction", "sent_by", "text", "attachments",
        "reply_to", "event_id", "created_at", "deleted_at", "edits", "reactions", "edit_num",
    ],
    "jobs": [
        "id", "kind", "key", "payload", "state", "attempts", "max_attempts", "run_at",
        "lease_until", "worker", "last_error", "created_at", "started_at", "finished_at",
    ],
    "sends": [
        "key", "account_id", "contact_id", "comment_id", "kind", "body", "state", "sent_by",
        "message_id", "reason", "workflow", "attempts", "created_at", "updated_at", "unknown_at",
        "detail",  # 0021: a refusal's words
    ],
    "notifications": [
        "id", "key", "account_id", "contact_id", "kind", "text", "created_at", "delivered_at",
    ],
    # 0003: accounts and Meta's callbacks
    "oauth_states": [
        "state", "redirect_uri", "created_at", "expires_at", "used_at", "outcome", "account_id",
        "detail",
    ],
    "deletion_receipts": [
        "code", "matched", "status", "summary", "requested_at", "completed_at",
    ],
    # 0004: AI replies, leads, bookings
    "ai_drafts": [
        "id", "key", "account_id", "contact_id", "comment_id", "text", "intent", "confidence",
        "reason", "state", "created_at", "updated_at",
    ],
    "ai_calls": [
        "id", "job_key", "attempt", "account_id", "contact_id", "backend", "model", "outcome",
        "prompt_tokens", "output_tokens", "total_tokens", "latency_ms", "error", "created_at",
    ],
    "lead_facts": [
        "key", "account_id", "contact_id", "source", "name", "value", "evidence", "points",
        "created_at",
        # 0022: the message an AI fact came from
        "mid",
    ],
    "leads": [
        "account_id", "contact_id", "score", "stage", "reasons", "rules_hash", "qualified_at",
        "updated_at",
    ],
    "bookings": [
        "id", "key", "account_id", "contact_id", "start_at", "end_at", "title", "status",
        "created_at", "updated_at",
        # 0008: the booking lifecycle
        "sequence", "cancelled_at", "cancelled_by", "cancel_reason",
    ],
    # 0005: inbox, stats and tracked links
    "links": ["code", "url", "account_id", "contact_id", "send_key", "workflow", "created_at"],
    "clicks": ["id", "code", "account_id", "contact_id", "at"],
    # 0006: contacts and catch-up
    "contact_changes": [
        "id", "account_id", "contact_id", "field", "action", "old_value", "new_value",
        "changed_by", "changed_at",
    ],
    "contact_profiles": [
        "account_id", "contact_id", "name", "username", "profile_pic", "follower_count",
        "is_user_follow_business", "is_business_follow_user", "fetched_at", "error",
    ],
    "catchup_accounts": [
        "account_id", "checked_at", "subscribed_at", "backfilled_at", "resubscribed_at",
    ],
    "catchup_runs": [
        "id", "account_id", "reason", "since", "started_at", "finished_at", "api_calls",
        "conversations", "recovered", "unavailable", "error", "progressed_at",
    ],
    "recovered_events": [
        "event_id", "run_id", "account_id", "contact_id", "mid", "username", "recovered_at",
    ],
    # 0008: booking reminders
    "booking_reminders": [
        "key", "booking_id", "account_id", "contact_id", "start_at", "offset_seconds",
        "outcome", "reason", "created_at",
    ],
    # 0010: stats rollups
    "stats_sends": [
        "account_id", "hour", "workflow", "sent_by", "media", "triggers", "sent", "read",
        "refused", "pending",
    ],
    "stats_refusals": ["account_id", "hour", "reason", "n"],
    "stats_reads": ["account_id", "contact_id", "upto"],
    "stats_messages": ["account_id", "hour", "n_in", "n_out"],
    "stats_pending": ["account_id", "contact_id", "since_at"],
    "stats_waits_hour": ["account_id", "hour", "bucket", "n"],
    "stats_waits_day": ["account_id", "day", "bucket", "n"],
    "stats_conversations": ["account_id", "hour", "contacts", "leads", "qualified", "booked"],
    "stats_fired": [
        "account_id", "hour", "workflow", "contacts", "leads", "qualified", "booked",
    ],
    "stats_commenters": ["account_id", "contact_id", "media", "last_at"],
    "stats_media": ["account_id", "hour", "media", "comments", "leads", "qualified", "booked"],
    "stats_clicks": ["account_id", "hour", "workflow", "media", "clicks"],
    "staged_events": ["id", "dedupe_key", "account_id", "kind", "contact_id", "occurred_at",
                      "received_at", "raw"],
    "catchup_walked": ["run_id", "conversation_id", "generation", "unavailable"],
    # 0022: the message a captured field came from
    "captured_fields": ["account_id", "contact_id", "field", "mid", "captured_at"],
}  # fmt: skip


async def test_final_schema(db: Database) -> None:
    tables = {
        r[0]
        for r in await db.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    assert tables == set(EXPECTED_SCHEMA)
    for table, columns in EXPECTED_SCHEMA.items():
        rows = await db.fetchall(f"PRAGMA table_info({table})")
        assert [r["name"] for r in rows] == columns, table
    strict = await db.fetchall("PRAGMA table_list")
    assert all(r["strict"] == 1 for r in strict if r["name"] in EXPECTED_SCHEMA)


async def test_pragmas(db: Database) -> None:
    assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"  # type: ignore[index]
    assert (await db.fetchone("PRAGMA foreign_keys"))[0] == 1  # type: ignore[index]
    assert (await db.fetchone("PRAGMA synchronous"))[0] == 2  # type: ignore[index]  # FULL
    assert (await db.fetchone("PRAGMA busy_timeout"))[0] >= 5000  # type: ignore[index]


async def test_every_connection_the_daemon_opens_overwrites_deleted_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``secure_delete`` is set, not left to how SQLite was built: upstream's default is
    off, and a deleted message's text would then stay in the file's free pages. Every
    connection starts as on such a build; the daemon's own pragmas must turn it on."""
    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        kwargs["check_same_thread"] = False  # read back from the test's thread below
        conn = real_connect(*args, **kwargs)  # type: ignore[arg-type]
        conn.execute("PRAGMA secure_delete=OFF")  # a build without SECURE_DELETE
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)

    def level(conn: sqlite3.Connection) -> int | None:
        try:
            return int(conn.execute("PRAGMA secure_delete").fetchone()[0])
        except sqlite3.ProgrammingError:  # closed since (a one-off read)
            return None

    async with open_harness(tmp_path) as h:
        await h.dm("1129842642640999", "my number is 555-0100")
        await h.settle()  # the ingest writer, the worker's connections, all in use
        daemon = [c for c in opened if level(c) is not None]
        # The main connection, the worker's loop-thread one, the ingest writer.
        assert len(daemon) >= 3
        assert {id(c): level(c) for c in daemon} == {id(c): 1 for c in daemon}
        async with Purger(h.rt.db, cache_kib=1024):
            purger = opened[-1]
            assert purger not in daemon
            assert level(purger) == 2  # FAST, on purpose: see Purger._open


async def test_migrations_recorded_once_and_reopen_is_noop(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    first = await open_database(path)
    await first.close()
    again = await open_database(path)
    try:
        rows = await again.fetchall("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in migrations()]
        assert await again.schema_version() == len(migrations())
    finally:
        await again.close()


async def test_newer_database_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    await (await open_database(path)).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer than this instaset"):
        await open_database(path)


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in migrations()]
    assert versions == list(range(1, len(versions) + 1))


async def test_cancelled_transaction_start_leaves_no_open_transaction(db: Database) -> None:
    """Regression: a job timeout cancelling a handler inside BEGIN IMMEDIATE left the shared
    connection in a transaction holding the write lock, so every later write failed."""
    import asyncio

    async def slow_tx() -> None:
        async with db.tx() as conn:
            await conn.execute("INSERT INTO jobs(kind, key, run_at, created_at)"
                               " VALUES ('x', 'never', 0, 0)")
            await asyncio.sleep(10)

    for delay in (0, 0.0005, 0.001, 0.005, 0.02):
        task = asyncio.create_task(slow_tx())
        await asyncio.sleep(delay)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not db.main.in_transaction
    async with db.tx() as conn:  # the next transaction works and nothing half-done remains
        await conn.execute("INSERT INTO jobs(kind, key, run_at, created_at)"
                           " VALUES ('x', 'ok', 0, 0)")
    rows = await db.fetchall("SELECT key FROM jobs")
    assert [r[0] for r in rows] == ["ok"]


async def test_an_upgrade_says_which_migration_runs(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A migration applied to an existing database is announced with its duration (0010
    backfills history: tens of seconds on a million messages), so a slow first start after
    an upgrade is explained; a new database says nothing."""
    path = tmp_path / "up.db"
    with caplog.at_level("WARNING", logger="instaset.store"):
        db = await open_database(path)
        await db.close()
    assert not caplog.records
    # Back to schema 10: 0011 only added three indexes.
    raw = sqlite3.connect(path)
    raw.executescript("DROP INDEX contacts_by_id; DROP INDEX contacts_username_lower;"
                      " DROP INDEX conversations_unread;"
                      " DELETE FROM schema_migrations WHERE version = 11;")
    raw.close()
    with caplog.at_level("WARNING", logger="instaset.store"):
        db = await open_database(path)
        try:
            indexes = {r[0] for r in await db.fetchall(
                "SELECT name FROM sqlite_master WHERE type = 'index'")}
        finally:
            await db.close()
    said = [r.getMessage() for r in caplog.records]
    assert any("upgrading the database: migration 0011_terminal_lookups" in m for m in said)
    assert any(m.startswith("migration 0011_terminal_lookups done in") for m in said)
    assert {"contacts_by_id", "contacts_username_lower", "conversations_unread"} <= indexes


async def test_0019_keeps_the_conversations_a_run_under_way_had_walked(tmp_path: Path) -> None:
    """A database at 0018 (catchup_walked per generation, no progressed_at) with a run under
    way: after 0019 that generation still skips what it walked, and does not count it again."""
    from instaset.store import contacts, history

    path = tmp_path / "walked.db"
    db = await open_database(path)
    try:
        await history.upsert_account(db, "A", username="a", now=1.0)
        async with db.tx() as conn:
            run = await contacts.start_run(conn, "A", "start", 0.0, 10.0)
    finally:
        await db.close()
    raw = sqlite3.connect(path)
    raw.executescript(  # back to 0018, as b0ce0c2 left it, with c1 walked by generation 10
        "DROP TABLE catchup_walked; ALTER TABLE catchup_runs DROP COLUMN progressed_at;"
        " CREATE TABLE catchup_walked (run_id INTEGER NOT NULL REFERENCES catchup_runs(id)"
        " ON DELETE CASCADE, generation REAL NOT NULL, conversation_id TEXT NOT NULL,"
        " PRIMARY KEY (run_id, generation, conversation_id)) STRICT;"
        f" INSERT INTO catchup_walked VALUES ({run}, 10.0, 'c1');"
        " DELETE FROM schema_migrations WHERE version = 19;")
    raw.close()
    db = await open_database(path)
    try:
        assert await contacts.walk_state(db, run, 10.0, "c1") == (True, True)
        async with db.tx() as conn:
            assert await contacts.mark_walked(conn, run, 11.0, "c1", 0) == (0, 0)
        row = await db.fetchone("SELECT progressed_at FROM catchup_runs WHERE id = ?", (run,))
        assert row is not None and row[0] is None
    finally:
        await db.close()


@pytest.mark.parametrize(("walks", "gains"), [
    # (generation, unavailable) walks of one conversation by one run -> counter gains each
    ([(10.0, 2)], [(1, 2)]),
    ([(10.0, 2), (11.0, 2)], [(1, 2), (0, 0)]),  # restarted in place: counted once
    ([(10.0, 2), (11.0, 5)], [(1, 2), (0, 3)]),  # more unreadable now: only the extra
    ([(10.0, 5), (11.0, 3), (12.0, 6)], [(1, 5), (0, 0), (0, 1)]),  # beyond the most counted
    ([(10.0, 0), (10.0, 1)], [(1, 0), (0, 1)]),
], ids=["first", "again", "more", "fewer-then-more", "same-generation"])
async def test_a_conversation_walked_again_adds_only_what_was_not_counted(
    tmp_path: Path, walks: list[tuple[float, int]], gains: list[tuple[int, int]],
) -> None:
    from instaset.store import contacts, history

    db = await open_database(tmp_path / "walked.db")
    try:
        await history.upsert_account(db, "A", username="a", now=1.0)
        async with db.tx() as conn:
            run = await contacts.start_run(conn, "A", "start", 0.0, 10.0)
            got = [await contacts.mark_walked(conn, run, gen, "c1", n) for gen, n in walks]
            other = await contacts.mark_walked(conn, run, walks[-1][0], "c2", 1)
        assert got == gains
        assert other == (1, 1)  # another conversation of the run counts on its own
    finally:
        await db.close()


# -- group fsync: Database.barrier -----------------------------------------------------------
async def test_concurrent_barriers_share_fsyncs_and_wait_for_one_started_after_them(
    tmp_path: Path,
) -> None:
    db = await open_database(tmp_path / "g.db")
    try:
        started: list[int] = []
        finished: list[int] = []
        release = threading.Event()

        def slow_fsync() -> None:  # the disk, held until the test lets it go
            started.append(len(started) + 1)
            release.wait(timeout=10)
            finished.append(started[-1])

        db._fsync_wal = slow_fsync  # type: ignore[method-assign]

        async def barrier() -> int:
            await db.barrier()
            return len(finished)

        first = asyncio.create_task(barrier())
        await asyncio.wait_for(_until(lambda: bool(started)), 10)
        # These arrive while the first fsync runs: it may predate their commits.
        later = [asyncio.create_task(barrier()) for _ in range(20)]
        await asyncio.sleep(0.01)
        assert not any(t.done() for t in [first, *later])
        release.set()
        results = await asyncio.wait_for(asyncio.gather(first, *later), 10)
        assert started == [1, 2]  # 21 barriers, two fsyncs
        assert results[0] >= 1
        assert all(r == 2 for r in results[1:])  # each waited for the fsync after its call
    finally:
        await db.close()


async def test_a_failed_fsync_fails_every_barrier_waiting_for_it(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "g.db")
    try:
        def broken_fsync() -> None:
            raise OSError(5, "Input/output error")

        db._fsync_wal = broken_fsync  # type: ignore[method-assign]
        results = await asyncio.gather(*(db.barrier() for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, OSError) for r in results)
        db._fsync_wal = lambda: None  # type: ignore[method-assign]
        await db.barrier()  # and the next one works again
    finally:
        await db.close()


async def _until(cond: Callable[[], bool]) -> None:
    while not cond():
        await asyncio.sleep(0.001)


async def test_the_ais_past_replies_are_read_through_an_index(tmp_path: Path) -> None:
    """Each AI reply reads the creator's recent replies: without an index that sorted the
    whole history (125-140 ms at 400,000 messages, AI audit)."""
    from instaset.store.ai import HUMAN_REPLY_PAIRS

    db = await open_database(tmp_path / "plan.db", synchronous="NORMAL")
    try:
        plan = [r[3] for r in await db.fetchall(f"EXPLAIN QUERY PLAN {HUMAN_REPLY_PAIRS}",
                                                ("a", 500))]
    finally:
        await db.close()
    assert plan[0] == "SEARCH h USING INDEX messages_human_replies (account_id=?)"
    assert not any("TEMP B-TREE" in step for step in plan)


async def test_a_cancelled_write_script_holds_the_gate_until_it_has_ended(
        tmp_path: Path) -> None:
    """Cancelled while its BEGIN waits for another process's lock, the script went on in
    aiosqlite's thread after the write gate was released (review s16 C, finding 4)."""
    import sqlite3

    db = await open_database(tmp_path / "s.db", synchronous="NORMAL")
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        script = asyncio.ensure_future(db.write_script(
            "BEGIN IMMEDIATE; CREATE TABLE scripted(x); COMMIT;"))
        await asyncio.sleep(0.2)  # its BEGIN waits in SQLite's busy handler
        script.cancel()
        entered = asyncio.Event()

        async def writer() -> None:  # as the ingest writer's or the worker's connection do
            async with db.gate.normal():
                entered.set()
            async with db.tx() as conn:
                await conn.execute("CREATE TABLE after_script(x)")

        later = asyncio.ensure_future(writer())
        await asyncio.sleep(0.2)
        assert not entered.is_set()  # the gate is still the script's
        other.execute("COMMIT")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(script, 15)
        await asyncio.wait_for(later, 15)
        assert not db.main.in_transaction
        names = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master")}
        assert {"scripted", "after_script"} <= names
    finally:
        other.close()
        await db.close()
