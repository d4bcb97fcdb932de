"""Grouped relaxed transactions (``Database.tx(grouped=True)``): the worker's events of one
turn of the event loop share one commit. What must hold: each transaction is all or nothing
on its own, the group commits at the loop's next turn, and anything else in the process that
uses the database (a read, another transaction, the ingest writer, a barrier, close) sees
the group committed first."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from instaset.store.db import Database, open_database

pytestmark = pytest.mark.asyncio


async def _table(db: Database) -> None:
    async with db.tx() as conn:
        await conn.execute("CREATE TABLE t (v TEXT PRIMARY KEY)")


def _outside(path: Path) -> list[str]:
    """The rows another connection (another process, say) sees: committed ones only."""
    conn = sqlite3.connect(str(path))
    try:
        return sorted(r[0] for r in conn.execute("SELECT v FROM t"))
    finally:
        conn.close()


async def _put(db: Database, value: str) -> None:
    async with db.tx(grouped=True) as conn:
        await conn.execute("INSERT INTO t(v) VALUES (?)", (value,))


async def test_transactions_of_one_turn_share_a_commit_at_the_next_turn(db: Database) -> None:
    await _table(db)
    await _put(db, "a")
    await _put(db, "b")
    # Both done, neither committed yet: the group waits for the loop's next turn.
    assert _outside(db.path) == []
    # ... while the loop's own connection (quick reads) sees them already.
    assert [r[0] for r in await db.fetchall("SELECT v FROM t ORDER BY v", quick=True)] == [
        "a", "b"]
    await asyncio.sleep(0)
    assert _outside(db.path) == ["a", "b"]


async def test_a_failed_transaction_rolls_back_alone(db: Database) -> None:
    await _table(db)
    await _put(db, "kept")
    with pytest.raises(RuntimeError):
        async with db.tx(grouped=True) as conn:
            await conn.execute("INSERT INTO t(v) VALUES ('undone')")
            raise RuntimeError("a job fails half-way")
    await _put(db, "after")
    await asyncio.sleep(0)
    assert _outside(db.path) == ["after", "kept"]


async def test_a_constraint_error_rolls_back_that_transaction_only(db: Database) -> None:
    await _table(db)
    await _put(db, "x")
    with pytest.raises(sqlite3.IntegrityError):
        async with db.tx(grouped=True) as conn:
            await conn.execute("INSERT INTO t(v) VALUES ('y')")
            await conn.execute("INSERT INTO t(v) VALUES ('x')")  # a duplicate key
    await asyncio.sleep(0)
    assert _outside(db.path) == ["x"]


@pytest.mark.parametrize("use", ["read", "tx", "relaxed", "execute", "urgent", "barrier"])
async def test_anything_else_commits_the_group_first(
        db: Database, use: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await _table(db)
    # The commit at the loop's next turn is taken away: what commits the group here is the
    # use itself, before it goes on (not the turn that its own waiting would give).
    monkeypatch.setattr(db, "_commit_group_soon", lambda: None)
    await _put(db, "g")
    assert _outside(db.path) == []
    async with asyncio.timeout(10):  # without its own commit of the group, it would wait forever
        await _use(db, use)
    assert _outside(db.path) in (["g"], ["g", "r"], ["h"])


async def _use(db: Database, use: str) -> None:
    if use == "read":  # the main connection (a thread) sees the group's rows
        rows = await db.fetchall("SELECT v FROM t")
        assert [r[0] for r in rows] == ["g"]
    elif use == "tx":
        async with db.tx() as conn:
            rows = list(await conn.execute_fetchall("SELECT v FROM t"))
        assert [r[0] for r in rows] == ["g"]
    elif use == "relaxed":  # a relaxed transaction that is not grouped commits on its own
        async with db.tx(relaxed=True) as conn:
            await conn.execute("INSERT INTO t(v) VALUES ('r')")
    elif use == "execute":
        assert await db.execute("UPDATE t SET v = 'h' WHERE v = 'g'") == 1
    elif use == "urgent":  # the ingest writer's gate: its own connection then writes
        async with db.gate.urgent():
            assert _outside(db.path) == ["g"]
    else:
        await db.barrier()


async def test_close_commits_the_group(tmp_path: Path) -> None:
    db = await open_database(tmp_path / "c.db")
    await _table(db)
    await _put(db, "last")
    await db.close()  # no turn of the loop in between
    assert _outside(tmp_path / "c.db") == ["last"]


async def test_a_group_waits_for_its_transaction_that_awaits(db: Database) -> None:
    """A grouped transaction whose body yields to the loop: the group's commit waits for
    its end (never commits half of it), and a second one runs after it, not inside it."""
    await _table(db)
    go = asyncio.Event()
    order: list[str] = []

    async def slow() -> None:
        async with db.tx(grouped=True) as conn:
            await conn.execute("INSERT INTO t(v) VALUES ('slow-1')")
            await go.wait()
            await conn.execute("INSERT INTO t(v) VALUES ('slow-2')")
            order.append("slow")

    async def quick() -> None:
        async with db.tx(grouped=True) as conn:
            await conn.execute("INSERT INTO t(v) VALUES ('quick')")
            order.append("quick")

    task = asyncio.create_task(slow())
    await asyncio.sleep(0.01)
    other = asyncio.create_task(quick())
    for _ in range(5):
        await asyncio.sleep(0)
    assert _outside(db.path) == []  # half of `slow` is never committed
    go.set()
    await asyncio.wait_for(asyncio.gather(task, other), 10)
    await asyncio.sleep(0)
    assert order == ["slow", "quick"]
    assert _outside(db.path) == ["quick", "slow-1", "slow-2"]


async def test_a_read_from_inside_a_grouped_transaction_does_not_wait_for_itself(
        db: Database) -> None:
    await _table(db)
    await _put(db, "before")
    await asyncio.sleep(0)
    await _put(db, "grouped")
    async with db.tx(grouped=True) as conn:
        await conn.execute("INSERT INTO t(v) VALUES ('mine')")
        # Through the main connection: what was committed before the group.
        async with asyncio.timeout(10):  # in this task (wait_for would make another)
            rows = await db.fetchall("SELECT v FROM t ORDER BY v")
    assert [r[0] for r in rows] == ["before"]
    await asyncio.sleep(0)
    assert _outside(db.path) == ["before", "grouped", "mine"]


async def test_a_follow_up_job_runs_after_its_grouped_cause_committed(db: Database) -> None:
    """An ``at_once`` job runs in its cause's task, without a claim (which would commit the
    group): it must still start after its cause committed, since what it does next may be
    outside the database (a reply, a notification) and must not outlive a lost cause."""
    from instaset.queue import COMPLETED, NewJob, Outcome
    from instaset.store import jobs as jobstore
    from instaset.store.jobs import Job
    from instaset.worker import Worker, WorkerSettings

    await _table(db)
    seen: list[list[str]] = []

    async def cause(job: Job) -> Outcome:
        async with db.tx(grouped=True) as conn:
            await conn.execute("INSERT INTO t(v) VALUES ('cause')")
            await jobstore.enqueue_in(
                conn, [NewJob("effect", "effect", {}, run_at=0.0, at_once=True)], 0.0)
            await jobstore.complete_in(conn, job, 0.0)
        return COMPLETED

    async def effect(job: Job) -> None:
        seen.append(_outside(db.path))  # what a crash right now would leave

    w = Worker(db, {"cause": cause, "effect": effect},
               WorkerSettings(concurrency=1, poll_interval=0.01), clock=lambda: 0.0)
    await jobstore.enqueue(db, [NewJob("cause", "c", {}, run_at=0.0)], 0.0)
    assert await asyncio.wait_for(w.run_burst(), 10) == 1
    assert seen == [["cause"]]
