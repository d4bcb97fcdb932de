"""The check half of catch-up (see :mod:`instaset.catchup` for the contracts): each connected
account's webhook subscription, whether there is a gap to backfill, and which run (at most
one unfinished per account) starts or restarts for it. :class:`~instaset.catchup.CatchUp`
adds the walk; the check's decision is :meth:`GapCheck._plan`, inside the check's
transaction."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from instaset.backfill import (
    RESTARTING,
    CatchUpSettings,
    Failures,
    Gap,
    Marks,
    detect_gap,
    merge_reasons,
)
from instaset.catchup_walk import part_job
from instaset.contacts import Profiles
from instaset.errors import GraphError, Throttled, TokenInvalid
from instaset.graph import GraphClient
from instaset.notify import notify_job
from instaset.queue import NewJob, enqueue_in
from instaset.store import contacts as store
from instaset.store.db import Database
from instaset.token_health import token_rejected
from instaset.tokens import TokenProvider

if TYPE_CHECKING:
    import aiosqlite

log = logging.getLogger("instaset.catchup")

# A run that made progress this recently is being walked (by `instaset catch-up`, which
# queues no job: the periodic check must not take it over as chainless). Progress stamped up
# to CLOCK_AHEAD seconds after the check's clock reading still counts (another process's
# clock, read a moment later); further ahead, the clock stepped back.
WALKING_SECONDS = 600.0
CLOCK_AHEAD = 60.0

# What an account subscribes to when its row does not say (as `instaset connect` does).
DEFAULT_FIELDS = (
    "messages", "messaging_postbacks", "messaging_seen", "message_reactions",
    "messaging_referral", "comments", "live_comments",
)  # fmt: skip


def _at(username: str | None, fallback: str) -> str:
    return f"@{username}" if username else fallback


def throttled_check(exc: Throttled) -> str:
    """What a subscription check refused by Meta's rate limits tells the creator: that it
    was throttling (with the code, or the usage header at 100 %), and the wait if known."""
    why = f"code {exc.code}" if exc.code is not None else "usage at 100 %"
    text = f"Meta is throttling this account's Graph calls ({why}); the next check asks again"
    wait = exc.retry_after
    if wait is None or wait <= 0:
        return text
    return text + (f", the limit frees in {math.ceil(wait / 60)} min" if wait >= 120
                   else f", the limit frees in {math.ceil(wait)} s")


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


class GapCheck:
    """The periodic check of every connected account (never raises: see the module
    docstring of :mod:`instaset.catchup`). The attributes are set by
    :class:`~instaset.catchup.CatchUp`."""

    db: Database
    graph: GraphClient
    tokens: TokenProvider
    clock: Callable[[], float]
    settings: CatchUpSettings
    wake: Callable[[], None]
    profiles: Profiles
    _checked: set[str]  # accounts checked by this process
    _throttled: set[str]  # accounts whose last check Meta throttled (one WARNING an episode)
    _lock: asyncio.Lock  # one check at a time

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
        job queue, else the caller runs it (:meth:`~instaset.catchup.CatchUp.backfill`). A
        gap while a run is unfinished restarts that run (see the module docstring of
        :mod:`instaset.catchup`): the report names it."""
        acct_id, username = str(acct["id"]), acct["username"]
        now = self.clock()
        token = await self.tokens.token(acct_id)
        if not token:
            if acct["sandbox"]:
                # `serve --sandbox` gives its account a token of its own; without the daemon
                # there is nothing at Meta to catch up, which is no failure (cron's exit code).
                return RunReport(acct_id, username, False)
            return RunReport(acct_id, username, False, error="no access token stored; "
                             "reconnect it with `instaset connect`")
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
            if acct_id in self._throttled:
                self._throttled.discard(acct_id)
                log.info("account %s: the webhook subscription is checked again", acct_id)
        except TokenInvalid:
            await token_rejected(self.db, self.tokens, acct_id, token, now)
            return RunReport(acct_id, username, False, error="the access token is invalid; "
                             "run `instaset connect`")
        except Throttled as exc:
            # Not a failure: subscribed_apps counts toward the account's BUC budget like any
            # Graph call (reference §5.2), so a busy hour can leave no call for the check.
            # One WARNING for an episode (the outbox's style); the checks until one gets
            # through again are logged at DEBUG.
            level = logging.DEBUG if acct_id in self._throttled else logging.WARNING
            self._throttled.add(acct_id)
            log.log(level, "account %s: the webhook subscription was not checked: %s",
                    acct_id, throttled_check(exc))
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
                failures=Failures.from_row(await store.failures_since_success(self.db, acct_id)),
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
            run_id, gap = await self._plan(conn, acct_id, gap, now, queue=queue)
            if run_id is not None and gap is not None and queue:
                jobs.append(part_job(run_id, acct_id, now, None, 0, 0, now,
                                     self.settings.max_tries))
            if jobs:
                await enqueue_in(conn, jobs, now)
        self._checked.add(acct_id)
        if jobs:
            self.wake()
        return RunReport(acct_id, username, resubscribed, run_id,
                         gap.reason if gap else None, gap.since if gap else None)

    async def _plan(
        self, conn: aiosqlite.Connection, acct_id: str, gap: Gap | None, now: float, *,
        queue: bool,
    ) -> tuple[int | None, Gap | None]:
        """Inside the check's transaction: the run (and its gap) that gets a new chain of
        jobs starting at generation ``now``, or (None, None) when nothing is to start. Keeps
        at most one unfinished run per account."""
        active = await store.active_run(conn, acct_id)
        if active is None:
            if gap is None:
                return None, None
            return await store.start_run(conn, acct_id, gap.reason, gap.since, now), gap
        run_id, since, reason = int(active["id"]), float(active["since"]), str(active["reason"])
        if gap is None or not set(gap.reason.split("+")) & RESTARTING:
            # Leave a run whose chain is alive alone, and one `instaset catch-up` is walking
            # (no job, but recent progress); resume one whose chain is gone.
            progressed = active["progressed_at"]
            # Read now, not at the check's start: progress committed during its Graph call
            # would look like the future. Only a clock stepped back makes it truly so.
            age = self.clock() - float(progressed) if progressed is not None else math.inf
            walking = -CLOCK_AHEAD <= age < WALKING_SECONDS
            if not queue or walking or await store.has_live_job(conn, run_id):
                return None, None
            log.warning("account %s: catch-up run %d had no job left; resuming it", acct_id,
                        run_id)
            await store.restart_run(conn, run_id, reason=reason, since=since, now=now)
            return run_id, Gap(reason, since)
        stale = await store.close_stale_runs(conn, acct_id, run_id, now)
        merged = Gap(merge_reasons(reason, gap.reason),
                     min(since, gap.since, stale if stale is not None else math.inf))
        await store.restart_run(conn, run_id, reason=merged.reason, since=merged.since, now=now)
        log.info("account %s: catch-up run %d was unfinished (%s); it starts over, now "
                 "covering since %.0f (%s)", acct_id, run_id, reason, merged.since,
                 merged.reason)
        return run_id, merged

    def _required(self, acct: sqlite3.Row) -> list[str]:
        try:
            stored = json.loads(acct["subscribed_fields"] or "[]")
        except ValueError:
            stored = []
        fields = [str(f) for f in stored if isinstance(f, str)] if isinstance(stored, list) else []
        return fields or list(DEFAULT_FIELDS)
