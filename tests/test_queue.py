"""The durable queue and the worker: claims, leases, retries, backoff, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from instaset.queue import NewJob, PermanentJobError, RetryLater, backoff_delay
from instaset.store import jobs as jobstore
from instaset.store.db import Database, open_database
from instaset.store.jobs import Job
from instaset.worker import Worker, WorkerSettings, worker_alive


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def test_enqueue_is_idempotent_by_key(db: Database) -> None:
    job = NewJob("x", "k1", {"a": 1}, run_at=0)
    await jobstore.enqueue(db, [job, job], now=0)
    await jobstore.enqueue(db, [NewJob("x", "k1", {"a": 2}, run_at=0)], now=0)
    rows = await db.fetchall("SELECT key, payload FROM jobs")
    assert [(r[0], r[1]) for r in rows] == [("k1", '{"a":1}')]


async def test_claim_only_due_jobs_in_order(db: Database) -> None:
    await jobstore.enqueue(
        db,
        [NewJob("x", "late", {}, run_at=50), NewJob("x", "b", {}, run_at=5),
         NewJob("x", "a", {}, run_at=1)],
        now=0,
    )
    claimed = await jobstore.claim(db, "w1", now=10, lease=30, limit=10)
    assert [j.key for j in claimed] == ["a", "b"]
    assert all(j.attempts == 1 for j in claimed)
    assert await jobstore.claim(db, "w2", now=10, lease=30, limit=10) == []


async def test_concurrent_claimers_never_share_a_job(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    dbs = [await open_database(path) for _ in range(4)]
    try:
        await jobstore.enqueue(
            dbs[0], [NewJob("x", f"k{i}", {}, run_at=0) for i in range(400)], now=0
        )

        # Every round, all four claim at the same moment, each on its own connection.
        all_ids: list[int] = []
        for _ in range(200):
            rounds = await asyncio.gather(
                *(jobstore.claim(d, f"w{i}", now=1, lease=60, limit=7) for i, d in enumerate(dbs))
            )
            ids = [j.id for batch in rounds for j in batch]
            if not ids:
                break
            all_ids += ids
        assert len(all_ids) == 400
        assert len(set(all_ids)) == 400
    finally:
        for d in dbs:
            await d.close()


async def test_expired_lease_makes_job_due_again_and_fences_old_owner(db: Database) -> None:
    await jobstore.enqueue(db, [NewJob("x", "k", {}, run_at=0)], now=0)
    [first] = await jobstore.claim(db, "crashed", now=1, lease=10, limit=1)
    assert await jobstore.claim(db, "other", now=5, lease=10, limit=1) == []  # still leased
    [again] = await jobstore.claim(db, "other", now=12, lease=10, limit=1)
    assert again.id == first.id and again.attempts == 2 and again.worker == "other"
    assert await jobstore.complete(db, first, now=13) is False  # the old owner lost it
    assert await jobstore.complete(db, again, now=13) is True
    row = await jobstore.get(db, first.id)
    assert row is not None and row["state"] == "done"


@pytest.mark.parametrize(
    ("attempts", "low", "high"),
    [(1, 1.0, 2.0), (2, 2.0, 4.0), (3, 4.0, 8.0), (6, 32.0, 64.0), (20, 300.0, 600.0),
     # 2.0 ** 1025 overflows a float: the job must still get the cap, not an OverflowError
     # that left it running, never dead-lettered (issue-2 audit)
     (1025, 300.0, 600.0), (10**6, 300.0, 600.0)],
)
def test_backoff_schedule(attempts: int, low: float, high: float) -> None:
    rng = random.Random(attempts)
    for _ in range(50):
        d = backoff_delay(attempts, base=2.0, cap=600.0, rng=rng)
        assert low <= d <= high


def _worker(db: Database, handlers: dict, clock: Clock, **kw: float) -> Worker:  # type: ignore[type-arg]
    settings = WorkerSettings(concurrency=4, lease_seconds=60, backoff_base=2, backoff_cap=600,
                              poll_interval=0.01, shutdown_grace=1.0, **kw)
    return Worker(db, handlers, settings, clock=clock)


async def test_failures_retry_with_backoff_then_dead_letter(db: Database) -> None:
    clock = Clock()
    calls: list[int] = []

    async def flaky(job: Job) -> None:
        calls.append(job.attempts)
        raise RuntimeError("boom")

    await jobstore.enqueue(db, [NewJob("flaky", "k", {}, run_at=0, max_attempts=3)], now=0)
    w = _worker(db, {"flaky": flaky}, clock)
    run_ats = []
    for _ in range(3):
        assert await w.run_burst() == 1
        row = await db.fetchone("SELECT * FROM jobs")
        assert row is not None
        run_ats.append(row["run_at"] - clock.t)
        clock.t = row["run_at"] + 0.001
    assert calls == [1, 2, 3]
    assert row["state"] == "dead" and "RuntimeError: boom" in row["last_error"]
    assert 1.0 <= run_ats[0] <= 2.0 and 2.0 <= run_ats[1] <= 4.0  # growing backoff
    assert await w.run_burst() == 0


async def test_job_latency_counts_from_when_the_job_could_first_run(db: Database) -> None:
    """A periodic job is created with run_at at the start of its period: its latency is
    not the hours before it existed (issue-2 audit: retention showed 39,772 s)."""
    clock = Clock(t=10_000.0)
    seen: dict[str, float] = {}

    async def done(job: Job) -> None:
        return None

    await jobstore.enqueue(db, [NewJob("periodic", "p", {}, run_at=0)], now=9_990.0)
    await jobstore.enqueue(db, [NewJob("late", "l", {}, run_at=9_000.0)], now=8_000.0)
    w = _worker(db, {"periodic": done, "late": done}, clock)
    w.on_finish = lambda job, _state, latency: seen.__setitem__(job.kind, latency)
    assert await w.run_burst() == 2
    assert seen == {"periodic": 10.0, "late": 1_000.0}


async def test_retry_later_without_counting_and_permanent_error(db: Database) -> None:
    clock = Clock()
    seen: list[int] = []

    async def defer(job: Job) -> None:
        seen.append(job.attempts)
        if len(seen) < 4:
            raise RetryLater(5, "waiting for budget", count_attempt=False)

    async def broken(job: Job) -> None:
        raise PermanentJobError("cannot ever work")

    await jobstore.enqueue(
        db,
        [NewJob("defer", "d", {}, run_at=0, max_attempts=2), NewJob("broken", "b", {}, run_at=0)],
        now=0,
    )
    w = _worker(db, {"defer": defer, "broken": broken}, clock)
    for _ in range(4):
        await w.run_burst()
        clock.t += 5
    rows = {r["key"]: r for r in await db.fetchall("SELECT * FROM jobs")}
    assert rows["d"]["state"] == "done"
    assert seen == [1, 1, 1, 1]  # deferrals spent no tries, though max_attempts is 2
    assert rows["b"]["state"] == "dead" and rows["b"]["attempts"] == 1


async def test_unknown_kind_is_dead_lettered(db: Database) -> None:
    await jobstore.enqueue(db, [NewJob("nope", "k", {}, run_at=0)], now=0)
    await _worker(db, {}, Clock()).run_burst()
    row = await db.fetchone("SELECT state, last_error FROM jobs")
    assert row is not None and row[0] == "dead" and "no handler" in row[1]


async def test_graceful_run_finishes_inflight_then_stops(db: Database) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    done: list[str] = []

    async def slow(job: Job) -> None:
        started.set()
        await release.wait()
        done.append(job.key)

    await jobstore.enqueue(db, [NewJob("slow", "s", {}, run_at=0)], now=0)
    w = Worker(db, {"slow": slow}, WorkerSettings(poll_interval=0.01, shutdown_grace=5))
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await asyncio.wait_for(started.wait(), 10)
    stop.set()
    await asyncio.sleep(0.05)
    assert not task.done()  # waits for the in-flight job
    release.set()
    await asyncio.wait_for(task, 10)
    assert done == ["s"]
    row = await db.fetchone("SELECT state FROM jobs")
    assert row is not None and row[0] == "done"


async def test_grace_period_cancels_and_job_runs_again_later(db: Database) -> None:
    async def hang(job: Job) -> None:
        await asyncio.Event().wait()

    await jobstore.enqueue(db, [NewJob("hang", "h", {}, run_at=0)], now=0)
    w = Worker(db, {"hang": hang}, WorkerSettings(poll_interval=0.01, shutdown_grace=0.05))
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    for _ in range(500):
        row = await db.fetchone("SELECT state FROM jobs")
        if row is not None and row[0] == "running":
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 10)
    # This process is alive: its job keeps its lease. Once its worker counts as dead (the
    # next start after a crash), the job is due again.
    assert await jobstore.release_orphaned(db, worker_alive) == 0
    assert await jobstore.release_orphaned(db, lambda name: False) == 1
    row = await db.fetchone("SELECT state FROM jobs")
    assert row is not None and row[0] == "ready"


async def test_only_jobs_of_dead_processes_are_released_at_start(db: Database) -> None:
    """A job leased by a live process (`inbox reply` delivering from the CLI) is left alone;
    one leased by a process that is gone, or by no named worker, is due again."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=60)
    dead_pid = int(gone.stdout)
    assert not worker_alive(f"{dead_pid}-abcdef01")
    assert worker_alive(f"{os.getpid()}-abcdef01")
    assert not worker_alive("not-a-worker-name")
    await jobstore.enqueue(db, [NewJob("k", f"j{i}", {}, run_at=0) for i in range(3)], now=0)
    for worker in (f"{os.getpid()}-live0001", f"{dead_pid}-dead0001"):
        claimed = await jobstore.claim(db, worker, 0.0, 600.0, 1)
        assert len(claimed) == 1
    await db.execute("UPDATE jobs SET state = 'running', lease_until = 600, worker = NULL"
                     " WHERE state = 'ready'")
    assert await jobstore.release_orphaned(db, worker_alive) == 2
    rows = await db.fetchall("SELECT worker, state FROM jobs ORDER BY id")
    states = {(r[0] or "").split("-")[-1]: r[1] for r in rows}
    assert states == {"live0001": "running", "dead0001": "ready", "": "ready"}


