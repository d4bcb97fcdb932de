"""Catching up after downtime, against the sandbox: messages whose webhooks never arrived are
recovered once, answered only inside the 24 h window, a dropped subscription is restored, and
the Conversations API budget (2 calls/s per account) holds in the sandbox's own transcript."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from instaset import catchup
from instaset.backfill import (
    CallLimiter,
    Failures,
    Gap,
    Marks,
    detect_gap,
    merge_reasons,
    recovered_row,
    summary_text,
)
from instaset.catchup import (
    TOP_PASSES,
    CatchUp,
    CatchUpSettings,
    doctor_checks,
    parse_since,
    run_catch_up,
)
from instaset.catchup_walk import _Pass
from instaset.config import Config
from instaset.contacts import Profiles
from instaset.daemon import Runtime, runtime
from instaset.graph import GraphClient
from instaset.ratelimit import budgets_from_config
from instaset.sandbox import Fault, Recorded, Sandbox
from instaset.store import contacts as contacts_store
from instaset.store import history, ingest
from instaset.store import jobs as jobstore
from instaset.store.db import Database
from instaset.store.ingest import EventRow
from instaset.tokens import StaticTokens
from instaset.webhook import make_app
from tests.sending_harness import ACCT, SECRET, USERNAME, Clock

HOUR = 3600.0
GUIDE_TEXT = "Here is the free guide: https://example.com/guide"
GUIDE = {"name": "guide", "trigger": {"dm": {"keywords": ["guide"]}},
         "actions": [{"reply": GUIDE_TEXT}]}
FIELDS = ["messages", "messaging_postbacks", "message_reactions"]
ANA, BEA, CAI = "1100000000000001", "1100000000000002", "1100000000000003"


def make_config(db: Path, *, per_second: float = 50.0,
                workflows: Sequence[Mapping[str, Any]] = (GUIDE,)) -> Config:
    return Config.model_validate({
        "instagram": {"app_secret": SECRET},
        "storage": {"path": str(db), "synchronous": "NORMAL"},
        "worker": {"poll_interval": 0.02},
        "rate_limits": {"conversations_per_second": per_second},
        "workflows": list(workflows),
    })


@dataclass
class World:
    """One Instagram (the sandbox) that outlives the daemons started against it."""

    sandbox: Sandbox
    clock: Clock
    config: Config


@contextlib.asynccontextmanager
async def world(tmp_path: Path, *, frozen: bool = False, **config: Any) -> AsyncIterator[World]:
    clock = Clock(frozen=frozen)
    sandbox = Sandbox(app_secret=SECRET, account_id=ACCT, username=USERNAME, clock=clock)
    await sandbox.start("127.0.0.1")
    sandbox.subscribe(FIELDS)  # as `instaset connect` left it
    try:
        yield World(sandbox, clock, make_config(tmp_path / "d.db", **config))
    finally:
        await sandbox.stop()


@contextlib.asynccontextmanager
async def daemon(w: World, *, start: bool = True) -> AsyncIterator[Runtime]:
    """``instaset serve`` against the sandbox, with this feature installed; the worker is
    driven by :func:`settle`. On exit the daemon is gone: webhooks are no longer delivered.
    Without ``start`` no start hook or periodic job is queued: the test checks by hand."""
    assert w.sandbox.base_url is not None
    async with contextlib.AsyncExitStack() as stack:
        rt = await stack.enter_async_context(runtime(
            w.config, secrets=[SECRET.encode()], clock=w.clock, graph_url=w.sandbox.base_url,
            tokens=StaticTokens({ACCT: w.sandbox.token}), account_id=ACCT))
        rl = w.config.rate_limits
        rt.budgets = rt.deliverer.budgets = budgets_from_config(
            rl.text_per_second, rl.media_per_second, rl.private_replies_per_hour, clock=w.clock)
        await history.upsert_account(rt.db, ACCT, username=USERNAME, now=w.clock(),
                                     sandbox=True, subscribed_fields=FIELDS)
        runner = web.AppRunner(make_app(rt.web), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        w.sandbox.webhook_url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
        rt.writer.start()
        stack.push_async_callback(rt.writer.stop)
        if start:
            await rt.start()  # as serving() does: the first catch-up check is due now
        try:
            yield rt
        finally:
            w.sandbox.webhook_url = None


async def settle(w: World, rt: Runtime) -> None:
    """Run due jobs and wait for the sandbox's webhooks until nothing is due."""
    for _ in range(500):
        ran = await rt.worker.run_burst()
        await asyncio.wait_for(w.sandbox.drain(), timeout=10)
        if not ran:
            return
    raise AssertionError("the daemon did not settle")


async def next_check(w: World, rt: Runtime) -> None:
    """Move the clock to the next periodic catch-up check and let it run."""
    row = await rt.db.fetchone(
        "SELECT min(run_at) FROM jobs WHERE kind = 'catchup' AND state = 'ready'")
    assert row is not None and row[0] is not None
    w.clock.advance(max(0.0, row[0] - w.clock()))
    await settle(w, rt)


def sends_to(w: World, igsid: str) -> list[Recorded]:
    """Every send to ``igsid`` the daemon tried, refused ones included."""
    return [r for r in w.sandbox.send_attempts() if r.json.get("recipient") == {"id": igsid}]


def made(attempts: list[Recorded]) -> list[bool]:
    """Whether the sandbox carried out each of these send attempts (a refused one: False)."""
    return [r.accepted for r in attempts]


def mid_of(payload: Mapping[str, Any]) -> str:
    return str(payload["entry"][0]["messaging"][0]["message"]["mid"])


async def count(rt: Runtime, sql: str, params: Sequence[object] = ()) -> int:
    row = await rt.db.fetchone(sql, params)
    assert row is not None
    return int(row[0])


