"""Retention and erasure: ``instaset purge`` and the daemon's daily retention job.

Contract:
- :func:`purge_older_than` applies the time policy: messages, processed raw events,
  finished jobs (done/dead), finished sends (sent/refused/failed), notifications and clicks
  older than the horizon are deleted; tracked links older than it lose their contact (the
  redirect keeps working in old DMs); messages the person unsent lose their text and media
  URLs whatever their age (Meta's rule: honour an unsend). Where the AI feature's tables
  exist, its call records and its finished drafts follow the same horizon, and so do the
  stats rollups of the hours before it (except ``stats_reads``, see :func:`time_rules`). Queued
  or running jobs, and the unprocessed events they will still process, are never touched,
  so nothing acknowledged to Meta is lost. An unprocessed event whose job dead-lettered (a
  poison event) has no pending work left: it ages out like a processed one.
- Raw events younger than :data:`DEDUPE_GUARD` are not deleted even when the horizon is
  shorter: Meta retries a webhook for up to 36 h, and the stored key is what recognises a
  late retry. Their payload is blanked instead (``raw = '{}'``), so no content is kept.
- :func:`purge_contacts` erases people (every table with ``account_id`` and ``contact_id``,
  the contact and conversation, the jobs naming them), each person in one transaction
  (batched by :data:`CONTACTS_PER_TX`). :func:`purge_account` and :func:`purge_all` do the
  same for every contact, then sweep what is left; the connection itself (the ``accounts``
  row, the tokens) stays: ``instaset disconnect --purge`` removes that.
- Everything is idempotent (a second run finds nothing) and safe while the daemon runs:
  the bulk deletes run on a connection of their own (:class:`instaset.store.retention.
  Purger`), in rowid ranges (each table walked once from its first row to its last one at
  the start; rowids follow time, so the old rows are one dense run; the kept part is
  skipped with lock-free reads; nothing is counted first except in a dry run, so progress
  totals are ``None``). Each range is one ``BEGIN IMMEDIATE`` transaction sized to hold the
  write lock about :data:`BATCH_SECONDS`; after it the purge checkpoints what it wrote and
  pauses (the checkpoint counts as pause), so that the daemon's writers waiting in SQLite's
  busy handler get their turn: its ingest waits a fraction of a second at worst.
- When most of a table goes (a sample of its rows says at least :data:`BULK_SHARE`, and it
  has at most :data:`BULK_MAX_ROWS`), the rule is applied in ONE transaction instead
  (:meth:`instaset.store.retention.Purger.write_bulk`): the kept rows are copied aside, the
  table is emptied (SQLite frees its pages and its indexes' pages without visiting rows) and
  the kept rows go back with their rowids. The first purge of a long history, or a shorter
  ``retention.days``, takes that path (1M old messages: ~1.2 s instead of ~10 s); the daily
  job deletes a day's worth and stays batched. The daemon's writers wait for that one
  transaction (~2 s under ingest for a million messages on a 2-core VM).
- Where the time goes in batches (1M old messages, 2.8M rows): each batch rewrites most
  leaf pages of the indexes whose order is not time (``messages.mid``, ``messages_thread``,
  ``events.dedupe_key``, ``events_contact``, ``jobs.key``, the ``sends`` key, contact and
  message indexes), so the cost per row falls as batches grow, and the latency the daemon
  sees rises with them: :data:`BATCH_SECONDS` is that trade-off.
- Deleted content: the purging connection overwrites deleted cells inside the pages that
  stay, but not pages freed whole (``secure_delete=FAST``): those leave the file with the
  space reclaim below, which moves live pages into them and cuts the file. Until then (a
  file in the default mode under a running daemon) they are free pages new rows reuse.
- Space: :func:`reclaim_space` returns free pages with ``PRAGMA incremental_vacuum`` when the
  file is in ``auto_vacuum=INCREMENTAL`` mode (safe under a running daemon: short write
  transactions). A file in the default mode (NONE) can only shrink by a full ``VACUUM``,
  which rewrites the whole file and blocks every writer meanwhile, so it runs only when no
  daemon holds the database (``exclusive``); it also switches the file to INCREMENTAL so
  that every later purge can reclaim in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from instaset.queue import RetryLater
from instaset.store import retention as store
from instaset.store.db import Database
from instaset.store.jobs import Job
from instaset.store.retention import Rule

if TYPE_CHECKING:
    from instaset.daemon import Runtime

log = logging.getLogger("instaset.retention")

DAY = 86400.0
DEDUPE_GUARD = 48 * 3600.0  # Meta retries a webhook for up to 36 h
BATCH = 5000  # rowids in the first transaction of a rule; later ones adapt
MIN_BATCH, MAX_BATCH = 1000, 1_000_000
GROWTH = 2.0  # a batch is at most this many times the previous one
SKIP_ROWIDS, MAX_SKIP = 50_000, 4_000_000  # rowids per read while skipping kept rows
BATCH_SECONDS = 0.3  # how long one purge transaction may hold the write lock
PAUSE_SHARE, PAUSE_MAX = 0.4, 0.12  # lock-free time after a batch: share of it, at most
# The bulk path (Purger.write_bulk: keep the few, empty the table, put them back) when at
# least BULK_SHARE of a table goes: its cost follows the table's pages, not rows x indexes
# (1M messages: ~1.2 s instead of ~10 s of batches), but it holds the write lock for all of
# it, so only on tables up to BULK_MAX_ROWS (the daemon's ingest waits that long once;
# busy_timeout is 10 s, Meta waits ~5-20 s for an answer). Small tables stay batched.
# 1.5M rows: ~2.7 s of lock under ingest on the 2-core bench VM (1.08M messages: 1.8 s), so
# a machine up to ~3x slower stays inside busy_timeout; beyond it, the daemon's webhooks get
# a 503 and Meta delivers them again (nothing acknowledged is lost).
BULK_SHARE, BULK_MIN_ROWS, BULK_MAX_ROWS = 0.5, 10_000, 1_500_000
PURGE_CACHE_KIB = 128 * 1024  # page cache of the purging connection while it purges
CONTACTS_PER_TX = 50
VACUUM_PAGES = 1024  # ~4 MB per transaction: a short hold of the write lock (webhooks wait)

Progress = Callable[[str, int, int | None], None]  # (what, done so far, total if known)


def _no_progress(_what: str, _done: int, _total: int | None) -> None:
    return None


@dataclass
class PurgeReport:
    """Rows deleted (or, in a dry run, that would be) per table; ``finished`` is False when a
    deadline stopped the run early (run it again to continue)."""

    counts: dict[str, int] = field(default_factory=dict)
    dry_run: bool = False
    finished: bool = True
    space: str = ""
    bulk: list[str] = field(default_factory=list)  # rules applied in one pass (write_bulk)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add_rule(self, name: str, n: int, in_bulk: bool) -> None:
        """What one rule did (see :func:`_run_rule`)."""
        if n:
            self.add({name: n})
        if in_bulk:
            self.bulk.append(name)

    def add(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + v

    def to_json(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "finished": self.finished, "total": self.total,
                "counts": dict(sorted(self.counts.items())), "space": self.space}


# When a lead's reason was scored: its own time, else (older rows) the lead's.
_REASON_AT = "coalesce(json_extract(value, '$.at'), leads.updated_at)"


def time_rules(horizon: float, now: float) -> list[tuple[Rule, tuple[object, ...]]]:
    """The time policy as (rule, parameters), in the order they run."""
    guard = min(horizon, now - DEDUPE_GUARD)
    rules: list[tuple[Rule, tuple[object, ...]]] = [
        (Rule("messages", "created_at < ?"), (horizon,)),
        (Rule("events", f"received_at < ? AND {store.EVENT_SETTLED}"), (guard,)),
    ]
    if guard < horizon:
        rules.append((Rule("events", f"received_at < ? AND {store.EVENT_SETTLED}"
                           " AND raw != '{}'", update="raw = '{}'",
                           label="events (blanked, kept as dedupe keys)"), (horizon,)))
    rules += [
        (Rule("jobs", "state IN ('done', 'dead') AND coalesce(finished_at, created_at) < ?"),
         (horizon,)),
        (Rule("sends", "state IN ('sent', 'refused', 'failed') AND updated_at < ?"), (horizon,)),
        (Rule("notifications", "created_at < ?"), (horizon,)),
        (Rule("clicks", "at < ?"), (horizon,)),
        (Rule("links", "created_at < ? AND contact_id IS NOT NULL", update="contact_id = NULL",
              label="links (anonymised)"), (horizon,)),
        (Rule("messages", store.UNSENT_UNSCRUBBED,
              update="text = NULL, attachments = '[]', edits = '[]'",
              label="unsent messages (scrubbed)", indexed=True), ()),
        # Other features' tables, when they exist: model-call telemetry, and drafts that
        # were sent or discarded (a pending draft still waits for the creator).
        (Rule("ai_calls", "created_at < ?"), (horizon,)),
        (Rule("ai_drafts", "state != 'pending' AND updated_at < ?"), (horizon,)),
        # A lead keeps its score and the rules behind it, not the contact's words past the
        # horizon: the evidence quoted from their messages goes with the messages.
        (Rule("lead_facts", "created_at < ? AND evidence IS NOT NULL", update="evidence = NULL",
              label="lead facts (quotes removed)"), (horizon,)),
        # Each reason on its own time (a lead still scored keeps its old reasons); one
        # without a time, on the lead's. The horizon in the SET clause is a float of ours.
        (Rule("leads", f"instr(reasons, '\"evidence\"') > 0 AND EXISTS (SELECT 1 FROM"
                       f" json_each(leads.reasons) WHERE {_REASON_AT} < ?"
                       " AND json_extract(value, '$.evidence') IS NOT NULL)",
              update=("reasons = (SELECT json_group_array(CASE WHEN"
                      f" {_REASON_AT} < {float(horizon)!r}"
                      " THEN json_remove(value, '$.evidence') ELSE json(value) END)"
                      " FROM json_each(leads.reasons))"),
              label="leads (quotes removed)"), (horizon,)),
    ]
    # The stats rollups (0010) of hours before the horizon go with the history they count.
    # stats_reads (one row per conversation: what its receipts reached) is never aged out:
    # starting it again would count old reads as new.
    hour = "hour < CAST(? / 3600 AS INTEGER)"
    rules += [(Rule(t, hour), (horizon,)) for t in (
        "stats_sends", "stats_refusals", "stats_messages", "stats_conversations", "stats_fired",
        "stats_media", "stats_clicks", "stats_waits_hour")]
    rules += [
        (Rule("stats_waits_day", "day < CAST(? / 86400 AS INTEGER)"), (horizon,)),
        (Rule("stats_commenters", "last_at < ?"), (horizon,)),
        (Rule("stats_pending", "since_at < ?"), (horizon,)),
    ]
    return rules


async def _run_rule(
    purger: store.Purger, rule: Rule, params: tuple[object, ...], *, batch: int,
    progress: Progress, deadline: float | None, clock: Callable[[], float], bulk: bool = True,
) -> tuple[int, bool, bool]:
    """Apply one rule: (rows affected, finished, in one bulk pass). When most of a table
    goes (estimated from a sample, see :data:`BULK_SHARE`), in one bulk transaction;
    otherwise the table is walked once in rowid ranges from its first row to its last one
    at the start (rows the daemon adds meanwhile are new); nothing is counted first."""
    done = 0
    progress(rule.name, 0, None)
    if bulk and purger.bulk_ready(rule):
        rows, share = await purger.estimate(rule, params)
        if BULK_MIN_ROWS <= rows <= BULK_MAX_ROWS and share >= BULK_SHARE:
            done, _ = await purger.write_bulk(rule, params)
            progress(rule.name, done, done)
            if done:
                await purger.checkpoint()
            return done, True, True
    if rule.indexed or not purger.has_rowid(rule.table):
        size = batch
        while True:
            n, held = await purger.write_indexed(rule, params, size)
            done += n
            progress(rule.name, done, None)
            if n < size:
                return done, True, False
            if deadline is not None and clock() >= deadline:
                return done, False, False
            await asyncio.sleep(min(PAUSE_MAX, max(held, 1e-3) * PAUSE_SHARE))
            size = _resize(size, held, MIN_BATCH, MAX_BATCH)
    bounds = await purger.span(rule.table)
    if bounds is None:
        return 0, True, False
    after, last = bounds[0] - 1, bounds[1]
    span, skip = batch, SKIP_ROWIDS
    sparse = False
    while after < last:
        if sparse:
            # In the kept part (recent rows, pending work): find the next matching row with
            # a read, which takes no lock, instead of holding the write lock to find nothing.
            started = time.perf_counter()
            upto = min(last, after + skip)
            first = await purger.first_match(rule, params, after, upto)
            skip = _resize(skip, time.perf_counter() - started, MIN_BATCH, MAX_SKIP)
            if first is None:
                after = upto
                if deadline is not None and clock() >= deadline:
                    return done, False, False
                continue
            after = first - 1
        upto = min(last, after + span)
        n, held = await purger.write_range(rule, params, after, upto)
        after = upto
        done += n
        progress(rule.name, done, None)
        sparse = n == 0
        if after >= last:
            break
        if deadline is not None and clock() >= deadline:
            return done, False, False
        held = max(held, 1e-3)
        # Copy what this batch wrote into the database file now, while the lock is free,
        # and let the daemon's writers in: they wait in SQLite's busy handler, which sleeps
        # up to 100 ms between tries, so a purge that started its next transaction at once
        # could keep them out for many batches in a row. The checkpoint counts as pause.
        ckpt = await purger.checkpoint() if n else 0.0
        pause = min(PAUSE_MAX, held * PAUSE_SHARE) - ckpt
        if pause > 0:
            await asyncio.sleep(pause)
        span = _resize(span, held, MIN_BATCH, MAX_BATCH)
    return done, True, False


def _resize(size: int, seconds: float, low: int, high: int) -> int:
    """The next batch size: the one that takes about :data:`BATCH_SECONDS`, growing at most
    :data:`GROWTH` times per batch (a cheap stretch of the table may precede a dense one)."""
    scaled = size * BATCH_SECONDS / max(seconds, 1e-3)
    return int(min(high, max(low, min(scaled, size * GROWTH))))


async def purge_older_than(
    db: Database, horizon: float, now: float, *, batch: int = BATCH, dry_run: bool = False,
    progress: Progress = _no_progress, deadline: float | None = None,
    clock: Callable[[], float] = time.time, bulk: bool = True,
) -> PurgeReport:
    """Apply the time policy with ``horizon`` (unix seconds). See the module docstring;
    ``bulk=False`` keeps every table on the batched path."""
    report = PurgeReport(dry_run=dry_run)
    tables = await store.columns(db)
    rules = [(r, p) for r, p in time_rules(horizon, now) if r.table in tables]
    if dry_run:
        for rule, params in rules:
            n = await store.count(db, rule.table, rule.where, params)
            if n:
                report.add({rule.name: n})
        return report
    async with store.Purger(db, cache_kib=PURGE_CACHE_KIB) as purger:
        for rule, params in rules:
            n, finished, in_bulk = await _run_rule(
                purger, rule, params, batch=batch, progress=progress, deadline=deadline,
                clock=clock, bulk=bulk)
            report.add_rule(rule.name, n, in_bulk)
            if not finished:
                report.finished = False
                break
        await purger.checkpoint()
    return report


async def purge_contacts(
    db: Database, contacts: list[tuple[str, str]], *, dry_run: bool = False,
    progress: Progress = _no_progress,
) -> PurgeReport:
    """Erase each (account_id, contact_id): one transaction per person (or per group of
    :data:`CONTACTS_PER_TX` people); the jobs naming them are found by scanning the queue."""
    report = PurgeReport(dry_run=dry_run)
    tables = store.contact_tables(await store.columns(db))
    for i, (acct, contact) in enumerate(contacts, start=1):
        if dry_run:
            report.add(await store.count_contact(db, tables, acct, contact))
        else:
            report.add(await store.delete_contacts(db, tables, [(acct, contact)], jobs="all"))
        progress("contacts", i, len(contacts))
    report.counts = {k: v for k, v in report.counts.items() if v}
    return report


async def _erase_scope(
    db: Database, account_id: str | None, *, dry_run: bool, progress: Progress, batch: int,
) -> PurgeReport:
    """Every contact of ``account_id`` (None: of every account), then the rest of the scope's
    rows (events without a contact, account-level notifications, finished jobs)."""
    report = PurgeReport(dry_run=dry_run)
    cols = await store.columns(db)
    tables = store.contact_tables(cols)
    scope, params = ("account_id = ?", (account_id,)) if account_id else ("1 = 1", ())
    job_scope = "json_extract(payload, '$.account_id') = ?" if account_id else "1 = 1"
    jobs_where = (f"(state IN ('done', 'dead') OR (state = 'ready' AND key NOT LIKE"
                  f" 'periodic:%')) AND {job_scope}")
    if dry_run:
        for t in tables:
            report.add({t: await store.count(db, t, scope, params)})
        report.add({"contacts": await store.count(db, "contacts", scope, params)})
        report.add({"jobs": await store.count(db, "jobs", jobs_where, params)})
        report.counts = {k: v for k, v in report.counts.items() if v}
        return report
    total = await store.count(db, "contacts", scope, params)
    done = 0
    cursor = ("", "")
    while True:
        page = await store.contacts_page(db, account_id, cursor, CONTACTS_PER_TX)
        if not page:
            break
        # Ready jobs only inside the per-person transactions (an index finds them); the
        # finished ones are swept below in batches instead of one scan per person.
        report.add(await store.delete_contacts(db, tables, page, jobs="ready", mentions=False))
        cursor = page[-1]
        done += len(page)
        progress("contacts", done, total)
    async with store.Purger(db, cache_kib=PURGE_CACHE_KIB) as purger:
        for t in [*tables, "jobs"]:
            where = jobs_where if t == "jobs" else scope
            n, _, in_bulk = await _run_rule(purger, Rule(t, where), params, batch=batch,
                                            progress=progress, deadline=None, clock=time.time)
            report.add_rule(t, n, in_bulk)
    report.counts = {k: v for k, v in report.counts.items() if v}
    return report


async def purge_account(
    db: Database, account_id: str, *, dry_run: bool = False, progress: Progress = _no_progress,
    batch: int = BATCH,
) -> PurgeReport:
    return await _erase_scope(db, account_id, dry_run=dry_run, progress=progress, batch=batch)


async def purge_all(
    db: Database, *, dry_run: bool = False, progress: Progress = _no_progress, batch: int = BATCH,
) -> PurgeReport:
    return await _erase_scope(db, None, dry_run=dry_run, progress=progress, batch=batch)


@contextlib.contextmanager
def daemon_lock(db_path: Path) -> Iterator[bool]:
    """Try to take the daemon's lock (``<db>.lock``, see :func:`instaset.daemon.single_instance`)
    without waiting: yields True when no daemon runs on ``db_path`` (and none can start while
    the context is held), False when one does. The file is opened for append: the running
    daemon's pid in it is left alone."""
    lock_path = db_path.with_name(db_path.name + ".lock")
    if not lock_path.parent.exists():
        yield True
        return
    with open(lock_path, "a") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# -- space ------------------------------------------------------------------------------------
