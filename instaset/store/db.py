"""The database handle: connections, pragmas and migrations, in one place.

Contract:
- :func:`open_database` opens (creating if needed) the SQLite file, applies the pragmas and
  every pending numbered migration, and returns a :class:`Database`. Close it with
  :meth:`Database.close` (an unclosed aiosqlite connection hangs interpreter exit).
- ``synchronous`` defaults to FULL: with group commit it costs little (see bench/ingest.py),
  and it means an event we answered 200 for survives a power loss, not just a process crash.
  NORMAL is available in config for slow disks.
- All access through :attr:`Database.main` is serialised by an asyncio lock: an aiosqlite
  connection is shared by every coroutine, and two coroutines interleaving statements on one
  connection would mix their transactions. Writes use ``BEGIN IMMEDIATE`` (a deferred
  read-then-write fails with "database is locked" under load).
- Every write in this process passes :class:`WriteGate` (ingest first), so the process's
  two connections never wait on each other inside SQLite. Other processes (the CLI) still
  meet the daemon in SQLite's busy handler, bounded by ``busy_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from instaset.errors import StoreError

Synchronous = Literal["NORMAL", "FULL"]
BUSY_TIMEOUT_MS = 10_000
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


async def _connect(path: Path, synchronous: Synchronous) -> aiosqlite.Connection:
    # isolation_level=None: no implicit BEGINs; we open every transaction ourselves.
    conn = await aiosqlite.connect(str(path), isolation_level=None)
    try:
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        # Switching to WAL needs a write lock; busy_timeout above makes it wait, not fail.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={synchronous}")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA temp_store=MEMORY")
    except BaseException:
        await conn.close()
        raise
    return conn


class WriteGate:
    """One writer at a time inside this process, the ingest writer first.

    Without it the ingest writer's connection and the worker's meet in SQLite's busy
    handler, which sleeps up to 100 ms between tries and is unfair: acknowledgements then
    waited behind the worker's backlog (p99 in the hundreds of ms, see bench/ingest.py).
    ``urgent`` (ingest) overtakes every ``normal`` (worker, CLI) waiter."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._urgent = 0
        self._calm = asyncio.Event()
        self._calm.set()

    @contextlib.asynccontextmanager
    async def urgent(self) -> AsyncIterator[None]:
        self._urgent += 1
        self._calm.clear()
        try:
            async with self._lock:
                yield
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._calm.set()

    @contextlib.asynccontextmanager
    async def normal(self) -> AsyncIterator[None]:
        while True:
            await self._calm.wait()
            await self._lock.acquire()
            if not self._urgent:
                break
            self._lock.release()  # an urgent writer is waiting: let it go first
        try:
            yield
        finally:
            self._lock.release()


def connect_sync(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    """A plain sqlite3 connection with the same pragmas, for a task that runs whole
    transactions in one worker thread (one hand-off per batch instead of one per statement)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


class Database:
    """An open instaset database. See the module docstring for the locking contract."""

    def __init__(self, path: Path, main: aiosqlite.Connection, synchronous: Synchronous):
        self.path = path
        self.main = main
        self.synchronous = synchronous
        self._lock = asyncio.Lock()
        self.gate = WriteGate()
        self._sync: list[sqlite3.Connection] = []

    def connect_sync_writer(self) -> sqlite3.Connection:
        """A second connection for the ingest writer (it owns it alone and writes through
        :attr:`gate`). Closed with the database."""
        conn = connect_sync(self.path, self.synchronous)
        self._sync.append(conn)
        return conn

    @contextlib.asynccontextmanager
    async def tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error)."""
        async with self.gate.normal(), self._lock:
            try:
                # BEGIN inside the try: a cancellation (a job timeout) can land while BEGIN
                # runs in aiosqlite's thread; the ROLLBACK queued after it then undoes it,
                # instead of leaving the connection holding the write lock for ever.
                await self.main.execute("BEGIN IMMEDIATE")
                yield self.main
                await self.main.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await self.main.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """Serialised access for reads and single-statement writes (autocommit)."""
        async with self._lock:
            yield self.main

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self.read() as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One autocommitted write statement; returns the number of rows changed."""
        async with self.gate.normal(), self._lock:
            cur = await self.main.execute(sql, params)
            return cur.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.tx() as conn:
            await conn.executemany(sql, rows)

    async def schema_version(self) -> int:
        row = await self.fetchone("SELECT max(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    async def backup_to(self, dest: Path) -> None:
        """Copy the live database to ``dest`` with SQLite's online backup API: consistent even
        while the daemon writes (it sees one snapshot), and never blocks the writer for long."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".part")
        tmp.unlink(missing_ok=True)
        target = await aiosqlite.connect(str(tmp))
        try:
            async with self._lock:
                await self.main.backup(target, pages=256)
        finally:
            await target.close()
        tmp.replace(dest)

    async def integrity_ok(self) -> bool:
        row = await self.fetchone("PRAGMA integrity_check")
        return row is not None and row[0] == "ok"

    async def close(self) -> None:
        for conn in self._sync:
            conn.close()
        self._sync.clear()
        await self.main.close()


async def _migrate(conn: aiosqlite.Connection, now: float) -> None:
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


async def open_database(path: Path, *, synchronous: Synchronous = "FULL") -> Database:
    """Open ``path`` (creating parent directories), apply pragmas and pending migrations."""
    import time

    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = await _connect(path, synchronous)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from None
    try:
        await _migrate(conn, time.time())
    except sqlite3.DatabaseError as exc:
        await conn.close()
        raise StoreError(f"cannot migrate database {path}: {exc}") from None
    except BaseException:
        await conn.close()
        raise
    return Database(path, conn, synchronous)
