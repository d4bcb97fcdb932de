"""Group commit of webhook events.

Contract: :meth:`IngestWriter.submit` resolves only after the events are committed durably,
so a 200 never precedes durability. One writer task owns its own connection; concurrent
requests queue their rows and share one commit (the batch grows with load, so an idle
server adds no latency and a busy one does not pay one fsync per request). Events whose
account is not connected are dropped inside the same statement, so a concurrent
``disconnect`` cannot race it; a dedupe key already stored is a duplicate, not stored again.

Two ways to store, one order:
- **Direct** (a lone request, the usual delivery): each event goes into ``events`` with its
  ``process_event`` job, in the same transaction.
- **Staged** (a batch of :data:`STAGE_FROM` requests or more, or while rows are staged):
  the events go into ``staged_events`` only, a table without the indexes of ``events``, so
  the commit that the senders wait for is short. The writer moves staged rows, in arrival
  order, into ``events`` with their jobs (one transaction per chunk of :data:`MOVE_ROWS`)
  whenever no request waits for its answer; while requests keep coming, as soon as the
  worker has run out of due jobs since the last move (``ran_dry``), and at least every
  :data:`MOVE_EVERY` seconds; on :meth:`IngestWriter.stop`, and after a restart (what a
  crash left).
  While rows are staged, new events are staged too, so ``events.id`` keeps the order of
  arrival. A staged row is durable like an event: acknowledged means stored either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from instaset.store.db import Database
from instaset.store.gate import WriteGate

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger("instaset.webhook")

MAX_BATCH_ROWS = 4096
STAGE_FROM = 4  # requests in one batch from which it is staged (ingest under load)
MOVE_ROWS = 128  # staged rows moved per transaction: a few ms of holding the write lock
# While requests keep coming, staged rows move when the worker has run out of due jobs since
# the last move: it never waits for events while rows are staged (a moderate, steady load's
# DMs reach it within a few ms), and no writer time goes to moving rows the worker could not
# take yet (a move of MOVE_ROWS costs as much writer time as a few batches of requests; under
# a saturating burst, moving as fast as rows were staged took a fifth of the writer's time
# and cut ingest throughput by as much, while the worker, slower than ingest, fell behind
# anyway). MOVE_EVERY bounds the wait when the worker never runs dry (busy with other jobs).
MOVE_EVERY = 1.0
IDLE_POLL = 0.005  # seconds: with staged rows to move, how often the writer checks for calm
MOVE_RETRY = 1.0  # seconds before a move that failed (disk full, a locked database) is retried
STOP_MOVING = 10.0  # seconds stop() moves staged rows; the rest moves at the next start


@dataclass(frozen=True, slots=True)
class EventRow:
    dedupe_key: str
    account_id: str
    kind: str
    contact_id: str | None
    occurred_at: float
    raw: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    stored: int  # new rows (not duplicates, not dropped)
    dropped: int = 0  # events of accounts that are not connected (not stored)
    unconnected: tuple[str, ...] = ()  # those accounts' ids


# The echo of a message already in the history (our own send, recorded when Meta answered
# the call, which is usually before the echo arrives) is stored processed: processing it
# would change nothing, and a job per echo was a fifth of the worker's work per reply.
_INSERT_EVENT = """
INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at, received_at, raw,
                   processed_at)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7,
       CASE WHEN ?3 = 'echo' AND substr(?1, 1, 4) = 'msg:'
                 AND EXISTS (SELECT 1 FROM messages WHERE mid = substr(?1, 5)
                             AND account_id = ?2 AND direction = 'out') THEN ?6 END
WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?2 AND state != 'disconnected')
ON CONFLICT(dedupe_key) DO NOTHING
"""

# Staged: into the staging table, under the same two conditions as a direct insert (a connected
# account, a key not stored yet in events or in the staging table).
_STAGE_EVENT = """
INSERT INTO staged_events(dedupe_key, account_id, kind, contact_id, occurred_at, received_at, raw)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
WHERE EXISTS (SELECT 1 FROM accounts WHERE id = ?2 AND state != 'disconnected')
  AND NOT EXISTS (SELECT 1 FROM events WHERE dedupe_key = ?1)
ON CONFLICT(dedupe_key) DO NOTHING
"""

# A chunk of the staging table (ids up to ?1) into events, in arrival order, as _INSERT_EVENT
# does (an echo of a message already recorded is stored processed, at its arrival, as if it
# had gone straight in). ON CONFLICT: a defence
# (catch-up moves staged rows before it inserts; nothing else inserts a webhook's key).
_MOVE_EVENTS = """
INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at, received_at, raw,
                   processed_at)