async def test_a_finished_job_or_a_wake_up_ends_the_idle_wait(db: Database) -> None:
    """With a poll interval of an hour, only the worker's own signals can move it on: a job
    finishing frees its slot for the next due job (concurrency 1), and ``wake`` (set by
    ingest after a commit) brings a job enqueued while the worker sleeps."""
    ran: list[str] = []
    all_ran = asyncio.Event()

    async def record(job: Job) -> None:
        ran.append(job.key)
        if len(ran) == 4:
            all_ran.set()

    await jobstore.enqueue(db, [NewJob("rec", f"j{i}", {}, run_at=0) for i in range(3)], now=0)
    wake = asyncio.Event()
    w = Worker(db, {"rec": record}, WorkerSettings(concurrency=1, poll_interval=3600),
               wake=wake)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        for _ in range(1000):  # the three queued jobs, one slot: each frees it for the next
            if len(ran) == 3:
                break
            await asyncio.sleep(0.01)
        assert ran == ["j0", "j1", "j2"]
        await asyncio.sleep(0.05)  # idle now, in its hour-long wait
        await jobstore.enqueue(db, [NewJob("rec", "late", {}, run_at=0)], now=0)
        wake.set()
        await asyncio.wait_for(all_ran.wait(), 10)
        assert ran[-1] == "late"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


