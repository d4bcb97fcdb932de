"""The schema's numbered, append-only migrations: listing them, applying the pending ones,
and reading a file's version without migrating it.

Contract: ``instaset/store/migrations/NNNN_name.sql`` are numbered from 0001 without gaps;
each applies in its own transaction together with its ``schema_migrations`` row, so a
migration is applied once, entirely or not at all. A database newer than this instaset is
refused (a downgrade would run against a schema it does not know).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import aiosqlite

from instaset.errors import StoreError

log = logging.getLogger("instaset.store")

_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered, append-only migrations shipped in ``instaset/store/migrations``."""
    found: list[Migration] = []
    for entry in resources.files("instaset.store").joinpath("migrations").iterdir():
        m = _MIGRATION_NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    for i, mig in enumerate(found, start=1):
        if mig.version != i:
            raise StoreError(f"migration numbering has a gap before {mig.version:04d}_{mig.name}")
    return found


async def apply_migrations(conn: aiosqlite.Connection, now: float) -> None:
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL) STRICT"
    )
    known = migrations()
    rows = await conn.execute_fetchall("SELECT version FROM schema_migrations")
    applied = {int(r[0]) for r in rows}
    newest = max(applied, default=0)
    if known and newest > known[-1].version:
        raise StoreError(
            f"the database is at schema version {newest}, newer than this instaset "
            f"(which knows up to {known[-1].version}); upgrade instaset or restore a backup"
        )
    for mig in known:
        if mig.version in applied:
            continue
        if applied:  # an upgrade of an existing database: some migrations backfill history
            log.warning("upgrading the database: migration %04d_%s (once; on a large"
                        " database this can take a minute)", mig.version, mig.name)
        started = time.monotonic()
        # Each migration and its bookkeeping row commit together, or not at all.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split_sql(mig.sql):
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                (mig.version, mig.name, now),
            )
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        if applied:
            log.warning("migration %04d_%s done in %.1f s", mig.version, mig.name,
                        time.monotonic() - started)


def _split_sql(script: str) -> list[str]:
    """Split a migration into statements with sqlite3.complete_statement (handles triggers)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements


def inspect_schema_version(path: Path) -> int:
    """The schema version of an instaset database file, without migrating it; raises
    StoreError when the file is not an instaset database."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not an instaset database ({exc})") from None
    return int(row[0]) if row and row[0] is not None else 0
