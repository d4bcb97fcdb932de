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
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiosqlite

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


_INSERT_EVENT = """
INSERT INTO events(dedupe_key, account_id, kind, contact_id, occurred_at, received_at, raw)
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7
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
    def __init__(
        self, conn: aiosqlite.Connection, *, wake: asyncio.Event, max_attempts: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._conn = conn
        self._wake = wake
        self._max_attempts = max_attempts
        self._clock = clock
        self._queue: asyncio.Queue[tuple[Sequence[EventRow], asyncio.Future[IngestResult]]] = (
            asyncio.Queue()
        )
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ingest-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def submit(self, rows: Sequence[EventRow]) -> IngestResult:
        if self._task is None or self._task.done():
            raise RuntimeError("ingest writer is not running")
        fut: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        await self._queue.put((rows, fut))
        return await asyncio.shield(fut)

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
        try:
            results = await self._commit(batch)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await self._conn.execute("ROLLBACK")
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
        self._wake.set()

    async def _commit(
        self, batch: list[tuple[Sequence[EventRow], asyncio.Future[IngestResult]]]
    ) -> list[IngestResult]:
        now = self._clock()
        conn = self._conn
        results: list[IngestResult] = []
        await conn.execute("BEGIN IMMEDIATE")
        # One executemany per request keeps per-request counts; still one commit for all.
        for rows, _ in batch:
            if not rows:
                results.append(IngestResult(0))
                continue
            cur = await conn.executemany(
                _INSERT_EVENT,
                [(r.dedupe_key, r.account_id, r.kind, r.contact_id, r.occurred_at, now, r.raw)
                 for r in rows],
            )
            results.append(IngestResult(max(cur.rowcount, 0)))
        all_rows = [r for rows, _ in batch for r in rows]
        if all_rows:
            await conn.executemany(
                _INSERT_JOB, [(r.dedupe_key, now, self._max_attempts) for r in all_rows]
            )
        await conn.execute("COMMIT")
        self.batches += 1
        self.rows += len(all_rows)
        return results
