"""While webhooks keep coming, staged events move to the worker when it runs out of due
jobs (store/ingest.py): the worker says when a claim came back short, and ``instaset
serve``'s ingest writer asks it."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest

from instaset.config import Config
from instaset.daemon import runtime
from instaset.queue import NewJob
from instaset.store import ingest
from instaset.store import jobs as jobstore
from instaset.store.db import Database
from instaset.store.jobs import Job
from instaset.worker import Worker, WorkerSettings
from tests.conftest import connect_account
from tests.test_ingest_staging import ACCT, burst, db, row, until  # noqa: F401  (db: a fixture)


async def test_the_worker_says_when_a_claim_came_back_short(
    db: Database,  # noqa: F811
) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def held(job: Job) -> None:
        started.append(job.key)
        await release.wait()

    await jobstore.enqueue(db, [NewJob("held", f"h{i}", {}, run_at=0) for i in range(3)], now=0)
    w = Worker(db, {"held": held}, WorkerSettings(concurrency=2, poll_interval=0.01))
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        await until(lambda: len(started) == 2, "two jobs running")
        for _ in range(20):  # polls with no room: no claim, so not dry
            await asyncio.sleep(0.01)
        assert w.ran_dry_at == -math.inf  # a full claim (2 of 2), then no room
        freed = time.monotonic()
        release.set()  # two slots free, one job left: the claim comes back short
        await until(lambda: w.ran_dry_at > freed, "a short claim")
        assert len(started) == 3
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_the_daemons_ingest_writer_moves_staged_events_when_its_worker_runs_dry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wiring: under load (a request always waiting, no periodic move), events staged
    by a burst reach ``events`` because ``instaset serve``'s worker, idle, ran dry."""
    monkeypatch.setattr(ingest, "MOVE_EVERY", 3600.0)
    config = Config.model_validate({"storage": {"path": str(tmp_path / "d.db")},
                                    "secrets": {"backend": "file"}})
    async with runtime(config) as rt:
        await connect_account(rt.db, ACCT)
        rt.writer.start()
        rt.writer._waiting += 1  # a request always waiting for its commit: no calm
        stop = asyncio.Event()
        worker = asyncio.create_task(rt.worker.run(stop))
        try:
            await until(lambda: rt.worker.ran_dry_at > -math.inf, "the worker's first claim")
            await burst(rt.writer, [[row(f"b{i}")] for i in range(ingest.STAGE_FROM)])
            await until(lambda: rt.writer.moved == ingest.STAGE_FROM, "the staged burst moved")
        finally:
            rt.writer._waiting -= 1
            stop.set()
            await asyncio.wait_for(worker, 10)
            await rt.writer.stop()