SELECT i.dedupe_key, i.account_id, i.kind, i.contact_id, i.occurred_at, i.received_at, i.raw,
       CASE WHEN i.kind = 'echo' AND substr(i.dedupe_key, 1, 4) = 'msg:'
                 AND EXISTS (SELECT 1 FROM messages WHERE mid = substr(i.dedupe_key, 5)
                             AND account_id = i.account_id AND direction = 'out')
            THEN i.received_at END
FROM staged_events i WHERE i.id <= ?1 ORDER BY i.id
ON CONFLICT(dedupe_key) DO NOTHING
"""

# Their jobs, due from when the event arrived (so the job latency counts the staged wait).
_MOVE_JOBS = """
INSERT INTO jobs(kind, key, payload, run_at, max_attempts, created_at)
SELECT 'process_event', 'event:' || e.dedupe_key, json_object('event_id', e.id),
       i.received_at, ?2, i.received_at
FROM staged_events i JOIN events e ON e.dedupe_key = i.dedupe_key
WHERE i.id <= ?1 AND e.processed_at IS NULL ORDER BY i.id
ON CONFLICT(key) DO NOTHING
"""

# The job row follows the event row; duplicates and dropped events insert nothing.
_INSERT_JOB = """
INSERT INTO jobs(kind, key, payload, run_at, max_attempts, created_at)
SELECT 'process_event', 'event:' || e.dedupe_key, json_object('event_id', e.id), ?2, ?3, ?2
FROM events e WHERE e.dedupe_key = ?1 AND e.processed_at IS NULL
ON CONFLICT(key) DO NOTHING
"""


# The oldest staged rows, at most ?1: how many, and the id up to which they go.
_OLDEST_STAGED = """
SELECT count(*), max(id) FROM (SELECT id FROM staged_events ORDER BY id LIMIT ?1)
"""

_ANY_STAGED = "SELECT EXISTS (SELECT 1 FROM staged_events)"


def _move_statements(top: int, max_attempts: int) -> list[tuple[str, tuple[object, ...]]]:
    """What moves the staged rows with ids up to ``top`` into ``events`` with their jobs,
    and out of the staging table, in this order, in one transaction: the ingest writer's
    own moves and :func:`move_staged` alike."""
    return [(_MOVE_EVENTS, (top,)), (_MOVE_JOBS, (top, max_attempts)),
            ("DELETE FROM staged_events WHERE id <= ?", (top,))]


async def any_staged(db: Database) -> bool:
    """Whether ingest holds acknowledged events not moved into ``events`` yet."""
    row = await db.fetchone(_ANY_STAGED)
    return row is not None and bool(row[0])


async def move_staged(conn: aiosqlite.Connection, *, max_attempts: int, limit: int
                      ) -> tuple[int, bool]:
    """Inside a write transaction of another writer than the ingest writer (catch-up's
    recovered events, in this process or the CLI's): move the oldest staged rows, at most
    ``limit``, into ``events`` with their jobs, as the writer does. Returns (rows moved,
    whether nothing is staged now): only then does what this transaction inserts next come
    after every acknowledged event. Works with no daemon running too. The ingest writer's
    count of staged rows may be high afterwards, never low, until its next move takes fewer
    than :data:`MOVE_ROWS` rows (all there were)."""
    rows = list(await conn.execute_fetchall(_OLDEST_STAGED, (limit,)))
    count, top = int(rows[0][0]), rows[0][1]
    if count:
        for sql, args in _move_statements(top, max_attempts):
            await conn.execute(sql, args)
    left = list(await conn.execute_fetchall(_ANY_STAGED))
    return count, not left[0][0]


def _never() -> float:
    """``ran_dry`` of a writer that does not know the worker's hunger."""
    return -math.inf


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT on the writer's connection; ROLLBACK on any error (a
    return inside commits)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


