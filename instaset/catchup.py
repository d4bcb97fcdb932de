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
- A backfill is a ``catchup_runs`` row and a chain of ``catchup_backfill`` jobs, each making at
  most :attr:`CatchUpSettings.calls_per_job` Conversations API calls; every call of an
  account goes through one :class:`~instaset.backfill.CallLimiter`
  (``rate_limits.conversations_per_second``,
  Meta's 2/s by default). Conversations are walked newest first until one older than the
  gap; of each, the messages instaset does not have (not in the history, not a stored event,
  not one of its sends) are read one by one, only among the 20 newest (the only ones Meta
  details; missed older ones are counted as unavailable).
- A recovered message is stored as the single-item webhook envelope Meta would have sent,
  with ingest's dedupe key and ``process_event`` job, and a ``recovered_events`` mark, one
  transaction per conversation. The normal pipeline then applies every rule to it as to any
  late event: nothing goes out after the 24 h window, inside it the workflows run once, and a
  webhook arriving late for the same message is a duplicate.
- When a run ends, one notification tells the creator what was recovered (and what could
  not be); a failing run tells them why.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from instaset.automation import notify_job
from instaset.backfill import (
    CallLimiter,
    parse_time,
    participants,
    recovered_row,
    summary_text,
)
from instaset.config import Config
from instaset.contacts import Profiles
from instaset.errors import GraphError, InvalidParameter, Throttled, TokenInvalid
from instaset.graph import GraphClient
from instaset.outbox import TokenProvider
from instaset.queue import NewJob, RetryLater, enqueue_in
from instaset.store import contacts as store
from instaset.store import history
from instaset.store.db import Database
from instaset.store.jobs import Job

if TYPE_CHECKING:
    from instaset.daemon import Runtime

log = logging.getLogger("instaset.catchup")

T = TypeVar("T")

# What an account subscribes to when its row does not say (as `instaset connect` does).
DEFAULT_FIELDS = (
    "messages", "messaging_postbacks", "messaging_seen", "message_reactions",
    "messaging_referral", "comments", "live_comments",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class CatchUpSettings:
    interval: float = 300.0  # periodic check
    quiet_seconds: float = 6 * 3600.0  # no event that long while connected: look
    overlap: float = 120.0  # a backfill starts this much before the gap
    max_lookback: float = 7 * 86400.0
    calls_per_second: float = 2.0  # Conversations API, per account
    max_calls_per_job: int = 60  # ~30 s at 2/s, well inside the worker's job timeout
    detail_limit: int = 20  # Meta details only the 20 newest messages of a conversation

    @property
    def calls_per_job(self) -> int:
        """Calls one backfill job makes: at most ~30 s of the rate, so that a slow configured
        rate never runs into the worker's job timeout."""
        return max(3, min(self.max_calls_per_job, int(self.calls_per_second * 30)))

    @property
    def down_after(self) -> float:
        """A check this long after the previous one means the daemon was not running."""
        return 2 * self.interval + 60.0


# -- gap detection (pure) ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Marks:
    """What the previous checks of an account recorded (``catchup_accounts``)."""

    checked_at: float
    subscribed_at: float | None = None
    backfilled_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row | None) -> Marks | None:
        if row is None:
            return None
        return cls(row["checked_at"], row["subscribed_at"], row["backfilled_at"])


@dataclass(frozen=True, slots=True)
class Gap:
    reason: str  # one of WHY's keys, or several joined by "+"
    since: float


def detect_gap(
    *, now: float, created_at: float, marks: Marks | None, last_event_at: float | None,
    first_in_process: bool, resubscribed: bool, settings: CatchUpSettings,
) -> Gap | None:
    """The period to backfill, or None. See the module docstring for the triggers; ``since``
    is the earliest of them minus the overlap, never before the account was connected nor
    more than ``max_lookback`` ago."""
    found: list[tuple[str, float]] = []
    if marks is None:
        found.append(("first", created_at))
    else:
        if first_in_process:
            found.append(("start", marks.checked_at))
        elif now - marks.checked_at > settings.down_after:
            found.append(("downtime", marks.checked_at))
        if resubscribed:
            found.append(("resubscribed", marks.subscribed_at or marks.checked_at))
        seen = max(t for t in (last_event_at, marks.backfilled_at, created_at) if t is not None)
        if now - seen > settings.quiet_seconds:
            found.append(("quiet", seen))
    if not found:
        return None
    since = min(t for _, t in found) - settings.overlap
    return Gap("+".join(r for r, _ in found),
               max(since, created_at, now - settings.max_lookback))


# -- the work --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunReport:
    """The outcome of one account's check (and backfill, when run inline)."""

    account_id: str
    username: str | None
    resubscribed: bool
    run_id: int | None = None
    reason: str | None = None
    since: float | None = None
    recovered: int = 0
    unavailable: int = 0
    error: str | None = None


class _Counter:
    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0


class CatchUp:
    def __init__(
        self, db: Database, graph: GraphClient, tokens: TokenProvider, *,
        clock: Callable[[], float] = time.time, settings: CatchUpSettings | None = None,
        wake: Callable[[], None] = lambda: None, max_attempts: int = 6,
        profiles: Profiles | None = None, limiter: CallLimiter | None = None,
    ) -> None:
        self.db = db
        self.graph = graph
        self.tokens = tokens
        self.clock = clock
        self.settings = settings or CatchUpSettings()
        self.wake = wake
        self.max_attempts = max_attempts
        self.profiles = profiles or Profiles(db, graph, tokens, clock=clock)
        self.limiter = limiter or CallLimiter(self.settings.calls_per_second)
        self._checked: set[str] = set()  # accounts checked by this process
        # Two periodic jobs can be due at once after a restart (the slot left by the last
        # process and the one serving() adds): one check at a time, so only the first one
        # sees the start.
        self._lock = asyncio.Lock()

    @classmethod
    def for_runtime(cls, rt: Runtime, settings: CatchUpSettings | None = None) -> CatchUp:
        s = settings or CatchUpSettings(
            calls_per_second=rt.config.rate_limits.conversations_per_second
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

    async def check_all(self) -> list[RunReport]:
        async with self._lock:
            return await self._check_all()

    async def _check_all(self) -> list[RunReport]:
        reports: list[RunReport] = []
        for acct in await store.connected_accounts(self.db):
            try:
                reports.append(await self.check_account(acct))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one account's trouble must not stop the others
                log.warning("catch-up check of %s failed: %s", acct["id"], exc)
        try:
            if await self.profiles.enqueue_due():
                self.wake()
        except Exception as exc:
            log.warning("queueing profile lookups failed: %s", exc)
        return reports

    async def check_account(
        self, acct: sqlite3.Row, *, manual_since: float | None = None, queue: bool = True,
    ) -> RunReport:
        """Check the subscription and look for a gap; with ``queue`` the backfill goes to the
        job queue, else the caller runs it (:meth:`backfill`)."""
        acct_id, username = str(acct["id"]), acct["username"]
        now = self.clock()
        token = await self.tokens.token(acct_id)
        if not token:
            return RunReport(acct_id, username, False, error="no access token stored")
        resubscribed, sub_ok, fields = False, False, self._required(acct)
        try:
            current = await self.graph.subscribed_fields(acct_id, token=token)
            # Meta drops the app's whole subscription (not single fields) after failed
            # deliveries; a partial list is what the app may have, so it is left alone
            # (subscribing again every few minutes would not change it).
            if not current:
                await self.graph.subscribe(acct_id, fields, token=token)
                resubscribed = True
                log.warning("account %s: webhook subscription was missing; subscribed again",
                            acct_id)
            sub_ok = True
        except TokenInvalid:
            return RunReport(acct_id, username, False, error="the access token is invalid")
        except GraphError as exc:
            log.warning("account %s: cannot check the webhook subscription: %s", acct_id, exc)
        marks = Marks.from_row(await store.get_check(self.db, acct_id))
        gap: Gap | None
        if manual_since is not None:
            gap = Gap("manual", manual_since)
        else:
            gap = detect_gap(
                now=now, created_at=float(acct["created_at"]), marks=marks,
                last_event_at=await store.last_event_at(self.db, acct_id),
                first_in_process=acct_id not in self._checked or not queue,
                resubscribed=resubscribed, settings=self.settings,
            )
        jobs: list[NewJob] = []
        run_id: int | None = None
        async with self.db.tx() as conn:
            await store.save_check(conn, acct_id, checked_at=now,
                                   subscribed_at=now if sub_ok else None,
                                   resubscribed_at=now if resubscribed else None)
            if resubscribed:
                jobs.append(notify_job(
                    f"catchup:resubscribed:{acct_id}:{now!r}", acct_id, None, "catchup",
                    f"Instagram was not sending webhooks for {_at(username, acct_id)}: the "
                    "subscription was missing (Meta drops it after failed deliveries). "
                    f"instaset subscribed again ({', '.join(fields)}) and is fetching what "
                    "was missed.", now))
            if gap is not None:
                run_id = await store.start_run(conn, acct_id, gap.reason, gap.since, now)
                if queue:
                    jobs.append(_backfill_job(run_id, acct_id, gap.since, None, 0, 0, now))
            if jobs:
                await enqueue_in(conn, jobs, now)
        self._checked.add(acct_id)
        if jobs:
            self.wake()
        return RunReport(acct_id, username, resubscribed, run_id,
                         gap.reason if gap else None, gap.since if gap else None)

    def _required(self, acct: sqlite3.Row) -> list[str]:
        try:
            stored = json.loads(acct["subscribed_fields"] or "[]")
        except ValueError:
            stored = []
        fields = [str(f) for f in stored if isinstance(f, str)] if isinstance(stored, list) else []
        return fields or list(DEFAULT_FIELDS)

    async def backfill_job(self, job: Job) -> None:
        """``catchup_backfill``: one bounded part of a run; queues the next part itself."""
        p = job.payload
        run_id, acct = int(p["run_id"]), str(p["account_id"])
        run = await store.get_run(self.db, run_id)
        if run is None or run["finished_at"] is not None:
            return
        try:
            left = await self.backfill(
                run_id, acct, float(p["since"]), after=p.get("after"),
                skip=int(p.get("skip", 0)), max_calls=self.settings.calls_per_job,
            )
        except Throttled as exc:
            raise RetryLater(exc.retry_after or 60.0, "Conversations API throttled",
                             count_attempt=False) from None
        except TokenInvalid:
            await self.finish(run_id, error="the access token is invalid; run `instaset connect`")
            return
        except Exception as exc:
            if job.attempts >= job.max_attempts:
                await self.finish(run_id, error=str(exc)[:300])
                return
            raise
        if left is None:
            await self.finish(run_id)
            return
        after, skip = left
        now = self.clock()
        part = int(p.get("part", 0)) + 1
        async with self.db.tx() as conn:
            await enqueue_in(conn, [_backfill_job(run_id, acct, float(p["since"]), after, skip,
                                                  part, now)], now)
        self.wake()

    async def backfill(
        self, run_id: int, acct: str, since: float, *, after: str | None = None, skip: int = 0,
        max_calls: int | None = None,
    ) -> tuple[str | None, int] | None:
        """Walk the conversations from (``after``, ``skip``); returns None when done, else
        where the next part starts (its ``after`` cursor and how many of that page to skip)
        because ``max_calls`` were made."""
        token = await self.tokens.token(acct)
        if not token:
            raise TokenInvalid("no access token is stored for this account")
        used = _Counter()
        budget = max_calls if max_calls is not None else 1 << 30
        while True:
            if budget - used.calls < 1:
                return after, skip
            page, next_cursor = await self._call(
                acct, used,
                functools.partial(self.graph.conversations, acct, token=token, after=after),
            )
            for idx in range(skip, len(page)):
                updated = parse_time(page[idx].get("updated_time"))
                if updated is not None and updated < since - 1:
                    return None  # newest first: the rest is older still
                if budget - used.calls < 2:
                    return after, idx
                if not await self._conversation(run_id, acct, token, page[idx], since,
                                                used, budget):
                    return after, idx
            if next_cursor is None:
                return None
            after, skip = next_cursor, 0

    async def _call(
        self, acct: str, used: _Counter, make: Callable[[], Awaitable[T]]
    ) -> T:
        await self.limiter.acquire(acct)
        used.calls += 1
        return await make()

    async def _conversation(
        self, run_id: int, acct: str, token: str, conv: Mapping[str, object], since: float,
        used: _Counter, budget: int,
    ) -> bool:
        """Recover what is missing from one conversation; False when the budget ran out
        before it was complete (what was read is kept: the next part skips it)."""
        start = used.calls
        conv_id = str(conv.get("id"))
        usernames = participants(conv)
        listed = await self._call(
            acct, used, functools.partial(self.graph.conversation_messages, conv_id, token=token)
        )
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
            if budget - used.calls < 1:
                complete = False
                break
            try:
                detail = await self._call(
                    acct, used, functools.partial(self.graph.message, mid, token=token)
                )
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
            new = await store.insert_recovered(conn, rows, run_id=run_id, now=now,
                                               max_attempts=self.max_attempts)
            await store.add_progress(conn, run_id, calls=used.calls - start,
                                     conversations=int(complete), recovered=new,
                                     unavailable=lost)
        if new:
            log.info("recovered %d message(s) of conversation %s", new, conv_id)
            self.wake()
        return complete

    async def finish(self, run_id: int, *, error: str | None = None) -> RunReport | None:
        """End a run: mark the account covered up to the run's start, and tell the creator
        what was recovered (once: a redelivered job finds the run finished)."""
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
            if not await store.finish_run(conn, run_id, now, error):
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
        the end (no job time limit). The recovered events are processed by the daemon."""
        reports: list[RunReport] = []
        for acct in await store.connected_accounts(self.db):
            checked = await self.check_account(acct, manual_since=since, queue=False)
            if checked.run_id is None:
                reports.append(checked)
                continue
            error: str | None = None
            try:
                await self.backfill(checked.run_id, checked.account_id, checked.since or 0.0)
            except GraphError as exc:
                error = str(exc)[:300]
            done = await self.finish(checked.run_id, error=error)
            if done is not None:
                reports.append(RunReport(
                    done.account_id, done.username, checked.resubscribed, done.run_id,
                    done.reason, done.since, done.recovered, done.unavailable, done.error))
        return reports


def _backfill_job(run_id: int, acct: str, since: float, after: str | None, skip: int,
                  part: int, now: float) -> NewJob:
    return NewJob("catchup_backfill", f"catchup:{run_id}:{part}", {
        "run_id": run_id, "account_id": acct, "since": since, "after": after, "skip": skip,
        "part": part}, run_at=now, max_attempts=8)


def _at(username: str | None, fallback: str) -> str:
    return f"@{username}" if username else fallback


def parse_since(text: str, now: float) -> float:
    """``--since``: a duration back from now (``6h``, ``2d``) or a UTC time
    (``2026-11-28T10:00``)."""
    from instaset.engine.values import parse_duration
    from instaset.errors import InstasetError

    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    at = parse_time(text.strip())
    if at is None:
        raise InstasetError(
            f"--since {text!r} is neither a duration (6h, 2d) nor a time (2026-11-28T10:00)"
        )
    if at > now:
        raise InstasetError(f"--since {text!r} is in the future")
    return at


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
    handlers: dict[str, Callable[[Job], Awaitable[None]]] = {
        "catchup_start": cu.start_job,
        "catchup_backfill": cu.backfill_job,
        "profile": cu.profiles.profile_job,
    }
    rt.handlers.update(handlers)
    rt.add_periodic("catchup", cu.settings.interval, cu.periodic_job)
    # A check at start: a restart within one periodic slot would otherwise wait for the next.
    rt.on_start.append(cu.enqueue_start)
