"""Grouped relaxed transactions (``Database.tx(grouped=True)``): the worker's events of one
turn of the event loop share one commit. What must hold: each transaction is all or nothing
on its own, the group commits at the loop's next turn, and anything else in the process that
uses the database (a read, another transaction, the ingest writer, a barrier, close) sees
the group committed first."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

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


# -- error and cancellation paths (from the session-19 review): each must leave the write
# gate free and no group open, so the ingest writer and the next grouped transaction go on.


async def _still_writes(db: Database, value: str) -> None:
    async with asyncio.timeout(5):
        async with db.gate.urgent():  # the ingest writer's side
            pass
        await _put(db, value)
        await asyncio.sleep(0)
    assert value in _outside(db.path)


class _FailingCommit:
    """The loop-thread connection, whose next COMMIT fails (a full disk, an I/O error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.fail = True

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and self.fail:
            self.fail = False
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_a_failed_group_commit_frees_the_gate(db: Database, caplog: Any) -> None:
    await _table(db)
    real = db._fast_conn()
    assert real is not None
    db._fast = _FailingCommit(real)  # type: ignore[assignment]
    await _put(db, "lost")
    with caplog.at_level(logging.ERROR):
        await asyncio.sleep(0)
    assert "1 processed event(s) were not stored, its commit failed" in caplog.text
    assert not real.in_transaction
    db._fast = real
    await _still_writes(db, "next")
    assert _outside(db.path) == ["next"]


async def test_sqlite_ending_the_whole_transaction_frees_the_gate(db: Database,
                                                                  caplog: Any) -> None:
    """SQLITE_FULL, SQLITE_IOERR, SQLITE_INTERRUPT roll back the whole transaction, not the
    savepoint: the group is gone, and the gate must not stay held."""
    await _table(db)
    await _put(db, "lost with it")
    fast = db._fast_conn()
    assert fast is not None
    with caplog.at_level(logging.ERROR), pytest.raises(sqlite3.OperationalError):
        async with db.tx(grouped=True) as conn:
            fast.set_progress_handler(lambda: 1, 1)  # SQLITE_INTERRUPT
            try:
                await conn.execute("INSERT INTO t(v) VALUES ('x')")
            finally:
                fast.set_progress_handler(None, 1)
    assert "1 processed event(s) were not stored, its transaction ended" in caplog.text
    await _still_writes(db, "next")
    assert _outside(db.path) == ["next"]


async def test_an_opener_cancelled_while_another_process_holds_the_lock_frees_the_gate(
        db: Database) -> None:
    await _table(db)
    other = sqlite3.connect(str(db.path), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    task = asyncio.create_task(_put(db, "cancelled"))
    await asyncio.sleep(0.05)  # in _begin_fast's retry loop, holding the gate
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    other.execute("ROLLBACK")
    other.close()
    await _still_writes(db, "next")


async def test_a_transaction_that_waited_for_the_loop_connection_runs_inside_a_group(
        db: Database) -> None:
    """The group may commit while a grouped transaction waits for the loop connection: it
    must then open a group of its own, not run outside any transaction (without the gate)."""
    await _table(db)
    go = asyncio.Event()
    seen: list[tuple[bool, bool]] = []

    async def slow() -> None:
        async with db.tx(grouped=True) as conn:
            await conn.execute("INSERT INTO t(v) VALUES ('slow')")
            await go.wait()

    async def waiting() -> None:
        async with db.tx(grouped=True) as conn:
            fast = db._fast
            assert fast is not None
            seen.append((fast.in_transaction, db.gate._lock.locked()))
            await conn.execute("INSERT INTO t(v) VALUES ('waiting')")

    first = asyncio.create_task(slow())
    await asyncio.sleep(0)
    # Waiting for the loop connection first: a use that commits the group (a read, say).
    ender = asyncio.create_task(db.end_group())
    await asyncio.sleep(0)
    second = asyncio.create_task(waiting())
    await asyncio.sleep(0.01)
    go.set()
    await asyncio.wait_for(asyncio.gather(first, ender, second), 5)
    await asyncio.sleep(0)
    assert seen == [(True, True)]
    assert _outside(db.path) == ["slow", "waiting"]


async def test_a_transaction_that_awaits_does_not_spin_the_loop(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """The turn's commit, finding a grouped transaction under way, waits for its end; it
    does not look again at every turn of the loop (a core at 100 % while it waits)."""
    await _table(db)
    calls = 0
    real = db._commit_group_soon

    def counted() -> None:
        nonlocal calls
        calls += 1
        real()

    monkeypatch.setattr(db, "_commit_group_soon", counted)
    async with db.tx(grouped=True) as conn:
        await conn.execute("INSERT INTO t(v) VALUES ('waits')")
        for _ in range(200):
            await asyncio.sleep(0)  # 200 turns of the loop inside the transaction
    assert _outside(db.path) == []
    await asyncio.sleep(0)
    assert _outside(db.path) == ["waits"]
    assert calls <= 3