class Holder:
    """A handler that holds every job until ``release`` is set, counting how many run at
    once (``running``) and the count after each start (``peak``)."""

    def __init__(self) -> None:
        self.running = 0
        self.peak: list[int] = []
        self.release = asyncio.Event()

    async def __call__(self, job: Job) -> None:
        self.running += 1
        self.peak.append(self.running)
        await self.release.wait()
        self.running -= 1


async def test_while_ingest_is_busy_the_worker_starts_fewer_jobs(db: Database) -> None:
    """busy() true: at most busy_concurrency jobs in flight; false again: the full count."""
    hold = Holder()

    await jobstore.enqueue(db, [NewJob("hold", f"h{i}", {}, run_at=0) for i in range(6)], now=0)
    busy = True
    wake = asyncio.Event()
    w = Worker(db, {"hold": hold}, WorkerSettings(concurrency=8, busy_concurrency=2,
                                                  poll_interval=0.01),
               wake=wake, busy=lambda: busy)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        for _ in range(1000):
            if hold.running == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # several polls: still two
        assert max(hold.peak) == 2
        busy = False
        for _ in range(1000):
            if hold.running == 6:
                break
            await asyncio.sleep(0.01)
        assert hold.running == 6
    finally:
        hold.release.set()
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_capped_kind_never_runs_more_than_its_cap_when_the_limit_rises(
        db: Database) -> None:
    """Review E (s17): the cap was counted when a job's task started, and the loop claims
    again at once after a full batch, before those tasks ran: with the slot limit rising in
    between (ingest stops being busy), the cap was granted twice (6 notify jobs ran at a cap
    of 3)."""
    hold = Holder()

    await jobstore.enqueue(db, [NewJob("notify", f"n{i}", {}, run_at=0) for i in range(8)],
                           now=0)
    calls = 0

    def busy() -> bool:  # busy for the first claim only: one slot, then eight
        nonlocal calls
        calls += 1
        return calls == 1

    w = Worker(db, {"notify": hold}, WorkerSettings(
        concurrency=8, busy_concurrency=1, poll_interval=0.01, kind_limits=(("notify", 3),)),
        busy=busy)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    try:
        for _ in range(1000):
            if hold.running == 3:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # several polls: still three
        assert hold.running == 3 and max(hold.peak) == 3, hold.peak
    finally:
        hold.release.set()
        stop.set()
        await asyncio.wait_for(task, 10)


