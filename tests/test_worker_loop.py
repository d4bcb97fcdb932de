"""The worker's loop: what ends its idle wait, and where a job runs.

Every worker here has a poll interval of an hour, so only its own signals (``wake``, a job
finishing, ``stop``) can move it on; the waits below are hang guards, not thresholds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from instaset.queue import NewJob
from instaset.store import jobs as jobstore
from instaset.store.db import Database
from instaset.store.jobs import Job
from instaset.worker import Worker, WorkerSettings

HOUR = 3600.0


async def _until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(1000):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_stop_ends_the_idle_wait(db: Database) -> None:
    w = Worker(db, {}, WorkerSettings(poll_interval=HOUR))
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.sleep(0.05)  # idle, in its hour-long wait
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_job_runs_in_its_own_task_and_its_timeout_still_applies(
    db: Database
) -> None:
    """The handler runs in the job's task (no task per job for the timeout), and a handler
    that overruns ``job_timeout`` is cut off and retried like any failure."""
    names: list[str] = []

    async def slow(job: Job) -> None:
        current = asyncio.current_task()
        assert current is not None
        names.append(current.get_name())
        await asyncio.sleep(HOUR)

    await jobstore.enqueue(db, [NewJob("slow", "s", {}, run_at=0, max_attempts=3)], now=0)
    w = Worker(db, {"slow": slow}, WorkerSettings(poll_interval=HOUR, job_timeout=0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        async def retried() -> bool:
            row = await db.fetchone("SELECT state, attempts FROM jobs")
            return row is not None and (row[0], row[1]) == ("ready", 1)
        await _until(retried, "the overrun job back in the queue")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    row = await db.fetchone("SELECT last_error FROM jobs")
    assert row is not None and str(row[0]).startswith("TimeoutError")
    assert names[0].startswith("job-")


async def test_a_cancelled_job_is_not_done_even_if_its_handler_swallows_it(
    db: Database
) -> None:
    """The shutdown grace cancels a job's task; a handler that catches the cancellation and
    returns must not get its job recorded as done (it may not have finished): the job keeps
    its lease, which brings it back, as when the handler ran in a task of its own."""
    entered = asyncio.Event()

    async def stubborn(job: Job) -> None:
        entered.set()
        try:
            await asyncio.sleep(HOUR)
        except asyncio.CancelledError:
            return  # swallowed

    await jobstore.enqueue(db, [NewJob("stubborn", "s", {}, run_at=0)], now=0)
    w = Worker(db, {"stubborn": stubborn}, WorkerSettings(poll_interval=HOUR))
    (job,) = await jobstore.claim(db, w.name, 0.0, 600.0, 1)
    task = asyncio.create_task(w.execute(job))
    await asyncio.wait_for(entered.wait(), 10)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done and task.cancelled()
    row = await db.fetchone("SELECT state, attempts FROM jobs")
    assert row is not None and (row[0], row[1]) == ("running", 1)