# -- recovered once after a restart ------------------------------------------------------------
async def test_messages_sent_while_stopped_are_recovered_once_and_answered_once(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w:
        async with daemon(w) as rt:
            await settle(w, rt)
            await w.sandbox.user_sends_dm(ANA, "hi! the guide please")
            await settle(w, rt)
            assert made(sends_to(w, ANA)) == [True]
        # The daemon is stopped: Instagram keeps the message, the webhook never arrives.
        w.clock.advance(10 * 60)
        missed = await w.sandbox.user_sends_dm(BEA, "can I get the guide?", deliver=False)
        w.clock.advance(10 * 60)
        async with daemon(w) as rt:
            await settle(w, rt)
            # Inside the window: the workflow answered once.
            assert [r.json["message"] for r in sends_to(w, BEA)] == [{"text": GUIDE_TEXT}]
            assert made(sends_to(w, BEA)) == [True]
            stored = await history.thread(rt.db, ACCT, BEA)
            assert (stored[0]["direction"], stored[0]["mid"]) == ("in", mid_of(missed))
            recovered = await rt.db.fetchall("SELECT * FROM recovered_events")
            assert [(r["contact_id"], r["mid"]) for r in recovered] == [(BEA, mid_of(missed))]
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None and run["reason"] == "start" and run["recovered"] == 1
            assert run["finished_at"] is not None and run["error"] is None
            notes = await rt.db.fetchall(
                "SELECT text FROM notifications WHERE kind = 'catchup'")
            assert len(notes) == 1 and "Recovered 1 message" in notes[0]["text"]
            assert f"@user_{BEA} (1)" in notes[0]["text"]
            # Ana's conversation was complete: nothing of hers came back twice.
            assert made(sends_to(w, ANA)) == [True]
            assert await count(rt, "SELECT count(*) FROM messages WHERE contact_id = ?",
                               (ANA,)) == 2
            # Catching up again, and Meta's late retry of the very webhook, change nothing.
            assert w.sandbox.webhook_url is not None
            assert await w.sandbox.deliver(missed) == 200
            reports = await CatchUp.for_runtime(rt).run_now()
            await settle(w, rt)
            assert [r.recovered for r in reports] == [0]
            assert made(sends_to(w, BEA)) == [True]
            assert await count(rt, "SELECT count(*) FROM recovered_events") == 1
            assert await count(rt, "SELECT count(*) FROM events WHERE dedupe_key = ?",
                               (f"msg:{mid_of(missed)}",)) == 1


async def two_missed(w: World) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two DMs of Bea's, 5 s apart, whose webhooks were not delivered (yet)."""
    first = await w.sandbox.user_sends_dm(BEA, "first", deliver=False)
    w.clock.advance(5)
    return first, await w.sandbox.user_sends_dm(BEA, "second", deliver=False)


@contextlib.contextmanager
def writer_held(rt: Runtime) -> Iterator[None]:
    """A request always waiting for its commit (sustained load): staged rows do not move
    by calm (with a long MOVE_EVERY and no worker running, not at all)."""
    rt.writer._waiting += 1
    try:
        yield
    finally:
        rt.writer._waiting -= 1


def daemon_checked(rt: Runtime) -> CatchUp:
    """The daemon's catch-up after its first check of the account: its next check is a
    periodic one (no start gap)."""
    cu = CatchUp.for_runtime(rt)
    cu._checked.add(ACCT)
    return cu


def daemon_checks_as_the_cli_waits(monkeypatch: pytest.MonkeyPatch, w: World, rt: Runtime, *,
                                   times: int, every: float) -> list[catchup.RunReport]:
    """The first ``times`` times another catch-up (the CLI's) looks at what ingest staged
    (before a conversation, and again at each wait), the clock moves on ``every`` s and
    the daemon's periodic check runs. Returns that check's reports."""
    daemon_cu = daemon_checked(rt)
    real = CatchUp._move_staged
    checks: list[catchup.RunReport] = []

    async def move_staged(self: CatchUp) -> None:
        if self is not daemon_cu and len(checks) < times:
            w.clock.advance(every)
            checks.extend(await daemon_cu.check_all())
        await real(self)

    monkeypatch.setattr(CatchUp, "_move_staged", move_staged)
    return checks


def slow_moves(monkeypatch: pytest.MonkeyPatch, inline: int, poll: float = 0.01) -> None:
    """Ingest under load for catch-up: the writer moves no staged row by itself (with
    :func:`writer_held`), catch-up moves ``inline`` a transaction and looks again every
    ``poll`` s."""
    monkeypatch.setattr(ingest, "MOVE_EVERY", 3600.0)
    monkeypatch.setattr(catchup, "STAGED_INLINE", inline)
    monkeypatch.setattr(catchup, "STAGED_POLL", poll)


async def burst(rt: Runtime, n: int, tag: str = "") -> None:
    """``n`` concurrent one-event webhooks (ingest under load: staged while the caller holds
    :func:`writer_held`)."""
    rows = [EventRow(f"msg:fill{tag}{i}", ACCT, "message", CAI, 1.0, "{}") for i in range(n)]
    await asyncio.gather(*(rt.writer.submit([r]) for r in rows))


async def stage_behind_load(w: World, rt: Runtime, delivered: Mapping[str, Any]) -> None:
    """Ingest under load: four other events are staged, then ``delivered``'s webhook comes
    (acknowledged, staged behind them). The caller holds a phantom waiting request and a
    long MOVE_EVERY, so nothing moves by itself."""
    await burst(rt, 4)
    assert await w.sandbox.deliver(delivered) == 200
    assert await count(rt, "SELECT count(*) FROM staged_events WHERE dedupe_key = ?",
                       (f"msg:{mid_of(delivered)}",)) == 1


async def moved_before_recovered(rt: Runtime, reports: Sequence[catchup.RunReport],
                                 first: Mapping[str, Any], second: Mapping[str, Any]) -> None:
    """Catch-up moved the staged webhook of ``first`` into events, recovered only
    ``second``, and the two are in events in the order they were sent."""
    assert [(r.recovered, r.error) for r in reports] == [(1, None)]
    assert await count(rt, "SELECT count(*) FROM staged_events") == 0
    recovered = await rt.db.fetchall("SELECT mid FROM recovered_events")
    assert [r["mid"] for r in recovered] == [mid_of(second)]
    order = [r["dedupe_key"] for r in await rt.db.fetchall(
        "SELECT dedupe_key FROM events WHERE contact_id = ? ORDER BY id", (BEA,))]
    assert order == [f"msg:{mid_of(first)}", f"msg:{mid_of(second)}"]


def watch_walks(monkeypatch: pytest.MonkeyPatch, w: World,
                then: Callable[[list[str]], Awaitable[None]]) -> list[str]:
    """Wraps ``CatchUp._conversation``: returns the list of the conversations whose messages
    were asked for (walked, not skipped), in order; ``then(walked)`` runs after each
    conversation that was."""
    walked: list[str] = []
    real = CatchUp._conversation

    async def conversation(self: CatchUp, *args: Any, **kwargs: Any) -> bool:
        before = len(conversations_calls(w.sandbox))
        done = await real(self, *args, **kwargs)
        if len(conversations_calls(w.sandbox)) > before:
            walked.append(str(args[3].get("id")))
            await then(walked)
        return done

    monkeypatch.setattr(CatchUp, "_conversation", conversation)
    return walked


async def test_catch_up_moves_what_ingest_staged_before_it_inserts_recovered_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: a webhook staged by ingest under load is not in events yet, so
    catch-up recovered its key again (a poorer copy, counted as recovered) and the later
    message took an events.id before it. The recovering transaction now moves the staged
    rows first."""
    monkeypatch.setattr(ingest, "MOVE_EVERY", 3600.0)
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        first, second = await two_missed(w)
        with writer_held(rt):
            await stage_behind_load(w, rt, first)
            reports = await CatchUp.for_runtime(rt).run_now()
        await moved_before_recovered(rt, reports, first, second)
        jobs = await count(rt, "SELECT count(*) FROM jobs WHERE kind = 'process_event'"
                               " AND key = ?", (f"event:msg:{mid_of(first)}",))
        assert jobs == 1  # the moved webhook has its job, as the writer's move gives it


async def test_events_staged_during_the_graph_calls_move_before_the_recovered_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left by session 12: the check before a conversation's calls found nothing staged,
    then ingest staged a webhook while the calls went on. The transaction that stores what
    was recovered moves it first: not recovered again, and in events before the later
    message."""
    monkeypatch.setattr(ingest, "MOVE_EVERY", 3600.0)
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        first, second = await two_missed(w)
        real = CatchUp._move_staged
        checks: list[int] = []

        async def move_staged(self: CatchUp) -> None:
            await real(self)  # nothing staged yet
            checks.append(await count(rt, "SELECT count(*) FROM staged_events"))
            await stage_behind_load(w, rt, first)  # during the conversation's calls

        monkeypatch.setattr(CatchUp, "_move_staged", move_staged)
        with writer_held(rt):
            reports = await CatchUp.for_runtime(rt).run_now()
        assert checks == [0]
        await moved_before_recovered(rt, reports, first, second)


async def test_the_cli_catch_up_moves_staged_events_itself_when_no_daemon_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: with more staged than one transaction moves and no daemon moving
    them, `instaset catch-up` waited for nothing. It now moves them itself, a chunk a try."""
    slow_moves(monkeypatch, 2)  # 5 staged: three tries
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        first, second = await two_missed(w)
        with writer_held(rt):  # this daemon's writer moves nothing meanwhile
            await stage_behind_load(w, rt, first)
            reports = await run_catch_up(w.config, tokens=StaticTokens({ACCT: w.sandbox.token}),
                                         graph_url=w.sandbox.base_url, clock=w.clock)
        await moved_before_recovered(rt, reports, first, second)


async def test_a_walk_that_waited_for_ingest_goes_on_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: a walk that restarted from the newest conversation after each wait
    counted the conversations it had done twice (the creator was told of 4 messages that
    could not be read back, not 2), and under bursts never finished. Load comes after the
    first conversation: the walk waits, then goes on at the second."""
    slow_moves(monkeypatch, 2)  # 5 staged: three tries
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        await w.sandbox.user_sends_dm(BEA, "bea", deliver=False)
        w.clock.advance(1)
        for i in range(22):  # the 20 newest are detailed by Meta: 2 unavailable
            await w.sandbox.user_sends_dm(ANA, f"ana {i}", deliver=False)
            w.clock.advance(1)

        async def then(walked: list[str]) -> None:
            if len(walked) == 1:  # a burst of load right after the first conversation
                await burst(rt, 5)

        walked = watch_walks(monkeypatch, w, then)
        with writer_held(rt):
            reports = await CatchUp.for_runtime(rt).run_now()
        assert [(r.recovered, r.unavailable, r.error) for r in reports] == [(21, 2, None)]
        assert len(walked) == 2 and walked[0] != walked[1]  # the first was not walked again
        run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
        assert run is not None and (run["conversations"], run["unavailable"]) == (2, 2)


async def test_a_conversation_that_moved_above_a_resumed_walk_is_walked_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Left by session 12: a walk resumed at its position (here after a wait for ingest)
    never saw a conversation that a new message moved above it, so what that contact had
    sent while the daemon was down was never recovered. Cai's missed DM is the oldest; as
    the walk waits after Ana's conversation, Cai writes again and Cai's conversation moves
    to the top. The walk goes on (Bea), then a last pass from the top walks Cai's."""
    slow_moves(monkeypatch, 2)  # 5 staged: three tries
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        missed = []
        for who in (CAI, BEA, ANA):  # newest first: Ana, Bea, Cai
            missed.append(await w.sandbox.user_sends_dm(who, f"missed {who}", deliver=False))
            w.clock.advance(1)

        async def then(walked: list[str]) -> None:
            if len(walked) == 1:  # right after Ana's conversation
                w.clock.advance(5)
                missed.append(await w.sandbox.user_sends_dm(CAI, "again", deliver=False))
                await burst(rt, 5)

        listed = watch_walks(monkeypatch, w, then)
        with writer_held(rt):
            reports = await CatchUp.for_runtime(rt).run_now()
        assert [(r.recovered, r.error) for r in reports] == [(4, None)]
        got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
        assert got == {mid_of(p) for p in missed}
        assert len(listed) == 3 and len(set(listed)) == 3  # each walked once
        run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
        assert run is not None and run["conversations"] == 3
        assert await count(rt, "SELECT count(*) FROM catchup_walked") == 0  # finished


async def test_a_pass_from_the_top_allows_for_a_clock_ahead_of_metas(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: the pass from the top stopped 60 s before it began, by this host's
    clock, while a gap allows 120 s of skew (the overlap). With the clock 100 s ahead of
    Meta's, Cai's conversation, moved above the walk, was below the pass's floor: Cai's DM
    from the downtime was never recovered, and the run ended as a success."""
    slow_moves(monkeypatch, 2)  # 5 staged: three tries
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        missed = [mid_of(await w.sandbox.user_sends_dm(c, f"missed {c}", deliver=False))
                  for c in (CAI, BEA, ANA)]

        async def then(walked: list[str]) -> None:
            if len(walked) == 1:  # Cai moves above the walk, which then waits for ingest
                w.clock.advance(5)
                await w.sandbox.user_sends_dm(CAI, "again", deliver=False)
                await burst(rt, 5)

        watch_walks(monkeypatch, w, then)
        cli = CatchUp.for_runtime(rt)
        cli.clock = lambda: w.clock() + 100.0  # this host's clock, ahead of Meta's
        with writer_held(rt):
            reports = await cli.run_now()
        assert [r.error for r in reports] == [None]
        got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
        assert set(missed) <= got


async def test_the_cli_waits_for_ingest_anew_after_each_stretch_of_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: `instaset catch-up`'s patience with ingest load ran from the first
    wait of the whole walk: a short load spike at the start, a walk longer than the
    patience, one more short spike, and the run failed ("ingest stayed under heavy load")."""
    slow_moves(monkeypatch, 2)  # 5 staged: three tries each
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        for i in range(10):
            await w.sandbox.user_sends_dm(str(1200000000000000 + i), "missed", deliver=False)
            w.clock.advance(1)
        elapsed = [0.0]  # the CLI's monotonic timer: a walk of 100 s a conversation

        async def then(walked: list[str]) -> None:
            elapsed[0] += 100.0
            if len(walked) == 8:
                await burst(rt, 5, "b")  # a second short spike, 800 s after the first

        watch_walks(monkeypatch, w, then)
        cli = CatchUp.for_runtime(rt)
        cli.timer = lambda: elapsed[0]
        with writer_held(rt):
            await burst(rt, 5, "a")  # a short spike at the start
            reports = await cli.run_now()
        assert [(r.recovered, r.error) for r in reports] == [(10, None)]


async def test_the_cli_gives_up_on_one_conversation_even_while_others_move_above_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: the patience restarted whenever the waiting position changed, and a
    message from a contact below the waiting conversation moves that contact to the top,
    shifting the waiting one down a place: under continuous load, the CLI waited at one
    conversation for 1,350 s instead of 120. Only a conversation walked restarts it now."""
    slow_moves(monkeypatch, 0, poll=0.001)  # staging outpaces moves: never calm
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        old = [str(1300000000000000 + i) for i in range(12)]
        for c in old:  # conversations from before the gap, below the missed ones
            await w.sandbox.user_sends_dm(c, "old")
            w.clock.advance(1)
        await settle(w, rt)
        w.clock.advance(10)
        for c in (ANA, BEA):  # Bea's is walked first; then the load: Ana's waits
            await w.sandbox.user_sends_dm(c, "missed", deliver=False)
            w.clock.advance(1)
        elapsed = [0.0]  # the CLI's timer: 50 s a wait
        real_touch = catchup.store.touch_run

        async def touch_run(db: Database, run_id: int, now: float) -> None:
            await real_touch(db, run_id, now)
            elapsed[0] += 50.0
            if old:  # an old contact writes: moves above Ana's conversation
                await w.sandbox.user_sends_dm(old.pop(), "hi again", deliver=False)
                w.clock.advance(1)

        async def then(walked: list[str]) -> None:
            if len(walked) == 1:
                await burst(rt, 5)  # continuous load from here on

        monkeypatch.setattr(catchup.store, "touch_run", touch_run)
        walked = watch_walks(monkeypatch, w, then)
        cli = CatchUp.for_runtime(rt)
        cli.timer = lambda: elapsed[0]
        with writer_held(rt):
            reports = await cli.run_now()
        assert len(walked) == 1  # Bea's; every wait was at Ana's
        assert reports[0].error is not None and "heavy load" in reports[0].error
        assert elapsed[0] <= catchup.STAGED_PATIENCE + 50.0


async def test_a_bounded_part_walk_ends_with_a_pass_from_the_top(tmp_path: Path) -> None:
    """The daemon's walk in parts of 3 calls: between two parts, Cai (not walked yet)
    writes again and moves above the walk. The last part, from the top, walks Cai's
    conversation and recovers the DM Cai sent while the daemon was stopped."""
    async with world(tmp_path, workflows=()) as w:
        async with daemon(w) as rt:  # connected and checked, then stopped
            await settle(w, rt)
        w.clock.advance(600)
        missed = []
        for who in (CAI, BEA, ANA):
            missed.append(await w.sandbox.user_sends_dm(who, f"missed {who}", deliver=False))
            w.clock.advance(1)
        async with daemon(w) as rt:
            small = CatchUp.for_runtime(rt, CatchUpSettings(max_calls_per_job=3,
                                                            calls_per_second=50))
            parts: list[dict[str, Any]] = []

            async def backfill_job(job: jobstore.Job) -> None:
                await small.backfill_job(job)
                parts.append(dict(job.payload))
                done = await count(rt, "SELECT max(conversations) FROM catchup_runs")
                if done == 1 and len(missed) == 3:  # Ana's conversation is done, Cai's not
                    w.clock.advance(5)
                    missed.append(await w.sandbox.user_sends_dm(CAI, "again", deliver=False))

            rt.worker.handlers["catchup_backfill"] = backfill_job
            rt.worker.handlers["catchup"] = small.periodic_job
            await settle(w, rt)
            got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
            assert got == {mid_of(p) for p in missed}
            assert len(missed) == 4 and [p.get("top", 0) for p in parts][-1] >= 1
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None and run["finished_at"] is not None
            assert (run["recovered"], run["conversations"], run["error"]) == (4, 3, None)


DAN = "1100000000000004"
NAMES = {ANA: "ana", BEA: "bea", CAI: "cai", DAN: "dan"}


def who(conv: Mapping[str, Any]) -> str:
    return next(NAMES[p["id"]] for p in conv["participants"]["data"] if p["id"] in NAMES)


async def three_missed_while_stopped(w: World) -> dict[str, str]:
    """A daemon ran and stopped; 10 min later Cai, Bea and Ana (newest) each sent a DM that
    was not delivered. Their mids by contact."""
    async with daemon(w) as rt:
        await settle(w, rt)
    w.clock.advance(600)
    missed = {}
    for c in (CAI, BEA, ANA):  # newest first: Ana, Bea, Cai
        missed[c] = mid_of(await w.sandbox.user_sends_dm(c, f"missed {c}", deliver=False))
        w.clock.advance(1)
    return missed


async def test_a_pass_from_the_top_split_in_parts_is_followed_by_another(
    tmp_path: Path,
) -> None:
    """Found in review: the pass from the top ran in parts too (3 calls each), and Cai, whom
    the walk had missed, moved above it between two of its parts: Cai's DM from the downtime
    was never recovered, and the run ended as a success. A pass that listed conversations
    more than once is now followed by another, down to where it began."""
    async with world(tmp_path, workflows=()) as w:
        missed = await three_missed_while_stopped(w)
        async with daemon(w) as rt:
            small = CatchUp.for_runtime(rt, CatchUpSettings(max_calls_per_job=3,
                                                            calls_per_second=50))
            tops: list[int] = []

            async def backfill_job(job: jobstore.Job) -> None:
                run = await rt.db.fetchone("SELECT started_at FROM catchup_runs WHERE id = ?",
                                           (job.payload["run_id"],))
                await small.backfill_job(job)
                if run is None or run["started_at"] != job.payload["gen"]:
                    return  # a part of a generation restarted since: it did nothing
                tops.append(int(job.payload.get("top", 0)))
                w.clock.advance(5)
                if len(tops) == 1:  # the first part walked Ana: Cai writes, moves up
                    await w.sandbox.user_sends_dm(CAI, "hello?")
                elif len(tops) == 2:  # the walk is done: Dan, a new contact, writes
                    await w.sandbox.user_sends_dm(DAN, "hi")
                elif len(tops) == 3:  # the first top part walked Dan; Cai moves up again
                    await w.sandbox.user_sends_dm(CAI, "??")

            rt.worker.handlers["catchup_backfill"] = backfill_job
            rt.worker.handlers["catchup"] = small.periodic_job
            await settle(w, rt)
            got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
            assert set(missed.values()) <= got
            assert tops[:3] == [0, 0, 1] and 2 <= max(tops) <= TOP_PASSES
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None and run["finished_at"] is not None and run["error"] is None
            assert run["conversations"] == 4  # Ana, Bea, Dan, Cai: each once


def moves_as_walked(monkeypatch: pytest.MonkeyPatch, w: World, rt: Runtime
                    ) -> tuple[list[str], list[str]]:
    """The scene of the next two tests, on ``CatchUp._conversation``: Cai, whom the walk
    missed, moves above it after Ana's conversation; Dan writes after Bea's; five events
    are staged after Ana's and after Dan's; the first time the pass from the top waits
    for ingest at Cai's conversation, Cai writes again (moves above it once more). Returns
    the conversations walked and those waited at, in order."""
    walked: list[str] = []
    waited: list[str] = []
    real = CatchUp._conversation

    async def conversation(self: CatchUp, *args: Any, **kwargs: Any) -> bool:
        name, before = who(args[3]), len(conversations_calls(w.sandbox))
        try:
            done = await real(self, *args, **kwargs)
        except catchup._Staged:
            waited.append(name)
            if name == "cai" and "dan" in walked and waited.count("cai") == 1:
                w.clock.advance(5)  # Cai writes while the pass from the top waits
                await w.sandbox.user_sends_dm(CAI, "??", deliver=False)
            raise
        if len(conversations_calls(w.sandbox)) == before:
            return done  # walked before: skipped
        walked.append(name)
        w.clock.advance(5)
        if name == "ana":
            await w.sandbox.user_sends_dm(CAI, "hello?", deliver=False)  # Cai moves up
            await burst(rt, 5, "a")
        elif name == "bea":
            await w.sandbox.user_sends_dm(DAN, "hi", deliver=False)
        elif name == "dan":
            await burst(rt, 5, "d")
        return done

    monkeypatch.setattr(CatchUp, "_conversation", conversation)
    return walked, waited


async def test_the_cli_pass_from_the_top_that_waited_for_ingest_is_followed_by_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: in `instaset catch-up`, the pass from the top waited for ingest at
    Cai's conversation, and Cai moved above it meanwhile: the pass went on below Cai."""
    slow_moves(monkeypatch, 2)  # 5 staged: three tries
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        missed = {}
        for c in (CAI, BEA, ANA):
            missed[c] = mid_of(await w.sandbox.user_sends_dm(c, f"missed {c}", deliver=False))
            w.clock.advance(1)
        w.clock.advance(5)
        walked, waited = moves_as_walked(monkeypatch, w, rt)
        with writer_held(rt):
            reports = await CatchUp.for_runtime(rt).run_now()
        assert [r.error for r in reports] == [None]
        assert "cai" in waited and sorted(walked) == ["ana", "bea", "cai", "dan"]
        got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
        assert set(missed.values()) <= got


async def test_the_daemons_pass_from_the_top_that_waited_for_ingest_is_followed_by_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The daemon's side of the CLI's test above: its part that goes on after a wait for ingest
    belongs to a pass that listed conversations more than once, so another pass follows
    (a review's mutation, that part read as a fresh pass, went unnoticed)."""
    slow_moves(monkeypatch, 2)  # 5 staged: three parts
    async with world(tmp_path, workflows=()) as w:
        missed = await three_missed_while_stopped(w)
        async with daemon(w) as rt:  # its start check queues a run: the gap while stopped
            walked, waited = moves_as_walked(monkeypatch, w, rt)
            with writer_held(rt):
                for _ in range(30):
                    await settle(w, rt)
                    if await count(rt, "SELECT count(*) FROM catchup_runs"
                                       " WHERE finished_at IS NULL") == 0:
                        break
                    w.clock.advance(catchup.STAGED_RETRY)  # the next part is due
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None and run["finished_at"] is not None and run["error"] is None
            assert "cai" in waited and sorted(walked) == ["ana", "bea", "cai", "dan"]
            got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
            assert set(missed.values()) <= got


async def test_the_daemons_pass_from_the_top_retried_after_progress_is_followed_by_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    """A part that failed on Meta's 5xx after some progress queues the rest as a fresh part
    of the same pass, which then lists conversations again: when that pass is one from the
    top, another follows (a review's mutation, that part read as a fresh pass, went
    unnoticed). Cai, whom the walk missed, moves above the pass from the top while its
    failed part waits."""
    async with world(tmp_path, workflows=()) as w:
        missed = await three_missed_while_stopped(w)
        async with daemon(w) as rt:  # its start check queues a run: the gap while stopped
            walked: list[str] = []
            real = CatchUp._conversation
            fail_next = Fault("status", path_contains="fields=messages", status=503, times=1)

            async def conversation(self: CatchUp, *args: Any, **kwargs: Any) -> bool:
                name, before = who(args[3]), len(conversations_calls(w.sandbox))
                done = await real(self, *args, **kwargs)
                if len(conversations_calls(w.sandbox)) == before:
                    return done  # walked before: skipped
                walked.append(name)
                w.clock.advance(5)
                if name == "ana":  # Cai moves up; the next conversation's call fails
                    await w.sandbox.user_sends_dm(CAI, "hello?", deliver=False)
                    w.sandbox.inject(fail_next)
                elif name == "bea":
                    await w.sandbox.user_sends_dm(DAN, "hi", deliver=False)
                elif name == "dan":  # in the pass from the top: the same once more
                    await w.sandbox.user_sends_dm(CAI, "??", deliver=False)
                    w.sandbox.inject(fail_next)
                return done

            monkeypatch.setattr(CatchUp, "_conversation", conversation)
            caplog.set_level(logging.INFO, logger="instaset.catchup")
            for _ in range(30):
                await settle(w, rt)
                if await count(rt, "SELECT count(*) FROM catchup_runs"
                                   " WHERE finished_at IS NULL") == 0:
                    break
                w.clock.advance(5)  # the rest's backoff (2 s, jittered)
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None and run["finished_at"] is not None and run["error"] is None
            assert sorted(walked) == ["ana", "bea", "cai", "dan"]
            rests = [r for r in caplog.records if "after some progress" in r.getMessage()]
            assert len(rests) == 2  # both failures came after progress: the path under test
            got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
            assert set(missed.values()) <= got


async def test_a_walk_over_two_pages_sees_a_conversation_that_moved_to_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One part, no wait: the walk pages (25 conversations a page) and Cai, on the second
    page, writes while the walk is on the first. Cai's conversation is now on the page
    already listed; the pass from the top that follows a paged walk walks it."""
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        missed = mid_of(await w.sandbox.user_sends_dm(CAI, "missed", deliver=False))
        w.clock.advance(1)
        others = [str(1200000000000000 + i) for i in range(25)]
        for igsid in others:  # above Cai: Cai is 26th, on the second page
            await w.sandbox.user_sends_dm(igsid, "hello", deliver=False)
            w.clock.advance(1)
        real = CatchUp._conversation
        moved: list[bool] = []

        async def conversation(self: CatchUp, *args: Any, **kwargs: Any) -> bool:
            done = await real(self, *args, **kwargs)
            if not moved:
                moved.append(True)
                w.clock.advance(5)
                await w.sandbox.user_sends_dm(CAI, "again", deliver=False)
            return done

        monkeypatch.setattr(CatchUp, "_conversation", conversation)
        reports = await CatchUp.for_runtime(rt).run_now()
        assert [(r.recovered, r.error) for r in reports] == [(27, None)]
        got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
        assert missed in got


async def test_each_pass_from_the_top_goes_down_only_to_when_the_previous_one_began(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The walk pages (26 conversations missed), and 30 other contacts write while it runs;
    then the clock moves on 5 min. The first pass from the top goes down to when the walk
    began: it lists the 30 (two pages), so another follows. That one goes down only to when
    the first pass began: one page, nothing below, no third pass. (A review's mutation, every
    pass down to when the walk began, listed the 30 again in each pass: 4 passes.)"""
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        for i in range(26):  # two pages of conversations missed
            await w.sandbox.user_sends_dm(str(1200000000000000 + i), "missed", deliver=False)
            w.clock.advance(1)
        real_conversation, real_backfill = CatchUp._conversation, CatchUp.backfill
        wrote: list[bool] = []
        passes: list[tuple[float | None, int]] = []  # (floor, list calls) of each backfill

        async def conversation(self: CatchUp, *args: Any, **kwargs: Any) -> bool:
            done = await real_conversation(self, *args, **kwargs)
            if not wrote:  # while the walk runs: 30 others write (delivered), 5 min pass
                wrote.append(True)
                for i in range(30):
                    await w.sandbox.user_sends_dm(str(1300000000000000 + i), "hi")
                    w.clock.advance(1)
                await asyncio.wait_for(w.sandbox.drain(), timeout=10)
                w.clock.advance(300)
            return done

        async def backfill(self: CatchUp, *args: Any, **kwargs: Any) -> object:
            before = len(list_calls(w.sandbox))
            try:
                return await real_backfill(self, *args, **kwargs)
            finally:
                passes.append((kwargs.get("floor"), len(list_calls(w.sandbox)) - before))

        monkeypatch.setattr(CatchUp, "_conversation", conversation)
        monkeypatch.setattr(CatchUp, "backfill", backfill)
        start = w.clock()
        reports = await CatchUp.for_runtime(rt).run_now()
        assert [(r.recovered, r.error) for r in reports] == [(26, None)]
        # The walk, a pass from the top that paged (the 30 and more), a last one of one page.
        assert len(passes) == 3 and passes[1][1] >= 2 and passes[2][1] == 1
        (walk_floor, _), (first_floor, _), (second_floor, _) = passes
        assert walk_floor is None and first_floor is not None and second_floor is not None
        assert first_floor < start + 30 < second_floor  # down to when each pass before began


async def test_a_run_restarted_in_place_counts_each_conversation_once(tmp_path: Path) -> None:
    """Found in review: a run restarted in place (here by `instaset catch-up` while the
    daemon's run was under way) walked every conversation again and added to its counters:
    the creator was told of 4 messages that could not be read back, not 2."""
    async with world(tmp_path, workflows=()) as w:
        async with daemon(w) as rt:
            await settle(w, rt)
        w.clock.advance(600)
        await w.sandbox.user_sends_dm(ANA, "ana", deliver=False)
        w.clock.advance(1)
        for i in range(22):  # Meta details the 20 newest: 2 unavailable
            await w.sandbox.user_sends_dm(BEA, f"bea {i}", deliver=False)
            w.clock.advance(1)
        async with daemon(w) as rt:
            small = CatchUp.for_runtime(rt, CatchUpSettings(max_calls_per_job=23,
                                                            calls_per_second=50))
            cli: list[catchup.RunReport] = []

            async def backfill_job(job: jobstore.Job) -> None:
                await small.backfill_job(job)
                run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC")
                if run is not None and run["conversations"] == 1 and not cli:
                    cli.extend(await CatchUp.for_runtime(rt).run_now())  # Bea's is done

            rt.worker.handlers["catchup_backfill"] = backfill_job
            rt.worker.handlers["catchup"] = small.periodic_job
            await settle(w, rt)
            assert [(r.recovered, r.unavailable, r.error) for r in cli] == [(21, 2, None)]
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None
            assert (run["recovered"], run["conversations"], run["unavailable"]) == (21, 2, 2)


async def test_the_daemon_leaves_alone_a_run_that_the_cli_is_walking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: `instaset catch-up` walking longer than the check interval had its
    run (no job: the CLI walks inline) resumed by the daemon's periodic check as chainless.
    Both walked it, the counters doubled, and the CLI printed "no connected account"."""
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        for i in range(22):  # 2 unavailable
            await w.sandbox.user_sends_dm(BEA, f"bea {i}", deliver=False)
            w.clock.advance(1)
        await w.sandbox.user_sends_dm(ANA, "ana", deliver=False)
        w.clock.advance(1)
        daemon_cu = daemon_checked(rt)
        real = CatchUp._conversation
        checks: list[catchup.RunReport] = []

        async def conversation(self: CatchUp, *args: Any, **kwargs: Any) -> bool:
            done = await real(self, *args, **kwargs)
            if not checks:  # one conversation walked; the daemon's periodic check comes
                w.clock.advance(300)
                checks.extend(await daemon_cu.check_all())
                await settle(w, rt)
            return done

        monkeypatch.setattr(CatchUp, "_conversation", conversation)
        reports = await CatchUp.for_runtime(rt).run_now()
        assert [r.run_id for r in checks] == [None]  # it started nothing
        run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
        assert run is not None and [(r.run_id, r.error) for r in reports] == [(run["id"], None)]
        assert (run["conversations"], run["unavailable"], run["recovered"]) == (2, 2, 21)


async def test_a_cli_walk_stops_when_the_daemon_restarts_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: the daemon started (a new gap) while `instaset catch-up` walked; the
    daemon restarted the run and walked it to the end, and the CLI, fenced, walked on: 8
    more conversations' calls beside the daemon's, its counts added to a finished run."""
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        for c in (CAI, BEA, ANA, *(str(1200000000000000 + i) for i in range(6))):
            await w.sandbox.user_sends_dm(c, f"missed {c}", deliver=False)
            w.clock.advance(1)
        cli, started = CatchUp.for_runtime(rt), CatchUp.for_runtime(rt)
        real = CatchUp._conversation
        after_restart: list[int] = []

        async def conversation(self: CatchUp, *args: Any, **kwargs: Any) -> bool:
            before = len(conversations_calls(w.sandbox))
            try:
                return await real(self, *args, **kwargs)
            finally:
                if self is cli and after_restart:
                    after_restart.append(len(conversations_calls(w.sandbox)) - before)
                elif self is cli:  # one conversation walked: a daemon starts
                    after_restart.append(0)
                    w.clock.advance(5)
                    assert [r.reason for r in await started.check_all()] == ["start"]
                    await settle(w, rt)

        monkeypatch.setattr(CatchUp, "_conversation", conversation)
        reports = await cli.run_now()
        assert sum(after_restart) == 0  # not one call after the restart
        assert len(reports) == 1 and "took catch-up run" in (reports[0].error or "")
        run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
        assert run is not None and run["finished_at"] is not None and run["error"] is None
        assert (run["recovered"], run["conversations"]) == (9, 9)
        assert await count(rt, "SELECT count(*) FROM catchup_walked") == 0


async def test_a_cli_run_waiting_for_ingest_at_its_start_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: a new `instaset catch-up` run had no progress recorded while it
    waited for ingest before its first conversation, so the daemon's periodic check resumed
    it as chainless. A run's start, and each wait, now count as progress."""
    slow_moves(monkeypatch, 2)  # 5 staged: three tries
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        await w.sandbox.user_sends_dm(BEA, "missed", deliver=False)
        w.clock.advance(1)
        checks = daemon_checks_as_the_cli_waits(monkeypatch, w, rt, times=1, every=300)
        with writer_held(rt):
            await burst(rt, 5)
            reports = await CatchUp.for_runtime(rt).run_now()
        assert [r.run_id for r in checks] == [None]
        assert [(r.recovered, r.error) for r in reports] == [(1, None)]


async def test_progress_made_during_the_checks_graph_call_counts_as_walking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: the periodic check read the clock before its Graph call, so progress
    `instaset catch-up` recorded during that call looked like the future (a clock stepped
    back), and the daemon took the run over."""
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        daemon_cu = daemon_checked(rt)
        async with rt.db.tx() as conn:  # the CLI's run, walking
            run_id = await contacts_store.start_run(conn, ACCT, "manual", w.clock() - 600,
                                                    w.clock())
        w.clock.advance(300)
        real = rt.graph.subscribed_fields

        async def subscribed_fields(*args: Any, **kwargs: Any) -> Any:
            got = await real(*args, **kwargs)
            w.clock.advance(0.5)  # the round trip; the CLI walks a conversation meanwhile
            async with rt.db.tx() as conn:
                await contacts_store.add_progress(conn, run_id, now=w.clock(), calls=2,
                                                  conversations=1)
            return got

        monkeypatch.setattr(rt.graph, "subscribed_fields", subscribed_fields)
        assert [r.run_id for r in await daemon_cu.check_all()] == [None]


async def test_a_cli_run_that_keeps_waiting_for_ingest_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each wait of `instaset catch-up` for ingest marks its run as being walked: waits that
    add up to more than WALKING_SECONDS, a daemon check after each, and the run stays the
    CLI's. So does an old run the CLI restarted in place (its progress long past)."""
    slow_moves(monkeypatch, 1)  # 4 staged: five tries
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        async with rt.db.tx() as conn:  # a daemon run left chainless an hour ago
            old = await contacts_store.start_run(conn, ACCT, "quiet", w.clock() - 7200,
                                                 w.clock() - 3600)
        await w.sandbox.user_sends_dm(BEA, "missed", deliver=False)
        w.clock.advance(1)
        checks = daemon_checks_as_the_cli_waits(monkeypatch, w, rt, times=3, every=250)
        with writer_held(rt):
            await burst(rt, 4)
            reports = await CatchUp.for_runtime(rt).run_now(since=w.clock() - 86400)
        assert [r.run_id for r in checks] == [None, None, None]
        assert [(r.run_id, r.recovered, r.error) for r in reports] == [(old, 1, None)]


async def test_a_daemon_part_whose_run_the_cli_restarted_stops_and_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`instaset catch-up` restarts the daemon's run in place while a daemon part is between
    a conversation's calls and its transaction: the part stores nothing (the CLI's walk
    does), and its job ends done, not retried."""
    async with world(tmp_path, workflows=()) as w:
        async with daemon(w) as rt:
            await settle(w, rt)
        w.clock.advance(600)
        for c in (CAI, BEA, ANA, *(str(1200000000000000 + i) for i in range(4))):
            await w.sandbox.user_sends_dm(c, f"missed {c}", deliver=False)
            w.clock.advance(1)
        w.clock.advance(60)
        async with daemon(w) as rt:
            cli = CatchUp.for_runtime(rt)
            real = CatchUp._call
            reports: list[catchup.RunReport] = []

            async def call(self: CatchUp, acct: str, batch: Any, make: Any) -> Any:
                name = getattr(getattr(make, "func", None), "__name__", "")
                if self is not cli and name == "message" and not reports:
                    reports.extend(await cli.run_now())  # the daemon's part is mid-conversation
                return await real(self, acct, batch, make)

            monkeypatch.setattr(CatchUp, "_call", call)
            await settle(w, rt)
            assert [(r.recovered, r.error) for r in reports] == [(7, None)]
            jobs = await rt.db.fetchall("SELECT state, attempts FROM jobs"
                                        " WHERE kind = 'catchup_backfill'")
            assert {(j["state"], j["attempts"]) for j in jobs} == {("done", 1)}
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None and (run["conversations"], run["recovered"]) == (7, 7)
            assert await count(rt, "SELECT count(*) FROM recovered_events") == 7
            assert await count(rt, "SELECT count(*) FROM catchup_walked") == 0


@pytest.mark.parametrize("step_back", [0.0, 3600.0])
async def test_a_run_without_a_job_or_progress_is_resumed(tmp_path: Path,
                                                          step_back: float) -> None:
    """A run whose chain is gone (no job) and that made no progress for WALKING_SECONDS is
    resumed by the periodic check, also after the wall clock stepped back (found in review:
    then it waited for the size of the step)."""
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        cu = daemon_checked(rt)
        now = w.clock()
        async with rt.db.tx() as conn:
            run_id = await contacts_store.start_run(conn, ACCT, "quiet", now - 7200, now - 60)
            await contacts_store.add_progress(conn, run_id, now=now + step_back)
        waited = None
        for i in range(1, 6):
            w.clock.advance(300)
            if any(r.run_id == run_id for r in await cu.check_all()):
                waited = 300 * i
                break
        assert waited == 600 if not step_back else waited == 300


async def test_a_restarted_run_walks_again_what_its_earlier_generation_walked(
    tmp_path: Path,
) -> None:
    """A run restarted in place covers a wider gap (the union of both): a conversation its
    earlier generation walked is walked again, so its older missed messages are found."""
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        old = await w.sandbox.user_sends_dm(BEA, "long ago", deliver=False)
        w.clock.advance(3600)
        recent = await w.sandbox.user_sends_dm(BEA, "lately", deliver=False)
        w.clock.advance(1)
        cu = CatchUp.for_runtime(rt)
        async with rt.db.tx() as conn:  # a run over the last 10 min, Bea's walked
            run_id = await contacts_store.start_run(conn, ACCT, "quiet", w.clock() - 600,
                                                    w.clock())
        run = await contacts_store.get_run(rt.db, run_id)
        assert run is not None
        await cu._walk_to_the_end(run_id, ACCT, float(run["since"]), float(run["started_at"]))
        got = [r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")]
        assert got == [mid_of(recent)]
        w.clock.advance(5)
        async with rt.db.tx() as conn:  # restarted in place for a gap back to before "long ago"
            await contacts_store.restart_run(conn, run_id, reason="manual",
                                             since=w.clock() - 7200, now=w.clock())
        run = await contacts_store.get_run(rt.db, run_id)
        assert run is not None
        await cu._walk_to_the_end(run_id, ACCT, float(run["since"]), float(run["started_at"]))
        got = [r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")]
        assert sorted(got) == sorted([mid_of(recent), mid_of(old)])
        run = await contacts_store.get_run(rt.db, run_id)
        assert run is not None and run["conversations"] == 1  # walked twice, counted once


@pytest.mark.parametrize(("payload", "expected"), [
    # A walk's first part (no pass keys), and a later part of a walk queued before passes
    # existed: it has listed before.
    ({"part": 0}, (0, None, 100.0, False)),
    ({"part": 3}, (0, None, 100.0, True)),
    # b0ce0c2's last pass, {"top": true}: the first pass from the top, down to the run's start.
    ({"part": 4, "top": True}, (1, 100.0, 100.0, True)),
    ({"part": 5, "top": 2, "floor": 130.0, "began": 150.0, "relisted": False},
     (2, 130.0, 150.0, False)),
])
def test_a_parts_pass_is_read_from_its_payload(payload: dict[str, Any],
                                               expected: tuple[Any, ...]) -> None:
    p = _Pass.of(payload, 100.0)
    assert (p.top, p.floor, p.began, p.relisted) == expected
    assert _Pass.of({"part": 9, **p.going_on().payload()}, 100.0) == p.going_on()
    after = p.after(False, 200.0)
    assert after == (_Pass(p.top + 1, p.began, 200.0) if p.relisted else None)


async def test_when_staging_never_ends_the_cli_catch_up_fails_and_covers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: `instaset catch-up` gave up on a conversation while ingest kept
    events staged, skipped the rest, and recorded the run as a success (the account marked
    covered): the missed message was never recovered."""
    slow_moves(monkeypatch, 0, poll=0.05)  # stands for staging faster than moves
    monkeypatch.setattr(catchup, "STAGED_PATIENCE", 0.2)
    async with world(tmp_path, workflows=()) as w, daemon(w) as rt:
        await settle(w, rt)
        first, second = await two_missed(w)
        with writer_held(rt):
            await stage_behind_load(w, rt, first)
            reports = await run_catch_up(w.config, tokens=StaticTokens({ACCT: w.sandbox.token}),
                                         graph_url=w.sandbox.base_url, clock=w.clock)
            assert len(reports) == 1 and reports[0].recovered == 0
            assert reports[0].error is not None and "heavy load" in reports[0].error
            assert await count(rt, "SELECT count(*) FROM staged_events") == 5  # untouched
        await rt.writer.settle()
        reports = await CatchUp.for_runtime(rt).run_now()  # the load is over: it recovers
        assert [(r.recovered, r.error) for r in reports] == [(1, None)]
        assert await count(rt, "SELECT count(*) FROM events WHERE dedupe_key = ?",
                           (f"msg:{mid_of(second)}",)) == 1


async def test_under_heavy_load_the_daemons_catch_up_continues_a_few_seconds_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Found in review: each backfill part slept 5 s in a worker slot under load, then
    repeated its Graph calls. Now a part that meets heavy load (more staged than it moves
    in one transaction) ends at once, before any call for that conversation, and queues the
    next STAGED_RETRY s later, from the newest conversation."""
    monkeypatch.setattr(ingest, "MOVE_EVERY", 3600.0)
    monkeypatch.setattr(catchup, "STAGED_INLINE", 2)
    async with world(tmp_path, workflows=()) as w:
        async with daemon(w) as rt:
            await settle(w, rt)
        w.clock.advance(600)
        missed = await w.sandbox.user_sends_dm(BEA, "sent while stopped", deliver=False)
        w.clock.advance(60)
        async with daemon(w) as rt:  # its start check queues a run: the gap while stopped
            with writer_held(rt):
                await burst(rt, 4)
                before = len(conversations_calls(w.sandbox))
                for _ in range(4):
                    await rt.worker.run_burst(max_rounds=1)
                parts = await rt.db.fetchall(
                    "SELECT run_at, state FROM jobs WHERE kind = 'catchup_backfill'"
                    " ORDER BY id")
                # One list call (it found the first conversation), no call for it.
                assert len(conversations_calls(w.sandbox)) - before == 1
                assert [p["state"] for p in parts][-1] == "ready"
                assert parts[-1]["run_at"] >= w.clock() + catchup.STAGED_RETRY - 1
            await rt.writer.settle()
            w.clock.advance(catchup.STAGED_RETRY)
            await settle(w, rt)
            assert await count(rt, "SELECT count(*) FROM events WHERE dedupe_key = ?",
                               (f"msg:{mid_of(missed)}",)) == 1
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None and run["recovered"] == 1 and run["error"] is None


async def test_a_recovered_message_outside_the_window_gets_no_reply(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        async with daemon(w) as rt:
            await settle(w, rt)
        old = await w.sandbox.user_sends_dm(CAI, "guide?", deliver=False)
        w.clock.advance(23 * HOUR)
        fresh = await w.sandbox.user_sends_dm(BEA, "guide?", deliver=False)
        w.clock.advance(2 * HOUR)  # Cai wrote 25 h ago, Bea 2 h ago
        async with daemon(w) as rt:
            await settle(w, rt)
            marked = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
            assert marked == {mid_of(old), mid_of(fresh)}
            assert [m["text"] for m in await history.thread(rt.db, ACCT, CAI)] == ["guide?"]
            assert sends_to(w, CAI) == []
            assert made(sends_to(w, BEA)) == [True]


# -- the subscription ------------------------------------------------------------------------
async def test_a_dropped_subscription_is_restored_and_what_it_missed_recovered(
    tmp_path: Path,
) -> None:
    async with world(tmp_path) as w, daemon(w) as rt:
        await settle(w, rt)
        w.sandbox.drop_subscription()
        # Meta stopped sending webhooks: the message stays on Instagram only.
        missed = await w.sandbox.user_sends_dm(ANA, "the guide please", deliver=False)
        before = len(w.sandbox.transcript)
        await next_check(w, rt)
        assert w.sandbox.subscribed == FIELDS
        posts = [r for r in w.sandbox.transcript[before:]
                 if r.method == "POST" and r.route.endswith("/subscribed_apps")]
        assert [r.query["subscribed_fields"] for r in posts] == [",".join(FIELDS)]
        run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
        assert run is not None and "resubscribed" in run["reason"]
        assert [r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")] == [
            mid_of(missed)]
        assert made(sends_to(w, ANA)) == [True]
        notes = [r["text"] for r in await rt.db.fetchall(
            "SELECT text FROM notifications WHERE kind = 'catchup' ORDER BY id")]
        assert any("subscribed again" in n for n in notes)
        # Once restored, the next check leaves it alone.
        await next_check(w, rt)
        assert len([r for r in w.sandbox.transcript[before:] if r.method == "POST"
                    and r.route.endswith("/subscribed_apps")]) == 1


# -- the Conversations API budget ---------------------------------------------------------------
def conversations_calls(sandbox: Sandbox) -> list[Recorded]:
    """Requests to the Conversations API (list, a conversation's messages, one message)."""
    return [r for r in sandbox.transcript if r.method == "GET" and (
        r.route.endswith("/conversations") or r.query.get("fields") == "messages"
        or r.query.get("fields", "").startswith("id,created_time"))]


async def test_the_conversations_api_budget_is_never_exceeded(tmp_path: Path) -> None:
    async with world(tmp_path, per_second=2.0, workflows=()) as w:
        async with daemon(w) as rt:  # connected and checked, then stopped
            await settle(w, rt)
        first = len(conversations_calls(w.sandbox))
        w.clock.advance(600)
        missed = [await w.sandbox.user_sends_dm(who, f"hello from {who}", deliver=False)
                  for who in (ANA, BEA, CAI)]
        async with daemon(w) as rt:
            await settle(w, rt)
            got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
            assert got == {mid_of(p) for p in missed}
        calls = conversations_calls(w.sandbox)[first:]
        assert len(calls) == 7  # 1 list + 3 conversations + 3 messages
        # At most 2 calls in any 1 s, by the sandbox's clock: any 3 span at least 1 s.
        times = [r.at for r in calls]
        assert all(times[i + 2] - times[i] >= 1.0 for i in range(len(times) - 2)), times


async def test_a_long_backfill_is_split_into_bounded_jobs(tmp_path: Path) -> None:
    async with world(tmp_path, workflows=()) as w:
        async with daemon(w) as rt:  # connected and checked, then stopped
            await settle(w, rt)
        w.clock.advance(600)
        for who in (ANA, BEA, CAI):
            await w.sandbox.user_sends_dm(who, "hello", deliver=False)
        async with daemon(w) as rt:
            small = CatchUp.for_runtime(rt, CatchUpSettings(max_calls_per_job=3,
                                                            calls_per_second=50))
            rt.worker.handlers["catchup_backfill"] = small.backfill_job
            rt.worker.handlers["catchup"] = small.periodic_job
            await settle(w, rt)
            assert await count(rt, "SELECT count(*) FROM recovered_events") == 3
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None and run["recovered"] == 3 and run["conversations"] == 3
            assert run["finished_at"] is not None
            parts = await rt.db.fetchall(
                "SELECT key FROM jobs WHERE kind = 'catchup_backfill' AND state = 'done'"
                " AND key LIKE ?", (f"catchup:{run['id']}:%",))
            assert len(parts) >= 3
            assert await count(rt, "SELECT count(*) FROM notifications WHERE kind = 'catchup'") == 1


async def test_only_the_20_newest_messages_of_a_conversation_come_back(tmp_path: Path) -> None:
    async with world(tmp_path, workflows=()) as w:
        async with daemon(w) as rt:
            await settle(w, rt)
        sent = []
        for i in range(22):
            sent.append(await w.sandbox.user_sends_dm(ANA, f"message {i}", deliver=False))
            w.clock.advance(1.0)
        async with daemon(w) as rt:
            await settle(w, rt)
            got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
            assert got == {mid_of(p) for p in sent[2:]}
            run = await rt.db.fetchone("SELECT * FROM catchup_runs ORDER BY id DESC LIMIT 1")
            assert run is not None and (run["recovered"], run["unavailable"]) == (20, 2)
            note = await rt.db.fetchone("SELECT text FROM notifications WHERE kind = 'catchup'")
            assert note is not None and "2 missed messages" in note["text"]


async def test_catch_up_by_hand_with_since(tmp_path: Path) -> None:
    async with world(tmp_path, workflows=()) as w:
        async with daemon(w) as rt:
            await settle(w, rt)
        await w.sandbox.user_sends_dm(ANA, "while you were away", deliver=False)
        assert w.sandbox.base_url is not None
        reports = await run_catch_up(w.config, since="1h", clock=w.clock,
                                     graph_url=w.sandbox.base_url,
                                     tokens=StaticTokens({ACCT: w.sandbox.token}))
        assert [(r.reason, r.recovered, r.error) for r in reports] == [("manual", 1, None)]
        # The daemon processes it when it runs.
        async with daemon(w) as rt:
            await settle(w, rt)
            assert [m["text"] for m in await history.thread(rt.db, ACCT, ANA)] == [
                "while you were away"]


# -- restarts, time budgets, failures (issue 8's soak findings) --------------------------------
def list_calls(sandbox: Sandbox) -> list[Recorded]:
    """Requests for a page of conversations: one per walk of the conversation list."""
    return [r for r in sandbox.transcript if r.method == "GET"
            and r.route.endswith("/conversations")]


async def test_two_quick_restarts_leave_one_run_covering_both_gaps(tmp_path: Path) -> None:
    async with world(tmp_path, workflows=()) as w:
        # Every check by hand (no start hook, no periodic job), to stop between them.
        async with daemon(w, start=False) as rt:
            await CatchUp.for_runtime(rt).check_all()
            await settle(w, rt)
            checked = await rt.db.fetchone("SELECT checked_at FROM catchup_accounts")
            assert checked is not None
            down_at = float(checked[0])
        w.clock.advance(600)
        first = await w.sandbox.user_sends_dm(ANA, "while stopped, 1", deliver=False)
        w.clock.advance(60)
        # Restart 1: the start check queues a run; killed before any batch of it ran.
        async with daemon(w, start=False) as rt:
            [one] = await CatchUp.for_runtime(rt).check_all()
            assert one.run_id is not None and one.since is not None
            assert one.since <= down_at
            gen = await rt.db.fetchone("SELECT started_at FROM catchup_runs WHERE id = ?",
                                       (one.run_id,))
            assert gen is not None
        w.clock.advance(600)
        second = await w.sandbox.user_sends_dm(BEA, "while stopped, 2", deliver=False)
        w.clock.advance(60)
        # Restart 2: the same run, restarted, covering both downtimes.
        async with daemon(w, start=False) as rt:
            [two] = await CatchUp.for_runtime(rt).check_all()
            assert two.run_id == one.run_id
            active = await rt.db.fetchall("SELECT * FROM catchup_runs WHERE finished_at IS NULL")
            assert [r["id"] for r in active] == [one.run_id]
            assert active[0]["since"] == one.since  # the union starts at the first gap
            assert active[0]["started_at"] > gen[0]  # a new generation: covers up to now
            old_job = await rt.db.fetchone(
                "SELECT key FROM jobs WHERE kind = 'catchup_backfill' AND state = 'ready'"
                " ORDER BY id LIMIT 1")
            assert old_job is not None
            walks = len(list_calls(w.sandbox))
            await settle(w, rt)
            got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events"
                                                          " WHERE run_id = ?", (one.run_id,))}
            assert got == {mid_of(first), mid_of(second)}
            run = await rt.db.fetchone("SELECT * FROM catchup_runs WHERE id = ?", (one.run_id,))
            assert run is not None and run["finished_at"] is not None and run["error"] is None
            assert run["recovered"] == 2
            # The first generation's batch found its run restarted and made no call.
            assert len(list_calls(w.sandbox)) == walks + 1
            state = await rt.db.fetchone("SELECT state FROM jobs WHERE key = ?",
                                         (old_job["key"],))
            assert state is not None and state[0] == "done"
            assert await count(rt, "SELECT count(*) FROM notifications WHERE kind = 'catchup'"
                               " AND text LIKE 'Recovered 2 messages%'") == 1


async def test_a_kill_9_mid_run_is_resumed_without_duplicates(tmp_path: Path) -> None:
    async with world(tmp_path) as w:
        async with daemon(w, start=False) as rt:
            await CatchUp.for_runtime(rt).check_all()
            await settle(w, rt)
        w.clock.advance(600)
        missed = []
        for who in (ANA, BEA, CAI):
            missed.append(await w.sandbox.user_sends_dm(who, "the guide?", deliver=False))
            w.clock.advance(1)
        async with daemon(w, start=False) as rt:
            small = CatchUp.for_runtime(rt, CatchUpSettings(max_calls_per_job=3,
                                                            calls_per_second=50))
            [report] = await small.check_all()
            # One batch runs (one conversation recovered), the next is taken by the worker
            # ... and the daemon dies: the job keeps its lease, nothing is processed.
            [part0] = [j for j in await jobstore.claim(rt.db, "w1", w.clock(), 120.0, 10)
                       if j.kind == "catchup_backfill"]
            await small.backfill_job(part0)
            await jobstore.complete(rt.db, part0, w.clock())
            [part1] = [j for j in await jobstore.claim(rt.db, "w1", w.clock(), 120.0, 10)
                       if j.kind == "catchup_backfill"]
            assert await count(rt, "SELECT count(*) FROM recovered_events") == 1
        w.clock.advance(30)
        async with daemon(w) as rt:
            await settle(w, rt)
            w.clock.advance(130)  # the dead worker's lease runs out
            await settle(w, rt)
            left = await rt.db.fetchone("SELECT state FROM jobs WHERE id = ?", (part1.id,))
            assert left is not None and left[0] == "done"
            runs = await rt.db.fetchall("SELECT * FROM catchup_runs WHERE id >= ?",
                                        (report.run_id,))
            assert [(r["id"], r["recovered"], r["error"]) for r in runs] == [
                (report.run_id, 3, None)]
            assert runs[0]["finished_at"] is not None
            assert sorted(r["mid"] for r in await rt.db.fetchall(
                "SELECT mid FROM recovered_events")) == sorted(mid_of(p) for p in missed)
            for p in missed:
                assert await count(rt, "SELECT count(*) FROM events WHERE dedupe_key = ?",
                                   (f"msg:{mid_of(p)}",)) == 1
            assert [made(sends_to(w, who)) for who in (ANA, BEA, CAI)] == [[True]] * 3
            assert await count(rt, "SELECT count(*) FROM notifications WHERE kind = 'catchup'"
                               " AND text LIKE 'Recovered%'") == 1


async def test_a_batch_ends_at_its_time_budget(tmp_path: Path) -> None:
    budget = 3.0
    async with world(tmp_path, frozen=True, workflows=()) as w:
        async with daemon(w, start=False) as rt:  # connected, checked once, then stopped
            await CatchUp.for_runtime(rt).check_all()
            await settle(w, rt)
        w.clock.advance(600)
        missed = []
        for i in range(5):
            missed.append(await w.sandbox.user_sends_dm(f"11000000000001{i:02d}", "hi",
                                                        deliver=False))
            w.clock.advance(1)
        async with daemon(w, start=False) as rt:

            async def wait(seconds: float) -> None:  # the limiter waits in fake time
                w.clock.advance(seconds)
                await asyncio.sleep(0)

            settings = CatchUpSettings(calls_per_second=2.0, batch_seconds=budget)
            cu = CatchUp(rt.db, rt.graph, rt.tokens, clock=w.clock, timer=w.clock,
                         settings=settings, wake=rt.wake.set,
                         limiter=CallLimiter(2.0, clock=w.clock, sleep=wait))
            rt.worker.handlers["catchup_backfill"] = cu.backfill_job
            [report] = await cu.check_all()
            await settle(w, rt)
            got = {r["mid"] for r in await rt.db.fetchall("SELECT mid FROM recovered_events")}
            assert got == {mid_of(p) for p in missed}
            parts = await rt.db.fetchall(
                "SELECT started_at, finished_at FROM jobs WHERE kind = 'catchup_backfill'"
                " AND key LIKE ? ORDER BY id", (f"catchup:{report.run_id}:%",))
        calls = [c for c in conversations_calls(w.sandbox) if c.at >= parts[0]["started_at"]]
        assert len(parts) >= 3
        assert len(calls) < settings.calls_per_job * len(parts) / 4  # time, not calls, bound
        for part in parts:
            assert part["finished_at"] - part["started_at"] <= budget
            made = [c for c in calls if part["started_at"] <= c.at <= part["finished_at"]]
            assert made and all(c.at - part["started_at"] <= budget for c in made)
        times = [c.at for c in calls]  # and the 2/s limit held, in the same fake time
        assert all(times[i + 2] - times[i] >= 1.0 for i in range(len(times) - 2)), times


async def test_a_sandbox_that_times_out_ends_the_run_failed_after_n_tries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    tries = 3
    async with world(tmp_path, workflows=()) as w, daemon(w, start=False) as rt, \
            aiohttp.ClientSession() as session:
        assert w.sandbox.base_url is not None
        slow = GraphClient(session, graph_url=w.sandbox.base_url, api_url=w.sandbox.base_url,
                           api_version=w.config.instagram.api_version, timeout=0.2)
        settings = CatchUpSettings(calls_per_second=50, max_tries=tries, retry_cap=10.0)
        cu = CatchUp(rt.db, slow, rt.tokens, clock=w.clock, settings=settings,
                     wake=rt.wake.set)
        rt.worker.handlers["catchup_backfill"] = cu.backfill_job
        w.sandbox.inject(Fault("delay", path_contains="/conversations", delay=30, times=100))
        [report] = await cu.check_all()
        assert report.run_id is not None
        with caplog.at_level(logging.WARNING, logger="instaset.catchup"):
            for _ in range(2 * tries):
                await settle(w, rt)
                run = await rt.db.fetchone("SELECT * FROM catchup_runs WHERE id = ?",
                                           (report.run_id,))
                assert run is not None
                if run["finished_at"] is not None:
                    break
                w.clock.advance(settings.retry_cap)  # the backoff is over
        assert run is not None and run["error"] is not None and "did not answer" in run["error"]
        assert f"gave up after {tries} tries" in run["error"]
        assert len(list_calls(w.sandbox)) == tries
        job = await rt.db.fetchone("SELECT state, attempts FROM jobs WHERE kind = "
                                   "'catchup_backfill'")
        assert job is not None and (job["state"], job["attempts"]) == ("done", tries)
        failed_lines = [r.getMessage() for r in caplog.records if "FAILED" in r.getMessage()]
        assert len(failed_lines) == 1 and f"run {report.run_id} " in failed_lines[0]
        note = await rt.db.fetchone("SELECT text FROM notifications WHERE kind = 'catchup'")
        assert note is not None and "failed" in note["text"] and "gave up" in note["text"]
        [check] = await doctor_checks(rt.db)
        assert check.status == "warn" and "gave up" in check.message and check.fix
        # No loop: within the cool-down a check starts nothing; after it, one retry run
        # that also covers what the failed run did not.
        w.clock.advance(600)
        [quiet] = await cu.check_all()
        assert quiet.run_id is None
        w.clock.advance(settings.failed_cool_down)
        [retry] = await cu.check_all()
        assert retry.run_id not in (None, report.run_id)
        assert retry.reason is not None and "retry" in retry.reason.split("+")
        assert retry.since is not None and report.since is not None
        assert retry.since <= report.since


async def test_the_call_limiter_never_waits_past_a_deadline() -> None:
    clock = Clock(1000.0, frozen=True)

    async def wait(seconds: float) -> None:
        clock.advance(seconds)

    limiter = CallLimiter(2.0, clock=clock, sleep=wait)
    assert await limiter.acquire("a") and await limiter.acquire("a")
    assert not await limiter.acquire("a", deadline=clock() + 1.0)  # next slot at +1.1
    assert clock() == 1000.0
    assert await limiter.acquire("b", deadline=clock())  # keys are independent
    assert await limiter.acquire("a", deadline=clock() + 1.1)
    assert clock() == pytest.approx(1001.1)


# -- pure parts ----------------------------------------------------------------------------------
S = CatchUpSettings()
NOW = 1_000_000.0


def gap(**kw: Any) -> Gap | None:
    args: dict[str, Any] = dict(now=NOW, created_at=NOW - 30 * 86400, last_event_at=NOW - 60,
                                first_in_process=False, resubscribed=False, settings=S,
                                marks=Marks(NOW - 200, NOW - 200, NOW - 3600))
    args.update(kw)
    return detect_gap(**args)


def test_gap_detection() -> None:
    assert gap() is None
    assert gap(first_in_process=True) == Gap("start", NOW - 200 - S.overlap)
    assert gap(marks=Marks(NOW - 5000, NOW - 5000)) == Gap("downtime", NOW - 5000 - S.overlap)
    assert gap(resubscribed=True) == Gap("resubscribed", NOW - 200 - S.overlap)
    quiet = gap(last_event_at=NOW - 7 * HOUR, marks=Marks(NOW - 200, NOW - 200, NOW - 8 * HOUR))
    assert quiet == Gap("quiet", NOW - 7 * HOUR - S.overlap)
    assert gap(marks=None, created_at=NOW - 3600) == Gap("first", NOW - 3600)
    # Never more than max_lookback, never before the account was connected.
    assert gap(marks=Marks(NOW - 30 * 86400)) == Gap("downtime", NOW - S.max_lookback)
    both = gap(first_in_process=True, resubscribed=True,
               marks=Marks(NOW - 200, NOW - 900, None))
    assert both == Gap("start+resubscribed", NOW - 900 - S.overlap)


def test_failed_runs_cool_down_then_are_retried_and_covered() -> None:
    failed = Failures(count=1, since=NOW - 5 * HOUR, last_at=NOW - 600)
    quiet = dict(last_event_at=NOW - 7 * HOUR, marks=Marks(NOW - 200, NOW - 200, NOW - 8 * HOUR))
    # Cooling down: neither the failure nor a quiet account starts a run ...
    assert gap(failures=failed) is None
    assert gap(failures=failed, **quiet) is None
    # ... but a start does, and covers what the failed run left.
    assert gap(failures=failed, first_in_process=True) == Gap("start", NOW - 5 * HOUR)
    # After the cool-down: a retry of the failed period.
    later = Failures(count=1, since=NOW - 5 * HOUR, last_at=NOW - S.failed_cool_down - 1)
    assert gap(failures=later) == Gap("retry", NOW - 5 * HOUR - S.overlap)
    # The cool-down doubles with each failure in a row, up to its cap.
    assert [S.cool_down(n) for n in (1, 2, 3)] == [3600.0, 7200.0, 14400.0]
    assert S.cool_down(40) == S.failed_cool_down_cap
    third = Failures(count=3, since=NOW - 5 * HOUR, last_at=NOW - 2 * 3600)
    assert gap(failures=third) is None


def test_merged_reasons_keep_each_once() -> None:
    assert merge_reasons("start", "start+resubscribed", "downtime") == (
        "start+resubscribed+downtime")


def test_recovered_rows_are_shaped_like_webhooks() -> None:
    detail = {"id": "m1", "created_time": "2026-04-05T05:27:08+0000",
              "from": {"id": ANA, "username": "ana"},
              "to": {"data": [{"id": ACCT, "username": USERNAME}]},
              "message": "hi", "attachments": {"data": [{"image_data": {"url": "https://x/i"}}]}}
    row = recovered_row(ACCT, detail, {ANA: "ana"}, fallback_at=0.0)
    assert row is not None
    assert (row.dedupe_key, row.kind, row.contact_id, row.username) == (
        "msg:m1", "message", ANA, "ana")
    raw = json.loads(row.raw)
    item = raw["entry"][0]["messaging"][0]
    assert item["sender"] == {"id": ANA} and item["recipient"] == {"id": ACCT}
    assert item["message"]["attachments"] == [{"type": "image", "payload": {"url": "https://x/i"}}]
    assert row.occurred_at == 1775366828.0
    echo = recovered_row(ACCT, {**detail, "id": "m2", "from": {"id": ACCT},
                                "to": {"data": [{"id": ANA}]}}, {}, fallback_at=0.0)
    assert echo is not None and (echo.kind, echo.contact_id) == ("echo", ANA)
    assert recovered_row(ACCT, {"id": "m3"}, {}, fallback_at=0.0) is None


def test_summary_and_since() -> None:
    text = summary_text("creator", "start", 3, [("ana", 2), ("1100", 1)], 1, None)
    assert text is not None
    assert "Recovered 3 messages to @creator" in text and "@ana (2), 1100 (1)" in text
    assert "1 missed message to @creator could not be read back" in text
    assert summary_text("creator", "quiet", 0, [], 0, None) is None
    assert parse_since("6h", NOW) == NOW - 6 * HOUR
    assert parse_since("1970-01-12T13:46:40Z", NOW) == NOW


# -- a 190 outside a send (CLI review, session 15) ---------------------------------------------
async def test_a_token_meta_rejects_in_the_check_or_a_profile_lookup_marks_the_account(
    tmp_path: Path,
) -> None:
    """A revoked token showed up only when a send hit it: the catch-up check, the catch-up
    command and the profile lookups failed, and the account stayed "connected" in
    `accounts`, `/healthz` and `doctor`, with nobody told. Now each marks it and notifies
    once (per token)."""
    async with world(tmp_path) as w, daemon(w, start=False) as rt:
        w.sandbox.revoke_token()
        [report] = await CatchUp.for_runtime(rt).run_now()
        assert report.error is not None and "instaset connect" in report.error
        row = await history.get_account(rt.db, ACCT)
        assert row is not None and row["state"] == "reconnect_needed"
        notes = await rt.db.fetchall("SELECT key FROM jobs WHERE kind = 'notify'")
        assert [n["key"] for n in notes] == [f"notify:token-reconnect:{ACCT}:"
                                             f"{int(row['created_at'])}"]

        # a profile lookup that meets the 190 marks a connected account the same way
        await rt.db.execute("UPDATE accounts SET state = 'connected'")
        async with rt.db.tx() as conn:
            await history.touch_contact(conn, ACCT, BEA, w.clock())
        assert await Profiles(rt.db, rt.graph, rt.tokens, clock=w.clock).fetch(ACCT, BEA) is None
        row = await history.get_account(rt.db, ACCT)
        assert row is not None and row["state"] == "reconnect_needed"
        # one notification per token: the same key, not a second one
        assert await count(rt, "SELECT count(*) FROM jobs WHERE kind = 'notify'") == 1
