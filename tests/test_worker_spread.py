"""While webhooks arrive, a claimed batch starts a few jobs per turn of the event loop
(``WorkerSettings.spread_window``): a claim in a gap between two webhooks no longer puts
every job's first slice in one turn, ahead of the next webhook."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from instaset.config import Config
from instaset.daemon import runtime
from instaset.queue import NewJob
from instaset.store import jobs as jobstore
from instaset.store.db import Database
from instaset.store.jobs import Job
from instaset.worker import Worker, WorkerSettings
from tests.test_ingest_staging import db, row, running  # noqa: F401  (db: a fixture)


@pytest.mark.parametrize(("recent", "busy_concurrency", "per_turn"), [
    (None, 4, 0),  # no ingest in this process (the CLI): all at once
    (False, 4, 0),  # no webhook lately
    (True, 4, 4),
    (True, 2, 2),
    (True, 0, 1),  # a zero setting still starts one per turn
])
def test_how_many_claimed_jobs_start_per_turn(
    recent: bool | None, busy_concurrency: int, per_turn: int,
) -> None:
    w = Worker(None, {}, WorkerSettings(busy_concurrency=busy_concurrency),  # type: ignore[arg-type]
               recent=None if recent is None else (lambda: recent))
    assert w._starts_per_turn() == per_turn


async def starts_per_turn(database: Database, recent: Callable[[], bool]) -> list[int]:
    """Run eight due jobs through ``Worker.run`` (concurrency 8, ``busy_concurrency`` 2,
    ingest never busy: one claim takes all eight) and return how many jobs started in each
    turn of the event loop in which any did."""
    started: list[str] = []

    async def record(job: Job) -> None:
        started.append(job.key)

    await jobstore.enqueue(database, [NewJob("rec", f"r{i}", {}, run_at=0) for i in range(8)],
                           now=0)
    w = Worker(database, {"rec": record},
               WorkerSettings(concurrency=8, busy_concurrency=2, poll_interval=0.01),
               busy=lambda: False, recent=recent)
    seen: list[int] = []

    async def ticker() -> None:  # one look per turn: asyncio runs ready callbacks in order
        while True:
            seen.append(len(started))
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        for _ in range(1000):
            if len(started) == 8:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        tick.cancel()
    assert sorted(started) == [f"r{i}" for i in range(8)]
    done = await database.fetchall("SELECT state FROM jobs WHERE kind = 'rec'")
    assert [r["state"] for r in done] == ["done"] * 8
    return [b - a for a, b in itertools.pairwise(seen) if b > a]


async def test_while_webhooks_arrive_a_claim_starts_its_jobs_two_per_turn(
    db: Database,  # noqa: F811
) -> None:
    assert await starts_per_turn(db, lambda: True) == [2, 2, 2, 2]


async def test_without_webhooks_a_claim_starts_all_its_jobs_in_one_turn(
    db: Database,  # noqa: F811
) -> None:
    assert await starts_per_turn(db, lambda: False) == [8]


async def test_jobs_waiting_for_their_turn_are_drained_on_stop(
    db: Database,  # noqa: F811
) -> None:
    """A stop right after the claim: the jobs not started yet are in flight already, and
    the worker's drain runs them all (none is left leased until its lease expires)."""
    ran: list[str] = []

    async def record(job: Job) -> None:
        ran.append(job.key)

    await jobstore.enqueue(db, [NewJob("rec", f"r{i}", {}, run_at=0) for i in range(6)], now=0)
    w = Worker(db, {"rec": record}, WorkerSettings(concurrency=6, busy_concurrency=1,
                                                   poll_interval=0.01),
               busy=lambda: False, recent=lambda: True)
    stop = asyncio.Event()
    claimed = w._claim

    async def claim_then_stop(limit: int) -> list[Job]:
        jobs = await claimed(limit)
        stop.set()  # the run loop ends after this claim; six tasks wait their turns
        return jobs

    w._claim = claim_then_stop  # type: ignore[method-assign]
    await asyncio.wait_for(w.run(stop), 10)
    assert sorted(ran) == [f"r{i}" for i in range(6)]
    left = await db.fetchall("SELECT state FROM jobs WHERE kind = 'rec' AND state != 'done'")
    assert left == []


async def test_the_ingest_writer_says_whether_a_webhook_came_lately(
    db: Database,  # noqa: F811
) -> None:
    async with running(db) as w:
        assert not w.arrived_within(60.0)  # nothing submitted yet
        await w.submit([row("a")])
        assert w.arrived_within(60.0)
        assert not w.arrived_within(0.0)


async def test_the_daemons_worker_spreads_its_starts_after_a_webhook(tmp_path: Path) -> None:
    """The wiring: ``instaset serve``'s worker asks its ingest writer."""
    config = Config.model_validate({"storage": {"path": str(tmp_path / "d.db")},
                                    "secrets": {"backend": "file"}})
    async with runtime(config) as rt:
        rt.writer.start()
        try:
            assert rt.worker._starts_per_turn() == 0  # no webhook yet
            await rt.writer.submit([row("a")])
            assert rt.worker._starts_per_turn() == rt.worker.settings.busy_concurrency
        finally:
            await rt.writer.stop()
