"""The ingest writer's two ways to store (store/ingest.py): a lone request straight into
events with its job, a batch under load into staged_events, moved into events in arrival
order when no request waits, on stop, and after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from instaset.store import ingest
from instaset.store.db import Database, open_database
from instaset.store.ingest import EventRow, IngestResult, IngestWriter
from tests.conftest import connect_account

ACCT = "17841400000000001"


def row(mid: str, account: str = ACCT, kind: str = "message") -> EventRow:
    return EventRow(f"msg:{mid}", account, kind, "555", 1.0, json.dumps({"mid": mid}))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    d = await open_database(tmp_path / "staged.db")
    await connect_account(d, ACCT)
    try:
        yield d
    finally:
        await d.close()


def writer(db: Database, wake: asyncio.Event | None = None, *,
           ran_dry: Callable[[], float] | None = None) -> IngestWriter:
    return IngestWriter(db.connect_sync_writer(), gate=db.gate, wake=wake or asyncio.Event(),
                        max_attempts=6, ran_dry=ran_dry)


@contextlib.asynccontextmanager
async def running(db: Database, wake: asyncio.Event | None = None
                  ) -> AsyncIterator[IngestWriter]:
    """A started writer, stopped (which moves what is staged) on the way out."""
    w = writer(db, wake)
    w.start()
    try:
        yield w
    finally:
        await w.stop()


async def counts(db: Database) -> tuple[int, int, int]:
    """(events, staged rows, process_event jobs)."""
    row_ = await db.fetchone(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM staged_events),"
        " (SELECT count(*) FROM jobs WHERE kind = 'process_event')")
    assert row_ is not None
    return int(row_[0]), int(row_[1]), int(row_[2])


async def burst(w: IngestWriter, groups: Sequence[Sequence[EventRow]]) -> list[IngestResult]:
    """Requests submitted in the same loop turn: the writer takes them as one batch."""
    return list(await asyncio.gather(*(w.submit(g) for g in groups)))


async def test_a_lone_request_goes_straight_to_events_with_its_job(db: Database) -> None:
    async with running(db) as w:
        assert await w.submit([row("a")]) == IngestResult(1)
        assert await counts(db) == (1, 0, 1)


async def test_a_batch_under_load_is_staged_then_moves_in_arrival_order(
    db: Database,
) -> None:
    wake = asyncio.Event()
    async with running(db, wake) as w:
        groups = [[row(f"b{i}")] for i in range(ingest.STAGE_FROM)]
        assert await burst(w, groups) == [IngestResult(1)] * ingest.STAGE_FROM
        stored = await counts(db)
        assert stored[0] + stored[1] == ingest.STAGE_FROM  # acknowledged means stored
        assert stored[2] == stored[0]  # moved (by the writer, if calm came) with the jobs
        await w.settle()
        assert w.moved == ingest.STAGE_FROM  # they went through the staging table
        assert await counts(db) == (ingest.STAGE_FROM, 0, ingest.STAGE_FROM)
        assert wake.is_set()  # the worker is told about the new jobs (a staged commit
        # sets nothing: only the move that made jobs)
        keys = [r[0] for r in await db.fetchall("SELECT dedupe_key FROM events ORDER BY id")]
        assert keys == [f"msg:b{i}" for i in range(ingest.STAGE_FROM)]
        jobs = await db.fetchall(
            "SELECT j.key, e.dedupe_key, j.run_at, e.received_at FROM jobs j"
            " JOIN events e ON e.id = json_extract(j.payload, '$.event_id')")
        assert all(r[0] == f"event:{r[1]}" and r[2] == r[3] for r in jobs)


async def test_while_rows_are_staged_a_lone_request_queues_behind_them(
    db: Database,
) -> None:
    w = writer(db)
    conn = w._conn
    # A staged batch, as a crash would leave it (the writer not running yet).
    w._commit([[row(f"old{i}")] for i in range(3)], 10.0, True)
    w.start()
    try:
        assert w.backlog == 3  # counted at start
        await w.submit([row("new")])
        await w.settle()
        keys = [r[0] for r in conn.execute("SELECT dedupe_key FROM events ORDER BY id")]
        assert keys == ["msg:old0", "msg:old1", "msg:old2", "msg:new"]
    finally:
        await w.stop()


async def test_a_restart_moves_what_a_crash_left_staged_without_any_request(
    db: Database,
) -> None:
    first = writer(db)
    first._commit([[row("left1"), row("left2")]], 5.0, True)  # committed, never moved
    assert await counts(db) == (0, 2, 0)
    wake = asyncio.Event()
    async with running(db, wake) as w:
        assert w.backlog == 2
        await asyncio.wait_for(wake.wait(), 5)
        assert await counts(db) == (2, 0, 2)
        assert w.backlog == 0


async def test_stop_moves_every_staged_row(db: Database) -> None:
    w = writer(db)
    w.start()
    await burst(w, [[row(f"s{i}")] for i in range(ingest.STAGE_FROM * 3)])
    await w.stop()
    assert w.moved == ingest.STAGE_FROM * 3
    assert await counts(db) == (ingest.STAGE_FROM * 3, 0, ingest.STAGE_FROM * 3)


async def test_duplicates_and_unconnected_accounts_are_told_apart_when_staged_too(
    db: Database,
) -> None:
    async with running(db) as w:
        assert await w.submit([row("dup")]) == IngestResult(1)  # direct: in events
        results = await burst(w, [
            [row("dup")],  # already in events: not staged
            [row("x1")],
            [row("x1")],  # the same key in the same batch: staged once
            [row("other", account="999")],  # not connected here: dropped
        ])
        assert results == [IngestResult(0), IngestResult(1), IngestResult(0),
                           IngestResult(0, 1, ("999",))]
        await w.settle()
        assert w.moved == 1
        keys = sorted(r[0] for r in await db.fetchall("SELECT dedupe_key FROM events"))
        assert keys == ["msg:dup", "msg:x1"]
        assert await counts(db) == (2, 0, 2)


async def test_an_echo_of_a_recorded_send_is_moved_processed_without_a_job(
    db: Database,
) -> None:
    await db.execute(
        "INSERT INTO messages(account_id, contact_id, mid, direction, sent_by, text,"
        " attachments, created_at) VALUES (?, '555', 'ours', 'out', 'automation', 'hi',"
        " '[]', 1.0)", (ACCT,))
    async with running(db) as w:
        await burst(w, [[row("ours", kind="echo")]] + [[row(f"e{i}")] for i in range(4)])
        await w.settle()
        echo = await db.fetchone(
            "SELECT processed_at, received_at FROM events WHERE dedupe_key = 'msg:ours'")
        # Processed at its arrival, as if it had gone straight in (bench/soak.py checks it).
        assert echo is not None and echo[0] is not None and echo[0] == echo[1]
        assert await counts(db) == (5, 0, 4)


async def test_a_move_that_fails_keeps_the_rows_and_is_tried_again(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(ingest, "MOVE_RETRY", 0.05)
    await db.execute("CREATE TRIGGER refuse BEFORE INSERT ON events"
                     " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END")
    wake = asyncio.Event()
    async with running(db, wake) as w:
        with caplog.at_level(logging.ERROR, logger="instaset.webhook"):
            assert await burst(w, [[row(f"f{i}")] for i in range(4)]) == [IngestResult(1)] * 4
            for _ in range(100):
                if any("could not move" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
        assert any("could not move 4 staged events into events: disk trouble"
                   in r.getMessage() for r in caplog.records)
        assert await counts(db) == (0, 4, 0)  # nothing lost, nothing half-moved
        await db.execute("DROP TRIGGER refuse")
        await asyncio.wait_for(wake.wait(), 5)  # tried again by itself
        assert await counts(db) == (4, 0, 4)


async def test_stop_moves_for_a_bounded_time_and_leaves_the_rest_for_the_next_start(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """Found in review: stop() moved the whole backlog, however long, before the worker's
    grace began (a service manager kills a daemon that takes too long to stop)."""
    monkeypatch.setattr(ingest, "STOP_MOVING", 0.0)
    w = writer(db)
    w._commit([[row(f"p{i}")] for i in range(ingest.MOVE_ROWS + 10)], 5.0, True)
    w.start()  # its loop never runs: stop() cancels it first, then moves by itself
    with caplog.at_level(logging.WARNING, logger="instaset.webhook"):
        await w.stop()
    events, staged, jobs = await counts(db)
    assert events + staged == ingest.MOVE_ROWS + 10 and staged > 0 and jobs == events
    assert any(f"stopping with {staged} events still staged" in r.getMessage()
               for r in caplog.records)
    again = writer(db)
    again.start()
    await again.stop()  # the next life moves the rest
    assert await counts(db) == (ingest.MOVE_ROWS + 10, 0, ingest.MOVE_ROWS + 10)


async def test_one_bad_request_does_not_fail_the_others_that_shared_its_commit(
    db: Database, caplog: pytest.LogCaptureFixture,
) -> None:
    """The batch's commit fails as a whole; each request is then committed alone, so only
    the one that cannot be stored gets the error (a 503: Meta delivers it again)."""
    bad = EventRow("msg:bad", ACCT, "message", "555", 1.0, ["not", "text"])  # type: ignore[arg-type]
    async with running(db) as w:
        with caplog.at_level(logging.ERROR, logger="instaset.webhook"):
            results = await asyncio.gather(
                *(w.submit(g) for g in [[row("g0")], [bad], [row("g1")], [row("g2")]]),
                return_exceptions=True)
        assert results[0] == results[2] == results[3] == IngestResult(1)
        assert isinstance(results[1], sqlite3.ProgrammingError)
        assert any("ingest commit failed" in r.getMessage() for r in caplog.records)
        assert (w.batches, w.rows) == (3, 3)  # only what was committed counts
        await w.settle()
        keys = sorted(r[0] for r in await db.fetchall("SELECT dedupe_key FROM events"))
        assert keys == ["msg:g0", "msg:g1", "msg:g2"]


@contextlib.asynccontextmanager
async def steady_load(w: IngestWriter, senders: int = 8) -> AsyncIterator[list[int]]:
    """``senders`` requests always waiting: each sender submits again as soon as it is
    answered, so the writer never sees a moment without a request waiting (the load of a
    few hundred webhooks/s, or more). Yields the count of answered requests."""
    answered = [0]
    stop = asyncio.Event()

    async def sender(n: int) -> None:
        i = 0
        while not stop.is_set():
            await w.submit([row(f"load{n}-{i}")])
            answered[0] += 1
            i += 1

    tasks = [asyncio.create_task(sender(n)) for n in range(senders)]
    try:
        yield answered
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(1000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within 10 s: {what}")


async def test_under_load_a_backlog_moves_each_time_the_worker_runs_dry(
    db: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While requests keep coming, staged rows move when the worker has run out of due jobs
    since the last move: one chunk each time, none while it has work (a move costs as much
    writer time as a few batches of requests: under a saturating burst, moving as fast as
    rows came took a fifth of the writer's time), and at the MOVE_EVERY cadence anyway."""
    monkeypatch.setattr(ingest, "MOVE_EVERY", 1e9)
    dry = [-math.inf]  # the worker's last claim that came back short: never yet
    w = writer(db, ran_dry=lambda: dry[0])
    w._commit([[row(f"big{i}")] for i in range(ingest.MOVE_ROWS * 3)], 5.0, True)
    w.start()
    try:
        async with steady_load(w) as answered:
            await until(lambda: w.batches >= 50, "50 batches under load")
            # At most one move, in the calm before the first request; none under load.
            before = w.moved
            assert before <= ingest.MOVE_ROWS and w.backlog > ingest.MOVE_ROWS * 2
            dry[0] = time.monotonic()  # the worker finds nothing to do
            await until(lambda: w.moved > before, "a move once the worker ran dry")
            assert w.moved == before + ingest.MOVE_ROWS  # one chunk: the oldest rows
            batches = w.batches
            await until(lambda: w.batches >= batches + 50, "50 more batches")
            assert w.moved == before + ingest.MOVE_ROWS  # it has those now: no more moves
            monkeypatch.setattr(ingest, "MOVE_EVERY", 0.0)  # its time comes
            await until(lambda: w.moved > before + ingest.MOVE_ROWS, "a move at MOVE_EVERY")
    finally:
        await w.stop()
    # Every acknowledged event is in events with its job (the last requests may have gone
    # straight in once the moves emptied the table).
    stored = ingest.MOVE_ROWS * 3 + answered[0]
    assert answered[0] > 0 and await counts(db) == (stored, 0, stored)