# -- at_once: a job a handler enqueues to run right after it, in the same task ---------------
def _at_once_worker(db: Database, clock: Clock, ran: list[str]) -> Worker:
    async def parent(job: Job) -> None:
        ran.append(job.key)
        child = NewJob("child", f"child:{job.key}", {}, run_at=clock() + job.payload["delay"],
                       at_once=True)
        async with db.tx(relaxed=True) as conn:
            await jobstore.enqueue_in(conn, [child], clock())
        if job.payload.get("fail"):
            raise PermanentJobError("the cause is not done")  # the child is left behind

    async def record(job: Job) -> None:
        ran.append(job.key)

    settings = WorkerSettings(concurrency=1, lease_seconds=60, poll_interval=0.01)
    return Worker(db, {"parent": parent, "child": record, "other": record}, settings,
                  clock=clock)


async def test_an_at_once_job_runs_right_after_its_cause_ahead_of_the_queue(
    db: Database,
) -> None:
    clock = Clock()
    ran: list[str] = []
    w = _at_once_worker(db, clock, ran)
    await jobstore.enqueue(db, [NewJob("parent", "p", {"delay": 0}, run_at=clock() - 3)], clock())
    await jobstore.enqueue(db, [NewJob("other", f"o{i}", {}, run_at=clock() - 2 + i / 10)
                                for i in range(3)], clock())
    # Four claims from the queue (p, o0, o1, o2); the child ran right after p, in its task.
    assert await w.run_burst() == 4
    assert ran == ["p", "child:p", "o0", "o1", "o2"]
    rows = await db.fetchall("SELECT key, state, attempts FROM jobs ORDER BY id")
    assert [tuple(r) for r in rows] == [("p", "done", 1), ("o0", "done", 1), ("o1", "done", 1),
                                        ("o2", "done", 1), ("child:p", "done", 1)]


