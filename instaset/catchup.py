"""Catching up after downtime: gaps, the webhook subscription, and backfill.

Contracts:

- The periodic ``catchup`` job (every :attr:`CatchUpSettings.interval`) checks each connected
  account: the webhook subscription (subscribed again, and the creator told, when Meta dropped
  it), then whether there is a gap to backfill: the first check of this process (the daemon
  started: everything since the previous check), a check long after the previous one (the
  daemon or its worker was down), no event for :attr:`CatchUpSettings.quiet_seconds` while
  connected, a restored subscription, or the first check of an account ever. It also queues
  ``profile`` lookups (:class:`instaset.contacts.Profiles`). It never raises: an exception
  would end the chain of periodic jobs.
- A backfill is a ``catchup_runs`` row and a chain of ``catchup_backfill`` jobs (key
  ``catchup:{run}:{generation}:{part}``, durable and idempotent). Each job is one batch,
  bounded by :attr:`CatchUpSettings.calls_per_job` Conversations API calls AND by
  :attr:`CatchUpSettings.batch_seconds` (measured on a monotonic timer; the first
  :data:`MIN_CALLS` calls of a batch are always made, so every batch makes progress), then
  queues the next part. Every call of an account goes through one
  :class:`~instaset.backfill.CallLimiter` (``rate_limits.conversations_per_second``,
  Meta's 2/s by default). Conversations are walked newest first until one older than the
  gap; of each, the messages instaset does not have (not in the history, not a stored event,
  not one of its sends) are read one by one, only among the 20 newest (the only ones Meta
  details; missed older ones are counted as unavailable).
- At most one run per account is unfinished. A gap found while one is (a restart, a
  resubscription, a downtime, a run by hand) restarts it in place: a new generation
  (``started_at``), ``since`` the union of both gaps, the walk again from the newest
  conversation; the previous generation's jobs find the fence moved and stop without a call.
  A quiet or retry gap leaves a run whose chain is alive alone (restarting it at every check
  would never let a long run end); an unfinished run whose chain is gone (dead-lettered,
  purged) is resumed by the next check.
- A batch failing on a timeout, a transport error, Meta's 5xx or throttling is retried with
  exponential backoff up to :attr:`CatchUpSettings.max_tries` tries (a batch that made
  progress first queues the rest as a fresh part instead); then the run ends failed: an
  ``error`` on its row, one warning log line, the creator's notification, and
  :func:`doctor_checks`. Failed runs since the last success are retried as a ``retry`` gap
  covering their periods, after a cool-down doubling with each failure
  (:meth:`CatchUpSettings.cool_down`), so a broken API is never hammered in a loop.
- A recovered message is stored as the single-item webhook envelope Meta would have sent,
  with ingest's dedupe key and ``process_event`` job, and a ``recovered_events`` mark, one
  transaction per conversation. The normal pipeline then applies every rule to it as to any
  late event: nothing goes out after the 24 h window, inside it the workflows run once, and a
  webhook arriving late for the same message is a duplicate.
- Recovered events go in after every event ingest acknowledged: before a conversation's
  calls, and again in the transaction that stores what they recovered, catch-up moves what
  ingest staged under load (``ingest.move_staged``, at most :data:`STAGED_INLINE` rows a
  transaction, with no daemon running too). When rows are still staged after that (heavy
  load), the conversation waits: the daemon's walk goes on at that conversation in a part
  queued :data:`STAGED_RETRY` s later, as after a part whose budget ran out; ``instaset
  catch-up`` tries it again every :data:`STAGED_POLL` s, for up to :data:`STAGED_PATIENCE` s
  at one conversation (a wait after progress starts anew), then ends the run failed (the
  account is not marked covered).
- A conversation walked to its end is recorded for the run (``catchup_walked``): the same
  generation never walks it twice, and a later one (the run restarted in place) walks it
  again but counts it, and its unreadable messages, once. A pass that listed conversations
  more than once (a second page, or a later part: a spent budget, a retry, a wait for
  ingest) is followed by a pass from the newest conversation down to the first not updated
  since that pass began (less the gap's overlap, for clock skew): one that new messages
  moved above the pass's position meanwhile is walked then. Conversations already walked
  cost nothing there, so such a pass is usually one call. At most :data:`TOP_PASSES` follow
  the walk; only a conversation that moves up during the last of them can still be missed.
- A run that started, restarted, waited for ingest or walked a conversation in the last
  :data:`~instaset.catchup_check.WALKING_SECONDS` (``progressed_at``) is being walked
  (``instaset catch-up`` queues no job): the periodic check does not take it over as
  chainless. A walk whose run finished or was restarted meanwhile (a new gap) stops before
  its next conversation, and nothing it had read is stored (:class:`_Fenced`); the CLI then
  reports that the daemon took it over.
- When a run ends, one notification tells the creator what was recovered (and what could
  not be); a failing run tells them why.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from instaset.backfill import (
    CallLimiter,
    CatchUpSettings,
    parse_since,
    parse_time,
    participants,
    recovered_row,
    summary_text,
)
from instaset.catchup_check import (
    DEFAULT_FIELDS,
    GapCheck,
    RunReport,
    _at,
)
from instaset.catchup_walk import TOP_PASSES, _Batch, _Fenced, _Pass, _Spent, _Staged, part_job
from instaset.config import Config
from instaset.contacts import Profiles
from instaset.engine.decide import needs_follower
from instaset.errors import GraphError, InvalidParameter, Throttled, TokenInvalid
from instaset.graph import GraphClient
from instaset.notify import notify_job
from instaset.queue import NewJob, Outcome, RetryLater, backoff_delay, enqueue_in
from instaset.store import contacts as store
from instaset.store import history
from instaset.store.db import Database
from instaset.store.ingest import any_staged, move_staged
from instaset.store.jobs import Job
from instaset.token_health import token_rejected
from instaset.tokens import TokenProvider

if TYPE_CHECKING:
    from instaset.daemon import Runtime
    from instaset.doctor import Check

__all__ = [
    "DEFAULT_FIELDS", "TOP_PASSES", "CatchUp", "CatchUpSettings", "RunReport",
    "doctor_checks", "install", "parse_since", "run_catch_up",
]

log = logging.getLogger("instaset.catchup")

T = TypeVar("T")

# Recovered events go in after every event ingest acknowledged (see the module docstring):
# staged rows moved per transaction; the daemon's next try after heavy load; the CLI's.
STAGED_INLINE = 2000
STAGED_RETRY = 5.0
STAGED_POLL = 1.0
STAGED_PATIENCE = 120.0

# -- the work --------------------------------------------------------------------------------------
class CatchUp(GapCheck):
    """Catch-up: the check (:class:`~instaset.catchup_check.GapCheck`) and the walk."""

    def __init__(
        self, db: Database, graph: GraphClient, tokens: TokenProvider, *,
        clock: Callable[[], float] = time.time, settings: CatchUpSettings | None = None,
        wake: Callable[[], None] = lambda: None, max_attempts: int = 6,
        profiles: Profiles | None = None, limiter: CallLimiter | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` stamps rows and schedules jobs; ``timer`` measures a batch's time budget
        (monotonic: a clock step must not end or stretch a batch) and, unless a ``limiter``
        is given, drives the call limiter."""
        self.db = db
        self.graph = graph
        self.tokens = tokens
        self.clock = clock
        self.timer = timer
        self.settings = settings or CatchUpSettings()
        self.wake = wake
        self.max_attempts = max_attempts
        self.profiles = profiles or Profiles(db, graph, tokens, clock=clock)
        self.limiter = limiter or CallLimiter(self.settings.calls_per_second, clock=timer)
        self._checked: set[str] = set()  # accounts checked by this process
        self._throttled: set[str] = set()  # accounts in a throttled episode of checks
        # Two periodic jobs can be due at once after a restart (the slot left by the last
        # process and the one serving() adds): one check at a time, so only the first one
        # sees the start.
        self._lock = asyncio.Lock()

    @classmethod
    def for_runtime(cls, rt: Runtime, settings: CatchUpSettings | None = None) -> CatchUp:
        # A batch (plus one call's Graph timeout) must end well before the worker cancels it.
        s = settings or CatchUpSettings(
            calls_per_second=rt.config.rate_limits.conversations_per_second,
            batch_seconds=min(25.0, rt.worker.settings.job_timeout / 3),
        )
        return cls(rt.db, rt.graph, rt.tokens, clock=rt.clock, settings=s, wake=rt.wake.set,
                   max_attempts=rt.config.worker.max_attempts)

    # -- job handlers ----------------------------------------------------------------------
    async def periodic_job(self, job: Job) -> None:
        """The periodic ``catchup`` job. Never raises (see the module docstring)."""
        del job
        await self.check_all()

    async def start_job(self, job: Job) -> None:
        """``catchup_start``: the check the daemon queues as it starts (same as periodic: the
        first check of a process is a start check anyway; this one just comes at once)."""
        del job
        await self.check_all()

    async def enqueue_start(self) -> None:
        now = self.clock()
        async with self.db.tx() as conn:
            await enqueue_in(conn, [NewJob("catchup_start", f"catchup:start:{now!r}", {},
                                           run_at=now)], now)
        self.wake()

    async def backfill_job(self, job: Job) -> None:
        """``catchup_backfill``: one batch of a run; queues the next one itself. A job of an
        older generation of its run (see :meth:`_plan`) does nothing."""
        p = job.payload
        run_id, acct = int(p["run_id"]), str(p["account_id"])
        run = await store.get_run(self.db, run_id)
        if run is None or run["finished_at"] is not None:
            return
        gen = float(run["started_at"])
        if p.get("gen") is None or float(p["gen"]) != gen:
            log.debug("catch-up run %d: part %s of an older generation: nothing to do",
                      run_id, p.get("part"))
            return
        tries = self.settings.max_tries
        if job.attempts > tries:  # the worker cut the last try short (its job timeout)
            await self._give_up(run_id, gen, acct, tries, "a batch never completed")
            return
        start = (p.get("after"), int(p.get("skip", 0)))
        walk = _Pass.of(p, gen)
        part = int(p.get("part", 0))
        batch = _Batch(max_calls=self.settings.calls_per_job,
                       seconds=self.settings.batch_seconds, timer=self.timer, resume=start)
        try:
            left = await self.backfill(run_id, acct, float(run["since"]), after=start[0],
                                       skip=start[1], batch=batch, gen=gen, floor=walk.floor)
        except _Fenced:
            log.debug("catch-up run %d: restarted or finished meanwhile: this part stops",
                      run_id)
            return
        except _Staged as staged:
            log.info("catch-up run %d: ingest is under heavy load; the walk goes on in "
                     "%.0f s", run_id, STAGED_RETRY)
            await self._next_part(run_id, acct, gen, staged.resume, part + 1,
                                  self.clock() + STAGED_RETRY, walk.going_on())
            return
        except TokenInvalid:
            await token_rejected(self.db, self.tokens, acct, await self.tokens.token(acct),
                                 self.clock())
            await self.finish(run_id, error="the access token is invalid; run `instaset "
                              "connect`", generation=gen)
            return
        except GraphError as exc:
            if exc.retryable:
                await self._retry(job, run_id, gen, acct, batch, start, exc)
                return
            await self._give_up(run_id, gen, acct, job.attempts, str(exc))
            return
        except Exception as exc:  # timeouts and transport errors reach here as Transient
            await self._retry(job, run_id, gen, acct, batch, start, exc)
            return
        if left is not None:
            await self._next_part(run_id, acct, gen, left, part + 1, self.clock(),
                                  walk.going_on())
            return
        following = walk.after(batch.paged, self.clock())
        if following is not None:
            # This pass listed conversations more than once: one may have moved above it.
            await self._next_part(run_id, acct, gen, (None, 0), part + 1, self.clock(),
                                  following)
            return
        await self.finish(run_id, generation=gen)

    async def _retry(
        self, job: Job, run_id: int, gen: float, acct: str, batch: _Batch,
        start: tuple[str | None, int], exc: Exception,
    ) -> None:
        """A retryable failure: queue the rest as a fresh part when the batch got somewhere,
        else try the batch again after a backoff, up to ``max_tries``; then give up."""
        tries = self.settings.max_tries
        delay = backoff_delay(job.attempts, base=self.settings.retry_base,
                              cap=self.settings.retry_cap)
        if isinstance(exc, Throttled) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        if batch.resume != start:
            log.info("catch-up run %d: %s after some progress; the rest in %.0f s", run_id,
                     exc, delay)
            part = int(job.payload.get("part", 0)) + 1
            await self._next_part(run_id, acct, gen, batch.resume, part, self.clock() + delay,
                                  _Pass.of(job.payload, gen).going_on())
            return
        if job.attempts >= tries:
            await self._give_up(run_id, gen, acct, job.attempts, str(exc))
            return
        log.warning("catch-up run %d (account %s): try %d/%d failed: %s; again in %.0f s",
                    run_id, acct, job.attempts, tries, exc, delay)
        raise RetryLater(delay, f"catch-up: {exc}"[:300])

    async def _give_up(self, run_id: int, gen: float, acct: str, tries: int, why: str) -> None:
        error = f"{why[:240]} (gave up after {tries} tr{'y' if tries == 1 else 'ies'})"
        if await self.finish(run_id, error=error, generation=gen) is not None:
            log.warning("catch-up run %d of account %s FAILED: %s; recorded as failed, the "
                        "creator is notified, it is retried after a cool-down (`instaset "
                        "catch-up` runs it now)", run_id, acct, error)

    async def _next_part(self, run_id: int, acct: str, gen: float,
                         at: tuple[str | None, int], part: int, run_at: float,
                         walk: _Pass) -> None:
        now = self.clock()
        async with self.db.tx() as conn:
            await enqueue_in(conn, [part_job(run_id, acct, gen, at[0], at[1], part,
                                             run_at, self.settings.max_tries, walk)], now)
        self.wake()

    async def backfill(
        self, run_id: int, acct: str, since: float, *, after: str | None = None, skip: int = 0,
        batch: _Batch | None = None, gen: float, floor: float | None = None,
    ) -> tuple[str | None, int] | None:
        """Walk the conversations from (``after``, ``skip``); returns None when done, else
        where the next part starts (its ``after`` cursor and how many of that page to skip)
        because the batch's call or time budget ran out. Without ``batch``: no budget.

        ``gen``: the run's generation (its ``started_at``). A conversation this generation
        walked to its end is skipped without a call; raises :class:`_Fenced` when the run is
        no longer at ``gen``. ``floor``: a pass from the top, down to the first conversation
        not updated since ``floor`` instead of ``since``, less the settings' ``overlap``:
        the clock skew a gap allows for (Meta's times against ours)."""
        limit = since - 1 if floor is None else max(since, floor) - self.settings.overlap
        token = await self.tokens.token(acct)
        if not token:
            raise TokenInvalid("no access token is stored for this account")
        b = batch or _Batch(max_calls=None, seconds=None, timer=self.timer,
                            resume=(after, skip))
        while True:
            try:
                page, next_cursor = await self._call(
                    acct, b,
                    functools.partial(self.graph.conversations, acct, token=token, after=after),
                )
            except _Spent:
                return after, skip
            for idx in range(skip, len(page)):
                updated = parse_time(page[idx].get("updated_time"))
                if updated is not None and updated < limit:
                    return None  # newest first: the rest is older still
                if not b.room(2):
                    return after, idx
                try:
                    complete = await self._conversation(run_id, acct, token, page[idx],
                                                        since, b, gen=gen)
                except _Staged:
                    raise _Staged((after, idx)) from None
                if not complete:
                    return after, idx
                b.resume = (after, idx + 1)
            if next_cursor is None:
                return None
            after, skip = next_cursor, 0
            b.resume = (after, skip)
            b.paged = True

    async def _call(self, acct: str, batch: _Batch, make: Callable[[], Awaitable[T]]) -> T:
        if batch.calls >= batch.max_calls:
            raise _Spent
        if not await self.limiter.acquire(acct, deadline=batch.limiter_deadline()):
            raise _Spent
        batch.calls += 1
        return await make()

    async def _conversation(
        self, run_id: int, acct: str, token: str, conv: Mapping[str, object], since: float,
        batch: _Batch, *, gen: float,
    ) -> bool:
        """Recover what is missing from one conversation; False when the budget ran out
        before it was complete (what was read is kept: the next part skips it). Raises
        :class:`_Staged` (nothing stored) when ingest keeps events staged beyond what a
        transaction moves: the conversation is done again later. A conversation complete
        is recorded as walked by generation ``gen``; one recorded already is skipped (True,
        no call, not counted again)."""
        start = batch.calls
        conv_id = str(conv.get("id"))
        current, walked = await store.walk_state(self.db, run_id, gen, conv_id)
        if walked:
            return True
        if not current:
            raise _Fenced
        usernames = participants(conv)
        await self._move_staged()  # before the calls, so they are not made in vain
        try:
            listed = await self._call(acct, batch, functools.partial(
                self.graph.conversation_messages, conv_id, token=token))
        except _Spent:
            return False
        msgs = [(str(m["id"]), parse_time(m.get("created_time"))) for m in listed if m.get("id")]
        msgs.sort(key=lambda m: m[1] or 0.0, reverse=True)
        readable = {mid for mid, _ in msgs[: self.settings.detail_limit]}
        recent = [mid for mid, at in msgs if at is None or at >= since - 1]
        known = await store.known_mids(self.db, recent)
        missing = [mid for mid in recent if mid not in known]
        rows: list[store.RecoveredRow] = []
        unreadable = 0
        complete = True
        for mid in (m for m in missing if m in readable):
            try:
                if not batch.room(1):
                    raise _Spent
                detail = await self._call(
                    acct, batch, functools.partial(self.graph.message, mid, token=token))
            except _Spent:
                complete = False
                break
            except InvalidParameter:
                unreadable += 1  # deleted since, or no longer readable
                continue
            row = recovered_row(acct, detail, usernames, fallback_at=self.clock())
            if row is not None:
                rows.append(row)
        rows.sort(key=lambda r: r.occurred_at)
        now = self.clock()
        lost = (len([m for m in missing if m not in readable]) + unreadable) if complete else 0
        async with self.db.tx() as conn:
            moved, calm = await move_staged(conn, max_attempts=self.max_attempts,
                                            limit=STAGED_INLINE)
            current = await store.is_current(conn, run_id, gen)
            calm = calm and current
            new = await store.insert_recovered(conn, rows, run_id=run_id, now=now,
                                               max_attempts=self.max_attempts) if calm else 0
            counted, unreadable = (await store.mark_walked(conn, run_id, gen, conv_id, lost)
                                   if complete and calm else (0, 0))
            await store.add_progress(conn, run_id, now=now, calls=batch.calls - start,
                                     conversations=counted, recovered=new,
                                     unavailable=unreadable)
        if moved:
            self.wake()  # the moved events' jobs
        if not current:
            raise _Fenced
        if not calm:
            raise _Staged
        batch.walked += int(complete)
        if new:
            log.info("recovered %d message(s) of conversation %s", new, conv_id)
            self.wake()
        return complete

    async def finish(
        self, run_id: int, *, error: str | None = None, generation: float | None = None,
    ) -> RunReport | None:
        """End a run: mark the account covered up to the run's start, and tell the creator
        what was recovered (once: a redelivered job finds the run finished). With
        ``generation``, only that generation of the run may end it."""
        run = await store.get_run(self.db, run_id)
        if run is None or run["finished_at"] is not None:
            return None
        acct = str(run["account_id"])
        row = await history.get_account(self.db, acct)
        username = row["username"] if row is not None else None
        per_contact = await store.recovered_by_contact(self.db, run_id)
        now = self.clock()
        text = summary_text(username or acct, str(run["reason"]), int(run["recovered"]),
                            [(r["username"] or r["contact_id"], int(r["n"])) for r in per_contact],
                            int(run["unavailable"]), error)
        async with self.db.tx() as conn:
            if not await store.finish_run(conn, run_id, now, error, generation=generation):
                return None
            if error is None:
                await store.mark_backfilled(conn, acct, float(run["started_at"]))
            if text is not None:
                await enqueue_in(conn, [notify_job(f"catchup:{run_id}", acct, None, "catchup",
                                                   text, now)], now)
        if text is not None:
            self.wake()
        return RunReport(acct, username, False, run_id, str(run["reason"]), float(run["since"]),
                         int(run["recovered"]), int(run["unavailable"]), error)

    async def run_now(self, since: float | None = None) -> list[RunReport]:
        """``instaset catch-up``: check every connected account and backfill right here, to
        the end (no job time limit; while ingest is under heavy load it waits, up to
        :data:`STAGED_PATIENCE` s, then records the run as failed). The recovered events are
        processed by the daemon."""
        reports: list[RunReport] = []
        for acct in await store.connected_accounts(self.db):
            checked = await self.check_account(acct, manual_since=since, queue=False)
            if checked.run_id is None:
                reports.append(checked)
                continue
            run = await store.get_run(self.db, checked.run_id)
            gen = float(run["started_at"]) if run is not None else math.nan
            error: str | None = None
            try:
                error = await self._walk_to_the_end(checked.run_id, checked.account_id,
                                                    checked.since or 0.0, gen)
            except GraphError as exc:
                error = str(exc)[:300]
            except _Fenced:
                error = None  # finish() below is fenced too
            done = await self.finish(checked.run_id, error=error, generation=gen)
            if done is None:  # the daemon restarted the run meanwhile: its own now
                reports.append(RunReport(
                    checked.account_id, checked.username, checked.resubscribed,
                    checked.run_id, checked.reason, checked.since,
                    error=f"the daemon took catch-up run {checked.run_id} over while this "
                    "command walked it (the daemon restarted it); `instaset doctor` shows "
                    "how it went"))
                continue
            reports.append(RunReport(
                done.account_id, done.username, checked.resubscribed, done.run_id,
                done.reason, done.since, done.recovered, done.unavailable, done.error))
        return reports

    async def _move_staged(self) -> None:
        """Move staged events (one transaction, at most :data:`STAGED_INLINE`); raises
        :class:`_Staged` when some are still staged. Nothing staged (the usual case): one
        read, no transaction."""
        if not await any_staged(self.db):
            return
        async with self.db.tx() as conn:
            moved, calm = await move_staged(conn, max_attempts=self.max_attempts,
                                            limit=STAGED_INLINE)
        if moved:
            self.wake()
        if not calm:
            raise _Staged

    async def _walk_to_the_end(self, run_id: int, acct: str, since: float,
                               gen: float) -> str | None:
        """:meth:`backfill` without a budget, going on where it stopped while ingest is
        under heavy load (for up to :data:`STAGED_PATIENCE` s at one place; the run
        is marked as being walked meanwhile), then the passes from the top; the error to
        record, or None when the walk ended. Raises :class:`_Fenced` when the daemon
        restarted the run meanwhile."""
        resume: tuple[str | None, int] = (None, 0)
        deadline: float | None = None  # of the current wait; a new one after progress
        walk: _Pass | None = _Pass(0, None, gen)
        while walk is not None:
            batch = _Batch(max_calls=None, seconds=None, timer=self.timer, resume=resume)
            try:
                left = await self.backfill(run_id, acct, since, after=resume[0],
                                           skip=resume[1], batch=batch, gen=gen,
                                           floor=walk.floor)
            except _Staged as staged:
                now = self.timer()
                # A new wait after progress. Not when only the position moved: a message
                # moves a conversation below it to the top, which shifts it down one.
                if deadline is None or batch.walked:
                    deadline = now + STAGED_PATIENCE
                if now >= deadline:
                    return (f"ingest stayed under heavy load for {STAGED_PATIENCE:.0f} s "
                            "(events staged); run `instaset catch-up` again")
                resume, walk = staged.resume, walk.going_on()
                await store.touch_run(self.db, run_id, self.clock())
                await asyncio.sleep(STAGED_POLL)
                continue
            if left is not None:
                return "the walk stopped before the end"
            walk, resume = walk.after(batch.paged, self.clock()), (None, 0)
            deadline = None
        return None


