"""SQL of the durable job queue (policy such as backoff lives in instaset.queue).

States: ready -> running -> done | ready (retry) | dead (dead letter). A running job whose
lease expired is claimable again: that is how work survives a crash or kill -9.
Completion and failure are fenced on (id, worker, state='running'), so a worker that lost
its lease cannot overwrite the outcome of the worker that took the job over.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from instaset.store.db import Database

# The jobs of one contact (``?1`` the account id, ``?2`` the contact id), for erasure (data
# deletion and ``purge --contact``, the two share this): a job whose payload names the
# contact, a ``process_event`` job of one of their events, a ``send`` job of one of their
# sends, and a ``first_plan`` job (its payload holds only the event id; its key
# ``first_plan:<account>:<contact>:<event id>`` names them, and is found by a range of the
# unique key index, even once the event is gone). Run it before their events and sends
# are deleted.
JOBS_OF_CONTACT = (
    "((json_extract(payload, '$.account_id') = ?1 AND json_extract(payload, '$.contact_id') = ?2)"
    " OR (kind = 'process_event' AND json_extract(payload, '$.event_id') IN"
    "     (SELECT id FROM events WHERE account_id = ?1 AND contact_id = ?2))"
    " OR (kind = 'send' AND json_extract(payload, '$.key') IN"
    "     (SELECT key FROM sends WHERE account_id = ?1 AND contact_id = ?2))"
    " OR (kind = 'first_plan' AND key > 'first_plan:' || ?1 || ':' || ?2 || ':'"
    "     AND key < 'first_plan:' || ?1 || ':' || ?2 || ';'))"
)


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    key: str
    payload: Mapping[str, Any]
    attempts: int
    max_attempts: int
    run_at: float
    created_at: float
    worker: str | None
    lease_until: float | None = None  # as read when the job was leased (fences a release)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(
            id=row["id"],
            kind=row["kind"],
            key=row["key"],
            payload=json.loads(row["payload"]),
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            run_at=row["run_at"],
            created_at=row["created_at"],
            worker=row["worker"],
            lease_until=row["lease_until"],
        )


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue. ``key`` is its idempotency key: enqueueing a key twice is a no-op.
    ``at_once``: when it is due now and enqueued by a job the worker runs, that worker runs
    it right after, in the same task, instead of leaving it to wait its turn in the queue
    (see :data:`FOLLOW_UP`)."""

    kind: str
    key: str
    payload: Mapping[str, Any]
    run_at: float
    max_attempts: int = 6
    at_once: bool = False


@dataclass(slots=True)
class FollowUp:
    """What the worker running a job offers :func:`enqueue_in` (through :data:`FOLLOW_UP`):
    its name and lease. A due ``at_once`` job is then inserted already leased to that worker
    (``running``, first attempt), in the transaction of its cause, and listed in ``jobs``:
    no separate claim. The lease counts from that insert: the worker runs the first such
    job right after the cause, if the cause did not run long, and puts the others back in
    the queue (:func:`release`). A crash leaves them like any leased job: the lease lapses,
    or the next start releases them (:func:`release_orphaned`). ``closed`` once the cause
    has run: a task it started and left running enqueues like anyone else."""

    worker: str
    lease: float
    jobs: list[Job] = field(default_factory=list)
    closed: bool = False


FOLLOW_UP: ContextVar[FollowUp | None] = ContextVar("instaset_follow_up", default=None)
"""Set by the worker around a handler (see :class:`FollowUp`). A job rolled back with its
cause is simply not there: the worker runs only what committed."""


@contextlib.contextmanager
def on_their_own() -> Iterator[None]:
    """Jobs enqueued inside go to the queue even if ``at_once``: for a job that must not
    wait for the end of the job that enqueues it (the "typing..." indicator an AI reply
    shows while it still waits for the model)."""
    token = FOLLOW_UP.set(None)
    try:
        yield
    finally:
        FOLLOW_UP.reset(token)


ENQUEUE_SQL = (
    "INSERT INTO jobs(kind, key, payload, run_at, max_attempts, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(key) DO NOTHING"
)