async def test_an_at_once_job_not_due_or_of_a_failed_cause_waits_its_turn(
    db: Database,
) -> None:
    clock = Clock()
    ran: list[str] = []
    w = _at_once_worker(db, clock, ran)
    await jobstore.enqueue(db, [NewJob("parent", "later", {"delay": 60}, run_at=clock() - 2),
                                NewJob("parent", "bad", {"delay": 0, "fail": True},
                                       run_at=clock() - 1),
                                NewJob("other", "o", {}, run_at=clock())], clock())
    await w.run_burst()
    # Not due: left in the queue. A failed cause: the worker does not run what it enqueued
    # at once (the queue does, in its turn).
    assert ran == ["later", "bad", "o", "child:bad"]
    state = {r["key"]: r["state"] for r in await db.fetchall("SELECT key, state FROM jobs")}
    assert state["child:later"] == "ready" and state["bad"] == "dead"


async def test_a_stopping_worker_leaves_at_once_jobs_to_the_queue(db: Database) -> None:
    """Graceful shutdown stops claiming: an at_once job enqueued by the last job waits."""
    clock = Clock()
    stop = asyncio.Event()
    ran: list[str] = []

    async def parent(job: Job) -> None:
        ran.append(job.key)
        async with db.tx(relaxed=True) as conn:
            await jobstore.enqueue_in(
                conn, [NewJob("child", "child", {}, run_at=clock(), at_once=True)], clock())
        stop.set()  # SIGTERM arrives while this job runs

    async def child(job: Job) -> None:
        ran.append(job.key)

    w = Worker(db, {"parent": parent, "child": child},
               WorkerSettings(concurrency=1, poll_interval=0.01), clock=clock)
    await jobstore.enqueue(db, [NewJob("parent", "p", {}, run_at=clock())], clock())
    await asyncio.wait_for(w.run(stop), 10)
    assert ran == ["p"]
    row = await db.fetchone("SELECT state FROM jobs WHERE key = 'child'")
    assert row is not None and row["state"] == "ready"


async def test_an_at_once_job_is_leased_to_its_worker_as_it_is_enqueued(db: Database) -> None:
    """No claim of its own: it commits `running`, leased to the worker of its cause, so no
    other worker can take it meanwhile; an existing key is not leased (it keeps its course)."""
    clock = Clock()
    seen: dict[str, object] = {}
    ran: list[str] = []

    async def parent(job: Job) -> None:
        async with db.tx(relaxed=True) as conn:
            await jobstore.enqueue_in(conn, [
                NewJob("child", "child", {"n": 1}, run_at=clock(), at_once=True),
                NewJob("child", "queued", {}, run_at=clock() + 5),
                NewJob("child", "old", {}, run_at=clock(), at_once=True),  # exists already
            ], clock())
        row = await db.fetchone("SELECT * FROM jobs WHERE key = 'child'")
        assert row is not None
        seen.update(state=row["state"], worker=row["worker"], attempts=row["attempts"],
                    lease=row["lease_until"])
        seen["rival"] = [j.key for j in await jobstore.claim(db, "rival", clock(), 60, 10)]

    async def child(job: Job) -> None:
        ran.append(f"{job.key}:{job.attempts}:{job.worker == w.name}")

    w = Worker(db, {"parent": parent, "child": child},
               WorkerSettings(concurrency=1, lease_seconds=45, poll_interval=0.01), clock=clock)
    await jobstore.enqueue(db, [NewJob("child", "old", {}, run_at=clock() + 60)], clock())
    await jobstore.enqueue(db, [NewJob("parent", "p", {}, run_at=clock())], clock())
    assert await w.run_burst() == 1
    assert seen == {"state": "running", "worker": w.name, "attempts": 1, "lease": 1045.0,
                    "rival": []}
    assert ran == ["child:1:True"]  # run by the same worker, after its cause
    state = {r["key"]: r["state"] for r in await db.fetchall("SELECT key, state FROM jobs")}
    assert state == {"old": "ready", "p": "done", "child": "done", "queued": "ready"}