async def reclaim_space(db: Database, *, exclusive: bool) -> str:
    """Give free pages back to the OS where that is safe; returns what was done (one line).
    See the module docstring for incremental_vacuum versus VACUUM."""
    page = await store.pragma_int(db, "page_size")
    free = await store.pragma_int(db, "freelist_count")
    mode = await store.pragma_int(db, "auto_vacuum")  # 0 NONE, 1 FULL, 2 INCREMENTAL
    mb = free * page / 1e6
    if mode == 2:
        while await store.pragma_int(db, "freelist_count") > 0:
            await store.incremental_vacuum(db, VACUUM_PAGES)
        msg = (f"returned {mb:.1f} MB to the OS (incremental_vacuum)" if free
               else "no free pages to reclaim")
    elif exclusive:
        # Once per file: afterwards it is INCREMENTAL and the branch above applies.
        await store.vacuum_into_incremental(db)
        msg = (f"returned {mb:.1f} MB to the OS (VACUUM; the file now uses "
               "auto_vacuum=INCREMENTAL, so later purges reclaim space in place)")
    elif mb >= 1.0:  # less is not worth a word (or a stop of the daemon)
        msg = (f"{mb:.1f} MB free inside the file (new data reuses it); the daemon is running, "
               "so no VACUUM: run `instaset purge` once while it is stopped to return the "
               "space and switch the file to incremental vacuum")
    else:
        msg = "no free pages to reclaim" if not free else f"{mb:.1f} MB free inside the file"
    await store.checkpoint(db, truncate=exclusive)  # shrink the WAL file too
    return msg


# -- the daemon's daily job -------------------------------------------------------------------
def install(rt: Runtime) -> None:
    """Register the ``retention`` periodic job (once a day): the time policy with
    ``retention.days``, in slices of at most half the job timeout (a slice that runs out of
    time continues a second later, without spending a try), then incremental space reclaim."""
    runtime = rt

    async def retention_job(_job: Job) -> None:
        now = runtime.clock()
        horizon = now - runtime.config.retention.days * DAY
        budget = max(1.0, runtime.worker.settings.job_timeout / 2)
        report = await purge_older_than(runtime.db, horizon, now, deadline=time.monotonic()
                                         + budget, clock=time.monotonic)
        if report.total:
            log.info("retention: deleted %s%s", report.counts,
                     f" (in one pass: {', '.join(report.bulk)})" if report.bulk else "")
        if not report.finished:
            raise RetryLater(1.0, "retention continues", count_attempt=False)
        space = await reclaim_space(runtime.db, exclusive=False)
        log.info("retention: %s", space)

    runtime.add_periodic("retention", DAY, retention_job)
