"""The schema after all migrations, the pragmas, and migration safety."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from instaset.errors import StoreError
from instaset.store.db import Database, migrations, open_database

EXPECTED_SCHEMA: dict[str, list[str]] = {
    "schema_migrations": ["version", "name", "applied_at"],
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
        "reply_to", "event_id", "created_at", "deleted_at", "edits", "reactions",
    ],
    "jobs": [
        "id", "kind", "key", "payload", "state", "attempts", "max_attempts", "run_at",
        "lease_until", "worker", "last_error", "created_at", "started_at", "finished_at",
    ],
    "sends": [
        "key", "account_id", "contact_id", "comment_id", "kind", "body", "state", "sent_by",
        "message_id", "reason", "workflow", "attempts", "created_at", "updated_at",
    ],
    "notifications": [
        "id", "key", "account_id", "contact_id", "kind", "text", "created_at", "delivered_at",
    ],
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