async def doctor_checks(db: Database) -> list[Check]:
    """One ``catch-up`` check per account with a run: its latest run, ``warn`` when it
    failed (with the error and the fix), ``ok`` when it succeeded or is under way."""
    from instaset.doctor import Check
    from instaset.inbox import iso_utc

    out: list[Check] = []
    for r in await store.latest_runs(db):
        who = _at(r["username"], str(r["account_id"]))
        if r["finished_at"] is None:
            out.append(Check("catch-up", "ok", f"{who}: run {r['id']} under way since "
                             f"{iso_utc(r['started_at'])} ({r['recovered']} recovered so far)"))
        elif r["error"] is not None:
            out.append(Check(
                "catch-up", "warn", f"{who}: run {r['id']} failed at "
                f"{iso_utc(r['finished_at'])}: {r['error']}",
                "check the network and the account's token (`instaset accounts`), then run "
                "`instaset catch-up`; the daemon also retries after a cool-down",
                "docs/setup.md#troubleshooting"))
        else:
            out.append(Check("catch-up", "ok", f"{who}: last run {r['id']} ended "
                             f"{iso_utc(r['finished_at'])}, {r['recovered']} recovered"))
    return out


async def run_catch_up(
    config: Config, *, since: str | None = None, tokens: TokenProvider | None = None,
    graph_url: str | None = None, clock: Callable[[], float] = time.time,
) -> list[RunReport]:
    """``instaset catch-up [--since]``, on a runtime of its own (tokens from the secret store
    unless given)."""
    from instaset.daemon import runtime

    async with runtime(config, tokens=tokens, graph_url=graph_url, clock=clock) as rt:
        cu = CatchUp.for_runtime(rt)
        return await cu.run_now(parse_since(since, clock()) if since else None)


def install(rt: Runtime) -> None:
    """Register the ``catchup`` periodic job, ``catchup_start``, ``catchup_backfill`` and
    ``profile`` job handlers, and (when the daemon offers ``on_start`` hooks) a check at
    start."""
    cu = CatchUp.for_runtime(rt)
    handlers: dict[str, Callable[[Job], Awaitable[Outcome | None]]] = {
        "catchup_start": cu.start_job,
        "catchup_backfill": cu.backfill_job,
        "profile": cu.profiles.profile_job,
    }
    rt.handlers.update(handlers)
    from instaset.step_texts import uses_profile_placeholders

    if needs_follower(rt.config.workflows) or uses_profile_placeholders(rt.config.workflows):
        # A `follower` condition, or a text naming {username}/{first_name}, needs the
        # profile before a new contact's first message (a DM's webhook has neither).
        rt.pipeline.profile_first = cu.profiles.fetch
    rt.add_periodic("catchup", cu.settings.interval, cu.periodic_job)
    # A check at start: a restart within one periodic slot would otherwise wait for the next.
    rt.on_start.append(cu.enqueue_start)