async def test_a_leased_at_once_job_of_a_dead_worker_is_released_at_start(db: Database) -> None:
    """kill -9 between the commit of the cause and the run of its at_once job: the job is
    `running` under a dead worker; the next start makes it due again (lost: never)."""
    clock = Clock()
    follow = jobstore.FollowUp("999999999-dead", 60)
    token = jobstore.FOLLOW_UP.set(follow)
    try:
        async with db.tx(relaxed=True) as conn:
            await jobstore.enqueue_in(
                conn, [NewJob("child", "child", {}, run_at=clock(), at_once=True)], clock())
    finally:
        jobstore.FOLLOW_UP.reset(token)
    assert [j.key for j in follow.jobs] == ["child"]
    assert await jobstore.claim(db, "other", clock(), 60, 10) == []  # leased: not claimable
    assert await jobstore.release_orphaned(db, worker_alive) == 1
    claimed = await jobstore.claim(db, "other", clock(), 60, 10)
    assert [(j.key, j.attempts) for j in claimed] == [("child", 2)]


async def test_on_their_own_at_once_jobs_go_to_the_queue_while_the_cause_runs(
    db: Database,
) -> None:
    """A job that must not wait for its cause (a typing indicator while the cause waits for
    the model) is enqueued `ready`: another claimer takes it before the cause ends."""
    clock = Clock()
    taken: list[str] = []

    async def parent(job: Job) -> None:
        with jobstore.on_their_own():
            async with db.tx(relaxed=True) as conn:
                await jobstore.enqueue_in(
                    conn, [NewJob("child", "typing", {}, run_at=clock(), at_once=True)], clock())
        taken.extend(j.key for j in await jobstore.claim(db, "queue", clock(), 60, 10))

    w = Worker(db, {"parent": parent}, WorkerSettings(concurrency=1), clock=clock)
    await jobstore.enqueue(db, [NewJob("parent", "p", {}, run_at=clock())], clock())
    assert await w.run_burst() == 1
    assert taken == ["typing"]


async def test_an_at_once_job_rolled_back_with_its_cause_is_not_run(db: Database) -> None:
    """A handler that catches its transaction's error and finishes: the job it had listed
    does not exist, and the next insert may reuse its id; nothing runs, nothing is touched."""
    clock = Clock()
    ran: list[str] = []

    async def parent(job: Job) -> None:
        try:
            async with db.tx(relaxed=True) as conn:
                await jobstore.enqueue_in(
                    conn, [NewJob("child", "ghost", {}, run_at=clock(), at_once=True)], clock())
                raise RuntimeError("rolled back after the enqueue")
        except RuntimeError:
            pass
        await jobstore.enqueue(db, [NewJob("child", "later", {}, run_at=clock() + 100)], clock())

    async def child(job: Job) -> None:
        ran.append(job.key)

    w = Worker(db, {"parent": parent, "child": child},
               WorkerSettings(concurrency=1, poll_interval=0.01), clock=clock)
    await jobstore.enqueue(db, [NewJob("parent", "p", {}, run_at=clock())], clock())
    assert await w.run_burst() == 1
    assert ran == []
    rows = await db.fetchall("SELECT id, key, state, worker FROM jobs ORDER BY id")
    assert [(r["key"], r["state"], r["worker"]) for r in rows] == [
        ("p", "done", w.name), ("later", "ready", None)]


async def test_a_second_at_once_job_goes_to_the_queue_at_once(db: Database) -> None:
    """Only the first runs in the cause's task: the second is `ready` at once, so the queue
    can run it while the first is still running (a chain's next message must not wait for
    an AI call listed before it)."""
    clock = Clock()
    seen: list[tuple[str, str]] = []

    async def parent(job: Job) -> None:
        async with db.tx(relaxed=True) as conn:
            await jobstore.enqueue_in(conn, [
                NewJob("child", "first", {}, run_at=clock(), at_once=True),
                NewJob("child", "second", {}, run_at=clock(), at_once=True)], clock())

    async def child(job: Job) -> None:
        row = await db.fetchone("SELECT state, worker FROM jobs WHERE key = 'second'")
        assert row is not None
        seen.append((job.key, f"{row['state']}/{row['worker']}"))
        if job.key == "first":
            seen.append(("rival", ",".join(
                j.key for j in await jobstore.claim(db, "rival", clock(), 60, 10))))

    w = Worker(db, {"parent": parent, "child": child},
               WorkerSettings(concurrency=1, poll_interval=0.01), clock=clock)
    await jobstore.enqueue(db, [NewJob("parent", "p", {}, run_at=clock())], clock())
    await w.run_burst()
    assert seen[:2] == [("first", f"ready/{w.name}"), ("rival", "second")]