# An at_once job leased to the worker that runs its cause (see FollowUp). A key that exists
# already inserts nothing and returns nothing: that job keeps its own course in the queue.
_ENQUEUE_LEASED_SQL = (
    "INSERT INTO jobs(kind, key, payload, run_at, max_attempts, created_at, state, attempts,"
    " worker, lease_until, started_at)"
    " VALUES (?, ?, ?, ?, ?, ?, 'running', 1, ?, ?, ?) ON CONFLICT(key) DO NOTHING RETURNING *"
)


def _payload(job: NewJob) -> str:
    return json.dumps(job.payload, separators=(",", ":"))


async def enqueue_in(conn: aiosqlite.Connection, jobs: Sequence[NewJob], now: float) -> None:
    """Enqueue inside a transaction the caller holds (so jobs commit with their cause)."""
    follow = FOLLOW_UP.get()
    lessee = follow if follow is not None and not follow.closed else None
    queued: list[NewJob] = []
    for j in jobs:
        if lessee is None or not (j.at_once and j.run_at <= now):
            queued.append(j)
            continue
        rows = await conn.execute_fetchall(_ENQUEUE_LEASED_SQL, (
            j.kind, j.key, _payload(j), j.run_at, j.max_attempts, now,
            lessee.worker, now + lessee.lease, now))
        lessee.jobs.extend(Job.from_row(r) for r in rows)
    if queued:
        await conn.executemany(
            ENQUEUE_SQL,
            [(j.kind, j.key, _payload(j), j.run_at, j.max_attempts, now) for j in queued],
        )


async def enqueue(db: Database, jobs: Sequence[NewJob], now: float, *, relaxed: bool = False
                  ) -> None:
    """Enqueue in a transaction of its own (``relaxed`` as for :meth:`Database.tx`)."""
    async with db.tx(relaxed=relaxed) as conn:
        await enqueue_in(conn, jobs, now)


async def claim_key(db: Database, key: str, worker: str, now: float, lease: float, *,
                    relaxed: bool = False) -> Job | None:
    """Lease the job with idempotency key ``key`` if it is due (or its lease lapsed). Same
    fencing as :func:`claim`: one UPDATE ... RETURNING, so two claimers (two workers, or a
    daemon's worker and the CLI) can never both hold it."""
    async with db.tx(relaxed=relaxed) as conn:
        rows = list(await conn.execute_fetchall(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, worker = ?,"
            " lease_until = ?, started_at = ?"
            " WHERE key = ? AND ((state = 'ready' AND run_at <= ?)"
            "   OR (state = 'running' AND lease_until < ?))"
            " RETURNING *",
            (worker, now + lease, now, key, now, now),
        ))
    return Job.from_row(rows[0]) if rows else None


# The two branches are separate subqueries so that each walks the jobs_due index in order
# (one OR over both made SQLite sort every due job: 1.5 ms per claim with a backlog).
# ``{only}`` narrows both to some kinds (see :func:`claim`'s ``capped``): the index is walked
# as before, the kind read from each row it passes.
_CLAIM_TEMPLATE = """
UPDATE jobs SET state = 'running', attempts = attempts + 1, worker = :worker,
       lease_until = :lease_until, started_at = :now
WHERE id IN (
    SELECT id FROM (SELECT id FROM jobs WHERE state = 'running' AND lease_until < :now{only}
                    LIMIT :limit)
    UNION ALL
    SELECT id FROM (SELECT id FROM jobs WHERE state = 'ready' AND run_at <= :now{only}
                    ORDER BY run_at, id LIMIT :limit)
    LIMIT :limit)
RETURNING *
"""
_CLAIM_SQL = _CLAIM_TEMPLATE.format(only="")


def _claim_sql(only: str) -> str:
    return _CLAIM_TEMPLATE.format(only=f" AND {only}")


