"""Group commit of webhook events.

Contract: :meth:`IngestWriter.submit` resolves only after the events *and* their
``process_event`` jobs are committed in one transaction, so a 200 never precedes durability.
One writer task owns its own connection; concurrent requests queue their rows and share one
commit (the batch grows with load, so an idle server adds no latency and a busy one does not
pay one fsync per request). Events whose account is not connected are dropped inside the
same statement, so a concurrent ``disconnect`` cannot race it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from instaset.store.db import WriteGate

log = logging.getLogger("instaset.webhook")

MAX_BATCH_ROWS = 4096


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

# The job row follows the event row; duplicates and dropped events insert nothing.
_INSERT_JOB = """
INSERT INTO jobs(kind, key, payload, run_at, max_attempts, created_at)
SELECT 'process_event', 'event:' || e.dedupe_key, json_object('event_id', e.id), ?2, ?3, ?2
FROM events e WHERE e.dedupe_key = ?1 AND e.processed_at IS NULL
ON CONFLICT(key) DO NOTHING
"""


class IngestWriter:
    """See the module docstring. ``conn`` is a plain sqlite3 connection this writer owns;
    each batch is one call in its own thread (BEGIN, both inserts, COMMIT), under the
    database's write gate with priority over the worker."""

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
        self._queue: asyncio.Queue[tuple[Sequence[EventRow], asyncio.Future[IngestResult]]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.rows = 0
        self._waiting = 0  # requests submitted and not answered yet

    @property
    def busy(self) -> bool:
        """True while a request waits for its commit."""
        return self._waiting > 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is not None:
            await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def submit(self, rows: Sequence[EventRow]) -> IngestResult:
        if self._task is None or self._task.done():
            raise RuntimeError("ingest writer is not running")
        fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((rows, fut))  # unbounded: never waits
        self._waiting += 1
        try:
            # Not shielded: the commit goes on if this request is cancelled (the writer
            # only skips answering a cancelled future).
            return await fut
        finally:
            self._waiting -= 1

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            n = len(batch[0][0])
            while not self._queue.empty() and n < MAX_BATCH_ROWS:
                item = self._queue.get_nowait()
                batch.append(item)
                n += len(item[0])
            try:
                await self._commit_all(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit_all(
        self, batch: list[tuple[Sequence[EventRow], asyncio.Future[IngestResult]]]
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with self._gate.urgent():
                results = await loop.run_in_executor(
                    self._executor, self._commit, [rows for rows, _ in batch], self._clock()
                )
        except Exception as exc:
            if len(batch) > 1:
                # One bad request must not fail the others that shared its commit.
                for item in batch:
                    await self._commit_all([item])
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
        self._wake.set()

    def _commit(self, requests: list[Sequence[EventRow]], now: float) -> list[IngestResult]:
        """Runs in the writer's thread: the whole batch in one transaction."""
        conn = self._conn
        results: list[IngestResult] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            # One executemany per request keeps per-request counts; still one commit for all.
            for rows in requests:
                # rowcount: the rows these statements inserted (total_changes would also
                # count what a trigger on events writes).
                cur = conn.executemany(
                    _INSERT_EVENT,
                    [(r.dedupe_key, r.account_id, r.kind, r.contact_id, r.occurred_at, now,
                      r.raw) for r in rows],
                )
                stored = max(0, cur.rowcount)
                if stored < len(rows):  # duplicates, or events no connected account takes
                    results.append(self._not_stored(conn, rows, stored))
                else:
                    results.append(IngestResult(stored))
            conn.executemany(
                _INSERT_JOB,
                [(r.dedupe_key, now, self._max_attempts) for rows in requests for r in rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
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
