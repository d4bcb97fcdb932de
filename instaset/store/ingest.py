"""Group commit of webhook events.

Contract: :meth:`IngestWriter.submit` resolves only after the events are committed durably,
so a 200 never precedes durability. One writer owns its own connection and commits in its
own thread; concurrent requests queue their rows and share one commit (the batch grows with
load, so an idle server adds no latency and a busy one does not pay one fsync per request).
Under load the thread goes from one batch to the next without handing back to the event loop
in between (see :meth:`IngestWriter._drain`). Events whose
account is not connected are dropped inside the same statement, so a concurrent
``disconnect`` cannot race it; a dedupe key already stored is a duplicate, not stored again.

Two ways to store, one order:
- **Direct** (a lone request, the usual delivery): each event goes into ``events`` with its
  ``process_event`` job, in the same transaction.
- **Staged** (a batch of :data:`STAGE_FROM` requests or more, or while rows are staged):
  the events go into ``staged_events`` only, a table without the indexes of ``events``, so
  the commit that the senders wait for is short. The writer moves staged rows, in arrival
  order, into ``events`` with their jobs (one transaction per chunk of :data:`MOVE_ROWS`)
  whenever no request waits for its answer, at least every :data:`MOVE_EVERY` seconds under
  sustained load, on :meth:`IngestWriter.stop`, and after a restart (what a crash left).
  While rows are staged, new events are staged too, so ``events.id`` keeps the order of
  arrival. A staged row is durable like an event: acknowledged means stored either way.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from instaset.store.db import Database, WriteGate

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger("instaset.webhook")

MAX_BATCH_ROWS = 4096
STAGE_FROM = 4  # requests in one batch from which it is staged (ingest under load)
MOVE_ROWS = 128  # staged rows moved per transaction: a few ms of holding the write lock
MOVE_EVERY = 0.1  # seconds: staged rows move at least this often while requests keep coming
IDLE_POLL = 0.005  # seconds: with staged rows to move, how often the writer checks for calm
MOVE_RETRY = 1.0  # seconds before a move that failed (disk full, a locked database) is retried
STOP_MOVING = 10.0  # seconds stop() moves staged rows; the rest moves at the next start
DRAIN_FOR = 0.05  # seconds the writer's thread commits batch after batch before the gate is free
LINGER = 0.003  # seconds the thread waits for the next request after a batch of 2 or more


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


_Request = tuple[Sequence[EventRow], asyncio.Future[IngestResult]]


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
    count of staged rows may be high for a while afterwards: it never counts low."""
    rows = list(await conn.execute_fetchall(_OLDEST_STAGED, (limit,)))
    count, top = int(rows[0][0]), rows[0][1]
    if count:
        for sql, args in _move_statements(top, max_attempts):
            await conn.execute(sql, args)
    left = list(await conn.execute_fetchall(_ANY_STAGED))
    return count, not left[0][0]


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
    each batch, and each move out of the staging table, is one transaction in its own thread
    (BEGIN, the statements, COMMIT), under the database's write gate with priority over the
    worker. The loop's task hands the thread what is pending; the thread commits until
    nothing is (:meth:`_drain`)."""

    def __init__(
        self, conn: sqlite3.Connection, *, gate: WriteGate, wake: asyncio.Event,
        max_attempts: int, clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._gate = gate
        self._wake = wake
        self._max_attempts = max_attempts
        self._clock = clock
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="instaset-ingest"
        )
        # Requests waiting for a commit, in arrival order. The event loop appends; the writer's
        # thread takes them (deque's append and popleft are atomic, so no lock is needed).
        self._pending: collections.deque[_Request] = collections.deque()
        self._kick = asyncio.Event()  # set when a request is appended (for the loop's task)
        self._arrived = threading.Event()  # the same, for the writer's thread while it lingers
        self._lingering = False  # the thread waits for _arrived (set only then: it costs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.batches = 0
        self.handoffs = 0  # times the loop handed pending requests to the thread (_drain)
        self.rows = 0
        self.moved = 0  # staged rows moved into events (or found there already)
        self._waiting = 0  # requests submitted and not answered yet
        # Rows in the staging table (read at start, then counted). Written only under the
        # write gate (on the loop, or in the writer's thread while the loop awaits it).
        self._backlog = 0
        self._moved_at = 0.0  # monotonic time of the last move
        self._retry_at = 0.0  # after a failed move: not before this (monotonic)

    @property
    def busy(self) -> bool:
        """True while a request waits for its commit."""
        return self._waiting > 0

    @property
    def backlog(self) -> int:
        """Events in the staging table, not yet moved into ``events`` (see the module docstring)."""
        return self._backlog

    def start(self) -> None:
        # What a crash or a failed stop left in the staging table moves first (the writer's loop
        # moves while no request waits).
        self._backlog = int(self._conn.execute("SELECT count(*) FROM staged_events").fetchone()[0])
        self._moved_at = time.monotonic()
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self) -> None:
        """Commit every request submitted so far, move staged rows into ``events`` for up to
        :data:`STOP_MOVING` seconds (a service manager's stop timeout is not much longer),
        then stop. What is left stays staged, durable, and moves at the next start."""
        if self._task is not None:
            self._stopping = True
            self._kick.set()
            self._arrived.set()  # a lingering thread hands the gate back at once
            task, self._task = self._task, None
            await asyncio.wait({task})  # it returns once nothing is pending
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            # Until nothing is staged. The count may be high, never low.
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
        if self._task is None or self._task.done() or self._stopping:
            raise RuntimeError("ingest writer is not running")
        fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, fut))
        self._waiting += 1
        self._kick.set()
        if self._lingering:  # after the append: see _drain
            self._lingering = False
            self._arrived.set()
        try:
            # Not shielded: the commit goes on if this request is cancelled (the writer
            # only skips answering a cancelled future).
            return await fut
        finally:
            self._waiting -= 1

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._kick.clear()
            if self._pending:
                # One hand-off to the thread commits batch after batch for as long as
                # requests keep coming (see _drain), under the gate all along.
                async with self._gate.urgent():
                    self.handoffs += 1
                    await loop.run_in_executor(self._executor, self._drain)
                continue
            if self._stopping:
                return
            if self._backlog:
                now = time.monotonic()
                if not self._waiting and now >= self._retry_at:
                    # No request waits for an answer: the staging table's turn.
                    await self._move()
                    continue
                # Answers still going out (or a move just failed): look again shortly.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(),
                                           max(IDLE_POLL, self._retry_at - now))
                continue
            await self._kick.wait()

    def _drain(self) -> None:
        """Runs in the writer's thread, under the write gate: commit what is pending, batch
        after batch, and answer each batch from here (``call_soon_threadsafe``). Returns when
        nothing is pending (after a batch of two requests or more, a sign of concurrent load,
        it first waits up to :data:`LINGER` for the next one), or after :data:`DRAIN_FOR`
        seconds, so that the loop takes the gate again and a worker transaction can come in.

        Why not one batch per hand-off: under load the event loop then answered a batch,
        read and parsed the next requests, and only then handed them over, while the writer
        waited; the writer then committed while the loop waited (every connection in one
        batch, in step). Here the requests that come while a batch commits are committed
        next, as soon as the thread gets the interpreter, while the loop goes on reading."""
        assert self._loop is not None
        until = time.monotonic() + DRAIN_FOR
        last = 0  # requests in the batch just committed
        while True:
            if not self._pending:
                if last < 2 or self._stopping or time.monotonic() >= until:
                    return
                self._arrived.clear()
                # The flag first, then the check: either submit() sees the flag and sets
                # _arrived, or this check sees its request.
                self._lingering = True
                if not self._pending:
                    self._arrived.wait(LINGER)  # without the interpreter lock: the loop runs
                self._lingering = False
                if not self._pending:
                    return  # nothing came, or stop() woke it
            batch = [self._pending.popleft()]
            n = len(batch[0][0])
            while self._pending and n < MAX_BATCH_ROWS:
                item = self._pending.popleft()
                batch.append(item)
                n += len(item[0])
            last = len(batch)
            now = time.monotonic()
            # The staging table's share while requests keep coming.
            if (self._backlog and now - self._moved_at >= MOVE_EVERY and now >= self._retry_at
                    and self._move_here() > 0):
                self._loop.call_soon_threadsafe(self._wake.set)
            stage = self._backlog > 0 or len(batch) >= STAGE_FROM
            outcomes = self._commit_batch([rows for rows, _ in batch], stage)
            if stage:
                self._backlog += sum(o.stored for o in outcomes if isinstance(o, IngestResult))
            self._loop.call_soon_threadsafe(self._answer, batch, outcomes, stage)
            if time.monotonic() >= until:
                return

    def _commit_batch(self, requests: list[Sequence[EventRow]], stage: bool
                      ) -> list[IngestResult | Exception]:
        """The batch in one transaction; if that fails, each request in its own, so that one
        bad request does not fail the others that shared its commit."""
        try:
            return list(self._commit(requests, self._clock(), stage))
        except Exception as exc:
            if len(requests) == 1:
                log.error("ingest commit failed: %s", exc)
                return [exc]
        outcomes: list[IngestResult | Exception] = []
        for rows in requests:
            outcomes += self._commit_batch([rows], stage)
        return outcomes

    def _answer(self, batch: list[_Request], outcomes: list[IngestResult | Exception],
                stage: bool) -> None:
        """On the event loop: the batch's answers."""
        for (_, fut), outcome in zip(batch, outcomes, strict=True):
            if fut.done():
                continue  # the request was cancelled; its events are stored all the same
            if isinstance(outcome, Exception):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)
        self.batches += 1
        self.rows += sum(len(rows) for rows, _ in batch)
        if not stage:
            self._wake.set()  # new jobs

    async def _move(self) -> int:
        """Move one chunk of staged rows into ``events``; returns the rows moved (0: none
        was staged), or -1 when the move failed (logged; the rows stay staged)."""
        loop = asyncio.get_running_loop()
        async with self._gate.urgent():
            moved = await loop.run_in_executor(self._executor, self._move_here)
        if moved > 0:
            self._wake.set()
        return moved

    def _move_here(self) -> int:
        """In the writer's thread, under the gate: :meth:`_move_chunk`, counted."""
        self._moved_at = time.monotonic()
        try:
            moved = self._move_chunk()
        except Exception as exc:
            self._retry_at = time.monotonic() + MOVE_RETRY
            log.error("could not move %d staged events into events: %s (they stay staged, "
                      "and the move is tried again)", self._backlog, exc)
            return -1
        self._backlog = max(0, self._backlog - moved) if moved else 0
        self.moved += moved
        return moved

    def _move_chunk(self) -> int:
        """Runs in the writer's thread: the oldest :data:`MOVE_ROWS` staged rows into
        ``events`` with their jobs, and out of the staging table, in one transaction."""
        conn = self._conn
        with _immediate(conn):
            count, top = conn.execute(_OLDEST_STAGED, (MOVE_ROWS,)).fetchone()
            if count:
                for sql, args in _move_statements(top, self._max_attempts):
                    conn.execute(sql, args)
            return int(count)

    def _commit(self, requests: list[Sequence[EventRow]], now: float, stage: bool = False
                ) -> list[IngestResult]:
        """Runs in the writer's thread: the whole batch in one transaction, into ``events``
        with the jobs, or into the staging table (``stage``)."""
        conn = self._conn
        results: list[IngestResult] = []
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
