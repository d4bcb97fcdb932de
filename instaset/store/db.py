"""The database handle: connections, pragmas and migrations, in one place.

Contract:
- :func:`open_database` opens (creating if needed) the SQLite file, applies the pragmas and
  every pending numbered migration, and returns a :class:`Database`. Close it with
  :meth:`Database.close` (an unclosed aiosqlite connection hangs interpreter exit). A file
  with tables but no ``schema_migrations`` is another program's database: it is refused
  (:class:`~instaset.errors.ForeignDatabaseError`) before anything is written to it.
- ``synchronous`` defaults to FULL: with group commit it costs little (see bench/ingest.py),
  and it means an event we answered 200 for survives a power loss, not just a process crash.
  NORMAL is available in config for slow disks.
- Relaxed transactions (``tx(relaxed=True)``), the worker's hot path: short transactions
  (claims, completions, processing an event, records of sends that already happened) run on
  a third connection, in the event loop's own thread (no thread hand-off per statement:
  those hand-offs, not SQLite, capped the worker at a few dozen events/s), and commit
  without an fsync (``synchronous=NORMAL``). In WAL mode such a commit survives a crash of
  the process (kill -9) at once; only a power loss can roll it back, and only until the next
  durable commit on this database, because the WAL is one append-only file and a durable
  commit fsyncs every frame before its own. A relaxed transaction is therefore only for
  effects that are re-derived idempotently after a rollback; whatever precedes an effect
  outside the database (the ``in_flight`` mark of a send before the Graph call, an
  acknowledgement) commits durably, which makes everything committed before it durable too.
  It must stay short (it blocks the loop while it runs), and it never waits inside SQLite
  for another process's write lock: it retries ``BEGIN`` with asyncio sleeps instead.
- Grouped transactions (``tx(grouped=True)``, the worker's processing of an event): relaxed
  ones that share one commit, at the loop's next turn or as soon as anything else in this
  process uses the database; until then only the loop-thread connection sees them. See
  :meth:`Database.tx`.
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
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import aiosqlite

from instaset.errors import ForeignDatabaseError, StoreError
from instaset.store.gate import WriteGate
from instaset.store.migrate import apply_migrations

log = logging.getLogger("instaset.store")

Synchronous = Literal["NORMAL", "FULL"]
BUSY_TIMEOUT_MS = 10_000
# Deleted rows are overwritten with zeros, on every connection that writes: a deleted
# message's text must not stay readable in the file's free pages. SQLite's own default is
# off (only some builds, Debian's among them, compile it on), so it is set, not assumed.
# The purger's connection lowers it to FAST on purpose (see store/retention.py: Purger).
SECURE_DELETE = "PRAGMA secure_delete=ON"
async def _start(path: Path) -> aiosqlite.Connection:
    """``aiosqlite.connect``, whose worker thread is finished when the connect fails.

    On a failed connect (a directory, a path SQLite cannot open) aiosqlite stops its worker
    thread without waiting for it, and the thread then posts the stop's result to this event
    loop: if a CLI command's loop has closed by then, the thread dies with a traceback
    ("Event loop is closed") printed after the command's own error message. Waiting for the
    thread here, while the loop still runs, makes that post land."""
    # isolation_level=None: no implicit BEGINs; we open every transaction ourselves.
    pending = aiosqlite.connect(str(path), isolation_level=None)
    try:
        return await pending
    except BaseException:
        # aiosqlite >= 0.22 keeps the thread in ``_thread``; older ones are the thread.
        thread = pending if isinstance(pending, threading.Thread) else getattr(
            pending, "_thread", None)
        if isinstance(thread, threading.Thread) and thread.is_alive():
            await asyncio.to_thread(thread.join, 5.0)
        raise


_FOREIGN_FIX = ("set storage.path (or INSTASET_DB) to a new file, which instaset creates, or "
                "move that file out of the way")


async def _refuse_foreign(conn: aiosqlite.Connection, path: Path) -> None:
    """Raise :class:`ForeignDatabaseError` when the file holds tables and no
    ``schema_migrations``: another program's database, which migrating would fill with
    instaset's tables (and switch to WAL). An empty file (0 bytes, or no table) is new."""
    rows = list(await conn.execute_fetchall(
        "SELECT count(*), count(*) FILTER (WHERE type = 'table' AND name = 'schema_migrations')"
        " FROM sqlite_master"))
    objects, ours = int(rows[0][0]), int(rows[0][1])
    if objects and not ours:
        raise ForeignDatabaseError(
            f"{path} is not an instaset database: it holds {objects} schema object(s) of "
            "something else and no schema_migrations table, and instaset does not write its "
            "tables into another program's database", _FOREIGN_FIX)