async def claim(db: Database, worker: str, now: float, lease: float, limit: int, *,
                capped: Mapping[str, int] | None = None) -> list[Job]:
    """Atomically lease up to ``limit`` due jobs (one UPDATE ... RETURNING statement, so two
    claimers can never take the same job).

    ``capped`` maps a job kind to how many more jobs of it may be leased now (0: none): the
    jobs of the other kinds are claimed first, then, in the slots they left, up to that many
    of each capped kind, in the same transaction. A kind that may hold its jobs for long
    (a notification waiting on a mail server that does not answer) then never takes the
    slots the others need."""
    params: dict[str, Any] = {"worker": worker, "lease_until": now + lease, "now": now}
    async with db.tx(relaxed=True) as conn:
        if not capped:
            rows = list(await conn.execute_fetchall(_CLAIM_SQL, {**params, "limit": limit}))
        else:
            kinds = sorted(capped)
            marks = ", ".join(f":k{i}" for i in range(len(kinds)))
            named = {f"k{i}": k for i, k in enumerate(kinds)}
            rows = list(await conn.execute_fetchall(
                _claim_sql(f"kind NOT IN ({marks})"), {**params, **named, "limit": limit}))
            for kind in kinds:
                room = min(limit - len(rows), capped[kind])
                if room <= 0:
                    continue
                rows += await conn.execute_fetchall(
                    _claim_sql("kind = :kind"), {**params, "kind": kind, "limit": room})
    jobs = [Job.from_row(r) for r in rows]
    jobs.sort(key=lambda j: (j.run_at, j.id))
    return jobs


async def complete(db: Database, job: Job, now: float) -> bool:
    """Mark done. False if this worker no longer holds the lease."""
    return (
        await db.execute(
            "UPDATE jobs SET state = 'done', finished_at = ?, lease_until = NULL, last_error = NULL"
            " WHERE id = ? AND worker = ? AND state = 'running'",
            (now, job.id, job.worker), relaxed=True,
        )
        == 1
    )


async def complete_in(conn: aiosqlite.Connection, job: Job, now: float) -> bool:
    """Mark done inside the caller's transaction (a handler's effects and its completion
    then commit together)."""
    cur = await conn.execute(
        "UPDATE jobs SET state = 'done', finished_at = ?, lease_until = NULL, last_error = NULL"
        " WHERE id = ? AND worker = ? AND state = 'running'",
        (now, job.id, job.worker),
    )
    return cur.rowcount == 1


async def pending_under(conn: aiosqlite.Connection, prefix: str, kind: str | None = None
                        ) -> bool:
    """Whether a job whose key starts with ``prefix`` (and of ``kind``, when given) is still
    to run (ready or running). ``prefix`` ends with its separator (``:``): the keys are a
    range of the unique index, no scan of the queue."""
    rows = await conn.execute_fetchall(
        "SELECT 1 FROM jobs WHERE key > ? AND key < ? AND (?3 IS NULL OR kind = ?3)"
        " AND state IN ('ready', 'running') LIMIT 1",
        (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1), kind))
    return bool(list(rows))


async def reschedule(
    db: Database, job: Job, *, run_at: float, error: str | None, dead: bool,
    count_attempt: bool = True,
) -> bool:
    """Put the job back (ready at ``run_at``) or dead-letter it. ``count_attempt=False`` is
    for deferrals that are not failures (e.g. waiting for a rate budget)."""
    state = "dead" if dead else "ready"
    return (
        await db.execute(
            "UPDATE jobs SET state = ?, run_at = ?, last_error = ?, lease_until = NULL,"
            " attempts = attempts - ?, finished_at = CASE WHEN ? = 'dead' THEN ? END"
            " WHERE id = ? AND worker = ? AND state = 'running'",
            (state, run_at, error, 0 if count_attempt else 1, state, run_at, job.id, job.worker),
            relaxed=True,
        )
        == 1
    )


# A job is still the one a worker holds only with the same id, key, worker and lease: an id
# freed by a rollback goes to the next insert, possibly another job leased to this worker.
_LEASED = "id = ? AND key = ? AND worker = ? AND state = 'running' AND lease_until IS ?"


async def still_leased(db: Database, job: Job) -> Job | None:
    """``job`` as stored, if it is still leased as it was listed: None when the transaction
    that inserted it rolled back after :func:`enqueue_in` listed it (a handler that caught
    the error and finished anyway), or when its lease changed hands. One indexed read: what
    a :class:`FollowUp` job costs instead of a claim.

    The group of relaxed transactions its cause may be in commits first (see
    :meth:`Database.tx`): a follow-up runs after its cause committed, as a claimed job
    does (its claim commits the group), whatever it then does outside the database."""
    await db.end_group()
    rows = await db.fetchall(f"SELECT * FROM jobs WHERE {_LEASED}",
                             (job.id, job.key, job.worker, job.lease_until), quick=True)
    return Job.from_row(rows[0]) if rows else None