EVERY = 1.0  # MOVE_EVERY, as shipped
EPS = 1e-6


@pytest.mark.parametrize(
    ("backlog", "moved_ago", "dry_ago", "retry_in", "due"),
    [
        (0, 5.0, 0.0, 0.0, False),  # nothing staged
        (500, 0.5, 0.6, 0.0, False),  # the worker ran dry before the last move: it has those
        (500, 0.5, 0.4, 0.0, True),  # ... and since
        (1, 0.5, 0.0, 0.0, True),  # a single row: the same
        (1, 0.5, None, 0.0, False),  # the worker's hunger not known: the cadence only
        (1, EVERY - EPS, None, 0.0, False),
        (1, EVERY + EPS, None, 0.0, True),
        (5000, EVERY + EPS, 2.0, 0.0, True),  # a worker that never runs dry: the cadence
        (1, 1.0, 0.5, 0.5, False),  # a failed move's retry time comes first
    ],
)
def test_when_staged_rows_move_though_requests_wait(
    db: Database, backlog: int, moved_ago: float, dry_ago: float | None, retry_in: float,
    due: bool,
) -> None:
    assert ingest.MOVE_EVERY == EVERY
    now = 1000.0
    w = writer(db, ran_dry=None if dry_ago is None else (lambda: now - dry_ago))
    w._backlog = backlog
    w._moved_at, w._retry_at = now - moved_ago, now + retry_in
    assert w._move_due(now) is due