async def _connect(path: Path, synchronous: Synchronous) -> aiosqlite.Connection:
    conn = await _start(path)
    try:
        conn.row_factory = aiosqlite.Row
        await conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        await _refuse_foreign(conn, path)  # before the pragmas below change the file
        tables = list(await conn.execute_fetchall("SELECT count(*) FROM sqlite_master"))
        if not tables[0][0]:
            # A new file: incremental vacuum can only be chosen before the first table, and
            # with it a purge returns space to the OS while the daemon runs (older files
            # switch at their first purge with the daemon stopped: store/retention.py).
            await conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        # Switching to WAL needs a write lock; busy_timeout above makes it wait, not fail.
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute(f"PRAGMA synchronous={synchronous}")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA temp_store=MEMORY")
        await conn.execute(SECURE_DELETE)
    except BaseException:
        await conn.close()
        raise
    return conn


def connect_sync(path: Path, synchronous: Synchronous) -> sqlite3.Connection:
    """A plain sqlite3 connection with the same pragmas, for a task that runs whole
    transactions in one worker thread (one hand-off per batch instead of one per statement)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(SECURE_DELETE)
    except BaseException:
        conn.close()
        raise
    return conn


class LoopConnection:
    """The subset of :class:`aiosqlite.Connection` instaset's store functions use, over a
    plain sqlite3 connection, run synchronously on the event loop's thread."""

    __slots__ = ("_conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, parameters)

    async def execute_fetchall(
        self, sql: str, parameters: Sequence[Any] = ()
    ) -> list[sqlite3.Row]:
        return self._conn.execute(sql, parameters).fetchall()

    async def executemany(
        self, sql: str, parameters: Iterable[Sequence[Any]]
    ) -> sqlite3.Cursor:
        return self._conn.executemany(sql, parameters)


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Database:
    """An open instaset database. See the module docstring for the locking contract."""

    def __init__(self, path: Path, main: aiosqlite.Connection, synchronous: Synchronous):
        self.path = path
        self.main = main
        self.synchronous = synchronous
        self._lock = asyncio.Lock()
        self.gate = WriteGate()
        self._sync: list[sqlite3.Connection] = []
        self._fast: sqlite3.Connection | None = None
        self._fast_lock = asyncio.Lock()
        # The open group of grouped relaxed transactions (tx(grouped=True)): the loop-thread
        # connection inside its BEGIN, holding the write gate until the group commits.
        self._group: sqlite3.Connection | None = None
        self._group_task: asyncio.Task[Any] | None = None  # inside a grouped transaction
        self._members = 0  # grouped transactions done in the open group
        self._commit_due = False  # the turn's commit waits for a transaction under way
        self.gate.before_write = self.end_group
        # Group fsync of the WAL (see barrier): the one running, and the one that starts
        # when it ends, which every barrier asked for meanwhile shares.
        self._fsyncing: asyncio.Future[None] | None = None
        self._fsync_next: asyncio.Future[None] | None = None

    def _fast_conn(self) -> sqlite3.Connection | None:
        """The loop-thread connection of relaxed transactions, opened on first use (in the
        loop's thread, which then owns it). None for an in-memory database (a second
        connection would see another database)."""
        if self._fast is None and str(self.path) != ":memory:":
            # A larger statement cache than the default 128: the worker's hot path uses more
            # distinct statements than that, and a miss re-prepares the statement.
            conn = sqlite3.connect(str(self.path), isolation_level=None, cached_statements=1024)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=0")  # never block the loop: see _begin_fast
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute(SECURE_DELETE)
            # Checkpoints (an fsync of the database file) are left to the other
            # connections, which run in threads.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._fast = conn
        return self._fast

    @staticmethod
    async def _begin_fast(conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE without blocking the loop while another process (the CLI) holds
        the write lock: retry with asyncio sleeps, up to the usual busy timeout."""
        delay, waited = 0.001, 0.0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or waited * 1000 >= BUSY_TIMEOUT_MS:
                    raise
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)

    @contextlib.asynccontextmanager
    async def _fast_tx(self, conn: sqlite3.Connection) -> AsyncIterator[aiosqlite.Connection]:
        async with self.gate.normal(), self._fast_lock:
            try:
                await self._begin_fast(conn)
                # The store functions are typed against aiosqlite's connection; LoopConnection
                # provides the part of it they use.
                yield cast(aiosqlite.Connection, LoopConnection(conn))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def _grouped_tx(self, conn: sqlite3.Connection
                          ) -> AsyncIterator[aiosqlite.Connection]:
        """A savepoint of the open group, which this opens when none is (see :meth:`tx`)."""
        while True:
            if self._group is None:
                # The gate first, then the connection's lock, as every other writer takes
                # them. Whoever holds the gate has no group open, so none is open after.
                await self.gate.acquire_normal()
                try:
                    async with self._fast_lock:
                        await self._begin_fast(conn)
                except BaseException:
                    self.gate.release()
                    raise
                self._group = conn
                self._members = 0
                asyncio.get_running_loop().call_soon(self._commit_group_soon)
            await self._fast_lock.acquire()
            if self._group is conn:
                break
            self._fast_lock.release()  # the group committed while this waited: open one
        try:
            conn.execute("SAVEPOINT grouped")
            self._group_task = asyncio.current_task()
            try:
                yield cast(aiosqlite.Connection, LoopConnection(conn))
                conn.execute("RELEASE grouped")
                self._members += 1
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK TO grouped")
                        conn.execute("RELEASE grouped")
                else:  # SQLite ended the whole transaction (disk full, an I/O error)
                    self._group = None
                    self.gate.release()
                    self._lost(self._members, "its transaction ended with an error")
                raise
        finally:
            self._group_task = None
            self._fast_lock.release()
            if self._commit_due and self._group is not None:
                # The turn's commit came while this ran: it is due now.
                self._commit_due = False
                asyncio.get_running_loop().call_soon(self._commit_group_soon)

    def _commit_group_soon(self) -> None:
        if self._group is None:
            return
        if self._fast_lock.locked():  # a grouped transaction is mid-way: at its end
            self._commit_due = True
            return
        self._commit_group()

    def _commit_group(self) -> None:
        conn, self._group = self._group, None
        self._commit_due = False
        if conn is None:
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            self._lost(self._members, f"its commit failed: {exc}")
        finally:
            self.gate.release()

    @staticmethod
    def _lost(members: int, why: str) -> None:
        # As a power loss loses relaxed commits: their jobs were reported done but are still
        # leased in the database, and run again when the lease lapses (each is re-derived
        # idempotently). Said, because that is minutes later.
        if members:
            log.error("%d processed event(s) were not stored, %s; they are processed again "
                      "when their jobs' lease lapses", members, why)

    async def end_group(self) -> None:
        """Commit the open group now (before anything else in this process uses the
        database: it would not see the group's changes, or would wait for its lock)."""
        if self._group is not None:
            if self._group_task is not None and self._group_task is asyncio.current_task():
                # A grouped transaction's body reading through the main connection: the group
                # cannot commit half-way, so that read sees what was committed before the
                # group, as it saw what was committed before its own transaction.
                return
            async with self._fast_lock:
                self._commit_group()

    def connect_sync_writer(self) -> sqlite3.Connection:
        """A second connection for the ingest writer (it owns it alone and writes through
        :attr:`gate`). Closed with the database."""
        conn = connect_sync(self.path, self.synchronous)
        self._sync.append(conn)
        return conn

    @contextlib.asynccontextmanager
    async def tx(self, *, relaxed: bool = False, grouped: bool = False
                 ) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (BEGIN IMMEDIATE ... COMMIT, ROLLBACK on any error).
        ``relaxed``: commit without an fsync (see the module docstring for when that is safe).

        ``grouped`` (relaxed too): a savepoint of a group of such transactions that commits
        once, at the event loop's next turn, or at once when anything else in this process
        uses the database (another transaction, a read not ``quick``, the ingest writer, a
        barrier, close). An error rolls back this transaction only (unless SQLite ends the
        whole transaction, on a full disk say: then the group is lost, logged, and its jobs
        run again when their lease lapses, as after a crash). Until the group commits
        its changes are seen only by ``quick`` reads and grouped transactions, and a crash
        loses them (its jobs run again): only for work re-derived idempotently, with no
        effect outside the database before the commit (whatever precedes one commits
        durably first, which ends the group). Why: the commit was a third of the worker's CPU
        per event; a backlog that needs no reply drains ~1.4x faster (bench/drain.py)."""
        fast = self._fast_conn() if relaxed or grouped else None
        if fast is not None:
            async with (self._grouped_tx(fast) if grouped else self._fast_tx(fast)) as conn:
                yield conn
            return
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

    async def barrier(self) -> None:
        """Make every commit so far durable (relaxed ones included) when the database is
        configured FULL: an fsync of the WAL file, which is what SQLite does at each commit
        under ``synchronous=FULL``, run in a thread after the commit, so neither the loop
        nor the write gate waits for the disk.

        Group fsync: returns after an fsync that *started* after this call. Callers that
        arrive while one runs (it may have started before their commit) share the next,
        so N concurrent barriers cost at most two fsyncs, not N thread hand-offs."""
        await self.end_group()
        if self.synchronous != "FULL" or str(self.path) == ":memory:":
            return
        if self._fsyncing is None:
            fut = self._start_fsync(asyncio.get_running_loop().create_future())
        else:
            if self._fsync_next is None:
                self._fsync_next = asyncio.get_running_loop().create_future()
            fut = self._fsync_next
        # Shielded: a cancelled caller must not cancel the fsync others wait for.
        await asyncio.shield(fut)

    def _start_fsync(self, fut: asyncio.Future[None]) -> asyncio.Future[None]:
        self._fsyncing = fut
        # Retrieved even when every waiter was cancelled (no "never retrieved" noise).
        fut.add_done_callback(lambda f: None if f.cancelled() else f.exception())
        task = asyncio.ensure_future(asyncio.to_thread(self._fsync_wal))
        task.add_done_callback(lambda t: self._fsync_done(t, fut))
        return fut

    def _fsync_done(self, task: asyncio.Future[None], fut: asyncio.Future[None]) -> None:
        self._fsyncing = None
        if task.cancelled():
            fut.cancel()
        elif (exc := task.exception()) is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(None)
        nxt, self._fsync_next = self._fsync_next, None
        if nxt is not None:
            self._start_fsync(nxt)

    def _fsync_wal(self) -> None:
        for name in (f"{self.path}-wal", str(self.path)):
            try:
                fd = os.open(name, os.O_RDONLY)
            except FileNotFoundError:
                continue  # no WAL file (nothing written since a checkpoint removed it)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return

    async def write_script(self, sql: str) -> None:
        """Run ``sql`` (statements with their own ``BEGIN IMMEDIATE`` ... ``COMMIT``) with
        ``executescript``, under the write gate like every write. Why: the sqlite3 module
        steps a statement without result columns only once, and some pragmas work one step
        at a time (``incremental_vacuum`` frees one page per step); executescript steps each
        statement to its end. A failure part way rolls back what the script began."""
        async with self.gate.normal(), self._lock:
            run = asyncio.ensure_future(self.main.executescript(sql))
            try:
                # Shielded: cancelled, the script would go on in aiosqlite's thread after
                # the gate and the lock were released (tx() holds them until it is clean).
                await asyncio.shield(run)
            except BaseException:
                with contextlib.suppress(Exception):
                    await run  # its end, whatever it is, before anything else writes
                if self.main.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        await self.main.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """Serialised access for reads and single-statement writes (autocommit)."""
        await self.end_group()
        async with self._lock:
            yield self.main

    async def fetchall(self, sql: str, params: Sequence[Any] = (), *, quick: bool = False
                       ) -> list[sqlite3.Row]:
        """Rows of one query. ``quick``: a short indexed lookup on the worker's hot path, run
        on the loop-thread connection (no thread hand-off; never a scan: it blocks the loop)."""
        fast = self._fast_conn() if quick else None
        if fast is not None:
            async with self._fast_lock:
                return fast.execute(sql, params).fetchall()
        async with self.read() as conn:
            return list(await conn.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: Sequence[Any] = (), *, quick: bool = False
                       ) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params, quick=quick)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Sequence[Any] = (), *, relaxed: bool = False
                      ) -> int:
        """One autocommitted write statement; returns the number of rows changed.
        ``relaxed`` as for :meth:`tx`."""
        fast = self._fast_conn() if relaxed else None
        if fast is not None:
            async with self._fast_tx(fast) as conn:
                return (await conn.execute(sql, params)).rowcount
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
        # A backup is the whole database, people's messages included: private, like it.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            target = await aiosqlite.connect(str(tmp))
            try:
                await self.end_group()
                async with self._lock:
                    await self.main.backup(target, pages=256)
            finally:
                await target.close()
            tmp.replace(dest)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no stray copy of the data
            raise

    async def integrity_ok(self) -> bool:
        row = await self.fetchone("PRAGMA integrity_check")
        return row is not None and row[0] == "ok"

    async def close(self) -> None:
        await self.end_group()
        if self._fast is not None:
            self._fast.close()
            self._fast = None
        for conn in self._sync:
            conn.close()
        self._sync.clear()
        await self.main.close()


def _create_private(path: Path) -> None:
    """Create the database's directory (0700) and an empty database file (0600) when they
    do not exist: the database holds people's messages, and SQLite would create the file
    with the umask's permissions (often world-readable). Its -wal and -shm files take the
    database file's permissions. Existing files and directories are left as they are."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            with contextlib.suppress(FileExistsError):  # created meanwhile: fine
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError | NotADirectoryError):
            # "File exists" alone does not say that a file sits where a directory should
            # (typically INSTASET_HOME pointing at a file): name it and the fix.
            from instaset.paths import not_a_directory

            reason = not_a_directory(path.parent) or reason
        raise StoreError(f"cannot create database {path}: {reason}") from None


async def open_database(path: Path, *, synchronous: Synchronous = "FULL") -> Database:
    """Open ``path`` (creating parent directories), apply pragmas and pending migrations."""

    if str(path) != ":memory:":
        if path.is_dir():  # sqlite3 says only "unable to open database file"
            raise StoreError(f"cannot open database {path}: it is a directory; storage.path "
                             f"names the database file itself (e.g. {path / 'instaset.db'})")
        _create_private(path)
    try:
        conn = await _connect(path, synchronous)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from None
    try:
        await apply_migrations(conn, time.time())
    except sqlite3.DatabaseError as exc:
        await conn.close()
        raise StoreError(f"cannot migrate database {path}: {exc}") from None
    except BaseException:
        await conn.close()
        raise
    return Database(path, conn, synchronous)
