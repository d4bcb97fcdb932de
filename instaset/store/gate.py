"""The in-process write gate: one writer at a time, the ingest writer first.

Contract: every write in this process passes :class:`WriteGate` (``urgent`` for the ingest
writer, ``normal`` for everything else), so the process's connections never wait on each
other inside SQLite's busy handler. An ``urgent`` writer overtakes every ``normal`` one that
has not started; ``before_write`` runs first on either side (the database ends its group of
relaxed transactions there, which holds the gate until the loop's next turn).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable


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
        # Set by Database: ends its group of relaxed transactions, which holds the gate
        # until the loop's next turn, so that a writer does not wait for that turn.
        self.before_write: Callable[[], Awaitable[None]] | None = None

    @contextlib.asynccontextmanager
    async def urgent(self) -> AsyncIterator[None]:
        self._urgent += 1
        self._calm.clear()
        try:
            if self.before_write is not None:
                await self.before_write()
            async with self._lock:
                yield
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._calm.set()

    async def acquire_normal(self) -> None:
        """What :meth:`normal` takes, held until :meth:`release` (a group of relaxed
        transactions holds it across the loop's turn)."""
        while True:
            await self._calm.wait()
            await self._lock.acquire()
            if not self._urgent:
                return
            self._lock.release()  # an urgent writer is waiting: let it go first

    def release(self) -> None:
        self._lock.release()

    @contextlib.asynccontextmanager
    async def normal(self) -> AsyncIterator[None]:
        if self.before_write is not None:
            await self.before_write()
        await self.acquire_normal()
        try:
            yield
        finally:
            self._lock.release()