async def test_an_at_once_job_of_a_cause_that_ran_long_goes_to_the_queue(db: Database) -> None:
    """Its lease counts from its insert: after more than a quarter of it, the worker does
    not start it in the cause's task (its own timeout would not fit), the queue does."""
    clock = Clock()
    ran: list[str] = []

    async def parent(job: Job) -> None:
        async with db.tx(relaxed=True) as conn:
            await jobstore.enqueue_in(
                conn, [NewJob("child", "child", {}, run_at=clock(), at_once=True)], clock())
        clock.t += 16  # lease 60: a quarter is 15 s

    async def child(job: Job) -> None:
        ran.append(f"{job.key}:{job.worker == w.name}")

    w = Worker(db, {"parent": parent, "child": child},
               WorkerSettings(concurrency=1, lease_seconds=60, poll_interval=0.01), clock=clock)
    await jobstore.enqueue(db, [NewJob("parent", "p", {}, run_at=clock())], clock())
    assert await w.run_burst() == 2  # the parent, then the child from the queue
    row = await db.fetchone("SELECT attempts, lease_until FROM jobs WHERE key = 'child'")
    assert ran == ["child:True"] and row is not None and row["attempts"] == 1


async def test_a_release_leaves_a_job_that_reused_the_id_alone(db: Database) -> None:
    """A cause that failed inside its transaction after enqueueing: its listed job was rolled
    back and another job, leased to the same worker, took its id. Releasing the listed job
    must not put that one back in the queue while it runs."""
    clock = Clock()
    ghost = jobstore.FollowUp("w1", 60)
    token = jobstore.FOLLOW_UP.set(ghost)
    try:
        with contextlib.suppress(RuntimeError):
            async with db.tx(relaxed=True) as conn:
                await jobstore.enqueue_in(
                    conn, [NewJob("child", "x", {}, run_at=clock(), at_once=True)], clock())
                raise RuntimeError("the cause fails inside its transaction")
        clock.t += 1
        other = jobstore.FollowUp("w1", 60)
        jobstore.FOLLOW_UP.set(other)
        async with db.tx(relaxed=True) as conn:
            await jobstore.enqueue_in(
                conn, [NewJob("child", "y", {}, run_at=clock(), at_once=True)], clock())
    finally:
        jobstore.FOLLOW_UP.reset(token)
    assert ghost.jobs[0].id == other.jobs[0].id  # the id was reused
    assert await jobstore.release(db, ghost.jobs) == 0
    assert await jobstore.still_leased(db, ghost.jobs[0]) is None
    row = await db.fetchone("SELECT key, state FROM jobs")
    assert row is not None and tuple(row) == ("y", "running")
    assert await jobstore.release(db, other.jobs) == 1


async def test_a_task_a_job_left_running_enqueues_like_anyone_else(db: Database) -> None:
    """A handler that starts a task and returns: what the task enqueues later is not
    leased to a worker that no longer looks (it would wait out the lease)."""
    clock = Clock()
    later = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def parent(job: Job) -> None:
        async def background() -> None:
            await later.wait()
            async with db.tx(relaxed=True) as conn:
                await jobstore.enqueue_in(
                    conn, [NewJob("child", "bg", {}, run_at=clock(), at_once=True)], clock())
        tasks.append(asyncio.create_task(background()))  # inherits the context

    w = Worker(db, {"parent": parent}, WorkerSettings(concurrency=1), clock=clock)
    await jobstore.enqueue(db, [NewJob("parent", "p", {}, run_at=clock())], clock())
    assert await w.run_burst() == 1
    later.set()
    await asyncio.wait_for(tasks[0], 10)
    row = await db.fetchone("SELECT state, worker FROM jobs WHERE key = 'bg'")
    assert row is not None and (row["state"], row["worker"]) == ("ready", None)
