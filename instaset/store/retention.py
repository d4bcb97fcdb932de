"""SQL of retention and erasure: bounded batches, one transaction per group of contacts.

Contract:
- Every write here is a short ``BEGIN IMMEDIATE`` transaction: a rowid range of one table
  (:class:`Purger`, sized by the caller to hold the write lock a fraction of a second) or a
  group of contacts (``Database.tx``), so a running daemon's ingest writer (busy_timeout
  10 s) waits a fraction of a second at worst, never fails with "database is locked".
- :func:`delete_contacts` removes everything about the given contacts in ONE transaction:
  a contact is never half deleted. "Everything" is every table that has both an
  ``account_id`` and a ``contact_id`` column (found by introspection, so tables that other
  features add are covered), the contact row itself (its conversation cascades), and the
  contact's jobs (:data:`instaset.store.jobs.JOBS_OF_CONTACT`, as data deletion finds them).
- Nothing here deletes a ready/running job of the time-based policy, or an unprocessed event
  that such a job will still process (:data:`EVENT_SETTLED`): work acknowledged to Meta is
  never lost to a purge. An unprocessed event whose job dead-lettered is no pending work.
- The one longer transaction is :meth:`Purger.write_bulk`, which the caller chooses only when
  most of a table goes (it holds the lock for a time that grows with the whole table: 1.2 s
  for a million messages on an idle 2-core VM, ~2 s under ingest, well inside busy_timeout).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiosqlite

from instaset.errors import StoreError
from instaset.store.accounts import delete_mentions
from instaset.store.db import Database, connect_sync
from instaset.store.jobs import JOBS_OF_CONTACT

T = TypeVar("T")

LOCKED_PATIENCE = 120.0  # seconds a purge batch keeps trying while the daemon holds the lock
MMAP_BYTES = 1 << 30  # the purging connection's memory map (address space, not memory)
BEGIN_POLL, BEGIN_WAIT = 0.002, 0.5  # the purge's own busy loop (see Purger._begin)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ON_DELETE = re.compile(r"\bDELETE\s+ON\b", re.IGNORECASE)  # a trigger's event clause

# Unsent messages that still hold content. The partial index messages_unsent (0007) has
# exactly this WHERE, so the scrub finds them without scanning the history.
UNSENT_UNSCRUBBED = ("deleted_at IS NOT NULL AND (text IS NOT NULL OR attachments != '[]'"
                     " OR edits != '[]')")

# Events the time policy may delete: processed ones, and unprocessed ones that no job can
# process any more (their process_event job, keyed ``event:<dedupe_key>``, dead-lettered,
# or gone): an unprocessed event whose job is ready (due or retrying later) or running is
# pending work, and is kept whatever its age.
EVENT_SETTLED = ("(processed_at IS NOT NULL OR NOT EXISTS (SELECT 1 FROM jobs"
                 " WHERE jobs.key = 'event:' || events.dedupe_key"
                 " AND jobs.state IN ('ready', 'running')))")

# Tables that erasure never touches: bookkeeping, and the connection itself.
_NEVER = frozenset({"schema_migrations", "accounts", "contacts"})


@dataclass(frozen=True, slots=True)
class Rule:
    """Rows of ``table`` matching ``where`` (one ``?`` parameter: the horizon) are deleted,
    or, with ``update``, rewritten by that SET clause instead. ``indexed``: an index holds
    exactly the matching rows (a partial index with the same WHERE), so batches are found
    through it; otherwise the table is walked once in rowid ranges (:class:`Purger`)."""

    table: str
    where: str
    update: str | None = None
    label: str = ""
    indexed: bool = False

    @property
    def name(self) -> str:
        return self.label or self.table


async def columns(db: Database) -> dict[str, set[str]]:
    """Every user table and its columns."""
    tables = [r[0] for r in await db.fetchall(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    )]
    out: dict[str, set[str]] = {}
    for t in tables:
        if _IDENT.match(t):
            out[t] = {r["name"] for r in await db.fetchall(f"PRAGMA table_info({t})")}
    return out


def contact_tables(cols: dict[str, set[str]]) -> list[str]:
    """Tables holding rows about one contact (both columns), children before parents."""
    found = [t for t, c in cols.items()
             if t not in _NEVER and {"account_id", "contact_id"} <= c]
    # Children first (clicks before links), and messages before the events they point at
    # (deleting an event first would make SQLite rewrite each message's event_id to NULL).
    order = {"clicks": 0, "messages": 0, "events": 2, "links": 2, "conversations": 3}
    return sorted(found, key=lambda t: (order.get(t, 1), t))


async def count(db: Database, table: str, where: str, params: Sequence[object]) -> int:
    row = await db.fetchone(f"SELECT count(*) FROM {table} WHERE {where}", params)
    return int(row[0]) if row else 0


# -- the bulk purger -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChildKey:
    """A single-column foreign key pointing at a purged table: ``table.column`` references
    ``parent_column`` (``rowid`` when that is the parent's INTEGER PRIMARY KEY), with its
    ON DELETE ``action`` (``CASCADE`` or ``SET NULL``)."""

    table: str
    column: str
    parent_column: str
    action: str


def child_keys(fks: Mapping[str, Sequence[tuple[int, str, str, str | None, str]]],
               rowid_pk: Mapping[str, str | None], parent: str) -> list[ChildKey] | None:
    """The foreign keys that reference ``parent``, as statements the purger can run itself;
    None when one of them is beyond that (composite, RESTRICT / NO ACTION / SET DEFAULT, or
    a CASCADE into a table that is itself referenced): ``parent`` is then purged with
    SQLite's own enforcement on. ``fks``: per table, its ``PRAGMA foreign_key_list`` rows as
    (id, parent table, from, to, on_delete); ``rowid_pk``: per table, its rowid alias."""
    out: list[ChildKey] = []
    referenced = {fk[1] for rows in fks.values() for fk in rows}
    for child, rows in fks.items():
        ids = [fk[0] for fk in rows]
        for fk_id, target, col, to, action in rows:
            if target != parent:
                continue
            if ids.count(fk_id) > 1 or action not in ("CASCADE", "SET NULL"):
                return None
            if action == "CASCADE" and child in referenced:
                return None
            key = to or rowid_pk.get(parent)
            if key is None or not _IDENT.match(key) or not _IDENT.match(col):
                return None
            out.append(ChildKey(child, col, "rowid" if key == rowid_pk.get(parent) else key,
                                action))
    return out


def _busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class Purger:
    """The time policy's (and erasure sweeps') bulk writes, on a connection of their own.

    Contract:
    - Its own sqlite3 connection, used from one worker thread: each batch (BEGIN IMMEDIATE,
      the statements, COMMIT) is one hand-off, and its pragmas are private: a large page
      cache, the database's own ``synchronous`` (with FULL each batch's commit syncs the WAL
      itself instead of leaving tens of MB to the next ingest commit's fsync), its own busy
      loop (:meth:`_begin`), no automatic checkpoint (:meth:`checkpoint` is called between
      batches, outside the write lock), and ``foreign_keys=OFF`` for the
      tables whose referencing keys it applies itself (:func:`child_keys`): SQLite runs its
      ON DELETE actions as a sub-program per deleted row (a third of the time of deleting
      events); here they are one set-based statement per batch, in the same transaction as
      the delete. The daemon's connections are not touched.
    - In-process writers: every write passes the database's :class:`WriteGate` (ingest
      first). Another process's lock is polled for (:meth:`_begin`); when it stays taken
      the batch leaves the gate, waits and tries again for up to :data:`LOCKED_PATIENCE`.
    - Batches are rowid ranges ``(after, upto]`` with the rule's WHERE evaluated again inside,
      so a row that stopped matching meanwhile is left alone and the walk needs no count or
      pre-scan. Rowids follow time (rows are written as time passes), so the old rows are
      one dense run of ranges; :meth:`first_match` skips the kept part with reads (no lock).
    """

    def __init__(self, db: Database, *, cache_kib: int) -> None:
        if str(db.path) == ":memory:":
            raise StoreError("purge needs a database file (not :memory:)")
        self._db = db
        self._cache_kib = cache_kib
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="instaset-purge")
        self._conn: sqlite3.Connection | None = None
        self._children: dict[str, list[ChildKey] | None] = {}
        self._keys: dict[str, str] = {}
        self._bulk_tables: set[str] = set()

    async def __aenter__(self) -> Purger:
        await self._run(self._open)
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self._run(self._close)
        finally:
            self._pool.shutdown(wait=False)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _open(self) -> None:
        conn = connect_sync(self._db.path, self._db.synchronous)
        conn.execute("PRAGMA busy_timeout=0")  # see _begin
        conn.execute(f"PRAGMA cache_size={-abs(int(self._cache_kib))}")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA temp_store=MEMORY")
        # Reads straight from the file's pages: every commit of the daemon empties this
        # connection's page cache (WAL), and a bulk purge reads every page of a table.
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        # Deleted cells are still overwritten inside the pages that keep living, but a page
        # that is freed whole is not rewritten with zeros (Debian's SQLite does that by
        # default: writing a bulk purge's 300,000 freed pages twice, to the WAL and to the
        # file, took longer than the purge itself). Freed pages leave the file with the
        # space reclaim that follows (incremental_vacuum, or VACUUM), see instaset.retention.
        conn.execute("PRAGMA secure_delete=FAST")
        self._conn = conn
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            if _IDENT.match(r[0])]
        # WITHOUT ROWID tables (none in instaset's own schema) are batched by primary key.
        for t in tables:
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (t,)).fetchone()
            if sql and re.search(r"\bWITHOUT\s+ROWID\b", str(sql[0]), re.IGNORECASE):
                pk = sorted((r[5], r[1]) for r in conn.execute(f"PRAGMA table_info({t})")
                            if r[5])
                self._keys[t] = "(" + ", ".join(name for _, name in pk) + ")"
        fks: dict[str, list[tuple[int, str, str, str | None, str]]] = {}
        rowid_pk: dict[str, str | None] = {}
        for t in tables:
            # (id, seq, table, from, to, on_update, on_delete, match)
            fks[t] = [(r[0], r[2], r[3], r[4], str(r[6]).upper())
                      for r in conn.execute(f"PRAGMA foreign_key_list({t})")]
            info = conn.execute(f"PRAGMA table_info({t})").fetchall()
            pks = [r for r in info if r[5]]
            rowid_pk[t] = (pks[0][1] if len(pks) == 1 and t not in self._keys
                           and str(pks[0][2]).upper() == "INTEGER" else None)
        self._children = {t: child_keys(fks, rowid_pk, t) for t in tables}
        self._bulk_tables = {
            t for t in tables if self.has_rowid(t) and (ch := self._children[t]) is not None
            and all(c.table != t for c in ch)
            and not any(_ON_DELETE.search(sql.split("BEGIN", 1)[0])
                        for _, sql in self._triggers(t))}

    def has_rowid(self, table: str) -> bool:
        """False for a WITHOUT ROWID table: it cannot be walked in rowid ranges (its rule
        is then applied like an ``indexed`` one, by its primary key)."""
        return table not in self._keys

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _c(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("the purger is not open")
        return self._conn

    async def span(self, table: str) -> tuple[int, int] | None:
        """(lowest, highest) rowid of ``table`` now; None when it is empty."""
        row = await self._run(lambda: self._c().execute(
            f"SELECT min(rowid), max(rowid) FROM {table}").fetchone())
        return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

    async def first_match(self, rule: Rule, params: Sequence[object], after: int, upto: int
                          ) -> int | None:
        """The lowest rowid in ``(after, upto]`` matching the rule, or None. A read: no lock,
        so the kept part of a table is walked without holding up the daemon's writers."""
        row = await self._run(lambda: self._c().execute(
            f"SELECT rowid FROM {rule.table} NOT INDEXED WHERE rowid > ? AND rowid <= ?"
            f" AND ({rule.where}) ORDER BY rowid LIMIT 1", (after, upto, *params)).fetchone())
        return None if row is None or row[0] is None else int(row[0])

    def _statements(self, rule: Rule, params: Sequence[object], after: int, upto: int
                    ) -> tuple[bool, list[tuple[str, tuple[object, ...]]]]:
        """(foreign keys on?, the statements of one range, the rule's own last)."""
        rng = f"rowid > ? AND rowid <= ? AND ({rule.where})"
        args = (after, upto, *params)
        if rule.update is not None:
            return True, [(f"UPDATE {rule.table} NOT INDEXED SET {rule.update} WHERE {rng}",
                           args)]
        children = self._children.get(rule.table)
        if children is None:  # SQLite enforces the keys itself
            return True, [(f"DELETE FROM {rule.table} NOT INDEXED WHERE {rng}", args)]
        stmts: list[tuple[str, tuple[object, ...]]] = []
        for ch in children:
            parents = f"SELECT {ch.parent_column} FROM {rule.table} WHERE {rng}"
            # A rowid key also bounds the child column: an index range instead of a probe
            # per parent row.
            bound = (f"{ch.column} > ? AND {ch.column} <= ? AND "
                     if ch.parent_column == "rowid" else "")
            bargs = (after, upto) if bound else ()
            if ch.action == "CASCADE":
                sql = f"DELETE FROM {ch.table} WHERE {bound}{ch.column} IN ({parents})"
            else:
                sql = (f"UPDATE {ch.table} SET {ch.column} = NULL"
                       f" WHERE {bound}{ch.column} IN ({parents})")
            stmts.append((sql, (*bargs, *args)))
        stmts.append((f"DELETE FROM {rule.table} NOT INDEXED WHERE {rng}", args))
        return False, stmts

    def _begin(self, conn: sqlite3.Connection) -> bool:
        """BEGIN IMMEDIATE, polling every :data:`BEGIN_POLL` seconds for up to
        :data:`BEGIN_WAIT`; False when the lock stayed taken. SQLite's own busy handler
        sleeps up to 100 ms between tries: against a daemon that commits many times a
        second it keeps missing the short gaps, and the purge waited longer for the lock
        than it held it."""
        give_up = time.monotonic() + BEGIN_WAIT
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return True
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise
            if time.monotonic() >= give_up:
                return False
            time.sleep(BEGIN_POLL)

    def _transaction(self, fk_on: bool, body: Callable[[sqlite3.Connection], int]
                     ) -> tuple[int, float] | None:
        """``body`` inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on any error), with SQLite's
        key enforcement ``fk_on``: (its count, seconds the write lock was held), or None
        when the lock stayed taken (see :meth:`_begin`)."""
        conn = self._c()
        conn.execute(f"PRAGMA foreign_keys={'ON' if fk_on else 'OFF'}")  # outside a tx
        if not self._begin(conn):
            return None
        started = time.perf_counter()
        try:
            n = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return n, time.perf_counter() - started

    def _write(self, fk_on: bool, stmts: list[tuple[str, tuple[object, ...]]]
               ) -> tuple[int, float] | None:
        def run(conn: sqlite3.Connection) -> int:
            n = 0
            for sql, args in stmts:
                n = max(conn.execute(sql, args).rowcount, 0)
            return n
        return self._transaction(fk_on, run)

    async def _locked_retry(self, write: Callable[..., tuple[int, float] | None],
                            *args: object) -> tuple[int, float]:
        """One transaction; (rows of the last statement, seconds the write lock was held:
        waiting for it is not counted, so a busy daemon does not make the caller shrink its
        batches). A purge is the least urgent writer there is: when the daemon keeps the lock
        past ``busy_timeout`` it waits and tries again instead of failing."""
        give_up = time.monotonic() + LOCKED_PATIENCE
        while True:
            async with self._db.gate.normal():
                done = await self._run(write, *args)
            if done is not None:
                return done
            if time.monotonic() >= give_up:
                raise StoreError(f"the database stayed locked for {LOCKED_PATIENCE:.0f} s"
                                 " (another process holds a write transaction open?)")
            # Out of the write gate meanwhile: in the daemon, ingest must not wait for us.
            await asyncio.sleep(0.05)

    async def write_range(self, rule: Rule, params: Sequence[object], after: int, upto: int
                          ) -> tuple[int, float]:
        """Apply ``rule`` to its rows with ``after < rowid <= upto`` in one transaction:
        (rows, seconds the write lock was held)."""
        fk_on, stmts = self._statements(rule, params, after, upto)
        return await self._locked_retry(self._write, fk_on, stmts)

    async def write_indexed(self, rule: Rule, params: Sequence[object], limit: int
                            ) -> tuple[int, float]:
        """Up to ``limit`` rows of an ``indexed`` rule (its partial index holds exactly the
        matching rows, so no range walk is needed)."""
        key = self._keys.get(rule.table, "rowid")
        pick = f"SELECT {key.strip('()')} FROM {rule.table} WHERE {rule.where} LIMIT ?"
        sql = (f"DELETE FROM {rule.table} WHERE {key} IN ({pick})" if rule.update is None
               else f"UPDATE {rule.table} SET {rule.update} WHERE {key} IN ({pick})")
        return await self._locked_retry(self._write, True, [(sql, (*params, limit))])

    def bulk_ready(self, rule: Rule) -> bool:
        """Whether :meth:`write_bulk` can apply ``rule``: a delete on a rowid table whose
        referencing keys the purger applies itself (none from the table to itself) and that
        has no DELETE trigger (the bulk path empties the table without firing any)."""
        return rule.update is None and rule.table in self._bulk_tables

    def _triggers(self, table: str) -> list[tuple[str, str]]:
        return [(str(n), str(s)) for n, s in self._c().execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?"
            " AND sql IS NOT NULL", (table,))]

    async def estimate(self, rule: Rule, params: Sequence[object], samples: int = 64
                       ) -> tuple[int, float]:
        """(rows in the table at most, share of them the rule matches, estimated from
        ``samples`` rows spread evenly over the rowid range): point reads, no lock, no scan."""
        def run() -> tuple[int, float]:
            c = self._c()
            lo, hi = c.execute(f"SELECT min(rowid), max(rowid) FROM {rule.table}").fetchone()
            if lo is None:
                return 0, 0.0
            # The rowid span bounds the row count from above; count(*) would read a whole
            # index (half a second for a million messages).
            total = int(hi) - int(lo) + 1
            hits = seen = 0
            probe = (f"SELECT coalesce(({rule.where}), 0) FROM {rule.table}"
                     " WHERE rowid >= ? ORDER BY rowid LIMIT 1")
            for i in range(samples):
                row = c.execute(probe, (*params, lo + (hi - lo) * i // max(samples - 1, 1))
                                ).fetchone()
                if row is not None:
                    seen += 1
                    hits += bool(row[0])
            return total, hits / max(seen, 1)
        return await self._run(run)

    def _bulk(self, rule: Rule, params: Sequence[object]) -> tuple[int, float] | None:
        # The kept rows (up to half of the table) go to a temporary file, not to memory.
        self._c().execute("PRAGMA temp_store=FILE")
        try:
            # Keys off: the referencing keys are applied in _bulk_body.
            return self._transaction(False, lambda conn: self._bulk_body(conn, rule, params))
        finally:
            self._c().execute("PRAGMA temp_store=MEMORY")

    def _bulk_body(self, conn: sqlite3.Connection, rule: Rule, params: Sequence[object]
                   ) -> int:
        t = rule.table
        # Read inside the transaction: the schema cannot change under it.
        cols = ", ".join('"' + str(r[1]).replace('"', '""') + '"' for r in conn.execute(
            f"PRAGMA table_xinfo({t})") if r[6] == 0)  # not generated columns
        triggers = self._triggers(t)
        conn.execute("DROP TABLE IF EXISTS temp.purge_keep")
        conn.execute(f"CREATE TEMP TABLE purge_keep (purge_rowid INTEGER PRIMARY KEY,"
                     f" {cols})")  # untyped columns: values are copied as they are
        conn.execute(f"INSERT INTO temp.purge_keep SELECT rowid, {cols} FROM {t}"
                     f" WHERE NOT coalesce(({rule.where}), 0)", tuple(params))
        for ch in self._children.get(t) or []:
            key = "purge_rowid" if ch.parent_column == "rowid" else ch.parent_column
            gone = (f"{ch.column} IS NOT NULL AND {ch.column} NOT IN"
                    f" (SELECT {key} FROM temp.purge_keep WHERE {key} IS NOT NULL)")
            conn.execute(f"DELETE FROM {ch.table} WHERE {gone}" if ch.action == "CASCADE"
                         else f"UPDATE {ch.table} SET {ch.column} = NULL WHERE {gone}")
        # Without triggers and with the keys off, SQLite empties the table by freeing its
        # pages (and its indexes') instead of deleting row by row; the kept rows go back
        # with their rowids, and without firing the INSERT triggers a second time.
        for name, _ in triggers:
            conn.execute('DROP TRIGGER "' + name.replace('"', '""') + '"')
        total = max(conn.execute(f"DELETE FROM {t}").rowcount, 0)
        kept = max(conn.execute(f"INSERT INTO {t} (rowid, {cols}) SELECT purge_rowid,"
                                f" {cols} FROM temp.purge_keep").rowcount, 0)
        for _, sql in triggers:
            conn.execute(sql)
        conn.execute("DROP TABLE temp.purge_keep")
        return total - kept

    async def write_bulk(self, rule: Rule, params: Sequence[object]) -> tuple[int, float]:
        """Apply ``rule`` to the whole table in ONE transaction by copying the rows it keeps
        aside, emptying the table and putting them back (same rowids and values; triggers
        and indexes as before): (rows deleted, seconds the write lock was held). Its cost
        follows the table's size in pages, not the rows deleted times their indexes, so it
        pays when most of the table goes; the lock is held for all of it. Only for rules
        :meth:`bulk_ready` accepts."""
        if not self.bulk_ready(rule):
            raise StoreError(f"{rule.table}: the bulk purge cannot apply this rule")
        return await self._locked_retry(self._bulk, rule, params)

    async def checkpoint(self) -> float:
        """A PASSIVE checkpoint of what the purge wrote (seconds it took). Run between
        batches: it takes no write lock, so the daemon's writers go on meanwhile, and their
        own automatic checkpoint then finds nothing left to copy (or the checkpoint lock
        taken, and skips) instead of copying the purge's pages inside an ingest commit."""
        started = time.perf_counter()
        await self._run(lambda: self._c().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall())
        return time.perf_counter() - started


# -- contacts ---------------------------------------------------------------------------------
async def contacts_page(
    db: Database, account_id: str | None, after: tuple[str, str], limit: int
) -> list[tuple[str, str]]:
    """The next ``limit`` contacts after ``after`` in (account_id, id) order (keyset paging:
    stable while rows are deleted behind the cursor)."""
    rows = await db.fetchall(
        "SELECT account_id, id FROM contacts WHERE (?1 IS NULL OR account_id = ?1)"
        " AND (account_id, id) > (?2, ?3) ORDER BY account_id, id LIMIT ?4",
        (account_id, after[0], after[1], limit),
    )
    return [(r[0], r[1]) for r in rows]


async def _delete_contact_in(
    conn: aiosqlite.Connection, tables: Sequence[str], account_id: str, contact_id: str,
    totals: dict[str, int], *, jobs: str, mentions: bool = True,
) -> None:
    if jobs != "none":
        # First: the jobs of their events and sends are found through those rows.
        # "ready" only: the jobs_due index finds them without a scan. "all" also scans the
        # finished ones (fine for one contact; account-wide erasure sweeps them afterwards).
        state = "state = 'ready'" if jobs == "ready" else "state != 'running'"
        cur = await conn.execute(
            f"DELETE FROM jobs WHERE {state} AND {JOBS_OF_CONTACT}", (account_id, contact_id)
        )
        totals["jobs"] = totals.get("jobs", 0) + max(cur.rowcount, 0)
    if mentions:  # not when the account's own events all go anyway (erasing it whole)
        named = await delete_mentions(conn, account_id, contact_id)
        if named:
            totals["events naming them"] = totals.get("events naming them", 0) + named
    for t in tables:
        cur = await conn.execute(
            f"DELETE FROM {t} WHERE account_id = ? AND contact_id = ?", (account_id, contact_id)
        )
        totals[t] = totals.get(t, 0) + max(cur.rowcount, 0)
    cur = await conn.execute(
        "DELETE FROM contacts WHERE account_id = ? AND id = ?", (account_id, contact_id)
    )
    totals["contacts"] = totals.get("contacts", 0) + max(cur.rowcount, 0)


async def delete_contacts(
    db: Database, tables: Sequence[str], contacts: Sequence[tuple[str, str]], *,
    jobs: str = "all", mentions: bool = True,
) -> dict[str, int]:
    """Erase ``contacts`` ((account_id, contact_id) pairs) in ONE transaction. ``jobs``:
    ``all`` (every job naming the contact that is not running), ``ready`` or ``none``.
    ``mentions``: also the events filed under no contact that name them
    (:func:`~instaset.store.accounts.delete_mentions`; pointless when the account's
    events all go anyway)."""
    totals: dict[str, int] = {}
    async with db.tx() as conn:
        for acct, contact in contacts:
            await _delete_contact_in(conn, tables, acct, contact, totals, jobs=jobs,
                                     mentions=mentions)
    return totals


async def count_contact(
    db: Database, tables: Sequence[str], account_id: str, contact_id: str
) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in tables:
        out[t] = await count(db, t, "account_id = ? AND contact_id = ?", (account_id, contact_id))
    out["jobs"] = await count(db, "jobs", f"state != 'running' AND {JOBS_OF_CONTACT}",
                              (account_id, contact_id))
    out["contacts"] = await count(db, "contacts", "account_id = ? AND id = ?",
                                  (account_id, contact_id))
    return out


# -- space ------------------------------------------------------------------------------------
async def pragma_int(db: Database, name: str) -> int:
    row = await db.fetchone(f"PRAGMA {name}")
    return int(row[0]) if row and row[0] is not None else 0


async def incremental_vacuum(db: Database, pages: int) -> None:
    """Return up to ``pages`` free pages to the OS (needs ``auto_vacuum=INCREMENTAL``), in
    one short write transaction. A script: the pragma frees one page per step, and a plain
    execute steps it once (one transaction per page: 25,000 fsync'd commits for 100 MB)."""
    await db.write_script(
        f"BEGIN IMMEDIATE; PRAGMA incremental_vacuum({int(pages)}); COMMIT;")


async def vacuum_into_incremental(db: Database) -> None:
    """Rebuild the file (VACUUM) and switch it to ``auto_vacuum=INCREMENTAL``, so that later
    purges can return space while the daemon runs. Only when nothing else uses the file."""
    async with db.read() as conn:
        await conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        await conn.execute("VACUUM")


async def checkpoint(db: Database, *, truncate: bool) -> tuple[int, int, int]:
    """``wal_checkpoint``: TRUNCATE (also shrinks the WAL file) when nothing else uses the
    database, else PASSIVE (never waits for the daemon's writers). Returns (busy, wal pages,
    checkpointed pages)."""
    mode = "TRUNCATE" if truncate else "PASSIVE"
    row = await db.fetchone(f"PRAGMA wal_checkpoint({mode})")
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)