class IngestWriter:
    """See the module docstring. ``conn`` is a plain sqlite3 connection this writer owns;
    each batch, and each move out of the staging table, is one call in its own thread (BEGIN, the
    statements, COMMIT), under the database's write gate with priority over the worker."""

    def __init__(
        self, conn: sqlite3.Connection, *, gate: WriteGate, wake: asyncio.Event,
        max_attempts: int, clock: Callable[[], float] = time.time,
        ran_dry: Callable[[], float] | None = None,
    ) -> None:
        """``ran_dry``: the monotonic time the worker last found fewer due jobs than it had
        room for (none: the worker's hunger is not known, and only calm and
        :data:`MOVE_EVERY` move staged rows while requests keep coming)."""
        self._conn = conn
        self._synchronous = int(conn.execute("PRAGMA synchronous").fetchone()[0])  # configured
        self._gate = gate
        self._wake = wake
        self._max_attempts = max_attempts
        self._clock = clock
        self._ran_dry = ran_dry if ran_dry is not None else _never
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="instaset-ingest"
        )
        self._queue: asyncio.Queue[tuple[Sequence[EventRow], asyncio.Future[IngestResult]]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.rows = 0
        self.moved = 0  # staged rows moved into events (or found there already)
        self._waiting = 0  # requests submitted and not answered yet
        self._submitted_at = -math.inf  # monotonic time of the last submit
        self._backlog = 0  # rows in the staging table (read at start, then counted)
        self._moved_at = 0.0  # monotonic time of the last move
        self._retry_at = 0.0  # after a failed move: not before this (monotonic)

    @property
    def busy(self) -> bool:
        """True while a request waits for its commit."""
        return self._waiting > 0

    def arrived_within(self, seconds: float) -> bool:
        """True while a request waits for its commit, or if one was submitted in the last
        ``seconds`` (a webhook sender between two requests)."""
        return self.busy or time.monotonic() - self._submitted_at < seconds

    @property
    def backlog(self) -> int:
        """Events in the staging table, not yet moved into ``events`` (see the module docstring)."""
        return self._backlog

    def start(self) -> None:
        # What a crash or a failed stop left in the staging table moves first (the writer's loop
        # moves while no request waits).
        self._backlog = int(self._conn.execute("SELECT count(*) FROM staged_events").fetchone()[0])
        self._moved_at = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self) -> None:
        """Finish what is queued, move staged rows into ``events`` for up to
        :data:`STOP_MOVING` seconds (a service manager's stop timeout is not much longer),
        then stop. What is left stays staged, durable, and moves at the next start."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            # Until nothing is staged. The count may be high, never low: a move cancelled
            # with the task above still ran to its end in the thread, uncounted.
            deadline = time.monotonic() + STOP_MOVING
            while await self._move() > 0 and self._backlog:  # the count never undercounts
                if time.monotonic() >= deadline:
                    log.warning("stopping with %d events still staged: they are stored, "
                                "and move into events at the next start", self._backlog)
                    break
        self._executor.shutdown(wait=True)

    async def settle(self) -> None:
        """Move every staged row into ``events`` now (tests)."""
        while await self._move() > 0:
            pass

    async def submit(self, rows: Sequence[EventRow]) -> IngestResult:
        if self._task is None or self._task.done():
            raise RuntimeError("ingest writer is not running")
        fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((rows, fut))  # unbounded: never waits
        self._waiting += 1
        self._submitted_at = time.monotonic()
        try:
            # Not shielded: the commit goes on if this request is cancelled (the writer
            # only skips answering a cancelled future).
            return await fut
        finally:
            self._waiting -= 1

    def _move_due(self, now: float) -> bool:
        """Whether staged rows move now though requests wait (``now``: monotonic): once the
        worker has run out of due jobs since the last move, or every :data:`MOVE_EVERY`;
        never before a failed move's retry time."""
        if not self._backlog or now < self._retry_at:
            return False
        return now - self._moved_at >= MOVE_EVERY or self._ran_dry() > self._moved_at

    async def _run(self) -> None:
        while True:
            if self._backlog and self._queue.empty():
                now = time.monotonic()
                if (not self._waiting and now >= self._retry_at) or self._move_due(now):
                    # No request waits for an answer (the staging table's turn), or the
                    # staged rows waited long enough.
                    await self._move()
                    continue
                # Answers still going out (or a move just failed): look again shortly.
                try:
                    first = await asyncio.wait_for(
                        self._queue.get(), max(IDLE_POLL, self._retry_at - now))
                except TimeoutError:
                    continue
            else:
                first = await self._queue.get()
            batch = [first]
            n = len(batch[0][0])
            while not self._queue.empty() and n < MAX_BATCH_ROWS:
                item = self._queue.get_nowait()
                batch.append(item)
                n += len(item[0])
            try:
                if self._move_due(time.monotonic()):
                    await self._move()  # the staging table's share while requests keep coming
                stage = self._backlog > 0 or len(batch) >= STAGE_FROM
                await self._commit_all(batch, stage)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _move(self) -> int:
        """Move one chunk of staged rows into ``events``; returns the rows moved (0: none
        was staged), or -1 when the move failed (logged; the rows stay staged)."""
        loop = asyncio.get_running_loop()
        try:
            async with self._gate.urgent():
                moved = await loop.run_in_executor(self._executor, self._move_chunk)
        except Exception as exc:
            self._retry_at = time.monotonic() + MOVE_RETRY
            log.error("could not move %d staged events into events: %s (they stay staged, "
                      "and the move is tried again)", self._backlog, exc)
            return -1
        finally:
            # At the end: a claim that came back short while the move ran did not see its
            # rows, and must not count as hunger after it (ran_dry).
            self._moved_at = time.monotonic()
        # A chunk smaller than MOVE_ROWS took every staged row (only this writer stages, one
        # call at a time): the count is exact again, whatever catch-up moved behind its back.
        self._backlog = max(0, self._backlog - moved) if moved >= MOVE_ROWS else 0
        if moved:
            self.moved += moved
            self._wake.set()
        return moved

    def _move_chunk(self) -> int:
        """Runs in the writer's thread: the oldest :data:`MOVE_ROWS` staged rows into
        ``events`` with their jobs, and out of the staging table, in one transaction."""
        conn = self._conn
        # Without an fsync: the rows are durable in the staging table already. A power loss
        # that rolls the move back leaves them staged, to move again at the next start, and
        # the next fsync of the WAL (one file for every connection: a FULL commit, or
        # Database.barrier before a send) makes the move durable too, so nothing that depends
        # on it can outlive it. _commit sets the configured level back for each batch.
        conn.execute("PRAGMA synchronous=NORMAL")
        with _immediate(conn):
            count, top = conn.execute(_OLDEST_STAGED, (MOVE_ROWS,)).fetchone()
            if count:
                for sql, args in _move_statements(top, self._max_attempts):
                    conn.execute(sql, args)
            return int(count)

    async def _commit_all(
        self, batch: list[tuple[Sequence[EventRow], asyncio.Future[IngestResult]]],
        stage: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self._gate.urgent():
                results = await loop.run_in_executor(
                    self._executor, self._commit, [rows for rows, _ in batch], self._clock(),
                    stage,
                )
        except Exception as exc:
            if len(batch) > 1:
                # One bad request must not fail the others that shared its commit.
                for item in batch:
                    await self._commit_all([item], stage)
                return
            log.error("ingest commit failed: %s", exc)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for (_, fut), res in zip(batch, results, strict=True):
            if not fut.done():
                fut.set_result(res)
        self.batches += 1
        self.rows += sum(len(rows) for rows, _ in batch)
        if stage:
            self._backlog += sum(r.stored for r in results)
        else:
            self._wake.set()  # new jobs

    def _commit(self, requests: list[Sequence[EventRow]], now: float, stage: bool = False
                ) -> list[IngestResult]:
        """Runs in the writer's thread: the whole batch in one transaction, into ``events``
        with the jobs, or into the staging table (``stage``)."""
        conn = self._conn
        results: list[IngestResult] = []
        # The configured level, set for every batch (a move lowers it): if this fails, the
        # batch fails, and nothing is acknowledged without the fsync it was promised.
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        with _immediate(conn):
            # One executemany per request keeps per-request counts; still one commit for all.
            for rows in requests:
                # rowcount: the rows these statements inserted (total_changes would also
                # count what a trigger on events writes).
                cur = conn.executemany(
                    _STAGE_EVENT if stage else _INSERT_EVENT,
                    [(r.dedupe_key, r.account_id, r.kind, r.contact_id, r.occurred_at, now,
                      r.raw) for r in rows],
                )
                stored = max(0, cur.rowcount)
                if stored < len(rows):  # duplicates, or events no connected account takes
                    results.append(self._not_stored(conn, rows, stored))
                else:
                    results.append(IngestResult(stored))
            if not stage:
                conn.executemany(
                    _INSERT_JOB,
                    [(r.dedupe_key, now, self._max_attempts) for rows in requests for r in rows],
                )
        return results

    @staticmethod
    def _not_stored(conn: sqlite3.Connection, rows: Sequence[EventRow], stored: int
                    ) -> IngestResult:
        """Tells dropped events (their account is not connected) from duplicates; only
        for a request some of whose events were not stored."""
        ids = sorted({r.account_id for r in rows})
        marks = ",".join("?" * len(ids))
        connected = {row[0] for row in conn.execute(
            f"SELECT id FROM accounts WHERE state != 'disconnected' AND id IN ({marks})", ids)}
        lost = [r.account_id for r in rows if r.account_id not in connected]
        return IngestResult(stored, len(lost), tuple(sorted(set(lost))))
