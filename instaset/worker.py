"""The worker: claims due jobs and runs their handlers under a concurrency limit.

Contract:
- ``Worker.run(stop)`` loops until ``stop`` is set, then stops claiming, waits up to
  ``shutdown_grace`` seconds for in-flight jobs and cancels the rest (their leases lapse and
  the jobs run again on the next start: handlers are idempotent).
- ``Worker.run_burst()`` processes jobs until none is due, then returns (tests, demo, CLI).
- A kind in ``WorkerSettings.kind_limits`` never has more jobs in flight than its cap, and
  gets only the slots the other kinds leave; the rest of its due jobs wait in the queue.
- A handler returning normally completes its job (unless it returns ``COMPLETED``: it
  completed the job itself inside its own transaction); :class:`RetryLater` reschedules;
  :class:`PermanentJobError` dead-letters; any other exception retries with exponential
  backoff and jitter until ``max_attempts``, then dead-letters. A job that outlives its
  timeout is treated as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from instaset.errors import StoreError
from instaset.queue import COMPLETED, Outcome, PermanentJobError, RetryLater, backoff_delay
from instaset.store import jobs as jobstore
from instaset.store.db import Database
from instaset.store.jobs import Job

log = logging.getLogger("instaset.worker")

Handler = Callable[[Job], Awaitable[Outcome | None]]


@dataclass(frozen=True, slots=True)
class JobResult:
    """What came of one run of a job: ``done``, ``deferred`` (RetryLater), ``retry`` (failed,
    tried again at ``run_at``) or ``dead``."""

    state: str
    run_at: float | None = None


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    concurrency: int = 8
    lease_seconds: float = 120.0
    backoff_base: float = 2.0
    backoff_cap: float = 600.0
    poll_interval: float = 1.0
    shutdown_grace: float = 10.0
    job_timeout: float = 90.0
    # While webhooks wait for their commit (``busy`` says so), start jobs only up to this
    # many in flight: each ready job is a slice of event-loop time that an acknowledgement
    # queues behind (asyncio runs ready callbacks in FIFO order), so 32 ready jobs put tens
    # of ms on a webhook's answer. Jobs already running finish; the cap lifts when ingest
    # is idle again.
    busy_concurrency: int = 4
    # While webhooks arrive (``recent``: one waits for its commit, or one came in the last
    # ``spread_window`` seconds), a claimed batch starts ``busy_concurrency`` of its jobs per
    # turn of the event loop, not all in one. A claim in a gap between two webhooks (``busy``
    # is false there) took up to ``concurrency`` jobs, whose first slices then all ran in
    # one turn, and a webhook arriving meanwhile waited behind every one of them (the open
    # loop of bench/ingest.py, on a slow machine: p99 up to 50-65 ms). This spreads the
    # starts and caps nothing: jobs that wait on a send or a model still overlap.
    spread_window: float = 0.05
    # At most this many jobs of a kind in flight at once, (kind, cap) pairs; within
    # ``concurrency``, and only in the slots the other kinds leave (see jobs.claim's
    # ``capped``). For a kind whose jobs may wait long on something outside (a notification
    # on a mail server or chat webhook that does not answer): the replies never queue behind it.
    kind_limits: tuple[tuple[str, int], ...] = ()


def worker_alive(name: str) -> bool:
    """Whether the process of the worker called ``name`` (``<pid>-<random>``, see
    :class:`Worker`) still runs on this machine. A name without a pid counts as dead."""
    pid_text = name.split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    except OSError:
        return False
    return True


class Worker:
    def __init__(
        self,
        db: Database,
        handlers: dict[str, Handler],
        settings: WorkerSettings,
        *,
        wake: asyncio.Event | None = None,
        clock: Callable[[], float] = time.time,
        on_finish: Callable[[Job, str, float], None] | None = None,
        busy: Callable[[], bool] | None = None,
        recent: Callable[[], bool] | None = None,
    ) -> None:
        self.db = db
        # Shared, not copied: features register their handlers after the worker is built.
        self.handlers = handlers
        self.settings = settings
        self.wake = wake if wake is not None else asyncio.Event()
        self.clock = clock
        self.on_finish = on_finish
        self.busy = busy
        self.recent = recent
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._inflight: set[asyncio.Task[None]] = set()
        # In-flight jobs of each capped kind (WorkerSettings.kind_limits), by the job a task
        # was started for (its at_once follow-ups run in the same task and slot).
        self._caps = dict(settings.kind_limits)
        self._running_of: dict[str, int] = dict.fromkeys(self._caps, 0)
        self._freed = asyncio.Event()  # set when an in-flight job finishes
        self._stop: asyncio.Event | None = None  # run()'s: no at_once job is run after it
        # Monotonic time run() last claimed fewer due jobs than it had room for: the ingest
        # writer moves staged events to it then (see store/ingest.py).
        self.ran_dry_at = -math.inf

    # -- one job ---------------------------------------------------------------------------
    async def execute(self, job: Job) -> JobResult:
        """Run one claimed job's handler and record what came of it: completed, deferred
        (:class:`RetryLater`), retried with backoff (an exception) or dead-lettered (a
        :class:`PermanentJobError`, no handler, or the last try). The daemon's loop and the
        CLI (``inbox reply`` delivering its own send) both go through here."""
        handler = self.handlers.get(job.kind)
        try:
            if handler is None:
                raise PermanentJobError(f"no handler for job kind {job.kind!r}")
            # In this task (asyncio.timeout, not wait_for: no task of its own per job).
            async with asyncio.timeout(self.settings.job_timeout):
                result = await handler(job)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The job's task was cancelled (the shutdown grace ran out) and the handler
                # swallowed it: not done, as wait_for had it. Its lease brings it back.
                raise asyncio.CancelledError
            if result is not COMPLETED:
                await jobstore.complete(self.db, job, self.clock())
            return JobResult("done")
        except RetryLater as exc:
            dead = exc.count_attempt and job.attempts >= job.max_attempts
            run_at = self.clock() + exc.delay
            await jobstore.reschedule(
                self.db, job, run_at=run_at, error=exc.reason, dead=dead,
                count_attempt=exc.count_attempt,
            )
            return JobResult("dead" if dead else "deferred", None if dead else run_at)
        except PermanentJobError as exc:
            log.warning("job %s %s dead: %s", job.id, job.kind, exc)
            await jobstore.reschedule(self.db, job, run_at=self.clock(), error=str(exc), dead=True)
            return JobResult("dead")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            dead = job.attempts >= job.max_attempts
            delay = backoff_delay(
                job.attempts, base=self.settings.backoff_base, cap=self.settings.backoff_cap
            )
            err = f"{type(exc).__name__}: {exc}"
            log.warning("job %s %s failed (try %d/%d): %s", job.id, job.kind, job.attempts,
                        job.max_attempts, err)
            log.debug("%s", traceback.format_exc())
            run_at = self.clock() + delay
            await jobstore.reschedule(self.db, job, run_at=run_at, error=err[:2000], dead=dead)
            return JobResult("dead", None) if dead else JobResult("retry", run_at)

    async def _run_job(self, job: Job) -> None:
        follow = await self._run_one(job)
        # The ``at_once`` jobs it enqueued (the reply of a decision, the next link of a chain)
        # were inserted leased to this worker (jobs.FollowUp). The first runs now, in this
        # task, instead of waiting its turn in the queue. Any other goes to the queue at once:
        # run here one after the other, the next link of a reply would wait for an AI call.
        # A stopping worker leaves them all to the queue, and so does a cause that ran long
        # (their lease counts from its insert: the job timeout must fit in what is left).
        while follow:
            first, rest = follow[0], follow[1:]
            stopping = self._stop is not None and self._stop.is_set()
            if stopping or self.clock() - first.created_at > self.settings.lease_seconds / 4:
                await self._release(follow)
                return
            await self._release(rest)
            try:
                nxt = await jobstore.still_leased(self.db, first)
            except (sqlite3.Error, StoreError) as exc:
                log.warning("job %s left to its lease: %s", first.key, exc)
                return
            if nxt is None:  # rolled back with its cause, or no longer ours
                return
            follow = await self._run_one(nxt)

    async def _run_one(self, job: Job) -> list[Job]:
        follow = jobstore.FollowUp(self.name, self.settings.lease_seconds)
        token = jobstore.FOLLOW_UP.set(follow)
        try:
            outcome = await self.execute(job)
        except Exception:
            # Recording the outcome failed (the database): what the cause enqueued goes to
            # the queue rather than wait out its lease.
            await self._release(follow.jobs)
            raise
        finally:
            jobstore.FOLLOW_UP.reset(token)
            follow.closed = True
        if self.on_finish is not None:
            # From when it could first run: a periodic job is created with run_at at the
            # start of its period, hours before it exists (that is no waiting).
            self.on_finish(job, outcome.state, self.clock() - max(job.run_at, job.created_at))
        if outcome.state == "done":
            return follow.jobs
        # A cause that did not finish (retried, deferred, dead) after committing what it
        # enqueued: those jobs wait their turn in the queue, as they would have without it.
        await self._release(follow.jobs)
        return []

    async def _release(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        try:
            await jobstore.release(self.db, jobs)
        except (sqlite3.Error, StoreError) as exc:
            # Their lease lapses instead (or the next start releases them): late, not lost.
            log.warning("%d leased jobs left to their lease: %s", len(jobs), exc)
        self.wake.set()  # the loop claims them now

    # -- loops -----------------------------------------------------------------------------
    async def _claim(self, limit: int) -> list[Job]:
        """Lease up to ``limit`` due jobs. A capped kind's jobs count against its cap from
        here, not from when their task starts: a second claim before the tasks of the first
        have started (the loop claims again at once after a full batch) would grant the
        whole cap again."""
        capped = {kind: max(0, cap - self._running_of[kind]) for kind, cap in self._caps.items()}
        jobs = await jobstore.claim(
            self.db, self.name, self.clock(), self.settings.lease_seconds, limit,
            capped=capped or None,
        )
        for job in jobs:
            if job.kind in self._running_of:
                self._running_of[job.kind] += 1
        return jobs

    async def run_burst(self, *, max_rounds: int = 10_000) -> int:
        """Run due jobs until none is left; returns how many ran."""
        ran = 0
        for _ in range(max_rounds):
            batch = await self._claim(self.settings.concurrency)
            if not batch:
                return ran
            await asyncio.gather(*(self._counted(j) for j in batch))
            ran += len(batch)
        return ran

    async def run(self, stop: asyncio.Event) -> None:
        log.info("worker %s started (concurrency %d)", self.name, self.settings.concurrency)
        self._stop = stop
        while not stop.is_set():
            # Cleared before the claim, not before the sleep: a commit or a finished job
            # during the claim then ends the sleep at once instead of being missed until
            # the next poll.
            self.wake.clear()
            self._freed.clear()
            free = self._limit() - len(self._inflight)
            batch = await self._claim(free) if free > 0 else []
            if len(batch) < free:
                self.ran_dry_at = time.monotonic()
            per_turn = self._starts_per_turn()
            for i, job in enumerate(batch):
                task = asyncio.create_task(self._counted(job, i // per_turn if per_turn else 0),
                                           name=f"job-{job.id}")
                self._inflight.add(task)
                task.add_done_callback(self._job_done)
            if batch and len(batch) == free:
                continue  # more may be due right now
            await self._sleep(stop)
        await self._drain()
        log.info("worker %s stopped", self.name)

    async def _counted(self, job: Job, later: int = 0) -> None:
        """:meth:`_run_job` of a job :meth:`_claim` leased, after ``later`` turns of the event
        loop (see ``WorkerSettings.spread_window``); it stops counting against its kind's
        cap (if any) when it ends. Cancelled before it starts, the job keeps its lease and
        runs again when the lease expires, as any job cut short does."""
        try:
            for _ in range(later):
                await asyncio.sleep(0)
            await self._run_job(job)
        finally:
            if job.kind in self._running_of:
                self._running_of[job.kind] -= 1

    def _limit(self) -> int:
        """How many jobs may be in flight now (see ``WorkerSettings.busy_concurrency``)."""
        limit = self.settings.concurrency
        if self.busy is not None and self.busy():
            return min(limit, max(1, self.settings.busy_concurrency))
        return limit

    def _starts_per_turn(self) -> int:
        """How many claimed jobs start in one turn of the event loop (0: all at once); see
        ``WorkerSettings.spread_window``."""
        if self.recent is not None and self.recent():
            return max(1, self.settings.busy_concurrency)
        return 0

    def _job_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._freed.set()

    async def _sleep(self, stop: asyncio.Event) -> None:
        """Wait for a wake-up (new jobs committed), a finished job, the next due time or
        stop. Three waiters whatever the concurrency (one per in-flight job cost every
        finished job O(concurrency) futures)."""
        waiters = [asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(stop.wait()),
                   asyncio.ensure_future(self._freed.wait())]
        try:
            await asyncio.wait(waiters, timeout=self.settings.poll_interval,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            # Retrieve cancellations so nothing warns about unretrieved exceptions.
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _drain(self) -> None:
        if not self._inflight:
            return
        log.info("waiting up to %.1fs for %d in-flight jobs", self.settings.shutdown_grace,
                 len(self._inflight))
        _done, pending = await asyncio.wait(
            set(self._inflight), timeout=self.settings.shutdown_grace
        )
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
