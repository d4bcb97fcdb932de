"""The worker's loop: when it claims, what ends its idle wait, and where a job runs.

Every worker here has a poll interval of an hour, so only its own signals (``wake``, a job
finishing, ``stop``) can move it on; the waits below are hang guards, not thresholds.
"""

from __future__ import annotations

import asyncio

from instaset.queue import NewJob
from instaset.store import jobs as jobstore
from instaset.store.db import Database
from instaset.store.jobs import Job
from instaset.worker import Worker, WorkerSettings

HOUR = 3600.0


async def _count(db: Database, state: str) -> int:
    row = await db.fetchone("SELECT count(*) FROM jobs WHERE state = ?", (state,))
    assert row is not None
    return int(row[0])


async def _until(check: object, what: str) -> None:
    for _ in range(1000):
        if await check():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_near_capacity_a_claim_waits_for_an_eighth_of_the_slots(db: Database) -> None:
    """Concurrency 16: with jobs in flight, one freed slot is not worth a claim (a
    transaction per job at full load); two are. With nothing in flight, any slot is."""
    gates = {f"j{i:02d}": asyncio.Event() for i in range(20)}

    async def hold(job: Job) -> None:
        await gates[job.key].wait()

    await jobstore.enqueue(db, [NewJob("hold", k, {}, run_at=0) for k in gates], now=0)
    w = Worker(db, {"hold": hold}, WorkerSettings(concurrency=16, poll_interval=HOUR))
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        async def sixteen_running() -> bool:
            return await _count(db, "running") == 16
        await _until(sixteen_running, "16 jobs running")
        assert await _count(db, "ready") == 4

        gates["j00"].set()  # one slot free: 15 in flight, no claim for one
        async def one_done() -> bool:
            return await _count(db, "done") == 1
        await _until(one_done, "j00 done")
        await asyncio.sleep(0.05)  # loop turns in which a claim of one would have happened
        assert (await _count(db, "running"), await _count(db, "ready")) == (15, 4)

        gates["j01"].set()  # two free: one claim takes two
        await _until(sixteen_running, "two more claimed")
        assert await _count(db, "ready") == 2

        for gate in gates.values():
            gate.set()
        async def all_done() -> bool:
            return await _count(db, "done") == 20
        await _until(all_done, "every job done")
    finally:
        for gate in gates.values():
            gate.set()
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_stop_ends_the_idle_wait(db: Database) -> None:
    w = Worker(db, {}, WorkerSettings(poll_interval=HOUR))
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.sleep(0.05)  # idle, in its hour-long wait
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 10)
    # No task of its own is left behind (the stop watcher is cancelled with the loop).
    assert [t.get_name() for t in asyncio.all_tasks()
            if t.get_name() == "worker-stop" and not t.done()] == []


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