async def release(db: Database, jobs: Sequence[Job]) -> int:
    """Put leased jobs their worker will not run back in the queue, due as they were, the
    attempt not counted (an at_once job whose cause failed, a second one, or a stopping
    worker's). Fenced like :func:`still_leased`: a row that is not the job as listed (rolled
    back, its id reused) is left alone."""
    if not jobs:
        return 0
    async with db.tx(relaxed=True) as conn:  # one commit for them all
        cur = await conn.executemany(
            "UPDATE jobs SET state = 'ready', lease_until = NULL, attempts = attempts - 1"
            f" WHERE {_LEASED}", [(j.id, j.key, j.worker, j.lease_until) for j in jobs])
        return cur.rowcount


async def release_orphaned(db: Database, alive: Callable[[str], bool]) -> int:
    """Make due now every running job whose worker is not ``alive`` (a process that died
    holding it: kill -9, a power loss). A job another live process holds (``inbox reply``
    delivering from the CLI while the daemon starts) keeps its lease: running it here too
    could send its message twice."""
    rows = await db.fetchall(
        "SELECT DISTINCT coalesce(worker, '') FROM jobs WHERE state = 'running'"
    )
    dead = [str(r[0]) for r in rows if not r[0] or not alive(str(r[0]))]
    if not dead:
        return 0
    marks = ", ".join("?" for _ in dead)
    return await db.execute(
        "UPDATE jobs SET state = 'ready', lease_until = NULL"
        f" WHERE state = 'running' AND coalesce(worker, '') IN ({marks})",
        dead,
    )


async def next_due_at(db: Database) -> float | None:
    row = await db.fetchone(
        "SELECT min(CASE WHEN state = 'ready' THEN run_at ELSE lease_until END) FROM jobs"
        " WHERE state IN ('ready', 'running')"
    )
    return float(row[0]) if row and row[0] is not None else None


async def counts_by_state(db: Database) -> dict[str, int]:
    rows = await db.fetchall("SELECT state, count(*) FROM jobs GROUP BY state")
    counts = {"ready": 0, "running": 0, "done": 0, "dead": 0}
    counts.update({r[0]: int(r[1]) for r in rows})
    return counts


async def queue_depth(db: Database, now: float) -> int:
    """Jobs waiting to run now or running: ready ones due by ``now``, and running ones. Jobs
    scheduled for later (periodic checks, delays, retries in backoff) are not a backlog."""
    row = await db.fetchone(
        "SELECT (SELECT count(*) FROM jobs WHERE state = 'ready' AND run_at <= ?)"
        " + (SELECT count(*) FROM jobs WHERE state = 'running')", (now,))
    return int(row[0]) if row is not None else 0


async def get(db: Database, job_id: int) -> sqlite3.Row | None:
    return await db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))


async def get_by_key(db: Database, key: str) -> sqlite3.Row | None:
    """The job with idempotency key ``key`` (None: no such job)."""
    return await db.fetchone("SELECT * FROM jobs WHERE key = ?", (key,))


async def last_error(db: Database, key: str) -> str | None:
    """The last error of the job with idempotency key ``key`` (None: none, or no such job)."""
    row = await db.fetchone("SELECT last_error FROM jobs WHERE key = ?", (key,))
    return row["last_error"] if row is not None else None


async def list_jobs(db: Database, state: str | None = None, limit: int = 100) -> list[sqlite3.Row]:
    if state is None:
        return await db.fetchall("SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,))
    return await db.fetchall(
        "SELECT * FROM jobs WHERE state = ? ORDER BY id DESC LIMIT ?", (state, limit)
    )


async def requeue_dead(db: Database, now: float) -> int:
    return await db.execute(
        "UPDATE jobs SET state = 'ready', attempts = 0, run_at = ?, finished_at = NULL"
        " WHERE state = 'dead'",
        (now,),
    )