async def test_the_writer_counts_true_again_after_catch_up_moved_rows_behind_its_back(
    db: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: catch-up's move_staged moves staged rows the writer still counted;
    under steady load the table is never empty at a move, so the count stayed high, and a
    small new backlog waited as long as a large one (MOVE_EVERY)."""
    monkeypatch.setattr(ingest, "MOVE_EVERY", 1e9)
    async with running(db) as w:
        w._waiting += 1  # a request always waiting: no calm moves
        try:
            await burst(w, [[row(f"a{i}")] for i in range(40)])
            assert w.backlog == 40
            async with db.tx() as conn:  # catch-up moves them
                assert await ingest.move_staged(conn, max_attempts=6, limit=1000) == (40, True)
            await burst(w, [[row(f"b{i}")] for i in range(ingest.STAGE_FROM)])
            assert w.backlog == 40 + ingest.STAGE_FROM  # high: 4 are staged
            assert await w._move() == ingest.STAGE_FROM  # fewer than MOVE_ROWS: all there were
            assert w.backlog == 0
        finally:
            w._waiting -= 1


async def test_each_batch_commits_at_the_configured_level_after_a_move_lowered_it(
    db: Database,
) -> None:
    """A move commits without an fsync; the batch after it sets FULL (the default) again,
    and a batch that cannot set it fails rather than be acknowledged without its fsync."""
    w = writer(db)
    conn = w._conn
    w._commit([[row(f"s{i}")] for i in range(5)], 1.0, True)  # staged, as a crash leaves
    refuse = [0]

    def authorizer(action: int, arg1: str | None, arg2: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_PRAGMA and arg1 == "synchronous" and arg2 == "2" \
                and refuse[0]:
            refuse[0] -= 1
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    conn.set_authorizer(authorizer)
    w.start()
    try:
        await w.settle()
        assert w.moved == 5
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL after the move
        assert await w.submit([row("next")]) == IngestResult(1)
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL for the batch
        w._commit([[row(f"t{i}")] for i in range(5)], 1.0, True)
        await w.settle()
        refuse[0] = 1
        with pytest.raises(sqlite3.DatabaseError):
            await w.submit([row("refused")])
        assert await counts(db) == (11, 0, 11)  # the refused one is not stored
        assert await w.submit([row("again")]) == IngestResult(1)
    finally:
        await w.stop()
